/* SPDX-License-Identifier: MIT */
/*
 * cmd-jobs.c: the commands that look at jobs: "list" (the queue table),
 * "status [JOB]", "logs JOB", and their shared argument parsing.  The
 * daemon sends the queue a page at a time, newest first: the table shows
 * every job yet to finish and the latest page of finished ones, or with
 * --all every page.  Everyone sees the queue; paths, errors and logs of a job only
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
#include "xmalloc.h"

void
cli_print_json(const cJSON *v)
{
	char *s = cJSON_PrintUnformatted(v);

	printf("%s\n", s);
	cJSON_free(s);
}

/*
 * [--socket PATH] [--json] [--all] [JOB]; need_job is 0 (no JOB), 1 (a
 * JOB) or 2 (an optional one), with CLI_ARGS_ALL when --all is taken.
 * Returns 0 or an exit code.
 */
int
cli_simple_args(int argc, char **argv, const char *what, int need_job,
    struct cli_args *a)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "all", no_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool allow_all = (need_job & CLI_ARGS_ALL) != 0;
	const char *usage;
	char *end;
	int c;

	need_job &= ~CLI_ARGS_ALL;
	usage = need_job == 1 ? " JOB" : need_job == 2 ? " [JOB]" : "";
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
		case 'a':
			if (!allow_all) {
				cli_usage_error("%s takes no --all", what);
				return CLI_EXIT_USAGE;
			}
			a->all = true;
			break;
		case 'h':
			printf("usage: %s %s [--socket PATH] [--json]%s%s\n",
			    cli_progname, what, allow_all ? " [--all]" : "",
			    usage);
			exit(CLI_EXIT_OK);
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (argc - optind > (need_job ? 1 : 0) || (need_job == 1 &&
	    argc - optind != 1)) {
		cli_usage_error("usage: %s %s%s", cli_progname, what, usage);
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
	char el[48], eta[48], *done, *total, *mem, *user, *name;

	/* A store from before names were checked may hold escapes. */
	user = graph_text_printable(xstrdup(str(j, "user")));
	name = graph_text_printable(xstrdup(str(j, "name")));
	fmt_secs(el, sizeof el, num(j, "elapsed"));
	fmt_secs(eta, sizeof eta, num(j, "eta"));
	done = graph_format_size((uint64_t)num(j, "bytes_done"));
	total = graph_format_size((uint64_t)num(j, "bytes_total"));
	mem = graph_format_size((uint64_t)num(j, "memory"));
	printf("%5.0f  %-10.10s %-20.20s %-11s %4.0f%%  %10s / %-10s %9s "
	    "%8s %8s\n", num(j, "id"), user, name, str(j, "state"),
	    100 * num(j, "progress"), done, total, mem, el, eta);
	free(user);
	free(name);
	free(done);
	free(total);
	free(mem);
}

/*
 * Fetches the pages of the queue whose jobs are in states (NULL: any),
 * newest page first, and returns their jobs in one array, in id order;
 * every page with all, else only the first, *more saying whether older
 * jobs were left.  Returns NULL after printing the error, *rc its exit
 * code.
 */
static cJSON *
jobs_fetch(struct cli_conn *c, const char *const *states, bool all,
    bool json, bool *more, int *rc)
{
	cJSON **pages = NULL, *req, *r, *out = NULL, *j;
	size_t np = 0, i;
	uint64_t before = 0, last;
	bool again;

	*more = false;
	do {
		req = cli_new_request(c, "list");
		if (states != NULL)
			cJSON_AddItemToObject(req, "states",
			    cJSON_CreateStringArray(states, 3));
		if (before != 0)
			cJSON_AddNumberToObject(req, "before", (double)before);
		r = cli_call(c, req, NULL, 0);
		if (r == NULL || (*rc = cli_check_reply(r, json)) != 0) {
			*rc = r == NULL ? CLI_EXIT_DAEMON : *rc;
			cJSON_Delete(r);
			goto out;
		}
		/* The cursor only goes down: a daemon cannot loop us. */
		last = before;
		again = cJSON_IsTrue(cJSON_GetObjectItem(r, "more")) &&
		    msg_get_u64(r, "before", &before) && (last == 0 ||
		    before < last);
		pages = xreallocarray(pages, np + 1, sizeof *pages);
		pages[np++] = cJSON_DetachItemFromObject(r, "jobs");
		cJSON_Delete(r);
	} while (again && all);
	*more = again;
	/* Pages came newest first, each in id order. */
	out = cJSON_CreateArray();
	for (i = np; i-- > 0;)
		while ((j = cJSON_DetachItemFromArray(pages[i], 0)) != NULL)
			cJSON_AddItemToArray(out, j);
	*rc = 0;
out:
	for (i = 0; i < np; i++)
		cJSON_Delete(pages[i]);
	free(pages);
	return out;
}

