/* SPDX-License-Identifier: MIT */
/*
 * cmd-list.c: "mergectl list", the queue table (also "status" without a
 * job).  The daemon sends the queue a page at a time, newest first: the
 * table shows every job yet to finish and the latest page of finished
 * ones, or with --all every page.  Everyone sees the queue; paths,
 * errors and logs of a job only its owner (and root) see, which the
 * daemon enforces.
 */
#include <stdio.h>
#include <stdlib.h>

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
	if ((rc = cli_open(&c, a.socket, true)) != 0)
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
			cli_job_row(j);
		if (more)
			printf("(older finished jobs are not shown: %s status "
			    "--all lists every job)\n", cli_progname);
	}
	cJSON_Delete(jobs);
	cli_disconnect(&c);
	return 0;
}
