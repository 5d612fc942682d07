/* SPDX-License-Identifier: MIT */
/*
 * test-util.c: unit tests for the engine's small helpers: size parsing and
 * formatting (graph/util.c), the string map (graph/strmap.c), the
 * byte-preserving JSON patcher (graph/jsonpatch.c) and "did you mean"
 * suggestions (graph/diag.c).
 *
 * Sizes: memory sizes are binary, shard sizes mergekit's decimal K/M/B,
 * and malformed or overflowing text is refused.  The string map is driven
 * through growth and deletions (10000 keys, every third deleted, then
 * thousands of small random maps whose probe clusters wrap around the
 * table) and compared against a plain array after every step.  The JSON
 * patcher must replace only top-level values, add missing keys, keep every
 * other byte (so "8.0" stays "8.0") and always produce JSON that cJSON
 * accepts.  Ranking within a vector (graph/select.c, for della) must give
 * every key its position in the stable ascending order, checked against
 * counting, for keys that are all equal, few-valued, 16-bit-like (low bits
 * zero) or spread over every bit, and lengths around its segment split.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "graph-int.h"
#include "select.h"
#include "tap.h"

#define NKEYS 10000

struct size_case {
	const char *text;
	bool binary;
	int rc;
	uint64_t want;
};

static uint64_t rng_next(uint64_t *);
static void test_parse_size(void);
static void test_format_size(void);
static void test_parse_duration(void);
static bool strmap_matches(const struct strmap *, char (*)[16],
    const bool *, size_t);
static void test_strmap_big(void);
static void test_strmap_small(void);
static void test_strmap_len(void);
static char *patch(const char *, const char *const *, const char *const *,
    size_t);
static bool json_valid(const char *);
static double nested_int(const cJSON *, const char *, const char *);
static void test_json_patch_donor(void);
static void test_json_patch_edges(void);
static void test_suggest(void);
static void test_rank(void);
static void test_find(void);

static const struct size_case size_cases[] = {
	{ "64M", true, 0, 64ull << 20 },
	{ "2G", true, 0, 2ull << 30 },
	{ "2GiB", true, 0, 2ull << 30 },
	{ "2gib", true, 0, 2ull << 30 },
	{ "2GB", true, 0, 2ull << 30 },
	{ "512k", true, 0, 512ull << 10 },
	{ "512K", true, 0, 512ull << 10 },
	{ "1T", true, 0, 1ull << 40 },
	{ "100", true, 0, 100 },
	{ "0", true, 0, 0 },
	{ "5B", false, 0, 5000000000ull },
	{ "500M", false, 0, 500000000ull },
	{ "1K", false, 0, 1000 },
	{ "1k", false, 0, 1000 },
	{ "2G", false, 0, 2000000000ull },
	{ "100", false, 0, 100 },
	{ "18446744073709551609", false, 0, 18446744073709551609ull },
	{ "5B", true, -EINVAL, 0 },	/* bytes or billions? refused */
	{ "", true, -EINVAL, 0 },
	{ "", false, -EINVAL, 0 },
	{ "M", true, -EINVAL, 0 },
	{ "B", false, -EINVAL, 0 },
	{ "1.5G", true, -EINVAL, 0 },
	{ "1.5B", false, -EINVAL, 0 },
	{ "-1", true, -EINVAL, 0 },
	{ "+1", true, -EINVAL, 0 },
	{ " 1", true, -EINVAL, 0 },
	{ "1 M", true, -EINVAL, 0 },
	{ "12X", true, -EINVAL, 0 },
	{ "12X", false, -EINVAL, 0 },
	{ "2MM", true, -EINVAL, 0 },
	{ "2GiBs", true, -EINVAL, 0 },
	{ "2GiB", false, -EINVAL, 0 },
	{ "99999999999999999999", true, -ERANGE, 0 },
	{ "99999999999999999999", false, -ERANGE, 0 },
	{ "20000000000T", true, -ERANGE, 0 },
	{ "20000000000B", false, -ERANGE, 0 },
};

