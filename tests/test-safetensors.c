/* SPDX-License-Identifier: MIT */
/*
 * test-safetensors.c: unit tests for graph/safetensors.c, the reader of
 * every input model's headers and the builder of every output header.
 *
 * Files are built byte by byte in memory: a valid one (metadata, tensors of
 * several dtypes, a zero-sized and a scalar tensor) must parse to absolute
 * offsets (8 + header length + the relative offset), and every kind of
 * malformed header must be refused with a negative error and a message
 * naming the problem, because input files come from anywhere.  Headers made
 * by graph_st_header_build must be 8-byte aligned and parse back to the
 * same tensors.  graph_st_open and graph_st_check_unchanged are run on real
 * files in a private temporary directory: a truncated file, a missing one,
 * a directory, and a file rewritten after it was opened.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>

#include "graph-int.h"
#include "tap.h"
#include "tmpdir.h"

struct bad_header {
	const char *what;
	const char *json;
	size_t data;		/* bytes of data after the header */
	const char *phrase;	/* must appear in the cause */
};

static uint8_t *st_build(const char *, size_t, size_t, size_t *);
static void st_free(struct graph_st_tensor *, size_t);
static void check_bad(const uint8_t *, size_t, const char *, const char *);
static void test_valid(void);
static void test_scalar_and_empty(void);
static void test_framing(void);
static void test_bad_headers(void);
static void test_zero_size_between_overlap(void);
static void test_header_build(void);
static void test_open(const char *);
static void test_unchanged(const char *);
static int reopen(const char *, struct graph_st_file **);

static const struct bad_header bad_headers[] = {
	{ "invalid JSON", "{\"a\": {\"dtype\": \"F32\",", 0, "not valid JSON" },
	{ "top-level array", "[1, 2, 3]", 0, "JSON" },
	{ "top-level string", "\"abc\"", 0, "JSON" },
	{ "unknown dtype",
	    "{\"a\":{\"dtype\":\"F12\",\"shape\":[1],\"data_offsets\":[0,4]}}",
	    4, "unknown dtype" },
	{ "lower-case dtype",
	    "{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
	    4, "unknown dtype" },
	{ "shape x dtype is not the byte span",
	    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],"
	    "\"data_offsets\":[0,20]}}",
	    24, "span 20 bytes" },
	{ "offsets past the data",
	    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],"
	    "\"data_offsets\":[0,24]}}",
	    16, "run past the end" },
	{ "begin > end",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,4]}}",
	    16, "bad data_offsets" },
	{ "three data_offsets",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4,8]}}",
	    16, "bad data_offsets" },
	{ "negative data_offsets",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[-4,0]}}",
	    16, "bad data_offsets" },
	{ "overlapping tensors",
	    "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
	    "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
	    24, "overlap" },
	{ "the same bytes twice",
	    "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
	    "\"b\":{\"dtype\":\"I32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
	    16, "overlap" },
	{ "duplicate tensor names",
	    "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
	    "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
	    8, "appears twice" },
	{ "non-integer shape",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[2.5],\"data_offsets\":[0,2]}}",
	    2, "bad shape" },
	{ "negative shape",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}",
	    0, "bad shape" },
	{ "string shape",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[\"2\"],"
	    "\"data_offsets\":[0,2]}}",
	    2, "bad shape" },
	{ "2^60 shape",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[1152921504606846976],"
	    "\"data_offsets\":[0,0]}}", 0, "bad shape" },
	{ "9 dimensions",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
	    "\"data_offsets\":[0,1]}}", 1, "at most 8" },
	{ "shape product overflows",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,16],"
	    "\"data_offsets\":[0,0]}}", 0, "data_offsets span 0 bytes" },
	{ "missing shape",
	    "{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1,
	    "needs dtype, shape and data_offsets" },
	{ "entry not an object", "{\"a\": 5}", 0, "not an object" },
	{ "metadata not an object", "{\"__metadata__\": [1]}", 0,
	    "__metadata__ is not an object" },
	{ "trailing garbage",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
	    "\"data_offsets\":[0,1]}}  x",
	    1, "data after its JSON" },
	{ "a second object",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}{}",
	    1, "data after its JSON" },
};

