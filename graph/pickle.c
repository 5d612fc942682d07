/* SPDX-License-Identifier: MIT */
/*
 * pickle.c: the state dict in a torch checkpoint's data.pkl, read by a
 * restricted unpickler that never imports or calls anything.
 *
 * A pickle is a program for a stack machine; Python's unpickler runs it
 * and calls whatever globals it names, which is why loading an untrusted
 * .bin can run arbitrary code.  This one implements only the opcodes that
 * torch.save's pickler emits (protocols 2 to 5) and knows only the globals
 * a state dict needs, each by what it builds, not by calling it:
 *
 *   collections.OrderedDict          an empty dict (state_dict()'s type;
 *                                    its BUILD state, _metadata, is
 *                                    dropped)
 *   torch._utils._rebuild_tensor_v2  a tensor: (storage, offset, size,
 *                                    stride, requires_grad, hooks[, meta])
 *   torch._utils._rebuild_parameter  the same tensor, from (tensor, ...)
 *   torch.FloatStorage and the other typed storage classes, only inside a
 *                                    persistent id ('storage', class, key,
 *                                    location, numel): a storage, whose
 *                                    bytes are the zip entry data/KEY
 *
 * Any other global is refused by name, as is any opcode outside that set.
 * Tensors must be contiguous (torch.save writes views as their storage,
 * offset and strides: a transposed view is refused with its name).  The
 * result is the top-level dict's string keys and tensors, in order; a key
 * set twice is refused (torch never writes one).
 *
 * Values live in an arena owned by the parse and freed with it; the memo
 * and the stack hold pointers into it, so shared objects (a storage read
 * once, a memoised tuple) cost nothing more.  Each opcode creates at most
 * one value and moves each stack item at most once, so time is linear in
 * the input; every allocation is counted against a budget (see the
 * limits below); nothing recurses.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

enum pk_kind {
	PK_NONE,
	PK_BOOL,
	PK_INT,
	PK_FLOAT,
	PK_STR,
	PK_TUPLE,
	PK_LIST,
	PK_DICT,
	PK_GLOBAL,
	PK_STORAGE,
	PK_TENSOR,
};

enum pk_global {
	PG_ORDERED_DICT,
	PG_REBUILD_TENSOR,
	PG_REBUILD_PARAM,
	PG_STORAGE_CLASS,
};

/* What a TENSOR value holds beyond its offset. */
struct pk_tensor {
	struct pk_val *storage;
	int64_t shape[GRAPH_MAX_DIMS];
	int ndim;
	int bad_dim;		/* the first non-contiguous one, or -1 */
	int64_t bad_stride;
	int64_t want_stride;
};

/* Small (40 bytes): a pickle of 65,536 tensors makes about a million. */
struct pk_val {
	uint8_t kind;		/* enum pk_kind */
	uint8_t g;		/* GLOBAL: enum pk_global */
	uint8_t dtype;		/* storage class, STORAGE, TENSOR */
	uint32_t n;		/* STR, STORAGE key: bytes; else items */
	int64_t i;		/* INT, BOOL; STORAGE: numel; TENSOR: offset */
	char *s;		/* STR; STORAGE: its key (the STR's) */
	struct pk_val **items;	/* TUPLE, LIST; DICT: key, value, ... */
	struct pk_tensor *t;	/* TENSOR */
};

struct pk {
	const uint8_t *buf;
	size_t len;
	size_t pos;
	size_t op;		/* where the current opcode starts */
	struct pk_val **all;	/* the arena */
	size_t nall;
	struct pk_val **stack;
	size_t nstack;
	size_t *marks;		/* stack heights at each MARK */
	size_t nmarks;
	struct pk_val **memo;
	size_t nmemo;		/* slots allocated */
	size_t memo_count;	/* slots set, for MEMOIZE */
	size_t pushes;		/* so far: bounds memo indices */
	size_t bytes;		/* allocated so far, against max_bytes */
	size_t max_bytes;
	/* Shared immutable values, most of a state dict's: the small
	 * integers (offsets, sizes, strides), None, the booleans, (). */
	struct pk_val small[256];
	struct pk_val none, no, yes, empty;
	char *cause;
};

