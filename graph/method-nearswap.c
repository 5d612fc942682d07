/* SPDX-License-Identifier: MIT */
/*
 * method-nearswap.c: keep the base where the other model differs a lot,
 * take the other where they are near: w = clamp(t / max(|A - B|, 1e-6),
 * 0, 1), R = w B + (1 - w) A (MERGEKIT.md Part B 4.3).  t is optional as
 * for slerp (Part A item 6): a tensor no t applies to is the base's.
 */
#include <math.h>

#include "method.h"

static const struct method_param nearswap_params[] = {
	{ "t", false, MP_BASE_FALLBACK, MP_FLOAT, 0 },
};

static void
nearswap_plan(struct method_plan *mp)
{
	struct plan_tensor *t = mp->t;

	if (t->nin > 2) {
		plan_tensor_error(mp, "nearswap merges the base with exactly one "
		    "other model, got %zu inputs", t->nin);
		return;
	}
	if (plan_g(t, "t") <= 0) {
		plan_tensor_error(mp, "nearswap's t is a threshold and must be "
		    "above 0, got %g", plan_g(t, "t"));
		return;
	}
	if (t->nin == 1) {
		mp->fold_copy = true;
		mp->fold_input = 0;
	}
}

GRAPH_SIMD static void
nearswap_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	const float *restrict a = c->in[t->base];
	const float *restrict b = c->in[1 - t->base];
	float *restrict out = c->out;
	double th = plan_g(t, "t"), d, w;
	size_t i, n = c->n;

	(void)state;
	for (i = 0; i < n; i++) {
		d = fabs((double)a[i] - (double)b[i]);
		w = th / (d > 1e-6 ? d : 1e-6);
		w = w > 1 ? 1 : w;
		out[i] = (float)(w * b[i] + (1 - w) * a[i]);
	}
}

const struct graph_method method_nearswap = {
	.name = "nearswap",
	.pretty = "NearSwap",
	.url = "https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001",
	.params = nearswap_params,
	.nparams = sizeof nearswap_params / sizeof *nearswap_params,
	.flags = METHOD_NEEDS_BASE | METHOD_RECTIFY,
	.plan = nearswap_plan,
	.apply = nearswap_apply,
};
