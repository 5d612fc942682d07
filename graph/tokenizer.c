/* SPDX-License-Identifier: MIT */
/*
 * tokenizer.c: a model's tokenizer, as far as a merge needs it: which
 * token has which id, and which tokens are "added" ones with their flags.
 *
 * A fast tokenizer is tokenizer.json (Hugging Face's tokenizers format):
 * its model's vocabulary (BPE, WordPiece and WordLevel: an object of text
 * to id; Unigram: a list of [text, score] whose index is the id) and its
 * added_tokens list.  A slow SentencePiece tokenizer is tokenizer.model
 * (spm.c) with the added tokens that tokenizer_config.json's
 * added_tokens_decoder lists.  Which text has which id follows
 * transformers' get_vocab(): the model's vocabulary, then the added tokens
 * over it.  The texts are borrowed from the parsed tree or the pieces,
 * which the record owns; the planner keeps it only while it plans.
 *
 * Everything here is read from a user's model directory, so it is checked
 * as hostile input: ids are bounded (TOKZ_MAX_IDS), a text or an id given
 * twice is an error, and every error names the file and the token.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "graph-int.h"

/*
 * The largest tokenizer.json files are tens of MB (Gemma 3's: 33 MB), and
 * their parsed trees several times that: a bound on what a hostile file
 * can make the daemon allocate while it plans.
 */
#define TOKZ_MAX_FILE (64u << 20)

static const char *const kind_names[] = {
	[TOKZ_BPE] = "BPE",
	[TOKZ_UNIGRAM] = "Unigram",
	[TOKZ_WORDPIECE] = "WordPiece",
	[TOKZ_WORDLEVEL] = "WordLevel",
	[TOKZ_SPM] = "SentencePiece",
};

const char *
tokz_kind_name(enum tokz_kind k)
{
	return kind_names[k];
}

/* Room for ids [0, id]; ids past TOKZ_MAX_IDS are an error. */
static int
tokz_reserve(struct tokz *tz, int64_t id, const char *text, char **cause)
{
	int64_t cap;

	if (id < 0 || id >= TOKZ_MAX_IDS) {
		*cause = xasprintf("%s: token '%.80s' has id %" PRId64 ", not "
		    "one of 0 to %u", tz->file, text, id, TOKZ_MAX_IDS - 1);
		return -EINVAL;
	}
	if (id < tz->cap) {
		if (id >= tz->nids)
			tz->nids = id + 1;
		return 0;
	}
	cap = tz->cap ? tz->cap : 1024;
	while (cap <= id)
		cap *= 2;
	tz->tok = xreallocarray(tz->tok, (size_t)cap, sizeof *tz->tok);
	memset(tz->tok + tz->cap, 0, (size_t)(cap - tz->cap) *
	    sizeof *tz->tok);
	tz->cap = cap;
	tz->nids = id + 1;
	return 0;
}

/* A token of the model's own vocabulary. */
static int
tokz_put_model(struct tokz *tz, const char *text, int64_t id, char **cause)
{
	const char *why;
	size_t had;
	int rc;

	if (!jscan_utf8_ok(text, strlen(text), &why) || text[0] == '\0') {
		*cause = xasprintf("%s: token %" PRId64 " is empty or not "
		    "UTF-8", tz->file, id);
		return -EINVAL;
	}
	if ((rc = tokz_reserve(tz, id, text, cause)) != 0)
		return rc;
	if (strmap_get(&tz->ids, text, &had)) {
		*cause = xasprintf("%s: token '%.80s' is in the vocabulary "
		    "twice (ids %zu and %" PRId64 ")", tz->file, text, had,
		    id);
		return -EINVAL;
	}
	if (tz->tok[id].text != NULL) {
		*cause = xasprintf("%s: id %" PRId64 " is given to both "
		    "'%.80s' and '%.80s'", tz->file, id, tz->tok[id].text,
		    text);
		return -EINVAL;
	}
	tz->tok[id].text = text;
	strmap_put(&tz->ids, text, (size_t)id);
	tz->nmodel++;
	return 0;
}

