/* SPDX-License-Identifier: MIT */
/*
 * safetensors.c: read safetensors headers, map the data, and build headers
 * for the files we write.
 *
 * A safetensors file is an 8-byte little-endian header length, a JSON header
 * describing every tensor (dtype, shape, data_offsets relative to the end of
 * the header), then the raw data.  Files come from anywhere, so the header is
 * treated as hostile: its length is capped, the JSON is parsed with an
 * explicit length, and every entry is checked (known dtype, shape and byte
 * count agree, offsets inside the data and not overlapping, no duplicate
 * names) before anything else trusts it.  Each error names the file and the
 * problem.  The whole file is mapped read-only; mapping reads no weights, so
 * planning stays header-only.  An open file is immutable and may be read
 * from any thread.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "graph-int.h"

/* Same cap as the reference implementation: no real header comes close. */
#define ST_MAX_HEADER (100u * 1000u * 1000u)

static int st_parse_entry(const cJSON *, uint64_t, struct graph_st_tensor *,
    char **);
static int st_check_layout(struct graph_st_tensor *, size_t, char **);

static uint64_t
le64(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* A JSON number that must be a non-negative integer below 2^53. */
static int
st_uint(const cJSON *j, uint64_t *out)
{
	double d;

	if (!cJSON_IsNumber(j))
		return -1;
	d = j->valuedouble;
	if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d)
		return -1;
	*out = (uint64_t)d;
	return 0;
}

static int
st_parse_entry(const cJSON *e, uint64_t data_size, struct graph_st_tensor *t,
    char **cause)
{
	const cJSON *dt, *shape, *offs, *d;
	uint64_t numel = 1, v, bytes;
	int n;

	if (!cJSON_IsObject(e)) {
		*cause = xasprintf("tensor \"%s\": entry is not an object",
		    e->string);
		return -EINVAL;
	}
	dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
	shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
	offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
	if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) ||
	    !cJSON_IsArray(offs)) {
		*cause = xasprintf("tensor \"%s\": needs dtype, shape and "
		    "data_offsets", e->string);
		return -EINVAL;
	}
	if ((t->dtype = graph_dtype_from_st_name(dt->valuestring)) ==
	    GRAPH_DT_NONE) {
		*cause = xasprintf("tensor \"%s\": unknown dtype \"%.32s\"",
		    e->string, dt->valuestring);
		return -EINVAL;
	}
	n = cJSON_GetArraySize(shape);
	if (n > GRAPH_MAX_DIMS) {
		*cause = xasprintf("tensor \"%s\": %d dimensions (at most %d)",
		    e->string, n, GRAPH_MAX_DIMS);
		return -EINVAL;
	}
	t->ndim = 0;
	cJSON_ArrayForEach(d, shape) {
		if (st_uint(d, &v) != 0 || v > INT64_MAX) {
			*cause = xasprintf("tensor \"%s\": bad shape",
			    e->string);
			return -EINVAL;
		}
		t->shape[t->ndim++] = (int64_t)v;
		numel = v == 0 || numel == 0 ? 0 :
		    numel > UINT64_MAX / v ? UINT64_MAX : numel * v;
	}
	if (cJSON_GetArraySize(offs) != 2 ||
	    st_uint(cJSON_GetArrayItem(offs, 0), &t->begin) != 0 ||
	    st_uint(cJSON_GetArrayItem(offs, 1), &t->end) != 0 ||
	    t->begin > t->end) {
		*cause = xasprintf("tensor \"%s\": bad data_offsets",
		    e->string);
		return -EINVAL;
	}
	if (t->end > data_size) {
		*cause = xasprintf("tensor \"%s\": data_offsets [%" PRIu64
		    ", %" PRIu64 "] run past the end of the data (%" PRIu64
		    " bytes); the file is truncated or corrupt", e->string,
		    t->begin, t->end, data_size);
		return -EINVAL;
	}
	bytes = t->end - t->begin;
	if (numel == UINT64_MAX ||
	    numel > UINT64_MAX / graph_dtype_size(t->dtype) ||
	    numel * graph_dtype_size(t->dtype) != bytes) {
		*cause = xasprintf("tensor \"%s\": shape and dtype need %"
		    PRIu64 " elements of %zu bytes but data_offsets span %"
		    PRIu64 " bytes", e->string, numel,
		    graph_dtype_size(t->dtype), bytes);
		return -EINVAL;
	}
	t->numel = numel;
	return 0;
}

static int
st_cmp_begin(const void *a, const void *b)
{
	const struct graph_st_tensor *x = a, *y = b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	return x->end < y->end ? -1 : x->end > y->end;
}

