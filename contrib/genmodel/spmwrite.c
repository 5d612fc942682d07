/* SPDX-License-Identifier: MIT */
/*
 * spmwrite.c: tokenizer.model's protobuf encoding (see spmwrite.h).
 *
 * The fields written, from sentencepiece_model.proto:
 *
 *	ModelProto {
 *		1 pieces: repeated SentencePiece {
 *			1 piece: string; 2 score: float; 3 type: Type }
 *		2 trainer_spec: TrainerSpec { 3 model_type: UNIGRAM (1) }
 *		3 normalizer_spec: NormalizerSpec { 1 name: "identity" }
 *	}
 *
 * A field is a key, its number << 3 | its wire type, then its value: a
 * varint (wire type 0), a varint length and that many bytes (2), or four
 * bytes little-endian (5).  Each piece is written as it comes, so a large
 * vocabulary is never held whole; the specs follow, as SentencePiece
 * writes them.  What is left out takes the proto's defaults, which are
 * what genmodel wants: unk, bos and eos ids 0, 1 and 2, no pad, a "▁"
 * prepended to the text and standing for every space (as the Metaspace
 * pre-tokenizer of genmodel's Unigram tokenizer.json), no byte fallback.
 * Write errors are left in the stream for the caller's ferror().
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "spmwrite.h"

#define WIRE_VARINT		0
#define WIRE_LEN		2
#define WIRE_FIXED32		5
#define KEY(field, wire)	((field) << 3 | (wire))
#define VARINT_MAX		10	/* bytes of a 64-bit varint */

/* Seven bits a byte, low first, the top bit set on all but the last. */
static size_t
varint(unsigned char *buf, uint64_t v)
{
	size_t	n = 0;

	while (v >= 0x80) {
		buf[n++] = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	buf[n++] = (unsigned char)v;
	return n;
}

static void
put_varint(FILE *fp, uint64_t v)
{
	unsigned char	buf[VARINT_MAX];

	fwrite(buf, 1, varint(buf, v), fp);
}

static void
put_fixed32(FILE *fp, uint32_t v)
{
	unsigned char	buf[4];
	int		i;

	for (i = 0; i < 4; i++)
		buf[i] = (unsigned char)(v >> (8 * i));
	fwrite(buf, 1, sizeof(buf), fp);
}

/*
 * One SentencePiece message as field 1 of the ModelProto.  Its length
 * comes first, so it is counted from the parts: the piece's key, length
 * and bytes, the score's key and four bytes, the type's key and one byte
 * (every type is below 128).
 */
void
spmw_piece(FILE *fp, const char *piece, float score, enum spmw_type type)
{
	unsigned char	buf[VARINT_MAX];
	size_t		len = strlen(piece);
	uint32_t	bits;

	memcpy(&bits, &score, sizeof(bits));
	putc(KEY(1, WIRE_LEN), fp);
	put_varint(fp, 1 + varint(buf, len) + len + 1 + 4 + 1 + 1);
	putc(KEY(1, WIRE_LEN), fp);
	put_varint(fp, len);
	fwrite(piece, 1, len, fp);
	putc(KEY(2, WIRE_FIXED32), fp);
	put_fixed32(fp, bits);
	putc(KEY(3, WIRE_VARINT), fp);
	put_varint(fp, (uint64_t)type);
}

/* The trainer spec (a Unigram model) and the normalizer spec. */
void
spmw_specs(FILE *fp)
{
	static const unsigned char specs[] = {
		KEY(2, WIRE_LEN), 2,
		    KEY(3, WIRE_VARINT), 1,
		KEY(3, WIRE_LEN), 10,
		    KEY(1, WIRE_LEN), 8,
		    'i', 'd', 'e', 'n', 't', 'i', 't', 'y',
	};

	fwrite(specs, 1, sizeof(specs), fp);
}
