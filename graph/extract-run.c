/* SPDX-License-Identifier: MIT */
/*
 * extract-run.c: running an extraction planned by extract.c, on a libuv
 * loop: the caller's (a daemon's, graph_extract_start) or one of its own
 * (graph_extract_run, mergectl extract-lora).
 *
 * A run is a small state machine, like a merge on the executor: SETUP
 * (the staging directory and the spool, on the pool, as the user), then
 * COMPUTE, then FINISH (the adapter's files and the publish, on the pool,
 * as the user), or CLEANUP (the staging directory removed) after a
 * failure, a cancel or an interruption.  The loop thread only moves it
 * along; nothing on it waits for a disk.
 *
 * COMPUTE: each decomposed weight (and each tensor saved in full that
 * FT's adapter changes) is one task on the pool: it reads FT's weight and
 * subtracts BASE's a chunk at a time (float32, both decoded, adapted
 * where an adapter applies), checks the result is finite, decomposes it
 * (extract-svd.c), rounds the factors once to FT's dtype and appends them
 * to a spool file in the staging directory.  The spool is there because
 * --sv-epsilon makes a weight's rank, and so its bytes, known only once
 * its SVD is done: the adapter's file is laid out afterwards
 * (extract-out.c).
 *
 * Tasks are admitted largest first while the working sets of those in
 * flight (extract.c sizes each: the task vector, the SVD's buffers and
 * LAPACK's work space, the factors) fit in x->admit, the run's own
 * budget, at most `threads` at once; a task bigger than that runs alone.
 * Under a daemon each task also leases its working set from the
 * executor's budget (graph_exec_lease), so that merges and extractions
 * share one budget; the planner then refuses weights over it.  The
 * buffers come from buf_alloc (mmap): freed, they leave the process,
 * where malloc's per-thread arenas would keep them resident.  Each weight
 * is computed by one thread with single-threaded OpenBLAS, so the bytes
 * written never depend on the thread count or the schedule.  The
 * callbacks run on the loop thread.
 */
#define _GNU_SOURCE
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "extract-int.h"
#include "select.h"

#define container_of(p, t, m) ((t *)((char *)(p) - offsetof(t, m)))

enum xrun_state {
	XRUN_SETUP,
	XRUN_COMPUTE,
	XRUN_FINISH,
	XRUN_CLEANUP,
	XRUN_DONE,
};

struct graph_extract_job {
	struct graph_extract *x;
	uv_loop_t *loop;
	struct graph_exec *exec;	/* leases from; NULL: none */
	enum xrun_state state;
	int out_dirfd;		/* the destination's parent, owned */
	char *out_name;
	char *out_dir;		/* for messages */
	char *staging;		/* its name in out_dirfd */
	int stage_fd;
	int spool_fd;
	uint64_t stage_dev;
	uint64_t stage_ino;
	struct graph_replace replace;	/* what force may replace */
	struct graph_ident *own;	/* replace.own, owned */
	/* COMPUTE */
	size_t *order;		/* the pool's tasks, largest first */
	size_t norder;
	size_t next;
	size_t inflight;
	uint64_t used;		/* bytes admitted */
	struct xtask *waiting;	/* its lease not granted yet */
	atomic_uint_fast64_t spool_end;
	atomic_bool stop;	/* cancelled or interrupted: no new task */
	struct graph_progress prog;
	/* SETUP, FINISH, CLEANUP: one at a time. */
	uv_work_t step;
	int step_rc;
	char *step_err;
	int rc;			/* the first failure */
	char *err;
	struct graph_diags warnings;	/* found while running */
	uint64_t t0;
	struct graph_extract_job_opts o;	/* the callbacks */
};

struct xtask {
	uv_work_t work;
	struct graph_extract_job *run;
	struct xweight *w;
	struct graph_lease *lease;
	int rc;
	char *err;
};

/* Appends len bytes to the spool; where they went, in *off. */
static int
xrun_spool(struct graph_extract_job *run, const void *buf, uint64_t len,
    uint64_t *off, char **cause)
{
	*off = atomic_fetch_add(&run->spool_end, len);
	return writer_pwrite(run->spool_fd, buf, (size_t)len, *off, cause);
}

