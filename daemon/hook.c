/* SPDX-License-Identifier: MIT */
/*
 * hook.c: the completion hooks, pueue's callback for merged: when a job
 * ends (done, failed or cancelled; not interrupted, which a resume
 * continues), its own command (submit --on-done) and the daemon's
 * (merged --on-done) are executed.
 *
 * A hook runs as the job's owner, never as the daemon: a personal daemon
 * is that user already; a root daemon switches to the owner's uid and
 * primary group in the child before exec (libuv's setuid/setgid, which
 * drop the supplementary groups); any other daemon cannot, and submit
 * refuses a hook there (hook_allowed), as merged refuses --on-done in
 * team mode unless it runs as root.  It is executed without a shell,
 * from "/", with stdin on /dev/null and an environment of its own:
 * PATH, HOME, USER, LOGNAME and MERGED_JOB_* (id, state, kind, name,
 * output, cwd, user, error).  It runs in a process group of its own,
 * which is killed when it exceeds --hook-timeout, when the hook exits
 * (what it left behind), and when the daemon stops.  The first
 * HOOK_MAX_OUTPUT bytes of what it prints, and how it ended, go to the
 * job's log (mergectl logs JOB).  At most HOOK_MAX_RUNNING run at once;
 * the others wait their turn.  Loop thread only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "cmdline.h"
#include "daemon.h"
#include "xmalloc.h"

#define HOOK_MAX_RUNNING 8
#define HOOK_MAX_OUTPUT 4096
#define HOOK_MAX_ENV 16

/* One hook to run, or running. */
struct hook {
	struct daemon *d;
	uint64_t job;		/* whose log hears how it went */
	bool daemon_wide;	/* merged --on-done, not the job's own */
	char **argv;
	char *env[HOOK_MAX_ENV + 1];
	uint32_t uid;
	uint32_t gid;
	/* Running: the process, its stdout and stderr, the timeout. */
	uv_process_t proc;
	uv_pipe_t out[2];
	uv_timer_t timer;
	bool started;
	bool exited;
	bool timed_out;
	int64_t status;
	int term_signal;
	int spawn_error;	/* uv_spawn's, 0: it started */
	int open_handles;	/* freed when the last one has closed */
	bool eof[2];
	char output[HOOK_MAX_OUTPUT];
	size_t noutput;
	bool truncated;
	struct hook *next;
};

bool
hook_allowed(const struct daemon *d, uint32_t uid)
{
	return d->uid == 0 || d->uid == uid;
}

static void
hook_free(struct hook *h)
{
	size_t i;

	cmdline_free(h->argv);
	for (i = 0; h->env[i] != NULL; i++)
		free(h->env[i]);
	free(h);
}

static void
hook_env(struct hook *h, size_t *n, const char *key, const char *value)
{
	if (value != NULL && *n < HOOK_MAX_ENV)
		h->env[(*n)++] = xasprintf("%s=%s", key, value);
}

/* The command, the owner and the environment, from the job as it ended. */
static struct hook *
hook_new(struct daemon *d, const struct djob *j, char **argv,
    bool daemon_wide)
{
	struct hook *h = xcalloc(1, sizeof *h);
	struct passwd *pw = getpwuid(j->owner);
	char id[32];
	size_t n = 0;

	h->d = d;
	h->job = j->id;
	h->daemon_wide = daemon_wide;
	h->argv = argv;
	h->uid = j->owner;
	h->gid = j->owner_gid;
	snprintf(id, sizeof id, "%llu", (unsigned long long)j->id);
	hook_env(h, &n, "PATH", "/usr/local/bin:/usr/bin:/bin");
	hook_env(h, &n, "HOME", pw != NULL ? pw->pw_dir : "/");
	hook_env(h, &n, "USER", j->user);
	hook_env(h, &n, "LOGNAME", j->user);
	hook_env(h, &n, "MERGED_JOB_ID", id);
	hook_env(h, &n, "MERGED_JOB_STATE", proto_state_name(j->state));
	hook_env(h, &n, "MERGED_JOB_KIND", proto_kind_name(j->kind));
	hook_env(h, &n, "MERGED_JOB_NAME", j->name);
	hook_env(h, &n, "MERGED_JOB_OUTPUT", j->out_dir);
	hook_env(h, &n, "MERGED_JOB_CWD", j->cwd);
	hook_env(h, &n, "MERGED_JOB_USER", j->user);
	hook_env(h, &n, "MERGED_JOB_ERROR", j->error);
	return h;
}

