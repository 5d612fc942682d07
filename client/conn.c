/* SPDX-License-Identifier: MIT */
/*
 * conn.c: mergectl's connection to merged.
 *
 * Blocking I/O with a poll() timeout is enough for a client (ntpctl).  The
 * same framer as the daemon's reads the replies (proto/frame.c).  A request
 * that carries descriptors sends them as SCM_RIGHTS with its line, in one
 * sendmsg().  When nothing answers on the personal socket, submit starts a
 * personal daemon (in its own session, logging to the state directory)
 * and waits for it; if two clients do that at once, the daemon's lock lets
 * exactly one survive and both clients connect to it.  Before the first
 * byte goes out, trust.c checks the socket's directory and who listens.
 */
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"
#include "xmalloc.h"

extern char **environ;

/* --socket, else $MERGED_SOCKET, else the personal daemon's socket. */
char *
cli_socket_path(const char *given)
{
	const char *env = getenv("MERGED_SOCKET");

	if (given != NULL)
		return xstrdup(given);
	if (env != NULL && *env != '\0')
		return xstrdup(env);
	return sockdir_personal_path();
}

/* Is it the personal daemon's socket (neither --socket nor the env)? */
bool
cli_socket_personal(const char *given)
{
	const char *env = getenv("MERGED_SOCKET");

	return given == NULL && (env == NULL || *env == '\0');
}

static int
cli_dial(const char *path)
{
	struct sockaddr_un sun;
	int fd;

	if (strlen(path) >= sizeof sun.sun_path)
		return -ENAMETOOLONG;
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return -errno;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

/* merged next to mergectl (installed, or in the build tree), or $PATH. */
static char *
cli_daemon_binary(void)
{
	const char *env = getenv("MERGED_BIN");
	char self[4096], *dir, *p;
	ssize_t n;

	if (env != NULL && *env != '\0')
		return xstrdup(env);
	n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n > 0) {
		self[n] = '\0';
		dir = dirname(self);
		p = xasprintf("%s/merged", dir);
		if (access(p, X_OK) == 0)
			return p;
		free(p);
		p = xasprintf("%s/../daemon/merged", dir);
		if (access(p, X_OK) == 0)
			return p;
		free(p);
	}
	return xstrdup("merged");
}

/* Starts a personal daemon on path, detached, logging to its state dir. */
static int
cli_spawn_daemon(const char *path)
{
	const char *st = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
	char *bin = cli_daemon_binary(), *dir, *log;
	char *argv[] = { bin, (char *)"--socket", (char *)path, NULL };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	pid_t pid;
	int rc;

	dir = st != NULL && *st != '\0' ? xasprintf("%s/merged", st) :
	    xasprintf("%s/.local/state/merged", home ? home : "/tmp");
	log = xasprintf("%s/merged.log", dir);
	cli_mkdirs(dir, 0700);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT |
	    O_APPEND, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	/* A daemon keeps nothing of ours open (a caller's pipes, say). */
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	posix_spawnattr_init(&at);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID);
	rc = posix_spawnp(&pid, bin, &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	if (rc != 0)
		cli_error(CLI_E_NO_DAEMON, "cannot start %s: %s", bin,
		    strerror(rc));
	else
		fprintf(stderr, "%s: no daemon answered on %s: started a "
		    "personal one (%s, pid %ld); its log is %s\n",
		    cli_progname, path, bin, (long)pid, log);
	free(bin);
	free(dir);
	free(log);
	return rc == 0 ? 0 : -rc;
}

static void
cli_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

int
cli_connect(struct cli_conn *c, const char *path, bool autostart)
{
	int fd, i;

	memset(c, 0, sizeof *c);
	c->fd = -1;
	c->timeout_ms = 30000;
	fd = cli_dial(path);
	if (fd < 0 && autostart && (fd == -ENOENT || fd == -ECONNREFUSED)) {
		if (cli_spawn_daemon(path) == 0) {
			/* It opens its store and socket in milliseconds;
			 * allow a slow machine ten seconds. */
			for (i = 0; i < 200 && fd < 0; i++) {
				cli_sleep_ms(50);
				fd = cli_dial(path);
			}
		}
	}
	if (fd < 0) {
		cli_error(CLI_E_NO_DAEMON, "no daemon answers on %s: %s", path,
		    strerror(-fd));
		return -1;
	}
	c->fd = fd;
	frame_init(&c->in, PROTO_MAX_LINE);
	return 0;
}

