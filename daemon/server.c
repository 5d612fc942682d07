/* SPDX-License-Identifier: MIT */
/*
 * server.c: the listening Unix socket.
 *
 * Personal mode puts the socket in a 0700 directory of ours (mode 0600),
 * and refuses a directory that is not (proto/sockdir.c); team mode in a
 * 0750 directory with a 0660 socket, for a group.  The socket is
 * created under a restrictive umask, restored on every path, and chmod'ed
 * explicitly (tmux's "restore umask if bind fails", smtpd).  Before an
 * existing path is unlinked, a connect() tells whether a daemon still
 * answers; an exclusive lock on "<socket>.lock" makes two daemons started
 * at once (two clients auto-starting) settle on exactly one.  libuv 1.44
 * truncates long paths silently, so the length is checked here.  A socket
 * passed by systemd (LISTEN_FDS) is adopted instead.  Accepting pauses for
 * a second when descriptors run out.  Loop thread only.
 */
#define _GNU_SOURCE
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "xmalloc.h"

static void server_on_accept(uv_poll_t *, int, int);

/* Does something answer at path? */
static bool
server_alive(const char *path)
{
	struct sockaddr_un sun;
	int fd, ok;

	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return false;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	ok = connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
	close(fd);
	return ok;
}

/* systemd socket activation: adopt descriptor 3. */
static int
server_adopt(void)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");

	if (pid == NULL || fds == NULL || atol(pid) != (long)getpid() ||
	    atoi(fds) < 1)
		return -1;
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	fcntl(3, F_SETFD, FD_CLOEXEC);
	fcntl(3, F_SETFL, fcntl(3, F_GETFL) | O_NONBLOCK);
	return 3;
}

/*
 * The socket's directory.  A personal one must be ours with mode 0700
 * (sockdir.c says why; tmux refuses too); a team's is the group's, made
 * by its administrator or by us.
 */
static int
server_dir(struct daemon *d, char **cause)
{
	char *p = xstrdup(d->opts.socket), *dir = dirname(p), *s;
	struct stat st;
	int rc = 0;

	if (!d->opts.team) {
		rc = sockdir_check(dir, true, cause);
		free(p);
		return rc;
	}
	/* Missing parents (a runtime directory nobody made) are ours. */
	for (s = dir + 1; *s != '\0'; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		mkdir(dir, 0700);
		*s = '/';
	}
	if (mkdir(dir, 0750) == -1 && errno != EEXIST) {
		rc = -errno;
		*cause = xasprintf("cannot create %s: %s", dir,
		    strerror(errno));
	} else if (stat(dir, &st) == -1 || !S_ISDIR(st.st_mode)) {
		rc = -ENOTDIR;
		*cause = xasprintf("%s is not a directory", dir);
	}
	free(p);
	return rc;
}

static int
server_lock(struct daemon *d, char **cause)
{
	char *path = xasprintf("%s.lock", d->opts.socket);
	int rc = 0;

	d->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->lock_fd == -1) {
		rc = -errno;
		*cause = xasprintf("cannot open %s: %s", path, strerror(errno));
	} else if (flock(d->lock_fd, LOCK_EX | LOCK_NB) == -1) {
		rc = -EADDRINUSE;
		*cause = xasprintf("another merged is running or starting on "
		    "%s", d->opts.socket);
	}
	free(path);
	return rc;
}

/* Team mode: the socket and its directory belong to the team's group. */
static int
server_chgrp(struct daemon *d, char **cause)
{
	char *p = xstrdup(d->opts.socket), *dir = dirname(p);
	struct group *gr = getgrnam(d->opts.group);
	int rc = 0;

	if (gr == NULL) {
		*cause = xasprintf("no group '%s'", d->opts.group);
		rc = -1;
		errno = EINVAL;
	} else if (chown(d->opts.socket, (uid_t)-1, gr->gr_gid) == -1 ||
	    chown(dir, (uid_t)-1, gr->gr_gid) == -1) {
		rc = -1;
	}
	free(p);
	return rc;
}

static int
server_bind(struct daemon *d, char **cause)
{
	struct sockaddr_un sun;
	mode_t old;
	int fd, rc;

	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1) {
		*cause = xasprintf("socket: %s", strerror(errno));
		return -errno;
	}
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, d->opts.socket, strlen(d->opts.socket) + 1);
	old = umask(d->opts.team ? 0117 : 0177);
	rc = bind(fd, (struct sockaddr *)&sun, sizeof sun);
	umask(old);
	if (rc == 0 && d->opts.group != NULL)
		rc = server_chgrp(d, cause);
	if (rc == -1 || chmod(d->opts.socket, d->opts.team ? 0660 : 0600) ==
	    -1 || listen(fd, 64) == -1) {
		rc = -errno;
		if (*cause == NULL)
			*cause = xasprintf("cannot listen on %s: %s",
			    d->opts.socket, strerror(errno));
		close(fd);
		return rc;
	}
	d->socket_owned = true;
	return fd;
}

int
server_open(struct daemon *d, char **cause)
{
	struct sockaddr_un sun;
	int fd, rc;

	d->lock_fd = -1;
	if ((fd = server_adopt()) == -1) {
		if (strlen(d->opts.socket) >= sizeof sun.sun_path) {
			*cause = xasprintf("socket path %s is too long (at most "
			    "%zu bytes)", d->opts.socket,
			    sizeof sun.sun_path - 1);
			return -ENAMETOOLONG;
		}
		if ((rc = server_dir(d, cause)) != 0 ||
		    (rc = server_lock(d, cause)) != 0)
			return rc;
		if (server_alive(d->opts.socket)) {
			*cause = xasprintf("a daemon already answers on %s",
			    d->opts.socket);
			return -EADDRINUSE;
		}
		unlink(d->opts.socket);
		if ((fd = server_bind(d, cause)) < 0)
			return fd;
	}
	d->listen_fd = fd;
	uv_poll_init(&d->loop, &d->listen_poll, fd);
	d->listen_poll.data = d;
	uv_poll_start(&d->listen_poll, UV_READABLE, server_on_accept);
	uv_timer_init(&d->loop, &d->accept_timer);
	d->accept_timer.data = d;
	d->listening = true;
	return 0;
}

static void
server_resume(uv_timer_t *t)
{
	struct daemon *d = t->data;

	if (d->listening)
		uv_poll_start(&d->listen_poll, UV_READABLE, server_on_accept);
}

static void
server_on_accept(uv_poll_t *h, int status, int events)
{
	struct daemon *d = h->data;
	int fd;

	(void)events;
	if (status < 0)
		return;
	for (;;) {
		fd = accept4(d->listen_fd, NULL, NULL, SOCK_NONBLOCK |
		    SOCK_CLOEXEC);
		if (fd >= 0) {
			conn_accept(d, fd);
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EMFILE || errno == ENFILE) {
			/* Out of descriptors: back off a second (tmux). */
			log_warn("accept");
			uv_poll_stop(&d->listen_poll);
			uv_timer_start(&d->accept_timer, server_resume, 1000, 0);
		}
		return;
	}
}

/* Stops accepting and removes the socket we made. */
void
server_close(struct daemon *d)
{
	if (!d->listening)
		return;
	d->listening = false;
	uv_timer_stop(&d->accept_timer);
	uv_close((uv_handle_t *)&d->accept_timer, NULL);
	uv_close((uv_handle_t *)&d->listen_poll, NULL);
	close(d->listen_fd);
	d->listen_fd = -1;
	/* The lock stays until exit: no second daemon while we drain. */
	if (d->socket_owned)
		unlink(d->opts.socket);
}
