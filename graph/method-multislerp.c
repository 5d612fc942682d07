/* SPDX-License-Identifier: MIT */
/*
 * method-multislerp.c: barycentric interpolation of several models on the
 * hypersphere (MERGEKIT.md Part B 4.1): project the inputs (or, with a
 * base, their task vectors) onto the unit sphere, take the tangent space
 * at their weighted mean, average there, map back, and scale by the
 * weighted mean norm.  Everything is a combination of the inputs, so it is
 * computed in coefficient space from their Gram matrix (gram.c).
 */
#include <math.h>
#include <string.h>

#include "method.h"

struct comb_state {
	double coef[GRAPH_MAX_INPUTS];	/* by input index */
};

static const struct method_param multislerp_params[] = {
	{ "normalize_weights", false, MP_OPTIONAL, MP_BOOL, 1 },
	{ "eps", false, MP_OPTIONAL, MP_FLOAT, 1e-8 },
	{ "weight", true, MP_REQUIRED, MP_FLOAT, 0 },
};

static void
multislerp_plan(struct method_plan *mp)
{
	struct plan_tensor *t = mp->t;
	size_t idx[GRAPH_MAX_INPUTS], k = plan_others(t, idx), j;
	double sum = 0;

	if (k == 0) {
		plan_tensor_error(mp, "multislerp needs at least one model "
		    "besides the base");
		return;
	}
	if (k == 1) {
		/* As mergekit: one model is returned as it is. */
		mp->fold_copy = true;
		mp->fold_input = idx[0];
		return;
	}
	for (j = 0; j < k; j++)
		sum += plan_pm(t, idx[j], "weight");
	if (plan_g(t, "normalize_weights") != 0 && sum == 0)
		plan_tensor_error(mp, "the weights sum to 0, so "
		    "normalize_weights would divide by zero");
}

static void
multislerp_shape(const struct plan_tensor *t, struct method_shape *ms)
{
	ms->nred = (int)gram_size(t->nin - (t->base >= 0));
}

static void
multislerp_stats(const struct plan_tensor *t, void *state, int pass,
    const struct mchunk *c)
{
	size_t idx[GRAPH_MAX_INPUTS], k = plan_others(t, idx), j;
	const float *x[GRAPH_MAX_INPUTS];

	(void)state;
	(void)pass;
	for (j = 0; j < k; j++)
		x[j] = c->in[idx[j]];
	kern_gram(x, k, t->base >= 0 ? c->in[t->base] : NULL, c->n,
	    c->partials);
}

static const char *
multislerp_reduce(const struct plan_tensor *t, void *state, int pass,
    const double *partials, size_t n)
{
	struct comb_state *s = state;
	size_t idx[GRAPH_MAX_INPUTS], k = plan_others(t, idx), i, j;
	double G[GRAPH_MAX_INPUTS * GRAPH_MAX_INPUTS], w[GRAPH_MAX_INPUTS];
	double nrm[GRAPH_MAX_INPUTS], u[GRAPH_MAX_INPUTS][GRAPH_MAX_INPUTS];
	double m[GRAPH_MAX_INPUTS] = { 0 }, tc[GRAPH_MAX_INPUTS] = { 0 };
	double eps = plan_g(t, "eps"), sum = 0, mn, nu, scale = 0, d;

	(void)pass;
	gram_sum(partials, n, k, G);
	for (i = 0; i < k; i++)
		sum += w[i] = plan_pm(t, idx[i], "weight");
	for (i = 0; i < k; i++) {
		if (plan_g(t, "normalize_weights") != 0)
			w[i] /= sum;
		nrm[i] = sqrt(G[i * k + i]);
		memset(u[i], 0, sizeof u[i]);
		u[i][i] = 1 / (nrm[i] + eps);
		m[i] = w[i] * u[i][i];
		scale += w[i] * nrm[i];
	}
	if ((mn = gram_norm(G, k, m)) < eps) {
		if (k != 2)
			return "the weighted sum of the inputs is zero "
			    "(antipodal inputs with balancing weights); use "
			    "other weights";
		memcpy(tc, w, k * sizeof *w);	/* linear fallback */
	} else {
		for (i = 0; i < k; i++)
			m[i] /= mn;
		/* T = sum_i w_i (U_i - (U_i . m) m) */
		for (i = 0; i < k; i++) {
			d = gram_dot(G, k, u[i], m);
			for (j = 0; j < k; j++)
				tc[j] += w[i] * (u[i][j] - d * m[j]);
		}
		nu = gram_norm(G, k, tc) + eps;
		for (j = 0; j < k; j++)
			tc[j] = scale * (m[j] * cos(nu) + tc[j] * sin(nu) / nu);
	}
	memset(s->coef, 0, sizeof s->coef);
	sum = 0;
	for (j = 0; j < k; j++) {
		s->coef[idx[j]] = tc[j];
		sum += tc[j];
	}
	if (t->base >= 0)
		s->coef[t->base] = 1 - sum;	/* B + sum c_j (X_j - B) */
	return NULL;
}

static void
comb_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	const struct comb_state *s = state;

	kern_combine(c->out, c->in, s->coef, t->nin, c->n);
}

const struct graph_method method_multislerp = {
	.name = "multislerp",
	.pretty = "Multi-SLERP",
	.url = "https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
	.params = multislerp_params,
	.nparams = sizeof multislerp_params / sizeof *multislerp_params,
	.plan = multislerp_plan,
	.shape = multislerp_shape,
	.npasses = 1,
	.state_size = sizeof(struct comb_state),
	.stats = multislerp_stats,
	.reduce = multislerp_reduce,
	.apply = comb_apply,
};
