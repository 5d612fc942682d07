/* SPDX-License-Identifier: MIT */
/*
 * lora.c: a PEFT LoRA adapter applied to a model as its weights are read
 * (a "model+adapter" reference, MERGEKIT.md Part B 1.4).
 *
 * mergekit merges the adapter into a full copy of the model on disk
 * (--lora-merge-cache) before it merges anything.  Here the adapter is
 * bound to the model at plan time instead: each adapted weight W of the
 * model gets a struct lora_delta, and the reader returns W + s·B·A in
 * place of W, a block of rows at a time, so that no adapted copy of the
 * model is ever written or held.  The adapter's modules_to_save tensors
 * replace the model's tensors of the same name in its tensor table.
 *
 * The adapter is what PEFT saves: adapter_config.json, and
 * adapter_model.safetensors (or, from older PEFT, adapter_model.bin)
 * whose tensors are named
 *   base_model.model.M.lora_A.weight      [r, in]     Linear M
 *   base_model.model.M.lora_B.weight      [out, r]
 *   base_model.model.M.lora_embedding_A   [r, rows]   Embedding M
 *   base_model.model.M.lora_embedding_B   [dim, r]
 *   base_model.model.M.weight (or .bias)  M's whole replacement
 *                                         (modules_to_save)
 * for the model's weight M.weight.  The scale s is alpha/r, or
 * alpha/sqrt(r) with use_rslora, where r is the module's rank (lora_A's
 * rows, which must agree with r or rank_pattern) and alpha is lora_alpha
 * or alpha_pattern's.  With fan_in_fan_out, and always for embeddings,
 * the product is transposed: W + s·(B·A)^T.
 *
 * Every problem with an adapter (an unknown peft_type, DoRA, a tensor
 * that names no weight of the model, a shape that does not fit, a rank
 * that disagrees with the config) is found here, before any weight is
 * read, and all of them are reported together, each naming the adapter
 * file and the tensor.
 *
 * The product is computed with OpenBLAS's dgemm on float64 copies of the
 * factors, with W itself as the accumulator, so that W + s·Σ_k B_ik A_kj
 * is rounded to float32 once (Part A 9).  A block is always the same
 * rows of the weight (a fixed grid, LORA_BLOCK_ELEMS elements), so every
 * element is computed by the same dgemm call whatever the chunking, and
 * results are identical for any thread count.
 */
#define _GNU_SOURCE
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <cblas.h>

#include "graph-int.h"

#define LORA_MAX_CONFIG (4u << 20)
#define LORA_PREFIX "base_model.model."
/* Rows of a block: as many as make about this many elements. */
#define LORA_BLOCK_ELEMS (1u << 18)
/* The largest rank accepted (real adapters: 8 to 512). */
#define LORA_MAX_RANK 65536
/*
 * The most a pool thread holds for adapters: its entries' factors and
 * blocks (lora_read).  One delta needing more is refused at plan time,
 * so that a crafted adapter (a huge factor in a sparse file) cannot make
 * a thread allocate without bound.  A real one needs far less: rank 256
 * over a 28,672-wide weight, 58 MiB in float64.
 */
#define LORA_TLS_MAX (128u << 20)
/*
 * rank_pattern and alpha_pattern: at most this many keys, each at most
 * this long (real ones: a handful of module names).  Every key is tried
 * on every adapted module, and a regular expression's cost grows with
 * its length, so both are bounded for a plan to stay cheap whatever a
 * user's adapter says.
 */
#define LORA_MAX_PATTERNS 256
#define LORA_MAX_PATTERN_LEN 256

/* The adapter weights' file names, in the order PEFT looks for them. */
static const struct {
	const char *name;
	int (*open_fd)(int, const char *, struct safetensors_file **,
	    char **);
} lora_files[] = {
	{ "adapter_model.safetensors", safetensors_open_fd },
	{ "adapter_model.bin", torchbin_open_fd },
};

/* A pattern of rank_pattern or alpha_pattern, compiled. */
struct lora_pattern {
	char *key;
	regex_t re;
	double value;
};

struct lora_cfg {
	char *file;		/* adapter_config.json, for messages */
	int64_t r;
	double alpha;
	bool rslora;
	bool fan_in_fan_out;
	struct lora_pattern *rank;
	size_t nrank;
	struct lora_pattern *alpha_pat;
	size_t nalpha;
};

static atomic_uint_fast64_t lora_next_id = 1;

