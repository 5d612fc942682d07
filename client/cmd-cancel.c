/* SPDX-License-Identifier: MIT */
/*
 * cmd-cancel.c: "mergectl cancel JOB".
 *
 * Descriptors do not survive a daemon restart, so cancelling an
 * interrupted job sends the output's directory again (its path from the
 * job's config, when the daemon shows it to us), so that the daemon can
 * remove the job's staging directory.
 */
#include <stdlib.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"

int
cli_cmd_cancel(int argc, char **argv)
{
	struct cli_args a;
	struct cli_conn c;
	const char *out = "";
	cJSON *cfg = NULL, *req, *r;
	char *name = NULL;
	int rc, fd = -1;

	if ((rc = cli_simple_args(argc, argv, "cancel", CLI_ARGS_JOB,
	    &a)) != 0)
		return rc;
	if ((rc = cli_open(&c, a.socket, true)) != 0)
		return rc;
	req = cli_new_request(&c, PROTO_OP_CANCEL);
	cJSON_AddNumberToObject(req, PROTO_F_JOB, (double)a.job);
	/* The output's directory, for an interrupted job's staging; if
	 * the config is not ours to see, the cancel will say so. */
	cfg = cli_new_request(&c, PROTO_OP_CONFIG);
	cJSON_AddNumberToObject(cfg, PROTO_F_JOB, (double)a.job);
	cfg = cli_call(&c, cfg, NULL, 0);
	if (cfg != NULL && cli_reply_ok(cfg) && msg_get_str(cfg, PROTO_F_OUT,
	    &out) &&
	    *out != '\0' && (fd = cli_open_parent(out, &name, false)) >= 0)
		cJSON_AddNumberToObject(req, PROTO_F_FDS, 1);
	r = cli_call(&c, req, &fd, fd >= 0 ? 1 : 0);
	rc = r == NULL ? CLI_EXIT_DAEMON : cli_check_reply(r, a.json);
	if (rc == 0 && a.json)
		cli_print_json(cJSON_GetObjectItem(r, PROTO_F_JOB));
	cJSON_Delete(r);
	cJSON_Delete(cfg);
	free(name);
	if (fd >= 0)
		close(fd);
	cli_disconnect(&c);
	return rc;
}
