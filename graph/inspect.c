/* SPDX-License-Identifier: MIT */
/*
 * inspect.c: how alike two models' layers are (mergectl inspect), the
 * evidence for a config's cross-layer mappings.
 *
 * For each kind of layer weight both models have in every layer (the
 * attention projections, the MLP's, the norms: their layer templates,
 * arch-derive.c), the cosine similarity of every pair (layer i of A,
 * layer j of B) of flattened weights, or of their task vectors against
 * a base (X_i - BASE_i) when one is given; weights of different shapes
 * are compared on their common top-left sub-matrix, and marked so.
 *
 * It is one Gram matrix per kind, G = A B^T over the flattened layers,
 * accumulated a block of rows at a time: each layer's rows [r0, r0 + k)
 * of A and of B (less the base's) are read once, as float64, and one
 * OpenBLAS dgemm adds their products to G, so that every dot product is
 * a float64 reduction (MERGEKIT.md Part A 9) and every weight is read
 * once, whatever the number of layers.  The block is as many rows as fit
 * the memory budget; a budget below one row of every layer is refused
 * before anything is read, saying the least.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <uv.h>

#include "graph-int.h"
#include "method.h"

/* One side: a model, its layer stack, and its optional base. */
struct side {
	struct model *m;
	struct arch arch;
	const struct arch_module *am;
	int64_t layers;
};

static int
inspect_open(const char *s, const char *what,
    const struct graph_inspect_opts *o, struct side *sd,
    struct graph_diags *d)
{
	struct graph_ref ref;
	struct graph_resolved r;
	char *cause = NULL;
	int rc;

	memset(sd, 0, sizeof *sd);
	if ((rc = graph_ref_parse(s, &ref, &cause)) != 0)
		goto fail;
	rc = graph_ref_locate(&ref, false, NULL, 0, &o->env, &r, &cause);
	if (rc == 0)
		rc = model_open(&ref, &r, NULL, o->cancel, &sd->m, &cause);
	graph_resolved_fini(&r);
	graph_ref_fini(&ref);
	if (rc != 0)
		goto fail;
	if ((rc = arch_derive(sd->m, &sd->arch, &cause)) != 0)
		goto fail;
	sd->am = &sd->arch.mod[sd->arch.main];
	sd->layers = sd->am->layer_prefix != NULL ? sd->am->num_layers : 0;
	if (sd->layers <= 0) {
		graph_diag_add(d, GRAPH_SEV_ERROR, what, "%s has no stack of "
		    "layers to compare", s);
		return -EINVAL;
	}
	return 0;
fail:
	graph_diag_add(d, GRAPH_SEV_ERROR, what, "%s", cause);
	free(cause);
	return rc;
}

static void
side_close(struct side *sd)
{
	if (sd->m != NULL)
		arch_fini(&sd->arch);
	model_close(sd->m);
	memset(sd, 0, sizeof *sd);
}

/* The tensor of weight w in layer i of sd, or NULL. */
static const struct model_tensor *
side_tensor(const struct side *sd, const struct arch_weight *w, int64_t i)
{
	char *name = arch_layer_name(sd->am, w, i);
	const struct model_tensor *mt = model_find(sd->m, name);

	free(name);
	return mt;
}

static const struct arch_weight *
side_weight(const struct side *sd, const char *suffix)
{
	size_t i;

	for (i = 0; i < sd->am->nlayer; i++)
		if (sd->am->layer[i].uniform && strcmp(sd->am->layer[i].name,
		    suffix) == 0)
			return &sd->am->layer[i];
	return NULL;
}

/* Rows and columns of a tensor as a matrix (a vector: one row). */
static void
tensor_dims(const struct model_tensor *mt, uint64_t *rows, uint64_t *cols)
{
	const struct safetensors_tensor *t = mt->t;

	*rows = t->ndim >= 2 ? (uint64_t)t->shape[0] : 1;
	*cols = t->ndim >= 2 ? t->numel / *rows : t->numel;
}

static bool
same_shape(const struct model_tensor *x, const struct model_tensor *y)
{
	int k;

	if (x->t->ndim != y->t->ndim)
		return false;
	for (k = 0; k < x->t->ndim; k++)
		if (x->t->shape[k] != y->t->shape[k])
			return false;
	return true;
}

