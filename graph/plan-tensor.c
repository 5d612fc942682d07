/* SPDX-License-Identifier: MIT */
/*
 * plan-tensor.c: planning one output tensor.
 *
 * For each output tensor: resolve the method's global parameters (slice,
 * module, top level; filters see the output name), decide which inputs are
 * needed (a slerp tensor with no t needs only the base: Part A item 6),
 * find each input tensor in its model at that model's own layer index
 * (falling back to the tied embedding for an absent LM head), resolve the
 * per-model parameters (source, slice, module, top; filters see the input
 * name), check shapes and dtypes, and let the method's plan hook check the
 * rest.  Problems are collected, never fatal; repeated ones are counted
 * after a few so that one mistake does not print a thousand lines.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plan-int.h"

#define PLAN_SAME_ERRORS 3	/* shown before the rest are counted */

static void plan_verror(struct plan_build *, const char *, const char *,
    va_list) __attribute__((format(printf, 3, 0)));

static void
plan_verror(struct plan_build *b, const char *where, const char *fmt,
    va_list ap)
{
	size_t i;

	for (i = 0; i < b->nerrs; i++)
		if (b->errs[i].fmt == fmt)
			break;
	if (i == b->nerrs && b->nerrs < 32) {
		b->errs[b->nerrs].fmt = fmt;
		b->errs[b->nerrs++].count = 0;
	}
	if (i < 32 && b->errs[i].count++ >= PLAN_SAME_ERRORS) {
		b->suppressed++;
		b->d->nerrors++;	/* still an error, just not printed */
		return;
	}
	graph_diag_vadd(b->d, GRAPH_SEV_ERROR, where, fmt, ap);
}

