/* SPDX-License-Identifier: MIT */
/*
 * op-logs.c: a job's log lines, for its owner (or root) only.
 */
#include <cJSON.h>

#include "daemon.h"

static void
op_logs_fn(struct op_ctx *o)
{
	struct djob *j;
	cJSON *r;

	if ((j = op_job(o, true)) == NULL)
		return;
	r = msg_reply(o->id);
	cJSON_AddStringToObject(r, PROTO_F_USER, j->user);
	if (store_logs(o->c->d->store, j->id, cJSON_AddArrayToObject(r,
	    PROTO_F_LINES), cJSON_AddArrayToObject(r, PROTO_F_TIMES)) != 0) {
		cJSON_Delete(r);
		op_error(o, PROTO_E_INTERNAL, "cannot read the log");
		return;
	}
	op_reply(o, r);
}

const struct op_entry op_logs = { PROTO_OP_LOGS, true, op_logs_fn };
