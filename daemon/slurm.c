/* SPDX-License-Identifier: MIT */
/*
 * slurm.c: merged --backend slurm: each admitted merge runs as a Slurm
 * batch job on a compute node, as the user who submitted it, running the
 * same engine (mergectl run --resume) with the job's config, output and
 * options (docs/cluster.md).
 *
 * The daemon still accepts, plans (every problem at once, before
 * anything is queued) and records jobs; the scheduler (sched.c) hands a
 * job to Slurm once the jobs it runs after are done or are themselves on
 * Slurm, whose --dependency=afterok then orders them.  Resources come
 * from the plan: --mem is the job's memory budget plus the engine's own
 * overhead, --cpus-per-task its threads, --time a rate per GB of output
 * times a safety factor.  The daemon polls squeue --json (no accounting
 * daemon is needed): PENDING is queued with Slurm's reason, RUNNING is
 * running with the progress the engine keeps in its record in the
 * staging directory (graph/record.c, read as untrusted input), COMPLETED
 * is done only once the output is verified against the plan, FAILED,
 * OUT_OF_MEMORY and TIMEOUT fail, CANCELLED cancels (with Slurm's reason:
 * a job it runs after failed), NODE_FAIL and PREEMPTED interrupt (resume
 * goes on from the shards written).  A job that leaves squeue (after
 * MinJobAge) is judged by its output.  Loop thread only.
 */
#define _GNU_SOURCE
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "daemon.h"
#include "xmalloc.h"

/* What the engine holds beside its budget (code, libraries, pool). */
#define SLURM_OVERHEAD (256ull << 20)
/* A batch job submitted and not yet listed is given this long. */
#define SLURM_LIST_GRACE 30.0
#define SLURM_POLL_MS 1000

static void slurm_poll(uv_timer_t *t);
static const char *json_str(const cJSON *o, const char *key);
static bool json_num(const cJSON *o, const char *key, double *out);
static bool slurm_state_final(const char *state);

/* An sbatch in flight: for job id's hand-off number token. */
struct slurm_submit {
	uint64_t id;
	uint64_t token;
};

/* squeue's list, by Slurm job id, for lookups as it is walked. */
struct slurm_listing {
	uint64_t id;
	const cJSON *job;
};
static const cJSON *slurm_listed_job(const struct slurm_listing *l,
    size_t n, uint64_t id);

/* Whether j is Slurm's now: submitted or being submitted. */
bool
slurm_handed(const struct djob *j)
{
	return j->slurm_id != 0 || j->slurm_submitting;
}

void
slurm_start(struct daemon *d)
{
	uv_timer_init(&d->loop, &d->slurm_timer);
	d->slurm_timer.data = d;
	uv_timer_start(&d->slurm_timer, slurm_poll, SLURM_POLL_MS,
	    SLURM_POLL_MS);
}

void
slurm_stop(struct daemon *d)
{
	uv_timer_stop(&d->slurm_timer);
}

/* s in single quotes for sh, its quotes escaped. */
static void
sh_quote(struct xbuf *x, const char *s)
{
	xbuf_add(x, "'", 1);
	for (; *s != '\0'; s++) {
		if (*s == '\'')
			xbuf_add(x, "'\\''", 4);
		else
			xbuf_add(x, s, 1);
	}
	xbuf_add(x, "'", 1);
}

/* The job's options as mergectl run's, as graph_merge_opts holds them. */
static void
slurm_opts_args(struct xbuf *x, const struct djob *j, uint64_t budget,
    int threads)
{
	const struct graph_merge_opts *o = &j->opts;

	xbuf_printf(x, " --memory %" PRIu64 " -j %d --random-seed %" PRIu64,
	    budget, threads, o->seed);
	xbuf_printf(x, " --out-shard-size %" PRIu64, o->shard_size);
	xbuf_printf(x, "%s%s%s%s", o->allow_crimes ? " --allow-crimes" : "",
	    o->copy_tokenizer ? "" : " --no-copy-tokenizer",
	    o->model_card ? "" : " --no-write-model-card",
	    o->force ? " --force" : "");
	if (o->lora_dtype != GRAPH_DT_NONE)
		xbuf_printf(x, " --lora-merge-dtype %s",
		    graph_dtype_hf_name(o->lora_dtype));
}

/* A here-document's end marker that none of texts (NULL ended) holds. */
static void
slurm_marker(char *marker, size_t size, uint64_t id, const char **texts)
{
	unsigned n = 0;
	size_t i;
	bool clash;

	do {
		snprintf(marker, size, "MERGED_%llu_%u", (unsigned long long)id,
		    n++);
		clash = false;
		for (i = 0; texts[i] != NULL; i++)
			clash |= strstr(texts[i], marker) != NULL;
	} while (clash);
}

/*
 * Text as a here-document's body, ended by marker and tag.  The body's
 * last line ends in a newline, which text, if it lacks one, gains: the
 * record and card always end in one, and a config parses the same.
 */
static void
slurm_heredoc(struct xbuf *x, const char *text, const char *marker,
    char tag)
{
	size_t n = strlen(text);

	xbuf_printf(x, "%s%s%s_%c\n", text, n > 0 && text[n - 1] != '\n' ?
	    "\n" : "", marker, tag);
}

