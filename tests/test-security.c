/* SPDX-License-Identifier: MIT */
/*
 * test-security.c: the attack matrix of docs/security.md that needs two
 * real users: merged-alice and merged-bob, both in group merged (made by
 * contrib/deps.sh --test), attack each other through a root team daemon
 * and through a team daemon run as the user merged.
 *
 * Root daemon: bob's --force cannot replace alice's directory or a root
 * file in a sticky directory, neither refused early nor when the kernel
 * is asked at publish time; a hardlink bob plants in his own job's
 * staging directory is never written through; a directory of alice's
 * that bob opened O_PATH (without search permission) is not read for
 * him; outputs are the submitter's, with the submitter's umask.
 * Daemon run as merged: --force replaces only the user's own outputs.
 *
 * Needs root; under CI=true a missing account or a non-root run fails.
 */
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"
#include <cjson/cJSON.h>

#include "tap.h"
#include "testd.h"
#include "testlib.h"

#define STR_(x) #x
#define STR(x) STR_(x)

static const char *dir;
static const char *shim;	/* faultshim.so: slow writes */
static struct passwd alice, bob;

static bool
account(const char *name, struct passwd *out)
{
	struct passwd *pw = getpwnam(name);

	if (pw == NULL)
		return false;
	*out = *pw;
	out->pw_name = strdup(pw->pw_name);
	out->pw_dir = strdup(pw->pw_dir);
	return true;
}

static uid_t
owner_of(const char *rel)
{
	char path[1024];
	struct stat st;

	snprintf(path, sizeof path, "%s/%s", dir, rel);
	return lstat(path, &st) == 0 ? st.st_uid : (uid_t)-1;
}

static mode_t
mode_of(const char *rel)
{
	char path[1024];
	struct stat st;

	snprintf(path, sizeof path, "%s/%s", dir, rel);
	return lstat(path, &st) == 0 ? st.st_mode & 07777 : 0;
}

static bool
has_text(const char *rel, const char *text)
{
	char path[1024], *s;
	bool yes;

	snprintf(path, sizeof path, "%s/%s", dir, rel);
	s = tl_read(path, NULL);
	yes = s != NULL && strcmp(s, text) == 0;
	free(s);
	return yes;
}

/* Waits until a staging directory for name appears in sub; its name. */
static char *
wait_staging(const char *sub, const char *name)
{
	char *o = NULL;
	int i;

	for (i = 0; i < 1200; i++) {
		if (tl_runf(&o, "cd %s/%s && ls -a | grep '^\\.%s\\.merging-'",
		    dir, sub, name) == 0) {
			o[strcspn(o, "\n")] = '\0';
			return o;
		}
		free(o);
		o = NULL;
		td_sleep_ms(25);
	}
	return NULL;
}

