/* SPDX-License-Identifier: MIT */
/*
 * op-submit.c: queue a merge, an extraction (kind "extract-lora",
 * job-extract.c) or a pipeline of merges (kind "pipeline", group.c).
 *
 * The request carries the config text (an extraction's: the JSON object
 * of its options), the client's resolution of every
 * model reference (a directory descriptor and the model's path beneath
 * it) and a descriptor for the output's parent directory.  The job is
 * planned, with the submitter's credentials, before it is accepted: a
 * config that cannot succeed is rejected at once with all its problems
 * (bad_config, the same messages as mergectl run), and nothing is queued.
 * Planning runs on the pool (prep.c); submit_planned() finishes the
 * request when the plan is back.
 */
#include <sys/random.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "cmdline.h"
#include "daemon.h"
#include "mergeopts-json.h"
#include "xmalloc.h"

/* A staging name unique to the job, stable across restarts. */
static char *
submit_staging(const char *out_name)
{
	uint64_t r = 0;

	if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
		r = (uint64_t)daemon_now() * 1000003u;
	return xasprintf(".%s.merging-%016llx", out_name,
	    (unsigned long long)r);
}

static bool
submit_name_ok(const char *n)
{
	return *n != '\0' && strchr(n, '/') == NULL && strcmp(n, ".") != 0 &&
	    strcmp(n, "..") != 0 && strlen(n) < 200;
}

/*
 * A daemon that is not root writes as itself (a root one writes as each
 * user): its own user must be able to write the output's directory too,
 * or every job there would fail when it starts.  Refused at submit, with
 * what to do.
 */
static bool
submit_daemon_may_write(struct op_ctx *o, const struct djob *j)
{
	struct passwd *pw;
	struct group *gr;
	char user[64], group[64];

	if (geteuid() == 0 || faccessat(j->out_fd, ".", W_OK | X_OK,
	    AT_EACCESS) == 0)
		return true;
	pw = getpwuid(geteuid());
	gr = getgrgid(getegid());
	snprintf(user, sizeof user, "%s", pw != NULL ? pw->pw_name : "?");
	snprintf(group, sizeof group, "%s", gr != NULL ? gr->gr_name : "?");
	op_error(o, PROTO_E_FORBIDDEN, "merged runs as user %s and may not "
	    "write in the directory of %s; give its group write access there "
	    "(chgrp %s DIR && chmod g+ws DIR), or run merged as root, which "
	    "writes as each user", user, j->out_dir, group);
	return false;
}

/*
 * --force replaces only what the user may: the kernel's rules where we
 * act as the user; where we write as ourselves, only the user's own
 * outputs.  The publish checks again; this refuses at once.
 */
static bool
submit_may_replace(struct op_ctx *o, const struct djob *j)
{
	struct graph_replace r;
	struct graph_ident *own;
	char *cause = NULL;
	int rc;

	if (!j->opts.force)
		return true;
	memset(&r, 0, sizeof r);
	r.cred = &j->cred;
	r.own = own = job_own_outputs(o->c->d, j->owner, &r.nown);
	if ((rc = graph_may_replace(j->out_fd, j->out_name, &r, &cause)) != 0)
		op_error(o, PROTO_E_FORBIDDEN, "%s: %s", j->out_dir, cause);
	free(own);
	free(cause);
	return rc == 0;
}

/* Paths kept for messages and resume: at most a path's length. */
static bool
submit_paths_ok(struct op_ctx *o)
{
	static const char *const keys[] = { PROTO_F_CONFIG_NAME, PROTO_F_CWD,
	    PROTO_F_OUT };
	const char *s;
	size_t i;

	for (i = 0; i < sizeof keys / sizeof *keys; i++) {
		if (msg_get_str(o->req, keys[i], &s) && strlen(s) >
		    PROTO_MAX_PATH) {
			op_error(o, PROTO_E_BAD_REQUEST, "'%s' must be a path of "
			    "at most %d bytes", keys[i], PROTO_MAX_PATH);
			return false;
		}
	}
	return true;
}

/* The job's fields from the request; false after replying an error. */
/*
 * submit --on-done: an array of words (hook.c runs them), kept as the
 * store keeps it.  Only where the daemon can run it as the submitter.
 */
