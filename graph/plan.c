/* SPDX-License-Identifier: MIT */
/*
 * plan.c: from a typed config to a complete plan, headers only.
 *
 * The steps follow DESIGN.md's data flow: list the referenced models in
 * config order (base first), open them (config.json and safetensors
 * headers), choose the architecture (explicit "architecture:", else the
 * base, else the first model: Part A item 5), normalise models:/slices: into
 * output slices, plan every output tensor in natural order (plan-tensor.c),
 * and fix the shard layout (plan-layout.c).  Every problem is collected;
 * the plan is returned only when there are none, so a job that cannot
 * succeed is rejected before any weight is read.  Runs on the caller's
 * thread; the finished plan is immutable and may be shared with workers.
 */
#include <sys/random.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "graph-int.h"
#include "plan-int.h"

void
graph_plan_opts_default(struct graph_plan_opts *o)
{
	memset(o, 0, sizeof *o);
	graph_merge_opts_default(&o->merge);
	graph_env_from_process(&o->env);
}

/*
 * The memory the plan is sized for: the runner's budget, narrowed by the
 * merge's own cap; a cap above the budget narrows nothing.
 */
static uint64_t
plan_memory(const struct graph_plan_opts *o)
{
	uint64_t budget = o->budget ? o->budget : graph_default_memory();

	return o->merge.memory && o->merge.memory < budget ? o->merge.memory :
	    budget;
}

/*
 * Whether another thread asked planning to stop (graph_plan_opts.cancel);
 * the first time, that is recorded as the plan's error.
 */
bool
plan_cancelled(struct plan_build *b)
{
	const atomic_bool *c = b->p->opts.cancel;

	if (c == NULL || !atomic_load_explicit(c, memory_order_relaxed))
		return false;
	if (!b->cancelled)
		graph_diag_add(b->d, GRAPH_SEV_ERROR, NULL, "planning was "
		    "cancelled");
	b->cancelled = true;
	return true;
}

/*
 * The plan keeps its own copy of the credentials: the models it opened
 * read more files with them later (the tokenizer, when the job ends), and
 * the plan may outlive whatever the caller built them in.
 */
static void
plan_copy_cred(struct graph_plan *p, const struct graph_cred *c)
{
	if (c == NULL)
		return;
	cred_copy(&p->cred, &p->cred_groups, c);
	p->opts.cred = &p->cred;
}

/* Where ref (or its adapter) is: a planned stage's headers, the
 * client's directory, or local. */
static int
plan_locate(const struct plan_build *b, const struct graph_ref *ref,
    bool adapter, struct graph_resolved *r, char **cause)
{
	const struct graph_plan_opts *o = &b->p->opts;
	size_t i;

	for (i = 0; !adapter && ref->rev == NULL && i < o->nplanned; i++)
		if (strcmp(o->planned[i].ref, ref->path) == 0)
			return graph_source_dir_open(&o->planned[i], r, cause);
	return graph_ref_locate(ref, adapter, o->dirs, o->ndirs, &o->env, r,
	    cause);
}

/* Binds model i's adapter (its reference's "+lora") to it. */
static int
plan_attach_adapter(struct plan_build *b, size_t i)
{
	struct graph_plan *p = b->p;
	const struct graph_ref *ref = b->refs[i];
	struct graph_resolved r;
	char *cause = NULL;
	int rc;

	rc = plan_locate(b, ref, true, &r, &cause);
	if (rc != 0) {
		graph_diag_at(b->d, GRAPH_SEV_ERROR, b->cfg->path, ref->mark,
		    "%s", cause);
		free(cause);
		return rc;
	}
	return lora_attach(p->models[i].m, &r, p->opts.merge.lora_dtype,
	    b->d);
}

