/* SPDX-License-Identifier: MIT */
/*
 * arch.c: an architecture's tensor layout, derived from the tensor names of
 * the model it comes from.
 *
 * Rather than a table per architecture, the layout is read off the model
 * itself (DESIGN.md "Architecture choice"): a name with a ".N." component
 * is a layer weight whose template is the text before it (the layer prefix,
 * e.g. "model.layers.") and after it (the suffix, e.g.
 * ".self_attn.q_proj.weight"); names without one are pre-layer weights
 * (embeddings) or post-layer weights (final norm, LM head).  So any
 * single-stack decoder works, and names are instantiated for any layer
 * index: output layer 5 may read donor layer 10.  The few facts names alone
 * cannot tell (which weights are embeddings, which LM heads are tied to
 * which embedding) come from a short table of known names.  Everything is
 * sorted, so the layout depends only on the model, never on file order.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

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
	"embeddings",
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

static bool
is_pre_weight(const char *name)
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

static void
arch_push(struct arch_weight **v, size_t *n, const char *name)
{
	*v = xgrowarray(*v, *n, sizeof **v);
	memset(&(*v)[*n], 0, sizeof **v);
	(*v)[*n].name = xstrdup(name);
	(*v)[*n].is_embed = arch_name_is_embed(name);
	(*v)[*n].tied = arch_tied_name(name);
	(*n)++;
}

static int
arch_fill(const struct model *m, struct arch *a, size_t **counts,
    int64_t *maxidx, char **cause)
{
	struct strmap seen = { 0 };
	const char *name, *suf;
	size_t i, plen, k;
	int64_t idx;

	for (i = 0; i < m->ntensors; i++) {
		name = m->tensors[i].t->name;
		if (!arch_split_layer(name, &plen, &idx, &suf)) {
			if (is_pre_weight(name))
				arch_push(&a->pre, &a->npre, name);
			else
				arch_push(&a->post, &a->npost, name);
			continue;
		}
		if (a->layer_prefix == NULL) {
			a->layer_prefix = xstrndup(name, plen);
		} else if (strlen(a->layer_prefix) != plen ||
		    strncmp(a->layer_prefix, name, plen) != 0) {
			*cause = xasprintf("model %s has more than one stack "
			    "of layers ('%s' and '%.*s'); only single-stack "
			    "decoder models are supported", m->name,
			    a->layer_prefix, (int)plen, name);
			strmap_free(&seen);
			return -ENOTSUP;
		}
		if (idx > *maxidx)
			*maxidx = idx;
		if (!strmap_get(&seen, suf, &k)) {
			arch_push(&a->layer, &a->nlayer, suf);
			k = a->nlayer - 1;
			strmap_put(&seen, a->layer[k].name, k);
			*counts = xgrowarray(*counts, k, sizeof **counts);
			(*counts)[k] = 0;
		}
		(*counts)[k]++;
	}
	strmap_free(&seen);
	return 0;
}

int
arch_derive(const struct model *m, struct arch *a,
    char **cause)
{
	size_t *counts = NULL, i;
	int64_t maxidx = -1;
	int rc;

	memset(a, 0, sizeof *a);
	if ((rc = arch_fill(m, a, &counts, &maxidx, cause)) != 0)
		goto fail;
	a->num_layers = m->num_layers >= 0 ? m->num_layers : maxidx + 1;
	if (maxidx + 1 != a->num_layers) {
		*cause = xasprintf("model %s: config.json says %" PRId64
		    " layers (%s) but its tensors cover %" PRId64, m->name,
		    a->num_layers, m->layers_key ? m->layers_key : "?",
		    maxidx + 1);
		rc = -EINVAL;
		goto fail;
	}
	for (i = 0; i < a->nlayer; i++)
		a->layer[i].uniform = counts[i] == (size_t)a->num_layers;
	/* qsort() must not be given NULL, even for no elements. */
	if (a->npre > 0)
		qsort(a->pre, a->npre, sizeof *a->pre, weight_cmp);
	if (a->nlayer > 0)
		qsort(a->layer, a->nlayer, sizeof *a->layer, weight_cmp);
	if (a->npost > 0)
		qsort(a->post, a->npost, sizeof *a->post, weight_cmp);
	free(counts);
	return 0;
fail:
	free(counts);
	arch_fini(a);
	return rc;
}

void
arch_fini(struct arch *a)
{
	size_t i;

	for (i = 0; i < a->npre; i++)
		free(a->pre[i].name);
	for (i = 0; i < a->nlayer; i++)
		free(a->layer[i].name);
	for (i = 0; i < a->npost; i++)
		free(a->post[i].name);
	free(a->pre);
	free(a->layer);
	free(a->post);
	free(a->layer_prefix);
	memset(a, 0, sizeof *a);
}

/*
 * Part A 16: the LM heads that the architecture model ties to an input
 * embedding it has (so stores none), one at a time in *i, beginning at 0:
 * the head's name, or NULL when there are no more.
 */
const char *
arch_tied_head(const struct arch *a, size_t *i)
{
	size_t k;
	bool has_embed, has_head;

	for (; *i < sizeof tied_names / sizeof *tied_names; (*i)++) {
		has_embed = has_head = false;
		for (k = 0; k < a->npre; k++)
			has_embed |= strcmp(a->pre[k].name,
			    tied_names[*i].embed) == 0;
		for (k = 0; k < a->npost; k++)
			has_head |= strcmp(a->post[k].name,
			    tied_names[*i].head) == 0;
		if (has_embed && !has_head)
			return tied_names[(*i)++].head;
	}
	return NULL;
}

/* A post-layer weight the architecture model does not store (a head). */
void
arch_add_post(struct arch *a, const char *name)
{
	arch_push(&a->post, &a->npost, name);
	qsort(a->post, a->npost, sizeof *a->post, weight_cmp);
}

char *
arch_layer_name(const struct arch *a, const struct arch_weight *w,
    int64_t layer)
{
	return xasprintf("%s%" PRId64 "%s", a->layer_prefix, layer, w->name);
}
