/* SPDX-License-Identifier: MIT */
/*
 * slurm-cmd.c: running Slurm's commands (sbatch, squeue, scancel) from
 * the loop without blocking it, for the slurm backend (slurm.c).
 *
 * A command runs with the daemon's environment (SLURM_CONF), its input,
 * if any, from an anonymous memory file (a batch script), and its
 * standard output and error collected up to a cap; the callback gets the
 * exit status and both, then the command is freed once its handles have
 * closed.  A drain waits for the commands in flight (slurm_cmd_busy):
 * they are short, and the loop closes only once they are done.
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "xmalloc.h"

/* squeue --json of a busy cluster is large; an error is a line. */
#define CMD_MAX_OUT (64u << 20)
#define CMD_MAX_ERR 4096
/* sbatch retries a controller that does not answer for minutes: a
 * command past this is killed, and says so. */
#define CMD_TIMEOUT_MS 60000

struct slurm_cmd {
	struct daemon *d;
	uv_process_t proc;
	uv_pipe_t pipe[2];	/* its stdout, stderr */
	uv_timer_t timer;	/* CMD_TIMEOUT_MS */
	struct xbuf buf[2];
	bool eof[2];
	bool exited;
	bool truncated;
	bool timed_out;
	int64_t status;
	int term_signal;
	int open_handles;
	slurm_cmd_cb cb;
	void *arg;
	struct slurm_cmd *next;
};

static void
cmd_closed(uv_handle_t *h)
{
	struct slurm_cmd *c = h->data, **pp;
	struct daemon *d = c->d;

	if (--c->open_handles > 0)
		return;
	for (pp = &d->slurm_cmds; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	xbuf_free(&c->buf[0]);
	xbuf_free(&c->buf[1]);
	free(c);
	if (d->draining)
		daemon_maybe_finish(d);
}

static void
cmd_close(struct slurm_cmd *c, uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, cmd_closed);
}

/* Exited and both pipes at their end: the callback, then the close. */
static void
cmd_maybe_done(struct slurm_cmd *c)
{
	if (!c->exited || !c->eof[0] || !c->eof[1])
		return;
	if (c->cb != NULL)
		c->cb(c->d, c->term_signal != 0 || c->truncated ||
		    c->timed_out ? -1 : c->status,
		    c->buf[0].data != NULL ? c->buf[0].data : "",
		    c->buf[0].len, c->buf[1].data != NULL ? c->buf[1].data :
		    "", c->arg);
	c->cb = NULL;
	uv_timer_stop(&c->timer);
	cmd_close(c, (uv_handle_t *)&c->timer);
	cmd_close(c, (uv_handle_t *)&c->pipe[0]);
	cmd_close(c, (uv_handle_t *)&c->pipe[1]);
	cmd_close(c, (uv_handle_t *)&c->proc);
}

/* Past its time: killed; its exit (by the signal) ends it as any. */
static void
cmd_timeout(uv_timer_t *t)
{
	struct slurm_cmd *c = t->data;
	static const char msg[] = "killed after 60 s without an answer";

	c->timed_out = true;
	xbuf_free(&c->buf[1]);
	xbuf_add(&c->buf[1], msg, sizeof msg - 1);
	c->eof[1] = true;
	uv_read_stop((uv_stream_t *)&c->pipe[1]);
	if (!c->exited)
		uv_process_kill(&c->proc, SIGKILL);
	/* What it left behind may hold its stdout open. */
	c->eof[0] = true;
	uv_read_stop((uv_stream_t *)&c->pipe[0]);
	cmd_maybe_done(c);
}

static void
cmd_exited(uv_process_t *p, int64_t status, int sig)
{
	struct slurm_cmd *c = p->data;

	c->exited = true;
	c->status = status;
	c->term_signal = sig;
	cmd_maybe_done(c);
}

static void
cmd_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
	static char scratch[4096];

	(void)h;
	(void)size;
	*buf = uv_buf_init(scratch, sizeof scratch);
}

static void
cmd_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct slurm_cmd *c = s->data;
	int k = s == (uv_stream_t *)&c->pipe[0] ? 0 : 1;
	size_t cap = k == 0 ? CMD_MAX_OUT : CMD_MAX_ERR;

	if (n > 0) {
		/* Past the cap the pipe is drained and the bytes dropped. */
		if (c->buf[k].len + (size_t)n <= cap)
			xbuf_add(&c->buf[k], buf->base, (size_t)n);
		else
			c->truncated = true;
		return;
	}
	if (n < 0) {
		uv_read_stop(s);
		c->eof[k] = true;
		cmd_maybe_done(c);
	}
}

/* An anonymous file holding text, at offset 0; -1 on failure. */
static int
cmd_input(const char *text)
{
	size_t len = strlen(text), off = 0;
	ssize_t n;
	int fd = memfd_create("merged-slurm-input", MFD_CLOEXEC);

	if (fd == -1)
		return -1;
	while (off < len) {
		n = write(fd, text + off, len - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			return -1;
		}
		off += (size_t)n;
	}
	if (lseek(fd, 0, SEEK_SET) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Runs argv (argv[0] found in PATH) with input on its standard input
 * (NULL: none); cb hears how it went.  0, or a negative errno with
 * nothing started (cb is not called).
 */
int
slurm_cmd_run(struct daemon *d, char **argv, const char *input,
    slurm_cmd_cb cb, void *arg)
{
	struct slurm_cmd *c;
	uv_process_options_t po;
	uv_stdio_container_t stdio[3];
	int rc, k, in = -1;

	if (input != NULL && (in = cmd_input(input)) == -1)
		return -errno;
	c = xcalloc(1, sizeof *c);
	c->d = d;
	c->cb = cb;
	c->arg = arg;
	memset(&po, 0, sizeof po);
	for (k = 0; k < 2; k++) {
		uv_pipe_init(&d->loop, &c->pipe[k], 0);
		c->pipe[k].data = c;
		stdio[k + 1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
		stdio[k + 1].data.stream = (uv_stream_t *)&c->pipe[k];
	}
	if (in != -1) {
		stdio[0].flags = UV_INHERIT_FD;
		stdio[0].data.fd = in;
	} else {
		stdio[0].flags = UV_IGNORE;
	}
	uv_timer_init(&d->loop, &c->timer);
	c->timer.data = c;
	c->proc.data = c;
	po.exit_cb = cmd_exited;
	po.file = argv[0];
	po.args = argv;
	po.stdio = stdio;
	po.stdio_count = 3;
	c->open_handles = 4;
	c->next = d->slurm_cmds;
	d->slurm_cmds = c;
	rc = uv_spawn(&d->loop, &c->proc, &po);
	if (in != -1)
		close(in);
	if (rc != 0) {
		/* Its handles were initialised all the same. */
		c->cb = NULL;
		c->exited = c->eof[0] = c->eof[1] = true;
		cmd_maybe_done(c);
		return rc;
	}
	uv_read_start((uv_stream_t *)&c->pipe[0], cmd_alloc, cmd_read);
	uv_read_start((uv_stream_t *)&c->pipe[1], cmd_alloc, cmd_read);
	uv_timer_start(&c->timer, cmd_timeout, CMD_TIMEOUT_MS, 0);
	return 0;
}

bool
slurm_cmd_busy(const struct daemon *d)
{
	return d->slurm_cmds != NULL;
}