/* The work for one kind: its tensors in every layer of each side. */
struct kind_work {
	const struct model_tensor **a, **b, **ba, **bb;	/* ba, bb: base */
	uint64_t rows, cols;	/* the common sub-matrix */
	uint64_t acols, bcols;	/* each side's row length */
};

/*
 * Checks that the kind is comparable: the same shape in every layer of
 * each side, and the base's equal to each side's.  Returns false
 * (having said why in d when it is a problem) or true with w filled.
 */
static bool
kind_prepare(const struct side *A, const struct side *B,
    const struct side *base, const struct arch_weight *wa,
    const struct arch_weight *wb, struct kind_work *w, struct graph_diags *d)
{
	const struct arch_weight *wx;
	const struct model_tensor *t;
	uint64_t r, c, r0, c0;
	int64_t i;

	memset(w, 0, sizeof *w);
	w->a = xcalloc((size_t)A->layers, sizeof *w->a);
	w->b = xcalloc((size_t)B->layers, sizeof *w->b);
	for (i = 0; i < A->layers; i++)
		if ((w->a[i] = side_tensor(A, wa, i)) == NULL)
			return false;
	for (i = 0; i < B->layers; i++)
		if ((w->b[i] = side_tensor(B, wb, i)) == NULL)
			return false;
	tensor_dims(w->a[0], &r0, &c0);
	for (i = 1; i < A->layers; i++) {
		tensor_dims(w->a[i], &r, &c);
		if (r != r0 || c != c0)
			return false;	/* not one kind of weight */
	}
	w->acols = c0;
	w->rows = r0;
	w->cols = c0;
	tensor_dims(w->b[0], &r0, &c0);
	for (i = 1; i < B->layers; i++) {
		tensor_dims(w->b[i], &r, &c);
		if (r != r0 || c != c0)
			return false;
	}
	w->bcols = c0;
	w->rows = w->rows < r0 ? w->rows : r0;
	w->cols = w->cols < c0 ? w->cols : c0;
	if (base == NULL)
		return true;
	/* X_i - BASE_i, on each side: the base's layers are the same
	 * shape as both sides' (so A's and B's are too). */
	wx = side_weight(base, wa->name);
	w->ba = xcalloc((size_t)A->layers, sizeof *w->ba);
	w->bb = xcalloc((size_t)B->layers, sizeof *w->bb);
	for (i = 0; i < A->layers || i < B->layers; i++) {
		t = wx != NULL && i < base->layers ? side_tensor(base, wx, i) :
		    NULL;
		if (t == NULL || (i < A->layers && !same_shape(t, w->a[i])) ||
		    (i < B->layers && !same_shape(t, w->b[i]))) {
			graph_diag_add(d, GRAPH_SEV_ERROR, wa->name, "the base "
			    "has no weight in layer %lld of the models' shape: "
			    "a task vector needs the base's own", (long long)i);
			return false;
		}
		if (i < A->layers)
			w->ba[i] = t;
		if (i < B->layers)
			w->bb[i] = t;
	}
	return true;
}

static void
kind_work_fini(struct kind_work *w)
{
	free(w->a);
	free(w->b);
	free(w->ba);
	free(w->bb);
}

/*
 * Rows [r0, r0 + k) of the common sub-matrix of each of n layers into m:
 * layer i's at m + i * k * cols (room for float32), as
 * reader_read_packed reads them, dt[i] how (undecoded, or float32).
 */
static int
read_block(const struct model *mod, const struct model_tensor *const *t,
    int64_t n, uint64_t rowlen, uint64_t cols, uint64_t r0, uint64_t k,
    float *m, enum graph_dtype *dt, char **cause)
{
	/* Whole rows are one run of the file: one read for the block
	 * (a read a row took 13 s of system time on the bench models). */
	uint64_t per = rowlen == cols ? k : 1, r;
	uint8_t *layer;
	int64_t i;
	int rc;

	for (i = 0; i < n; i++) {
		layer = (uint8_t *)(m + (uint64_t)i * k * cols);
		/* Row 0 first, at offset 0: it tells the element size. */
		for (r = 0; r < k; r += per)
			if ((rc = reader_read_packed(mod, t[i], (r0 + r) *
			    rowlen, (size_t)(per * cols), layer + r * cols *
			    (r == 0 ? 0 : graph_dtype_size(dt[i])), &dt[i],
			    cause)) != 0)
				return rc;
	}
	return 0;
}

