/* SPDX-License-Identifier: MIT */
/*
 * torchzip.c: torch.save's file format, written (see torchzip.h).
 *
 * The zip side follows torch's PyTorchStreamWriter: every entry stored
 * (method 0), its data 64-byte aligned by an "FB" extra field in the
 * local header, CRC-32 filled in after the data (the header is written
 * first and patched, so entries stream).  With zip64 set every entry
 * carries ZIP64 sizes and offsets and the archive ends with the ZIP64
 * records, as torch's archives over 4 GB do; readers must accept both.
 *
 * The pickle side writes what torch 1.13's pickler writes for a state
 * dict at protocol 2 (checked against pickletools' disassembly of a real
 * torch.save): GLOBAL, BINPUT/BINGET memo references for repeated globals
 * and strings, a 5-tuple persistent id per storage, _rebuild_tensor_v2
 * with an empty OrderedDict of hooks, SETITEMS in batches of 1000, and for
 * an OrderedDict the _metadata that state_dict() attaches, set by BUILD.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "torchzip.h"

#define ALIGN		64
#define EXTRA_FB	0x4246	/* "FB": torch's alignment padding */
#define EXTRA_ZIP64	0x0001

static void
tz_die(const char *path, const char *what)
{
	fprintf(stderr, "genmodel: %s: %s: %s\n", path, what,
	    errno ? strerror(errno) : "error");
	exit(1);
}

static void *
tz_grow(void *p, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return p;
	*cap = need > 2 * *cap ? need : 2 * *cap;
	if ((p = realloc(p, *cap * size)) == NULL) {
		fputs("genmodel: out of memory\n", stderr);
		exit(1);
	}
	return p;
}