static bool
submit_on_done(struct op_ctx *o, struct djob *j)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(o->req,
	    PROTO_F_ON_DONE), *w;
	size_t bytes = 0;

	if (a == NULL)
		return true;
	if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) < 1 ||
	    cJSON_GetArraySize(a) > CMDLINE_MAX_WORDS)
		goto bad;
	cJSON_ArrayForEach(w, a) {
		if (!cJSON_IsString(w))
			goto bad;
		bytes += strlen(w->valuestring) + 1;
	}
	if (bytes > CMDLINE_MAX_BYTES || *a->child->valuestring == '\0')
		goto bad;
	if (!hook_allowed(o->c->d, j->owner)) {
		op_error(o, PROTO_E_UNSUPPORTED, "--on-done: this daemon runs "
		    "as another user and not as root, so it cannot run a "
		    "command as you; use a personal daemon (mergectl daemon "
		    "start), or ask for the team daemon to run as root");
		return false;
	}
	j->on_done = cJSON_PrintUnformatted(a);
	return true;
bad:
	op_error(o, PROTO_E_BAD_REQUEST, "'on_done' must be an array of 1 to "
	    "%d strings, the first a program, of at most %d bytes in all",
	    CMDLINE_MAX_WORDS, CMDLINE_MAX_BYTES);
	return false;
}

static bool
submit_fields(struct op_ctx *o, struct djob *j)
{
	const char *s;
	char *cause;
	uint64_t u;
	int64_t i;
	bool keep;

	if (cJSON_GetObjectItemCaseSensitive(o->req, PROTO_F_KIND) != NULL &&
	    (!msg_get_str(o->req, PROTO_F_KIND, &s) || proto_kind_parse(s,
	    &j->kind) != 0)) {
		op_error(o, PROTO_E_BAD_REQUEST, "'kind' must be merge, "
		    "extract-lora or pipeline");
		return false;
	}
	/* A pipeline: where its named stages go, and whether stages that
	 * are up to date are skipped. */
	j->lazy = true;
	if (j->kind == JOB_KIND_PIPELINE && (!msg_get_str(o->req,
	    PROTO_F_INTER, &s) || s[0] != '/' || strlen(s) > PROTO_MAX_PATH ||
	    strstr(s, "/../") != NULL)) {
		op_error(o, PROTO_E_BAD_REQUEST, "'intermediate' must be the "
		    "absolute path of the pipeline's stage directory");
		return false;
	}
	if (j->kind == JOB_KIND_PIPELINE) {
		j->inter_dir = xstrdup(s);
		msg_get_bool(o->req, PROTO_F_LAZY, &j->lazy);
		keep = true;
		msg_get_bool(o->req, PROTO_F_KEEP_INTER, &keep);
		j->drop_inter = !keep;
	}
	if (!msg_get_str(o->req, PROTO_F_CONFIG, &s) || strlen(s) >
	    PROTO_MAX_CONFIG) {
		op_error(o, PROTO_E_BAD_REQUEST, "'config' must be the config "
		    "text (at most %u bytes)", PROTO_MAX_CONFIG);
		return false;
	}
	j->config = xstrdup(s);
	if (!msg_get_str(o->req, PROTO_F_OUT_NAME, &s) || !submit_name_ok(s)) {
		op_error(o, PROTO_E_BAD_REQUEST, "'out_name' must be a plain "
		    "directory name");
		return false;
	}
	j->out_name = xstrdup(s);
	if (!submit_paths_ok(o))
		return false;
	j->config_name = xstrdup(msg_get_str(o->req, PROTO_F_CONFIG_NAME,
	    &s) ? s :
	    "config.yml");
	j->cwd = xstrdup(msg_get_str(o->req, PROTO_F_CWD, &s) ? s : "");
	j->out_dir = xstrdup(msg_get_str(o->req, PROTO_F_OUT, &s) ? s :
	    j->out_name);
	/* Shown to every user: bounded, and inert in a terminal. */
	if (msg_get_str(o->req, PROTO_F_NAME, &s) && !proto_name_valid(s)) {
		op_error(o, PROTO_E_BAD_REQUEST, "'name' must be 1 to %d bytes "
		    "of text without control characters", PROTO_MAX_NAME);
		return false;
	}
	j->name = xstrdup(msg_get_str(o->req, PROTO_F_NAME,
	    &s) ? s : j->out_name);
	/* It orders only the submitter's own jobs (sched.c). */
	if (cJSON_GetObjectItemCaseSensitive(o->req,
	    PROTO_F_PRIORITY) != NULL &&
	    (!msg_get_i64(o->req, PROTO_F_PRIORITY, &i)
	    || i < PROTO_PRIORITY_MIN ||
	    i > PROTO_PRIORITY_MAX)) {
		op_error(o, PROTO_E_BAD_REQUEST, "'priority' must be an integer "
		    "from %d to %d", PROTO_PRIORITY_MIN, PROTO_PRIORITY_MAX);
		return false;
	}
	j->priority = msg_get_i64(o->req, PROTO_F_PRIORITY, &i) ? i : 0;
	if (msg_get_u64(o->req, PROTO_F_AFTER, &u) && u != 0) {
		j->deps = xcalloc(1, sizeof *j->deps);
		j->deps[j->ndeps++] = u;
	}
	j->umask = msg_get_u64(o->req, PROTO_F_UMASK, &u) && u <= 0777 ?
	    (uint32_t)u : 022;
	graph_merge_opts_default(&j->opts);
	if (mergeopts_from_json(o->req, &j->opts, &cause) != 0) {
		op_error(o, PROTO_E_BAD_REQUEST, "%s", cause);
		free(cause);
		return false;
	}
	if (!submit_on_done(o, j))
		return false;
	if (j->ndeps > 0 && job_find(o->c->d, j->deps[0]) == NULL) {
		op_error(o, PROTO_E_NOT_FOUND, "--after %llu: no such job",
		    (unsigned long long)j->deps[0]);
		return false;
	}
	return true;
}

