/* SPDX-License-Identifier: MIT */
/*
 * test-safetensors.c: unit tests for graph/safetensors.c, the reader of
 * every input model's headers and the builder of every output header.
 *
 * Files are built byte by byte in memory: a valid one (metadata, tensors of
 * several dtypes, a zero-sized and a scalar tensor) must parse to absolute
 * offsets (8 + header length + the relative offset), and every kind of
 * malformed header must be refused with a negative error and a message
 * naming the problem, because input files come from anywhere; each is also
 * written to a file, which safetensors_open must refuse with a message that
 * begins with the file's path.  The shapes of issue 9 (invalid UTF-8, a
 * byte order mark, non-string metadata, NUL in names, offsets that do not
 * tile the data, an off-by-one header length) and the tensor-count limit
 * have their own cases; what the reference reader accepts (padding, UTF-8
 * names, escaped surrogate pairs, zero-size tensors at boundaries, extra
 * keys) must still parse.  Headers made by safetensors_header_build must
 * be 8-byte aligned and parse back to the same tensors.  safetensors_open and safetensors_check_unchanged are run
 * on real files in a private temporary directory: a truncated file, a
 * missing one, a directory, and a file rewritten after it was opened.
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
static void st_free(struct safetensors_tensor *, size_t);
static void check_bad(const uint8_t *, size_t, const char *, const char *);
static void test_valid(void);
static void test_scalar_and_empty(void);
static void test_framing(void);
static void test_bad_headers(void);
static void test_zero_size_between_overlap(void);
static void test_header_build(void);
static void test_shapes(void);
static void test_accepted(void);
static void test_header_length_off_by_one(void);
static void test_tensor_limit(void);
static void test_open(const char *);
static void test_unchanged(const char *);
static int reopen(const char *, struct safetensors_file **);

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
	    "\"data_offsets\":[0,0]}}", 0,
	    "need 1152921504606846976 elements of 1 bytes" },
	{ "2^63 shape",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[9223372036854775808],"
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

/* A one-byte U8 tensor entry, for the shapes below. */
#define E1 "{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}"
#define E4(b, e) "{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[" \
	#b "," #e "]}"
#define E0(b) "{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[" \
	#b "," #b "]}"

/*
 * Issue 9, "Also refused too late or not at all": each of these was
 * accepted and merged.  Every one is also a file in
 * tests/corpus/safetensors/ (named after its slug).
 */
