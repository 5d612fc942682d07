/* SPDX-License-Identifier: MIT */
/*
 * extract-run.c: running an extraction planned by extract.c.
 *
 * Each decomposed weight (and each tensor saved in full that FT's
 * adapter changes) is one task on the libuv thread pool, on a loop of
 * the run's own: it reads FT's weight and subtracts BASE's a chunk at a
 * time (float32, both decoded, adapted where an adapter applies), checks
 * the result is finite, decomposes it (extract-svd.c), rounds the factors
 * once to FT's dtype and appends them to a spool file in the staging
 * directory.  The spool is there because --sv-epsilon makes a weight's
 * rank, and so its bytes, known only once its SVD is done: the adapter's
 * file is laid out afterwards (extract-out.c).
 *
 * Tasks are admitted largest first while the working sets of those in
 * flight (extract.c sizes each: the task vector, the SVD's buffers and
 * LAPACK's work space, the factors) fit in the budget less the process's
 * own share (EXTRACT_OVERHEAD), at most `threads` at once; a task bigger
 * than that runs alone.  The buffers come from buf_alloc (mmap): freed,
 * they leave the process, where malloc's per-thread arenas would keep
 * them resident.  Each weight
 * is computed by one thread with single-threaded OpenBLAS, so the bytes
 * written never depend on the thread count or the schedule.  The
 * caller's callback runs on the caller's thread as each weight finishes.
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

struct xrun {
	struct graph_extract *x;
	uv_loop_t loop;
	size_t *order;		/* the pool's tasks, largest first */
	size_t norder;
	size_t next;
	size_t inflight;
	uint64_t used;		/* bytes admitted */
	int spool_fd;
	atomic_uint_fast64_t spool_end;
	graph_extract_cb cb;
	void *arg;
	int rc;			/* the first failure */
	char *err;
};

struct xtask {
	uv_work_t work;
	struct xrun *run;
	struct xweight *w;
	int rc;
	char *err;
};

/* Appends len bytes to the spool; where they went, in *off. */
static int
xrun_spool(struct xrun *run, const void *buf, uint64_t len, uint64_t *off,
    char **cause)
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
xrun_lora(struct xrun *run, struct xweight *w, char **cause)
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
xrun_full(struct xrun *run, struct xweight *w, char **cause)
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

static void
xrun_work(uv_work_t *req)
{
	struct xtask *t = container_of(req, struct xtask, work);
	uint64_t t0 = uv_hrtime();

	if (t->run->x->cancel != NULL && atomic_load(t->run->x->cancel)) {
		t->rc = -ECANCELED;
		t->err = xstrdup("interrupted");
		return;
	}
	t->rc = t->w->lora ? xrun_lora(t->run, t->w, &t->err) :
	    xrun_full(t->run, t->w, &t->err);
	t->w->r.seconds = (double)(uv_hrtime() - t0) / 1e9;
}

static void xrun_pump(struct xrun *);

static void
xrun_after(uv_work_t *req, int status)
{
	struct xtask *t = container_of(req, struct xtask, work);
	struct xrun *run = t->run;

	(void)status;	/* nothing is ever uv_cancel'ed */
	run->inflight--;
	run->used -= t->w->need;
	if (t->rc != 0 && (run->rc == 0 || run->rc == -ECANCELED)) {
		/* A real failure says more than an interruption. */
		free(run->err);
		run->rc = t->rc;
		run->err = t->err;
		t->err = NULL;
	} else if (t->rc == 0) {
		t->w->r.done = true;
		if (run->cb != NULL)
			run->cb(&t->w->r, run->arg);
	}
	free(t->err);
	free(t);
	xrun_pump(run);
}

