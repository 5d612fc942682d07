/* SPDX-License-Identifier: MIT */
/*
 * arch.c: the names of an architecture's tensors.
 *
 * Rather than a table per architecture, the layout is read off the model
 * itself (arch-derive.c, DESIGN.md "Architecture choice"): a name with a
 * ".N." component is a layer weight whose template is the text before it
 * (the module's layer prefix, e.g. "model.layers.") and after it (the
 * suffix, e.g. ".self_attn.q_proj.weight"), instantiated here for any
 * layer index: output layer 5 may read donor layer 10.  The few facts
 * names alone cannot tell (which weights are embeddings, which LM heads
 * are tied to which embedding) come from the short tables below.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "graph-int.h"

/* An LM head that transformers ties to an input embedding. */
static const struct {
	const char *head;
	const char *embed;
} tied_names[] = {
	{ "lm_head.weight", "model.embed_tokens.weight" },
	{ "lm_head.weight", "transformer.wte.weight" },
	{ "embed_out.weight", "gpt_neox.embed_in.weight" },
};

/* Vocabulary-indexed matrices: rectified when vocab sizes differ. */
static const char *const embed_parts[] = {
	"embed_tokens", "wte", "embed_in", "word_embeddings", "lm_head",
	"embed_out",
};

/* Of those, the ones that come before the layers. */
static const char *const input_embed_parts[] = {
	"embed_tokens", "wte", "wpe", "embed_in", "word_embeddings",
	"embeddings", "patch_embed",
};

bool
arch_name_is_embed(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof embed_parts / sizeof *embed_parts; i++)
		if (strstr(name, embed_parts[i]) != NULL)
			return true;
	return false;
}

const char *
arch_tied_name(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof tied_names / sizeof *tied_names; i++)
		if (strcmp(name, tied_names[i].head) == 0)
			return tied_names[i].embed;
	return NULL;
}

/* The alternative names tried, in order, when name is absent. */
size_t
arch_tied_names(const char *name, const char **out, size_t max)
{
	size_t i, n = 0;

	for (i = 0; i < sizeof tied_names / sizeof *tied_names && n < max; i++)
		if (strcmp(name, tied_names[i].head) == 0)
			out[n++] = tied_names[i].embed;
	return n;
}

bool
arch_name_is_pre(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof input_embed_parts / sizeof *input_embed_parts;
	    i++)
		if (strstr(name, input_embed_parts[i]) != NULL)
			return true;
	return false;
}

/* Finds the first ".N." in name: prefix length, index, suffix start. */
bool
arch_split_layer(const char *name, size_t *plen, int64_t *idx,
    const char **suf)
{
	const char *p, *q;
	int64_t v;

	for (p = strchr(name, '.'); p != NULL; p = strchr(p + 1, '.')) {
		q = p + 1;
		if (!isdigit((unsigned char)*q))
			continue;
		v = 0;
		while (isdigit((unsigned char)*q) && v < 100000000)
			v = v * 10 + (*q++ - '0');
		if (*q != '.')
			continue;
		*plen = (size_t)(p - name) + 1;
		*idx = v;
		*suf = q;
		return true;
	}
	return false;
}

static int
weight_cmp(const void *a, const void *b)
{
	const struct arch_weight *x = a, *y = b;

	return strcmp(x->name, y->name);
}

void
arch_weights_sort(struct arch_weight *v, size_t n)
{
	/* qsort() must not be given NULL, even for no elements. */
	if (n > 0)
		qsort(v, n, sizeof *v, weight_cmp);
}

void
arch_weight_push(struct arch_weight **v, size_t *n, const char *name)
{
	*v = xgrowarray(*v, *n, sizeof **v);
	memset(&(*v)[*n], 0, sizeof **v);
	(*v)[*n].name = xstrdup(name);
	(*v)[*n].is_embed = arch_name_is_embed(name);
	(*v)[*n].tied = arch_tied_name(name);
	(*n)++;
}

/*
 * Part A 16: the LM heads that the architecture model ties to an input
 * embedding it has (so stores none), one at a time in *i, beginning at 0:
 * the head's name, or NULL when there are no more.  Heads belong to the
 * main module, with the embedding.
 */
const char *
arch_tied_head(const struct arch *a, size_t *i)
{
	const struct arch_module *am = &a->mod[a->main];
	size_t k;
	bool has_embed, has_head;

	for (; *i < sizeof tied_names / sizeof *tied_names; (*i)++) {
		has_embed = has_head = false;
		for (k = 0; k < am->npre; k++)
			has_embed |= strcmp(am->pre[k].name,
			    tied_names[*i].embed) == 0;
		for (k = 0; k < am->npost; k++)
			has_head |= strcmp(am->post[k].name,
			    tied_names[*i].head) == 0;
		if (has_embed && !has_head)
			return tied_names[(*i)++].head;
	}
	return NULL;
}

/* A post-layer weight the architecture model does not store (a head). */
void
arch_add_post(struct arch_module *am, const char *name)
{
	arch_weight_push(&am->post, &am->npost, name);
	arch_weights_sort(am->post, am->npost);
}

/* Layer weight w of output (or input) layer "layer" of module am. */
char *
arch_layer_name(const struct arch_module *am, const struct arch_weight *w,
    int64_t layer)
{
	return xasprintf("%s%" PRId64 "%s", am->layer_prefix,
	    layer + am->first, w->name);
}

/* An at_end weight of a stack of "layers" layers: the block after the
 * last one. */
char *
arch_end_name(const struct arch_module *am, const struct arch_weight *w,
    int64_t layers)
{
	return xasprintf("%s%" PRId64 "%s", am->layer_prefix,
	    layers + am->first, w->name);
}

/* The module called name: as named here, or by its layer prefix
 * (mergekit's name for modules it infers), with or without the dot. */
const struct arch_module *
arch_module_find(const struct arch *a, const char *name)
{
	const struct arch_module *am;
	size_t i, n;

	for (i = 0; i < a->nmod; i++) {
		am = &a->mod[i];
		if (strcmp(am->name, name) == 0)
			return am;
		if (am->layer_prefix == NULL)
			continue;
		n = strlen(am->layer_prefix);
		if (strcmp(am->layer_prefix, name) == 0 ||
		    (strlen(name) == n - 1 &&
		    strncmp(am->layer_prefix, name, n - 1) == 0))
			return am;
	}
	return NULL;
}

const struct arch_module *
arch_module_by_prefix(const struct arch *a, const char *prefix)
{
	size_t i;

	for (i = 0; i < a->nmod; i++)
		if (a->mod[i].layer_prefix != NULL &&
		    strcmp(a->mod[i].layer_prefix, prefix) == 0)
			return &a->mod[i];
	return NULL;
}

/*
 * The whole number at a dotted path of config.json
 * ("text_config.num_hidden_layers"), if there is one: a layer or
 * vocabulary count.
 */
bool
arch_config_count(const cJSON *config, const char *path, int64_t *out)
{
	const cJSON *v = config;
	const char *p = path, *dot;
	char *part;

	while (v != NULL && p != NULL) {
		dot = strchr(p, '.');
		part = dot ? xstrndup(p, (size_t)(dot - p)) : xstrdup(p);
		v = cJSON_IsObject(v) ?
		    cJSON_GetObjectItemCaseSensitive(v, part) : NULL;
		free(part);
		p = dot ? dot + 1 : NULL;
	}
	if (!cJSON_IsNumber(v) || v->valuedouble < 0 ||
	    v->valuedouble >= 1e9 ||
	    v->valuedouble != (double)(int64_t)v->valuedouble)
		return false;
	*out = (int64_t)v->valuedouble;
	return true;
}
