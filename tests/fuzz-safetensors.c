/* SPDX-License-Identifier: MIT */
/*
 * fuzz-safetensors.c: fuzz target for the safetensors header parser
 * (graph/safetensors.c, safetensors_parse).
 *
 * The input is a whole .safetensors file.  Besides crashes and sanitizer
 * reports, the target checks what the parser promises its callers: on
 * success every tensor lies inside the data section, its byte count is its
 * element count times its dtype's size, the tensors sorted by offset tile
 * the data section exactly (no overlap, no hole, nothing after the last),
 * names are unique and valid UTF-8 (checked here by decoding, independently
 * of the parser's table), there are at most SAFETENSORS_MAX_TENSORS; and the
 * header that safetensors_header_build writes for the same tensors parses
 * back to the same list.  On failure there is exactly one
 * cause, a non-empty line.  Any broken promise aborts.
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

#define FUZZ_NAME "fuzz-safetensors"
#include "fuzz.h"



static int
tensor_begin_cmp(const void *a, const void *b)
{
	const struct safetensors_tensor *x = a, *y = b;

	/* Then by end: an empty tensor before the one starting with it. */
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	return x->end < y->end ? -1 : x->end > y->end;
}

static int
tensor_name_cmp(const void *a, const void *b)
{
	const struct safetensors_tensor *x = a, *y = b;

	return strcmp(x->name, y->name);
}

static void
free_tensors(struct safetensors_tensor *t, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(t[i].name);
	free(t);
}

/*
 * Whether s is UTF-8: each sequence decoded by its bits, then held to the
 * shortest form for its code point, outside the surrogates and at most
 * U+10FFFF.
 */
static bool
utf8_ok(const unsigned char *s)
{
	unsigned long cp;
	int n, i;

	while (*s != '\0') {
		if (*s < 0x80) {
			s++;
			continue;
		}
		n = (*s & 0xe0) == 0xc0 ? 2 : (*s & 0xf0) == 0xe0 ? 3 :
		    (*s & 0xf8) == 0xf0 ? 4 : 0;
		if (n == 0)
			return false;
		cp = *s & (0x7f >> n);
		for (i = 1; i < n; i++) {
			if ((s[i] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i] & 0x3f);
		}
		if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
		    (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		s += n;
	}
	return true;
}

/* The promises of a successful parse, on a copy sorted by offset. */
static void
check_layout(const struct safetensors_tensor *t, size_t n, size_t len,
    uint64_t data_start)
{
	struct safetensors_tensor *s;
	uint64_t far = 0;
	size_t i;

	check(data_start >= 10 && data_start <= len, "data start in the file");
	check(n <= SAFETENSORS_MAX_TENSORS, "at most the limit of tensors");
	for (i = 0; i < n; i++) {
		check(t[i].name != NULL, "a name");
		check(utf8_ok((const unsigned char *)t[i].name), "UTF-8 names");
		check(t[i].begin >= data_start && t[i].begin <= t[i].end &&
		    t[i].end <= len, "tensor inside the data section");
		check(t[i].end - t[i].begin ==
		    t[i].numel * graph_dtype_size(t[i].dtype),
		    "byte count is numel times the dtype size");
		check(t[i].ndim >= 0 && t[i].ndim <= GRAPH_MAX_DIMS, "ndim");
	}
	if (n == 0) {
		check(data_start == len, "no tensors, no data");
		return;
	}
	s = malloc(n * sizeof *s);
	check(s != NULL, "memory");
	memcpy(s, t, n * sizeof *s);
	qsort(s, n, sizeof *s, tensor_name_cmp);
	for (i = 1; i < n; i++)
		check(strcmp(s[i - 1].name, s[i].name) != 0, "unique names");
	qsort(s, n, sizeof *s, tensor_begin_cmp);
	far = data_start;
	for (i = 0; i < n; i++) {
		/* Empty tensors sit at a boundary; the rest follow on. */
		check(s[i].begin == far, "no overlap and no hole");
		far = s[i].end;
	}
	check(far == len, "nothing after the last tensor");
	free(s);
}

/* Writes the header back and parses it again: the same tensors. */
static void
check_round_trip(const struct safetensors_tensor *t, size_t n, size_t len,
    uint64_t data_start)
{
	struct safetensors_tensor *rel, *back = NULL;
	uint8_t *hdr, *file;
	size_t hlen, nback = 0, i, dlen = len - data_start;
	uint64_t start2 = 0;
	char *cause = NULL;
	int rc;

	rel = malloc((n ? n : 1) * sizeof *rel);
	check(rel != NULL, "memory");
	for (i = 0; i < n; i++) {
		rel[i] = t[i];
		rel[i].begin -= data_start;
		rel[i].end -= data_start;
	}
	hdr = safetensors_header_build(rel, n, &hlen);
	file = malloc(hlen + dlen + 1);
	check(file != NULL, "memory");
	memcpy(file, hdr, hlen);
	memset(file + hlen, 0, dlen);
	rc = safetensors_parse(file, hlen + dlen, &back, &nback, &start2,
	    &cause);
	check(rc == 0, "the rebuilt header parses");
	check(nback == n, "the same number of tensors");
	for (i = 0; i < n; i++) {
		check(strcmp(back[i].name, t[i].name) == 0, "same name");
		check(back[i].dtype == t[i].dtype, "same dtype");
		check(back[i].ndim == t[i].ndim && memcmp(back[i].shape,
		    t[i].shape, sizeof t[i].shape[0] * (size_t)t[i].ndim) == 0,
		    "same shape");
		check(back[i].begin - start2 == rel[i].begin &&
		    back[i].end - start2 == rel[i].end, "same offsets");
	}
	free_tensors(back, nback);
	free(file);
	free(hdr);
	free(rel);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct safetensors_tensor *t = NULL;
	size_t n = 0;
	uint64_t data_start = 0;
	char *cause = NULL;

	if (safetensors_parse(data, size, &t, &n, &data_start, &cause) != 0) {
		check(t == NULL && n == 0, "nothing returned on failure");
		check(cause != NULL && cause[0] != '\0' &&
		    strchr(cause, '\n') == NULL, "one cause, one line");
		free(cause);
		return 0;
	}
	check(cause == NULL, "no cause on success");
	check_layout(t, n, size, data_start);
	check_round_trip(t, n, size, data_start);
	free_tensors(t, n);
	return 0;
}

#ifndef FUZZ_LIBFUZZER
#include "fuzz-main.h"
#endif