/* [8-byte little-endian json_len][json][data bytes 0, 1, 2, ...]. */
static uint8_t *
st_build(const char *json, size_t json_len, size_t data, size_t *len)
{
	uint8_t *b;
	size_t i;

	*len = 8 + json_len + data;
	b = xmalloc(*len);
	for (i = 0; i < 8; i++)
		b[i] = (uint8_t)((uint64_t)json_len >> (8 * i));
	memcpy(b + 8, json, json_len);
	for (i = 0; i < data; i++)
		b[8 + json_len + i] = (uint8_t)i;
	return b;
}

static void
st_free(struct graph_st_tensor *t, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(t[i].name);
	free(t);
}

/* The buffer must be refused with a cause that contains phrase. */
static void
check_bad(const uint8_t *buf, size_t len, const char *what,
    const char *phrase)
{
	struct graph_st_tensor *t = (void *)1;
	char *cause = NULL;
	uint64_t start = 0;
	size_t n = 99;
	int rc;

	rc = graph_st_parse(buf, len, &t, &n, &start, &cause);
	ok(rc < 0 && t == NULL && n == 0, "%s: refused (rc %d)", what, rc);
	ok_str_has(cause, phrase, "%s: the cause says \"%s\"", what, phrase);
	if (rc == 0)
		st_free(t, n);
	free(cause);
}

static void
test_valid(void)
{
	static const char json[] = "{\"__metadata__\":{\"format\":\"pt\","
	    "\"note\":\"x\"},"
	    "\"w.f32\":{\"dtype\":\"F32\",\"shape\":[2,3],"
	    "\"data_offsets\":[0,24]},"
	    "\"w.bf16\":{\"dtype\":\"BF16\",\"shape\":[4],"
	    "\"data_offsets\":[24,32]},"
	    "\"w.empty\":{\"dtype\":\"I64\",\"shape\":[0,5],"
	    "\"data_offsets\":[32,32]}}   ";
	struct graph_st_tensor *t = NULL;
	char *cause = NULL;
	uint64_t start = 0, base = 8 + sizeof json - 1;
	size_t len, n = 0;
	uint8_t *buf = st_build(json, sizeof json - 1, 32, &len);
	int rc;

	rc = graph_st_parse(buf, len, &t, &n, &start, &cause);
	ok_int_eq(rc, 0, "valid file parses");
	if (rc != 0) {
		tap_diag("cause: %s", cause);
		free(cause);
		free(buf);
		return;
	}
	ok(cause == NULL, "no cause on success");
	ok_int_eq(n, 3, "three tensors (metadata is not one)");
	ok_int_eq(start, base, "data starts at 8 + header length");
	ok_str_eq(t[0].name, "w.f32", "tensor 0 name");
	ok_int_eq(t[0].dtype, GRAPH_DT_F32, "tensor 0 dtype");
	ok(t[0].ndim == 2 && t[0].shape[0] == 2 && t[0].shape[1] == 3,
	    "tensor 0 shape [2, 3]");
	ok_int_eq(t[0].numel, 6, "tensor 0 numel");
	ok(t[0].begin == base && t[0].end == base + 24,
	    "tensor 0 absolute offsets");
	ok_str_eq(t[1].name, "w.bf16", "tensor 1 name");
	ok_int_eq(t[1].dtype, GRAPH_DT_BF16, "tensor 1 dtype");
	ok(t[1].ndim == 1 && t[1].shape[0] == 4 && t[1].numel == 4,
	    "tensor 1 shape [4]");
	ok(t[1].begin == base + 24 && t[1].end == base + 32,
	    "tensor 1 absolute offsets");
	ok(buf[t[1].begin] == 24 && buf[t[1].end - 1] == 31,
	    "tensor 1 offsets point at its bytes");
	ok_int_eq(t[2].dtype, GRAPH_DT_I64, "tensor 2 dtype");
	ok(t[2].ndim == 2 && t[2].shape[0] == 0 && t[2].shape[1] == 5 &&
	    t[2].numel == 0, "zero-sized tensor: shape [0, 5], numel 0");
	ok(t[2].begin == base + 32 && t[2].end == base + 32,
	    "zero-sized tensor offsets");
	st_free(t, n);
	free(buf);
}