static int
plan_open_models(struct plan_build *b)
{
	struct graph_plan *p = b->p;
	struct graph_resolved r;
	char *cause = NULL;
	size_t i;
	int failed = 0, rc;

	p->models = xcalloc(b->nrefs, sizeof *p->models);
	p->nmodels = b->nrefs;
	for (i = 0; i < b->nrefs; i++) {
		p->models[i].name = graph_ref_str(b->refs[i]);
		if (plan_cancelled(b))
			return -ECANCELED;
		rc = plan_locate(b, b->refs[i], false, &r, &cause);
		if (rc == 0)
			rc = model_open(b->refs[i], &r, p->opts.cred,
			    p->opts.cancel, &p->models[i].m, &cause);
		graph_resolved_fini(&r);
		if (rc == 0 && b->refs[i]->lora != NULL &&
		    plan_attach_adapter(b, i) != 0)
			failed = 1;
		if (rc == -ECANCELED) {
			free(cause);
			(void)plan_cancelled(b);
			return rc;
		}
		if (rc != 0) {
			graph_diag_at(b->d, GRAPH_SEV_ERROR, b->cfg->path,
			    b->refs[i]->mark, "%s", cause);
			free(cause);
			cause = NULL;
			failed = 1;
		}
	}
	return failed ? -ENOENT : 0;
}

static size_t
plan_find_ref(const struct plan_build *b, const struct graph_ref *ref)
{
	size_t i;

	for (i = 0; i < b->nrefs; i++)
		if (graph_ref_eq(b->refs[i], ref))
			return i;
	return (size_t)-1;
}

/*
 * Part A 16: where the architecture model ties its LM head to its input
 * embedding (stores none) but some input stores one, the output stores
 * the merged head, each model without one contributing its embedding
 * (plan_find_input's tied names), and config.json is untied (writer.c):
 * mergekit keeps it tied, so transformers overwrites its merged head
 * with the embedding on load.  When no input stores a head, the output
 * has none and stays tied.
 */
static void
plan_untie(struct plan_build *b)
{
	struct graph_plan *p = b->p;
	const char *head;
	size_t i = 0, mi;

	while ((head = arch_tied_head(&p->arch, &i)) != NULL)
		for (mi = 0; mi < p->nmodels; mi++) {
			if (model_find(p->models[mi].m, head) == NULL)
				continue;
			arch_add_post(&p->arch.mod[p->arch.main], head);
			p->untied = true;
			break;
		}
}

/*
 * Part A item 5: an explicit "architecture:" wins, else the base model,
 * else the first model in config order.  Mixing families needs
 * allow_crimes, and the error says which models differ and how.
 */
static int
plan_choose_arch(struct plan_build *b)
{
	struct graph_plan *p = b->p;
	const struct model *am, *m;
	char *cause = NULL;
	size_t i;
	bool mixed = false;

	if (b->cfg->has_arch) {
		p->arch_model = plan_find_ref(b, &b->cfg->arch);
		p->arch_reason = "explicit 'architecture:' in the config";
		if (p->arch_model == (size_t)-1) {
			char *s = graph_ref_str(&b->cfg->arch);
			graph_diag_at(b->d, GRAPH_SEV_ERROR, b->cfg->path,
			    b->cfg->arch.mark, "'architecture: %s' names none of "
			    "the models of this merge", s);
			free(s);
			return -EINVAL;
		}
	} else if (b->cfg->has_base) {
		p->arch_model = 0;
		p->arch_reason = "the base model";
	} else {
		p->arch_model = 0;
		p->arch_reason = "the first model (no base_model)";
	}
	p->base = b->cfg->has_base ? 0 : (size_t)-1;
	p->donor = 0;
	am = p->models[p->arch_model].m;
	for (i = 0; i < p->nmodels; i++) {
		m = p->models[i].m;
		if (m->arch == NULL) {
			graph_diag_add(b->d, GRAPH_SEV_ERROR, m->name,
			    "%s: %s", m->dir, m->arch_problem);
			return -EINVAL;
		}
		if (strcmp(m->arch, am->arch) != 0)
			mixed = true;
	}
	if (mixed && !(b->cfg->allow_crimes || p->opts.merge.allow_crimes)) {
		struct xbuf x = { 0 };
		for (i = 0; i < p->nmodels; i++)
			xbuf_printf(&x, "%s%s is %s", i ? ", " : "",
			    p->models[i].name, p->models[i].m->arch);
		graph_diag_add(b->d, GRAPH_SEV_ERROR, NULL, "the models are of "
		    "different architectures (%s); merging across families "
		    "needs --allow-crimes (or 'allow_crimes: true' in the "
		    "config)", x.data);
		xbuf_free(&x);
		return -EINVAL;
	}
	if (arch_derive(am, &p->arch, &cause) != 0) {
		graph_diag_add(b->d, GRAPH_SEV_ERROR, am->name, "%s", cause);
		free(cause);
		return -EINVAL;
	}
	plan_untie(b);
	return 0;
}

