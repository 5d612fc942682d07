/* SPDX-License-Identifier: MIT */
/*
 * cmd-clean.c: "mergectl clean [--older-than DURATION] [--state STATE]":
 * forget finished jobs in bulk: the caller's own, or everyone's when
 * root runs it.  Outputs stay.  The daemon removes at most
 * PROTO_CLEAN_MAX jobs per request and says when more remain; this asks
 * until none do.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "cli.h"
#include "xmalloc.h"

static void
clean_usage(FILE *fp)
{
	fprintf(fp, "usage: %s clean [--older-than DURATION] [--state STATE]... "
	    "[--socket PATH] [--json] [--quiet]\n"
	    "Forgets your finished jobs (root: everyone's); their outputs "
	    "stay.\n"
	    "  --older-than D  only jobs that finished at least D ago (e.g. "
	    "30d, 12h, 90m)\n"
	    "  --state STATE   only jobs in STATE: done, failed or cancelled "
	    "(repeat, or\n"
	    "                  separate with commas; default: all three)\n",
	    cli_progname);
}

/* Adds the states of a --state argument ("done,failed") to arr. */
static int
clean_states(cJSON *arr, const char *arg)
{
	char *dup = xstrdup(arg), *p, *save = NULL, *names;
	enum job_state s;
	int rc = 0;

	names = proto_state_names(PROTO_STATE_REMOVABLE, ", ", ", ");

	for (p = strtok_r(dup, ",", &save); p != NULL && rc == 0;
	    p = strtok_r(NULL, ",", &save)) {
		if (proto_state_parse(p, &s) != 0 ||
		    !proto_state_removable(s)) {
			cli_usage_error("--state: '%s' is not a finished state "
			    "(%s)", p, names);
			rc = -1;
		} else {
			cJSON_AddItemToArray(arr, cJSON_CreateString(p));
		}
	}
	if (cJSON_GetArraySize(arr) == 0 && rc == 0) {
		cli_usage_error("--state: name a state (%s)", names);
		rc = -1;
	}
	free(names);
	free(dup);
	return rc;
}

/* One request after another until the daemon says none are left. */
static int
clean_run(struct cli_conn *c, const cJSON *states, uint64_t older,
    bool json, uint64_t *removed)
{
	uint64_t n;
	cJSON *req, *r;
	bool more;
	int rc;

	*removed = 0;
	do {
		req = cli_new_request(c, PROTO_OP_CLEAN);
		if (states != NULL)
			cJSON_AddItemToObject(req, PROTO_F_STATES,
			    cJSON_Duplicate(states, true));
		cJSON_AddNumberToObject(req, PROTO_F_OLDER_THAN, (double)older);
		if ((r = cli_call(c, req, NULL, 0)) == NULL)
			return CLI_EXIT_DAEMON;
		if ((rc = cli_check_reply(r, json)) != 0) {
			cJSON_Delete(r);
			return rc;
		}
		n = 0;
		msg_get_u64(r, PROTO_F_REMOVED, &n);
		*removed += n;
		/* A daemon saying "more" while removing none would loop. */
		more = cJSON_IsTrue(cJSON_GetObjectItem(r, PROTO_F_MORE))
		    && n > 0;
		cJSON_Delete(r);
	} while (more);
	return 0;
}

int
cli_cmd_clean(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "older-than", required_argument, NULL, 'o' },
		{ "state", required_argument, NULL, 'S' },
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *socket = NULL;
	struct cli_conn c;
	cJSON *states = NULL, *out;
	bool json = false, quiet = false;
	uint64_t older = 0, removed = 0;
	int ch, rc = CLI_EXIT_USAGE;

	optind = 1;
	while ((ch = cli_getopt(argc, argv, "qh", longopts)) != -1) {
		switch (ch) {
		case 'o':
			if (graph_parse_duration(optarg, &older) != 0) {
				cli_usage_error("--older-than: '%s' is not a "
				    "duration (e.g. 30d, 12h, 90m, 45s)",
				    optarg);
				goto out;
			}
			break;
		case 'S':
			if (states == NULL)
				states = cJSON_CreateArray();
			if (clean_states(states, optarg) != 0)
				goto out;
			break;
		case 's':
			socket = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 'h':
			clean_usage(stdout);
			rc = CLI_EXIT_OK;
			goto out;
		default:
			goto out;	/* cli_getopt said why */
		}
	}
	if (optind != argc) {
		cli_usage_error("clean takes no arguments besides its options; "
		    "'%s clean --help' lists them", cli_progname);
		goto out;
	}
	if ((rc = cli_open(&c, socket, true)) != 0)
		goto out;
	rc = clean_run(&c, states, older, json, &removed);
	cli_disconnect(&c);
	if (rc == 0 && json) {
		out = cJSON_CreateObject();
		cJSON_AddNumberToObject(out, PROTO_F_REMOVED, (double)removed);
		cli_print_json(out);
		cJSON_Delete(out);
	} else if (rc == 0 && !quiet) {
		printf("removed %llu finished job%s\n", (unsigned long long)
		    removed, removed == 1 ? "" : "s");
	}
out:
	cJSON_Delete(states);
	return rc;
}
