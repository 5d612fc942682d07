/* SPDX-License-Identifier: MIT */
/*
 * plan-tokenizer.c: the output vocabulary of a tokenizer merge and how
 * each model's tokens map to it (MERGEKIT.md Part B 1.8, 2.8).
 *
 * With tokenizer_source or tokenizer: set, every referenced model's
 * tokenizer is read (tokenizer.c) and the output vocabulary is built, by
 * id: the base's ("base"; tokens past the base config's vocab_size are
 * stripped, which only a BPE tokenizer.json allows), one model's as it is
 * (a model reference), or the union ("union"): the base's, then each
 * other token of each model in config order and by id, normal tokens
 * first and then added ones, appended as added tokens.  Tokens named
 * under tokens: are appended when missing.  Every model then gets a
 * permutation: output id -> its own id, or -1 where it lacks the token
 * (or has it past its vocab_size: mergekit leaves that entry unset and
 * crashes on it later).  mergekit walks models and vocabularies in set
 * and hash order; here everything is in config order and by id (Part A
 * 4), so the ids are the same on every run.
 *
 * Each vocabulary-indexed matrix (plan_tokenizer_tensor) gets a row map
 * (struct plan_vperm) that the reader follows: a model's own row, or the
 * token's default: the row of the one model that has it, else the base's,
 * else the mean of those that have it (in float64), else zeros (where
 * mergekit crashes), or what tokens: configures; padding rows up to
 * pad_to_multiple_of are the mean of the real ones.  Nothing is read
 * here but tokenizer files: every problem is a plan error, with the file
 * and the token.  The parsed tokenizers are freed when the plan is built;
 * what the plan keeps is the permutations and the output's file texts.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "plan-int.h"

/* How many tokens a message lists before it counts the rest. */
#define VOCAB_SHOW 3

static const char *const source_names[] = {
	[GRAPH_TOK_NONE] = "none",
	[GRAPH_TOK_UNION] = "union",
	[GRAPH_TOK_BASE] = "base",
	[GRAPH_TOK_MODEL] = "model",
};

const char *const plan_vdef_names[VDEF_N] = {
	[VDEF_ONE] = "one",
	[VDEF_BASE] = "base",
	[VDEF_MEAN] = "mean",
	[VDEF_ZERO] = "zero",
	[VDEF_CONFIG] = "tokens",
};

const char *
plan_tok_source_name(enum graph_tok_source s)
{
	return source_names[s];
}

/* The state of one tokenizer merge while it is planned. */
struct tokbuild {
	struct plan_build *b;
	struct graph_plan *p;
	struct plan_vocab *v;
	const struct graph_tokenizer *cfg;
	struct tokz **tz;	/* per model; NULL: none (the base's used) */
	int64_t *limit;		/* per model: ids from here on are absent */
	size_t base;		/* the tokenizer base: base model, else first */
	struct tokz_tok *out;	/* output tokens by id */
	int64_t nout;
	int64_t capout;
	struct strmap outids;	/* text -> output id */
	bool stripped;		/* the base lost tokens past its vocab_size */
	int64_t nstripped;
};

