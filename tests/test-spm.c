/* SPDX-License-Identifier: MIT */
/*
 * test-spm.c: unit tests for graph/spm.c, the reader of SentencePiece
 * models (tokenizer.model).
 *
 * Models are encoded here, field by field, by a protobuf writer of a few
 * lines, so that each case says exactly which bytes it holds and needs no
 * protobuf library or real model.  A five-piece model with the other
 * fields a real one has (trainer_spec, normalizer_spec) must read back
 * exactly: ids in order, texts, scores to the bit, types with NORMAL as
 * the default; unknown fields of every wire type, at the top level and
 * inside a piece, must be stepped over; a field given twice keeps its last
 * value, as protobuf's does.  Every kind of malformed file must be refused
 * with a negative value, one line naming the problem (each case names the
 * phrase it expects) and the caller's out and n untouched.  The piece
 * limit is tried at SPM_MAX_PIECES and one over, and 100,000 pieces read.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"
#include "tap.h"

enum {
	WT_VARINT = 0,
	WT_I64 = 1,
	WT_LEN = 2,
	WT_SGROUP = 3,
	WT_EGROUP = 4,
	WT_I32 = 5,
};

/* The protobuf writer. */

static void
pb_varint(struct xbuf *b, uint64_t v)
{
	uint8_t c;

	do {
		c = v & 0x7f;
		v >>= 7;
		if (v != 0)
			c |= 0x80;
		xbuf_add(b, &c, 1);
	} while (v != 0);
}

static void
pb_key(struct xbuf *b, uint32_t field, unsigned wt)
{
	pb_varint(b, (uint64_t)field << 3 | wt);
}

static void
pb_bytes(struct xbuf *b, uint32_t field, const void *p, size_t n)
{
	pb_key(b, field, WT_LEN);
	pb_varint(b, n);
	xbuf_add(b, p, n);
}

static void
pb_str(struct xbuf *b, uint32_t field, const char *s)
{
	pb_bytes(b, field, s, strlen(s));
}

static void
pb_fixed(struct xbuf *b, uint32_t field, unsigned wt, uint64_t v)
{
	uint8_t c[8];
	size_t k, n = wt == WT_I64 ? 8 : 4;

	pb_key(b, field, wt);
	for (k = 0; k < n; k++)
		c[k] = (uint8_t)(v >> (8 * k));
	xbuf_add(b, c, n);
}

static void
pb_float(struct xbuf *b, uint32_t field, float f)
{
	uint32_t bits;

	memcpy(&bits, &f, sizeof bits);
	pb_fixed(b, field, WT_I32, bits);
}

static void
pb_uint(struct xbuf *b, uint32_t field, uint64_t v)
{
	pb_key(b, field, WT_VARINT);
	pb_varint(b, v);
}

/* Wraps the message in sub as field 1 (a piece) of b, and frees sub. */
static void
pb_wrap(struct xbuf *b, struct xbuf *sub)
{
	pb_bytes(b, 1, sub->data, sub->len);
	xbuf_free(sub);
}

/* A piece: text (NULL: none), score, type (0: left to the default). */
static void
pb_piece(struct xbuf *b, const char *text, float score, unsigned type)
{
	struct xbuf sub = { 0 };

	if (text != NULL)
		pb_str(&sub, 1, text);
	pb_float(&sub, 2, score);
	if (type != 0)
		pb_uint(&sub, 3, type);
	pb_wrap(b, &sub);
}

/* trainer_spec and normalizer_spec as a real model has them, in short. */
static void
pb_specs(struct xbuf *b)
{
	struct xbuf sub = { 0 };

	pb_str(&sub, 1, "corpus.txt");		/* input */
	pb_uint(&sub, 3, 1);			/* model_type UNIGRAM */
	pb_uint(&sub, 4, 5);			/* vocab_size */
	pb_float(&sub, 10, 0.9995f);		/* character_coverage */
	pb_bytes(b, 2, sub.data, sub.len);
	xbuf_free(&sub);
	pb_str(&sub, 1, "nmt_nfkc");		/* name */
	pb_bytes(&sub, 2, "\x00\x01\x02\x03", 4);	/* charsmap */
	pb_uint(&sub, 3, 1);			/* add_dummy_prefix */
	pb_bytes(b, 3, sub.data, sub.len);
	xbuf_free(&sub);
}

