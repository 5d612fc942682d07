/* SPDX-License-Identifier: MIT */
/*
 * opts.h: getopt_long codes of the shared merge options.
 */
#ifndef OPTS_H
#define OPTS_H

#include <getopt.h>

enum {
	OPT_MEMORY = 256,
	OPT_THREADS,
	OPT_SHARD_SIZE,
	OPT_SEED,
	OPT_CRIMES,
	OPT_NO_TOKENIZER,
	OPT_NO_CARD,
	OPT_FORCE,
	OPT_JSON,
};

#define CLI_MERGE_LONGOPTS                                                    \
	{ "memory", required_argument, NULL, OPT_MEMORY },                     \
	{ "threads", required_argument, NULL, OPT_THREADS },                   \
	{ "out-shard-size", required_argument, NULL, OPT_SHARD_SIZE },         \
	{ "random-seed", required_argument, NULL, OPT_SEED },                  \
	{ "allow-crimes", no_argument, NULL, OPT_CRIMES },                     \
	{ "no-copy-tokenizer", no_argument, NULL, OPT_NO_TOKENIZER },          \
	{ "no-model-card", no_argument, NULL, OPT_NO_CARD },                   \
	{ "force", no_argument, NULL, OPT_FORCE },                             \
	{ "quiet", no_argument, NULL, 'q' },                                   \
	{ "json", no_argument, NULL, OPT_JSON }

#endif /* OPTS_H */
