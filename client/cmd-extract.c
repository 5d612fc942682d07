/* SPDX-License-Identifier: MIT */
/*
 * cmd-extract.c: "mergectl extract-lora --model FT --base-model BASE
 * --out-path OUT": a LoRA adapter from a fine-tune and its base, the
 * drop-in for mergekit-extract-lora (same options, same files).
 *
 * A thin front over graph/extract*.c: the options into struct
 * graph_extract_opts (mergekit's merge options through opts.c, as run
 * takes them), the plan with every problem printed (exit 3 before any
 * weight is read), then the run in this process, a line per weight with
 * -v and a summary at the end (or one JSON object with --json).  SIGINT
 * or SIGTERM stops it once the weights being decomposed are done; the
 * staging directory is removed and the exit code is 130.
 * "mergectl submit --extract-lora" takes the same options and queues the
 * extraction with the daemon instead (cli_cmd_extract_submit).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"
#include "extractopts-json.h"
#include "opts.h"
#include "xmalloc.h"

enum {
	OPT_MODEL = OPT_OWN,
	OPT_BASE,
	OPT_OUT,
	OPT_MAX_RANK,
	OPT_DISTRIBUTE,
	OPT_NO_DISTRIBUTE,
	OPT_EMBED,
	OPT_NO_EMBED,
	OPT_SAVE_MODULE,
	OPT_SV_EPSILON,
	OPT_SKIP,
	OPT_FAST,
	OPT_POWER_ITERS,
	OPT_OVERSAMPLE,
	OPT_EXTRACT_LORA,	/* submit --extract-lora: the kind */
};

struct extract_args {
	struct cli_merge_opts o;
	struct graph_extract_opts x;
	bool submit;		/* submit --extract-lora: to the daemon */
	struct cli_queue_opts q;
	const char **save;	/* argv's strings */
	const char **inc;
	const char **exc;
	const char *out;
};

static atomic_bool extract_stop;

static void
extract_usage(FILE *fp, bool submit)
{
	if (submit) {
		fprintf(fp, "usage: %s submit --extract-lora --model FT "
		    "--base-model BASE -o OUT [options]\n"
		    "Queues the extraction with the daemon (starting one if "
		    "needed): planned\nbefore it is accepted, run under the "
		    "daemon's memory budget, shown by\nstatus and watch, "
		    "resumable.  The queue's options:\n", cli_progname);
		cli_queue_usage(fp);
		fprintf(fp, "extract-lora's options (the daemon chooses the "
		    "threads: no -j):\n\n");
	}
	fprintf(fp, "usage: %s extract-lora --model FT --base-model BASE "
	    "--out-path OUT [options]\n"
	    "%s\n\n"
	    "  --model FT             the fine-tuned model (path[@rev]"
	    "[+adapter[@rev]])\n"
	    "  --base-model BASE      the model it was tuned from\n"
	    "  --out-path OUT         the adapter's directory (PEFT: "
	    "adapter_model.safetensors,\n"
	    "                         adapter_config.json, README.md)\n"
	    "  --max-rank R           the most singular values kept per weight "
	    "(default 128)\n"
	    "  --sv-epsilon X         keep only singular values above X "
	    "(default 0: all)\n"
	    "  --[no-]distribute-scale  sqrt(S) in both factors, else S in "
	    "lora_A (default on)\n"
	    "  --[no-]embed-lora      decompose the embeddings too (default: "
	    "saved in full)\n"
	    "  --save-module NAME     save modules named NAME (leaf or full "
	    "name) in full;\n"
	    "                         repeatable\n"
	    "  -i, --include-regex RE  decompose only modules RE finds "
	    "(Python syntax);\n"
	    "                         repeatable\n"
	    "  -e, --exclude-regex RE  leave out modules RE finds; repeatable\n"
	    "  --skip-undecomposable  leave out norms and biases instead of "
	    "saving them in full\n"
	    "  --fast                 randomized SVD, much faster on large "
	    "weights, seeded\n"
	    "  --power-iters N        --fast's power iterations (default 2)\n"
	    "  --oversample P         --fast's extra columns (default 10)\n"
	    "  --random-seed N        --fast's seed (default: drawn, printed "
	    "and recorded)\n"
	    "  --memory SIZE          the most memory it may use (default: a "
	    "quarter of RAM;\n"
	    "                         binary: 512M, 2G)\n"
	    "  -j, --threads N        weights decomposed at once (default: "
	    "CPU count)\n"
	    "  --lora-merge-dtype T   round the weights a +adapter reference "
	    "changes to T\n"
	    "  --no-write-model-card  no README.md\n"
	    "  --transformers-cache DIR  look models up in this Hugging Face "
	    "cache\n"
	    "  --force                replace OUT if it exists\n"
	    "  -v, --verbose          say what is decomposed, and a line per "
	    "weight\n"
	    "  -q, --quiet            no summary line\n"
	    "  --json                 print the result as JSON\n"
	    "mergekit's other merge options (--cuda, --lazy-unpickle, "
	    "--lora-merge-cache,\n--copy-tokenizer, --out-shard-size, ...) "
	    "are accepted and change nothing (a\nnote says so).  Every "
	    "weight's relative error ||FT - BASE - B A|| / ||FT - BASE||\n"
	    "is computed as it is decomposed; the summary gives the total."
	    "\n\n"
	    "example:\n"
	    "  %s extract-lora --model org/tuned --base-model org/base \\\n"
	    "      --out-path ./tuned-lora --max-rank 64 --fast -j 8\n",
	    cli_progname, cli_command_summary("extract-lora"), cli_progname);
}

