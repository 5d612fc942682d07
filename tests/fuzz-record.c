/* SPDX-License-Identifier: MIT */
/*
 * fuzz-record.c: fuzz target for a resumable job's record
 * (graph/record.c), which a job's own user writes and a daemon, possibly
 * root, reads (merged --backend slurm).  The input is the file's bytes.
 *
 * Invariants: a record parses exactly when it gives no cause; a parsed
 * one has a 16-digit plan, no more done than total, one '0' or '1' per
 * shard and shards_done its '1's, and an error without control
 * characters; formatting a parsed record and parsing that gives the same
 * record back, within GRAPH_RECORD_MAX bytes.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"

#define FUZZ_NAME "fuzz-record"
#include "fuzz.h"

static void
check_record(const struct graph_record *r)
{
	size_t i, ones = 0;

	check(strlen(r->plan) == 16, "a plan of 16 digits");
	check(r->bytes_done <= r->bytes_total && r->tensors_done <=
	    r->tensors_total, "no more done than total");
	check(r->shards != NULL, "shards");
	for (i = 0; r->shards[i] != '\0'; i++) {
		check(r->shards[i] == '0' || r->shards[i] == '1',
		    "a shard is 0 or 1");
		ones += r->shards[i] == '1';
	}
	check(i > 0 && ones == r->shards_done, "shards_done counts the 1s");
	for (i = 0; r->error != NULL && r->error[i] != '\0'; i++) {
		check((unsigned char)r->error[i] >= 0x20 && r->error[i] !=
		    0x7f, "no control characters in the error");
		check(!((unsigned char)r->error[i] == 0xc2 &&
		    (unsigned char)r->error[i + 1] >= 0x80 &&
		    (unsigned char)r->error[i + 1] <= 0x9f), "no C1 controls "
		    "in the error");
	}
}

static bool
same(const struct graph_record *a, const struct graph_record *b)
{
	return strcmp(a->plan, b->plan) == 0 && a->bytes_done ==
	    b->bytes_done && a->bytes_total == b->bytes_total &&
	    a->tensors_done == b->tensors_done && a->tensors_total ==
	    b->tensors_total && a->memory_peak == b->memory_peak &&
	    strcmp(a->shards, b->shards) == 0 && a->shards_done ==
	    b->shards_done && (a->error == NULL) == (b->error == NULL) &&
	    (a->error == NULL || strcmp(a->error, b->error) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct graph_record r, again;
	char *cause = NULL, *text;
	int rc;

	rc = graph_record_parse((const char *)data, size, &r, &cause);
	check((rc == 0) == (cause == NULL), "a cause exactly on failure");
	free(cause);
	if (rc != 0)
		return 0;
	check_record(&r);
	text = graph_record_format(&r);
	check(strlen(text) <= GRAPH_RECORD_MAX, "a record that fits");
	cause = NULL;
	check(graph_record_parse(text, strlen(text), &again, &cause) == 0 &&
	    same(&r, &again), "formatted and parsed again, the same");
	free(text);
	graph_record_fini(&again);
	graph_record_fini(&r);
	return 0;
}

#ifndef FUZZ_LIBFUZZER
#include "fuzz-main.h"
#endif
