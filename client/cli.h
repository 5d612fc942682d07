/* SPDX-License-Identifier: MIT */
/*
 * cli.h: mergectl's private declarations, grouped by file.
 */
#ifndef CLI_H
#define CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "graph.h"

/* Exit codes; documented in mergectl --help and the man page. */
#define CLI_EXIT_OK 0		/* success */
#define CLI_EXIT_FAILED 1	/* the merge failed while running */
#define CLI_EXIT_USAGE 2	/* bad command line */
#define CLI_EXIT_INVALID 3	/* config or plan rejected; nothing read */
#define CLI_EXIT_EXISTS 4	/* output exists and --force not given */
#define CLI_EXIT_INTERRUPTED 130	/* SIGINT or SIGTERM */

struct cli_cmd {
	const char *name;
	const char *args;
	const char *help;
	int (*run)(int, char **);
};

/* mergectl.c */
extern const char *cli_progname;
void cli_usage_error(const char *, ...) __attribute__((format(printf, 1, 2)));

/* cmd-run.c */
int cli_cmd_run(int, char **);

/* progress.c */
struct cli_progress {
	bool tty;
	bool quiet;
	double start;
	double last;
	int last_pct;
};

void cli_progress_init(struct cli_progress *, bool);
void cli_progress_update(struct cli_progress *, const struct graph_progress *,
    bool);
double cli_now(void);

/* opts.c: options shared by run, plan and submit. */
struct cli_merge_opts {
	uint64_t memory;
	int threads;
	uint64_t shard_size;
	bool allow_crimes;
	bool has_seed;
	uint64_t seed;
	bool copy_tokenizer;
	bool model_card;
	bool force;
	bool quiet;
	bool json;
};

void cli_merge_opts_default(struct cli_merge_opts *);
int cli_merge_opt(struct cli_merge_opts *, int, const char *);
uint64_t cli_default_memory(void);
int cli_open_parent(const char *, char **);

#endif /* CLI_H */