static void
extract_signal(int sig)
{
	(void)sig;
	atomic_store(&extract_stop, true);
}

/* A whole number option in [lo, hi]. */
static int
extract_int(const char *opt, const char *arg, long long lo, long long hi,
    long long *out)
{
	char *end;

	errno = 0;
	*out = strtoll(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || *out < lo ||
	    *out > hi) {
		cli_usage_error("%s: '%s' is not a whole number from %lld to "
		    "%lld", opt, arg, lo, hi);
		return -1;
	}
	return 0;
}

/*
 * mergekit's merge options that run takes but that mean nothing to an
 * extraction: a note, as for the compatibility options (opts.c).  true
 * when opt was one.
 */
static bool
extract_noop(int opt)
{
	static const struct {
		int opt;
		const char *name;
		const char *instead;
	} noops[] = {
		{ OPT_SHARD_SIZE, "out-shard-size", "the adapter is one file, "
		    "as mergekit-extract-lora writes it" },
		{ OPT_CRIMES, "allow-crimes", "extract-lora compares two "
		    "models tensor by tensor and merges nothing" },
		{ OPT_TOKENIZER, "copy-tokenizer", "an adapter carries no "
		    "tokenizer" },
		{ OPT_STRICT, "strict", "extract-lora reads no config" },
	};
	size_t i;

	for (i = 0; i < sizeof noops / sizeof *noops; i++)
		if (noops[i].opt == opt) {
			fprintf(stderr, "%s: note: --%s changes nothing: %s\n",
			    cli_progname, noops[i].name, noops[i].instead);
			return true;
		}
	/* Their --no- forms ask for what extract-lora does anyway. */
	return opt == OPT_NO_CRIMES || opt == OPT_NO_TOKENIZER ||
	    opt == OPT_NO_STRICT;
}