/* Says in the job's log (else the daemon's) how the hook went. */
static void
hook_report(struct hook *h)
{
	struct daemon *d = h->d;
	struct djob *j = job_find(d, h->job);
	const char *which = h->daemon_wide ? "the daemon's on-done hook" :
	    "on-done hook";
	char *cmd = cmdline_join(h->argv), *how, *line, *p, *nl;

	if (h->spawn_error != 0)
		how = xasprintf("could not start: %s",
		    uv_strerror(h->spawn_error));
	else if (h->timed_out)
		how = xasprintf("killed after %.0f seconds (merged "
		    "--hook-timeout)", d->opts.hook_timeout);
	else if (h->term_signal != 0)
		how = xasprintf("killed by signal %d", h->term_signal);
	else
		how = xasprintf("exited %lld", (long long)h->status);
	h->output[h->noutput] = '\0';
	for (p = h->output; *p != '\0'; p = nl) {
		if ((nl = strchr(p, '\n')) != NULL)
			*nl++ = '\0';
		else
			nl = p + strlen(p);
		line = graph_text_printable(xstrdup(p));
		if (j != NULL)
			job_log(d, j, "%s: %s", which, line);
		free(line);
	}
	if (j != NULL)
		job_log(d, j, "%s (%s) %s%s", which, cmd, how, h->truncated ?
		    "; its output was cut at 4 KiB" : "");
	else
		log_info("job %llu: %s (%s) %s", (unsigned long long)h->job,
		    which, cmd, how);
	free(how);
	free(cmd);
}

static void hook_next(struct daemon *d);

static void
hook_closed(uv_handle_t *hd)
{
	struct hook *h = hd->data, **pp;
	struct daemon *d = h->d;

	if (--h->open_handles > 0)
		return;
	hook_report(h);
	for (pp = &d->hooks_run; *pp != h; pp = &(*pp)->next)
		;
	*pp = h->next;
	d->nhooks--;
	hook_free(h);
	hook_next(d);
}

static void
hook_close(struct hook *h, uv_handle_t *hd)
{
	if (!uv_is_closing(hd))
		uv_close(hd, hook_closed);
}

/* Kills its process group: the hook and what it left behind. */
static void
hook_kill_group(struct hook *h)
{
	if (h->started && h->proc.pid > 0)
		kill(-h->proc.pid, SIGKILL);
}

/* The process has exited and both pipes are at their end. */
static void
hook_maybe_done(struct hook *h)
{
	if (!h->exited || !h->eof[0] || !h->eof[1])
		return;
	uv_timer_stop(&h->timer);
	hook_close(h, (uv_handle_t *)&h->timer);
	hook_close(h, (uv_handle_t *)&h->out[0]);
	hook_close(h, (uv_handle_t *)&h->out[1]);
	hook_close(h, (uv_handle_t *)&h->proc);
}

static void
hook_exited(uv_process_t *p, int64_t status, int sig)
{
	struct hook *h = p->data;

	h->exited = true;
	h->status = status;
	h->term_signal = h->timed_out ? 0 : sig;
	/* What it started in the background would keep the pipes open. */
	hook_kill_group(h);
	hook_maybe_done(h);
}

static void
hook_alloc(uv_handle_t *hd, size_t size, uv_buf_t *buf)
{
	static char scratch[1024];
	struct hook *h = hd->data;

	(void)size;
	/* Past the kept bytes, reads go to a scratch buffer and are
	 * dropped: the pipe is still drained, so the hook never blocks. */
	if (h->noutput < HOOK_MAX_OUTPUT - 1)
		*buf = uv_buf_init(h->output + h->noutput, (unsigned)
		    (HOOK_MAX_OUTPUT - 1 - h->noutput));
	else
		*buf = uv_buf_init(scratch, sizeof scratch);
}

static void
hook_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct hook *h = s->data;
	int k = s == (uv_stream_t *)&h->out[0] ? 0 : 1;

	if (n > 0) {
		if (buf->base == h->output + h->noutput)
			h->noutput += (size_t)n;
		else
			h->truncated = true;
		return;
	}
	if (n < 0) {
		uv_read_stop(s);
		h->eof[k] = true;
		hook_maybe_done(h);
	}
}

/* Over its time: the whole group is killed; the pipes close too. */
static void
hook_timeout(uv_timer_t *t)
{
	struct hook *h = t->data;

	if (!h->exited)
		h->timed_out = true;
	hook_kill_group(h);
	h->eof[0] = h->eof[1] = true;
	uv_read_stop((uv_stream_t *)&h->out[0]);
	uv_read_stop((uv_stream_t *)&h->out[1]);
	/* Not yet exited: SIGKILL brings the exit, which reaps it. */
	hook_maybe_done(h);
}