static void
tok_error(struct tokbuild *tb, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
tok_error(struct tokbuild *tb, const char *where, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	graph_diag_vadd(tb->b->d, GRAPH_SEV_ERROR, where, fmt, ap);
	va_end(ap);
}

/* The tokenizer model m's ids are looked up in (the base's if none). */
static const struct tokz *
tok_of(const struct tokbuild *tb, size_t m)
{
	return tb->tz[m] != NULL ? tb->tz[m] : tb->tz[tb->base];
}

/* Model m's id for text, if it has the token below its limit. */
static bool
tok_model_id(const struct tokbuild *tb, size_t m, const char *text,
    int64_t *id)
{
	return tokz_id(tok_of(tb, m), text, id) && *id < tb->limit[m];
}

/* config.json's vocabulary size, else the tokenizer's token count. */
static int64_t
tok_vocab_size(const struct tokbuild *tb, size_t m)
{
	static const char *const keys[] = { "vocab_size",
		"text_config.vocab_size" };
	const struct model *md = tb->p->models[m].m;
	int64_t v;
	size_t k;

	for (k = 0; k < sizeof keys / sizeof *keys; k++)
		if (arch_config_count(md->config, keys[k], &v) && v > 0)
			return v;
	return (int64_t)tok_of(tb, m)->ids.n;
}

/*
 * Every model's tokenizer.  All but the one the output is written from
 * are made compact as soon as they are read (tokz_compact), and their
 * ids together are bounded: planning holds one parsed file at a time.
 */
static int
tok_load_all(struct tokbuild *tb)
{
	struct graph_plan *p = tb->p;
	char *cause = NULL;
	size_t m;
	int64_t total = 0;
	int failed = 0;

	tb->tz = xcalloc(p->nmodels, sizeof *tb->tz);
	tb->limit = xcalloc(p->nmodels, sizeof *tb->limit);
	for (m = 0; m < p->nmodels && !failed; m++) {
		if (tokz_load(p->models[m].m, &tb->tz[m], &cause) != 0) {
			tok_error(tb, p->models[m].name, "%s", cause);
			free(cause);
			cause = NULL;
			failed = 1;
		} else if (tb->tz[m] == NULL && (m == tb->base ||
		    m == tb->v->from)) {
			tok_error(tb, p->models[m].name, "a tokenizer merge "
			    "needs the %s's tokenizer (tokenizer.json, or "
			    "tokenizer.model); %s has neither", m == tb->v->from ?
			    "source model" : "base model", p->models[m].m->dir);
			failed = 1;
		} else if (tb->tz[m] == NULL) {
			graph_diag_add(tb->b->d, GRAPH_SEV_WARNING,
			    p->models[m].name, "no tokenizer (tokenizer.json "
			    "or tokenizer.model): taken to have the base "
			    "model's vocabulary, as mergekit does");
		} else if ((total += tb->tz[m]->nids) > TOKZ_MAX_TOTAL_IDS) {
			tok_error(tb, p->models[m].name, "the tokenizers of "
			    "this merge have more than %u token ids together; "
			    "a merge of that many is not planned", (unsigned)
			    TOKZ_MAX_TOTAL_IDS);
			failed = 1;
		} else if (m != tb->v->from) {
			tokz_compact(tb->tz[m]);
		}
	}
	return failed ? -EINVAL : 0;
}

/*
 * Each model's limit: its vocab_size.  The base's tokens past it are
 * stripped from the output (only a BPE tokenizer.json can be rewritten
 * without them, as in mergekit); another model's are taken as absent,
 * with a warning: they have no row to give.
 */
static int
tok_limits(struct tokbuild *tb)
{
	struct graph_plan *p = tb->p;
	const struct tokz *tz;
	int64_t id, past;
	size_t m;
	const char *first;

	for (m = 0; m < p->nmodels; m++) {
		tz = tok_of(tb, m);
		tb->limit[m] = tok_vocab_size(tb, m);
		if (tb->tz[m] == NULL && tb->limit[m] > tb->limit[tb->base])
			tb->limit[m] = tb->limit[tb->base];
		past = 0;
		first = NULL;
		for (id = tb->limit[m]; id < tz->nids; id++)
			if (tz->tok[id].text != NULL && past++ == 0)
				first = tz->tok[id].text;
		if (past == 0 || tb->tz[m] == NULL)
			continue;
		if (m == tb->base && tb->v->source != GRAPH_TOK_MODEL) {
			if (tz->kind != TOKZ_BPE) {
				tok_error(tb, tz->file, "%" PRId64 " tokens "
				    "('%.80s' first) have ids past config.json's "
				    "vocab_size %" PRId64 "; removing them from a "
				    "%s tokenizer is not possible (only BPE "
				    "tokenizer.json files can be stripped, as in "
				    "mergekit)", past, first, tb->limit[m],
				    tokz_kind_name(tz->kind));
				return -EINVAL;
			}
			tb->stripped = true;
			tb->nstripped = past;
			continue;
		}
		graph_diag_add(tb->b->d, GRAPH_SEV_WARNING, tz->file,
		    "%" PRId64 " tokens ('%.80s' first) have ids past "
		    "config.json's vocab_size %" PRId64 ": taken as absent from "
		    "%s (the embedding has no rows for them)", past, first,
		    tb->limit[m], p->models[m].name);
	}
	return 0;
}

/* Appends text to the output vocabulary, at id (-1: the next one). */
static int64_t
tok_out_put(struct tokbuild *tb, const struct tokz_tok *t, int64_t id)
{
	int64_t cap;

	if (id < 0)
		id = tb->nout;
	if (id >= tb->capout) {
		cap = tb->capout ? tb->capout : 1024;
		while (cap <= id)
			cap *= 2;
		tb->out = xreallocarray(tb->out, (size_t)cap, sizeof *tb->out);
		memset(tb->out + tb->capout, 0, (size_t)(cap - tb->capout) *
		    sizeof *tb->out);
		tb->capout = cap;
	}
	tb->out[id] = *t;
	if (id >= tb->nout)
		tb->nout = id + 1;
	/* A shadowed token keeps its row; its text means another id. */
	if (!t->shadowed)
		strmap_put(&tb->outids, t->text, (size_t)id);
	return id;
}

/* A model's tokenizer, below its limit, as the start of the output. */
static void
tok_out_from(struct tokbuild *tb, size_t m, int64_t limit)
{
	const struct tokz *tz = tok_of(tb, m);
	int64_t id;

	for (id = 0; id < tz->nids && id < limit; id++)
		if (tz->tok[id].text != NULL)
			tok_out_put(tb, &tz->tok[id], id);
}

/* An added token as transformers' add_tokens("text") makes it. */
static void
tok_out_add_plain(struct tokbuild *tb, const char *text)
{
	struct tokz_tok t = { .text = text, .added = true,
		.normalized = true };

	tok_out_put(tb, &t, -1);
}

static bool
tok_flags_equal(const struct tokz_tok *a, const struct tokz_tok *b)
{
	return a->special == b->special && a->single_word == b->single_word &&
	    a->lstrip == b->lstrip && a->rstrip == b->rstrip &&
	    a->normalized == b->normalized;
}

/*
 * The added tokens of every model, base first, in config order and by
 * id, each once with the flags of its first definition; a later one with
 * other flags is a warning, as in mergekit.
 */
static size_t
tok_collect_added(struct tokbuild *tb, struct strmap *seen,
    const struct tokz_tok ***out)
{
	const struct tokz_tok **added = NULL, *t;
	const struct tokz *tz;
	size_t m, n = 0, k;
	int64_t id;

	for (m = 0; m < tb->p->nmodels; m++) {
		if ((tz = tb->tz[m]) == NULL)
			continue;
		for (id = 0; id < tz->nids && id < tb->limit[m]; id++) {
			t = &tz->tok[id];
			if (t->text == NULL || !t->added)
				continue;
			if (!strmap_get(seen, t->text, &k)) {
				strmap_put(seen, t->text, n);
				added = xreallocarray(added, n + 1,
				    sizeof *added);
				added[n++] = t;
			} else if (!tok_flags_equal(added[k], t)) {
				graph_diag_add(tb->b->d, GRAPH_SEV_WARNING,
				    tz->file, "added token '%.80s' has other "
				    "settings (special, lstrip, ...) than in an "
				    "earlier model; the first model's are kept",
				    t->text);
			}
		}
	}
	*out = added;
	return n;
}

/*
 * "union", after the base's tokens: every other normal token of every
 * model (base first, config order, by id) as a plain added token, unless
 * some model adds it; then the added tokens, with their flags.
 */
static void
tok_union(struct tokbuild *tb)
{
	const struct tokz_tok **added, *t;
	const struct tokz *tz;
	struct strmap seen = { 0 };
	size_t m, nadded, k;
	int64_t id;

	nadded = tok_collect_added(tb, &seen, &added);
	for (m = 0; m < tb->p->nmodels; m++) {
		/* The base's tokens are all in the output already. */
		if ((tz = tb->tz[m]) == NULL || m == tb->base)
			continue;
		for (id = 0; id < tz->nids && id < tb->limit[m]; id++) {
			t = &tz->tok[id];
			if (t->text != NULL && !t->added &&
			    !strmap_get(&seen, t->text, &k) &&
			    !strmap_get(&tb->outids, t->text, &k))
				tok_out_add_plain(tb, t->text);
		}
	}
	for (k = 0; k < nadded; k++)
		if (!strmap_get(&tb->outids, added[k]->text, &m))
			tok_out_put(tb, added[k], -1);
	free(added);
	strmap_free(&seen);
}

/* The model a tokens: entry names, or -1 with an error. */
static ssize_t
tok_cfg_model(struct tokbuild *tb, const struct graph_token *t)
{
	const struct graph_ref **refs = tb->b->refs;
	size_t i;

	for (i = 0; i < tb->b->nrefs; i++)
		if (graph_ref_eq(refs[i], &t->model))
			return (ssize_t)i;
	graph_diag_at(tb->b->d, GRAPH_SEV_ERROR, tb->b->cfg->path, t->mark,
	    "tokens: '%.80s': its source model is not one of the models "
	    "merged", t->text);
	return -1;
}

/*
 * tokens: entries.  Each is in the output (appended when missing) and its
 * source is resolved to a model and a row of that model's matrix; a
 * source that cannot give one is an error here, before any weight.
 */
static void
tok_config(struct tokbuild *tb)
{
	struct plan_vocab *v = tb->v;
	const struct graph_token *t;
	struct plan_tokcfg *c;
	ssize_t m;
	size_t i, k, id;
	int64_t own;
	bool any;

	v->cfg = xcalloc(tb->cfg->ntokens + 1, sizeof *v->cfg);
	for (i = 0; i < tb->cfg->ntokens; i++) {
		t = &tb->cfg->tokens[i];
		if (!strmap_get(&tb->outids, t->text, &id))
			tok_out_add_plain(tb, t->text);
		(void)strmap_get(&tb->outids, t->text, &id);
		c = &v->cfg[v->ncfg++];
		c->id = (int64_t)id;
		c->kind = t->kind;
		c->force = t->force;
		c->text = t->text;
		switch (t->kind) {
		case GRAPH_TOKEMB_DEFAULT:
			for (any = false, k = 0; k < tb->p->nmodels; k++)
				any |= tok_model_id(tb, k, t->text, &own);
			if (!any)
				graph_diag_at(tb->b->d, GRAPH_SEV_ERROR,
				    tb->b->cfg->path, t->mark, "tokens: "
				    "'%.80s': no model has this token; give it "
				    "a source ({kind: zero} for a row of "
				    "zeros)", t->text);
			break;
		case GRAPH_TOKEMB_ZERO:
			break;
		case GRAPH_TOKEMB_MODEL:
			if ((m = tok_cfg_model(tb, t)) < 0)
				break;
			c->model = (size_t)m;
			if (!tok_model_id(tb, (size_t)m, t->text, &c->row))
				graph_diag_at(tb->b->d, GRAPH_SEV_ERROR,
				    tb->b->cfg->path, t->mark, "tokens: "
				    "'%.80s': %s does not have this token (%s)",
				    t->text, tb->p->models[m].name,
				    tok_of(tb, (size_t)m)->file);
			break;
		case GRAPH_TOKEMB_MODEL_TOKEN:
			if ((m = tok_cfg_model(tb, t)) < 0)
				break;
			c->model = (size_t)m;
			if (t->has_id)
				c->row = t->token_id;
			else if (!tokz_id(tok_of(tb, (size_t)m), t->token,
			    &c->row))
				graph_diag_at(tb->b->d, GRAPH_SEV_ERROR,
				    tb->b->cfg->path, t->mark, "tokens: "
				    "'%.80s': %s has no token '%.80s' (%s)",
				    t->text, tb->p->models[m].name, t->token,
				    tok_of(tb, (size_t)m)->file);
			break;
		}
	}
	v->cfgidx = xcalloc((size_t)tb->nout, sizeof *v->cfgidx);
	for (i = 0; i < v->ncfg; i++)
		v->cfgidx[v->cfg[i].id] = (int32_t)(i + 1);
}

/* Per model: output id -> own id, or -1; and what it lacks. */
static void
tok_perms(struct tokbuild *tb)
{
	struct plan_vocab *v = tb->v;
	const struct tokz *tz;
	size_t m, nm = tb->p->nmodels;
	int64_t r, own, maxr;

	v->perm = xcalloc(nm, sizeof *v->perm);
	v->lacks = xcalloc(nm, sizeof *v->lacks);
	v->maxid = xcalloc(nm, sizeof *v->maxid);
	v->maxtext = xcalloc(nm, sizeof *v->maxtext);
	for (m = 0; m < nm; m++) {
		v->perm[m] = xreallocarray(NULL, (size_t)tb->nout,
		    sizeof **v->perm);
		v->maxid[m] = -1;
		maxr = -1;
		tz = tok_of(tb, m);
		for (r = 0; r < tb->nout; r++) {
			/* The output's texts are borrowed from the tokenizer
			 * they came from: the same pointer at the same id is
			 * the same token, without a lookup. */
			if (r < tz->nids && tb->out[r].text != NULL &&
			    tz->tok[r].text == tb->out[r].text &&
			    r < tb->limit[m])
				own = r;
			else if (tb->out[r].text == NULL ||
			    !tok_model_id(tb, m, tb->out[r].text, &own)) {
				v->perm[m][r] = -1;
				v->lacks[m]++;
				continue;
			}
			v->perm[m][r] = (int32_t)own;
			if (own > v->maxid[m]) {
				v->maxid[m] = own;
				maxr = r;
			}
		}
		if (maxr >= 0)
			v->maxtext[m] = xstrdup(tb->out[maxr].text);
	}
}

static void
json_bool(struct xbuf *x, const char *key, bool v, bool comma)
{
	xbuf_printf(x, "\"%s\": %s%s", key, v ? "true" : "false",
	    comma ? ", " : "");
}

/*
 * Every added token of the output, as tokenizer.json's added_tokens list
 * (decoder false) or as tokenizer_config.json's added_tokens_decoder
 * object, keyed by id, with its flags in the order transformers writes.
 */
static char *
tok_added_text(const struct tokbuild *tb, bool decoder)
{
	struct xbuf x = { 0 };
	const struct tokz_tok *t;
	int64_t id;
	bool first = true;

	xbuf_add(&x, decoder ? "{" : "[", 1);
	for (id = 0; id < tb->nout; id++) {
		t = &tb->out[id];
		if (t->text == NULL || !t->added)
			continue;
		xbuf_printf(&x, decoder ? "%s\n    \"%" PRId64 "\": {\"content\": " :
		    "%s\n    {\"id\": %" PRId64 ", \"content\": ",
		    first ? "" : ",", id);
		graph_json_string(&x, t->text);
		xbuf_add(&x, ", ", 2);
		if (!decoder)
			json_bool(&x, "single_word", t->single_word, true);
		json_bool(&x, "lstrip", t->lstrip, true);
		if (decoder)
			json_bool(&x, "normalized", t->normalized, true);
		json_bool(&x, "rstrip", t->rstrip, true);
		if (decoder)
			json_bool(&x, "single_word", t->single_word, true);
		else
			json_bool(&x, "normalized", t->normalized, true);
		json_bool(&x, "special", t->special, false);
		xbuf_add(&x, "}", 1);
		first = false;
	}
	if (first)
		xbuf_add(&x, decoder ? "}" : "]", 1);
	else
		xbuf_add(&x, decoder ? "\n  }" : "\n  ]", 4);
	return xbuf_take(&x);
}

/* Whether the base keeps text (it is not past its limit). */
static bool
tok_kept(const struct tokbuild *tb, const struct tokz *tz, const char *text)
{
	int64_t id;

	return !(tokz_id(tz, text, &id) && id >= tb->limit[tb->base]);
}

/*
 * Whether a merge ("a b" or ["a", "b"]) stays: both its tokens and the
 * token it makes.  mergekit checks only the two, which leaves merges
 * whose result was stripped, and Hugging Face's BPE refuses to load
 * those (MergeTokenOutOfVocabulary).  -1: not a merge.
 */
static int
tok_merge_kept(const struct tokbuild *tb, const struct tokz *tz,
    const char *prefix, const cJSON *e, bool *keep)
{
	const cJSON *l = cJSON_GetArrayItem(e, 0), *r = cJSON_GetArrayItem(e, 1);
	const char *sp, *right;
	char *left, *made;
	size_t skip;

	if (cJSON_IsString(e)) {
		if ((sp = strchr(e->valuestring, ' ')) == NULL ||
		    strchr(sp + 1, ' ') != NULL)
			return -1;
		left = xstrndup(e->valuestring, (size_t)(sp - e->valuestring));
		right = sp + 1;
	} else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
	    cJSON_IsString(l) && cJSON_IsString(r)) {
		left = xstrdup(l->valuestring);
		right = r->valuestring;
	} else {
		return -1;
	}
	/* The merged token drops the right part's continuing prefix. */
	skip = prefix != NULL && strncmp(right, prefix, strlen(prefix)) == 0 ?
	    strlen(prefix) : 0;
	made = xasprintf("%s%s", left, right + skip);
	*keep = tok_kept(tb, tz, left) && tok_kept(tb, tz, right) &&
	    tok_kept(tb, tz, made);
	free(left);
	free(made);
	return 0;
}