/* One option of extract-lora's own; 0 or -1 (printed). */
static int
extract_opt(struct extract_args *a, int c, const char *arg)
{
	struct graph_extract_opts *x = &a->x;
	long long v;
	char *end;
	int rc;

	switch (c) {
	case OPT_MODEL:
		x->model = arg;
		return 0;
	case OPT_BASE:
		x->base = arg;
		return 0;
	case OPT_OUT:
	case 'o':
		a->out = arg;
		return 0;
	case OPT_EXTRACT_LORA:
		return 0;
	case OPT_MAX_RANK:
		if (extract_int("--max-rank", arg, 1, 1 << 20, &v) != 0)
			return -1;
		x->max_rank = v;
		return 0;
	case OPT_DISTRIBUTE:
	case OPT_NO_DISTRIBUTE:
		x->distribute_scale = c == OPT_DISTRIBUTE;
		return 0;
	case OPT_EMBED:
	case OPT_NO_EMBED:
		x->embed_lora = c == OPT_EMBED;
		return 0;
	case OPT_SAVE_MODULE:
		a->save[x->nsave_modules++] = arg;
		return 0;
	case 'i':
		a->inc[x->ninclude++] = arg;
		return 0;
	case 'e':
		a->exc[x->nexclude++] = arg;
		return 0;
	case OPT_SV_EPSILON:
		errno = 0;
		x->sv_epsilon = strtod(arg, &end);
		if (errno != 0 || end == arg || *end != '\0' ||
		    !(x->sv_epsilon >= 0) || x->sv_epsilon > 1e300) {
			cli_usage_error("--sv-epsilon: '%s' is not a number, 0 "
			    "or more", arg);
			return -1;
		}
		return 0;
	case OPT_SKIP:
		x->skip_undecomposable = true;
		return 0;
	case OPT_FAST:
		x->fast = true;
		return 0;
	case OPT_POWER_ITERS:
		if (extract_int("--power-iters", arg, 0, 64, &v) != 0)
			return -1;
		x->power_iters = (int)v;
		return 0;
	case OPT_OVERSAMPLE:
		if (extract_int("--oversample", arg, 0, 65536, &v) != 0)
			return -1;
		x->oversample = (int)v;
		return 0;
	}
	if (a->submit && (rc = cli_queue_opt(&a->q, c, arg)) != 0)
		return rc < 0 ? -1 : 0;
	if (extract_noop(c))
		return 0;
	return cli_merge_opt(&a->o, c, arg);
}