/* Row 1, root daemon: --force in a sticky directory. */
static void
test_force_root(void)
{
	char *o = NULL, *st;
	int rc, id;

	rc = td_as(alice.pw_name, &o, "mkdir shared/victim && chmod 700 shared/victim "
	    "&& printf alice > shared/victim/secret");
	tl_write_at(dir, "shared/rootfile", "root");
	ok_int_eq(rc, 0, "alice keeps a private directory in a sticky one");
	free(o);
	rc = td_as(bob.pw_name, &o, "%s submit slerp.yml -o shared/victim --force "
	    "--wait", tl_mergectl);
	ok(rc == 7 && strstr(o, "sticky"), "bob's --force onto alice's "
	    "directory is refused at submit, exit 7");
	tap_diag("%s", o);
	free(o);
	ok(owner_of("shared/victim") == alice.pw_uid &&
	    has_text("shared/victim/secret", "alice"), "alice's directory is "
	    "untouched");
	rc = td_as(bob.pw_name, &o, "%s submit slerp.yml -o shared/rootfile --force "
	    "--wait", tl_mergectl);
	ok(rc == 7 && has_text("shared/rootfile", "root") &&
	    owner_of("shared/rootfile") == 0, "so is a root file there");
	free(o);
	rc = td_as(bob.pw_name, &o, "%s submit slerp.yml -o shared/mine --wait -q && "
	    "%s submit slerp.yml -o shared/mine --force --wait -q",
	    tl_mergectl, tl_mergectl);
	ok(rc == 0 && owner_of("shared/mine") == bob.pw_uid &&
	    owner_of("shared/mine/model.safetensors") == bob.pw_uid,
	    "bob replaces his own output, and it is his");
	free(o);

	/* The kernel decides at publish time: the output appears while the
	 * (slowed) job runs, after the early check passed. */
	rc = td_as(bob.pw_name, &o, "%s submit slerp.yml -o slow/late --force -q",
	    tl_mergectl);
	id = rc == 0 ? atoi(o) : 0;
	free(o);
	st = wait_staging("slow", "late");
	rc = td_as(alice.pw_name, &o, "mkdir slow/late && printf alice > "
	    "slow/late/secret");
	free(o);
	ok(id > 0 && st != NULL && rc == 0 && td_wait_state(id, "failed",
	    120000), "bob's job whose destination alice made meanwhile "
	    "fails");
	free(st);
	st = td_job_field(id, "error");
	ok_str_has(st, "not yours to replace", "saying it was not his to "
	    "replace");
	free(st);
	ok(owner_of("slow/late") == alice.pw_uid &&
	    has_text("slow/late/secret", "alice"), "and alice's directory "
	    "is intact");
}

/* Row 2: a hardlink planted in the job's own staging directory. */
static void
test_planted_link(void)
{
	char *o = NULL, *st, path[1024];
	struct stat sb;
	int rc, id;

	rc = td_as(alice.pw_name, &o, "printf alice > slow/alice-file && chgrp merged "
	    "slow/alice-file && chmod 664 slow/alice-file");
	free(o);
	ok_int_eq(rc, 0, "alice has a group-writable file");
	rc = td_as(bob.pw_name, &o, "%s submit slerp.yml -o slow/planted -q",
	    tl_mergectl);
	id = rc == 0 ? atoi(o) : 0;
	free(o);
	st = wait_staging("slow", "planted");
	rc = st == NULL ? -1 : td_as(bob.pw_name, &o, "ln slow/alice-file slow/%s/"
	    "README.md && ln slow/alice-file slow/%s/config.json", st, st);
	free(o);
	ok(rc == 0 && td_wait_state(id, "running", 100), "bob links it into "
	    "his running job's staging directory");
	free(st);
	ok(td_wait_state(id, "done", 120000), "the job completes");
	ok(has_text("slow/alice-file", "alice") &&
	    owner_of("slow/alice-file") == alice.pw_uid, "alice's file is "
	    "neither written nor given to bob");
	snprintf(path, sizeof path, "%s/slow/planted/README.md", dir);
	ok(stat(path, &sb) == 0 && sb.st_nlink == 1 && sb.st_uid ==
	    bob.pw_uid, "the output's README.md is a new file of bob's");
}

/* Sends a submit whose model root is an O_PATH descriptor of path,
 * opened as u, the way a hostile client would; returns the reply. */
