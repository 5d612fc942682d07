/* SPDX-License-Identifier: MIT */
/*
 * cmd-jobs.c: the commands that look at jobs: "list" (the queue table),
 * "status [JOB]", "logs JOB", "cancel JOB", and their shared argument
 * parsing.  Everyone sees the queue; paths, errors and logs of a job only
 * its owner (and root) see, which the daemon enforces.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"

void
cli_print_json(const cJSON *v)
{
	char *s = cJSON_PrintUnformatted(v);

	printf("%s\n", s);
	cJSON_free(s);
}

/* [--socket PATH] [--json] [JOB]; returns 0 or an exit code. */
int
cli_simple_args(int argc, char **argv, const char *what, int need_job,
    struct cli_args *a)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	int c;

	memset(a, 0, sizeof *a);
	optind = 1;
	while ((c = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			a->socket = optarg;
			break;
		case 'j':
			a->json = true;
			break;
		case 'q':
			a->quiet = true;
			break;
		case 'h':
			printf("usage: %s %s [--socket PATH] [--json]%s\n",
			    cli_progname, what, need_job == 1 ? " JOB" :
			    need_job == 2 ? " [JOB]" : "");
			exit(CLI_EXIT_OK);
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (argc - optind > (need_job ? 1 : 0) || (need_job == 1 &&
	    argc - optind != 1)) {
		cli_usage_error("usage: %s %s%s", cli_progname, what,
		    need_job == 1 ? " JOB" : need_job == 2 ? " [JOB]" : "");
		return CLI_EXIT_USAGE;
	}
	if (argc - optind == 1) {
		a->job = strtoull(argv[optind], &end, 10);
		if (*end != '\0' || a->job == 0) {
			cli_usage_error("'%s' is not a job id", argv[optind]);
			return CLI_EXIT_USAGE;
		}
	}
	return 0;
}

static void
fmt_secs(char *buf, size_t len, double s)
{
	if (s < 0)
		snprintf(buf, len, "-");
	else if (s < 60)
		snprintf(buf, len, "%.0fs", s);
	else if (s < 3600)
		snprintf(buf, len, "%ldm%02lds", (long)s / 60, (long)s % 60);
	else
		snprintf(buf, len, "%.1fh", s / 3600);
}

static double
num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *
str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsString(v) ? v->valuestring : "";
}

static void
table_row(const cJSON *j)
{
	char el[48], eta[48], *done, *total, *mem;

	fmt_secs(el, sizeof el, num(j, "elapsed"));
	fmt_secs(eta, sizeof eta, num(j, "eta"));
	done = graph_format_size((uint64_t)num(j, "bytes_done"));
	total = graph_format_size((uint64_t)num(j, "bytes_total"));
	mem = graph_format_size((uint64_t)num(j, "memory"));
	printf("%5.0f  %-10.10s %-20.20s %-11s %4.0f%%  %10s / %-10s %9s "
	    "%8s %8s\n", num(j, "id"), str(j, "user"), str(j, "name"),
	    str(j, "state"), 100 * num(j, "progress"), done, total, mem, el,
	    eta);
	free(done);
	free(total);
	free(mem);
}

int
cli_cmd_list(int argc, char **argv)
{
	struct cli_args a;
	struct cli_conn c;
	const cJSON *j;
	cJSON *r;
	int rc;

	if ((rc = cli_simple_args(argc, argv, "list", 0, &a)) != 0)
		return rc;
	if ((rc = cli_open(&c, a.socket, false)) != 0)
		return rc;
	r = cli_call(&c, cli_new_request(&c, "list"), NULL, 0);
	if (r == NULL || (rc = cli_check_reply(r, a.json)) != 0) {
		cJSON_Delete(r);
		cli_disconnect(&c);
		return r == NULL ? CLI_EXIT_DAEMON : rc;
	}
	if (a.json) {
		cli_print_json(cJSON_GetObjectItem(r, "jobs"));
	} else {
		printf("%5s  %-10s %-20s %-11s %5s  %23s %9s %8s %8s\n", "ID",
		    "OWNER", "NAME", "STATE", "DONE", "BYTES", "MEMORY",
		    "ELAPSED", "ETA");
		cJSON_ArrayForEach(j, cJSON_GetObjectItem(r, "jobs"))
			table_row(j);
	}
	cJSON_Delete(r);
	cli_disconnect(&c);
	return 0;
}

static void
status_print(const cJSON *j)
{
	static const char *const keys[] = { "out", "config_name", "error" };
	size_t i;

	table_row(j);
	for (i = 0; i < sizeof keys / sizeof *keys; i++)
		if (*str(j, keys[i]) != '\0')
			printf("       %-12s %s\n", keys[i], str(j, keys[i]));
	if (cJSON_GetObjectItem(j, "seed") != NULL)
		printf("       %-12s %.0f\n       %-12s %.0f/%.0f\n", "seed",
		    num(j, "seed"), "shards", num(j, "shards_done"),
		    num(j, "shards_total"));
}

/* "status" without a job is the queue table. */
int
cli_cmd_status(int argc, char **argv)
{
	struct cli_args a;
	struct cli_conn c;
	cJSON *req, *r;
	int rc;

	if ((rc = cli_simple_args(argc, argv, "status", 2, &a)) != 0)
		return rc;
	if (a.job == 0)
		return cli_cmd_list(argc, argv);
	if ((rc = cli_open(&c, a.socket, false)) != 0)
		return rc;
	req = cli_new_request(&c, "status");
	cJSON_AddNumberToObject(req, "job", (double)a.job);
	r = cli_call(&c, req, NULL, 0);
	if (r != NULL && (rc = cli_check_reply(r, a.json)) == 0) {
		if (a.json)
			cli_print_json(cJSON_GetObjectItem(r, "job"));
		else
			status_print(cJSON_GetObjectItem(r, "job"));
	}
	cJSON_Delete(r);
	cli_disconnect(&c);
	return r == NULL ? CLI_EXIT_DAEMON : rc;
}

int
cli_cmd_logs(int argc, char **argv)
{
	struct cli_args a;
	struct cli_conn c;
	const cJSON *l;
	cJSON *req, *r;
	int rc;

	if ((rc = cli_simple_args(argc, argv, "logs", 1, &a)) != 0)
		return rc;
	if ((rc = cli_open(&c, a.socket, false)) != 0)
		return rc;
	req = cli_new_request(&c, "logs");
	cJSON_AddNumberToObject(req, "job", (double)a.job);
	r = cli_call(&c, req, NULL, 0);
	if (r != NULL && (rc = cli_check_reply(r, a.json)) == 0) {
		if (a.json)
			cli_print_json(cJSON_GetObjectItem(r, "lines"));
		else
			cJSON_ArrayForEach(l, cJSON_GetObjectItem(r, "lines"))
				printf("%s\n", cJSON_GetStringValue(l));
	}
	cJSON_Delete(r);
	cli_disconnect(&c);
	return r == NULL ? CLI_EXIT_DAEMON : rc;
}
