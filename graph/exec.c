/* SPDX-License-Identifier: MIT */
/*
 * exec.c: the executor: plans become load, merge and write tasks on the
 * libuv thread pool, under one memory budget.
 *
 * Every output tensor is cut into chunks of whole quanta (EXEC_QUANTUM
 * elements); a method with statistics passes runs them over all chunks
 * first, reduces on the loop thread, then runs its apply pass.  A "unit" is
 * one chunk of one pass: it is admitted only when the bytes it will hold
 * (its decoded inputs that are not cached yet, its output buffers) fit in
 * the budget, after evicting unpinned cache entries if needed.  Then its
 * LOAD tasks decode the missing inputs into the shared cache, its MERGE
 * task runs the kernel, and its WRITE task pwrite()s the encoded chunk at
 * its final offset.  Since the layout is fixed and partial sums are kept
 * per quantum and summed in order, the bytes written never depend on the
 * thread count, the chunk size or the schedule.
 *
 * At most `threads` tasks compute on the pool at once (one more where
 * that is every core: graph_exec_slots), and beside them at most
 * `threads` writes (exec_dispatch; the pool has a thread for each, and
 * one more, so libuv's own file work is never starved).  Jobs are
 * admitted round-robin, so one job cannot starve another.  Everything here
 * runs on the loop thread; exec-admit.c counts memory and admits units,
 * exec-work.c is what runs on the pool.  Every task's end waits for the
 * loop thread, so what a pool thread can do instead is done there: the
 * statistics' sums (under the job's stats_lock), clearing their scratch,
 * the readahead calls.  The executor's job (struct
 * graph_job) is an "xjob" in static names, as its tensors are xtensors,
 * so that they do not read as daemon/job.c's.
 */
#include <sys/stat.h>

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec-int.h"

#define container_of(p, t, m) ((t *)((char *)(p) - offsetof(t, m)))

static void exec_after(uv_work_t *, int);
static void exec_pump(struct graph_exec *);
static void xjob_fail(struct graph_job *, int, const char *);
static void xjob_maybe_end(struct graph_job *);
static bool exec_write_wait(struct task *);
static void exec_check_jobs(struct graph_exec *);

/* What the executor may hold of memory: the rest is the process's own
 * (heap, stacks, libraries).  plan-layout.c sizes the minimum by it. */
uint64_t
exec_budget_of(uint64_t memory)
{
	return memory > 4 * EXEC_OVERHEAD ? memory - EXEC_OVERHEAD :
	    memory * 3 / 4;
}

/* The least memory whose budget is at least need: exec_budget_of's
 * inverse. */
uint64_t
exec_memory_for(uint64_t need)
{
	uint64_t m = (need * 4 + 2) / 3;

	return m > 4 * EXEC_OVERHEAD ? need + EXEC_OVERHEAD : m;
}

/*
 * With as many computing tasks as cores, a core idled from the end of
 * each task to the start of the next, which waits for the loop thread:
 * it has to wake, follow the task up and dispatch, and the pool thread
 * it wakes may be queued behind the other core's task while this one
 * idles.  Four small ties merges at once in the daemon kept 83-86% of
 * both cores busy so (perf sched: pool threads waiting for work, the
 * loop thread in epoll_wait, and woken threads waiting on the busy core
 * for 30% of the idle time); with one task more than the cores, 80-88%
 * by the daemon's CPU time, in about 10% less time (docs/methods.md).
 * The kernel shares the cores among the tasks.  Fewer threads than
 * cores is a limit asked for: kept.
 */
int
graph_exec_slots(int threads)
{
	return threads + (threads >= (int)uv_available_parallelism());
}

/* The computing tasks, the writes beside them (exec_dispatch), and one
 * thread more, so that libuv's own file system work is never starved. */
int
graph_exec_pool_size(int threads)
{
	return graph_exec_slots(threads) + threads + 1;
}

int
graph_exec_create(uv_loop_t *loop, const struct graph_exec_opts *o,
    struct graph_exec **out)
{
	struct graph_exec *ex;

	if (o->memory == 0 || o->threads < 1)
		return -EINVAL;
	ex = xcalloc(1, sizeof *ex);
	ex->loop = loop;
	/* The budget bounds the whole process's RSS, whose own heap, stacks
	 * and libraries take a few MiB besides the chunk buffers. */
	ex->budget = exec_budget_of(o->memory);
	ex->threads = o->threads;
	ex->slots = graph_exec_slots(o->threads);
	ex->cache_inputs = o->cache_inputs;
	cache_init(&ex->cache, &ex->pool);
	*out = ex;
	return 0;
}