/* The float64 chunks one dgemm multiplies: this many bytes for both
 * sides, so that converting and multiplying happen in the cache. */
#define CHUNK_BYTES (512u << 10)
/* A block as read, at most: the decoder writes it and the conversion
 * reads it back while it is still in the cache. */
#define BLOCK_BYTES (2u << 20)
/* At most this many workers share a kind's blocks: the block size, and
 * so every sum's order, is the same for any thread count up to it. */
#define INSPECT_MAX_WORKERS 4

/* One block of rows of a kind: its share of the Gram matrix and of
 * each layer's sum of squares, added up in block order at the end. */
struct block_out {
	double *g;		/* la x lb */
	double *na, *nb;
	int rc;
	char *cause;
};

/* A kind's run: its blocks, taken by the workers in turn. */
struct kind_run {
	const struct side *A, *B, *base;
	const struct kind_work *w;
	const atomic_bool *cancel;
	uint64_t k;		/* rows a block */
	uint64_t kc;		/* elements of a layer a dgemm */
	size_t nblocks;
	struct block_out *out;
	atomic_size_t next;
	atomic_bool stop;
};

/*
 * A worker's buffers: the block as read (and how, by layer), the chunks
 * as float64 and one layer's chunk of the base; kept from one kind to
 * the next (fresh ones a kind cost a page fault every 4 KiB, a quarter
 * of the run's time once).
 */
struct worker {
	struct kind_run *run;
	float *fa, *fb, *fbase;
	enum graph_dtype *ta, *tb, *tbase;
	double *da, *db, *dtmp;
	size_t nfa, nfb, nfbase, nta, ntb, ntbase, nda, ndb, ndtmp;
	uv_thread_t tid;
};

static void *
grow(void *p, size_t *have, size_t want, size_t size)
{
	if (want <= *have)
		return p;
	free(p);
	*have = want;
	return xreallocarray(NULL, want, size);
}

/*
 * Elements [c0, c0 + kc) of each of n layers' blocks (read_block's, len
 * elements a layer, in f with dtypes dt; less the base's in fbase, with
 * bdt, when given) into d as float64 (n by kc), each layer's sum of
 * squares added to norm2; tmp holds kc.  Decoded straight from the
 * stored bytes, exactly (every float32 is a float64, and so is the
 * difference of two), and so is each product dgemm then forms.  The sums
 * of squares are formed as the values are decoded, in float64
 * (graph_decode_f64_sumsq).
 */
static void
chunk_f64(const float *f, const enum graph_dtype *dt, const float *fbase,
    const enum graph_dtype *bdt, int64_t n, uint64_t len, uint64_t c0,
    uint64_t kc, double *d, double *tmp, double *norm2)
{
	const uint8_t *layer;
	double *out;
	int64_t i;

	for (i = 0; i < n; i++) {
		out = d + (uint64_t)i * kc;
		layer = (const uint8_t *)(f + (uint64_t)i * len);
		if (fbase == NULL) {
			norm2[i] += graph_decode_f64_sumsq(dt[i], layer + c0 *
			    graph_dtype_size(dt[i]), out, (size_t)kc);
			continue;
		}
		graph_decode_f64(dt[i], layer + c0 * graph_dtype_size(dt[i]),
		    out, (size_t)kc);
		layer = (const uint8_t *)(fbase + (uint64_t)i * len);
		graph_decode_f64(bdt[i], layer + c0 * graph_dtype_size(bdt[i]),
		    tmp, (size_t)kc);
		norm2[i] += graph_sub_f64_sumsq(out, tmp, (size_t)kc);
	}
}