static void
plan_error(struct plan_build *b, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
plan_error(struct plan_build *b, const char *where, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	plan_verror(b, where, fmt, ap);
	va_end(ap);
}

void
plan_tensor_error(struct method_plan *mp, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	plan_verror(mp->build, mp->t->name, fmt, ap);
	va_end(ap);
}

static double
param_value(const struct graph_method *m, const double *v, const bool *set,
    const char *name)
{
	int i = method_param_index(m, name);

	if (i < 0)
		return 0;
	return set[i] ? v[i] : m->params[i].def;
}

double
plan_g(const struct plan_tensor *t, const char *name)
{
	return param_value(t->method, t->g, t->gset, name);
}

bool
plan_gset(const struct plan_tensor *t, const char *name)
{
	int i = method_param_index(t->method, name);

	return i >= 0 && t->gset[i];
}

double
plan_pm(const struct plan_tensor *t, size_t in, const char *name)
{
	size_t np = t->method->nparams;

	return param_value(t->method, t->pm + in * np, t->pmset + in * np,
	    name);
}

bool
plan_pmset(const struct plan_tensor *t, size_t in, const char *name)
{
	int i = method_param_index(t->method, name);

	return i >= 0 && t->pmset[in * t->method->nparams + (size_t)i];
}

/* The inputs other than the base, in input order: the models a method
 * mixes into the base.  idx needs room for t->nin. */
size_t
plan_others(const struct plan_tensor *t, size_t *idx)
{
	size_t j, k = 0;

	for (j = 0; j < t->nin; j++)
		if ((int)j != t->base)
			idx[k++] = j;
	return k;
}

/* The name, as written, of the model that input in comes from. */
const char *
plan_input_model(const struct method_plan *mp, size_t in)
{
	return mp->plan->models[mp->t->in[in].model].name;
}

/* Looks a parameter up at the given levels; first value found wins. */
static bool
param_lookup(const struct graph_params *const *levels, size_t nlevels,
    const char *name, const char *tensor, double t, double *out)
{
	const struct graph_param *p;
	size_t i;

	for (i = 0; i < nlevels; i++) {
		if (levels[i] == NULL)
			continue;
		if ((p = params_find(levels[i], name)) == NULL)
			continue;
		if (param_eval(p, tensor, t, out) == 0)
			return true;
	}
	return false;
}

static bool
param_typecheck(struct plan_build *b, const struct method_param *mp,
    double v, const char *tensor)
{
	if (mp->type == MP_INT && floor(v) != v) {
		plan_error(b, tensor, "parameter '%s' must be an integer, got "
		    "%g", mp->name, v);
		return false;
	}
	return true;
}

/* Returns false when a required global is missing; sets keep_base when
 * a base-fallback one is (MP_BASE_FALLBACK). */
static bool
plan_globals(struct plan_build *b, const struct nmodule *nm,
    const struct nslice *s, struct plan_tensor *pt, double t,
    bool *keep_base)
{
	const struct graph_method *m = pt->method;
	const struct graph_params *levels[3] = { s->params, nm->params,
		&b->cfg->params };
	size_t i;
	bool good = true;

	*keep_base = false;
	pt->g = xcalloc(m->nparams + 1, sizeof *pt->g);
	pt->gset = xcalloc(m->nparams + 1, sizeof *pt->gset);
	for (i = 0; i < m->nparams; i++) {
		const struct method_param *mp = &m->params[i];
		if (mp->per_model)
			continue;
		if (param_lookup(levels, 3, mp->name, pt->name, t, &pt->g[i])) {
			pt->gset[i] = true;
			good &= param_typecheck(b, mp, pt->g[i], pt->name);
			continue;
		}
		if (mp->need == MP_OPTIONAL)
			continue;
		if (mp->need == MP_BASE_FALLBACK) {
			*keep_base = true;
			continue;
		}
		plan_error(b, pt->name, "missing required parameter '%s'",
		    mp->name);
		good = false;
	}
	return good;
}

static const struct model_tensor *
plan_find_input(const struct model *m, const char *name,
    const char **found)
{
	const struct model_tensor *mt;
	const char *alt[4];
	size_t i, n;

	if ((mt = model_find(m, name)) != NULL) {
		*found = name;
		return mt;
	}
	n = arch_tied_names(name, alt, 4);
	for (i = 0; i < n; i++) {
		if ((mt = model_find(m, alt[i])) != NULL) {
			*found = alt[i];
			return mt;
		}
	}
	return NULL;
}

static void
plan_add_input(struct plan_tensor *pt, size_t model,
    const struct model_tensor *mt, const char *name, int64_t layer)
{
	struct plan_input *in = &pt->in[pt->nin++];

	memset(in, 0, sizeof *in);
	in->model = model;
	in->mt = mt;
	in->name = xstrdup(name);
	in->layer = layer;
	in->rows = mt->t->ndim > 0 ? mt->t->shape[0] : 1;
	in->cols = in->rows > 0 ? (int64_t)(mt->t->numel /
	    (uint64_t)in->rows) : 0;
}

/* Where an output tensor is: before or after the layers, in a layer, or
 * in the block after the last layer (phi-1's head). */
enum plan_place {
	PLACE_LOOSE,
	PLACE_LAYER,
	PLACE_END,
};

/* What one output tensor is made of. */
struct plan_what {
	const struct nmodule *nm;
	const struct nslice *s;
	const struct arch_weight *w;
	enum plan_place place;
	int64_t out;		/* output layer; at the end: the layer count */
	int64_t local;		/* layer within the slice */
};

/* The tensor's name in source j's model (or, j == -1, the output's). */
static char *
plan_input_name(struct plan_build *b, const struct plan_what *pw, size_t j,
    int64_t *idx)
{
	const struct arch_module *am = pw->nm->am;
	const struct nsrc *src = &pw->s->src[j];

	*idx = -1;
	switch (pw->place) {
	case PLACE_LAYER:
		*idx = src->start + pw->local;
		return arch_layer_name(am, pw->w, *idx);
	case PLACE_END:
		return arch_end_name(am, pw->w, plan_model_layers(b->p,
		    src->model, am));
	default:
		return xstrdup(pw->w->name);
	}
}

/*
 * Finds every needed input tensor; false if any is missing.  A layer
 * weight that not every layer has is merged from the sources that have
 * it (mergekit's optional weights), but a method that needs the base
 * needs the base to have it.
 */
static bool
plan_inputs(struct plan_build *b, const struct plan_what *pw,
    struct plan_tensor *pt, bool only_base)
{
	const struct nslice *s = pw->s;
	bool layer = pw->place == PLACE_LAYER;
	bool optional = layer && !pw->w->uniform;
	const struct graph_plan *p = b->p;
	const struct method_param *fb = method_fallback_param(pt->method);
	const struct model_tensor *mt;
	const char *found;
	char *name;
	int64_t idx;
	size_t j;
	bool good = true;

	pt->in = xcalloc(s->nsrc, sizeof *pt->in);
	pt->base = -1;
	for (j = 0; j < s->nsrc; j++) {
		if (only_base && s->src[j].model != s->base)
			continue;
		name = plan_input_name(b, pw, j, &idx);
		mt = plan_find_input(p->models[s->src[j].model].m, name,
		    &found);
		if (mt == NULL && optional && (s->src[j].model != s->base ||
		    !(pt->method->flags & METHOD_NEEDS_BASE))) {
			free(name);
			continue;
		}
		if (mt == NULL && optional) {
			plan_error(b, pt->name, "the base model %s has no tensor "
			    "'%s' (at its own layer index), which other sources "
			    "of this layer have, and %s needs the base; choose "
			    "layers of the same kind", p->models[s->base].name,
			    name, pt->method->name);
			good = false;
		} else if (mt == NULL && fb != NULL) {
			plan_error(b, pt->name, "model %s has no tensor '%s'%s; "
			    "leave %s unset for this tensor (a conditional %s "
			    "with filters) so the base is kept, or choose "
			    "other layers", p->models[s->src[j].model].name,
			    name, layer ? " (at its own layer index)" : "",
			    fb->name, fb->name);
			good = false;
		} else if (mt == NULL) {
			plan_error(b, pt->name, "model %s has no tensor '%s'%s; "
			    "choose layers or models that have it",
			    p->models[s->src[j].model].name, name,
			    layer ? " (at its own layer index)" : "");
			good = false;
		} else {
			if (s->src[j].model == s->base)
				pt->base = (int)pt->nin;
			plan_add_input(pt, s->src[j].model, mt, found, idx);
		}
		free(name);
	}
	return good;
}

static void
plan_per_model(struct plan_build *b, const struct nmodule *nm,
    const struct nslice *s, struct plan_tensor *pt, double t)
{
	const struct graph_method *m = pt->method;
	const struct graph_params *levels[4];
	size_t i, j, k, np = m->nparams;

	pt->pm = xcalloc(pt->nin * np + 1, sizeof *pt->pm);
	pt->pmset = xcalloc(pt->nin * np + 1, sizeof *pt->pmset);
	for (j = 0; j < pt->nin; j++) {
		levels[0] = NULL;
		for (k = 0; k < s->nsrc; k++)
			if (s->src[k].model == pt->in[j].model) {
				levels[0] = s->src[k].params;
				break;
			}
		levels[1] = s->params;
		levels[2] = nm->params;
		levels[3] = &b->cfg->params;
		for (i = 0; i < np; i++) {
			const struct method_param *mp = &m->params[i];
			if (!mp->per_model)
				continue;
			if (param_lookup(levels, 4, mp->name, pt->in[j].name, t,
			    &pt->pm[j * np + i])) {
				pt->pmset[j * np + i] = true;
				param_typecheck(b, mp, pt->pm[j * np + i],
				    pt->name);
			} else if (mp->need != MP_OPTIONAL &&
			    (int)j != pt->base) {
				plan_error(b, pt->name, "missing required "
				    "parameter '%s' for %s.%s", mp->name,
				    b->p->models[pt->in[j].model].name,
				    pt->in[j].name);
			}
		}
	}
}

static char *
shape_str(const struct safetensors_tensor *t)
{
	struct xbuf x = { 0 };
	int i;

	xbuf_add(&x, "[", 1);
	for (i = 0; i < t->ndim; i++)
		xbuf_printf(&x, "%s%" PRId64, i ? ", " : "", t->shape[i]);
	xbuf_add(&x, "]", 1);
	return xbuf_take(&x);
}

static bool
same_shape(const struct safetensors_tensor *a,
    const struct safetensors_tensor *b)
{
	return a->ndim == b->ndim &&
	    memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape) == 0;
}