/* FT - BASE, in float32, into d; its squared norm in *norm2. */
static int
xrun_task_vector(const struct graph_extract *x, const struct xweight *w,
    float *d, double *norm2, char **cause)
{
	uint64_t numel = w->ft->t->numel, off;
	size_t k, i;
	float *tmp;
	double sum = 0;
	int rc;

	if ((rc = reader_read_tensor(x->ft, w->ft, 0, (size_t)numel, d,
	    cause)) != 0)
		return rc;
	tmp = buf_alloc(EXTRACT_CHUNK * sizeof *tmp);
	for (off = 0; off < numel; off += k) {
		k = numel - off < EXTRACT_CHUNK ? (size_t)(numel - off) :
		    EXTRACT_CHUNK;
		if ((rc = reader_read_tensor(x->base, w->base, off, k, tmp,
		    cause)) != 0)
			break;
		for (i = 0; i < k; i++) {
			d[off + i] -= tmp[i];
			sum += (double)d[off + i] * (double)d[off + i];
		}
	}
	buf_free(tmp, EXTRACT_CHUNK * sizeof *tmp);
	if (rc == 0 && !isfinite(sum)) {
		*cause = xasprintf("%s: the task vector holds infinite or NaN "
		    "values (in the fine-tuned or the base model)", w->name);
		rc = -EINVAL;
	}
	*norm2 = sum;
	return rc;
}

/* A decomposed weight. */
static int
xrun_lora(struct graph_extract_job *run, struct xweight *w, char **cause)
{
	const struct graph_extract *x = run->x;
	uint64_t numel = w->ft->t->numel, na = 0, nb = 0, es;
	struct svd s;
	float *d, *a = NULL, *b = NULL;
	uint8_t *enc = NULL;
	double norm2 = 0;
	char *why;
	int64_t k;
	int rc;

	es = graph_dtype_size(w->out_dtype);
	d = buf_alloc(numel * sizeof *d);
	if ((rc = xrun_task_vector(x, w, d, &norm2, cause)) != 0)
		goto out;
	rc = x->fast ? svd_fast(d, w->m, w->n, w->transpose, w->l,
	    x->power_iters, rng_stream(x->seed, w->name, 0), &s, cause) :
	    svd_exact(d, w->m, w->n, w->transpose, &s, cause);
	if (rc != 0) {
		why = *cause;
		*cause = xasprintf("%s: %s", w->name, why);
		free(why);
		goto out;
	}
	k = svd_rank(&s, x->max_rank, x->sv_epsilon);
	w->r.rows = s.rows;
	w->r.cols = s.cols;
	w->r.rank = k;
	w->r.norm = sqrt(norm2);
	w->r.residual = svd_residual(&s, k, norm2, !x->fast);
	w->r.rel_error = norm2 > 0 ? w->r.residual / w->r.norm : 0;
	w->s0 = s.p > 0 ? s.s[0] : 0;
	if (k > 0) {
		na = (uint64_t)k * (uint64_t)s.cols;
		nb = (uint64_t)s.rows * (uint64_t)k;
		a = buf_alloc(na * sizeof *a);
		b = buf_alloc(nb * sizeof *b);
		enc = buf_alloc((na + nb) * es);
		svd_factors(&s, k, x->distribute, a, b);
		graph_encode_f32(w->out_dtype, a, enc, na);
		graph_encode_f32(w->out_dtype, b, enc + na * es, nb);
		w->spool_len = (na + nb) * es;
		rc = xrun_spool(run, enc, w->spool_len, &w->spool_off, cause);
	}
	svd_fini(&s);
out:
	buf_free(d, numel * sizeof *d);
	buf_free(a, na * sizeof *a);
	buf_free(b, nb * sizeof *b);
	buf_free(enc, (na + nb) * es);
	return rc;
}

/* A tensor saved in full that FT's adapter changes: read adapted. */
static int
xrun_full(struct graph_extract_job *run, struct xweight *w, char **cause)
{
	uint64_t numel = w->ft->t->numel;
	size_t es = graph_dtype_size(w->out_dtype);
	float *f = buf_alloc(numel * sizeof *f);
	uint8_t *enc = buf_alloc(numel * es);
	int rc;

	rc = reader_read_tensor(run->x->ft, w->ft, 0, (size_t)numel, f, cause);
	if (rc == 0) {
		graph_encode_f32(w->out_dtype, f, enc, numel);
		w->spool_len = numel * es;
		rc = xrun_spool(run, enc, w->spool_len, &w->spool_off, cause);
	}
	buf_free(f, numel * sizeof *f);
	buf_free(enc, numel * es);
	return rc;
}

/* Marks the run failed, keeping the first failure (a real one says more
 * than an interruption). */