void
graph_exec_destroy(struct graph_exec *ex)
{
	if (ex == NULL)
		return;
	/* The owner waits for every job's done callback first. */
	if (ex->jobs != NULL || ex->inflight != 0 || ex->leased != 0 ||
	    ex->lease_head != NULL)
		abort();
	cache_fini(&ex->cache);
	bufpool_fini(&ex->pool);
	free(ex);
}

void
exec_queue(struct graph_exec *ex, struct task *t)
{
	t->ex = ex;
	t->next = NULL;
	ex->queued++;
	if (t->kind == TASK_WRITE && exec_write_wait(t))
		return;
	if (ex->ready_tail != NULL)
		ex->ready_tail->next = t;
	else
		ex->ready_head = t;
	ex->ready_tail = t;
}

static void
xjob_task(struct graph_job *job, enum task_kind kind)
{
	/* One task, reused: a failed finish's message went with it. */
	free(job->jtask.err);
	memset(&job->jtask, 0, sizeof job->jtask);
	job->jtask.kind = kind;
	job->jtask.job = job;
	exec_queue(job->ex, &job->jtask);
}

/*
 * One write at a time per shard through the page cache: concurrent
 * pwrite()s to one file only contend for its inode lock (measured:
 * spinning in rwsem_spin_on_owner), while the other thread can merge
 * instead.  Two where the shard is written direct: an O_DIRECT write
 * waits on the device, and a second one in flight keeps it busy between
 * them (bench models, linear: 0.95-1.09 s with one, 0.83-0.96 s with
 * two).  Returns true when t must wait; its turn comes when one of the
 * shard's writes is done.
 */
static bool
exec_write_wait(struct task *t)
{
	struct unit *u = container_of(t, struct unit, task);
	struct graph_job *job = u->xt->job;
	size_t s = u->xt->pt->shard;
	struct task **pp;

	if (job->shard_writing[s] < (job->shard_direct[s] != -1 ? 2 : 1)) {
		job->shard_writing[s]++;
		return false;
	}
	for (pp = &job->shard_wait[s]; *pp != NULL; pp = &(*pp)->next)
		;
	*pp = t;
	return true;
}

/* A write finished: the shard's next waiting write may go. */
static void
exec_write_done(struct graph_exec *ex, struct unit *u)
{
	struct graph_job *job = u->xt->job;
	size_t s = u->xt->pt->shard;
	struct task *t = job->shard_wait[s];

	job->shard_writing[s]--;
	if (t != NULL) {
		job->shard_wait[s] = t->next;
		exec_queue(ex, t);
	}
}

/* Chunk size: a few units in flight fit in a part of the budget. */
static uint64_t
xt_chunk(const struct graph_exec *ex, const struct graph_job *job,
    const struct plan_tensor *pt)
{
	uint64_t per = (uint64_t)pt->nin * sizeof(float) + sizeof(float) +
	    graph_dtype_size(pt->out_dtype);
	uint64_t budget = job->cap && job->cap < ex->budget ? job->cap :
	    ex->budget;
	uint64_t target = budget / (2 * ((uint64_t)ex->threads + 1));
	uint64_t q = pt->quantum, n = target / per / q * q;

	if (n > EXEC_MAX_CHUNK)
		n = EXEC_MAX_CHUNK / q * q;
	return n < q ? q : n;
}

static void
xt_done(struct xtensor *xt)
{
	struct graph_job *job = xt->job;
	const struct plan_tensor *pt = xt->pt;

	free(xt->state);
	free(xt->partials);
	xt->state = NULL;
	xt->partials = NULL;
	mem_give(job->ex, xt->bytes);
	job->ex->held_tensors -= xt->bytes;
	xt->bytes = 0;
	xt->done = true;
	xt->active = false;
	if (xt->aprev != NULL)
		xt->aprev->anext = xt->anext;
	else
		job->active_head = xt->anext;
	if (xt->anext != NULL)
		xt->anext->aprev = xt->aprev;
	else
		job->active_tail = xt->aprev;
	xt->anext = xt->aprev = NULL;
	job->nactive--;
	job->prog.tensors_done++;
	if (--job->shard_left[pt->shard] == 0 && job->rc == 0 &&
	    !job->shard_done[pt->shard]) {
		struct task *t = &job->shard_tasks[pt->shard];
		job->inflight++;
		memset(t, 0, sizeof *t);
		t->kind = TASK_SHARD;
		t->job = job;
		t->idx = pt->shard;
		exec_queue(job->ex, t);
	}
}

/*
 * The chunks of the tensor's current pass.  A serial statistics pass is
 * one unit over the whole tensor, whose blocks then follow each other in
 * order (for sums that must be accumulated in one fixed order).
 */
