/* SPDX-License-Identifier: MIT */
/*
 * zip.c: the directory of a zip archive whose entries are stored, not
 * compressed: what torch.save writes (a pytorch_model.bin is one), read
 * without reading any entry's data.
 *
 * The archive is read from its end, as every zip reader must: the end of
 * central directory record (EOCD, the last 22 bytes plus a comment), then,
 * for archives over 4 GB or 65,535 entries, the ZIP64 locator just before
 * it and the ZIP64 end record it points to, then the central directory,
 * one header per entry.  Each entry's data starts after its local header,
 * whose own name and extra field lengths must be read (torch pads the
 * extra field so that data is 64-byte aligned).  Only what torch writes is
 * accepted: one disk, no encryption, method 0 (stored), compressed size
 * equal to size.  Everything is bounds-checked against the file, so a
 * hostile archive can only be refused, with one line naming the problem
 * (the caller adds the file's name).  CRCs are not checked: that would
 * read every weight at plan time, and the reader reads weights by offset
 * as it does from safetensors files.
 *
 * The archive is read through a zip_src: a buffer (the fuzz target) or a
 * file read with pread, never mapped, so that a file truncated while it
 * is read gives an error rather than SIGBUS in the daemon.  Only the
 * tail, the directory (at most ZIP_MAX_DIR bytes) and each local header
 * are read.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph-int.h"

#define EOCD_SIG	0x06054b50u
#define EOCD_LEN	22
#define LOC64_SIG	0x07064b50u
#define LOC64_LEN	20
#define EOCD64_SIG	0x06064b50u
#define EOCD64_LEN	56
#define CDH_SIG		0x02014b50u
#define CDH_LEN		46
#define LFH_SIG		0x04034b50u
#define LFH_LEN		30
#define EXTRA_ZIP64	0x0001
#define MAX_COMMENT	65535
/* A real directory takes about 110 bytes an entry: 7 MB at the limit of
 * 65,536 tensors a file. */
#define ZIP_MAX_DIR	(64u << 20)

