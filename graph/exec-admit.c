/* SPDX-License-Identifier: MIT */
/*
 * exec-admit.c: the executor's memory accounting and the admission of
 * units (loop thread only).
 *
 * Every buffer the executor holds is counted in ex->used against
 * ex->budget (mem_*): a unit is admitted only when the bytes it will hold
 * (its inputs not cached yet, its scratch, its encoded result) fit, after
 * evicting unpinned cache entries.  exec.c decides which unit is next
 * and what to do when one cannot fit; this file decides whether it fits
 * and, if so, takes its memory and queues its first tasks.
 */
#include <assert.h>
#include <string.h>

#include "exec-int.h"

void
mem_take(struct graph_exec *ex, uint64_t bytes)
{
	ex->used += bytes;
	assert(ex->used <= ex->budget);
	if (ex->used > ex->peak)
		ex->peak = ex->used;
}

void
mem_give(struct graph_exec *ex, uint64_t bytes)
{
	ex->used -= bytes;
}

/*
 * A buffer of size bytes, counted as used.  The caller has checked that
 * used + size fits the budget; pooled buffers are returned to the kernel
 * as needed so that used + pooled fits too (the budget bounds RSS).
 */
void *
mem_alloc(struct graph_exec *ex, size_t size)
{
	uint64_t total;
	void *p;

	mem_take(ex, size);
	if ((p = bufpool_take(&ex->pool, size)) != NULL)
		return p;
	total = ex->used + ex->pool.bytes;
	if (total > ex->budget)
		bufpool_trim(&ex->pool, total - ex->budget);
	return buf_alloc(size);
}

void
mem_free(struct graph_exec *ex, void *p, size_t size)
{
	if (p == NULL)
		return;
	mem_give(ex, size);
	bufpool_put(&ex->pool, p, size);
}

/*
 * Bytes a unit holds besides cached inputs: a block-sized scratch (the
 * result's block, and one block per input read straight from the file)
 * and, in the apply pass, the chunk's encoded result.
 */
static uint64_t
unit_bytes(const struct plan_tensor *pt, size_t n, int pass, size_t nstream)
{
	uint64_t blk = n < pt->quantum ? n : pt->quantum;
	bool apply = pass >= pt->ms.npasses;

	return (nstream + (apply ? 1 : 0)) * blk * sizeof(float) +
	    (apply ? (uint64_t)n * graph_dtype_size(pt->out_dtype) +
	    GRAPH_WRITE_ALIGN : pt->ms.scratch);
}

/*
 * Bytes of a byte copy's buffer: none where the shard is written
 * through the page cache (copy_file_range needs none); written direct
 * (reader_copy_chunk), up to EXEC_COPY_BUFFER, page-aligned (bufpool
 * buffers are), and no more than the tensor's least unit, so that it
 * fits wherever the plan does.  (A static buffer a thread cost every
 * pool thread its pages: glibc clears each thread's TLS.)
 */
static uint64_t
copy_bytes(const struct graph_job *job, const struct plan_tensor *pt)
{
	uint64_t b = plan_tensor_min_unit(pt);

	if (job->shard_direct[pt->shard] == -1)
		return 0;
	if (b > EXEC_COPY_BUFFER)
		b = EXEC_COPY_BUFFER;
	return b / GRAPH_WRITE_ALIGN * GRAPH_WRITE_ALIGN;
}

/*
 * Tries to admit the unit (xt, e0, n): pins the inputs already cached (so
 * that eviction cannot take them), evicts unpinned entries if the rest
 * does not fit, and creates the missing entries with their loads.
 * What is not cached is read straight from the file, block by block, by
 * the merge task.  With cache_inputs, statistics passes decode their
 * inputs into the cache instead, for the passes after them and for other
 * jobs.  It is off by default: measured on two 1.3 GB bf16 models, a
 * slerp took 5.5x the I/O floor with the cache and 2.7x streaming, since
 * decoded float32 is twice the bytes of the bf16 the page cache already
 * shares between jobs.  Returns
 * ADMIT_OK, or a reason to wait, changing nothing; *need is then what it
 * would take.
 */