static void
xt_pass_chunks(struct xtensor *xt)
{
	const struct plan_tensor *pt = xt->pt;

	if (xt->raw)
		xt->chunk = EXEC_COPY_BYTES / graph_dtype_size(pt->out_dtype);
	else if (pt->ms.serial && xt->pass < pt->ms.npasses)
		xt->chunk = (pt->numel + xt->quantum - 1) / xt->quantum *
		    xt->quantum;
	else
		xt->chunk = xt_chunk(xt->job->ex, xt->job, pt);
	if (xt->chunk == 0)
		xt->chunk = xt->quantum;
	xt->nchunks = (size_t)((pt->numel + xt->chunk - 1) / xt->chunk);
	xt->next = 0;
	xt->left = xt->nchunks;
}

/*
 * Whether the tensor's state and partials can be taken now.  They are
 * held until the tensor ends, so a tensor started ahead of the job's
 * first active one must leave room for a smallest unit of both, or the
 * tensors ahead could hold the budget that the first one needs to move
 * on.  Unpinned cache entries are evicted to make the room.
 */
static bool
xjob_tensor_fits(struct graph_job *job, const struct plan_tensor *pt)
{
	struct graph_exec *ex = job->ex;
	uint64_t held = plan_tensor_held(pt);
	uint64_t reserve = plan_tensor_min_unit(pt), first;

	if (held == 0)
		return true;
	if (job->nactive > 0) {
		first = plan_tensor_min_unit(job->active_head->pt);
		reserve = first > reserve ? first : reserve;
		if (ex->held_tensors + held + reserve > ex->budget)
			return false;
	}
	if (held > ex->budget - ex->used)
		mem_give(ex, cache_evict(&ex->cache, held - (ex->budget -
		    ex->used)));
	return held <= ex->budget - ex->used;
}

/*
 * Starts the job's next tensor; false when none is left, or when it must
 * wait for memory.
 */
static bool
xjob_start_tensor(struct graph_job *job)
{
	struct xtensor *xt;
	const struct plan_tensor *pt;
	size_t nq;

	if (job->next_tensor >= job->plan->ntensors)
		return false;
	/* A waiting lease goes first (exec-lease.c). */
	if (job->ex->lease_head != NULL)
		return false;
	pt = job->xt[job->next_tensor].pt;
	if (!job->shard_done[pt->shard] && !xjob_tensor_fits(job, pt))
		return false;
	xjob_readahead(job, job->next_tensor);
	xt = &job->xt[job->next_tensor++];
	xt->active = true;
	/* Started in index order: the list stays sorted by appending. */
	xt->aprev = job->active_tail;
	xt->anext = NULL;
	if (job->active_tail != NULL)
		job->active_tail->anext = xt;
	else
		job->active_head = xt;
	job->active_tail = xt;
	job->nactive++;
	if (job->shard_done[pt->shard]) {
		/* Resumed: this shard is already on disk. */
		job->prog.bytes_done += pt->nbytes;
		xt_done(xt);
		return true;
	}
	xt->raw = plan_tensor_is_copy(pt);
	xt->quantum = pt->quantum;
	xt->pass = 0;
	xt_pass_chunks(xt);
	xt->npartials = plan_tensor_npartials(pt);
	nq = xt->npartials * (size_t)pt->ms.nred;
	if (!xt->raw && nq > 0) {
		xt->partials = xcalloc(nq, sizeof *xt->partials);
		xt->bytes += nq * sizeof(double);
	}
	if (!xt->raw && plan_tensor_state_bytes(pt) > 0) {
		/* Zeroed by writing, not calloc: a large calloc's fresh
		 * pages map the shared zero page when first read, and the
		 * histograms' first "+=" (method merge) then took a
		 * copy-on-write fault per page, each flushing the TLB of
		 * every core running a pool thread (an IPI).  Measured at
		 * four ties merges at once, that was the largest cost of
		 * the loop thread, which added them then.  Written first,
		 * each page takes one plain fault. */
		xt->state = xmalloc(plan_tensor_state_bytes(pt));
		memset(xt->state, 0, plan_tensor_state_bytes(pt));
		xt->bytes += plan_tensor_state_bytes(pt);
	}
	mem_take(job->ex, xt->bytes);
	job->ex->held_tensors += xt->bytes;
	if (xt->nchunks == 0)
		xt_done(xt);
	return true;
}

/*
 * The tensor and chunk of the job's next unit, starting tensors as needed:
 * the lowest active tensor with a chunk left.  Only the active list is
 * walked (at most EXEC_LOOKAHEAD entries), never the tensors already
 * done, so that a plan of many empty tensors is scheduled in linear time.
 */
