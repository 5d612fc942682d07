/* SPDX-License-Identifier: MIT */
/*
 * op-status.c: one job; all of it for its owner (or root), its public
 * fields for everyone else.
 */
#include <cJSON.h>

#include "daemon.h"

static void
op_status_fn(struct op_ctx *o)
{
	struct djob *j;
	cJSON *r;

	if ((j = op_job(o, false)) == NULL)
		return;
	r = msg_reply(o->id);
	cJSON_AddItemToObject(r, PROTO_F_JOB, op_job_json(j, peer_may_act(
	    &o->c->peer, j)));
	op_reply(o, r);
}

const struct op_entry op_status = { PROTO_OP_STATUS, true, op_status_fn };