static int
extract_parse(int argc, char **argv, struct extract_args *a)
{
	static const struct option own[] = {
		{ "model", required_argument, NULL, OPT_MODEL },
		{ "base-model", required_argument, NULL, OPT_BASE },
		{ "out-path", required_argument, NULL, OPT_OUT },
		{ "max-rank", required_argument, NULL, OPT_MAX_RANK },
		{ "distribute-scale", no_argument, NULL, OPT_DISTRIBUTE },
		{ "no-distribute-scale", no_argument, NULL, OPT_NO_DISTRIBUTE },
		{ "embed-lora", no_argument, NULL, OPT_EMBED },
		{ "no-embed-lora", no_argument, NULL, OPT_NO_EMBED },
		{ "save-module", required_argument, NULL, OPT_SAVE_MODULE },
		{ "include-regex", required_argument, NULL, 'i' },
		{ "exclude-regex", required_argument, NULL, 'e' },
		{ "sv-epsilon", required_argument, NULL, OPT_SV_EPSILON },
		{ "skip-undecomposable", no_argument, NULL, OPT_SKIP },
		{ "fast", no_argument, NULL, OPT_FAST },
		{ "power-iters", required_argument, NULL, OPT_POWER_ITERS },
		{ "oversample", required_argument, NULL, OPT_OVERSAMPLE },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	/* submit --extract-lora's besides: the kind, -o, the queue's. */
	static const struct option queued[] = {
		{ "extract-lora", no_argument, NULL, OPT_EXTRACT_LORA },
		{ "out", required_argument, NULL, 'o' },
		{ NULL, 0, NULL, 0 },
	};
	struct option *q1 = cli_longopts_cat(queued, cli_queue_longopts);
	struct option *q2 = cli_longopts_cat(own, q1);
	struct option *longopts = cli_merge_longopts(a->submit ? q2 : own);
	const char *cmd = a->submit ? "submit --extract-lora" : "extract-lora";
	char *cause = NULL;
	int c, rc = 0;

	free(q1);
	free(q2);
	cli_merge_opts_default(&a->o);
	/* The daemon chooses threads, as for a merge. */
	a->o.for_daemon = a->submit;
	graph_extract_opts_default(&a->x);
	/* Each list holds at most one entry per argument. */
	a->save = xcalloc((size_t)argc + 1, sizeof *a->save);
	a->inc = xcalloc((size_t)argc + 1, sizeof *a->inc);
	a->exc = xcalloc((size_t)argc + 1, sizeof *a->exc);
	optind = 1;
	while (rc == 0 && (c = cli_getopt(argc, argv, a->submit ?
	    "qhvj:i:e:o:" : "qhvj:i:e:", longopts)) != -1) {
		if (c == 'h') {
			extract_usage(stdout, a->submit);
			free(longopts);
			exit(CLI_EXIT_OK);
		}
		if (c == '?' || extract_opt(a, c, optarg) != 0)
			rc = -1;
	}
	free(longopts);
	a->x.save_modules = a->save;
	a->x.include = a->inc;
	a->x.exclude = a->exc;
	if (rc == 0 && optind < argc) {
		cli_usage_error("%s takes no arguments besides its options "
		    "('%s')", cmd, argv[optind]);
		rc = -1;
	}
	if (rc == 0 && (a->x.model == NULL || a->x.base == NULL ||
	    a->out == NULL)) {
		cli_usage_error("%s needs %s", cmd, a->x.model == NULL ?
		    "--model FT" : a->x.base == NULL ? "--base-model BASE" :
		    "--out-path OUT (or -o OUT)");
		rc = -1;
	}
	if (rc == 0 && graph_extract_opts_check(&a->x, &cause) != 0) {
		cli_usage_error("%s", cause);
		free(cause);
		rc = -1;
	}
	if (rc != 0) {
		fprintf(stderr, "%s: '%s %s --help' lists the options\n",
		    cli_progname, cli_progname, cmd);
		return -1;
	}
	if (a->o.merge.has_seed && !a->x.fast)
		fprintf(stderr, "%s: note: --random-seed changes nothing "
		    "without --fast: the exact SVD draws no random numbers\n",
		    cli_progname);
	a->x.merge = a->o.merge;
	a->x.threads = a->o.threads;
	if (a->o.hf_cache != NULL)
		a->x.env.hf_hub_cache = a->o.hf_cache;
	return 0;
}

/* The command line, for the adapter's README.md (as mergekit's). */
static char *
extract_invocation(int argc, char **argv)
{
	struct xbuf b = { 0 };
	int i;

	xbuf_printf(&b, "%s", cli_progname);
	for (i = 0; i < argc; i++)
		xbuf_printf(&b, " %s", argv[i]);
	return xbuf_take(&b);
}

/* -v: what the plan holds. */
static void
extract_say_plan(const struct graph_extract *x)
{
	struct graph_extract_summary s;
	char *mem, *big;

	graph_extract_summary(x, &s);
	mem = graph_format_size(s.memory);
	big = graph_format_size(s.biggest);
	fprintf(stderr, "%s: %zu weight%s to decompose by %s SVD, %zu "
	    "tensor%s saved in full, %zu left out", cli_progname, s.decomposed,
	    s.decomposed == 1 ? "" : "s", s.fast ? "randomized" : "exact",
	    s.full, s.full == 1 ? "" : "s", s.skipped);
	if (s.fast)
		fprintf(stderr, "; seed %" PRIu64, s.seed);
	fprintf(stderr, "; the largest weight needs %s of --memory %s\n",
	    big, mem);
	free(mem);
	free(big);
}

/* -v: a line per weight. */
static void
extract_say_weight(const struct graph_extract_weight *w, void *arg)
{
	(void)arg;
	if (w->kind == GRAPH_EXTRACT_FULL)
		fprintf(stderr, "%s: %s: saved in full, as its adapter "
		    "changes it (%.2fs)\n", cli_progname, w->name, w->seconds);
	else if (w->rank == 0)
		fprintf(stderr, "%s: %s: rank 0, left out (%.2fs)\n",
		    cli_progname, w->name, w->seconds);
	else
		fprintf(stderr, "%s: %s: [%" PRId64 ", %" PRId64 "] rank %"
		    PRId64 ", relative error %.6g (%.2fs)\n", cli_progname,
		    w->name, w->rows, w->cols, w->rank, w->rel_error,
		    w->seconds);
}

static void
extract_json(const struct graph_extract *x, const char *out, int rc,
    const char *code, const char *msg)
{
	struct graph_extract_summary s;
	const struct graph_extract_weight *w;
	cJSON *j = cJSON_CreateObject(), *e, *a, *o;
	size_t i;

	graph_extract_summary(x, &s);
	cJSON_AddBoolToObject(j, "ok", rc == 0);
	cJSON_AddStringToObject(j, "out", out);
	if (rc != 0) {
		/* The shape of every error under --json (errors.c). */
		e = cJSON_AddObjectToObject(j, "error");
		cJSON_AddStringToObject(e, "code", code);
		cJSON_AddStringToObject(e, "msg", msg);
	}
	cJSON_AddStringToObject(j, "mode", s.fast ? "fast" : "exact");
	if (s.fast)
		cJSON_AddNumberToObject(j, "seed", (double)s.seed);
	cJSON_AddNumberToObject(j, "rank", (double)s.rank);
	cJSON_AddNumberToObject(j, "decomposed", (double)s.decomposed);
	cJSON_AddNumberToObject(j, "full", (double)s.full);
	cJSON_AddNumberToObject(j, "skipped", (double)s.skipped);
	cJSON_AddNumberToObject(j, "norm", s.norm);
	cJSON_AddNumberToObject(j, "residual", s.residual);
	cJSON_AddNumberToObject(j, "rel_error", s.rel_error);
	cJSON_AddNumberToObject(j, "seconds", s.seconds);
	cJSON_AddNumberToObject(j, "peak_memory", (double)s.peak_memory);
	cJSON_AddNumberToObject(j, "bytes", (double)s.bytes_written);
	a = cJSON_AddArrayToObject(j, "weights");
	for (i = 0; i < graph_extract_nweights(x); i++) {
		w = graph_extract_weight(x, i);
		if (w->kind != GRAPH_EXTRACT_LORA || !w->done)
			continue;
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "name", w->name);
		cJSON_AddNumberToObject(o, "rank", (double)w->rank);
		cJSON_AddNumberToObject(o, "rel_error", w->rel_error);
		cJSON_AddNumberToObject(o, "seconds", w->seconds);
		cJSON_AddItemToArray(a, o);
	}
	cli_print_json(j);
	cJSON_Delete(j);
}

