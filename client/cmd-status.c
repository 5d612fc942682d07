/* SPDX-License-Identifier: MIT */
/*
 * cmd-status.c: "mergectl status [JOB]": one job's row of the queue
 * table and its details (output, config, error, seed, shards); without
 * a job, the queue table (cmd-list.c).
 */
#include <stdio.h>

#include <cJSON.h>

#include "cli.h"

static void
status_print(const cJSON *j)
{
	static const char *const keys[] = { PROTO_F_OUT, PROTO_F_CONFIG_NAME,
	    PROTO_F_ERROR };
	size_t i;

	cli_job_row(j);
	for (i = 0; i < sizeof keys / sizeof *keys; i++)
		if (*cli_json_str(j, keys[i]) != '\0')
			printf("       %-12s %s\n", keys[i],
			    cli_json_str(j, keys[i]));
	if (cJSON_GetObjectItem(j, PROTO_F_SEED) != NULL)
		printf("       %-12s %.0f\n       %-12s %.0f/%.0f\n", "seed",
		    cli_json_num(j, PROTO_F_SEED), "shards",
		    cli_json_num(j, PROTO_F_SHARDS_DONE),
		    cli_json_num(j, PROTO_F_SHARDS_TOTAL));
}

/* A pipeline's stages, a row each under the group's. */
static void
status_stages(struct cli_conn *c, const cJSON *g)
{
	const cJSON *id;
	cJSON *req, *r;

	cJSON_ArrayForEach(id, cJSON_GetObjectItem(g, PROTO_F_STAGES)) {
		req = cli_new_request(c, PROTO_OP_STATUS);
		cJSON_AddNumberToObject(req, PROTO_F_JOB, id->valuedouble);
		r = cli_call(c, req, NULL, 0);
		if (r != NULL && cli_check_reply(r, false) == 0)
			cli_job_row(cJSON_GetObjectItem(r, PROTO_F_JOB));
		cJSON_Delete(r);
	}
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
	if ((rc = cli_open(&c, a.socket, true)) != 0)
		return rc;
	req = cli_new_request(&c, PROTO_OP_STATUS);
	cJSON_AddNumberToObject(req, PROTO_F_JOB, (double)a.job);
	r = cli_call(&c, req, NULL, 0);
	if (r != NULL && (rc = cli_check_reply(r, a.json)) == 0) {
		if (a.json)
			cli_print_json(cJSON_GetObjectItem(r, PROTO_F_JOB));
		else {
			status_print(cJSON_GetObjectItem(r, PROTO_F_JOB));
			status_stages(&c, cJSON_GetObjectItem(r, PROTO_F_JOB));
		}
	}
	cJSON_Delete(r);
	cli_disconnect(&c);
	return r == NULL ? CLI_EXIT_DAEMON : rc;
}
