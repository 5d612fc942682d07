/* SPDX-License-Identifier: MIT */
/*
 * cmd-resume.c: "mergectl resume JOB".
 *
 * Descriptors do not survive a daemon restart, so resume hands the
 * daemon the models and the output's directory again, resolved from the
 * job's own config and working directory (a job must read the same files
 * again, which the daemon checks).  cmd-cancel.c does the same for an
 * interrupted job's output directory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"

/* The job's config, working directory and output, from the daemon. */
static int
job_config(struct cli_conn *c, uint64_t job, bool json, cJSON **out)
{
	cJSON *req = cli_new_request(c, PROTO_OP_CONFIG), *r;
	int rc;

	cJSON_AddNumberToObject(req, PROTO_F_JOB, (double)job);
	if ((r = cli_call(c, req, NULL, 0)) == NULL)
		return CLI_EXIT_DAEMON;
	if ((rc = cli_check_reply(r, json)) != 0) {
		cJSON_Delete(r);
		return rc;
	}
	*out = r;
	return 0;
}

int
cli_cmd_resume(int argc, char **argv)
{
	struct graph_env env;
	struct cli_models m;
	struct cli_args a;
	struct cli_conn c;
	const char *text = "", *name = "", *cwd = "", *out = "", *k = "";
	const char *inter;
	enum job_kind kind = JOB_KIND_MERGE;
	cJSON *cfg = NULL, *req, *r;
	int rc;

	if ((rc = cli_simple_args(argc, argv, "resume", CLI_ARGS_JOB,
	    &a)) != 0)
		return rc;
	if ((rc = cli_open(&c, a.socket, true)) != 0)
		return rc;
	cli_models_init(&m);
	if ((rc = job_config(&c, a.job, a.json, &cfg)) != 0)
		goto out;
	msg_get_str(cfg, PROTO_F_CONFIG, &text);
	msg_get_str(cfg, PROTO_F_CONFIG_NAME, &name);
	msg_get_str(cfg, PROTO_F_CWD, &cwd);
	msg_get_str(cfg, PROTO_F_OUT, &out);
	/* A pipeline's stage directory. */
	if (msg_get_str(cfg, PROTO_F_INTER, &inter))
		m.inter = inter;
	/* A daemon from before kinds sends none: a merge. */
	if (msg_get_str(cfg, PROTO_F_KIND, &k) && proto_kind_parse(k,
	    &kind) != 0) {
		cli_error(PROTO_E_BAD_REQUEST, "job %llu is of kind '%s', "
		    "which this mergectl does not know",
		    (unsigned long long)a.job, k);
		rc = CLI_EXIT_INVALID;
		goto out;
	}
	graph_env_from_process(&env);
	env.cwd = cwd;
	if ((rc = cli_models_open(&m, kind, text, strlen(text), name, &env,
	    out)) != 0)
		goto out;
	req = cli_new_request(&c, PROTO_OP_RESUME);
	cJSON_AddNumberToObject(req, PROTO_F_JOB, (double)a.job);
	cli_models_request(&m, req);
	r = cli_call(&c, req, m.fds, m.nfds);
	rc = r == NULL ? CLI_EXIT_DAEMON : cli_check_reply(r, a.json);
	if (rc == 0 && a.json)
		cli_print_json(cJSON_GetObjectItem(r, PROTO_F_JOB));
	else if (rc == 0 && !a.quiet)
		fprintf(stderr, "%s: job %llu resumed\n", cli_progname,
		    (unsigned long long)a.job);
	cJSON_Delete(r);
out:
	cJSON_Delete(cfg);
	cli_models_fini(&m);
	cli_disconnect(&c);
	return rc;
}
