/* SPDX-License-Identifier: MIT */
/*
 * queue.c: what every submit shares, a merge's (cmd-submit.c) or an
 * extraction's (mergectl submit --extract-lora, cmd-extract.c): the
 * queue's options (--wait, --name, --priority, --after, --on-done,
 * --socket) and
 * the submit itself: the request sent with the descriptors of the models
 * and the output, the job printed, and with --wait followed to its end.
 */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"
#include "cmdline.h"
#include "mergeopts-json.h"
#include "opts.h"
#include "xmalloc.h"

const struct option cli_queue_longopts[] = {
	{ "wait", no_argument, NULL, OPT_Q_WAIT },
	{ "name", required_argument, NULL, OPT_Q_NAME },
	{ "priority", required_argument, NULL, OPT_Q_PRIORITY },
	{ "after", required_argument, NULL, OPT_Q_AFTER },
	{ "socket", required_argument, NULL, OPT_Q_SOCKET },
	{ "on-done", required_argument, NULL, OPT_Q_ON_DONE },
	{ NULL, 0, NULL, 0 },
};

void
cli_queue_usage(FILE *fp)
{
	fprintf(fp,
	    "  --wait                 watch the job; exit with its result\n"
	    "  --name NAME            a name for the queue table (at most 200 "
	    "bytes)\n"
	    "  --priority N           among your own jobs, higher runs first\n"
	    "                         (-1000 to 1000, default 0; root's: "
	    "before everyone's)\n"
	    "  --after JOB            start only when JOB is done\n"
	    "  --on-done CMD          when the job ends (done, failed or "
	    "cancelled), run CMD\n"
	    "                         as you, without a shell, with "
	    "MERGED_JOB_ID, _STATE,\n"
	    "                         _OUTPUT... in its environment "
	    "(mergectl(1))\n"
	    "  --socket PATH          the daemon's socket\n");
}

int
cli_queue_opt(struct cli_queue_opts *q, int c, const char *arg)
{
	char *end, **words, *cause = NULL;
	size_t n;

	switch (c) {
	case OPT_Q_WAIT:
		q->wait = true;
		return 1;
	case OPT_Q_NAME:
		/* The daemon checks it too; saying so here is kinder. */
		if (!proto_name_valid(arg)) {
			cli_usage_error("--name: 1 to %d bytes of text without "
			    "control characters (got %zu bytes)",
			    PROTO_MAX_NAME, strlen(arg));
			return -1;
		}
		q->name = arg;
		return 1;
	case OPT_Q_SOCKET:
		q->socket = arg;
		return 1;
	case OPT_Q_PRIORITY:
		errno = 0;
		q->priority = strtoll(arg, &end, 10);
		if (*end != '\0' || *arg == '\0' || errno != 0 ||
		    q->priority < PROTO_PRIORITY_MIN ||
		    q->priority > PROTO_PRIORITY_MAX) {
			cli_usage_error("--priority: '%s' is not an integer "
			    "from %d to %d", arg, PROTO_PRIORITY_MIN,
			    PROTO_PRIORITY_MAX);
			return -1;
		}
		return 1;
	case OPT_Q_ON_DONE:
		if (cmdline_split(arg, &words, &n, &cause) != 0) {
			cli_usage_error("--on-done: %s", cause);
			free(cause);
			return -1;
		}
		cmdline_free(words);
		q->on_done = arg;
		return 1;
	case OPT_Q_AFTER:
		q->after = strtoull(arg, &end, 10);
		if (*end != '\0' || q->after == 0) {
			cli_usage_error("--after: not a job id");
			return -1;
		}
		return 1;
	}
	return 0;
}

/*
 * The hook's words, as the daemon runs them from "/": a program given by
 * a relative path ("./notify") is made absolute here, where it means
 * something; a bare name is looked up in the hook's PATH.  The option
 * was checked when it was read.
 */
static void
cli_queue_on_done(cJSON *req, const char *cmd)
{
	char **words, *cause = NULL, *prog;
	const char *rel;
	cJSON *a;
	size_t n, i;

	if (cmdline_split(cmd, &words, &n, &cause) != 0) {
		free(cause);
		return;
	}
	a = cJSON_AddArrayToObject(req, PROTO_F_ON_DONE);
	for (i = 0; i < n; i++) {
		rel = words[0];
		while (strncmp(rel, "./", 2) == 0)
			rel += 2;
		prog = i == 0 && strchr(words[0], '/') != NULL ?
		    cli_abspath(rel) : xstrdup(words[i]);
		cJSON_AddItemToArray(a, cJSON_CreateString(prog));
		free(prog);
	}
	cmdline_free(words);
}

