/* SPDX-License-Identifier: MIT */
/*
 * op-resume.c: continue an interrupted (or failed) job, for its owner.
 *
 * Descriptors do not survive a restart, so the client sends them again,
 * as for submit.  The job is planned again from its recorded config,
 * options and seed; its inputs must be exactly the files it was submitted
 * with (same size and modification time), or the resume fails with the
 * file named.  Shards already on disk in the staging directory are kept,
 * so the result is byte-identical to an uninterrupted run.  The plan is
 * built on the pool (prep.c) for a copy of the job (job_shadow()), which
 * the job adopts if it can still be resumed when the plan is back.  A
 * pipeline is planned whole again, and its stages that are not done are
 * queued again (group.c).
 */
#include <stdlib.h>
#include <unistd.h>

#include <cJSON.h>

#include "daemon.h"
#include "xmalloc.h"

/* Why j cannot be resumed now, after replying it; false if it can. */
static bool
resume_refused(struct op_ctx *o, const struct djob *j)
{
	if (proto_state_resumable(j->state))
		return false;
	op_error(o, PROTO_E_CONFLICT, "job %llu is %s; only interrupted "
	    "or failed jobs can be resumed", (unsigned long long)j->id,
	    proto_state_name(j->state));
	return true;
}

/*
 * The plan is back (prep.c; o->req is gone).  Meanwhile the job may have
 * been cancelled, resumed by another request, or removed: checked again.
 */
static void
resume_planned(struct prep *p, struct op_ctx *o)
{
	struct daemon *d = o->c->d;
	struct djob *j;
	size_t njobs, nfds;
	cJSON *r;

	if ((j = job_find(d, p->job)) == NULL) {
		op_error(o, PROTO_E_NOT_FOUND, "no job %llu",
		    (unsigned long long)p->job);
		return;
	}
	if (resume_refused(o, j))
		return;
	if (p->rc != 0) {
		free(j->error);
		j->error = xstrdup(p->cause != NULL ? p->cause : "the merge "
		    "cannot run");
		store_job_update(d->store, j);
		op_problems(o, &p->diags, p->cause);
		return;
	}
	/* A pipeline's stages come back as jobs with descriptors: its
	 * owner's caps count them (the request counted one job). */
	if (j->kind == JOB_KIND_PIPELINE) {
		group_quota(p->j, &njobs, &nfds);
		if (!quota_check_n(o, j, njobs, nfds))
			return;
	}
	job_adopt(j, p->j);
	job_log(d, j, "resumed by uid %u", (unsigned)o->c->peer.uid);
	if (j->kind == JOB_KIND_PIPELINE) {
		/* Its stages not done are queued again; it follows them. */
		job_log(d, j, "%zu stages queued again", group_resume(d, j));
		job_release_runtime(j);
		group_refresh(d, j);
	} else {
		job_set_state(d, j, JOB_QUEUED, NULL);
	}
	r = msg_reply(o->id);
	cJSON_AddItemToObject(r, PROTO_F_JOB, op_job_json(j, true));
	op_reply(o, r);
	sched_run(d);
}

static void
op_resume_fn(struct op_ctx *o)
{
	struct daemon *d = o->c->d;
	struct graph_diags diags;
	struct djob *j, *s;
	char *cause = NULL;
	uint64_t out_fd = 0, umask = 0;
	size_t nfds = 0;
	int *fds = NULL;

	if (d->draining) {
		op_error(o, PROTO_E_SHUTTING_DOWN, "the daemon is shutting down");
		return;
	}
	if ((j = op_job(o, true)) == NULL)
		return;
	if (resume_refused(o, j))
		return;
	if (op_take_fds(o, &fds, &nfds) != 0)
		return;
	if (!quota_check(o, j, nfds)) {
		while (nfds > 0)
			close(fds[--nfds]);
		free(fds);
		return;
	}
	graph_diags_init(&diags);
	msg_get_u64(o->req, PROTO_F_OUT_FD, &out_fd);
	/* The job's files take the umask of whoever resumes it. */
	j->umask = msg_get_u64(o->req, PROTO_F_UMASK, &umask) && umask <= 0777 ?
	    (uint32_t)umask : 022;
	s = job_shadow(j);
	s->lazy = true;
	s->scratch_parent = xstrdup(d->opts.state_dir);
	if (job_take_request(s, &o->c->peer, fds, nfds, cJSON_GetObjectItem(
	    o->req, PROTO_F_MODELS), (int)out_fd, &cause) != 0 ||
	    (s->kind == JOB_KIND_PIPELINE && job_take_inter(s, o->req,
	    &cause) != 0)) {
		job_free(s);
		free(j->error);
		j->error = xstrdup(cause != NULL ? cause : "the merge cannot "
		    "run");
		store_job_update(d->store, j);
		op_problems(o, &diags, cause);
		goto out;
	}
	prep_start(o, s, j->id, resume_planned);
out:
	free(fds);
	free(cause);
	graph_diags_fini(&diags);
}

const struct op_entry op_resume = { PROTO_OP_RESUME, true, op_resume_fn };