static char *
raw_submit_opath(const struct passwd *u, const char *model, const char *rel,
    const char *out)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(2 * sizeof(int))];
	} cbuf;
	struct sockaddr_un sun;
	struct msghdr mh;
	struct cmsghdr *cm;
	struct iovec iov;
	char line[2048], *reply;
	int p[2], fds[2], s, status;
	size_t len;
	pid_t pid;
	ssize_t n;

	if (pipe(p) != 0)
		return NULL;
	if ((pid = fork()) == 0) {
		close(p[0]);
		if (initgroups(u->pw_name, u->pw_gid) != 0 ||
		    setresgid(u->pw_gid, u->pw_gid, u->pw_gid) != 0 ||
		    setresuid(u->pw_uid, u->pw_uid, u->pw_uid) != 0)
			_exit(2);
		fds[0] = open(model, O_PATH | O_DIRECTORY);
		fds[1] = open(out, O_RDONLY | O_DIRECTORY);
		s = socket(AF_UNIX, SOCK_STREAM, 0);
		memset(&sun, 0, sizeof sun);
		sun.sun_family = AF_UNIX;
		if (strlen(td_sock) >= sizeof sun.sun_path)
			_exit(7);
		memcpy(sun.sun_path, td_sock, strlen(td_sock) + 1);
		if (fds[0] < 0 || fds[1] < 0 || connect(s,
		    (struct sockaddr *)&sun, sizeof sun) != 0)
			_exit(3);
		n = snprintf(line, sizeof line, "{\"v\":" STR(PROTO_VERSION) ",\"id\":1,\"op\":"
		    "\"hello\"}\n");
		if (write(s, line, (size_t)n) != n)
			_exit(4);
		n = snprintf(line, sizeof line, "{\"v\":" STR(PROTO_VERSION) ",\"id\":2,\"op\":"
		    "\"submit\",\"config\":\"merge_method: passthrough\\n"
		    "models:\\n  - model: %s\\n\",\"out_name\":\"stolen\","
		    "\"models\":[{\"ref\":\"%s\",\"rel\":\"%s\",\"fd\":0}],"
		    "\"out_fd\":1,\"fds\":2}\n", model, model, rel);
		memset(&mh, 0, sizeof mh);
		iov.iov_base = line;
		iov.iov_len = (size_t)n;
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof cbuf.buf;
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof fds);
		memcpy(CMSG_DATA(cm), fds, sizeof fds);
		if (sendmsg(s, &mh, 0) != n)
			_exit(5);
		shutdown(s, SHUT_WR);
		while ((n = read(s, line, sizeof line)) > 0)
			if (write(p[1], line, (size_t)n) != n)
				_exit(6);
		_exit(0);
	}
	close(p[1]);
	reply = calloc(1, 65536);
	for (len = 0; len < 65535 && (n = read(p[0], reply + len, 65535 -
	    len)) > 0; len += (size_t)n)
		;
	close(p[0]);
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		tap_diag("the hostile client failed: status %d", status);
	return reply;
}

/* Row 3: a directory bob may not search, passed O_PATH. */
static void
test_opath_dir(void)
{
	char *o = NULL, path[1024], out[1024];
	int rc;

	rc = tl_runf(&o, "cd %s && mkdir -p secret && cp -r a secret/model && "
	    "chown -R %u:%u secret && chmod 700 secret/model && "
	    "chmod 711 secret && chmod 1777 shared", dir,
	    (unsigned)alice.pw_uid, (unsigned)alice.pw_gid);
	free(o);
	ok_int_eq(rc, 0, "alice's model is in a directory of mode 0700");
	snprintf(path, sizeof path, "%s/secret/model", dir);
	snprintf(out, sizeof out, "%s/shared", dir);
	o = raw_submit_opath(&bob, path, ".", out);
	ok(o != NULL && strstr(o, "\"ok\":false") && strstr(o,
	    "permission denied for uid"), "bob's O_PATH descriptor of it is "
	    "refused at submit");
	tap_diag("%s", o ? o : "(nothing)");
	free(o);
	ok(owner_of("shared/stolen") == (uid_t)-1, "and nothing is written");
}

/*
 * A root daemon runs bob's --on-done hook as bob: his uid, his primary
 * group and no other, and what it creates is his.
 */