static uint16_t
rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t
rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static uint64_t
rd64(const uint8_t *p)
{
	return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

/* n bytes at off of the source into out; off + n must be in it. */
int
zip_src_read(const struct zip_src *src, uint64_t off, size_t n, void *out,
    char **cause)
{
	uint8_t *p = out;
	ssize_t got;

	if (off > src->size || src->size - off < n) {
		*cause = xasprintf("a read of %zu bytes at byte %" PRIu64
		    " runs past the end of the file", n, off);
		return -EINVAL;
	}
	if (src->buf != NULL) {
		memcpy(out, src->buf + off, n);
		return 0;
	}
	while (n > 0) {
		got = pread(src->fd, p, n, (off_t)off);
		if (got == -1 && errno == EINTR)
			continue;
		if (got <= 0) {
			int rc = got == 0 ? -EIO : -errno;

			*cause = got == 0 ? xstrdup("the file is shorter "
			    "than when it was opened (was it truncated?)") :
			    xstrdup(strerror(errno));
			return rc;
		}
		p += got;
		n -= (size_t)got;
		off += (uint64_t)got;
	}
	return 0;
}

struct zip_dir {
	uint64_t count;
	uint64_t cd_off;
	uint64_t cd_size;
};

/*
 * The EOCD in buf[0, len), the end of the file: the last signature whose
 * comment ends the file exactly.
 */
static int
zip_find_eocd(const uint8_t *buf, size_t len, size_t *at, char **cause)
{
	size_t pos, low;

	if (len < EOCD_LEN) {
		*cause = xstrdup("too short to be a zip archive");
		return -EINVAL;
	}
	low = len - EOCD_LEN > MAX_COMMENT ? len - EOCD_LEN - MAX_COMMENT : 0;
	for (pos = len - EOCD_LEN + 1; pos-- > low;) {
		if (rd32(buf + pos) == EOCD_SIG &&
		    pos + EOCD_LEN + rd16(buf + pos + 20) == len) {
			*at = pos;
			return 0;
		}
	}
	*cause = xstrdup("no zip end of central directory record");
	return -EINVAL;
}

/* The ZIP64 end record at z_off, which must end before limit. */
static int
zip_read_eocd64(const struct zip_src *src, uint64_t z_off, uint64_t limit,
    struct zip_dir *d, char **cause)
{
	uint8_t z[EOCD64_LEN];
	char *why = NULL;

	if (z_off > limit || limit - z_off < EOCD64_LEN ||
	    zip_src_read(src, z_off, EOCD64_LEN, z, &why) != 0 ||
	    rd32(z) != EOCD64_SIG) {
		free(why);
		*cause = xstrdup("the ZIP64 locator points to no ZIP64 end "
		    "record");
		return -EINVAL;
	}
	if (rd32(z + 16) != 0 || rd32(z + 20) != 0 ||
	    rd64(z + 24) != rd64(z + 32)) {
		*cause = xstrdup("a zip archive spanning several disks");
		return -EINVAL;
	}
	d->count = rd64(z + 32);
	d->cd_size = rd64(z + 40);
	d->cd_off = rd64(z + 48);
	return 0;
}

static int
zip_read_eocd(const struct zip_src *src, struct zip_dir *d, char **cause)
{
	const uint8_t *e, *l;
	uint64_t base;
	uint8_t *buf;
	size_t at, len;
	int rc;

	/* The EOCD, the longest comment, and the ZIP64 locator before. */
	len = src->size < EOCD_LEN + MAX_COMMENT + LOC64_LEN ?
	    (size_t)src->size : EOCD_LEN + MAX_COMMENT + LOC64_LEN;
	base = src->size - len;
	buf = xmalloc(len ? len : 1);
	if ((rc = zip_src_read(src, base, len, buf, cause)) != 0 ||
	    (rc = zip_find_eocd(buf, len, &at, cause)) != 0)
		goto out;
	rc = -EINVAL;
	e = buf + at;
	if (rd16(e + 4) != 0 || rd16(e + 6) != 0 ||
	    rd16(e + 8) != rd16(e + 10)) {
		*cause = xstrdup("a zip archive spanning several disks");
		goto out;
	}
	d->count = rd16(e + 10);
	d->cd_size = rd32(e + 12);
	d->cd_off = rd32(e + 16);
	rc = 0;
	if (at < LOC64_LEN || rd32(e - LOC64_LEN) != LOC64_SIG)
		goto out;
	/* ZIP64: the real values are in the record the locator names. */
	l = e - LOC64_LEN;
	if (rd32(l + 4) != 0 || rd32(l + 16) > 1) {
		*cause = xstrdup("a zip archive spanning several disks");
		rc = -EINVAL;
		goto out;
	}
	rc = zip_read_eocd64(src, rd64(l + 8), base + at - LOC64_LEN, d,
	    cause);
out:
	free(buf);
	return rc;
}

/*
 * The ZIP64 extra field holds, in this order, each of size, compressed
 * size and local header offset whose 32-bit field is 0xffffffff.
 */
static int
zip_extra64(const uint8_t *x, size_t xlen, uint64_t *size, uint64_t *csize,
    uint64_t *off, char **cause)
{
	uint64_t *want[3] = { size, csize, off };
	size_t i, id, n, k, at;

	for (i = 0; i + 4 <= xlen; i += 4 + n) {
		id = rd16(x + i);
		n = rd16(x + i + 2);
		if (n > xlen - i - 4)
			break;
		if (id != EXTRA_ZIP64)
			continue;
		for (k = 0, at = i + 4; k < 3; k++) {
			if (*want[k] != UINT32_MAX)
				continue;
			if (at + 8 > i + 4 + n)
				goto short_field;
			*want[k] = rd64(x + at);
			at += 8;
		}
		return 0;
	}
	for (k = 0; k < 3; k++)
		if (*want[k] == UINT32_MAX)
			goto short_field;
	return 0;
short_field:
	*cause = xstrdup("an entry's ZIP64 extra field is missing or short");
	return -EINVAL;
}

/*
 * The entry whose central directory header is at cd[*pos] (cd holds the
 * whole directory, d->cd_size bytes), with its data located from its
 * local header; lh is scratch for one local header.
 */
static int
zip_read_entry(const struct zip_src *src, const struct zip_dir *d,
    const uint8_t *cd, uint64_t *pos, uint8_t *lh, struct zip_entry *z,
    char **cause)
{
	const uint8_t *h;
	uint64_t size, csize, off, at = d->cd_off + *pos;
	size_t nlen, xlen, clen;
	const char *why;
	char *rd_why = NULL;
	int rc;

	if (d->cd_size - *pos < CDH_LEN || rd32(cd + *pos) != CDH_SIG) {
		*cause = xasprintf("zip central directory entry at byte %"
		    PRIu64 " is not valid", at);
		return -EINVAL;
	}
	h = cd + *pos;
	nlen = rd16(h + 28);
	xlen = rd16(h + 30);
	clen = rd16(h + 32);
	if (d->cd_size - *pos - CDH_LEN < (uint64_t)nlen + xlen + clen) {
		*cause = xasprintf("zip central directory entry at byte %"
		    PRIu64 " runs past the directory", at);
		return -EINVAL;
	}
	/* Names go into messages: UTF-8 (torch's are ASCII), no NUL. */
	if (nlen == 0 || !jscan_utf8_ok((const char *)h + CDH_LEN, nlen,
	    &why)) {
		*cause = xasprintf("zip entry at byte %" PRIu64 " has %s", at,
		    nlen == 0 ? "an empty name" : "a name that is not UTF-8");
		return -EINVAL;
	}
	z->name = xstrndup((const char *)h + CDH_LEN, nlen);
	if ((rd16(h + 8) & 1) != 0 || rd16(h + 10) != 0) {
		*cause = xasprintf("zip entry '%s' is %s; torch stores its "
		    "entries uncompressed", z->name, (rd16(h + 8) & 1) ?
		    "encrypted" : "compressed");
		return -EINVAL;
	}
	csize = rd32(h + 20);
	size = rd32(h + 24);
	off = rd32(h + 42);
	if (rd16(h + 34) != 0 && rd16(h + 34) != UINT16_MAX) {
		*cause = xasprintf("zip entry '%s' is on another disk",
		    z->name);
		return -EINVAL;
	}
	if ((rc = zip_extra64(h + CDH_LEN + nlen, xlen, &size, &csize, &off,
	    cause)) != 0)
		return rc;
	if (csize != size) {
		*cause = xasprintf("zip entry '%s' is stored with a size "
		    "different from its length", z->name);
		return -EINVAL;
	}
	/* Data lies before the central directory, after a local header
	 * that names the same entry. */
	if (off > d->cd_off || d->cd_off - off < LFH_LEN + nlen ||
	    zip_src_read(src, off, LFH_LEN + nlen, lh, &rd_why) != 0 ||
	    rd32(lh) != LFH_SIG) {
		free(rd_why);
		*cause = xasprintf("zip entry '%s' has no local header at "
		    "byte %" PRIu64, z->name, off);
		return -EINVAL;
	}
	if (rd16(lh + 26) != nlen || memcmp(lh + LFH_LEN, h + CDH_LEN,
	    nlen) != 0 || rd16(lh + 8) != 0) {
		*cause = xasprintf("zip entry '%s': its local header does not "
		    "match the directory", z->name);
		return -EINVAL;
	}
	z->offset = off + LFH_LEN + nlen + rd16(lh + 28);
	if (z->offset > d->cd_off || d->cd_off - z->offset < size) {
		*cause = xasprintf("zip entry '%s' runs past the archive's "
		    "data", z->name);
		return -EINVAL;
	}
	z->size = size;
	*pos += CDH_LEN + nlen + xlen + clen;
	return 0;
}

/*
 * The entries of the zip archive src, at most max of them.  On success
 * *out holds *n entries, in directory order.
 */
int
zip_read_dir(const struct zip_src *src, size_t max, struct zip_entry **out,
    size_t *n, char **cause)
{
	struct zip_entry *z = NULL;
	uint8_t *cd = NULL, *lh = NULL;
	struct zip_dir d;
	uint64_t pos, i;
	int rc;

	*out = NULL;
	*n = 0;
	if ((rc = zip_read_eocd(src, &d, cause)) != 0)
		return rc;
	if (d.cd_off > src->size || src->size - d.cd_off < d.cd_size) {
		*cause = xstrdup("the zip central directory lies outside the "
		    "file");
		return -EINVAL;
	}
	if (d.cd_size > ZIP_MAX_DIR) {
		*cause = xasprintf("the zip central directory is %" PRIu64
		    " bytes, over the limit of %u", d.cd_size, ZIP_MAX_DIR);
		return -EINVAL;
	}
	if (d.count > max || d.count > d.cd_size / CDH_LEN) {
		*cause = xasprintf("the zip archive lists %" PRIu64 " entries"
		    "%s", d.count, d.count > max ? ", too many" :
		    ", more than its directory holds");
		return -EINVAL;
	}
	cd = xmalloc(d.cd_size ? (size_t)d.cd_size : 1);
	if ((rc = zip_src_read(src, d.cd_off, (size_t)d.cd_size, cd,
	    cause)) != 0) {
		free(cd);
		return rc;
	}
	lh = xmalloc(LFH_LEN + UINT16_MAX);
	z = xcalloc(d.count ? (size_t)d.count : 1, sizeof *z);
	for (i = 0, pos = 0; i < d.count; i++) {
		if ((rc = zip_read_entry(src, &d, cd, &pos, lh, &z[i],
		    cause)) != 0) {
			zip_entries_free(z, (size_t)i + 1);
			goto out;
		}
	}
	*out = z;
	*n = (size_t)d.count;
out:
	free(lh);
	free(cd);
	return rc;
}

void
zip_entries_free(struct zip_entry *z, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(z[i].name);
	free(z);
}