static void
xrun_fail(struct graph_extract_job *run, int rc, char *err)
{
	if (run->rc == 0 || ((run->rc == -ECANCELED || run->rc == -EINTR) &&
	    rc != -ECANCELED && rc != -EINTR)) {
		free(run->err);
		run->rc = rc;
		run->err = err != NULL ? err : xstrdup(strerror(-rc));
		err = NULL;
	}
	free(err);
	atomic_store(&run->stop, true);
}

static bool
xrun_stopping(struct graph_extract_job *run)
{
	const atomic_bool *cancel = run->o.cancel;

	if (run->rc == 0 && cancel != NULL && atomic_load(cancel))
		xrun_fail(run, -ECANCELED, xstrdup("interrupted"));
	return run->rc != 0;
}

static void
xrun_work(uv_work_t *req)
{
	struct xtask *t = container_of(req, struct xtask, work);
	uint64_t t0 = uv_hrtime();

	if (atomic_load(&t->run->stop) || (t->run->o.cancel != NULL &&
	    atomic_load(t->run->o.cancel))) {
		t->rc = -ECANCELED;
		return;
	}
	t->rc = t->w->lora ? xrun_lora(t->run, t->w, &t->err) :
	    xrun_full(t->run, t->w, &t->err);
	t->w->r.seconds = (double)(uv_hrtime() - t0) / 1e9;
}

static void xrun_pump(struct graph_extract_job *);

/* The bytes of input a task reads: its share of the progress. */
static uint64_t
xrun_task_bytes(const struct xweight *w)
{
	return w->ft->t->end - w->ft->t->begin + (w->lora ? w->base->t->end -
	    w->base->t->begin : 0);
}

static void
xrun_progress(struct graph_extract_job *run)
{
	struct graph_exec_stats s;

	run->prog.memory_used = run->used;
	run->prog.memory_peak = run->x->peak;
	if (run->exec != NULL) {
		graph_exec_stats(run->exec, &s);
		run->prog.memory_used = s.used;
		run->prog.memory_peak = s.peak;
	}
	run->prog.job_memory = run->used;
	if (run->o.progress != NULL)
		run->o.progress(run, &run->prog, run->o.arg);
}

static void
xrun_after(uv_work_t *req, int status)
{
	struct xtask *t = container_of(req, struct xtask, work);
	struct graph_extract_job *run = t->run;

	(void)status;	/* nothing is ever uv_cancel'ed */
	run->inflight--;
	run->used -= t->w->need;
	if (t->rc == -ECANCELED && t->err == NULL) {
		/* Not started: the run was stopping already. */
	} else if (t->rc != 0) {
		xrun_fail(run, t->rc, t->err);
		t->err = NULL;
	} else {
		t->w->r.done = true;
		run->prog.tensors_done++;
		run->prog.bytes_done += xrun_task_bytes(t->w);
		if (run->o.weight_done != NULL)
			run->o.weight_done(&t->w->r, run->o.arg);
		xrun_progress(run);
	}
	/* Last: giving memory back may grant this run's waiting lease
	 * (xrun_granted), and the executor's callbacks run meanwhile. */
	graph_exec_lease_free(t->lease);
	free(t->err);
	free(t);
	xrun_pump(run);
}

static void
xrun_queue(struct graph_extract_job *run, struct xtask *t)
{
	uv_queue_work(run->loop, &t->work, xrun_work, xrun_after);
}

/* The executor granted a waiting task's memory. */
static void
xrun_granted(struct graph_lease *l, void *arg)
{
	struct xtask *t = arg;
	struct graph_extract_job *run = t->run;

	(void)l;
	run->waiting = NULL;
	if (run->prog.memory_wait != 0) {
		run->prog.memory_wait = 0;
		xrun_progress(run);
	}
	xrun_queue(run, t);
	xrun_pump(run);
}

/* Admits the next task; false when it must wait or none is left. */
static bool
xrun_admit(struct graph_extract_job *run)
{
	struct graph_extract *x = run->x;
	struct xweight *w;
	struct xtask *t;
	char *cause = NULL;
	int rc;

	if (run->waiting != NULL || run->next >= run->norder ||
	    run->inflight >= (size_t)x->threads)
		return false;
	w = &x->w[run->order[run->next]];
	if (run->inflight > 0 && run->used + w->need > x->admit)
		return false;
	t = xcalloc(1, sizeof *t);
	t->run = run;
	t->w = w;
	if (run->exec != NULL) {
		rc = graph_exec_lease(run->exec, w->need, xrun_granted, t,
		    &t->lease, &cause);
		if (rc < 0) {
			free(t);
			xrun_fail(run, rc, xasprintf("%s: %s", w->name, cause));
			free(cause);
			return false;
		}
	} else {
		rc = 1;
	}
	run->used += w->need;
	if (run->used > x->peak)
		x->peak = run->used;
	run->inflight++;
	run->next++;
	if (rc == 1) {
		xrun_queue(run, t);
	} else {
		run->waiting = t;
		/* Nothing of its own running: the run waits for memory. */
		if (run->inflight == 1) {
			run->prog.memory_wait = w->need;
			xrun_progress(run);
		}
	}
	return rc == 1;
}