static void
test_hook_root(void)
{
	char *o = NULL, *p, want[128];
	int rc, id, i;

	rc = td_as(bob.pw_name, &o, "%s submit slerp.yml -o shared/hooked "
	    "-q --on-done 'sh -c \"id -u; id -G\"'", tl_mergectl);
	id = rc == 0 ? atoi(o) : 0;
	free(o);
	o = NULL;
	/* The hook runs after the job is done; its log line comes last. */
	for (i = 0; i < 1200; i++) {
		free(o);
		o = NULL;
		if (td_ctl(&o, "logs %d", id) == 0 && strstr(o, "exited"))
			break;
		td_sleep_ms(50);
	}
	/* id -u, then id -G: one line each. */
	snprintf(want, sizeof want, "on-done hook: %u\n",
	    (unsigned)bob.pw_uid);
	ok(id > 0 && o != NULL && strstr(o, want), "bob's hook runs as bob");
	p = o != NULL ? strstr(o, want) : NULL;
	snprintf(want, sizeof want, "on-done hook: %u\n",
	    (unsigned)bob.pw_gid);
	ok(p != NULL && strstr(p + 1, want) != NULL, "in his primary group, "
	    "and no other");
	tap_diag("%s", o != NULL ? o : "");
	free(o);
}

/* A job works as its owner, also when root resumes it. */
static void
test_root_resume(pid_t *pid, const char *env)
{
	char *o = NULL, *st;
	int rc, id;

	rc = td_as(bob.pw_name, &o, "%s submit slerp.yml -o slow/resumed -q",
	    tl_mergectl);
	id = rc == 0 ? atoi(o) : 0;
	free(o);
	st = wait_staging("slow", "resumed");
	ok(id > 0 && st != NULL, "bob's job runs");
	free(st);
	td_stop(*pid, SIGKILL);
	*pid = td_start("--team --group merged --memory 256M", env);
	ok(td_wait_state(id, "interrupted", 20000), "a restart interrupts "
	    "it");
	rc = td_ctl(&o, "resume %d", id);
	free(o);
	ok(rc == 0 && td_wait_state(id, "done", 120000), "root resumes it");
	ok(owner_of("slow/resumed") == bob.pw_uid &&
	    owner_of("slow/resumed/model.safetensors") == bob.pw_uid,
	    "and its output is bob's, not root's");
}

/* Row 10: a root daemon's outputs are the submitter's, with the umask. */
static void
test_umask(void)
{
	char *o = NULL;
	int rc;

	rc = td_as(alice.pw_name, &o, "umask 077 && %s submit slerp.yml -o "
	    "shared/private --wait -q", tl_mergectl);
	free(o);
	ok(rc == 0 && owner_of("shared/private") == alice.pw_uid &&
	    mode_of("shared/private") == 0700 &&
	    mode_of("shared/private/mergekit_config.yml") == 0600,
	    "alice's umask 077 keeps her output to herself");
	rc = td_as(bob.pw_name, &o, "cat shared/private/mergekit_config.yml");
	ok(rc != 0, "bob cannot read its config");
	free(o);
	rc = td_as(alice.pw_name, &o, "umask 022 && %s submit slerp.yml -o "
	    "shared/public --wait -q", tl_mergectl);
	free(o);
	ok(rc == 0 && mode_of("shared/public") == 0755 &&
	    mode_of("shared/public/README.md") == 0644, "with umask 022 it "
	    "is readable");
}

/*
 * A team daemon that is not root cannot run a command as alice: her
 * --on-done is refused (exit 12), and merged --on-done will not start.
 */
static void
test_hook_refused(void)
{
	char *o = NULL;
	int rc;

	rc = td_as(alice.pw_name, &o, "%s submit slerp.yml -o "
	    "team/out/alice-hook --on-done true", tl_mergectl);
	ok(rc == 12 && strstr(o, "--on-done: this daemon runs as another "
	    "user and not as root"), "alice's --on-done is refused by a "
	    "daemon that cannot act as her (exit %d)", rc);
	free(o);
	rc = tl_runf(&o, "cd %s && setpriv --reuid=merged --regid=merged "
	    "--init-groups %s --team --socket %s/team/run/other.sock "
	    "--state-dir %s/team/state2 --on-done true 2>&1", dir, tl_merged,
	    dir, dir);
	ok(rc == 1 && strstr(o, "--on-done: a team daemon runs each job's "
	    "hook as the job's owner, which only root can"), "merged --team "
	    "--on-done as user merged refuses to start (exit %d)", rc);
	free(o);
}

