/* SPDX-License-Identifier: MIT */
/*
 * method-slerp.c: spherical interpolation between the base and one other
 * model, R = sin((1-t)th)/sin(th) A + sin(t th)/sin(th) B.
 *
 * MERGEKIT.md Part B 4.1: the angle comes from the whole tensors, normalised
 * by their Frobenius norms (left alone when a norm is <= 1e-8); when
 * |cos th| > 0.9995 it falls back to a plain lerp.  The norms and the dot
 * product are the statistics pass (float64, per quantum, summed in order),
 * the coefficients are computed once in reduce, and the apply pass is an
 * elementwise combination.  A tensor that no t applies to is the base's,
 * unchanged (Part A item 6): the planner folds it to a copy before this file
 * sees it.
 */
#include <math.h>

#include "method.h"

struct slerp_state {
	double ca;		/* coefficient of the base */
	double cb;
};

static const struct method_param slerp_params[] = {
	{ "t", false, MP_BASE_FALLBACK, MP_FLOAT, 0 },
};

static void
slerp_plan(struct method_plan *mp)
{
	struct plan_tensor *t = mp->t;

	if (t->nin > 2) {
		plan_tensor_error(mp, "slerp merges exactly two models (the "
		    "base and one other), got %zu inputs", t->nin);
		return;
	}
	if (t->nin == 1) {
		mp->fold_copy = true;
		mp->fold_input = 0;
	}
}

static void
slerp_stats(const struct plan_tensor *t, void *state, int pass,
    const struct mchunk *c)
{
	/* A block is one quantum: its three partials. */
	kern_dots(c->in[t->base], c->in[1 - t->base], c->n, &c->partials[0],
	    &c->partials[1], &c->partials[2]);
}

static const char *
slerp_reduce(const struct plan_tensor *t, void *state, int pass,
    const double *partials, size_t nq)
{
	struct slerp_state *s = state;
	double aa = 0, bb = 0, ab = 0, na, nb, d, th, st, tt;
	size_t q;

	for (q = 0; q < nq; q++) {
		aa += partials[3 * q];
		bb += partials[3 * q + 1];
		ab += partials[3 * q + 2];
	}
	na = sqrt(aa);
	nb = sqrt(bb);
	d = ab / ((na > 1e-8 ? na : 1) * (nb > 1e-8 ? nb : 1));
	tt = plan_g(t, "t");
	if (fabs(d) > 0.9995) {
		s->ca = 1 - tt;
		s->cb = tt;
		return NULL;
	}
	th = acos(d);
	st = sin(th);
	s->ca = sin(th - th * tt) / st;
	s->cb = sin(th * tt) / st;
	return NULL;
}

static void
slerp_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	const struct slerp_state *s = state;
	const float *in[2] = { c->in[t->base], c->in[1 - t->base] };
	double w[2] = { s->ca, s->cb };

	kern_combine(c->out, in, w, 2, c->n);
}

const struct graph_method method_slerp = {
	.name = "slerp",
	.pretty = "SLERP",
	.url = "https://en.wikipedia.org/wiki/Slerp",
	.params = slerp_params,
	.nparams = sizeof slerp_params / sizeof *slerp_params,
	.flags = METHOD_NEEDS_BASE | METHOD_RECTIFY,
	.plan = slerp_plan,
	.npasses = 1,
	.nred = 3,
	.state_size = sizeof(struct slerp_state),
	.stats = slerp_stats,
	.reduce = slerp_reduce,
	.apply = slerp_apply,
};
