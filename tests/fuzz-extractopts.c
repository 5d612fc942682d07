/* SPDX-License-Identifier: MIT */
/*
 * fuzz-extractopts.c: fuzz target for an extract-lora job's config, the
 * JSON object any local user sends to the daemon
 * (common/extractopts-json.c), then the planner's check of its values
 * (graph_extract_opts_check, which compiles the regular expressions).
 *
 * Invariants: a parse succeeds exactly when it names model and base and
 * gives no cause; what it parsed prints again to text that parses to the
 * same options; nothing leaks or reads outside the input.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "extractopts-json.h"

#define FUZZ_NAME "fuzz-extractopts"
#include "fuzz.h"

static bool
same_list(const char *const *a, size_t na, const char *const *b, size_t nb)
{
	size_t i;

	if (na != nb)
		return false;
	for (i = 0; i < na; i++)
		if (strcmp(a[i], b[i]) != 0)
			return false;
	return true;
}

/* The options printed and parsed again are the same options. */
static void
round_trip(const struct graph_extract_opts *o)
{
	struct graph_extract_opts p;
	struct extractopts keep;
	char *text = extractopts_to_text(o), *cause = NULL;

	check(text != NULL, "parsed options print");
	graph_extract_opts_default(&p);
	check(extractopts_parse(text, &p, &keep, &cause) == 0,
	    "printed options parse");
	check(strcmp(p.model, o->model) == 0 && strcmp(p.base, o->base) == 0,
	    "the references come back");
	check(p.max_rank == o->max_rank && p.fast == o->fast &&
	    p.embed_lora == o->embed_lora && p.distribute_scale ==
	    o->distribute_scale && p.skip_undecomposable ==
	    o->skip_undecomposable && p.power_iters == o->power_iters &&
	    p.oversample == o->oversample && p.sv_epsilon == o->sv_epsilon,
	    "the values come back");
	check(same_list(p.save_modules, p.nsave_modules, o->save_modules,
	    o->nsave_modules) && same_list(p.include, p.ninclude, o->include,
	    o->ninclude) && same_list(p.exclude, p.nexclude, o->exclude,
	    o->nexclude), "the lists come back");
	extractopts_fini(&keep);
	free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct graph_extract_opts o;
	struct extractopts keep;
	char *text, *cause = NULL;
	int rc;

	/* The daemon hands the parser a NUL-terminated string. */
	if ((text = malloc(size + 1)) == NULL)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	graph_extract_opts_default(&o);
	rc = extractopts_parse(text, &o, &keep, &cause);
	check((rc == 0) == (cause == NULL), "a cause exactly on failure");
	if (rc == 0) {
		check(o.model != NULL && o.base != NULL, "model and base set");
		round_trip(&o);
		if (graph_extract_opts_check(&o, &cause) != 0) {
			check(cause != NULL, "a refusal says why");
			free(cause);
		}
	} else {
		free(cause);
	}
	extractopts_fini(&keep);
	free(text);
	return 0;
}

#ifndef FUZZ_LIBFUZZER
#include "fuzz-main.h"
#endif
