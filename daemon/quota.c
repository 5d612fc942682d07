/* SPDX-License-Identifier: MIT */
/*
 * quota.c: per-user caps, checked when a job is submitted or resumed.
 *
 * A queued job keeps every descriptor its client passed (up to
 * PROTO_MAX_FDS) until it ends, and the daemon has one descriptor limit
 * for everyone: without a cap, fifteen of bob's submits took 1,000 of
 * 1,024 descriptors and alice's next job failed.  So each user may have
 * at most --max-jobs-per-user jobs queued or running, holding at most
 * --max-fds-per-user descriptors between them (by default a quarter of
 * the descriptor limit, so that no one user can take more than that
 * share).  A submit past either is refused with "limit", naming the cap
 * and the option that raises it.  Root is exempt, for its own jobs and
 * for what it resumes of others': root may do anything, and is the one
 * who sets the caps.
 *
 * The counts are taken from the job table at each check, never kept on
 * the side, so they cannot drift from what the jobs hold.  Loop thread
 * only.
 */
#include <sys/resource.h>

#include "daemon.h"

/* The default descriptor cap: this share of the soft limit. */
#define QUOTA_FDS_SHARE 4

/* Descriptors j holds now (none once it has ended or been interrupted). */
size_t
quota_job_fds(const struct djob *j)
{
	size_t i, n = j->out_fd != -1;

	for (i = 0; j->fds != NULL && i < j->nfds; i++)
		n += j->fds[i] != -1;
	return n;
}

/*
 * The descriptor cap in force: --max-fds-per-user, or a quarter of the
 * soft RLIMIT_NOFILE as it is now (the daemon may have raised it at
 * start), and never below one job's worth.
 */
static size_t
quota_max_fds(const struct daemon *d)
{
	struct rlimit rl;
	size_t n;

	if (d->opts.max_fds_per_user > 0)
		return (size_t)d->opts.max_fds_per_user;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return 65536;
	n = (size_t)(rl.rlim_cur / QUOTA_FDS_SHARE);
	return n < PROTO_MAX_FDS + 1 ? PROTO_MAX_FDS + 1 : n;
}

/*
 * May j's owner queue j, which comes with nfds descriptors?  Counts the
 * owner's other queued and running jobs and what they hold.  Replies
 * "limit" and returns false when a cap would be passed.  j itself is not
 * counted: at submit it is not in the table yet, at resume it holds
 * nothing.
 */
bool
quota_check(struct op_ctx *o, const struct djob *j, size_t nfds)
{
	return quota_check_n(o, j, 1, nfds);
}

/*
 * The same for njobs jobs holding nfds descriptors between them: a
 * pipeline's stages, each a job with copies of the descriptors it needs,
 * checked once the pipeline is planned.
 */
bool
quota_check_n(struct op_ctx *o, const struct djob *j, size_t njobs,
    size_t nfds)
{
	struct daemon *d = o->c->d;
	const struct djob *k;
	const struct prep *p;
	size_t jobs = 0, fds = 0, max_fds;

	if (j->owner == 0 || o->c->peer.uid == 0)
		return true;
	for (k = d->jobs; k != NULL; k = k->next) {
		if (k->owner != j->owner || k == j)
			continue;
		jobs += proto_state_live(k->state);
		fds += quota_job_fds(k);
	}
	/* Jobs being planned (prep.c) hold their descriptors too, and
	 * become queued jobs: counted, or concurrent submits would pass. */
	for (p = d->preps; p != NULL; p = p->next) {
		if (p->j == NULL || p->j->owner != j->owner || p->j == j)
			continue;
		jobs++;
		fds += quota_job_fds(p->j);
	}
	if (jobs + njobs > (size_t)d->opts.max_jobs_per_user) {
		op_error(o, PROTO_E_LIMIT, "%s already has %zu jobs queued or "
		    "running%s%s, the most one user may have (merged "
		    "--max-jobs-per-user %d); wait until one ends, or ask the "
		    "daemon's administrator to raise the limit", j->user, jobs,
		    njobs > 1 ? " and this pipeline would add " : "",
		    njobs > 1 ? "its stages" : "", d->opts.max_jobs_per_user);
		return false;
	}
	max_fds = quota_max_fds(d);
	if (fds + nfds > max_fds) {
		op_error(o, PROTO_E_LIMIT, "this job's %zu descriptors would "
		    "bring those held by %s's queued and running jobs to %zu, "
		    "over the %zu one user may hold (merged --max-fds-per-user "
		    "%zu); wait until a job ends, or ask the daemon's "
		    "administrator to raise the limit", nfds, j->user,
		    fds + nfds, max_fds, max_fds);
		return false;
	}
	return true;
}