/*
 * A model's layer count in module am of the architecture: its own
 * layout's, found by the module's layer prefix (a model of another family
 * with one stack: that stack's).  A model whose own layout cannot be read
 * falls back to config.json's count, as before modules were known.
 */
int64_t
plan_model_layers(struct graph_plan *p, size_t mi,
    const struct arch_module *am)
{
	struct plan_model *pm = &p->models[mi];
	const struct arch_module *mm;
	char *cause = NULL;

	if (am->layer_prefix == NULL)
		return 0;
	if (!pm->arch_done) {
		pm->arch_done = true;
		pm->arch_ok = arch_derive(pm->m, &pm->arch, &cause) == 0;
		free(cause);
	}
	if (!pm->arch_ok)
		return p->arch.nmod == 1 ? pm->m->num_layers : -1;
	if ((mm = arch_module_by_prefix(&pm->arch, am->layer_prefix)) != NULL)
		return mm->num_layers;
	if (p->arch.nmod == 1 && pm->arch.nmod == 1)
		return pm->arch.mod[0].num_layers;
	return -1;
}

static void
nslice_add_src(struct nslice *s, size_t model, int64_t start, int64_t end,
    const struct graph_params *params, struct graph_mark mark)
{
	s->src = xreallocarray(s->src, s->nsrc + 1, sizeof *s->src);
	s->src[s->nsrc].model = model;
	s->src[s->nsrc].start = start;
	s->src[s->nsrc].end = end;
	s->src[s->nsrc].params = params;
	s->src[s->nsrc].mark = mark;
	s->nsrc++;
}

static struct nslice *
nmodule_add_slice(struct nmodule *nm)
{
	nm->slices = xgrowarray(nm->slices, nm->nslices, sizeof *nm->slices);
	memset(&nm->slices[nm->nslices], 0, sizeof *nm->slices);
	return &nm->slices[nm->nslices++];
}

/* A model's count in a module, with an error when it has no such module. */
static int64_t
plan_src_layers(struct plan_build *b, const struct nmodule *nm, size_t mi,
    struct graph_mark mark)
{
	int64_t n = plan_model_layers(b->p, mi, nm->am);

	if (n < 0)
		graph_diag_at(b->d, GRAPH_SEV_ERROR, b->cfg->path, mark,
		    "model %s has no layers '%s' (module %s of the "
		    "architecture model %s)", b->p->models[mi].name,
		    nm->am->layer_prefix, nm->am->name,
		    b->p->models[b->p->arch_model].name);
	return n;
}

/* MERGEKIT.md Part B 1.7: models: becomes one slice over all layers. */
static void
plan_slices_from_models(struct plan_build *b, struct nmodule *nm,
    const struct graph_module *cm)
{
	const struct graph_config *cfg = b->cfg;
	struct nslice *s;
	int64_t n;
	size_t i, mi;
	bool has_base = false;

	s = nmodule_add_slice(nm);
	s->params = NULL;
	s->mark = cm->models[0].mark;
	s->base = cfg->has_base ? 0 : (size_t)-1;
	for (i = 0; i < cm->nmodels; i++) {
		mi = plan_find_ref(b, &cm->models[i].model);
		has_base |= mi == s->base;
		n = plan_src_layers(b, nm, mi, cm->models[i].mark);
		nslice_add_src(s, mi, 0, n, &cm->models[i].params,
		    cm->models[i].mark);
	}
	if (cfg->has_base && !has_base)
		nslice_add_src(s, 0, 0, plan_src_layers(b, nm, 0,
		    cfg->base.mark), NULL, cfg->base.mark);
	s->len = -1;
	for (i = 0; i < s->nsrc; i++) {
		if (s->src[i].end < 0)
			continue;
		if (s->len < 0)
			s->len = s->src[i].end;
		else if (s->src[i].end != s->len)
			graph_diag_at(b->d, GRAPH_SEV_ERROR, cfg->path,
			    s->src[i].mark, "model %s has %" PRId64 " layers%s%s"
			    " but %s has %" PRId64 "; models: syntax needs equal "
			    "layer counts (use slices: to pick ranges)",
			    b->p->models[s->src[i].model].name, s->src[i].end,
			    b->p->arch.nmod > 1 ? " in module " : "",
			    b->p->arch.nmod > 1 ? nm->am->name : "",
			    b->p->models[s->src[0].model].name, s->len);
	}
}