static bool
json_flag(const cJSON *o, const char *key, bool dflt)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

/* An added token over the vocabulary: it takes its id, and its text
 * maps to it. */
static int
tokz_put_added(struct tokz *tz, const cJSON *o, const char *text, int64_t id,
    char **cause)
{
	struct tokz_tok *t;
	const char *why;
	size_t had;
	int rc;

	if (text == NULL || text[0] == '\0' ||
	    !jscan_utf8_ok(text, strlen(text), &why)) {
		*cause = xasprintf("%s: added token %" PRId64 " has no "
		    "content, or content that is not UTF-8", tz->file, id);
		return -EINVAL;
	}
	if ((rc = tokz_reserve(tz, id, text, cause)) != 0)
		return rc;
	t = &tz->tok[id];
	if (t->added) {
		*cause = xasprintf("%s: id %" PRId64 " is given to two added "
		    "tokens, '%.80s' and '%.80s'", tz->file, id, t->text,
		    text);
		return -EINVAL;
	}
	if (strmap_get(&tz->ids, text, &had) && (int64_t)had != id &&
	    tz->tok[had].added) {
		*cause = xasprintf("%s: added token '%.80s' is listed twice "
		    "(ids %zu and %" PRId64 ")", tz->file, text, had, id);
		return -EINVAL;
	}
	/*
	 * As in get_vocab(), which updates the model's dictionary with the
	 * added tokens: a model token whose id this takes keeps its text
	 * mapped to the id; one of this text at another id keeps its id, but
	 * its text now means this one (shadowed).
	 */
	if (strmap_get(&tz->ids, text, &had) && (int64_t)had != id)
		tz->tok[had].shadowed = true;
	if (t->text == NULL)
		tz->nadded_new++;
	t->text = text;
	t->added = true;
	t->special = json_flag(o, "special", false);
	t->single_word = json_flag(o, "single_word", false);
	t->lstrip = json_flag(o, "lstrip", false);
	t->rstrip = json_flag(o, "rstrip", false);
	t->normalized = json_flag(o, "normalized", !t->special);
	strmap_put(&tz->ids, text, (size_t)id);
	return 0;
}

static int
json_id(const cJSON *v, int64_t *id)
{
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) ||
	    v->valuedouble >= (double)TOKZ_MAX_IDS ||
	    v->valuedouble != floor(v->valuedouble))
		return -1;
	*id = (int64_t)v->valuedouble;
	return 0;
}

/* The model's vocabulary: an object (BPE, WordPiece, WordLevel). */
static int
tokz_vocab_object(struct tokz *tz, const cJSON *vocab, char **cause)
{
	const cJSON *e;
	int64_t id;
	int rc;

	cJSON_ArrayForEach(e, vocab) {
		if (json_id(e, &id) != 0) {
			*cause = xasprintf("%s: token '%.80s' has no valid id",
			    tz->file, e->string ? e->string : "");
			return -EINVAL;
		}
		if ((rc = tokz_put_model(tz, e->string, id, cause)) != 0)
			return rc;
	}
	return 0;
}

/* Unigram: [[text, score], ...], the index being the id. */
static int
tokz_vocab_list(struct tokz *tz, const cJSON *vocab, char **cause)
{
	const cJSON *e, *s;
	int64_t id = 0;
	int rc;

	cJSON_ArrayForEach(e, vocab) {
		s = cJSON_GetArrayItem(e, 0);
		if (!cJSON_IsArray(e) || !cJSON_IsString(s) ||
		    !cJSON_IsNumber(cJSON_GetArrayItem(e, 1))) {
			*cause = xasprintf("%s: Unigram vocabulary entry %"
			    PRId64 " is not [text, score]", tz->file, id);
			return -EINVAL;
		}
		if ((rc = tokz_put_model(tz, s->valuestring, id, cause)) != 0)
			return rc;
		id++;
	}
	return 0;
}