static void
plan_shape_error(struct plan_build *b, struct plan_tensor *pt,
    const char *why)
{
	const struct method_param *fb = method_fallback_param(b->method);
	struct xbuf x = { 0 };
	char *s;
	size_t j;

	for (j = 0; j < pt->nin; j++) {
		s = shape_str(pt->in[j].mt->t);
		xbuf_printf(&x, "%s%s:%s", j ? ", " : "",
		    b->p->models[pt->in[j].model].name, pt->in[j].name);
		if (pt->in[j].layer >= 0)
			xbuf_printf(&x, "@%lld", (long long)pt->in[j].layer);
		xbuf_printf(&x, " %s", s);
		free(s);
	}
	if (fb != NULL)
		plan_error(b, pt->name, "shapes differ (%s)%s; add a filter so "
		    "that no %s applies to this tensor (the base's is then "
		    "kept)", x.data, why, fb->name);
	else
		plan_error(b, pt->name, "shapes differ (%s)%s; choose layers "
		    "or models whose shapes agree", x.data, why);
	xbuf_free(&x);
}

/*
 * Output shape.  Equal input shapes are the common case.  Embeddings of
 * different vocabulary sizes are cut to the common top-left block
 * (RECTIFY) or to the base's shape (BASE_CROP), as in MERGEKIT.md Part B
 * 4.0 and 4.2; any other mismatch is an error naming every shape.
 */