/* Checks. */

static struct spm_piece sentinel;

/* Parses b; on success returns the count, else -1 after checking out. */
static long
parse(const struct xbuf *b, struct spm_piece **out, char **cause)
{
	size_t n = 0;
	int rc;

	*out = NULL;
	*cause = NULL;
	rc = spm_parse((const uint8_t *)b->data, b->len, out, &n, cause);
	if (rc != 0)
		return -1;
	return (long)n;
}

/* b must be refused with a cause holding phrase, and out, n left alone. */
static void
check_bad(struct xbuf *b, const char *what, const char *phrase)
{
	struct spm_piece *out = &sentinel;
	char *cause = NULL;
	size_t n = 12345;
	int rc;

	rc = spm_parse((const uint8_t *)b->data, b->len, &out, &n, &cause);
	if (!ok(rc < 0 && out == &sentinel && n == 12345 && cause != NULL &&
	    cause[0] != '\0' && strchr(cause, '\n') == NULL &&
	    strstr(cause, phrase) != NULL, "%s: refused with \"%s\"", what,
	    phrase))
		tap_diag("rc %d, n %zu, cause \"%s\"", rc, n,
		    cause != NULL ? cause : "(null)");
	if (rc == 0 && out != &sentinel)
		spm_free(out, n);
	free(cause);
	xbuf_free(b);
}

static bool
same_bits(float a, float b)
{
	return memcmp(&a, &b, sizeof a) == 0;
}

static void
test_valid(void)
{
	static const struct {
		const char *text;
		float score;
		unsigned type;		/* as written: 0 is absent */
		enum spm_type want;
	} p[] = {
		{ "<unk>", 0.0f, SPM_UNKNOWN, SPM_UNKNOWN },
		{ "<s>", 0.0f, SPM_CONTROL, SPM_CONTROL },
		{ "<0x0A>", 0.0f, SPM_BYTE, SPM_BYTE },
		{ "\xe2\x96\x81the", -3.25f, 0, SPM_NORMAL },
		{ "\xc3\xa9t\xc3\xa9", -1.0e-7f, SPM_USER_DEFINED,
		    SPM_USER_DEFINED },
	};
	struct xbuf b = { 0 }, sub = { 0 };
	struct spm_piece *v;
	char *cause;
	size_t i;
	long n;

	pb_specs(&b);
	for (i = 0; i < sizeof p / sizeof p[0]; i++)
		pb_piece(&b, p[i].text, p[i].score, p[i].type);
	pb_bytes(&b, 5, "", 0);			/* denormalizer_spec */
	n = parse(&b, &v, &cause);
	ok_int_eq(n, 5, "five pieces read");
	ok(cause == NULL, "no cause on success");
	for (i = 0; n == 5 && i < 5; i++) {
		ok_str_eq(v[i].text, p[i].text, "piece %zu's text", i);
		ok(same_bits(v[i].score, p[i].score), "piece %zu's score "
		    "to the bit", i);
		ok_int_eq(v[i].type, p[i].want, "piece %zu's type", i);
	}
	if (n > 0)
		spm_free(v, (size_t)n);
	free(cause);
	xbuf_free(&b);

	/* A piece with only its text: score 0, type NORMAL. */
	pb_str(&sub, 1, "x");
	pb_wrap(&b, &sub);
	n = parse(&b, &v, &cause);
	ok(n == 1 && v[0].score == 0.0f && v[0].type == SPM_NORMAL,
	    "defaults: score 0, type NORMAL");
	if (n > 0)
		spm_free(v, (size_t)n);
	free(cause);
	xbuf_free(&b);
}

