/* SPDX-License-Identifier: MIT */
/*
 * op-resume.c: continue an interrupted (or failed) job, for its owner.
 *
 * Descriptors do not survive a restart, so the client sends them again,
 * as for submit.  The job is planned again from its recorded config,
 * options and seed; its inputs must be exactly the files it was submitted
 * with (same size and modification time), or the resume fails with the
 * file named.  Shards already on disk in the staging directory are kept,
 * so the result is byte-identical to an uninterrupted run.
 */
#include <stdlib.h>
#include <unistd.h>

#include <cJSON.h>

#include "daemon.h"

static void
op_resume_fn(struct op_ctx *o)
{
	struct daemon *d = o->c->d;
	struct graph_diags diags;
	struct djob *j;
	char *cause = NULL;
	uint64_t out_fd = 0, umask = 0;
	size_t nfds = 0;
	int *fds = NULL;
	cJSON *r;

	if (d->draining) {
		op_error(o, PROTO_E_SHUTTING_DOWN, "the daemon is shutting down");
		return;
	}
	if ((j = op_job(o, true)) == NULL)
		return;
	if (j->state != JOB_INTERRUPTED && j->state != JOB_FAILED) {
		op_error(o, PROTO_E_CONFLICT, "job %llu is %s; only interrupted "
		    "or failed jobs can be resumed", (unsigned long long)j->id,
		    job_state_name(j->state));
		return;
	}
	if (op_take_fds(o, &fds, &nfds) != 0)
		return;
	if (!quota_check(o, j, nfds)) {
		while (nfds > 0)
			close(fds[--nfds]);
		free(fds);
		return;
	}
	graph_diags_init(&diags);
	msg_get_u64(o->req, "out_fd", &out_fd);
	j->umask = msg_get_u64(o->req, "umask", &umask) && umask <= 0777 ?
	    (uint32_t)umask : 022;
	if (job_prepare(d, j, &o->c->peer, fds, nfds, cJSON_GetObjectItem(
	    o->req, "models"), (int)out_fd, &diags, &cause) != 0) {
		job_release_runtime(j);
		free(j->error);
		j->error = xstrdup(cause != NULL ? cause : "the merge cannot "
		    "run");
		store_job_update(d->store, j);
		op_problems(o, &diags, cause);
		goto out;
	}
	job_log(d, j, "resumed by uid %u", (unsigned)o->c->peer.uid);
	job_set_state(d, j, JOB_QUEUED, NULL);
	r = msg_reply(o->id);
	cJSON_AddItemToObject(r, "job", op_job_json(j, true));
	op_reply(o, r);
	sched_run(d);
out:
	free(fds);
	free(cause);
	graph_diags_fini(&diags);
}

const struct op_entry op_resume = { "resume", true, op_resume_fn };
