/* SPDX-License-Identifier: MIT */
/*
 * arch-derive.c: an architecture's modules and tensor layout, read off the
 * tensor names of the model it comes from (docs/models.md).
 *
 * Every distinct layer prefix (the text before the first ".N." of a name:
 * "model.language_model.layers.", "model.vision_tower.vision_model.
 * encoder.layers.") is a module with its own layer count; a decoder-only
 * model has one, called "default".  A loose weight (no ".N.") belongs to
 * the module whose prefix shares the most leading name components with
 * it; one that shares no more with any module than all modules share with
 * each other (a projector, T5's "shared") forms a module of its own named
 * by its first distinct component, except vocabulary matrices (an LM
 * head), which go with the main (text) module.  A layer weight is any
 * suffix seen in some layer: hybrids alternate layer kinds (Part A 17).
 *
 * A module's layer count is config.json's (under the keys its kind uses,
 * nested ones included) and must agree with the tensors, with one
 * exception that mergekit's phi-1 definition needs: a stack that covers
 * more indices than the count says may begin with an embedding-only block
 * (pre weights, and layer 0 is then index 1 when nothing else is there)
 * and end with a block of weights found nowhere else (the head: at_end
 * weights, named by the layer count).  Everything is sorted, so the
 * layout depends only on the model, never on file order.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "graph-int.h"

/* A layer weight while scanning: in how many layers, lowest, highest. */
struct scan_weight {
	const char *suffix;	/* borrowed from the model's names */
	size_t count;
	int64_t lo;
	int64_t hi;
};

/* One layer prefix while scanning. */
struct scan_group {
	char *prefix;
	int64_t maxidx;
	struct strmap seen;	/* suffix -> index into w */
	struct scan_weight *w;
	size_t nw;
	const char *kind;	/* module name its prefix suggests, or NULL */
	size_t module;		/* index into the result's modules */
};

struct scan {
	const struct model *m;
	struct scan_group *g;
	size_t ng;
	struct strmap groups;	/* prefix -> index into g */
	const char **loose;	/* names without a layer index */
	size_t nloose;
};

/* The config.json keys holding a module's layer count, by its name. */
static const char *const keys_default[] = { "num_hidden_layers", "n_layer",
	"n_layers", "num_layers", "text_config.num_hidden_layers", NULL };
static const char *const keys_text[] = { "text_config.num_hidden_layers",
	"text_config.num_layers", "num_hidden_layers", "n_layer", "n_layers",
	"num_layers", NULL };
static const char *const keys_vision[] = { "vision_config.num_hidden_layers",
	"vision_config.depth", "vision_config.num_layers",
	"vision_config.n_layers", NULL };
static const char *const keys_encoder[] = { "encoder_layers", "num_layers",
	"num_hidden_layers", NULL };
static const char *const keys_decoder[] = { "decoder_layers",
	"num_decoder_layers", "num_layers", NULL };

static const char *const *
module_keys(const char *name)
{
	if (strcmp(name, "default") == 0)
		return keys_default;
	if (strcmp(name, "text_decoder") == 0)
		return keys_text;
	if (strcmp(name, "vision_tower") == 0 ||
	    strcmp(name, "vision_model") == 0)
		return keys_vision;
	if (strcmp(name, "encoder") == 0)
		return keys_encoder;
	if (strcmp(name, "decoder") == 0)
		return keys_decoder;
	return NULL;
}

/* What mergekit calls a module with this prefix, when the prefix says. */
static const char *
prefix_kind(const char *prefix)
{
	if (strstr(prefix, "merger") || strstr(prefix, "projector"))
		return "multi_modal_projector";
	if (strstr(prefix, "vision_tower") || strstr(prefix, "visual"))
		return "vision_tower";
	if (strstr(prefix, "vision"))
		return "vision_model";
	if (strstr(prefix, "language_model"))
		return "text_decoder";
	if (strstr(prefix, "encoder"))
		return "encoder";
	if (strstr(prefix, "decoder"))
		return "decoder";
	return NULL;
}

static size_t
components(const char *s, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++)
		n += s[i] == '.';
	return n;
}

/* How many leading dotted components a and b share. */
static size_t
shared_components(const char *a, const char *b)
{
	size_t i, n = 0;

	for (i = 0; a[i] != '\0' && a[i] == b[i]; i++)
		n += a[i] == '.';
	return n;
}

static void
scan_free(struct scan *sc)
{
	size_t i;

	for (i = 0; i < sc->ng; i++) {
		free(sc->g[i].prefix);
		strmap_free(&sc->g[i].seen);
		free(sc->g[i].w);
	}
	free(sc->g);
	strmap_free(&sc->groups);
	free(sc->loose);
}

