/* SPDX-License-Identifier: MIT */
/*
 * cmd-rm.c: "mergectl rm JOB...": forget finished jobs.
 *
 * The daemon removes each job's record and log; its output model is not
 * touched.  Only the job's owner (or root) may, and only once the job is
 * done, failed or cancelled.  Every job named is tried; the exit code is
 * that of the first that could not be removed (6 no such job, 7 another
 * user's, 1 not finished), like rm(1) going on past a missing file.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "cli.h"
#include "xmalloc.h"

static void
rm_usage(FILE *fp)
{
	fprintf(fp, "usage: %s rm [--socket PATH] [--json] [--quiet] JOB...\n"
	    "Forgets finished jobs (done, failed or cancelled): their records "
	    "and logs.\nTheir outputs stay where they are.\n", cli_progname);
}

int
cli_cmd_rm(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *socket = NULL;
	struct cli_conn c;
	bool json = false, quiet = false;
	uint64_t *ids;
	cJSON *req, *r;
	int ch, i, n, rc, first = 0;
	char *end;

	optind = 1;
	while ((ch = cli_getopt(argc, argv, "qh", longopts)) != -1) {
		switch (ch) {
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
			rm_usage(stdout);
			return CLI_EXIT_OK;
		default:
			return CLI_EXIT_USAGE;	/* cli_getopt said why */
		}
	}
	if ((n = argc - optind) < 1) {
		cli_usage_error("rm needs at least one JOB; '%s rm --help' says "
		    "more", cli_progname);
		return CLI_EXIT_USAGE;
	}
	/* Every id is checked before any job is removed. */
	ids = xcalloc((size_t)n, sizeof *ids);
	for (i = 0; i < n; i++) {
		ids[i] = strtoull(argv[optind + i], &end, 10);
		if (*end != '\0' || ids[i] == 0 || *argv[optind + i] == '-') {
			cli_usage_error("'%s' is not a job id", argv[optind + i]);
			free(ids);
			return CLI_EXIT_USAGE;
		}
	}
	if ((rc = cli_open(&c, socket, true)) != 0) {
		free(ids);
		return rc;
	}
	for (i = 0; i < n; i++) {
		req = cli_new_request(&c, PROTO_OP_RM);
		cJSON_AddNumberToObject(req, PROTO_F_JOB, (double)ids[i]);
		if ((r = cli_call(&c, req, NULL, 0)) == NULL) {
			first = first ? first : CLI_EXIT_DAEMON;
			break;
		}
		if ((rc = cli_check_reply(r, json)) != 0) {
			first = first ? first : rc;
		} else if (json) {
			cli_print_json(cJSON_GetObjectItem(r, PROTO_F_JOB));
		} else if (!quiet) {
			printf("removed job %llu\n", (unsigned long long)
			    ids[i]);
		}
		cJSON_Delete(r);
	}
	cli_disconnect(&c);
	free(ids);
	return first;
}
