/* SPDX-License-Identifier: MIT */
/*
 * cmd-watch.c: "mergectl watch JOB": live progress until the job ends,
 * then exit with its result (0 done, 1 failed, 8 cancelled, 9
 * interrupted).  While the job is queued, why it waits (the daemon's
 * reason); then one line fitted to the terminal (progress.c), plain
 * lines otherwise; at the end one line with the result, the output, its
 * size and the time taken.  With --json, one JSON object per event, each
 * with the job's id at its top ("job_id"; "id" is the request's).  Also
 * used by "submit --wait".
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "cli.h"

static uint64_t
num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsNumber(v) && v->valuedouble > 0 ?
	    (uint64_t)v->valuedouble : 0;
}

static double
fnum(const cJSON *o, const char *k, double def)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsNumber(v) ? v->valuedouble : def;
}

/* The job's progress; its memory is its own working set. */
static void
watch_progress(const cJSON *j, struct graph_progress *g)
{
	memset(g, 0, sizeof *g);
	g->bytes_total = num(j, PROTO_F_BYTES_TOTAL);
	g->bytes_done = num(j, PROTO_F_BYTES_DONE);
	g->tensors_total = (size_t)num(j, PROTO_F_TENSORS_TOTAL);
	g->tensors_done = (size_t)num(j, PROTO_F_TENSORS_DONE);
	g->shards_total = (size_t)num(j, PROTO_F_SHARDS_TOTAL);
	g->shards_done = (size_t)num(j, PROTO_F_SHARDS_DONE);
	g->job_memory = num(j, PROTO_F_MEMORY);
}

/*
 * The exit code of a job that ended in a final state: the one table.
 * Any other state, and a name this mergectl does not know (a newer
 * daemon's), exits as a failure.
 */
static const struct {
	enum job_state state;
	int code;
} watch_exits[] = {
	{ JOB_DONE, CLI_EXIT_OK },
	{ JOB_CANCELLED, CLI_EXIT_CANCELLED },
	{ JOB_INTERRUPTED, CLI_EXIT_JOB_INTERRUPTED },
};

static int
watch_exit(const char *state)
{
	enum job_state s;
	size_t i;

	if (state == NULL || proto_state_parse(state, &s) != 0)
		return CLI_EXIT_FAILED;
	for (i = 0; i < sizeof watch_exits / sizeof *watch_exits; i++)
		if (watch_exits[i].state == s)
			return watch_exits[i].code;
	return CLI_EXIT_FAILED;
}

/* The closing line: the result, the output, its size, the time. */
static int
watch_result(uint64_t job, const char *state, const cJSON *j, bool json,
    bool quiet)
{
	const char *err = cJSON_GetStringValue(cJSON_GetObjectItem(j,
	    PROTO_F_ERROR));
	const char *out = cJSON_GetStringValue(cJSON_GetObjectItem(j,
	    PROTO_F_OUT));
	char took[32], *size;
	int rc = watch_exit(state);

	if (json)
		return rc;
	cli_format_duration(took, sizeof took, fnum(j, PROTO_F_ELAPSED, 0));
	if (rc == CLI_EXIT_OK) {
		if (!quiet) {
			size = graph_format_size(num(j, PROTO_F_BYTES_TOTAL));
			fprintf(stderr, "%s: job %" PRIu64 " done: %s, %s in "
			    "%s\n", cli_progname, job, out ? out : "(output "
			    "not shown: not your job)", size, took);
			free(size);
		}
		return rc;
	}
	/* Any other end is said, with its reason, even with -q. */
	fprintf(stderr, "%s: job %" PRIu64 " %s%s%s (after %s)\n", cli_progname,
	    job, state, err ? ": " : "", err ? err : "", took);
	return rc;
}

int
cli_watch(struct cli_conn *c, uint64_t job, bool json, bool quiet)
{
	struct cli_progress p;
	struct graph_progress g;
	const char *ev, *state, *why;
	uint64_t id, got;
	cJSON *req, *r, *j;
	int rc;

	req = cli_new_request(c, PROTO_OP_WATCH);
	msg_get_u64(req, PROTO_F_ID, &id);
	cJSON_AddNumberToObject(req, PROTO_F_JOB, (double)job);
	if ((r = cli_call(c, req, NULL, 0)) == NULL)
		return CLI_EXIT_DAEMON;
	if ((rc = cli_check_reply(r, json)) != 0) {
		cJSON_Delete(r);
		return rc;
	}
	cJSON_Delete(r);
	cli_progress_init(&p, quiet || json);
	for (;;) {
		/* Merges take as long as they take: no timeout here. */
		if ((r = cli_recv(c, -1)) == NULL)
			return CLI_EXIT_DAEMON;
		if (!msg_get_u64(r, PROTO_F_ID, &got) || got != id ||
		    !msg_get_str(r, PROTO_F_EVENT, &ev)) {
			cJSON_Delete(r);
			continue;
		}
		j = cJSON_GetObjectItem(r, PROTO_F_JOB);
		if (json) {
			cJSON_AddNumberToObject(r, "job_id", (double)job);
			cli_print_json(r);
		}
		watch_progress(j, &g);
		state = cJSON_GetStringValue(cJSON_GetObjectItem(j,
		    PROTO_F_STATE));
		if (strcmp(ev, PROTO_EV_DONE) == 0) {
			cli_progress_job(&p, &g, fnum(j, PROTO_F_ELAPSED, 0),
			    -2, true);
			cli_progress_end(&p);
			cli_progress_fini(&p);
			rc = watch_result(job, cJSON_GetStringValue(
			    cJSON_GetObjectItem(r, PROTO_F_STATE)), j, json,
			    quiet);
			cJSON_Delete(r);
			return rc;
		}
		why = cli_json_str(j, PROTO_F_REASON);
		if (state != NULL && (strcmp(state, proto_state_name(
		    JOB_QUEUED)) == 0 || *why != '\0'))
			cli_progress_wait(&p, job, state, (uint64_t)fnum(j,
			    PROTO_F_POSITION, 0), why);
		else
			cli_progress_job(&p, &g, fnum(j, PROTO_F_ELAPSED, 0),
			    fnum(j, PROTO_F_ETA, -1), false);
		cJSON_Delete(r);
	}
}

int
cli_cmd_watch(int argc, char **argv)
{
	struct cli_args a;
	struct cli_conn c;
	int rc;

	if ((rc = cli_simple_args(argc, argv, "watch", CLI_ARGS_JOB,
	    &a)) != 0)
		return rc;
	if ((rc = cli_open(&c, a.socket, true)) != 0)
		return rc;
	rc = cli_watch(&c, a.job, a.json, a.quiet);
	cli_disconnect(&c);
	return rc;
}
