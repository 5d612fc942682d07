/* SPDX-License-Identifier: MIT */
/*
 * card.c: the README.md model card written with every merge.
 *
 * Same structure as mergekit's card (MERGEKIT.md Part B 2.9): YAML front
 * matter listing the Hub models merged, a title from the output directory's
 * name, the method (linked to its reference), the base, the models merged,
 * and the config verbatim.  It also records the random seed, so that a
 * merge with a random method can be reproduced from its card (Part A item
 * 11).  Pure function of the plan.
 */
#include <sys/stat.h>

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

/* mergekit's heuristic for "this reference is a Hub repository". */
static bool
looks_like_hub(const struct plan_model *pm)
{
	const char *p = pm->m->ref.path;
	const char *slash = strchr(p, '/');
	struct stat st;

	if (p[0] == '/' || p[0] == '~' || p[0] == '.')
		return false;
	if (slash != NULL && strchr(slash + 1, '/') != NULL)
		return false;
	return stat(p, &st) != 0 || strcmp(pm->m->where.root,
	    pm->m->dir) != 0;
}

static void
card_model(struct xbuf *x, const struct plan_model *pm)
{
	if (looks_like_hub(pm))
		xbuf_printf(x, "[%s](https://huggingface.co/%s)",
		    pm->m->ref.path, pm->m->ref.path);
	else
		xbuf_printf(x, "%s", pm->name);
}

/* title: the output directory's name. */
char *
card_build(const struct graph_plan *p, const char *title)
{
	const struct graph_method *m = method_find(p->method_name);
	struct xbuf x = { 0 };
	bool slerp = strcmp(p->method_name, "slerp") == 0, any = false;
	size_t i;

	xbuf_add(&x, "---\n", 4);
	for (i = 0; i < p->nmodels; i++)
		if (looks_like_hub(&p->models[i]))
			xbuf_printf(&x, "%s- %s\n", any ? "" : "base_model:\n",
			    p->models[i].m->ref.path), any = true;
	any = false;
	xbuf_printf(&x, "library_name: transformers\ntags:\n- mergekit\n"
	    "- merge\n---\n");
	xbuf_printf(&x, "# %s\n\nThis is a merge of pre-trained language "
	    "models created with merged, a mergekit-compatible merge daemon "
	    "(configs are [mergekit](https://github.com/arcee-ai/mergekit)'s)."
	    "\n\n## Merge Details\n### Merge Method\n\nThis model was merged "
	    "using the ", title != NULL && title[0] ? title :
	    "Untitled Model (1)");
	if (m != NULL && m->url != NULL)
		xbuf_printf(&x, "[%s](%s)", m->pretty, m->url);
	else
		xbuf_printf(&x, "%s", m != NULL ? m->pretty : p->method_name);
	xbuf_printf(&x, " merge method");
	if (!slerp && p->base != (size_t)-1) {
		xbuf_printf(&x, " using ");
		card_model(&x, &p->models[p->base]);
		xbuf_printf(&x, " as a base");
	}
	xbuf_printf(&x, ".\n\nRandom seed: %" PRIu64 ".\n\n### Models Merged"
	    "\n\nThe following models were included in the merge:\n", p->seed);
	for (i = 0; i < p->nmodels; i++) {
		if (!slerp && i == p->base)
			continue;
		xbuf_printf(&x, "* ");
		card_model(&x, &p->models[i]);
		xbuf_printf(&x, "\n");
		any = true;
	}
	if (!any)
		xbuf_printf(&x, "* (none besides the base)\n");
	xbuf_printf(&x, "\n### Configuration\n\nThe following YAML "
	    "configuration was used to produce this model:\n\n```yaml\n%s%s"
	    "```\n", p->config_text, p->config_text[0] != '\0' &&
	    p->config_text[strlen(p->config_text) - 1] != '\n' ? "\n" : "");
	if (p->card_pipeline != NULL)
		xbuf_printf(&x, "\n%s", p->card_pipeline);
	return xbuf_take(&x);
}
