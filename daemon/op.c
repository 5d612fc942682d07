/* SPDX-License-Identifier: MIT */
/*
 * op.c: the table of requests and what they share.
 *
 * Each op lives in op-<name>.c and exports a const struct op_entry.  This
 * file checks the envelope (version, id, op), enforces "hello first",
 * refuses new work while draining, and offers the helpers every handler
 * uses: replies, errors, looking a job up with the ownership check (one
 * place, one error code: smtpd's badcred), and a job's public or full
 * JSON.  Loop thread only.
 */
#include <sys/stat.h>

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "daemon.h"
#include "xmalloc.h"

/*
 * Each op-<name>.c defines op_<name>; only this table names them, so a
 * new op is its file, a line here and one in the build (tmux's cmd.c).
 */
extern const struct op_entry op_hello;
extern const struct op_entry op_submit;
extern const struct op_entry op_list;
extern const struct op_entry op_status;
extern const struct op_entry op_watch;
extern const struct op_entry op_logs;
extern const struct op_entry op_cancel;
extern const struct op_entry op_resume;
extern const struct op_entry op_config;
extern const struct op_entry op_shutdown;
extern const struct op_entry op_rm;
extern const struct op_entry op_clean;

static const struct op_entry *const ops[] = {
	&op_hello, &op_submit, &op_list, &op_status, &op_watch, &op_logs,
	&op_cancel, &op_resume, &op_config, &op_shutdown, &op_rm, &op_clean,
};

static void op_add_str(cJSON *, const char *, const char *, size_t);

void
op_reply(struct op_ctx *o, cJSON *msg)
{
	conn_send(o->c, msg);
}

void
op_error(struct op_ctx *o, const char *code, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	msg = xvasprintf(fmt, ap);
	va_end(ap);
	conn_send(o->c, msg_error(o->id, code, msg));
	free(msg);
}

void
op_dispatch(struct conn *c, const cJSON *req)
{
	struct op_ctx o = { c, 0, req };
	const char *op = NULL, *code = NULL, *why = NULL;
	size_t i;

	if (msg_check_request(req, &o.id, &op, &code, &why) != 0) {
		/* A client of another version cannot be talked to. */
		if (strcmp(code, PROTO_E_BAD_VERSION) == 0)
			c->close_after = true;
		op_error(&o, code, "%s", why);
		return;
	}
	for (i = 0; i < sizeof ops / sizeof *ops; i++)
		if (strcmp(ops[i]->name, op) == 0)
			break;
	if (i == sizeof ops / sizeof *ops) {
		op_error(&o, PROTO_E_BAD_REQUEST, "unknown op '%.40s'", op);
		return;
	}
	if (ops[i]->needs_hello && !c->hello) {
		c->close_after = true;
		op_error(&o, PROTO_E_BAD_REQUEST, "the first request must be "
		    "hello");
		return;
	}
	ops[i]->fn(&o);
}

/* The request's job; with need_owner, only for its owner or root. */
struct djob *
op_job(struct op_ctx *o, bool need_owner)
{
	struct djob *j;
	uint64_t id;

	if (!msg_get_u64(o->req, PROTO_F_JOB, &id)) {
		op_error(o, PROTO_E_BAD_REQUEST, "'job' must be a job id");
		return NULL;
	}
	if ((j = job_find(o->c->d, id)) == NULL) {
		op_error(o, PROTO_E_NOT_FOUND, "no job %llu",
		    (unsigned long long)id);
		return NULL;
	}
	if (need_owner && !peer_may_act(&o->c->peer, j)) {
		op_error(o, PROTO_E_FORBIDDEN, "job %llu belongs to %s; only "
		    "its owner (or root) may do that", (unsigned long long)id,
		    j->user ? j->user : "another user");
		return NULL;
	}
	return j;
}

/*
 * Adds s, cut to max bytes (valid UTF-8), as key.  Submit refuses longer
 * strings, but a store written by an older merged may hold any: one job
 * with a 320,000-byte name made every list reply too long to read.
 */
static void
op_add_str(cJSON *o, const char *key, const char *s, size_t max)
{
	char *t;

	if (s == NULL)
		s = "";
	t = proto_utf8_sanitize(s, strlen(s), max);
	cJSON_AddStringToObject(o, key, t);
	free(t);
}

/*
 * A job as the queue table shows it.  Everyone sees every job's id,
 * owner, name, state and progress; only the owner (and root) see its
 * paths, error and the rest (full).  Every string is cut to its cap, so
 * the object's size is bounded by PROTO_MAX_JOB_JSON.
 */