/*
 * The stripped base's model.vocab and model.merges (mergekit's
 * get_stripped_tokenizer): the vocabulary's tokens below the limit, and
 * the merges that stay, in the file's order.
 */
static int
tok_strip_texts(struct tokbuild *tb, const struct tokz *tz, char **vocab,
    char **merges)
{
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(tz->json, "model");
	const cJSON *e;
	struct xbuf x = { 0 };
	const char *prefix;
	char *one;
	bool first = true, keep;

	xbuf_add(&x, "{", 1);
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(model, "vocab")) {
		if (e->valuedouble >= (double)tb->limit[tb->base])
			continue;
		xbuf_add(&x, first ? "\n      " : ",\n      ", first ? 7 : 8);
		graph_json_string(&x, e->string);
		xbuf_printf(&x, ": %" PRId64, (int64_t)e->valuedouble);
		first = false;
	}
	xbuf_add(&x, first ? "}" : "\n    }", first ? 1 : 6);
	*vocab = xbuf_take(&x);
	first = true;
	xbuf_add(&x, "[", 1);
	prefix = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model,
	    "continuing_subword_prefix"));
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(model,
	    "merges")) {
		if (tok_merge_kept(tb, tz, prefix, e, &keep) != 0) {
			tok_error(tb, tz->file, "a merge is neither \"a b\" nor "
			    "[\"a\", \"b\"], so the tokenizer cannot be "
			    "stripped");
			xbuf_free(&x);
			free(*vocab);
			*vocab = NULL;
			return -EINVAL;
		}
		if (!keep)
			continue;
		one = cJSON_PrintUnformatted(e);
		xbuf_printf(&x, "%s\n      %s", first ? "" : ",", one);
		cJSON_free(one);
		first = false;
	}
	xbuf_add(&x, first ? "]" : "\n    ]", first ? 1 : 6);
	*merges = xbuf_take(&x);
	return 0;
}