static struct xtensor *
xjob_next(struct graph_job *job, uint64_t *e0, size_t *n)
{
	struct xtensor *xt;
	size_t c;

	for (;;) {
		for (xt = job->active_head; xt != NULL; xt = xt->anext) {
			if (xt->next >= xt->nchunks)
				continue;
			/* Odd passes run backwards: the newest chunks are
			 * still cached when the next pass starts. */
			c = xt->pass % 2 ? xt->nchunks - 1 - xt->next : xt->next;
			*e0 = (uint64_t)c * xt->chunk;
			*n = (size_t)(xt->pt->numel - *e0 < xt->chunk ?
			    xt->pt->numel - *e0 : xt->chunk);
			return xt;
		}
		if (job->nactive >= EXEC_LOOKAHEAD || !xjob_start_tensor(job))
			return NULL;
	}
}

void
unit_queue_merge(struct unit *u)
{
	u->task.kind = TASK_MERGE;
	exec_queue(u->xt->job->ex, &u->task);
}

static bool
xjob_admitting(const struct graph_job *job)
{
	return job->state == XJOB_RUNNING && job->rc == 0;
}

/* A job whose smallest unit can never fit fails rather than waits. */
static void
xjob_fail_memory(struct graph_job *job, const struct xtensor *xt,
    uint64_t need, uint64_t limit, const char *what)
{
	char *a = graph_format_size(need), *b = graph_format_size(limit);
	char *msg = xasprintf("%s %s is too small for %s (needs %s)", what, b,
	    xt->pt->name, a);

	xjob_fail(job, -ENOMEM, msg);
	free(a);
	free(b);
	free(msg);
}

static void xjob_progress(struct graph_job *job);

/* Says, once per change, whether the job waits for memory (mem_wait). */
static void
xjob_set_wait(struct graph_job *job, uint64_t need)
{
	if (job->mem_wait == need)
		return;
	job->mem_wait = need;
	xjob_progress(job);
}

/*
 * Admits one unit from the next job in round-robin order that has one.
 * A job held back by its own cap lets the others go first; a unit that
 * does not fit the executor's budget stops admission until memory frees,
 * so that small units of other jobs cannot starve it.  Returns true when
 * something changed.
 */
static bool
exec_admit(struct graph_exec *ex)
{
	struct graph_job *job, *start;
	struct xtensor *xt;
	uint64_t e0, need;
	size_t n;
	/* Idle and still not fitting means never, unless memory is lent
	 * out or asked for: it comes back when the lease ends. */
	bool idle = ex->inflight == 0 && ex->ready_head == NULL &&
	    ex->leased == 0 && ex->lease_head == NULL, admitting;

	if (ex->jobs == NULL)
		return false;
	if (ex->rr == NULL)
		ex->rr = ex->jobs;
	start = job = ex->rr;
	do {
		ex->rr = job->next != NULL ? job->next : ex->jobs;
		admitting = xjob_admitting(job);
		xt = admitting ? xjob_next(job, &e0, &n) : NULL;
		if (admitting && xt == NULL && idle && job->nunits == 0 &&
		    job->nactive == 0 && job->next_tensor <
		    job->plan->ntensors) {
			/* With no tensor active, xjob_next found none only
			 * because the next one's state cannot fit: never. */
			xt = &job->xt[job->next_tensor];
			xjob_fail_memory(job, xt,
			    plan_tensor_min_unit(xt->pt) +
			    plan_tensor_held(xt->pt), ex->budget,
			    "memory budget");
			return true;
		}
		if (admitting && xt == NULL && job->nunits == 0 &&
		    job->nactive == 0 && job->next_tensor <
		    job->plan->ntensors) {
			/* The next tensor's state waits for memory. */
			xt = &job->xt[job->next_tensor];
			xjob_set_wait(job, plan_tensor_min_unit(xt->pt) +
			    plan_tensor_held(xt->pt));
			xt = NULL;
		}
		if (xt != NULL) {
			switch (unit_admit(ex, xt, e0, n, &need)) {
			case ADMIT_OK:
				xjob_set_wait(job, 0);
				return true;
			case ADMIT_CAP:
				if (job->nunits > 0)
					break;
				xjob_fail_memory(job, xt, need, job->cap,
				    "the job's memory cap");
				return true;
			case ADMIT_NO_MEMORY:
				/* Nothing in flight means never. */
				if (!idle || job->nunits > 0) {
					if (job->nunits == 0)
						xjob_set_wait(job, need);
					return false;
				}
				xjob_fail_memory(job, xt, need, ex->budget,
				    "memory budget");
				return true;
			}
		}
		job = ex->rr;
	} while (job != start);
	return false;
}

/*
 * Puts ready tasks on the pool, in order: at most `slots` that
 * compute, and beside them at most `threads` writes.  A write waits on
 * the disk rather than use a core (an O_DIRECT write returns when the
 * device has the data): counted with the others, each one in flight
 * held a core idle.  True when a task that computes is still queued.
 */
