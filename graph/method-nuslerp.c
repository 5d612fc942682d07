/* SPDX-License-Identifier: MIT */
/*
 * method-nuslerp.c: NuSLERP (MERGEKIT.md Part B 4.1), spherical
 * interpolation of two models, or of their task vectors when the slice
 * has a base, with t = wB / (wA + wB).
 *
 * The vectors interpolated are the whole tensor (nuslerp_flatten, the
 * default), each row along the last axis, or with nuslerp_row_wise each
 * column x[:, j...] along the first axis.  Per vector only three dot
 * products matter (|v0|^2, |v1|^2, v0.v1), so a statistics pass collects
 * them: per block for the whole tensor, per row for rows, and for columns
 * one serial pass that accumulates per column in element order (columns
 * cut across blocks, and a fixed order keeps the sums bit-reproducible).
 * Each vector then gets two coefficients and the apply pass combines.
 */
#include <math.h>
#include <string.h>

#include "method.h"

enum nu_mode {
	NU_FLAT,
	NU_ROWS,
	NU_COLS,
};

static const struct method_param nuslerp_params[] = {
	{ "nuslerp_row_wise", false, MP_OPTIONAL, MP_BOOL, 0 },
	{ "nuslerp_flatten", false, MP_OPTIONAL, MP_BOOL, 1 },
	{ "weight", true, MP_REQUIRED, MP_FLOAT, 0 },
};

static enum nu_mode
nu_mode(const struct plan_tensor *t)
{
	if (plan_g(t, "nuslerp_flatten") != 0)
		return NU_FLAT;
	return plan_g(t, "nuslerp_row_wise") != 0 ? NU_COLS : NU_ROWS;
}

/* The two interpolated inputs, in input order. */
static void
nu_pair(const struct plan_tensor *t, size_t *a, size_t *b)
{
	size_t idx[GRAPH_MAX_INPUTS] = { 0, 0 };

	plan_others(t, idx);
	*a = idx[0];
	*b = idx[1];
}

/* Vectors along the first axis: numel / shape[0] columns. */
static uint64_t
nu_ncols(const struct plan_tensor *t)
{
	return t->ndim > 0 && t->shape[0] > 0 ? t->numel /
	    (uint64_t)t->shape[0] : 1;
}

static void
nuslerp_plan(struct method_plan *mp)
{
	struct plan_tensor *t = mp->t;
	size_t want = mp->slice_base ? 3 : 2;

	if (t->nin == 1) {
		mp->fold_copy = true;
		mp->fold_input = 0;
		return;
	}
	if (mp->slice_base && t->base < 0)
		plan_tensor_error(mp, "nuslerp: the base model must be an "
		    "input besides the two models merged");
	else if (t->nin != want)
		plan_tensor_error(mp, "nuslerp merges exactly two models%s, "
		    "got %zu inputs", mp->slice_base ? " (plus the base)" : "",
		    t->nin);
}

static void
nuslerp_shape(const struct plan_tensor *t, struct method_shape *ms)
{
	switch (nu_mode(t)) {
	case NU_FLAT:
		ms->nred = 3;
		ms->state_size = 2 * sizeof(double);
		break;
	case NU_ROWS:
		ms->nred = 3;
		ms->rows = true;
		ms->state_size = 2 * (size_t)t->rows * sizeof(double);
		break;
	case NU_COLS:
		/* Sums, then (in place) coefficients, 3 per column. */
		ms->serial = true;
		ms->state_size = 3 * (size_t)nu_ncols(t) * sizeof(double);
		break;
	}
}

/* |v0|^2, |v1|^2, v0.v1 over n elements of a and b (minus base). */
static void
nu_dots(const float *a, const float *b, const float *base, size_t n,
    double *p)
{
	const float *x[2] = { a, b };

	kern_gram(x, 2, base, n, p);	/* packed: aa, ab, bb */
}

static void
nuslerp_stats(const struct plan_tensor *t, void *state, int pass,
    const struct mchunk *c)
{
	const float *base = t->base >= 0 ? c->in[t->base] : NULL;
	size_t a, b, r, e;
	uint64_t nc, col;
	double *s = state, va, vb;

	(void)pass;
	nu_pair(t, &a, &b);
	switch (nu_mode(t)) {
	case NU_FLAT:
		nu_dots(c->in[a], c->in[b], base, c->n, c->partials);
		break;
	case NU_ROWS:
		for (r = 0; r < c->nrows; r++)
			nu_dots(c->in[a] + r * c->cols, c->in[b] + r * c->cols,
			    base ? base + r * c->cols : NULL, c->cols,
			    c->partials + 3 * r);
		break;
	case NU_COLS:
		nc = nu_ncols(t);
		col = c->e0 % nc;
		for (e = 0; e < c->n; e++) {
			va = c->in[a][e];
			vb = c->in[b][e];
			if (base != NULL) {
				va -= base[e];
				vb -= base[e];
			}
			s[3 * col] += va * va;
			s[3 * col + 1] += va * vb;
			s[3 * col + 2] += vb * vb;
			if (++col == nc)
				col = 0;
		}
		break;
	}
}