static void
test_scalar_and_empty(void)
{
	static const char scalar[] =
	    "{\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]}}";
	struct graph_st_tensor *t = NULL;
	char *cause = NULL;
	uint64_t start = 0;
	size_t len, n = 0;
	uint8_t *buf = st_build(scalar, sizeof scalar - 1, 8, &len);
	int rc;

	rc = graph_st_parse(buf, len, &t, &n, &start, &cause);
	ok(rc == 0 && n == 1 && t[0].ndim == 0 && t[0].numel == 1,
	    "a scalar (shape []) has one element");
	if (rc == 0)
		st_free(t, n);
	free(cause);
	free(buf);
	buf = st_build("{}", 2, 0, &len);
	cause = NULL;
	rc = graph_st_parse(buf, len, &t, &n, &start, &cause);
	ok(rc == 0 && n == 0 && start == 10,
	    "an empty header {} is a file with no tensors");
	if (rc == 0)
		st_free(t, n);
	free(cause);
	free(buf);
}

static void
test_framing(void)
{
	static const char nul[] = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
	    "\"data_offsets\":[0,1]}}\0   ";
	uint8_t buf[64];
	uint8_t *b;
	size_t len;

	memset(buf, 0, sizeof buf);
	check_bad(buf, 0, "empty file", "too short");
	check_bad(buf, 7, "7-byte file", "too short");
	buf[0] = 100;	/* header of 100 bytes in a 64-byte file */
	memcpy(buf + 8, "{}", 2);
	check_bad(buf, sizeof buf, "header length past the end",
	    "runs past the end");
	buf[0] = 57;	/* one byte too many */
	check_bad(buf, sizeof buf, "header length one past the end",
	    "runs past the end");
	buf[0] = 0x00;
	buf[1] = 0xc2;
	buf[2] = 0xeb;
	buf[3] = 0x0b;	/* 200,000,000 */
	check_bad(buf, sizeof buf, "header length over 100 MB", "100 MB");
	memset(buf, 0xff, 8);
	check_bad(buf, sizeof buf, "header length 2^64-1", "100 MB");
	memset(buf, 0, 8);
	check_bad(buf, sizeof buf, "header length 0", "not a JSON object");
	b = st_build(nul, sizeof nul - 1, 1, &len);
	check_bad(b, len, "embedded NUL after the JSON", "not a JSON object");
	free(b);
	b = st_build("{\"a\0\":1}", 8, 0, &len);
	check_bad(b, len, "embedded NUL in a key", "not a JSON object");
	free(b);
}

static void
test_bad_headers(void)
{
	const struct bad_header *h;
	uint8_t *buf;
	size_t i, len;

	for (i = 0; i < sizeof bad_headers / sizeof *bad_headers; i++) {
		h = &bad_headers[i];
		buf = st_build(h->json, strlen(h->json), h->data, &len);
		check_bad(buf, len, h->what, h->phrase);
		free(buf);
	}
}

/*
 * A zero-sized tensor sorted between two tensors must not hide their
 * overlap: a = [0, 16) and c = [12, 20) share bytes 12..15.
 */
static void
test_zero_size_between_overlap(void)
{
	static const char json[] =
	    "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
	    "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
	    "\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}";
	size_t len;
	uint8_t *buf = st_build(json, sizeof json - 1, 20, &len);

	check_bad(buf, len, "overlap around a zero-sized tensor", "overlap");
	free(buf);
}

