/* SPDX-License-Identifier: MIT */
/*
 * retain.c: removing finished jobs' records, on request (op-rm.c,
 * op-clean.c) and by the retention policy (--keep-finished).
 *
 * Only finished jobs go: done, failed or cancelled.  A queued or running
 * job must be cancelled first, and so must an interrupted one, whose
 * staging directory with its finished shards lies beside its output
 * (cancel removes it; forgetting the job would leave it behind).  A job
 * that an unfinished job runs --after stays too, or the later one would
 * fail for want of it.  A pipeline's stages go with their group, and
 * only when every one of them is finished; a stage alone is never
 * removed.  Removing a job deletes its row and its log lines
 * from the store, in one transaction per batch, then its memory; its
 * output is never touched.
 *
 * The policy runs on a timer on the loop thread, at most
 * RETAIN_BATCH jobs at a time, so that a store with a long history
 * cannot stall the loop: a full batch re-arms the timer at once and the
 * loop serves clients in between.  Loop thread only.
 */
#include <stdlib.h>

#include "daemon.h"
#include "xmalloc.h"

#define RETAIN_BATCH 256
/* How often the policy looks: a minute, or the keep time if shorter. */
#define RETAIN_INTERVAL_MS 60000

/* Done, failed or cancelled: nothing more will happen to the job. */
bool
retain_finished(const struct djob *j)
{
	return proto_state_removable(j->state);
}

/* A pipeline's first stage not finished, or NULL. */
static const struct djob *
retain_live_stage(const struct daemon *d, const struct djob *g)
{
	const struct djob *s;

	for (s = d->jobs; s != NULL; s = s->next)
		if (s->grp == g->id && !retain_finished(s))
			return s;
	return NULL;
}

static int
retain_id_cmp(const void *pa, const void *pb)
{
	uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;

	return a < b ? -1 : a > b;
}

/*
 * The ids that unfinished jobs run after, sorted, for retain_has();
 * returns a new array the caller frees.
 */
static uint64_t *
retain_deps(struct daemon *d, size_t *n)
{
	struct djob *j;
	uint64_t *v;
	size_t k = 0;

	size_t i;

	for (j = d->jobs; j != NULL; j = j->next)
		k += !retain_finished(j) ? j->ndeps : 0;
	v = xcalloc(k + 1, sizeof *v);
	*n = 0;
	for (j = d->jobs; j != NULL; j = j->next)
		for (i = 0; !retain_finished(j) && i < j->ndeps; i++)
			v[(*n)++] = j->deps[i];
	qsort(v, *n, sizeof *v, retain_id_cmp);
	return v;
}

/* Is id among the n sorted ids? */
static bool
retain_has(const uint64_t *ids, size_t n, uint64_t id)
{
	return bsearch(&id, ids, n, sizeof *ids, retain_id_cmp) != NULL;
}

/*
 * May j's record be removed?  If not, *why (when why is not NULL) is a
 * new message the caller frees, saying what to do.
 */
bool
retain_removable(struct daemon *d, const struct djob *j, char **why)
{
	const struct prep *p;
	const struct djob *live;
	struct djob *k;

	if (j->grp != 0) {
		if (why != NULL)
			*why = xasprintf("job %llu is a stage of pipeline %llu; "
			    "it goes with its group: remove job %llu",
			    (unsigned long long)j->id,
			    (unsigned long long)j->grp,
			    (unsigned long long)j->grp);
		return false;
	}
	if (j->kind == JOB_KIND_PIPELINE && (live = retain_live_stage(d,
	    j)) != NULL) {
		if (why != NULL)
			*why = xasprintf("stage %llu of pipeline %llu is %s; "
			    "cancel the pipeline first",
			    (unsigned long long)live->id,
			    (unsigned long long)j->id,
			    proto_state_name(live->state));
		return false;
	}
	if (!retain_finished(j)) {
		if (why != NULL)
			*why = xasprintf("job %llu is %s; %s", (unsigned long
			    long)j->id, proto_state_name(j->state),
			    proto_state_resumable(j->state) ? "cancel it "
			    "first, which removes its staging directory, or "
			    "resume it" : "cancel it first");
		return false;
	}
	/* A failed job whose resume is being planned (prep.c) is about to
	 * be queued again. */
	for (p = d->preps; p != NULL; p = p->next) {
		if (p->job == j->id) {
			if (why != NULL)
				*why = xasprintf("job %llu is being resumed",
				    (unsigned long long)j->id);
			return false;
		}
	}
	for (k = d->jobs; k != NULL; k = k->next) {
		if (job_depends_on(k, j->id) && !retain_finished(k)) {
			if (why != NULL)
				*why = xasprintf("job %llu runs after job %llu, "
				    "which is kept until it ends", (unsigned
				    long long)k->id, (unsigned long long)j->id);
			return false;
		}
	}
	return true;
}