static void
test_unknown_fields(void)
{
	struct xbuf b = { 0 }, sub = { 0 };
	struct spm_piece *v;
	char *cause;
	long n;

	/* Every wire type at the top level, around and between pieces. */
	pb_uint(&b, 4, UINT64_MAX);		/* a 10-byte varint */
	pb_fixed(&b, 99, WT_I64, 0x0123456789abcdefull);
	pb_piece(&b, "a", 1.0f, SPM_NORMAL);
	pb_fixed(&b, 536870911, WT_I32, 0xffffffffu);	/* the top number */
	pb_bytes(&b, 1000, "\x0a\x05zzzzz", 7);	/* looks like a piece */
	pb_bytes(&b, 4, "", 0);
	/* And inside a piece, before and after the known fields. */
	pb_uint(&sub, 7, 300);
	pb_fixed(&sub, 8, WT_I64, 1);
	pb_str(&sub, 1, "b");
	pb_bytes(&sub, 9, "\xff\xfe", 2);	/* not UTF-8: not read */
	pb_fixed(&sub, 10, WT_I32, 2);
	pb_float(&sub, 2, -2.5f);
	pb_uint(&sub, 3, SPM_CONTROL);
	pb_uint(&sub, 11, 0);
	pb_wrap(&b, &sub);
	pb_fixed(&b, 6, WT_I32, 0);
	n = parse(&b, &v, &cause);
	ok_int_eq(n, 2, "unknown fields of every wire type are skipped");
	if (n == 2) {
		ok_str_eq(v[0].text, "a", "the piece before them");
		ok(strcmp(v[1].text, "b") == 0 && v[1].score == -2.5f &&
		    v[1].type == SPM_CONTROL, "the piece around them");
		spm_free(v, (size_t)n);
	}
	free(cause);
	xbuf_free(&b);

	/* A field given twice keeps its last value. */
	pb_str(&sub, 1, "first");
	pb_uint(&sub, 3, SPM_BYTE);
	pb_float(&sub, 2, 1.0f);
	pb_str(&sub, 1, "last");
	pb_uint(&sub, 3, SPM_UNUSED);
	pb_float(&sub, 2, 2.0f);
	pb_wrap(&b, &sub);
	n = parse(&b, &v, &cause);
	ok(n == 1 && strcmp(v[0].text, "last") == 0 && v[0].score == 2.0f &&
	    v[0].type == SPM_UNUSED, "a field given twice keeps its last "
	    "value");
	if (n > 0)
		spm_free(v, (size_t)n);
	free(cause);
	xbuf_free(&b);
}

/* Framing: varints, lengths, wire types, field numbers. */
static void
test_framing(void)
{
	static const uint8_t varint11[] = {
		0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0x81, 0x01,
	};
	static const uint8_t varint65[] = {
		0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0x02,
	};
	struct xbuf b = { 0 }, sub = { 0 };

	xbuf_add(&b, "\x80", 1);
	check_bad(&b, "a key cut inside its varint", "truncated varint");
	pb_piece(&b, "a", 0, 0);
	xbuf_add(&b, "\x0a\x85", 2);
	check_bad(&b, "a length cut inside its varint", "truncated varint");
	pb_piece(&b, "a", 0, 0);
	xbuf_add(&b, "\x20\xff\xff", 3);
	check_bad(&b, "a value cut inside its varint", "truncated varint");
	xbuf_add(&b, varint11, sizeof varint11);
	check_bad(&b, "an 11-byte varint", "longer than 10 bytes");
	xbuf_add(&b, varint65, sizeof varint65);
	check_bad(&b, "a varint of 65 bits", "over 64 bits");
	pb_piece(&b, "a", 0, 0);
	xbuf_add(&b, "\x0a\x09\x0a\x01x", 5);
	check_bad(&b, "a piece longer than the file",
	    "9 bytes long, beyond the end of the file (3 bytes left)");
	pb_key(&b, 2, WT_LEN);
	pb_varint(&b, UINT64_MAX);
	check_bad(&b, "a length of 2^64 - 1", "beyond the end of the file");
	xbuf_add(&sub, "\x0a\x04xy", 4);
	pb_wrap(&b, &sub);
	check_bad(&b, "a text longer than its piece",
	    "beyond the end of piece 0");
	xbuf_add(&sub, "\x0a\x01x\x18", 4);
	pb_wrap(&b, &sub);
	check_bad(&b, "a varint cut by the end of its piece",
	    "truncated varint: piece 0 ends inside it");
	xbuf_add(&b, "\x2d\x01\x02", 3);
	check_bad(&b, "a fixed32 field cut short", "a truncated 32-bit field");
	xbuf_add(&b, "\x29\x01\x02\x03\x04\x05\x06\x07", 8);
	check_bad(&b, "a fixed64 field cut short", "a truncated 64-bit field");
	pb_key(&b, 9, WT_SGROUP);
	pb_key(&b, 9, WT_EGROUP);
	check_bad(&b, "a group", "field 9 in the file is a group (wire type 3)");
	pb_piece(&b, "a", 0, 0);
	pb_key(&sub, 9, WT_EGROUP);
	pb_wrap(&b, &sub);
	check_bad(&b, "an end group in a piece",
	    "field 9 in piece 1 is a group (wire type 4)");
	pb_key(&b, 9, 6);
	check_bad(&b, "wire type 6", "invalid wire type 6");
	pb_key(&b, 9, 7);
	check_bad(&b, "wire type 7", "invalid wire type 7");
	pb_key(&b, 0, WT_VARINT);
	pb_varint(&b, 1);
	check_bad(&b, "field number 0", "field number 0");
	xbuf_add(&sub, "\x0a\x01x\x00\x00", 5);
	pb_wrap(&b, &sub);
	check_bad(&b, "field number 0 in a piece",
	    "field number 0 in piece 0");
	pb_varint(&b, (uint64_t)1 << 32 | WT_VARINT);
	pb_varint(&b, 1);
	check_bad(&b, "field number 2^29", "field number 536870912");
}

