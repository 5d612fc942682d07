/* SPDX-License-Identifier: MIT */
/*
 * cmd-logs.c: "mergectl logs JOB [-f]": the job's log lines, as the
 * daemon kept them, each with its time and the job's owner; with -f,
 * then the lines still to come, until the job has ended.  Only the job's
 * owner (and root) may read them, which the daemon enforces.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>

#include "cli.h"
#include "xmalloc.h"

/* How often -f asks again: log lines come at a job's few events. */
#define LOGS_POLL_MS 500

/* Prints the lines from the index *shown on; returns 0 or an exit code. */
static int
logs_print(struct cli_conn *c, const struct cli_args *a, size_t *shown)
{
	const cJSON *lines, *times;
	const char *text;
	char when[32], *user, *line;
	struct tm tm;
	time_t t;
	size_t n, i;
	cJSON *req, *r;
	int rc;

	req = cli_new_request(c, PROTO_OP_LOGS);
	cJSON_AddNumberToObject(req, PROTO_F_JOB, (double)a->job);
	if ((r = cli_call(c, req, NULL, 0)) == NULL)
		return CLI_EXIT_DAEMON;
	if ((rc = cli_check_reply(r, a->json)) != 0)
		goto out;
	lines = cJSON_GetObjectItem(r, PROTO_F_LINES);
	times = cJSON_GetObjectItem(r, PROTO_F_TIMES);
	if (a->json) {
		cli_print_json(lines);
		goto out;
	}
	user = graph_text_printable(xstrdup(cli_json_str(r, PROTO_F_USER)));
	n = (size_t)cJSON_GetArraySize(lines);
	for (i = *shown; i < n; i++) {
		t = (time_t)cJSON_GetNumberValue(cJSON_GetArrayItem(times,
		    (int)i));
		when[0] = '\0';
		if (t > 0 && localtime_r(&t, &tm) != NULL)
			strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
		text = cJSON_GetStringValue(cJSON_GetArrayItem(lines,
		    (int)i));
		line = graph_text_printable(xstrdup(text ? text : ""));
		printf("%-19s %-8s job %llu: %s\n", when, user,
		    (unsigned long long)a->job, line);
		free(line);
	}
	fflush(stdout);
	*shown = n;
	free(user);
out:
	cJSON_Delete(r);
	return rc;
}

/* The job's state has one of the final names. */
static bool
logs_ended(struct cli_conn *c, uint64_t job)
{
	enum job_state s;
	cJSON *req, *r;
	bool ended = true;

	req = cli_new_request(c, PROTO_OP_STATUS);
	cJSON_AddNumberToObject(req, PROTO_F_JOB, (double)job);
	if ((r = cli_call(c, req, NULL, 0)) != NULL &&
	    cli_check_reply(r, true) == 0)
		ended = proto_state_parse(cli_json_str(cJSON_GetObjectItem(r,
		    PROTO_F_JOB), PROTO_F_STATE), &s) != 0 ||
		    proto_state_final(s);
	cJSON_Delete(r);
	return ended;
}

int
cli_cmd_logs(int argc, char **argv)
{
	struct timespec ts = { LOGS_POLL_MS / 1000,
	    (long)(LOGS_POLL_MS % 1000) * 1000000 };
	struct cli_args a;
	struct cli_conn c;
	size_t shown = 0;
	bool ended;
	int rc;

	if ((rc = cli_simple_args(argc, argv, "logs", CLI_ARGS_JOB |
	    CLI_ARGS_FOLLOW, &a)) != 0)
		return rc;
	if ((rc = cli_open(&c, a.socket, true)) != 0)
		return rc;
	rc = logs_print(&c, &a, &shown);
	/* Until the job has ended and its last lines are printed. */
	while (rc == 0 && a.follow && !a.json) {
		ended = logs_ended(&c, a.job);
		if ((rc = logs_print(&c, &a, &shown)) != 0 || ended)
			break;
		nanosleep(&ts, NULL);
	}
	cli_disconnect(&c);
	return rc;
}
