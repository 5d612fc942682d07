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

#include "graph-int.h"

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
 * Rows [r0, r0 + k) of the common sub-matrix of each layer, less the
 * base's, into m (n layers by k * cols, row major, float64), each
 * layer's sum of squares added to norm2 as it is converted (one pass
 * over memory, not two: this loop and the product are memory-bound).
 */
static int
read_block(const struct side *sd, const struct side *base,
    const struct model_tensor *const *t, const struct model_tensor *const *bt,
    int64_t n, uint64_t rowlen, uint64_t cols, uint64_t r0, uint64_t k,
    float *tmp, double *m, double *norm2, char **cause)
{
	/* Whole rows are one run of the file: one read for the block
	 * (a read a row took 13 s of system time on the bench models). */
	uint64_t per = rowlen == cols ? k : 1, r;
	size_t len, c;
	int64_t i;
	double *row, s;
	int rc;

	for (i = 0; i < n; i++) {
		s = 0;
		for (r = 0; r < k; r += per) {
			row = m + ((uint64_t)i * k + r) * cols;
			len = (size_t)(per * cols);
			if ((rc = reader_read_tensor(sd->m, t[i], (r0 + r) *
			    rowlen, len, tmp, cause)) != 0)
				return rc;
			for (c = 0; c < len; c++)
				row[c] = (double)tmp[c];
			if (bt != NULL && (rc = reader_read_tensor(base->m,
			    bt[i], (r0 + r) * rowlen, len, tmp, cause)) != 0)
				return rc;
			for (c = 0; c < len; c++) {
				if (bt != NULL)
					row[c] -= (double)tmp[c];
				s += row[c] * row[c];
			}
		}
		norm2[i] += s;
	}
	return 0;
}

/*
 * The blocks' buffers, kept from one kind to the next: a fresh 100 MB
 * a kind cost a page fault every 4 KiB, a quarter of the run's time.
 */
struct scratch {
	double *ma, *mb;
	float *tmp;
	size_t na, nb, nt;	/* elements each holds */
};

static void *
scratch_fit(void *p, size_t *have, size_t want, size_t size)
{
	if (want <= *have)
		return p;
	free(p);
	*have = want;
	return xreallocarray(NULL, want, size);
}

static int
inspect_kind(const struct graph_inspect_opts *o, const struct side *A,
    const struct side *B, const struct side *base, struct kind_work *w,
    struct scratch *sc, struct graph_inspect_kind *out, double *norm_a2,
    double *norm_b2, char **cause)
{
	uint64_t row_bytes, k, r0, len;
	int64_t la = A->layers, lb = B->layers, i, j;
	double *ma, *mb, *g, *na, *nb;
	float *tmp;
	int rc = 0;

	/* One row of every layer of both sides, as float64, and of one
	 * layer as read (float32). */
	row_bytes = (uint64_t)(la + lb) * w->cols * sizeof(double) +
	    w->cols * sizeof(float);
	k = o->memory / 2 / row_bytes;
	if (k == 0) {
		*cause = xasprintf("%s needs at least %llu bytes of memory "
		    "(one row of every layer of both models, as float64)",
		    out->name, (unsigned long long)(2 * row_bytes));
		return -ENOMEM;
	}
	if (k > w->rows)
		k = w->rows;
	g = xcalloc((size_t)(la * lb), sizeof *g);
	na = xcalloc((size_t)la, sizeof *na);
	nb = xcalloc((size_t)lb, sizeof *nb);
	sc->tmp = tmp = scratch_fit(sc->tmp, &sc->nt, (size_t)(k * w->cols),
	    sizeof *tmp);
	sc->ma = ma = scratch_fit(sc->ma, &sc->na, (size_t)(la * k * w->cols),
	    sizeof *ma);
	sc->mb = mb = scratch_fit(sc->mb, &sc->nb, (size_t)(lb * k * w->cols),
	    sizeof *mb);
	for (r0 = 0; r0 < w->rows && rc == 0; r0 += k) {
		if (o->cancel != NULL && atomic_load(o->cancel)) {
			rc = -ECANCELED;
			*cause = xstrdup("cancelled");
			break;
		}
		if (k > w->rows - r0)
			k = w->rows - r0;
		len = k * w->cols;
		if ((rc = read_block(A, base, w->a, w->ba, la, w->acols,
		    w->cols, r0, k, tmp, ma, na, cause)) != 0 ||
		    (rc = read_block(B, base, w->b, w->bb, lb, w->bcols,
		    w->cols, r0, k, tmp, mb, nb, cause)) != 0)
			break;
		cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)la,
		    (int)lb, (int)len, 1.0, ma, (int)len, mb, (int)len, 1.0, g,
		    (int)lb);
	}
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
	struct scratch sc = { NULL, NULL, NULL, 0, 0, 0 };
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
		rc = inspect_kind(o, &A, &B, bp, &w, &sc,
		    &r->kinds[r->nkinds], r->norm_a, r->norm_b, &cause);
		if (rc == 0)
			r->nkinds++;
		else
			free(r->kinds[r->nkinds].name);
		kind_work_fini(&w);
	}
	if (rc == 0 && r->nkinds == 0) {
		graph_diag_add(d, GRAPH_SEV_ERROR, NULL, "%s and %s have no "
		    "kind of layer weight in common to compare", o->a, o->b);
		rc = -EINVAL;
	}
	free(sc.ma);
	free(sc.mb);
	free(sc.tmp);
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
