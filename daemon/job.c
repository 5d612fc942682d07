/* SPDX-License-Identifier: MIT */
/*
 * job.c: the daemon's jobs, from submit to done.
 *
 * A job is planned when it is submitted (or resumed), from the
 * descriptors its client passed and with the client's credentials, so a
 * config that cannot succeed is rejected at once with every problem.  The
 * scheduler (sched.c) starts queued jobs on the shared executor; the
 * executor's callbacks update the job and the store, and run the
 * scheduler again when a job ends.  Every state change is one store
 * update.  This file knows no connection: who hears of a change (the
 * watchers, watch.c) and what a running job's end means to a drain
 * (merged.c) are the daemon's hooks, job_changed and job_stopped, so the
 * life cycle runs without sockets.  job.c and sched.c do call each other
 * (a job's end runs the scheduler, which starts jobs): both are the life
 * cycle, and a hook would have to keep two orders, that a cancel runs the
 * scheduler but not the drain check (a drain could close the connection
 * before the cancel's reply), and that a start that fails inside the
 * scheduler does not run it again.  Loop thread only, except job_plan(),
 * which prep.c runs on the pool with a job nobody else can reach.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "daemon.h"
#include "xmalloc.h"

/* Watchers hear progress at most this often, the store once a second. */
#define JOB_EVENT_INTERVAL 0.2
#define JOB_STORE_INTERVAL 1.0

struct djob *
job_find(struct daemon *d, uint64_t id)
{
	struct djob *j;

	for (j = d->jobs; j != NULL; j = j->next)
		if (j->id == id)
			return j;
	return NULL;
}

/* Does j run after job id? */
bool
job_depends_on(const struct djob *j, uint64_t id)
{
	size_t i;

	for (i = 0; i < j->ndeps; i++)
		if (j->deps[i] == id)
			return true;
	return false;
}

/* Keeps the list ordered by id: the queue table reads in that order. */
void
job_insert(struct daemon *d, struct djob *j)
{
	struct djob **pp;

	j->daemon = d;
	for (pp = &d->jobs; *pp != NULL && (*pp)->id < j->id;
	    pp = &(*pp)->next)
		;
	j->next = *pp;
	*pp = j;
}

void
job_release_runtime(struct djob *j)
{
	size_t i;

	graph_plan_free(j->plan);
	j->plan = NULL;
	graph_config_free(j->cfg);
	j->cfg = NULL;
	graph_extract_free(j->xplan);
	j->xplan = NULL;
	for (i = 0; i < j->nfds; i++)
		if (j->fds[i] != -1)
			close(j->fds[i]);
	free(j->fds);
	j->fds = NULL;
	j->nfds = 0;
	for (i = 0; i < j->ndirs; i++) {
		free((char *)j->dirs[i].ref);
		free((char *)j->dirs[i].rel);
		free((char *)j->dirs[i].where);
	}
	free(j->dirs);
	j->dirs = NULL;
	j->ndirs = 0;
	if (j->out_fd != -1)
		close(j->out_fd);
	j->out_fd = -1;
	if (j->inter_fd >= 0)
		close(j->inter_fd);
	j->inter_fd = -1;
	group_release(j);
	free(j->scratch_parent);
	j->scratch_parent = NULL;
	free(j->groups);
	j->groups = NULL;
}

void
job_free(struct djob *j)
{
	job_release_runtime(j);
	free(j->user);
	free(j->name);
	free(j->config);
	free(j->config_name);
	free(j->cwd);
	free(j->out_dir);
	free(j->out_name);
	free(j->staging);
	free(j->inputs);
	free(j->shards_done);
	free(j->error);
	free(j->on_done);
	free(j->card);
	free(j->slurm_state);
	free(j->slurm_reason);
	free(j->slurm_verify);
	free(j->deps);
	free(j->stage);
	free(j->inter_dir);
	free(j);
}

void
job_log(struct daemon *d, struct djob *j, const char *fmt, ...)
{
	va_list ap;
	char *line, *esc;

	va_start(ap, fmt);
	line = xvasprintf(fmt, ap);
	va_end(ap);
	/* Lines carry client text (paths, names): escaped in the log. */
	esc = proto_escape(line, strlen(line), 1024);
	log_info("job %llu: %s", (unsigned long long)j->id, esc);
	free(esc);
	store_log(d->store, j->id, daemon_now(), line);
	free(line);
}