static void
xrun_pump(struct xrun *run)
{
	struct graph_extract *x = run->x;
	struct xweight *w;
	struct xtask *t;

	if (run->rc == 0 && x->cancel != NULL && atomic_load(x->cancel)) {
		run->rc = -ECANCELED;
		run->err = xstrdup("interrupted");
	}
	while (run->rc == 0 && run->next < run->norder &&
	    run->inflight < (size_t)x->threads) {
		w = &x->w[run->order[run->next]];
		if (run->inflight > 0 && run->used + w->need > x->admit)
			break;
		run->used += w->need;
		if (run->used > x->peak)
			x->peak = run->used;
		run->inflight++;
		run->next++;
		t = xcalloc(1, sizeof *t);
		t->run = run;
		t->w = w;
		uv_queue_work(&run->loop, &t->work, xrun_work, xrun_after);
	}
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

/* Runs every pool task to its end; 0 or the first failure. */
static int
xrun_compute(struct graph_extract *x, int spool_fd, graph_extract_cb cb,
    void *arg, char **cause)
{
	struct xrun run;
	size_t i;

	memset(&run, 0, sizeof run);
	run.x = x;
	run.spool_fd = spool_fd;
	run.cb = cb;
	run.arg = arg;
	atomic_init(&run.spool_end, 0);
	run.order = xcalloc(x->nw + 1, sizeof *run.order);
	for (i = 0; i < x->nw; i++)
		if (x->w[i].lora || x->w[i].computed)
			run.order[run.norder++] = i;
	qsort_r(run.order, run.norder, sizeof *run.order, xrun_cmp, x);
	if (uv_loop_init(&run.loop) != 0) {
		free(run.order);
		*cause = xstrdup("cannot make an event loop");
		return -ENOMEM;
	}
	xrun_pump(&run);
	uv_run(&run.loop, UV_RUN_DEFAULT);
	(void)uv_loop_close(&run.loop);
	free(run.order);
	*cause = run.err;
	return run.rc;
}

/* An input rewritten in place while it was read: nothing is published. */
static int
xrun_unchanged(const struct model *m, char **cause)
{
	size_t i;
	int rc;

	for (i = 0; i < m->nfiles; i++)
		if ((rc = safetensors_check_unchanged(m->files[i], cause)) != 0)
			return rc;
	return 0;
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

int
graph_extract_run(struct graph_extract *x, int out_dirfd,
    const char *out_name, const char *out_dir, graph_extract_cb cb,
    void *arg, struct graph_diags *d, char **cause)
{
	struct graph_replace replace = { NULL, NULL, 0 };
	struct stat st;
	uint64_t t0 = uv_hrtime();
	char *staging;
	int sfd = -1, spool = -1, rc;

	*cause = NULL;
	if (!x->force && fstatat(out_dirfd, out_name, &st,
	    AT_SYMLINK_NOFOLLOW) == 0) {
		*cause = xasprintf("%s already exists; use --force to replace "
		    "it", out_dir);
		return -EEXIST;
	}
	staging = writer_staging_name(out_name);
	if ((rc = writer_stage_open(out_dirfd, staging, NULL, &sfd,
	    cause)) != 0)
		goto out;
	/* What an interrupted run of this process id left goes. */
	(void)unlinkat(sfd, EXTRACT_SPOOL, 0);
	spool = openat(sfd, EXTRACT_SPOOL, O_RDWR | O_CREAT | O_EXCL |
	    O_NOFOLLOW | O_CLOEXEC, 0600);
	if (spool == -1) {
		rc = -errno;
		*cause = xasprintf("cannot create %s: %s", EXTRACT_SPOOL,
		    strerror(errno));
		goto out;
	}
	if ((rc = xrun_compute(x, spool, cb, arg, cause)) != 0)
		goto out;
	if ((rc = xrun_unchanged(x->ft, cause)) != 0 ||
	    (rc = xrun_unchanged(x->base, cause)) != 0)
		goto out;
	if ((rc = xrun_ranks(x, d, cause)) != 0)
		goto out;
	if ((rc = extract_write(x, sfd, spool, out_name, cause)) != 0)
		goto out;
	close(spool);
	spool = -1;
	(void)unlinkat(sfd, EXTRACT_SPOOL, 0);
	if (fsync(sfd) == -1) {
		rc = -errno;
		*cause = xasprintf("%s: fsync: %s", staging, strerror(errno));
		goto out;
	}
	close(sfd);
	sfd = -1;
	rc = writer_publish(out_dirfd, staging, out_name, x->force ? &replace :
	    NULL, cause);
out:
	if (spool != -1)
		close(spool);
	if (sfd != -1)
		close(sfd);
	if (rc != 0)
		writer_remove_tree(out_dirfd, staging);
	free(staging);
	x->seconds = (double)(uv_hrtime() - t0) / 1e9;
	return rc;
}