static bool
exec_dispatch(struct graph_exec *ex)
{
	struct task **pp = &ex->ready_head, *t, *prev = NULL;
	bool w, computing = false;

	while ((t = *pp) != NULL) {
		w = t->kind == TASK_WRITE;
		if (w ? ex->writing >= ex->threads : ex->inflight -
		    ex->writing >= ex->slots) {
			computing = computing || !w;
			prev = t;
			pp = &t->next;
			continue;
		}
		*pp = t->next;
		if (ex->ready_tail == t)
			ex->ready_tail = prev;
		ex->inflight++;
		ex->writing += w;
		uv_queue_work(ex->loop, &t->work, exec_work, exec_after);
	}
	return computing;
}

static void
exec_pump(struct graph_exec *ex)
{
	uint64_t queued;

	if (ex->pumping)
		return;
	ex->pumping = true;
	ex->kicked = false;
	/* Before admission: a waiting lease takes memory as it frees. */
	lease_grant(ex);
	for (;;) {
		/* Keep one computing task queued beyond the threads, to
		 * overlap.  Writes waiting for their slots do not stop
		 * admission: with them counted, four small merges at once
		 * kept the cores 54% busy while their writes queued. */
		if (exec_dispatch(ex))
			break;
		/* Admission may fail a job that has nothing in flight, or
		 * complete tensors without a task (a resumed job whose
		 * shards are all on disk, killed while finishing): such a
		 * job ends only if somebody looks, and its next task must
		 * then be dispatched too. */
		if (!exec_admit(ex)) {
			queued = ex->queued;
			exec_check_jobs(ex);
			if (ex->queued == queued) {
				if (!ex->kicked)
					break;
				ex->kicked = false;
				lease_grant(ex);
			}
			continue;
		}
		exec_check_jobs(ex);
	}
	/* A lease may have ended in a callback since: its memory is free
	 * for those waiting, which no task may come to grant. */
	lease_grant(ex);
	ex->pumping = false;
}

static void
xjob_progress(struct graph_job *job)
{
	job->prog.memory_used = job->ex->used;
	job->prog.memory_peak = job->ex->peak;
	job->prog.job_memory = job->held;
	job->prog.memory_wait = job->mem_wait;
	record_update(job, false);
	if (job->progress != NULL)
		job->progress(job, &job->prog, job->arg);
}

static void
unit_free(struct unit *u)
{
	struct graph_job *job = u->xt->job;

	mem_free(job->ex, u->scratch, u->scratch_bytes);
	mem_free(job->ex, u->enc_mem, u->enc_bytes);
	mem_free(job->ex, u->stats, u->stats_bytes);
	ra_free(u->ra);
	job->held -= u->held;
	free(u->task.err);
	free(u);
	job->nunits--;
}

static void
unit_unpin(struct graph_exec *ex, struct unit *u)
{
	size_t j;

	if (u->raw)
		return;
	for (j = 0; j < u->xt->pt->nin; j++) {
		if (u->in[j] == NULL)
			continue;
		cache_unpin(&ex->cache, u->in[j]);
		if (u->in[j]->pins == 0 && u->in[j]->failed) {
			mem_give(ex, u->in[j]->bytes);
			cache_drop(&ex->cache, u->in[j]);
		}
		u->in[j] = NULL;
	}
}

/* A unit finished its pass: maybe the pass or the tensor is complete. */
static void
unit_done(struct unit *u)
{
	struct xtensor *xt = u->xt;
	const struct graph_method *m = xt->pt->method;

	unit_unpin(xt->job->ex, u);
	unit_free(u);
	if (--xt->left > 0 || xt->job->rc != 0)
		return;
	if (!xt->raw && xt->pass < xt->pt->ms.npasses) {
		const char *why = m->reduce == NULL ? NULL : m->reduce(xt->pt,
		    xt->state, xt->pass, xt->partials, xt->npartials);
		if (why != NULL) {
			char *msg = xasprintf("%s: %s", xt->pt->name, why);
			xjob_fail(xt->job, -EDOM, msg);
			free(msg);
			return;
		}
		if (m->skip_next != NULL && xt->pass + 1 < xt->pt->ms.npasses &&
		    m->skip_next(xt->pt, xt->state, xt->pass))
			xt->pass += 2;
		else
			xt->pass++;
		xt_pass_chunks(xt);
		return;
	}
	xt_done(xt);
	xjob_progress(xt->job);
}

