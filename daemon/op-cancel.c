/* SPDX-License-Identifier: MIT */
/*
 * op-cancel.c: stop a job, for its owner (or root).  A queued job is
 * dropped, a running one stops and its staging directory is removed.  An
 * interrupted job still has a staging directory beside its output, which
 * the daemon can reach only through a descriptor for the output's parent:
 * when the request carries one ("out_fd", "fds": 1) it is removed too.
 */
#include <stdlib.h>
#include <unistd.h>

#include <cJSON.h>

#include "daemon.h"

static void
op_cancel_fn(struct op_ctx *o)
{
	struct djob *j;
	struct graph_cred cred;
	size_t n = 0;
	int *fds = NULL;
	cJSON *r;

	if ((j = op_job(o, true)) == NULL)
		return;
	if (!proto_state_cancellable(j->state)) {
		op_error(o, PROTO_E_CONFLICT, "job %llu is %s",
		    (unsigned long long)j->id, proto_state_name(j->state));
		return;
	}
	if (cJSON_GetObjectItem(o->req, PROTO_F_FDS) != NULL &&
	    op_take_fds(o, &fds, &n) != 0)
		return;
	if (j->state == JOB_INTERRUPTED && n == 1) {
		peer_cred(&o->c->peer, &cred);
		graph_remove_tree(fds[0], j->staging, &cred);
	}
	while (n > 0)
		close(fds[--n]);
	free(fds);
	job_log(o->c->d, j, "cancel requested by uid %u",
	    (unsigned)o->c->peer.uid);
	job_cancel(o->c->d, j);
	r = msg_reply(o->id);
	cJSON_AddItemToObject(r, PROTO_F_JOB, op_job_json(j, true));
	op_reply(o, r);
}

const struct op_entry op_cancel = { PROTO_OP_CANCEL, true, op_cancel_fn };