/* Tells the rest of the daemon through its hook, if it set one. */
void
job_changed(struct daemon *d, struct djob *j, bool final)
{
	if (d->job_changed != NULL)
		d->job_changed(d, j, final);
}

void
job_set_state(struct daemon *d, struct djob *j, enum job_state s,
    const char *error)
{
	struct djob *g;

	/* Resumed: a batch job it had is over; a new one will come. */
	if (s == JOB_QUEUED && proto_state_final(j->state))
		slurm_forget(j);
	j->state = s;
	d->queue_stale = true;
	if (s == JOB_QUEUED)
		j->finished = 0;	/* resumed */
	if (s == JOB_RUNNING)
		j->started = daemon_now();
	if (proto_state_final(s)) {
		j->finished = daemon_now();
		slurm_job_final(d, j);
	}
	free(j->error);
	j->error = error != NULL ? xstrdup(error) : NULL;
	store_job_update(d->store, j);
	job_log(d, j, "%s%s%s", proto_state_name(s), error ? ": " : "",
	    error ? error : "");
	job_changed(d, j, proto_state_final(s));
	hook_job_ended(d, j);
	/* A stage's group follows its stages. */
	if (j->grp != 0 && (g = job_find(d, j->grp)) != NULL)
		group_refresh(d, g);
}

/* The files a plan reads, with their sizes and times, as JSON: the
 * store's "inputs" column, not a protocol object. */
static char *
job_inputs_json(const struct graph_plan_files *files)
{
	cJSON *arr = cJSON_CreateArray(), *o;
	char *s;
	size_t i;

	for (i = 0; i < files->n; i++) {
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "path", files->v[i].path);
		cJSON_AddNumberToObject(o, "size", (double)files->v[i].size);
		cJSON_AddNumberToObject(o, "mtime_ns",
		    (double)files->v[i].mtime_ns);
		cJSON_AddItemToArray(arr, o);
	}
	s = cJSON_PrintUnformatted(arr);
	cJSON_Delete(arr);
	return s;
}

/* Planned, with its descriptors: it may start. */
bool
job_planned(const struct djob *j)
{
	return j->plan != NULL || j->xplan != NULL;
}

/* Whether a list of inputs holds a side file (a tokenizer's...). */
static bool
job_inputs_have_side(const cJSON *a)
{
	const cJSON *x;

	cJSON_ArrayForEach(x, a)
		if (graph_is_side_file(cJSON_GetStringValue(
		    cJSON_GetObjectItem(x, "path"))))
			return true;
	return false;
}

/*
 * A resumed job must read exactly the files it was planned with.  A
 * job recorded before side files were inputs (a tokenizer's, ...) lists
 * weights only: such a list is compared on its own files, and the side
 * files found now are taken as they are.
 */
static int
job_inputs_same(const char *was, const char *now, char **cause)
{
	cJSON *a = cJSON_Parse(was), *b = cJSON_Parse(now), *x = NULL, *y;
	const char *path, *xpath;
	bool weights_only;
	int rc = 0, i, k, n, m, found = 0;

	n = cJSON_GetArraySize(a);
	m = cJSON_GetArraySize(b);
	weights_only = a != NULL && !job_inputs_have_side(a);
	for (k = 0; a != NULL && b != NULL && k < m && rc == 0; k++) {
		y = cJSON_GetArrayItem(b, k);
		path = cJSON_GetStringValue(cJSON_GetObjectItem(y, "path"));
		for (i = 0; i < n; i++) {
			x = cJSON_GetArrayItem(a, i);
			xpath = cJSON_GetStringValue(cJSON_GetObjectItem(x,
			    "path"));
			if (path != NULL && xpath != NULL && strcmp(path,
			    xpath) == 0)
				break;
		}
		if (i < n) {
			found++;
			if (!cJSON_Compare(x, y, 1)) {
				*cause = xasprintf("input %s changed since the "
				    "job was submitted (size or modification "
				    "time differs); submit it again", path);
				rc = -ESTALE;
			}
		} else if (!weights_only || !graph_is_side_file(path)) {
			break;
		}
	}
	if (rc == 0 && (a == NULL || b == NULL || k < m || found != n)) {
		*cause = xstrdup("the job's inputs are not the files it was "
		    "submitted with");
		rc = -ESTALE;
	}
	cJSON_Delete(a);
	cJSON_Delete(b);
	return rc;
}

