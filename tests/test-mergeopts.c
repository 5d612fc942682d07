/* SPDX-License-Identifier: MIT */
/*
 * test-mergeopts.c: unit tests for the merge options' one set of defaults
 * (graph/opts.c) and their one mapping to the wire
 * (common/mergeopts-json.c).
 *
 * The wire names are spelt out here as literals, not with the PROTO_F_
 * constants, so that renaming a constant cannot silently change what an
 * older mergectl or merged sends or expects.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "graph.h"
#include "mergeopts-json.h"
#include "tap.h"

static void test_defaults(void);
static void test_round_trip(void);
static void test_absent(void);
static void test_wrong_types(void);

/* MemTotal from /proc/meminfo, in bytes: what "RAM" means here. */
static uint64_t
mem_total(void)
{
	FILE *fp = fopen("/proc/meminfo", "r");
	unsigned long long kb = 0;
	char line[256];

	while (fp != NULL && fgets(line, sizeof line, fp) != NULL)
		if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
			break;
	if (fp != NULL)
		fclose(fp);
	return (uint64_t)kb * 1024;
}

static void
test_defaults(void)
{
	struct graph_merge_opts o;
	uint64_t want = mem_total() / 4;

	memset(&o, 0xa5, sizeof o);
	graph_merge_opts_default(&o);
	ok_int_eq(o.memory, 0, "memory: 0, the runner's whole budget");
	ok_int_eq(o.shard_size, 5000000000ll, "shard size: mergekit's 5B");
	ok(!o.has_seed && o.seed == 0, "no seed: one is drawn");
	ok(!o.allow_crimes && !o.force, "no crimes, no --force");
	ok(o.copy_tokenizer && o.model_card, "tokenizer and card copied");
	if (want < (256ull << 20))
		want = 256ull << 20;
	ok_int_eq(graph_default_memory(), want,
	    "the one default budget is a quarter of MemTotal");
}

/* Every field goes out under its name and comes back as it was. */
static void
test_round_trip(void)
{
	struct graph_merge_opts a, b;
	cJSON *j = cJSON_CreateObject();
	char *cause = NULL;

	graph_merge_opts_default(&a);
	a.memory = 3ull << 30;
	a.shard_size = 123456789;
	a.has_seed = true;
	a.seed = 1ull << 53;
	a.allow_crimes = true;
	a.copy_tokenizer = false;
	a.model_card = false;
	a.force = true;
	mergeopts_to_json(&a, j);
	ok_int_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "memory")),
	    3ull << 30, "memory");
	ok_int_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "shard_size")),
	    123456789, "shard_size");
	ok_int_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "seed")),
	    1ull << 53, "seed, up to 2^53");
	ok(cJSON_IsTrue(cJSON_GetObjectItem(j, "allow_crimes")),
	    "allow_crimes");
	ok(cJSON_IsFalse(cJSON_GetObjectItem(j, "copy_tokenizer")),
	    "copy_tokenizer");
	ok(cJSON_IsFalse(cJSON_GetObjectItem(j, "model_card")), "model_card");
	ok(cJSON_IsTrue(cJSON_GetObjectItem(j, "force")), "force");
	ok_int_eq(cJSON_GetArraySize(j), 7, "seven fields, no more");
	graph_merge_opts_default(&b);
	ok_int_eq(mergeopts_from_json(j, &b, &cause), 0, "read back");
	ok(cause == NULL, "no cause on success");
	ok(a.memory == b.memory && a.shard_size == b.shard_size &&
	    a.has_seed == b.has_seed && a.seed == b.seed &&
	    a.allow_crimes == b.allow_crimes &&
	    a.copy_tokenizer == b.copy_tokenizer &&
	    a.model_card == b.model_card && a.force == b.force,
	    "every field as it was");
	cJSON_Delete(j);
}

/* Not capped, no seed: not sent; absent fields keep the defaults. */
static void
test_absent(void)
{
	struct graph_merge_opts a, b;
	cJSON *j = cJSON_CreateObject();
	char *cause = NULL;

	graph_merge_opts_default(&a);
	mergeopts_to_json(&a, j);
	ok(cJSON_GetObjectItem(j, "memory") == NULL, "no cap, no memory");
	ok(cJSON_GetObjectItem(j, "seed") == NULL, "no seed, no seed field");
	cJSON_Delete(j);
	j = cJSON_Parse("{\"v\":2,\"op\":\"submit\"}");
	graph_merge_opts_default(&b);
	ok_int_eq(mergeopts_from_json(j, &b, &cause), 0, "nothing given");
	ok(b.memory == 0 && !b.has_seed && b.shard_size == 5000000000ull &&
	    b.copy_tokenizer && b.model_card && !b.force && !b.allow_crimes,
	    "the defaults stand");
	cJSON_Delete(j);
}

/* A field of the wrong type is refused, naming it; nothing is guessed. */
static void
test_wrong_types(void)
{
	static const struct {
		const char *json;
		const char *cause;
	} bad[] = {
		{ "{\"memory\":\"1G\"}", "'memory' must be an integer from 0 "
		    "to 2^53" },
		{ "{\"memory\":-1}", "'memory' must be an integer" },
		{ "{\"memory\":1.5}", "'memory' must be an integer" },
		{ "{\"seed\":9007199254740994}", "'seed' must be an integer" },
		{ "{\"shard_size\":null}", "'shard_size' must be an integer" },
		{ "{\"force\":1}", "'force' must be true or false" },
		{ "{\"allow_crimes\":\"yes\"}", "'allow_crimes' must be true "
		    "or false" },
		{ "{\"copy_tokenizer\":0}", "'copy_tokenizer' must be true or "
		    "false" },
		{ "{\"model_card\":[]}", "'model_card' must be true or "
		    "false" },
	};
	struct graph_merge_opts o;
	char *cause;
	cJSON *j;
	size_t i;

	for (i = 0; i < sizeof bad / sizeof *bad; i++) {
		j = cJSON_Parse(bad[i].json);
		graph_merge_opts_default(&o);
		cause = NULL;
		ok_int_eq(mergeopts_from_json(j, &o, &cause), -1, "%s refused",
		    bad[i].json);
		ok(cause != NULL && strncmp(cause, bad[i].cause,
		    strlen(bad[i].cause)) == 0, "%s: %s", bad[i].json,
		    cause ? cause : "(none)");
		free(cause);
		cJSON_Delete(j);
	}
}

int
main(void)
{
	tap_plan_lazy();
	test_defaults();
	test_round_trip();
	test_absent();
	test_wrong_types();
	return tap_done();
}