/* xorshift64*: reproducible without libc's rand(). */
static uint64_t
rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static void
test_parse_size(void)
{
	const struct size_case *c;
	uint64_t v;
	size_t i;
	int rc;

	for (i = 0; i < sizeof size_cases / sizeof *size_cases; i++) {
		c = &size_cases[i];
		v = 12345;
		rc = graph_parse_size(c->text, c->binary, &v);
		if (c->rc == 0)
			ok(rc == 0 && v == c->want, "%s \"%s\" is %" PRIu64
			    " (got rc %d, %" PRIu64 ")",
			    c->binary ? "binary" : "decimal", c->text,
			    c->want, rc, v);
		else
			ok(rc == c->rc && v == 12345, "%s \"%s\" is refused "
			    "with %d (got %d)", c->binary ? "binary" :
			    "decimal", c->text, c->rc, rc);
	}
}

/* merged --keep-finished and mergectl clean --older-than. */
static void
test_parse_duration(void)
{
	static const struct {
		const char *text;
		int rc;
		uint64_t want;
	} cases[] = {
		{ "0", 0, 0 }, { "90", 0, 90 }, { "45s", 0, 45 },
		{ "90m", 0, 5400 }, { "12h", 0, 43200 }, { "30d", 0, 2592000 },
		{ "2w", 0, 1209600 }, { "36600d", 0, 36600ull * 86400 },
		{ "", -EINVAL, 0 }, { "d", -EINVAL, 0 }, { "-1d", -EINVAL, 0 },
		{ "1.5h", -EINVAL, 0 }, { "3x", -EINVAL, 0 },
		{ "3dd", -EINVAL, 0 }, { "1D", -EINVAL, 0 },
		{ "36601d", -ERANGE, 0 },
		{ "99999999999999999999999", -ERANGE, 0 },
	};
	uint64_t v;
	size_t i;
	int rc;

	for (i = 0; i < sizeof cases / sizeof *cases; i++) {
		v = 12345;
		rc = graph_parse_duration(cases[i].text, &v);
		if (cases[i].rc == 0)
			ok(rc == 0 && v == cases[i].want, "duration \"%s\" is "
			    "%" PRIu64 " s (got rc %d, %" PRIu64 ")",
			    cases[i].text, cases[i].want, rc, v);
		else
			ok(rc == cases[i].rc && v == 12345, "duration \"%s\" "
			    "is refused with %d (got %d)", cases[i].text,
			    cases[i].rc, rc);
	}
}

static void
test_format_size(void)
{
	static const struct {
		uint64_t v;
		const char *want;
	} cases[] = {
		{ 0, "0 B" }, { 1023, "1023 B" }, { 1024, "1.0 KiB" },
		{ 1536, "1.5 KiB" }, { 64ull << 20, "64.0 MiB" },
		{ 5000000000ull, "4.7 GiB" }, { 2ull << 40, "2.0 TiB" },
		{ 1ull << 50, "1024.0 TiB" },
		{ UINT64_MAX, "16777216.0 TiB" },
	};
	size_t i;
	char *s;

	for (i = 0; i < sizeof cases / sizeof *cases; i++) {
		s = graph_format_size(cases[i].v);
		ok_str_eq(s, cases[i].want, "format %" PRIu64, cases[i].v);
		free(s);
	}
}

/* Every live key maps to its index, no dead key is found, n agrees. */
static bool
strmap_matches(const struct strmap *m, char (*keys)[16], const bool *live,
    size_t n)
{
	size_t i, v, count = 0;

	for (i = 0; i < n; i++) {
		v = (size_t)-1;
		if (strmap_get(m, keys[i], &v) != live[i])
			return false;
		if (live[i] && v != i)
			return false;
		count += live[i];
	}
	return m->n == count;
}

