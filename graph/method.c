/* SPDX-License-Identifier: MIT */
/*
 * method.c: the table of merge methods.
 *
 * Each method lives in its own method-<name>.c and exports one const
 * struct graph_method: its parameters (with defaults and required-ness as
 * in MERGEKIT.md Part B 4.5), a plan hook that checks one tensor's inputs,
 * and the kernels (statistics passes, a reduce step, an apply pass).
 * Adding a method is adding that file and one line below.  mergekit's
 * registry is listed separately, for messages: a name it has that this
 * table lacks gets "not supported yet" rather than "unknown".
 */
#include <string.h>

#include "graph-int.h"

static const struct graph_method *const methods[] = {
	&method_linear,
	&method_slerp,
	&method_passthrough,
	&method_task_arithmetic,
	&method_ties,
	&method_dare_ties,
	&method_dare_linear,
	&method_breadcrumbs,
	&method_breadcrumbs_ties,
	&method_della,
	&method_della_linear,
	&method_nearswap,
	&method_ram,
	&method_ramplus_tl,
	&method_multislerp,
	&method_karcher,
	&method_model_stock,
	&method_nuslerp,
	&method_sce,
	&method_arcee_fusion,
};

#define NMETHODS (sizeof methods / sizeof *methods)

/* mergekit 0.1.4's registry (Part B 4.0), for messages. */
static const char *const upstream[] = {
	"linear", "slerp", "nuslerp", "multislerp", "karcher",
	"task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
	"breadcrumbs_ties", "della", "della_linear", "sce", "ram",
	"ramplus_tl", "model_stock", "nearswap", "arcee_fusion", "passthrough",
};

const struct graph_method *
graph_method_find(const char *name)
{
	size_t i;

	for (i = 0; i < NMETHODS; i++)
		if (strcmp(methods[i]->name, name) == 0)
			return methods[i];
	return NULL;
}

bool
graph_method_known_upstream(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof upstream / sizeof *upstream; i++)
		if (strcmp(upstream[i], name) == 0)
			return true;
	return false;
}

const char *const *
graph_method_names(size_t *n)
{
	*n = sizeof upstream / sizeof *upstream;
	return upstream;
}

int
graph_method_param(const struct graph_method *m, const char *name)
{
	size_t i;

	for (i = 0; i < m->nparams; i++)
		if (strcmp(m->params[i].name, name) == 0)
			return (int)i;
	return -1;
}

/*
 * The copy pseudo-method: one input, written unchanged (converted only if
 * the output dtype differs).  The planner folds tensors into it: slerp with
 * no t, passthrough without scale, single-input methods.
 */
static void
copy_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	memcpy(c->out, c->in[0], c->n * sizeof *c->out);
}

const struct graph_method graph_method_copy = {
	.name = "copy",
	.pretty = "Copy",
	.apply = copy_apply,
};