/*
 * Whether another live job writes out (name in the directory dev, ino):
 * refused (exit 4, as an existing output) unless may_force and --force,
 * with which j replaces that job's result after it.
 */
static bool
submit_out_free(struct op_ctx *o, const struct djob *j, uint64_t dev,
    uint64_t ino, const char *name, const char *out, bool may_force)
{
	const struct djob *k = job_out_clash(o->c->d, dev, ino, name);

	if (k == NULL || (may_force && j->opts.force))
		return true;
	op_error(o, PROTO_E_EXISTS, "%s is the output of job %llu, which is "
	    "%s; choose another output%s", out, (unsigned long long)k->id,
	    proto_state_name(k->state), may_force ? ", or --force to replace "
	    "its result once it is done" : "");
	return false;
}

/* Every output of a group, final and stages, free of live jobs. */
static bool
submit_group_outs_free(struct op_ctx *o, const struct djob *j)
{
	const struct graph_pipeline *p = j->pipe;
	struct djob probe;
	size_t i;
	char *out;
	bool ok = true;

	memset(&probe, 0, sizeof probe);
	job_out_ident(&probe, j->inter_fd);
	for (i = 0; i < p->nstages && ok; i++) {
		if (j->splans[i].action != GRAPH_STAGE_RUN)
			continue;
		if (p->stages[i].name == NULL) {
			ok = submit_out_free(o, j, j->out_dev, j->out_ino,
			    j->out_name, j->out_dir, true);
			continue;
		}
		/* A stage another group writes too would be swapped under
		 * one of them: never, not even with --force. */
		out = xasprintf("%s/%s", j->inter_dir, p->stages[i].name);
		ok = submit_out_free(o, j, probe.out_dev, probe.out_ino,
		    p->stages[i].name, out, false);
		free(out);
	}
	return ok;
}

/* What mergectl run would warn of, the submitter hears too. */
static void
submit_warnings(cJSON *r, const struct graph_diags *d)
{
	if (d->n > 0)
		op_diag_lines(cJSON_AddArrayToObject(r, PROTO_F_WARNINGS), d);
}

/*
 * A pipeline is planned: every stage becomes a job (group.c), after the
 * checks a merge's output gets, for the stage directory and the final
 * output.
 */
static void
submit_group(struct prep *p, struct op_ctx *o)
{
	struct daemon *d = o->c->d;
	struct djob *j = p->j;
	const struct graph_stage_plan *f;
	char *cause = NULL;
	size_t njobs, nfds;
	cJSON *r;

	if (graph_dir_writable(j->inter_fd, &j->cred, &cause) != 0 ||
	    graph_dir_writable(j->out_fd, &j->cred, &cause) != 0) {
		free(cause);
		op_error(o, PROTO_E_FORBIDDEN, "uid %u may not write in %s or "
		    "in the directory of %s", (unsigned)j->owner, j->inter_dir,
		    j->out_dir);
		return;
	}
	if (!submit_daemon_may_write(o, j))
		return;
	/* Its stages are jobs, with descriptors of their own. */
	group_quota(j, &njobs, &nfds);
	if (!quota_check_n(o, j, njobs, nfds))
		return;
	if (!submit_group_outs_free(o, j))
		return;
	f = j->pipe->final != (size_t)-1 ? &j->splans[j->pipe->final] : NULL;
	if (f != NULL && f->action == GRAPH_STAGE_RUN && f->exists) {
		if (!j->opts.force) {
			op_error(o, PROTO_E_EXISTS, "%s already exists; use "
			    "--force to replace it", j->out_dir);
			return;
		}
		if (!submit_may_replace(o, j))
			return;
	}
	j->staging = xstrdup("");	/* the group writes nothing itself */
	p->j = NULL;	/* the daemon's now */
	if (group_accept(d, j, &cause) != 0) {
		op_error(o, PROTO_E_INTERNAL, "%s", cause);
		free(cause);
		return;
	}
	/* The stages hold copies of what they need. */
	job_release_runtime(j);
	r = msg_reply(o->id);
	cJSON_AddItemToObject(r, PROTO_F_JOB, op_job_json(j, true));
	submit_warnings(r, &p->diags);
	op_reply(o, r);
	sched_run(d);
}

