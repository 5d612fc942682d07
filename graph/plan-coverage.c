/* SPDX-License-Identifier: MIT */
/*
 * plan-coverage.c: nothing is dropped silently (MERGEKIT.md Part A 17).
 *
 * After planning, every tensor of every source layer (each slice source's
 * layers, at their own indices) has its output tensor, or is listed as
 * unused with the reason: a weight that the architecture model has in no
 * layer (a cross-family donor's q_norm/k_norm) is never carried, by
 * design, and plan says so.  One of the architecture's layer weights with
 * no output tensor in its output layer would be a planner bug losing
 * weights: that is an error, not an output.  (An output tensor need not
 * read every source: where slerp's t applies to none, the base's tensor
 * is kept, by rule.)
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"
#include "plan-int.h"

static void
unused_add(struct graph_plan *p, size_t model, const char *name,
    const char *suffix)
{
	struct plan_unused *u;

	p->unused = xgrowarray(p->unused, p->nunused, sizeof *p->unused);
	u = &p->unused[p->nunused++];
	u->model = model;
	u->name = xstrdup(name);
	u->reason = xasprintf("the architecture model %s has no layer "
	    "weight '%s'", p->models[p->arch_model].name, suffix + 1);
}

/* The architecture's layer weight called suffix (".mlp.up_proj.weight"). */
static const struct arch_weight *
arch_layer_weight(const struct arch *a, const char *suffix)
{
	size_t k;

	for (k = 0; k < a->nlayer; k++)
		if (strcmp(a->layer[k].name, suffix) == 0)
			return &a->layer[k];
	return NULL;
}

/* One source of a slice whose output layers begin at out0. */
static void
coverage_source(struct plan_build *b, const struct nsrc *src, int64_t out0,
    const struct strmap *outputs, struct strmap *listed)
{
	struct graph_plan *p = b->p;
	const struct model *m = p->models[src->model].m;
	const struct arch_weight *w;
	const char *name, *suf;
	size_t i, plen, ignored;
	int64_t idx;
	char *out;
	bool has;

	for (i = 0; i < m->ntensors; i++) {
		name = m->tensors[i].t->name;
		if (!arch_split_layer(name, &plen, &idx, &suf) ||
		    idx < src->start || idx >= src->end)
			continue;
		w = strlen(p->arch.layer_prefix) == plen && strncmp(name,
		    p->arch.layer_prefix, plen) == 0 ?
		    arch_layer_weight(&p->arch, suf) : NULL;
		if (w == NULL) {
			if (!strmap_get(&listed[src->model], name, &ignored)) {
				strmap_put(&listed[src->model], name, 0);
				unused_add(p, src->model, name, suf);
			}
			continue;
		}
		out = arch_layer_name(&p->arch, w, out0 + idx - src->start);
		has = strmap_get(outputs, out, &ignored);
		if (!has)
			graph_diag_add(b->d, GRAPH_SEV_ERROR, NULL, "internal "
			    "error: %s's tensor '%s' has no output tensor (%s "
			    "would be); nothing was written (please report "
			    "this)", p->models[src->model].name, name, out);
		free(out);
	}
}

void
plan_coverage(struct plan_build *b)
{
	struct graph_plan *p = b->p;
	struct strmap outputs = { 0 }, *listed;
	int64_t out0 = 0;
	size_t i, j;

	listed = xcalloc(p->nmodels, sizeof *listed);
	for (i = 0; i < p->ntensors; i++)
		strmap_put(&outputs, p->tensors[i].name, i);
	for (i = 0; i < b->nslices; i++) {
		for (j = 0; j < b->slices[i].nsrc; j++)
			coverage_source(b, &b->slices[i].src[j], out0, &outputs,
			    listed);
		out0 += b->slices[i].len;
	}
	strmap_free(&outputs);
	for (i = 0; i < p->nmodels; i++)
		strmap_free(&listed[i]);
	free(listed);
}
