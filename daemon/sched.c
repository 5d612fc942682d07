/* SPDX-License-Identifier: MIT */
/*
 * sched.c: which queued job runs next.
 *
 * Up to --max-running jobs merge at once, all under the executor's one
 * memory budget.  A queued job is eligible when the jobs it runs after
 * are done (if one failed or was cancelled, this one fails too, with
 * the reason); a pipeline's stage, once those it reads are done, is
 * first planned against their outputs (group.c).  Among eligible jobs,
 * fairness between users comes first: the owner with the fewest jobs
 * running, then the owner who started one least recently, then the
 * owner whose next job is oldest, so that one user's twenty jobs do not
 * starve another's one.  Priority is chosen by
 * the submitter, so it orders only that user's own jobs (highest first,
 * then submission order): bob's priority 1000 does not pass alice's
 * older job.  Root's is the exception, since root may do anything: a
 * root job of priority above 0 goes before everyone's.
 *
 * One pick looks at every job once, plus a sort of the owners: O(n log
 * n) in the jobs the daemon keeps (the old comparison recounted the
 * owner's jobs at every step, O(n^2) per pick).  Loop thread only.
 */
#include <stdlib.h>

#include "daemon.h"
#include "xmalloc.h"

/* One owner's standing for a pick. */
struct sched_owner {
	uint32_t uid;
	size_t running;
	double last;		/* when one of its jobs last started */
	struct djob *next;	/* its best eligible job, or NULL */
};

/* 0: wait; 1: may run; -1: can never run (a dependency did not). */
int
sched_ready(struct daemon *d, const struct djob *j, char **why)
{
	struct djob *dep;
	size_t i;
	int ready = 1;

	for (i = 0; i < j->ndeps; i++) {
		if ((dep = job_find(d, j->deps[i])) == NULL) {
			*why = xasprintf("job %llu, which it runs after, does "
			    "not exist", (unsigned long long)j->deps[i]);
			return -1;
		}
		if (dep->state == JOB_DONE)
			continue;
		/* On Slurm, afterok orders them (slurm.c); a stage planned
		 * late reads its inputs when they are done, not before. */
		if (dep->slurm_id != 0 && proto_state_live(dep->state) &&
		    job_planned(j))
			continue;
		/* Still to finish, or waiting to be resumed. */
		if (!proto_state_removable(dep->state)) {
			ready = 0;
			continue;
		}
		*why = xasprintf("job %llu, which it runs after, %s",
		    (unsigned long long)dep->id, dep->state == JOB_CANCELLED ?
		    "was cancelled" : "failed");
		return -1;
	}
	return ready;
}

/* A running job's reason: all its work waits for memory to free. */
static char *
sched_memory_reason(struct daemon *d, const struct djob *j)
{
	struct graph_exec_stats s;
	char *need, *used, *budget, *why;

	graph_exec_stats(d->exec, &s);
	need = graph_format_size(j->prog.memory_wait);
	used = graph_format_size(s.used);
	budget = graph_format_size(s.budget);
	why = xasprintf("memory: waiting for %s of memory; other jobs use "
	    "%s of the daemon's %s", need, used, budget);
	free(need);
	free(used);
	free(budget);
	return why;
}

/*
 * Why a job is not making progress, in Slurm's spirit (its Reason), as
 * a word, a colon and what it waits for: a queued job's "dependency:
 * waiting for job 7 (running)", "planning: ...", "max_running: ...",
 * "draining: ..." or "priority: ..." (others start first); a running
 * job's "memory: ..." while none of its work fits the budget.  NULL when
 * it does not wait.
 */
