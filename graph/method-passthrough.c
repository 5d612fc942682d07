/* SPDX-License-Identifier: MIT */
/*
 * method-passthrough.c: one input, copied, optionally times "scale".
 *
 * Used for frankenmerges (stacking layer ranges).  MERGEKIT.md Part B 4.3:
 * exactly one input, else an error.  Without a scale the tensor is folded
 * to a byte copy, so a passthrough merge reproduces its inputs bit for bit.
 */
#include "method.h"

static const struct method_param passthrough_params[] = {
	{ "scale", true, MP_OPTIONAL, MP_FLOAT, 1 },
};

static void
passthrough_plan(struct method_plan *mp)
{
	struct plan_tensor *t = mp->t;

	if (t->nin != 1) {
		plan_tensor_error(mp, "passthrough takes exactly one input, got "
		    "%zu%s", t->nin, t->base >= 0 ? " (models: syntax adds "
		    "base_model as an input; drop base_model or use slices:)" :
		    "");
		return;
	}
	if (!plan_pmset(t, 0, "scale")) {
		mp->fold_copy = true;
		mp->fold_input = 0;
	}
}

static void
passthrough_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	kern_scale(c->out, c->in[0], plan_pm(t, 0, "scale"), c->n);
}

const struct graph_method method_passthrough = {
	.name = "passthrough",
	.pretty = "Passthrough",
	.params = passthrough_params,
	.nparams = sizeof passthrough_params / sizeof *passthrough_params,
	.plan = passthrough_plan,
	.apply = passthrough_apply,
};