/* Block b of the run, by worker wk, into run->out[b]. */
static int
kind_block(struct worker *wk, size_t b)
{
	struct kind_run *run = wk->run;
	const struct kind_work *w = run->w;
	struct block_out *o = &run->out[b];
	int64_t la = run->A->layers, lb = run->B->layers, nbase;
	uint64_t r0 = (uint64_t)b * run->k, k, len, c0, kc;

	k = w->rows - r0 < run->k ? w->rows - r0 : run->k;
	len = k * w->cols;
	o->g = xcalloc((size_t)(la * lb), sizeof *o->g);
	o->na = xcalloc((size_t)la, sizeof *o->na);
	o->nb = xcalloc((size_t)lb, sizeof *o->nb);
	nbase = la > lb ? la : lb;
	if ((o->rc = read_block(run->A->m, w->a, la, w->acols, w->cols, r0, k,
	    wk->fa, wk->ta, &o->cause)) != 0 || (o->rc = read_block(run->B->m,
	    w->b, lb, w->bcols, w->cols, r0, k, wk->fb, wk->tb, &o->cause)) !=
	    0)
		return o->rc;
	/* The base's layer i is both sides' layer i's (kind_prepare). */
	if (run->base != NULL && (o->rc = read_block(run->base->m, la > lb ?
	    w->ba : w->bb, nbase, w->acols, w->cols, r0, k, wk->fbase,
	    wk->tbase, &o->cause)) != 0)
		return o->rc;
	for (c0 = 0; c0 < len; c0 += kc) {
		kc = len - c0 < run->kc ? len - c0 : run->kc;
		chunk_f64(wk->fa, wk->ta, run->base ? wk->fbase : NULL,
		    wk->tbase, la, len, c0, kc, wk->da, wk->dtmp, o->na);
		chunk_f64(wk->fb, wk->tb, run->base ? wk->fbase : NULL,
		    wk->tbase, lb, len, c0, kc, wk->db, wk->dtmp, o->nb);
		cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)la,
		    (int)lb, (int)kc, 1.0, wk->da, (int)kc, wk->db, (int)kc,
		    1.0, o->g, (int)lb);
	}
	return 0;
}

/* A worker: blocks in turn until none is left or one failed. */
static void
kind_worker(void *arg)
{
	struct worker *wk = arg;
	struct kind_run *run = wk->run;
	size_t b;

	while (!atomic_load(&run->stop) && (b = atomic_fetch_add(&run->next,
	    1)) < run->nblocks) {
		if (run->cancel != NULL && atomic_load(run->cancel)) {
			run->out[b].rc = -ECANCELED;
			run->out[b].cause = xstrdup("cancelled");
		} else if (kind_block(wk, b) == 0) {
			continue;
		}
		atomic_store(&run->stop, true);
	}
}

static void
worker_fini(struct worker *wk)
{
	free(wk->fa);
	free(wk->fb);
	free(wk->fbase);
	free(wk->ta);
	free(wk->tb);
	free(wk->tbase);
	free(wk->da);
	free(wk->db);
	free(wk->dtmp);
}

/*
 * One kind's Gram matrix and layer norms: its rows in blocks of k, each
 * block read as float32 and multiplied a cache-sized float64 chunk at a
 * time (dgemm), on up to `threads` workers (uv threads, each OpenBLAS
 * call single-threaded); the blocks' sums are added in block order, so
 * the result is the same for any thread count.
 */