static bool
plan_shape(struct plan_build *b, struct plan_tensor *pt)
{
	const struct safetensors_tensor *first = pt->in[0].mt->t, *ref;
	int64_t rows, cols;
	size_t j;
	bool equal = true, twod = true;
	unsigned flags = pt->method->flags;

	if (pt->vperm != NULL)
		return true;	/* the output vocabulary's rows */
	for (j = 0; j < pt->nin; j++) {
		equal &= same_shape(pt->in[j].mt->t, first);
		twod &= pt->in[j].mt->t->ndim == 2;
	}
	pt->ndim = first->ndim;
	memcpy(pt->shape, first->shape, sizeof pt->shape);
	if (equal)
		return true;
	if (!pt->is_embed || !twod ||
	    !(flags & (METHOD_RECTIFY | METHOD_BASE_CROP))) {
		plan_shape_error(b, pt, pt->is_embed && twod ? "; merge method "
		    "cannot reconcile embedding sizes" : "");
		return false;
	}
	if ((flags & METHOD_BASE_CROP) && pt->base >= 0) {
		ref = pt->in[pt->base].mt->t;
		rows = ref->shape[0];
		cols = ref->shape[1];
	} else {
		rows = cols = INT64_MAX;
		for (j = 0; j < pt->nin; j++) {
			if (pt->in[j].mt->t->shape[0] < rows)
				rows = pt->in[j].mt->t->shape[0];
			if (pt->in[j].mt->t->shape[1] < cols)
				cols = pt->in[j].mt->t->shape[1];
		}
	}
	for (j = 0; j < pt->nin; j++) {
		if (pt->in[j].mt->t->shape[0] < rows ||
		    pt->in[j].mt->t->shape[1] < cols) {
			plan_shape_error(b, pt, "; an embedding smaller than "
			    "the base's cannot be cropped to it");
			return false;
		}
		pt->in[j].rectified = pt->in[j].mt->t->shape[0] != rows ||
		    pt->in[j].mt->t->shape[1] != cols;
		pt->in[j].rows = rows;
		pt->in[j].cols = cols;
	}
	pt->shape[0] = rows;
	pt->shape[1] = cols;
	graph_diag_add(b->d, GRAPH_SEV_WARNING, pt->name, "embedding sizes "
	    "differ; using the top-left [%" PRId64 ", %" PRId64 "] block of "
	    "each", rows, cols);
	return true;
}

