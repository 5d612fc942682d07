/* SPDX-License-Identifier: MIT */
/*
 * spm.c: the pieces of a SentencePiece model (tokenizer.model), so that a
 * model that ships it without tokenizer.json still has a vocabulary.
 *
 * The file is one protobuf message, ModelProto (sentencepiece_model.proto),
 * whose field 1 is the repeated message SentencePiece { 1: piece (string),
 * 2: score (float), 3: type (enum, default NORMAL) }; piece i, in the
 * order the pieces appear, has id i.  Everything else (trainer_spec,
 * normalizer_spec, self_test_data, denormalizer_spec, fields a newer
 * SentencePiece adds) is skipped by its wire type without being read, so
 * no protobuf library and no schema are needed.  As protobuf does, a
 * scalar field given twice keeps its last value, and fields come in any
 * order, the pieces interleaved with the others.
 *
 * The file comes from anyone, so every length is checked against the
 * message it sits in, and what protobuf would take but no SentencePiece
 * writes is refused: groups (wire types 3 and 4, dead since proto2),
 * varints over 10 bytes or over 64 bits, field number 0.  So is what
 * SentencePiece itself refuses to load (model_interface.cc): a piece
 * without text, two pieces with one text.  Two things protobuf would let
 * by are refused too: a type outside 1 to 6 (a closed proto2 enum would
 * read it as NORMAL, silently) and a text that is not UTF-8 or holds a NUL
 * (texts become C strings and JSON).  Scores are taken as they are, NaN
 * included: they are SentencePiece's business, not the vocabulary's.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

#define SPM_VARINT_MAX 10	/* bytes in a 64-bit varint */

enum spm_wire {
	SPM_WIRE_VARINT = 0,
	SPM_WIRE_I64 = 1,
	SPM_WIRE_LEN = 2,
	SPM_WIRE_SGROUP = 3,
	SPM_WIRE_EGROUP = 4,
	SPM_WIRE_I32 = 5,
};

/* One parse: the pieces so far and the first error. */
struct spm {
	const uint8_t *buf;	/* the whole file: messages give offsets in it */
	struct spm_piece *v;	/* room for every piece the file has */
	size_t n;		/* read so far */
	struct strmap seen;	/* text -> id, borrowing v[].text */
	char *cause;
};

/* A message being read: buf[p, end) is what is left of it. */
struct spm_msg {
	size_t p;
	size_t end;
	const char *what;	/* "the file", "piece 7": for messages */
};

static int spm_fail(struct spm *, size_t, const char *, ...)
    __attribute__((format(printf, 3, 4)));

/* The first error wins; at is the byte it is about, or SIZE_MAX. */
static int
spm_fail(struct spm *s, size_t at, const char *fmt, ...)
{
	va_list ap;
	char *what;

	if (s->cause != NULL)
		return -EINVAL;
	va_start(ap, fmt);
	what = xvasprintf(fmt, ap);
	va_end(ap);
	if (at != SIZE_MAX) {
		s->cause = xasprintf("byte %zu: %s", at, what);
		free(what);
	} else
		s->cause = what;
	/* Texts quoted in it may hold line breaks: one line, inert. */
	s->cause = graph_text_printable(s->cause);
	return -EINVAL;
}

static const char *
spm_wire_name(unsigned wt)
{
	static const char *const names[] = {
		"varint", "64-bit", "length-delimited", "start group",
		"end group", "32-bit",
	};

	return wt < sizeof names / sizeof names[0] ? names[wt] : "invalid";
}

static int
spm_varint(struct spm *s, struct spm_msg *m, uint64_t *out)
{
	size_t at = m->p, k;
	uint64_t v = 0;
	uint8_t b;

	*out = 0;	/* set on every path: gcc cannot see spm_fail's value */
	for (k = 0; k < SPM_VARINT_MAX; k++) {
		if (m->p == m->end)
			return spm_fail(s, at, "a truncated varint: %s ends "
			    "inside it", m->what);
		b = s->buf[m->p++];
		/* The tenth byte holds bit 63 alone, and its continuation. */
		if (k == SPM_VARINT_MAX - 1 && (b & 0x7e) != 0)
			return spm_fail(s, at, "a varint over 64 bits");
		v |= (uint64_t)(b & 0x7f) << (7 * k);
		if ((b & 0x80) == 0) {
			*out = v;
			return 0;
		}
	}
	return spm_fail(s, at, "a varint longer than %d bytes",
	    SPM_VARINT_MAX);
}