/*
 * The patched tokenizer.json read back: patching works on the text, so a
 * key spelt with escapes, which cJSON decodes and the patcher does not
 * match, would leave two lists.  Such a file is refused rather than
 * written wrong.
 */
static int
tok_check_json(struct tokbuild *tb, const struct tokz *tz, const char *text)
{
	cJSON *j = cJSON_Parse(text);
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "added_tokens");
	const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(j, "model"), "vocab");
	const cJSON *e;
	int64_t id, added = 0, model = 0;
	bool good;

	for (id = 0; id < tb->nout; id++)
		if (tb->out[id].text != NULL && tb->out[id].added)
			added++;
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(tz->json, "model"), "vocab"))
		model += e->valuedouble < (double)tb->limit[tb->base];
	good = cJSON_IsArray(list) && cJSON_GetArraySize(list) == added &&
	    (!tb->stripped || cJSON_GetArraySize(vocab) == model);
	cJSON_Delete(j);
	if (good)
		return 0;
	tok_error(tb, tz->file, "cannot be rewritten with the output's "
	    "added tokens (are its keys spelt with escapes?); write it out "
	    "again with Hugging Face's tokenizers first");
	return -EINVAL;
}

/*
 * The output's tokenizer.json and tokenizer_config.json texts: from's
 * own, with what changed patched in place (jsonpatch.c keeps the rest
 * byte for byte): the stripped vocabulary and merges, and the added
 * tokens (in tokenizer.json's list, and in the config's
 * added_tokens_decoder when it has one, or when a SentencePiece
 * tokenizer must carry them there).
 */