void
cli_disconnect(struct cli_conn *c)
{
	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
	frame_fini(&c->in);
}

/* Sends one line, with descriptors if any; takes ownership of msg. */
int
cli_send(struct cli_conn *c, cJSON *msg, const int *fds, size_t nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(PROTO_MAX_FDS * sizeof(int))];
	} cbuf;
	struct msghdr mh;
	struct cmsghdr *cm;
	struct iovec iov;
	size_t len = 0, off = 0;
	ssize_t n;
	char *line = msg_print(msg, &len);

	cJSON_Delete(msg);
	if (line == NULL) {
		cli_error(PROTO_E_BAD_REQUEST, "the request is not valid "
		    "UTF-8");
		return -1;
	}
	while (off < len) {
		iov.iov_base = line + off;
		iov.iov_len = len - off;
		memset(&mh, 0, sizeof mh);
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		if (off == 0 && nfds > 0) {
			/* The descriptors ride on the line's first bytes. */
			memset(&cbuf, 0, sizeof cbuf);
			mh.msg_control = cbuf.buf;
			mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
			cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
			memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
		}
		n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			cli_error(CLI_E_NO_DAEMON, "sending to the daemon: %s",
			    strerror(errno));
			free(line);
			return -1;
		}
		off += (size_t)n;
	}
	free(line);
	return 0;
}

/* Says why no reply can be read, st being what the framer said. */
static void
cli_recv_failed(enum frame_status st)
{
	switch (st) {
	case FRAME_TOO_LONG:
		/* Not a closed connection: the daemon said more than one
		 * message may hold (a long job list, say). */
		cli_error(CLI_E_NO_DAEMON, "the daemon's reply is too large "
		    "(over %u KiB, the most one message may hold); ask for "
		    "less, such as one job (mergectl status JOB), or check "
		    "that mergectl and merged are the same version",
		    PROTO_MAX_LINE >> 10);
		break;
	case FRAME_BAD:
		cli_error(CLI_E_NO_DAEMON, "bad reply from the daemon: an "
		    "empty line, a NUL byte or invalid UTF-8");
		break;
	case FRAME_TRUNCATED:
		cli_error(CLI_E_NO_DAEMON, "the daemon closed the connection "
		    "in the middle of a reply");
		break;
	default:
		cli_error(CLI_E_NO_DAEMON, "the daemon closed the connection");
		break;
	}
}

/* The next message from the daemon; NULL after printing why. */
cJSON *
cli_recv(struct cli_conn *c, int timeout_ms)
{
	struct pollfd pfd = { c->fd, POLLIN, 0 };
	enum frame_status st;
	const char *why;
	size_t room, len;
	ssize_t n;
	char *space, *line;
	cJSON *msg;
	int r;

	for (;;) {
		st = frame_next(&c->in, &line, &len);
		if (st == FRAME_OK) {
			if ((msg = msg_parse(line, len, &why)) == NULL)
				cli_error(CLI_E_NO_DAEMON, "bad reply from the "
				    "daemon: %s", why);
			return msg;
		}
		if (st != FRAME_MORE || c->in.eof) {
			cli_recv_failed(st);
			return NULL;
		}
		r = poll(&pfd, 1, timeout_ms);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == 0) {
			cli_error(CLI_E_NO_DAEMON, "the daemon did not answer "
			    "within %d s", timeout_ms / 1000);
			return NULL;
		}
		space = frame_space(&c->in, &room);
		if (room == 0) {
			cli_recv_failed(FRAME_TOO_LONG);
			return NULL;
		}
		n = read(c->fd, space, room);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			frame_eof(&c->in);
			continue;
		}
		frame_commit(&c->in, (size_t)n);
	}
}

/*
 * Sends a request (taking ownership) and returns the reply with its id;
 * events of other requests are not expected here.  NULL after printing
 * why; an error reply is returned for the caller to report.
 */
