/* SPDX-License-Identifier: MIT */
/*
 * group.c: job groups, a multi-stage file (a mergekit-multi pipeline)
 * submitted as one job of kind "pipeline" whose stages are merge jobs of
 * their own (docs/pipelines.md).
 *
 * Submit: the whole file is planned on the pool like any job, with the
 * submitter's descriptors and rights (group_plan: graph_pipeline_plan,
 * the header-only copies of unwritten stages in a private scratch
 * directory beneath the state directory), so every problem of every
 * stage is found before anything is queued.  Accepted (group_accept),
 * the pipeline is a job that never runs; each stage becomes a merge job
 * with an ordinary id, its group's id, its own descriptors (copies of
 * those of the models it reads; a stage it reads is found beneath the
 * stage directory's descriptor) and the ids of the stages it reads as
 * its dependencies.  A stage that is up to date (--lazy) is done at once.
 *
 * A stage whose inputs exist when it is accepted keeps the plan made
 * then; the others are planned again when every stage they read is done
 * (group-late.c, started by the scheduler), on the pool, against what is
 * now on disk, and fail with the problems if that plan fails (the
 * scheduler then fails what reads them).  Independent stages run at the
 * same time, within the one memory budget.
 *
 * The group's state and progress are its stages' (group_refresh): it is
 * running while any runs or waits with others done, done when all are,
 * else failed, cancelled or interrupted as the first stage that ended
 * so.  Cancel and resume act on every stage not done.  Loop thread only,
 * except group_plan.
 */
#include <sys/random.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "xmalloc.h"

/* A private directory for the headers of unwritten stages: beneath the
 * state directory (0700, the daemon's), owned by the user a root daemon
 * acts as, so that the user's thread credentials may write there. */
static int
group_scratch(const struct djob *j, char **name, int *parent, char **cause)
{
	char *path = xasprintf("%s/plan-XXXXXX", j->scratch_parent), *slash;
	int fd;

	*name = NULL;
	*parent = -1;
	if (mkdtemp(path) == NULL ||
	    (fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		*cause = xasprintf("cannot make a scratch directory in the "
		    "state directory: %s", strerror(errno));
		free(path);
		return -1;
	}
	if (geteuid() == 0 && fchown(fd, j->cred.uid, j->cred.gid) == -1)
		log_warn("chown %s", path);
	fchmod(fd, 0711);
	slash = strrchr(path, '/');
	*name = xstrdup(slash + 1);
	*slash = '\0';
	*parent = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(path);
	return fd;
}

/*
 * Pool thread: loads the pipeline and plans every stage (see the top);
 * the pipeline and its stage plans stay with j for group_accept.
 */
int
group_plan(struct djob *j, uint64_t budget, const atomic_bool *cancel,
    struct graph_diags *d, char **cause)
{
	struct graph_pipeline_opts po;
	char *scratch = NULL;
	int parent = -1, rc;

	if (graph_pipeline_load_buffer(j->config_name, j->config,
	    strlen(j->config), j->inter_dir, &j->pipe, d) != 0)
		return -EINVAL;
	memset(&po, 0, sizeof po);
	graph_plan_opts_default(&po.plan);
	po.plan.env.cwd = j->cwd;
	po.plan.dirs = j->dirs;
	po.plan.ndirs = j->ndirs;
	po.plan.cred = &j->cred;
	po.plan.merge = j->opts;
	po.plan.budget = budget;
	po.plan.budget_shared = true;
	po.plan.cancel = cancel;
	po.out = j->pipe->final != (size_t)-1 ? j->out_dir : NULL;
	po.dir_fd = j->inter_fd;
	po.out_fd = j->pipe->final != (size_t)-1 ? j->out_fd : -1;
	po.out_name = j->pipe->final != (size_t)-1 ? j->out_name : NULL;
	po.lazy = j->lazy;
	if ((po.scratch_fd = group_scratch(j, &scratch, &parent, cause)) < 0)
		return -EIO;
	rc = graph_pipeline_plan(j->pipe, &po, &j->splans, d);
	close(po.scratch_fd);
	if (parent >= 0) {
		graph_remove_tree(parent, scratch, NULL);
		close(parent);
	}
	free(scratch);
	if (rc != 0)
		return -EINVAL;
	/* The pipeline's seed, which every stage's derives from: a resume
	 * keeps it. */
	j->opts.seed = j->splans[j->pipe->order[0]].pseed;
	j->opts.has_seed = true;
	return 0;
}

/* The descriptor a stage's entry takes: a copy, or -1 after logging. */
int
group_dup(int fd)
{
	int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);

	if (n == -1)
		log_warn("dup");
	return n;
}