static int
tok_texts(struct tokbuild *tb)
{
	struct plan_vocab *v = tb->v;
	const struct model *from = tb->p->models[v->from].m;
	const struct tokz *tz = tok_of(tb, v->from);
	const char *keys[3];
	char *vals[3] = { NULL, NULL, NULL }, *cause = NULL, *text = NULL;
	cJSON *config = NULL;
	bool changed = tb->stripped || v->nadded > 0;
	size_t n = 0, k;
	int rc = 0;

	if (model_has(from, "tokenizer_config.json")) {
		if ((rc = model_read_json(from, "tokenizer_config.json",
		    64u << 20, &config, &text, &cause)) != 0) {
			tok_error(tb, tb->p->models[v->from].name, "%s", cause);
			free(cause);
			return rc;
		}
	}
	v->tokenizer_config = text;
	if (!changed)
		goto out;
	/* A SentencePiece tokenizer's added tokens live only in the
	 * config: one is written when the source has none. */
	if (text == NULL && tz->kind == TOKZ_SPM) {
		vals[0] = tok_added_text(tb, true);
		v->tokenizer_config = xasprintf("{\n  \"added_tokens_decoder\": "
		    "%s\n}\n", vals[0]);
		goto out;
	}
	if (tz->kind != TOKZ_SPM) {
		keys[n] = "added_tokens";
		vals[n++] = tok_added_text(tb, false);
		if (tb->stripped) {
			keys[n] = "model.vocab";
			keys[n + 1] = "model.merges";
			if ((rc = tok_strip_texts(tb, tz, &vals[n],
			    &vals[n + 1])) != 0)
				goto out;
			n += 2;
		}
		v->tokenizer_json = jsonpatch_apply(tz->text, tz->len, keys,
		    (const char *const *)vals, n);
		if ((rc = tok_check_json(tb, tz, v->tokenizer_json)) != 0)
			goto out;
	}
	if (text != NULL && (tz->kind == TOKZ_SPM ||
	    cJSON_GetObjectItemCaseSensitive(config, "added_tokens_decoder"))) {
		keys[0] = "added_tokens_decoder";
		free(vals[0]);
		vals[0] = tok_added_text(tb, true);
		v->tokenizer_config = jsonpatch_apply(text, strlen(text), keys,
		    (const char *const *)vals, 1);
		free(text);
	}
out:
	for (k = 0; k < 3; k++)
		free(vals[k]);
	cJSON_Delete(config);
	return rc;
}