static int
inspect_kind(const struct graph_inspect_opts *o, const struct side *A,
    const struct side *B, const struct side *base, struct kind_work *w,
    struct worker *wk, struct graph_inspect_kind *out, double *norm_a2,
    double *norm_b2, char **cause)
{
	struct kind_run run;
	uint64_t row_bytes, chunk, avail, k;
	int64_t la = A->layers, lb = B->layers, nbase, i, j;
	size_t b, nw, x;
	double *g, *na, *nb;
	int rc = 0;

	nbase = base != NULL ? (la > lb ? la : lb) : 0;
	/* A worker's chunks, then one row of every layer of both sides
	 * (and the base's), as read. */
	avail = o->memory / 2;
	chunk = avail / 4 < CHUNK_BYTES ? avail / 4 : CHUNK_BYTES;
	/* Every layer's chunk, and one more for the base's (chunk_f64). */
	run.kc = chunk / (uint64_t)(la + lb + 1) / sizeof(double);
	if (run.kc < 64)
		run.kc = 64;
	chunk = run.kc * (uint64_t)(la + lb + 1) * sizeof(double);
	row_bytes = (uint64_t)(la + lb + nbase) * w->cols * sizeof(float);
	if (avail <= chunk || (avail - chunk) / row_bytes == 0) {
		*cause = xasprintf("%s needs at least %llu bytes of memory "
		    "(one row of every layer of both models)", out->name,
		    (unsigned long long)(2 * (row_bytes + chunk)));
		return -ENOMEM;
	}
	/* Blocks sized so that INSPECT_MAX_WORKERS of them fit at once,
	 * whatever the threads: every sum's order is then the same for
	 * any thread count.  A smaller budget: the most one block holds. */
	k = avail / INSPECT_MAX_WORKERS > chunk ? (avail /
	    INSPECT_MAX_WORKERS - chunk) / row_bytes : 0;
	if (k == 0)
		k = (avail - chunk) / row_bytes;
	if (k > BLOCK_BYTES / row_bytes && BLOCK_BYTES / row_bytes > 0)
		k = BLOCK_BYTES / row_bytes;
	if (k > w->rows)
		k = w->rows;
	if (run.kc > k * w->cols)
		run.kc = k * w->cols;
	run.A = A;
	run.B = B;
	run.base = base;
	run.w = w;
	run.cancel = o->cancel;
	run.k = k;
	run.nblocks = (size_t)((w->rows + k - 1) / k);
	run.out = xcalloc(run.nblocks, sizeof *run.out);
	atomic_init(&run.next, 0);
	atomic_init(&run.stop, false);
	nw = o->threads > 0 ? (size_t)o->threads : 1;
	if (nw > INSPECT_MAX_WORKERS)
		nw = INSPECT_MAX_WORKERS;
	if (nw > run.nblocks)
		nw = run.nblocks;
	/* As many as the budget holds at once. */
	while (nw > 1 && nw * (k * row_bytes + chunk) > avail)
		nw--;
	for (x = 0; x < nw; x++) {
		wk[x].run = &run;
		wk[x].fa = grow(wk[x].fa, &wk[x].nfa, (size_t)(la * k *
		    w->cols), sizeof(float));
		wk[x].fb = grow(wk[x].fb, &wk[x].nfb, (size_t)(lb * k *
		    w->cols), sizeof(float));
		wk[x].ta = grow(wk[x].ta, &wk[x].nta, (size_t)la,
		    sizeof(enum graph_dtype));
		wk[x].tb = grow(wk[x].tb, &wk[x].ntb, (size_t)lb,
		    sizeof(enum graph_dtype));
		if (nbase > 0) {
			wk[x].fbase = grow(wk[x].fbase, &wk[x].nfbase,
			    (size_t)(nbase * k * w->cols), sizeof(float));
			wk[x].tbase = grow(wk[x].tbase, &wk[x].ntbase,
			    (size_t)nbase, sizeof(enum graph_dtype));
			wk[x].dtmp = grow(wk[x].dtmp, &wk[x].ndtmp,
			    (size_t)run.kc, sizeof(double));
		}
		wk[x].da = grow(wk[x].da, &wk[x].nda, (size_t)((uint64_t)la *
		    run.kc), sizeof(double));
		wk[x].db = grow(wk[x].db, &wk[x].ndb, (size_t)((uint64_t)lb *
		    run.kc), sizeof(double));
	}
	/* The calling thread is worker 0. */
	for (x = 1; x < nw; x++)
		if (uv_thread_create(&wk[x].tid, kind_worker, &wk[x]) != 0)
			wk[x].run = NULL;
	kind_worker(&wk[0]);
	for (x = 1; x < nw; x++)
		if (wk[x].run != NULL)
			uv_thread_join(&wk[x].tid);
	g = xcalloc((size_t)(la * lb), sizeof *g);
	na = xcalloc((size_t)la, sizeof *na);
	nb = xcalloc((size_t)lb, sizeof *nb);
	for (b = 0; b < run.nblocks; b++) {
		if (rc == 0 && run.out[b].rc != 0) {
			rc = run.out[b].rc;
			*cause = run.out[b].cause;
			run.out[b].cause = NULL;
		}
		/* A block never taken (a worker stopped): not computed. */
		if (rc == 0 && run.out[b].g == NULL) {
			rc = -EIO;
			*cause = xstrdup("a block of rows was not computed");
		}
		for (i = 0; rc == 0 && i < la * lb; i++)
			g[i] += run.out[b].g[i];
		for (i = 0; rc == 0 && i < la; i++)
			na[i] += run.out[b].na[i];
		for (j = 0; rc == 0 && j < lb; j++)
			nb[j] += run.out[b].nb[j];
		free(run.out[b].g);
		free(run.out[b].na);
		free(run.out[b].nb);
		free(run.out[b].cause);
	}
	free(run.out);
	if (rc == 0) {
		out->cos = xcalloc((size_t)(la * lb), sizeof *out->cos);
		for (i = 0; i < la; i++) {
			norm_a2[i] += na[i];
			for (j = 0; j < lb; j++)
				out->cos[i * lb + j] = na[i] > 0 && nb[j] > 0 ?
				    g[i * lb + j] / sqrt(na[i] * nb[j]) : 0;
		}
		for (j = 0; j < lb; j++)
			norm_b2[j] += nb[j];
	}
	free(g);
	free(na);
	free(nb);
	return rc;
}

