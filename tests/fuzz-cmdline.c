/* SPDX-License-Identifier: MIT */
/*
 * fuzz-cmdline.c: fuzz target for a hook's command line (common/
 * cmdline.c), which mergectl splits from a user's --on-done and merged
 * from its own --on-done.
 *
 * Invariants: a split succeeds exactly when it gives no cause, with 1 to
 * CMDLINE_MAX_WORDS words and a program word that is not empty; the
 * words joined again (quoted for sh) split back to the same words;
 * nothing leaks or reads outside the input.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmdline.h"

#define FUZZ_NAME "fuzz-cmdline"
#include "fuzz.h"

static void
round_trip(char **w, size_t n)
{
	char *joined = cmdline_join(w), **again = NULL, *cause = NULL;
	size_t m, i;

	/* Quoting makes it longer: it may pass the byte limit. */
	if (cmdline_split(joined, &again, &m, &cause) != 0) {
		check(strlen(joined) > CMDLINE_MAX_BYTES, "joined words split");
		free(cause);
		free(joined);
		return;
	}
	check(m == n, "as many words come back");
	for (i = 0; i < n; i++)
		check(strcmp(w[i], again[i]) == 0, "the same words come back");
	check(again[n] == NULL, "the vector ends");
	cmdline_free(again);
	free(joined);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text, **w = NULL, *cause = NULL;
	size_t n;
	int rc;

	/* Both callers have a NUL-terminated string. */
	if ((text = malloc(size + 1)) == NULL)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	rc = cmdline_split(text, &w, &n, &cause);
	check((rc == 0) == (cause == NULL), "a cause exactly on failure");
	if (rc == 0) {
		check(n >= 1 && n <= CMDLINE_MAX_WORDS && w[0][0] != '\0',
		    "1 to 64 words, a program first");
		round_trip(w, n);
		cmdline_free(w);
	} else {
		check(w == NULL, "nothing on failure");
		free(cause);
	}
	free(text);
	return 0;
}

#ifndef FUZZ_LIBFUZZER
#include "fuzz-main.h"
#endif
