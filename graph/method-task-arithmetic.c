/* SPDX-License-Identifier: MIT */
/*
 * method-task-arithmetic.c: R = B + lambda * sum_i w_i (X_i - B) [/ sum w].
 *
 * The plain member of mergekit's "generalized task arithmetic" family
 * (MERGEKIT.md Part B 4.2) with no sparsifier and no sign consensus: the
 * deltas of every non-base input are weighted and summed, divided by the
 * weight sum when normalize is set (a sum below 1e-8 in magnitude divides
 * by 1, as upstream), scaled by lambda and added to the base.  density,
 * rescale and int8_mask are accepted for compatibility and have no effect
 * here.  A larger embedding is cropped to the base's shape; any other
 * shape mismatch is a plan error (upstream silently drops the model).
 */
#include <math.h>

#include "graph-int.h"

static const struct method_param ta_params[] = {
	{ "int8_mask", false, false, MP_BOOL, 0 },
	{ "normalize", false, false, MP_BOOL, 0 },
	{ "rescale", false, false, MP_BOOL, 0 },
	{ "lambda", false, false, MP_FLOAT, 1 },
	{ "weight", true, true, MP_FLOAT, 0 },
	{ "density", true, false, MP_FLOAT, 1 },
};

static void
ta_plan(struct method_plan *mp)
{
	struct plan_tensor *t = mp->t;

	if (t->nin == 1) {
		/* Only the base: nothing to add. */
		mp->fold_copy = true;
		mp->fold_input = (size_t)t->base;
	}
}

static void
ta_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	const float *b = c->in[t->base], *x[64];
	double w[64], div = 0, k, lambda;
	size_t i, j, n = 0;

	for (j = 0; j < t->nin; j++) {
		if ((int)j == t->base)
			continue;
		x[n] = c->in[j];
		div += w[n] = plan_pm(t, j, "weight");
		n++;
	}
	if (fabs(div) < 1e-8)
		div = 1;
	lambda = plan_g(t, "lambda");
	k = plan_g(t, "normalize") != 0 ? lambda / div : lambda;
	for (i = 0; i < c->n; i++) {
		double base = b[i], acc = 0;
		for (j = 0; j < n; j++)
			acc += w[j] * ((double)x[j][i] - base);
		c->out[i] = (float)(base + k * acc);
	}
}

const struct graph_method method_task_arithmetic = {
	.name = "task_arithmetic",
	.pretty = "Task Arithmetic",
	.url = "https://arxiv.org/abs/2212.04089",
	.params = ta_params,
	.nparams = sizeof ta_params / sizeof *ta_params,
	.flags = METHOD_NEEDS_BASE | METHOD_BASE_CROP,
	.plan = ta_plan,
	.apply = ta_apply,
};
