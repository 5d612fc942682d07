/* SPDX-License-Identifier: MIT */
/*
 * cmd-list.c: the queue table: "mergectl list", every job the store
 * keeps, and "mergectl status" without a job, the jobs not finished and
 * the latest page of finished ones (every job with --all).  The daemon
 * sends the queue a page at a time, newest first, and filters by state;
 * user, --mine and name are filtered here.  Everyone sees the queue;
 * paths, errors and logs of a job only its owner (and root) see, which
 * the daemon enforces.
 */
#include <fnmatch.h>
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"
#include "xmalloc.h"

/*
 * Fetches the pages of the queue whose jobs are in states (NULL: any),
 * newest page first, and returns their jobs in one array, in id order;
 * every page with all, else only the first, *more saying whether older
 * jobs were left.  Returns NULL after printing the error, *rc its exit
 * code.
 */
static cJSON *
jobs_fetch(struct cli_conn *c, const cJSON *states, bool all,
    bool json, bool *more, int *rc)
{
	cJSON **pages = NULL, *req, *r, *out = NULL, *j;
	size_t np = 0, i;
	uint64_t before = 0, last;
	bool again;

	*more = false;
	do {
		req = cli_new_request(c, PROTO_OP_LIST);
		if (states != NULL)
			cJSON_AddItemToObject(req, PROTO_F_STATES,
			    cJSON_Duplicate(states, true));
		if (before != 0)
			cJSON_AddNumberToObject(req, PROTO_F_BEFORE,
			    (double)before);
		r = cli_call(c, req, NULL, 0);
		if (r == NULL || (*rc = cli_check_reply(r, json)) != 0) {
			*rc = r == NULL ? CLI_EXIT_DAEMON : *rc;
			cJSON_Delete(r);
			goto out;
		}
		/* The cursor only goes down: a daemon cannot loop us. */
		last = before;
		again = cJSON_IsTrue(cJSON_GetObjectItem(r, PROTO_F_MORE)) &&
		    msg_get_u64(r, PROTO_F_BEFORE, &before) && (last == 0 ||
		    before < last);
		pages = xreallocarray(pages, np + 1, sizeof *pages);
		pages[np++] = cJSON_DetachItemFromObject(r, PROTO_F_JOBS);
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
		    msg_get_u64(x, PROTO_F_ID, &ia) &&
		    msg_get_u64(y, PROTO_F_ID, &ib) && ib < ia ? b : a;
		cJSON_AddItemToArray(out, cJSON_DetachItemFromArray(from, 0));
	}
	cJSON_Delete(a);
	cJSON_Delete(b);
	return out;
}

/* The names of the states that are (or are not) finished for good. */
static cJSON *
jobs_states(bool removable)
{
	cJSON *v = cJSON_CreateArray();
	enum job_state s;

	for (s = 0; s < JOB_NSTATES; s++)
		if (proto_state_removable(s) == removable)
			cJSON_AddItemToArray(v, cJSON_CreateString(
			    proto_state_name(s)));
	return v;
}

/*
 * The queue as "status" shows it: every job still to finish (queued,
 * running, interrupted), whatever their number, and the most recent
 * finished ones, a page of them; with all, every job.
 */
static cJSON *
jobs_queue(struct cli_conn *c, bool all, bool json, bool *more, int *rc)
{
	cJSON *active, *finished, *a = NULL, *f = NULL;
	bool ignored;

	if (all)
		return jobs_fetch(c, NULL, true, json, more, rc);
	active = jobs_states(false);
	finished = jobs_states(true);
	if ((a = jobs_fetch(c, active, true, json, &ignored, rc)) != NULL &&
	    (f = jobs_fetch(c, finished, false, json, more, rc)) == NULL) {
		cJSON_Delete(a);
		a = NULL;
	}
	cJSON_Delete(active);
	cJSON_Delete(finished);
	return a == NULL ? NULL : jobs_merge(a, f);
}

static void
list_usage(const char *what)
{
	printf("usage: %s %s [--state STATE[,...]] [--user NAME] [--mine] "
	    "[--name GLOB]\n       [--all] [--color WHEN] [--socket PATH] "
	    "[--json]\n%s\n\n", cli_progname, what,
	    cli_command_summary(what));
	printf("  --state STATES  only jobs in these states (queued, running, "
	    "done, failed,\n                  cancelled, interrupted), "
	    "comma-separated\n"
	    "  --user NAME     only NAME's jobs\n"
	    "  --mine          only your jobs\n"
	    "  --name GLOB     only jobs whose name matches GLOB (a stage's "
	    "is GROUP/STAGE)\n"
	    "%s"
	    "  --color WHEN    colour the states: auto (on a terminal, unless "
	    "NO_COLOR is\n                  set), always, never\n"
	    "  --socket PATH   the daemon's socket (default: $MERGED_SOCKET, "
	    "else your\n                  personal daemon's)\n"
	    "  --json          the jobs as one JSON array\n"
	    "The table fits the terminal (80 columns without one); from 120 "
	    "columns it adds\nPRI, DEPS and BYTES.  INFO says why a queued "
	    "job waits, a running one's ETA,\na failed one's error.\n",
	    strcmp(what, "list") == 0 ? "  --all           (every job is "
	    "listed anyway)\n" : "  --all           every job, not only "
	    "those not finished and the latest\n                  "
	    "finished ones\n");
}