/* The next field's key: its number and wire type. */
static int
spm_key(struct spm *s, struct spm_msg *m, uint32_t *field, unsigned *wt)
{
	size_t at = m->p;
	uint64_t key;
	int rc;

	*field = 0;
	*wt = 0;
	if ((rc = spm_varint(s, m, &key)) != 0)
		return rc;
	/* Field numbers are 1 to 2^29 - 1 (the key is a uint32). */
	if (key >> 3 == 0 || key >> 3 > (1u << 29) - 1)
		return spm_fail(s, at, "field number %" PRIu64 " in %s, "
		    "outside 1 to %u", key >> 3, m->what, (1u << 29) - 1);
	*field = (uint32_t)(key >> 3);
	*wt = (unsigned)(key & 7);
	return 0;
}

/* A length-delimited value: its bytes are buf[*off, *off + *len). */
static int
spm_bytes(struct spm *s, struct spm_msg *m, uint32_t field, size_t *off,
    size_t *len)
{
	size_t at = m->p;
	uint64_t n;
	int rc;

	*off = *len = 0;
	if ((rc = spm_varint(s, m, &n)) != 0)
		return rc;
	if (n > m->end - m->p)
		return spm_fail(s, at, "field %" PRIu32 " is %" PRIu64
		    " bytes long, beyond the end of %s (%zu bytes left)",
		    field, n, m->what, m->end - m->p);
	*off = m->p;
	*len = (size_t)n;
	m->p += (size_t)n;
	return 0;
}

/* n bytes of a fixed-size value, little-endian. */
static int
spm_fixed(struct spm *s, struct spm_msg *m, uint32_t field, size_t n,
    uint64_t *out)
{
	uint64_t v = 0;
	size_t k;

	*out = 0;
	if (n > m->end - m->p)
		return spm_fail(s, m->p, "a truncated %zu-bit field %" PRIu32
		    ": %s ends inside it", 8 * n, field, m->what);
	for (k = 0; k < n; k++)
		v |= (uint64_t)s->buf[m->p + k] << (8 * k);
	m->p += n;
	*out = v;
	return 0;
}

/* Steps over a field we do not read, whatever its number. */
static int
spm_skip(struct spm *s, struct spm_msg *m, size_t at, uint32_t field,
    unsigned wt)
{
	uint64_t v;
	size_t off, len;

	switch (wt) {
	case SPM_WIRE_VARINT:
		return spm_varint(s, m, &v);
	case SPM_WIRE_I64:
		return spm_fixed(s, m, field, 8, &v);
	case SPM_WIRE_LEN:
		return spm_bytes(s, m, field, &off, &len);
	case SPM_WIRE_I32:
		return spm_fixed(s, m, field, 4, &v);
	case SPM_WIRE_SGROUP:
	case SPM_WIRE_EGROUP:
		return spm_fail(s, at, "field %" PRIu32 " in %s is a group "
		    "(wire type %u), which SentencePiece never writes", field,
		    m->what, wt);
	default:
		return spm_fail(s, at, "field %" PRIu32 " in %s has the "
		    "invalid wire type %u", field, m->what, wt);
	}
}

static int
spm_want_wire(struct spm *s, struct spm_msg *m, size_t at, const char *name,
    uint32_t field, unsigned wt, unsigned want)
{
	if (wt == want)
		return 0;
	return spm_fail(s, at, "%s (field %" PRIu32 ") in %s has wire type "
	    "%u (%s), not %u (%s)", name, field, m->what, wt,
	    spm_wire_name(wt), want, spm_wire_name(want));
}

/* The piece's text, checked; replaces an earlier one (the last wins). */
static int
spm_text(struct spm *s, struct spm_msg *m, size_t at, char **text)
{
	const char *why;
	size_t off, len;
	int rc;

	if ((rc = spm_bytes(s, m, 1, &off, &len)) != 0)
		return rc;
	if (len == 0)
		return spm_fail(s, at, "%s has an empty text", m->what);
	if (!jscan_utf8_ok((const char *)s->buf + off, len, &why))
		return spm_fail(s, at, "the text of %s has %s, which is not "
		    "valid UTF-8 (or is a NUL)", m->what, why);
	free(*text);
	*text = xstrndup((const char *)s->buf + off, len);
	return 0;
}

/*
 * The SentencePiece message buf[off, off + len), whose field starts at
 * byte start; it becomes piece s->n.
 */
