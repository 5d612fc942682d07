/* SPDX-License-Identifier: MIT */
/*
 * op-config.c: a job's kind and config text, for its owner (or root)
 * only; the client needs them (and the job's working directory) to
 * resume a job.
 */
#include <cJSON.h>

#include "daemon.h"

static void
op_config_fn(struct op_ctx *o)
{
	struct djob *j;
	cJSON *r;

	if ((j = op_job(o, true)) == NULL)
		return;
	r = msg_reply(o->id);
	cJSON_AddStringToObject(r, PROTO_F_KIND, proto_kind_name(j->kind));
	cJSON_AddStringToObject(r, PROTO_F_CONFIG, j->config);
	cJSON_AddStringToObject(r, PROTO_F_CONFIG_NAME, j->config_name ?
	    j->config_name : "");
	cJSON_AddStringToObject(r, PROTO_F_CWD, j->cwd ? j->cwd : "");
	cJSON_AddStringToObject(r, PROTO_F_OUT, j->out_dir);
	if (j->inter_dir != NULL)
		cJSON_AddStringToObject(r, PROTO_F_INTER, j->inter_dir);
	op_reply(o, r);
}

const struct op_entry op_config = { PROTO_OP_CONFIG, true, op_config_fn };
