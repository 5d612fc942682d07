/* SPDX-License-Identifier: MIT */
/*
 * exec-work.c: what the executor's tasks do on the libuv thread pool.
 *
 * Each function gets one task and touches only what that task owns (see
 * exec-int.h); results and errors go back in the task for the loop thread
 * to act on in the after-work callback.  No libuv calls, no logging, no
 * shared mutable state: a worker that fails just says why.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec-int.h"

#define container_of(p, t, m) ((t *)((char *)(p) - offsetof(t, m)))

static void
work_load(struct centry *e)
{
	e->task.rc = reader_read_chunk(e->plan, e->pt, e->in, e->e0, e->n,
	    e->data, &e->task.err);
}

/*
 * One chunk of one pass, a quantum at a time: inputs not in the cache are
 * read from their files into the unit's scratch, block by block, so that
 * decoding, the method and encoding all work on data still in the CPU's
 * cache rather than streaming whole chunks through memory three times.
 * The blocks are the reduction quanta, so statistics are the same
 * whatever the chunking.
 */
static void
work_merge(struct unit *u)
{
	const struct plan_tensor *pt = u->xt->pt;
	const struct graph_plan *p = u->xt->job->plan;
	const struct graph_method *m = pt->method;
	const float *in[GRAPH_MAX_INPUTS];
	float *blk, *res = NULL;
	uint64_t q = u->xt->quantum;
	size_t es = graph_dtype_size(pt->out_dtype), off, bn, j, k;
	size_t stride = u->n < q ? u->n : (size_t)q;
	bool apply = u->pass >= pt->ms.npasses;
	struct mchunk c;

	if (atomic_load(&u->xt->job->cancel)) {
		u->task.rc = -ECANCELED;
		return;
	}
	/* Counted from zero; pool buffers come back dirty.  Here rather
	 * than at admission: the loop thread, which every task's end
	 * waits for, cleared these too (12% of its time, four ties
	 * merges at once). */
	if (u->stats != NULL)
		memset(u->stats, 0, u->stats_bytes);
	memset(&c, 0, sizeof c);
	c.in = in;
	c.nin = pt->nin;
	c.quantum = q;
	c.cols = (size_t)pt->cols;
	c.scratch = u->stats;
	blk = u->scratch;
	if (apply) {
		res = blk;
		blk += stride;
	}
	for (off = 0; off < u->n; off += bn) {
		bn = u->n - off < q ? u->n - off : (size_t)q;
		for (j = 0, k = 0; j < pt->nin; j++) {
			if (u->in[j] != NULL) {
				in[j] = u->in[j]->data + off;
				continue;
			}
			in[j] = blk + k++ * stride;
			if ((u->task.rc = reader_read_chunk(p, pt, &pt->in[j],
			    u->e0 + off, bn, (float *)in[j], &u->task.err)) !=
			    0)
				return;
		}
		c.e0 = u->e0 + off;
		c.n = bn;
		c.r0 = c.cols ? c.e0 / c.cols : 0;
		c.nrows = c.cols ? bn / c.cols : 0;
		c.partials = u->xt->partials == NULL ? NULL : u->xt->partials +
		    (pt->ms.rows ? c.r0 : c.e0 / q) * (uint64_t)pt->ms.nred;
		if (!apply) {
			m->stats(pt, u->xt->state, u->pass, &c);
			continue;
		}
		c.out = res;
		m->apply(pt, u->xt->state, &c);
		graph_encode_f32(pt->out_dtype, res, (uint8_t *)u->enc +
		    off * es, bn);
	}
	/* Here, not on the loop thread that every task's end waits for
	 * (a fifth of its time went to these sums, four ties merges at
	 * once).  Integer counts: the order units add in cannot matter. */
	if (u->stats != NULL && m->merge != NULL) {
		uv_mutex_lock(&u->xt->job->stats_lock);
		m->merge(pt, u->xt->state, u->pass, u->stats);
		uv_mutex_unlock(&u->xt->job->stats_lock);
	}
}

static void
work_write(struct unit *u)
{
	const struct plan_tensor *pt = u->xt->pt;
	struct graph_job *job = u->xt->job;
	size_t es = graph_dtype_size(pt->out_dtype);
	int fd = job->shard_fd[pt->shard];
	int direct = job->shard_direct[pt->shard];

	if (atomic_load(&job->cancel)) {
		u->task.rc = -ECANCELED;
		return;
	}
	if (u->raw)
		u->task.rc = reader_copy_chunk(job->plan, &pt->in[0], u->e0,
		    u->n, fd, direct, u->enc, (size_t)u->enc_bytes, pt->offset +
		    u->e0 * es, &u->task.err);
	else
		u->task.rc = writer_pwrite_direct(fd, direct, u->enc, u->n * es,
		    pt->offset + u->e0 * es, &u->task.err);
	/* Through the page cache: its writeback starts now.  (Written
	 * direct, only the partial pages at its ends are in the cache.) */
	if (u->task.rc == 0 && direct == -1)
		writer_write_behind(fd, pt->offset + u->e0 * es, u->n * es);
}

/* Every input file is as planned (size, inode, modification time),
 * those of the stages fused into it too. */