static void
test_header_build(void)
{
	struct graph_st_tensor in[3], *t = NULL;
	char *cause = NULL, *json;
	uint64_t start = 0, prefix = 0;
	size_t hlen = 0, n = 0, i;
	uint8_t *h, *file;
	cJSON *root;
	int rc, k;

	memset(in, 0, sizeof in);
	in[0] = (struct graph_st_tensor){ .name = "model.embed.weight",
		.dtype = GRAPH_DT_BF16, .ndim = 2, .shape = { 3, 5 },
		.begin = 0, .end = 30 };
	in[1] = (struct graph_st_tensor){ .name = "odd \"name\\\n",
		.dtype = GRAPH_DT_F32, .ndim = 1, .shape = { 2 },
		.begin = 32, .end = 40 };
	in[2] = (struct graph_st_tensor){ .name = "scalar",
		.dtype = GRAPH_DT_F64, .ndim = 0, .begin = 40, .end = 48 };
	h = graph_st_header_build(in, 3, &hlen);
	for (k = 0; k < 8; k++)
		prefix |= (uint64_t)h[k] << (8 * k);
	ok_int_eq(prefix, hlen - 8, "length prefix is the JSON length");
	ok_int_eq(hlen % 8, 0, "data starts 8-byte aligned");
	json = xstrndup((const char *)h + 8, hlen - 8);
	root = cJSON_Parse(json);
	ok(root != NULL && cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(root, "__metadata__"), "format") !=
	    NULL, "header is JSON with __metadata__.format");
	cJSON_Delete(root);
	free(json);
	file = xcalloc(1, hlen + 48);
	memcpy(file, h, hlen);
	rc = graph_st_parse(file, hlen + 48, &t, &n, &start, &cause);
	ok(rc == 0 && n == 3, "built header parses back (rc %d)", rc);
	for (i = 0; rc == 0 && i < 3; i++) {
		ok_str_eq(t[i].name, in[i].name, "tensor %zu name", i);
		ok(t[i].dtype == in[i].dtype && t[i].ndim == in[i].ndim &&
		    memcmp(t[i].shape, in[i].shape, sizeof in[i].shape) == 0,
		    "tensor %zu dtype and shape", i);
		ok(t[i].begin == hlen + in[i].begin &&
		    t[i].end == hlen + in[i].end,
		    "tensor %zu offsets (absolute = header + relative)", i);
	}
	ok_int_eq(start, hlen, "data_start is the padded header length");
	if (rc == 0)
		st_free(t, n);
	free(cause);
	free(file);
	free(h);
	h = graph_st_header_build(NULL, 0, &hlen);
	cause = NULL;
	rc = graph_st_parse(h, hlen, &t, &n, &start, &cause);
	ok(rc == 0 && n == 0 && hlen % 8 == 0,
	    "a header with no tensors is valid and aligned");
	if (rc == 0)
		st_free(t, n);
	free(cause);
	free(h);
}

static void
test_open(const char *dir)
{
	static const char json[] =
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]}}";
	struct graph_st_file *f = NULL;
	char path[4096], trunc[4096], *cause = NULL;
	size_t len;
	uint8_t *buf = st_build(json, sizeof json - 1, 16, &len);
	int rc;

	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	tmp_write(path, buf, len);
	rc = graph_st_open(path, &f, &cause);
	ok_int_eq(rc, 0, "graph_st_open on a valid file");
	ok(rc == 0 && f->map != NULL && f->nt == 1 && f->size == len &&
	    f->data_start == 8 + sizeof json - 1, "map, tensors, size");
	ok(rc == 0 && f->map[f->t[0].begin + 5] == 5 &&
	    f->t[0].end == len, "tensor offsets index the mapping");
	graph_st_close(f);
	free(cause);
	cause = NULL;
	snprintf(trunc, sizeof trunc, "%s/trunc.safetensors", dir);
	tmp_write(trunc, buf, len - 5);
	rc = graph_st_open(trunc, &f, &cause);
	ok(rc < 0 && f == NULL, "a truncated copy is refused");
	ok_str_has(cause, trunc, "the error names the file");
	ok_str_has(cause, "run past the end", "the error says why");
	free(cause);
	cause = NULL;
	snprintf(trunc, sizeof trunc, "%s/missing.safetensors", dir);
	rc = graph_st_open(trunc, &f, &cause);
	ok_int_eq(rc, -ENOENT, "a missing file is -ENOENT");
	ok_str_has(cause, "missing.safetensors", "and the error names it");
	free(cause);
	cause = NULL;
	rc = graph_st_open(dir, &f, &cause);
	ok(rc < 0 && f == NULL, "a directory is refused");
	ok_str_has(cause, "not a regular file", "as not a regular file");
	free(cause);
	cause = NULL;
	snprintf(trunc, sizeof trunc, "%s/empty.safetensors", dir);
	tmp_write(trunc, "", 0);
	rc = graph_st_open(trunc, &f, &cause);
	ok(rc < 0 && f == NULL, "an empty file is refused");
	ok_str_has(cause, "too short", "as too short");
	free(cause);
	free(buf);
}