static void
scan_tensor(struct scan *sc, const char *name)
{
	struct scan_group *g;
	struct scan_weight *w;
	const char *suf;
	size_t plen, k;
	int64_t idx;

	if (!arch_split_layer(name, &plen, &idx, &suf)) {
		sc->loose = xgrowarray(sc->loose, sc->nloose,
		    sizeof *sc->loose);
		sc->loose[sc->nloose++] = name;
		return;
	}
	if (!strmap_get_len(&sc->groups, name, plen, &k)) {
		sc->g = xgrowarray(sc->g, sc->ng, sizeof *sc->g);
		g = &sc->g[sc->ng];
		memset(g, 0, sizeof *g);
		g->prefix = xstrndup(name, plen);
		g->maxidx = -1;
		strmap_put(&sc->groups, g->prefix, sc->ng);
		k = sc->ng++;
	}
	g = &sc->g[k];
	if (idx > g->maxidx)
		g->maxidx = idx;
	if (!strmap_get(&g->seen, suf, &k)) {
		g->w = xgrowarray(g->w, g->nw, sizeof *g->w);
		g->w[g->nw] = (struct scan_weight){ suf, 0, idx, idx };
		strmap_put(&g->seen, suf, g->nw);
		k = g->nw++;
	}
	w = &g->w[k];
	w->count++;
	if (idx < w->lo)
		w->lo = idx;
	if (idx > w->hi)
		w->hi = idx;
}

static int
group_cmp(const void *a, const void *b)
{
	const struct scan_group *x = a, *y = b;

	return strcmp(x->prefix, y->prefix);
}

static int
module_cmp(const void *a, const void *b)
{
	const struct arch_module *x = a, *y = b;

	return strcmp(x->name, y->name);
}

static struct arch_module *
module_add(struct arch *a, const char *name, const char *prefix)
{
	struct arch_module *am;

	a->mod = xgrowarray(a->mod, a->nmod, sizeof *a->mod);
	am = &a->mod[a->nmod++];
	memset(am, 0, sizeof *am);
	am->name = xstrdup(name);
	am->layer_prefix = prefix ? xstrdup(prefix) : NULL;
	return am;
}

/*
 * Module names: "default" for a lone stack; else the kind each prefix
 * suggests, the stack beside a vision tower being the text decoder; a
 * name two stacks would share, or none, is the prefix itself (as
 * mergekit names the modules it infers).
 */
static void
name_groups(struct scan *sc, struct arch *a)
{
	struct scan_group *g;
	bool vision = false, clash;
	char *own;
	size_t i, j;

	for (i = 0; i < sc->ng; i++) {
		sc->g[i].kind = sc->ng == 1 ? "default" :
		    prefix_kind(sc->g[i].prefix);
		vision |= sc->g[i].kind != NULL &&
		    strncmp(sc->g[i].kind, "vision", 6) == 0;
	}
	for (i = 0; i < sc->ng && vision; i++)
		if (sc->g[i].kind == NULL) {
			sc->g[i].kind = "text_decoder";
			break;
		}
	for (i = 0; i < sc->ng; i++) {
		g = &sc->g[i];
		clash = g->kind == NULL;
		for (j = 0; j < sc->ng && !clash; j++)
			clash = j != i && sc->g[j].kind != NULL &&
			    strcmp(sc->g[j].kind, g->kind) == 0;
		if (clash) {
			own = xstrndup(g->prefix, strlen(g->prefix) - 1);
			g->module = a->nmod;
			module_add(a, own, g->prefix);
			free(own);
		} else {
			g->module = a->nmod;
			module_add(a, g->kind, g->prefix);
		}
	}
}

/*
 * The stack's layer count and its edges (see the top of the file), then
 * its layer weights and at_end weights.
 */
static int
module_layers(const struct model *m, struct scan_group *g,
    struct arch_module *am, char **cause)
{
	const char *const *keys = module_keys(am->name);
	struct scan_weight *w;
	int64_t n = -1, covered, last = g->maxidx;
	size_t i;
	bool end = false, zero_busy = false;
	char *name;

	for (i = 0; keys != NULL && keys[i] != NULL; i++)
		if (arch_config_count(m->config, keys[i], &n)) {
			am->layers_key = xstrdup(keys[i]);
			break;
		}
	for (i = 0; i < g->nw; i++)
		zero_busy |= g->w[i].lo == 0 && !(g->w[i].hi == 0 &&
		    arch_name_is_pre(g->w[i].suffix));
	if (n >= 0 && last + 1 > n) {
		for (i = 0; i < g->nw; i++) {
			w = &g->w[i];
			if (w->lo != 0 || w->hi != 0 || last == 0 ||
			    !arch_name_is_pre(w->suffix))
				continue;
			name = xasprintf("%s0%s", g->prefix, w->suffix);
			arch_weight_push(&am->pre, &am->npre, name);
			free(name);
			w->count = 0;	/* not a layer weight */
			am->first = zero_busy ? 0 : 1;
		}
		for (i = 0; i < g->nw; i++)
			end |= last > 0 && g->w[i].count > 0 &&
			    g->w[i].lo == last && last + 1 - am->first > n;
	}
	covered = last + 1 - am->first - (end ? 1 : 0);
	if (n >= 0 && covered != n) {
		*cause = xasprintf("model %s: config.json says %" PRId64
		    " layers (%s) but its tensors cover %" PRId64, m->name, n,
		    am->layers_key, covered);
		return -EINVAL;
	}
	am->num_layers = covered;
	for (i = 0; i < g->nw; i++) {
		w = &g->w[i];
		if (w->count == 0)
			continue;
		if (end && w->hi == last) {
			arch_weight_push(&am->post, &am->npost, w->suffix);
			am->post[am->npost - 1].at_end = true;
			if (--w->count == 0)
				continue;
		}
		arch_weight_push(&am->layer, &am->nlayer, w->suffix);
		am->layer[am->nlayer - 1].uniform =
		    w->count == (size_t)am->num_layers;
	}
	return 0;
}