/* The model's kind: its "type", or what its fields say (older files). */
static int
tokz_model_kind(struct tokz *tz, const cJSON *model, char **cause)
{
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
	const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
	size_t k;

	if (cJSON_IsString(type)) {
		for (k = 0; k < sizeof kind_names / sizeof *kind_names; k++)
			if (k != TOKZ_SPM &&
			    strcmp(type->valuestring, kind_names[k]) == 0) {
				tz->kind = (enum tokz_kind)k;
				return 0;
			}
		*cause = xasprintf("%s: model type '%.40s' is not BPE, "
		    "Unigram, WordPiece or WordLevel", tz->file,
		    type->valuestring);
		return -EINVAL;
	}
	if (cJSON_IsArray(vocab))
		tz->kind = TOKZ_UNIGRAM;
	else if (cJSON_GetObjectItemCaseSensitive(model, "merges") != NULL)
		tz->kind = TOKZ_BPE;
	else if (cJSON_GetObjectItemCaseSensitive(model,
	    "continuing_subword_prefix") != NULL)
		tz->kind = TOKZ_WORDPIECE;
	else
		tz->kind = TOKZ_WORDLEVEL;
	return 0;
}

static int
tokz_added_list(struct tokz *tz, const cJSON *list, char **cause)
{
	const cJSON *e, *c;
	int64_t id;
	int rc;

	if (list == NULL || cJSON_IsNull(list))
		return 0;
	if (!cJSON_IsArray(list)) {
		*cause = xasprintf("%s: 'added_tokens' is not a list",
		    tz->file);
		return -EINVAL;
	}
	cJSON_ArrayForEach(e, list) {
		c = cJSON_GetObjectItemCaseSensitive(e, "content");
		if (json_id(cJSON_GetObjectItemCaseSensitive(e, "id"),
		    &id) != 0 || !cJSON_IsString(c)) {
			*cause = xasprintf("%s: an added token lacks a valid "
			    "'id' or 'content'", tz->file);
			return -EINVAL;
		}
		if ((rc = tokz_put_added(tz, e, c->valuestring, id,
		    cause)) != 0)
			return rc;
	}
	return 0;
}

static int
tokz_json(struct tokz *tz, char **cause)
{
	const cJSON *model, *vocab, *a, *k;
	int rc;

	tz->json = cJSON_ParseWithLength(tz->text, tz->len);
	if (!cJSON_IsObject(tz->json)) {
		*cause = xasprintf("%s: not a JSON object", tz->file);
		return -EINVAL;
	}
	/* Hugging Face refuses a key given twice; cJSON takes the first. */
	for (a = tz->json->child; a != NULL; a = a->next)
		for (k = a->next; k != NULL; k = k->next)
			if (strcmp(a->string, k->string) == 0) {
				*cause = xasprintf("%s: key '%.40s' appears "
				    "twice", tz->file, a->string);
				return -EINVAL;
			}
	model = cJSON_GetObjectItemCaseSensitive(tz->json, "model");
	vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
	if (!cJSON_IsObject(model) || vocab == NULL) {
		*cause = xasprintf("%s: no 'model' with a 'vocab'", tz->file);
		return -EINVAL;
	}
	if ((rc = tokz_model_kind(tz, model, cause)) != 0)
		return rc;
	if (tz->kind == TOKZ_UNIGRAM ? !cJSON_IsArray(vocab) :
	    !cJSON_IsObject(vocab)) {
		*cause = xasprintf("%s: the %s model's vocab is not %s",
		    tz->file, kind_names[tz->kind], tz->kind == TOKZ_UNIGRAM ?
		    "a list" : "an object");
		return -EINVAL;
	}
	rc = tz->kind == TOKZ_UNIGRAM ? tokz_vocab_list(tz, vocab, cause) :
	    tokz_vocab_object(tz, vocab, cause);
	if (rc != 0)
		return rc;
	return tokz_added_list(tz, cJSON_GetObjectItemCaseSensitive(tz->json,
	    "added_tokens"), cause);
}