/*
 * The directories the client resolved the job's models to, as mergectl
 * run --model-dirs reads them: the node plans from these, not from its
 * own working directory and Hugging Face cache (slurm_reachable checked
 * that the paths name them here).
 */
static char *
slurm_model_dirs(const struct djob *j)
{
	cJSON *a = cJSON_CreateArray(), *e;
	char *s;
	size_t i;

	for (i = 0; i < j->ndirs; i++) {
		e = cJSON_CreateObject();
		cJSON_AddStringToObject(e, "ref", j->dirs[i].ref);
		cJSON_AddStringToObject(e, "root", j->dirs[i].where);
		cJSON_AddStringToObject(e, "rel", j->dirs[i].rel);
		cJSON_AddItemToArray(a, e);
	}
	s = cJSON_PrintUnformatted(a);
	cJSON_Delete(a);
	return s;
}

/*
 * The batch script: the engine on the job's config, read from a
 * here-document whose end marker the config does not contain, with the
 * models' directories on descriptor 5 (--model-dirs).  A stage of a
 * pipeline also gets the record its output holds and the model card's
 * account of the pipeline, as planned here, on descriptors 3 and 4
 * (mergectl run --stage-record, --stage-card): its output is then what
 * a local run writes.
 */
static char *
slurm_script(struct daemon *d, const struct djob *j, uint64_t budget,
    int threads)
{
	struct xbuf x = { 0 };
	const char *card = j->card;
	char *record = j->grp != 0 ? group_stage_manifest(d, j) : NULL;
	char *dirs = slurm_model_dirs(j);
	const char *texts[5] = { j->config, "", "", dirs, NULL };
	char marker[64];

	if (record != NULL)
		texts[1] = record;
	if (card != NULL)
		texts[2] = card;
	slurm_marker(marker, sizeof marker, j->id, texts);
	xbuf_printf(&x, "#!/bin/sh\n# merged job %llu, submitted by %s\n"
	    "exec ", (unsigned long long)j->id, j->user ? j->user : "?");
	sh_quote(&x, d->opts.slurm_engine);
	xbuf_add(&x, " run --resume --quiet", 21);
	slurm_opts_args(&x, j, budget, threads);
	if (record != NULL)
		xbuf_add(&x, " --stage-record /dev/fd/3", 25);
	if (card != NULL)
		xbuf_add(&x, " --stage-card /dev/fd/4", 23);
	xbuf_add(&x, " --config-name ", 15);
	sh_quote(&x, j->config_name != NULL ? j->config_name : "config.yml");
	xbuf_add(&x, " --model-dirs /dev/fd/5 - ", 26);
	sh_quote(&x, j->out_dir);
	xbuf_printf(&x, " <<'%s_C'", marker);
	if (record != NULL)
		xbuf_printf(&x, " 3<<'%s_R'", marker);
	if (card != NULL)
		xbuf_printf(&x, " 4<<'%s_P'", marker);
	xbuf_printf(&x, " 5<<'%s_M'\n", marker);
	slurm_heredoc(&x, j->config, marker, 'C');
	if (record != NULL)
		slurm_heredoc(&x, record, marker, 'R');
	if (card != NULL)
		slurm_heredoc(&x, card, marker, 'P');
	slurm_heredoc(&x, dirs, marker, 'M');
	free(record);
	free(dirs);
	return xbuf_take(&x);
}

/*
 * The paths the node will use must name what the daemon planned from:
 * each model the client resolved, and the output's directory.
 */
int
slurm_reachable(const struct djob *j, char **cause)
{
	struct stat a, b;
	char *parent, *slash, *full;
	size_t i;
	bool same;
	int rc = 0;

	for (i = 0; i < j->ndirs; i++) {
		/* where names the model's directory, or (a pipeline's
		 * stages) the directory rel is in. */
		full = xasprintf("%s/%s", j->dirs[i].where, j->dirs[i].rel);
		same = fstatat(j->dirs[i].fd, j->dirs[i].rel, &a, 0) == 0 &&
		    ((stat(j->dirs[i].where, &b) == 0 && a.st_dev == b.st_dev &&
		    a.st_ino == b.st_ino) || (stat(full, &b) == 0 &&
		    a.st_dev == b.st_dev && a.st_ino == b.st_ino));
		free(full);
		if (!same) {
			*cause = xasprintf("model %s: %s is not, as the daemon "
			    "sees it, the directory mergectl found; the "
			    "cluster's nodes must see the same paths",
			    j->dirs[i].ref, j->dirs[i].where);
			return -EXDEV;
		}
	}
	parent = xstrdup(j->out_dir);
	if ((slash = strrchr(parent, '/')) != NULL)
		*(slash == parent ? slash + 1 : slash) = '\0';
	else
		strcpy(parent, ".");
	if (parent[0] != '/' || fstat(j->out_fd, &a) == -1 ||
	    stat(parent, &b) == -1 || a.st_dev != b.st_dev ||
	    a.st_ino != b.st_ino) {
		*cause = xasprintf("the output's directory %s is not, as the "
		    "daemon sees it, the one mergectl named; the cluster's "
		    "nodes must see the same paths", parent);
		rc = -EXDEV;
	}
	free(parent);
	return rc;
}