static int
job_dirs(struct djob *j, const struct cJSON *models, char **cause)
{
	const cJSON *m;
	const char *ref, *rel, *path;
	uint64_t fd;
	size_t n = (size_t)cJSON_GetArraySize(models);

	if (!cJSON_IsArray(models) || n == 0 || n > PROTO_MAX_FDS) {
		*cause = xstrdup("'models' must list the models' directories");
		return -EINVAL;
	}
	j->dirs = xcalloc(n, sizeof *j->dirs);
	cJSON_ArrayForEach(m, models) {
		if (!msg_get_str(m, PROTO_F_REF, &ref) ||
		    !msg_get_str(m, PROTO_F_REL, &rel) ||
		    !msg_get_u64(m, PROTO_F_FD, &fd) || fd >= j->nfds ||
		    j->fds[fd] < 0) {	/* the output's, moved out */
			*cause = xstrdup("a 'models' entry needs ref, rel and "
			    "the index of a descriptor sent with the request");
			return -EINVAL;
		}
		j->dirs[j->ndirs].ref = xstrdup(ref);
		j->dirs[j->ndirs].rel = xstrdup(rel);
		j->dirs[j->ndirs].where = xstrdup(msg_get_str(m, PROTO_F_PATH,
		    &path) ? path : ref);
		j->dirs[j->ndirs].fd = j->fds[fd];
		j->ndirs++;
	}
	return 0;
}

/* j's credentials: p's identity and groups (copied). */
static void
job_set_cred(struct djob *j, const struct peer *p)
{
	free(j->groups);
	j->groups = xcalloc(p->ngroups + 1, sizeof *j->groups);
	memcpy(j->groups, p->groups, p->ngroups * sizeof *p->groups);
	j->cred.uid = p->uid;
	j->cred.gid = p->gid;
	j->cred.groups = j->groups;
	j->cred.ngroups = p->ngroups;
}

/*
 * j's credentials as its owner's, with the groups the user database
 * lists: for work done with nobody asking (a Slurm job reattached after
 * a restart), or for root acting on the owner's behalf.
 */
void
job_owner_cred_db(struct djob *j)
{
	struct passwd pw, *res = NULL;
	struct peer owner;
	char buf[4096];

	memset(&owner, 0, sizeof owner);
	owner.uid = j->owner;
	owner.gid = j->owner_gid;
	if (getpwuid_r(j->owner, &pw, buf, sizeof buf, &res) == 0 &&
	    res != NULL)
		peer_user_groups(pw.pw_name, pw.pw_gid, &owner);
	job_set_cred(j, &owner);
	free(owner.groups);
}

/*
 * A job works with its owner's rights, also when root resumes it: the
 * peer's own credentials when the owner asks, else the owner's as the
 * user database lists them.
 */
static void
job_owner_cred(struct djob *j, const struct peer *p)
{
	if (p->uid != j->owner)
		job_owner_cred_db(j);
	else
		job_set_cred(j, p);
}

/* Records the identity of j's output's parent, open at fd. */
void
job_out_ident(struct djob *j, int fd)
{
	struct stat st;

	if (fd >= 0 && fstat(fd, &st) == 0) {
		j->out_dev = (uint64_t)st.st_dev;
		j->out_ino = (uint64_t)st.st_ino;
	}
}

/*
 * The live merge job (queued or running) that writes name in the
 * directory (dev, ino), or NULL: a second job there would fail at its
 * end, or replace the first one's result.
 */
struct djob *
job_out_clash(struct daemon *d, uint64_t dev, uint64_t ino, const char *name)
{
	struct djob *k;

	if (dev == 0 && ino == 0)
		return NULL;
	for (k = d->jobs; k != NULL; k = k->next)
		if (proto_state_live(k->state) &&
		    k->kind != JOB_KIND_PIPELINE && k->out_dev == dev &&
		    k->out_ino == ino && k->out_name != NULL &&
		    strcmp(k->out_name, name) == 0)
			return k;
	return NULL;
}

