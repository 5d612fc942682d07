/* SPDX-License-Identifier: MIT */
/*
 * config.c: the typed merge configuration, built from the YAML node tree.
 *
 * This accepts mergekit's whole schema (MERGEKIT.md Part B section 1) and
 * applies our rules on top (Part A items 1-3): unknown keys are errors with
 * the nearest known key as a suggestion, keys mergekit has but we do not
 * implement yet say so, scalars follow YAML 1.2 (1e-5 is a number), dtype
 * names are mergekit's.  Validation never stops at the first problem; every
 * problem goes to the diagnostics list with its line and column.  What this
 * file does not check needs the models (layer counts, methods' parameter
 * names): that is the planner's job.  The result is immutable once built.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

/*
 * A pipeline's stages as a stage's config sees them (pipeline.c): a
 * reference whose path is a stage's name means that stage's output, in
 * dir; the stages it reads are marked in deps.
 */
struct cfg_edit {
	size_t begin;		/* bytes of the buffer; SIZE_MAX: unknown */
	size_t end;
	char *text;		/* the scalar's new value, unquoted */
};

struct cfg_edits {
	struct cfg_edit *v;
	size_t n;
};

struct cfg_stages {
	char *const *names;	/* NULL for the unnamed stage */
	size_t n;
	size_t self;		/* the stage being read */
	const char *dir;	/* where stages are written; NULL: not yet */
	bool *deps;		/* one per stage */
	struct cfg_edits *edits;	/* the rewritten references */
};

struct cfg_ctx {
	const char *file;
	struct graph_diags *d;
	const struct cfg_stages *stages;	/* NULL: a single config */
};

static void cfg_params(struct cfg_ctx *, const struct ynode *,
    struct graph_params *);