/* The known fields with the wrong wire type. */
static void
test_wire_types(void)
{
	struct xbuf b = { 0 }, sub = { 0 };

	pb_uint(&b, 1, 5);
	check_bad(&b, "pieces as a varint", "pieces (field 1) in the file has "
	    "wire type 0 (varint), not 2 (length-delimited)");
	pb_fixed(&sub, 1, WT_I32, 0x41414141);
	pb_wrap(&b, &sub);
	check_bad(&b, "a text as a fixed32", "piece (field 1) in piece 0 "
	    "has wire type 5 (32-bit), not 2 (length-delimited)");
	pb_str(&sub, 1, "a");
	pb_fixed(&sub, 2, WT_I64, 0);
	pb_wrap(&b, &sub);
	check_bad(&b, "a score as a double", "score (field 2) in piece 0 "
	    "has wire type 1 (64-bit), not 5 (32-bit)");
	pb_str(&sub, 1, "a");
	pb_uint(&sub, 2, 0);
	pb_wrap(&b, &sub);
	check_bad(&b, "a score as a varint", "score (field 2) in piece 0 "
	    "has wire type 0 (varint), not 5 (32-bit)");
	pb_str(&sub, 1, "a");
	pb_bytes(&sub, 3, "\x01", 1);
	pb_wrap(&b, &sub);
	check_bad(&b, "a packed type", "type (field 3) in piece 0 "
	    "has wire type 2 (length-delimited), not 0 (varint)");
}