static void
after_load(struct graph_exec *ex, struct centry *e)
{
	struct cwait *w = e->waiters;
	size_t i, nw = e->nwaiters;
	struct unit *u;

	e->waiters = NULL;
	e->nwaiters = 0;
	e->ready = true;
	e->failed = e->task.rc != 0;
	/* Held while waiters are released, which may unpin it. */
	cache_pin(&ex->cache, e);
	for (i = 0; i < nw; i++) {
		u = w[i].u;
		if (e->failed)
			xjob_fail(u->xt->job, e->task.rc, e->task.err);
		if (--u->loads_pending > 0)
			continue;
		if (u->xt->job->rc != 0)
			unit_done(u);
		else
			unit_queue_merge(u);
	}
	free(w);
	cache_unpin(&ex->cache, e);
	if (e->pins == 0 && e->failed) {
		mem_give(ex, e->bytes);
		cache_drop(&ex->cache, e);
	}
}

static void
after_unit(struct unit *u)
{
	struct graph_job *job = u->xt->job;

	if (u->task.kind == TASK_WRITE)
		exec_write_done(job->ex, u);
	if (u->task.rc != 0) {
		xjob_fail(job, u->task.rc, u->task.err);
		unit_done(u);
		return;
	}
	if (u->task.kind == TASK_MERGE && u->pass >= u->xt->pt->ms.npasses) {
		/* Only the encoded result is needed from here on. */
		unit_unpin(job->ex, u);
		mem_free(job->ex, u->scratch, u->scratch_bytes);
		u->scratch = NULL;
		u->task.kind = TASK_WRITE;
		exec_queue(job->ex, &u->task);
		return;
	}
	if (u->task.kind == TASK_WRITE)
		job->prog.bytes_done += (uint64_t)u->n *
		    graph_dtype_size(u->xt->pt->out_dtype);
	unit_done(u);
}

static void
xjob_fail(struct graph_job *job, int rc, const char *err)
{
	if (job->rc != 0)
		return;
	job->rc = rc != 0 ? rc : -EIO;
	job->err = xstrdup(err != NULL ? err : strerror(-job->rc));
	atomic_store(&job->cancel, true);
}

/* Everything of the job that refers to its plan. */
static void
xjob_release(struct graph_job *job)
{
	struct graph_exec *ex = job->ex;
	size_t i;

	for (i = 0; i < job->plan->ntensors; i++) {
		mem_give(ex, job->xt[i].bytes);
		free(job->xt[i].state);
		free(job->xt[i].partials);
	}
	free(job->xt);
	job->xt = NULL;
}

static void
xjob_free(struct graph_job *job)
{
	struct graph_exec *ex = job->ex;
	struct graph_job **pp;

	for (pp = &ex->jobs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == job) {
			*pp = job->next;
			break;
		}
	if (ex->rr == job)
		ex->rr = NULL;
	free(job->shard_done);
	free(job->shard_left);
	free(job->shard_fd);
	free(job->shard_direct);
	free(job->shard_tasks);
	free(job->shard_writing);
	free(job->shard_wait);
	uv_mutex_destroy(&job->stats_lock);
	ra_free(job->ra_pending);
	free(job->jtask.err);
	if (job->stage_fd != -1)
		close(job->stage_fd);
	close(job->out_dirfd);
	free(job->out_name);
	free(job->out_dir);
	free(job->manifest);
	free(job->staging);
	free(job->own);
	free(job->err);
	free(job);
}

/*
 * The done callback may free the plan (the caller's), so nothing that
 * refers to it is touched after the callback returns.
 */
static void
xjob_complete(struct graph_job *job)
{
	job->state = XJOB_DONE;
	xjob_progress(job);
	xjob_release(job);
	if (job->done != NULL)
		job->done(job, job->rc, job->err, job->arg);
	xjob_free(job);
}

/*
 * Moves a job on once nothing of it is in flight: a failed or cancelled
 * job cleans up, a job whose shards are all on disk finishes.
 */
static void
xjob_maybe_end(struct graph_job *job)
{
	if (job->nunits > 0 || job->inflight > 0)
		return;
	switch (job->state) {
	case XJOB_SETUP:
	case XJOB_RUNNING:
		if (job->rc != 0) {
			record_stop(job);
			job->state = XJOB_CLEANUP;
			job->inflight++;
			xjob_task(job, TASK_CLEANUP);
		} else if (job->prog.shards_done == job->plan->nshards &&
		    job->next_tensor == job->plan->ntensors &&
		    job->nactive == 0) {
			record_remove(job);
			job->state = XJOB_FINISHING;
			job->inflight++;
			xjob_task(job, TASK_FINISH);
		}
		break;
	case XJOB_FINISHING:
		if (job->rc != 0) {
			job->state = XJOB_CLEANUP;
			job->inflight++;
			xjob_task(job, TASK_CLEANUP);
		} else {
			xjob_complete(job);
		}
		break;
	case XJOB_CLEANUP:
		xjob_complete(job);
		break;
	case XJOB_DONE:
		break;
	}
}