char *
sched_reason(struct daemon *d, const struct djob *j)
{
	const struct djob *dep;
	char *why = NULL;
	size_t i;

	if (slurm_handed(j) && proto_state_live(j->state))
		return slurm_reason(j);
	if (j->state == JOB_RUNNING && j->prog.memory_wait != 0)
		return sched_memory_reason(d, j);
	if (j->state != JOB_QUEUED)
		return NULL;
	if (d->draining)
		return xstrdup("draining: the daemon is stopping");
	for (i = 0; i < j->ndeps; i++)
		if ((dep = job_find(d, j->deps[i])) != NULL &&
		    dep->state != JOB_DONE)
			return xasprintf("dependency: waiting for job %llu "
			    "(%s)", (unsigned long long)dep->id,
			    proto_state_name(dep->state));
	if (sched_ready(d, j, &why) < 0)
		return why;
	free(why);
	if (!job_planned(j))
		return xstrdup("planning: its plan is being made");
	if (d->nrunning >= (size_t)d->opts.max_running)
		return xasprintf("max_running: waiting for a running job to "
		    "end (--max-running %d)", d->opts.max_running);
	return xstrdup("priority: other jobs start first");
}

/* Within one owner's jobs (or root's global ones): priority, then age. */
static bool
sched_before(const struct djob *a, const struct djob *b)
{
	if (b == NULL)
		return true;
	if (a->priority != b->priority)
		return a->priority > b->priority;
	return a->id < b->id;
}

static int
sched_owner_cmp(const void *pa, const void *pb)
{
	const struct sched_owner *a = pa, *b = pb;

	return a->uid < b->uid ? -1 : a->uid > b->uid;
}

/* Between owners: fewest running, least recently served, oldest job. */
static bool
sched_owner_before(const struct sched_owner *a, const struct sched_owner *b)
{
	if (a->running != b->running)
		return a->running < b->running;
	if (a->last != b->last)
		return a->last < b->last;
	return a->next->id < b->next->id;
}

/*
 * Fails the queued jobs whose dependency can never run.  One pass in id
 * order is enough: a job runs after an older one (submit checks that it
 * exists, and ids only grow), so a chain fails link by link in order.
 */
static void
sched_fail_orphans(struct daemon *d)
{
	struct djob *j;
	char *why;

	for (j = d->jobs; j != NULL; j = j->next) {
		/* A stage is queued before its plan (group.c). */
		if (j->state != JOB_QUEUED || (!job_planned(j) && j->grp == 0))
			continue;
		why = NULL;
		if (sched_ready(d, j, &why) < 0) {
			job_release_runtime(j);
			job_set_state(d, j, JOB_FAILED, why);
		}
		free(why);
	}
}

/*
 * A job in the queue: a pipeline is not, its stages are; nor is a job
 * handed to Slurm, whose place Slurm's queue decides (its reason says
 * how it waits there).
 */
static bool
sched_queued(const struct djob *j)
{
	return j->state == JOB_QUEUED && j->kind != JOB_KIND_PIPELINE &&
	    !slurm_handed(j);
}

/* One owner's queue, for sched_positions. */
struct sched_line {
	uint32_t uid;
	size_t running;
	double last;
	size_t at;		/* its next job in the sorted queue */
	size_t end;
};

static int
sched_queue_cmp(const void *pa, const void *pb)
{
	const struct djob *a = *(struct djob *const *)pa;
	const struct djob *b = *(struct djob *const *)pb;

	if (a->owner != b->owner)
		return a->owner < b->owner ? -1 : 1;
	return sched_before(a, b) ? -1 : 1;
}

static int
sched_line_cmp(const void *key, const void *pb)
{
	uint32_t uid = *(const uint32_t *)key;
	const struct sched_line *b = pb;

	return uid < b->uid ? -1 : uid > b->uid;
}

/*
 * Numbers the queued jobs in the order sched_pick would start them if
 * nothing else changed (no job ending, none submitted) and each were
 * ready: root's jobs of priority above 0, then by turns between owners,
 * a job started counting as running and as its owner's latest.  A job
 * that waits for another still has its place: it says both.  Recomputed
 * only after a change (d->queue_stale); O(n log n + n * owners).
 */
