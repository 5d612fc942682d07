/* SPDX-License-Identifier: MIT */
/*
 * plan-json.c: a plan as JSON, for "mergectl plan --json" and for humans
 * through the client's table.
 *
 * The output is meant to be stable for scripts: keys always in the same
 * order, models named by their references as written (never by absolute
 * paths, which differ between machines), every output tensor with its
 * method, shape, dtype, place in the shard layout, its sources (model,
 * tensor, layer) and the parameter values resolved for it, and every
 * problem found.  Pure function of the plan.
 */
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "graph-int.h"

/* Where model i's rows of tensor vp come from, by rule. */
static cJSON *
plan_json_rows(const struct plan_vperm *vp, size_t i)
{
	cJSON *from = cJSON_CreateObject();
	size_t s;
	int k;

	for (s = 0; vp != NULL && s < vp->nsrc; s++)
		if (vp->src[s].model == i)
			for (k = 0; k < VDEF_N; k++)
				cJSON_AddNumberToObject(from, plan_vdef_names[k],
				    (double)vp->count[s][k]);
	return from;
}

/* Whether two vocabulary-indexed tensors take their rows alike. */
static bool
plan_json_rows_same(const struct plan_vperm *a, const struct plan_vperm *b)
{
	size_t s;

	if (a->nsrc != b->nsrc)
		return false;
	for (s = 0; s < a->nsrc; s++)
		if (a->src[s].model != b->src[s].model ||
		    memcmp(a->count[s], b->count[s], sizeof a->count[s]) != 0)
			return false;
	return true;
}

/*
 * A tokenizer merge: the output vocabulary and where each model's rows
 * come from, in the first vocabulary-indexed tensor (the input
 * embedding); "tensors" lists the others whose rows come from elsewhere
 * (an LM head with other sources, in a slices config).
 */
static void
plan_json_vocab(const struct graph_plan *p, cJSON *o)
{
	const struct plan_vocab *v = p->vocab;
	const struct plan_vperm *vp = NULL;
	cJSON *t, *arr, *m, *others, *x, *xm;
	size_t i, j;

	for (i = 0; i < p->ntensors && vp == NULL; i++)
		vp = p->tensors[i].vperm;
	t = cJSON_AddObjectToObject(o, "tokenizer");
	cJSON_AddStringToObject(t, "source", plan_tok_source_name(v->source));
	cJSON_AddStringToObject(t, "from", p->models[v->from].name);
	cJSON_AddStringToObject(t, "kind", tokz_kind_name(v->from_kind));
	cJSON_AddNumberToObject(t, "tokens", (double)v->n);
	cJSON_AddNumberToObject(t, "from_tokens", (double)v->nfrom);
	cJSON_AddNumberToObject(t, "added", (double)v->nadded);
	cJSON_AddNumberToObject(t, "stripped", (double)v->nstripped);
	cJSON_AddNumberToObject(t, "rows", (double)v->nrows);
	arr = cJSON_AddArrayToObject(t, "models");
	for (i = 0; i < p->nmodels; i++) {
		m = cJSON_CreateObject();
		cJSON_AddStringToObject(m, "ref", p->models[i].name);
		cJSON_AddNumberToObject(m, "lacks", (double)v->lacks[i]);
		cJSON_AddItemToObject(m, "rows_from", plan_json_rows(vp, i));
		cJSON_AddItemToArray(arr, m);
	}
	others = cJSON_AddArrayToObject(t, "tensors");
	for (j = 0; j < p->ntensors; j++) {
		if (p->tensors[j].vperm == NULL || p->tensors[j].vperm == vp ||
		    plan_json_rows_same(p->tensors[j].vperm, vp))
			continue;
		x = cJSON_CreateObject();
		cJSON_AddStringToObject(x, "name", p->tensors[j].name);
		arr = cJSON_AddArrayToObject(x, "models");
		for (i = 0; i < p->nmodels; i++) {
			xm = cJSON_CreateObject();
			cJSON_AddStringToObject(xm, "ref", p->models[i].name);
			cJSON_AddItemToObject(xm, "rows_from",
			    plan_json_rows(p->tensors[j].vperm, i));
			cJSON_AddItemToArray(arr, xm);
		}
		cJSON_AddItemToArray(others, x);
	}
}

static cJSON *
shape_json(int ndim, const int64_t *shape)
{
	cJSON *a = cJSON_CreateArray();
	int i;

	for (i = 0; i < ndim; i++)
		cJSON_AddItemToArray(a, cJSON_CreateNumber((double)shape[i]));
	return a;
}

static void
add_param(cJSON *o, const struct method_param *mp, double v)
{
	if (mp->type == MP_BOOL)
		cJSON_AddBoolToObject(o, mp->name, v != 0);
	else
		cJSON_AddNumberToObject(o, mp->name, v);
}

