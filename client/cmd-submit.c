/* SPDX-License-Identifier: MIT */
/*
 * cmd-submit.c: "mergectl submit CONFIG -o OUT": queue a merge with the
 * daemon, starting a personal daemon if none answers.  Prints the job id
 * (or the job as JSON).  The daemon plans the job before accepting it,
 * so a config that cannot succeed is refused at once with every problem
 * (exit 3).  With --wait, watches the job and exits with its result.
 */
#include <sys/stat.h>

#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"
#include "mergeopts-json.h"
#include "opts.h"
#include "xmalloc.h"

enum {
	OPT_OUT = 'o',
	OPT_WAIT = OPT_OWN,
	OPT_NAME,
	OPT_PRIORITY,
	OPT_AFTER,
	OPT_SOCKET,
};

struct submit_opts {
	struct cli_merge_opts m;
	const char *out;
	const char *name;
	const char *socket;
	bool wait;
	int64_t priority;
	uint64_t after;
};

static void
submit_usage(FILE *fp)
{
	fprintf(fp, "usage: %s submit CONFIG -o OUT [options]\n"
	    "  -o, --out OUT          where the merged model goes\n"
	    "  --wait                 watch the job; exit with its result\n"
	    "  --name NAME            a name for the queue table (at most 200 "
	    "bytes)\n"
	    "  --priority N           among your own jobs, higher runs first\n"
	    "                         (-1000 to 1000, default 0; root's: "
	    "before everyone's)\n"
	    "  --after JOB            start only when JOB is done\n"
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
	    "  --socket PATH          the daemon's socket\n"
	    "  -q, --quiet            with --wait: no progress output\n"
	    "  --json                 print the job (or the error) as JSON\n"
	    "It takes mergekit-yaml's options as '%s run' does, but not those "
	    "that\nchoose threads or devices (-j, --cuda, --device, ...): the "
	    "daemon decides.\n", cli_progname, cli_progname);
}

