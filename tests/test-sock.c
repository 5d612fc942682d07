/* SPDX-License-Identifier: MIT */
/*
 * test-sock.c: whom mergectl talks to (issue 9, row 4: socket squatting).
 *
 * As root, with the test accounts merged-alice and merged-bob (members of
 * group merged) and merged (the team daemon's user): bob squats alice's
 * personal socket directory, /tmp/merged-<alice's uid>, in the ways a
 * user of a shared /tmp can (a directory of his, open to all or not; a
 * symbolic link), with a server of his listening in it; alice's mergectl
 * refuses with exit 11 and a message naming the directory, its owner and
 * mode, and merged refuses to start there.  Then bob's server answers on
 * a socket whose directory is alice's (personal) and on a path named by
 * MERGED_SOCKET (team): mergectl checks who listens before it sends
 * anything.  In every case bob's server must have read no byte.  Last,
 * the cases that must go on working: alice's personal daemon started on
 * demand in /tmp, and a team daemon run as user merged serving alice.
 *
 * The /tmp/merged-UID path is derived from alice's uid, so this program
 * owns it while it runs: it is removed before and after each use.
 */
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "testd.h"
#include "testlib.h"

struct acct {
	const char *name;
	uid_t uid;
	gid_t gid;
};

/* A listener of another user's, counting what it is sent. */
struct fake {
	pid_t pid;
	int stop;		/* closing it tells the server to report */
	int result;		/* "CONNECTIONS BYTES\n" comes back here */
};

static const char *dir;
static struct acct alice, bob, team;
static gid_t team_gid;
static char squat[64];		/* /tmp/merged-<alice's uid> */

static bool
acct_get(const char *name, struct acct *a)
{
	struct passwd *pw = getpwnam(name);

	if (pw == NULL)
		return false;
	a->name = name;
	a->uid = pw->pw_uid;
	a->gid = pw->pw_gid;
	return true;
}