int
graph_inspect_run(const struct graph_inspect_opts *o,
    struct graph_inspect **out, struct graph_diags *d)
{
	struct side A, B, base, *bp = NULL;
	struct graph_inspect *r = NULL;
	const struct arch_weight *wa, *wb;
	struct kind_work w;
	struct worker wk[INSPECT_MAX_WORKERS];
	char *cause = NULL;
	size_t i, n;
	int64_t x;
	int rc;

	*out = NULL;
	memset(&base, 0, sizeof base);
	if ((rc = inspect_open(o->a, "A", o, &A, d)) != 0)
		return rc;
	if ((rc = inspect_open(o->b, "B", o, &B, d)) != 0)
		goto out_a;
	if (o->base != NULL) {
		if ((rc = inspect_open(o->base, "--base", o, &base, d)) != 0)
			goto out_b;
		bp = &base;
	}
	r = xcalloc(1, sizeof *r);
	memset(wk, 0, sizeof wk);
	r->la = (size_t)A.layers;
	r->lb = (size_t)B.layers;
	r->kinds = xcalloc(A.am->nlayer + 1, sizeof *r->kinds);
	r->norm_a = xcalloc(r->la, sizeof *r->norm_a);
	r->norm_b = xcalloc(r->lb, sizeof *r->norm_b);
	for (i = 0; i < A.am->nlayer && rc == 0; i++) {
		wa = &A.am->layer[i];
		if (!wa->uniform || (wb = side_weight(&B, wa->name)) == NULL)
			continue;
		if (!kind_prepare(&A, &B, bp, wa, wb, &w, d)) {
			kind_work_fini(&w);
			if (d->nerrors > 0)
				rc = -EINVAL;
			continue;
		}
		/* The template is the name after "layers.N". */
		r->kinds[r->nkinds].name = xstrdup(wa->name + (wa->name[0] ==
		    '.'));
		r->kinds[r->nkinds].rows = w.rows;
		r->kinds[r->nkinds].cols = w.cols;
		r->kinds[r->nkinds].submatrix = w.acols != w.cols ||
		    w.bcols != w.cols || w.a[0]->t->numel != w.rows * w.cols ||
		    w.b[0]->t->numel != w.rows * w.cols;
		rc = inspect_kind(o, &A, &B, bp, &w, wk, &r->kinds[r->nkinds],
		    r->norm_a, r->norm_b, &cause);
		if (rc == 0)
			r->nkinds++;
		else
			free(r->kinds[r->nkinds].name);
		kind_work_fini(&w);
	}
	for (i = 0; i < INSPECT_MAX_WORKERS; i++)
		worker_fini(&wk[i]);
	if (rc == 0 && r->nkinds == 0) {
		graph_diag_add(d, GRAPH_SEV_ERROR, NULL, "%s and %s have no "
		    "kind of layer weight in common to compare", o->a, o->b);
		rc = -EINVAL;
	}
	if (rc != 0) {
		if (cause != NULL)
			graph_diag_add(d, GRAPH_SEV_ERROR, NULL, "%s", cause);
		free(cause);
		graph_inspect_free(r);
		r = NULL;
		goto out;
	}
	r->mean = xcalloc(r->la * r->lb, sizeof *r->mean);
	for (i = 0; i < r->nkinds; i++)
		for (n = 0; n < r->la * r->lb; n++)
			r->mean[n] += r->kinds[i].cos[n] / (double)r->nkinds;
	for (x = 0; x < A.layers; x++)
		r->norm_a[x] = sqrt(r->norm_a[x]);
	for (x = 0; x < B.layers; x++)
		r->norm_b[x] = sqrt(r->norm_b[x]);
	*out = r;
out:
	side_close(&base);
out_b:
	side_close(&B);
out_a:
	side_close(&A);
	return rc;
}