static void xrun_step(struct graph_extract_job *, enum xrun_state);

static void
xrun_pump(struct graph_extract_job *run)
{
	if (run->state != XRUN_COMPUTE)
		return;
	if (!xrun_stopping(run))
		while (xrun_admit(run))
			;
	if (run->rc != 0 && run->waiting != NULL) {
		/* Never granted: its memory goes back unused. */
		graph_exec_lease_free(run->waiting->lease);
		run->used -= run->waiting->w->need;
		run->inflight--;
		free(run->waiting);
		run->waiting = NULL;
	}
	if (run->inflight > 0)
		return;
	if (run->rc == 0 && run->next < run->norder)
		return;	/* only when a lease failed, which set rc */
	xrun_step(run, run->rc == 0 ? XRUN_FINISH : XRUN_CLEANUP);
}

/*
 * Weights cut to rank 0 by --sv-epsilon are left out with a warning
 * (mergekit writes them with rank 0, which PEFT refuses); with none left,
 * there is no adapter.
 */
static int
xrun_ranks(const struct graph_extract *x, struct graph_diags *d,
    char **cause)
{
	const struct xweight *w;
	size_t i, kept = 0;

	for (i = 0; i < x->nw; i++) {
		w = &x->w[i];
		if (!w->lora)
			continue;
		if (w->r.rank > 0) {
			kept++;
			continue;
		}
		graph_diag_add(d, GRAPH_SEV_WARNING, w->module, "no singular "
		    "value above --sv-epsilon %g (the largest is %g): left "
		    "out, as PEFT refuses rank 0", x->sv_epsilon,
		    (double)w->s0);
	}
	if (kept > 0)
		return 0;
	*cause = xasprintf("no weight keeps a singular value above "
	    "--sv-epsilon %g: there is no adapter to write", x->sv_epsilon);
	return -EINVAL;
}

