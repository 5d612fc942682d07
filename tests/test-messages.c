/* SPDX-License-Identifier: MIT */
/*
 * test-messages.c: messages that must say what happened (issue 9, row 11)
 * and the daemon's descriptor limit (row 8).
 *
 * - merged raises its soft RLIMIT_NOFILE to the hard limit and logs it;
 * - a daemon out of descriptors says so, not "too many descriptors in one
 *   message", which stays for a client that sends more than 64;
 * - a descriptor that is not a directory is named, with its kind;
 * - a reply over the line limit is "too large", not a closed connection;
 * - "model ... not found; looked in: ..." lists the places on its line,
 *   without a literal "\n", from mergectl run and from submit.
 *
 * Runs as any user: the daemon is the test's own.
 */
#define _GNU_SOURCE
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"
#include "tap.h"
#include "testd.h"
#include "testlib.h"

#define STR_(x) #x
#define STR(x) STR_(x)
#define HELLO "{\"v\":" STR(PROTO_VERSION) ",\"id\":1,\"op\":\"hello\"}\n"

static const char *dir;

/* Reads up to and including the first "\n" (one reply), or EOF. */
static char *
read_line(int fd)
{
	size_t len = 0;
	char *buf = calloc(1, 65536);

	while (len < 65535 && read(fd, buf + len, 1) == 1)
		if (buf[len++] == '\n')
			break;
	return buf;
}

/* Soft and hard "Max open files" of a process, from /proc/PID/limits. */
static bool
nofile_of(pid_t pid, unsigned long long *soft, unsigned long long *hard)
{
	char path[64], line[256];
	bool got = false;
	FILE *fp;

	snprintf(path, sizeof path, "/proc/%d/limits", (int)pid);
	if ((fp = fopen(path, "r")) == NULL)
		return false;
	while (!got && fgets(line, sizeof line, fp) != NULL)
		got = sscanf(line, "Max open files %llu %llu", soft, hard) == 2;
	fclose(fp);
	return got;
}

static bool
log_has(const char *text)
{
	char path[700], *s;
	bool has;

	snprintf(path, sizeof path, "%s/merged.log", dir);
	s = tl_read(path, NULL);
	has = s != NULL && strstr(s, text) != NULL;
	free(s);
	return has;
}

/* Started with a low soft limit, merged raises it to the hard one. */
static pid_t
test_rlimit(void)
{
	struct rlimit old, low;
	unsigned long long soft = 0, hard = 0;
	char want[128];
	pid_t pid;

	if (getrlimit(RLIMIT_NOFILE, &old) != 0)
		abort();
	low = old;
	if (old.rlim_max > 256)
		low.rlim_cur = 128;
	if (setrlimit(RLIMIT_NOFILE, &low) != 0)
		abort();
	pid = td_start("--memory 256M", NULL);
	if (setrlimit(RLIMIT_NOFILE, &old) != 0)
		abort();
	if (old.rlim_max <= 256) {
		ok(1, "# SKIP the hard descriptor limit (%llu) is too low to "
		    "see a raise", (unsigned long long)old.rlim_max);
		return pid;
	}
	if (!nofile_of(pid, &soft, &hard))
		tap_diag("cannot read /proc/%d/limits", (int)pid);
	ok(soft == hard && hard == (unsigned long long)old.rlim_max, "started "
	    "with a soft descriptor limit of 128, merged raised it to the hard "
	    "limit (%llu of %llu)", soft, hard);
	snprintf(want, sizeof want, "descriptor limit %llu (hard limit %llu)",
	    hard, hard);
	ok(log_has(want), "and logged \"%s\"", want);
	return pid;
}

/*
 * A daemon at its descriptor limit cannot take a request's descriptors:
 * it says it ran out, not that the client sent too many.
 */