/*
 * Removes n removable jobs: their rows and log lines in one transaction,
 * then from memory, in one sweep of the job table and one of the watch
 * list (a finished job's watches have had their last event; this makes
 * sure).  On a store error nothing is removed and -EIO is returned.
 */
int
retain_remove(struct daemon *d, struct djob **v, size_t n)
{
	struct djob **pp, *j;
	struct watch **wp, *w;
	uint64_t *ids;
	size_t i, nall = n, k = 0;
	int rc;

	if (n == 0)
		return 0;
	/* A pipeline's stages go with it. */
	for (j = d->jobs; j != NULL; j = j->next)
		for (i = 0; j->grp != 0 && i < n; i++)
			nall += v[i]->id == j->grp;
	ids = xcalloc(nall + 1, sizeof *ids);
	for (i = 0; i < n; i++)
		ids[i] = v[i]->id;
	for (j = d->jobs; j != NULL; j = j->next)
		for (i = 0; j->grp != 0 && i < n; i++)
			if (v[i]->id == j->grp)
				ids[n + k++] = j->id;
	n = nall;
	if ((rc = store_job_delete(d->store, ids, n)) != 0)
		goto out;
	qsort(ids, n, sizeof *ids, retain_id_cmp);
	for (pp = &d->jobs; (j = *pp) != NULL;) {
		if (retain_has(ids, n, j->id)) {
			*pp = j->next;
			job_free(j);
		} else {
			pp = &j->next;
		}
	}
	for (wp = &d->watches; (w = *wp) != NULL;) {
		if (retain_has(ids, n, w->job)) {
			*wp = w->next;
			watch_free(w);
		} else {
			wp = &w->next;
		}
	}
out:
	free(ids);
	return rc;
}

/*
 * Collects into v (room for max) the removable jobs that match says
 * yes to, oldest first; *more tells whether more would have matched.
 * One pass over the jobs and a sort of the dependencies: O(n log n).
 */
size_t
retain_select(struct daemon *d, bool (*match)(const struct djob *, void *),
    void *arg, struct djob **v, size_t max, bool *more)
{
	struct djob *j;
	uint64_t *deps;
	size_t n = 0, ndeps;

	*more = false;
	deps = retain_deps(d, &ndeps);
	for (j = d->jobs; j != NULL; j = j->next) {
		/* Stages go with their group, once all are finished. */
		if (!retain_finished(j) || retain_has(deps, ndeps, j->id) ||
		    j->grp != 0 || (j->kind == JOB_KIND_PIPELINE &&
		    retain_live_stage(d, j) != NULL) || !match(j, arg))
			continue;
		if (n == max) {
			*more = true;
			break;
		}
		v[n++] = j;
	}
	free(deps);
	return n;
}

/* The policy's test: finished before the cutoff (a double *). */
static bool
retain_old(const struct djob *j, void *arg)
{
	return j->finished > 0 && j->finished < *(double *)arg;
}

/* One batch of the policy; true when it was full (more may be due). */
static bool
retain_purge(struct daemon *d)
{
	struct djob *v[RETAIN_BATCH];
	double cutoff = daemon_now() - (double)d->opts.keep_finished;
	bool more;
	size_t n;

	n = retain_select(d, retain_old, &cutoff, v, RETAIN_BATCH, &more);
	if (retain_remove(d, v, n) != 0) {
		log_warnx("retention: could not remove %zu finished jobs from "
		    "the store; will try again", n);
		return false;
	}
	if (n > 0)
		log_info("retention: removed %zu jobs finished more than %llu "
		    "seconds ago", n, (unsigned long long)d->opts.keep_finished);
	return more;
}

static void
retain_tick(uv_timer_t *t)
{
	struct daemon *d = t->data;

	if (d->draining)
		return;
	/* A full batch: the next one as soon as the loop has served the
	 * clients waiting now.  (A timeout of 0 would run again in this
	 * same pass over the timers: libuv compares with the loop's time,
	 * which does not move within a pass.) */
	if (retain_purge(d))
		uv_timer_start(t, retain_tick, 1, uv_timer_get_repeat(t));
}

/* Starts the policy's timer; with --keep-finished 0, jobs are kept. */
void
retain_start(struct daemon *d)
{
	uint64_t every = RETAIN_INTERVAL_MS;

	uv_timer_init(&d->loop, &d->retain);
	d->retain.data = d;
	if (d->opts.keep_finished == 0)
		return;
	if (d->opts.keep_finished * 1000 < every)
		every = d->opts.keep_finished * 1000;
	uv_timer_start(&d->retain, retain_tick, 0, every);
	/* The policy alone does not keep the loop alive. */
	uv_unref((uv_handle_t *)&d->retain);
}
