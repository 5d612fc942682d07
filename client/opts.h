/* SPDX-License-Identifier: MIT */
/*
 * opts.h: the getopt_long codes of the merge options that run, plan and
 * submit share (opts.c); a command's own codes start at OPT_OWN.
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
	OPT_NO_CRIMES,
	OPT_TOKENIZER,
	OPT_NO_TOKENIZER,
	OPT_CARD,
	OPT_NO_CARD,
	OPT_FORCE,
	OPT_JSON,
	OPT_HF_CACHE,
	OPT_SAFE,
	OPT_NO_SAFE,
	OPT_NO_QUIET,
	OPT_STRICT,
	OPT_NO_STRICT,
	OPT_LORA_DTYPE,
	OPT_OWN = 512,
	/* The queue's options (queue.c), which a command's own may join. */
	OPT_Q_WAIT = 768,
	OPT_Q_NAME,
	OPT_Q_PRIORITY,
	OPT_Q_AFTER,
	OPT_Q_SOCKET,
	OPT_Q_ON_DONE,
	/* A pipeline's options (stages.c). */
	OPT_S_DIR = 896,
	OPT_S_OUT_PATH,
	OPT_S_LAZY,
	OPT_S_NO_LAZY,
	OPT_S_KEEP,
	OPT_S_NO_KEEP,
	OPT_S_FUSE,
	OPT_S_NO_FUSE,
	/* mergekit-yaml's options that change nothing here (opts.c's
	 * compat table), from OPT_COMPAT on. */
	OPT_COMPAT = 1024,
};

/*
 * The long options of a command: its own (own, ending in a zero entry),
 * then the merge options, then mergekit-yaml's compatibility ones; the
 * caller frees it.  Short options: -q, -v, -j N.
 */
struct option *cli_merge_longopts(const struct option *own);

/* queue.c: the queue's options, and two tables joined (freed by the
 * caller). */
extern const struct option cli_queue_longopts[];
/* stages.c: a pipeline's options. */
extern const struct option cli_stage_longopts[];
struct option *cli_longopts_cat(const struct option *a,
    const struct option *b);

#endif /* OPTS_H */