static int
spm_piece(struct spm *s, size_t start, size_t off, size_t len)
{
	struct spm_piece pc = { NULL, 0, SPM_NORMAL };
	struct spm_msg m = { off, off + len, NULL };
	char what[48];
	uint64_t v;
	uint32_t field, bits;
	unsigned wt;
	size_t at, first;
	int rc = 0;

	snprintf(what, sizeof what, "piece %zu", s->n);
	m.what = what;
	while (rc == 0 && m.p < m.end) {
		at = m.p;
		if ((rc = spm_key(s, &m, &field, &wt)) != 0)
			break;
		switch (field) {
		case 1:
			if ((rc = spm_want_wire(s, &m, at, "piece", field, wt,
			    SPM_WIRE_LEN)) == 0)
				rc = spm_text(s, &m, at, &pc.text);
			break;
		case 2:
			if ((rc = spm_want_wire(s, &m, at, "score", field, wt,
			    SPM_WIRE_I32)) != 0 ||
			    (rc = spm_fixed(s, &m, field, 4, &v)) != 0)
				break;
			bits = (uint32_t)v;
			memcpy(&pc.score, &bits, sizeof pc.score);
			break;
		case 3:
			if ((rc = spm_want_wire(s, &m, at, "type", field, wt,
			    SPM_WIRE_VARINT)) != 0 ||
			    (rc = spm_varint(s, &m, &v)) != 0)
				break;
			if (v < SPM_NORMAL || v > SPM_BYTE)
				rc = spm_fail(s, at, "%s has the unknown type "
				    "%" PRIu64 " (SentencePiece's are 1 to %d)",
				    what, v, SPM_BYTE);
			else
				pc.type = (enum spm_type)v;
			break;
		default:
			rc = spm_skip(s, &m, at, field, wt);
			break;
		}
	}
	if (rc != 0)
		goto fail;
	if (pc.text == NULL) {
		rc = spm_fail(s, start, "%s has no text", what);
		goto fail;
	}
	if (strmap_get(&s->seen, pc.text, &first)) {
		rc = spm_fail(s, start, "%s repeats the text of piece %zu "
		    "(\"%.*s\")", what, first, jscan_show(pc.text), pc.text);
		goto fail;
	}
	s->v[s->n] = pc;
	strmap_put(&s->seen, s->v[s->n].text, s->n);
	s->n++;
	return 0;
fail:
	free(pc.text);
	return rc;
}

void
spm_free(struct spm_piece *v, size_t n)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; i < n; i++)
		free(v[i].text);
	free(v);
}

/*
 * Walks the fields of the file; counts the pieces into *count, and reads
 * them too when read is set.
 */
static int
spm_top(struct spm *s, size_t len, bool read, size_t *count)
{
	struct spm_msg m = { 0, len, "the file" };
	uint32_t field;
	unsigned wt;
	size_t at, off, plen;
	int rc = 0;

	*count = 0;
	while (rc == 0 && m.p < m.end) {
		at = m.p;
		if ((rc = spm_key(s, &m, &field, &wt)) != 0)
			break;
		if (field != 1) {
			rc = spm_skip(s, &m, at, field, wt);
			continue;
		}
		if ((rc = spm_want_wire(s, &m, at, "pieces", field, wt,
		    SPM_WIRE_LEN)) != 0 ||
		    (rc = spm_bytes(s, &m, field, &off, &plen)) != 0)
			break;
		if (*count == SPM_MAX_PIECES) {
			rc = spm_fail(s, at, "more than %u pieces",
			    SPM_MAX_PIECES);
			break;
		}
		(*count)++;
		if (read)
			rc = spm_piece(s, at, off, plen);
	}
	return rc;
}

/*
 * The pieces of the ModelProto buf[0, len), in id order.  On failure
 * returns -EINVAL with one line in *cause and leaves *out and *n alone.
 */
int
spm_parse(const uint8_t *buf, size_t len, struct spm_piece **out, size_t *n,
    char **cause)
{
	struct spm s = { .buf = buf };
	size_t count;
	int rc;

	/*
	 * Twice: first the framing and the count alone, so that a file of
	 * too many pieces or with a bad length at its end is refused before
	 * a piece is copied, and the pieces' array is allocated once.
	 */
	if ((rc = spm_top(&s, len, false, &count)) != 0)
		goto out;
	if (count == 0) {
		rc = spm_fail(&s, SIZE_MAX, "no pieces, so not a "
		    "SentencePiece model");
		goto out;
	}
	s.v = xcalloc(count, sizeof *s.v);
	rc = spm_top(&s, len, true, &count);
out:
	strmap_free(&s.seen);
	if (rc != 0) {
		spm_free(s.v, s.n);
		*cause = s.cause;
		return rc;
	}
	*out = s.v;
	*n = s.n;
	return 0;
}