/*
 * Gives j the descriptors of its request: takes ownership of the nfds
 * descriptors (out_fd is the index of the output's parent), reads the
 * models' list and takes the owner's credentials.  Loop thread: it reads
 * the request.  A bad request gets *cause; the descriptors are the job's
 * either way, closed when its runtime is released.
 */
int
job_take_request(struct djob *j, const struct peer *p, const int *fds,
    size_t nfds, const struct cJSON *models, int out_fd, char **cause)
{
	j->fds = xcalloc(nfds + 1, sizeof *j->fds);
	memcpy(j->fds, fds, nfds * sizeof *fds);
	j->nfds = nfds;
	j->out_fd = -1;
	if (out_fd < 0 || (size_t)out_fd >= nfds) {
		*cause = xstrdup("'out_fd' must index a descriptor sent with "
		    "the request");
		return -EINVAL;
	}
	/* The output's descriptor moves out of the models' list. */
	j->out_fd = j->fds[out_fd];
	j->fds[out_fd] = -1;
	job_out_ident(j, j->out_fd);
	job_owner_cred(j, p);
	j->cred.umask = j->umask;
	return job_dirs(j, models, cause);
}

/*
 * A pipeline's stage directory: the descriptor at the request's
 * "intermediate_fd" moves to j (as the output's does), and no model
 * entry may use it.
 */
int
job_take_inter(struct djob *j, const struct cJSON *req, char **cause)
{
	uint64_t idx;
	size_t i;

	if (!msg_get_u64(req, PROTO_F_INTER_FD, &idx) || idx >= j->nfds ||
	    j->fds[idx] == -1) {
		*cause = xstrdup("'intermediate_fd' must index a descriptor "
		    "sent with the request, not the output's");
		return -EINVAL;
	}
	for (i = 0; i < j->ndirs; i++)
		if (j->dirs[i].fd == j->fds[idx]) {
			*cause = xstrdup("'intermediate_fd' is a model's "
			    "descriptor");
			return -EINVAL;
		}
	j->inter_fd = j->fds[idx];
	j->fds[idx] = -1;
	return graph_stage_dir_check(j->inter_fd, j->cred.uid,
	    j->inter_dir != NULL ? j->inter_dir : "(the stage directory)",
	    cause);
}

/*
 * Plans j: loads its config and builds the plan from the descriptors and
 * with the credentials job_take_request() gave it, fixes its seed and
 * records (or, for a resume, compares) the files it reads.  This is the
 * one function that runs on a pool thread (prep.c), with j private to it:
 * it touches nothing but j, and the engine.  budget is the daemon's
 * --memory, which the job's own cap may narrow; cancel stops it early
 * (-ECANCELED).  Problems go to d (planning) or *cause.
 */
int
job_plan(struct djob *j, uint64_t budget, int threads,
    const atomic_bool *cancel, struct graph_diags *d, char **cause)
{
	struct graph_plan_summary sum;
	struct graph_plan_files files;
	struct graph_plan_opts o;
	int rc;

	if (j->kind == JOB_KIND_EXTRACT_LORA)
		return job_plan_extract(j, budget, threads, cancel, d, cause);
	if (j->kind == JOB_KIND_PIPELINE)
		return group_plan(j, budget, cancel, d, cause);
	if (graph_config_load_buffer(j->config_name, j->config,
	    strlen(j->config), &j->cfg, d) != 0)
		return -EINVAL;
	/* A stage's "name" is its pipeline's, not a key to warn of. */
	if (j->grp != 0)
		j->cfg->has_name = false;
	graph_plan_opts_default(&o);
	o.env.cwd = j->cwd;
	o.dirs = j->dirs;
	o.ndirs = j->ndirs;
	o.cred = &j->cred;
	o.merge = j->opts;
	o.budget = budget;
	o.budget_shared = true;
	o.cancel = cancel;
	o.card_pipeline = j->card;
	if ((rc = graph_plan_build(j->cfg, &o, &j->plan, d)) != 0)
		return rc == -ECANCELED ? rc : -EINVAL;
	graph_plan_summary(j->plan, &sum);
	graph_plan_files(j->plan, &files);
	return job_record_plan(j, sum.seed, &files, cause);
}

/*
 * What a plan of any kind fixes: its seed (a resume uses the same one)
 * and the files it reads (files, which this frees), recorded or,
 * resuming (j->inputs set), checked to be the ones it was submitted
 * with.  Pool thread, with j private to it.
 */
