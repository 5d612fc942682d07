/* SPDX-License-Identifier: MIT */
/*
 * group-late.c: a pipeline's stage planned when the stages it reads are
 * done (group.c's top says why): on the pool, for a copy of the stage
 * with copies of its descriptors (the loop thread may show, cancel or
 * remove the stage meanwhile), adopted when it is back if the stage is
 * still queued; a failed plan fails the stage with its problems.  The
 * scheduler starts them (group_plan_waiting); a cancel or a drain stops
 * them (group_stop_plans).  prep.c plans for a requester's connection;
 * these have none, and their result goes to no one but the stage.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "xmalloc.h"

/* A stage being planned on the pool. */
struct group_late {
	uv_work_t work;
	struct daemon *d;
	uint64_t job;
	struct djob *s;		/* the shadow planned */
	uint64_t budget;
	int threads;
	atomic_bool cancel;
	int rc;
	struct graph_diags diags;
	char *cause;
	struct group_late *next;	/* the daemon's list */
};

#define container_of(p, t, m) ((t *)((char *)(p) - offsetof(t, m)))

static void
group_late_work(uv_work_t *w)
{
	struct group_late *l = container_of(w, struct group_late, work);

	l->rc = job_plan(l->s, l->budget, l->threads, &l->cancel, &l->diags,
	    &l->cause);
}

static void
group_late_after(uv_work_t *w, int status)
{
	struct group_late *l = container_of(w, struct group_late, work);
	struct daemon *d = l->d;
	struct djob *j = job_find(d, l->job);
	struct group_late **pp;
	char *why;

	(void)status;
	d->nplanning--;
	for (pp = &d->lates; *pp != NULL; pp = &(*pp)->next)
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	if (j != NULL)
		j->planning = false;
	if (j == NULL || j->state != JOB_QUEUED || d->draining) {
		/* Cancelled, removed or stopping meanwhile. */
	} else if (l->rc != 0) {
		why = l->diags.nerrors > 0 ? graph_diags_join(&l->diags) :
		    xstrdup(l->cause != NULL ? l->cause : "it cannot be "
		    "planned");
		job_release_runtime(j);
		job_set_state(d, j, JOB_FAILED, why);
		free(why);
	} else {
		job_adopt(j, l->s);
		job_log(d, j, "planned against the stages it reads");
	}
	job_free(l->s);
	graph_diags_fini(&l->diags);
	free(l->cause);
	free(l);
	sched_run(d);
	daemon_maybe_finish(d);
}

/* A copy of stage j with copies of its descriptors, for planning. */
static struct djob *
group_shadow(const struct djob *j)
{
	struct djob *s = job_shadow(j);
	size_t i;
	int fd;

	s->grp = j->grp;
	for (i = 0; i < j->ndirs; i++) {
		if ((fd = group_dup(j->dirs[i].fd)) < 0)
			continue;
		group_add_dir(s, j->dirs[i].ref, fd, j->dirs[i].rel,
		    j->dirs[i].where);
	}
	s->out_fd = j->out_fd >= 0 ? group_dup(j->out_fd) : -1;
	group_copy_cred(s, j);
	return s;
}

/*
 * Starts planning each queued stage whose stages are all done and which
 * has no plan yet (it read header-only copies at submit).
 */
void
group_plan_waiting(struct daemon *d)
{
	struct group_late *l;
	struct djob *j;
	char *why;

	for (j = d->jobs; j != NULL && !d->draining; j = j->next) {
		if (j->grp == 0 || j->state != JOB_QUEUED || job_planned(j) ||
		    j->planning || j->ndirs == 0)
			continue;
		why = NULL;
		if (sched_ready(d, j, &why) <= 0) {
			free(why);
			continue;
		}
		l = xcalloc(1, sizeof *l);
		l->d = d;
		l->job = j->id;
		l->s = group_shadow(j);
		l->budget = d->opts.memory;
		l->threads = d->opts.threads;
		atomic_init(&l->cancel, false);
		graph_diags_init(&l->diags);
		j->planning = true;
		d->nplanning++;
		l->next = d->lates;
		d->lates = l;
		uv_queue_work(&d->loop, &l->work, group_late_work,
		    group_late_after);
	}
}

/*
 * Stops the late plans of job id (0: all of them, for a drain) at their
 * next model, shard or tensor; the result is dropped when it is back.
 */
void
group_stop_plans(struct daemon *d, uint64_t id)
{
	struct group_late *l;

	for (l = d->lates; l != NULL; l = l->next)
		if (id == 0 || l->job == id)
			atomic_store(&l->cancel, true);
}
