/* SPDX-License-Identifier: MIT */
/*
 * sched.c: which queued job runs next.
 *
 * Up to --max-running jobs merge at once, all under the executor's one
 * memory budget.  A queued job is eligible when the job it runs --after
 * is done (if that one failed or was cancelled, this one fails too, with
 * the reason).  Among eligible jobs: the highest priority first; then the
 * owner with the fewest jobs running, then the owner who started one
 * least recently, so that one user's twenty jobs do not starve another's
 * one; then submission order.  Loop thread only.
 */
#include <stdlib.h>

#include "daemon.h"

/* 0: wait; 1: may run; -1: can never run (its dependency did not). */
static int
sched_ready(struct daemon *d, struct djob *j, char **why)
{
	struct djob *dep;

	if (j->after == 0)
		return 1;
	if ((dep = job_find(d, j->after)) == NULL) {
		*why = xasprintf("job %llu, which it runs after, does not exist",
		    (unsigned long long)j->after);
		return -1;
	}
	switch (dep->state) {
	case JOB_DONE:
		return 1;
	case JOB_FAILED:
	case JOB_CANCELLED:
		*why = xasprintf("job %llu, which it runs after, %s",
		    (unsigned long long)dep->id, dep->state == JOB_FAILED ?
		    "failed" : "was cancelled");
		return -1;
	default:
		return 0;
	}
}

static size_t
owner_running(const struct daemon *d, uint32_t owner, double *last)
{
	const struct djob *j;
	size_t n = 0;

	*last = 0;
	for (j = d->jobs; j != NULL; j = j->next) {
		if (j->owner != owner)
			continue;
		if (j->state == JOB_RUNNING)
			n++;
		if (j->started > *last)
			*last = j->started;
	}
	return n;
}

/* Is a better than b to run next? */
static bool
sched_better(const struct daemon *d, const struct djob *a,
    const struct djob *b)
{
	double la, lb;
	size_t ra, rb;

	if (a->priority != b->priority)
		return a->priority > b->priority;
	ra = owner_running(d, a->owner, &la);
	rb = owner_running(d, b->owner, &lb);
	if (ra != rb)
		return ra < rb;
	if (a->owner != b->owner && la != lb)
		return la < lb;
	return a->id < b->id;
}

void
sched_run(struct daemon *d)
{
	struct djob *j, *best;
	bool failed;
	char *why;
	int r;

	while (!d->draining && d->nrunning < (size_t)d->opts.max_running) {
		best = NULL;
		failed = false;
		for (j = d->jobs; j != NULL && !failed; j = j->next) {
			if (j->state != JOB_QUEUED || j->plan == NULL)
				continue;
			why = NULL;
			if ((r = sched_ready(d, j, &why)) < 0) {
				/* Failing it may make others eligible: look
				 * again from the start. */
				job_release_runtime(j);
				job_set_state(d, j, JOB_FAILED, why);
				free(why);
				failed = true;
			} else if (r > 0 && (best == NULL ||
			    sched_better(d, j, best))) {
				best = j;
			}
		}
		if (failed)
			continue;
		if (best == NULL)
			return;
		job_start(d, best);
	}
}