int
job_record_plan(struct djob *j, uint64_t seed, struct graph_plan_files *files,
    char **cause)
{
	char *inputs = job_inputs_json(files);
	int rc;

	graph_plan_files_fini(files);
	j->opts.seed = seed;
	j->opts.has_seed = true;

	if (j->inputs != NULL && (rc = job_inputs_same(j->inputs, inputs,
	    cause)) != 0) {
		free(inputs);
		return rc;
	}
	free(j->inputs);
	j->inputs = inputs;
	return 0;
}

/*
 * A job of its own for planning a resume of j: what planning reads,
 * copied, so that the worker shares nothing with j, which the loop thread
 * may show, cancel or resume meanwhile.  The caller owns it.
 */
struct djob *
job_shadow(const struct djob *j)
{
	struct djob *s = xcalloc(1, sizeof *s);

	s->id = j->id;
	s->kind = j->kind;
	s->owner = j->owner;	/* whose rights it is planned with */
	s->owner_gid = j->owner_gid;
	s->umask = j->umask;
	s->out_fd = -1;
	s->config = xstrdup(j->config);
	s->config_name = xstrdup(j->config_name ? j->config_name :
	    "config.yml");
	s->cwd = xstrdup(j->cwd ? j->cwd : "");
	s->opts = j->opts;
	s->inputs = j->inputs != NULL ? xstrdup(j->inputs) : NULL;
	s->inter_fd = -1;
	s->inter_dir = j->inter_dir != NULL ? xstrdup(j->inter_dir) : NULL;
	s->name = j->name != NULL ? xstrdup(j->name) : NULL;
	s->grp = j->grp;
	s->card = j->card != NULL ? xstrdup(j->card) : NULL;
	s->deps = xcalloc(j->ndeps + 1, sizeof *s->deps);
	memcpy(s->deps, j->deps, j->ndeps * sizeof *s->deps);
	s->ndeps = j->ndeps;
	return s;
}

/*
 * Moves the runtime a shadow was planned with (its descriptors,
 * credentials, config and plan), its seed and its inputs into j, which
 * must have none; the shadow keeps none of it.  Loop thread.
 */
void
job_adopt(struct djob *j, struct djob *s)
{
	job_release_runtime(j);
	j->cfg = s->cfg;
	j->plan = s->plan;
	j->xplan = s->xplan;
	j->fds = s->fds;
	j->nfds = s->nfds;
	j->dirs = s->dirs;
	j->ndirs = s->ndirs;
	j->out_fd = s->out_fd;
	j->out_dev = s->out_dev;
	j->out_ino = s->out_ino;
	j->groups = s->groups;
	j->cred = s->cred;
	j->opts.seed = s->opts.seed;
	j->opts.has_seed = s->opts.has_seed;
	j->inter_fd = s->inter_fd;
	j->pipe = s->pipe;
	j->splans = s->splans;
	s->inter_fd = -1;
	s->pipe = NULL;
	s->splans = NULL;
	free(j->inputs);
	j->inputs = s->inputs;
	s->cfg = NULL;
	s->plan = NULL;
	s->xplan = NULL;
	s->fds = NULL;
	s->nfds = 0;
	s->dirs = NULL;
	s->ndirs = 0;
	s->out_fd = -1;
	s->groups = NULL;
	memset(&s->cred, 0, sizeof s->cred);
	s->inputs = NULL;
}

/* A running job's progress, of either kind: persisted and told now
 * and then. */
void
job_note_progress(struct djob *j, const struct graph_progress *g)
{
	struct daemon *d = j->daemon;
	double now = daemon_now();

	struct djob *grp;
	/* Waiting for memory, or no longer: its watchers hear it now. */
	bool waits = (g->memory_wait != 0) != (j->prog.memory_wait != 0);

	j->prog = *g;
	if (now - j->last_store >= JOB_STORE_INTERVAL) {
		j->last_store = now;
		store_job_update(d->store, j);
	}
	if (waits || now - j->last_event >= JOB_EVENT_INTERVAL) {
		j->last_event = now;
		job_changed(d, j, false);
		if (j->grp != 0 && (grp = job_find(d, j->grp)) != NULL)
			group_refresh(d, grp);
	}
}