/* Starts h; on failure, its report says why. */
static void
hook_start(struct daemon *d, struct hook *h)
{
	uv_process_options_t po;
	uv_stdio_container_t stdio[3];
	int rc, k;

	memset(&po, 0, sizeof po);
	for (k = 0; k < 2; k++) {
		uv_pipe_init(&d->loop, &h->out[k], 0);
		h->out[k].data = h;
	}
	uv_timer_init(&d->loop, &h->timer);
	h->timer.data = h;
	h->proc.data = h;
	stdio[0].flags = UV_IGNORE;
	for (k = 0; k < 2; k++) {
		stdio[k + 1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
		stdio[k + 1].data.stream = (uv_stream_t *)&h->out[k];
	}
	po.exit_cb = hook_exited;
	po.file = h->argv[0];
	po.args = h->argv;
	po.env = h->env;
	po.cwd = "/";
	po.stdio = stdio;
	po.stdio_count = 3;
	/* setsid: a group of its own, to kill whole. */
	po.flags = UV_PROCESS_DETACHED;
	if (getuid() != h->uid || getgid() != h->gid) {
		po.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
		po.uid = h->uid;
		po.gid = h->gid;
	}
	h->next = d->hooks_run;
	d->hooks_run = h;
	d->nhooks++;
	h->open_handles = 4;
	if ((rc = uv_spawn(&d->loop, &h->proc, &po)) != 0) {
		/* Its handles were initialised all the same. */
		h->spawn_error = rc;
		h->exited = h->eof[0] = h->eof[1] = true;
		hook_maybe_done(h);
		return;
	}
	h->started = true;
	uv_read_start((uv_stream_t *)&h->out[0], hook_alloc, hook_read);
	uv_read_start((uv_stream_t *)&h->out[1], hook_alloc, hook_read);
	uv_timer_start(&h->timer, hook_timeout,
	    (uint64_t)(d->opts.hook_timeout * 1000), 0);
}

/* Starts waiting hooks while fewer than HOOK_MAX_RUNNING run. */
static void
hook_next(struct daemon *d)
{
	struct hook *h;

	while (d->nhooks < HOOK_MAX_RUNNING && d->hooks_wait != NULL &&
	    !d->hooks_stopped) {
		h = d->hooks_wait;
		d->hooks_wait = h->next;
		h->next = NULL;
		hook_start(d, h);
	}
}

/* Parses a job's stored hook (a JSON array of words); NULL: none. */
static char **
hook_words(const char *json)
{
	cJSON *a = json != NULL ? cJSON_Parse(json) : NULL, *w;
	char **v = NULL;
	size_t n = 0;

	if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) < 1 ||
	    cJSON_GetArraySize(a) > CMDLINE_MAX_WORDS)
		goto out;
	v = xcalloc((size_t)cJSON_GetArraySize(a) + 1, sizeof *v);
	cJSON_ArrayForEach(w, a) {
		if (!cJSON_IsString(w)) {
			cmdline_free(v);
			v = NULL;
			goto out;
		}
		v[n++] = xstrdup(w->valuestring);
	}
out:
	cJSON_Delete(a);
	return v;
}

static char **
hook_copy(char *const *words)
{
	char **v;
	size_t n = 0, i;

	while (words[n] != NULL)
		n++;
	v = xcalloc(n + 1, sizeof *v);
	for (i = 0; i < n; i++)
		v[i] = xstrdup(words[i]);
	return v;
}

static void
hook_queue(struct daemon *d, struct hook *h)
{
	struct hook **pp = &d->hooks_wait;

	while (*pp != NULL)
		pp = &(*pp)->next;
	*pp = h;
	hook_next(d);
}

void
hook_job_ended(struct daemon *d, const struct djob *j)
{
	char **own;

	if (d->hooks_stopped || j->state == JOB_INTERRUPTED ||
	    !proto_state_final(j->state))
		return;
	/* Refused at submit otherwise; a store from a root daemon read by
	 * a daemon that is not must not run one as itself. */
	if (!hook_allowed(d, j->owner))
		return;
	if ((own = hook_words(j->on_done)) != NULL)
		hook_queue(d, hook_new(d, j, own, false));
	/* Every job a user submitted: a pipeline once, not its stages. */
	if (d->opts.on_done != NULL && j->grp == 0)
		hook_queue(d, hook_new(d, j, hook_copy(d->opts.on_done),
		    true));
}

/*
 * The daemon stops: waiting hooks are dropped, running ones killed with
 * their groups (their handles are closed with every other, and h freed
 * by hook_free_all).
 */
void
hook_stop_all(struct daemon *d)
{
	struct hook *h;
	struct djob *j;
	char *cmd;

	d->hooks_stopped = true;
	while ((h = d->hooks_wait) != NULL) {
		d->hooks_wait = h->next;
		log_info("job %llu: on-done hook not run: the daemon stops",
		    (unsigned long long)h->job);
		hook_free(h);
	}
	for (h = d->hooks_run; h != NULL; h = h->next) {
		if (h->exited)
			continue;
		hook_kill_group(h);
		cmd = cmdline_join(h->argv);
		if ((j = job_find(d, h->job)) != NULL)
			job_log(d, j, "on-done hook (%s) killed: the daemon "
			    "stops", cmd);
		free(cmd);
	}
}

/* After the loop has closed every handle. */
void
hook_free_all(struct daemon *d)
{
	struct hook *h;

	while ((h = d->hooks_run) != NULL) {
		d->hooks_run = h->next;
		hook_free(h);
	}
}
