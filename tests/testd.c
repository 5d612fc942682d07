/* SPDX-License-Identifier: MIT */
/*
 * testd.c: driving a real merged from a test (testd.h).
 */
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <dirent.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "tap.h"
#include "testd.h"
#include "testlib.h"

char td_dir[512];
char td_sock[600];
char td_state[600];

void
td_init(const char *dir)
{
	snprintf(td_dir, sizeof td_dir, "%s", dir);
	snprintf(td_sock, sizeof td_sock, "%s/run/merged.sock", dir);
	snprintf(td_state, sizeof td_state, "%s/state", dir);
}

void
td_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* mergectl with the test's socket, in the test directory. */
int
td_ctl(char **out, const char *fmt, ...)
{
	va_list ap;
	char *args;
	int rc;

	va_start(ap, fmt);
	if (vasprintf(&args, fmt, ap) < 0)
		abort();
	va_end(ap);
	rc = tl_runf(out, "cd %s && MERGED_SOCKET=%s %s %s 2>&1", td_dir,
	    td_sock, tl_mergectl, args);
	free(args);
	return rc;
}

/*
 * A shell command as user (by name, with the groups the user database
 * gives it), in the test directory, with the user's home and the test's
 * socket: how a second user of the box runs mergectl.
 */
int
td_as(const char *user, char **out, const char *fmt, ...)
{
	struct passwd *pw = getpwnam(user);
	va_list ap;
	char *cmd, *p, *q = NULL;
	size_t qlen = 0;
	FILE *f;
	int rc;

	va_start(ap, fmt);
	if (vasprintf(&cmd, fmt, ap) < 0)
		abort();
	va_end(ap);
	/* The command goes in single quotes: each of its own is closed,
	 * escaped and reopened. */
	if ((f = open_memstream(&q, &qlen)) == NULL)
		abort();
	for (p = cmd; *p != '\0'; p++)
		if (*p == '\'')
			fputs("'\\''", f);
		else
			fputc(*p, f);
	fclose(f);
	rc = tl_runf(out, "cd %s && setpriv --reuid=%s --regid=%s "
	    "--init-groups env HOME=%s MERGED_SOCKET=%s sh -c '%s' 2>&1",
	    td_dir, user, user, pw != NULL ? pw->pw_dir : "/", td_sock, q);
	free(q);
	free(cmd);
	return rc;
}

/* Submits (args after "submit"); returns the job id, 0 on failure. */
int
td_submit(const char *fmt, ...)
{
	va_list ap;
	char *args, *o = NULL;
	size_t n;
	int rc, id;

	va_start(ap, fmt);
	if (vasprintf(&args, fmt, ap) < 0)
		abort();
	va_end(ap);
	rc = td_ctl(&o, "submit %s --quiet", args);
	/* The id is the last line: the plan's warnings come first. */
	if (rc == 0 && o != NULL) {
		n = strlen(o);
		while (n > 0 && o[n - 1] == '\n')
			n--;
		while (n > 0 && o[n - 1] != '\n')
			n--;
		id = atoi(o + n);
	} else {
		id = 0;
	}
	if (id == 0)
		tap_diag("submit %s: %d: %s", args, rc, o ? o : "");
	free(o);
	free(args);
	return id;
}

/*
 * Starts merged (extra: more options; env: "VAR=value ..." put before it,
 * or NULL) and waits until it answers, up to 10 s (ThreadSanitizer).  Its output goes to
 * merged.log in the test directory.
 */
pid_t
td_start(const char *extra, const char *env)
{
	char cmd[8192], log[600];
	siginfo_t si;
	pid_t pid;
	int i;

	snprintf(log, sizeof log, "%s/merged.log", td_dir);
	snprintf(cmd, sizeof cmd, "exec env %s %s --socket %s --state-dir %s "
	    "--threads 2 -v %s >>%s 2>&1", env != NULL ? env : "", tl_merged,
	    td_sock, td_state, extra, log);
	if ((pid = fork()) == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 400; i++) {
		if (td_ctl(NULL, "daemon status") == 0)
			return pid;
		/* Dead already?  Look without reaping: the caller waits. */
		memset(&si, 0, sizeof si);
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG |
		    WNOWAIT) == 0 && si.si_pid == pid)
			break;
		td_sleep_ms(25);
	}
	tap_diag("the daemon did not come up; see %s", log);
	return pid;
}

/* Sends sig and waits (up to 60 s, for a sanitized daemon draining);
 * returns the exit status or -1. */
int
td_stop(pid_t pid, int sig)
{
	int status, i;

	kill(pid, sig);
	for (i = 0; i < 2400; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) :
			    128 + WTERMSIG(status);
		td_sleep_ms(25);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return -1;
}