static void
after_xjob_task(struct graph_job *job, struct task *t)
{
	job->inflight--;
	if (t->rc != 0)
		xjob_fail(job, t->rc, t->err);
	switch (t->kind) {
	case TASK_SETUP:
		if (job->state == XJOB_SETUP)
			job->state = XJOB_RUNNING;
		/* Here, on the loop thread, before any shard is queued: the
		 * identity is recorded before a publish can happen. */
		if (t->rc == 0 && job->on_staged != NULL)
			job->on_staged(job, job->stage_dev, job->stage_ino,
			    job->arg);
		/* Setup may have found a "done" shard missing. */
		job->prog.shards_done = 0;
		for (size_t i = 0; i < job->plan->nshards; i++)
			job->prog.shards_done += job->shard_done[i];
		record_update(job, true);
		break;
	case TASK_SHARD:
		if (t->rc == 0) {
			job->prog.shards_done++;
			/* Every tensor of it is done: nothing reads this
			 * flag for it again but the record. */
			job->shard_done[t->idx] = true;
			record_update(job, true);
			if (job->on_shard != NULL)
				job->on_shard(job, t->idx, job->arg);
		}
		free(t->err);
		t->err = NULL;
		break;
	default:
		break;
	}
}

static void
exec_check_jobs(struct graph_exec *ex)
{
	struct graph_job *job, *next;

	ex->checking++;
	for (job = ex->jobs; job != NULL; job = next) {
		next = job->next;
		xjob_maybe_end(job);
	}
	ex->checking--;
}

static void
exec_after(uv_work_t *w, int status)
{
	struct task *t = container_of(w, struct task, work);
	struct graph_exec *ex = t->ex;

	(void)status;	/* nothing is ever uv_cancel'ed */
	ex->inflight--;
	ex->writing -= t->kind == TASK_WRITE;
	switch (t->kind) {
	case TASK_LOAD:
		after_load(ex, container_of(t, struct centry, task));
		break;
	case TASK_MERGE:
	case TASK_WRITE:
		after_unit(container_of(t, struct unit, task));
		break;
	default:
		after_xjob_task(t->job, t);
		break;
	}
	exec_check_jobs(ex);
	exec_pump(ex);
}

/*
 * Memory came back from outside the executor (a lease ended).  From a
 * callback the executor is making (a job's end, a lease granted) it
 * waits: a job's end may not free the job the executor's own walk looks
 * at next, and the pump that follows every such walk admits anyway.
 */
void
exec_kick(struct graph_exec *ex)
{
	if (ex->pumping)
		ex->kicked = true;
	if (ex->pumping || ex->checking > 0)
		return;
	exec_check_jobs(ex);
	exec_pump(ex);
}

/*
 * The smallest unit of every tensor must fit, or the job never can.
 * The plan refused a budget below its least (plan-layout.c); this is
 * asked again of the executor's own budget, and after fuse_link has
 * turned byte copies of a fused stage's tensors into computed ones.
 */
static int
exec_check_budget(const struct graph_exec *ex, const struct graph_plan *p,
    char **cause)
{
	const struct plan_tensor *pt;
	uint64_t need;
	size_t i;
	char *a, *b;

	for (i = 0; i < p->ntensors; i++) {
		pt = &p->tensors[i];
		if (plan_tensor_is_copy(pt))
			continue;
		need = plan_tensor_min_unit(pt) + plan_tensor_held(pt);
		if (need > ex->budget) {
			a = graph_format_size(need);
			b = graph_format_size(ex->budget);
			*cause = xasprintf("memory budget %s is too small: "
			    "tensor %s needs at least %s", b, pt->name, a);
			free(a);
			free(b);
			return -ENOMEM;
		}
	}
	return 0;
}