/* Pool, as the user: the staging directory and the spool in it. */
static int
xrun_setup(struct graph_extract_job *run, char **cause)
{
	struct stat st;
	int rc;

	if ((rc = writer_stage_open(run->out_dirfd, run->staging,
	    run->x->cred, &run->stage_fd, cause)) != 0)
		return rc;
	if (fstat(run->stage_fd, &st) == -1) {
		*cause = xasprintf("%s: %s", run->staging, strerror(errno));
		return -errno;
	}
	run->stage_dev = (uint64_t)st.st_dev;
	run->stage_ino = (uint64_t)st.st_ino;
	/* What an interrupted run left goes. */
	(void)unlinkat(run->stage_fd, EXTRACT_SPOOL, 0);
	run->spool_fd = openat(run->stage_fd, EXTRACT_SPOOL, O_RDWR | O_CREAT |
	    O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (run->spool_fd == -1) {
		*cause = xasprintf("cannot create %s: %s", EXTRACT_SPOOL,
		    strerror(errno));
		return -errno;
	}
	return 0;
}

/* Pool, as the user: the adapter's files, then the publish. */
static int
xrun_finish(struct graph_extract_job *run, char **cause)
{
	struct graph_extract *x = run->x;
	int rc;

	/* An input rewritten in place while it was read: nothing is
	 * published. */
	if ((rc = model_check_unchanged(x->ft, cause)) != 0 ||
	    (rc = model_check_unchanged(x->base, cause)) != 0)
		return rc;
	if ((rc = xrun_ranks(x, &run->warnings, cause)) != 0)
		return rc;
	if ((rc = extract_write(x, run->stage_fd, run->spool_fd, run->out_name,
	    cause)) != 0)
		return rc;
	close(run->spool_fd);
	run->spool_fd = -1;
	(void)unlinkat(run->stage_fd, EXTRACT_SPOOL, 0);
	if (fsync(run->stage_fd) == -1) {
		*cause = xasprintf("%s: fsync: %s", run->staging,
		    strerror(errno));
		return -errno;
	}
	close(run->stage_fd);
	run->stage_fd = -1;
	return writer_publish(run->out_dirfd, run->staging, run->out_name,
	    x->force ? &run->replace : NULL, cause);
}

/* Pool, as the user: whatever the run made goes. */
static void
xrun_cleanup(struct graph_extract_job *run)
{
	if (run->spool_fd != -1)
		close(run->spool_fd);
	run->spool_fd = -1;
	if (run->stage_fd != -1)
		close(run->stage_fd);
	run->stage_fd = -1;
	writer_remove_tree(run->out_dirfd, run->staging);
}

static void
xrun_step_work(uv_work_t *req)
{
	struct graph_extract_job *run = container_of(req,
	    struct graph_extract_job, step);
	struct cred_saved saved;

	if ((run->step_rc = cred_enter(run->x->cred, &saved,
	    &run->step_err)) != 0)
		return;
	switch (run->state) {
	case XRUN_SETUP:
		run->step_rc = xrun_setup(run, &run->step_err);
		break;
	case XRUN_FINISH:
		run->step_rc = xrun_finish(run, &run->step_err);
		break;
	default:
		xrun_cleanup(run);
		break;
	}
	cred_leave(&saved);
}

static void
xrun_free(struct graph_extract_job *run)
{
	if (run->out_dirfd != -1)
		close(run->out_dirfd);
	free(run->out_name);
	free(run->out_dir);
	free(run->staging);
	free(run->own);
	free(run->order);
	free(run->err);
	free(run->step_err);
	graph_diags_fini(&run->warnings);
	free(run);
}

/* The run is over: the caller hears it, and the run is freed. */
static void
xrun_end(struct graph_extract_job *run)
{
	struct graph_extract *x = run->x;

	run->state = XRUN_DONE;
	x->seconds = (double)(uv_hrtime() - run->t0) / 1e9;
	if (run->rc == 0) {
		run->prog.shards_done = 1;
		run->prog.bytes_done = run->prog.bytes_total;
	}
	xrun_progress(run);
	if (run->o.done != NULL)
		run->o.done(run, run->rc, run->err, &run->warnings, run->o.arg);
	xrun_free(run);
}

static void
xrun_step_after(uv_work_t *req, int status)
{
	struct graph_extract_job *run = container_of(req,
	    struct graph_extract_job, step);
	int rc = run->step_rc;

	(void)status;
	run->step_rc = 0;
	if (rc != 0) {
		xrun_fail(run, rc, run->step_err);
		run->step_err = NULL;
	}
	switch (run->state) {
	case XRUN_SETUP:
		if (rc == 0 && run->o.staged != NULL)
			run->o.staged(run, run->stage_dev, run->stage_ino,
			    run->o.arg);
		run->state = XRUN_COMPUTE;
		xrun_pump(run);
		break;
	case XRUN_FINISH:
		if (rc == 0) {
			xrun_end(run);
			break;
		}
		xrun_step(run, XRUN_CLEANUP);
		break;
	default:
		xrun_end(run);
		break;
	}
}

static void
xrun_step(struct graph_extract_job *run, enum xrun_state s)
{
	run->state = s;
	uv_queue_work(run->loop, &run->step, xrun_step_work, xrun_step_after);
}

/* Largest first, then by name: the order tasks are admitted in. */
static int
xrun_cmp(const void *a, const void *b, void *arg)
{
	const struct graph_extract *x = arg;
	const struct xweight *p = &x->w[*(const size_t *)a];
	const struct xweight *q = &x->w[*(const size_t *)b];

	if (p->need != q->need)
		return p->need > q->need ? -1 : 1;
	return strcmp(p->name, q->name);
}

int
graph_extract_start(uv_loop_t *loop, struct graph_extract *x,
    const struct graph_extract_job_opts *o, struct graph_extract_job **out,
    char **cause)
{
	struct graph_extract_job *run;
	struct stat st;
	size_t i;
	int rc;

	*out = NULL;
	if (!x->force && fstatat(o->out_dirfd, o->out_name, &st,
	    AT_SYMLINK_NOFOLLOW) == 0) {
		*cause = xasprintf("%s already exists; use --force to replace "
		    "it", o->out_dir);
		return -EEXIST;
	}
	run = xcalloc(1, sizeof *run);
	if ((run->out_dirfd = fcntl(o->out_dirfd, F_DUPFD_CLOEXEC, 3)) == -1) {
		rc = -errno;
		*cause = xasprintf("%s: %s", o->out_dir, strerror(errno));
		free(run);
		return rc;
	}
	run->x = x;
	run->loop = loop;
	run->exec = o->exec;
	run->o = *o;
	run->out_name = xstrdup(o->out_name);
	run->out_dir = xstrdup(o->out_dir);
	run->staging = o->staging_name != NULL ? xstrdup(o->staging_name) :
	    writer_staging_name(o->out_name);
	run->stage_fd = -1;
	run->spool_fd = -1;
	run->replace.cred = x->cred;
	if (o->nown > 0) {
		run->own = xcalloc(o->nown, sizeof *run->own);
		memcpy(run->own, o->own, o->nown * sizeof *run->own);
		run->replace.own = run->own;
		run->replace.nown = o->nown;
	}
	graph_diags_init(&run->warnings);
	atomic_init(&run->spool_end, 0);
	atomic_init(&run->stop, false);
	run->order = xcalloc(x->nw + 1, sizeof *run->order);
	for (i = 0; i < x->nw; i++) {
		if (!x->w[i].lora && !x->w[i].computed)
			continue;
		run->order[run->norder++] = i;
		run->prog.bytes_total += xrun_task_bytes(&x->w[i]);
	}
	qsort_r(run->order, run->norder, sizeof *run->order, xrun_cmp, x);
	run->prog.tensors_total = run->norder;
	run->prog.shards_total = 1;
	run->t0 = uv_hrtime();
	xrun_step(run, XRUN_SETUP);
	*out = run;
	return 0;
}

/* Stops the run: no weight starts; the done callback reports rc. */
static void
xrun_stop(struct graph_extract_job *run, int rc, const char *why)
{
	/* Once publishing, the publish decides: a cancel then would
	 * report cancelled an adapter that is in place. */
	if (run->state == XRUN_DONE || run->state == XRUN_CLEANUP ||
	    run->state == XRUN_FINISH)
		return;
	xrun_fail(run, rc, xstrdup(why));
	xrun_pump(run);
}

void
graph_extract_cancel(struct graph_extract_job *run)
{
	xrun_stop(run, -ECANCELED, "cancelled");
}

void
graph_extract_interrupt(struct graph_extract_job *run)
{
	xrun_stop(run, -EINTR, "interrupted");
}

void
graph_extract_job_progress(const struct graph_extract_job *run,
    struct graph_progress *p)
{
	*p = run->prog;
}

/* graph_extract_run's result, filled by its done callback. */
struct xrun_result {
	int rc;
	char *err;
	struct graph_diags *d;
	graph_extract_cb cb;	/* the caller's, with its argument */
	void *arg;
};

static void
xrun_weight_sync(const struct graph_extract_weight *w, void *arg)
{
	struct xrun_result *r = arg;

	if (r->cb != NULL)
		r->cb(w, r->arg);
}

static void
xrun_done_sync(struct graph_extract_job *run, int rc, const char *err,
    const struct graph_diags *warnings, void *arg)
{
	struct xrun_result *r = arg;
	size_t i;

	(void)run;
	r->rc = rc;
	r->err = err != NULL ? xstrdup(err) : NULL;
	for (i = 0; i < warnings->n; i++)
		graph_diag_add(r->d, warnings->v[i].sev, warnings->v[i].where,
		    "%s", warnings->v[i].msg);
}

int
graph_extract_run(struct graph_extract *x, int out_dirfd,
    const char *out_name, const char *out_dir, graph_extract_cb cb,
    void *arg, struct graph_diags *d, char **cause)
{
	struct graph_extract_job_opts o;
	struct graph_extract_job *run;
	struct xrun_result r = { 0, NULL, d, cb, arg };
	uv_loop_t loop;
	int rc;

	*cause = NULL;
	if (uv_loop_init(&loop) != 0) {
		*cause = xstrdup("cannot make an event loop");
		return -ENOMEM;
	}
	memset(&o, 0, sizeof o);
	o.out_dirfd = out_dirfd;
	o.out_name = out_name;
	o.out_dir = out_dir;
	o.weight_done = xrun_weight_sync;
	o.done = xrun_done_sync;
	o.cancel = x->cancel;	/* the plan's: the caller's signal flag */
	o.arg = &r;
	if ((rc = graph_extract_start(&loop, x, &o, &run, cause)) == 0) {
		(void)uv_run(&loop, UV_RUN_DEFAULT);
		rc = r.rc;
		*cause = r.err;
	}
	(void)uv_loop_close(&loop);
	return rc;
}