cJSON *
op_job_json(const struct djob *j, bool full)
{
	cJSON *o = cJSON_CreateObject();
	double now = daemon_now(), el = 0, eta = -1;
	const struct graph_progress *g = &j->prog;
	const char *p;
	size_t done = 0, i;
	const struct djob *k;
	char *why;
	cJSON *deps, *hook;

	if (j->started > 0)
		el = (j->finished > 0 ? j->finished : now) - j->started;
	if (j->state == JOB_RUNNING && g->bytes_done > 0 && el > 0)
		eta = el * (double)(g->bytes_total - g->bytes_done) /
		    (double)g->bytes_done;
	cJSON_AddNumberToObject(o, PROTO_F_ID, (double)j->id);
	cJSON_AddNumberToObject(o, PROTO_F_OWNER, j->owner);
	op_add_str(o, PROTO_F_USER, j->user, PROTO_MAX_USER);
	op_add_str(o, PROTO_F_NAME, j->name, PROTO_MAX_NAME);
	cJSON_AddStringToObject(o, PROTO_F_STATE, proto_state_name(j->state));
	cJSON_AddStringToObject(o, PROTO_F_KIND, proto_kind_name(j->kind));
	/* A pipeline's stages, a stage's group and name are public, as
	 * a job's name is. */
	if (j->kind == JOB_KIND_PIPELINE && j->daemon != NULL) {
		deps = cJSON_AddArrayToObject(o, PROTO_F_STAGES);
		for (k = j->daemon->jobs; k != NULL; k = k->next)
			if (k->grp == j->id)
				cJSON_AddItemToArray(deps, cJSON_CreateNumber(
				    (double)k->id));
	}
	if (j->grp != 0) {
		cJSON_AddNumberToObject(o, PROTO_F_GROUP, (double)j->grp);
		if (j->stage != NULL)
			op_add_str(o, PROTO_F_STAGE, j->stage, PROTO_MAX_NAME);
		else
			cJSON_AddNullToObject(o, PROTO_F_STAGE);
	}
	cJSON_AddNumberToObject(o, PROTO_F_PRIORITY, (double)j->priority);
	cJSON_AddNumberToObject(o, PROTO_F_PROGRESS, g->bytes_total ?
	    (double)g->bytes_done / (double)g->bytes_total : 0);
	cJSON_AddNumberToObject(o, PROTO_F_BYTES_DONE, (double)g->bytes_done);
	cJSON_AddNumberToObject(o, PROTO_F_BYTES_TOTAL, (double)g->bytes_total);
	cJSON_AddNumberToObject(o, PROTO_F_TENSORS_DONE,
	    (double)g->tensors_done);
	cJSON_AddNumberToObject(o, PROTO_F_TENSORS_TOTAL,
	    (double)g->tensors_total);
	cJSON_AddNumberToObject(o, PROTO_F_MEMORY, j->state == JOB_RUNNING ?
	    (double)g->job_memory : 0);
	cJSON_AddNumberToObject(o, PROTO_F_ELAPSED, el);
	cJSON_AddNumberToObject(o, PROTO_F_ETA, eta);
	if (j->daemon != NULL && j->state == JOB_QUEUED) {
		sched_positions(j->daemon);
		if (j->queue_pos > 0)
			cJSON_AddNumberToObject(o, PROTO_F_POSITION,
			    (double)j->queue_pos);
	}
	if (j->daemon != NULL && (why = sched_reason(j->daemon,
	    j)) != NULL) {
		op_add_str(o, PROTO_F_REASON, why, PROTO_MAX_ERRMSG);
		free(why);
	}
	if (!full)
		return o;
	op_add_str(o, PROTO_F_OUT, j->out_dir, PROTO_MAX_PATH);
	if (j->inter_dir != NULL)
		op_add_str(o, PROTO_F_INTER, j->inter_dir, PROTO_MAX_PATH);
	op_add_str(o, PROTO_F_CONFIG_NAME, j->config_name, PROTO_MAX_PATH);
	if (j->on_done != NULL && (hook = cJSON_Parse(j->on_done)) != NULL)
		cJSON_AddItemToObject(o, PROTO_F_ON_DONE, hook);
	if (j->error != NULL)
		op_add_str(o, PROTO_F_ERROR, j->error, PROTO_MAX_ERRMSG);
	cJSON_AddNumberToObject(o, PROTO_F_SEED, (double)j->opts.seed);
	/* after: the first dependency, as before lists of them. */
	cJSON_AddNumberToObject(o, PROTO_F_AFTER, j->ndeps > 0 ?
	    (double)j->deps[0] : 0);
	deps = cJSON_AddArrayToObject(o, PROTO_F_DEPS);
	for (i = 0; i < j->ndeps; i++)
		cJSON_AddItemToArray(deps, cJSON_CreateNumber(
		    (double)j->deps[i]));
	cJSON_AddNumberToObject(o, PROTO_F_CREATED, j->created);
	cJSON_AddNumberToObject(o, PROTO_F_STARTED, j->started);
	cJSON_AddNumberToObject(o, PROTO_F_FINISHED, j->finished);
	cJSON_AddNumberToObject(o, PROTO_F_SHARDS_TOTAL, j->shards_done ?
	    (double)strlen(j->shards_done) : (double)g->shards_total);
	for (p = j->shards_done; p != NULL && *p != '\0'; p++)
		done += *p == '1';
	if (j->shards_done == NULL)	/* a pipeline: its stages' */
		done = g->shards_done;
	cJSON_AddNumberToObject(o, PROTO_F_SHARDS_DONE, (double)done);
	return o;
}