/* Reports one problem of the adapter. */
static void
lora_err(struct graph_diags *d, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
lora_err(struct graph_diags *d, const char *where, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	graph_diag_vadd(d, GRAPH_SEV_ERROR, where, fmt, ap);
	va_end(ap);
}

/*
 * What glibc's regcomp makes of a POSIX extended expression, in tree
 * nodes, roughly: one per atom, a group its contents, an alternation the
 * sum of its branches; "x+" is compiled as "xx*", a copy of x, so each +
 * doubles what it repeats, and stacked or nested ones multiply ("(+++...",
 * 300 bytes, took 2 GB).  Counted up to REGEX_MAX_NODES, where it stops.
 */
#define REGEX_MAX_NODES 8192
#define REGEX_MAX_DEPTH 64

static uint64_t
regex_nodes(const char *re)
{
	uint64_t sum[REGEX_MAX_DEPTH + 1], last[REGEX_MAX_DEPTH + 1];
	uint64_t grp;
	const char *s = re;
	int depth = 0;

	sum[0] = last[0] = 0;
	for (; *s != '\0'; s++) {
		switch (*s) {
		case '(':
			if (++depth > REGEX_MAX_DEPTH)
				return UINT64_MAX;
			sum[depth] = last[depth] = 0;
			continue;
		case ')':
			if (depth == 0)
				break;	/* regcomp refuses it */
			grp = sum[depth] + 1;
			depth--;
			sum[depth] += grp;
			last[depth] = grp;
			continue;
		case '+':
			/* The repeated atom once more. */
			sum[depth] += last[depth];
			last[depth] *= 2;
			if (sum[depth] > REGEX_MAX_NODES)
				return UINT64_MAX;
			continue;
		case '*':
		case '?':
		case '|':
			sum[depth]++;
			continue;
		case '\\':
			if (s[1] != '\0')
				s++;
			break;
		case '[':
			/* A bracket expression is one atom: skip to its ']'. */
			if (s[1] == '^')
				s++;
			if (s[1] == ']')
				s++;
			while (s[1] != '\0' && s[1] != ']') {
				if (s[1] == '[' && (s[2] == ':' ||
				    s[2] == '.' || s[2] == '=')) {
					const char *e = strchr(s + 3, s[2]);

					s = e != NULL && e[1] == ']' ? e + 1 :
					    s + 1;
				}
				s++;
			}
			if (s[1] == ']')
				s++;
			break;
		default:
			break;
		}
		sum[depth]++;
		last[depth] = 1;
		if (sum[depth] > REGEX_MAX_NODES)
			return UINT64_MAX;
	}
	while (depth > 0) {
		sum[depth - 1] += sum[depth];
		depth--;
	}
	return sum[0];
}

/*
 * A Python regular expression as PEFT's patterns use them, in POSIX
 * extended syntax: \d, \w and \s become classes and (?: a group; other
 * Python-only syntax (lookaround, lazy quantifiers, named groups) is
 * refused rather than read differently, and so are expressions that
 * glibc would compile to a huge tree (regex_nodes).  NULL, with *why,
 * when refused.
 * extract.c translates --include-regex and --exclude-regex with it too.
 */
char *
lora_regex_translate(const char *py, const char **why)
{
	struct xbuf b = { 0 };
	const char *s;

	for (s = py; *s != '\0'; s++) {
		if (s[0] == '\\' && s[1] != '\0') {
			s++;
			switch (*s) {
			case 'd': xbuf_printf(&b, "[0-9]"); break;
			case 'D': xbuf_printf(&b, "[^0-9]"); break;
			case 'w': xbuf_printf(&b, "[A-Za-z0-9_]"); break;
			case 'W': xbuf_printf(&b, "[^A-Za-z0-9_]"); break;
			case 's': xbuf_printf(&b, "[ \t\n\r\f\v]"); break;
			case '.': case '\\': case '(': case ')': case '[':
			case ']': case '{': case '}': case '*': case '+':
			case '?': case '|': case '^': case '$': case '-':
				xbuf_printf(&b, "\\%c", *s);
				break;
			default:
				*why = "a backslash escape other than \\d, \\w, "
				    "\\s or an escaped symbol";
				goto refuse;
			}
			continue;
		}
		if (s[0] == '(' && s[1] == '?') {
			if (s[2] != ':') {
				*why = "Python's (?...) syntax other than (?:";
				goto refuse;
			}
			xbuf_add(&b, "(", 1);
			s += 2;
			continue;
		}
		if ((s[0] == '*' || s[0] == '+' || s[0] == '?' || s[0] == '}') &&
		    s[1] == '?') {
			*why = "a lazy quantifier";
			goto refuse;
		}
		/* Python refuses "a**" ("multiple repeat"; "a++" is its
		 * possessive form): glibc takes them and computes closures
		 * that grow with each one, 10 s for 30 of them. */
		if ((s[0] == '*' || s[0] == '+' || s[0] == '?') &&
		    (s[1] == '*' || s[1] == '+' || s[1] == '?')) {
			*why = "a quantifier repeated (*, + or ? after "
			    "another)";
			goto refuse;
		}
		/* glibc compiles a{m,n} by copying a n times, nested ones
		 * multiplied: a 28-byte key took 24 GB. */
		if (s[0] == '{') {
			*why = "a counted repetition ({m,n})";
			goto refuse;
		}
		xbuf_add(&b, s, 1);
	}
	xbuf_add(&b, "", 1);
	if (regex_nodes(b.data) > REGEX_MAX_NODES) {
		*why = "repetitions (+) stacked or nested so deeply that it "
		    "would compile to more than 8192 nodes";
		goto refuse;
	}
	return xbuf_take(&b);
refuse:
	xbuf_free(&b);
	return NULL;
}

/*
 * rank_pattern or alpha_pattern: each key is a regular expression that a
 * module's name must end with, from its start or after a dot (PEFT's
 * get_pattern_key: re.match(rf"(.*\.)?({key})$", name)); the first key
 * in the file's order that matches wins.
 */
static void
lora_patterns(const cJSON *obj, const char *what, const char *file,
    bool integer, struct lora_pattern **out, size_t *n,
    struct graph_diags *d)
{
	const cJSON *e;
	const char *why = NULL;
	char *re, *full;
	struct lora_pattern *p;

	*out = NULL;
	*n = 0;
	if (obj == NULL || cJSON_IsNull(obj))
		return;
	if (!cJSON_IsObject(obj)) {
		lora_err(d, file, "'%s' must be an object of pattern: value",
		    what);
		return;
	}
	if (cJSON_GetArraySize(obj) > LORA_MAX_PATTERNS) {
		lora_err(d, file, "'%s' has %d keys, more than the %d this "
		    "project reads", what, cJSON_GetArraySize(obj),
		    LORA_MAX_PATTERNS);
		return;
	}
	cJSON_ArrayForEach(e, obj) {
		if (strlen(e->string) > LORA_MAX_PATTERN_LEN) {
			lora_err(d, file, "%s: a key of %zu bytes, longer than "
			    "the %d this project reads", what, strlen(e->string),
			    LORA_MAX_PATTERN_LEN);
			continue;
		}
		if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) ||
		    e->valuedouble <= 0 || (integer && (e->valuedouble !=
		    floor(e->valuedouble) || e->valuedouble > LORA_MAX_RANK))) {
			lora_err(d, file, "%s '%s': the value must be a "
			    "positive %s", what, e->string, integer ?
			    "whole number" : "number");
			continue;
		}
		if ((re = lora_regex_translate(e->string, &why)) == NULL) {
			lora_err(d, file, "%s '%s' uses %s, which this "
			    "project does not read", what, e->string, why);
			continue;
		}
		full = xasprintf("^(.*\\.)?(%s)$", re);
		free(re);
		*out = xgrowarray(*out, *n, sizeof **out);
		p = &(*out)[*n];
		if (regcomp(&p->re, full, REG_EXTENDED | REG_NOSUB) != 0) {
			lora_err(d, file, "%s '%s' is not a valid regular "
			    "expression", what, e->string);
			free(full);
			continue;
		}
		free(full);
		p->key = xstrdup(e->string);
		p->value = e->valuedouble;
		(*n)++;
	}
}