static int
submit_parse(int argc, char **argv, struct submit_opts *o, char **cfg)
{
	static const struct option own[] = {
		{ "out", required_argument, NULL, OPT_OUT },
		{ "wait", no_argument, NULL, OPT_WAIT },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "priority", required_argument, NULL, OPT_PRIORITY },
		{ "after", required_argument, NULL, OPT_AFTER },
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct option *longopts = cli_merge_longopts(own);
	char *end;
	int c, rc = 0;

	memset(o, 0, sizeof *o);
	cli_merge_opts_default(&o->m);
	o->m.for_daemon = true;
	optind = 1;
	while (rc == 0 && (c = cli_getopt(argc, argv, "o:qhvj:",
	    longopts)) != -1) {
		switch (c) {
		case 'h':
			submit_usage(stdout);
			free(longopts);
			exit(CLI_EXIT_OK);
		case OPT_OUT:
			o->out = optarg;
			break;
		case OPT_WAIT:
			o->wait = true;
			break;
		case OPT_NAME:
			/* The daemon checks it too; saying so here is kinder. */
			if (!proto_name_valid(optarg)) {
				cli_usage_error("--name: 1 to %d bytes of text "
				    "without control characters (got %zu bytes)",
				    PROTO_MAX_NAME, strlen(optarg));
				rc = -1;
			}
			o->name = optarg;
			break;
		case OPT_SOCKET:
			o->socket = optarg;
			break;
		case OPT_PRIORITY:
			errno = 0;
			o->priority = strtoll(optarg, &end, 10);
			if (*end != '\0' || *optarg == '\0' || errno != 0 ||
			    o->priority < PROTO_PRIORITY_MIN ||
			    o->priority > PROTO_PRIORITY_MAX) {
				cli_usage_error("--priority: '%s' is not an "
				    "integer from %d to %d", optarg,
				    PROTO_PRIORITY_MIN, PROTO_PRIORITY_MAX);
				rc = -1;
			}
			break;
		case OPT_AFTER:
			o->after = strtoull(optarg, &end, 10);
			if (*end != '\0' || o->after == 0) {
				cli_usage_error("--after: not a job id");
				rc = -1;
			}
			break;
		default:
			if (c == '?' || cli_merge_opt(&o->m, c, optarg) != 0)
				rc = -1;
		}
	}
	free(longopts);
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

/* Absolute form of a path, for messages that outlive our directory. */
char *
cli_abspath(const char *p)
{
	char cwd[PATH_MAX];

	if (p[0] == '/' || getcwd(cwd, sizeof cwd) == NULL)
		return xstrdup(p);
	return xasprintf("%s/%s", cwd, p);
}

static cJSON *
submit_request(struct cli_conn *c, const struct submit_opts *o,
    const char *text, const char *cfgpath, const struct graph_env *env)
{
	cJSON *req = cli_new_request(c, PROTO_OP_SUBMIT);
	char *abs;

	cJSON_AddStringToObject(req, PROTO_F_CONFIG, text);
	abs = cli_abspath(cfgpath);
	cJSON_AddStringToObject(req, PROTO_F_CONFIG_NAME, abs);
	free(abs);
	cJSON_AddStringToObject(req, PROTO_F_CWD, env->cwd ? env->cwd : "");
	abs = cli_abspath(o->out);
	cJSON_AddStringToObject(req, PROTO_F_OUT, abs);
	free(abs);
	if (o->name != NULL)
		cJSON_AddStringToObject(req, PROTO_F_NAME, o->name);
	cJSON_AddNumberToObject(req, PROTO_F_PRIORITY, (double)o->priority);
	if (o->after != 0)
		cJSON_AddNumberToObject(req, PROTO_F_AFTER, (double)o->after);
	mergeopts_to_json(&o->m.merge, req);
	return req;
}

/*
 * A daemon that runs as a team user writes outputs as itself, readable
 * by its group whatever the submitter's umask: a user whose umask keeps
 * files from the group is told so, plainly, before the job is queued.
 */
static void
submit_privacy_note(const struct cli_conn *c, const char *out)
{
	struct passwd *pw;
	mode_t m = umask(022);

	umask(m);
	if (c->daemon_uid <= 0 || c->daemon_uid == (int64_t)getuid() ||
	    !(m & 040))
		return;
	pw = getpwuid((uid_t)c->daemon_uid);
	fprintf(stderr, "%s: note: merged runs as user %s and writes %s as "
	    "itself: it will be readable by that user's group whatever your "
	    "umask (%03o); a daemon run as root writes outputs as you "
	    "(docs/security.md)\n", cli_progname, pw != NULL ? pw->pw_name :
	    "?", out, (unsigned)m);
}

int
cli_cmd_submit(int argc, char **argv)
{
	struct submit_opts o;
	struct cli_models m;
	struct graph_env env;
	struct cli_conn c;
	char *cfgpath, *text = NULL;
	uint64_t id = 0;
	size_t len;
	cJSON *req, *r;
	int rc;

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
	if ((rc = cli_models_open(&m, text, len, cfgpath, &env, o.out)) != 0)
		goto out;
	if ((rc = cli_open(&c, o.socket, true)) != 0)
		goto out;
	submit_privacy_note(&c, o.out);
	req = submit_request(&c, &o, text, cfgpath, &env);
	cli_models_request(&m, req);
	r = cli_call(&c, req, m.fds, m.nfds);
	rc = r == NULL ? CLI_EXIT_DAEMON : cli_check_reply(r, o.m.json);
	if (rc == 0) {
		msg_get_u64(cJSON_GetObjectItem(r, PROTO_F_JOB), PROTO_F_ID,
		    &id);
		if (o.m.json)
			cli_print_json(cJSON_GetObjectItem(r, PROTO_F_JOB));
		else
			printf("%llu\n", (unsigned long long)id);
		fflush(stdout);
	}
	cJSON_Delete(r);
	if (rc == 0 && o.wait)
		rc = cli_watch(&c, id, o.m.json, o.m.quiet);
	cli_disconnect(&c);
out:
	cli_models_fini(&m);
	free(text);
	return rc;
}