static void
test_strmap_big(void)
{
	static char keys[NKEYS][16];
	static bool live[NKEYS];
	struct strmap m = { 0 };
	size_t i, v = 0, bad = 0;

	ok(!strmap_get(&m, "x", &v) && !strmap_del_len(&m, "x", 1),
	    "an empty map finds and deletes nothing");
	for (i = 0; i < NKEYS; i++) {
		snprintf(keys[i], sizeof keys[i], "model.%zu.w", i);
		strmap_put(&m, keys[i], i + 7);
		strmap_put(&m, keys[i], i);	/* overwrite */
		live[i] = true;
	}
	ok(m.n == NKEYS && (m.cap & (m.cap - 1)) == 0 && m.cap > NKEYS,
	    "10000 keys, overwrites not counted, capacity a power of two");
	ok(strmap_matches(&m, keys, live, NKEYS), "all 10000 keys found");
	ok(strmap_get(&m, "model.5.w", NULL), "get with a NULL value pointer");
	ok(!strmap_get(&m, "model.10000.w", &v) && !strmap_get(&m, "", &v),
	    "absent keys are not found");
	for (i = 0; i < NKEYS; i += 3) {
		bad += !strmap_del_len(&m, keys[i], strlen(keys[i]));
		bad += strmap_del_len(&m, keys[i], strlen(keys[i]));
		live[i] = false;
	}
	ok_int_eq(bad, 0, "each deletion succeeds once, then fails");
	ok(strmap_matches(&m, keys, live, NKEYS),
	    "after deleting every 3rd key the rest are all found");
	for (i = 0; i < NKEYS; i += 3) {
		strmap_put(&m, keys[i], i);
		live[i] = true;
	}
	ok(strmap_matches(&m, keys, live, NKEYS), "deleted keys re-insert");
	strmap_free(&m);
	ok(m.slots == NULL && m.n == 0 && m.cap == 0, "strmap_free resets");
}

/*
 * Small maps stay at 64 slots, so random keys form clusters that wrap
 * around the end of the table; deleting in random order must keep every
 * remaining key reachable.
 */
static void
test_strmap_small(void)
{
	static char keys[48][16];
	bool live[48];
	uint64_t seed = 42;
	size_t trial, i, n, bad = 0;

	for (trial = 0; trial < 3000 && bad == 0; trial++) {
		struct strmap m = { 0 };

		n = 1 + (size_t)(rng_next(&seed) % 47);
		for (i = 0; i < n; i++) {
			snprintf(keys[i], sizeof keys[i], "k%" PRIx64,
			    rng_next(&seed) & 0xffffffffff);
			strmap_put(&m, keys[i], i);
			live[i] = true;
		}
		/* Random 40-bit keys: a duplicate is possible, skip it. */
		if (m.n != n) {
			strmap_free(&m);
			continue;
		}
		while (m.n > 0 && bad == 0) {
			i = (size_t)(rng_next(&seed) % n);
			if (!live[i])
				continue;
			live[i] = false;
			bad += !strmap_del_len(&m, keys[i], strlen(keys[i]));
			bad += !strmap_matches(&m, keys, live, n);
		}
		strmap_free(&m);
	}
	ok_int_eq(bad, 0, "3000 random small maps stay consistent through "
	    "every deletion (stopped at trial %zu)", trial);
}

static void
test_strmap_len(void)
{
	static const char text[] = "abcdef";
	struct strmap m = { 0 };
	size_t v = 0;

	strmap_put_len(&m, text, 3, 1);
	strmap_put_len(&m, text, 6, 2);
	ok(strmap_get(&m, "abc", &v) && v == 1, "a length-limited key");
	ok(strmap_get_len(&m, "abcdefgh", 6, &v) && v == 2,
	    "get_len looks at len bytes only");
	ok(!strmap_get(&m, "ab", &v), "a shorter prefix is another key");
	ok(strmap_del_len(&m, "abcXYZ", 3) && !strmap_get(&m, "abc", &v) &&
	    strmap_get(&m, "abcdef", &v), "del_len removes only that key");
	strmap_free(&m);
}