static const struct bad_header shapes[] = {
	/* Not UTF-8, as raw bytes in strings. */
	{ "utf8-ff", "{\"a\xff\":" E1 "}", 1,
	    "not valid UTF-8: a byte that never occurs in UTF-8 (byte 0xff)" },
	{ "utf8-stray-continuation", "{\"a\x80\":" E1 "}", 1,
	    "not valid UTF-8: a continuation byte without a lead byte" },
	{ "utf8-overlong-2", "{\"a\xc0\xaf\":" E1 "}", 1,
	    "not valid UTF-8: an overlong encoding (byte 0xc0)" },
	{ "utf8-overlong-3", "{\"a\xe0\x80\xaf\":" E1 "}", 1,
	    "not valid UTF-8: an overlong encoding (byte 0xe0)" },
	{ "utf8-overlong-4", "{\"a\xf0\x80\x80\xaf\":" E1 "}", 1,
	    "not valid UTF-8: an overlong encoding (byte 0xf0)" },
	{ "utf8-surrogate", "{\"a\xed\xa0\x80\":" E1 "}", 1,
	    "not valid UTF-8: a surrogate, U+D800 to U+DFFF, (byte 0xed)" },
	{ "utf8-above-10ffff", "{\"a\xf4\x90\x80\x80\":" E1 "}", 1,
	    "not valid UTF-8: a code point above U+10FFFF" },
	{ "utf8-f5", "{\"a\xf5\x80\x80\x80\":" E1 "}", 1,
	    "not valid UTF-8: a code point above U+10FFFF" },
	{ "utf8-truncated", "{\"a\xe2\x82\":" E1 "}", 1,
	    "not valid UTF-8: a truncated sequence" },
	{ "utf8-in-metadata", "{\"__metadata__\":{\"k\":\"\xff\"}}", 0,
	    "not valid UTF-8" },
	/* Not UTF-8, as \u escapes that cJSON let through. */
	{ "escape-lone-high", "{\"a\\ud800\":" E1 "}", 1,
	    "\\ud800 at byte 11 is a high surrogate without a low one" },
	{ "escape-high-then-ascii", "{\"a\\ud800\\u0041\":" E1 "}", 1,
	    "high surrogate without a low one" },
	{ "escape-lone-low", "{\"a\\udc00\":" E1 "}", 1,
	    "\\udc00 at byte 11 is a lone low surrogate" },
	{ "escape-surrogate-in-metadata",
	    "{\"__metadata__\":{\"k\":\"\\udfff\"}}", 0,
	    "lone low surrogate" },
	/* A byte order mark, or anything else, before the '{'. */
	{ "bom", "\xef\xbb\xbf{\"a\":" E1 "}", 1,
	    "header begins with a UTF-8 byte order mark" },
	{ "leading-space", " {\"a\":" E1 "}", 1,
	    "header does not begin with '{' (byte 0x20)" },
	/* __metadata__ values that are not strings. */
	{ "metadata-number", "{\"__metadata__\":{\"k\":1}}", 0,
	    "__metadata__ value \"k\" is a number, not a string" },
	{ "metadata-bool", "{\"__metadata__\":{\"k\":true}}", 0,
	    "__metadata__ value \"k\" is a boolean, not a string" },
	{ "metadata-null", "{\"__metadata__\":{\"k\":null}}", 0,
	    "__metadata__ value \"k\" is null, not a string" },
	{ "metadata-object", "{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 0,
	    "__metadata__ value \"k\" is an object, not a string" },
	{ "metadata-array", "{\"__metadata__\":{\"k\":[\"y\"]}}", 0,
	    "__metadata__ value \"k\" is an array, not a string" },
	{ "metadata-twice",
	    "{\"__metadata__\":{},\"__metadata__\":{}}", 0,
	    "__metadata__ appears twice" },
	/* NUL: a C reader would see another name. */
	{ "nul-in-name", "{\"a\\u0000b\":" E1 "}", 1,
	    "tensor name \"a\\u0000...\" contains a NUL character" },
	{ "nul-in-metadata", "{\"__metadata__\":{\"k\":\"x\\u0000\"}}", 0,
	    "contains a NUL character" },
	{ "nul-in-dtype",
	    "{\"a\":{\"dtype\":\"U8\\u0000x\",\"shape\":[1],"
	    "\"data_offsets\":[0,1]}}", 1, "dtype \"U8\\u0000...\" contains "
	    "a NUL" },
	/* Offsets that do not tile the data region exactly. */
	{ "hole-between", "{\"a\":" E4(0, 4) ",\"b\":" E4(8, 12) "}", 12,
	    "data bytes [4, 8) between tensors \"a\" and \"b\" belong to no "
	    "tensor" },
	{ "hole-before-first", "{\"a\":" E4(4, 8) "}", 8,
	    "data bytes [0, 4) belong to no tensor: the first, \"a\"" },
	{ "bytes-after-last", "{\"a\":" E4(0, 4) "}", 8,
	    "4 bytes of data follow the last tensor, \"a\", which ends at "
	    "data offset 4 of 8" },
	{ "data-without-tensors", "{}", 4,
	    "the header lists no tensors but 4 bytes of data follow it" },
	{ "empty-inside-another",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
	    "\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]}}",
	    8, "tensors \"a\" [0, 8) and \"z\" [4, 4) overlap" },
	/* What serde refuses for usize, and JSON that is not JSON. */
	{ "offset-float", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
	    "\"data_offsets\":[0.0,1]}}", 1, "bad data_offsets" },
	{ "offset-exponent", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
	    "\"data_offsets\":[0,1e0]}}", 1, "bad data_offsets" },
	{ "shape-float", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1.0],"
	    "\"data_offsets\":[0,1]}}", 1, "bad shape" },
	{ "shape-minus-zero", "{\"a\":{\"dtype\":\"U8\",\"shape\":[-0],"
	    "\"data_offsets\":[0,0]}}", 0, "bad shape" },
	{ "shape-2-64", "{\"a\":{\"dtype\":\"U8\","
	    "\"shape\":[18446744073709551616],\"data_offsets\":[0,0]}}", 0,
	    "bad shape" },
	{ "dtype-twice", "{\"a\":{\"dtype\":\"U8\",\"dtype\":\"F32\","
	    "\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
	    "tensor \"a\": \"dtype\" appears twice" },
	{ "raw-tab-in-name", "{\"a\tb\":" E1 "}", 1,
	    "control byte 0x09 in a tensor name at byte 11" },
	{ "trailing-comma", "{\"a\":" E1 ",}", 1,
	    "not valid JSON: expected a string" },
	{ "leading-zero", "{\"a\":{\"dtype\":\"U8\",\"shape\":[01],"
	    "\"data_offsets\":[0,1]}}", 1, "not valid JSON" },
	{ "single-quotes", "{'a':" E1 "}", 1, "not valid JSON" },
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
st_free(struct safetensors_tensor *t, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(t[i].name);
	free(t);
}

