/* SPDX-License-Identifier: MIT */
/*
 * vocab.c: genmodel's generated tokens (see vocab.h).
 *
 * The byte-level BPE vocabulary is the one genmodel always wrote, and
 * must stay so token for token: other tests compare its files.  Unigram
 * (and SentencePiece, the same vocabulary in another file) and WordPiece
 * spell words their own way, so that a text like "hello world" becomes a
 * few sensible tokens with each.  Scores are dyadic fractions with at most
 * ten bits after the point, so they are exact in float32
 * (tokenizer.model) and print exactly with "%.17g" (tokenizer.json).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "vocab.h"

#define NBYTE_TOKENS	256
#define NMERGES		(26 + 26 * 26)	/* "Ġ a".."Ġ z", "a a".."z z" */
#define NLETTERS	26
#define METASPACE	"\xe2\x96\x81"	/* U+2581, "▁": a space in Unigram */
#define NPIECES		(1 + 2 * NLETTERS + NLETTERS * NLETTERS)
#define SCORE_CAP	(UINT64_C(1) << 22)	/* 1024 * |score| < 2^24 */

static const char *const kind_names[] = {
	[VOCAB_BPE] = "bpe",
	[VOCAB_UNIGRAM] = "unigram",
	[VOCAB_WORDPIECE] = "wordpiece",
	[VOCAB_SENTENCEPIECE] = "sentencepiece",
};

static const char *const specials[VOCAB_NSPECIAL] = {
	"<unk>", "<s>", "</s>"
};

/* WordPiece's whole words, after the letters and "##" letters. */
static const char *const words[] = {
	"the", "of", "and", "to", "in", "is", "it", "that", "hello",
	"world", "model", "merge", "token",
};

#define NWORDS	(sizeof(words) / sizeof(words[0]))

/* 0 and the kind, or -1 for a name that is none. */
int
vocab_kind(const char *name, enum vocab_kind *kind)
{
	size_t	i;

	for (i = 0; i < sizeof(kind_names) / sizeof(kind_names[0]); i++) {
		if (strcmp(kind_names[i], name) == 0) {
			*kind = (enum vocab_kind)i;
			return 0;
		}
	}
	return -1;
}

const char *
vocab_kind_name(enum vocab_kind kind)
{
	return kind_names[kind];
}

/*
 * The code point of the k-th entry of GPT-2's byte-to-unicode table, the
 * alphabet of every ByteLevel BPE vocabulary: the 188 printable bytes keep
 * their code point and come first, the other 68 bytes become U+0100
 * onwards in byte order (so space is U+0120, 'Ġ').
 */
static unsigned
byte_char(unsigned k)
{
	if (k < 94)
		return 33 + k;			/* '!'..'~' */
	if (k < 106)
		return 161 + (k - 94);		/* U+00A1..U+00AC */
	if (k < 188)
		return 174 + (k - 106);		/* U+00AE..U+00FF */
	return 256 + (k - 188);
}

static size_t
put_utf8(char *buf, unsigned cp)
{
	if (cp < 0x80) {
		buf[0] = (char)cp;
		return 1;
	}
	buf[0] = (char)(0xc0 | (cp >> 6));
	buf[1] = (char)(0x80 | (cp & 0x3f));
	return 2;
}

/* Merge k joins "Ġ" and a letter, or two letters; both are in the vocab. */
void
vocab_merge(uint64_t k, char *left, char *right)
{
	if (k < 26) {
		left[put_utf8(left, 0x120)] = '\0';
		right[0] = (char)('a' + k);
	} else {
		left[0] = (char)('a' + (k - 26) / 26);
		left[1] = '\0';
		right[0] = (char)('a' + (k - 26) % 26);
	}
	right[1] = '\0';
}

/* A merge is only valid if its result has an id, so small vocabs get none. */
uint64_t
vocab_merges(uint64_t vocab)
{
	if (vocab <= VOCAB_NSPECIAL + NBYTE_TOKENS)
		return 0;
	vocab -= VOCAB_NSPECIAL + NBYTE_TOKENS;
	return vocab < NMERGES ? vocab : NMERGES;
}

/* BPE: the byte alphabet, then one token per merge. */
static void
bpe_text(uint64_t k, char *buf, size_t size)
{
	char	left[4], right[4];

	if (k < NBYTE_TOKENS)
		buf[put_utf8(buf, byte_char((unsigned)k))] = '\0';
	else {
		vocab_merge(k - NBYTE_TOKENS, left, right);
		snprintf(buf, size, "%s%s", left, right);
	}
}

