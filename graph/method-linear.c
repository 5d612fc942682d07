/* SPDX-License-Identifier: MIT */
/*
 * method-linear.c: weighted average, R = sum w_i X_i / sum w_i.
 *
 * MERGEKIT.md Part B 4.1.  Differences on purpose: weights are used as the
 * exact doubles of the config, not rounded to the tensors' dtype (Part A
 * item 9), an input without a weight is a plan error naming the fix rather
 * than a crash (item 8), and weights that sum to zero under normalize are a
 * plan error rather than a tensor of NaNs.
 */
#include <math.h>

#include "method.h"

static const struct method_param linear_params[] = {
	{ "normalize", false, MP_OPTIONAL, MP_BOOL, 1 },
	{ "weight", true, MP_OPTIONAL, MP_FLOAT, 0 },
};

static void
linear_plan(struct method_plan *mp)
{
	struct plan_tensor *t = mp->t;
	double sum = 0;
	size_t i;

	for (i = 0; i < t->nin; i++) {
		if (plan_pmset(t, i, "weight")) {
			sum += plan_pm(t, i, "weight");
			continue;
		}
		if ((int)i == t->base)
			plan_tensor_error(mp, "linear needs a weight for every "
			    "input, but the base model %s has none (models: "
			    "syntax adds base_model as an input); give it a "
			    "weight, or drop base_model",
			    plan_input_model(mp, i));
		else
			plan_tensor_error(mp, "missing required parameter "
			    "'weight' for %s", plan_input_model(mp, i));
		return;
	}
	if (plan_g(t, "normalize") != 0 && fabs(sum) == 0)
		plan_tensor_error(mp, "the weights sum to 0, so normalize "
		    "would divide by zero; set normalize: false or change the "
		    "weights");
}

static void
linear_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	double w[64], sum = 0;
	size_t i;

	for (i = 0; i < t->nin; i++)
		sum += w[i] = plan_pm(t, i, "weight");
	if (plan_g(t, "normalize") != 0)
		for (i = 0; i < t->nin; i++)
			w[i] /= sum;
	kern_combine(c->out, c->in, w, t->nin, c->n);
}

const struct graph_method method_linear = {
	.name = "linear",
	.pretty = "Linear",
	.url = "https://arxiv.org/abs/2203.05482",
	.params = linear_params,
	.nparams = sizeof linear_params / sizeof *linear_params,
	.flags = METHOD_RECTIFY,
	.plan = linear_plan,
	.apply = linear_apply,
};
