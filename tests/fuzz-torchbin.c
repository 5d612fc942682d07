/* SPDX-License-Identifier: MIT */
/*
 * fuzz-torchbin.c: fuzz target for the torch checkpoint readers: the zip
 * directory reader (graph/zip.c), the restricted unpickler
 * (graph/pickle.c) and what joins them (graph/torchbin.c).
 *
 * An input that starts like a zip archive ("PK") is a whole
 * pytorch_model.bin, read by torchbin_parse; any other input is a data.pkl
 * alone, read by torchpkl_parse, so that the fuzzer reaches the unpickler
 * without having to build an archive around each pickle.  Besides crashes
 * and sanitizer reports, the target checks what the readers promise: on
 * failure nothing is returned and there is one cause, a non-empty line; on
 * success every tensor has a name that is valid UTF-8 and unique and
 * found by the name map, at most GRAPH_MAX_DIMS dimensions whose product
 * is its element count, and (from an archive) a float dtype unless it is
 * marked skip (a buffer) and a byte
 * range inside the file of exactly its element count times the dtype's
 * size.  Any broken promise aborts.
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

#define FUZZ_NAME "fuzz-torchbin"
#include "fuzz.h"

static void
check_cause(char *cause)
{
	check(cause != NULL && cause[0] != '\0' &&
	    strchr(cause, '\n') == NULL, "one cause, one line");
	free(cause);
}

static uint64_t
shape_numel(int ndim, const int64_t *shape)
{
	uint64_t n = 1;
	int k;

	check(ndim >= 0 && ndim <= GRAPH_MAX_DIMS, "ndim");
	for (k = 0; k < ndim; k++) {
		check(shape[k] >= 0, "no negative dimension");
		n *= (uint64_t)shape[k];
	}
	return n;
}

static void
fuzz_archive(const uint8_t *data, size_t size)
{
	struct safetensors_tensor *t = NULL;
	struct strmap names = { 0 };
	struct zip_src src = { data, -1, size };
	const char *why;
	char *cause = NULL;
	size_t n = 0, i, at;

	if (torchbin_parse(&src, &t, &n, &names, &cause) != 0) {
		check(t == NULL && n == 0, "nothing returned on failure");
		check(names.slots == NULL, "no names on failure");
		check_cause(cause);
		return;
	}
	check(cause == NULL, "no cause on success");
	check(n <= SAFETENSORS_MAX_TENSORS, "at most the limit of tensors");
	for (i = 0; i < n; i++) {
		check(jscan_utf8_ok(t[i].name, strlen(t[i].name), &why),
		    "UTF-8 names");
		check(strmap_get(&names, t[i].name, &at) && at == i,
		    "each name maps to its own tensor (so names are unique)");
		check(t[i].skip || graph_dtype_is_float(t[i].dtype),
		    "integer and bool tensors are skipped");
		check(t[i].numel == shape_numel(t[i].ndim, t[i].shape),
		    "numel is the shape's product");
		check(t[i].begin <= t[i].end && t[i].end <= size,
		    "tensor inside the file");
		check(t[i].end - t[i].begin ==
		    t[i].numel * graph_dtype_size(t[i].dtype),
		    "byte count is numel times the dtype size");
	}
	for (i = 0; i < n; i++)
		free(t[i].name);
	free(t);
	strmap_free(&names);
}

static void
fuzz_pickle(const uint8_t *data, size_t size)
{
	struct torchpkl_tensor *t = NULL;
	char *cause = NULL;
	size_t n = 0, i, j;

	if (torchpkl_parse(data, size, 64, &t, &n, &cause) != 0) {
		check(t == NULL && n == 0, "nothing returned on failure");
		check_cause(cause);
		return;
	}
	check(cause == NULL, "no cause on success");
	check(n <= 64, "at most the limit of tensors");
	for (i = 0; i < n; i++) {
		check(t[i].name != NULL && t[i].key != NULL, "name and key");
		check(t[i].numel == shape_numel(t[i].ndim, t[i].shape),
		    "numel is the shape's product");
		check(graph_dtype_size(t[i].dtype) > 0, "a known dtype");
		for (j = 0; j < i; j++)
			check(strcmp(t[i].name, t[j].name) != 0,
			    "a key set twice is one tensor");
	}
	torchpkl_free(t, n);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size >= 2 && data[0] == 'P' && data[1] == 'K')
		fuzz_archive(data, size);
	else
		fuzz_pickle(data, size);
	return 0;
}

#ifndef FUZZ_LIBFUZZER
#include "fuzz-main.h"
#endif
