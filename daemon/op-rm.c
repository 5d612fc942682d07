/* SPDX-License-Identifier: MIT */
/*
 * op-rm.c: forget a finished job, for its owner (or root).
 *
 * The job's record and its log lines leave the store; its output, if it
 * made one, is not touched.  Only a done, failed or cancelled job can be
 * removed, and not while an unfinished job runs after it (retain.c).
 */
#include <stdlib.h>

#include <cJSON.h>

#include "daemon.h"

static void
op_rm_fn(struct op_ctx *o)
{
	struct djob *j;
	char *why = NULL;
	uint64_t id;
	cJSON *r, *job;

	if ((j = op_job(o, true)) == NULL)
		return;
	if (!retain_removable(o->c->d, j, &why)) {
		op_error(o, PROTO_E_CONFLICT, "%s", why);
		free(why);
		return;
	}
	id = j->id;
	job = op_job_json(j, true);
	if (retain_remove(o->c->d, &j, 1) != 0) {
		cJSON_Delete(job);
		op_error(o, PROTO_E_INTERNAL, "cannot remove job %llu from the "
		    "store", (unsigned long long)id);
		return;
	}
	log_info("job %llu: removed by uid %u", (unsigned long long)id,
	    (unsigned)o->c->peer.uid);
	r = msg_reply(o->id);
	cJSON_AddItemToObject(r, PROTO_F_JOB, job);
	op_reply(o, r);
}

const struct op_entry op_rm = { PROTO_OP_RM, true, op_rm_fn };
