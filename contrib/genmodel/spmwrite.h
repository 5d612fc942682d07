/* SPDX-License-Identifier: MIT */
/*
 * spmwrite.h: write a SentencePiece model (tokenizer.model), a
 * sentencepiece.ModelProto in protobuf's wire format, without protobuf:
 * the pieces, then the least of a trainer spec and a normalizer spec that
 * SentencePiece's own loader and transformers' slow tokenizers accept.
 */
#ifndef SPMWRITE_H
#define SPMWRITE_H

#include <stdio.h>

/* SentencePiece.Type, as sentencepiece_model.proto numbers it. */
enum spmw_type {
	SPMW_NORMAL = 1,
	SPMW_UNKNOWN = 2,
	SPMW_CONTROL = 3,
	SPMW_USER_DEFINED = 4,
	SPMW_BYTE = 6,
};

void	spmw_piece(FILE *, const char *, float, enum spmw_type);
void	spmw_specs(FILE *);

#endif