static cJSON *
source_json(const struct graph_plan *p, const struct plan_tensor *t,
    size_t j)
{
	const struct plan_input *in = &t->in[j];
	const struct safetensors_tensor *st = in->mt->t;
	cJSON *o = cJSON_CreateObject(), *pm;
	size_t k, np = t->method->nparams;

	cJSON_AddStringToObject(o, "model", p->models[in->model].name);
	cJSON_AddStringToObject(o, "tensor", in->name);
	if (in->layer >= 0)
		cJSON_AddNumberToObject(o, "layer", (double)in->layer);
	else
		cJSON_AddNullToObject(o, "layer");
	cJSON_AddStringToObject(o, "dtype", graph_dtype_st_name(st->dtype));
	cJSON_AddItemToObject(o, "shape", shape_json(st->ndim, st->shape));
	cJSON_AddBoolToObject(o, "base", (int)j == t->base);
	if (in->rectified) {
		int64_t view[2] = { in->rows, in->cols };
		cJSON_AddItemToObject(o, "cropped_to", shape_json(2, view));
	}
	pm = cJSON_AddObjectToObject(o, "parameters");
	for (k = 0; k < np; k++)
		if (t->method->params[k].per_model && t->pmset[j * np + k])
			add_param(pm, &t->method->params[k],
			    t->pm[j * np + k]);
	return o;
}

/* A model's LoRA adapter: where, and what it changes. */
static void
plan_json_adapter(const struct lora *l, cJSON *m)
{
	cJSON *a = cJSON_AddObjectToObject(m, "adapter"), *arr, *e;
	size_t i;

	cJSON_AddStringToObject(a, "dir", l->where.dir);
	cJSON_AddStringToObject(a, "file", l->file->path);
	cJSON_AddNumberToObject(a, "replaced", (double)l->nreplaced);
	if (l->round != GRAPH_DT_NONE)
		cJSON_AddStringToObject(a, "round_to",
		    graph_dtype_hf_name(l->round));
	arr = cJSON_AddArrayToObject(a, "weights");
	for (i = 0; i < l->ndeltas; i++) {
		e = cJSON_CreateObject();
		cJSON_AddStringToObject(e, "name",
		    l->deltas[i].weight->t->name);
		cJSON_AddNumberToObject(e, "rank", (double)l->deltas[i].rank);
		cJSON_AddNumberToObject(e, "scale", l->deltas[i].scale);
		if (l->deltas[i].transpose)
			cJSON_AddTrueToObject(e, "transposed");
		cJSON_AddStringToObject(e, "sum", l->deltas[i].single ?
		    "float32" : "float64");
		cJSON_AddItemToArray(arr, e);
	}
}

static cJSON *
tensor_json(const struct graph_plan *p, const struct plan_tensor *t)
{
	cJSON *o = cJSON_CreateObject(), *src, *g;
	size_t j, k;

	cJSON_AddStringToObject(o, "name", t->name);
	cJSON_AddStringToObject(o, "method", t->method->name);
	cJSON_AddItemToObject(o, "shape", shape_json(t->ndim, t->shape));
	cJSON_AddStringToObject(o, "dtype", graph_dtype_st_name(t->out_dtype));
	if (t->layer >= 0)
		cJSON_AddNumberToObject(o, "layer", (double)t->layer);
	else
		cJSON_AddNullToObject(o, "layer");
	cJSON_AddStringToObject(o, "shard", p->shards[t->shard].name);
	cJSON_AddNumberToObject(o, "offset", (double)t->offset);
	cJSON_AddNumberToObject(o, "bytes", (double)t->nbytes);
	g = cJSON_AddObjectToObject(o, "parameters");
	for (k = 0; k < t->method->nparams; k++)
		if (!t->method->params[k].per_model && t->gset[k])
			add_param(g, &t->method->params[k], t->g[k]);
	src = cJSON_AddArrayToObject(o, "sources");
	for (j = 0; j < t->nin; j++)
		cJSON_AddItemToArray(src, source_json(p, t, j));
	if (t->note != NULL)
		cJSON_AddStringToObject(o, "note", t->note);
	return o;
}

static cJSON *
problems_json(const struct graph_diags *d)
{
	cJSON *a = cJSON_CreateArray(), *o;
	size_t i;

	for (i = 0; d != NULL && i < d->n; i++) {
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "severity", d->v[i].sev ==
		    GRAPH_SEV_ERROR ? "error" : "warning");
		if (d->v[i].where != NULL)
			cJSON_AddStringToObject(o, "where", d->v[i].where);
		else
			cJSON_AddNullToObject(o, "where");
		cJSON_AddStringToObject(o, "message", d->v[i].msg);
		cJSON_AddItemToArray(a, o);
	}
	return a;
}