enum admit
unit_admit(struct graph_exec *ex, struct xtensor *xt, uint64_t e0, size_t n,
    uint64_t *need)
{
	struct graph_job *job = xt->job;
	const struct plan_tensor *pt = xt->pt;
	struct centry *hit[GRAPH_MAX_INPUTS], *e;
	bool cache = ex->cache_inputs && xt->pass < pt->ms.npasses &&
	    !pt->ms.serial;
	bool created;
	struct unit *u;
	uint64_t room, held = 0, own = 0;
	size_t j, nstream = 0;

	for (j = 0; j < pt->nin; j++) {
		hit[j] = xt->raw ? NULL : cache_find(&ex->cache, job->plan,
		    pt, &pt->in[j], e0, n);
		if (hit[j] == NULL && !cache)
			nstream++;
	}
	own = xt->raw ? copy_bytes(job, pt) : unit_bytes(pt, n, xt->pass,
	    nstream);
	*need = own;
	for (j = 0; j < pt->nin; j++)
		if (hit[j] == NULL && cache)
			*need += (uint64_t)n * sizeof(float);
	/* A per-job cap bounds the job's working set. */
	held = own + (uint64_t)(pt->nin - nstream) * n * sizeof(float);
	if (job->cap > 0 && job->held + held > job->cap) {
		*need = held;
		return ADMIT_CAP;
	}
	for (j = 0; j < pt->nin; j++)
		if (hit[j] != NULL)
			cache_pin(&ex->cache, hit[j]);
	room = ex->budget - ex->used;
	if (*need > room)
		mem_give(ex, cache_evict(&ex->cache, *need - room));
	if (*need > ex->budget - ex->used) {
		for (j = 0; j < pt->nin; j++)
			if (hit[j] != NULL)
				cache_unpin(&ex->cache, hit[j]);
		return ADMIT_NO_MEMORY;
	}
	for (j = 0; j < pt->nin; j++)
		ex->cache.hits += hit[j] != NULL;
	u = xcalloc(1, sizeof *u);
	u->xt = xt;
	u->pass = xt->pass;
	u->e0 = e0;
	u->n = n;
	u->raw = xt->raw;
	u->task.job = job;
	u->ra = job->ra_pending;
	job->ra_pending = NULL;
	u->held = held;
	job->held += held;
	xt->next++;
	job->nunits++;
	if (u->raw) {
		if (own > 0) {
			u->enc_bytes = own;
			u->enc = u->enc_mem = mem_alloc(ex, own);
		}
		u->task.kind = TASK_WRITE;
		exec_queue(ex, &u->task);
		return ADMIT_OK;
	}
	u->enc_bytes = xt->pass >= pt->ms.npasses ? n *
	    graph_dtype_size(pt->out_dtype) + GRAPH_WRITE_ALIGN : 0;
	u->stats_bytes = xt->pass < pt->ms.npasses ? pt->ms.scratch : 0;
	u->scratch_bytes = own - u->enc_bytes - u->stats_bytes;
	if (u->scratch_bytes > 0)
		u->scratch = mem_alloc(ex, u->scratch_bytes);
	if (u->enc_bytes > 0) {
		/* The chunk sits in memory at the alignment it has in the
		 * file (buffers are page-aligned), so that its whole pages
		 * go to the disk straight from here (writer_pwrite). */
		u->enc_mem = mem_alloc(ex, u->enc_bytes);
		u->enc = (uint8_t *)u->enc_mem + (pt->offset + e0 *
		    graph_dtype_size(pt->out_dtype)) % GRAPH_WRITE_ALIGN;
	}
	/* Zeroed by the merge task (work_merge), off the loop thread. */
	if (u->stats_bytes > 0)
		u->stats = mem_alloc(ex, u->stats_bytes);
	for (j = 0; j < pt->nin; j++) {
		if ((e = hit[j]) == NULL && !cache)
			continue;	/* streamed by the merge task */
		if (e == NULL) {
			e = cache_get(&ex->cache, job->plan, pt, &pt->in[j], e0,
			    n, &created);
			e->data = mem_alloc(ex, e->bytes);
			cache_pin(&ex->cache, e);
		}
		u->in[j] = e;
		if (e->ready)
			continue;
		u->loads_pending++;
		e->waiters = xreallocarray(e->waiters, e->nwaiters + 1,
		    sizeof *e->waiters);
		e->waiters[e->nwaiters].u = u;
		e->waiters[e->nwaiters++].j = j;
		if (!e->queued) {
			e->queued = true;
			e->plan = job->plan;
			e->pt = pt;
			e->in = &pt->in[j];
			exec_queue(ex, &e->task);
		}
	}
	if (u->loads_pending == 0)
		unit_queue_merge(u);
	return ADMIT_OK;
}