static void
job_on_progress(struct graph_job *gj, const struct graph_progress *g,
    void *arg)
{
	(void)gj;
	job_note_progress(arg, g);
}

/* A shard is durably on disk: record it, so a resume skips it. */
static void
job_on_shard(struct graph_job *gj, size_t shard, void *arg)
{
	struct djob *j = arg;

	(void)gj;
	if (j->shards_done != NULL && shard < strlen(j->shards_done))
		j->shards_done[shard] = '1';
	store_job_update(j->daemon->store, j);
}

/*
 * The staging directory exists: its identity is committed now, on the
 * loop thread, before the job can publish it (job_was_published).
 */
void
job_note_staged(struct djob *j, uint64_t dev, uint64_t ino)
{
	if (j->stage_dev == dev && j->stage_ino == ino)
		return;
	j->stage_dev = dev;
	j->stage_ino = ino;
	store_job_update(j->daemon->store, j);
}

static void
job_on_staged(struct graph_job *gj, uint64_t dev, uint64_t ino, void *arg)
{
	(void)gj;
	job_note_staged(arg, dev, ino);
}

/*
 * The identities of owner's finished outputs: what a daemon writing as
 * itself lets that user replace with --force (struct graph_replace).
 */
struct graph_ident *
job_own_outputs(const struct daemon *d, uint32_t owner, size_t *n)
{
	const struct djob *j;
	struct graph_ident *v;
	size_t k = 0;

	for (j = d->jobs; j != NULL; j = j->next)
		k += j->owner == owner && j->state == JOB_DONE &&
		    j->stage_ino != 0;
	v = xcalloc(k + 1, sizeof *v);
	*n = 0;
	for (j = d->jobs; j != NULL; j = j->next) {
		if (j->owner != owner || j->state != JOB_DONE ||
		    j->stage_ino == 0)
			continue;
		v[*n].dev = j->stage_dev;
		v[*n].ino = j->stage_ino;
		(*n)++;
	}
	return v;
}

static bool
job_same_dir(int dfd, const char *name, const struct djob *j)
{
	struct stat st;

	return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISDIR(st.st_mode) && (uint64_t)st.st_dev == j->stage_dev &&
	    (uint64_t)st.st_ino == j->stage_ino;
}

/*
 * A daemon killed between renaming the staging directory into place and
 * recording the job done leaves a job that looks interrupted, and whose
 * destination now exists.  The rename keeps the directory's identity, so
 * a destination with the recorded one is this job's own finished output:
 * the job is done.  After a --force exchange the staging name holds the
 * replaced output, which the publish would have removed next.
 */
bool
job_was_published(struct djob *j)
{
	if (j->stage_ino == 0 || !job_same_dir(j->out_fd, j->out_name, j))
		return false;
	if (j->opts.force && !job_same_dir(j->out_fd, j->staging, j))
		graph_remove_tree(j->out_fd, j->staging, &j->cred);
	return true;
}

/* A running job of either kind ended: its state, then the scheduler. */
void
job_ended(struct djob *j, int rc, const char *err)
{
	struct daemon *d = j->daemon;
	enum job_state s;

	d->nrunning--;
	s = rc == 0 ? JOB_DONE : rc == -ECANCELED ? JOB_CANCELLED :
	    rc == -EINTR ? JOB_INTERRUPTED : JOB_FAILED;
	/* A stage's inputs that no stage needs any more may go. */
	if (rc == 0 && j->grp != 0)
		group_drop_read(d, j);
	job_release_runtime(j);
	job_set_state(d, j, s, rc == 0 || rc == -ECANCELED ? NULL :
	    rc == -EINTR ? "interrupted by the daemon stopping; resume it "
	    "with mergectl resume" : err);
	sched_run(d);
	if (d->job_stopped != NULL)
		d->job_stopped(d);
}

static void
job_on_done(struct graph_job *gj, int rc, const char *err, void *arg)
{
	struct djob *j = arg;

	graph_job_progress(gj, &j->prog);
	j->gj = NULL;
	job_ended(j, rc, err);
}