static uint32_t
tz_crc(uint32_t crc, const unsigned char *p, size_t n)
{
	static uint32_t table[256];
	uint32_t c;
	int i, k;

	if (table[1] == 0) {
		for (i = 0; i < 256; i++) {
			c = (uint32_t)i;
			for (k = 0; k < 8; k++)
				c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
			table[i] = c;
		}
	}
	crc = ~crc;
	while (n-- > 0)
		crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static void
le(unsigned char *p, uint64_t v, int n)
{
	int i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void
tz_raw(struct tz *z, const void *data, size_t len)
{
	if (len > 0 && fwrite(data, 1, len, z->fp) != len)
		tz_die(z->path, "write");
	z->pos += len;
}

void
tz_open(struct tz *z, FILE *fp, const char *path, int zip64)
{
	memset(z, 0, sizeof *z);
	z->fp = fp;
	z->path = path;
	z->zip64 = zip64;
}

void
tz_begin(struct tz *z, const char *name, uint64_t size)
{
	unsigned char h[30 + 20 + 4];
	size_t nlen = strlen(name), x64 = z->zip64 ? 20 : 0, pad;
	struct tz_entry *e;
	static const unsigned char zeros[ALIGN];

	z->ents = tz_grow(z->ents, &z->cap, z->n + 1, sizeof *z->ents);
	e = &z->ents[z->n++];
	e->name = strdup(name);
	e->header = z->pos;
	e->size = size;
	/* The FB field's own 4 bytes, then zeros up to the boundary. */
	pad = (ALIGN - (z->pos + 30 + nlen + x64 + 4) % ALIGN) % ALIGN;
	memset(h, 0, sizeof h);
	le(h, 0x04034b50, 4);
	le(h + 4, z->zip64 ? 45 : 20, 2);
	le(h + 10, 0, 2);		/* time */
	le(h + 12, 0x21, 2);		/* 1980-01-01 */
	le(h + 18, z->zip64 ? 0xffffffffu : size, 4);
	le(h + 22, z->zip64 ? 0xffffffffu : size, 4);
	le(h + 26, nlen, 2);
	le(h + 28, x64 + 4 + pad, 2);
	tz_raw(z, h, 30);
	tz_raw(z, name, nlen);
	if (z->zip64) {
		le(h, EXTRA_ZIP64, 2);
		le(h + 2, 16, 2);
		le(h + 4, size, 8);
		le(h + 12, size, 8);
		tz_raw(z, h, 20);
	}
	le(h, EXTRA_FB, 2);
	le(h + 2, pad, 2);
	tz_raw(z, h, 4);
	tz_raw(z, zeros, pad);
	z->left = size;
	z->crc = 0;
}

void
tz_write(struct tz *z, const void *data, size_t len)
{
	if (len > z->left)
		tz_die(z->path, "entry longer than announced");
	z->crc = tz_crc(z->crc, data, len);
	z->left -= len;
	tz_raw(z, data, len);
}

/* Patches the CRC into the local header, then carries on at the end. */
void
tz_end(struct tz *z)
{
	struct tz_entry *e = &z->ents[z->n - 1];
	unsigned char c[4];

	if (z->left != 0)
		tz_die(z->path, "entry shorter than announced");
	e->crc = z->crc;
	le(c, e->crc, 4);
	if (fseeko(z->fp, (off_t)(e->header + 14), SEEK_SET) != 0 ||
	    fwrite(c, 1, 4, z->fp) != 4 ||
	    fseeko(z->fp, (off_t)z->pos, SEEK_SET) != 0)
		tz_die(z->path, "patch");
}

void
tz_entry(struct tz *z, const char *name, const void *data, size_t len)
{
	tz_begin(z, name, len);
	tz_write(z, data, len);
	tz_end(z);
}

void
tz_finish(struct tz *z)
{
	unsigned char h[56];
	uint64_t cd = z->pos, n = z->n;
	size_t i, nlen;
	struct tz_entry *e;

	for (i = 0; i < z->n; i++) {
		e = &z->ents[i];
		nlen = strlen(e->name);
		memset(h, 0, 46);
		le(h, 0x02014b50, 4);
		le(h + 4, z->zip64 ? 45 : 20, 2);
		le(h + 6, z->zip64 ? 45 : 20, 2);
		le(h + 12, 0, 2);
		le(h + 14, 0x21, 2);
		le(h + 16, e->crc, 4);
		le(h + 20, z->zip64 ? 0xffffffffu : e->size, 4);
		le(h + 24, z->zip64 ? 0xffffffffu : e->size, 4);
		le(h + 28, nlen, 2);
		le(h + 30, z->zip64 ? 28 : 0, 2);
		le(h + 42, z->zip64 ? 0xffffffffu : e->header, 4);
		tz_raw(z, h, 46);
		tz_raw(z, e->name, nlen);
		if (z->zip64) {
			le(h, EXTRA_ZIP64, 2);
			le(h + 2, 24, 2);
			le(h + 4, e->size, 8);
			le(h + 12, e->size, 8);
			le(h + 20, e->header, 8);
			tz_raw(z, h, 28);
		}
		free(e->name);
	}
	if (z->zip64) {
		uint64_t rec = z->pos;

		memset(h, 0, 56);
		le(h, 0x06064b50, 4);
		le(h + 4, 44, 8);
		le(h + 12, 45, 2);
		le(h + 14, 45, 2);
		le(h + 24, n, 8);
		le(h + 32, n, 8);
		le(h + 40, z->pos - cd, 8);
		le(h + 48, cd, 8);
		tz_raw(z, h, 56);
		memset(h, 0, 20);
		le(h, 0x07064b50, 4);
		le(h + 8, rec, 8);
		le(h + 16, 1, 4);
		tz_raw(z, h, 20);
	}
	memset(h, 0, 22);
	le(h, 0x06054b50, 4);
	le(h + 8, z->zip64 ? 0xffff : n, 2);
	le(h + 10, z->zip64 ? 0xffff : n, 2);
	le(h + 12, z->zip64 ? 0xffffffffu : z->pos - cd, 4);
	le(h + 16, z->zip64 ? 0xffffffffu : cd, 4);
	tz_raw(z, h, 22);
	free(z->ents);
	z->ents = NULL;
}

void
tz_put(struct tz_buf *b, const void *data, size_t len)
{
	b->data = tz_grow(b->data, &b->cap, b->len + len, 1);
	memcpy(b->data + b->len, data, len);
	b->len += len;
}

void
tz_byte(struct tz_buf *b, unsigned char c)
{
	tz_put(b, &c, 1);
}

/* BININT1, BININT2, BININT or LONG1, as the pickler chooses. */
void
tz_int(struct tz_buf *b, uint64_t v)
{
	unsigned char w[9];
	int n;

	if (v < 256) {
		tz_byte(b, 'K');
		tz_byte(b, (unsigned char)v);
	} else if (v < 65536) {
		tz_byte(b, 'M');
		le(w, v, 2);
		tz_put(b, w, 2);
	} else if (v < (UINT64_C(1) << 31)) {
		tz_byte(b, 'J');
		le(w, v, 4);
		tz_put(b, w, 4);
	} else {
		/* Enough bytes for v and a clear sign bit. */
		for (n = 1; n < 8 && (v >> (8 * n - 1)) != 0; n++)
			;
		if ((v >> (8 * n - 1)) != 0)
			n++;
		tz_byte(b, 0x8a);
		tz_byte(b, (unsigned char)n);
		le(w, v, n > 8 ? 8 : n);
		if (n > 8)
			w[8] = 0;
		tz_put(b, w, (size_t)n);
	}
}

/* BINUNICODE */
void
tz_str(struct tz_buf *b, const char *s)
{
	unsigned char w[4];
	size_t n = strlen(s);

	tz_byte(b, 'X');
	le(w, n, 4);
	tz_put(b, w, 4);
	tz_put(b, s, n);
}

/* The memo, as Python's pickler numbers it: one id per object, in order. */
struct tz_memo {
	uint32_t next;
	uint32_t od;		/* collections.OrderedDict */
	uint32_t rebuild;	/* torch._utils._rebuild_tensor_v2 */
	uint32_t storage;	/* 'storage' */
	uint32_t cpu;		/* 'cpu' */
	uint32_t param;		/* torch._utils._rebuild_parameter */
	const char *cls_name;	/* the last storage class put */
	uint32_t cls;
};

#define TZ_NONE UINT32_MAX

/* A memo opcode: its 1-byte form below 256, else the 4-byte one. */
static void
tz_memo_op(struct tz_buf *b, unsigned char op1, unsigned char op4,
    uint32_t id)
{
	unsigned char w[4];

	if (id < 256) {
		tz_byte(b, op1);
		tz_byte(b, (unsigned char)id);
	} else {
		tz_byte(b, op4);
		le(w, id, 4);
		tz_put(b, w, 4);
	}
}

/* BINPUT / LONG_BINPUT of the next id, kept in *slot if not NULL. */
static void
tz_memo_put(struct tz_buf *b, struct tz_memo *m, uint32_t *slot)
{
	uint32_t id = m->next++;

	tz_memo_op(b, 'q', 'r', id);
	if (slot != NULL)
		*slot = id;
}

/* BINGET / LONG_BINGET */
static void
tz_memo_get(struct tz_buf *b, uint32_t id)
{
	tz_memo_op(b, 'h', 'j', id);
}

static void
tz_global(struct tz_buf *b, struct tz_memo *m, uint32_t *slot,
    const char *mod, const char *name)
{
	if (*slot != TZ_NONE) {
		tz_memo_get(b, *slot);
		return;
	}
	tz_byte(b, 'c');
	tz_put(b, mod, strlen(mod));
	tz_byte(b, '\n');
	tz_put(b, name, strlen(name));
	tz_byte(b, '\n');
	tz_memo_put(b, m, slot);
}

static void
tz_memo_str(struct tz_buf *b, struct tz_memo *m, uint32_t *slot,
    const char *s)
{
	if (*slot != TZ_NONE) {
		tz_memo_get(b, *slot);
		return;
	}
	tz_str(b, s);
	tz_memo_put(b, m, slot);
}

static void
tz_tuple_of(struct tz_buf *b, struct tz_memo *m, const uint64_t *v, int n)
{
	int i;

	if (n == 0) {
		tz_byte(b, ')');
		return;
	}
	if (n > 3)
		tz_byte(b, '(');
	for (i = 0; i < n; i++)
		tz_int(b, v[i]);
	tz_byte(b, n > 3 ? 't' : (unsigned char)(0x84 + n));
	tz_memo_put(b, m, NULL);
}

static void
tz_tensor(struct tz_buf *b, struct tz_memo *m, const struct tz_tensor *t)
{
	uint64_t stride[8];
	uint32_t cls = TZ_NONE;
	int k;

	tz_str(b, t->name);
	tz_memo_put(b, m, NULL);
	if (t->param)
		tz_global(b, m, &m->param, "torch._utils",
		    "_rebuild_parameter");
	tz_global(b, m, &m->rebuild, "torch._utils", "_rebuild_tensor_v2");
	tz_byte(b, '(');
	/* The persistent id: ('storage', class, key, 'cpu', numel). */
	tz_byte(b, '(');
	tz_memo_str(b, m, &m->storage, "storage");
	if (m->cls_name != NULL && strcmp(m->cls_name, t->storage) == 0)
		cls = m->cls;
	tz_global(b, m, &cls, "torch", t->storage);
	m->cls_name = t->storage;
	m->cls = cls;
	tz_str(b, t->key);
	tz_memo_put(b, m, NULL);
	tz_memo_str(b, m, &m->cpu, "cpu");
	tz_int(b, t->storage_numel);
	tz_byte(b, 't');
	tz_memo_put(b, m, NULL);
	tz_byte(b, 'Q');
	tz_int(b, t->offset);
	tz_tuple_of(b, m, t->shape, t->ndim);
	if (t->stride == NULL) {
		for (k = t->ndim; k-- > 0;)
			stride[k] = k + 1 == t->ndim ? 1 :
			    stride[k + 1] * t->shape[k + 1];
	}
	tz_tuple_of(b, m, t->stride ? t->stride : stride, t->ndim);
	tz_byte(b, 0x89);	/* requires_grad=False */
	tz_global(b, m, &m->od, "collections", "OrderedDict");
	tz_byte(b, ')');
	tz_byte(b, 'R');
	tz_memo_put(b, m, NULL);
	tz_byte(b, 't');
	tz_memo_put(b, m, NULL);
	tz_byte(b, 'R');
	tz_memo_put(b, m, NULL);
	if (t->param) {
		/* (tensor, requires_grad, OrderedDict()) */
		tz_byte(b, 0x89);
		tz_global(b, m, &m->od, "collections", "OrderedDict");
		tz_byte(b, ')');
		tz_byte(b, 'R');
		tz_memo_put(b, m, NULL);
		tz_byte(b, 0x87);
		tz_memo_put(b, m, NULL);
		tz_byte(b, 'R');
		tz_memo_put(b, m, NULL);
	}
}

void
tz_pickle_state_dict(struct tz_buf *b, const struct tz_tensor *t, size_t n,
    int ordered)
{
	struct tz_memo m = { 0, TZ_NONE, TZ_NONE, TZ_NONE, TZ_NONE, TZ_NONE,
		NULL, TZ_NONE };
	size_t i;

	tz_byte(b, 0x80);
	tz_byte(b, 2);
	if (ordered) {
		tz_global(b, &m, &m.od, "collections", "OrderedDict");
		tz_byte(b, ')');
		tz_byte(b, 'R');
	} else {
		tz_byte(b, '}');
	}
	tz_memo_put(b, &m, NULL);
	for (i = 0; i < n; i++) {
		if (i % 1000 == 0)
			tz_byte(b, '(');
		tz_tensor(b, &m, &t[i]);
		if (i % 1000 == 999 || i + 1 == n)
			tz_byte(b, 'u');
	}
	if (ordered) {
		/* _metadata = OrderedDict([('', {'version': 1})]) */
		uint32_t none = TZ_NONE;

		tz_byte(b, '}');
		tz_memo_put(b, &m, NULL);
		tz_memo_str(b, &m, &none, "_metadata");
		tz_global(b, &m, &m.od, "collections", "OrderedDict");
		tz_byte(b, ')');
		tz_byte(b, 'R');
		tz_memo_put(b, &m, NULL);
		none = TZ_NONE;
		tz_memo_str(b, &m, &none, "");
		tz_byte(b, '}');
		tz_memo_put(b, &m, NULL);
		none = TZ_NONE;
		tz_memo_str(b, &m, &none, "version");
		tz_int(b, 1);
		tz_byte(b, 's');
		tz_byte(b, 's');
		tz_byte(b, 's');
		tz_byte(b, 'b');
	}
	tz_byte(b, '.');
}