static void
cfg_err(struct cfg_ctx *c, const struct ynode *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
cfg_err(struct cfg_ctx *c, const struct ynode *n, const char *fmt, ...)
{
	va_list ap;
	char *where, *msg;

	va_start(ap, fmt);
	msg = xvasprintf(fmt, ap);
	va_end(ap);
	if (n != NULL)
		where = xasprintf("%s:%d:%d", c->file, n->mark.line,
		    n->mark.col);
	else
		where = xstrdup(c->file);
	graph_diag_add(c->d, GRAPH_SEV_ERROR, where, "%s", msg);
	free(where);
	free(msg);
}

static const char *
ynode_kind_name(const struct ynode *n)
{
	switch (n->kind) {
	case YNODE_MAP:
		return "a mapping";
	case YNODE_SEQ:
		return "a list";
	default:
		return "a scalar";
	}
}

/*
 * Checks a mapping's keys against the allowed set: an unknown key is an
 * error naming the nearest known one, never silently ignored (Part A 2).
 * Every key mergekit-yaml accepts is known.
 */
static bool
cfg_keys(struct cfg_ctx *c, const struct ynode *map, const char *what,
    const char *const *allowed, size_t nallowed)
{
	const char *key, *guess;
	bool good = true;
	size_t i, j;

	if (map->kind != YNODE_MAP) {
		cfg_err(c, map, "%s must be a mapping, not %s", what,
		    ynode_kind_name(map));
		return false;
	}
	for (i = 0; i + 1 < map->n; i += 2) {
		key = map->kids[i]->str;
		for (j = 0; j < i; j += 2)
			if (strcmp(map->kids[j]->str, key) == 0)
				break;
		if (j < i) {
			cfg_err(c, map->kids[i], "key '%s' appears twice in "
			    "%s", key, what);
			good = false;
			continue;
		}
		for (j = 0; j < nallowed; j++)
			if (strcmp(key, allowed[j]) == 0)
				break;
		if (j < nallowed)
			continue;
		good = false;
		guess = graph_suggest(key, allowed, nallowed);
		if (guess != NULL)
			cfg_err(c, map->kids[i], "unknown key '%s' in %s; did "
			    "you mean '%s'?", key, what, guess);
		else
			cfg_err(c, map->kids[i], "unknown key '%s' in %s",
			    key, what);
	}
	return good;
}

/* A parameter number: numeric scalars, booleans, or numeric strings. */
static bool
cfg_number(struct cfg_ctx *c, const struct ynode *n, double *out)
{
	if (n->kind != YNODE_SCALAR) {
		cfg_err(c, n, "expected a number, got %s",
		    ynode_kind_name(n));
		return false;
	}
	if (yscalar_number(n->str, out) != 0) {
		cfg_err(c, n, "expected a number, got '%.40s'", n->str);
		return false;
	}
	if (!isfinite(*out)) {
		cfg_err(c, n, "expected a finite number, got '%.40s'",
		    n->str);
		return false;
	}
	return true;
}

static bool
cfg_string(struct cfg_ctx *c, const struct ynode *n, const char *what,
    char **out)
{
	if (n->kind != YNODE_SCALAR || n->str[0] == '\0') {
		cfg_err(c, n, "%s must be a non-empty string", what);
		return false;
	}
	*out = xstrdup(n->str);
	return true;
}

/*
 * The lora: of a reference's object form: "path[@rev]", or {path,
 * revision}, as mergekit's ModelPath; the model must not name one too.
 */
static bool
cfg_lora(struct cfg_ctx *c, const struct ynode *l, struct graph_ref *r)
{
	static const char *const pkeys[] = { "path", "revision" };
	const struct ynode *p, *v;
	struct graph_ref tmp;
	char *cause = NULL, *s;

	if (r->lora != NULL) {
		cfg_err(c, l, "the model already names an adapter with '+'; "
		    "give it once");
		return false;
	}
	if (l->kind == YNODE_MAP) {
		if (!cfg_keys(c, l, "a LoRA adapter path", pkeys, 2))
			return false;
		p = ynode_get(l, "path");
		v = ynode_get(l, "revision");
		if (p == NULL) {
			cfg_err(c, l, "a LoRA adapter needs a 'path'");
			return false;
		}
		if (!cfg_string(c, p, "path", &r->lora))
			return false;
		if (v != NULL && !cfg_string(c, v, "revision", &r->lora_rev))
			return false;
		return true;
	}
	if (l->kind != YNODE_SCALAR || l->str[0] == '\0') {
		cfg_err(c, l, "'lora' must be an adapter path or {path, "
		    "revision}");
		return false;
	}
	/* "path[@rev]": parsed as a reference, which must have no '+'. */
	if (graph_ref_parse(l->str, &tmp, &cause) != 0 || tmp.lora != NULL) {
		s = cause != NULL ? cause : xasprintf("'%s': an adapter path "
		    "has no '+'", l->str);
		cfg_err(c, l, "lora: %s", s);
		free(s);
		if (cause == NULL)
			graph_ref_fini(&tmp);
		return false;
	}
	r->lora = tmp.path;
	r->lora_rev = tmp.rev;
	return true;
}

static bool cfg_ref(struct cfg_ctx *, const struct ynode *, const char *,
    struct graph_ref *);

static bool
cfg_ref_parse(struct cfg_ctx *c, const struct ynode *n, const char *what,
    struct graph_ref *r)
{
	static const char *const keys[] = { "model", "lora",
		"override_architecture" };
	static const char *const pkeys[] = { "path", "revision" };
	const struct ynode *m, *l, *o, *p, *v;
	char *cause = NULL;

	memset(r, 0, sizeof *r);
	r->mark = n->mark;
	if (n->kind == YNODE_SCALAR) {
		if (graph_ref_parse(n->str, r, &cause) != 0) {
			cfg_err(c, n, "%s: %s", what, cause);
			free(cause);
			return false;
		}
		r->mark = n->mark;
		return true;
	}
	if (!cfg_keys(c, n, what, keys, 3))
		return false;
	m = ynode_get(n, "model");
	l = ynode_get(n, "lora");
	o = ynode_get(n, "override_architecture");
	if (m == NULL) {
		cfg_err(c, n, "%s needs a 'model' key", what);
		return false;
	}
	if (m->kind == YNODE_MAP) {
		if (!cfg_keys(c, m, "a model path", pkeys, 2))
			return false;
		p = ynode_get(m, "path");
		v = ynode_get(m, "revision");
		if (p == NULL || !cfg_string(c, p, "path", &r->path))
			return false;
		if (v != NULL && !cfg_string(c, v, "revision", &r->rev)) {
			graph_ref_fini(r);
			return false;
		}
	} else if (!cfg_ref_parse(c, m, what, r)) {
		return false;
	}
	r->mark = n->mark;
	if (l != NULL && !cfg_lora(c, l, r)) {
		graph_ref_fini(r);
		return false;
	}
	if (o != NULL && !cfg_string(c, o, "override_architecture",
	    &r->override_arch)) {
		graph_ref_fini(r);
		return false;
	}
	return true;
}

/* The scalar that holds a reference's path, in any of its forms. */
static const struct ynode *
cfg_ref_scalar(const struct ynode *n)
{
	const struct ynode *m;

	if (n->kind == YNODE_SCALAR)
		return n;
	if ((m = ynode_get(n, "model")) == NULL)
		return NULL;
	return m->kind == YNODE_SCALAR ? m : ynode_get(m, "path");
}

/*
 * Notes that n's path scalar now reads path (its "+adapter" kept), so
 * that the stage's config text can say so, as mergekit's does.
 */
static void
cfg_stage_edit(struct cfg_edits *e, const struct ynode *n, const char *path)
{
	const struct ynode *s = cfg_ref_scalar(n);
	struct graph_ref tmp;
	char *cause = NULL;

	if (s == NULL || s->kind != YNODE_SCALAR ||
	    graph_ref_parse(s->str, &tmp, &cause) != 0) {
		free(cause);
		return;		/* cannot happen: n parsed as a reference */
	}
	free(tmp.path);
	tmp.path = xstrdup(path);
	e->v = xreallocarray(e->v, e->n + 1, sizeof *e->v);
	e->v[e->n].begin = s->begin;
	e->v[e->n].end = s->end;
	e->v[e->n++].text = graph_ref_str(&tmp);
	graph_ref_fini(&tmp);
}

/*
 * In a pipeline, a reference to a stage's name is that stage's output:
 * its path becomes dir/name (a revision cannot apply; "+adapter" and the
 * object form's other keys are kept), and the stage is a dependency.
 */
static bool
cfg_stage_ref(struct cfg_ctx *c, const struct ynode *n, struct graph_ref *r)
{
	const struct cfg_stages *st = c->stages;
	size_t i;
	char *p;

	if (st == NULL)
		return true;
	for (i = 0; i < st->n; i++)
		if (st->names[i] != NULL && strcmp(st->names[i], r->path) == 0)
			break;
	if (i == st->n)
		return true;
	if (i == st->self) {
		cfg_err(c, n, "stage '%s' reads its own output", r->path);
		return false;
	}
	if (r->rev != NULL) {
		cfg_err(c, n, "'%s@%s': '%s' is a stage of this file, written "
		    "by it, which has no revisions", r->path, r->rev, r->path);
		return false;
	}
	st->deps[i] = true;
	if (st->dir != NULL) {
		p = xasprintf("%s/%s", st->dir, r->path);
		cfg_stage_edit(st->edits, n, p);
		free(r->path);
		r->path = p;
	}
	return true;
}

static bool
cfg_ref(struct cfg_ctx *c, const struct ynode *n, const char *what,
    struct graph_ref *r)
{
	if (!cfg_ref_parse(c, n, what, r))
		return false;
	if (!cfg_stage_ref(c, n, r)) {
		graph_ref_fini(r);
		return false;
	}
	return true;
}

static bool
cfg_pvalue(struct cfg_ctx *c, const struct ynode *n, struct graph_pvalue *v)
{
	size_t i;
	bool good = true;

	memset(v, 0, sizeof *v);
	if (n->kind == YNODE_SCALAR) {
		v->v = xmalloc(sizeof *v->v);
		v->n = 1;
		return cfg_number(c, n, &v->v[0]);
	}
	if (n->kind != YNODE_SEQ) {
		cfg_err(c, n, "a parameter value must be a number or a list "
		    "of numbers (a gradient)");
		return false;
	}
	if (n->n == 0) {
		cfg_err(c, n, "a gradient needs at least one value");
		return false;
	}
	v->gradient = true;
	v->n = n->n;
	v->v = xcalloc(n->n, sizeof *v->v);
	for (i = 0; i < n->n; i++)
		good &= cfg_number(c, n->kids[i], &v->v[i]);
	return good;
}

static bool
cfg_cond(struct cfg_ctx *c, const struct ynode *n, struct graph_pcond *pc)
{
	static const char *const keys[] = { "filter", "value" };
	const struct ynode *f, *v;

	memset(pc, 0, sizeof *pc);
	pc->mark = n->mark;
	if (!cfg_keys(c, n, "a conditional parameter entry", keys, 2))
		return false;
	f = ynode_get(n, "filter");
	v = ynode_get(n, "value");
	if (v == NULL) {
		cfg_err(c, n, "a conditional parameter entry needs 'value'");
		return false;
	}
	if (f != NULL && (f->kind != YNODE_SCALAR)) {
		cfg_err(c, f, "'filter' must be a string");
		return false;
	}
	/* A missing filter and "*" both match every tensor. */
	if (f != NULL && strcmp(f->str, "*") != 0)
		pc->filter = xstrdup(f->str);
	return cfg_pvalue(c, v, &pc->value);
}

static bool
cfg_param(struct cfg_ctx *c, const struct ynode *key, const struct ynode *n,
    struct graph_param *p)
{
	size_t i, maps = 0;
	bool good = true;

	memset(p, 0, sizeof *p);
	p->name = xstrdup(key->str);
	p->mark = key->mark;
	if (n->kind == YNODE_MAP) {
		cfg_err(c, n, "parameter '%s': a conditional value must be a "
		    "list of entries ('- filter: ...' / '  value: ...')",
		    key->str);
		return false;
	}
	if (n->kind == YNODE_SEQ)
		for (i = 0; i < n->n; i++)
			maps += n->kids[i]->kind == YNODE_MAP;
	if (maps == 0)
		return cfg_pvalue(c, n, &p->value);
	if (maps != n->n) {
		cfg_err(c, n, "parameter '%s' mixes conditional entries and "
		    "plain values", key->str);
		return false;
	}
	p->conditional = true;
	p->nconds = n->n;
	p->conds = xcalloc(n->n, sizeof *p->conds);
	for (i = 0; i < n->n; i++)
		good &= cfg_cond(c, n->kids[i], &p->conds[i]);
	return good;
}

static void
cfg_params(struct cfg_ctx *c, const struct ynode *n, struct graph_params *ps)
{
	size_t i, j;

	memset(ps, 0, sizeof *ps);
	if (n == NULL)
		return;
	if (n->kind != YNODE_MAP) {
		cfg_err(c, n, "'parameters' must be a mapping");
		return;
	}
	ps->v = n->n ? xcalloc(n->n / 2 + 1, sizeof *ps->v) : NULL;
	for (i = 0; i + 1 < n->n; i += 2) {
		if (ynode_is_null(n->kids[i + 1]))
			continue;	/* "weight: ~" is no setting */
		for (j = 0; j < ps->n; j++)
			if (strcmp(ps->v[j].name, n->kids[i]->str) == 0)
				break;
		if (j < ps->n) {
			cfg_err(c, n->kids[i], "parameter '%s' appears twice",
			    n->kids[i]->str);
			continue;
		}
		cfg_param(c, n->kids[i], n->kids[i + 1], &ps->v[ps->n++]);
	}
}

static bool
cfg_int(struct cfg_ctx *c, const struct ynode *n, int64_t *out)
{
	char *end;
	long long v;

	if (n->kind != YNODE_SCALAR || n->quoted || !yscalar_digits(
	    n->str[0] == '-' ? n->str + 1 : n->str, "0123456789")) {
		cfg_err(c, n, "expected an integer");
		return false;
	}
	errno = 0;
	v = strtoll(n->str, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0 || v > 1000000) {
		cfg_err(c, n, "integer '%.40s' out of range", n->str);
		return false;
	}
	*out = v;
	return true;
}

static bool
cfg_source(struct cfg_ctx *c, const struct ynode *n, bool need_range,
    struct graph_source *s)
{
	static const char *const skeys[] = { "model", "layer_range",
		"parameters" };
	static const char *const mkeys[] = { "model", "parameters" };
	const struct ynode *m, *lr;
	bool good;

	memset(s, 0, sizeof *s);
	s->mark = n->mark;
	if (need_range ? !cfg_keys(c, n, "a slice source", skeys, 3) :
	    !cfg_keys(c, n, "a model entry", mkeys, 2)) {
		if (n->kind != YNODE_MAP)
			return false;
	}
	m = ynode_get(n, "model");
	if (m == NULL) {
		cfg_err(c, n, "missing 'model'");
		return false;
	}
	good = cfg_ref(c, m, "model", &s->model);
	cfg_params(c, ynode_get(n, "parameters"), &s->params);
	if (!need_range)
		return good;
	if ((lr = ynode_get(n, "layer_range")) == NULL) {
		cfg_err(c, n, "a slice source needs 'layer_range: [start, "
		    "end]'");
		return false;
	}
	if (lr->kind != YNODE_SEQ || lr->n != 2) {
		cfg_err(c, lr, "'layer_range' must be a list of exactly two "
		    "integers [start, end]");
		return false;
	}
	s->has_range = true;
	good &= cfg_int(c, lr->kids[0], &s->start);
	good &= cfg_int(c, lr->kids[1], &s->end);
	if (good && s->end <= s->start) {
		cfg_err(c, lr, "'layer_range' [%lld, %lld] is empty; the end "
		    "is exclusive", (long long)s->start, (long long)s->end);
		good = false;
	}
	return good;
}

static void
cfg_slice(struct cfg_ctx *c, const struct ynode *n, struct graph_slice *s)
{
	static const char *const keys[] = { "sources", "base_model",
		"parameters", "residual_weight" };
	const struct ynode *src, *b;
	size_t i;

	memset(s, 0, sizeof *s);
	s->mark = n->mark;
	if (!cfg_keys(c, n, "a slice", keys, 4) && n->kind != YNODE_MAP)
		return;
	if ((src = ynode_get(n, "sources")) == NULL || src->kind != YNODE_SEQ ||
	    src->n == 0) {
		cfg_err(c, src ? src : n, "a slice needs a non-empty "
		    "'sources' list");
		return;
	}
	s->src = xcalloc(src->n, sizeof *s->src);
	for (i = 0; i < src->n; i++)
		cfg_source(c, src->kids[i], true, &s->src[s->nsrc++]);
	if ((b = ynode_get(n, "base_model")) != NULL)
		s->has_base = cfg_ref(c, b, "base_model", &s->base);
	cfg_params(c, ynode_get(n, "parameters"), &s->params);
	if ((b = ynode_get(n, "residual_weight")) != NULL) {
		double ignored;
		if (cfg_number(c, b, &ignored))
			graph_diag_at(c->d, GRAPH_SEV_WARNING, c->file,
			    b->mark, "'residual_weight' has no effect (as in "
			    "mergekit)");
	}
}

static void
cfg_list(struct cfg_ctx *c, const struct ynode *n, const char *key,
    struct graph_module *mod)
{
	size_t i;

	mod->mark = n->mark;
	if (n->kind != YNODE_SEQ) {
		cfg_err(c, n, "'%s' must be a list", key);
		return;
	}
	if (strcmp(key, "models") == 0) {
		mod->form = GRAPH_FORM_MODELS;
		mod->models = n->n ? xcalloc(n->n, sizeof *mod->models) : NULL;
		for (i = 0; i < n->n; i++)
			cfg_source(c, n->kids[i], false,
			    &mod->models[mod->nmodels++]);
	} else {
		mod->form = GRAPH_FORM_SLICES;
		mod->slices = n->n ? xcalloc(n->n, sizeof *mod->slices) : NULL;
		for (i = 0; i < n->n; i++)
			cfg_slice(c, n->kids[i], &mod->slices[mod->nslices++]);
	}
}

/* A new module of cfg, zeroed. */
static struct graph_module *
cfg_add_module(struct graph_config *cfg)
{
	cfg->mods = xgrowarray(cfg->mods, cfg->nmods, sizeof *cfg->mods);
	memset(&cfg->mods[cfg->nmods], 0, sizeof *cfg->mods);
	return &cfg->mods[cfg->nmods++];
}

/*
 * modules: one entry per module of the architecture that the config
 * plans, each with its slices or models and parameters.  Which names
 * exist is known only once the architecture model is open: the planner
 * checks them (a single-stack model's one module is "default", Part A
 * item 3).
 */
static void
cfg_modules(struct cfg_ctx *c, const struct ynode *n, struct graph_config *cfg)
{
	static const char *const keys[] = { "slices", "models", "parameters" };
	const struct ynode *def, *s, *m, *key;
	struct graph_module *mod;
	char *what;
	size_t i, j;
	bool good;

	if (n->kind != YNODE_MAP || n->n == 0) {
		cfg_err(c, n, "'modules' must be a non-empty mapping");
		return;
	}
	cfg->modules = true;
	for (i = 0; i + 1 < n->n; i += 2) {
		key = n->kids[i];
		def = n->kids[i + 1];
		for (j = 0; j < i; j += 2)
			if (strcmp(n->kids[j]->str, key->str) == 0)
				break;
		if (j < i) {
			cfg_err(c, key, "key '%s' appears twice in 'modules'",
			    key->str);
			continue;
		}
		/* "default:" with nothing after it (found by fuzz-config:
		 * it planned a merge of no models). */
		if (def->kind == YNODE_SCALAR && def->str[0] == '\0') {
			cfg_err(c, key, "module '%s' needs exactly one of "
			    "'slices' or 'models'", key->str);
			continue;
		}
		what = xasprintf("module '%s'", key->str);
		good = cfg_keys(c, def, what, keys, 3);
		free(what);
		if (!good && def->kind != YNODE_MAP)
			continue;
		s = ynode_get(def, "slices");
		m = ynode_get(def, "models");
		if ((s != NULL && s->n > 0) == (m != NULL && m->n > 0)) {
			cfg_err(c, def, "module '%s' needs exactly one of "
			    "'slices' or 'models'", key->str);
			continue;
		}
		mod = cfg_add_module(cfg);
		mod->name = xstrdup(key->str);
		cfg_list(c, s != NULL && s->n > 0 ? s : m,
		    s != NULL && s->n > 0 ? "slices" : "models", mod);
		mod->mark = key->mark;
		cfg_params(c, ynode_get(def, "parameters"), &mod->params);
	}
}

static void
cfg_dtype(struct cfg_ctx *c, const struct ynode *n, const char *key,
    enum graph_dtype *out)
{
	const char *suggest;

	if (n->kind != YNODE_SCALAR) {
		cfg_err(c, n, "'%s' must be a string", key);
		return;
	}
	*out = graph_dtype_from_config_name(n->str, &suggest);
	if (*out != GRAPH_DT_NONE)
		return;
	if (suggest != NULL)
		cfg_err(c, n, "unknown %s '%s'; did you mean '%s'? (dtype "
		    "names are mergekit's: bfloat16, float16, float32, "
		    "int64)", key, n->str, suggest);
	else
		cfg_err(c, n, "unknown %s '%s' (use bfloat16, float16, "
		    "float32 or int64)", key, n->str);
}

/*
 * A config written for another of mergekit's tools (mergekit-moe's
 * mixture-of-experts builds) gets one message naming that tool, not an
 * "unknown key" for each of its keys.
 */
static bool
cfg_other_tool(struct cfg_ctx *c, const struct ynode *root)
{
	const struct ynode *n;

	if (root->kind != YNODE_MAP || ((n = ynode_get(root, "gate_mode")) ==
	    NULL && (n = ynode_get(root, "experts")) == NULL))
		return false;
	cfg_err(c, n, "this is a mergekit-moe config ('gate_mode', "
	    "'experts'): it builds a mixture of experts, which mergectl does "
	    "not do; mergectl runs mergekit-yaml configs");
	return true;
}

/* YAML lets two quoted spellings name one token; mergekit's dict would
 * keep the last silently. */
static void
cfg_token_dup(struct cfg_ctx *c, struct graph_tokenizer *tk,
    const struct ynode *key)
{
	size_t i, last = tk->ntokens - 1;

	for (i = 0; i < last; i++)
		if (tk->tokens[i].text != NULL &&
		    strcmp(tk->tokens[i].text, tk->tokens[last].text) == 0) {
			cfg_err(c, key, "token '%.80s' is listed twice under "
			    "'tokens'", tk->tokens[last].text);
			return;
		}
}
/* A tokenizer source: "union", "base", or a model reference. */
static bool
cfg_tok_source(struct cfg_ctx *c, const struct ynode *n,
    struct graph_tokenizer *tk)
{
	tk->mark = n->mark;
	if (n->kind == YNODE_SCALAR && strcmp(n->str, "union") == 0)
		tk->source = GRAPH_TOK_UNION;
	else if (n->kind == YNODE_SCALAR && strcmp(n->str, "base") == 0)
		tk->source = GRAPH_TOK_BASE;
	else if (cfg_ref(c, n, "the tokenizer source", &tk->model))
		tk->source = GRAPH_TOK_MODEL;
	else
		return false;
	return true;
}

/* {kind: model_token, model: M, token_id: N | token: T} or {kind: zero} */
static bool
cfg_token_kind(struct cfg_ctx *c, const struct ynode *n, struct graph_token *t)
{
	static const char *const mkeys[] = { "kind", "model", "token_id",
		"token" };
	static const char *const zkeys[] = { "kind" };
	const struct ynode *k = ynode_get(n, "kind"), *m, *id, *tok;

	if (k == NULL || k->kind != YNODE_SCALAR ||
	    (strcmp(k->str, "model_token") != 0 &&
	    strcmp(k->str, "zero") != 0)) {
		cfg_err(c, k ? k : n, "a token's source is a model, or a "
		    "mapping whose 'kind' is 'model_token' or 'zero'");
		return false;
	}
	if (strcmp(k->str, "zero") == 0) {
		t->kind = GRAPH_TOKEMB_ZERO;
		return cfg_keys(c, n, "a {kind: zero} source", zkeys, 1);
	}
	if (!cfg_keys(c, n, "a {kind: model_token} source", mkeys, 4))
		return false;
	m = ynode_get(n, "model");
	id = ynode_get(n, "token_id");
	tok = ynode_get(n, "token");
	if (m == NULL) {
		cfg_err(c, n, "a {kind: model_token} source needs 'model'");
		return false;
	}
	if ((id == NULL) == (tok == NULL)) {
		cfg_err(c, n, "a {kind: model_token} source needs exactly one "
		    "of 'token_id' and 'token'");
		return false;
	}
	if (!cfg_ref(c, m, "the token's model", &t->model))
		return false;
	t->kind = GRAPH_TOKEMB_MODEL_TOKEN;
	if (id != NULL) {
		t->has_id = true;
		return cfg_int(c, id, &t->token_id);
	}
	if (tok->kind != YNODE_SCALAR || tok->str[0] == '\0') {
		cfg_err(c, tok, "'token' must be a non-empty string");
		return false;
	}
	t->token = xstrdup(tok->str);
	return true;
}

/* One entry of tokens: "TEXT": {source: ..., force: BOOL}. */
static bool
cfg_token(struct cfg_ctx *c, const struct ynode *key, const struct ynode *n,
    struct graph_token *t)
{
	static const char *const keys[] = { "source", "force" };
	const struct ynode *src, *f;

	t->mark = key->mark;
	if (key->kind != YNODE_SCALAR || key->str[0] == '\0') {
		cfg_err(c, key, "a token must be a non-empty string");
		return false;
	}
	t->text = xstrdup(key->str);
	if (ynode_is_null(n))
		return true;
	if (!cfg_keys(c, n, "a token's settings", keys, 2))
		return false;
	if ((f = ynode_get(n, "force")) != NULL &&
	    (f->kind != YNODE_SCALAR || yscalar_bool(f->str, &t->force) != 0)) {
		cfg_err(c, f, "'force' must be true or false");
		return false;
	}
	if ((src = ynode_get(n, "source")) == NULL || ynode_is_null(src))
		return true;
	if (src->kind == YNODE_MAP)
		return cfg_token_kind(c, src, t);
	if (!cfg_ref(c, src, "the token's source", &t->model))
		return false;
	t->kind = GRAPH_TOKEMB_MODEL;
	return true;
}

/* MERGEKIT.md Part B 1.8: tokenizer_source, or the tokenizer: block. */
static void
cfg_tokenizer(struct cfg_ctx *c, const struct ynode *root,
    struct graph_config *cfg)
{
	static const char *const keys[] = { "source", "tokens",
		"pad_to_multiple_of" };
	const struct ynode *ts = ynode_get(root, "tokenizer_source");
	const struct ynode *n = ynode_get(root, "tokenizer"), *v;
	struct graph_tokenizer *tk = &cfg->tokenizer;
	size_t i;

	if (ts != NULL && n != NULL) {
		cfg_err(c, n, "give 'tokenizer_source' or 'tokenizer', not "
		    "both ('tokenizer_source: X' is 'tokenizer: {source: X}')");
		return;
	}
	if (ts != NULL) {
		if (!ynode_is_null(ts))
			(void)cfg_tok_source(c, ts, tk);
		return;
	}
	if (n == NULL || ynode_is_null(n) || !cfg_keys(c, n, "'tokenizer'",
	    keys, 3))
		return;
	tk->mark = n->mark;
	tk->source = GRAPH_TOK_UNION;	/* mergekit's default */
	if ((v = ynode_get(n, "source")) != NULL &&
	    !cfg_tok_source(c, v, tk))
		return;
	if ((v = ynode_get(n, "pad_to_multiple_of")) != NULL &&
	    !ynode_is_null(v) && cfg_int(c, v, &tk->pad_to_multiple_of) &&
	    tk->pad_to_multiple_of == 0)
		cfg_err(c, v, "'pad_to_multiple_of' must be at least 1");
	if ((v = ynode_get(n, "tokens")) == NULL || ynode_is_null(v))
		return;
	if (v->kind != YNODE_MAP) {
		cfg_err(c, v, "'tokens' must be a mapping of tokens to their "
		    "settings, not %s", ynode_kind_name(v));
		return;
	}
	tk->tokens = xcalloc(v->n / 2 + 1, sizeof *tk->tokens);
	for (i = 0; i + 1 < v->n; i += 2)
		if (cfg_token(c, v->kids[i], v->kids[i + 1],
		    &tk->tokens[tk->ntokens++]) && i > 0)
			cfg_token_dup(c, tk, v->kids[i]);
}

/* MERGEKIT.md Part B 1.8: "auto", a built-in name, or a template. */
static void
cfg_chat_template(struct cfg_ctx *c, const struct ynode *n,
    struct graph_config *cfg)
{
	const char *names[8], *guess;
	size_t nn = chat_template_names(names, 8);
	char *s;

	if (!cfg_string(c, n, "'chat_template'", &s))
		return;
	if (!chat_template_valid(s)) {
		guess = graph_suggest(s, names, nn);
		cfg_err(c, n, "'chat_template' is not 'auto', a built-in "
		    "template (alpaca, chatml, exaone, llama3, mistral) or a "
		    "Jinja template (one has at least 20 characters and a "
		    "'{')%s%s%s", guess ? "; did you mean '" : "",
		    guess ? guess : "", guess ? "'?" : "");
		free(s);
		return;
	}
	cfg->chat_template = s;
	cfg->chat_template_mark = n->mark;
}

static void
cfg_top(struct cfg_ctx *c, const struct ynode *root, struct graph_config *cfg)
{
	static const char *const keys[] = { "merge_method", "models",
		"slices", "modules", "base_model", "dtype", "out_dtype",
		"parameters", "architecture", "allow_crimes", "name",
		"chat_template", "tokenizer_source", "tokenizer" };
	const struct ynode *n, *models, *slices, *modules;
	int forms;
	bool b;

	if (cfg_other_tool(c, root))
		return;
	if (!cfg_keys(c, root, "the config", keys,
	    sizeof keys / sizeof *keys) &&
	    root->kind != YNODE_MAP)
		return;
	if ((n = ynode_get(root, "name")) != NULL) {
		cfg->has_name = true;
		cfg->name_mark = n->mark;
	}
	if ((n = ynode_get(root, "merge_method")) == NULL)
		cfg_err(c, NULL, "missing 'merge_method'");
	else if (cfg_string(c, n, "'merge_method'", &cfg->method))
		cfg->method_mark = n->mark;
	if ((n = ynode_get(root, "base_model")) != NULL)
		cfg->has_base = cfg_ref(c, n, "base_model", &cfg->base);
	if ((n = ynode_get(root, "architecture")) != NULL)
		cfg->has_arch = cfg_ref(c, n, "architecture", &cfg->arch);
	if ((n = ynode_get(root, "dtype")) != NULL)
		cfg_dtype(c, n, "dtype", &cfg->dtype);
	if ((n = ynode_get(root, "out_dtype")) != NULL)
		cfg_dtype(c, n, "out_dtype", &cfg->out_dtype);
	if ((n = ynode_get(root, "allow_crimes")) != NULL) {
		if (n->kind != YNODE_SCALAR || yscalar_bool(n->str, &b) != 0)
			cfg_err(c, n, "'allow_crimes' must be true or false");
		else
			cfg->allow_crimes = b;
	}
	if ((n = ynode_get(root, "chat_template")) != NULL)
		cfg_chat_template(c, n, cfg);
	cfg_tokenizer(c, root, cfg);
	cfg_params(c, ynode_get(root, "parameters"), &cfg->params);
	models = ynode_get(root, "models");
	slices = ynode_get(root, "slices");
	modules = ynode_get(root, "modules");
	/* As in mergekit, an empty list counts as absent. */
	forms = (models && !(models->kind == YNODE_SEQ && models->n == 0)) +
	    (slices && !(slices->kind == YNODE_SEQ && slices->n == 0)) +
	    (modules && !(modules->kind == YNODE_MAP && modules->n == 0));
	if (forms != 1) {
		cfg_err(c, NULL, "exactly one of 'models', 'slices' or "
		    "'modules' must be present and non-empty");
		return;
	}
	if (models && !(models->kind == YNODE_SEQ && models->n == 0))
		cfg_list(c, models, "models", cfg_add_module(cfg));
	else if (slices && !(slices->kind == YNODE_SEQ && slices->n == 0))
		cfg_list(c, slices, "slices", cfg_add_module(cfg));
	else
		cfg_modules(c, modules, cfg);
}

/* A config from its document's tree; NULL after problems in c->d. */
static struct graph_config *
cfg_from_root(struct cfg_ctx *c, const struct ynode *root, const char *text,
    size_t len)
{
	struct graph_config *cfg;
	size_t before = c->d->nerrors;

	cfg = xcalloc(1, sizeof *cfg);
	cfg->path = xstrdup(c->file);
	cfg->text = xstrndup(text, len);
	cfg->text_len = len;
	cfg_top(c, root, cfg);
	if (c->d->nerrors != before) {
		graph_config_free(cfg);
		return NULL;
	}
	return cfg;
}

int
graph_config_load_buffer(const char *file, const char *buf, size_t len,
    struct graph_config **out, struct graph_diags *d)
{
	struct cfg_ctx c = { file, d, NULL };
	struct ynode *root = NULL;

	*out = NULL;
	if (memchr(buf, '\0', len) != NULL) {
		graph_diag_add(d, GRAPH_SEV_ERROR, file, "the file contains "
		    "a NUL byte; is it a text file?");
		return -EINVAL;
	}
	if (ynode_parse(file, buf, len, &root, d) != 0)
		return -EINVAL;
	*out = cfg_from_root(&c, root, buf, len);
	ynode_free(root);
	return *out != NULL ? 0 : -EINVAL;
}

/* Appends s as a YAML scalar: plain where that reads back the same. */
static void
cfg_yaml_scalar(struct xbuf *x, const char *s)
{
	const unsigned char *p;
	bool plain = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
	    (*s >= '0' && *s <= '9') || *s == '/' || *s == '.' || *s == '_';

	for (p = (const unsigned char *)s; plain && *p != '\0'; p++)
		plain = strchr("abcdefghijklmnopqrstuvwxyz"
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._+@-", *p) != NULL;
	if (plain) {
		xbuf_add(x, s, strlen(s));
		return;
	}
	xbuf_add(x, "\"", 1);
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			xbuf_printf(x, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			xbuf_printf(x, "\\x%02x", *p);
		else
			xbuf_add(x, (const char *)p, 1);
	}
	xbuf_add(x, "\"", 1);
}

static int
cfg_edit_cmp(const void *a, const void *b)
{
	const struct cfg_edit *x = a, *y = b;

	return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/*
 * The stage's text with its references to other stages rewritten, as
 * mergekit writes a stage's mergekit_config.yml.  base: where the text
 * starts in the buffer the edits count in.  Where a place is not known
 * (an alias, UTF-16), the text is kept and a comment says what the
 * references mean.
 */
static void
cfg_stage_text(struct graph_config *cfg, struct cfg_edits *e, size_t base)
{
	struct xbuf x = { 0 };
	size_t i, at = 0;

	qsort(e->v, e->n, sizeof *e->v, cfg_edit_cmp);
	for (i = 0; i < e->n; i++)
		if (e->v[i].begin == SIZE_MAX || e->v[i].begin < base + at ||
		    e->v[i].end < e->v[i].begin ||
		    e->v[i].end > base + cfg->text_len)
			break;
		else
			at = e->v[i].end - base;
	if (i < e->n) {
		for (i = 0; i < e->n; i++)
			xbuf_printf(&x, "# mergectl: a stage's output is read "
			    "from %s\n", e->v[i].text);
		xbuf_add(&x, cfg->text, cfg->text_len);
	} else {
		for (i = 0, at = 0; i < e->n; i++) {
			xbuf_add(&x, cfg->text + at, e->v[i].begin - base - at);
			cfg_yaml_scalar(&x, e->v[i].text);
			at = e->v[i].end - base;
		}
		xbuf_add(&x, cfg->text + at, cfg->text_len - at);
	}
	free(cfg->text);
	cfg->text_len = x.len;
	cfg->text = xbuf_take(&x);
}

/*
 * One stage of a pipeline (pipeline.c): its document's tree and text,
 * read with the stages' names (names[self] is its own, NULL when it has
 * none), references to them rewritten to dir/name and marked in deps.
 * Its "name" is the stage's, not a key to warn of.
 */
struct graph_config *
config_load_stage(const char *file, const struct ynode *root,
    const char *text, size_t len, size_t base, char *const *names, size_t n,
    size_t self, const char *dir, bool *deps, struct graph_diags *d)
{
	struct cfg_edits edits = { NULL, 0 };
	struct cfg_stages st = { names, n, self, dir, deps, &edits };
	struct cfg_ctx c = { file, d, &st };
	struct graph_config *cfg = cfg_from_root(&c, root, text, len);
	size_t i;

	if (cfg != NULL) {
		cfg->has_name = false;
		if (edits.n > 0)
			cfg_stage_text(cfg, &edits, base);
	}
	for (i = 0; i < edits.n; i++)
		free(edits.v[i].text);
	free(edits.v);
	return cfg;
}


/* Config files are small; anything past this is not a merge config. */
#define CONFIG_MAX_BYTES (4u << 20)

int
graph_config_load_file(const char *path, struct graph_config **out,
    struct graph_diags *d)
{
	char *buf = NULL;
	size_t len;
	int rc;

	*out = NULL;
	if ((rc = graph_read_file(path, CONFIG_MAX_BYTES, &buf,
	    &len)) != 0) {
		graph_diag_add(d, GRAPH_SEV_ERROR, path, "cannot read the "
		    "config: %s", rc == -EFBIG ? "file is over 4 MiB" :
		    rc == -EINVAL ? "not a regular file" : strerror(-rc));
		return rc;
	}
	rc = graph_config_load_buffer(path, buf, len, out, d);
	free(buf);
	return rc;
}

static void
params_free(struct graph_params *ps)
{
	size_t i, j;

	for (i = 0; i < ps->n; i++) {
		free(ps->v[i].name);
		free(ps->v[i].value.v);
		for (j = 0; j < ps->v[i].nconds; j++) {
			free(ps->v[i].conds[j].filter);
			free(ps->v[i].conds[j].value.v);
		}
		free(ps->v[i].conds);
	}
	free(ps->v);
	memset(ps, 0, sizeof *ps);
}

static void
source_free(struct graph_source *s)
{
	graph_ref_fini(&s->model);
	params_free(&s->params);
}

static void
module_free(struct graph_module *mod)
{
	size_t i, j;

	for (i = 0; i < mod->nmodels; i++)
		source_free(&mod->models[i]);
	free(mod->models);
	for (i = 0; i < mod->nslices; i++) {
		for (j = 0; j < mod->slices[i].nsrc; j++)
			source_free(&mod->slices[i].src[j]);
		free(mod->slices[i].src);
		graph_ref_fini(&mod->slices[i].base);
		params_free(&mod->slices[i].params);
	}
	free(mod->slices);
	params_free(&mod->params);
	free(mod->name);
}

static void
tokenizer_free(struct graph_tokenizer *tk)
{
	size_t i;

	graph_ref_fini(&tk->model);
	for (i = 0; i < tk->ntokens; i++) {
		free(tk->tokens[i].text);
		graph_ref_fini(&tk->tokens[i].model);
		free(tk->tokens[i].token);
	}
	free(tk->tokens);
}

void
graph_config_free(struct graph_config *cfg)
{
	size_t i;

	if (cfg == NULL)
		return;
	for (i = 0; i < cfg->nmods; i++)
		module_free(&cfg->mods[i]);
	free(cfg->mods);
	params_free(&cfg->params);
	graph_ref_fini(&cfg->base);
	graph_ref_fini(&cfg->arch);
	free(cfg->method);
	free(cfg->chat_template);
	tokenizer_free(&cfg->tokenizer);
	free(cfg->path);
	free(cfg->text);
	free(cfg);
}

static void
refs_add(const struct graph_ref ***v, size_t *n, const struct graph_ref *r)
{
	size_t i;

	for (i = 0; i < *n; i++)
		if (graph_ref_eq((*v)[i], r))
			return;
	*v = xreallocarray(*v, *n + 1, sizeof **v);
	(*v)[(*n)++] = r;
}

/*
 * The models a config merges, in first-appearance order with the base
 * first (Part A item 4); an "architecture:" must name one of them.
 * Borrowed pointers, in a new array the caller frees.
 */
size_t
graph_config_refs(const struct graph_config *cfg, const struct graph_ref ***out)
{
	const struct graph_ref **v = NULL;
	const struct graph_module *mod;
	size_t n = 0, i, j, k;

	if (cfg->has_base)
		refs_add(&v, &n, &cfg->base);
	for (k = 0; k < cfg->nmods; k++) {
		mod = &cfg->mods[k];
		for (i = 0; i < mod->nmodels; i++)
			refs_add(&v, &n, &mod->models[i].model);
		for (i = 0; i < mod->nslices; i++) {
			for (j = 0; j < mod->slices[i].nsrc; j++)
				refs_add(&v, &n, &mod->slices[i].src[j].model);
			if (mod->slices[i].has_base)
				refs_add(&v, &n, &mod->slices[i].base);
		}
	}
	*out = v;
	return n;
}