static void
run_quiet(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A setup command; the test cannot go on without it. */
static void
run_quiet(const char *fmt, ...)
{
	va_list ap;
	char *cmd, *o = NULL;
	int rc;

	va_start(ap, fmt);
	if (vasprintf(&cmd, fmt, ap) < 0)
		abort();
	va_end(ap);
	if ((rc = tl_runf(&o, "%s 2>&1", cmd)) != 0) {
		tap_diag("setup: %s: exit %d: %s", cmd, rc, o);
		exit(99);
	}
	free(o);
	free(cmd);
}

static int
as_user(const struct acct *, char **, const char *, const char *, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * mergectl ARGS as user a, in the test directory, with a home of its own
 * and neither MERGED_SOCKET nor XDG_RUNTIME_DIR (env adds "VAR=value").
 */
static int
as_user(const struct acct *a, char **out, const char *env, const char *fmt,
    ...)
{
	va_list ap;
	char *args;
	int rc;

	va_start(ap, fmt);
	if (vasprintf(&args, fmt, ap) < 0)
		abort();
	va_end(ap);
	rc = tl_runf(out, "cd %s && setpriv --reuid=%u --regid=%u "
	    "--init-groups env -u MERGED_SOCKET -u XDG_RUNTIME_DIR -u "
	    "MERGED_USER -u MERGED_BIN -u XDG_STATE_HOME HOME=%s/home-%s %s "
	    "%s %s 2>&1", dir, (unsigned)a->uid, (unsigned)a->gid, dir,
	    a->name, env != NULL ? env : "", tl_mergectl, args);
	free(args);
	return rc;
}

/* Bytes left to read on fd, whose client is gone: read without waiting. */
static long
fake_drain_fd(int fd)
{
	char buf[4096];
	long bytes = 0;
	ssize_t k;

	(void)fcntl(fd, F_SETFL, O_NONBLOCK);
	while ((k = read(fd, buf, sizeof buf)) > 0)
		bytes += k;
	return bytes;
}

/*
 * Told to stop: the clients have exited, but the kernel may hold one's
 * connection in the listen backlog, or what it sent in a socket, that
 * the loop has not got to yet (a busy machine: one connection of two
 * counted, 1 run in 8).  Count them too.
 */
static void
fake_drain(int lfd, struct pollfd *open, size_t nopen, long *conns,
    long *bytes)
{
	size_t i;
	int fd;

	for (i = 0; i < nopen; i++)
		*bytes += fake_drain_fd(open[i].fd);
	(void)fcntl(lfd, F_SETFL, O_NONBLOCK);
	while ((fd = accept(lfd, NULL, NULL)) >= 0) {
		(*conns)++;
		*bytes += fake_drain_fd(fd);
		close(fd);
	}
}

/* The fake server's loop: accept, read and count, until told to stop. */
static void
fake_serve(int lfd, int stop, int result, bool hangup_after_line)
{
	struct pollfd p[34];
	long conns = 0, bytes = 0;
	size_t n = 2, i;
	char buf[4096];
	ssize_t k;

	p[0].fd = stop;
	p[1].fd = lfd;
	p[0].events = p[1].events = POLLIN;
	for (;;) {
		if (poll(p, n, -1) == -1 && errno != EINTR)
			break;
		if (p[0].revents != 0) {
			fake_drain(lfd, p + 2, n - 2, &conns, &bytes);
			break;
		}
		if ((p[1].revents & POLLIN) && n < 34) {
			p[n].fd = accept(lfd, NULL, NULL);
			p[n].events = POLLIN;
			p[n].revents = 0;
			if (p[n].fd >= 0) {
				conns++;
				n++;
			}
		}
		for (i = 2; i < n; i++) {
			if (p[i].revents == 0)
				continue;
			k = read(p[i].fd, buf, sizeof buf);
			if (k > 0)
				bytes += k;
			if (k <= 0 || (hangup_after_line && memchr(buf, '\n',
			    (size_t)k) != NULL)) {
				close(p[i].fd);
				p[i] = p[--n];
				i--;
			}
		}
	}
	dprintf(result, "%ld %ld\n", conns, bytes);
}

/*
 * Starts a server as user a, listening on sock (mode 0666); when mkdir_mode
 * is not 0, it first makes sock's directory with that mode, as a.  With
 * hangup_after_line, it hangs up on a client once it has read a line.
 */
static void
fake_start(struct fake *f, const struct acct *a, const char *sock,
    mode_t mkdir_mode, bool hangup_after_line)
{
	struct sockaddr_un sun;
	int sp[2], rp[2], lfd;
	char *d, c = '?';

	if (pipe(sp) != 0 || pipe(rp) != 0)
		abort();
	/* Made here, as root, then given to a: the test directory is not
	 * a's to write in (/tmp would be). */
	d = strdup(sock);
	*strrchr(d, '/') = '\0';
	if (mkdir_mode != 0 && (mkdir(d, 0700) != 0 || chown(d, a->uid,
	    a->gid) != 0 || chmod(d, mkdir_mode) != 0)) {
		tap_diag("setup: mkdir %s: %s", d, strerror(errno));
		exit(99);
	}
	free(d);
	if ((f->pid = fork()) == 0) {
		close(sp[1]);
		close(rp[0]);
		if (setgroups(0, NULL) != 0 || setgid(a->gid) != 0 ||
		    setuid(a->uid) != 0)
			_exit(1);
		umask(0);
		memset(&sun, 0, sizeof sun);
		sun.sun_family = AF_UNIX;
		snprintf(sun.sun_path, sizeof sun.sun_path, "%s", sock);
		lfd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (bind(lfd, (struct sockaddr *)&sun, sizeof sun) != 0 ||
		    listen(lfd, 8) != 0)
			_exit(3);
		if (write(rp[1], "R", 1) != 1)
			_exit(4);
		fake_serve(lfd, sp[0], rp[1], hangup_after_line);
		unlink(sock);
		_exit(0);
	}
	close(sp[0]);
	close(rp[1]);
	f->stop = sp[1];
	f->result = rp[0];
	if (read(f->result, &c, 1) != 1 || c != 'R') {
		tap_diag("the fake server (as %s) did not start on %s", a->name,
		    sock);
		exit(99);
	}
}

/* Stops the server; *conns and *bytes say what it was sent. */
static void
fake_stop(struct fake *f, long *conns, long *bytes)
{
	char buf[64] = "";
	ssize_t n;

	close(f->stop);
	n = read(f->result, buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = '\0';
	close(f->result);
	waitpid(f->pid, NULL, 0);
	*conns = *bytes = -1;
	if (sscanf(buf, "%ld %ld", conns, bytes) != 2)
		tap_diag("the fake server reported \"%s\"", buf);
}

static void
clean_squat(void)
{
	run_quiet("rm -rf %s", squat);
}

/* What alice is told when bob owns the directory, in every form. */
static void
check_refused(const char *what, int rc, const char *o, const char *how)
{
	char want[512];

	ok_int_eq(rc, 11, "%s: refused with exit 11", what);
	snprintf(want, sizeof want, "refusing to connect: the socket "
	    "directory %s (%sowner uid %u (%s), mode ", squat, how,
	    (unsigned)bob.uid, bob.name);
	ok_str_has(o, want, "%s: naming the directory, its owner and mode",
	    what);
	snprintf(want, sizeof want, "must be a directory of uid %u (%s) with "
	    "mode 0700", (unsigned)alice.uid, alice.name);
	ok_str_has(o, want, "%s: and what it must be", what);
	ok_str_has(o, "have it removed (by its owner or root)", "%s: and what "
	    "to do", what);
}

/* bob's directory in /tmp, open to all, with his server in it. */
static void
test_squat_open(void)
{
	struct fake f;
	struct stat st;
	long conns, bytes;
	char sock[128], *o = NULL, want[256];
	int rc;

	clean_squat();
	snprintf(sock, sizeof sock, "%s/merged.sock", squat);
	fake_start(&f, &bob, sock, 0777, false);
	rc = as_user(&alice, &o, NULL, "submit p.yml -o out-alice/x");
	check_refused("squat 0777, submit", rc, o, "");
	ok_str_has(o, "mode 0777)", "squat 0777: the mode is 0777");
	free(o);
	rc = as_user(&alice, &o, NULL, "status");
	ok_int_eq(rc, 11, "squat 0777: status is refused too");
	free(o);
	rc = as_user(&alice, &o, NULL, "daemon start");
	ok_int_eq(rc, 11, "squat 0777: and daemon start");
	free(o);
	/* merged itself, as alice, on its default socket. */
	rc = tl_runf(&o, "cd %s && setpriv --reuid=%u --regid=%u --init-groups "
	    "env -u XDG_RUNTIME_DIR HOME=%s/home-%s %s --memory 64M 2>&1",
	    dir, (unsigned)alice.uid, (unsigned)alice.gid, dir, alice.name,
	    tl_merged);
	ok_int_eq(rc, 1, "squat 0777: merged as alice refuses to start");
	snprintf(want, sizeof want, "refusing to start: the socket directory "
	    "%s (owner uid %u (%s), mode 0777) must be a directory of uid %u "
	    "(%s) with mode 0700", squat, (unsigned)bob.uid, bob.name,
	    (unsigned)alice.uid, alice.name);
	ok_str_has(o, want, "squat 0777: saying why");
	free(o);
	fake_stop(&f, &conns, &bytes);
	ok(conns == 0 && bytes == 0, "squat 0777: bob's server was sent "
	    "nothing (%ld connections, %ld bytes)", conns, bytes);
	ok(lstat(squat, &st) == 0 && st.st_uid == bob.uid &&
	    (st.st_mode & 0777) == 0777, "squat 0777: the directory is left "
	    "as it was");
	clean_squat();
}

/* bob's private directory: alice could not even reach the socket. */
static void
test_squat_private(void)
{
	struct fake f;
	long conns, bytes;
	char sock[128], *o = NULL;
	int rc;

	clean_squat();
	snprintf(sock, sizeof sock, "%s/merged.sock", squat);
	fake_start(&f, &bob, sock, 0700, false);
	rc = as_user(&alice, &o, NULL, "submit p.yml -o out-alice/x");
	check_refused("squat 0700", rc, o, "");
	ok_str_has(o, "mode 0700)", "squat 0700: the mode is 0700");
	free(o);
	fake_stop(&f, &conns, &bytes);
	ok(conns == 0 && bytes == 0, "squat 0700: bob's server was sent "
	    "nothing (%ld connections, %ld bytes)", conns, bytes);
	clean_squat();
}

/* A symbolic link of bob's, to a directory where his server listens. */
static void
test_squat_link(void)
{
	struct fake f;
	long conns, bytes;
	char sock[512], *o = NULL;
	int rc;

	clean_squat();
	snprintf(sock, sizeof sock, "%s/bob-link/merged.sock", dir);
	fake_start(&f, &bob, sock, 0777, false);
	run_quiet("setpriv --reuid=%u --regid=%u --init-groups ln -s "
	    "%s/bob-link %s", (unsigned)bob.uid, (unsigned)bob.gid, dir, squat);
	rc = as_user(&alice, &o, NULL, "submit p.yml -o out-alice/x");
	check_refused("squat symlink", rc, o, "a symbolic link, ");
	free(o);
	fake_stop(&f, &conns, &bytes);
	ok(conns == 0 && bytes == 0, "squat symlink: bob's server was sent "
	    "nothing (%ld connections, %ld bytes)", conns, bytes);
	clean_squat();
}

/* alice's own directory, but others may enter it. */
static void
test_wide_mode(void)
{
	char *o = NULL, want[256];
	int rc;

	clean_squat();
	run_quiet("mkdir -m 755 %s && chown %u:%u %s", squat,
	    (unsigned)alice.uid, (unsigned)alice.gid, squat);
	rc = as_user(&alice, &o, NULL, "status");
	ok_int_eq(rc, 11, "alice's 0755 directory: refused with exit 11");
	snprintf(want, sizeof want, "the socket directory %s (owner uid %u "
	    "(%s), mode 0755) must be a directory of uid %u (%s) with mode "
	    "0700", squat, (unsigned)alice.uid, alice.name,
	    (unsigned)alice.uid, alice.name);
	ok_str_has(o, want, "alice's 0755 directory: saying so");
	ok_str_has(o, "make it private with chmod 700", "alice's 0755 "
	    "directory: and what to do");
	free(o);
	clean_squat();
}

/*
 * The personal socket's directory is alice's and private, but bob's
 * server is what listens there (root moved his socket in: a directory
 * check cannot see that).  mergectl asks the kernel who listens.
 */
static void
test_peer_personal(void)
{
	struct fake f;
	long conns, bytes;
	char rt[512], sock[512], *o = NULL, env[600], want[1400];
	int rc;

	snprintf(rt, sizeof rt, "%s/rt-alice", dir);
	run_quiet("mkdir -m 700 -p %s/merged && chown -R %u:%u %s", rt,
	    (unsigned)alice.uid, (unsigned)alice.gid, rt);
	snprintf(sock, sizeof sock, "%s/bob-sock/s.sock", dir);
	fake_start(&f, &bob, sock, 0755, false);
	run_quiet("mv %s %s/merged/merged.sock", sock, rt);
	snprintf(env, sizeof env, "XDG_RUNTIME_DIR=%s", rt);
	rc = as_user(&alice, &o, env, "submit p.yml -o out-alice/x");
	ok_int_eq(rc, 11, "bob answering alice's personal socket: exit 11");
	snprintf(want, sizeof want, "%s/merged/merged.sock is answered by uid "
	    "%u (%s), not by uid %u (%s), whose personal daemon it is; "
	    "refusing to send it anything", rt, (unsigned)bob.uid, bob.name,
	    (unsigned)alice.uid, alice.name);
	ok_str_has(o, want, "bob answering alice's personal socket: saying "
	    "who answered and who should have");
	free(o);
	rc = as_user(&alice, &o, env, "status");
	ok_int_eq(rc, 11, "bob answering alice's personal socket: status too");
	free(o);
	fake_stop(&f, &conns, &bytes);
	ok(conns == 2 && bytes == 0, "bob's server was connected to, and "
	    "sent nothing (%ld connections, %ld bytes)", conns, bytes);
}

/* A team socket path (MERGED_SOCKET) answered by bob. */
static void
test_peer_team(void)
{
	struct fake f;
	long conns, bytes;
	char sock[512], *o = NULL, env[700], want[1400];
	int rc;

	snprintf(sock, sizeof sock, "%s/bob-team/merged.sock", dir);
	fake_start(&f, &bob, sock, 0755, true);
	snprintf(env, sizeof env, "MERGED_SOCKET=%s", sock);
	rc = as_user(&alice, &o, env, "status");
	ok_int_eq(rc, 11, "bob answering a team socket: exit 11");
	snprintf(want, sizeof want, "%s is answered by uid %u (%s), not by "
	    "root, uid %u (%s) or the team's user merged (uid %u; set "
	    "MERGED_USER if the team's daemon runs as another user); refusing "
	    "to send it anything", sock, (unsigned)bob.uid, bob.name,
	    (unsigned)alice.uid, alice.name, (unsigned)team.uid);
	ok_str_has(o, want, "bob answering a team socket: saying who answered "
	    "and who may");
	free(o);
	rc = as_user(&alice, &o, env, "submit p.yml -o out-alice/x");
	ok_int_eq(rc, 11, "bob answering a team socket: submit too");
	free(o);
	fake_stop(&f, &conns, &bytes);
	ok(conns == 2 && bytes == 0, "bob's team server was sent nothing (%ld "
	    "connections, %ld bytes)", conns, bytes);

	/* Told that bob's user is the team's, alice talks to it. */
	fake_start(&f, &bob, sock, 0, true);
	snprintf(env, sizeof env, "MERGED_SOCKET=%s MERGED_USER=%s", sock,
	    bob.name);
	rc = as_user(&alice, &o, env, "status");
	ok(rc == 5 && strstr(o, "closed the connection") != NULL,
	    "MERGED_USER=%s: alice's mergectl says hello (and bob hangs up): "
	    "%d %s", bob.name, rc, o);
	free(o);
	fake_stop(&f, &conns, &bytes);
	ok(conns == 1 && bytes > 0, "MERGED_USER: bob's server got the hello "
	    "(%ld connections, %ld bytes)", conns, bytes);
}

/* The normal case: alice's personal daemon, started on demand in /tmp. */
static void
test_personal_ok(void)
{
	struct stat st;
	char *o = NULL, path[600];
	int rc;

	clean_squat();
	rc = as_user(&alice, &o, NULL, "submit p.yml -o out-alice/x --wait "
	    "--quiet");
	if (!ok(rc == 0, "personal: alice's submit starts her daemon and the "
	    "merge is done (exit %d)", rc))
		tap_diag("%s", o);
	free(o);
	ok(lstat(squat, &st) == 0 && S_ISDIR(st.st_mode) &&
	    st.st_uid == alice.uid && (st.st_mode & 07777) == 0700,
	    "personal: %s is alice's, mode 0700", squat);
	snprintf(path, sizeof path, "%s/out-alice/x/model.safetensors", dir);
	ok(stat(path, &st) == 0 && st.st_uid == alice.uid, "personal: the "
	    "output is there, alice's");
	rc = as_user(&alice, &o, NULL, "daemon stop -q");
	ok_int_eq(rc, 0, "personal: daemon stop");
	free(o);
	clean_squat();
}

/* The normal case: a team daemon run as user merged serves alice. */
static void
test_team_ok(void)
{
	char *o = NULL, env[700], user[64];
	pid_t pid;
	int rc;

	run_quiet("cd %s && install -d -o %u -g %u -m 750 run && install -d "
	    "-o %u -g %u -m 700 state && install -d -o %u -g %u -m 2775 "
	    "team-out", dir, (unsigned)team.uid, (unsigned)team_gid,
	    (unsigned)team.uid, (unsigned)team_gid, (unsigned)team.uid,
	    (unsigned)team_gid);
	snprintf(user, sizeof user, "setpriv --reuid=%u --regid=%u "
	    "--init-groups", (unsigned)team.uid, (unsigned)team_gid);
	pid = td_start("--group merged --memory 256M", user);
	snprintf(env, sizeof env, "MERGED_SOCKET=%s", td_sock);
	rc = as_user(&alice, &o, env, "daemon status");
	if (!ok(rc == 0, "team: a daemon run as merged answers alice (exit %d)",
	    rc))
		tap_diag("%s", o);
	free(o);
	rc = as_user(&alice, &o, env, "submit p.yml -o team-out/y --wait "
	    "--quiet");
	if (!ok(rc == 0, "team: alice's merge is done (exit %d)", rc))
		tap_diag("%s", o);
	free(o);
	rc = td_ctl(&o, "daemon status");
	ok_int_eq(rc, 0, "team: root's mergectl trusts it too");
	free(o);
	snprintf(env, sizeof env, "MERGED_SOCKET=%s MERGED_USER=%s", td_sock,
	    bob.name);
	rc = as_user(&alice, &o, env, "daemon status");
	ok(rc == 11 && strstr(o, "is answered by uid") != NULL, "team: with "
	    "MERGED_USER naming another user, alice refuses it (%d)", rc);
	free(o);
	ok_int_eq(td_stop(pid, SIGTERM), 0, "team: the daemon stops cleanly");
}

static void
setup(void)
{
	run_quiet("chmod 755 %s", dir);
	tl_gen_at(dir, "a", "--family llama --seed 1");
	tl_write_at(dir, "p.yml", "merge_method: passthrough\nmodels:\n"
	    "  - model: ./a\n");
	run_quiet("cd %s && chmod -R a+rX a p.yml && install -d -o %u -g %u "
	    "-m 700 home-%s out-alice", dir, (unsigned)alice.uid,
	    (unsigned)alice.gid, alice.name);
}

int
main(int argc, char **argv)
{
	struct group *gr;
	bool ci = getenv("CI") != NULL && strcmp(getenv("CI"), "true") == 0;

	tl_init(argc, argv);
	if (geteuid() != 0 || !acct_get("merged-alice", &alice) ||
	    !acct_get("merged-bob", &bob) || !acct_get("merged", &team) ||
	    (gr = getgrnam("merged")) == NULL) {
		if (!ci)
			tap_skip_all("needs root and the test accounts (contrib/"
			    "deps.sh --test)");
		tap_plan(1);
		ok(0, "CI=true: this test needs root and the accounts "
		    "merged-alice, merged-bob and merged (contrib/deps.sh "
		    "--test)");
		return tap_done();
	}
	team_gid = gr->gr_gid;
	tap_plan_lazy();
	snprintf(squat, sizeof squat, "/tmp/merged-%u", (unsigned)alice.uid);
	dir = tl_tmpdir("sock");
	td_init(dir);
	setup();
	test_squat_open();
	test_squat_private();
	test_squat_link();
	test_wide_mode();
	test_peer_personal();
	test_peer_team();
	test_personal_ok();
	test_team_ok();
	clean_squat();
	return tap_done();
}