/* The test's private directory, for files. */
static char *tmpd;

/*
 * The buffer must be refused with a cause that contains phrase; written to
 * a file, safetensors_open must refuse it with the same cause after the
 * file's path.
 */
static void
check_bad(const uint8_t *buf, size_t len, const char *what,
    const char *phrase)
{
	static int nfile;
	struct safetensors_tensor *t = (void *)1;
	struct safetensors_file *f = NULL;
	char path[4096], *cause = NULL;
	uint64_t start = 0;
	size_t n = 99;
	int rc;

	rc = safetensors_parse(buf, len, &t, &n, &start, &cause);
	ok(rc < 0 && t == NULL && n == 0, "%s: refused (rc %d)", what, rc);
	ok_str_has(cause, phrase, "%s: the cause says \"%s\"", what, phrase);
	if (rc == 0)
		st_free(t, n);
	free(cause);
	cause = NULL;
	snprintf(path, sizeof path, "%s/bad-%d.safetensors", tmpd,
	    ++nfile);
	tmp_write(path, buf, len);
	rc = safetensors_open(path, &f, &cause);
	ok(rc < 0 && f == NULL && cause != NULL && strncmp(cause, path,
	    strlen(path)) == 0 && strncmp(cause + strlen(path), ": ", 2) == 0,
	    "%s: as a file, the error begins with its path", what);
	ok_str_has(cause, phrase, "%s: and says what is wrong", what);
	if (rc == 0)
		safetensors_close(f);
	free(cause);
	unlink(path);
}