/* Adds a directory entry with a descriptor of its own to s. */
void
group_add_dir(struct djob *s, const char *ref, int fd, const char *rel,
    const char *where)
{
	s->fds = xreallocarray(s->fds, s->nfds + 1, sizeof *s->fds);
	s->fds[s->nfds++] = fd;
	s->dirs = xreallocarray(s->dirs, s->ndirs + 1, sizeof *s->dirs);
	s->dirs[s->ndirs].ref = xstrdup(ref);
	s->dirs[s->ndirs].fd = fd;
	s->dirs[s->ndirs].rel = xstrdup(rel);
	s->dirs[s->ndirs].where = xstrdup(where);
	s->ndirs++;
}

/* from's credentials, their groups copied: each job owns its own. */
void
group_copy_cred(struct djob *to, const struct djob *from)
{
	free(to->groups);
	to->groups = xcalloc(from->cred.ngroups + 1, sizeof *to->groups);
	memcpy(to->groups, from->cred.groups, from->cred.ngroups *
	    sizeof *to->groups);
	to->cred = from->cred;
	to->cred.groups = to->groups;
}

/* The group's directory entry for key, or NULL. */
static const struct graph_source_dir *
group_find_dir(const struct djob *g, const char *key)
{
	size_t i;

	for (i = 0; i < g->ndirs; i++)
		if (strcmp(g->dirs[i].ref, key) == 0)
			return &g->dirs[i];
	return NULL;
}

/*
 * Stage i's runtime: copies of the descriptors of the models it reads
 * (a stage's output, beneath the stage directory), of its output's
 * directory, and the owner's credentials.  -1 when a copy fails.
 */
static int
group_stage_runtime(const struct djob *g, size_t i, struct djob *s)
{
	const struct graph_stage *st = &g->pipe->stages[i];
	const struct graph_source_dir *e;
	const struct graph_ref **refs = NULL;
	char *key, *rel;
	size_t n, k, m, len = strlen(g->inter_dir);
	int fd, rc = 0;

	n = graph_config_refs(st->cfg, &refs);
	for (k = 0; k < 2 * n && rc == 0; k++) {
		if (k % 2 == 1 && refs[k / 2]->lora == NULL)
			continue;
		key = k % 2 == 1 ? graph_ref_adapter_key(refs[k / 2]) :
		    graph_ref_str(refs[k / 2]);
		/* Twice the same reference: one entry does. */
		for (m = 0; m < s->ndirs; m++)
			if (strcmp(s->dirs[m].ref, key) == 0)
				break;
		rel = NULL;
		if (m == s->ndirs && k % 2 == 0 && refs[k / 2]->rev == NULL &&
		    strncmp(refs[k / 2]->path, g->inter_dir, len) == 0 &&
		    refs[k / 2]->path[len] == '/')
			rel = refs[k / 2]->path + len + 1;
		if (m < s->ndirs) {
			/* already there */
		} else if (rel != NULL && strchr(rel, '/') == NULL) {
			if ((fd = group_dup(g->inter_fd)) < 0)
				rc = -1;
			else
				group_add_dir(s, key, fd, rel, g->inter_dir);
		} else if ((e = group_find_dir(g, key)) != NULL) {
			if ((fd = group_dup(e->fd)) < 0)
				rc = -1;
			else
				group_add_dir(s, key, fd, e->rel, e->where);
		}
		free(key);
	}
	free(refs);
	if (rc == 0)
		s->out_fd = group_dup(st->name != NULL ? g->inter_fd :
		    g->out_fd);
	if (s->out_fd < 0)
		rc = -1;
	group_copy_cred(s, g);
	return rc;
}

/*
 * What accepting g adds for its owner's quota: the group and each stage
 * that will run are live jobs, each stage holding at most a descriptor
 * per model and adapter it reads, and one for its output.
 */
void
group_quota(const struct djob *g, size_t *njobs, size_t *nfds)
{
	const struct graph_ref **refs = NULL;
	size_t i, n;

	*njobs = 1;
	*nfds = 0;
	for (i = 0; i < g->pipe->nstages; i++) {
		if (g->splans[i].action == GRAPH_STAGE_FRESH)
			continue;
		n = graph_config_refs(g->pipe->stages[i].cfg, &refs);
		free(refs);
		(*njobs)++;
		*nfds += 2 * n + 1;
	}
}

