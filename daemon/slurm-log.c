/* SPDX-License-Identifier: MIT */
/*
 * slurm-log.c: what the engine said on the node.  A batch job's output
 * and error go to a file beside the job's output (sbatch --output),
 * .OUT.slurm.log, written by the job as its user: the engine's
 * messages (its plan's problems, an I/O error) and slurmstepd's (a
 * memory or time limit).  When the job fails, its last lines join the
 * job's error and its log; when the job ends, the file goes.
 *
 * The daemon may be root and the file is the user's: it is opened
 * beneath the output's directory without following links or blocking
 * (a FIFO), must be a regular file of the job's owner, and only its
 * last SLURM_LOG_TAIL bytes are read, with control characters made
 * visible.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "xmalloc.h"

/* The bytes read from the end of the file, and the lines kept. */
#define SLURM_LOG_TAIL 4096
#define SLURM_LOG_LINES 4

char *
slurm_log_name(const char *out_name)
{
	return xasprintf(".%s.slurm.log", out_name);
}

/*
 * sbatch's --output for j: beside its output, by the path the node
 * sees (relative to the job's working directory, --chdir, when the
 * output's is).  Slurm expands %-patterns in it: a '%' is doubled.
 */
char *
slurm_log_arg(const struct djob *j)
{
	const char *slash = strrchr(j->out_dir, '/'), *s;
	char *name = slurm_log_name(j->out_name);
	char *path = xasprintf("%.*s%s", slash != NULL ? (int)(slash -
	    j->out_dir + 1) : 0, j->out_dir, name);
	struct xbuf x = { 0 };

	xbuf_add(&x, "--output=", 9);
	for (s = path; *s != '\0'; s++)
		xbuf_add(&x, *s == '%' ? "%%" : s, *s == '%' ? 2 : 1);
	free(path);
	free(name);
	return xbuf_take(&x);
}

/*
 * The file's last SLURM_LOG_TAIL bytes, from a line's start, or NULL
 * (no such file, or nothing in it).
 */
static char *
log_tail(const struct djob *j, size_t *len)
{
	char *name = slurm_log_name(j->out_name), *buf = NULL, *nl;
	struct stat st;
	off_t from;
	ssize_t n;
	int fd;

	fd = graph_user_file_open(j->out_fd, name, (int64_t)j->owner, &st);
	free(name);
	if (fd < 0)
		return NULL;
	from = st.st_size > SLURM_LOG_TAIL ? st.st_size - SLURM_LOG_TAIL : 0;
	buf = xmalloc(SLURM_LOG_TAIL + 1);
	do
		n = pread(fd, buf, SLURM_LOG_TAIL, from);
	while (n == -1 && errno == EINTR);
	if (n <= 0) {
		free(buf);
		buf = NULL;
		goto out;
	}
	buf[n] = '\0';
	*len = (size_t)n;
	/* Begun inside a line: from the next. */
	if (from > 0 && (nl = memchr(buf, '\n', *len)) != NULL) {
		*len -= (size_t)(nl + 1 - buf);
		memmove(buf, nl + 1, *len + 1);
	}
out:
	close(fd);
	return buf;
}

/*
 * The engine's last words on the node: the last SLURM_LOG_LINES
 * non-blank lines of its output, each written to j's log, joined with
 * "; "; NULL when there are none.
 */
char *
slurm_log_said(struct daemon *d, struct djob *j)
{
	const char *start[SLURM_LOG_LINES];
	size_t size[SLURM_LOG_LINES], len = 0, n = 0, k, l;
	struct xbuf x = { 0 };
	char *buf, *p, *end, *vis;

	if (j->out_fd == -1 || (buf = log_tail(j, &len)) == NULL)
		return NULL;
	/* The last lines, walking back from the end. */
	end = buf + len;
	while (end > buf && n < SLURM_LOG_LINES) {
		while (end > buf && (end[-1] == '\n' || end[-1] == '\r' ||
		    end[-1] == ' '))
			end--;
		for (p = end; p > buf && p[-1] != '\n'; p--)
			;
		if (p == end)
			break;
		start[n] = p;
		size[n++] = (size_t)(end - p);
		end = p;
	}
	for (k = n; k-- > 0;) {
		l = size[k];
		vis = graph_text_visible(start[k], strnlen(start[k], l), 512);
		job_log(d, j, "on the node: %s", vis);
		xbuf_printf(&x, "%s%s", x.len > 0 ? "; " : "", vis);
		free(vis);
	}
	free(buf);
	return x.data != NULL ? xbuf_take(&x) : NULL;
}

/* The file of the output named out_name in dirfd, as cred. */
void
slurm_log_remove(int dirfd, const char *out_name,
    const struct graph_cred *cred)
{
	char *name = slurm_log_name(out_name);

	if (dirfd != -1)
		graph_remove_tree(dirfd, name, cred);
	free(name);
}