/* The buffer must parse; returns its tensor count, or -1. */
static int
check_good(const uint8_t *buf, size_t len, const char *what)
{
	struct safetensors_tensor *t = NULL;
	char *cause = NULL;
	uint64_t start = 0;
	size_t n = 0;
	int rc;

	rc = safetensors_parse(buf, len, &t, &n, &start, &cause);
	ok(rc == 0, "%s: accepted", what);
	if (rc != 0) {
		tap_diag("cause: %s", cause);
		free(cause);
		return -1;
	}
	st_free(t, n);
	return (int)n;
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
	struct safetensors_tensor *t = NULL;
	char *cause = NULL;
	uint64_t start = 0, base = 8 + sizeof json - 1;
	size_t len, n = 0;
	uint8_t *buf = st_build(json, sizeof json - 1, 32, &len);
	int rc;

	rc = safetensors_parse(buf, len, &t, &n, &start, &cause);
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
	struct safetensors_tensor *t = NULL;
	char *cause = NULL;
	uint64_t start = 0;
	size_t len, n = 0;
	uint8_t *buf = st_build(scalar, sizeof scalar - 1, 8, &len);
	int rc;

	rc = safetensors_parse(buf, len, &t, &n, &start, &cause);
	ok(rc == 0 && n == 1 && t[0].ndim == 0 && t[0].numel == 1,
	    "a scalar (shape []) has one element");
	if (rc == 0)
		st_free(t, n);
	free(cause);
	free(buf);
	buf = st_build("{}", 2, 0, &len);
	cause = NULL;
	rc = safetensors_parse(buf, len, &t, &n, &start, &cause);
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
	check_bad(buf, sizeof buf, "header length 0", "header is empty");
	b = st_build(nul, sizeof nul - 1, 1, &len);
	check_bad(b, len, "embedded NUL after the JSON",
	    "header has data after its JSON object (byte 0x00");
	free(b);
	b = st_build("{\"a\0\":1}", 8, 0, &len);
	check_bad(b, len, "embedded NUL in a key",
	    "control byte 0x00 in a tensor name");
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
test_shapes(void)
{
	const struct bad_header *h;
	static const char prefix[] = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
	    "\"data_offsets\":[0,1],\"x\":";
	uint8_t *buf;
	size_t i, len;
	struct xbuf deep = { 0 };

	for (i = 0; i < sizeof shapes / sizeof *shapes; i++) {
		h = &shapes[i];
		buf = st_build(h->json, strlen(h->json), h->data, &len);
		check_bad(buf, len, h->what, h->phrase);
		free(buf);
	}
	/* serde_json stops at 128 levels; so do we, in keys we skip. */
	xbuf_add(&deep, prefix, strlen(prefix));
	for (i = 0; i < 200; i++)
		xbuf_add(&deep, "[", 1);
	for (i = 0; i < 200; i++)
		xbuf_add(&deep, "]", 1);
	xbuf_add(&deep, "}}", 2);
	buf = st_build(deep.data, deep.len, 1, &len);
	check_bad(buf, len, "nested 200 deep",
	    "header nests deeper than 128 levels");
	free(buf);
	xbuf_free(&deep);
}

/* What the reference reader accepts must still parse. */
static void
test_accepted(void)
{
	static const struct {
		const char *what;
		const char *json;
		size_t data;
		int n;
	} good[] = {
		{ "padding with every JSON white space",
		    "{\"a\":" E1 "} \t\r\n  ", 1, 1 },
		{ "UTF-8 names, up to U+10FFFF",
		    "{\"\xc3\xa9\":" E4(0, 4) ",\"\xe6\x97\xa5\":" E4(4, 8)
		    ",\"\xf4\x8f\xbf\xbf\":" E4(8, 12) "}", 12, 3 },
		{ "an escaped surrogate pair",
		    "{\"\\ud83d\\ude00\":" E1 "}", 1, 1 },
		{ "zero-size tensors at the start, between and at the end",
		    "{\"z0\":" E0(0) ",\"a\":" E4(0, 4) ",\"z1\":" E0(4)
		    ",\"b\":" E4(4, 8) ",\"z2\":" E0(8) "}", 8, 5 },
		{ "only zero-size tensors, no data",
		    "{\"z0\":{\"dtype\":\"F32\",\"shape\":[0],"
		    "\"data_offsets\":[0,0]},\"z1\":{\"dtype\":\"F32\","
		    "\"shape\":[0,3],\"data_offsets\":[0,0]}}", 0, 2 },
		{ "extra keys in an entry, skipped as serde does",
		    "{\"a\":{\"x\":[1,2.5e3,{\"y\":null}],\"dtype\":\"U8\","
		    "\"shape\":[1],\"z\":true,\"data_offsets\":[0,1]}}", 1, 1 },
		{ "metadata strings with escapes",
		    "{\"__metadata__\":{\"format\":\"pt\","
		    "\"k\":\"a\\n\\\"b\\u00e9\"},\"a\":" E1 "}", 1, 1 },
	};
	uint8_t *buf;
	size_t i, len;
	int n;

	for (i = 0; i < sizeof good / sizeof *good; i++) {
		buf = st_build(good[i].json, strlen(good[i].json),
		    good[i].data, &len);
		n = check_good(buf, len, good[i].what);
		if (good[i].n >= 0)
			ok_int_eq(n, good[i].n, "%s: %d tensors", good[i].what,
			    good[i].n);
		free(buf);
	}
}

static void
set_hlen(uint8_t *b, uint64_t hlen)
{
	int i;

	for (i = 0; i < 8; i++)
		b[i] = (uint8_t)(hlen >> (8 * i));
}

/*
 * The 8-byte length must be exact.  One more takes a data byte into the
 * header; one less leaves a header byte in the data.  Either is invalid
 * JSON, or, where the byte is padding, breaks the tiling of the data.
 */
static void
test_header_length_off_by_one(void)
{
	static const char json[] = "{\"a\":" E4(0, 4) "}";
	static const char padded[] = "{\"a\":" E4(0, 4) "}   ";
	size_t n = sizeof json - 1, np = sizeof padded - 1, len;
	char phrase[128];
	uint8_t *b;

	b = st_build(json, n, 4, &len);
	check_good(b, len, "the exact header length");
	set_hlen(b, n + 1);
	snprintf(phrase, sizeof phrase, "header has data after its JSON "
	    "object (byte 0x00 at byte %zu)", 8 + n);
	check_bad(b, len, "header length + 1 (a data byte 0x00 after '}')",
	    phrase);
	set_hlen(b, n - 1);
	check_bad(b, len, "header length - 1 (the closing '}' in the data)",
	    "it ends inside the object");
	free(b);
	b = st_build(padded, np, 4, &len);
	check_good(b, len, "the exact length of a padded header");
	b[8 + np] = ' ';
	set_hlen(b, np + 1);
	check_bad(b, len, "padded header length + 1 (a data byte ' ')",
	    "data_offsets [0, 4] run past the end of the data (3 bytes)");
	set_hlen(b, np - 1);
	check_bad(b, len, "padded header length - 1 (a space in the data)",
	    "1 byte of data follows the last tensor, \"a\", which ends at "
	    "data offset 4 of 5");
	free(b);
}

/* n zero-size tensors named t0, t1, ... in a file of their own. */
static uint8_t *
many_tensors(size_t n, size_t *len)
{
	struct safetensors_tensor *t = xcalloc(n, sizeof *t);
	uint8_t *h;
	size_t i;

	for (i = 0; i < n; i++) {
		t[i].name = xasprintf("t%zu", i);
		t[i].dtype = GRAPH_DT_BF16;
		t[i].ndim = 1;
	}
	h = safetensors_header_build(t, n, len);
	for (i = 0; i < n; i++)
		free(t[i].name);
	free(t);
	return h;
}

/* Issue 9, row 6: at most SAFETENSORS_MAX_TENSORS per file. */
static void
test_tensor_limit(void)
{
	char phrase[128];
	uint8_t *h;
	size_t len;

	h = many_tensors(SAFETENSORS_MAX_TENSORS, &len);
	ok_int_eq(check_good(h, len, "a header at the tensor limit"),
	    SAFETENSORS_MAX_TENSORS, "all %d tensors", SAFETENSORS_MAX_TENSORS);
	free(h);
	h = many_tensors(SAFETENSORS_MAX_TENSORS + 1, &len);
	snprintf(phrase, sizeof phrase, "the header lists %d tensors, over "
	    "the limit of %d per file", SAFETENSORS_MAX_TENSORS + 1,
	    SAFETENSORS_MAX_TENSORS);
	check_bad(h, len, "one tensor over the limit", phrase);
	free(h);
}

static void
test_header_build(void)
{
	struct safetensors_tensor in[3], *t = NULL;
	char *cause = NULL, *json;
	uint64_t start = 0, prefix = 0;
	size_t hlen = 0, n = 0, i;
	uint8_t *h, *file;
	cJSON *root;
	int rc, k;

	memset(in, 0, sizeof in);
	in[0] = (struct safetensors_tensor){ .name = "model.embed.weight",
		.dtype = GRAPH_DT_BF16, .ndim = 2, .shape = { 3, 5 },
		.begin = 0, .end = 30 };
	in[1] = (struct safetensors_tensor){ .name = "odd \"name\\\n",
		.dtype = GRAPH_DT_F32, .ndim = 1, .shape = { 2 },
		.begin = 30, .end = 38 };
	in[2] = (struct safetensors_tensor){ .name = "scalar",
		.dtype = GRAPH_DT_F64, .ndim = 0, .begin = 38, .end = 46 };
	h = safetensors_header_build(in, 3, &hlen);
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
	file = xcalloc(1, hlen + 46);
	memcpy(file, h, hlen);
	rc = safetensors_parse(file, hlen + 46, &t, &n, &start, &cause);
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
	h = safetensors_header_build(NULL, 0, &hlen);
	cause = NULL;
	rc = safetensors_parse(h, hlen, &t, &n, &start, &cause);
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
	struct safetensors_file *f = NULL;
	char path[4096], trunc[4096], *cause = NULL;
	size_t len;
	uint8_t *buf = st_build(json, sizeof json - 1, 16, &len);
	int rc;

	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	tmp_write(path, buf, len);
	rc = safetensors_open(path, &f, &cause);
	ok_int_eq(rc, 0, "safetensors_open on a valid file");
	ok(rc == 0 && f->nt == 1 && f->size == len &&
	    f->data_start == 8 + sizeof json - 1, "tensors, size");
	ok(rc == 0 && buf[f->t[0].begin + 5] == 5 &&
	    f->t[0].end == len, "tensor offsets index the file");
	safetensors_close(f);
	free(cause);
	cause = NULL;
	snprintf(trunc, sizeof trunc, "%s/trunc.safetensors", dir);
	tmp_write(trunc, buf, len - 5);
	rc = safetensors_open(trunc, &f, &cause);
	ok(rc < 0 && f == NULL, "a truncated copy is refused");
	ok_str_has(cause, trunc, "the error names the file");
	ok_str_has(cause, "run past the end", "the error says why");
	free(cause);
	cause = NULL;
	snprintf(trunc, sizeof trunc, "%s/missing.safetensors", dir);
	rc = safetensors_open(trunc, &f, &cause);
	ok_int_eq(rc, -ENOENT, "a missing file is -ENOENT");
	ok_str_has(cause, "missing.safetensors", "and the error names it");
	free(cause);
	cause = NULL;
	rc = safetensors_open(dir, &f, &cause);
	ok(rc < 0 && f == NULL, "a directory is refused");
	ok_str_has(cause, "not a regular file", "as not a regular file");
	free(cause);
	cause = NULL;
	snprintf(trunc, sizeof trunc, "%s/empty.safetensors", dir);
	tmp_write(trunc, "", 0);
	rc = safetensors_open(trunc, &f, &cause);
	ok(rc < 0 && f == NULL, "an empty file is refused");
	ok_str_has(cause, "too short", "as too short");
	free(cause);
	free(buf);
}

static int
reopen(const char *path, struct safetensors_file **f)
{
	char *cause = NULL;
	int rc;

	rc = safetensors_open(path, f, &cause);
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
	struct safetensors_file *f = NULL;
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
	ok_int_eq(safetensors_check_unchanged(f, &cause), 0,
	    "an untouched file is unchanged");
	/* Same size, same inode: only the modification time moves. */
	ts[0].tv_sec = ts[1].tv_sec = 1000000000;
	ts[0].tv_nsec = ts[1].tv_nsec = 0;
	ok_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0, "set an old mtime");
	ok_int_eq(safetensors_check_unchanged(f, &cause), -ESTALE,
	    "a new modification time is -ESTALE");
	ok_str_has(cause, "changed on disk", "and says it changed on disk");
	ok_str_has(cause, "stale.safetensors", "and names the file");
	free(cause);
	cause = NULL;
	safetensors_close(f);
	/* Rewritten in place, longer, with the old mtime put back. */
	if (reopen(path, &f) != 0) {
		free(buf);
		return;
	}
	tmp_write(path, buf, len);
	ok_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0, "restore the mtime");
	ok_int_eq(safetensors_check_unchanged(f, &cause), -ESTALE,
	    "a rewritten, longer file is -ESTALE");
	ok_str_has(cause, "changed on disk", "rewritten: changed on disk");
	free(cause);
	cause = NULL;
	safetensors_close(f);
	/* Replaced by rename: same size, bytes and mtime, another inode. */
	tmp_write(path, buf, len - 8);
	if (reopen(path, &f) != 0) {
		free(buf);
		return;
	}
	tmp_write(other, buf, len - 8);
	ts[0].tv_sec = ts[1].tv_sec = f->mtime_ns / 1000000000;
	ts[0].tv_nsec = ts[1].tv_nsec = f->mtime_ns % 1000000000;
	ok_int_eq(utimensat(AT_FDCWD, other, ts, 0), 0, "copy the mtime");
	ok_int_eq(rename(other, path), 0, "rename a copy over the file");
	/*
	 * The open file is what a merge reads, so a path now naming another
	 * file does not change it: the planned bytes are still there.
	 */
	ok_int_eq(safetensors_check_unchanged(f, &cause), 0,
	    "a file replaced by rename leaves the open one unchanged");
	free(cause);
	cause = NULL;
	unlink(path);
	ok_int_eq(safetensors_check_unchanged(f, &cause), 0,
	    "so does deleting it");
	free(cause);
	safetensors_close(f);
	free(buf);
}

int
main(void)
{
	tap_plan_lazy();
	tmpd = tmp_dir_create("test-safetensors");
	test_valid();
	test_scalar_and_empty();
	test_framing();
	test_bad_headers();
	test_zero_size_between_overlap();
	test_shapes();
	test_accepted();
	test_header_length_off_by_one();
	test_tensor_limit();
	test_header_build();
	test_open(tmpd);
	test_unchanged(tmpd);
	tmp_remove(tmpd);
	free(tmpd);
	return tap_done();
}