/* --state a,b: the names, checked against the vocabulary. */
static int
list_states(const char *arg, cJSON **out)
{
	char *copy = xstrdup(arg), *tok, *save = NULL;
	enum job_state s;
	int rc = 0;

	*out = cJSON_CreateArray();
	for (tok = strtok_r(copy, ",", &save); tok != NULL && rc == 0;
	    tok = strtok_r(NULL, ",", &save)) {
		if (proto_state_parse(tok, &s) != 0) {
			cli_usage_error("--state: '%s' is no job state "
			    "(queued, running, done, failed, cancelled, "
			    "interrupted)", tok);
			rc = CLI_EXIT_USAGE;
			break;
		}
		cJSON_AddItemToArray(*out, cJSON_CreateString(tok));
	}
	free(copy);
	return rc;
}

int
cli_list_parse(int argc, char **argv, const char *what, bool job_ok,
    struct cli_list_opts *o)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "all", no_argument, NULL, 'a' },
		{ "state", required_argument, NULL, 'S' },
		{ "user", required_argument, NULL, 'u' },
		{ "mine", no_argument, NULL, 'm' },
		{ "name", required_argument, NULL, 'n' },
		{ "color", required_argument, NULL, 'c' },
		{ "colour", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(o, 0, sizeof *o);
	optind = 1;
	while ((c = cli_getopt(argc, argv, "qh", longopts)) != -1) {
		switch (c) {
		case 's':
			o->a.socket = optarg;
			break;
		case 'j':
			o->a.json = true;
			break;
		case 'q':
			o->a.quiet = true;
			break;
		case 'a':
			o->a.all = true;
			break;
		case 'S':
			cJSON_Delete(o->states);
			if (list_states(optarg, &o->states) != 0)
				return CLI_EXIT_USAGE;
			break;
		case 'u':
			o->user = optarg;
			break;
		case 'm':
			o->mine = true;
			break;
		case 'n':
			o->name = optarg;
			break;
		case 'c':
			if (cli_color_parse(optarg, &o->color) != 0) {
				cli_usage_error("--color takes auto, always or "
				    "never, not '%s'", optarg);
				return CLI_EXIT_USAGE;
			}
			break;
		case 'h':
			list_usage(what);
			exit(CLI_EXIT_OK);
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (argc - optind > (job_ok ? 1 : 0)) {
		cli_usage_error("%s takes no more arguments; '%s %s --help' "
		    "lists the options", what, cli_progname, what);
		return CLI_EXIT_USAGE;
	}
	return argc - optind == 1 ? cli_parse_job(argv[optind], &o->a.job) :
	    0;
}

/* The filters the daemon does not apply: user, mine, name. */
static bool
list_wanted(const struct cli_list_opts *o, const cJSON *j, const char *me)
{
	const char *name = cli_json_str(j, PROTO_F_NAME);

	if (o->user != NULL && strcmp(cli_json_str(j, PROTO_F_USER),
	    o->user) != 0)
		return false;
	if (o->mine && (uint64_t)cli_json_num(j, PROTO_F_OWNER) !=
	    (uint64_t)getuid() && strcmp(cli_json_str(j, PROTO_F_USER),
	    me) != 0)
		return false;
	return o->name == NULL || fnmatch(o->name, name, 0) == 0;
}

/* The table (or JSON) of jobs, filtered; all: every page. */
static int
list_show(struct cli_list_opts *o, bool every)
{
	struct passwd *pw = getpwuid(getuid());
	const char *me = pw != NULL ? pw->pw_name : "";
	struct cli_table t;
	struct cli_conn c;
	cJSON *jobs, *j, *next;
	bool more;
	int rc;

	if ((rc = cli_open(&c, o->a.socket, true)) != 0)
		return rc;
	jobs = o->states != NULL ? jobs_fetch(&c, o->states, every,
	    o->a.json, &more, &rc) : jobs_queue(&c, every, o->a.json, &more,
	    &rc);
	cli_disconnect(&c);
	if (jobs == NULL)
		return rc;
	for (j = jobs->child; j != NULL; j = next) {
		next = j->next;
		if (!list_wanted(o, j, me))
			cJSON_Delete(cJSON_DetachItemViaPointer(jobs, j));
	}
	if (o->a.json) {
		cli_print_json(jobs);
	} else {
		cli_table_init(&t, o->color);
		cli_job_header(&t);
		cJSON_ArrayForEach(j, jobs)
			cli_job_row(j, &t);
		if (more)
			printf("(older finished jobs are not shown: %s list "
			    "lists every job)\n", cli_progname);
	}
	cJSON_Delete(jobs);
	return 0;
}

/* "list": every job the store keeps, a page at a time from the daemon. */
int
cli_cmd_list(int argc, char **argv)
{
	struct cli_list_opts o;
	int rc;

	if ((rc = cli_list_parse(argc, argv, "list", false, &o)) == 0)
		rc = list_show(&o, true);
	cJSON_Delete(o.states);
	return rc;
}

/* "status" without a job: the jobs not finished and the latest results. */
int
cli_status_queue(struct cli_list_opts *o)
{
	return list_show(o, o->a.all);
}
