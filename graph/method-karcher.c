/* SPDX-License-Identifier: MIT */
/*
 * method-karcher.c: the Karcher (Riemannian) mean of the inputs' unit
 * vectors, scaled by their mean norm (MERGEKIT.md Part B 4.1).
 *
 * Every input weighs 1/N.  The iteration (up to max_iter steps of the
 * exponential map towards the weighted tangent mean, stopping when the
 * tangent is shorter than tol) runs in coefficient space on the inputs'
 * Gram matrix (gram.c), in float64, so it needs one statistics pass
 * whatever the number of iterations.  Unlike mergekit, embeddings of
 * different sizes are cut to their common block (Part A item 12).
 */
#include <math.h>
#include <string.h>

#include "method.h"

#define KM GRAPH_MAX_INPUTS

struct karcher_state {
	double coef[KM];
};

static const struct method_param karcher_params[] = {
	{ "max_iter", false, MP_OPTIONAL, MP_INT, 10 },
	{ "tol", false, MP_OPTIONAL, MP_FLOAT, 1e-5 },
};

static void
karcher_plan(struct method_plan *mp)
{
	if (mp->t->nin == 1) {
		mp->fold_copy = true;
		mp->fold_input = 0;
	}
	if (plan_g(mp->t, "max_iter") < 0)
		plan_tensor_error(mp, "max_iter must not be negative");
}

static void
karcher_shape(const struct plan_tensor *t, struct method_shape *ms)
{
	ms->nred = (int)gram_size(t->nin);
}

static void
karcher_stats(const struct plan_tensor *t, void *state, int pass,
    const struct mchunk *c)
{
	(void)state;
	(void)pass;
	kern_gram(c->in, t->nin, NULL, c->n, c->partials);
}

/* The iteration on unit vectors u[i], weights a[i], valid ones only. */
static void
karcher_iterate(const double *G, size_t m, double u[][KM], const double *a,
    const bool *valid, int iters, double tol, double *mean)
{
	double tan[KM], d, th, tn, un;
	size_t i, j;
	int it;

	for (it = 0; it < iters; it++) {
		memset(tan, 0, sizeof tan);
		for (i = 0; i < m; i++) {
			if (!valid[i])
				continue;
			d = gram_dot(G, m, mean, u[i]);
			d = d < -1 ? -1 : d > 1 ? 1 : d;
			if ((th = acos(d)) < tol)
				continue;
			for (j = 0; j < m; j++)
				tan[j] += a[i] * (th / sin(th)) * (u[i][j] -
				    d * mean[j]);
		}
		if ((tn = gram_norm(G, m, tan)) < tol)
			break;
		for (j = 0; j < m; j++)
			mean[j] = cos(tn) * mean[j] + sin(tn) * tan[j] / tn;
		if ((un = gram_norm(G, m, mean)) > tol)
			for (j = 0; j < m; j++)
				mean[j] /= un;
	}
}

static const char *
karcher_reduce(const struct plan_tensor *t, void *state, int pass,
    const double *partials, size_t n)
{
	struct karcher_state *s = state;
	size_t m = t->nin, i, first = m, nvalid = 0;
	double G[KM * KM], u[KM][KM], a[KM], nrm[KM], mean[KM] = { 0 };
	double tol = plan_g(t, "tol"), asum = 0, mn, scale = 0;
	bool valid[KM];

	(void)pass;
	gram_sum(partials, n, m, G);
	memset(u, 0, sizeof u);
	for (i = 0; i < m; i++) {
		nrm[i] = sqrt(G[i * m + i]);
		if (nrm[i] > 0)
			u[i][i] = 1 / nrm[i];
		valid[i] = nrm[i] > tol;
		if (valid[i] && first == m)
			first = i;
		nvalid += valid[i];
		scale += nrm[i] / (double)m;
	}
	memset(s->coef, 0, sizeof s->coef);
	if (nvalid == 0)
		return NULL;	/* all (near) zero: the result is zero */
	for (i = 0; i < m; i++)
		asum += valid[i] ? 1.0 / (double)m : 0;
	for (i = 0; i < m; i++) {
		a[i] = valid[i] ? 1.0 / (double)m / asum : 0;
		mean[i] = a[i] * u[i][i];
	}
	if ((mn = gram_norm(G, m, mean)) < tol) {
		memset(mean, 0, sizeof mean);
		mean[first] = u[first][first];
	} else {
		for (i = 0; i < m; i++)
			mean[i] /= mn;
	}
	karcher_iterate(G, m, u, a, valid, (int)plan_g(t, "max_iter"), tol,
	    mean);
	for (i = 0; i < m; i++)
		s->coef[i] = scale * mean[i];
	return NULL;
}

static void
karcher_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	const struct karcher_state *s = state;

	kern_combine(c->out, c->in, s->coef, t->nin, c->n);
}

const struct graph_method method_karcher = {
	.name = "karcher",
	.pretty = "Karcher Mean",
	.url = "https://en.wikipedia.org/wiki/Karcher_mean",
	.params = karcher_params,
	.nparams = sizeof karcher_params / sizeof *karcher_params,
	.flags = METHOD_RECTIFY,
	.plan = karcher_plan,
	.shape = karcher_shape,
	.npasses = 1,
	.state_size = sizeof(struct karcher_state),
	.stats = karcher_stats,
	.reduce = karcher_reduce,
	.apply = karcher_apply,
};