static int
reopen(const char *path, struct graph_st_file **f)
{
	char *cause = NULL;
	int rc;

	rc = graph_st_open(path, f, &cause);
	if (rc != 0)
		tap_diag("open %s: %s", path, cause);
	free(cause);
	return rc;
}

static void
test_unchanged(const char *dir)
{
	static const char json[] =
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}";
	struct graph_st_file *f = NULL;
	struct timespec ts[2];
	char path[4096], other[4096], *cause = NULL;
	size_t len;
	uint8_t *buf = st_build(json, sizeof json - 1, 16, &len);

	snprintf(path, sizeof path, "%s/stale.safetensors", dir);
	snprintf(other, sizeof other, "%s/stale.tmp", dir);
	tmp_write(path, buf, len - 8);
	if (reopen(path, &f) != 0) {
		ok(0, "open for check_unchanged");
		free(buf);
		return;
	}
	ok_int_eq(graph_st_check_unchanged(f, &cause), 0,
	    "an untouched file is unchanged");
	/* Same size, same inode: only the modification time moves. */
	ts[0].tv_sec = ts[1].tv_sec = 1000000000;
	ts[0].tv_nsec = ts[1].tv_nsec = 0;
	ok_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0, "set an old mtime");
	ok_int_eq(graph_st_check_unchanged(f, &cause), -ESTALE,
	    "a new modification time is -ESTALE");
	ok_str_has(cause, "changed on disk", "and says it changed on disk");
	ok_str_has(cause, "stale.safetensors", "and names the file");
	free(cause);
	cause = NULL;
	graph_st_close(f);
	/* Rewritten in place, longer, with the old mtime put back. */
	if (reopen(path, &f) != 0) {
		free(buf);
		return;
	}
	tmp_write(path, buf, len);
	ok_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0, "restore the mtime");
	ok_int_eq(graph_st_check_unchanged(f, &cause), -ESTALE,
	    "a rewritten, longer file is -ESTALE");
	ok_str_has(cause, "changed on disk", "rewritten: changed on disk");
	free(cause);
	cause = NULL;
	graph_st_close(f);
	/* Replaced by rename: same size, bytes and mtime, another inode. */
	if (reopen(path, &f) != 0) {
		free(buf);
		return;
	}
	tmp_write(other, buf, len);
	ts[0].tv_sec = ts[1].tv_sec = f->mtime_ns / 1000000000;
	ts[0].tv_nsec = ts[1].tv_nsec = f->mtime_ns % 1000000000;
	ok_int_eq(utimensat(AT_FDCWD, other, ts, 0), 0, "copy the mtime");
	ok_int_eq(rename(other, path), 0, "rename a copy over the file");
	/*
	 * The open file is what a merge reads, so a path now naming another
	 * file does not change it: the planned bytes are still there.
	 */
	ok_int_eq(graph_st_check_unchanged(f, &cause), 0,
	    "a file replaced by rename leaves the open one unchanged");
	free(cause);
	cause = NULL;
	unlink(path);
	ok_int_eq(graph_st_check_unchanged(f, &cause), 0,
	    "so does deleting it");
	free(cause);
	graph_st_close(f);
	free(buf);
}

int
main(void)
{
	char *dir;

	tap_plan_lazy();
	test_valid();
	test_scalar_and_empty();
	test_framing();
	test_bad_headers();
	test_zero_size_between_overlap();
	test_header_build();
	dir = tmp_dir_create("test-safetensors");
	test_open(dir);
	test_unchanged(dir);
	tmp_remove(dir);
	free(dir);
	return tap_done();
}