/* A job resumed: what it knew of its last batch job goes. */
void
slurm_forget(struct djob *j)
{
	j->slurm_id = 0;
	j->slurm_submitting = false;
	j->slurm_seen = false;
	j->slurm_over = false;
	free(j->slurm_state);
	free(j->slurm_reason);
	j->slurm_state = j->slurm_reason = NULL;
}

/*
 * A job of Slurm's ends by the daemon's decision (job_set_state): a job
 * it runs after failed, say.  Its batch job goes too, unless Slurm has
 * ended it already.
 */
void
slurm_job_final(struct daemon *d, struct djob *j)
{
	if (j->slurm_id == 0 || j->slurm_over)
		return;
	j->slurm_over = true;
	slurm_cancel_id(d, j->slurm_id, j->owner);
}

/* A job of Slurm's ends here: its state, then the scheduler. */
static void
slurm_end(struct daemon *d, struct djob *j, enum job_state s,
    const char *err)
{
	if (s == JOB_DONE && j->grp != 0)
		group_drop_read(d, j);
	/* Read, if it failed, before: its words are in the job's log. */
	slurm_log_remove(j->out_fd, j->out_name, &j->cred);
	job_release_runtime(j);
	job_set_state(d, j, s, err);
	sched_run(d);
}

/* It could not be handed over: failed, inside the scheduler's pick. */
static int
slurm_not_started(struct daemon *d, struct djob *j, int rc,
    const char *err)
{
	job_release_runtime(j);
	job_set_state(d, j, JOB_FAILED, err);
	return rc;
}

static void
slurm_submitted(struct daemon *d, int64_t status, const char *out,
    size_t len, const char *err, void *arg)
{
	struct slurm_submit *sub = arg;
	struct djob *j = job_find(d, sub->id);
	unsigned long long sid;
	char *why;
	bool ours = j != NULL && j->slurm_token == sub->token;

	(void)len;
	free(sub);
	/* Removed while sbatch ran: its batch job must not run alone. */
	if (j == NULL) {
		if (status == 0 && sscanf(out, "%llu", &sid) == 1 && sid != 0)
			slurm_cancel_id(d, sid, -1);
		return;
	}
	/* Cancelled (and maybe resumed) while sbatch ran: not ours. */
	if (!j->slurm_submitting || !ours) {
		if (status == 0 && sscanf(out, "%llu", &sid) == 1 && sid != 0)
			slurm_cancel_id(d, sid, j->owner);
		return;
	}
	j->slurm_submitting = false;
	if (status != 0 || sscanf(out, "%llu", &sid) != 1 || sid == 0) {
		if (err[0] == '\0')
			err = "no reason given";
		why = xasprintf("sbatch refused the job: %.*s", (int)strcspn(err,
		    "\n"), err);
		if (proto_state_live(j->state))
			slurm_end(d, j, JOB_FAILED, why);
		free(why);
		return;
	}
	j->slurm_id = sid;
	j->slurm_since = daemon_now();
	j->slurm_restarts = 0;	/* a new batch job's */
	free(j->slurm_state);
	j->slurm_state = xstrdup("PENDING");
	/* Cancelled while sbatch ran: the new job goes too. */
	if (!proto_state_live(j->state)) {
		slurm_cancel_id(d, sid, j->owner);
		return;
	}
	job_log(d, j, "submitted to Slurm as job %llu", sid);
	store_job_update(d->store, j);
	job_changed(d, j, false);
	/* Jobs after it may go to Slurm now, with afterok on it. */
	sched_run(d);
}

/* The dependencies Slurm orders: those of j not done yet. */
static void
slurm_deps(struct daemon *d, const struct djob *j, struct xbuf *x)
{
	const struct djob *dep;
	size_t i;
	bool first = true;

	for (i = 0; i < j->ndeps; i++) {
		if ((dep = job_find(d, j->deps[i])) == NULL ||
		    dep->state == JOB_DONE || dep->slurm_id == 0)
			continue;
		xbuf_printf(x, "%s%llu", first ? "--dependency=afterok:" : ":",
		    (unsigned long long)dep->slurm_id);
		first = false;
	}
}

