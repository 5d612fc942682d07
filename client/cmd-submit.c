/* SPDX-License-Identifier: MIT */
/*
 * cmd-submit.c: "mergectl submit CONFIG -o OUT": queue a merge with the
 * daemon, starting a personal daemon if none answers.  Prints the job id
 * (or the job as JSON).  The daemon plans the job before accepting it,
 * so a config that cannot succeed is refused at once with every problem
 * (exit 3).  With --wait, watches the job and exits with its result.
 * "submit --extract-lora" queues an extraction (cmd-extract.c); what
 * both share is in queue.c.  A file of several documents is a pipeline,
 * queued as one job group whose stages are jobs (docs/pipelines.md).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"
#include "opts.h"
#include "xmalloc.h"

struct submit_opts {
	struct cli_merge_opts m;
	struct cli_queue_opts q;
	struct cli_stage_opts s;
	const char *out;
};

static void
submit_usage(FILE *fp)
{
	fprintf(fp, "usage: %s submit CONFIG -o OUT [options]\n"
	    "       %s submit --extract-lora --model FT --base-model BASE "
	    "-o OUT [options]\n"
	    "  -o, --out OUT          where the merged model goes\n",
	    cli_progname, cli_progname);
	cli_queue_usage(fp);
	fprintf(fp,
	    "  --memory SIZE          the most memory the job may use\n"
	    "                         (default: the daemon's --memory)\n"
	    "  --force                replace OUT if it exists\n"
	    "  --strict               what mergekit ignores (and mergectl warns "
	    "of) is an error\n"
	    "  --allow-crimes         allow models of different "
	    "architectures\n"
	    "  --random-seed N        seed for random methods\n"
	    "  --out-shard-size SIZE  the largest output file (decimal, "
	    "default 5B)\n"
	    "  --no-copy-tokenizer    do not copy the base model's tokenizer\n"
	    "  --no-write-model-card  no README.md or mergekit_config.yml (also "
	    "--no-model-card)\n"
	    "  --transformers-cache DIR  look models up in this Hugging Face "
	    "cache\n"
	    "  --lora-merge-dtype DTYPE  round weights that a LoRA adapter "
	    "changes to it\n"
	    "  -q, --quiet            with --wait: no progress output\n"
	    "A file of several documents (a pipeline) is queued as one job "
	    "group:\n"
	    "  --intermediate-dir DIR where named stages go (default: "
	    "OUT.stages)\n"
	    "  --no-lazy              run every stage, even those up to "
	    "date\n"
	    "  --no-keep-intermediates  remove each stage once the stages "
	    "reading it are done\n"
	    "  --json                 print the job (or the error) as JSON\n"
	    "It takes mergekit-yaml's options as '%s run' does, but not those "
	    "that\nchoose threads or devices (-j, --cuda, --device, ...): the "
	    "daemon decides.\n"
	    "With --extract-lora it queues an extraction instead: it takes "
	    "'%s extract-lora's\noptions ('%s submit --extract-lora --help' "
	    "lists them).\n", cli_progname, cli_progname, cli_progname);
}

static int
submit_parse(int argc, char **argv, struct submit_opts *o, char **cfg)
{
	static const struct option own[] = {
		{ "out", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct option *cat = cli_longopts_cat(own, cli_queue_longopts);
	struct option *cat2 = cli_longopts_cat(cat, cli_stage_longopts);
	struct option *longopts = cli_merge_longopts(cat2);
	int c, rc = 0, q;

	free(cat);
	free(cat2);
	memset(o, 0, sizeof *o);
	cli_merge_opts_default(&o->m);
	cli_stage_opts_default(&o->s);
	o->m.for_daemon = true;
	optind = 1;
	while (rc == 0 && (c = cli_getopt(argc, argv, "o:qhvj:",
	    longopts)) != -1) {
		if (c == 'h') {
			submit_usage(stdout);
			free(longopts);
			exit(CLI_EXIT_OK);
		}
		if (c == 'o') {
			o->out = optarg;
			continue;
		}
		if ((q = cli_queue_opt(&o->q, c, optarg)) != 0) {
			rc = q < 0 ? -1 : 0;
			continue;
		}
		if (cli_stage_opt(&o->s, c, optarg) == 0)
			continue;
		if (c == '?' || cli_merge_opt(&o->m, c, optarg) != 0)
			rc = -1;
	}
	free(longopts);
	if (rc == 0 && o->s.fuse) {
		/* Each stage is a job of its own here, which status, cancel
		 * and resume follow; a fused pair would be one. */
		cli_usage_error("--fuse is for '%s run': submit runs each "
		    "stage as a job of its own", cli_progname);
		rc = -1;
	}
	if (rc == 0 && (argc - optind != 1 || o->out == NULL)) {
		cli_usage_error("submit needs CONFIG and -o OUT");
		rc = -1;
	}
	if (rc != 0) {
		fprintf(stderr, "%s: '%s submit --help' lists the options\n",
		    cli_progname, cli_progname);
		return -1;
	}
	*cfg = argv[optind];
	return 0;
}

/* A pipeline's stage directory, from the file and the options. */
static int
submit_stages(const struct submit_opts *o, const char *text, size_t len,
    const char *cfgpath, char **dir)
{
	if (o->s.out_path != NULL) {
		cli_usage_error("--out-path is mergekit-multi's; give -o OUT");
		return CLI_EXIT_USAGE;
	}
	return cli_stage_layout(text, len, cfgpath, &o->s, o->out, dir);
}

/* "submit --extract-lora": an extraction's own command line. */
static bool
submit_is_extract(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--extract-lora") == 0)
			return true;
	return false;
}

int
cli_cmd_submit(int argc, char **argv)
{
	struct submit_opts o;
	struct cli_models m;
	struct graph_env env;
	enum job_kind kind;
	char *cfgpath, *text = NULL, *abs, *dir = NULL;
	size_t len;
	int rc;

	if (submit_is_extract(argc, argv))
		return cli_cmd_extract_submit(argc, argv);
	if (submit_parse(argc, argv, &o, &cfgpath) != 0)
		return CLI_EXIT_USAGE;
	if ((rc = graph_read_file(cfgpath, PROTO_MAX_CONFIG, &text,
	    &len)) != 0) {
		cli_error(PROTO_E_BAD_CONFIG, "%s: %s", cfgpath, rc == -EFBIG ?
		    "the config is too large" : rc == -EINVAL ?
		    "not a regular file" : strerror(-rc));
		return CLI_EXIT_INVALID;
	}
	graph_env_from_process(&env);
	if (o.m.hf_cache != NULL)
		env.hf_hub_cache = o.m.hf_cache;
	if (o.m.verbose > 0)
		fprintf(stderr, "%s: note: -v: the daemon plans and logs the "
		    "job; '%s logs JOB' shows its log\n", cli_progname,
		    cli_progname);
	cli_models_init(&m);
	if (cli_stage_count(cfgpath) > 1 && (rc = submit_stages(&o, text, len,
	    cfgpath, &dir)) != CLI_EXIT_OK)
		goto out;
	kind = dir != NULL ? JOB_KIND_PIPELINE : JOB_KIND_MERGE;
	m.inter = dir;
	m.lazy = o.s.lazy;
	m.keep = o.s.keep;
	if ((rc = cli_models_open(&m, kind, text, len, cfgpath, &env,
	    o.out)) == 0) {
		abs = cli_abspath(cfgpath);
		rc = cli_queue_submit(&o.q, kind, text, abs, o.out, &o.m, &env,
		    &m);
		free(abs);
	}
out:
	cli_models_fini(&m);
	free(dir);
	free(text);
	return rc;
}
