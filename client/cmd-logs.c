/* SPDX-License-Identifier: MIT */
/*
 * cmd-logs.c: "mergectl logs JOB": the job's log lines, as the daemon
 * kept them.  Only the job's owner (and root) may read them, which the
 * daemon enforces.
 */
#include <stdio.h>

#include <cJSON.h>

#include "cli.h"

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
	if ((rc = cli_open(&c, a.socket, true)) != 0)
		return rc;
	req = cli_new_request(&c, PROTO_OP_LOGS);
	cJSON_AddNumberToObject(req, PROTO_F_JOB, (double)a.job);
	r = cli_call(&c, req, NULL, 0);
	if (r != NULL && (rc = cli_check_reply(r, a.json)) == 0) {
		if (a.json)
			cli_print_json(cJSON_GetObjectItem(r, PROTO_F_LINES));
		else
			cJSON_ArrayForEach(l, cJSON_GetObjectItem(r,
			    PROTO_F_LINES))
				printf("%s\n", cJSON_GetStringValue(l));
	}
	cJSON_Delete(r);
	cli_disconnect(&c);
	return r == NULL ? CLI_EXIT_DAEMON : rc;
}