/* The model whose tokenizer the output starts from, before any is read. */
static int
tok_from(struct tokbuild *tb)
{
	const struct graph_ref **refs = tb->b->refs;
	size_t i;

	if (tb->cfg->source != GRAPH_TOK_MODEL) {
		tb->v->from = tb->base;
		return 0;
	}
	for (i = 0; i < tb->b->nrefs; i++)
		if (graph_ref_eq(refs[i], &tb->cfg->model)) {
			tb->v->from = i;
			return 0;
		}
	graph_diag_at(tb->b->d, GRAPH_SEV_ERROR, tb->b->cfg->path,
	    tb->cfg->mark, "the tokenizer source must be one of the models "
	    "merged (or 'base' or 'union')");
	return -EINVAL;
}

static void
tokbuild_fini(struct tokbuild *tb)
{
	size_t m;

	for (m = 0; tb->tz != NULL && m < tb->p->nmodels; m++)
		tokz_free(tb->tz[m]);
	free(tb->tz);
	free(tb->limit);
	free(tb->out);
	strmap_free(&tb->outids);
}

/*
 * Builds p->vocab when the config asks for a tokenizer merge.  The
 * tokenizer base is the base model, else the first model: models[0]
 * either way (Part A 4).
 */
void
plan_tokenizer(struct plan_build *b)
{
	struct tokbuild tb;
	struct plan_vocab *v;
	const struct tokz *from;
	size_t before = b->d->nerrors;
	int64_t pad;

	if (b->cfg->tokenizer.source == GRAPH_TOK_NONE)
		return;
	memset(&tb, 0, sizeof tb);
	v = xcalloc(1, sizeof *v);
	v->source = b->cfg->tokenizer.source;
	tb.b = b;
	tb.p = b->p;
	tb.v = v;
	tb.cfg = &b->cfg->tokenizer;
	tb.base = 0;
	b->p->vocab = v;
	if (tok_from(&tb) != 0 || tok_load_all(&tb) != 0 ||
	    tok_limits(&tb) != 0)
		goto out;
	from = tok_of(&tb, v->from);
	if (v->source == GRAPH_TOK_UNION && from->kind == TOKZ_SPM) {
		tok_error(&tb, from->file, "a union of tokenizers is written "
		    "as tokenizer.json, which %s lacks (it has only "
		    "tokenizer.model); save its fast tokenizer first "
		    "(transformers: AutoTokenizer.from_pretrained(DIR)"
		    ".save_pretrained(DIR)), or use tokenizer_source: base",
		    b->p->models[v->from].name);
		goto out;
	}
	tok_out_from(&tb, v->from, v->source == GRAPH_TOK_MODEL ? INT64_MAX :
	    tb.limit[v->from]);
	v->nfrom = tb.nout;
	v->nstripped = tb.nstripped;
	if (v->source == GRAPH_TOK_UNION)
		tok_union(&tb);
	tok_config(&tb);
	v->n = tb.nout;
	v->nadded = v->n - v->nfrom;
	pad = tb.cfg->pad_to_multiple_of;
	v->nrows = pad > 1 && v->n % pad != 0 ? (v->n / pad + 1) * pad : v->n;
	tok_perms(&tb);
	if (b->d->nerrors == before)
		(void)tok_texts(&tb);
	v->from_kind = from->kind;
out:
	tokbuild_fini(&tb);
}

