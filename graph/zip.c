/* SPDX-License-Identifier: MIT */
/*
 * zip.c: the directory of a zip archive whose entries are stored, not
 * compressed: what torch.save writes (a pytorch_model.bin is one), read
 * from a mapped file without reading any entry's data.
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
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

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

struct zip_dir {
	uint64_t count;
	uint64_t cd_off;
	uint64_t cd_size;
};

/* The EOCD: the last signature whose comment ends the file exactly. */
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

static int
zip_read_eocd(const uint8_t *buf, size_t len, struct zip_dir *d,
    char **cause)
{
	const uint8_t *e, *l, *z;
	uint64_t z_off;
	size_t at;
	int rc;

	if ((rc = zip_find_eocd(buf, len, &at, cause)) != 0)
		return rc;
	e = buf + at;
	if (rd16(e + 4) != 0 || rd16(e + 6) != 0 ||
	    rd16(e + 8) != rd16(e + 10)) {
		*cause = xstrdup("a zip archive spanning several disks");
		return -EINVAL;
	}
	d->count = rd16(e + 10);
	d->cd_size = rd32(e + 12);
	d->cd_off = rd32(e + 16);
	if (at < LOC64_LEN || rd32(e - LOC64_LEN) != LOC64_SIG)
		return 0;
	/* ZIP64: the real values are in the record the locator names. */
	l = e - LOC64_LEN;
	z_off = rd64(l + 8);
	if (rd32(l + 4) != 0 || rd32(l + 16) > 1) {
		*cause = xstrdup("a zip archive spanning several disks");
		return -EINVAL;
	}
	if (z_off > at - LOC64_LEN || at - LOC64_LEN - z_off < EOCD64_LEN ||
	    rd32(buf + z_off) != EOCD64_SIG) {
		*cause = xstrdup("the ZIP64 locator points to no ZIP64 end "
		    "record");
		return -EINVAL;
	}
	z = buf + z_off;
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

/* One central directory header at *pos; its entry's data located. */
static int
zip_read_entry(const uint8_t *buf, size_t len, const struct zip_dir *d,
    uint64_t *pos, struct zip_entry *z, char **cause)
{
	const uint8_t *h, *lh;
	uint64_t size, csize, off, end = d->cd_off + d->cd_size;
	size_t nlen, xlen, clen;
	const char *why;
	int rc;

	if (end - *pos < CDH_LEN || rd32(buf + *pos) != CDH_SIG) {
		*cause = xasprintf("zip central directory entry at byte %"
		    PRIu64 " is not valid", *pos);
		return -EINVAL;
	}
	h = buf + *pos;
	nlen = rd16(h + 28);
	xlen = rd16(h + 30);
	clen = rd16(h + 32);
	if (end - *pos - CDH_LEN < (uint64_t)nlen + xlen + clen) {
		*cause = xasprintf("zip central directory entry at byte %"
		    PRIu64 " runs past the directory", *pos);
		return -EINVAL;
	}
	/* Names go into messages: UTF-8 (torch's are ASCII), no NUL. */
	if (nlen == 0 || !jscan_utf8_ok((const char *)h + CDH_LEN, nlen,
	    &why)) {
		*cause = xasprintf("zip entry at byte %" PRIu64 " has %s",
		    *pos, nlen == 0 ? "an empty name" :
		    "a name that is not UTF-8");
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
	if (off > d->cd_off || d->cd_off - off < LFH_LEN ||
	    rd32(buf + off) != LFH_SIG) {
		*cause = xasprintf("zip entry '%s' has no local header at "
		    "byte %" PRIu64, z->name, off);
		return -EINVAL;
	}
	lh = buf + off;
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
	(void)len;
	return 0;
}

/*
 * The entries of the zip archive buf[0, len), at most max of them.  On
 * success *out holds *n entries, in directory order.
 */
int
zip_read_dir(const uint8_t *buf, size_t len, size_t max,
    struct zip_entry **out, size_t *n, char **cause)
{
	struct zip_entry *z = NULL;
	struct zip_dir d;
	uint64_t pos, i;
	int rc;

	*out = NULL;
	*n = 0;
	if ((rc = zip_read_eocd(buf, len, &d, cause)) != 0)
		return rc;
	if (d.cd_off > len || len - d.cd_off < d.cd_size) {
		*cause = xstrdup("the zip central directory lies outside the "
		    "file");
		return -EINVAL;
	}
	if (d.count > max || d.count > d.cd_size / CDH_LEN) {
		*cause = xasprintf("the zip archive lists %" PRIu64 " entries"
		    "%s", d.count, d.count > max ? ", too many" :
		    ", more than its directory holds");
		return -EINVAL;
	}
	z = xcalloc(d.count ? (size_t)d.count : 1, sizeof *z);
	pos = d.cd_off;
	for (i = 0; i < d.count; i++) {
		if ((rc = zip_read_entry(buf, len, &d, &pos, &z[i],
		    cause)) != 0) {
			zip_entries_free(z, (size_t)i + 1);
			return rc;
		}
	}
	*out = z;
	*n = (size_t)d.count;
	return 0;
}

void
zip_entries_free(struct zip_entry *z, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(z[i].name);
	free(z);
}