static int
st_cmp_name(const void *a, const void *b)
{
	const struct graph_st_tensor *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

/*
 * Overlapping data or repeated names would make two tensors alias.  After
 * sorting by start, each non-empty tensor must start at or after the
 * furthest end seen so far (not just its neighbour's: a zero-sized tensor
 * in between must not hide an overlap).
 */
static int
st_check_layout(struct graph_st_tensor *t, size_t n, char **cause)
{
	struct graph_st_tensor *s, **byname;
	const struct graph_st_tensor *far = NULL;
	size_t i;
	int rc = 0;

	if (n < 2)
		return 0;
	s = xreallocarray(NULL, n, sizeof *s);
	memcpy(s, t, n * sizeof *s);
	qsort(s, n, sizeof *s, st_cmp_begin);
	for (i = 0; i < n && rc == 0; i++) {
		if (s[i].begin == s[i].end)
			continue;
		if (far != NULL && s[i].begin < far->end) {
			*cause = xasprintf("tensors \"%s\" and \"%s\" overlap",
			    far->name, s[i].name);
			rc = -EINVAL;
		}
		if (far == NULL || s[i].end > far->end)
			far = &s[i];
	}
	free(s);
	if (rc != 0)
		return rc;
	byname = xreallocarray(NULL, n, sizeof *byname);
	for (i = 0; i < n; i++)
		byname[i] = &t[i];
	qsort(byname, n, sizeof *byname, st_cmp_name);
	for (i = 1; i < n && rc == 0; i++) {
		if (strcmp(byname[i]->name, byname[i - 1]->name) == 0) {
			*cause = xasprintf("tensor \"%s\" appears twice",
			    byname[i]->name);
			rc = -EINVAL;
		}
	}
	free(byname);
	return rc;
}

int
graph_st_parse(const uint8_t *buf, size_t len, struct graph_st_tensor **out,
    size_t *nout, uint64_t *data_start, char **cause)
{
	struct graph_st_tensor *t = NULL;
	const char *end = NULL;
	cJSON *root = NULL;
	const cJSON *e;
	uint64_t hlen, data_size;
	size_t n = 0, i, cap;
	int rc = -EINVAL;

	*out = NULL;
	*nout = 0;
	if (len < 8) {
		*cause = xasprintf("file is %zu bytes, too short for a "
		    "safetensors header", len);
		return -EINVAL;
	}
	hlen = le64(buf);
	if (hlen > ST_MAX_HEADER) {
		*cause = xasprintf("header length %" PRIu64 " is over the "
		    "100 MB limit", hlen);
		return -EINVAL;
	}
	if (hlen > len - 8) {
		*cause = xasprintf("header length %" PRIu64 " runs past the "
		    "end of the file (%zu bytes); the file is truncated",
		    hlen, len);
		return -EINVAL;
	}
	if (hlen < 2 || memchr(buf + 8, '\0', hlen) != NULL) {
		*cause = xstrdup("header is not a JSON object");
		return -EINVAL;
	}
	root = cJSON_ParseWithLengthOpts((const char *)buf + 8, hlen, &end, 0);
	if (root == NULL || !cJSON_IsObject(root)) {
		*cause = xasprintf("header is not valid JSON (at byte %td)",
		    end != NULL ? end - (const char *)buf : (ptrdiff_t)8);
		goto out;
	}
	for (; end < (const char *)buf + 8 + hlen; end++) {
		if (*end != ' ' && *end != '\n' && *end != '\t' &&
		    *end != '\r') {
			*cause = xstrdup("header has data after its JSON "
			    "object");
			goto out;
		}
	}
	data_size = len - 8 - hlen;
	cap = (size_t)cJSON_GetArraySize(root);
	t = cap ? xcalloc(cap, sizeof *t) : NULL;
	cJSON_ArrayForEach(e, root) {
		if (strcmp(e->string, "__metadata__") == 0) {
			if (!cJSON_IsObject(e)) {
				*cause = xstrdup("__metadata__ is not an "
				    "object");
				goto out;
			}
			continue;
		}
		if (st_parse_entry(e, data_size, &t[n], cause) != 0)
			goto out;
		t[n].name = xstrdup(e->string);
		t[n].begin += 8 + hlen;
		t[n].end += 8 + hlen;
		n++;
	}
	if (st_check_layout(t, n, cause) != 0)
		goto out;
	*out = t;
	*nout = n;
	*data_start = 8 + hlen;
	t = NULL;
	rc = 0;
out:
	if (t != NULL) {
		for (i = 0; i < n; i++)
			free(t[i].name);
		free(t);
	}
	if (rc != 0)
		*cause = graph_text_printable(*cause);
	cJSON_Delete(root);
	return rc;
}

/* Takes ownership of fd, an open safetensors file named path. */
int
graph_st_open_fd(int fd, const char *path, struct graph_st_file **out,
    char **cause)
{
	struct graph_st_file *f;
	struct stat st;
	char *why = NULL;
	void *map = MAP_FAILED;
	int rc;

	*out = NULL;
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		*cause = xasprintf("%s: not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	if (st.st_size > 0 && (map = mmap(NULL, (size_t)st.st_size, PROT_READ,
	    MAP_SHARED, fd, 0)) == MAP_FAILED) {
		rc = -errno;
		*cause = xasprintf("%s: mmap: %s", path, strerror(errno));
		close(fd);
		return rc;
	}
	f = xcalloc(1, sizeof *f);
	f->fd = fd;
	f->path = xstrdup(path);
	f->size = (uint64_t)st.st_size;
	f->dev = (uint64_t)st.st_dev;
	f->ino = (uint64_t)st.st_ino;
	f->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 +
	    st.st_mtim.tv_nsec;
	f->map = map == MAP_FAILED ? NULL : map;
	rc = graph_st_parse(f->map, (size_t)f->size, &f->t, &f->nt,
	    &f->data_start, &why);
	if (rc != 0) {
		*cause = xasprintf("%s: %s", path, why);
		free(why);
		graph_st_close(f);
		return rc;
	}
	/* Weights are read with pread (reader.c); the map is for headers. */
	*out = f;
	return 0;
}