static const struct lora_pattern *
lora_pattern_find(const struct lora_pattern *v, size_t n, const char *module)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (regexec(&v[i].re, module, 0, NULL, 0) == 0)
			return &v[i];
	return NULL;
}

static void
lora_cfg_fini(struct lora_cfg *c)
{
	size_t i;

	for (i = 0; i < c->nrank; i++) {
		regfree(&c->rank[i].re);
		free(c->rank[i].key);
	}
	for (i = 0; i < c->nalpha; i++) {
		regfree(&c->alpha_pat[i].re);
		free(c->alpha_pat[i].key);
	}
	free(c->rank);
	free(c->alpha_pat);
	free(c->file);
}

/* A boolean field of the config: absent or null is false. */
static bool
lora_cfg_bool(const cJSON *j, const char *key, const char *file,
    struct graph_diags *d)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);

	if (v == NULL || cJSON_IsNull(v))
		return false;
	if (!cJSON_IsBool(v)) {
		lora_err(d, file, "'%s' must be true or false", key);
		return false;
	}
	return cJSON_IsTrue(v);
}

/* adapter_config.json: what the scale and the layout depend on. */
static void
lora_cfg_read(const cJSON *j, struct lora_cfg *c, struct graph_diags *d)
{
	const cJSON *v;
	const char *f = c->file;

	v = cJSON_GetObjectItemCaseSensitive(j, "peft_type");
	if (!cJSON_IsString(v))
		lora_err(d, f, "no \"peft_type\": not a PEFT adapter config");
	else if (strcmp(v->valuestring, "LORA") != 0)
		lora_err(d, f, "peft_type '%.64s' is not supported: only LoRA "
		    "adapters (\"LORA\") can be applied", v->valuestring);
	v = cJSON_GetObjectItemCaseSensitive(j, "r");
	if (!cJSON_IsNumber(v) || v->valuedouble < 1 ||
	    v->valuedouble > LORA_MAX_RANK ||
	    v->valuedouble != floor(v->valuedouble))
		lora_err(d, f, "'r' must be a whole number from 1 to %d",
		    LORA_MAX_RANK);
	else
		c->r = (int64_t)v->valuedouble;
	/* PEFT's LoraConfig default. */
	c->alpha = 8;
	v = cJSON_GetObjectItemCaseSensitive(j, "lora_alpha");
	if (v != NULL && (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) ||
	    v->valuedouble <= 0))
		lora_err(d, f, "'lora_alpha' must be a positive number");
	else if (v != NULL)
		c->alpha = v->valuedouble;
	c->rslora = lora_cfg_bool(j, "use_rslora", f, d);
	c->fan_in_fan_out = lora_cfg_bool(j, "fan_in_fan_out", f, d);
	if (lora_cfg_bool(j, "use_dora", f, d))
		lora_err(d, f, "DoRA adapters (use_dora: true) are not "
		    "supported: their magnitude vectors change W's column "
		    "norms, which a LoRA product cannot express");
	v = cJSON_GetObjectItemCaseSensitive(j, "lora_bias");
	if (cJSON_IsTrue(v))
		lora_err(d, f, "adapters with a LoRA bias (lora_bias: true) "
		    "are not supported");
	v = cJSON_GetObjectItemCaseSensitive(j, "bias");
	if (cJSON_IsString(v) && strcmp(v->valuestring, "none") != 0)
		lora_err(d, f, "bias '%.32s' is not supported: only adapters "
		    "trained with bias \"none\" can be applied (their "
		    "biases are in the adapter file as replacements, which "
		    "is read the same way)", v->valuestring);
	lora_patterns(cJSON_GetObjectItemCaseSensitive(j, "rank_pattern"),
	    "rank_pattern", f, true, &c->rank, &c->nrank, d);
	lora_patterns(cJSON_GetObjectItemCaseSensitive(j, "alpha_pattern"),
	    "alpha_pattern", f, false, &c->alpha_pat, &c->nalpha, d);
}

/* What one adapter tensor is, from its name. */
enum lora_role {
	ROLE_A,
	ROLE_B,
	ROLE_EMB_A,
	ROLE_EMB_B,
	ROLE_SAVE,		/* a modules_to_save replacement */
};

static const struct {
	const char *suffix;
	enum lora_role role;
} lora_suffixes[] = {
	{ ".lora_A.weight", ROLE_A },
	{ ".lora_B.weight", ROLE_B },
	{ ".lora_embedding_A", ROLE_EMB_A },
	{ ".lora_embedding_B", ROLE_EMB_B },
};

/* One module's factors while the file is matched. */
struct lora_pair {
	char *module;
	const struct safetensors_tensor *a;
	const struct safetensors_tensor *b;
	bool embedding;
};