static bool
plan_dtype(struct plan_build *b, struct plan_tensor *pt)
{
	const struct graph_config *cfg = b->cfg;
	const struct plan_input *ref = &pt->in[pt->base >= 0 ? pt->base : 0];
	bool copy = pt->method == &method_copy;
	size_t j;

	pt->compute_dtype = cfg->dtype;
	pt->out_dtype = cfg->out_dtype ? cfg->out_dtype :
	    cfg->dtype ? cfg->dtype : ref->mt->t->dtype;
	if (copy && pt->vperm == NULL && pt->out_dtype == ref->mt->t->dtype &&
	    (cfg->dtype == GRAPH_DT_NONE || cfg->dtype == pt->out_dtype))
		return true;	/* raw byte copy */
	for (j = 0; j < pt->nin; j++) {
		if (!graph_dtype_is_float(pt->in[j].mt->t->dtype) && !copy) {
			plan_error(b, pt->name, "%s stores it as %s; integer "
			    "and boolean tensors cannot be merged, only copied",
			    b->p->models[pt->in[j].model].name,
			    graph_dtype_st_name(pt->in[j].mt->t->dtype));
			return false;
		}
	}
	if (!graph_dtype_is_encodable(pt->out_dtype)) {
		plan_error(b, pt->name, "cannot write a computed tensor as %s; "
		    "set out_dtype to bfloat16, float16 or float32",
		    graph_dtype_st_name(pt->out_dtype));
		return false;
	}
	return true;
}

/* Keeps only input k: the tensor becomes a copy of it. */
static void
plan_fold_copy(struct plan_tensor *pt, size_t k, const char *note)
{
	size_t j;

	for (j = 0; j < pt->nin; j++)
		if (j != k)
			free(pt->in[j].name);
	if (k != 0)
		pt->in[0] = pt->in[k];
	pt->base = pt->base == (int)k ? 0 : -1;
	pt->nin = 1;
	pt->method = &method_copy;
	if (note != NULL && pt->note == NULL)
		pt->note = xstrdup(note);
}

static void plan_method_shape(struct plan_tensor *);

static void
plan_one(struct plan_build *b, const struct plan_what *pw, double t)
{
	struct graph_plan *p = b->p;
	const struct nslice *s = pw->s;
	struct plan_tensor *pt;
	struct method_plan mp;
	char *note;
	bool keep_base;

	p->tensors = xgrowarray(p->tensors, p->ntensors, sizeof *p->tensors);
	pt = &p->tensors[p->ntensors++];
	memset(pt, 0, sizeof *pt);
	pt->name = pw->place == PLACE_LAYER ? arch_layer_name(pw->nm->am,
	    pw->w, pw->out) : pw->place == PLACE_END ?
	    arch_end_name(pw->nm->am, pw->w, pw->out) : xstrdup(pw->w->name);
	pt->layer = pw->place == PLACE_LAYER ? pw->out : -1;
	pt->is_embed = pw->w->is_embed;
	/* A module the config does not name is copied, whatever the
	 * method. */
	pt->method = s->copy ? &method_copy : b->method;
	if (!plan_globals(b, pw->nm, s, pt, t, &keep_base))
		return;
	/* A tokenizer merge's embedding takes default rows from every
	 * source, so they are gathered even when the base's is kept. */
	if (!plan_inputs(b, pw, pt, keep_base && !(p->vocab != NULL &&
	    pt->is_embed)))
		return;
	if (pt->nin == 0)
		return;	/* no base: reported once per slice */
	plan_per_model(b, pw->nm, s, pt, t);
	if (p->vocab != NULL && pt->is_embed && !plan_tokenizer_tensor(b, pt))
		return;
	if (keep_base) {
		p->kept_base++;
		note = xasprintf("no %s applies: the base model's tensor, "
		    "%s", method_fallback_param(pt->method)->name,
		    pt->vperm != NULL ? "its rows permuted to the output "
		    "vocabulary" : "unchanged");
		plan_fold_copy(pt, (size_t)pt->base, note);
		free(note);
	}
	if (!plan_shape(b, pt))
		return;
	pt->numel = 1;
	for (int k = 0; k < pt->ndim; k++)
		pt->numel *= (uint64_t)pt->shape[k];
	pt->seed = p->seed;
	if (pt->method->plan != NULL) {
		memset(&mp, 0, sizeof mp);
		mp.t = pt;
		mp.plan = p;
		mp.build = b;
		mp.slice_base = s->base != (size_t)-1;
		pt->method->plan(&mp);
		if (mp.fold_copy)
			plan_fold_copy(pt, mp.fold_input, "single input: "
			    "copied");
	}
	plan_dtype(b, pt);
	plan_method_shape(pt);
}

