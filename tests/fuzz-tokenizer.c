/* SPDX-License-Identifier: MIT */
/*
 * fuzz-tokenizer.c: fuzz target for the tokenizer reader
 * (graph/tokenizer.c): a tokenizer.json's vocabulary and added tokens, or
 * a SentencePiece tokenizer.model's pieces with a tokenizer_config.json's
 * added_tokens_decoder.
 *
 * An input that starts with '{' is a tokenizer.json.  Any other input is
 * a tokenizer.model, followed, after the first "\n\n{" if there is one,
 * by the tokenizer_config.json that goes with it (so the fuzzer reaches
 * the added tokens of a slow tokenizer).  Besides crashes and sanitizer
 * reports, the target checks what the reader promises: on failure nothing
 * is returned and there is one cause, a non-empty line naming the file;
 * on success at least one token, every id below TOKZ_MAX_IDS, every text
 * valid UTF-8, non-empty and mapping back to its id (or, shadowed, to
 * the added token of that text).  tokz_compact then keeps every text and
 * id.  Any broken promise aborts.
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

#define FUZZ_NAME "fuzz-tokenizer"
#include "fuzz.h"

static void
check_result(int rc, struct tokz *tz, char *cause, const char *file)
{
	const char *why;
	int64_t id, back;

	if (rc != 0) {
		check(tz == NULL, "nothing returned on failure");
		check(cause != NULL && strncmp(cause, file, strlen(file)) == 0 &&
		    strchr(cause, '\n') == NULL, "one cause, one line, naming "
		    "the file");
		free(cause);
		return;
	}
	check(tz != NULL && cause == NULL, "a tokenizer, no cause");
	check(tz->nmodel >= 1, "at least one token");
	check(tz->nids <= (int64_t)TOKZ_MAX_IDS, "ids below the limit");
	for (id = 0; id < tz->nids; id++) {
		if (tz->tok[id].text == NULL)
			continue;
		check(tz->tok[id].text[0] != '\0' &&
		    jscan_utf8_ok(tz->tok[id].text, strlen(tz->tok[id].text),
		    &why), "texts are UTF-8 and not empty");
		check(tokz_id(tz, tz->tok[id].text, &back) &&
		    (back == id || tz->tok[id].shadowed),
		    "each text maps back to its id, unless an added token's "
		    "id shadows it");
	}
	tokz_compact(tz);
	for (id = 0; id < tz->nids; id++)
		check(tz->tok[id].text == NULL || (tokz_id(tz,
		    tz->tok[id].text, &back) && (back == id ||
		    tz->tok[id].shadowed)), "compact: the same texts and ids");
	tokz_free(tz);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char sep[] = "\n\n{";
	struct tokz *tz = NULL;
	char *cause = NULL;
	const uint8_t *cfg = NULL;
	size_t len = size, i;
	int rc;

	if (size > 0 && data[0] == '{') {
		rc = tokz_parse_json("tokenizer.json", (const char *)data, size,
		    &tz, &cause);
		check_result(rc, tz, cause, "tokenizer.json");
		return 0;
	}
	for (i = 0; i + 3 <= size; i++)
		if (memcmp(data + i, sep, 3) == 0) {
			len = i;
			cfg = data + i + 2;
			break;
		}
	rc = tokz_parse_spm("tokenizer.model", data, len,
	    "tokenizer_config.json", (const char *)cfg,
	    cfg != NULL ? size - (size_t)(cfg - data) : 0, &tz, &cause);
	check_result(rc, tz, cause, "tokenizer");
	return 0;
}

#ifndef FUZZ_LIBFUZZER
#include "fuzz-main.h"
#endif