static void
plan_json_body(cJSON *o, const struct graph_plan *p)
{
	const struct model *am = p->models[p->arch_model].m;
	const struct arch_module *mod;
	const struct graph_method *meth;
	cJSON *a, *m, *arr;
	size_t i;

	a = cJSON_AddObjectToObject(o, "architecture");
	cJSON_AddStringToObject(a, "name", am->arch);
	cJSON_AddStringToObject(a, "model_type", am->model_type ?
	    am->model_type : "");
	cJSON_AddStringToObject(a, "model", p->models[p->arch_model].name);
	cJSON_AddStringToObject(a, "reason", p->arch_reason);
	cJSON_AddStringToObject(o, "method", p->method_name);
	if (p->base != (size_t)-1)
		cJSON_AddStringToObject(o, "base_model", p->models[p->base].name);
	else
		cJSON_AddNullToObject(o, "base_model");
	/* The main module's count; every module's below. */
	mod = &p->arch.mod[p->arch.main];
	cJSON_AddNumberToObject(o, "layers", p->out_layers[p->arch.main] >= 0 ?
	    (double)p->out_layers[p->arch.main] : (double)mod->num_layers);
	arr = cJSON_AddArrayToObject(o, "modules");
	for (i = 0; i < p->arch.nmod; i++) {
		mod = &p->arch.mod[i];
		m = cJSON_CreateObject();
		cJSON_AddStringToObject(m, "name", mod->name);
		if (mod->layer_prefix != NULL)
			cJSON_AddStringToObject(m, "layer_prefix",
			    mod->layer_prefix);
		else
			cJSON_AddNullToObject(m, "layer_prefix");
		cJSON_AddNumberToObject(m, "layers", p->out_layers[i] >= 0 ?
		    (double)p->out_layers[i] : (double)mod->num_layers);
		if (mod->layers_key != NULL)
			cJSON_AddStringToObject(m, "layers_key",
			    mod->layers_key);
		else
			cJSON_AddNullToObject(m, "layers_key");
		cJSON_AddStringToObject(m, "from", p->mod_copied != NULL &&
		    p->mod_copied[i] ? "copied" : "merged");
		cJSON_AddItemToArray(arr, m);
	}
	if (p->vocab_key != NULL) {
		m = cJSON_AddObjectToObject(o, "vocab_size");
		cJSON_AddStringToObject(m, "key", p->vocab_key);
		cJSON_AddNumberToObject(m, "value", (double)p->out_vocab);
		cJSON_AddStringToObject(m, "why", p->vocab != NULL ?
		    "tokenizer" : "cut");
	}
	if (p->vocab != NULL)
		plan_json_vocab(p, o);
	if (p->chat_template != NULL) {
		m = cJSON_AddObjectToObject(o, "chat_template");
		cJSON_AddStringToObject(m, "from", p->chat_template_from);
		cJSON_AddStringToObject(m, "text", p->chat_template);
	}
	arr = cJSON_AddArrayToObject(o, "models");
	for (i = 0; i < p->nmodels; i++) {
		m = cJSON_CreateObject();
		cJSON_AddStringToObject(m, "ref", p->models[i].name);
		cJSON_AddStringToObject(m, "architecture",
		    p->models[i].m->arch);
		cJSON_AddNumberToObject(m, "layers",
		    (double)p->models[i].m->num_layers);
		cJSON_AddNumberToObject(m, "files",
		    (double)p->models[i].m->nfiles);
		if (p->models[i].m->lora != NULL)
			plan_json_adapter(p->models[i].m->lora, m);
		cJSON_AddItemToArray(arr, m);
	}
	arr = cJSON_AddArrayToObject(o, "tensors");
	for (i = 0; i < p->ntensors; i++)
		cJSON_AddItemToArray(arr, tensor_json(p, &p->tensors[i]));
	arr = cJSON_AddArrayToObject(o, "shards");
	for (i = 0; i < p->nshards; i++) {
		m = cJSON_CreateObject();
		cJSON_AddStringToObject(m, "name", p->shards[i].name);
		cJSON_AddNumberToObject(m, "tensors", (double)p->shards[i].n);
		cJSON_AddNumberToObject(m, "bytes", (double)p->shards[i].size);
		cJSON_AddItemToArray(arr, m);
	}
	cJSON_AddNumberToObject(o, "bytes_read", (double)p->total_in);
	cJSON_AddNumberToObject(o, "bytes_written", (double)p->total_out);
	cJSON_AddNumberToObject(o, "peak_memory", (double)p->peak_memory);
	cJSON_AddNumberToObject(o, "memory_budget", (double)p->memory);
	cJSON_AddNumberToObject(o, "min_memory", (double)p->min_memory);
	/* Only for a method whose parameter may be left out (slerp's t). */
	if (p->nunused > 0) {
		arr = cJSON_AddArrayToObject(o, "unused");
		for (i = 0; i < p->nunused; i++) {
			m = cJSON_CreateObject();
			cJSON_AddStringToObject(m, "model",
			    p->models[p->unused[i].model].name);
			cJSON_AddStringToObject(m, "tensor", p->unused[i].name);
			cJSON_AddStringToObject(m, "reason",
			    p->unused[i].reason);
			cJSON_AddItemToArray(arr, m);
		}
	}
	meth = method_find(p->method_name);
	if (meth != NULL && method_fallback_param(meth) != NULL)
		cJSON_AddNumberToObject(o, "kept_base", (double)p->kept_base);
}

/*
 * The plan (NULL when planning failed) and every problem found, as a
 * new JSON object the caller deletes.
 */
cJSON *
graph_plan_json(const struct graph_plan *p, const struct graph_diags *d)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddBoolToObject(o, "ok", p != NULL);
	if (p != NULL)
		plan_json_body(o, p);
	cJSON_AddItemToObject(o, "problems", problems_json(d));
	return o;
}