/* Pieces that are well framed but not what SentencePiece loads. */
static void
test_bad_pieces(void)
{
	struct xbuf b = { 0 }, sub = { 0 };

	pb_piece(&b, "a", 0, 0);
	pb_piece(&b, NULL, -1.0f, SPM_NORMAL);
	check_bad(&b, "a piece without text", "piece 1 has no text");
	pb_bytes(&b, 1, "", 0);
	check_bad(&b, "an empty piece message", "piece 0 has no text");
	pb_piece(&b, "", 0, 0);
	check_bad(&b, "an empty text", "piece 0 has an empty text");
	pb_piece(&b, "\xff", 0, 0);
	check_bad(&b, "a text that is not UTF-8",
	    "the text of piece 0 has a byte that never occurs in UTF-8, "
	    "which is not valid UTF-8");
	pb_piece(&b, "\xed\xa0\x80", 0, 0);
	check_bad(&b, "a text holding a surrogate",
	    "the text of piece 0 has a surrogate");
	pb_piece(&b, "a", 0, 0);
	pb_bytes(&sub, 1, "b\0c", 3);
	pb_wrap(&b, &sub);
	check_bad(&b, "a text holding a NUL",
	    "the text of piece 1 has a NUL byte");
	pb_piece(&b, "a", 0, SPM_BYTE + 1);
	check_bad(&b, "type 7", "piece 0 has the unknown type 7");
	pb_piece(&b, "a", 0, 0);
	pb_str(&sub, 1, "b");
	pb_uint(&sub, 3, 0);
	pb_wrap(&b, &sub);
	check_bad(&b, "type 0", "piece 1 has the unknown type 0");
	pb_piece(&b, "a", 0, (unsigned)-1);
	check_bad(&b, "type 2^32 - 1", "unknown type 4294967295");
	pb_piece(&b, "a", 0, 0);
	pb_piece(&b, "b", 0, 0);
	pb_piece(&b, "a", 0, SPM_CONTROL);
	check_bad(&b, "two pieces with one text",
	    "piece 2 repeats the text of piece 0 (\"a\")");
	pb_piece(&b, "\n", 0, SPM_USER_DEFINED);
	pb_piece(&b, "\n", 0, SPM_USER_DEFINED);
	check_bad(&b, "a repeated line break, quoted on one line",
	    "piece 1 repeats the text of piece 0 (\"\\n\")");
	xbuf_add(&b, "", 0);
	check_bad(&b, "an empty file", "no pieces");
	pb_specs(&b);
	check_bad(&b, "a model without pieces",
	    "no pieces, so not a SentencePiece model");
}

/* Texts of up to 4 printable ASCII bytes, a different one for each i. */
static size_t
limit_text(size_t i, char *s)
{
	size_t k = 0;

	do {
		s[k++] = (char)('!' + i % 94);
		i /= 94;
	} while (i != 0);
	s[k] = '\0';
	return k;
}

static struct xbuf
many_pieces(size_t n)
{
	struct xbuf b = { 0 };
	uint8_t rec[16];
	char s[8];
	size_t i, k;

	for (i = 0; i < n; i++) {
		k = limit_text(i, s);
		rec[0] = 0x0a;
		rec[1] = (uint8_t)(k + 2);
		rec[2] = 0x0a;
		rec[3] = (uint8_t)k;
		memcpy(rec + 4, s, k);
		xbuf_add(&b, rec, k + 4);
	}
	return b;
}

/*
 * The limit, without reading four million pieces (seconds natively,
 * minutes under valgrind): pieces are counted before any is read, so a
 * file of SPM_MAX_PIECES empty pieces fails at its first piece, not at
 * the count, and one more piece fails at the count, at the last piece.
 */
static void
test_limit(void)
{
	struct spm_piece *v;
	struct xbuf b = { 0 };
	char *cause, phrase[64], last[8];
	size_t i;
	long n;

	for (i = 0; i < SPM_MAX_PIECES; i++)
		xbuf_add(&b, "\x0a\x00", 2);
	check_bad(&b, "SPM_MAX_PIECES pieces pass the count",
	    "byte 0: piece 0 has no text");
	for (i = 0; i <= SPM_MAX_PIECES; i++)
		xbuf_add(&b, "\x0a\x00", 2);
	snprintf(phrase, sizeof phrase, "byte %u: more than %u pieces",
	    2 * SPM_MAX_PIECES, SPM_MAX_PIECES);
	check_bad(&b, "one piece over the limit", phrase);

	/* Many pieces, each read back under its own id. */
	b = many_pieces(100000);
	n = parse(&b, &v, &cause);
	ok_int_eq(n, 100000, "a model of 100,000 pieces");
	limit_text(99999, last);
	ok(n == 100000 && strcmp(v[n - 1].text, last) == 0 &&
	    strcmp(v[94].text, "!\"") == 0, "its pieces in order");
	if (n > 0)
		spm_free(v, (size_t)n);
	free(cause);
	xbuf_free(&b);
}

int
main(void)
{
	tap_plan_lazy();
	test_valid();
	test_unknown_fields();
	test_framing();
	test_wire_types();
	test_bad_pieces();
	test_limit();
	return tap_done();
}
