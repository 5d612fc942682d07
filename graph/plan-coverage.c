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

/*
 * The names the coverage check looks up, as maps: a model may have tens
 * of thousands of layer weights, and a scan per tensor would make the
 * check quadratic in them.
 */
struct coverage {
	struct strmap outputs;	/* output tensor name -> index */
	struct strmap *layer;	/* per module: layer weight suffix -> index */
	struct strmap loose;	/* the architecture's pre and post names */
	struct strmap *listed;	/* per model: names already in unused */
};

/* One source of a slice of module am whose output layers begin at out0. */
static void
coverage_source(struct plan_build *b, const struct arch_module *am,
    const struct strmap *layer, const struct nsrc *src, int64_t out0,
    struct coverage *c)
{
	struct graph_plan *p = b->p;
	const struct model *m = p->models[src->model].m;
	const struct arch_weight *w;
	const char *name, *suf;
	size_t i, plen, k, ignored;
	int64_t idx;
	char *out;
	bool has;

	for (i = 0; i < m->ntensors; i++) {
		name = m->tensors[i].t->name;
		if (!arch_split_layer(name, &plen, &idx, &suf) ||
		    strlen(am->layer_prefix) != plen ||
		    strncmp(name, am->layer_prefix, plen) != 0)
			continue;
		idx -= am->first;
		if (idx < src->start || idx >= src->end ||
		    strmap_get(&c->loose, name, &ignored))
			continue;
		w = strmap_get(layer, suf, &k) ? &am->layer[k] : NULL;
		if (w == NULL) {
			if (!strmap_get(&c->listed[src->model], name,
			    &ignored)) {
				strmap_put(&c->listed[src->model], name, 0);
				unused_add(p, src->model, name, suf);
			}
			continue;
		}
		out = arch_layer_name(am, w, out0 + idx - src->start);
		has = strmap_get(&c->outputs, out, &ignored);
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
	const struct arch_module *am;
	const struct nmodule *nm;
	struct coverage c = { 0 };
	int64_t out0;
	size_t i, j, m;

	c.listed = xcalloc(p->nmodels, sizeof *c.listed);
	c.layer = xcalloc(b->nmods, sizeof *c.layer);
	for (i = 0; i < p->ntensors; i++)
		strmap_put(&c.outputs, p->tensors[i].name, i);
	for (m = 0; m < b->nmods; m++) {
		am = b->mods[m].am;
		for (i = 0; i < am->nlayer; i++)
			strmap_put(&c.layer[m], am->layer[i].name, i);
		for (i = 0; i < am->npre; i++)
			strmap_put(&c.loose, am->pre[i].name, i);
		for (i = 0; i < am->npost; i++)
			strmap_put(&c.loose, am->post[i].name, i);
	}
	for (m = 0; m < b->nmods; m++) {
		nm = &b->mods[m];
		if (nm->am->layer_prefix == NULL)
			continue;
		out0 = 0;
		for (i = 0; i < nm->nslices; i++) {
			for (j = 0; j < nm->slices[i].nsrc; j++)
				coverage_source(b, nm->am, &c.layer[m],
				    &nm->slices[i].src[j], out0, &c);
			out0 += nm->slices[i].len;
		}
	}
	strmap_free(&c.outputs);
	strmap_free(&c.loose);
	for (m = 0; m < b->nmods; m++)
		strmap_free(&c.layer[m]);
	free(c.layer);
	for (i = 0; i < p->nmodels; i++)
		strmap_free(&c.listed[i]);
	free(c.listed);
}