/* A stage's job, as group_accept makes it (not yet stored). */
static struct djob *
group_stage_job(const struct djob *g, size_t i, const uint64_t *ids)
{
	const struct graph_stage *st = &g->pipe->stages[i];
	const struct graph_stage_plan *sp = &g->splans[i];
	struct graph_plan_summary sum;
	struct djob *s = xcalloc(1, sizeof *s);
	uint64_t r = 0;
	size_t k;

	s->kind = JOB_KIND_MERGE;
	s->owner = g->owner;
	s->owner_gid = g->owner_gid;
	s->user = xstrdup(g->user);
	s->stage = st->name != NULL ? xstrdup(st->name) : NULL;
	s->name = st->name != NULL ? xasprintf("%s/%s", g->name, st->name) :
	    xstrdup(g->name);
	s->grp = g->id;
	s->drop_inter = g->drop_inter;
	s->priority = g->priority;
	s->config = xstrdup(st->cfg->text);
	s->card = graph_pipeline_card(g->pipe, i, g->splans);
	s->config_name = xstrdup(g->config_name);
	s->cwd = xstrdup(g->cwd);
	s->umask = g->umask;
	s->created = g->created;
	s->out_fd = -1;
	s->inter_fd = -1;
	if (st->name != NULL) {
		s->out_name = xstrdup(st->name);
		s->out_dir = xasprintf("%s/%s", g->inter_dir, st->name);
		job_out_ident(s, g->inter_fd);
	} else {
		s->out_name = xstrdup(g->out_name);
		s->out_dir = xstrdup(g->out_dir);
		s->out_dev = g->out_dev;
		s->out_ino = g->out_ino;
	}
	/* Unguessable, as a merge's (op-submit.c): nobody plants it. */
	if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
		r = (uint64_t)(daemon_now() * 1e6) ^ (g->id * 1000003u + i);
	s->staging = xasprintf(".%s.merging-%016llx", s->out_name,
	    (unsigned long long)r);
	s->opts = g->opts;
	s->opts.seed = sp->seed;
	s->opts.has_seed = true;
	/* An earlier run's stage output (it holds our record) is replaced;
	 * the plan refused anything else. */
	s->opts.force = g->opts.force || (st->name != NULL && sp->exists);
	/* The stages it reads; the group's own --after for the first. */
	s->deps = xcalloc(st->ndeps + g->ndeps + 1, sizeof *s->deps);
	for (k = 0; k < st->ndeps; k++)
		s->deps[s->ndeps++] = ids[st->deps[k]];
	for (k = 0; st->ndeps == 0 && k < g->ndeps; k++)
		s->deps[s->ndeps++] = g->deps[k];
	/* What the whole group will write is known now, from the plans. */
	if (sp->plan != NULL) {
		graph_plan_summary(sp->plan, &sum);
		s->prog.bytes_total = sum.bytes_written;
		s->prog.tensors_total = sum.tensors;
		s->prog.shards_total = sum.shards;
	}
	return s;
}

/* May stage i keep the plan made at submit?  Only if it read no
 * header-only copy: every stage it reads was up to date. */
static bool
group_plan_is_real(const struct djob *g, size_t i)
{
	const struct graph_stage *st = &g->pipe->stages[i];
	size_t k;

	for (k = 0; k < st->ndeps; k++)
		if (g->splans[st->deps[k]].action != GRAPH_STAGE_FRESH)
			return false;
	return true;
}

/*
 * Makes stage s (index i) ready to run: its descriptors, and the plan
 * made at submit where that read real inputs (its inputs recorded, or
 * compared on a resume).  false, with *cause, on a failure.
 */
static bool
group_stage_ready(struct djob *g, size_t i, struct djob *s, char **cause)
{
	struct graph_plan_files files;

	if (group_stage_runtime(g, i, s) != 0) {
		*cause = xstrdup("out of descriptors");
		return false;
	}
	if (!group_plan_is_real(g, i))
		return true;	/* planned when its inputs are written */
	s->plan = g->splans[i].plan;
	g->splans[i].plan = NULL;
	graph_plan_files(s->plan, &files);
	return job_record_plan(s, s->opts.seed, &files, cause) == 0;
}

/*
 * A group the store could not record whole: it and its stages leave the
 * daemon's list as they leave the store, and are freed (nobody has seen
 * them: the submitter hears that nothing was queued).
 */
static void
group_forget(struct daemon *d, struct djob *g)
{
	struct djob **pp = &d->jobs, *j;

	while ((j = *pp) != NULL) {
		if (j == g || (j->grp != 0 && j->grp == g->id)) {
			*pp = j->next;
			if (j != g)
				job_free(j);
		} else {
			pp = &j->next;
		}
	}
	d->queue_stale = true;
	job_free(g);
}