/* The main module: the text stack, which holds the LM head. */
static size_t
main_module(const struct arch *a)
{
	static const char *const names[] = { "default", "text_decoder",
		"decoder" };
	size_t i, j, best = 0;

	for (j = 0; j < sizeof names / sizeof *names; j++)
		for (i = 0; i < a->nmod; i++)
			if (strcmp(a->mod[i].name, names[j]) == 0)
				return i;
	for (i = 1; i < a->nmod; i++)
		if (a->mod[i].num_layers > a->mod[best].num_layers)
			best = i;
	return best;
}

/* Where a loose weight goes (see the top of the file). */
static struct arch_module *
loose_module(struct scan *sc, struct arch *a, size_t common,
    const char *name)
{
	const char *p;
	struct scan_group *g, *best = NULL;
	size_t i, s, bs = 0, bc = 0, c;
	char *own;

	if (sc->ng <= 1) {
		if (a->nmod == 0)
			module_add(a, "default", NULL);
		return &a->mod[0];
	}
	for (i = 0; i < sc->ng; i++) {
		g = &sc->g[i];
		s = shared_components(name, g->prefix);
		c = components(g->prefix, strlen(g->prefix));
		if (best == NULL || s > bs || (s == bs && c < bc)) {
			best = g;
			bs = s;
			bc = c;
		}
	}
	if (bs > common)
		return &a->mod[best->module];
	if (arch_name_is_embed(name) || arch_tied_name(name) != NULL)
		return &a->mod[main_module(a)];
	/* Its own module, named by its first component past the common
	 * part ("multi_modal_projector", T5's "shared"). */
	for (p = name, i = 0; i < common && (p = strchr(p, '.')) != NULL; i++)
		p++;
	if (p == NULL)
		p = name;
	own = strchr(p, '.') ? xstrndup(p, (size_t)(strchr(p, '.') - p)) :
	    xstrdup(p);
	for (i = 0; i < a->nmod; i++)
		if (strcmp(a->mod[i].name, own) == 0)
			break;
	if (i == a->nmod)
		module_add(a, own, NULL);
	free(own);
	return &a->mod[i];
}

static void
place_loose(struct scan *sc, struct arch *a)
{
	struct arch_module *am;
	size_t i, common = 0, n;

	for (i = 1; i < sc->ng; i++) {
		n = shared_components(sc->g[0].prefix, sc->g[i].prefix);
		common = i == 1 || n < common ? n : common;
	}
	for (i = 0; i < sc->nloose; i++) {
		am = loose_module(sc, a, common, sc->loose[i]);
		if (arch_name_is_pre(sc->loose[i]))
			arch_weight_push(&am->pre, &am->npre, sc->loose[i]);
		else
			arch_weight_push(&am->post, &am->npost, sc->loose[i]);
	}
}

int
arch_derive(const struct model *m, struct arch *a, char **cause)
{
	struct scan sc = { .m = m };
	struct arch_module *am;
	size_t i;
	int rc = 0;

	memset(a, 0, sizeof *a);
	for (i = 0; i < m->ntensors; i++)
		scan_tensor(&sc, m->tensors[i].t->name);
	/* Sorted, so that names and module order never depend on the
	 * order of the files; the map's indices are rebuilt after. */
	if (sc.ng > 0)
		qsort(sc.g, sc.ng, sizeof *sc.g, group_cmp);
	name_groups(&sc, a);
	for (i = 0; i < sc.ng && rc == 0; i++)
		rc = module_layers(m, &sc.g[i], &a->mod[sc.g[i].module],
		    cause);
	if (rc != 0)
		goto fail;
	place_loose(&sc, a);
	for (i = 0; i < a->nmod; i++) {
		am = &a->mod[i];
		arch_weights_sort(am->pre, am->npre);
		arch_weights_sort(am->layer, am->nlayer);
		arch_weights_sort(am->post, am->npost);
	}
	if (a->nmod > 1)
		qsort(a->mod, a->nmod, sizeof *a->mod, module_cmp);
	a->main = main_module(a);
	scan_free(&sc);
	return 0;
fail:
	scan_free(&sc);
	arch_fini(a);
	return rc;
}

static void
weights_free(struct arch_weight *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

void
arch_fini(struct arch *a)
{
	struct arch_module *am;
	size_t i;

	for (i = 0; i < a->nmod; i++) {
		am = &a->mod[i];
		weights_free(am->pre, am->npre);
		weights_free(am->layer, am->nlayer);
		weights_free(am->post, am->npost);
		free(am->name);
		free(am->layer_prefix);
		free(am->layers_key);
	}
	free(a->mod);
	memset(a, 0, sizeof *a);
}