/*
 * Unigram: "▁" (a word's start), the letters, "▁" and a letter, then
 * every pair of letters, in the order of their score.
 */
static void
unigram_text(uint64_t k, char *buf, size_t size)
{
	if (k == 0)
		snprintf(buf, size, METASPACE);
	else if (k <= NLETTERS)
		snprintf(buf, size, "%c", (int)('a' + k - 1));
	else if (k <= 2 * NLETTERS)
		snprintf(buf, size, METASPACE "%c",
		    (int)('a' + k - 1 - NLETTERS));
	else {
		k -= 1 + 2 * NLETTERS;
		snprintf(buf, size, "%c%c", (int)('a' + k / NLETTERS),
		    (int)('a' + k % NLETTERS));
	}
}

/* WordPiece: the letters, the same continuing a word, whole words. */
static void
wordpiece_text(uint64_t k, char *buf, size_t size)
{
	if (k < NLETTERS)
		snprintf(buf, size, "%c", (int)('a' + k));
	else if (k < 2 * NLETTERS)
		snprintf(buf, size, "##%c", (int)('a' + k - NLETTERS));
	else
		snprintf(buf, size, "%s", words[k - 2 * NLETTERS]);
}

/* How many tokens a kind generates between the specials and the fillers. */
static uint64_t
word_tokens(enum vocab_kind kind)
{
	switch (kind) {
	case VOCAB_BPE:
		return NBYTE_TOKENS + NMERGES;
	case VOCAB_UNIGRAM:
	case VOCAB_SENTENCEPIECE:
		return NPIECES;
	case VOCAB_WORDPIECE:
		return 2 * NLETTERS + NWORDS;
	}
	return 0;
}

/*
 * The text of token k of a kind, in buf (VOCAB_TEXT_LEN bytes are always
 * enough); fillers past the word tokens are "tok_<k>", which ordinary
 * text does not hold.
 */
const char *
vocab_text(enum vocab_kind kind, uint64_t k, char *buf, size_t size)
{
	if (k < VOCAB_NSPECIAL)
		snprintf(buf, size, "%s", specials[k]);
	else if (k - VOCAB_NSPECIAL >= word_tokens(kind))
		snprintf(buf, size, "tok_%" PRIu64, k);
	else if (kind == VOCAB_BPE)
		bpe_text(k - VOCAB_NSPECIAL, buf, size);
	else if (kind == VOCAB_WORDPIECE)
		wordpiece_text(k - VOCAB_NSPECIAL, buf, size);
	else
		unigram_text(k - VOCAB_NSPECIAL, buf, size);
	return buf;
}

/*
 * Token k's Unigram score: 0 for the specials, then -1, -1 - 1/1024, ...
 * falling with k.  Every piece scores -1 or less and every word piece
 * more than -2, so the fewest pieces always win, as they should for a
 * text made of words.  Past SCORE_CAP the fillers share one score, which
 * keeps every score exact in float32.
 */
double
vocab_score(uint64_t k)
{
	uint64_t	w;

	if (k < VOCAB_NSPECIAL)
		return 0.0;
	w = k - VOCAB_NSPECIAL;
	return -1.0 - (double)(w < SCORE_CAP ? w : SCORE_CAP) / 1024.0;
}

/* splitmix64: a seed's stream of well-mixed 64-bit numbers. */
static uint64_t
splitmix64(uint64_t *state)
{
	uint64_t	z = (*state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/*
 * perm[id] = the token (its index before shuffling) that gets id, for ids
 * [0, n): the specials keep theirs, the others are shuffled by
 * Fisher-Yates from the seed's stream, integers only, so every machine
 * gets the same ids.  The modulo's bias, below 2^-40 for n < 2^24, does
 * not matter here.
 */
void
vocab_shuffle(uint32_t *perm, uint64_t n, uint64_t seed)
{
	uint64_t	i, j, state = seed;
	uint32_t	t;

	for (i = 0; i < n; i++)
		perm[i] = (uint32_t)i;
	for (i = n; i > VOCAB_NSPECIAL + 1; i--) {
		j = VOCAB_NSPECIAL + splitmix64(&state) %
		    (i - VOCAB_NSPECIAL);
		t = perm[i - 1];
		perm[i - 1] = perm[j];
		perm[j] = t;
	}
}
