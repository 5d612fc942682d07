/* SPDX-License-Identifier: MIT */
/*
 * op-list.c: the queue table.  Every user sees every job, but only the
 * public fields of other users' jobs (no config, paths or errors).
 */
#include <cJSON.h>

#include "daemon.h"

static void
op_list_fn(struct op_ctx *o)
{
	cJSON *r = msg_reply(o->id), *arr = cJSON_AddArrayToObject(r, "jobs");
	struct djob *j;

	for (j = o->c->d->jobs; j != NULL; j = j->next)
		cJSON_AddItemToArray(arr, op_job_json(j, peer_may_act(
		    &o->c->peer, j)));
	op_reply(o, r);
}

const struct op_entry op_list = { "list", true, op_list_fn };