int
graph_st_open(const char *path, struct graph_st_file **out, char **cause)
{
	int fd;

	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		return -errno;
	}
	return graph_st_open_fd(fd, path, out, cause);
}

void
graph_st_close(struct graph_st_file *f)
{
	size_t i;

	if (f == NULL)
		return;
	if (f->map != NULL)
		munmap((void *)(uintptr_t)f->map, (size_t)f->size);
	if (f->fd != -1)
		close(f->fd);
	for (i = 0; i < f->nt; i++)
		free(f->t[i].name);
	free(f->t);
	free(f->path);
	free(f);
}

/* The open file (not the path: we read the open file) must not change. */
int
graph_st_check_unchanged(const struct graph_st_file *f, char **cause)
{
	struct stat st;
	int64_t mtime;

	if (fstat(f->fd, &st) == -1) {
		*cause = xasprintf("%s: %s", f->path, strerror(errno));
		return -errno;
	}
	mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	if ((uint64_t)st.st_size != f->size || (uint64_t)st.st_ino != f->ino ||
	    mtime != f->mtime_ns) {
		*cause = xasprintf("%s: changed on disk since it was planned "
		    "(size or modification time differs)", f->path);
		return -ESTALE;
	}
	return 0;
}

void
graph_json_string(struct xbuf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p;

	xbuf_add(b, "\"", 1);
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\') {
			char e[2] = { '\\', (char)*p };
			xbuf_add(b, e, 2);
		} else if (*p < 0x20) {
			char e[6] = { '\\', 'u', '0', '0', hex[*p >> 4],
			    hex[*p & 15] };
			xbuf_add(b, e, 6);
		} else {
			xbuf_add(b, p, 1);
		}
	}
	xbuf_add(b, "\"", 1);
}

uint8_t *
graph_st_header_build(const struct graph_st_tensor *t, size_t n,
    size_t *len)
{
	struct xbuf b = { 0 };
	uint8_t *out;
	uint64_t hlen, pad;
	size_t i;
	int k;

	xbuf_add(&b, "{\"__metadata__\":{\"format\":\"pt\"}", 31);
	for (i = 0; i < n; i++) {
		xbuf_add(&b, ",", 1);
		graph_json_string(&b, t[i].name);
		xbuf_printf(&b, ":{\"dtype\":\"%s\",\"shape\":[",
		    graph_dtype_st_name(t[i].dtype));
		for (k = 0; k < t[i].ndim; k++)
			xbuf_printf(&b, "%s%" PRId64, k ? "," : "",
			    t[i].shape[k]);
		xbuf_printf(&b, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64
		    "]}", t[i].begin, t[i].end);
	}
	xbuf_add(&b, "}", 1);
	/* Data must start 8-byte aligned; pad with spaces, as safetensors. */
	hlen = b.len;
	pad = (8 - (8 + hlen) % 8) % 8;
	out = xmalloc(8 + hlen + pad);
	for (k = 0; k < 8; k++)
		out[k] = (uint8_t)((hlen + pad) >> (8 * k));
	memcpy(out + 8, b.data, hlen);
	memset(out + 8 + hlen, ' ', pad);
	*len = 8 + hlen + pad;
	xbuf_free(&b);
	return out;
}

