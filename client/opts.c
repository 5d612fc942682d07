/* SPDX-License-Identifier: MIT */
/*
 * opts.c: the merge options that run, plan and submit share, from the
 * command line into struct graph_merge_opts: the one mapping from argv
 * (the defaults are the engine's).  A bad value is a usage error naming
 * the option.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "cli.h"
#include "opts.h"
#include "xmalloc.h"

void
cli_merge_opts_default(struct cli_merge_opts *o)
{
	unsigned int n = uv_available_parallelism();

	memset(o, 0, sizeof *o);
	graph_merge_opts_default(&o->merge);
	o->threads = n > 0 ? (int)n : 1;
}

/*
 * The whole budget of a merge run here: --memory, the most memory the
 * merge may use, or the one default.  (submit sends --memory as the
 * job's cap under the daemon's budget: the same meaning.)
 */
uint64_t
cli_budget(const struct cli_merge_opts *o)
{
	return o->merge.memory ? o->merge.memory : graph_default_memory();
}

/* Applies one option; returns 0, or prints a usage error and returns -1. */
int
cli_merge_opt(struct cli_merge_opts *o, int opt, const char *arg)
{
	char *end;
	long v;

	switch (opt) {
	case OPT_MEMORY:
		if (graph_parse_size(arg, true, &o->merge.memory) != 0 ||
		    o->merge.memory == 0) {
			cli_usage_error("--memory: '%s' is not a size (e.g. "
			    "512M, 2G)", arg);
			return -1;
		}
		return 0;
	case OPT_THREADS:
		errno = 0;
		v = strtol(arg, &end, 10);
		if (errno != 0 || *end != '\0' || v < 1 || v > 256) {
			cli_usage_error("--threads: '%s' is not a number from 1 "
			    "to 256", arg);
			return -1;
		}
		o->threads = (int)v;
		return 0;
	case OPT_SHARD_SIZE:
		if (graph_parse_size(arg, false,
		    &o->merge.shard_size) != 0) {
			cli_usage_error("--out-shard-size: '%s' is not a size "
			    "(e.g. 5B, 500M; decimal, as mergekit)", arg);
			return -1;
		}
		return 0;
	case OPT_SEED:
		errno = 0;
		o->merge.seed = strtoull(arg, &end, 10);
		/* 2^53: the protocol's integers, so run and submit agree. */
		if (errno != 0 || *end != '\0' || *arg == '-' || *arg == '\0' ||
		    o->merge.seed > (1ull << 53)) {
			cli_usage_error("--random-seed: '%s' is not an integer "
			    "from 0 to 2^53", arg);
			return -1;
		}
		o->merge.has_seed = true;
		return 0;
	case OPT_CRIMES:
		o->merge.allow_crimes = true;
		return 0;
	case OPT_NO_TOKENIZER:
		o->merge.copy_tokenizer = false;
		return 0;
	case OPT_NO_CARD:
		o->merge.model_card = false;
		return 0;
	case OPT_FORCE:
		o->merge.force = true;
		return 0;
	case 'q':
		o->quiet = true;
		return 0;
	case OPT_JSON:
		o->json = true;
		return 0;
	}
	return -1;
}

/*
 * Opens the directory that will hold out (with create, making it and its
 * parents first, as mergekit does) and returns its descriptor, with out's last component
 * in *name.  Prints an error and returns -1 on failure.
 */
int
cli_open_parent(const char *out, char **name, bool create)
{
	char *dup = xstrdup(out), *slash;
	size_t len = strlen(dup);
	int fd;

	while (len > 1 && dup[len - 1] == '/')
		dup[--len] = '\0';
	slash = strrchr(dup, '/');
	*name = xstrdup(slash != NULL ? slash + 1 : dup);
	if (slash == dup)
		dup[1] = '\0';
	else if (slash != NULL)
		*slash = '\0';
	else
		strcpy(dup, ".");
	if (create)
		cli_mkdirs(dup, 0755);
	if (strcmp(*name, ".") == 0 || strcmp(*name, "..") == 0 ||
	    (fd = open(dup, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		fprintf(stderr, "%s: cannot use %s as the output directory: "
		    "%s\n", cli_progname, out, strcmp(*name, ".") == 0 ||
		    strcmp(*name, "..") == 0 ? "give a new directory's name" :
		    strerror(errno));
		free(dup);
		free(*name);
		*name = NULL;
		return -1;
	}
	free(dup);
	return fd;
}

/* mkdir -p. */
void
cli_mkdirs(const char *path, mode_t mode)
{
	char *dup = xstrdup(path), *p;

	for (p = dup + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		mkdir(dup, mode);
		*p = '/';
	}
	mkdir(dup, mode);
	free(dup);
}

/* The planner's options from the command line's. */
void
cli_plan_opts(const struct cli_merge_opts *o, struct graph_plan_opts *po)
{
	graph_plan_opts_default(po);
	po->merge = o->merge;
	po->budget = cli_budget(o);
}