/* Starts a queued, prepared job on the executor. */
int
job_start(struct daemon *d, struct djob *j)
{
	struct graph_plan_summary s;
	struct graph_job_opts o;
	struct graph_ident *own;
	char *cause = NULL, *manifest;
	bool *done;
	size_t i;
	int rc;

	if (j->kind == JOB_KIND_EXTRACT_LORA)
		return job_start_extract(d, j);
	if (d->opts.slurm)
		return slurm_job_start(d, j);
	graph_plan_summary(j->plan, &s);
	if (j->shards_done == NULL || strlen(j->shards_done) != s.shards) {
		free(j->shards_done);
		j->shards_done = xmalloc(s.shards + 1);
		memset(j->shards_done, '0', s.shards);
		j->shards_done[s.shards] = '\0';
	}
	/* The totals are known now, before the executor's first report. */
	j->prog.bytes_total = s.bytes_written;
	j->prog.tensors_total = s.tensors;
	j->prog.shards_total = s.shards;
	if (job_was_published(j)) {
		memset(j->shards_done, '1', s.shards);
		j->prog.bytes_done = s.bytes_written;
		j->prog.tensors_done = s.tensors;
		j->prog.shards_done = s.shards;
		job_log(d, j, "its output was already in place: the daemon "
		    "stopped after publishing it");
		job_release_runtime(j);
		job_set_state(d, j, JOB_DONE, NULL);
		return 0;
	}
	done = xcalloc(s.shards + 1, sizeof *done);
	for (i = 0; i < s.shards; i++)
		done[i] = j->shards_done[i] == '1';
	memset(&o, 0, sizeof o);
	o.out_dirfd = j->out_fd;
	o.out_name = j->out_name;
	o.out_dir = j->out_dir;
	/* A stage's output holds its record, for lazy reruns. */
	o.manifest = manifest = j->grp != 0 ? group_stage_manifest(d, j) :
	    NULL;
	o.cred = &j->cred;
	o.own = own = job_own_outputs(d, j->owner, &o.nown);
	o.staging_name = j->staging;
	o.shards_done = done;
	o.done = job_on_done;
	o.progress = job_on_progress;
	o.shard_done = job_on_shard;
	o.staged = job_on_staged;
	o.arg = j;
	rc = graph_exec_submit(d->exec, j->plan, &o, &j->gj, &cause);
	free(done);
	free(own);
	free(manifest);
	if (rc != 0) {
		job_release_runtime(j);
		job_set_state(d, j, JOB_FAILED, cause);
		free(cause);
		return rc;
	}
	d->nrunning++;
	job_set_state(d, j, JOB_RUNNING, NULL);
	return 0;
}

/*
 * A running job stops through the executor, which reports it cancelled
 * (job_on_done); any other job that may be cancelled is at once.
 */
void
job_cancel(struct daemon *d, struct djob *j)
{
	if (!proto_state_cancellable(j->state))
		return;
	if (j->kind == JOB_KIND_PIPELINE) {
		group_cancel(d, j);
		return;
	}
	if (slurm_handed(j)) {
		slurm_job_cancel(d, j);
		return;
	}
	if (j->state == JOB_RUNNING) {
		if (j->gj != NULL)
			graph_exec_cancel(j->gj);
		if (j->xj != NULL)
			graph_extract_cancel(j->xj);
		return;
	}
	if (j->planning)
		group_stop_plans(d, j->id);	/* a stage planned late */
	job_release_runtime(j);
	job_set_state(d, j, JOB_CANCELLED, NULL);
	sched_run(d);
}

/*
 * Draining: the live jobs need this process.  Running ones stop with
 * their finished shards kept, the others lose their descriptors with the
 * process; both can be resumed.
 */
void
job_interrupt_all(struct daemon *d)
{
	struct djob *j;

	for (j = d->jobs; j != NULL; j = j->next) {
		/* A group's state is its stages'. */
		if (!proto_state_live(j->state) || j->kind == JOB_KIND_PIPELINE)
			continue;
		if (slurm_handed(j)) {
			slurm_job_interrupt(d, j);
			continue;
		}
		if (j->state == JOB_RUNNING) {
			if (j->gj != NULL)
				graph_exec_interrupt(j->gj);
			if (j->xj != NULL)
				graph_extract_interrupt(j->xj);
		} else {
			job_release_runtime(j);
			job_set_state(d, j, JOB_INTERRUPTED, "the daemon "
			    "stopped before this job ran; resume it with "
			    "mergectl resume");
		}
	}
}
