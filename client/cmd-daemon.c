/* SPDX-License-Identifier: MIT */
/*
 * cmd-daemon.c: "mergectl daemon start|stop|status" for the personal
 * daemon (or the one at --socket).  start returns once it answers; stop
 * asks it to drain (running jobs are interrupted with their finished
 * shards kept, for "mergectl resume") and waits until its socket is gone;
 * status exits 0 when a daemon answers and 5 when none does.
 */
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>

#include "cli.h"

/* Who and where the daemon is, a line each (a newer daemon's fields). */
static void
daemon_about(const cJSON *d)
{
	const cJSON *by = cJSON_GetObjectItem(d, PROTO_F_BY_STATE), *s;
	char up[32];
	bool first = true;

	if (cJSON_GetObjectItem(d, PROTO_F_PID) == NULL)
		return;	/* an older daemon: the line above is all */
	cli_format_duration(up, sizeof up, cli_json_num(d, PROTO_F_UPTIME));
	printf("  version     %s (%s), pid %.0f, up %s\n",
	    cli_json_str(d, PROTO_F_SERVER), cli_json_str(d, PROTO_F_MODE),
	    cli_json_num(d, PROTO_F_PID), up);
	printf("  socket      %s\n", cli_json_str(d, PROTO_F_SOCKET));
	if (*cli_json_str(d, PROTO_F_HTTP) != '\0')
		printf("  web         %s\n", cli_json_str(d, PROTO_F_HTTP));
	printf("  state       %s\n", cli_json_str(d, PROTO_F_STATE_DIR));
	printf("  log         %s\n", *cli_json_str(d, PROTO_F_LOG) ?
	    cli_json_str(d, PROTO_F_LOG) : "(not known)");
	printf("  jobs        ");
	cJSON_ArrayForEach(s, by) {
		printf("%s%.0f %s", first ? "" : ", ", s->valuedouble,
		    s->string);
		first = false;
	}
	printf("; at most %.0f running at once\n", cli_json_num(d,
	    PROTO_F_MAX_RUNNING));
}

static int
daemon_status(struct cli_args *a)
{
	struct cli_conn c;
	const cJSON *d;
	cJSON *req, *r;
	uint64_t running = 0, queued = 0;
	char *b, *u, *k;
	int rc;

	if ((rc = cli_open(&c, a->socket, false)) != 0)
		return rc;
	/* The figures come with every page; one job is the least page. */
	req = cli_new_request(&c, PROTO_OP_LIST);
	cJSON_AddNumberToObject(req, PROTO_F_LIMIT, 1);
	r = cli_call(&c, req, NULL, 0);
	if (r != NULL && (rc = cli_check_reply(r, a->json)) == 0) {
		d = cJSON_GetObjectItem(r, PROTO_F_DAEMON);
		msg_get_u64(d, PROTO_F_RUNNING, &running);
		msg_get_u64(d, PROTO_F_QUEUED, &queued);
		cJSON_AddNumberToObject((cJSON *)d, PROTO_F_JOBS_QUEUED,
		    (double)queued);
		if (a->json) {
			cli_print_json(d);
		} else {
			b = graph_format_size((uint64_t)cJSON_GetNumberValue(
			    cJSON_GetObjectItem(d, PROTO_F_MEMORY_BUDGET)));
			u = graph_format_size((uint64_t)cJSON_GetNumberValue(
			    cJSON_GetObjectItem(d, PROTO_F_MEMORY_USED)));
			k = graph_format_size((uint64_t)cJSON_GetNumberValue(
			    cJSON_GetObjectItem(d, PROTO_F_CACHED_BYTES)));
			printf("merged is running: %llu jobs running, %llu "
			    "queued; memory %s of %s (%s of decoded inputs "
			    "cached, %.0f hits, %.0f misses)\n",
			    (unsigned long long)running,
			    (unsigned long long)queued,
			    u, b, k, cJSON_GetNumberValue(cJSON_GetObjectItem(d,
			    PROTO_F_CACHE_HITS)), cJSON_GetNumberValue(
			    cJSON_GetObjectItem(d, PROTO_F_CACHE_MISSES)));
			daemon_about(d);
			free(b);
			free(u);
			free(k);
		}
	}
	cJSON_Delete(r);
	cli_disconnect(&c);
	return r == NULL ? CLI_EXIT_DAEMON : rc;
}

static int
daemon_stop(struct cli_args *a)
{
	struct timespec ts = { 0, 50000000 };
	struct cli_conn c;
	struct stat st;
	char *path;
	cJSON *r;
	int rc, i;

	if ((rc = cli_open(&c, a->socket, false)) != 0)
		return rc;
	r = cli_call(&c, cli_new_request(&c, PROTO_OP_SHUTDOWN), NULL, 0);
	rc = r == NULL ? CLI_EXIT_DAEMON : cli_check_reply(r, a->json);
	cJSON_Delete(r);
	cli_disconnect(&c);
	if (rc != 0)
		return rc;
	/* It removes its socket when it stops accepting. */
	path = cli_socket_path(a->socket);
	for (i = 0; i < 600 && stat(path, &st) == 0; i++)
		nanosleep(&ts, NULL);
	free(path);
	if (!a->quiet && !a->json)
		printf("merged stopped\n");
	return 0;
}

int
cli_cmd_daemon(int argc, char **argv)
{
	struct cli_args a;
	struct cli_conn c;
	const char *sub;
	int rc;

	if (argc < 2) {
		cli_usage_error("daemon needs start, stop or status; '%s daemon "
		    "--help' says more", cli_progname);
		return CLI_EXIT_USAGE;
	}
	sub = argv[1];
	if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
		printf("usage: %s daemon start|stop|status [--socket PATH] "
		    "[--json] [-q]\n"
		    "the personal daemon (or the one at --socket)\n\n"
		    "  start          start your personal daemon unless one "
		    "answers (submit does\n"
		    "                 this too)\n"
		    "  stop           stop it: running jobs are interrupted, to "
		    "be resumed\n"
		    "  status         whether it answers, its jobs and its "
		    "memory\n"
		    "  --socket PATH  the daemon's socket (default: "
		    "$MERGED_SOCKET, else your\n"
		    "                 personal daemon's)\n"
		    "  --json         print the reply (or the error) as JSON\n"
		    "  -q, --quiet    fewer messages\n", cli_progname);
		return CLI_EXIT_OK;
	}
	if ((rc = cli_simple_args(argc - 1, argv + 1, "daemon", 0,
	    &a)) != 0)
		return rc;
	if (strcmp(sub, "status") == 0)
		return daemon_status(&a);
	if (strcmp(sub, "stop") == 0)
		return daemon_stop(&a);
	if (strcmp(sub, "start") == 0) {
		if ((rc = cli_open(&c, a.socket, true)) != 0)
			return rc;
		cli_disconnect(&c);
		if (!a.quiet && !a.json)
			printf("merged is running\n");
		return 0;
	}
	cli_usage_error("unknown daemon command '%s' (start, stop, status)",
	    sub);
	return CLI_EXIT_USAGE;
}