static bool
lora_ends(const char *s, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);

	return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/*
 * Checks one module's factors against the model's weight and makes its
 * delta; false (having said why) when they do not fit.
 */
static bool
lora_bind_pair(struct model *m, struct lora *l, const struct lora_cfg *c,
    const struct lora_pair *pr, struct lora_delta *dl, struct graph_diags *d)
{
	const struct safetensors_tensor *a = pr->a, *b = pr->b, *w;
	const struct model_tensor *mt;
	const struct lora_pattern *pat;
	char *wname;
	int64_t r, rows, cols, want;
	uint64_t space;
	double alpha;
	bool ok = true;

	if (a == NULL || b == NULL) {
		lora_err(d, l->file->path, "%s: %s without its %s", pr->module,
		    a ? (pr->embedding ? "lora_embedding_A" : "lora_A") :
		    (pr->embedding ? "lora_embedding_B" : "lora_B"),
		    a ? (pr->embedding ? "lora_embedding_B" : "lora_B") :
		    (pr->embedding ? "lora_embedding_A" : "lora_A"));
		return false;
	}
	wname = xasprintf("%s.weight", pr->module);
	mt = model_find(m, wname);
	if (mt == NULL) {
		lora_err(d, l->file->path, "%s adapts '%s', which model '%s' "
		    "does not have", a->name, wname, m->name);
		free(wname);
		return false;
	}
	w = mt->t;
	if (w->ndim != 2 || a->ndim != 2 || b->ndim != 2) {
		lora_err(d, l->file->path, "%s: the weight and both factors "
		    "must be matrices (the weight has %d dimensions, the "
		    "factors %d and %d)", pr->module, w->ndim, a->ndim,
		    b->ndim);
		free(wname);
		return false;
	}
	if (!graph_dtype_is_float(a->dtype) || !graph_dtype_is_float(b->dtype)) {
		lora_err(d, l->file->path, "%s: factors of dtype %s and %s; "
		    "a LoRA factor is a float tensor", pr->module,
		    graph_dtype_st_name(a->dtype),
		    graph_dtype_st_name(b->dtype));
		ok = false;
	}
	if (!graph_dtype_is_float(w->dtype)) {
		lora_err(d, l->file->path, "%s: '%s' is stored as %s, which "
		    "an adapter cannot change", pr->module, wname,
		    graph_dtype_st_name(w->dtype));
		ok = false;
	}
	if (w->shape[0] < 1 || w->shape[1] < 1 || a->shape[0] < 1) {
		lora_err(d, l->file->path, "%s: '%s' [%lld, %lld] or its rank "
		    "%lld is empty", pr->module, wname,
		    (long long)w->shape[0], (long long)w->shape[1],
		    (long long)a->shape[0]);
		free(wname);
		return false;
	}
	r = a->shape[0];
	/* Transposed (fan_in_fan_out, embeddings): W is [in, out]. */
	dl->transpose = pr->embedding || c->fan_in_fan_out;
	rows = w->shape[0];
	cols = w->shape[1];
	if (b->shape[1] != r || a->shape[1] != (dl->transpose ? rows : cols) ||
	    b->shape[0] != (dl->transpose ? cols : rows)) {
		lora_err(d, l->file->path, "%s: %s [%lld, %lld] and %s [%lld, "
		    "%lld] do not fit '%s' [%lld, %lld]%s", pr->module,
		    pr->embedding ? "lora_embedding_A" : "lora_A",
		    (long long)a->shape[0], (long long)a->shape[1],
		    pr->embedding ? "lora_embedding_B" : "lora_B",
		    (long long)b->shape[0], (long long)b->shape[1], wname,
		    (long long)rows, (long long)cols, dl->transpose ?
		    " (the product is transposed: fan_in_fan_out or an "
		    "embedding)" : "");
		ok = false;
	}
	pat = lora_pattern_find(c->rank, c->nrank, pr->module);
	want = pat != NULL ? (int64_t)pat->value : c->r;
	if (ok && want != 0 && r != want) {
		lora_err(d, l->file->path, "%s: rank %lld in the file, but %s "
		    "says %lld", pr->module, (long long)r, pat != NULL ?
		    "rank_pattern" : "'r' of adapter_config.json",
		    (long long)want);
		ok = false;
	}
	if (ok && r < 1) {
		lora_err(d, l->file->path, "%s: rank 0", pr->module);
		ok = false;
	}
	free(wname);
	if (!ok)
		return false;
	pat = lora_pattern_find(c->alpha_pat, c->nalpha, pr->module);
	alpha = pat != NULL ? pat->value : c->alpha;
	dl->module = xstrdup(pr->module);
	dl->weight = mt;
	dl->a = a;
	dl->b = b;
	dl->file = l->file;
	dl->rank = r;
	dl->rows = rows;
	dl->cols = cols;
	dl->scale = c->rslora ? alpha / sqrt((double)r) : alpha / (double)r;
	dl->round = l->round;
	dl->id = atomic_fetch_add(&lora_next_id, 1);
	dl->grid = LORA_BLOCK_ELEMS / (uint64_t)cols;
	if (dl->grid == 0)
		dl->grid = 1;
	/* rank <= 2^16 and cols below a file's size: no overflow here. */
	space = lora_scratch(dl);
	if (cols > INT_MAX || space > LORA_TLS_MAX) {
		lora_err(d, l->file->path, "%s: applying rank %lld to '%s' "
		    "[%lld, %lld] needs %llu MiB of work space per thread, more "
		    "than the %u MiB a thread may hold for adapters",
		    pr->module, (long long)r, dl->weight->t->name,
		    (long long)rows, (long long)cols,
		    (unsigned long long)(space >> 20), LORA_TLS_MAX >> 20);
		free(dl->module);
		dl->module = NULL;
		return false;
	}
	return true;
}

