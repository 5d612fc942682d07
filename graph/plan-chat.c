/* SPDX-License-Identifier: MIT */
/*
 * plan-chat.c: the output's chat template (MERGEKIT.md Part B 1.8, 2.9).
 *
 * A config's chat_template is "auto", a built-in name (chat-template.c)
 * or a literal template.  "auto" takes each referenced model's own
 * template, in config order (a chat_template.jinja file, which
 * transformers prefers, else tokenizer_config.json's "chat_template": a
 * string, or the entry named "default" of a list of named templates),
 * with white space stripped, and chooses the one most models have; a tie
 * goes to the first seen, so the choice does not depend on set order as
 * mergekit's does (Part A 4).  When none has one, nothing changes: the
 * donor's tokenizer files are copied as they are.
 *
 * The template is written into the donor's tokenizer_config.json, whose
 * text is read and checked here, before any weight, and kept in the plan;
 * the writer patches it and leaves out the donor's chat_template.jinja and
 * chat_template.json, which would take precedence.  Without tokenizer
 * files to write (--no-copy-tokenizer, or a donor with no tokenizer) a
 * chat_template is a warning, as in mergekit.  Everything else the donor
 * has is copied as before, generation_config.json included (mergekit drops
 * it when it re-saves a tokenizer; nothing here needs to).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "plan-int.h"

/* Tokenizer files are small; the largest real tokenizer_config.json
 * (with added_tokens_decoder) is a few hundred KB. */
#define CHAT_MAX_FILE (16u << 20)

/*
 * s[0, len) without leading and trailing white space, as a new string, or
 * NULL when nothing is left (transformers and mergekit take an empty
 * template for none).  The template goes into a JSON file and plan's
 * output: UTF-8 without NUL, or an error in *why.
 */
static char *
chat_strip(const char *s, size_t len, const char **why)
{
	size_t n;

	*why = NULL;
	if (!jscan_utf8_ok(s, len, why))
		return NULL;
	n = strspn(s, " \t\r\n");
	s += n;
	len -= n;
	while (len > 0 && strchr(" \t\r\n", s[len - 1]) != NULL)
		len--;
	return len > 0 ? xstrndup(s, len) : NULL;
}

/*
 * Model m's own template, stripped, or NULL when it has none.  -1 with a
 * plan error when a file it has cannot be read.
 */
static int
chat_of_model(struct plan_build *b, const struct model *m, char **out)
{
	const cJSON *t, *e, *name, *tmpl;
	const char *file = "chat_template.jinja", *why = NULL;
	cJSON *cfg = NULL;
	char *text = NULL, *cause = NULL;
	size_t len;

	*out = NULL;
	if (model_has(m, file)) {
		if (model_read(m, file, CHAT_MAX_FILE, &text, &len,
		    &cause) != 0)
			goto fail;
		*out = chat_strip(text, len, &why);
		free(text);
		goto check;
	}
	file = "tokenizer_config.json";
	if (!model_has(m, "tokenizer_config.json"))
		return 0;
	if (model_read_json(m, "tokenizer_config.json", CHAT_MAX_FILE, &cfg,
	    NULL, &cause) != 0)
		goto fail;
	t = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
	if (cJSON_IsString(t))
		*out = chat_strip(t->valuestring, strlen(t->valuestring), &why);
	/* A list of named templates: transformers' "default" one. */
	for (e = cJSON_IsArray(t) ? t->child : NULL; e != NULL &&
	    *out == NULL; e = e->next) {
		name = cJSON_GetObjectItemCaseSensitive(e, "name");
		tmpl = cJSON_GetObjectItemCaseSensitive(e, "template");
		if (cJSON_IsString(name) && cJSON_IsString(tmpl) &&
		    strcmp(name->valuestring, "default") == 0)
			*out = chat_strip(tmpl->valuestring,
			    strlen(tmpl->valuestring), &why);
	}
	cJSON_Delete(cfg);
check:
	if (why == NULL)
		return 0;
	cause = xasprintf("%s/%s: its chat template is not UTF-8 text (%s)",
	    m->dir, file, why);
fail:
	graph_diag_add(b->d, GRAPH_SEV_ERROR, m->name, "chat_template: auto: "
	    "%s", cause);
	free(cause);
	return -1;
}