cJSON *
cli_call(struct cli_conn *c, cJSON *req, const int *fds, size_t nfds)
{
	uint64_t id = 0, got;
	cJSON *r;

	msg_get_u64(req, PROTO_F_ID, &id);
	if (cli_send(c, req, fds, nfds) != 0)
		return NULL;
	for (;;) {
		if ((r = cli_recv(c, c->timeout_ms)) == NULL)
			return NULL;
		if (msg_get_u64(r, PROTO_F_ID, &got) && got == id &&
		    cJSON_GetObjectItem(r, PROTO_F_EVENT) == NULL)
			return r;
		if (got == 0 && cJSON_GetObjectItem(r, PROTO_F_ERROR) != NULL)
			return r;	/* a protocol error about us */
		cJSON_Delete(r);
	}
}

cJSON *
cli_new_request(struct cli_conn *c, const char *op)
{
	return msg_request(++c->next_id, op);
}

/*
 * Connects and says hello; returns 0, or an exit code.  Nothing is sent
 * before the daemon is known to be who it should be (trust.c).
 */
int
cli_open(struct cli_conn *c, const char *socket, bool autostart)
{
	char *path = cli_socket_path(socket);
	const char *env = getenv("MERGED_SOCKET");
	bool personal = cli_socket_personal(socket);
	cJSON *req, *r;
	uint64_t uid;
	int rc;

	/* Only a personal daemon is ours to start: a socket named on the
	 * command line or in $MERGED_SOCKET is a team's, or a test's. */
	if (socket != NULL || (env != NULL && *env != '\0' &&
	    getenv("MERGED_BIN") == NULL))
		autostart = false;
	/* The personal socket's directory: made private before a daemon is
	 * started in it, refused if someone else's. */
	if (personal && (rc = cli_trust_dir(path, autostart)) != 0) {
		free(path);
		return rc;
	}
	if (cli_connect(c, path, autostart) != 0) {
		free(path);
		return CLI_EXIT_DAEMON;
	}
	rc = cli_trust_peer(c->fd, path, personal);
	free(path);
	if (rc != 0) {
		cli_disconnect(c);
		return rc;
	}
	req = cli_new_request(c, PROTO_OP_HELLO);
	cJSON_AddStringToObject(req, PROTO_F_CLIENT, "mergectl " GRAPH_VERSION);
	if ((r = cli_call(c, req, NULL, 0)) == NULL) {
		cli_disconnect(c);
		return CLI_EXIT_DAEMON;
	}
	if ((rc = cli_check_reply(r, false)) != 0) {
		cJSON_Delete(r);
		cli_disconnect(c);
		return rc;
	}
	c->daemon_uid = msg_get_u64(r, PROTO_F_DAEMON_UID,
	    &uid) ? (int64_t)uid :
	    -1;
	cJSON_Delete(r);
	return 0;
}

/*
 * Prints an error reply and maps its code to an exit code; 0 for
 * success.  With json, the error is printed as JSON on stdout instead.
 */
int
cli_check_reply(const cJSON *r, bool json)
{
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, PROTO_F_ERROR), *p;
	const char *code = "", *msg = "";
	char *s;

	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, PROTO_F_OK)))
		return 0;
	msg_get_str(e, PROTO_F_CODE, &code);
	msg_get_str(e, PROTO_F_MSG, &msg);
	if (json) {
		s = cJSON_PrintUnformatted(r);
		printf("%s\n", s);
		cJSON_free(s);
	} else {
		cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(e,
		    PROTO_F_PROBLEMS))
			if (cJSON_IsString(p))
				fprintf(stderr, "%s\n", p->valuestring);
		fprintf(stderr, "%s: %s\n", cli_progname, msg);
	}
	if (strcmp(code, PROTO_E_BAD_CONFIG) == 0)
		return CLI_EXIT_INVALID;
	if (strcmp(code, PROTO_E_EXISTS) == 0)
		return CLI_EXIT_EXISTS;
	if (strcmp(code, PROTO_E_NOT_FOUND) == 0)
		return CLI_EXIT_NOT_FOUND;
	if (strcmp(code, PROTO_E_FORBIDDEN) == 0)
		return CLI_EXIT_FORBIDDEN;
	if (strcmp(code, PROTO_E_LIMIT) == 0)
		return CLI_EXIT_LIMIT;
	if (strcmp(code, PROTO_E_UNSUPPORTED) == 0)
		return CLI_EXIT_UNSUPPORTED;
	return CLI_EXIT_FAILED;
}

bool
cli_reply_ok(const cJSON *r)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, PROTO_F_OK));
}
