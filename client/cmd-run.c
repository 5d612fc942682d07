/* SPDX-License-Identifier: MIT */
/*
 * cmd-run.c: "mergectl run CONFIG OUT": the engine in-process, no daemon;
 * the drop-in for "mergekit-yaml CONFIG OUT".
 *
 * A thin front over graph/: load the config, plan it (all problems are
 * printed and the exit code is 3 before any weight is read), then run the
 * plan on a private libuv loop with the executor, drawing progress on
 * stderr.  SIGINT or SIGTERM cancels the job, which removes its staging
 * directory, and exits with 130.  With --resume the staging directory
 * has a fixed name (.OUT.partial) and stays when the run stops short,
 * holding the engine's record of the shards written: the same command
 * again goes on from there (a Slurm job requeued, docs/cluster.md).
 * CONFIG "-" reads the config from standard input.  --stage-record and
 * --stage-card are merged --backend slurm's, for a stage of a pipeline
 * run as one batch job: the record the stage's output holds and the
 * model card's account of the pipeline, as the daemon planned them.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "cli.h"
#include "opts.h"
#include "xmalloc.h"

/* CONFIG "-": as much config text as a file may hold (stages.c); also
 * the most a --stage-record or --stage-card file may hold. */
#define RUN_STDIN_MAX (4u << 20)

/* What run's own options ask, besides the merge's and stages' options. */
struct run_args {
	bool resume;
	const char *stage_record;	/* --stage-record FILE */
	const char *stage_card;		/* --stage-card FILE */
	const char *model_dirs;		/* --model-dirs FILE */
	const char *config_name;	/* --config-name NAME (CONFIG -) */
};

enum {
	OPT_RESUME = OPT_OWN,
	OPT_STAGE_RECORD,
	OPT_STAGE_CARD,
	OPT_MODEL_DIRS,
	OPT_CONFIG_NAME,
};

static void
run_usage(FILE *fp)
{
	fprintf(fp, "usage: %s%s\n"
	    "  --memory SIZE          the most memory the merge may use "
	    "(default: a quarter\n"
	    "                         of RAM; binary: 512M, 2G)\n"
	    "  -j, --num-threads N    merge threads (default: CPU count; also "
	    "--threads)\n"
	    "  --out-shard-size SIZE  the largest output file, decimal K/M/B/G "
	    "(default 5B)\n"
	    "  --allow-crimes         allow models of different architectures\n"
	    "  --random-seed N        seed for random methods (default: drawn, "
	    "and recorded)\n"
	    "  --no-copy-tokenizer    do not copy the base model's tokenizer\n"
	    "  --no-write-model-card  no README.md or mergekit_config.yml (also "
	    "--no-model-card)\n"
	    "  --transformers-cache DIR  look models up in this Hugging Face "
	    "cache\n"
	    "  --force                replace OUT if it exists\n"
	    "  --resume               keep what a stopped run wrote "
	    "(.OUT.partial) and go on\n                         from there "
	    "when run again with the same plan\n"
	    "  --config-name NAME     CONFIG -'s name in messages\n"
	    "  --stage-record FILE, --stage-card FILE, --model-dirs FILE\n"
	    "                         a pipeline stage's record and card, "
	    "the models'\n                         directories (merged "
	    "--backend slurm's batch jobs)\n"
	    "  --strict               what mergekit ignores (and mergectl warns "
	    "of) is an error\n"
	    "  -v, --verbose          say which architecture and what the plan "
	    "holds\n"
	    "  -q, --quiet            no progress output\n"
	    "  --json                 print the result as JSON\n"
	    "  --lora-merge-dtype DTYPE  round weights that a LoRA adapter "
	    "(MODEL+ADAPTER)\n"
	    "                         changes to bfloat16, float16 or float32 "
	    "before merging\n"
	    "A file of several documents (a mergekit-multi pipeline) runs "
	    "stage by stage:\n"
	    "  --intermediate-dir DIR where named stages go (default: "
	    "OUT.stages)\n"
	    "  --no-lazy              run every stage, even those up to "
	    "date\n"
	    "  --no-keep-intermediates  remove each stage once the stages "
	    "reading it ran\n"
	    "  --fuse                 compute a stage inside the one stage "
	    "reading it, where\n"
	    "                         the plan proves it can: not written, "
	    "same result\n"
	    "Each boolean also has its --no- form, as in mergekit-yaml.  "
	    "mergekit-yaml's\n--cuda, --device, --read-to-gpu, --multi-gpu, "
	    "--gpu-rich, --low-cpu-memory,\n--async-write, --write-threads, "
	    "--clone-tensors, --trust-remote-code,\n--lazy-unpickle and "
	    "--lora-merge-cache are accepted and change nothing (a\nnote says "
	    "what mergectl does instead); --safe-serialization is what "
	    "mergectl\nalways does.\n",
	    cli_progname, cli_as_multi ? " FILE --intermediate-dir DIR "
	    "[--out-path OUT] [options]" : cli_as_mergekit ? " CONFIG OUT "
	    "[options]" : " run CONFIG OUT [options]");
}