/* a's entries, then b's, then the end; the caller frees it. */
struct option *
cli_longopts_cat(const struct option *a, const struct option *b)
{
	size_t na = 0, nb = 0;
	struct option *v;

	while (a[na].name != NULL)
		na++;
	while (b[nb].name != NULL)
		nb++;
	v = xcalloc(na + nb + 1, sizeof *v);
	memcpy(v, a, na * sizeof *v);
	memcpy(v + na, b, nb * sizeof *v);
	return v;
}

/* Absolute form of a path, for messages that outlive our directory. */
char *
cli_abspath(const char *p)
{
	char cwd[4096];

	if (p[0] == '/' || getcwd(cwd, sizeof cwd) == NULL)
		return xstrdup(p);
	return xasprintf("%s/%s", cwd, p);
}

/*
 * A daemon that runs as a team user writes outputs as itself, readable
 * by its group whatever the submitter's umask: a user whose umask keeps
 * files from the group is told so, plainly, before the job is queued.
 */
static void
cli_privacy_note(const struct cli_conn *c, const char *out)
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

/*
 * Submits a job of kind: its config text and config_name, the queue's
 * options, the merge options and m's descriptors.  Prints the job's id
 * (or the job as JSON), then with --wait follows it.  Returns an exit
 * code.
 */
int
cli_queue_submit(const struct cli_queue_opts *q, enum job_kind kind,
    const char *text, const char *config_name, const char *out,
    const struct cli_merge_opts *mo, const struct graph_env *env,
    struct cli_models *m)
{
	struct cli_conn c;
	uint64_t id = 0;
	cJSON *req, *r, *w;
	char *abs;
	int rc;

	if ((rc = cli_open(&c, q->socket, true)) != 0)
		return rc;
	cli_privacy_note(&c, out);
	req = cli_new_request(&c, PROTO_OP_SUBMIT);
	if (kind != JOB_KIND_MERGE)
		cJSON_AddStringToObject(req, PROTO_F_KIND,
		    proto_kind_name(kind));
	cJSON_AddStringToObject(req, PROTO_F_CONFIG, text);
	cJSON_AddStringToObject(req, PROTO_F_CONFIG_NAME, config_name);
	cJSON_AddStringToObject(req, PROTO_F_CWD, env->cwd ? env->cwd : "");
	abs = cli_abspath(out);
	cJSON_AddStringToObject(req, PROTO_F_OUT, abs);
	free(abs);
	if (q->name != NULL)
		cJSON_AddStringToObject(req, PROTO_F_NAME, q->name);
	cJSON_AddNumberToObject(req, PROTO_F_PRIORITY, (double)q->priority);
	if (q->after != 0)
		cJSON_AddNumberToObject(req, PROTO_F_AFTER, (double)q->after);
	if (q->on_done != NULL)
		cli_queue_on_done(req, q->on_done);
	mergeopts_to_json(&mo->merge, req);
	cli_models_request(m, req);
	r = cli_call(&c, req, m->fds, m->nfds);
	rc = r == NULL ? CLI_EXIT_DAEMON : cli_check_reply(r, mo->json);
	if (rc == 0) {
		cJSON_ArrayForEach(w, cJSON_GetObjectItem(r, PROTO_F_WARNINGS))
			if (cJSON_IsString(w))
				fprintf(stderr, "%s\n", w->valuestring);
		msg_get_u64(cJSON_GetObjectItem(r, PROTO_F_JOB), PROTO_F_ID,
		    &id);
		if (mo->json)
			cli_print_json(cJSON_GetObjectItem(r, PROTO_F_JOB));
		else
			printf("%llu\n", (unsigned long long)id);
		fflush(stdout);
	}
	cJSON_Delete(r);
	if (rc == 0 && q->wait)
		rc = cli_watch(&c, id, mo->json, mo->quiet);
	cli_disconnect(&c);
	return rc;
}
