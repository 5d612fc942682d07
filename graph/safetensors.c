/* SPDX-License-Identifier: MIT */
/*
 * safetensors.c: read safetensors headers and build headers for the files
 * we write.
 *
 * A safetensors file is an 8-byte little-endian header length, a JSON header
 * describing every tensor (dtype, shape, data_offsets relative to the end of
 * the header), then the raw data.  Files come from anywhere, so the header is
 * hostile until safetensors-header.c has checked it (what is checked, and
 * why, is listed there); each error names the file and the problem.  Only
 * the header is read (with pread, into memory), so planning stays
 * header-only.  An open file is immutable and may be read from any
 * thread; its tensors can be found by name (safetensors_find) in constant time,
 * so that a model's index can be checked against a shard of tens of
 * thousands of tensors without a quadratic scan.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph-int.h"

/*
 * A record for the open file fd named path (taking ownership of fd), with
 * no tensors yet: what a safetensors file and a torch checkpoint
 * (torchbin.c) both start from.  Files are read with pread, never mapped:
 * a file its owner truncates while we read it gives a short read and an
 * error, where a mapping would give SIGBUS and take the daemon down.
 */
int
tensorfile_open(int fd, const char *path, struct safetensors_file **out,
    char **cause)
{
	struct safetensors_file *f;
	struct stat st;

	*out = NULL;
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		*cause = xasprintf("%s: not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	f = xcalloc(1, sizeof *f);
	f->fd = fd;
	f->path = xstrdup(path);
	f->size = (uint64_t)st.st_size;
	f->dev = (uint64_t)st.st_dev;
	f->ino = (uint64_t)st.st_ino;
	f->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 +
	    st.st_mtim.tv_nsec;
	*out = f;
	return 0;
}

/*
 * The bytes of f that safetensors_parse reads: the length word and, when
 * its value can be a header of this file, the header.
 */
static int
safetensors_read_header(const struct safetensors_file *f, uint8_t **buf,
    size_t *len, char **cause)
{
	struct zip_src src = { NULL, f->fd, f->size };
	uint8_t word[8];
	uint64_t hlen;
	size_t n = f->size < 8 ? (size_t)f->size : 8;
	int rc;

	*buf = NULL;
	if ((rc = zip_src_read(&src, 0, n, word, cause)) != 0)
		return rc;
	hlen = 0;
	for (rc = 7; n == 8 && rc >= 0; rc--)
		hlen = hlen << 8 | word[rc];
	if (n == 8 && hlen <= SAFETENSORS_MAX_HEADER && hlen <= f->size - 8)
		n = 8 + (size_t)hlen;
	*buf = xmalloc(n ? n : 1);
	*len = n;
	if ((rc = zip_src_read(&src, 0, n, *buf, cause)) != 0) {
		free(*buf);
		*buf = NULL;
	}
	return rc;
}

/* Takes ownership of fd, an open safetensors file named path. */
int
safetensors_open_fd(int fd, const char *path, struct safetensors_file **out,
    char **cause)
{
	struct safetensors_file *f;
	char *why = NULL;
	uint8_t *hdr = NULL;
	size_t hdr_len;
	int rc;

	if ((rc = tensorfile_open(fd, path, &f, cause)) != 0)
		return rc;
	/* The parser reads only the header; the length it is given is the
	 * file's, which the data offsets must tile. */
	if ((rc = safetensors_read_header(f, &hdr, &hdr_len, &why)) == 0)
		rc = safetensors_parse_names(hdr, (size_t)f->size, &f->t,
		    &f->nt, &f->data_start, &f->names, &why);
	free(hdr);
	if (rc != 0) {
		*cause = xasprintf("%s: %s", path, why);
		free(why);
		safetensors_close(f);
		return rc;
	}
	/* Weights are read with pread too (reader.c). */
	*out = f;
	return 0;
}

int
safetensors_open(const char *path, struct safetensors_file **out, char **cause)
{
	int fd;

	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		return -errno;
	}
	return safetensors_open_fd(fd, path, out, cause);
}

/* Whether f has a tensor named name, and its index in f->t. */
bool
safetensors_find(const struct safetensors_file *f, const char *name, size_t *i)
{
	return strmap_get(&f->names, name, i);
}

void
safetensors_close(struct safetensors_file *f)
{
	size_t i;

	if (f == NULL)
		return;
	if (f->fd != -1)
		close(f->fd);
	strmap_free(&f->names);
	for (i = 0; i < f->nt; i++)
		free(f->t[i].name);
	free(f->t);
	free(f->path);
	free(f);
}

/* The open file (not the path: we read the open file) must not change. */
int
safetensors_check_unchanged(const struct safetensors_file *f, char **cause)
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
safetensors_header_build(const struct safetensors_tensor *t, size_t n,
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

