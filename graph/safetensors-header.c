/* SPDX-License-Identifier: MIT */
/*
 * safetensors-header.c: parse and check a safetensors header
 * (safetensors_parse), the first thing we read of every input file.
 *
 * A file is an 8-byte little-endian header length N, N bytes of JSON, then
 * the data.  Files come from anywhere, so the header is hostile until every
 * check below has passed; each refusal is one line naming the problem (the
 * caller adds the file's name).  The checks are those of the format's
 * reference reader (huggingface/safetensors, SafeTensors::read_metadata and
 * Metadata::validate, with serde_json) or stricter:
 *
 *  - N is at most 100,000,000 (the reference's MAX_HEADER_SIZE) and 8 + N
 *    fits in the file.
 *  - The header is UTF-8 (the reference decodes it with from_utf8): no
 *    invalid or stray bytes, no overlong forms, no surrogates (U+D800 to
 *    U+DFFF), nothing above U+10FFFF.  Outside strings JSON is ASCII, so
 *    this is checked inside strings only.  A \u escape may not name a lone
 *    surrogate either (serde_json refuses one; cJSON let it through).
 *  - The header is one JSON text, strictly RFC 8259 as serde_json reads it:
 *    no control bytes in strings, no comments, no trailing commas, numbers
 *    in JSON's grammar, nesting at most 128 deep (serde_json's limit).  It
 *    must begin with '{': the reference's InvalidHeaderStart, so a UTF-8
 *    byte order mark or leading white space is refused (cJSON skipped a
 *    BOM).  After the object only JSON white space may follow: the
 *    reference's writer pads with spaces to align the data, and serde_json
 *    allows any of space, tab, CR and LF there.
 *  - "__metadata__", if present, is an object of strings (the reference's
 *    HashMap<String, String>), given once.
 *  - Every other member is a tensor: an object with "dtype" (a dtype we
 *    know), "shape" (at most GRAPH_MAX_DIMS integers) and "data_offsets"
 *    (two integers), each once (serde refuses a duplicate field); other
 *    members are skipped, as serde does.  Integers are JSON integers: 2.0,
 *    1e3 and -0 are refused, as serde refuses them for usize.  The shape's
 *    element count times the dtype's size is the byte span, without
 *    overflow.
 *  - Stricter than the reference, because a C reader needs it: no string
 *    may contain U+0000 (a tensor "a\u0000b" would be "a" to every C
 *    string function), and a tensor name may not appear twice (the
 *    reference keeps the last silently; we would plan two tensors).
 *  - The data offsets, sorted, tile the data region [0, file size - 8 - N)
 *    exactly: each tensor begins where the previous one ended, the first at
 *    0, the last ends at the end of the file (the reference's validate()
 *    and MetadataIncompleteBuffer).  So no byte belongs to two tensors and
 *    none to no tensor: a file cannot hide bytes we would copy, or make two
 *    tensors alias.  Zero-size tensors have begin == end, at a boundary.
 *    An off-by-one header length ends here or as invalid JSON.
 *  - At most SAFETENSORS_MAX_TENSORS tensors, counted while parsing: past the
 *    limit nothing more is built, the rest is only scanned to count it.
 *
 * The JSON-level checks (UTF-8, escapes, grammar, depth) are jscan.c's;
 * this file reads the schema on top of it, in one pass over the text,
 * allocating one name and one array slot per tensor, and finds duplicate
 * names with a hash map.  It replaced a cJSON tree, which made about a
 * dozen objects per tensor (70 MB for 65,536 of them) and let invalid
 * UTF-8, lone surrogates, NULs and a byte order mark through.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

/* The reference's MAX_HEADER_SIZE. */
#define ST_MAX_HEADER SAFETENSORS_MAX_HEADER