static void
test_emfile(pid_t pid)
{
	struct rlimit tight, saved;
	char *got, want[128];
	int fds[20], sock, i, n;

	for (i = 0; i < 20; i++)
		fds[i] = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	/*
	 * Room for the connection and three of the twenty: the limit caps
	 * descriptor numbers, and the lowest free ones are taken, so count
	 * what is open.  Only the soft limit, which anyone may raise back.
	 */
	n = td_fd_count(pid);
	if (n < 0 || prlimit(pid, RLIMIT_NOFILE, NULL, &saved) != 0) {
		ok(0, "cannot read the daemon's descriptors: %s",
		    strerror(errno));
		return;
	}
	tight = saved;
	tight.rlim_cur = (rlim_t)n + 4;
	if (prlimit(pid, RLIMIT_NOFILE, &tight, NULL) != 0) {
		ok(0, "cannot lower the daemon's descriptor limit: %s",
		    strerror(errno));
		return;
	}
	sock = td_raw_connect();
	ok(sock >= 0 && td_send_fds(sock, HELLO, strlen(HELLO), fds, 20), "out of descriptors: "
	    "a hello with 20 descriptors is sent");
	got = td_raw_read_all(sock, 30);
	snprintf(want, sizeof want, " open, limit %d); try again later",
	    n + 4);
	ok_str_has(got, "\"code\":\"limit\",\"msg\":\"the daemon has run out "
	    "of file descriptors (", "out of descriptors: the daemon says "
	    "so");
	ok_str_has(got, want, "out of descriptors: with its limit");
	ok(strstr(got, "too many descriptors") == NULL, "out of descriptors: "
	    "not \"too many descriptors in one message\"");
	free(got);
	close(sock);
	ok(prlimit(pid, RLIMIT_NOFILE, &saved, NULL) == 0, "the limit is "
	    "restored");
	ok(log_has("descriptors it sent were lost"), "out of descriptors: "
	    "the daemon logs it");
	ok_int_eq(td_ctl(NULL, "daemon status"), 0, "out of descriptors: the "
	    "daemon serves on");
	for (i = 0; i < 20; i++)
		close(fds[i]);
}

/* More than 64 descriptors in one message is the client's mistake. */
static void
test_too_many_fds(void)
{
	char *got;
	int fds[70], sock, i;

	for (i = 0; i < 70; i++)
		fds[i] = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	sock = td_raw_connect();
	ok(sock >= 0 && td_send_fds(sock, HELLO, strlen(HELLO), fds, 70), "70 descriptors are "
	    "sent with one line");
	got = td_raw_read_all(sock, 30);
	ok_str_has(got, "too many descriptors in one message", "70 "
	    "descriptors: \"too many descriptors in one message\"");
	free(got);
	close(sock);
	for (i = 0; i < 70; i++)
		close(fds[i]);
}

/* A submit whose descriptor at index bad is fd, not a directory. */
static char *
submit_with(int fd, int bad)
{
	char line[512], *got;
	int fds[2], sock;

	fds[bad] = fd;
	fds[1 - bad] = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	snprintf(line, sizeof line, "{\"v\":" STR(PROTO_VERSION) ",\"id\":2,\"op\":\"submit\","
	    "\"fds\":2,\"out_fd\":1,\"out_name\":\"x\",\"config\":\"merge_"
	    "method: passthrough\\nmodels:\\n  - model: ./a\\n\",\"models\":"
	    "[{\"ref\":\"./a\",\"fd\":0,\"rel\":\".\"}]}\n");
	sock = td_raw_connect();
	if (sock < 0 || write(sock, HELLO, strlen(HELLO)) !=
	    (ssize_t)strlen(HELLO)) {
		close(fds[1 - bad]);
		return strdup("");
	}
	free(read_line(sock));
	if (!td_send_fds(sock, line, strlen(line), fds, 2))
		tap_diag("sendmsg: %s", strerror(errno));
	shutdown(sock, SHUT_WR);
	got = td_raw_read_all(sock, 30);
	close(sock);
	close(fds[1 - bad]);
	return got;
}

static void
test_fd_types(void)
{
	char path[700], *got;
	int sp[2], fd;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0)
		abort();
	got = submit_with(sp[0], 1);
	ok_str_has(got, "descriptor 1 is a socket, not a directory", "a socket "
	    "as the output's directory is named as one");
	ok(strstr(got, "may not write") == NULL, "not taken for a permission "
	    "problem");
	free(got);
	close(sp[0]);
	close(sp[1]);
	snprintf(path, sizeof path, "%s/p.yml", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	got = submit_with(fd, 0);
	ok_str_has(got, "descriptor 0 is a regular file, not a directory", "a "
	    "file as a model root is named as one");
	free(got);
	close(fd);
}

/*
 * A server of our own that answers hello, then answers the next request
 * with one line over PROTO_MAX_LINE (320 KiB).
 */
static pid_t
big_reply_server(const char *sock)
{
	struct sockaddr_un sun;
	static char big[400 << 10];
	const char *ok_ = "{\"id\":1,\"ok\":true,\"server\":\"fake\"}\n";
	int lfd, c, rp[2];
	char *l, r = '?';
	pid_t pid;

	if (pipe(rp) != 0)
		abort();
	if ((pid = fork()) == 0) {
		signal(SIGPIPE, SIG_IGN);
		memset(&sun, 0, sizeof sun);
		sun.sun_family = AF_UNIX;
		if (strlen(sock) >= sizeof sun.sun_path)
			_exit(1);
		memcpy(sun.sun_path, sock, strlen(sock) + 1);
		lfd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (bind(lfd, (struct sockaddr *)&sun, sizeof sun) != 0 ||
		    listen(lfd, 4) != 0 || write(rp[1], "R", 1) != 1)
			_exit(1);
		if ((c = accept(lfd, NULL, NULL)) < 0)
			_exit(1);
		free(read_line(c));
		if (write(c, ok_, strlen(ok_)) < 0)
			_exit(1);
		l = read_line(c);
		memset(big, 'x', sizeof big);
		memcpy(big, "{\"id\":2,\"ok\":true,\"pad\":\"", 25);
		big[sizeof big - 1] = '\n';
		if (send(c, big, sizeof big, MSG_NOSIGNAL) < 0)
			_exit(0);
		while (read(c, big, sizeof big) > 0)
			;
		free(l);
		_exit(0);
	}
	close(rp[1]);
	if (read(rp[0], &r, 1) != 1 || r != 'R') {
		tap_diag("the fake server did not start");
		exit(99);
	}
	close(rp[0]);
	return pid;
}