void
graph_inspect_free(struct graph_inspect *r)
{
	size_t i;

	if (r == NULL)
		return;
	for (i = 0; i < r->nkinds; i++) {
		free(r->kinds[i].name);
		free(r->kinds[i].cos);
	}
	free(r->kinds);
	free(r->mean);
	free(r->norm_a);
	free(r->norm_b);
	free(r);
}

/* Elements read at a time for a config's pairs. */
#define PAIR_BLOCK 65536u

/* The cosine of inputs x and y of pt, read a block at a time. */
static int
pair_cos(const struct graph_plan *p, const struct plan_tensor *pt,
    const struct plan_input *x, const struct plan_input *y,
    const atomic_bool *cancel, double *out, char **cause)
{
	float *a = xreallocarray(NULL, PAIR_BLOCK, 2 * sizeof *a), *b;
	double dot = 0, aa = 0, bb = 0;
	uint64_t e0;
	size_t n, k;
	int rc = 0;

	b = a + PAIR_BLOCK;
	for (e0 = 0; e0 < pt->numel && rc == 0; e0 += n) {
		if (cancel != NULL && atomic_load(cancel)) {
			*cause = xstrdup("cancelled");
			rc = -ECANCELED;
			break;
		}
		n = pt->numel - e0 < PAIR_BLOCK ? (size_t)(pt->numel - e0) :
		    PAIR_BLOCK;
		if ((rc = reader_read_chunk(p, pt, x, e0, n, a, cause)) != 0 ||
		    (rc = reader_read_chunk(p, pt, y, e0, n, b, cause)) != 0)
			break;
		for (k = 0; k < n; k++) {
			dot += (double)a[k] * (double)b[k];
			aa += (double)a[k] * (double)a[k];
			bb += (double)b[k] * (double)b[k];
		}
	}
	free(a);
	*out = aa > 0 && bb > 0 ? dot / sqrt(aa * bb) : 0;
	return rc;
}

int
graph_inspect_config(const struct graph_plan *p, const atomic_bool *cancel,
    struct graph_inspect_pair **out, size_t *nout, char **cause)
{
	struct graph_inspect_pair *v = NULL, *q;
	const struct plan_tensor *pt;
	size_t i, k, n = 0;
	int rc = 0;

	for (i = 0; i < p->ntensors && rc == 0; i++) {
		pt = &p->tensors[i];
		/* Only what the config maps across layers. */
		for (k = 1; k < pt->nin && rc == 0; k++) {
			if (pt->in[k].layer == pt->in[0].layer)
				continue;
			v = xreallocarray(v, n + 1, sizeof *v);
			q = &v[n];
			memset(q, 0, sizeof *q);
			q->tensor = xstrdup(pt->name);
			q->model_a = xstrdup(p->models[pt->in[0].model].name);
			q->name_a = xstrdup(pt->in[0].name);
			q->layer_a = pt->in[0].layer;
			q->model_b = xstrdup(p->models[pt->in[k].model].name);
			q->name_b = xstrdup(pt->in[k].name);
			q->layer_b = pt->in[k].layer;
			n++;
			rc = pair_cos(p, pt, &pt->in[0], &pt->in[k], cancel,
			    &q->cos, cause);
		}
	}
	if (rc != 0) {
		graph_inspect_pairs_free(v, n);
		v = NULL;
		n = 0;
	}
	*out = v;
	*nout = n;
	return rc;
}

void
graph_inspect_pairs_free(struct graph_inspect_pair *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(v[i].tensor);
		free(v[i].model_a);
		free(v[i].name_a);
		free(v[i].model_b);
		free(v[i].name_b);
	}
	free(v);
}
