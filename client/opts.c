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

/* The merge options, as mergekit-yaml spells them, with today's aliases. */
static const struct option merge_longopts[] = {
	{ "memory", required_argument, NULL, OPT_MEMORY },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "num-threads", required_argument, NULL, OPT_THREADS },
	{ "out-shard-size", required_argument, NULL, OPT_SHARD_SIZE },
	{ "random-seed", required_argument, NULL, OPT_SEED },
	{ "allow-crimes", no_argument, NULL, OPT_CRIMES },
	{ "no-allow-crimes", no_argument, NULL, OPT_NO_CRIMES },
	{ "copy-tokenizer", no_argument, NULL, OPT_TOKENIZER },
	{ "no-copy-tokenizer", no_argument, NULL, OPT_NO_TOKENIZER },
	{ "write-model-card", no_argument, NULL, OPT_CARD },
	{ "no-write-model-card", no_argument, NULL, OPT_NO_CARD },
	{ "no-model-card", no_argument, NULL, OPT_NO_CARD },
	{ "safe-serialization", no_argument, NULL, OPT_SAFE },
	{ "no-safe-serialization", no_argument, NULL, OPT_NO_SAFE },
	{ "transformers-cache", required_argument, NULL, OPT_HF_CACHE },
	{ "force", no_argument, NULL, OPT_FORCE },
	{ "strict", no_argument, NULL, OPT_STRICT },
	{ "no-strict", no_argument, NULL, OPT_NO_STRICT },
	{ "quiet", no_argument, NULL, 'q' },
	{ "no-quiet", no_argument, NULL, OPT_NO_QUIET },
	{ "verbose", no_argument, NULL, 'v' },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "lora-merge-dtype", required_argument, NULL, OPT_LORA_DTYPE },
};

/*
 * mergekit-yaml's options that change nothing here (MERGEKIT.md Part A
 * 18): accepted, so that published command lines run unchanged, with one
 * line saying what mergectl does instead.  Their --no- forms ask for what
 * mergectl does anyway and are taken silently.  `daemon`: the option
 * chooses threads or a device, which a daemon decides for all its jobs,
 * so submit refuses it.
 */
#define CPU "mergectl merges on the CPU, with OpenBLAS (-j threads)"

static const struct compat_opt {
	const char *name;
	const char *no;		/* its --no- form; NULL: takes an argument */
	bool daemon;
	const char *instead;
} compat[] = {
	{ "cuda", "no-cuda", true, CPU },
	{ "device", NULL, true, CPU },
	{ "read-to-gpu", "no-read-to-gpu", true, CPU },
	{ "multi-gpu", "no-multi-gpu", true, CPU },
	{ "gpu-rich", "no-gpu-rich", true, CPU },
	{ "low-cpu-memory", "no-low-cpu-memory", true, "mergectl holds at "
	    "most --memory (default a quarter of RAM)" },
	{ "write-threads", NULL, true, "shards are written as their tensors "
	    "finish, by the merge threads (-j)" },
	{ "async-write", "no-async-write", false, "shards are already "
	    "written while later tensors merge" },
	{ "clone-tensors", "no-clone-tensors", false, "no two outputs share "
	    "a tensor, so there is nothing to clone" },
	{ "trust-remote-code", "no-trust-remote-code", false, "mergectl runs "
	    "no model code" },
	{ "lazy-unpickle", "no-lazy-unpickle", false, "mergectl reads "
	    "every checkpoint lazily, safetensors and pytorch_model.bin "
	    "alike: each tensor only when it merges it" },
	{ "lora-merge-cache", NULL, false, "mergectl applies LoRA adapters "
	    "as it reads the weights and writes no merged copies of models" },
};

#undef CPU

#define NCOMPAT (sizeof compat / sizeof *compat)
#define NMERGE (sizeof merge_longopts / sizeof *merge_longopts)

struct option *
cli_merge_longopts(const struct option *own)
{
	size_t nown = 0, n = 0, i;
	struct option *v;

	while (own[nown].name != NULL)
		nown++;
	/* Each compat option and its --no- form, and the end. */
	v = xcalloc(nown + NMERGE + 2 * NCOMPAT + 1, sizeof *v);
	memcpy(v, own, nown * sizeof *v);
	n = nown;
	memcpy(v + n, merge_longopts, sizeof merge_longopts);
	n += NMERGE;
	for (i = 0; i < NCOMPAT; i++) {
		v[n].name = compat[i].name;
		v[n].has_arg = compat[i].no == NULL ? required_argument :
		    no_argument;
		v[n++].val = OPT_COMPAT + (int)(2 * i);
		if (compat[i].no == NULL)
			continue;
		v[n].name = compat[i].no;
		v[n++].val = OPT_COMPAT + (int)(2 * i + 1);
	}
	return v;
}