static void
run_done(struct graph_job *job, int rc, const char *err, void *arg)
{
	struct cli_run *r = arg;

	(void)job;
	graph_job_progress(job, &r->last);
	r->rc = rc;
	r->err = err != NULL ? xstrdup(err) : NULL;
	r->finished = true;
	r->job = NULL;
	uv_close((uv_handle_t *)&r->sigint, NULL);
	uv_close((uv_handle_t *)&r->sigterm, NULL);
}

static void
run_progress(struct graph_job *job, const struct graph_progress *g,
    void *arg)
{
	struct cli_run *r = arg;

	(void)job;
	r->last = *g;
	cli_progress_update(&r->prog, g, false);
}

static void
run_signal(uv_signal_t *h, int signum)
{
	struct cli_run *r = h->data;

	(void)signum;
	r->interrupted = true;
	if (r->job != NULL)
		graph_exec_cancel(r->job);
}

static void
run_report(const struct cli_merge_opts *o, const struct cli_run *r,
    const struct graph_plan *plan, const char *out, double secs)
{
	struct graph_plan_summary s;
	const char *msg = NULL, *code = NULL;
	char *sz, *pk;

	if (r->said)
		return;
	graph_plan_summary(plan, &s);
	if (r->rc != 0) {
		msg = r->err ? r->err : strerror(-r->rc);
		code = r->interrupted ? CLI_E_INTERRUPTED : r->rc == -EEXIST ?
		    PROTO_E_EXISTS : CLI_E_FAILED;
		fprintf(stderr, "%s: merge failed: %s\n", cli_progname, msg);
	}
	if (o->json) {
		struct xbuf x = { 0 };
		xbuf_add(&x, "{\"ok\":", 6);
		xbuf_add(&x, r->rc == 0 ? "true" : "false", r->rc == 0 ? 4 : 5);
		xbuf_add(&x, ",\"out\":", 7);
		graph_json_string(&x, out);
		if (r->rc != 0) {
			/* The shape of every error under --json (errors.c). */
			xbuf_printf(&x, ",\"error\":{\"code\":\"%s\",\"msg\":",
			    code);
			graph_json_string(&x, msg);
			xbuf_add(&x, "}", 1);
		}
		xbuf_printf(&x, ",\"tensors\":%zu,\"shards\":%zu,\"bytes\":%"
		    PRIu64 ",\"seconds\":%.3f,\"peak_memory\":%" PRIu64
		    ",\"seed\":%" PRIu64 "}\n", s.tensors, s.shards,
		    s.bytes_written, secs, r->last.memory_peak, s.seed);
		fputs(x.data, stdout);
		xbuf_free(&x);
		return;
	}
	if (r->rc != 0)
		return;
	sz = graph_format_size(s.bytes_written);
	pk = graph_format_size(r->last.memory_peak);
	if (!o->quiet)
		fprintf(stderr, "%s: wrote %s (%zu tensors, %s in %zu shard%s) "
		    "in %.1fs, peak memory %s\n", cli_progname, out, s.tensors,
		    sz, s.shards, s.shards == 1 ? "" : "s", secs, pk);
	free(sz);
	free(pk);
}