static uint64_t
le64(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* "__metadata__": an object whose values are strings. */
static int
st_metadata(struct jscan *l)
{
	char *key;

	jscan_ws(l);
	if (l->p == l->end || *l->p != '{')
		return jscan_fail(l, "__metadata__ is not an object but %s",
		    jscan_kind(l));
	l->p++;
	if (jscan_take(l, '}'))
		return 0;
	do {
		if (jscan_string(l, "__metadata__ key") != 0 ||
		    !jscan_take(l, ':'))
			return jscan_syntax(l, "expected ':'");
		jscan_ws(l);
		if (l->p == l->end || *l->p != '"') {
			key = xstrdup(l->s.data);
			jscan_fail(l, "__metadata__ value \"%.*s\" is %s, "
			    "not a string", jscan_show(key), key,
			    jscan_kind(l));
			free(key);
			return -1;
		}
		if (jscan_string(l, "__metadata__ value") != 0)
			return -1;
	} while (jscan_take(l, ','));
	return jscan_take(l, '}') ? 0 : jscan_syntax(l, "expected ',' or '}'");
}

/*
 * An array of JSON integers into v (at most max kept, all counted in *n);
 * *bad is set when an element is not an integer in 0..UINT64_MAX.
 */
static int
st_uints(struct jscan *l, uint64_t *v, int max, int *n, bool *bad)
{
	uint64_t u;
	bool ok;

	*n = 0;
	jscan_ws(l);
	if (l->p == l->end || *l->p != '[') {
		*bad = true;
		return jscan_value(l, 2);
	}
	l->p++;
	if (jscan_take(l, ']'))
		return 0;
	do {
		jscan_ws(l);
		if (l->p < l->end && (*l->p == '-' || (*l->p >= '0' &&
		    *l->p <= '9'))) {
			if (jscan_number(l, &ok, &u) != 0)
				return -1;
		} else {
			ok = false;
			if (jscan_value(l, 3) != 0)
				return -1;
		}
		if (!ok)
			*bad = true;
		else if (*n < max)
			v[*n] = u;
		if (*n < INT32_MAX)
			(*n)++;
	} while (jscan_take(l, ','));
	return jscan_take(l, ']') ? 0 : jscan_syntax(l, "expected ',' or ']'");
}

/* Fields of one tensor entry as read, checked once the entry is closed. */
struct st_entry {
	bool has_dtype, has_shape, has_offs;
	bool bad_shape, bad_offs;
	int ndim, noffs;
	uint64_t shape[GRAPH_MAX_DIMS];
	uint64_t offs[2];
};

static int
st_field_once(struct jscan *l, const char *name, bool *seen, const char *key)
{
	if (*seen)
		return jscan_fail(l, "tensor \"%.*s\": \"%s\" appears twice",
		    jscan_show(name), name, key);
	*seen = true;
	return 0;
}

/* The members of a tensor's entry, after its '{'. */
static int
st_entry_fields(struct jscan *l, struct safetensors_tensor *t,
    struct st_entry *e)
{
	if (jscan_take(l, '}'))
		return 0;
	do {
		if (jscan_string(l, "string") != 0 || !jscan_take(l, ':'))
			return jscan_syntax(l, "expected ':'");
		if (jscan_is(l, "dtype")) {
			if (st_field_once(l, t->name, &e->has_dtype,
			    "dtype") != 0)
				return -1;
			jscan_ws(l);
			if (l->p == l->end || *l->p != '"')
				return jscan_fail(l, "tensor \"%.*s\": dtype "
				    "is %s, not a string", jscan_show(t->name),
				    t->name, jscan_kind(l));
			if (jscan_string(l, "dtype") != 0)
				return -1;
			t->dtype = graph_dtype_from_st_name(l->s.data);
			if (t->dtype == GRAPH_DT_NONE)
				return jscan_fail(l, "tensor \"%.*s\": unknown "
				    "dtype \"%.*s\"", jscan_show(t->name),
				    t->name, jscan_show(l->s.data), l->s.data);
		} else if (jscan_is(l, "shape")) {
			if (st_field_once(l, t->name, &e->has_shape,
			    "shape") != 0 || st_uints(l, e->shape,
			    GRAPH_MAX_DIMS, &e->ndim, &e->bad_shape) != 0)
				return -1;
		} else if (jscan_is(l, "data_offsets")) {
			if (st_field_once(l, t->name, &e->has_offs,
			    "data_offsets") != 0 || st_uints(l, e->offs, 2,
			    &e->noffs, &e->bad_offs) != 0)
				return -1;
		} else if (jscan_value(l, 2) != 0) {
			return -1;
		}
	} while (jscan_take(l, ','));
	return jscan_take(l, '}') ? 0 : jscan_syntax(l, "expected ',' or '}'");
}

/*
 * One tensor's entry into t, whose name is set; offsets stay relative to
 * the data, and are checked against its size once the whole header has
 * been read (an off-by-one header length is then reported as such).
 */
static int
st_tensor(struct jscan *l, struct safetensors_tensor *t)
{
	struct st_entry e = { 0 };
	const char *n = t->name;
	uint64_t numel = 1, bytes, size;
	int i;

	jscan_ws(l);
	if (l->p == l->end || *l->p != '{')
		return jscan_fail(l, "tensor \"%.*s\": entry is %s, not an "
		    "object", jscan_show(n), n, jscan_kind(l));
	l->p++;
	if (st_entry_fields(l, t, &e) != 0)
		return -1;
	if (!e.has_dtype || !e.has_shape || !e.has_offs)
		return jscan_fail(l, "tensor \"%.*s\": needs dtype, shape and "
		    "data_offsets", jscan_show(n), n);
	if (e.ndim > GRAPH_MAX_DIMS)
		return jscan_fail(l, "tensor \"%.*s\": %d dimensions (at most "
		    "%d)", jscan_show(n), n, e.ndim, GRAPH_MAX_DIMS);
	t->ndim = e.ndim;
	for (i = 0; i < e.ndim && !e.bad_shape; i++) {
		if (e.shape[i] > INT64_MAX)
			e.bad_shape = true;
		t->shape[i] = (int64_t)e.shape[i];
		numel = e.shape[i] == 0 || numel == 0 ? 0 :
		    numel > UINT64_MAX / e.shape[i] ? UINT64_MAX :
		    numel * e.shape[i];
	}
	if (e.bad_shape)
		return jscan_fail(l, "tensor \"%.*s\": bad shape (each "
		    "dimension must be an integer from 0 to 2^63-1)",
		    jscan_show(n), n);
	if (e.bad_offs || e.noffs != 2 || e.offs[0] > e.offs[1])
		return jscan_fail(l, "tensor \"%.*s\": bad data_offsets (two "
		    "integers, begin <= end)", jscan_show(n), n);
	t->begin = e.offs[0];
	t->end = e.offs[1];
	bytes = t->end - t->begin;
	size = graph_dtype_size(t->dtype);
	if (numel == UINT64_MAX || numel > UINT64_MAX / size ||
	    numel * size != bytes)
		return jscan_fail(l, "tensor \"%.*s\": shape and dtype need %"
		    PRIu64 " elements of %zu bytes but data_offsets span %"
		    PRIu64 " bytes", jscan_show(n), n, numel, size, bytes);
	t->numel = numel;
	return 0;
}

static int
st_cmp_offsets(const void *a, const void *b)
{
	const struct safetensors_tensor *const *x = a, *const *y = b;

	if ((*x)->begin != (*y)->begin)
		return (*x)->begin < (*y)->begin ? -1 : 1;
	return (*x)->end < (*y)->end ? -1 : (*x)->end > (*y)->end;
}

/*
 * Every tensor must lie inside the data, of data_size bytes (first, in the
 * header's order: a truncated file is the likeliest cause), and the
 * offsets, sorted, must tile [0, data_size): each tensor begins where the
 * one before it ended.  Offsets are still relative to the data.
 */
static int
st_check_tiling(struct jscan *l, struct safetensors_tensor *t, size_t n,
    uint64_t data_size)
{
	const struct safetensors_tensor **s, *prev = NULL;
	uint64_t at = 0;
	size_t i;
	int rc = 0;

	for (i = 0; i < n; i++)
		if (t[i].end > data_size)
			return jscan_fail(l, "tensor \"%.*s\": data_offsets [%"
			    PRIu64 ", %" PRIu64 "] run past the end of the "
			    "data (%" PRIu64 " bytes); the file is truncated "
			    "or corrupt", jscan_show(t[i].name), t[i].name,
			    t[i].begin, t[i].end, data_size);
	if (n == 0) {
		if (data_size != 0)
			return jscan_fail(l, "the header lists no tensors but "
			    "%" PRIu64 " byte%s of data follow%s it", data_size,
			    data_size == 1 ? "" : "s", data_size == 1 ? "s" :
			    "");
		return 0;
	}
	s = xreallocarray(NULL, n, sizeof *s);
	for (i = 0; i < n; i++)
		s[i] = &t[i];
	qsort(s, n, sizeof *s, st_cmp_offsets);
	for (i = 0; i < n && rc == 0; i++) {
		if (s[i]->begin > at)
			rc = prev == NULL ? jscan_fail(l, "data bytes [0, %"
			    PRIu64 ") belong to no tensor: the first, \"%.*s\","
			    " begins at %" PRIu64, s[i]->begin,
			    jscan_show(s[i]->name), s[i]->name, s[i]->begin) :
			    jscan_fail(l, "data bytes [%" PRIu64 ", %" PRIu64
			    ") between tensors \"%.*s\" and \"%.*s\" belong "
			    "to no tensor", at, s[i]->begin,
			    jscan_show(prev->name), prev->name,
			    jscan_show(s[i]->name), s[i]->name);
		else if (s[i]->begin < at)
			rc = jscan_fail(l, "tensors \"%.*s\" [%" PRIu64 ", %"
			    PRIu64 ") and \"%.*s\" [%" PRIu64 ", %" PRIu64
			    ") overlap", jscan_show(prev->name), prev->name,
			    prev->begin, prev->end, jscan_show(s[i]->name),
			    s[i]->name, s[i]->begin, s[i]->end);
		at = s[i]->end;
		prev = s[i];
	}
	if (rc == 0 && at != data_size)
		rc = jscan_fail(l, "%" PRIu64 " byte%s of data follow%s the "
		    "last tensor, \"%.*s\", which ends at data offset %"
		    PRIu64 " of %" PRIu64, data_size - at, data_size - at ==
		    1 ? "" : "s", data_size - at == 1 ? "s" : "",
		    jscan_show(prev->name), prev->name, at, data_size);
	free(s);
	return rc;
}

/*
 * The members of the top-level object, after its '{': tensors into *t
 * (*n of them, *cap slots), names into map.
 */
static int
st_members(struct jscan *l, struct safetensors_tensor **t,
    size_t *n, size_t *cap, struct strmap *map)
{
	struct safetensors_tensor *e;
	bool meta = false;
	size_t count = 0, used;

	if (jscan_take(l, '}'))
		return 0;
	do {
		if (jscan_string(l, "tensor name") != 0)
			return -1;
		if (!jscan_take(l, ':'))
			return jscan_syntax(l, "expected ':'");
		if (jscan_is(l, "__metadata__")) {
			if (meta)
				return jscan_fail(l, "__metadata__ appears "
				    "twice");
			meta = true;
			if (st_metadata(l) != 0)
				return -1;
			continue;
		}
		/* Past the limit, only count: nothing more is built. */
		if (++count > SAFETENSORS_MAX_TENSORS) {
			if (jscan_value(l, 1) != 0)
				return -1;
			continue;
		}
		if (*n == *cap) {
			*cap = *cap ? *cap * 2 : 16;
			*t = xreallocarray(*t, *cap, sizeof **t);
		}
		e = &(*t)[*n];
		memset(e, 0, sizeof *e);
		e->name = xstrndup(l->s.data, l->s.len);
		(*n)++;
		/* One hash per name: a name already there leaves the count
		 * as it was (and is refused, so its entry does not matter). */
		used = map->n;
		strmap_put_len(map, e->name, l->s.len, *n - 1);
		if (map->n == used)
			return jscan_fail(l, "tensor \"%.*s\" appears twice",
			    jscan_show(e->name), e->name);
		if (st_tensor(l, e) != 0)
			return -1;
	} while (jscan_take(l, ','));
	if (!jscan_take(l, '}'))
		return jscan_syntax(l, "expected ',' or '}'");
	if (count > SAFETENSORS_MAX_TENSORS)
		return jscan_fail(l, "the header lists %zu tensors, over the "
		    "limit of %d per file", count, SAFETENSORS_MAX_TENSORS);
	return 0;
}

/* The header's framing: its length, and where the JSON text lies. */
static int
st_frame(const uint8_t *buf, size_t len, uint64_t *hlen, char **cause)
{
	if (len < 8) {
		*cause = xasprintf("file is %zu bytes, too short for a "
		    "safetensors header", len);
		return -EINVAL;
	}
	*hlen = le64(buf);
	if (*hlen > ST_MAX_HEADER) {
		*cause = xasprintf("header length %" PRIu64 " is over the "
		    "100 MB limit (%u bytes)", *hlen, ST_MAX_HEADER);
		return -EINVAL;
	}
	if (*hlen > len - 8) {
		*cause = xasprintf("header length %" PRIu64 " runs past the "
		    "end of the file (%zu bytes); the file is truncated",
		    *hlen, len);
		return -EINVAL;
	}
	if (*hlen >= 3 && memcmp(buf + 8, "\xef\xbb\xbf", 3) == 0) {
		*cause = xstrdup("header begins with a UTF-8 byte order mark; "
		    "a safetensors header begins with '{'");
		return -EINVAL;
	}
	if (*hlen == 0 || buf[8] != '{') {
		*cause = *hlen == 0 ? xstrdup("header is empty; it must be a "
		    "JSON object") : xasprintf("header does not begin with "
		    "'{' (byte 0x%02x); it must be a JSON object", buf[8]);
		return -EINVAL;
	}
	return 0;
}

/*
 * safetensors_parse, also returning the map from each name to its index
 * (borrowing the names in *out), which the caller frees.
 */
int
safetensors_parse_names(const uint8_t *buf, size_t len,
    struct safetensors_tensor **out, size_t *nout, uint64_t *data_start,
    struct strmap *names, char **cause)
{
	struct safetensors_tensor *t = NULL;
	struct strmap map = { 0 };
	struct jscan l = { 0 };
	uint64_t hlen, data_size;
	size_t n = 0, cap = 0, i;
	int rc;

	*out = NULL;
	*nout = 0;
	*cause = NULL;
	if ((rc = st_frame(buf, len, &hlen, cause)) != 0)
		goto out;
	rc = -EINVAL;
	l.file = buf;
	l.p = buf + 9;
	l.end = buf + 8 + hlen;
	data_size = len - 8 - hlen;
	if (st_members(&l, &t, &n, &cap, &map) != 0)
		goto out;
	jscan_ws(&l);
	if (l.p != l.end) {
		jscan_fail(&l, "header has data after its JSON object (byte "
		    "0x%02x at byte %zu); is the header length right?", *l.p,
		    jscan_pos(&l));
		goto out;
	}
	if (st_check_tiling(&l, t, n, data_size) != 0)
		goto out;
	for (i = 0; i < n; i++) {
		t[i].begin += 8 + hlen;
		t[i].end += 8 + hlen;
	}
	*out = t;
	*nout = n;
	*data_start = 8 + hlen;
	*names = map;
	memset(&map, 0, sizeof map);
	t = NULL;
	n = 0;
	rc = 0;
out:
	if (l.cause != NULL)
		*cause = l.cause;
	for (i = 0; i < n; i++)
		free(t[i].name);
	free(t);
	strmap_free(&map);
	xbuf_free(&l.s);
	if (rc != 0)
		*cause = graph_text_printable(*cause);
	return rc;
}

int
safetensors_parse(const uint8_t *buf, size_t len,
    struct safetensors_tensor **out, size_t *nout, uint64_t *data_start,
    char **cause)
{
	struct strmap names = { 0 };
	int rc;

	rc = safetensors_parse_names(buf, len, out, nout, data_start, &names,
	    cause);
	strmap_free(&names);
	return rc;
}