static void
plan_slices_from_slices(struct plan_build *b, struct nmodule *nm,
    const struct graph_module *cm)
{
	const struct graph_config *cfg = b->cfg;
	const struct graph_slice *cs;
	const struct graph_source *src;
	struct nslice *s;
	int64_t have;
	size_t i, j, k, mi;

	nm->sliced = true;
	for (i = 0; i < cm->nslices; i++) {
		cs = &cm->slices[i];
		s = nmodule_add_slice(nm);
		s->params = &cs->params;
		s->mark = cs->mark;
		s->base = cs->has_base ? plan_find_ref(b, &cs->base) :
		    cfg->has_base ? 0 : (size_t)-1;
		s->len = -1;
		for (j = 0; j < cs->nsrc; j++) {
			src = &cs->src[j];
			mi = plan_find_ref(b, &src->model);
			for (k = 0; k < s->nsrc; k++)
				if (s->src[k].model == mi)
					graph_diag_at(b->d, GRAPH_SEV_ERROR,
					    cfg->path, src->mark, "model %s "
					    "appears twice in this slice's "
					    "sources; mergekit would silently "
					    "keep only the last one",
					    b->p->models[mi].name);
			have = plan_src_layers(b, nm, mi, src->mark);
			if (have >= 0 && src->end > have)
				graph_diag_at(b->d, GRAPH_SEV_ERROR, cfg->path,
				    src->mark, "layer_range [%" PRId64 ", %"
				    PRId64 "] is out of bounds: model %s has %"
				    PRId64 " layers (0 to %" PRId64 ")",
				    src->start, src->end, b->p->models[mi].name,
				    have, have - 1);
			if (s->len >= 0 && src->end - src->start != s->len)
				graph_diag_at(b->d, GRAPH_SEV_ERROR, cfg->path,
				    src->mark, "all sources of a slice must "
				    "have the same number of layers: this one "
				    "has %" PRId64 ", the first has %" PRId64,
				    src->end - src->start, s->len);
			if (s->len < 0)
				s->len = src->end - src->start;
			nslice_add_src(s, mi, src->start, src->end,
			    &src->params, src->mark);
		}
	}
}

/*
 * A module that a modules: config does not name is the architecture
 * model's, unchanged (mergekit leaves it out, which loses, say, the
 * vision tower of a model whose text decoder was merged).
 */
static void
plan_slices_copied(struct plan_build *b, struct nmodule *nm)
{
	struct nslice *s = nmodule_add_slice(nm);
	size_t am = b->p->arch_model;

	s->copy = true;
	s->base = (size_t)-1;
	s->mark = b->cfg->mods[0].mark;
	s->len = plan_model_layers(b->p, am, nm->am);
	nslice_add_src(s, am, 0, s->len, NULL, s->mark);
}

/* The module names of the architecture, for messages. */
static char *
plan_module_names(const struct arch *a)
{
	struct xbuf x = { 0 };
	size_t i;

	for (i = 0; i < a->nmod; i++)
		xbuf_printf(&x, "%s%s", i ? ", " : "", a->mod[i].name);
	return xbuf_take(&x);
}