/* A slow tokenizer's added tokens: added_tokens_decoder {"ID": {...}}. */
static int
tokz_added_decoder(struct tokz *tz, const cJSON *config, char **cause)
{
	const cJSON *dec, *e, *c;
	char *end;
	long long id;
	int rc;

	dec = cJSON_GetObjectItemCaseSensitive(config, "added_tokens_decoder");
	if (dec == NULL || cJSON_IsNull(dec))
		return 0;
	if (!cJSON_IsObject(dec)) {
		*cause = xasprintf("%s: added_tokens_decoder is not an "
		    "object", tz->config_file);
		return -EINVAL;
	}
	cJSON_ArrayForEach(e, dec) {
		errno = 0;
		id = strtoll(e->string, &end, 10);
		c = cJSON_GetObjectItemCaseSensitive(e, "content");
		if (errno != 0 || end == e->string || *end != '\0' ||
		    id < 0 || id >= TOKZ_MAX_IDS || !cJSON_IsString(c)) {
			*cause = xasprintf("%s: added_tokens_decoder entry "
			    "'%.40s' is not an id with a content",
			    tz->config_file, e->string);
			return -EINVAL;
		}
		if ((rc = tokz_put_added(tz, e, c->valuestring, id,
		    cause)) != 0)
			return rc;
	}
	return 0;
}

static int
tokz_spm(struct tokz *tz, const uint8_t *buf, size_t len, char **cause)
{
	char *why = NULL;
	size_t i;
	int rc;

	if ((rc = spm_parse(buf, len, &tz->pieces, &tz->npieces, &why)) != 0) {
		*cause = xasprintf("%s: %s", tz->file, why);
		free(why);
		return rc;
	}
	tz->kind = TOKZ_SPM;
	for (i = 0; i < tz->npieces; i++)
		if ((rc = tokz_put_model(tz, tz->pieces[i].text, (int64_t)i,
		    cause)) != 0)
			return rc;
	return tokz_added_decoder(tz, tz->config, cause);
}

static int
tokz_done(struct tokz *tz, int rc, struct tokz **out, char **cause)
{
	if (rc == 0 && tz->nmodel == 0) {
		*cause = xasprintf("%s: the vocabulary is empty", tz->file);
		rc = -EINVAL;
	}
	if (rc != 0) {
		/* Token texts come from the file: shown escaped, one line. */
		*cause = graph_text_printable(*cause);
		tokz_free(tz);
		return rc;
	}
	*out = tz;
	return 0;
}

/* A tokenizer.json's text (copied); file names it in messages. */
int
tokz_parse_json(const char *file, const char *text, size_t len,
    struct tokz **out, char **cause)
{
	struct tokz *tz = xcalloc(1, sizeof *tz);

	*out = NULL;
	tz->file = xstrdup(file);
	/* cJSON skips a byte order mark; the writer's patching and Hugging
	 * Face's reader do not. */
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
		*cause = xasprintf("%s: starts with a byte order mark, which "
		    "Hugging Face's tokenizers cannot read; remove it", file);
		return tokz_done(tz, -EINVAL, out, cause);
	}
	tz->text = xmalloc(len + 1);
	memcpy(tz->text, text, len);
	tz->text[len] = '\0';
	tz->len = len;
	return tokz_done(tz, tokz_json(tz, cause), out, cause);
}

/*
 * A tokenizer.model's bytes, with its tokenizer_config.json's text
 * (config_file, config and clen; config may be NULL) for the added
 * tokens.
 */
int
tokz_parse_spm(const char *file, const uint8_t *buf, size_t len,
    const char *config_file, const char *config, size_t clen,
    struct tokz **out, char **cause)
{
	struct tokz *tz = xcalloc(1, sizeof *tz);
	int rc = 0;