/*
 * Limits.  torch's pickle of a state dict is about 130 bytes per tensor,
 * and reading it allocates about 1.5 KB per tensor, 1.8 KB for
 * nn.Parameters (measured: a 36,867-tensor pickle from genmodel, 55.7 MB,
 * and the same re-saved by torch 1.13 as Parameters, 65.8 MB), so the
 * per-file limit of 65,536 tensors needs at most about 9 MB of pickle and
 * 117 MB to read.  Every allocation is counted (pk_spend, pk_grow)
 * against 2 KiB per tensor allowed plus 1 MiB, so no pickle, however
 * hostile, makes the reader hold more than about 129 MiB besides the
 * pickle's own bytes.
 */
#define PK_BYTES_PER_TENSOR 2048
#define PK_BYTES_FIXED (1u << 20)
#define PK_MALLOC_OVERHEAD 16	/* per block, and growth slack per slot */

static const struct {
	const char *name;
	enum graph_dtype dtype;
} pk_storages[] = {
	{ "FloatStorage", GRAPH_DT_F32 },
	{ "HalfStorage", GRAPH_DT_F16 },
	{ "BFloat16Storage", GRAPH_DT_BF16 },
	{ "DoubleStorage", GRAPH_DT_F64 },
	{ "LongStorage", GRAPH_DT_I64 },
	{ "IntStorage", GRAPH_DT_I32 },
	{ "ShortStorage", GRAPH_DT_I16 },
	{ "CharStorage", GRAPH_DT_I8 },
	{ "ByteStorage", GRAPH_DT_U8 },
	{ "BoolStorage", GRAPH_DT_BOOL },
};