/* What slices: would be as modules:, for the error that asks for it. */
static void
plan_slices_need_modules(struct plan_build *b)
{
	const struct arch *a = &b->p->arch;
	char *names = plan_module_names(a);

	graph_diag_at(b->d, GRAPH_SEV_ERROR, b->cfg->path, b->cfg->mods[0].mark,
	    "model %s has %zu modules (%s); top-level slices: cannot say "
	    "which one they slice: put them under the module's name, as in "
	    "'modules: {%s: {slices: [...]}}' (modules not named there are "
	    "copied from %s)", b->p->models[b->p->arch_model].name, a->nmod,
	    names, a->mod[a->main].name,
	    b->p->models[b->p->arch_model].name);
	free(names);
}

/*
 * MERGEKIT.md Part B 1.7: the config's models:, slices: or modules:
 * become each module's slices, in the architecture's module order.
 */
static void
plan_normalise(struct plan_build *b)
{
	const struct graph_config *cfg = b->cfg;
	const struct arch *a = &b->p->arch;
	const struct graph_module *cm;
	const struct arch_module *am;
	struct nmodule *nm;
	size_t i, k;
	char *names;

	b->nmods = a->nmod;
	b->mods = xcalloc(a->nmod, sizeof *b->mods);
	for (i = 0; i < a->nmod; i++)
		b->mods[i].am = &a->mod[i];
	if (!cfg->modules) {
		cm = &cfg->mods[0];
		if (cm->form == GRAPH_FORM_SLICES && a->nmod > 1) {
			plan_slices_need_modules(b);
			return;
		}
		for (i = 0; i < b->nmods; i++) {
			if (cm->form == GRAPH_FORM_MODELS)
				plan_slices_from_models(b, &b->mods[i], cm);
			else
				plan_slices_from_slices(b, &b->mods[i], cm);
		}
		return;
	}
	for (k = 0; k < cfg->nmods; k++) {
		cm = &cfg->mods[k];
		if ((am = arch_module_find(a, cm->name)) == NULL) {
			names = plan_module_names(a);
			graph_diag_at(b->d, GRAPH_SEV_ERROR, cfg->path,
			    cm->mark, "model %s has no module '%s'; its "
			    "modules are: %s",
			    b->p->models[b->p->arch_model].name, cm->name,
			    names);
			free(names);
			continue;
		}
		nm = &b->mods[am - a->mod];
		if (nm->nslices > 0) {
			graph_diag_at(b->d, GRAPH_SEV_ERROR, cfg->path,
			    cm->mark, "module '%s' is given twice (as '%s')",
			    am->name, cm->name);
			continue;
		}
		nm->params = &cm->params;
		if (cm->form == GRAPH_FORM_MODELS)
			plan_slices_from_models(b, nm, cm);
		else
			plan_slices_from_slices(b, nm, cm);
	}
	for (i = 0; i < b->nmods; i++)
		if (b->mods[i].nslices == 0)
			plan_slices_copied(b, &b->mods[i]);
}

/*
 * What mergekit-yaml accepts and ignores, and so do we, saying so (Part A
 * 2): a warning, or under --strict an error.
 */