static void
test_long_reply(void)
{
	char fake[600], sock[800], *o = NULL;
	pid_t pid;
	int rc;

	snprintf(fake, sizeof fake, "%s/fake", dir);
	snprintf(sock, sizeof sock, "%s/s.sock", fake);
	if (mkdir(fake, 0700) != 0)
		abort();
	pid = big_reply_server(sock);
	rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s %s status 2>&1", dir, sock,
	    tl_mergectl);
	waitpid(pid, NULL, 0);
	ok_int_eq(rc, 5, "a reply over 320 KiB: exit 5");
	ok_str_has(o, "mergectl: the daemon's reply is too large (over 320 "
	    "KiB, the most one message may hold); ask for less", "a reply over "
	    "320 KiB is called too large");
	ok(strstr(o, "closed the connection") == NULL, "not \"the daemon "
	    "closed the connection\"");
	free(o);
}

/* The places a missing model was looked for, on the problem's line. */
static void
test_looked_in(void)
{
	char *o = NULL, want[1400];
	int rc;

	tl_write_at(dir, "missing.yml", "merge_method: passthrough\n"
	    "models:\n  - model: ./nowhere\n  - model: org/nowhere\n");
	rc = tl_runf(&o, "cd %s && HF_HUB_CACHE=%s/hub %s run missing.yml "
	    "out-run 2>&1", dir, dir, tl_mergectl);
	ok_int_eq(rc, 3, "run: a missing model is refused, exit 3");
	snprintf(want, sizeof want, "missing.yml:3:12: error: model "
	    "'./nowhere' not found; looked in: %s/nowhere (no such "
	    "directory; a relative path is from the current directory, %s)\n",
	    dir, dir);
	ok_str_has(o, want, "run: the place tried follows \"looked in:\", "
	    "and relative paths are said to be from the current directory");
	snprintf(want, sizeof want, "missing.yml:4:12: error: model "
	    "'org/nowhere' not found; looked in: %s/org/nowhere (no such "
	    "directory; a relative path is from the current directory, %s), "
	    "%s/hub/models--org--nowhere/refs/main (no such ref)\n", dir, dir,
	    dir);
	ok_str_has(o, want, "run: several places are a list on the line");
	ok(strstr(o, "\\n") == NULL, "run: no literal \\n");
	free(o);
	rc = tl_runf(&o, "cd %s && HF_HUB_CACHE=%s/hub MERGED_SOCKET=%s %s "
	    "submit missing.yml -o out-submit 2>&1", dir, dir, td_sock,
	    tl_mergectl);
	ok_int_eq(rc, 3, "submit: a missing model is refused, exit 3");
	ok_str_has(o, want, "submit: the same list");
	ok(strstr(o, "\\n") == NULL, "submit: no literal \\n");
	free(o);
	/* A typo in a directory's name: the nearest one beside it. */
	tl_write_at(dir, "typo.yml", "merge_method: passthrough\n"
	    "models:\n  - model: ./zoo/llama-bse\n");
	rc = tl_runf(&o, "cd %s && mkdir -p zoo/llama-base zoo/qwen && %s run "
	    "typo.yml out-typo 2>&1", dir, tl_mergectl);
	ok_int_eq(rc, 3, "a misspelt model directory: exit 3");
	ok_str_has(o, "; did you mean './zoo/llama-base'?\n", "naming the "
	    "nearest directory, as the config would write it");
	free(o);
}

int
main(int argc, char **argv)
{
	pid_t pid;

	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("messages");
	td_init(dir);
	tl_gen_at(dir, "a", "--family llama --seed 1");
	tl_write_at(dir, "p.yml", "merge_method: passthrough\nmodels:\n"
	    "  - model: ./a\n");
	pid = test_rlimit();
	test_emfile(pid);
	test_too_many_fds();
	test_fd_types();
	test_long_reply();
	test_looked_in();
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly");
	return tap_done();
}