	*out = NULL;
	tz->file = xstrdup(file);
	tz->config_file = xstrdup(config_file);
	if (config != NULL) {
		tz->config = cJSON_ParseWithLength(config, clen);
		if (!cJSON_IsObject(tz->config)) {
			*cause = xasprintf("%s: not a JSON object",
			    config_file);
			rc = -EINVAL;
		}
	}
	if (rc == 0)
		rc = tokz_spm(tz, buf, len, cause);
	return tokz_done(tz, rc, out, cause);
}

/*
 * Model m's tokenizer in *out, or NULL when it has none (neither
 * tokenizer.json nor tokenizer.model).  Read with the job's rights.
 */
int
tokz_load(const struct model *m, struct tokz **out, char **cause)
{
	char *file, *config_file, *buf = NULL, *config = NULL;
	size_t len, clen = 0;
	bool json = model_has(m, "tokenizer.json");
	int rc;

	*out = NULL;
	if (!json && !model_has(m, "tokenizer.model"))
		return 0;
	file = xasprintf("%s/%s", m->dir, json ? "tokenizer.json" :
	    "tokenizer.model");
	config_file = xasprintf("%s/tokenizer_config.json", m->dir);
	if ((rc = model_read(m, json ? "tokenizer.json" : "tokenizer.model",
	    TOKZ_MAX_FILE, &buf, &len, cause)) != 0)
		goto out;
	if (json) {
		rc = tokz_parse_json(file, buf, len, out, cause);
		goto out;
	}
	if (model_has(m, "tokenizer_config.json") && (rc = model_read(m,
	    "tokenizer_config.json", TOKZ_MAX_FILE, &config, &clen,
	    cause)) != 0)
		goto out;
	rc = tokz_parse_spm(file, (const uint8_t *)buf, len, config_file,
	    config, clen, out, cause);
out:
	free(file);
	free(config_file);
	free(buf);
	free(config);
	return rc;
}

/*
 * Frees the parsed file and keeps only what a merge needs of a model's
 * tokenizer: its texts, copied into one block, with their ids and flags.
 * The planner keeps one tokenizer whole (the one it writes) and every
 * other one compact, so that planning a merge of many models holds one
 * parsed tree at a time.
 */
void
tokz_compact(struct tokz *tz)
{
	struct strmap_slot *sl;
	size_t i, size = 0, at = 0, v;
	int64_t id;

	for (i = 0; i < tz->ids.cap; i++)
		if (tz->ids.slots[i].key != NULL)
			size += tz->ids.slots[i].len + 1;
	tz->arena = xmalloc(size ? size : 1);
	for (i = 0; i < tz->ids.cap; i++) {
		sl = &tz->ids.slots[i];
		if (sl->key == NULL)
			continue;
		memcpy(tz->arena + at, sl->key, sl->len);
		tz->arena[at + sl->len] = '\0';
		sl->key = tz->arena + at;
		at += sl->len + 1;
	}
	/* Every text at an id is a key of the map (shadowed ones too): the
	 * map's copy is the text's. */
	for (id = 0; id < tz->nids; id++)
		if (tz->tok[id].text != NULL)
			tz->tok[id].text = strmap_key(&tz->ids,
			    tz->tok[id].text, &v);
	cJSON_Delete(tz->json);
	cJSON_Delete(tz->config);
	tz->json = tz->config = NULL;
	free(tz->text);
	tz->text = NULL;
	tz->len = 0;
	spm_free(tz->pieces, tz->npieces);
	tz->pieces = NULL;
	tz->npieces = 0;
}

bool
tokz_id(const struct tokz *tz, const char *text, int64_t *id)
{
	size_t v;

	if (!strmap_get(&tz->ids, text, &v))
		return false;
	*id = (int64_t)v;
	return true;
}

void
tokz_free(struct tokz *tz)
{
	if (tz == NULL)
		return;
	free(tz->file);
	free(tz->config_file);
	cJSON_Delete(tz->json);
	cJSON_Delete(tz->config);
	free(tz->text);
	spm_free(tz->pieces, tz->npieces);
	free(tz->tok);
	strmap_free(&tz->ids);
	free(tz->arena);
	free(tz);
}