int
graph_exec_submit(struct graph_exec *ex, const struct graph_plan *p,
    const struct graph_job_opts *o, struct graph_job **out, char **cause)
{
	struct graph_job *job, **pp;
	struct stat st;
	size_t i;
	int rc;

	*out = NULL;
	if (!p->opts.merge.force && fstatat(o->out_dirfd, o->out_name, &st,
	    AT_SYMLINK_NOFOLLOW) == 0) {
		*cause = xasprintf("%s already exists; use --force to replace "
		    "it", o->out_dir);
		return -EEXIST;
	}
	if ((rc = exec_check_budget(ex, p, cause)) != 0)
		return rc;
	/* Written from the loop thread, with the process's own rights. */
	if (o->record && cred_mode(o->cred) == CRED_SWITCH) {
		*cause = xstrdup("a job's record is kept only by a process "
		    "acting as itself");
		return -EINVAL;
	}
	job = xcalloc(1, sizeof *job);
	if ((job->out_dirfd = fcntl(o->out_dirfd, F_DUPFD_CLOEXEC, 3)) == -1) {
		rc = -errno;
		*cause = xasprintf("%s: %s", o->out_dir, strerror(errno));
		free(job);
		return rc;
	}
	job->ex = ex;
	job->plan = p;
	job->out_name = xstrdup(o->out_name);
	job->out_dir = xstrdup(o->out_dir);
	job->manifest = o->manifest != NULL ? xstrdup(o->manifest) : NULL;
	job->stage_fd = -1;
	job->cred = o->cred;
	job->staging = o->staging_name != NULL ? xstrdup(o->staging_name) :
	    writer_staging_name(o->out_name);
	job->force = p->opts.merge.force;
	job->replace.cred = o->cred;
	if (o->nown > 0) {
		job->own = xcalloc(o->nown, sizeof *job->own);
		memcpy(job->own, o->own, o->nown * sizeof *job->own);
		job->replace.own = job->own;
		job->replace.nown = o->nown;
	}
	job->keep_staging = o->keep_staging;
	job->record = o->record;
	if (o->record)
		graph_plan_fingerprint(p, job->fingerprint);
	/* A cap at or above the whole budget caps nothing: the budget's
	 * own rules (and messages) apply. */
	job->cap = p->opts.merge.memory < ex->budget ? p->opts.merge.memory :
	    0;
	job->done = o->done;
	job->progress = o->progress;
	job->on_shard = o->shard_done;
	job->on_staged = o->staged;
	job->arg = o->arg;
	atomic_init(&job->cancel, false);
	if (uv_mutex_init(&job->stats_lock) != 0)
		abort();
	job->shard_done = xcalloc(p->nshards + 1, sizeof *job->shard_done);
	job->shard_left = xcalloc(p->nshards + 1, sizeof *job->shard_left);
	job->shard_fd = xcalloc(p->nshards + 1, sizeof *job->shard_fd);
	job->shard_direct = xcalloc(p->nshards + 1,
	    sizeof *job->shard_direct);
	job->shard_tasks = xcalloc(p->nshards + 1, sizeof *job->shard_tasks);
	job->shard_writing = xcalloc(p->nshards + 1,
	    sizeof *job->shard_writing);
	job->shard_wait = xcalloc(p->nshards + 1, sizeof *job->shard_wait);
	for (i = 0; i < p->nshards; i++) {
		job->shard_fd[i] = -1;
		job->shard_direct[i] = -1;
		job->shard_left[i] = p->shards[i].n;
		if (o->shards_done != NULL && o->shards_done[i]) {
			job->shard_done[i] = true;
			job->prog.shards_done++;
		}
	}
	job->xt = xcalloc(p->ntensors + 1, sizeof *job->xt);
	for (i = 0; i < p->ntensors; i++) {
		job->xt[i].pt = &p->tensors[i];
		job->xt[i].job = job;
	}
	job->prog.bytes_total = p->total_out;
	job->prog.tensors_total = p->ntensors;
	job->prog.shards_total = p->nshards;
	for (pp = &ex->jobs; *pp != NULL; pp = &(*pp)->next)
		;
	*pp = job;
	job->state = XJOB_SETUP;
	job->inflight++;
	xjob_task(job, TASK_SETUP);
	exec_pump(ex);
	*out = job;
	return 0;
}

/*
 * Stops the job for a later resume: like cancel, but the staging
 * directory and its finished shards stay; the done callback reports
 * -EINTR.
 */
void
graph_exec_interrupt(struct graph_job *job)
{
	job->keep_staging = true;
	if (job->state == XJOB_DONE || job->state == XJOB_CLEANUP)
		return;
	xjob_fail(job, -EINTR, "interrupted");
	exec_check_jobs(job->ex);
	exec_pump(job->ex);
}

/* Stops admitting the job's work; its done callback reports -ECANCELED. */
void
graph_exec_cancel(struct graph_job *job)
{
	if (job->state == XJOB_DONE || job->state == XJOB_CLEANUP)
		return;
	xjob_fail(job, -ECANCELED, "cancelled");
	exec_check_jobs(job->ex);
	exec_pump(job->ex);
}

void
graph_job_progress(const struct graph_job *job, struct graph_progress *p)
{
	*p = job->prog;
	p->memory_used = job->ex->used;
	p->memory_peak = job->ex->peak;
	p->job_memory = job->held;
	p->memory_wait = job->mem_wait;
}

void
graph_exec_stats(const struct graph_exec *ex, struct graph_exec_stats *s)
{
	s->budget = ex->budget;
	s->used = ex->used;
	s->peak = ex->peak;
	s->cached = ex->cache.bytes;
	s->cache_hits = ex->cache.hits;
	s->cache_misses = ex->cache.misses;
}