/* Row 1 for a daemon that runs as merged and writes as itself. */
static void
test_force_merged(void)
{
	char *o = NULL;
	int rc;

	rc = td_as(alice.pw_name, &o, "umask 022 && %s submit slerp.yml -o "
	    "team/out/alice-out --wait -q", tl_mergectl);
	ok(rc == 0 && owner_of("team/out/alice-out") != alice.pw_uid &&
	    strstr(o, "note:") == NULL, "alice's output, written by merged");
	free(o);
	rc = td_as(alice.pw_name, &o, "umask 077 && %s submit slerp.yml -o "
	    "team/out/alice-077 --wait -q", tl_mergectl);
	ok(rc == 0 && strstr(o, "note: merged runs as user merged and writes")
	    && strstr(o, "readable by that user's group whatever your umask "
	    "(077)") && (mode_of("team/out/alice-077/README.md") & 044) != 0,
	    "with umask 077 she is told plainly that the group can read it");
	free(o);
	tl_write_at(dir, "team/out/alice-out/marker", "alice");
	rc = td_as(bob.pw_name, &o, "%s submit slerp.yml -o team/out/alice-out "
	    "--force --wait", tl_mergectl);
	ok(rc == 7 && strstr(o, "--force replaces only your own"),
	    "bob's --force onto it is refused, exit 7");
	tap_diag("%s", o);
	free(o);
	ok(has_text("team/out/alice-out/marker", "alice"), "alice's output "
	    "is intact");
	rc = td_as(alice.pw_name, &o, "%s submit slerp.yml -o team/out/alice-out "
	    "--force --wait -q", tl_mergectl);
	if (rc != 0)
		tap_diag("%d: %s", rc, o);
	free(o);
	ok(rc == 0 && !has_text("team/out/alice-out/marker", "alice"),
	    "alice may replace her own output");
}

/*
 * For a daemon run as merged: a link in bob's model whose target lies in
 * a directory bob may not search (here one like the daemon's state
 * directory) must not be followed with the daemon's rights.  bob passes
 * the directory above both, O_PATH, and his model beneath it.
 */
static void
test_link_through_private(void)
{
	char *o = NULL, path[1024], out[1024];
	cJSON *j;
	int rc, id = 0, k;
	char *st = NULL;
	bool failed;

	rc = tl_runf(&o, "cd %s && mkdir -p msecret && echo merged-secret-db "
	    ">msecret/db && chown -R merged:merged msecret && chmod 700 "
	    "msecret && chmod 640 msecret/db && rm -rf bobm && cp -r a bobm && "
	    "rm -f bobm/merges.txt && ln -s ../msecret/db bobm/merges.txt && "
	    "chown -R %u:%u bobm && chmod 755 .", dir, (unsigned)bob.pw_uid,
	    (unsigned)bob.pw_gid);
	free(o);
	ok_int_eq(rc, 0, "bob's model links merges.txt to a file in a "
	    "directory of merged's, mode 0700");
	snprintf(path, sizeof path, "%s", dir);
	snprintf(out, sizeof out, "%s/team/out", dir);
	o = raw_submit_opath(&bob, path, "bobm", out);
	tap_diag("%s", o ? o : "(nothing)");
	/* The second line answers the submit. */
	if (o != NULL && strchr(o, '\n') != NULL &&
	    (j = cJSON_Parse(strchr(o, '\n') + 1)) != NULL) {
		id = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(
		    cJSON_GetObjectItem(j, "job"), "id"));
		cJSON_Delete(j);
	}
	/* Until it ends, either way: a job that ran copied merges.txt. */
	for (k = 0, st = NULL; id > 0 && k < 600; k++) {
		free(st);
		st = td_job_field(id, "state");
		if (st != NULL && (strcmp(st, "done") == 0 ||
		    strcmp(st, "failed") == 0))
			break;
		td_sleep_ms(100);
	}
	failed = st != NULL && strcmp(st, "failed") == 0;
	free(st);
	st = id > 0 ? td_job_field(id, "error") : NULL;
	tap_diag("job %d: %s: %s", id, failed ? "failed" : "not failed",
	    st ? st : "-");
	free(st);
	ok(!has_text("team/out/stolen/merges.txt", "merged-secret-db"),
	    "the daemon does not follow the link with its own rights (its "
	    "file is not copied)");
	ok(o != NULL && (strstr(o, "permission denied for uid") != NULL ||
	    failed), "the submit is refused, or its job fails");
	free(o);
}