static int
run_parse(int argc, char **argv, struct cli_merge_opts *o,
    struct cli_stage_opts *so, char **cfg, char **out, struct run_args *a)
{
	static const struct option own[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "resume", no_argument, NULL, OPT_RESUME },
		{ "stage-record", required_argument, NULL, OPT_STAGE_RECORD },
		{ "stage-card", required_argument, NULL, OPT_STAGE_CARD },
		{ "model-dirs", required_argument, NULL, OPT_MODEL_DIRS },
		{ "config-name", required_argument, NULL, OPT_CONFIG_NAME },
		{ NULL, 0, NULL, 0 },
	};
	struct option *merge = cli_merge_longopts(own);
	struct option *longopts = cli_longopts_cat(merge, cli_stage_longopts);
	int c, rc = 0, npos;

	free(merge);
	cli_merge_opts_default(o);
	cli_stage_opts_default(so);
	optind = 1;
	while (rc == 0 && (c = cli_getopt(argc, argv, "qhvj:",
	    longopts)) != -1) {
		if (c == 'h') {
			run_usage(stdout);
			free(longopts);
			exit(CLI_EXIT_OK);
		}
		switch (c) {
		case OPT_RESUME:
			a->resume = true;
			continue;
		case OPT_STAGE_RECORD:
			a->stage_record = optarg;
			continue;
		case OPT_STAGE_CARD:
			a->stage_card = optarg;
			continue;
		case OPT_MODEL_DIRS:
			a->model_dirs = optarg;
			continue;
		case OPT_CONFIG_NAME:
			a->config_name = optarg;
			continue;
		}
		if (c == '?' || (cli_stage_opt(so, c, optarg) != 0 &&
		    cli_merge_opt(o, c, optarg) != 0))
			rc = -1;
	}
	free(longopts);
	npos = argc - optind;
	/* mergekit-multi CONFIG --intermediate-dir DIR [--out-path OUT];
	 * mergectl run CONFIG [OUT], OUT optional only for a pipeline of
	 * named stages (stages.c says so then). */
	if (rc == 0 && cli_as_multi && (npos != 1 || so->dir == NULL)) {
		cli_usage_error("%s needs CONFIG_FILE and --intermediate-dir "
		    "DIR (and --out-path PATH for the final merge)",
		    cli_progname);
		rc = -1;
	} else if (rc == 0 && !cli_as_multi && so->out_path != NULL) {
		cli_usage_error("--out-path is mergekit-multi's; give OUT "
		    "after CONFIG");
		rc = -1;
	} else if (rc == 0 && !cli_as_multi && (npos < 1 || npos > 2)) {
		cli_usage_error("%s needs CONFIG and OUT", cli_as_mergekit ?
		    cli_progname : "run");
		rc = -1;
	}
	if (rc != 0) {
		fprintf(stderr, "%s: '%s%s --help' lists the options\n",
		    cli_progname, cli_progname, cli_as_mergekit ? "" : " run");
		return -1;
	}
	*cfg = argv[optind];
	*out = cli_as_multi ? (char *)so->out_path : npos == 2 ?
	    argv[optind + 1] : NULL;
	return 0;
}

/* -v: what mergekit's info logging says, from the plan. */
static void
run_say_plan(const struct graph_plan *plan)
{
	struct graph_plan_summary s;
	FILE *fp = stderr;
	char *r, *w, *m;

	graph_plan_summary(plan, &s);
	r = graph_format_size(s.bytes_read);
	w = graph_format_size(s.bytes_written);
	m = graph_format_size(s.peak_memory);
	fprintf(fp, "%s: architecture %s from %s (%s)\n", cli_progname,
	    s.arch, s.arch_model, s.arch_reason);
	fprintf(fp, "%s: %zu tensors in %zu file%s: reads %s, writes %s, "
	    "peak memory %s; seed %llu\n", cli_progname, s.tensors, s.shards,
	    s.shards == 1 ? "" : "s", r, w, m, (unsigned long long)s.seed);
	if (s.kept_base > 0)
		fprintf(fp, "%s: %zu tensors from the base model, unchanged: no "
		    "t applies to them\n", cli_progname, s.kept_base);
	free(r);
	free(w);
	free(m);
}