/* Row maps are told apart by the executor's cache by these. */
static atomic_uint_fast64_t vperm_next_id = 1;

static ssize_t
vperm_src_of(const struct plan_vperm *vp, size_t model)
{
	size_t s;

	for (s = 0; s < vp->nsrc; s++)
		if (vp->src[s].model == model)
			return (ssize_t)s;
	return -1;
}

/* The rows token r takes when a model lacks it (or it is forced). */
static enum plan_vdef
vperm_default(struct plan_build *b, struct plan_tensor *pt,
    struct plan_vperm *vp, int64_t r, struct xbuf *refs)
{
	const struct plan_vocab *v = b->p->vocab;
	const struct plan_tokcfg *c = v->cfgidx[r] ?
	    &v->cfg[v->cfgidx[r] - 1] : NULL;
	struct vperm_ref ref;
	ssize_t s;
	/* The tensor's base: the slice's own base_model, as mergekit
	 * gives PermutedEmbeddings. */
	size_t k, have = 0, base = pt->base >= 0 ?
	    pt->in[pt->base].model : (size_t)-1;
	bool base_has = false;

	if (c != NULL && c->kind == GRAPH_TOKEMB_ZERO)
		return VDEF_ZERO;
	if (c != NULL && c->kind != GRAPH_TOKEMB_DEFAULT) {
		if ((s = vperm_src_of(vp, c->model)) < 0) {
			graph_diag_add(b->d, GRAPH_SEV_ERROR, pt->name,
			    "tokens: '%.80s': its source %s is not one of this "
			    "tensor's models", c->text,
			    b->p->models[c->model].name);
			return VDEF_ZERO;
		}
		if (c->row < 0 || c->row >= vp->src[s].mt->t->shape[0]) {
			graph_diag_add(b->d, GRAPH_SEV_ERROR, pt->name,
			    "tokens: '%.80s': token_id %" PRId64 " is out of "
			    "range: %s has %" PRId64 " rows", c->text, c->row,
			    b->p->models[c->model].name,
			    vp->src[s].mt->t->shape[0]);
			return VDEF_ZERO;
		}
		ref.src = (uint32_t)s;
		ref.row = (uint32_t)c->row;
		xbuf_add(refs, &ref, sizeof ref);
		return VDEF_CONFIG;
	}
	for (k = 0; k < vp->nsrc; k++) {
		if (v->perm[vp->src[k].model][r] < 0)
			continue;
		have++;
		base_has |= vp->src[k].model == base;
	}
	for (k = 0; k < vp->nsrc; k++) {
		if (v->perm[vp->src[k].model][r] < 0 ||
		    (have > 1 && base_has && vp->src[k].model != base))
			continue;
		ref.src = (uint32_t)k;
		ref.row = (uint32_t)v->perm[vp->src[k].model][r];
		xbuf_add(refs, &ref, sizeof ref);
	}
	return have == 0 ? VDEF_ZERO : have == 1 ? VDEF_ONE :
	    base_has ? VDEF_BASE : VDEF_MEAN;
}

/* Whether model m's row r is its own (else the default). */
bool
plan_vperm_own(const struct plan_vocab *v, size_t m, int64_t r)
{
	const struct plan_tokcfg *c = v->cfgidx[r] ?
	    &v->cfg[v->cfgidx[r] - 1] : NULL;

	return v->perm[m][r] >= 0 && !(c != NULL && c->force);
}