/* Hands a queued, planned merge to Slurm (sched.c, through job_start). */
int
slurm_job_start(struct daemon *d, struct djob *j)
{
	struct graph_plan_summary s;
	struct slurm_submit *sub;
	struct xbuf dep = { 0 };
	/* 17 of ours at most, and --sbatch-arg's 16 (merged.c). */
	char *argv[40], *script, *cause = NULL;
	char *mem, *cpus, *time_arg, *name, *uid = NULL, *gid = NULL, *log;
	uint64_t budget, minutes;
	double gb;
	size_t n = 0, i;
	int rc, threads = d->opts.threads;

	if (slurm_reachable(j, &cause) != 0) {
		rc = slurm_not_started(d, j, -EXDEV, cause);
		free(cause);
		return rc;
	}
	graph_plan_summary(j->plan, &s);
	/* The engine on the node resumes from here (mergectl --resume). */
	free(j->staging);
	j->staging = xasprintf(".%s.partial", j->out_name);
	j->prog.bytes_total = s.bytes_written;
	j->prog.tensors_total = s.tensors;
	j->prog.shards_total = s.shards;
	free(j->slurm_verify);
	j->slurm_verify = graph_plan_verify_spec(j->plan);
	/* The plan's peak is sized for the job's budget (at most). */
	budget = s.peak_memory;
	gb = (double)s.bytes_written / 1e9;
	minutes = (uint64_t)ceil(fmax(gb, 0.1) * d->opts.slurm_rate *
	    d->opts.slurm_safety / 60.0);
	if (minutes < 5)
		minutes = 5;
	script = slurm_script(d, j, budget, threads);
	mem = xasprintf("--mem=%lluM", (unsigned long long)((budget +
	    SLURM_OVERHEAD + (1u << 20) - 1) >> 20));
	cpus = xasprintf("--cpus-per-task=%d", threads);
	time_arg = xasprintf("--time=%llu", (unsigned long long)minutes);
	name = xasprintf("--job-name=%s", j->name != NULL ? j->name :
	    "merged");
	argv[n++] = "sbatch";
	argv[n++] = "--parsable";
	argv[n++] = name;
	argv[n++] = mem;
	argv[n++] = cpus;
	argv[n++] = time_arg;
	argv[n++] = log = slurm_log_arg(j);
	argv[n++] = "--chdir";
	argv[n++] = j->cwd != NULL && j->cwd[0] == '/' ? j->cwd : "/";
	if (d->opts.slurm_partition != NULL) {
		argv[n++] = "--partition";
		argv[n++] = d->opts.slurm_partition;
	}
	if (d->opts.slurm_account != NULL) {
		argv[n++] = "--account";
		argv[n++] = d->opts.slurm_account;
	}
	/*
	 * A root daemon submits as the job's owner, never as itself, and
	 * without its own environment: Slurm gives the job the owner's
	 * (HOME, USER), so that a Hugging Face cache resolves as the
	 * owner's and nothing of root's reaches the job.
	 */
	if (d->uid == 0 && j->owner != 0) {
		uid = xasprintf("--uid=%u", j->owner);
		gid = xasprintf("--gid=%u", j->owner_gid);
		argv[n++] = uid;
		argv[n++] = gid;
		argv[n++] = "--export=NONE";
	}
	slurm_deps(d, j, &dep);
	if (dep.data != NULL)
		argv[n++] = dep.data;
	for (i = 0; d->opts.slurm_args != NULL && d->opts.slurm_args[i] !=
	    NULL && n < 39; i++)
		argv[n++] = d->opts.slurm_args[i];
	argv[n] = NULL;
	sub = xmalloc(sizeof *sub);
	sub->id = j->id;
	sub->token = ++j->slurm_token;
	rc = slurm_cmd_run(d, argv, script, slurm_submitted, sub);
	if (rc != 0)
		free(sub);
	if (rc == 0) {
		j->slurm_submitting = true;
		j->slurm_id = 0;
		store_job_update(d->store, j);
		job_changed(d, j, false);
	} else {
		cause = xasprintf("cannot run sbatch: %s", uv_strerror(rc));
		slurm_not_started(d, j, -EIO, cause);
		free(cause);
	}
	free(script);
	free(mem);
	free(cpus);
	free(time_arg);
	free(name);
	free(log);
	free(uid);
	free(gid);
	xbuf_free(&dep);
	return rc == 0 ? 0 : -EIO;
}

static void
slurm_cancelled(struct daemon *d, int64_t status, const char *out,
    size_t len, const char *err, void *arg)
{
	(void)out;
	(void)len;
	if (status != 0)
		log_warnx("scancel %llu: %.*s", (unsigned long long)(uintptr_t)
		    arg, (int)strcspn(err, "\n"), err);
	(void)d;
}

/*
 * scancel of Slurm job sid, only if it is owner's (a root daemon must
 * not cancel somebody else's job whose id it kept); owner -1: one our
 * sbatch has just made, of a job gone since.
 */
void
slurm_cancel_id(struct daemon *d, uint64_t sid, int64_t owner)
{
	char id[32], user[32], *argv[] = { "scancel", user, id, NULL };

	snprintf(id, sizeof id, "%llu", (unsigned long long)sid);
	snprintf(user, sizeof user, "--user=%lld", (long long)owner);
	if (owner < 0) {
		argv[1] = id;
		argv[2] = NULL;
	}
	if (slurm_cmd_run(d, argv, NULL, slurm_cancelled,
	    (void *)(uintptr_t)sid) != 0)
		log_warnx("cannot run scancel %s", id);
}

/*
 * A cancelled job's staging directory, to remove once its batch job is
 * over: slurmctld says CANCELLED before the node has killed the engine,
 * which, just started, may yet create the directory, and, told to stop,
 * keeps it for a resume.
 */