/* fd whole, a pipe or a file, up to RUN_STDIN_MAX bytes. */
static int
run_read_fd(int fd, char **out, size_t *len)
{
	struct xbuf x = { 0 };
	char buf[65536];
	ssize_t n;

	while ((n = read(fd, buf, sizeof buf)) != 0) {
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 || x.len + (size_t)n > RUN_STDIN_MAX) {
			xbuf_free(&x);
			*out = NULL;
			return -1;
		}
		xbuf_add(&x, buf, (size_t)n);
	}
	*len = x.len;
	*out = x.data != NULL ? xbuf_take(&x) : xstrdup("");
	return 0;
}

/*
 * A --stage-record or --stage-card file whole, as text (a batch
 * script's here-document); NULL when path is.  Returns an exit code.
 */
static int
run_read_stage_file(const char *opt, const char *path, char **out)
{
	size_t len = 0;
	int fd, rc;

	*out = NULL;
	if (path == NULL)
		return CLI_EXIT_OK;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		cli_error(CLI_E_FAILED, "--%s %s: %s", opt, path,
		    strerror(errno));
		return CLI_EXIT_FAILED;
	}
	rc = run_read_fd(fd, out, &len);
	close(fd);
	if (rc != 0 || strlen(*out) != len) {
		cli_usage_error("--%s %s: not text of at most 4 MiB", opt,
		    path);
		free(*out);
		*out = NULL;
		return CLI_EXIT_USAGE;
	}
	return CLI_EXIT_OK;
}

/*
 * Loads and plans; prints every problem.  Returns an exit code.  text:
 * the config read from standard input (CONFIG "-"), or NULL; card: the
 * model card's account of the pipeline the merge ends, or NULL; dirs:
 * where the models are (--model-dirs), or NULL to resolve them here.
 */
static int
run_plan(const struct cli_merge_opts *o, const char *path, const char *text,
    const char *card, const struct cli_model_dirs *dirs,
    struct graph_config **cfg, struct graph_plan **plan)
{
	struct graph_plan_opts po;
	struct graph_diags d;
	int rc = CLI_EXIT_OK, lrc;

	graph_diags_init(&d);
	cli_plan_opts(o, &po);
	po.card_pipeline = card;
	if (dirs != NULL) {
		po.dirs = dirs->v;
		po.ndirs = dirs->n;
	}
	lrc = text != NULL ? graph_config_load_buffer(path, text,
	    strlen(text), cfg, &d) : graph_config_load_file(path, cfg, &d);
	if (lrc != 0 || graph_plan_build(*cfg, &po, plan, &d) != 0)
		rc = CLI_EXIT_INVALID;
	if (rc != CLI_EXIT_OK) {
		cli_error_diags(PROTO_E_BAD_CONFIG, &d, "%zu problem%s found; "
		    "nothing was read or written", d.nerrors, d.nerrors == 1 ?
		    "" : "s");
	} else {
		graph_diags_print(&d, stderr);
		if (o->verbose > 0)
			run_say_plan(*plan);
	}
	graph_diags_fini(&d);
	return rc;
}

/*
 * --resume: what an earlier run of the same plan left in the staging
 * directory (its record, GRAPH_RECORD_FILE), as one flag per shard in
 * done.  A directory of another plan, or without a record, is removed:
 * its shards may have other names, sizes or contents.
 */