static char *
patch(const char *in, const char *const *keys, const char *const *vals,
    size_t n)
{
	return jsonpatch_apply(in, strlen(in), keys, vals, n);
}

static bool
json_valid(const char *s)
{
	cJSON *j = cJSON_Parse(s);
	bool good = cJSON_IsObject(j);

	cJSON_Delete(j);
	return good;
}

/* j[outer][key] (or j[key] without outer) as a number, or -1. */
static double
nested_int(const cJSON *j, const char *outer, const char *key)
{
	const cJSON *o = outer ? cJSON_GetObjectItemCaseSensitive(j, outer) : j;
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static void
test_json_patch_donor(void)
{
	static const char donor[] =
	    "{\n"
	    "  \"architectures\": [\n"
	    "    \"LlamaForCausalLM\"\n"
	    "  ],\n"
	    "  \"model_type\": \"llama\",\n"
	    "  \"rope_scaling\": {\"factor\": 8.0, \"high_freq_factor\": 4.0,"
	    " \"rope_type\": \"llama3\"},\n"
	    "  \"quantization\": {\"bits\": [4, 8], \"note\": \"a } and ] "
	    "in a string\"},\n"
	    "  \"name\": \"say \\\"hi\\\" {not json}\",\n"
	    "  \"text_config\": {\"num_hidden_layers\": 32, \"vocab_size\": "
	    "1000},\n"
	    "  \"num_hidden_layers\": 32,\n"
	    "  \"torch_dtype\": \"bfloat16\"\n"
	    "}\n";
	static const char want[] =
	    "{\n"
	    "  \"architectures\": [\"MistralForCausalLM\"],\n"
	    "  \"model_type\": \"llama\",\n"
	    "  \"rope_scaling\": {\"factor\": 8.0, \"high_freq_factor\": 4.0,"
	    " \"rope_type\": \"llama3\"},\n"
	    "  \"quantization\": null,\n"
	    "  \"name\": \"merged \\\"x\\\"\",\n"
	    "  \"text_config\": {\"num_hidden_layers\": 32, \"vocab_size\": "
	    "1000},\n"
	    "  \"num_hidden_layers\": 40,\n"
	    "  \"torch_dtype\": \"float16\",\n"
	    "  \"vocab_size\": 2000,\n"
	    "  \"tie_word_embeddings\": false\n"
	    "}\n";
	static const char *const keys[] = { "architectures", "quantization",
		"name", "num_hidden_layers", "torch_dtype", "vocab_size",
		"tie_word_embeddings" };
	static const char *const vals[] = { "[\"MistralForCausalLM\"]",
		"null", "\"merged \\\"x\\\"\"", "40", "\"float16\"", "2000",
		"false" };
	char *out;
	cJSON *j;

	ok(json_valid(donor), "the donor is valid JSON");
	out = patch(donor, keys, vals, 7);
	ok_str_eq(out, want, "top-level values replaced, missing keys added, "
	    "every other byte kept");
	ok(json_valid(out), "the result is valid JSON");
	ok(strstr(out, "\"factor\": 8.0") != NULL, "8.0 is still 8.0");
	j = cJSON_Parse(out);
	ok(nested_int(j, "text_config", "num_hidden_layers") == 32 &&
	    nested_int(j, "text_config", "vocab_size") == 1000,
	    "keys that appear only nested are not replaced there");
	ok(nested_int(j, NULL, "num_hidden_layers") == 40 &&
	    nested_int(j, NULL, "vocab_size") == 2000,
	    "the top-level ones are");
	cJSON_Delete(j);
	free(out);
}

static void
test_json_patch_edges(void)
{
	static const char *const k1[] = { "a" }, *const v1[] = { "1" };
	static const char *const k2[] = { "b" }, *const v2[] = { "3" };
	static const char *const k3[] = { "a", "ab" };
	static const char *const v3[] = { "\"x\"", "[]" };
	char *out;

	out = patch("{}", k1, v1, 1);
	ok(json_valid(out), "{} plus a key is valid JSON");
	free(out);
	out = patch("{}", k3, v3, 2);
	ok_str_eq(out, "{\n  \"a\": \"x\",\n  \"ab\": []}",
	    "{} plus two keys: one comma between them");
	ok(json_valid(out), "{} plus two keys is valid JSON");
	free(out);
	out = patch("{ }\n", k1, v1, 1);
	ok(json_valid(out) && out[strlen(out) - 1] == '\n',
	    "{ } plus a key is valid JSON, trailing newline kept");
	free(out);
	out = patch("{\"a\":1,\"b\":[1,2]}", k2, v2, 1);
	ok_str_eq(out, "{\"a\":1,\"b\":3}", "compact: last value replaced");
	free(out);
	out = patch("{\"a\":true}", k1, v1, 1);
	ok_str_eq(out, "{\"a\":1}", "a literal directly before '}'");
	free(out);
	out = patch("{\"a\" : 5 , \"b\": 2}", k1, v1, 1);
	ok_str_eq(out, "{\"a\" : 1 , \"b\": 2}", "spaces around ':' and ','");
	free(out);
	out = patch("{\"we\\\"ird\": {\"a\": 2}, \"ab\": 0, \"a\": 9}", k3,
	    v3, 2);
	ok_str_eq(out, "{\"we\\\"ird\": {\"a\": 2}, \"ab\": [], \"a\": \"x\"}",
	    "escaped key, nested namesake, and a key that extends another");
	ok(json_valid(out), "still valid JSON");
	free(out);
	out = patch("{\"s\": \"x\\\\\", \"a\": 0}", k1, v1, 1);
	ok_str_eq(out, "{\"s\": \"x\\\\\", \"a\": 1}",
	    "a string ending in an escaped backslash");
	free(out);
	out = patch("{\"a\": 1}", k3, v3, 0);
	ok_str_eq(out, "{\"a\": 1}", "no keys: the text is unchanged");
	free(out);
}

static void
test_suggest(void)
{
	static const char *const keys[] = { "merge_method", "models", "slices",
		"parameters", "base_model", "dtype" };
	char longw[80];

	ok_str_eq(graph_suggest("paramters", keys, 6), "parameters",
	    "paramters -> parameters");
	ok_str_eq(graph_suggest("modles", keys, 6), "models",
	    "modles -> models");
	ok_str_eq(graph_suggest("dtpye", keys, 6), "dtype", "dtpye -> dtype");
	ok_str_eq(graph_suggest("Models", keys, 6), "models",
	    "Models -> models");
	ok_str_eq(graph_suggest("merge-method", keys, 6), "merge_method",
	    "merge-method -> merge_method");
	ok(graph_suggest("xyz", keys, 6) == NULL, "xyz: no suggestion");
	ok(graph_suggest("base_modelxxxx", keys, 6) == NULL,
	    "four edits away: no suggestion");
	ok(graph_suggest("tokenizer", keys, 6) == NULL,
	    "tokenizer: nothing close enough");
	ok(graph_suggest("", keys, 6) == NULL, "empty word: no suggestion");
	ok(graph_suggest("dtype", keys, 0) == NULL, "no candidates");
	memset(longw, 'a', sizeof longw - 1);
	longw[sizeof longw - 1] = '\0';
	ok(graph_suggest(longw, keys, 6) == NULL, "a very long word is safe");
}

static void
test_printable(void)
{
	char *s;

	s = graph_text_printable(xstrdup("plain \xc3\xa9 text"));
	ok_str_eq(s, "plain \xc3\xa9 text", "printable text is unchanged");
	free(s);
	s = graph_text_printable(xstrdup("a\nb\tc\rd\x1b[31me\x7f"));
	ok_str_eq(s, "a\\nb\\tc\\rd\\x1b[31me\\x7f",
	    "line breaks and escapes are written out, one line, inert");
	free(s);
	ok(graph_text_printable(NULL) == NULL, "NULL stays NULL");
}

int
main(void)
{
	tap_plan_lazy();
	test_parse_size();
	test_format_size();
	test_parse_duration();
	test_strmap_big();
	test_strmap_small();
	test_strmap_len();
	test_json_patch_donor();
	test_json_patch_edges();
	test_suggest();
	test_printable();
	test_rank();
	test_find();
	return tap_done();
}

/* One kind of keys for test_rank: what a row of deltas may look like. */
static uint32_t
rank_key(int kind, uint64_t *r)
{
	uint32_t v = (uint32_t)rng_next(r);

	switch (kind) {
	case 0:
		return 7;			/* all equal */
	case 1:
		return v % 3 * 0x00800000u;	/* three values, many ties */
	case 2:
		return v & 0x7fff0000u;		/* 16-bit-like: low bits 0 */
	default:
		return v & 0x7fffffffu;		/* every bit varies */
	}
}

static void
test_rank(void)
{
	static const uint32_t lens[] = { 1, 2, 3, 4, 5, 7, 8, 9, 255, 1027,
	    2048 };
	uint32_t key[2048], rank[2048], want, i, j, n;
	uint64_t tmp[2 * 2048], r = 99;
	size_t l;
	int kind, bad;

	for (kind = 0; kind < 4; kind++) {
		bad = 0;
		for (l = 0; l < sizeof lens / sizeof *lens; l++) {
			n = lens[l];
			for (i = 0; i < n; i++)
				key[i] = rank_key(kind, &r);
			sel_rank(key, n, rank, tmp);
			for (i = 0; i < n; i++) {
				for (want = 0, j = 0; j < n; j++)
					want += key[j] < key[i] ||
					    (key[j] == key[i] && j < i);
				bad += rank[i] != want;
			}
		}
		ok(bad == 0, "sel_rank: keys of kind %d ranked as a stable "
		    "sort would (%d wrong)", kind, bad);
	}
}

static int
key_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/*
 * sel_find, which arcee_fusion runs over its sample in memory: the keys
 * at the wanted ascending positions are those of a sorted copy, with how
 * many keys equal each.
 */
static void
test_find(void)
{
	static const uint32_t lens[] = { 1, 2, 3, 9, 1027, 70000 };
	static uint32_t key[70000], sorted[70000];
	uint64_t hist[SEL_BINS], r = 7, eq;
	struct sel_cut c[3];
	uint32_t n, i;
	size_t l, j;
	int kind, bad;

	for (kind = 0; kind < 4; kind++) {
		bad = 0;
		for (l = 0; l < sizeof lens / sizeof *lens; l++) {
			n = lens[l];
			for (i = 0; i < n; i++)
				key[i] = sorted[i] = rank_key(kind, &r);
			qsort(sorted, n, sizeof *sorted, key_cmp);
			memset(c, 0, sizeof c);
			for (j = 0; j < 3; j++) {
				c[j].on = true;
				c[j].rank = (uint64_t)(n - 1) * j / 2;
			}
			if (sel_find(c, 3, key, n, hist) != NULL) {
				bad++;
				continue;
			}
			for (j = 0; j < 3; j++) {
				for (eq = 0, i = 0; i < n; i++)
					eq += sorted[i] == sorted[c[j].rank];
				bad += c[j].key != sorted[c[j].rank] ||
				    c[j].eq != eq;
			}
		}
		ok(bad == 0, "sel_find: keys of kind %d, the smallest, median "
		    "and largest as a sort finds them (%d wrong)", kind, bad);
	}
}