struct slurm_cleanup {
	uint64_t sid;
	int dirfd;
	char *staging;
	char *out_name;		/* its output's: its log (slurm-log.c) */
	struct graph_cred cred;
	uint32_t *groups;
	double over;		/* when squeue first said it ended; 0 */
	struct slurm_cleanup *next;
};

/* After the batch job is seen ended, this long for its processes. */
#define SLURM_CLEANUP_GRACE 3.0

static void
cleanup_run(struct slurm_cleanup *c)
{
	graph_remove_tree(c->dirfd, c->staging, &c->cred);
	slurm_log_remove(c->dirfd, c->out_name, &c->cred);
	close(c->dirfd);
	free(c->staging);
	free(c->out_name);
	free(c->groups);
	free(c);
}

/* state: what squeue says of c's batch job; NULL: not listed. */
static bool
cleanup_due(struct slurm_cleanup *c, const char *state, double now)
{
	if (state != NULL && !slurm_state_final(state))
		return false;
	if (c->over == 0)
		c->over = now;
	return now - c->over >= SLURM_CLEANUP_GRACE;
}

/* Every poll: the cleanups whose batch jobs are over, done. */
static void
cleanup_poll(struct daemon *d, const struct slurm_listing *l, size_t n,
    double now)
{
	struct slurm_cleanup **pp = &d->slurm_cleanups, *c;
	const char *state;
	const cJSON *e;

	while ((c = *pp) != NULL) {
		state = NULL;
		if ((e = slurm_listed_job(l, n, c->sid)) != NULL &&
		    (state = json_str(e, "job_state")) == NULL)
			state = "?";
		if (cleanup_due(c, state, now)) {
			*pp = c->next;
			cleanup_run(c);
		} else {
			pp = &c->next;
		}
	}
}

/* The daemon stops: what is left to remove goes now. */
void
slurm_cleanup_all(struct daemon *d)
{
	struct slurm_cleanup *c;

	while ((c = d->slurm_cleanups) != NULL) {
		d->slurm_cleanups = c->next;
		cleanup_run(c);
	}
}

/*
 * cancel: the batch job goes (scancel), and so do its shards, now and
 * again once Slurm has ended it (struct slurm_cleanup).
 */
void
slurm_job_cancel(struct daemon *d, struct djob *j)
{
	struct slurm_cleanup *c;

	slurm_job_final(d, j);
	if (j->out_fd != -1) {
		graph_remove_tree(j->out_fd, j->staging, &j->cred);
		c = j->slurm_id != 0 ? xcalloc(1, sizeof *c) : NULL;
		if (c != NULL && (c->dirfd = fcntl(j->out_fd, F_DUPFD_CLOEXEC,
		    3)) != -1) {
			c->sid = j->slurm_id;
			c->staging = xstrdup(j->staging);
			c->out_name = xstrdup(j->out_name);
			c->cred = j->cred;
			c->groups = xcalloc(j->cred.ngroups + 1,
			    sizeof *c->groups);
			memcpy(c->groups, j->cred.groups, j->cred.ngroups *
			    sizeof *c->groups);
			c->cred.groups = c->groups;
			c->next = d->slurm_cleanups;
			d->slurm_cleanups = c;
		} else {
			free(c);
		}
	}
	slurm_end(d, j, JOB_CANCELLED, NULL);
}

/*
 * The daemon stops: its batch jobs go on without it, and the store keeps
 * them, so that the daemon, restarted, reattaches to them
 * (slurm_reattach).  One being submitted gets its id in the store
 * before the daemon exits (a drain waits for sbatch).
 */
void
slurm_job_interrupt(struct daemon *d, struct djob *j)
{
	job_log(d, j, "left to Slurm while the daemon stops; it reattaches "
	    "when it starts again");
}

/*
 * Started again: the jobs the store says are on Slurm are followed as
 * before.  What the submit brought is gone (the plan, the descriptors):
 * the output's directory is opened again by its path, to read the
 * record and check the output against the spec the store kept, and
 * anything removed there (cancel) is removed with the owner's rights.
 */
void
slurm_reattach(struct daemon *d)
{
	struct djob *j;
	struct stat st;
	char *parent, *slash, *why;
	size_t n = 0;

	for (j = d->jobs; j != NULL; j = j->next) {
		if (j->slurm_id == 0 || !proto_state_live(j->state))
			continue;
		parent = xstrdup(j->out_dir);
		if ((slash = strrchr(parent, '/')) != NULL)
			*(slash == parent ? slash + 1 : slash) = '\0';
		j->out_fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		/* The path may name another directory now (a link swapped
		 * in): only the one the job was submitted for will do. */
		if (j->out_fd == -1 || fstat(j->out_fd, &st) == -1 ||
		    (uint64_t)st.st_dev != j->out_dev ||
		    (uint64_t)st.st_ino != j->out_ino) {
			why = xasprintf("%s is no longer the directory the job "
			    "was submitted for; its Slurm job %llu was "
			    "cancelled", parent,
			    (unsigned long long)j->slurm_id);
			free(parent);
			slurm_end(d, j, JOB_FAILED, why);
			free(why);
			continue;
		}
		free(parent);
		/* Its owner's rights, supplementary groups too, for the
		 * files it removes in the output's directory. */
		memset(&j->cred, 0, sizeof j->cred);
		job_owner_cred_db(j);
		j->cred.umask = j->umask;
		j->slurm_since = daemon_now();
		j->slurm_seen = false;
		j->slurm_restarts = -1;
		job_log(d, j, "reattached to Slurm job %llu",
		    (unsigned long long)j->slurm_id);
		n++;
	}
	if (n > 0)
		log_info("reattached to %zu Slurm jobs", n);
}