static void
run_resume_point(const struct graph_plan *plan, int dirfd,
    const char *staging, const char *out, bool *done)
{
	struct graph_plan_summary s;
	struct graph_record rec;
	struct stat st;
	char fp[17], *cause = NULL, *why = NULL;
	size_t i;
	int rc;

	graph_plan_summary(plan, &s);
	rc = graph_record_read(dirfd, staging, (int64_t)geteuid(), &rec,
	    &cause);
	if (rc == -ENOENT && fstatat(dirfd, staging, &st,
	    AT_SYMLINK_NOFOLLOW) == -1) {
		free(cause);
		return;		/* a first run */
	}
	graph_plan_fingerprint(plan, fp);
	if (rc == 0 && strcmp(rec.plan, fp) == 0 && strlen(rec.shards) ==
	    s.shards) {
		for (i = 0; i < s.shards; i++)
			done[i] = rec.shards[i] == '1';
		fprintf(stderr, "%s: resuming %s: %zu of %zu shard%s written "
		    "by an earlier run\n", cli_progname, out, rec.shards_done,
		    s.shards, s.shards == 1 ? "" : "s");
		graph_record_fini(&rec);
		return;
	}
	why = rc == 0 ? xstrdup("its plan was another (the config, the "
	    "options or an input changed)") : rc == -ENOENT ?
	    xstrdup("it holds no record of what it finished") :
	    xasprintf("its record is unreadable: %s", cause);
	fprintf(stderr, "%s: note: starting %s over: %s was left by an "
	    "earlier run, but %s\n", cli_progname, out, staging, why);
	graph_remove_tree(dirfd, staging, NULL);
	graph_record_fini(&rec);
	free(cause);
	free(why);
}

/*
 * Runs plan into out on a loop of its own; manifest: a pipeline stage's
 * record, or NULL.  Returns an exit code; r says what happened.
 */
int
cli_run_exec(const struct cli_merge_opts *o, struct cli_run *r,
    const struct graph_plan *plan, const char *out, const char *manifest)
{
	struct graph_exec_opts eo = { cli_budget(o), o->threads, false };
	struct graph_job_opts jo;
	struct graph_exec *ex = NULL;
	struct graph_plan_summary s;
	char *cause = NULL, *name, *staging = NULL;
	bool *done = NULL;
	int rc, dirfd;

	if ((dirfd = cli_open_parent(out, &name, true)) < 0) {
		r->said = true;
		return CLI_EXIT_FAILED;
	}
	if (r->resume) {
		graph_plan_summary(plan, &s);
		staging = xasprintf(".%s.partial", name);
		done = xcalloc(s.shards + 1, sizeof *done);
		run_resume_point(plan, dirfd, staging, out, done);
	}
	if (uv_loop_init(&r->loop) != 0) {
		close(dirfd);
		free(name);
		free(staging);
		free(done);
		return CLI_EXIT_FAILED;
	}
	uv_signal_init(&r->loop, &r->sigint);
	uv_signal_init(&r->loop, &r->sigterm);
	r->sigint.data = r->sigterm.data = r;
	uv_signal_start(&r->sigint, run_signal, SIGINT);
	uv_signal_start(&r->sigterm, run_signal, SIGTERM);
	graph_exec_create(&r->loop, &eo, &ex);
	memset(&jo, 0, sizeof jo);
	jo.out_dirfd = dirfd;
	jo.out_name = name;
	jo.out_dir = out;
	jo.manifest = manifest;
	jo.staging_name = staging;
	jo.keep_staging = r->resume;
	jo.shards_done = done;
	jo.record = r->resume;
	jo.done = run_done;
	jo.progress = run_progress;
	jo.arg = r;
	cli_progress_init(&r->prog, o->quiet || o->json);
	rc = graph_exec_submit(ex, plan, &jo, &r->job, &cause);
	if (rc != 0) {
		r->rc = rc;
		r->err = cause;
		uv_close((uv_handle_t *)&r->sigint, NULL);
		uv_close((uv_handle_t *)&r->sigterm, NULL);
	}
	uv_run(&r->loop, UV_RUN_DEFAULT);
	graph_exec_destroy(ex);
	close(dirfd);
	free(name);
	free(staging);
	free(done);
	if (uv_loop_close(&r->loop) != 0)
		fprintf(stderr, "%s: warning: event loop not closed cleanly\n",
		    cli_progname);
	if (r->finished)
		cli_progress_update(&r->prog, &r->last, true);
	cli_progress_end(&r->prog);
	cli_progress_fini(&r->prog);
	if (r->interrupted)
		return CLI_EXIT_INTERRUPTED;
	if (r->rc == -EEXIST)
		return CLI_EXIT_EXISTS;
	return r->rc == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILED;
}