/*
 * Rows are along the last axis (mergekit's row-wise vectors) unless the
 * method says otherwise: a 1-D tensor is one row.  The block (quantum) is 64 Ki elements, or whole
 * rows for methods that work by rows.
 */
static void
plan_method_shape(struct plan_tensor *pt)
{
	const struct graph_method *m = pt->method;

	pt->cols = pt->ndim > 0 ? pt->shape[pt->ndim - 1] : 1;
	pt->rows = pt->cols > 0 ? (int64_t)(pt->numel / (uint64_t)pt->cols) :
	    0;
	memset(&pt->ms, 0, sizeof pt->ms);
	pt->ms.npasses = m->npasses;
	pt->ms.nred = m->nred;
	pt->ms.rows = m->rows;
	pt->ms.state_size = m->state_size;
	if (m->shape != NULL)
		m->shape(pt, &pt->ms);
	if (pt->ms.rows && pt->ms.row_len > 0) {
		pt->cols = (int64_t)pt->ms.row_len;
		pt->rows = (int64_t)(pt->numel / pt->ms.row_len);
	}
	pt->quantum = GRAPH_QUANTUM;
	if (pt->ms.rows && pt->cols > 0)
		pt->quantum = (uint64_t)pt->cols >= GRAPH_QUANTUM ?
		    (uint64_t)pt->cols : (uint64_t)pt->cols *
		    (GRAPH_QUANTUM / (uint64_t)pt->cols);
}

/* Checks done once per slice rather than once per tensor. */
static bool
plan_slice_ok(struct plan_build *b, const struct nslice *s, size_t idx)
{
	size_t j;

	if (s->nsrc > GRAPH_MAX_INPUTS) {
		graph_diag_at(b->d, GRAPH_SEV_ERROR, b->cfg->path, s->mark,
		    "a slice has %zu sources; at most %d are supported",
		    s->nsrc, GRAPH_MAX_INPUTS);
		return false;
	}
	if (s->copy || !(b->method->flags & METHOD_NEEDS_BASE))
		return true;
	if (s->base == (size_t)-1) {
		graph_diag_at(b->d, GRAPH_SEV_ERROR, b->cfg->path,
		    b->cfg->method_mark, "merge method %s needs a base_model",
		    b->method->name);
		return false;
	}
	for (j = 0; j < s->nsrc; j++)
		if (s->src[j].model == s->base)
			return true;
	graph_diag_at(b->d, GRAPH_SEV_ERROR, b->cfg->path, s->mark,
	    "slice %zu: merge method %s needs the base model %s among the "
	    "slice's sources (slices: syntax does not add it for you)",
	    idx + 1, b->method->name, b->p->models[s->base].name);
	return false;
}

/*
 * Part A 17: a layer weight that not every layer of the architecture
 * model has (hybrids alternate attention, convolution, mamba, dense and
 * MoE layers) is in an output layer when some source of that layer has
 * it at its own index, whichever model the architecture came from.
 */
static bool
plan_layer_has(const struct plan_build *b, const struct plan_what *pw)
{
	const struct graph_plan *p = b->p;
	const struct nslice *s = pw->s;
	char *name;
	size_t j;
	bool has = false;

	if (pw->w->uniform)
		return true;
	for (j = 0; j < s->nsrc && !has; j++) {
		name = arch_layer_name(pw->nm->am, pw->w, s->src[j].start +
		    pw->local);
		has = model_find(p->models[s->src[j].model].m, name) != NULL;
		free(name);
	}
	return has;
}