/* The two coefficients of one vector from its packed aa, ab, bb. */
static void
nu_coef(const double *p, double t, double *c0, double *c1)
{
	double n0 = sqrt(p[0]), n1 = sqrt(p[2]), d, th, s;

	d = p[1] / ((n0 > 1e-7 ? n0 : 1e-7) * (n1 > 1e-7 ? n1 : 1e-7));
	th = acos(d < -1 ? -1 : d > 1 ? 1 : d);
	s = sin(th);
	if (fabs(s) < 1e-8) {
		*c0 = 1 - t;
		*c1 = t;
		return;
	}
	*c0 = sin((1 - t) * th) / s;
	*c1 = sin(t * th) / s;
}

static double
nu_t(const struct plan_tensor *t)
{
	size_t a, b;
	double wa, wb;

	nu_pair(t, &a, &b);
	wa = plan_pm(t, a, "weight");
	wb = plan_pm(t, b, "weight");
	return fabs(wa + wb) < 1e-6 ? 0.5 : wb / (wa + wb);
}

static const char *
nuslerp_reduce(const struct plan_tensor *t, void *state, int pass,
    const double *partials, size_t nq)
{
	double *s = state, sum[3] = { 0, 0, 0 }, tt = nu_t(t);
	size_t q;
	uint64_t col, nc;

	(void)pass;
	switch (nu_mode(t)) {
	case NU_FLAT:
		for (q = 0; q < nq; q++) {
			sum[0] += partials[3 * q];
			sum[1] += partials[3 * q + 1];
			sum[2] += partials[3 * q + 2];
		}
		nu_coef(sum, tt, &s[0], &s[1]);
		break;
	case NU_ROWS:
		for (q = 0; q < nq; q++)
			nu_coef(partials + 3 * q, tt, &s[2 * q],
			    &s[2 * q + 1]);
		break;
	case NU_COLS:
		nc = nu_ncols(t);
		for (col = 0; col < nc; col++) {
			memcpy(sum, s + 3 * col, sizeof sum);
			nu_coef(sum, tt, &s[3 * col], &s[3 * col + 1]);
		}
		break;
	}
	return NULL;
}

/* out = [base +] c0 (A [- base]) + c1 (B [- base]) over n elements. */
static void
nu_combine(const struct plan_tensor *t, const struct mchunk *c, size_t off,
    size_t n, double c0, double c1)
{
	const float *x[3];
	double w[3];
	size_t a, b;

	nu_pair(t, &a, &b);
	x[0] = c->in[a] + off;
	x[1] = c->in[b] + off;
	w[0] = c0;
	w[1] = c1;
	if (t->base >= 0) {
		x[2] = c->in[t->base] + off;
		w[2] = 1 - c0 - c1;
	}
	kern_combine(c->out + off, x, w, t->base >= 0 ? 3 : 2, n);
}

/* Columns: the coefficients change with every element. */
static void
nu_apply_cols(const struct plan_tensor *t, const double *s,
    const struct mchunk *c)
{
	const float *base = t->base >= 0 ? c->in[t->base] : NULL;
	uint64_t nc = nu_ncols(t), col = c->e0 % nc;
	double c0, c1, v;
	size_t a, b, e;

	nu_pair(t, &a, &b);
	for (e = 0; e < c->n; e++) {
		c0 = s[3 * col];
		c1 = s[3 * col + 1];
		v = c0 * c->in[a][e] + c1 * c->in[b][e];
		if (base != NULL)
			v += (1 - c0 - c1) * base[e];
		c->out[e] = (float)v;
		if (++col == nc)
			col = 0;
	}
}

static void
nuslerp_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	const double *s = state;
	size_t r;

	switch (nu_mode(t)) {
	case NU_FLAT:
		nu_combine(t, c, 0, c->n, s[0], s[1]);
		break;
	case NU_ROWS:
		for (r = 0; r < c->nrows; r++)
			nu_combine(t, c, r * c->cols, c->cols,
			    s[2 * (c->r0 + r)], s[2 * (c->r0 + r) + 1]);
		break;
	case NU_COLS:
		nu_apply_cols(t, s, c);
		break;
	}
}

const struct graph_method method_nuslerp = {
	.name = "nuslerp",
	.pretty = "NuSLERP",
	.params = nuslerp_params,
	.nparams = sizeof nuslerp_params / sizeof *nuslerp_params,
	.flags = METHOD_RECTIFY,
	.plan = nuslerp_plan,
	.shape = nuslerp_shape,
	.npasses = 1,
	.stats = nuslerp_stats,
	.reduce = nuslerp_reduce,
	.apply = nuslerp_apply,
};