static bool
preconditions(void)
{
	bool ci = getenv("CI") != NULL && strcmp(getenv("CI"), "true") == 0;
	const char *why = NULL;

	if (geteuid() != 0)
		why = "not root";
	else if (!account("merged-alice", &alice) ||
	    !account("merged-bob", &bob) || getpwnam("merged") == NULL ||
	    getgrnam("merged") == NULL)
		why = "the test accounts are missing (contrib/deps.sh --test)";
	if (why == NULL)
		return true;
	if (ci)
		ok(0, "security tests: %s", why);
	else
		ok(1, "# SKIP security tests: %s", why);
	return false;
}

int
main(int argc, char **argv)
{
	char *o = NULL, env[2048], sock[700];
	pid_t pid;
	int rc;

	tl_init(argc, argv);
	tap_plan_lazy();
	shim = argc > 6 ? realpath(argv[6], NULL) : NULL;
	if (!preconditions())
		return tap_done();
	dir = tl_tmpdir("security");
	td_init(dir);
	tl_gen_at(dir, "a", "--family llama --seed 1");
	tl_gen_at(dir, "b", "--family llama --seed 2 --finetune-of 1 "
	    "--delta 0.01");
	tl_write_at(dir, "slerp.yml", "merge_method: slerp\nbase_model: ./a\n"
	    "models:\n  - model: ./a\n  - model: ./b\nparameters:\n  t: 0.4\n");
	rc = tl_runf(&o, "cd %s && chmod 755 . && mkdir -p run shared slow "
	    "&& chgrp merged run && chmod 750 run && chmod 1777 shared slow "
	    "&& chmod -R a+rX a b slerp.yml", dir);
	free(o);
	ok_int_eq(rc, 0, "fixtures");

	/* A root team daemon; writes in slow/ take 0.1 s each, so that a
	 * job is still running while its user acts on the files. */
	snprintf(env, sizeof env, "LD_PRELOAD=%s ASAN_OPTIONS=${ASAN_OPTIONS:-}"
	    ":verify_asan_link_order=0 FAULT_PATH=%s/slow/ "
	    "FAULT_SLOW_US=100000", shim, dir);
	pid = td_start("--team --group merged --memory 256M", env);
	test_force_root();
	test_planted_link();
	test_opath_dir();
	test_umask();
	test_hook_root();
	test_root_resume(&pid, env);
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the root daemon stops");

	/* A team daemon run as merged, as contrib/systemd/merged.service
	 * sets it up. */
	snprintf(sock, sizeof sock, "%s/team", dir);
	rc = tl_runf(&o, "cd %s && mkdir -p team/run team/state team/out && "
	    "chown merged:merged team/run team/state && chmod 750 team/run && "
	    "chgrp merged team/out && chmod 3775 team/out && chmod 755 team",
	    dir);
	free(o);
	ok_int_eq(rc, 0, "the merged user's directories");
	td_init(sock);
	snprintf(td_dir, sizeof td_dir, "%s", dir);
	pid = td_start("--team --group merged --memory 256M",
	    "setpriv --reuid=merged --regid=merged --init-groups");
	test_force_merged();
	test_hook_refused();
	test_link_through_private();
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the merged daemon stops");
	return tap_done();
}