/* A field of "mergectl status ID --json", as text ("" when absent). */
char *
td_job_field(int id, const char *field)
{
	char *o = NULL, *p, *q, key[64];

	td_ctl(&o, "status %d --json", id);
	snprintf(key, sizeof key, "\"%s\":", field);
	if (o == NULL || (p = strstr(o, key)) == NULL) {
		free(o);
		return strdup("");
	}
	p += strlen(key);
	if (*p == '"') {
		/* A string: up to its closing quote (none are escaped). */
		q = strchr(++p, '"');
	} else {
		q = strpbrk(p, ",}");
	}
	p = strndup(p, q ? (size_t)(q - p) : strlen(p));
	free(o);
	return p;
}

/* A numeric field of the job's status (0 when absent). */
double
td_job_num(int id, const char *field)
{
	char *s = td_job_field(id, field);
	double v = atof(s);

	free(s);
	return v;
}

bool
td_wait_state(int id, const char *want, int ms)
{
	char *s;
	bool got = false;

	for (; ms > 0 && !got; ms -= 50) {
		s = td_job_field(id, "state");
		got = strcmp(s, want) == 0;
		free(s);
		if (!got)
			td_sleep_ms(50);
	}
	return got;
}

/* Waits until a job has at least n shards on disk, or it ended. */
bool
td_wait_shards(int id, int n, int ms)
{
	char *s, *st;
	bool got = false, ended = false;

	for (; ms > 0 && !got && !ended; ms -= 20) {
		s = td_job_field(id, "shards_done");
		st = td_job_field(id, "state");
		got = atoi(s) >= n;
		ended = strcmp(st, "running") != 0 && strcmp(st, "queued") != 0;
		free(s);
		free(st);
		if (!got)
			td_sleep_ms(20);
	}
	return got;
}

/* Is a staging directory of output prefix left in the test directory? */
bool
td_staging_left(const char *prefix)
{
	char *o = NULL;
	int rc = tl_runf(&o, "ls -a %s | grep -q '^\\.%s\\.merging'", td_dir,
	    prefix);

	free(o);
	return rc == 0;
}

int
td_raw_connect(void)
{
	struct sockaddr_un sun;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, td_sock, strlen(td_sock) < sizeof sun.sun_path ?
	    strlen(td_sock) : sizeof sun.sun_path - 1);
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Sends len bytes of text with n descriptors in one sendmsg, as a
 * client passes descriptors with its request; false if it failed. */
bool
td_send_fds(int sock, const char *text, size_t len, const int *fds,
    size_t n)
{
	struct msghdr mh;
	struct cmsghdr *cm;
	struct iovec iov;
	char *cbuf = calloc(1, CMSG_SPACE(n * sizeof(int)));
	ssize_t k;

	iov.iov_base = (void *)text;
	iov.iov_len = len;
	memset(&mh, 0, sizeof mh);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf;
	mh.msg_controllen = CMSG_SPACE(n * sizeof(int));
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(n * sizeof(int));
	memcpy(CMSG_DATA(cm), fds, n * sizeof(int));
	k = sendmsg(sock, &mh, MSG_NOSIGNAL);
	free(cbuf);
	return k == (ssize_t)len;
}

/* Everything the daemon says until it closes (or secs pass). */
char *
td_raw_read_all(int fd, int secs)
{
	struct timeval tv = { secs, 0 };
	size_t len = 0;
	char *buf = calloc(1, 65536);
	ssize_t n;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	while (len < 65535 && (n = read(fd, buf + len, 65535 - len)) > 0)
		len += (size_t)n;
	return buf;
}

/* PRAGMA integrity_check of the store, read while no daemon runs. */
bool
td_store_ok(void)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	const unsigned char *r;
	char path[700];
	bool good = false;

	snprintf(path, sizeof path, "%s/merged.db", td_state);
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) ==
	    SQLITE_OK && sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1,
	    &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW &&
	    (r = sqlite3_column_text(st, 0)) != NULL)
		good = strcmp((const char *)r, "ok") == 0;
	if (!good)
		tap_diag("integrity_check: %s", db != NULL ? sqlite3_errmsg(db) :
		    "cannot open");
	sqlite3_finalize(st);
	sqlite3_close(db);
	return good;
}

/* Runs sql on the store of a stopped daemon; false (said) on error. */
bool
td_store_exec(const char *sql)
{
	sqlite3 *db = NULL;
	char path[700], *err = NULL;
	bool good;

	snprintf(path, sizeof path, "%s/merged.db", td_state);
	good = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) ==
	    SQLITE_OK && sqlite3_exec(db, sql, NULL, NULL, &err) == SQLITE_OK;
	if (!good)
		tap_diag("%s: %s", sql, err != NULL ? err : db != NULL ?
		    sqlite3_errmsg(db) : "cannot open");
	sqlite3_free(err);
	sqlite3_close(db);
	return good;
}

/* Open descriptors of a process (its /proc/PID/fd entries). */
int
td_fd_count(pid_t pid)
{
	char path[64];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}