/* What the engine's record says, into the job's progress. */
static void
slurm_read_record(struct djob *j, char **error)
{
	struct graph_record r;
	struct graph_progress g = j->prog;
	char *cause = NULL;

	if (j->out_fd == -1 || graph_record_read(j->out_fd, j->staging,
	    (int64_t)j->owner, &r, &cause) != 0) {
		free(cause);
		return;
	}
	/* The user's file: never more than the plan's totals. */
	g.bytes_done = r.bytes_done < g.bytes_total ? r.bytes_done :
	    g.bytes_total;
	g.tensors_done = r.tensors_done < g.tensors_total ?
	    (size_t)r.tensors_done : g.tensors_total;
	g.shards_done = r.shards_done < g.shards_total ? r.shards_done :
	    g.shards_total;
	g.job_memory = 0;
	if (r.memory_peak > g.memory_peak)
		g.memory_peak = r.memory_peak;
	if (strlen(r.shards) == j->prog.shards_total) {
		free(j->shards_done);
		j->shards_done = xstrdup(r.shards);
	}
	if (error != NULL && r.error != NULL)
		*error = xstrdup(r.error);
	graph_record_fini(&r);
	job_note_progress(j, &g);
}

/*
 * Why a job ended badly, as the engine on the node said it: the error
 * in its record, else the last lines of its output (slurm-log.c), which
 * go to the job's log either way.
 */
static void
slurm_engine_said(struct daemon *d, struct djob *j, char **said)
{
	char *out;

	*said = NULL;
	slurm_read_record(j, said);
	out = slurm_log_said(d, j);
	if (*said == NULL)
		*said = out;
	else
		free(out);
}

/* The batch job ended well, or left squeue: done if the output is. */
static void
slurm_judge_output(struct daemon *d, struct djob *j, const char *how)
{
	char *cause = NULL, *why, *err = NULL;
	int rc;

	/* From the plan, or, reattached after a restart, the store. */
	if (j->out_fd == -1) {
		rc = -EBADF;
		cause = xasprintf("%s: its directory cannot be opened",
		    j->out_dir);
	} else if (j->plan != NULL) {
		rc = graph_plan_verify(j->plan, j->out_fd, j->out_name,
		    j->out_dir, &cause);
	} else if (j->slurm_verify != NULL) {
		rc = graph_verify_spec(j->slurm_verify, j->out_fd, j->out_name,
		    j->out_dir, &cause);
	} else {
		rc = -EINVAL;
		cause = xstrdup("nothing says what it should be");
	}
	if (rc == 0) {
		j->prog.bytes_done = j->prog.bytes_total;
		j->prog.tensors_done = j->prog.tensors_total;
		j->prog.shards_done = j->prog.shards_total;
		if (j->shards_done != NULL)
			memset(j->shards_done, '1', strlen(j->shards_done));
		slurm_end(d, j, JOB_DONE, NULL);
	} else {
		slurm_engine_said(d, j, &err);
		why = xasprintf("Slurm job %llu %s, but its output is not "
		    "what was planned: %s%s%s", (unsigned long long)j->slurm_id,
		    how, cause, err ? "; the engine said: " : "",
		    err ? err : "");
		slurm_end(d, j, JOB_FAILED, why);
		free(why);
	}
	free(cause);
	free(err);
}

static bool
slurm_state_final(const char *state)
{
	static const char *const last[] = { "COMPLETED", "CANCELLED",
	    "FAILED", "OUT_OF_MEMORY", "TIMEOUT", "BOOT_FAIL", "DEADLINE" };
	size_t i;

	for (i = 0; i < sizeof last / sizeof *last; i++)
		if (strcmp(state, last[i]) == 0)
			return true;
	return false;
}