int
cli_cmd_run(int argc, char **argv)
{
	struct cli_merge_opts o;
	struct cli_stage_opts so;
	struct graph_config *cfg = NULL;
	struct graph_plan *plan = NULL;
	struct cli_run *r;
	struct run_args a = { false, NULL, NULL, NULL, NULL };
	struct cli_model_dirs dirs = { NULL, 0 };
	char *cfgpath, *out, pool[16], *text = NULL;
	char *record = NULL, *card = NULL, *dirs_text = NULL;
	size_t len;
	double t0;
	int rc;

	if (run_parse(argc, argv, &o, &so, &cfgpath, &out, &a) != 0)
		return CLI_EXIT_USAGE;
	/* libuv reads this once, at the pool's first use. */
	snprintf(pool, sizeof pool, "%d", graph_exec_pool_size(o.threads));
	setenv("UV_THREADPOOL_SIZE", pool, 1);
	/* CONFIG "-": one merge's config on standard input (a batch
	 * script's here-document, docs/cluster.md). */
	if (strcmp(cfgpath, "-") == 0 && !cli_as_multi) {
		if (run_read_fd(STDIN_FILENO, &text, &len) != 0 ||
		    strlen(text) != len ||
		    graph_pipeline_ndocs(text, len) > 1) {
			cli_usage_error("CONFIG - reads one merge's config, of "
			    "at most 4 MiB of text, from standard input");
			free(text);
			return CLI_EXIT_USAGE;
		}
	} else if (cli_as_multi || (!cli_as_mergekit &&
	    cli_stage_count(cfgpath) > 1)) {
		/* mergekit-yaml reads one document, as mergekit's does. */
		if (a.resume || a.stage_record != NULL ||
		    a.stage_card != NULL || a.model_dirs != NULL) {
			cli_usage_error("%s runs one merge; a pipeline of "
			    "stages skips the stages already written (--lazy)",
			    a.resume ? "--resume" : a.stage_record != NULL ?
			    "--stage-record" : a.stage_card != NULL ?
			    "--stage-card" : "--model-dirs");
			return CLI_EXIT_USAGE;
		}
		return cli_run_stages(&o, &so, cfgpath, out);
	}
	if (out == NULL) {
		cli_usage_error("%s needs CONFIG and OUT", cli_as_mergekit ?
		    cli_progname : "run");
		free(text);
		return CLI_EXIT_USAGE;
	}
	if (so.dir != NULL)
		fprintf(stderr, "%s: note: --intermediate-dir changes nothing: "
		    "%s holds one merge, no stages\n", cli_progname, cfgpath);
	t0 = cli_now();
	if ((rc = run_read_stage_file("stage-record", a.stage_record,
	    &record)) != CLI_EXIT_OK || (rc = run_read_stage_file("stage-card",
	    a.stage_card, &card)) != CLI_EXIT_OK || (rc = run_read_stage_file(
	    "model-dirs", a.model_dirs, &dirs_text)) != CLI_EXIT_OK ||
	    (dirs_text != NULL && (rc = cli_model_dirs_parse(a.model_dirs,
	    dirs_text, &dirs)) != CLI_EXIT_OK)) {
		free(text);
		free(record);
		free(card);
		free(dirs_text);
		return rc;
	}
	/* CONFIG -: named in messages as --config-name says. */
	rc = run_plan(&o, text == NULL ? cfgpath : a.config_name != NULL ?
	    a.config_name : "<stdin>", text, card, dirs_text != NULL ? &dirs :
	    NULL, &cfg, &plan);
	free(text);
	free(card);
	free(dirs_text);
	/* The plan holds descriptors of its own. */
	cli_model_dirs_fini(&dirs);
	if (rc != CLI_EXIT_OK) {
		graph_config_free(cfg);
		free(record);
		return rc;
	}
	r = xcalloc(1, sizeof *r);
	r->resume = a.resume;
	rc = cli_run_exec(&o, r, plan, out, record);
	free(record);
	run_report(&o, r, plan, out, cli_now() - t0);
	free(r->err);
	free(r);
	graph_plan_free(plan);
	graph_config_free(cfg);
	return rc;
}