/* Groups the file's tensors by module; replacements are bound here. */
static void
lora_match(struct model *m, struct lora *l, size_t fidx,
    struct lora_pair **pairs, size_t *npairs, struct graph_diags *d)
{
	const struct safetensors_file *f = l->file;
	const struct safetensors_tensor *t;
	struct model_tensor *mt;
	struct strmap byname = { 0 };
	size_t i, k, len, plen = strlen(LORA_PREFIX), at, idx;
	enum lora_role role;
	char *module, *tname;

	for (i = 0; i < f->nt; i++) {
		t = &f->t[i];
		if (t->skip)
			continue;
		len = strlen(t->name);
		if (strncmp(t->name, LORA_PREFIX, plen) != 0) {
			lora_err(d, f->path, "tensor '%s' is not named as PEFT "
			    "names an adapter's tensors (base_model.model.…)",
			    t->name);
			continue;
		}
		for (k = 0; k < sizeof lora_suffixes / sizeof *lora_suffixes;
		    k++)
			if (lora_ends(t->name, len, lora_suffixes[k].suffix))
				break;
		if (k == sizeof lora_suffixes / sizeof *lora_suffixes) {
			if (lora_ends(t->name, len, ".lora_B.bias")) {
				/* mergekit-extract-lora writes these without
				 * lora_bias, and PEFT then drops them. */
				graph_diag_add(d, GRAPH_SEV_WARNING, f->path,
				    "%s: ignored, as PEFT ignores it: the "
				    "adapter's config does not set lora_bias",
				    t->name);
				continue;
			}
			if (strstr(t->name, ".lora_magnitude_vector") != NULL) {
				lora_err(d, f->path, "%s: DoRA magnitude vectors "
				    "are not supported", t->name);
				continue;
			}
			if (strstr(t->name, ".lora_") != NULL) {
				lora_err(d, f->path, "%s: an adapter tensor of "
				    "a kind this project does not apply (it "
				    "knows lora_A, lora_B, lora_embedding_A "
				    "and lora_embedding_B)", t->name);
				continue;
			}
			role = ROLE_SAVE;
		} else {
			role = lora_suffixes[k].role;
		}
		if (role == ROLE_SAVE) {
			/* modules_to_save: the model's tensor, replaced. */
			tname = t->name + plen;
			if (!strmap_get(&m->index, tname, &idx)) {
				lora_err(d, f->path, "%s replaces '%s', which "
				    "model '%s' does not have", t->name, tname,
				    m->name);
				continue;
			}
			mt = &m->tensors[idx];
			if (mt->t->ndim != t->ndim || memcmp(mt->t->shape,
			    t->shape, (size_t)t->ndim * sizeof *t->shape) != 0) {
				lora_err(d, f->path, "%s: its shape differs "
				    "from the shape of '%s' it replaces",
				    t->name, tname);
				continue;
			}
			/* The adapter's bytes under the model's name, which
			 * is what the plan reads and writes by. */
			l->saved[l->nreplaced] = *t;
			l->saved[l->nreplaced].name = mt->t->name;
			mt->t = &l->saved[l->nreplaced++];
			mt->file = fidx;
			continue;
		}
		module = xstrndup(t->name + plen, len - plen -
		    strlen(lora_suffixes[k].suffix));
		if (!strmap_get(&byname, module, &at)) {
			*pairs = xgrowarray(*pairs, *npairs, sizeof **pairs);
			at = (*npairs)++;
			memset(&(*pairs)[at], 0, sizeof **pairs);
			(*pairs)[at].module = module;
			strmap_put(&byname, module, at);
		} else {
			free(module);
		}
		if ((role == ROLE_EMB_A || role == ROLE_EMB_B) !=
		    (*pairs)[at].embedding && ((*pairs)[at].a != NULL ||
		    (*pairs)[at].b != NULL)) {
			lora_err(d, f->path, "%s: the module has both Linear "
			    "(lora_A/B) and Embedding (lora_embedding_A/B) "
			    "factors", t->name);
			continue;
		}
		(*pairs)[at].embedding = role == ROLE_EMB_A ||
		    role == ROLE_EMB_B;
		if (role == ROLE_A || role == ROLE_EMB_A)
			(*pairs)[at].a = t;
		else
			(*pairs)[at].b = t;
	}
	strmap_free(&byname);
}

/*
 * Opens the adapter in r (taking ownership of its contents) and binds it
 * to m: its deltas and replacements.  Problems go to d; returns 0 or
 * -EINVAL.
 */
int
lora_attach(struct model *m, struct graph_resolved *r, enum graph_dtype round,
    struct graph_diags *d)
{
	struct lora *l;
	struct lora_cfg c;
	struct lora_pair *pairs = NULL;
	struct safetensors_file *f = NULL;
	cJSON *j = NULL;
	char *text = NULL, *why = NULL, *rel, *path;
	size_t len, i, npairs = 0, before = d->nerrors, fidx;
	int fd = -1, rc;