static void plan_ignored(struct plan_build *b, struct graph_mark mark,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
plan_ignored(struct plan_build *b, struct graph_mark mark, const char *fmt,
    ...)
{
	bool strict = b->p->opts.merge.strict;
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	msg = xvasprintf(fmt, ap);
	va_end(ap);
	graph_diag_at(b->d, strict ? GRAPH_SEV_ERROR : GRAPH_SEV_WARNING,
	    b->cfg->path, mark, "%s%s", msg, strict ? " (an error under "
	    "--strict)" : "; --strict makes this an error");
	free(msg);
}

/*
 * The merge methods, besides this one, that have a parameter called name
 * (per model when per_model), as "a, b, c"; NULL when none has.
 */
static char *
param_users(const struct graph_method *self, const char *name,
    bool per_model)
{
	const char *names[GRAPH_MAX_METHODS];
	const struct graph_method *m;
	struct xbuf x = { 0 };
	size_t n, i, k = 0;
	int idx;

	n = method_names(names, GRAPH_MAX_METHODS);
	for (i = 0; i < n; i++) {
		m = method_find(names[i]);
		if (m == self || (idx = method_param_index(m, name)) < 0 ||
		    (per_model && !m->params[idx].per_model))
			continue;
		if (k++ < 4)
			xbuf_printf(&x, "%s%s", k > 1 ? ", " : "", m->name);
	}
	if (k == 0)
		return NULL;
	if (k > 4)
		xbuf_printf(&x, " and %zu more", k - 4);
	return xbuf_take(&x);
}

/*
 * Parameter names must belong to the method: a typo must not silently
 * produce a different model (Part A item 2), so a name that no method
 * knows is an error with the nearest one.  But a name that some method
 * knows, or one mergekit has known (embed_slerp), is what published
 * configs carry from one recipe to the next and mergekit ignores: a
 * warning that says so.  Global parameters are only read at slice,
 * module and top level (Part B 1.6): one written per model is ignored
 * too, with a warning.
 */
static void
plan_check_param_names(struct plan_build *b, const struct graph_params *ps,
    bool model_level)
{
	const struct graph_method *m = b->method;
	const char *names[32], *guess;
	char *users;
	size_t i, k;
	int idx;

	if (ps == NULL)
		return;
	for (k = 0; k < m->nparams && k < 32; k++)
		names[k] = m->params[k].name;
	for (i = 0; i < ps->n; i++) {
		idx = method_param_index(m, ps->v[i].name);
		if (idx >= 0 && (!model_level || m->params[idx].per_model))
			continue;
		if (idx >= 0) {
			plan_ignored(b, ps->v[i].mark, "'%s' is a global "
			    "parameter of %s, read from the slice's or the "
			    "top-level parameters: per model, mergekit ignores "
			    "it, and so does mergectl", ps->v[i].name, m->name);
			continue;
		}
		if (strcmp(ps->v[i].name, "embed_slerp") == 0) {
			plan_ignored(b, ps->v[i].mark, "'embed_slerp' is a "
			    "parameter of no merge method: mergekit ignores "
			    "it, and so does mergectl");
			continue;
		}
		users = param_users(m, ps->v[i].name, false);
		if (users != NULL) {
			plan_ignored(b, ps->v[i].mark, "'%s' is not a "
			    "parameter of %s (it is one of %s): mergekit "
			    "ignores it here, and so does mergectl",
			    ps->v[i].name, m->name, users);
			free(users);
			continue;
		}
		guess = graph_suggest(ps->v[i].name, names, k);
		graph_diag_at(b->d, GRAPH_SEV_ERROR, b->cfg->path,
		    ps->v[i].mark, "'%s' is not a parameter of merge method "
		    "%s%s%s%s", ps->v[i].name, m->name,
		    guess ? "; did you mean '" : "", guess ? guess : "",
		    guess ? "'?" : "");
	}
}

static void
plan_check_params(struct plan_build *b)
{
	const struct graph_config *cfg = b->cfg;
	const struct graph_module *m;
	size_t i, j, k;

	if (cfg->has_name)
		plan_ignored(b, cfg->name_mark, "'name' names a stage of a "
		    "mergekit-multi file: mergekit-yaml ignores it, and so "
		    "does mergectl");
	plan_check_param_names(b, &cfg->params, false);
	for (k = 0; k < cfg->nmods; k++) {
		m = &cfg->mods[k];
		plan_check_param_names(b, &m->params, false);
		for (i = 0; i < m->nmodels; i++)
			plan_check_param_names(b, &m->models[i].params, true);
		for (i = 0; i < m->nslices; i++) {
			plan_check_param_names(b, &m->slices[i].params, false);
			for (j = 0; j < m->slices[i].nsrc; j++)
				plan_check_param_names(b,
				    &m->slices[i].src[j].params, true);
		}
	}
}

static int
plan_method(struct plan_build *b)
{
	const char *names[GRAPH_MAX_METHODS], *guess;
	size_t n;

	if ((b->method = method_find(b->cfg->method)) != NULL)
		return 0;
	n = method_names(names, GRAPH_MAX_METHODS);
	guess = graph_suggest(b->cfg->method, names, n);
	graph_diag_at(b->d, GRAPH_SEV_ERROR, b->cfg->path, b->cfg->method_mark,
	    "unknown merge method '%s'%s%s%s", b->cfg->method,
	    guess ? "; did you mean '" : "", guess ? guess : "",
	    guess ? "'?" : "");
	return -EINVAL;
}

uint64_t
graph_draw_seed(void)
{
	uint64_t s;

	if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s)
		s = (uint64_t)time(NULL) * 6364136223846793005ull;
	return s & 0xffffffffffffull;	/* short enough to type */
}

