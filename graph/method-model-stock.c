/* SPDX-License-Identifier: MIT */
/*
 * method-model-stock.c: Model Stock (MERGEKIT.md Part B 4.3).
 *
 * With the base W0 and N >= 2 others, O_i = W_i - W0; c is the mean over
 * pairs i < j of clamp(O_i.O_j / max(|O_i| |O_j|, 1e-6), -1, 1) and
 * t = N c / (1 + (N - 1) c); the result is t mean(W_i) + (1 - t) W0.  The
 * dot products come from one statistics pass (the Gram matrix of the O_i,
 * gram.c): over the whole tensor, or per row along the last axis with
 * filter_wise (a 1-D tensor is one row).  Where mergekit would divide by
 * zero (c exactly -1/(N - 1)) the tensor fails with a reason instead of
 * writing infinities.
 */
#include <math.h>
#include <string.h>

#include "method.h"

static const struct method_param model_stock_params[] = {
	{ "filter_wise", false, MP_OPTIONAL, MP_BOOL, 0 },
};

static void
model_stock_plan(struct method_plan *mp)
{
	struct plan_tensor *t = mp->t;

	if (t->nin == 1) {
		mp->fold_copy = true;	/* only the base */
		mp->fold_input = 0;
		return;
	}
	if (t->nin < 3)
		plan_tensor_error(mp, "model_stock needs the base and at "
		    "least two other models, got %zu inputs", t->nin);
}

/* Per tensor, or per row with filter_wise: t for each, after reduce. */
static void
model_stock_shape(const struct plan_tensor *t, struct method_shape *ms)
{
	ms->nred = (int)gram_size(t->nin - 1);
	ms->rows = plan_g(t, "filter_wise") != 0;
	ms->state_size = (ms->rows ? (size_t)t->rows : 1) * sizeof(double);
}

static void
model_stock_stats(const struct plan_tensor *t, void *state, int pass,
    const struct mchunk *c)
{
	size_t idx[GRAPH_MAX_INPUTS], k = plan_others(t, idx), j, r;
	size_t np = gram_size(k);
	const float *x[GRAPH_MAX_INPUTS];

	(void)state;
	(void)pass;
	if (!t->ms.rows) {
		for (j = 0; j < k; j++)
			x[j] = c->in[idx[j]];
		kern_gram(x, k, c->in[t->base], c->n, c->partials);
		return;
	}
	for (r = 0; r < c->nrows; r++) {
		for (j = 0; j < k; j++)
			x[j] = c->in[idx[j]] + r * c->cols;
		kern_gram(x, k, c->in[t->base] + r * c->cols, c->cols,
		    c->partials + r * np);
	}
}

/* t from one Gram matrix of the N offsets; false if undefined. */
static bool
model_stock_t(const double *G, size_t n, double *t)
{
	double c = 0, d, np;
	size_t i, j, pairs = 0;

	for (i = 0; i < n; i++) {
		for (j = i + 1; j < n; j++) {
			np = sqrt(G[i * n + i]) * sqrt(G[j * n + j]);
			d = G[i * n + j] / (np > 1e-6 ? np : 1e-6);
			c += d < -1 ? -1 : d > 1 ? 1 : d;
			pairs++;
		}
	}
	c /= (double)pairs;
	if ((d = 1 + (double)(n - 1) * c) == 0)
		return false;
	*t = (double)n * c / d;
	return true;
}

static const char *
model_stock_reduce(const struct plan_tensor *t, void *state, int pass,
    const double *partials, size_t nq)
{
	double G[GRAPH_MAX_INPUTS * GRAPH_MAX_INPUTS], *tv = state;
	size_t k = t->nin - 1, np = gram_size(k), r;

	(void)pass;
	if (!t->ms.rows) {
		gram_sum(partials, nq, k, G);
		if (!model_stock_t(G, k, &tv[0]))
			goto opposed;
		return NULL;
	}
	for (r = 0; r < nq; r++) {
		gram_unpack(partials + r * np, k, G);
		if (!model_stock_t(G, k, &tv[r]))
			goto opposed;
	}
	return NULL;
opposed:
	return "the models' differences from the base are exactly opposed "
	    "(mean cosine -1/(N-1)), so model_stock's t is undefined";
}

static void
model_stock_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	const double *tv = state;
	const float *x[GRAPH_MAX_INPUTS];
	double w[GRAPH_MAX_INPUTS], n = (double)(t->nin - 1), tt;
	size_t j, r, rows = t->ms.rows ? c->nrows : 1;
	size_t len = t->ms.rows ? c->cols : c->n;

	for (r = 0; r < rows; r++) {
		tt = tv[t->ms.rows ? c->r0 + r : 0];
		for (j = 0; j < t->nin; j++) {
			x[j] = c->in[j] + r * len;
			w[j] = (int)j == t->base ? 1 - tt : tt / n;
		}
		kern_combine(c->out + r * len, x, w, t->nin, len);
	}
}

const struct graph_method method_model_stock = {
	.name = "model_stock",
	.pretty = "Model Stock",
	.url = "https://arxiv.org/abs/2403.19522",
	.params = model_stock_params,
	.nparams = sizeof model_stock_params / sizeof *model_stock_params,
	.flags = METHOD_NEEDS_BASE | METHOD_RECTIFY,
	.plan = model_stock_plan,
	.shape = model_stock_shape,
	.npasses = 1,
	.stats = model_stock_stats,
	.reduce = model_stock_reduce,
	.apply = model_stock_apply,
};