static int
parse_threads(const char *opt, const char *arg, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno != 0 || *end != '\0' || v < 1 || v > 256) {
		cli_usage_error("%s: '%s' is not a number from 1 to 256", opt,
		    arg);
		return -1;
	}
	*out = (int)v;
	return 0;
}

/* One of mergekit-yaml's options that mean nothing here. */
static int
compat_opt(struct cli_merge_opts *o, int opt, const char *arg)
{
	const struct compat_opt *c = &compat[(opt - OPT_COMPAT) / 2];
	bool no = (opt - OPT_COMPAT) % 2 == 1;
	int ignored;

	if (c->daemon && o->for_daemon) {
		cli_usage_error("--%s: the daemon decides how it merges, for "
		    "every job (merged --threads, --memory); submit does not "
		    "take it", no ? c->no : c->name);
		return -1;
	}
	if (strcmp(c->name, "write-threads") == 0 &&
	    parse_threads("--write-threads", arg, &ignored) != 0)
		return -1;
	if (!no)
		fprintf(stderr, "%s: note: --%s changes nothing: %s\n",
		    cli_progname, c->name, c->instead);
	return 0;
}

/* Applies one option; returns 0, or prints a usage error and returns -1. */
int
cli_merge_opt(struct cli_merge_opts *o, int opt, const char *arg)
{
	const char *suggest = NULL;
	char *end;

	if (opt >= OPT_COMPAT && opt < OPT_COMPAT + (int)(2 * NCOMPAT))
		return compat_opt(o, opt, arg);
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
	case 'j':
		if (o->for_daemon) {
			cli_usage_error("%s: the daemon decides (merged "
			    "--threads)", opt == 'j' ? "-j" : "--threads");
			return -1;
		}
		return parse_threads(opt == 'j' ? "-j" : "--threads", arg,
		    &o->threads);
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
	case OPT_NO_CRIMES:
		o->merge.allow_crimes = opt == OPT_CRIMES;
		return 0;
	case OPT_TOKENIZER:
	case OPT_NO_TOKENIZER:
		o->merge.copy_tokenizer = opt == OPT_TOKENIZER;
		return 0;
	case OPT_CARD:
	case OPT_NO_CARD:
		o->merge.model_card = opt == OPT_CARD;
		return 0;
	case OPT_SAFE:
		return 0;	/* what mergectl always writes */
	case OPT_NO_SAFE:
		cli_usage_error("--no-safe-serialization: outputs are always "
		    "safetensors (mergectl writes no pickled .bin files)");
		return -1;
	case OPT_HF_CACHE:
		o->hf_cache = arg;
		return 0;
	case OPT_FORCE:
		o->merge.force = true;
		return 0;
	case OPT_STRICT:
	case OPT_NO_STRICT:
		o->merge.strict = opt == OPT_STRICT;
		return 0;
	case 'q':
	case OPT_NO_QUIET:
		o->quiet = opt == 'q';
		return 0;
	case 'v':
		o->verbose++;
		return 0;
	case OPT_JSON:
		o->json = true;
		return 0;
	case OPT_LORA_DTYPE:
		o->merge.lora_dtype = graph_dtype_from_config_name(arg, &suggest);
		if (o->merge.lora_dtype == GRAPH_DT_NONE ||
		    !graph_dtype_is_float(o->merge.lora_dtype)) {
			cli_usage_error("--lora-merge-dtype: '%s' is not a "
			    "float dtype (bfloat16, float16, float32)%s%s%s",
			    arg, suggest ? "; did you mean '" : "",
			    suggest ? suggest : "", suggest ? "'?" : "");
			return -1;
		}
		return 0;
	}
	return -1;
}

/*
 * Opens the directory that will hold out (with create, making it and its
 * parents first, as mergekit does) and returns its descriptor, with out's
 * last component in *name.  Prints an error and returns -1 on failure.
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
		cli_error(CLI_E_FAILED, "cannot use %s as the output "
		    "directory: %s", out, strcmp(*name, ".") == 0 ||
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
	if (o->hf_cache != NULL)
		po->env.hf_hub_cache = o->hf_cache;
}