void
sched_positions(struct daemon *d)
{
	struct sched_line *lines, *l, *best;
	struct djob *j, **q;
	size_t n = 0, nl = 0, i, pos = 1;
	double tick = daemon_now();

	if (!d->queue_stale)
		return;
	d->queue_stale = false;
	for (j = d->jobs; j != NULL; j = j->next) {
		j->queue_pos = 0;
		n += sched_queued(j);
	}
	if (n == 0)
		return;
	q = xcalloc(n, sizeof *q);
	lines = xcalloc(n, sizeof *lines);
	for (i = 0, j = d->jobs; j != NULL; j = j->next)
		if (sched_queued(j))
			q[i++] = j;
	qsort(q, n, sizeof *q, sched_queue_cmp);
	for (i = 0; i < n; i++) {
		if (nl == 0 || lines[nl - 1].uid != q[i]->owner) {
			lines[nl].uid = q[i]->owner;
			lines[nl++].at = i;
		}
		lines[nl - 1].end = i + 1;
	}
	for (j = d->jobs; j != NULL; j = j->next) {
		if ((l = bsearch(&j->owner, lines, nl, sizeof *lines,
		    sched_line_cmp)) == NULL)
			continue;
		l->running += j->state == JOB_RUNNING;
		if (j->started > l->last)
			l->last = j->started;
	}
	/* Root's first (sorted by uid, its line is the first). */
	if (lines[0].uid == 0)
		while (lines[0].at < lines[0].end &&
		    q[lines[0].at]->priority > 0)
			q[lines[0].at++]->queue_pos = pos++;
	for (;;) {
		best = NULL;
		for (l = lines; l < lines + nl; l++) {
			if (l->at == l->end)
				continue;
			if (best == NULL || l->running < best->running ||
			    (l->running == best->running && (l->last <
			    best->last || (l->last == best->last &&
			    q[l->at]->id < q[best->at]->id))))
				best = l;
		}
		if (best == NULL)
			break;
		q[best->at++]->queue_pos = pos++;
		best->running++;
		best->last = tick += 1;
	}
	free(lines);
	free(q);
}

/* The job to start next, or NULL when none is eligible. */
static struct djob *
sched_pick(struct daemon *d)
{
	struct sched_owner *v, *best = NULL;
	struct djob *j, *root = NULL, *pick;
	char *why;
	size_t n = 0, i, k;

	for (j = d->jobs; j != NULL; j = j->next)
		n++;
	if (n == 0)
		return NULL;
	v = xcalloc(n, sizeof *v);
	for (i = 0, j = d->jobs; j != NULL; j = j->next, i++) {
		v[i].uid = j->owner;
		v[i].running = j->state == JOB_RUNNING;
		v[i].last = j->started;
		why = NULL;
		if (j->state == JOB_QUEUED && job_planned(j) &&
		    !slurm_handed(j) && sched_ready(d, j, &why) > 0) {
			v[i].next = j;
			if (j->owner == 0 && j->priority > 0 &&
			    sched_before(j, root))
				root = j;
		}
		free(why);
	}
	if (root != NULL) {
		free(v);
		return root;
	}
	/* Gather each owner's figures into its first entry. */
	qsort(v, n, sizeof *v, sched_owner_cmp);
	for (i = 0; i < n; i = k) {
		for (k = i + 1; k < n && v[k].uid == v[i].uid; k++) {
			v[i].running += v[k].running;
			if (v[k].last > v[i].last)
				v[i].last = v[k].last;
			if (v[k].next != NULL && sched_before(v[k].next,
			    v[i].next))
				v[i].next = v[k].next;
		}
		if (v[i].next != NULL && (best == NULL ||
		    sched_owner_before(&v[i], best)))
			best = &v[i];
	}
	pick = best != NULL ? best->next : NULL;
	free(v);
	return pick;
}

void
sched_run(struct daemon *d)
{
	struct djob *j;

	if (d->draining)
		return;
	sched_fail_orphans(d);
	/* Stages whose inputs are now written are planned (group.c). */
	group_plan_waiting(d);
	/* On Slurm, Slurm places the jobs: none waits for another here. */
	while (!d->draining && (d->opts.slurm || d->nrunning <
	    (size_t)d->opts.max_running) && (j = sched_pick(d)) != NULL) {
		/* A job that failed to start fails those after it. */
		if (job_start(d, j) != 0)
			sched_fail_orphans(d);
	}
	d->queue_stale = true;
	if (d->queue_changed != NULL)
		d->queue_changed(d);
}