/*
 * The plan is back (prep.c; o->req is gone): the job is accepted, or
 * refused with why.
 */
static void
submit_planned(struct prep *p, struct op_ctx *o)
{
	struct daemon *d = o->c->d;
	struct djob *j = p->j;
	struct graph_diags none;
	char *cause = NULL;
	struct stat st;
	cJSON *r;

	if (p->rc != 0) {
		op_problems(o, &p->diags, p->cause);
		return;
	}
	if (j->kind == JOB_KIND_PIPELINE) {
		submit_group(p, o);
		return;
	}
	/* Checked again when it runs; refused at once if already false. */
	if (graph_dir_writable(j->out_fd, &j->cred, &cause) != 0) {
		free(cause);
		op_error(o, PROTO_E_FORBIDDEN, "uid %u may not write in the "
		    "directory of %s", (unsigned)j->owner, j->out_dir);
		return;
	}
	if (!submit_daemon_may_write(o, j) || !submit_may_replace(o, j))
		return;
	if (!j->opts.force && fstatat(j->out_fd, j->out_name, &st,
	    AT_SYMLINK_NOFOLLOW) == 0) {
		op_error(o, PROTO_E_EXISTS, "%s already exists; use --force to "
		    "replace it", j->out_dir);
		return;
	}
	if (!submit_out_free(o, j, j->out_dev, j->out_ino, j->out_name,
	    j->out_dir, true))
		return;
	/* The nodes must see, by the same paths, what the plan was made
	 * from (checked again when the job goes to Slurm). */
	if (d->opts.slurm && j->kind == JOB_KIND_MERGE &&
	    slurm_reachable(j, &cause) != 0) {
		graph_diags_init(&none);
		op_problems(o, &none, cause);
		graph_diags_fini(&none);
		free(cause);
		return;
	}
	j->staging = submit_staging(j->out_name);
	if (store_job_insert(d->store, j) != 0) {
		op_error(o, PROTO_E_INTERNAL, "cannot record the job");
		return;
	}
	p->j = NULL;	/* the daemon's now */
	job_insert(d, j);
	job_log(d, j, "submitted by %s (uid %u): %s -> %s", j->user,
	    (unsigned)j->owner, j->config_name, j->out_dir);
	r = msg_reply(o->id);
	cJSON_AddItemToObject(r, PROTO_F_JOB, op_job_json(j, true));
	submit_warnings(r, &p->diags);
	op_reply(o, r);
	sched_run(d);
}

static void
op_submit_fn(struct op_ctx *o)
{
	struct daemon *d = o->c->d;
	struct graph_diags diags;
	struct djob *j;
	char *cause = NULL;
	uint64_t out_fd = 0;
	size_t nfds = 0, i;
	int *fds = NULL;

	if (d->draining) {
		op_error(o, PROTO_E_SHUTTING_DOWN, "the daemon is shutting down");
		return;
	}
	if (op_take_fds(o, &fds, &nfds) != 0)
		return;
	graph_diags_init(&diags);
	j = xcalloc(1, sizeof *j);
	j->out_fd = -1;
	j->inter_fd = -1;
	j->owner = o->c->peer.uid;
	j->owner_gid = o->c->peer.gid;
	j->user = xstrdup(o->c->peer.user);
	j->state = JOB_QUEUED;
	j->created = daemon_now();
	if (!submit_fields(o, j) || !quota_check(o, j, nfds)) {
		for (i = 0; i < nfds; i++)
			close(fds[i]);
		goto out;
	}
	msg_get_u64(o->req, PROTO_F_OUT_FD, &out_fd);
	if (job_take_request(j, &o->c->peer, fds, nfds, cJSON_GetObjectItem(
	    o->req, PROTO_F_MODELS), (int)out_fd, &cause) != 0 ||
	    (j->kind == JOB_KIND_PIPELINE && job_take_inter(j, o->req,
	    &cause) != 0)) {
		op_problems(o, &diags, cause);
		goto out;
	}
	j->scratch_parent = xstrdup(d->opts.state_dir);
	prep_start(o, j, 0, submit_planned);
	j = NULL;
out:
	if (j != NULL)
		job_free(j);
	free(fds);
	free(cause);
	graph_diags_fini(&diags);
}

const struct op_entry op_submit = { PROTO_OP_SUBMIT, true, op_submit_fn };