/* One of our jobs as squeue lists it. */
static void
slurm_apply(struct daemon *d, struct djob *j, const char *state,
    const char *reason, int exit_code, double start)
{
	char *why = NULL, *err = NULL;
	bool pending, running, final;

	j->slurm_seen = true;
	/* Slurm's own start, seen late or not at all between two polls. */
	if (start > 0 && strcmp(state, "PENDING") != 0)
		j->started = start;
	if (j->slurm_state == NULL || strcmp(j->slurm_state, state) != 0 ||
	    (j->slurm_reason == NULL) != (reason == NULL) ||
	    (reason && strcmp(j->slurm_reason, reason) != 0)) {
		free(j->slurm_state);
		free(j->slurm_reason);
		j->slurm_state = xstrdup(state);
		j->slurm_reason = reason ? xstrdup(reason) : NULL;
		d->queue_stale = true;
		job_changed(d, j, false);
	}
	/*
	 * Slurm's last words are these; a node failure or a preemption
	 * requeues a batch job (JobRequeue) and goes on from its shards,
	 * so it waits as a pending one does; any other state (SIGNALING,
	 * STAGE_OUT, ...) is taken as running.
	 */
	final = slurm_state_final(state);
	pending = !final && (strcmp(state, "PENDING") == 0 ||
	    strncmp(state, "REQUEUE", 7) == 0 || strcmp(state, "NODE_FAIL") ==
	    0 || strcmp(state, "PREEMPTED") == 0);
	running = !final && !pending;
	j->slurm_over = final;
	if (pending) {
		if (j->state != JOB_QUEUED)
			job_set_state(d, j, JOB_QUEUED, NULL);
	} else if (running) {
		if (j->state != JOB_RUNNING) {
			job_set_state(d, j, JOB_RUNNING, NULL);
			if (start > 0)
				j->started = start;
		}
		slurm_read_record(j, NULL);
	} else if (strcmp(state, "COMPLETED") == 0) {
		slurm_judge_output(d, j, "completed");
	} else if (strcmp(state, "FAILED") == 0 && exit_code >= 0 &&
	    WIFEXITED(exit_code) && WEXITSTATUS(exit_code) ==
	    CLI_EXIT_EXISTS) {
		/*
		 * The engine found the output there and refused it.  Slurm
		 * requeues a batch job that has completed, too (scontrol
		 * requeue, before this daemon saw it end): the run again
		 * meets what its first run published.  The job is what
		 * its output is, judged as a completed one's.
		 */
		job_log(d, j, "Slurm job %llu found its output already "
		    "there (exit code %d), as a run again after it completed "
		    "does: judged by that output",
		    (unsigned long long)j->slurm_id, CLI_EXIT_EXISTS);
		slurm_judge_output(d, j, "ran again and found its output "
		    "there");
	} else if (strcmp(state, "CANCELLED") == 0) {
		why = xasprintf("Slurm cancelled job %llu%s%s%s",
		    (unsigned long long)j->slurm_id, reason ? " (" : "",
		    reason ? reason : "", reason ? ")" : "");
		if (reason != NULL && strstr(reason, "Dependency") != NULL) {
			free(why);
			why = xasprintf("Slurm cancelled job %llu: a job it "
			    "runs after did not succeed (%s)",
			    (unsigned long long)j->slurm_id, reason);
		}
		slurm_end(d, j, JOB_CANCELLED, why);
	} else {
		/* FAILED, OUT_OF_MEMORY, TIMEOUT, BOOT_FAIL, DEADLINE... */
		slurm_engine_said(d, j, &err);
		/* squeue's exit_code is the wait status. */
		why = xasprintf("Slurm job %llu: %s (%s %d)%s%s",
		    (unsigned long long)j->slurm_id, state, exit_code >= 0 &&
		    WIFSIGNALED(exit_code) ? "signal" : "exit code",
		    exit_code < 0 ? -1 : WIFSIGNALED(exit_code) ?
		    WTERMSIG(exit_code) : WEXITSTATUS(exit_code), err ? ": " :
		    "", err ? err : "");
		slurm_end(d, j, JOB_FAILED, why);
	}
	free(why);
	free(err);
}

/*
 * squeue --json's fields as Slurm 22.05 writes them, and as later ones
 * do: a state as a string or a list of strings (the first is the base
 * state), a number as a number or as {"set": ..., "number": ...}.
 */
static const char *
json_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (cJSON_IsArray(v))
		v = cJSON_GetArrayItem(v, 0);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool
json_num(const cJSON *o, const char *key, double *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key), *set;

	if (cJSON_IsObject(v)) {
		set = cJSON_GetObjectItemCaseSensitive(v, "set");
		if (cJSON_IsFalse(set))
			return false;
		v = cJSON_GetObjectItemCaseSensitive(v, "number");
	}
	if (!cJSON_IsNumber(v))
		return false;
	*out = v->valuedouble;
	return true;
}

/* An exit code as the wait status of 22.05, or {"return_code": ...,
 * "signal": {"signal_id": ...}} later. */
static int
json_exit(const cJSON *o)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "exit_code");
	double rc = 0, sig = 0;

	if (cJSON_IsNumber(v))
		return v->valueint;
	if (!cJSON_IsObject(v))
		return -1;
	json_num(v, "return_code", &rc);
	json_num(cJSON_GetObjectItemCaseSensitive(v, "signal"), "signal_id",
	    &sig);
	return sig > 0 ? (int)sig & 0x7f : ((int)rc & 0xff) << 8;
}

/*
 * Slurm's restart count of j's batch job, as listed: a rise since the
 * last poll is a requeue (a node failure, a preemption, scontrol
 * requeue), which the job's log tells; the engine goes on from the
 * shards written when it runs again.
 */