/* What a descriptor is, for a message; NULL for a directory. */
static const char *
op_fd_kind(int fd)
{
	struct stat st;

	if (fstat(fd, &st) == -1)
		return "unusable";
	switch (st.st_mode & S_IFMT) {
	case S_IFDIR:
		return NULL;
	case S_IFREG:
		return "a regular file";
	case S_IFSOCK:
		return "a socket";
	case S_IFIFO:
		return "a pipe or FIFO";
	case S_IFCHR:
		return "a character device";
	case S_IFBLK:
		return "a block device";
	case S_IFLNK:
		return "a symbolic link";
	default:
		return "not a file";
	}
}

/*
 * Every descriptor a request carries is a directory (the output's parent,
 * model roots; PROTOCOL.md section 6).  Anything else is refused here, by
 * its index and kind, before a handler mistakes it for a permission
 * problem.
 */
static int
op_check_fds(struct op_ctx *o, const int *fds, size_t n)
{
	const char *kind;
	size_t i;

	for (i = 0; i < n; i++) {
		if ((kind = op_fd_kind(fds[i])) == NULL)
			continue;
		op_error(o, PROTO_E_BAD_REQUEST, "descriptor %zu is %s, not a "
		    "directory; every descriptor sent must be a directory",
		    i, kind);
		return -1;
	}
	return 0;
}

/*
 * Claims the descriptors the request says it carries ("fds": n), and
 * checks that each is a directory.  On success *fds is a new array the
 * caller owns (with its descriptors); on failure they are closed and an
 * error is sent.
 */
int
op_take_fds(struct op_ctx *o, int **fds, size_t *n)
{
	uint64_t want = 0;
	size_t i;

	*fds = NULL;
	*n = 0;
	if (!msg_get_u64(o->req, PROTO_F_FDS, &want) || want == 0 ||
	    want > PROTO_MAX_FDS) {
		op_error(o, PROTO_E_BAD_REQUEST, "'fds' must count the "
		    "descriptors sent with the request (1 to %d)",
		    PROTO_MAX_FDS);
		return -1;
	}
	*fds = xcalloc((size_t)want, sizeof **fds);
	if (conn_take_fds(o->c, (size_t)want, *fds) != 0) {
		free(*fds);
		*fds = NULL;
		op_error(o, PROTO_E_BAD_REQUEST, "the request says it carries "
		    "%llu descriptors, but fewer came with it",
		    (unsigned long long)want);
		return -1;
	}
	if (op_check_fds(o, *fds, (size_t)want) != 0) {
		for (i = 0; i < (size_t)want; i++)
			close((*fds)[i]);
		free(*fds);
		*fds = NULL;
		return -1;
	}
	*n = (size_t)want;
	return 0;
}

/* Each of d's problems as the line mergectl run prints, into arr. */
void
op_diag_lines(cJSON *arr, const struct graph_diags *d)
{
	char *s, *t;
	size_t i;

	for (i = 0; i < d->n; i++) {
		s = xasprintf("%s%s%s: %s", d->v[i].where ? d->v[i].where : "",
		    d->v[i].where ? ": " : "", d->v[i].sev == GRAPH_SEV_ERROR ?
		    "error" : "warning", d->v[i].msg);
		/* File names from disk need not be UTF-8. */
		t = proto_utf8_sanitize(s, strlen(s), PROTO_MAX_ERRMSG);
		cJSON_AddItemToArray(arr, cJSON_CreateString(t));
		free(t);
		free(s);
	}
}

/* Replies bad_config with every problem, one string each. */
void
op_problems(struct op_ctx *o, const struct graph_diags *d, const char *cause)
{
	cJSON *e = msg_error(o->id, PROTO_E_BAD_CONFIG, cause != NULL ? cause :
	    "the merge cannot run"), *arr;
	char *t;

	arr = cJSON_AddArrayToObject(cJSON_GetObjectItem(e, PROTO_F_ERROR),
	    PROTO_F_PROBLEMS);
	op_diag_lines(arr, d);
	if (cause != NULL && d->n == 0) {
		t = proto_utf8_sanitize(cause, strlen(cause), PROTO_MAX_ERRMSG);
		cJSON_AddItemToArray(arr, cJSON_CreateString(t));
		free(t);
	}
	op_reply(o, e);
}