/* Moves the jobs of a and b, both in id order, into one, in id order. */
static cJSON *
jobs_merge(cJSON *a, cJSON *b)
{
	cJSON *out = cJSON_CreateArray(), *x, *y, *from;
	uint64_t ia, ib;

	for (;;) {
		x = cJSON_GetArrayItem(a, 0);
		y = cJSON_GetArrayItem(b, 0);
		if (x == NULL && y == NULL)
			break;
		from = x == NULL ? b : y == NULL ? a :
		    msg_get_u64(x, "id", &ia) && msg_get_u64(y, "id", &ib) &&
		    ib < ia ? b : a;
		cJSON_AddItemToArray(out, cJSON_DetachItemFromArray(from, 0));
	}
	cJSON_Delete(a);
	cJSON_Delete(b);
	return out;
}

/*
 * The queue as "status" shows it: every job still to finish (queued,
 * running, interrupted), whatever their number, and the most recent
 * finished ones, a page of them; with all, every job.
 */
static cJSON *
jobs_queue(struct cli_conn *c, bool all, bool json, bool *more, int *rc)
{
	static const char *const active[] = { "queued", "running",
		"interrupted" };
	static const char *const finished[] = { "done", "failed",
		"cancelled" };
	cJSON *a, *f;
	bool ignored;

	if (all)
		return jobs_fetch(c, NULL, true, json, more, rc);
	if ((a = jobs_fetch(c, active, true, json, &ignored, rc)) ==
	    NULL)
		return NULL;
	if ((f = jobs_fetch(c, finished, false, json, more, rc)) ==
	    NULL) {
		cJSON_Delete(a);
		return NULL;
	}
	return jobs_merge(a, f);
}

int
cli_cmd_list(int argc, char **argv)
{
	struct cli_args a;
	struct cli_conn c;
	const cJSON *j;
	cJSON *jobs;
	bool more;
	int rc;

	if ((rc = cli_simple_args(argc, argv, "list", CLI_ARGS_ALL, &a)) != 0)
		return rc;
	if ((rc = cli_open(&c, a.socket, false)) != 0)
		return rc;
	if ((jobs = jobs_queue(&c, a.all, a.json, &more, &rc)) == NULL) {
		cli_disconnect(&c);
		return rc;
	}
	if (a.json) {
		cli_print_json(jobs);
	} else {
		printf("%5s  %-10s %-20s %-11s %5s  %23s %9s %8s %8s\n", "ID",
		    "OWNER", "NAME", "STATE", "DONE", "BYTES", "MEMORY",
		    "ELAPSED", "ETA");
		cJSON_ArrayForEach(j, jobs)
			table_row(j);
		if (more)
			printf("(older finished jobs are not shown: %s status "
			    "--all lists every job)\n", cli_progname);
	}
	cJSON_Delete(jobs);
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

	if ((rc = cli_simple_args(argc, argv, "status", 2 | CLI_ARGS_ALL,
	    &a)) != 0)
		return rc;
	if (a.job == 0)
		return cli_cmd_list(argc, argv);
	if (a.all) {
		cli_usage_error("status JOB takes no --all");
		return CLI_EXIT_USAGE;
	}
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