static void
slurm_restarted(struct daemon *d, struct djob *j, int64_t n)
{
	if (j->slurm_restarts >= 0 && n > j->slurm_restarts)
		job_log(d, j, "Slurm requeued job %llu (restart %lld): it "
		    "runs again from the shards written",
		    (unsigned long long)j->slurm_id, (long long)n);
	j->slurm_restarts = n;
}

static int
listing_cmp(const void *a, const void *b)
{
	const struct slurm_listing *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/* squeue's jobs, sorted by id, in a new array (*n of them). */
static struct slurm_listing *
slurm_listing(const cJSON *jobs, size_t *n)
{
	struct slurm_listing *l;
	const cJSON *e;
	double num;

	*n = 0;
	l = xcalloc((size_t)cJSON_GetArraySize(jobs) + 1, sizeof *l);
	cJSON_ArrayForEach(e, jobs) {
		if (!json_num(e, "job_id", &num) || num < 1)
			continue;
		l[*n].id = (uint64_t)num;
		l[(*n)++].job = e;
	}
	qsort(l, *n, sizeof *l, listing_cmp);
	return l;
}

static const cJSON *
slurm_listed_job(const struct slurm_listing *l, size_t n, uint64_t id)
{
	struct slurm_listing key = { id, NULL };
	const struct slurm_listing *hit;

	hit = n > 0 ? bsearch(&key, l, n, sizeof *l, listing_cmp) : NULL;
	return hit != NULL ? hit->job : NULL;
}

/*
 * squeue --json's answer: each of our jobs that Slurm has is brought to
 * its state; one gone from the list is judged by its output.  The list
 * holds every user's jobs (a job that has left Slurm would make
 * squeue --jobs=... fail whole): sorted once, looked up by id.
 */
static void
slurm_listed(struct daemon *d, int64_t status, const char *out, size_t len,
    const char *err, void *arg)
{
	struct slurm_listing *l;
	const cJSON *e;
	cJSON *root, *jobs;
	struct djob *j, *next;
	const char *state, *reason;
	double now = daemon_now(), num, start;
	size_t n;

	(void)arg;
	d->slurm_polling = false;
	if (status != 0) {
		log_warnx("squeue --json: %.*s", (int)strcspn(err, "\n"), err);
		return;
	}
	root = cJSON_ParseWithLength(out, len);
	jobs = cJSON_GetObjectItemCaseSensitive(root, "jobs");
	if (!cJSON_IsArray(jobs)) {
		log_warnx("squeue --json: no list of jobs");
		cJSON_Delete(root);
		return;
	}
	l = slurm_listing(jobs, &n);
	for (j = d->jobs; j != NULL; j = next) {
		next = j->next;
		if (j->slurm_id == 0 || !proto_state_live(j->state))
			continue;
		/* Gone after MinJobAge, or never listed: its output tells. */
		if ((e = slurm_listed_job(l, n, j->slurm_id)) == NULL) {
			if (j->slurm_seen || now - j->slurm_since >
			    SLURM_LIST_GRACE) {
				j->slurm_over = true;
				slurm_judge_output(d, j, "is no longer listed");
			}
			continue;
		}
		/* Listed, so not gone, even if unreadable.  An id of
		 * another user's is not our job's. */
		if (json_num(e, "user_id", &num) && (uint32_t)num !=
		    j->owner) {
			log_warnx("job %llu: Slurm job %llu belongs to uid %u, "
			    "not to its owner", (unsigned long long)j->id,
			    (unsigned long long)j->slurm_id, (unsigned)num);
			continue;
		}
		if ((state = json_str(e, "job_state")) == NULL)
			continue;
		reason = json_str(e, "state_reason");
		start = 0;
		json_num(e, "start_time", &start);
		if (json_num(e, "restart_cnt", &num))
			slurm_restarted(d, j, (int64_t)num);
		slurm_apply(d, j, state, reason != NULL && strcmp(reason,
		    "None") != 0 ? reason : NULL, json_exit(e), start);
	}
	cleanup_poll(d, l, n, now);
	free(l);
	cJSON_Delete(root);
}

static void
slurm_poll(uv_timer_t *t)
{
	struct daemon *d = t->data;
	char *argv[] = { "squeue", "--json", NULL };
	const struct djob *j;

	if (d->slurm_polling || d->draining)
		return;
	for (j = d->jobs; j != NULL; j = j->next)
		if (j->slurm_id != 0 && proto_state_live(j->state))
			break;
	if (j == NULL && d->slurm_cleanups == NULL)
		return;
	if (slurm_cmd_run(d, argv, NULL, slurm_listed, NULL) == 0)
		d->slurm_polling = true;
}

/* sched_reason's words for a job of Slurm's; NULL: not one. */
char *
slurm_reason(const struct djob *j)
{
	if (j->slurm_submitting)
		return xstrdup("slurm: being submitted (sbatch)");
	if (j->slurm_id == 0)
		return NULL;
	return xasprintf("slurm: Slurm job %llu %s%s%s%s",
	    (unsigned long long)j->slurm_id, j->slurm_state ? j->slurm_state :
	    "submitted", j->slurm_reason ? " (" : "", j->slurm_reason ?
	    j->slurm_reason : "", j->slurm_reason ? ")" : "");
}