	memset(&c, 0, sizeof c);
	l = xcalloc(1, sizeof *l);
	l->where = *r;
	memset(r, 0, sizeof *r);
	r->rootfd = -1;
	l->round = round;
	m->lora = l;
	c.file = xasprintf("%s/adapter_config.json", l->where.dir);
	rel = strcmp(l->where.rel, ".") == 0 ? xstrdup("adapter_config.json") :
	    xasprintf("%s/adapter_config.json", l->where.rel);
	rc = fsroot_read(l->where.rootfd, rel, LORA_MAX_CONFIG, m->cred, &text,
	    &len, &why);
	free(rel);
	if (rc != 0) {
		lora_err(d, c.file, "%s%s", strchr(why, ':') ? strchr(why, ':') +
		    2 : why, rc == -ENOENT ? " (a LoRA adapter directory has "
		    "adapter_config.json and adapter_model.safetensors)" : "");
		free(why);
		goto out;
	}
	j = cJSON_ParseWithLength(text, len);
	if (!cJSON_IsObject(j)) {
		lora_err(d, c.file, "not a JSON object");
		goto out;
	}
	lora_cfg_read(j, &c, d);
	for (i = 0; i < sizeof lora_files / sizeof *lora_files; i++) {
		rel = strcmp(l->where.rel, ".") == 0 ?
		    xstrdup(lora_files[i].name) : xasprintf("%s/%s",
		    l->where.rel, lora_files[i].name);
		if (!fsroot_exists(l->where.rootfd, rel, m->cred)) {
			free(rel);
			continue;
		}
		fd = fsroot_open(l->where.rootfd, rel, O_RDONLY, m->cred, &why);
		free(rel);
		path = xasprintf("%s/%s", l->where.dir, lora_files[i].name);
		if (fd < 0) {
			lora_err(d, path, "%s", strchr(why, ':') ?
			    strchr(why, ':') + 2 : why);
			free(why);
		} else if (lora_files[i].open_fd(fd, path, &f, &why) != 0) {
			lora_err(d, path, "%s", why);
			free(why);
		}
		free(path);
		break;
	}
	if (i == sizeof lora_files / sizeof *lora_files) {
		lora_err(d, l->where.dir, "no adapter_model.safetensors or "
		    "adapter_model.bin");
		goto out;
	}
	if (f != NULL && d->nerrors != before) {
		safetensors_close(f);
		f = NULL;
	}
	if (f == NULL)
		goto out;
	/* The model owns the file, as one of its own: its identity is
	 * checked before the merge and recorded for resume. */
	m->files = xgrowarray(m->files, m->nfiles, sizeof *m->files);
	m->file_names = xgrowarray(m->file_names, m->nfiles,
	    sizeof *m->file_names);
	fidx = m->nfiles++;
	m->files[fidx] = f;
	m->file_names[fidx] = xstrdup(f->path);
	l->file = f;
	l->saved = xcalloc(f->nt + 1, sizeof *l->saved);
	lora_match(m, l, fidx, &pairs, &npairs, d);
	l->deltas = xcalloc(npairs + 1, sizeof *l->deltas);
	for (i = 0; i < npairs; i++)
		if (lora_bind_pair(m, l, &c, &pairs[i],
		    &l->deltas[l->ndeltas], d))
			l->ndeltas++;
	if (d->nerrors == before && l->ndeltas == 0 && l->nreplaced == 0)
		lora_err(d, f->path, "the adapter holds no LoRA factors and no "
		    "replacement weights");
	if (d->nerrors == before)
		for (i = 0; i < l->ndeltas; i++)
			m->tensors[l->deltas[i].weight - m->tensors].delta =
			    &l->deltas[i];
out:
	for (i = 0; i < npairs; i++)
		free(pairs[i].module);
	free(pairs);
	cJSON_Delete(j);
	free(text);
	lora_cfg_fini(&c);
	return d->nerrors == before ? 0 : -EINVAL;
}

void
lora_free(struct lora *l)
{
	size_t i;

	if (l == NULL)
		return;
	for (i = 0; i < l->ndeltas; i++)
		free(l->deltas[i].module);
	free(l->deltas);
	free(l->saved);
	graph_resolved_fini(&l->where);
	free(l);
}

/* The delta that in's tensor carries, writable, or NULL. */
static struct lora_delta *
lora_delta_of(struct graph_plan *p, const struct plan_input *in)
{
	struct lora *l = p->models[in->model].m->lora;

	if (in->mt->delta == NULL || l == NULL)
		return NULL;
	return &l->deltas[in->mt->delta - l->deltas];
}

/*
 * Part A 9 asks float64 for reductions, and the sum over the rank is
 * one: in float32 it carries a relative error of a few 1e-7, which a
 * float32 output would show.  A bf16 or fp16 output cannot: it is 2^8 to
 * 2^13 times coarser, so every element stays within one ulp of the
 * float64 reference (test-lora checks it), and sgemm does the work in
 * half dgemm's time with no float64 copies of the block (measured on the
 * bench's adapted linear merge).  So a delta is summed in float32 only
 * when every output tensor that reads it is 16-bit and no "dtype:" asks
 * float32 of its inputs.
 */
void
lora_plan_precision(struct graph_plan *p)
{
	struct lora_delta *dl;
	struct lora *l;
	size_t i, j, k;
	bool wide;

	for (i = 0; i < p->nmodels; i++)
		if ((l = p->models[i].m->lora) != NULL)
			for (k = 0; k < l->ndeltas; k++)
				l->deltas[k].single = true;
	for (i = 0; i < p->ntensors; i++) {
		const struct plan_tensor *t = &p->tensors[i];
		wide = graph_dtype_size(t->out_dtype) > 2 ||
		    (t->compute_dtype != GRAPH_DT_NONE &&
		    graph_dtype_size(t->compute_dtype) > 2);
		for (j = 0; j < t->nin; j++)
			if ((dl = lora_delta_of(p, &t->in[j])) != NULL && wide)
				dl->single = false;
	}
}

/*
 * A pool thread's work space.  A merge reads a quantum of each of a
 * tensor's inputs in turn, and several of them may be adapted (five
 * adapters over one base), so a thread keeps one entry per delta it is
 * reading, up to LORA_TLS_ENTRIES, the least recently used replaced: the
 * delta's right factor decoded to float64, and the last block it
 * computed, adapted and rounded.  With one entry a thread recomputed a
 * block for every quantum of every input (measured: 8.5x the floor on
 * the bench's three adapted models).  Keyed by the delta's id, unique in
 * the process, so a delta freed with its plan is never mistaken for a
 * new one.  The accumulator and the left factor's rows are scratch.
 */
#define LORA_TLS_ENTRIES 8

