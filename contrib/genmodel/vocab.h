/* SPDX-License-Identifier: MIT */
/*
 * vocab.h: the tokens of genmodel's tokenizers, by index: the text each
 * kind of tokenizer model generates, the Unigram scores, the merges of
 * the byte-level BPE one, and the seeded shuffle of ids.  Pure functions of
 * their arguments, so genmodel.c can ask for any token without keeping a
 * table of them; genmodel.c writes the files.
 *
 * Every kind starts with the same three specials, "<unk>", "<s>" and
 * "</s>", then the tokens that make real words tokenizable, then fillers
 * "tok_<index>" up to the size asked for.
 */
#ifndef VOCAB_H
#define VOCAB_H

#include <stddef.h>
#include <stdint.h>

#define VOCAB_NSPECIAL	3	/* <unk>, <s>, </s> */
#define VOCAB_TEXT_LEN	32	/* room for any generated token's text */

enum vocab_kind {
	VOCAB_BPE,		/* byte-level, as GPT-2's */
	VOCAB_UNIGRAM,
	VOCAB_WORDPIECE,
	VOCAB_SENTENCEPIECE,	/* Unigram, in tokenizer.model */
};

int		 vocab_kind(const char *, enum vocab_kind *);
const char	*vocab_kind_name(enum vocab_kind);
const char	*vocab_text(enum vocab_kind, uint64_t, char *, size_t);
double		 vocab_score(uint64_t);
uint64_t	 vocab_merges(uint64_t);
void		 vocab_merge(uint64_t, char *, char *);
void		 vocab_shuffle(uint32_t *, uint64_t, uint64_t);

#endif
