/* SPDX-License-Identifier: MIT */
/*
 * fuzz-spm.c: fuzz target for the SentencePiece model reader
 * (graph/spm.c), which reads tokenizer.model files from anyone.
 *
 * The input is a whole tokenizer.model.  Besides crashes and sanitizer
 * reports, the target checks what the reader promises: on failure nothing
 * is returned and there is one cause, a non-empty line; on success at
 * least one and at most SPM_MAX_PIECES pieces, each with a non-empty text
 * that is valid UTF-8 (no NUL) and unique, and a type among
 * SentencePiece's six.  Any broken promise aborts.
 *
 * Built with -DFUZZ_LIBFUZZER it is a libFuzzer target; otherwise main()
 * replays corpus files and directories named on the command line, one TAP
 * line per file, for the meson "fuzz" suite.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

#define FUZZ_NAME "fuzz-spm"
#include "fuzz.h"

static void
check_cause(char *cause)
{
	check(cause != NULL && cause[0] != '\0' &&
	    strchr(cause, '\n') == NULL, "one cause, one line");
	free(cause);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spm_piece *v = NULL;
	struct strmap texts = { 0 };
	const char *why;
	char *cause = NULL;
	size_t n = 0, i, at;

	if (spm_parse(data, size, &v, &n, &cause) != 0) {
		check(v == NULL && n == 0, "nothing returned on failure");
		check_cause(cause);
		return 0;
	}
	check(cause == NULL, "no cause on success");
	check(n >= 1 && n <= SPM_MAX_PIECES, "1 to SPM_MAX_PIECES pieces");
	for (i = 0; i < n; i++) {
		check(v[i].text != NULL && v[i].text[0] != '\0',
		    "every piece has a text");
		check(jscan_utf8_ok(v[i].text, strlen(v[i].text), &why),
		    "UTF-8 texts");
		check(!strmap_get(&texts, v[i].text, &at), "unique texts");
		strmap_put(&texts, v[i].text, i);
		check(v[i].type >= SPM_NORMAL && v[i].type <= SPM_BYTE,
		    "a type among SentencePiece's");
	}
	strmap_free(&texts);
	spm_free(v, n);
	return 0;
}

#ifndef FUZZ_LIBFUZZER
#include "fuzz-main.h"
#endif