struct lora_entry {
	uint64_t id;		/* whose, or 0 */
	uint64_t used;		/* when, by the thread's clock */
	void *right;		/* double, or float for a single delta */
	size_t right_cap;	/* bytes */
	bool have_block;
	uint64_t block;		/* which block out holds */
	float *out;		/* the block, adapted */
	size_t out_cap;
};

struct lora_tls {
	struct lora_entry e[LORA_TLS_ENTRIES];
	uint64_t clock;
	double *acc;		/* the block, accumulating */
	double *left;		/* the block's rows of the left factor */
	float *tmp;		/* a run of a factor, decoded */
	size_t acc_cap;
	size_t left_cap;
	size_t tmp_cap;
};

static pthread_key_t lora_key;
static pthread_once_t lora_once = PTHREAD_ONCE_INIT;

static void
lora_tls_free(void *p)
{
	struct lora_tls *t = p;
	size_t i;

	for (i = 0; i < LORA_TLS_ENTRIES; i++) {
		free(t->e[i].right);
		free(t->e[i].out);
	}
	free(t->acc);
	free(t->left);
	free(t->tmp);
	free(t);
}

static void
lora_key_make(void)
{
	(void)pthread_key_create(&lora_key, lora_tls_free);
}

static struct lora_tls *
lora_tls(void)
{
	struct lora_tls *t;

	pthread_once(&lora_once, lora_key_make);
	if ((t = pthread_getspecific(lora_key)) == NULL) {
		t = xcalloc(1, sizeof *t);
		(void)pthread_setspecific(lora_key, t);
	}
	return t;
}

static void *
lora_room(void *p, size_t *cap, size_t n, size_t size)
{
	if (n <= *cap)
		return p;
	free(p);
	*cap = n;
	return xreallocarray(NULL, n, size);
}

/* Bytes an entry holds. */
static uint64_t
lora_entry_bytes(const struct lora_entry *e)
{
	return (uint64_t)e->right_cap + (uint64_t)e->out_cap * sizeof *e->out;
}

/*
 * Frees the least recently used entries other than keep until they hold
 * at most LORA_TLS_MAX less need: a thread never holds more, however
 * many adapted inputs a tensor has.
 */
static void
lora_tls_trim(struct lora_tls *t, struct lora_entry *keep, uint64_t need)
{
	struct lora_entry *old;
	uint64_t held;
	size_t i;

	for (;;) {
		held = 0;
		old = NULL;
		for (i = 0; i < LORA_TLS_ENTRIES; i++) {
			if (&t->e[i] == keep || lora_entry_bytes(&t->e[i]) == 0)
				continue;
			held += lora_entry_bytes(&t->e[i]);
			if (old == NULL || t->e[i].used < old->used)
				old = &t->e[i];
		}
		if (old == NULL || held + need <= LORA_TLS_MAX)
			return;
		free(old->right);
		free(old->out);
		memset(old, 0, sizeof *old);
	}
}

/* The thread's entry for dl: its own, else the least recently used. */
static struct lora_entry *
lora_entry(struct lora_tls *t, const struct lora_delta *dl)
{
	struct lora_entry *e = &t->e[0];
	size_t i;

	for (i = 0; i < LORA_TLS_ENTRIES; i++) {
		if (t->e[i].id == dl->id) {
			e = &t->e[i];
			break;
		}
		if (t->e[i].used < e->used)
			e = &t->e[i];
	}
	e->used = ++t->clock;
	if (e->id != dl->id) {
		e->id = 0;
		e->have_block = false;
		lora_tls_trim(t, e, lora_scratch(dl));
	}
	return e;
}

/* float32 to float64 and back: the hot loops around dgemm, vectorized
 * (the struct fields they came from would make the compiler reload). */
static GRAPH_SIMD void
lora_widen(const float *restrict in, double *restrict out, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		out[i] = in[i];
}

static GRAPH_SIMD void
lora_narrow(const double *restrict in, float *restrict out, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		out[i] = (float)in[i];
}

/* Elements [off, off + n) of a factor, as float32. */
static int
lora_factor_f(const struct lora_delta *dl, const struct safetensors_tensor *st,
    uint64_t off, size_t n, float *out, char **cause)
{
	return reader_read_run(dl->file, st->dtype, st->begin + off *
	    graph_dtype_size(st->dtype), n, out, cause);
}

/* The same as float64, through t's float32 scratch a step at a time. */
static int
lora_factor(struct lora_tls *t, const struct lora_delta *dl,
    const struct safetensors_tensor *st, uint64_t off, size_t n, double *out,
    char **cause)
{
	size_t k, step = 65536;
	int rc;

	t->tmp = lora_room(t->tmp, &t->tmp_cap, step, sizeof *t->tmp);
	for (k = 0; k < n; k += step) {
		if (step > n - k)
			step = n - k;
		if ((rc = lora_factor_f(dl, st, off + k, step, t->tmp,
		    cause)) != 0)
			return rc;
		lora_widen(t->tmp, out + k, step);
	}
	return 0;
}

/*
 * The entry's right factor, [r, cols]: A itself, or for a transposed
 * delta B, [cols, r], which the gemm reads transposed; float64, or
 * float32 for a single delta.
 */
static int
lora_right(struct lora_tls *t, struct lora_entry *e,
    const struct lora_delta *dl, char **cause)
{
	const struct safetensors_tensor *st = dl->transpose ? dl->b : dl->a;
	size_t n = (size_t)dl->rank * (size_t)dl->cols;
	size_t es = dl->single ? sizeof(float) : sizeof(double);
	int rc;

	if (e->id == dl->id)
		return 0;
	e->right = lora_room(e->right, &e->right_cap, n * es, 1);
	rc = dl->single ? lora_factor_f(dl, st, 0, n, e->right, cause) :
	    lora_factor(t, dl, st, 0, n, e->right, cause);
	if (rc != 0)
		return rc;
	e->id = dl->id;
	return 0;
}