/*
 * The group is planned (group_plan): it is stored, then each stage, in
 * an order where each follows those it reads, so that a stage's
 * dependencies have smaller ids.  Returns 0; or -1 with *cause, having
 * recorded none of it and freed g (the daemon's from the call on).
 */
int
group_accept(struct daemon *d, struct djob *g, char **cause)
{
	const struct graph_pipeline *p = g->pipe;
	uint64_t *ids;
	struct djob *s;
	size_t k, i;
	int rc = 0;

	/* One transaction: a kill leaves all of it recorded, or none. */
	if (store_tx(d->store, true) != 0)
		goto fail;
	if (store_job_insert(d->store, g) != 0) {
		store_tx_abort(d->store);
		goto fail;
	}
	job_insert(d, g);
	job_log(d, g, "pipeline of %zu stages submitted by %s (uid %u): %s "
	    "-> %s (stages in %s)", p->nstages, g->user, (unsigned)g->owner,
	    g->config_name, g->out_dir, g->inter_dir);
	ids = xcalloc(p->nstages + 1, sizeof *ids);
	for (k = 0; k < p->nstages; k++) {
		i = p->order[k];
		s = group_stage_job(g, i, ids);
		s->state = g->splans[i].action == GRAPH_STAGE_FRESH ? JOB_DONE :
		    JOB_QUEUED;
		if (s->state == JOB_DONE) {
			s->prog.bytes_done = s->prog.bytes_total;
			s->prog.tensors_done = s->prog.tensors_total;
			s->prog.shards_done = s->prog.shards_total;
			s->started = s->finished = s->created;
		}
		if (store_job_insert(d->store, s) != 0) {
			job_free(s);
			rc = -1;
			break;
		}
		ids[i] = s->id;
		job_insert(d, s);
		if (s->state == JOB_DONE) {
			job_log(d, s, "stage %zu/%zu of pipeline %llu: %s is "
			    "up to date", k + 1, p->nstages,
			    (unsigned long long)g->id, s->out_dir);
			continue;
		}
		job_log(d, s, "stage %zu/%zu of pipeline %llu -> %s", k + 1,
		    p->nstages, (unsigned long long)g->id, s->out_dir);
		if (!group_stage_ready(g, i, s, cause)) {
			job_release_runtime(s);
			job_set_state(d, s, JOB_FAILED, *cause);
			free(*cause);
			*cause = NULL;
		} else {
			store_job_update(d->store, s);
		}
	}
	free(ids);
	if (rc != 0 || store_tx(d->store, false) != 0) {
		/* Whole or not at all: undone in the store and here. */
		store_tx_abort(d->store);
		*cause = xstrdup("cannot record the pipeline's stages; nothing "
		    "was queued");
		group_forget(d, g);
		return -1;
	}
	group_refresh(d, g);
	return 0;
fail:
	*cause = xstrdup("cannot record the job");
	job_free(g);
	return -1;
}

/* Each stage of group g, in id order (NULL at the end). */
static struct djob *
group_next_stage(struct daemon *d, const struct djob *g, struct djob *after)
{
	struct djob *s = after != NULL ? after->next : d->jobs;

	for (; s != NULL; s = s->next)
		if (s->grp == g->id)
			return s;
	return NULL;
}

/*
 * A resume of the group, planned (group_plan): every stage that is not
 * done gets its descriptors again and is queued; the shards its staging
 * directory holds are kept.  Returns how many stages it queued.
 */
size_t
group_resume(struct daemon *d, struct djob *g)
{
	const struct graph_pipeline *p = g->pipe;
	struct djob *s;
	size_t i, n = 0;
	char *cause = NULL;

	for (s = group_next_stage(d, g, NULL); s != NULL;
	    s = group_next_stage(d, g, s)) {
		if (!proto_state_resumable(s->state))
			continue;
		for (i = 0; i < p->nstages; i++)
			if ((p->stages[i].name == NULL && s->stage == NULL) ||
			    (p->stages[i].name != NULL && s->stage != NULL &&
			    strcmp(p->stages[i].name, s->stage) == 0))
				break;
		if (i == p->nstages)
			continue;
		job_release_runtime(s);
		if (!group_stage_ready(g, i, s, &cause)) {
			job_release_runtime(s);
			job_set_state(d, s, JOB_FAILED, cause);
			free(cause);
			cause = NULL;
			continue;
		}
		job_log(d, s, "resumed with its pipeline %llu",
		    (unsigned long long)g->id);
		job_set_state(d, s, JOB_QUEUED, NULL);
		n++;
	}
	return n;
}

/*
 * The group's state and progress from its stages; told to its watchers
 * (a progress event at most as often as a stage's, the last when it
 * ends).
 */