/* "auto": the template most models have, the first seen on a tie. */
static int
chat_auto(struct plan_build *b, char **text, char **from)
{
	struct graph_plan *p = b->p;
	char **t = xcalloc(p->nmodels, sizeof *t);
	size_t i, j, best = 0, best_n = 0, n, have = 0;
	int rc = 0;

	for (i = 0; i < p->nmodels && rc == 0; i++)
		rc = chat_of_model(b, p->models[i].m, &t[i]);
	for (i = 0; i < p->nmodels && rc == 0; i++) {
		if (t[i] == NULL)
			continue;
		have++;
		for (j = 0, n = 0; j < p->nmodels; j++)
			n += t[j] != NULL && strcmp(t[i], t[j]) == 0;
		if (n > best_n) {
			best = i;
			best_n = n;
		}
	}
	if (rc == 0 && best_n > 0) {
		*text = t[best];
		t[best] = NULL;
		*from = xasprintf("auto: %s's (%zu of the %zu models with a "
		    "template have it)", p->models[best].name, best_n, have);
	}
	for (i = 0; i < p->nmodels; i++)
		free(t[i]);
	free(t);
	return rc;
}

void
plan_chat_template(struct plan_build *b)
{
	const struct graph_config *cfg = b->cfg;
	struct graph_plan *p = b->p;
	const struct model *donor = p->models[p->donor].m;
	char *text = NULL, *from = NULL, *cause = NULL;
	cJSON *tok = NULL;
	const char *builtin;

	if (cfg->chat_template == NULL)
		return;
	/* A merged tokenizer is written whatever --copy-tokenizer says,
	 * with its source's tokenizer_config.json (plan-tokenizer.c). */
	if (p->vocab != NULL && p->vocab->tokenizer_config == NULL) {
		graph_diag_at(b->d, GRAPH_SEV_WARNING, cfg->path,
		    cfg->chat_template_mark, "chat_template is ignored: the "
		    "tokenizer's source %s has no tokenizer_config.json",
		    p->models[p->vocab->from].name);
		return;
	}
	if (p->vocab == NULL && (!p->opts.merge.copy_tokenizer || !model_has(donor,
	    "tokenizer_config.json") || !(model_has(donor, "tokenizer.json") ||
	    model_has(donor, "tokenizer.model")))) {
		graph_diag_at(b->d, GRAPH_SEV_WARNING, cfg->path,
		    cfg->chat_template_mark, "chat_template is ignored: %s",
		    !p->opts.merge.copy_tokenizer ? "--no-copy-tokenizer "
		    "writes no tokenizer" : "the donor of the tokenizer has "
		    "none (tokenizer_config.json with tokenizer.json or "
		    "tokenizer.model)");
		return;
	}
	if (strcmp(cfg->chat_template, "auto") == 0) {
		if (chat_auto(b, &text, &from) != 0)
			return;
		if (text == NULL) {
			graph_diag_at(b->d, GRAPH_SEV_WARNING, cfg->path,
			    cfg->chat_template_mark, "chat_template: auto: no "
			    "model has a chat template; the tokenizer files "
			    "are copied as they are");
			return;
		}
	} else if ((builtin = chat_template_builtin(cfg->chat_template)) !=
	    NULL) {
		text = xstrdup(builtin);
		from = xasprintf("%s (built-in)", cfg->chat_template);
	} else {
		text = xstrdup(cfg->chat_template);
		from = xstrdup("the config's own");
	}
	/* Checked now: the writer patches this very text. */
	if (p->vocab == NULL && model_read_json(donor, "tokenizer_config.json", CHAT_MAX_FILE,
	    &tok, &p->tokenizer_config, &cause) != 0) {
		graph_diag_add(b->d, GRAPH_SEV_ERROR, donor->name,
		    "chat_template: %s", cause);
		free(cause);
		free(text);
		free(from);
		return;
	}
	cJSON_Delete(tok);
	p->chat_template = text;
	p->chat_template_from = from;
}