/* Block rows r0.. (g of them) of a single delta: W + s B A in float32,
 * W itself the accumulator. */
static int
lora_block_single(struct lora_tls *t, struct lora_entry *e,
    const struct lora_delta *dl, uint64_t r0, uint64_t g, char **cause)
{
	size_t cols = (size_t)dl->cols, rank = (size_t)dl->rank;
	float *left;
	uint64_t k;
	int rc;

	t->left = lora_room(t->left, &t->left_cap, (size_t)g * rank,
	    sizeof *t->left);
	left = (float *)t->left;
	if (!dl->transpose) {
		if ((rc = lora_factor_f(dl, dl->b, r0 * rank, (size_t)g * rank,
		    left, cause)) != 0)
			return rc;
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g,
		    (int)cols, (int)rank, (float)dl->scale, left, (int)rank,
		    e->right, (int)cols, 1.0f, e->out, (int)cols);
		return 0;
	}
	for (k = 0; k < rank; k++)
		if ((rc = lora_factor_f(dl, dl->a, k * (uint64_t)dl->rows + r0,
		    (size_t)g, left + k * g, cause)) != 0)
			return rc;
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, (int)g, (int)cols,
	    (int)rank, (float)dl->scale, left, (int)g, e->right, (int)rank,
	    1.0f, e->out, (int)cols);
	return 0;
}

/* Block blk of the adapted weight, into e->out. */
static int
lora_block(struct lora_tls *t, struct lora_entry *e, const struct model *m,
    const struct lora_delta *dl, uint64_t blk, char **cause)
{
	const struct safetensors_tensor *w = dl->weight->t;
	const struct safetensors_file *wf = m->files[dl->weight->file];
	uint64_t r0 = blk * dl->grid, g = dl->grid, k;
	size_t cols = (size_t)dl->cols, rank = (size_t)dl->rank, n;
	int rc;

	if ((rc = lora_right(t, e, dl, cause)) != 0)
		return rc;
	if (e->have_block && e->block == blk)
		return 0;
	e->have_block = false;
	if (r0 + g > (uint64_t)dl->rows)
		g = (uint64_t)dl->rows - r0;
	n = (size_t)g * cols;
	e->out = lora_room(e->out, &e->out_cap, n, sizeof *e->out);
	t->acc = lora_room(t->acc, &t->acc_cap, n, sizeof *t->acc);
	t->left = lora_room(t->left, &t->left_cap, (size_t)g * rank,
	    sizeof *t->left);
	/* W's rows, the accumulator's start. */
	if ((rc = reader_read_run(wf, w->dtype, w->begin + r0 * cols *
	    graph_dtype_size(w->dtype), n, e->out, cause)) != 0)
		return rc;
	if (dl->single) {
		if ((rc = lora_block_single(t, e, dl, r0, g, cause)) != 0)
			return rc;
		goto done;
	}
	lora_widen(e->out, t->acc, n);
	if (!dl->transpose) {
		/* B's rows r0.., [g, r]. */
		if ((rc = lora_factor(t, dl, dl->b, r0 * rank, (size_t)g * rank,
		    t->left, cause)) != 0)
			return rc;
		cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g,
		    (int)cols, (int)rank, dl->scale, t->left, (int)rank,
		    e->right, (int)cols, 1.0, t->acc, (int)cols);
	} else {
		/* A's columns r0.., as [r, g]; B read transposed. */
		for (k = 0; k < rank; k++)
			if ((rc = lora_factor(t, dl, dl->a, k * (uint64_t)dl->rows +
			    r0, (size_t)g, t->left + k * g, cause)) != 0)
				return rc;
		cblas_dgemm(CblasRowMajor, CblasTrans, CblasTrans, (int)g,
		    (int)cols, (int)rank, dl->scale, t->left, (int)g,
		    e->right, (int)rank, 1.0, t->acc, (int)cols);
	}
	lora_narrow(t->acc, e->out, n);
done:
	if (dl->round != GRAPH_DT_NONE)
		graph_dtype_round(dl->round, e->out, n);
	e->have_block = true;
	e->block = blk;
	return 0;
}

/*
 * Elements [idx, idx + n) of the adapted weight (flattened, as stored),
 * into out.  Pool threads; reads only the plan.
 */
int
lora_read(const struct model *m, const struct lora_delta *dl, uint64_t idx,
    size_t n, float *out, char **cause)
{
	struct lora_tls *t = lora_tls();
	struct lora_entry *e = lora_entry(t, dl);
	uint64_t per = dl->grid * (uint64_t)dl->cols, blk, b0, take, done = 0;
	int rc;

	while (done < n) {
		blk = (idx + done) / per;
		if ((rc = lora_block(t, e, m, dl, blk, cause)) != 0)
			return rc;
		b0 = idx + done - blk * per;
		take = (uint64_t)dl->cols * (blk * dl->grid + dl->grid >
		    (uint64_t)dl->rows ? (uint64_t)dl->rows - blk * dl->grid :
		    dl->grid) - b0;
		if (take > n - done)
			take = n - done;
		memcpy(out + done, e->out + b0, take * sizeof *out);
		done += take;
	}
	return 0;
}

/* What one thread's entry and scratch for dl take (one of at most
 * LORA_TLS_ENTRIES entries per thread). */
uint64_t
lora_scratch(const struct lora_delta *dl)
{
	uint64_t g = dl->grid < (uint64_t)dl->rows ? dl->grid :
	    (uint64_t)dl->rows;

	return (uint64_t)dl->rank * (uint64_t)dl->cols * 8 +
	    g * (uint64_t)dl->cols * 12 + g * (uint64_t)dl->rank * 8;
}