void
group_refresh(struct daemon *d, struct djob *g)
{
	struct djob *s;
	bool running = false, queued = false, done = false;
	const struct djob *ended = NULL;
	enum job_state st;
	char *why = NULL;

	memset(&g->prog, 0, sizeof g->prog);
	for (s = group_next_stage(d, g, NULL); s != NULL;
	    s = group_next_stage(d, g, s)) {
		g->prog.bytes_total += s->prog.bytes_total;
		g->prog.bytes_done += s->prog.bytes_done;
		g->prog.tensors_total += s->prog.tensors_total;
		g->prog.tensors_done += s->prog.tensors_done;
		g->prog.shards_total += s->prog.shards_total;
		g->prog.shards_done += s->prog.shards_done;
		g->prog.job_memory += s->state == JOB_RUNNING ?
		    s->prog.job_memory : 0;
		running |= s->state == JOB_RUNNING;
		queued |= s->state == JOB_QUEUED;
		done |= s->state == JOB_DONE;
		if (proto_state_final(s->state) && s->state != JOB_DONE &&
		    (ended == NULL || s->finished < ended->finished))
			ended = s;
		if (s->started > 0 && (g->started == 0 ||
		    s->started < g->started))
			g->started = s->started;
	}
	/* Some ended, others wait: it is under way, not queued. */
	if (running || (queued && (done || ended != NULL)))
		st = JOB_RUNNING;
	else if (queued)
		st = JOB_QUEUED;
	else if (ended != NULL)
		st = ended->state;
	else
		st = JOB_DONE;
	if (st == g->state) {
		job_note_progress(g, &g->prog);
		return;
	}
	if (ended != NULL && st == ended->state)
		why = xasprintf("stage %s (job %llu) %s%s%s", ended->stage ?
		    ended->stage : "(final)", (unsigned long long)ended->id,
		    proto_state_name(ended->state), ended->error ? ": " : "",
		    ended->error ? ended->error : "");
	job_set_state(d, g, st, why);
	free(why);
}

/* Cancels every stage that may be. */
void
group_cancel(struct daemon *d, struct djob *g)
{
	struct djob *s;

	for (s = group_next_stage(d, g, NULL); s != NULL;
	    s = group_next_stage(d, g, s))
		job_cancel(d, s);
	group_refresh(d, g);
}

/* The record a stage's output holds (GRAPH_STAGE_MANIFEST). */
char *
group_stage_manifest(struct daemon *d, const struct djob *s)
{
	const struct djob *g = job_find(d, s->grp);

	if (g == NULL || s->plan == NULL)
		return NULL;
	return graph_stage_manifest(s->stage, s->config, s->plan,
	    g->opts.seed);
}

/* Stage named name of group g, or NULL. */
static struct djob *
group_stage_named(struct daemon *d, const struct djob *g, const char *name)
{
	struct djob *s;

	for (s = group_next_stage(d, g, NULL); s != NULL;
	    s = group_next_stage(d, g, s))
		if (s->stage != NULL && strcmp(s->stage, name) == 0)
			return s;
	return NULL;
}

/*
 * --no-keep-intermediates: stage j is done; each stage output it read
 * that no other stage still needs goes, removed beneath the stage
 * directory's descriptor with the owner's rights.  A stage no other reads
 * is a result and stays.  Called before j's descriptors are released.
 */
void
group_drop_read(struct daemon *d, struct djob *j)
{
	const struct graph_source_dir *e;
	struct djob *g, *src, *k;
	size_t i;
	bool needed;

	if (!j->drop_inter || (g = job_find(d, j->grp)) == NULL)
		return;
	for (i = 0; i < j->ndirs; i++) {
		e = &j->dirs[i];
		if (strcmp(e->where, g->inter_dir) != 0 ||
		    (src = group_stage_named(d, g, e->rel)) == NULL ||
		    src->state != JOB_DONE)
			continue;
		needed = false;
		for (k = group_next_stage(d, g, NULL); k != NULL;
		    k = group_next_stage(d, g, k))
			needed |= k != j && job_depends_on(k, src->id) &&
			    k->state != JOB_DONE;
		if (needed)
			continue;
		graph_remove_tree(e->fd, e->rel, &j->cred);
		job_log(d, src, "%s removed: every stage reading it is done "
		    "(--no-keep-intermediates)", src->out_dir);
	}
}

/* The pipeline's runtime: its stage plans and the pipeline itself. */
void
group_release(struct djob *g)
{
	if (g->pipe != NULL)
		graph_stage_plans_free(g->splans, g->pipe->nstages);
	g->splans = NULL;
	graph_pipeline_free(g->pipe);
	g->pipe = NULL;
}