static int pk_fail(struct pk *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

static int
pk_fail(struct pk *p, const char *fmt, ...)
{
	va_list ap;
	char *what;

	if (p->cause != NULL)
		return -EINVAL;
	va_start(ap, fmt);
	what = xvasprintf(fmt, ap);
	va_end(ap);
	p->cause = p->op == SIZE_MAX ? xasprintf("data.pkl: %s", what) :
	    xasprintf("data.pkl, byte %zu: %s", p->op, what);
	free(what);
	return -EINVAL;
}

/* Counts n bytes against the budget, which the main loop checks. */
static void
pk_spend(struct pk *p, size_t n)
{
	p->bytes += n;
}

/* xgrowarray for an array of n items, counting what it allocates. */
static void *
pk_grow(struct pk *p, void *a, size_t n, size_t size)
{
	if (n == 0 || (n & (n - 1)) == 0)
		pk_spend(p, (n ? n : 1) * size + PK_MALLOC_OVERHEAD);
	return xgrowarray(a, n, size);
}

static struct pk_val *
pk_new(struct pk *p, enum pk_kind kind)
{
	struct pk_val *v = xcalloc(1, sizeof *v);

	pk_spend(p, sizeof *v + PK_MALLOC_OVERHEAD);
	v->kind = (uint8_t)kind;
	p->all = pk_grow(p, p->all, p->nall, sizeof *p->all);
	p->all[p->nall++] = v;
	return v;
}

static void
pk_push(struct pk *p, struct pk_val *v)
{
	p->pushes++;
	p->stack = pk_grow(p, p->stack, p->nstack, sizeof *p->stack);
	p->stack[p->nstack++] = v;
}

/* The top of the stack, above the last MARK. */
static int
pk_top(struct pk *p, struct pk_val **v)
{
	size_t floor = p->nmarks ? p->marks[p->nmarks - 1] : 0;

	*v = NULL;
	if (p->nstack <= floor)
		return pk_fail(p, "the pickle reads an empty stack");
	*v = p->stack[p->nstack - 1];
	return 0;
}

static int
pk_pop(struct pk *p, struct pk_val **v)
{
	if (pk_top(p, v) != 0)
		return -EINVAL;
	p->nstack--;
	return 0;
}

/* The items above the last MARK, which is removed: *from is their start. */
static int
pk_pop_mark(struct pk *p, size_t *from)
{
	*from = 0;
	if (p->nmarks == 0)
		return pk_fail(p, "the pickle has no MARK to close");
	*from = p->marks[--p->nmarks];
	return 0;
}

static int
pk_take(struct pk *p, size_t n, const uint8_t **out)
{
	*out = NULL;
	if (p->len - p->pos < n)
		return pk_fail(p, "the pickle ends inside an opcode");
	*out = p->buf + p->pos;
	p->pos += n;
	return 0;
}

static uint64_t
pk_le(const uint8_t *b, size_t n)
{
	uint64_t v = 0;

	while (n-- > 0)
		v = v << 8 | b[n];
	return v;
}

static void
pk_append(struct pk *p, struct pk_val *c, struct pk_val *v)
{
	c->items = pk_grow(p, c->items, c->n, sizeof *c->items);
	c->items[c->n++] = v;
}

/* Moves the stack items from `from` up to the end of c's items. */
static void
pk_move(struct pk *p, struct pk_val *c, size_t from)
{
	size_t i;

	for (i = from; i < p->nstack; i++)
		pk_append(p, c, p->stack[i]);
	p->nstack = from;
}

/* A tuple of the stack items from `from` up, which are removed. */
static struct pk_val *
pk_tuple_from(struct pk *p, size_t from)
{
	struct pk_val *t = pk_new(p, PK_TUPLE);

	pk_move(p, t, from);
	return t;
}

static int
pk_set_items(struct pk *p, struct pk_val *d, size_t from)
{
	if (d->kind != PK_DICT)
		return pk_fail(p, "SETITEM on something that is not a dict");
	if ((p->nstack - from) % 2 != 0)
		return pk_fail(p, "SETITEMS with a key and no value");
	pk_move(p, d, from);
	return 0;
}

static int
pk_global(struct pk *p, const char *mod, size_t mlen, const char *name,
    size_t nlen)
{
	struct pk_val *v;
	const char *why;
	size_t i;

#define IS(s, l, lit) ((l) == sizeof(lit) - 1 && memcmp(s, lit, l) == 0)
	v = pk_new(p, PK_GLOBAL);
	if (IS(mod, mlen, "collections") && IS(name, nlen, "OrderedDict"))
		v->g = (uint8_t)PG_ORDERED_DICT;
	else if (IS(mod, mlen, "torch._utils") &&
	    IS(name, nlen, "_rebuild_tensor_v2"))
		v->g = (uint8_t)PG_REBUILD_TENSOR;
	else if (IS(mod, mlen, "torch._utils") &&
	    IS(name, nlen, "_rebuild_parameter"))
		v->g = (uint8_t)PG_REBUILD_PARAM;
	else {
		for (i = 0; i < sizeof pk_storages / sizeof *pk_storages; i++)
			if (IS(mod, mlen, "torch") &&
			    nlen == strlen(pk_storages[i].name) &&
			    memcmp(name, pk_storages[i].name, nlen) == 0)
				break;
		if (i == sizeof pk_storages / sizeof *pk_storages &&
		    IS(mod, mlen, "torch") && nlen > 7 &&
		    memcmp(name + nlen - 7, "Storage", 7) == 0 &&
		    jscan_utf8_ok(name, nlen, &why)) {
			char *n = xstrndup(name, nlen);
			int rc = pk_fail(p, "tensors stored as torch.%s, a "
			    "type mergectl does not read (it reads float32, "
			    "float16, bfloat16 and float64 weights)", n);

			free(n);
			return rc;
		}
		if (i == sizeof pk_storages / sizeof *pk_storages) {
			bool utf8 = jscan_utf8_ok(mod, mlen, &why) &&
			    jscan_utf8_ok(name, nlen, &why);
			char *m = utf8 ? xstrndup(mod, mlen) : xstrdup("?");
			char *n = utf8 ? xstrndup(name, nlen) : xstrdup("?");
			int rc = pk_fail(p, "refusing global '%s.%s': a state "
			    "dict of tensors needs only torch's tensor and "
			    "storage types and collections.OrderedDict, and "
			    "mergectl never runs code from a checkpoint", m,
			    n);

			free(m);
			free(n);
			return rc;
		}
		v->g = (uint8_t)PG_STORAGE_CLASS;
		v->dtype = (uint8_t)pk_storages[i].dtype;
	}
#undef IS
	pk_push(p, v);
	return 0;
}

/* GLOBAL: "module\nname\n" inline. */
static int
pk_op_global(struct pk *p)
{
	const uint8_t *m = p->buf + p->pos, *e1, *e2;

	e1 = memchr(m, '\n', p->len - p->pos);
	e2 = e1 ? memchr(e1 + 1, '\n', (size_t)(p->buf + p->len - e1 - 1)) :
	    NULL;
	if (e2 == NULL)
		return pk_fail(p, "the pickle ends inside GLOBAL");
	p->pos = (size_t)(e2 + 1 - p->buf);
	return pk_global(p, (const char *)m, (size_t)(e1 - m),
	    (const char *)e1 + 1, (size_t)(e2 - e1 - 1));
}

static int
pk_op_stack_global(struct pk *p)
{
	struct pk_val *m, *n;

	if (pk_pop(p, &n) != 0 || pk_pop(p, &m) != 0)
		return -EINVAL;
	if (m->kind != PK_STR || n->kind != PK_STR)
		return pk_fail(p, "STACK_GLOBAL of something not a string");
	return pk_global(p, m->s, m->n, n->s, n->n);
}

static int
pk_int_of(struct pk *p, const struct pk_val *v, int64_t *out,
    const char *what)
{
	*out = 0;
	if (v->kind != PK_INT)
		return pk_fail(p, "%s is not an integer", what);
	*out = v->i;
	return 0;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks
 * [, metadata]): a tensor, if contiguous. */
static int
pk_rebuild_tensor(struct pk *p, const struct pk_val *a, struct pk_val **out)
{
	const struct pk_val *size, *stride;
	struct pk_tensor *t;
	struct pk_val *v;
	int64_t off, want = 1, numel = 1, dim, st;
	size_t k;

	if (a->n != 6 && a->n != 7)
		return pk_fail(p, "_rebuild_tensor_v2 takes 6 or 7 arguments, "
		    "not %zu", (size_t)a->n);
	if (a->items[0]->kind != PK_STORAGE)
		return pk_fail(p, "_rebuild_tensor_v2 of something that is "
		    "not a storage");
	if (pk_int_of(p, a->items[1], &off, "a storage offset") != 0)
		return -EINVAL;
	size = a->items[2];
	stride = a->items[3];
	if (size->kind != PK_TUPLE || stride->kind != PK_TUPLE ||
	    size->n != stride->n)
		return pk_fail(p, "a tensor's size and stride are not tuples "
		    "of one length");
	if (size->n > GRAPH_MAX_DIMS)
		return pk_fail(p, "a tensor of %zu dimensions (at most %d)",
		    (size_t)size->n, GRAPH_MAX_DIMS);
	if (off < 0)
		return pk_fail(p, "a negative storage offset");
	v = pk_new(p, PK_TENSOR);
	v->t = t = xcalloc(1, sizeof *t);
	pk_spend(p, sizeof *t + PK_MALLOC_OVERHEAD);
	t->storage = a->items[0];
	v->dtype = a->items[0]->dtype;
	v->i = off;
	t->ndim = (int)size->n;
	for (k = 0; k < size->n; k++) {
		if (pk_int_of(p, size->items[k], &dim, "a dimension") != 0)
			return -EINVAL;
		if (dim < 0 || (dim > 0 && numel > INT64_MAX / dim))
			return pk_fail(p, "a tensor's size is out of range");
		t->shape[k] = dim;
		numel *= dim;
	}
	/* torch's is_contiguous(): row-major strides, except that an empty
	 * tensor, or a dimension of size 1, may have any.  Refused once its
	 * name is known (pk_result). */
	t->bad_dim = -1;
	for (k = size->n; k-- > 0 && numel != 0;) {
		if (pk_int_of(p, stride->items[k], &st, "a stride") != 0)
			return -EINVAL;
		if (t->shape[k] != 1 && st != want && t->bad_dim < 0) {
			t->bad_dim = (int)k;
			t->bad_stride = st;
			t->want_stride = want;
		}
		want *= t->shape[k];
	}
	*out = v;
	return 0;
}

static int
pk_op_reduce(struct pk *p)
{
	struct pk_val *f, *a, *v = NULL;

	if (pk_pop(p, &a) != 0 || pk_pop(p, &f) != 0)
		return -EINVAL;
	if (f->kind != PK_GLOBAL || a->kind != PK_TUPLE)
		return pk_fail(p, "REDUCE of something that is not a known "
		    "global and a tuple");
	switch ((enum pk_global)f->g) {
	case PG_ORDERED_DICT:
		if (a->n != 0)
			return pk_fail(p, "OrderedDict with arguments");
		v = pk_new(p, PK_DICT);
		break;
	case PG_REBUILD_TENSOR:
		if (pk_rebuild_tensor(p, a, &v) != 0)
			return -EINVAL;
		break;
	case PG_REBUILD_PARAM:
		if (a->n != 3 || a->items[0]->kind != PK_TENSOR)
			return pk_fail(p, "_rebuild_parameter of something "
			    "that is not a tensor");
		v = a->items[0];
		break;
	case PG_STORAGE_CLASS:
		return pk_fail(p, "a storage class called outside a "
		    "persistent id");
	}
	pk_push(p, v);
	return 0;
}

/* ('storage', class, key, location, numel): the storage data/KEY. */
static int
pk_op_persid(struct pk *p)
{
	struct pk_val *t, *s;
	const char *why;
	int64_t numel;

	if (pk_pop(p, &t) != 0)
		return -EINVAL;
	if (t->kind != PK_TUPLE || t->n != 5 || t->items[0]->kind != PK_STR ||
	    strcmp(t->items[0]->s, "storage") != 0)
		return pk_fail(p, "a persistent id that is not a storage");
	if (t->items[1]->kind != PK_GLOBAL ||
	    t->items[1]->g != PG_STORAGE_CLASS)
		return pk_fail(p, "a storage whose type is not a storage "
		    "class");
	if (t->items[2]->kind != PK_STR || t->items[3]->kind != PK_STR)
		return pk_fail(p, "a storage whose key or location is not a "
		    "string");
	/* The key names a zip entry, and messages. */
	if (!jscan_utf8_ok(t->items[2]->s, t->items[2]->n, &why))
		return pk_fail(p, "a storage key with %s", why);
	if (pk_int_of(p, t->items[4], &numel, "a storage's size") != 0)
		return -EINVAL;
	if (numel < 0)
		return pk_fail(p, "a storage of negative size");
	s = pk_new(p, PK_STORAGE);
	s->s = t->items[2]->s;	/* owned by the string value */
	s->n = t->items[2]->n;
	s->dtype = t->items[1]->dtype;
	s->i = numel;
	pk_push(p, s);
	return 0;
}

static int
pk_op_build(struct pk *p)
{
	struct pk_val *state, *obj;

	if (pk_pop(p, &state) != 0 || pk_top(p, &obj) != 0)
		return -EINVAL;
	/* state_dict()'s OrderedDict carries _metadata (module versions),
	 * which transformers does not need from a checkpoint. */
	if (obj->kind != PK_DICT)
		return pk_fail(p, "BUILD of something that is not a dict");
	return 0;
}

static int
pk_memo_put(struct pk *p, uint64_t idx)
{
	struct pk_val *v;
	size_t old = p->nmemo;

	if (pk_top(p, &v) != 0)
		return -EINVAL;
	/* Python's pickler numbers memo entries 0, 1, 2, ...: one per
	 * object pushed so far. */
	if (idx >= p->pushes)
		return pk_fail(p, "memo index %" PRIu64 " is out of range",
		    idx);
	if (idx >= p->nmemo) {
		p->nmemo = (size_t)idx + 1 > 2 * old ? (size_t)idx + 1 :
		    2 * old;
		pk_spend(p, (p->nmemo - old) * sizeof *p->memo);
		p->memo = xreallocarray(p->memo, p->nmemo, sizeof *p->memo);
		memset(p->memo + old, 0, (p->nmemo - old) * sizeof *p->memo);
	}
	if (p->memo[idx] == NULL)
		p->memo_count++;
	p->memo[idx] = v;
	return 0;
}

static int
pk_memo_get(struct pk *p, uint64_t idx)
{
	if (idx >= p->nmemo || p->memo[idx] == NULL)
		return pk_fail(p, "memo index %" PRIu64 " was never set", idx);
	pk_push(p, p->memo[idx]);
	return 0;
}

static int
pk_op_string(struct pk *p, size_t lenbytes)
{
	const uint8_t *b, *s;
	struct pk_val *v;
	uint64_t n;

	if (pk_take(p, lenbytes, &b) != 0)
		return -EINVAL;
	n = pk_le(b, lenbytes);
	if (n > p->len - p->pos)
		return pk_fail(p, "a string runs past the end of the pickle");
	if (pk_take(p, (size_t)n, &s) != 0)
		return -EINVAL;
	v = pk_new(p, PK_STR);
	/* Copied whole: a NUL inside must stay visible to the checks. */
	pk_spend(p, (size_t)n + 1 + PK_MALLOC_OVERHEAD);
	v->s = xmalloc((size_t)n + 1);
	memcpy(v->s, s, (size_t)n);
	v->s[n] = '\0';
	v->n = (uint32_t)n;
	pk_push(p, v);
	return 0;
}

static int
pk_op_int(struct pk *p, size_t nbytes, bool is_signed)
{
	const uint8_t *b;
	struct pk_val *v;
	uint64_t u;

	if (pk_take(p, nbytes, &b) != 0)
		return -EINVAL;
	u = pk_le(b, nbytes);
	if (is_signed && nbytes < 8 && (u >> (8 * nbytes - 1)) != 0)
		u |= ~UINT64_C(0) << (8 * nbytes);
	if (u < 256) {
		pk_push(p, &p->small[u]);
		return 0;
	}
	v = pk_new(p, PK_INT);
	v->i = (int64_t)u;
	pk_push(p, v);
	return 0;
}

/* LONG1: a little-endian two's complement integer of n bytes. */
static int
pk_op_long1(struct pk *p)
{
	const uint8_t *b;

	if (pk_take(p, 1, &b) != 0)
		return -EINVAL;
	if (*b > 8)
		return pk_fail(p, "an integer of %u bytes (at most 8)", *b);
	if (*b == 0) {
		pk_push(p, &p->small[0]);
		return 0;
	}
	return pk_op_int(p, *b, true);
}

static int
pk_op_tuple_n(struct pk *p, size_t n)
{
	size_t floor = p->nmarks ? p->marks[p->nmarks - 1] : 0;

	if (p->nstack - floor < n)
		return pk_fail(p, "a tuple of more items than the stack has");
	pk_push(p, pk_tuple_from(p, p->nstack - n));
	return 0;
}

static int
pk_step(struct pk *p, uint8_t op, bool *stop)
{
	struct pk_val *v, *c;
	const uint8_t *b;
	size_t from;

	switch (op) {
	case 0x80:	/* PROTO */
		if (pk_take(p, 1, &b) != 0)
			return -EINVAL;
		if (*b < 2 || *b > 5)
			return pk_fail(p, "pickle protocol %u (torch.save "
			    "writes 2 to 5)", *b);
		return 0;
	case 0x95:	/* FRAME: a length hint only */
		return pk_take(p, 8, &b);
	case '.':	/* STOP */
		*stop = true;
		return 0;
	case '(':	/* MARK */
		p->marks = pk_grow(p, p->marks, p->nmarks, sizeof *p->marks);
		p->marks[p->nmarks++] = p->nstack;
		return 0;
	case '0':	/* POP */
		return pk_pop(p, &v);
	case '1':	/* POP_MARK */
		if (pk_pop_mark(p, &from) != 0)
			return -EINVAL;
		p->nstack = from;
		return 0;
	case '2':	/* DUP */
		if (pk_top(p, &v) != 0)
			return -EINVAL;
		pk_push(p, v);
		return 0;
	case 'N':
		pk_push(p, &p->none);
		return 0;
	case 0x88:	/* NEWTRUE */
		pk_push(p, &p->yes);
		return 0;
	case 0x89:	/* NEWFALSE */
		pk_push(p, &p->no);
		return 0;
	case 'J':	/* BININT */
		return pk_op_int(p, 4, true);
	case 'K':	/* BININT1 */
		return pk_op_int(p, 1, false);
	case 'M':	/* BININT2 */
		return pk_op_int(p, 2, false);
	case 0x8a:	/* LONG1 */
		return pk_op_long1(p);
	case 'G':	/* BINFLOAT: 8 bytes, big-endian */
		if (pk_take(p, 8, &b) != 0)
			return -EINVAL;
		pk_push(p, pk_new(p, PK_FLOAT));
		return 0;
	case 'X':	/* BINUNICODE */
		return pk_op_string(p, 4);
	case 0x8c:	/* SHORT_BINUNICODE */
		return pk_op_string(p, 1);
	case 0x8d:	/* BINUNICODE8 */
		return pk_op_string(p, 8);
	case '}':	/* EMPTY_DICT */
		pk_push(p, pk_new(p, PK_DICT));
		return 0;
	case ']':	/* EMPTY_LIST */
		pk_push(p, pk_new(p, PK_LIST));
		return 0;
	case ')':	/* EMPTY_TUPLE: tuples never change */
		pk_push(p, &p->empty);
		return 0;
	case 't':	/* TUPLE */
		if (pk_pop_mark(p, &from) != 0)
			return -EINVAL;
		pk_push(p, pk_tuple_from(p, from));
		return 0;
	case 0x85:	/* TUPLE1 */
	case 0x86:	/* TUPLE2 */
	case 0x87:	/* TUPLE3 */
		return pk_op_tuple_n(p, (size_t)(op - 0x84));
	case 'l':	/* LIST */
	case 'd':	/* DICT */
		if (pk_pop_mark(p, &from) != 0)
			return -EINVAL;
		c = pk_new(p, op == 'l' ? PK_LIST : PK_DICT);
		if (op == 'd' && pk_set_items(p, c, from) != 0)
			return -EINVAL;
		if (op == 'l')
			pk_move(p, c, from);
		pk_push(p, c);
		return 0;
	case 'a':	/* APPEND */
		if (pk_pop(p, &v) != 0 || pk_top(p, &c) != 0)
			return -EINVAL;
		if (c->kind != PK_LIST)
			return pk_fail(p, "APPEND to something not a list");
		pk_append(p, c, v);
		return 0;
	case 'e':	/* APPENDS */
		if (pk_pop_mark(p, &from) != 0)
			return -EINVAL;
		if (from == 0 || p->stack[from - 1]->kind != PK_LIST)
			return pk_fail(p, "APPENDS to something not a list");
		pk_move(p, p->stack[from - 1], from);
		return 0;
	case 's':	/* SETITEM */
		if (p->nstack < 3 + (p->nmarks ? p->marks[p->nmarks - 1] : 0))
			return pk_fail(p, "SETITEM without a dict, key and "
			    "value");
		return pk_set_items(p, p->stack[p->nstack - 3],
		    p->nstack - 2);
	case 'u':	/* SETITEMS */
		if (pk_pop_mark(p, &from) != 0)
			return -EINVAL;
		if (from == 0)
			return pk_fail(p, "SETITEMS without a dict");
		return pk_set_items(p, p->stack[from - 1], from);
	case 'q':	/* BINPUT */
		return pk_take(p, 1, &b) != 0 ? -EINVAL : pk_memo_put(p, *b);
	case 'r':	/* LONG_BINPUT */
		return pk_take(p, 4, &b) != 0 ? -EINVAL :
		    pk_memo_put(p, pk_le(b, 4));
	case 0x94:	/* MEMOIZE */
		return pk_memo_put(p, p->memo_count);
	case 'h':	/* BINGET */
		return pk_take(p, 1, &b) != 0 ? -EINVAL : pk_memo_get(p, *b);
	case 'j':	/* LONG_BINGET */
		return pk_take(p, 4, &b) != 0 ? -EINVAL :
		    pk_memo_get(p, pk_le(b, 4));
	case 'c':	/* GLOBAL */
		return pk_op_global(p);
	case 0x93:	/* STACK_GLOBAL */
		return pk_op_stack_global(p);
	case 'R':	/* REDUCE */
		return pk_op_reduce(p);
	case 'Q':	/* BINPERSID */
		return pk_op_persid(p);
	case 'b':	/* BUILD */
		return pk_op_build(p);
	default:
		return pk_fail(p, "opcode 0x%02x, which torch.save does not "
		    "write", op);
	}
}

/* The top-level dict's entries, as tensors, into *out. */
static int
pk_result(struct pk *p, const struct pk_val *d, struct torchpkl_tensor **out,
    size_t *nout, size_t max)
{
	struct torchpkl_tensor *t = NULL;
	const struct pk_val *k, *v;
	struct strmap seen = { 0 };
	const char *why;
	size_t i, n = 0, at;
	uint64_t numel;
	int j;

	if (d->kind != PK_DICT)
		return pk_fail(p, "the checkpoint is not a dict of tensors");
	for (i = 0; i + 1 < d->n; i += 2) {
		k = d->items[i];
		v = d->items[i + 1];
		if (k->kind != PK_STR) {
			pk_fail(p, "a state dict key that is not a string");
			goto fail;
		}
		if (!jscan_utf8_ok(k->s, k->n, &why)) {
			pk_fail(p, "a tensor name with %s", why);
			goto fail;
		}
		if (v->kind != PK_TENSOR || v->t->bad_dim >= 0) {
			char *name = graph_text_printable(xstrdup(k->s));

			if (v->kind != PK_TENSOR)
				pk_fail(p, "'%s' is not a tensor; the "
				    "checkpoint must be a state dict", name);
			else
				pk_fail(p, "tensor '%s' is not contiguous "
				    "(stride %" PRId64 " in dimension %d, "
				    "%" PRId64 " expected); save it with "
				    ".contiguous()", name, v->t->bad_stride,
				    v->t->bad_dim, v->t->want_stride);
			free(name);
			goto fail;
		}
		/* torch never writes a key twice; Python would keep
		 * the last, and each repeat would cost a lookup. */
		if (strmap_get(&seen, k->s, NULL)) {
			char *name = graph_text_printable(xstrdup(k->s));

			pk_fail(p, "'%s' is set twice in the state dict",
			    name);
			free(name);
			goto fail;
		}
		if (n == max) {
			pk_fail(p, "more than %zu tensors", max);
			goto fail;
		}
		t = xgrowarray(t, n, sizeof *t);
		at = n++;
		memset(&t[at], 0, sizeof t[at]);
		t[at].name = xstrdup(k->s);
		strmap_put(&seen, t[at].name, at);
		t[at].key = xstrdup(v->t->storage->s);
		t[at].dtype = (enum graph_dtype)v->dtype;
		t[at].storage_numel = (uint64_t)v->t->storage->i;
		t[at].offset = (uint64_t)v->i;
		t[at].ndim = v->t->ndim;
		numel = 1;
		for (j = 0; j < v->t->ndim; j++) {
			t[at].shape[j] = v->t->shape[j];
			numel *= (uint64_t)v->t->shape[j];
		}
		t[at].numel = numel;
	}
	strmap_free(&seen);
	*out = t;
	*nout = n;
	return 0;
fail:
	strmap_free(&seen);
	torchpkl_free(t, n);
	return -EINVAL;
}

/*
 * The tensors of the pickled state dict buf[0, len), at most max of them.
 * Shapes and offsets are checked for overflow here; against the storages'
 * sizes by the caller, which knows the archive.
 */
int
torchpkl_parse(const uint8_t *buf, size_t len, size_t max,
    struct torchpkl_tensor **out, size_t *nout, char **cause)
{
	struct pk p = { .buf = buf, .len = len };
	struct pk_val *top;
	bool stop = false;
	size_t i;
	int rc = 0;

	*out = NULL;
	*nout = 0;
	p.max_bytes = PK_BYTES_PER_TENSOR * max + PK_BYTES_FIXED;
	for (i = 0; i < 256; i++) {
		p.small[i].kind = PK_INT;
		p.small[i].i = (int64_t)i;
	}
	p.none.kind = PK_NONE;
	p.no.kind = p.yes.kind = PK_BOOL;
	p.yes.i = 1;
	p.empty.kind = PK_TUPLE;
	if (len > TORCHPKL_MAX_LEN)
		rc = pk_fail(&p, "the pickle is %zu bytes, over the limit of "
		    "%u", len, TORCHPKL_MAX_LEN);
	while (rc == 0 && !stop) {
		p.op = p.pos;
		if (p.pos == p.len) {
			rc = pk_fail(&p, "the pickle ends without STOP");
			break;
		}
		if ((rc = pk_step(&p, buf[p.pos++], &stop)) != 0)
			break;
		if (p.bytes > p.max_bytes)
			rc = pk_fail(&p, "the pickle needs more memory to read "
			    "(%zu bytes) than a state dict of at most %zu tensors "
			    "does", p.bytes, max);
	}
	if (rc == 0 && (p.nstack != 1 || p.nmarks != 0))
		rc = pk_fail(&p, "the pickle leaves %zu values on its stack",
		    p.nstack);
	if (rc == 0 && p.pos != p.len)
		rc = pk_fail(&p, "data after the pickle's STOP");
	if (rc == 0) {
		top = p.stack[0];
		p.op = SIZE_MAX;	/* errors now name tensors, not bytes */
		rc = pk_result(&p, top, out, nout, max);
	}
	if (rc != 0)
		*cause = graph_text_printable(p.cause != NULL ? p.cause :
		    xstrdup("data.pkl: not a state dict"));
	else
		free(p.cause);
	for (i = 0; i < p.nall; i++) {
		free(p.all[i]->items);
		free(p.all[i]->t);
		if (p.all[i]->kind == PK_STR)
			free(p.all[i]->s);
		free(p.all[i]);
	}
	free(p.all);
	free(p.stack);
	free(p.marks);
	free(p.memo);
	return rc;
}

void
torchpkl_free(struct torchpkl_tensor *t, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(t[i].name);
		free(t[i].key);
	}
	free(t);
}