static void
extract_report(const struct extract_args *a, const struct graph_extract *x,
    int rc, const char *err)
{
	struct graph_extract_summary s;
	const char *code = NULL, *msg = NULL;

	if (rc != 0) {
		msg = err != NULL ? err : strerror(-rc);
		code = rc == -ECANCELED ? CLI_E_INTERRUPTED : rc == -EEXIST ?
		    PROTO_E_EXISTS : CLI_E_FAILED;
		fprintf(stderr, "%s: extract-lora failed: %s\n", cli_progname,
		    msg);
	}
	if (a->o.json) {
		extract_json(x, a->out, rc, code, msg);
		return;
	}
	if (rc != 0 || a->o.quiet)
		return;
	graph_extract_summary(x, &s);
	fprintf(stderr, "%s: wrote %s: %zu weight%s decomposed (rank %" PRId64
	    "), %zu tensor%s saved in full, %zu left out, in %.1fs; relative "
	    "error %.6g", cli_progname, a->out, s.decomposed, s.decomposed ==
	    1 ? "" : "s", s.rank, s.full, s.full == 1 ? "" : "s", s.skipped,
	    s.seconds, s.rel_error);
	if (s.fast)
		fprintf(stderr, " (randomized SVD, seed %" PRIu64 ")", s.seed);
	fprintf(stderr, "\n");
}