/*
 * An input embedding that rectification cut to fewer rows than the
 * donor's no longer matches config.json's vocabulary size (top level or
 * text_config's): the writer patches it, else transformers would refuse
 * to load the output.
 */
static void
plan_vocab(struct plan_build *b)
{
	static const char *const keys[] = { "vocab_size",
		"text_config.vocab_size" };
	struct graph_plan *p = b->p;
	const struct arch_module *am = &p->arch.mod[p->arch.main];
	const struct model_tensor *mt;
	const struct model *donor = p->models[p->donor].m;
	const struct plan_tensor *t = NULL;
	int64_t have;
	size_t i, k;

	for (k = 0; k < am->npre && t == NULL; k++) {
		if (!am->pre[k].is_embed)
			continue;
		for (i = 0; i < p->ntensors && t == NULL; i++)
			if (strcmp(p->tensors[i].name, am->pre[k].name) == 0)
				t = &p->tensors[i];
	}
	if (t == NULL || t->ndim != 2 || (p->vocab == NULL &&
	    ((mt = model_find(donor, t->name)) == NULL ||
	    mt->t->shape[0] == t->shape[0])))
		return;
	for (k = 0; k < sizeof keys / sizeof *keys; k++)
		if (arch_config_count(donor->config, keys[k], &have) &&
		    have != t->shape[0]) {
			p->vocab_key = keys[k];
			p->out_vocab = t->shape[0];
			return;
		}
}

/* From the method to the shard layout, stopping at the first step that
 * found problems (each step reports all of its own). */
static void
plan_steps(struct plan_build *b)
{
	struct graph_diags *d = b->d;
	size_t before = d->nerrors;

	plan_method(b);
	if (b->method != NULL)
		plan_check_params(b);
	if (b->p->opts.config_only)
		return;
	if (plan_open_models(b) != 0 || plan_choose_arch(b) != 0 ||
	    b->method == NULL)
		return;
	plan_normalise(b);
	if (d->nerrors != before)
		return;
	plan_tokenizer(b);
	if (d->nerrors != before)
		return;
	plan_tensors(b);
	if (d->nerrors == before)
		lora_plan_precision(b->p);
	if (d->nerrors == before)
		plan_vocab(b);
	if (d->nerrors == before)
		plan_chat_template(b);
	if (d->nerrors == before)
		plan_coverage(b);
	if (d->nerrors == before)
		plan_layout(b->p, b->cfg->path, d);
}

int
graph_plan_build(const struct graph_config *cfg,
    const struct graph_plan_opts *opts, struct graph_plan **out,
    struct graph_diags *d)
{
	struct cred_saved saved;
	struct plan_build b;
	struct graph_plan *p;
	char *cause = NULL;
	size_t i, j, before = d->nerrors;