/*
 * A vocabulary-indexed matrix (input embedding or LM head) of a tokenizer
 * merge: its row map, built while all its inputs are there (before a fold
 * to one input's copy), since a token's default row may come from any of
 * them.  The tensor's shape becomes [rows of the output, hidden size].
 */
bool
plan_tokenizer_tensor(struct plan_build *b, struct plan_tensor *pt)
{
	const struct plan_vocab *v = b->p->vocab;
	const struct safetensors_tensor *t0 = pt->in[0].mt->t, *t;
	struct plan_vperm *vp;
	struct xbuf refs = { 0 };
	size_t j, s, nref;
	size_t before = b->d->nerrors;
	enum plan_vdef kind;
	int64_t r;
	bool used;

	for (j = 0; j < pt->nin; j++) {
		t = pt->in[j].mt->t;
		if (t->ndim != 2 || t->shape[1] != t0->shape[1]) {
			graph_diag_add(b->d, GRAPH_SEV_ERROR, pt->name, "a "
			    "tokenizer merge needs its embeddings to be "
			    "matrices of one width; %s's is [%" PRId64 "%s] "
			    "and %s's [%" PRId64 ", %" PRId64 "]",
			    b->p->models[pt->in[j].model].name, t->shape[0],
			    t->ndim == 2 ? ", ..." : "",
			    b->p->models[pt->in[0].model].name,
			    t0->shape[0], t0->shape[1]);
			return false;
		}
		if (v->maxid[pt->in[j].model] >= t->shape[0]) {
			graph_diag_add(b->d, GRAPH_SEV_ERROR, pt->name, "%s's "
			    "tokenizer gives '%.80s' id %" PRId64 ", but this "
			    "tensor has only %" PRId64 " rows: the embedding "
			    "is smaller than the tokenizer's vocabulary",
			    b->p->models[pt->in[j].model].name,
			    v->maxtext[pt->in[j].model],
			    v->maxid[pt->in[j].model], t->shape[0]);
			return false;
		}
	}
	vp = xcalloc(1, sizeof *vp);
	vp->id = atomic_fetch_add(&vperm_next_id, 1);
	vp->cols = t0->shape[1];
	vp->src = xcalloc(pt->nin, sizeof *vp->src);
	for (j = 0; j < pt->nin; j++)
		if (vperm_src_of(vp, pt->in[j].model) < 0) {
			vp->src[vp->nsrc].model = pt->in[j].model;
			vp->src[vp->nsrc++].mt = pt->in[j].mt;
		}
	vp->count = xcalloc(vp->nsrc, sizeof *vp->count);
	vp->mean = xcalloc(vp->nsrc, sizeof *vp->mean);
	for (s = 0; s < vp->nsrc; s++)
		pthread_mutex_init(&vp->mean[s].lock, NULL);
	vp->def_off = xcalloc((size_t)v->n + 1, sizeof *vp->def_off);
	for (r = 0; r < v->n; r++) {
		used = false;
		for (s = 0; s < vp->nsrc; s++)
			used |= !plan_vperm_own(v, vp->src[s].model, r);
		vp->def_off[r] = (uint32_t)(refs.len / sizeof(struct vperm_ref));
		if (!used)
			continue;
		kind = vperm_default(b, pt, vp, r, &refs);
		for (s = 0; s < vp->nsrc; s++)
			if (!plan_vperm_own(v, vp->src[s].model, r))
				vp->count[s][kind]++;
	}
	nref = refs.len / sizeof(struct vperm_ref);
	vp->def_off[v->n] = (uint32_t)nref;
	vp->def = (struct vperm_ref *)(void *)xbuf_take(&refs);
	pt->vperm = vp;
	pt->ndim = 2;
	pt->shape[0] = v->nrows;
	pt->shape[1] = vp->cols;
	return b->d->nerrors == before;
}

void
plan_vperm_free(struct plan_vperm *vp)
{
	size_t s;

	if (vp == NULL)
		return;
	for (s = 0; s < vp->nsrc; s++) {
		pthread_mutex_destroy(&vp->mean[s].lock);
		free(vp->mean[s].row);
	}
	free(vp->mean);
	free(vp->src);
	free(vp->count);
	free(vp->def_off);
	free(vp->def);
	free(vp);
}

void
plan_vocab_free(struct plan_vocab *v, size_t nmodels)
{
	size_t m;

	if (v == NULL)
		return;
	for (m = 0; v->perm != NULL && m < nmodels; m++)
		free(v->perm[m]);
	for (m = 0; v->maxtext != NULL && m < nmodels; m++)
		free(v->maxtext[m]);
	free(v->perm);
	free(v->maxtext);
	free(v->maxid);
	free(v->lacks);
	free(v->cfg);
	free(v->cfgidx);
	free(v->tokenizer_json);
	free(v->tokenizer_config);
	free(v);
}