/* Plans; prints every problem.  Returns an exit code. */
static int
extract_plan(const struct extract_args *a, struct graph_extract **x)
{
	struct graph_diags d;
	int rc = CLI_EXIT_OK;

	graph_diags_init(&d);
	if (graph_extract_plan(&a->x, x, &d) != 0) {
		rc = atomic_load(&extract_stop) ? CLI_EXIT_INTERRUPTED :
		    CLI_EXIT_INVALID;
		cli_error_diags(PROTO_E_BAD_CONFIG, &d, "%zu problem%s found; "
		    "nothing was read or written", d.nerrors, d.nerrors == 1 ?
		    "" : "s");
	} else {
		graph_diags_print(&d, stderr);
		if (a->o.verbose > 0)
			extract_say_plan(*x);
	}
	graph_diags_fini(&d);
	return rc;
}

static int
extract_run(const struct extract_args *a, struct graph_extract *x)
{
	struct graph_diags d;
	char *name, *cause = NULL;
	int dirfd, rc;

	if ((dirfd = cli_open_parent(a->out, &name, true)) < 0)
		return CLI_EXIT_FAILED;
	graph_diags_init(&d);
	rc = graph_extract_run(x, dirfd, name, a->out, a->o.verbose > 0 &&
	    !a->o.json ? extract_say_weight : NULL, NULL, &d, &cause);
	graph_diags_print(&d, stderr);
	graph_diags_fini(&d);
	extract_report(a, x, rc, cause);
	free(cause);
	free(name);
	close(dirfd);
	if (rc == -ECANCELED || atomic_load(&extract_stop))
		return CLI_EXIT_INTERRUPTED;
	if (rc == -EEXIST)
		return CLI_EXIT_EXISTS;
	return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILED;
}

int
cli_cmd_extract_lora(int argc, char **argv)
{
	struct extract_args a;
	struct graph_extract *x = NULL;
	struct sigaction sa;
	char *invocation, pool[16];
	int rc;

	memset(&a, 0, sizeof a);
	if (extract_parse(argc, argv, &a) != 0) {
		rc = CLI_EXIT_USAGE;
		goto out;
	}
	/* libuv reads this once, at the pool's first use. */
	snprintf(pool, sizeof pool, "%d", a.x.threads);
	setenv("UV_THREADPOOL_SIZE", pool, 1);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = extract_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	a.x.cancel = &extract_stop;
	invocation = extract_invocation(argc, argv);
	a.x.invocation = invocation;
	if ((rc = extract_plan(&a, &x)) == CLI_EXIT_OK)
		rc = extract_run(&a, x);
	graph_extract_free(x);
	free(invocation);
out:
	free(a.save);
	free(a.inc);
	free(a.exc);
	return rc;
}

/*
 * "mergectl submit --extract-lora ...": the same options, queued with the
 * daemon as a job of kind extract-lora; the daemon plans it (every
 * problem, exit 3) before accepting it.
 */
int
cli_cmd_extract_submit(int argc, char **argv)
{
	struct extract_args a;
	struct cli_models m;
	char *invocation = NULL, *text = NULL;
	int rc;

	memset(&a, 0, sizeof a);
	a.submit = true;
	cli_models_init(&m);
	if (extract_parse(argc, argv, &a) != 0) {
		rc = CLI_EXIT_USAGE;
		goto out;
	}
	if (a.o.verbose > 0)
		fprintf(stderr, "%s: note: -v: the daemon logs each weight; "
		    "'%s logs JOB' shows its log\n", cli_progname,
		    cli_progname);
	invocation = extract_invocation(argc, argv);
	a.x.invocation = invocation;
	text = extractopts_to_text(&a.x);
	if ((rc = cli_models_open(&m, JOB_KIND_EXTRACT_LORA, text,
	    strlen(text), "extract-lora", &a.x.env, a.out)) == 0)
		rc = cli_queue_submit(&a.q, JOB_KIND_EXTRACT_LORA, text,
		    "extract-lora", a.out, &a.o, &a.x.env, &m);
out:
	cli_models_fini(&m);
	free(text);
	free(invocation);
	free(a.save);
	free(a.inc);
	free(a.exc);
	return rc;
}
