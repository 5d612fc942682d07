/* SPDX-License-Identifier: MIT */
/*
 * method.c: the table of merge methods.
 *
 * Each method exports one const struct graph_method (method.h): its
 * parameters (with defaults and required-ness as in MERGEKIT.md Part B
 * 4.5), a plan hook that checks one tensor's inputs, and the kernels
 * (statistics passes, a reduce step, an apply pass).  A method has a file
 * of its own, method-<name>.c, except where methods share their kernel:
 * the task-vector family (task_arithmetic, ties, dare_*, breadcrumbs*,
 * della*) is eight table entries made by one macro in method-gta.c, and
 * ram/ramplus_tl share method-ram.c, each entry only a different
 * sparsifier and sign rule over the same passes.
 *
 * This table is the only list of methods: lookups, the did-you-mean hint
 * for an unknown name and the test that every method has an example all
 * read it.  Adding a method is adding its file, and its declaration and
 * one line below (docs/hacking.md).  The order is mergekit 0.1.4's
 * registry (MERGEKIT.md Part B 4.0), which the hint's ties follow.
 */
#include <string.h>

#include "method.h"

extern const struct graph_method method_linear;
extern const struct graph_method method_slerp;
extern const struct graph_method method_nuslerp;
extern const struct graph_method method_multislerp;
extern const struct graph_method method_karcher;
extern const struct graph_method method_task_arithmetic;
extern const struct graph_method method_ties;
extern const struct graph_method method_dare_ties;
extern const struct graph_method method_dare_linear;
extern const struct graph_method method_breadcrumbs;
extern const struct graph_method method_breadcrumbs_ties;
extern const struct graph_method method_della;
extern const struct graph_method method_della_linear;
extern const struct graph_method method_sce;
extern const struct graph_method method_ram;
extern const struct graph_method method_ramplus_tl;
extern const struct graph_method method_model_stock;
extern const struct graph_method method_nearswap;
extern const struct graph_method method_arcee_fusion;
extern const struct graph_method method_passthrough;

static const struct graph_method *const methods[] = {
	&method_linear,
	&method_slerp,
	&method_nuslerp,
	&method_multislerp,
	&method_karcher,
	&method_task_arithmetic,
	&method_ties,
	&method_dare_ties,
	&method_dare_linear,
	&method_breadcrumbs,
	&method_breadcrumbs_ties,
	&method_della,
	&method_della_linear,
	&method_sce,
	&method_ram,
	&method_ramplus_tl,
	&method_model_stock,
	&method_nearswap,
	&method_arcee_fusion,
	&method_passthrough,
};

#define NMETHODS (sizeof methods / sizeof *methods)

_Static_assert(NMETHODS <= GRAPH_MAX_METHODS, "raise GRAPH_MAX_METHODS");

const struct graph_method *
method_find(const char *name)
{
	size_t i;

	for (i = 0; i < NMETHODS; i++)
		if (strcmp(methods[i]->name, name) == 0)
			return methods[i];
	return NULL;
}

/* Stores up to cap names, in table order; returns how many there are. */
size_t
method_names(const char **names, size_t cap)
{
	size_t i;

	for (i = 0; i < NMETHODS && i < cap; i++)
		names[i] = methods[i]->name;
	return NMETHODS;
}

int
method_param_index(const struct graph_method *m, const char *name)
{
	size_t i;

	for (i = 0; i < m->nparams; i++)
		if (strcmp(m->params[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* The first parameter whose absence keeps the base's tensor, or NULL. */
const struct method_param *
method_fallback_param(const struct graph_method *m)
{
	size_t i;

	for (i = 0; i < m->nparams; i++)
		if (m->params[i].need == MP_BASE_FALLBACK)
			return &m->params[i];
	return NULL;
}

/*
 * The copy pseudo-method: one input, written unchanged (converted only if
 * the output dtype differs).  The planner folds tensors into it: slerp with
 * no t, passthrough without scale, single-input methods.  Not in the
 * table: no config can name it.
 */
static void
copy_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	memcpy(c->out, c->in[0], c->n * sizeof *c->out);
}

const struct graph_method method_copy = {
	.name = "copy",
	.pretty = "Copy",
	.apply = copy_apply,
};