/* The output's layer count of a module, its slices' lengths added. */
static int64_t
nmodule_layers(const struct nmodule *nm)
{
	int64_t n = 0;
	size_t i;

	for (i = 0; i < nm->nslices; i++)
		n += nm->slices[i].len;
	return n;
}

/* One module: pre weights from its first slice, the layers, then post
 * weights from its last slice (Part A item 12). */
static void
plan_module(struct plan_build *b, const struct nmodule *nm)
{
	const struct arch_module *am = nm->am;
	struct plan_what pw = { .nm = nm };
	int64_t i, out = 0;
	size_t k, si;

	pw.s = &nm->slices[0];
	pw.place = PLACE_LOOSE;
	for (k = 0; k < am->npre; k++) {
		pw.w = &am->pre[k];
		plan_one(b, &pw, 0);
	}
	pw.place = PLACE_LAYER;
	for (si = 0; si < nm->nslices; si++) {
		pw.s = &nm->slices[si];
		for (i = 0; i < pw.s->len; i++, out++) {
			double t = pw.s->len > 1 ? (double)i /
			    (double)(pw.s->len - 1) : 1.0;
			pw.out = out;
			pw.local = i;
			for (k = 0; k < am->nlayer; k++) {
				/* Tens of thousands of tensors: planning can
				 * be stopped in between. */
				if (plan_cancelled(b))
					return;
				pw.w = &am->layer[k];
				if (plan_layer_has(b, &pw))
					plan_one(b, &pw, t);
			}
		}
	}
	pw.s = &nm->slices[nm->nslices - 1];
	for (k = 0; k < am->npost; k++) {
		pw.w = &am->post[k];
		pw.place = pw.w->at_end ? PLACE_END : PLACE_LOOSE;
		pw.out = out;
		plan_one(b, &pw, 0);
	}
}

void
plan_tensors(struct plan_build *b)
{
	const struct graph_config *cfg = b->cfg;
	struct graph_plan *p = b->p;
	const struct nmodule *nm;
	size_t m, si;
	bool good = true;

	for (m = 0; m < b->nmods; m++)
		for (si = 0; si < b->mods[m].nslices; si++)
			good &= plan_slice_ok(b, &b->mods[m].slices[si], si);
	if (!good)
		return;
	p->out_layers = xcalloc(b->nmods, sizeof *p->out_layers);
	p->mod_copied = xcalloc(b->nmods, sizeof *p->mod_copied);
	for (m = 0; m < b->nmods && !b->cancelled; m++) {
		nm = &b->mods[m];
		plan_module(b, nm);
		/* As mergekit: a count changes only where slices say so. */
		p->out_layers[m] = nm->sliced ? nmodule_layers(nm) : -1;
		p->mod_copied[m] = nm->slices[0].copy;
		if (nm->sliced && nm->am->layers_key == NULL && b->nmods > 1 &&
		    p->out_layers[m] != nm->am->num_layers)
			graph_diag_add(b->d, GRAPH_SEV_WARNING, cfg->path,
			    "module %s now has %" PRId64 " layers, but "
			    "config.json has no layer count for it to update "
			    "(as in mergekit)", nm->am->name,
			    p->out_layers[m]);
	}
	/* Part A 6: t may be left out for some tensors, not for all. */
	if (p->ntensors > 0 && p->kept_base == p->ntensors)
		graph_diag_add(b->d, GRAPH_SEV_ERROR, cfg->path, "no tensor "
		    "gets a '%s': the output would be the base model, "
		    "unchanged; give '%s' in the parameters (mergekit requires "
		    "it)", method_fallback_param(b->method)->name,
		    method_fallback_param(b->method)->name);
	if (b->suppressed > 0)
		graph_diag_add(b->d, GRAPH_SEV_ERROR, NULL, "%zu more errors "
		    "like the ones above were not shown", b->suppressed);
}