	*out = NULL;
	memset(&b, 0, sizeof b);
	p = xcalloc(1, sizeof *p);
	p->opts = *opts;
	p->memory = plan_memory(opts);
	plan_copy_cred(p, opts->cred);
	p->config_text = xstrndup(cfg->text, cfg->text_len);
	p->card_pipeline = opts->card_pipeline != NULL ?
	    xstrdup(opts->card_pipeline) : NULL;
	p->opts.card_pipeline = NULL;
	p->method_name = xstrdup(cfg->method);
	p->seed = opts->merge.has_seed ? opts->merge.seed : graph_draw_seed();
	p->base = (size_t)-1;
	p->cfg_dtype = cfg->out_dtype ? cfg->out_dtype : cfg->dtype;
	b.cfg = cfg;
	b.d = d;
	b.p = p;
	b.nrefs = graph_config_refs(cfg, &b.refs);
	if (b.nrefs == 0) {
		/* The loader refuses such configs; a last guard all the
		 * same, as a merge of nothing cannot be planned. */
		graph_diag_add(d, GRAPH_SEV_ERROR, cfg->path, "the config "
		    "names no models");
		goto out;
	}
	/* Every file the plan opens, it opens with the user's rights. */
	if (cred_enter(opts->cred, &saved, &cause) != 0) {
		graph_diag_add(d, GRAPH_SEV_ERROR, cfg->path, "%s", cause);
		free(cause);
		goto out;
	}
	plan_steps(&b);
	cred_leave(&saved);
out:
	for (i = 0; i < b.nmods; i++) {
		for (j = 0; j < b.mods[i].nslices; j++)
			free(b.mods[i].slices[j].src);
		free(b.mods[i].slices);
	}
	free(b.mods);
	free(b.refs);
	if (d->nerrors != before) {
		graph_plan_free(p);
		return b.cancelled ? -ECANCELED : -EINVAL;
	}
	/* Borrowed while building only. */
	p->opts.cancel = NULL;
	p->opts.planned = NULL;
	p->opts.nplanned = 0;
	*out = p;
	return 0;
}

static void
plan_tensor_free(struct plan_tensor *t)
{
	size_t i;

	for (i = 0; i < t->nin; i++)
		free(t->in[i].name);
	free(t->in);
	free(t->name);
	free(t->g);
	free(t->gset);
	free(t->pm);
	free(t->pmset);
	free(t->note);
	plan_vperm_free(t->vperm);
}

void
graph_plan_free(struct graph_plan *p)
{
	size_t i;

	if (p == NULL)
		return;
	for (i = 0; i < p->ntensors; i++)
		plan_tensor_free(&p->tensors[i]);
	free(p->tensors);
	for (i = 0; i < p->nfused; i++)
		graph_plan_free(p->fused[i]);
	free(p->fused);
	for (i = 0; i < p->nshards; i++) {
		free(p->shards[i].name);
		free(p->shards[i].header);
	}
	free(p->shards);
	for (i = 0; i < p->nmodels; i++) {
		model_close(p->models[i].m);
		free(p->models[i].name);
		arch_fini(&p->models[i].arch);
	}
	free(p->models);
	arch_fini(&p->arch);
	free(p->out_layers);
	free(p->mod_copied);
	free(p->chat_template);
	free(p->chat_template_from);
	free(p->tokenizer_config);
	plan_vocab_free(p->vocab, p->nmodels);
	for (i = 0; i < p->nunused; i++) {
		free(p->unused[i].name);
		free(p->unused[i].reason);
	}
	free(p->unused);
	free(p->cred_groups);
	free(p->config_text);
	free(p->card_pipeline);
	free(p->method_name);
	free(p);
}

void
graph_plan_summary(const struct graph_plan *p, struct graph_plan_summary *s)
{
	memset(s, 0, sizeof *s);
	s->arch = p->models[p->arch_model].m->arch;
	s->arch_model = p->models[p->arch_model].name;
	s->arch_reason = p->arch_reason;
	s->tensors = p->ntensors;
	s->shards = p->nshards;
	s->bytes_read = p->total_in;
	s->bytes_written = p->total_out;
	s->peak_memory = p->peak_memory;
	s->seed = p->seed;
	s->kept_base = p->kept_base;
}

/* What p reads: a fused stage's output is never read, its inputs are. */
static void
plan_files_add(const struct graph_plan *p, struct graph_plan_files *out)
{
	size_t i;

	for (i = 0; i < p->nmodels; i++)
		if (p->models[i].m->fused_from == NULL)
			model_list_files(p->models[i].m, out);
	for (i = 0; i < p->nfused; i++)
		plan_files_add(p->fused[i], out);
}

void
graph_plan_files(const struct graph_plan *p, struct graph_plan_files *out)
{
	memset(out, 0, sizeof *out);
	plan_files_add(p, out);
}

void
graph_plan_files_fini(struct graph_plan_files *f)
{
	size_t i;

	for (i = 0; i < f->n; i++)
		free(f->v[i].path);
	free(f->v);
	f->v = NULL;
	f->n = 0;
}