static int
inputs_unchanged(const struct graph_plan *p, char **cause)
{
	size_t i;
	int rc;

	for (i = 0; i < p->nmodels; i++)
		if ((rc = model_check_unchanged(p->models[i].m, cause)) != 0)
			return rc;
	for (i = 0; i < p->nfused; i++)
		if ((rc = inputs_unchanged(p->fused[i], cause)) != 0)
			return rc;
	return 0;
}

static void
work_setup(struct graph_job *job)
{
	const struct graph_plan *p = job->plan;
	struct task *t = &job->jtask;
	struct stat st;
	size_t i;

	if ((t->rc = inputs_unchanged(p, &t->err)) != 0)
		return;
	if ((t->rc = writer_stage_open(job->out_dirfd, job->staging,
	    job->cred, &job->stage_fd, &t->err)) != 0)
		return;
	if (fstat(job->stage_fd, &st) == -1) {
		t->rc = -errno;
		t->err = xasprintf("%s: %s", job->staging, strerror(errno));
		return;
	}
	job->stage_dev = (uint64_t)st.st_dev;
	job->stage_ino = (uint64_t)st.st_ino;
	for (i = 0; i < p->nshards; i++) {
		/* A shard recorded as done must still be there, whole. */
		if (job->shard_done[i] && !(fstatat(job->stage_fd,
		    p->shards[i].name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode) && (uint64_t)st.st_size ==
		    p->shards[i].size))
			job->shard_done[i] = false;
		if (job->shard_done[i])
			continue;
		if ((t->rc = writer_open_shard(job->stage_fd, &p->shards[i],
		    job->cred, &job->shard_fd[i], &job->shard_direct[i],
		    &t->err)) != 0)
			return;
	}
}

static void
work_shard(struct graph_job *job, struct task *t)
{
	int fd = job->shard_fd[t->idx];

	if (fsync(fd) == -1) {
		t->rc = -errno;
		t->err = xasprintf("%s: fsync: %s",
		    job->plan->shards[t->idx].name, strerror(errno));
	}
	close(fd);
	job->shard_fd[t->idx] = -1;
	if (job->shard_direct[t->idx] != -1)
		close(job->shard_direct[t->idx]);
	job->shard_direct[t->idx] = -1;
}

static void
work_finish(struct graph_job *job)
{
	struct task *t = &job->jtask;

	/* An input rewritten in place while it was read would leave a
	 * mixture of old and new weights; nothing is published then. */
	if ((t->rc = inputs_unchanged(job->plan, &t->err)) != 0)
		return;
	if (job->manifest != NULL && (t->rc = writer_file(job->stage_fd,
	    GRAPH_STAGE_MANIFEST, job->manifest, strlen(job->manifest),
	    job->cred, &t->err)) != 0)
		return;
	if ((t->rc = writer_finish(job->plan, job->stage_fd, job->cred,
	    job->out_name, &t->err)) != 0)
		return;
	close(job->stage_fd);
	job->stage_fd = -1;
	t->rc = writer_publish(job->out_dirfd, job->staging, job->out_name,
	    job->force ? &job->replace : NULL, &t->err);
}

static void
work_cleanup(struct graph_job *job)
{
	size_t i;

	for (i = 0; i < job->plan->nshards; i++) {
		if (job->shard_fd[i] != -1) {
			close(job->shard_fd[i]);
			job->shard_fd[i] = -1;
		}
		if (job->shard_direct[i] != -1) {
			close(job->shard_direct[i]);
			job->shard_direct[i] = -1;
		}
	}
	if (job->stage_fd != -1) {
		close(job->stage_fd);
		job->stage_fd = -1;
	}
	if (!job->keep_staging)
		writer_remove_tree(job->out_dirfd, job->staging);
}

/*
 * The tasks that create, rename or remove files do so with the job's
 * user's rights (cred.c); reads and writes through descriptors opened
 * that way need nothing more.
 */
static bool
work_as_user(struct task *t, struct cred_saved *saved)
{
	saved->active = false;
	if (t->kind != TASK_SETUP && t->kind != TASK_FINISH && t->kind !=
	    TASK_CLEANUP)
		return true;
	if ((t->rc = cred_enter(t->job->cred, saved, &t->err)) != 0)
		return false;
	return true;
}

void
exec_work(uv_work_t *w)
{
	struct task *t = container_of(w, struct task, work);
	struct cred_saved saved;

	if (!work_as_user(t, &saved))
		return;
	if (t->kind == TASK_MERGE || t->kind == TASK_WRITE) {
		struct unit *u = container_of(t, struct unit, task);

		if (u->ra != NULL) {
			ra_issue(u->ra);
			u->ra = NULL;
		}
	}
	switch (t->kind) {
	case TASK_LOAD:
		work_load(container_of(t, struct centry, task));
		break;
	case TASK_MERGE:
		work_merge(container_of(t, struct unit, task));
		break;
	case TASK_WRITE:
		work_write(container_of(t, struct unit, task));
		break;
	case TASK_SHARD:
		work_shard(t->job, t);
		break;
	case TASK_SETUP:
		work_setup(t->job);
		break;
	case TASK_FINISH:
		work_finish(t->job);
		break;
	case TASK_CLEANUP:
		work_cleanup(t->job);
		break;
	}
	cred_leave(&saved);
}
