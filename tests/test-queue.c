/* SPDX-License-Identifier: MIT */
/*
 * test-queue.c: the shared queue stays readable, bounded and fair
 * (issue 9, rows 7, 8 and 9), and its history can be pruned.
 *
 * One team daemon, run as root with group "merged", and the accounts
 * merged-alice and merged-bob (contrib/deps.sh --test), restarted with
 * the options each part needs:
 *
 * - names and priorities are bounded, at the client (exit 2) and at the
 *   daemon (bad_request, for a client that skips the check);
 * - row 7: a store holding a job with a 320,000-byte name (as an older
 *   merged kept it) and 1,600 more: every user's "status" still works,
 *   a list reply is a page, its size is measured and bounded, and
 *   "status --all" walks every page;
 * - row 8: a user at the per-user job cap, then at the descriptor cap,
 *   is refused with exit 10 and the cap named, the daemon keeps no
 *   descriptor of the refused job, and another user's job still runs;
 * - row 9: with one job at a time, bob's priority 1000 does not pass
 *   alice's older job, his priorities order his own jobs, and root's
 *   priority goes before everyone's;
 * - rm, clean and --keep-finished remove records (and log lines) only,
 *   of finished jobs, only the caller's (root: anyone's).
 *
 * Jobs wait behind a "gate": a job recorded as queued in the store
 * before the daemon starts, so that it comes back interrupted and holds
 * back every job submitted --after it until it is resumed.  That makes
 * the order of the jobs in row 9 a property of the scheduler alone, with
 * no race against a running merge.
 *
 * Needs root (to switch users) and both accounts: otherwise the parts
 * that need them are skipped, and fail under CI=true.
 */
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <sqlite3.h>

#include "proto.h"
#include "tap.h"
#include "testd.h"
#include "testlib.h"

#define ORDINARY 1500		/* seeded finished jobs */
#define MAXIMAL PROTO_LIST_MAX	/* seeded jobs with the longest names */
#define WORST 10		/* seeded jobs with every string at its cap */
#define GATE1 1			/* holds back the jobs of row 8 */
#define GATE2 2			/* and of row 9 */
#define DEP_DONE 3		/* a done job ... */
#define DEP_WAITING 4		/* ... that an interrupted one runs after */
#define LEGACY 5		/* the 320,000-byte name */

struct user {
	const char *name;
	uid_t uid;
	gid_t gid;
};

static struct user alice = { "merged-alice", 0, 0 };
static struct user bob = { "merged-bob", 0, 0 };
static const char *dir;
static bool users;		/* root, and both accounts */
static pid_t pid;
static int first_maximal, first_worst, njobs_seeded;
static const char *mode = "";	/* team mode when the group exists */

static const char small_yml[] = "merge_method: slerp\nbase_model: ./a\n"
    "models:\n  - model: ./a\n  - model: ./b\nparameters:\n  t: 0.4\n";

/* mergectl as u (NULL: as root, the test's user), in the test directory. */
static int
as_user(const struct user *u, char **out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
as_user(const struct user *u, char **out, const char *fmt, ...)
{
	va_list ap;
	char *args;
	int rc;

	va_start(ap, fmt);
	if (vasprintf(&args, fmt, ap) < 0)
		abort();
	va_end(ap);
	if (u == NULL)
		rc = td_ctl(out, "%s", args);
	else
		rc = td_as(u->name, out, "%s %s", tl_mergectl, args);
	free(args);
	return rc;
}

/* Submits as u (args after "submit"); the job id, 0 on failure. */
static int
submit_as(const struct user *u, const char *args)
{
	char *o = NULL;
	int rc, id;

	rc = as_user(u, &o, "submit %s --quiet", args);
	id = rc == 0 && o != NULL ? atoi(o) : 0;
	if (id == 0)
		tap_diag("%s: submit %s: exit %d: %s", u ? u->name : "root",
		    args, rc, o ? o : "");
	free(o);
	return id;
}

/*
 * Runs sql (several statements) on the store; returns the first column
 * of the last row any of them produced, or NULL on error.
 */
static char *
store_sql(const char *sql)
{
	char path[700], *r = NULL;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	const char *tail = sql;
	int rc = SQLITE_DONE;

	snprintf(path, sizeof path, "%s/merged.db", td_state);
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) !=
	    SQLITE_OK)
		goto fail;
	sqlite3_busy_timeout(db, 10000);
	while (*tail != '\0') {
		if (sqlite3_prepare_v2(db, tail, -1, &st, &tail) != SQLITE_OK)
			goto fail;
		if (st == NULL)
			break;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			free(r);
			r = strdup(sqlite3_column_text(st, 0) != NULL ?
			    (const char *)sqlite3_column_text(st, 0) : "");
		}
		sqlite3_finalize(st);
		st = NULL;
		if (rc != SQLITE_DONE)
			goto fail;
	}
	sqlite3_close(db);
	return r != NULL ? r : strdup("");
fail:
	tap_diag("store: %s", db != NULL ? sqlite3_errmsg(db) : "no store");
	sqlite3_finalize(st);
	sqlite3_close(db);
	free(r);
	return NULL;
}

static long
store_count(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static long
store_count(const char *fmt, ...)
{
	va_list ap;
	char *sql, *r;
	long n;

	va_start(ap, fmt);
	if (vasprintf(&sql, fmt, ap) < 0)
		abort();
	va_end(ap);
	r = store_sql(sql);
	n = r != NULL ? atol(r) : -1;
	free(r);
	free(sql);
	return n;
}

static void
restart(const char *opts)
{
	char extra[1024];

	/* Exit 0: drained, uv_loop_close() was clean (and, under ASan, no
	 * leak was reported). */
	if (pid > 0)
		ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly "
		    "before a restart with %s", opts);
	snprintf(extra, sizeof extra, "%s --memory 256M --threads 1 %s",
	    mode, opts);
	pid = td_start(extra, NULL);
}

static double
started(int id)
{
	return td_job_num(id, "started");
}

static bool
state_is(int id, const char *want)
{
	char *s = td_job_field(id, "state");
	bool same = strcmp(s, want) == 0;

	if (!same)
		tap_diag("job %d is %s, not %s", id, s, want);
	free(s);
	return same;
}

/*
 * One list request on a raw connection; returns the parsed reply and,
 * in *len, the reply line's length in bytes (with its "\n").
 */
static cJSON *
raw_list(const char *fields, size_t *len)
{
	struct timeval tv = { 60, 0 };
	size_t cap = 8u << 20, n = 0;
	char req[512], *buf, *a, *b;
	cJSON *r = NULL;
	ssize_t k;
	int fd;

	*len = 0;
	if ((fd = td_raw_connect()) < 0)
		return NULL;
	snprintf(req, sizeof req, "{\"v\":%d,\"id\":1,\"op\":\"hello\"}\n"
	    "{\"v\":%d,\"id\":2,\"op\":\"list\"%s%s}\n", PROTO_VERSION,
	    PROTO_VERSION, *fields != '\0' ? "," : "", fields);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	buf = malloc(cap + 1);
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
		goto out;
	/* Until the second line (the list's reply) is complete. */
	for (;;) {
		buf[n] = '\0';
		if ((a = strchr(buf, '\n')) != NULL &&
		    (b = strchr(a + 1, '\n')) != NULL)
			break;
		if (n == cap || (k = read(fd, buf + n, cap - n)) <= 0)
			goto out;
		n += (size_t)k;
	}
	*len = (size_t)(b - a);
	r = cJSON_ParseWithLength(a + 1, *len - 1);
out:
	free(buf);
	close(fd);
	return r;
}

static size_t
jobs_in(const cJSON *r)
{
	return (size_t)cJSON_GetArraySize(cJSON_GetObjectItem(r, "jobs"));
}

/* The ids of a JSON array of jobs, in order; *n of them. */
static int *
ids_of(const char *json, int *n)
{
	cJSON *arr = cJSON_Parse(json), *j;
	int *v, i = 0;

	*n = cJSON_GetArraySize(arr);
	v = calloc((size_t)*n + 1, sizeof *v);
	cJSON_ArrayForEach(j, arr)
		v[i++] = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "id"));
	cJSON_Delete(arr);
	return v;
}

static bool
find_user(struct user *u)
{
	struct passwd *pw = getpwnam(u->name);

	if (pw == NULL)
		return false;
	u->uid = pw->pw_uid;
	u->gid = pw->pw_gid;
	return true;
}

/* Skips a part that needs the accounts; under CI that is a failure. */
static bool
need_users(const char *part)
{
	const char *ci = getenv("CI");

	if (users)
		return true;
	if (ci != NULL && strcmp(ci, "true") == 0)
		ok(0, "%s: needs root and the accounts merged-alice and "
		    "merged-bob (contrib/deps.sh --test)", part);
	else
		ok(1, "# SKIP %s: needs root and the accounts merged-alice "
		    "and merged-bob (contrib/deps.sh --test)", part);
	return false;
}

static void
setup(void)
{
	char *o = NULL;
	int rc;

	tl_gen_at(dir, "a", "--family llama --seed 1");
	tl_gen_at(dir, "b", "--family llama --seed 2 --finetune-of 1 --delta "
	    "0.01");
	tl_write_at(dir, "small.yml", small_yml);
	users = geteuid() == 0 && find_user(&alice) && find_user(&bob) &&
	    getgrnam("merged") != NULL;
	if (!users)
		return;
	rc = tl_runf(&o, "cd %s && chmod 755 . && mkdir -p alice-out bob-out "
	    "root-out && chown %u:%u alice-out && chown %u:%u bob-out 2>&1",
	    dir, (unsigned)alice.uid, (unsigned)alice.gid, (unsigned)bob.uid,
	    (unsigned)bob.gid);
	if (rc != 0) {
		tap_diag("fixtures: %s", o);
		users = false;
	}
	free(o);
}

/*
 * The store as a long-lived team daemon leaves it, written while no
 * daemon runs: two gates and a waiting job (queued, so interrupted at
 * start), the 320,000-byte name an older merged accepted, 1,500
 * ordinary finished jobs, PROTO_LIST_MAX with the longest names submit
 * takes, and WORST with every string longer than its cap.
 */
static void
seed(void)
{
	static const char cols[] = "owner, owner_gid, user, name, state, "
	    "priority, after, config, config_name, cwd, out_dir, out_name, "
	    "staging, memory, force, allow_crimes, shard_size, copy_tokenizer, "
	    "model_card, seed, created, started, finished";
	double now = (double)time(NULL), t = now - 3600;
	char *sql, *r;
	int i;

	/* The gates: real jobs, which "mergectl resume" runs. */
	for (i = 1; i <= 2; i++) {
		sql = sqlite3_mprintf("INSERT INTO jobs (%s) VALUES (0, 0, "
		    "'root', 'gate%d', 'queued', 0, 0, %Q, '%q/small.yml', %Q, "
		    "'%q/gate%d', 'gate%d', '.gate%d.merging-000000000000000%d', "
		    "0, 0, 0, 5000000000, 1, 1, 7, %f, 0, 0)", cols, i,
		    small_yml, dir, dir, dir, i, i, i, i, now);
		free(store_sql(sql));
		sqlite3_free(sql);
	}
	sql = sqlite3_mprintf("INSERT INTO jobs (%s) VALUES (%u, %u, "
	    "'merged-alice', 'dep', 'done', 0, 0, 'x', '/c.yml', '/', '/o/dep',"
	    " 'dep', '.s', 0, 0, 0, 0, 1, 1, 0, %f, %f, %f);"
	    "INSERT INTO jobs (%s) VALUES (%u, %u, 'merged-alice', 'waiting', "
	    "'queued', 0, %d, 'x', '/c.yml', '/', '/o/w', 'w', '.s', 0, 0, 0, "
	    "0, 1, 1, 0, %f, 0, 0);"
	    "INSERT INTO jobs (%s) VALUES (%u, %u, 'merged-bob', "
	    "replace(hex(zeroblob(160000)), '0', 'x'), 'done', 0, 0, 'x', "
	    "'/c.yml', '/', '/o/legacy', 'legacy', '.s', 0, 0, 0, 0, 1, 1, 0, "
	    "%f, %f, %f)", cols, (unsigned)alice.uid, (unsigned)alice.gid, t,
	    t, t, cols, (unsigned)alice.uid, (unsigned)alice.gid, DEP_DONE, t,
	    cols, (unsigned)bob.uid, (unsigned)bob.gid, t, t, t);
	free(store_sql(sql));
	sqlite3_free(sql);
	/* A job's dependencies are a list (deps); after keeps the first. */
	free(store_sql("UPDATE jobs SET deps = CAST(after AS TEXT) WHERE "
	    "after != 0"));
	sql = sqlite3_mprintf("INSERT INTO jobs (%s) WITH RECURSIVE n(i) AS "
	    "(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d) SELECT %u, "
	    "%u, 'merged-alice', 'job-' || i, 'done', 0, 0, 'x', "
	    "'/home/merged-alice/merges/job-' || i || '.yml', '/home', "
	    "'/data/merges/job-' || i, 'job-' || i, '.s', 0, 0, 0, 0, 1, 1, i,"
	    " %f, %f, %f FROM n", cols, ORDINARY, (unsigned)alice.uid,
	    (unsigned)alice.gid, t, t, t);
	free(store_sql(sql));
	sqlite3_free(sql);
	/* The longest name submit takes, of characters JSON escapes. */
	sql = sqlite3_mprintf("INSERT INTO jobs (%s) WITH RECURSIVE n(i) AS "
	    "(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d) SELECT %u, "
	    "%u, 'merged-alice', replace(hex(zeroblob(%d)), '00', '\"'), "
	    "'done', 0, 0, 'x', '/home/merged-alice/merges/long-' || i || "
	    "'.yml', '/home', '/data/merges/long-' || i, 'long-' || i, '.s', 0,"
	    " 0, 0, 0, 1, 1, i, %f, %f, %f FROM n", cols, MAXIMAL,
	    (unsigned)alice.uid, (unsigned)alice.gid, PROTO_MAX_NAME, t, t, t);
	free(store_sql(sql));
	sqlite3_free(sql);
	r = store_sql("SELECT min(id) FROM jobs WHERE name LIKE '\"%'");
	first_maximal = r != NULL ? atoi(r) : 0;
	free(r);
	/* Every string past its cap, of control characters (\u00XX). */
	sql = sqlite3_mprintf("INSERT INTO jobs (%s, error) WITH RECURSIVE "
	    "n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d), "
	    "c(s) AS (SELECT replace(hex(zeroblob(%d)), '0', char(1))) "
	    "SELECT 0, 0, substr(s, 1, 2 * %d), substr(s, 1, 2 * %d), 'failed',"
	    " 0, 0, 'x', s, '/', s, 'worst-' || i, '.s', 0, 0, 0, 0, 1, 1, i, "
	    "%f, %f, %f, s FROM n, c", cols, WORST, PROTO_MAX_PATH,
	    PROTO_MAX_USER, PROTO_MAX_NAME, t, t, t);
	free(store_sql(sql));
	sqlite3_free(sql);
	r = store_sql("SELECT min(id) FROM jobs WHERE out_name LIKE 'worst-%'");
	first_worst = r != NULL ? atoi(r) : 0;
	free(r);
	njobs_seeded = (int)store_count("SELECT count(*) FROM jobs");
	ok(njobs_seeded == 5 + ORDINARY + MAXIMAL + WORST && first_maximal >
	    LEGACY && first_worst == first_maximal + MAXIMAL &&
	    store_count("SELECT max(length(name)) FROM jobs") == 320000,
	    "seeded a store of %d jobs, one with a 320,000-byte name",
	    njobs_seeded);
}

/* Names and priorities are bounded; the client says so first. */
static void
test_bounds(void)
{
	char *o = NULL, name[PROTO_MAX_NAME + 2], args[512];
	int rc, id;

	memset(name, 'n', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	rc = td_ctl(&o, "submit small.yml -o root-out/b1 --name %s", name);
	ok(rc == 2 && strstr(o, "--name: 1 to 200 bytes of text without "
	    "control characters (got 201 bytes)"), "a 201-byte --name is a "
	    "usage error (exit %d): %s", rc, o);
	free(o);
	rc = td_ctl(&o, "submit small.yml -o root-out/b1 --name \"$(printf "
	    "'a\\033[2Jb')\"");
	ok(rc == 2 && strstr(o, "without control characters"), "a name with "
	    "a terminal escape is refused (exit %d)", rc);
	free(o);
	rc = td_ctl(&o, "submit small.yml -o root-out/b1 --priority "
	    "9007199254740992");
	ok(rc == 2 && strstr(o, "--priority: '9007199254740992' is not an "
	    "integer from -1000 to 1000"), "--priority 2^53 is a usage error "
	    "(exit %d): %s", rc, o);
	free(o);
	rc = td_ctl(&o, "submit small.yml -o root-out/b1 --priority 1001");
	ok_int_eq(rc, 2, "--priority 1001 is refused");
	free(o);
	memset(name, '"', PROTO_MAX_NAME);
	name[PROTO_MAX_NAME] = '\0';
	snprintf(args, sizeof args, "small.yml -o root-out/b2 --wait "
	    "--priority -1000 --name '%s'", name);
	id = submit_as(NULL, args);
	o = td_job_field(id, "priority");
	ok(id > 0 && strcmp(o, "-1000") == 0, "a 200-byte name of quotes and "
	    "--priority -1000 are taken");
	free(o);
}

/*
 * A client that skips the checks: a raw submit, with one descriptor,
 * whose name or priority is out of bounds, gets bad_request.
 */
static void
raw_submit(const char *what, const char *fields, const char *want)
{
	char *line, *got;
	int fd, dfd;
	size_t len;

	len = strlen(fields) + 512;
	line = malloc(len);
	snprintf(line, len, "{\"v\":%d,\"id\":1,\"op\":\"hello\"}\n",
	    PROTO_VERSION);
	fd = td_raw_connect();
	ok(fd >= 0 && write(fd, line, strlen(line)) == (ssize_t)strlen(line),
	    "%s: hello", what);
	snprintf(line, len, "{\"v\":%d,\"id\":2,\"op\":\"submit\",\"fds\":1,"
	    "\"config\":\"merge_method: linear\",\"out_name\":\"r\","
	    "\"models\":[],%s}\n", PROTO_VERSION, fields);
	dfd = open(dir, O_RDONLY | O_DIRECTORY);
	ok(td_send_fds(fd, line, strlen(line), &dfd, 1), "%s: sent (%zu "
	    "bytes)", what, strlen(line));
	shutdown(fd, SHUT_WR);
	got = td_raw_read_all(fd, 30);
	if (!ok(strstr(got, "\"id\":2,\"ok\":false,\"error\":{\"code\":"
	    "\"bad_request\"") && strstr(got, want), "%s: bad_request, "
	    "\"%s\"", what, want))
		tap_diag("got: %.300s", got);
	free(got);
	close(fd);
	close(dfd);
	free(line);
}

static void
test_bounds_raw(void)
{
	char *fields;
	size_t n = 320000;

	fields = malloc(n + 64);
	strcpy(fields, "\"name\":\"");
	memset(fields + 8, 'x', n);
	strcpy(fields + 8 + n, "\"");
	raw_submit("a 320,000-byte name", fields, "'name' must be 1 to 200 "
	    "bytes of text without control characters");
	free(fields);
	raw_submit("a name with ESC", "\"name\":\"a\\u001b[2Jb\"", "'name' "
	    "must be 1 to 200 bytes");
	raw_submit("a name with a C1 control", "\"name\":\"a\\u009bb\"",
	    "'name' must be 1 to 200 bytes");
	raw_submit("priority 2^53", "\"priority\":9007199254740992",
	    "'priority' must be an integer from -1000 to 1000");
	raw_submit("priority -1001", "\"priority\":-1001", "'priority' must "
	    "be an integer from -1000 to 1000");
	fields = malloc(PROTO_MAX_PATH + 64);
	strcpy(fields, "\"out\":\"/");
	memset(fields + 8, 'x', PROTO_MAX_PATH);
	strcpy(fields + 8 + PROTO_MAX_PATH, "\"");
	raw_submit("a 4097-byte out", fields, "'out' must be a path of at "
	    "most 4096 bytes");
	free(fields);
}

/* Row 7: the list reply is a page, whatever the store holds. */
static void
test_list_pages(void)
{
	char *o = NULL, before[64];
	size_t len, total = 0, pages = 0, n;
	cJSON *r;
	int rc, i, *ids, nids;
	bool sorted;

	r = raw_list("", &len);
	ok(r != NULL && cJSON_IsTrue(cJSON_GetObjectItem(r, "ok")) &&
	    len < PROTO_MAX_LINE, "the first page of %d jobs, every string of "
	    "the newest past its cap, is %zu bytes (the line limit is %u)",
	    njobs_seeded + 1, len, PROTO_MAX_LINE);
	ok(r != NULL && jobs_in(r) >= 1 && jobs_in(r) < WORST &&
	    cJSON_IsTrue(cJSON_GetObjectItem(r, "more")) &&
	    len <= PROTO_LIST_MAX_BYTES + 4096, "it holds %zu of those jobs, "
	    "within the page's %u bytes, and says more remain", r ?
	    jobs_in(r) : 0, PROTO_LIST_MAX_BYTES);
	tap_diag("worst-case page: %zu jobs, %zu bytes", r ? jobs_in(r) : 0,
	    len);
	cJSON_Delete(r);
	snprintf(before, sizeof before, "\"before\":%d", first_worst);
	r = raw_list(before, &len);
	ok(r != NULL && jobs_in(r) == PROTO_LIST_MAX && len < PROTO_MAX_LINE &&
	    cJSON_IsTrue(cJSON_GetObjectItem(r, "more")), "a page of %d jobs "
	    "with %d-byte names of quotes holds all %d: %zu bytes", MAXIMAL,
	    PROTO_MAX_NAME, PROTO_LIST_MAX, len);
	tap_diag("list reply for %d jobs with maximal names: %zu bytes "
	    "(%.1f%% of PROTO_MAX_LINE)", PROTO_LIST_MAX, len,
	    100.0 * (double)len / PROTO_MAX_LINE);
	cJSON_Delete(r);
	/* The whole history, as the one reply of old would have held it. */
	before[0] = '\0';
	do {
		r = raw_list(before, &len);
		if (r == NULL)
			break;
		total += len;
		pages++;
		snprintf(before, sizeof before, "\"before\":%.0f",
		    cJSON_GetNumberValue(cJSON_GetObjectItem(r, "before")));
		n = cJSON_IsTrue(cJSON_GetObjectItem(r, "more"));
		cJSON_Delete(r);
	} while (n && pages < 1000);
	ok(r != NULL && pages > 10, "raw pages walk the whole queue: %zu "
	    "pages, %zu bytes in all (one reply of old)", pages, total);

	rc = as_user(NULL, &o, "status");
	ok(rc == 0 && strstr(o, "older finished jobs are not shown"),
	    "root: mergectl status works (exit %d) and says it shows a page",
	    rc);
	ok(o != NULL && strstr(o, "\n    1 root ") && strstr(o, "\n    4 "
	    "merged-a") && strstr(o, "gate2") && strstr(o, "interrupted"),
	    "it shows the jobs yet to finish, however old");
	free(o);
	rc = as_user(NULL, &o, "status --all --json");
	ids = ids_of(rc == 0 ? o : "[]", &nids);
	for (sorted = true, i = 1; i < nids; i++)
		sorted &= ids[i] > ids[i - 1];
	ok(rc == 0 && nids == njobs_seeded + 1 && sorted, "status --all "
	    "walks the pages: %d jobs of %d, in id order", nids,
	    njobs_seeded + 1);
	free(ids);
	free(o);
	rc = as_user(NULL, &o, "list --json");
	ids = ids_of(rc == 0 ? o : "[]", &nids);
	for (sorted = true, i = 1; i < nids; i++)
		sorted &= ids[i] > ids[i - 1];
	ok(rc == 0 && nids == njobs_seeded + 1 && sorted, "list: every job "
	    "the store keeps, page after page, in id order (%d jobs)", nids);
	free(ids);
	free(o);
	rc = as_user(NULL, &o, "daemon status");
	ok(rc == 0 && strstr(o, "0 jobs running, 0 queued"), "daemon status "
	    "counts from the daemon's figures: %s", o);
	free(o);
	if (!need_users("row 7 as alice and bob"))
		return;
	rc = as_user(&alice, &o, "status");
	ok(rc == 0 && strstr(o, "ID USER"), "alice: mergectl status works "
	    "beside a 320,000-byte name (exit %d)", rc);
	free(o);
	rc = as_user(&bob, &o, "status %d --json", LEGACY);
	ok(rc == 0 && strlen(o) < 2000, "bob: status of the job with the "
	    "320,000-byte name is cut to its cap (%zu bytes)", o ? strlen(o) :
	    0);
	free(o);
	rc = as_user(&bob, &o, "list --all --json");
	ids = ids_of(rc == 0 ? o : "[]", &nids);
	ok(rc == 0 && nids == njobs_seeded + 1, "bob: list --all: %d jobs",
	    nids);
	free(ids);
	free(o);
}

/* Row 8: per-user caps on jobs and descriptors; another user runs. */
static void
test_caps(void)
{
	char *o = NULL;
	int rc, a1, a2, r[3], b, i, before, after;

	if (!need_users("row 8"))
		return;
	restart("--keep-finished 0 --max-running 2 --max-jobs-per-user 2");
	a1 = submit_as(&alice, "small.yml -o alice-out/c1 --after 1");
	a2 = submit_as(&alice, "small.yml -o alice-out/c2 --after 1");
	ok(a1 && a2 && state_is(a1, "queued") && state_is(a2, "queued"),
	    "alice queues two jobs, the cap");
	rc = as_user(&alice, &o, "submit small.yml -o alice-out/c3 --after 1");
	ok(rc == 10 && strstr(o, "merged-alice already has 2 jobs queued or "
	    "running, the most one user may have (merged --max-jobs-per-user "
	    "2)"), "her third is refused with exit 10, naming the cap (exit "
	    "%d): %s", rc, o);
	free(o);
	rc = as_user(&bob, &o, "submit small.yml -o bob-out/c1 --wait -q");
	ok_int_eq(rc, 0, "bob's job is taken and runs to the end meanwhile");
	free(o);
	for (i = 0; i < 3; i++)
		r[i] = submit_as(NULL, i == 0 ? "small.yml -o root-out/c1 "
		    "--after 1" : i == 1 ? "small.yml -o root-out/c2 "
		    "--after 1" : "small.yml -o root-out/c3 --after 1");
	ok(r[0] && r[1] && r[2], "root is exempt: three queued");
	for (i = 0; i < 3; i++) {
		td_ctl(&o, "cancel %d", r[i]);
		free(o);
	}

	/* The queued jobs come back interrupted, holding nothing. */
	restart("--keep-finished 0 --max-running 2 --max-fds-per-user 8");
	a1 = submit_as(&alice, "small.yml -o alice-out/c4 --after 1");
	a2 = submit_as(&alice, "small.yml -o alice-out/c5 --after 1");
	ok(a1 && a2, "alice queues two jobs, six descriptors");
	before = td_fd_count(pid);
	rc = as_user(&alice, &o, "submit small.yml -o alice-out/c6 --after 1");
	ok(rc == 10 && strstr(o, "would bring those held by merged-alice's "
	    "queued and running jobs to") && strstr(o, "over the 8 one user "
	    "may hold (merged --max-fds-per-user 8)"), "her third is refused "
	    "with exit 10, naming the descriptor cap (exit %d): %s", rc, o);
	free(o);
	/*
	 * Its connection's end is seen in the daemon's own time, and the
	 * count before may still hold the last submit's connection: keeping
	 * the refused job's three descriptors would show as more, not as
	 * the same.
	 */
	for (i = 0, after = -1; i < 200 && (after < 0 || after > before);
	    i++) {
		if (i > 0)
			td_sleep_ms(50);
		after = td_fd_count(pid);
	}
	ok(after >= 0 && after <= before, "the daemon keeps none of its "
	    "descriptors (%d before, %d after)", before, after);
	b = submit_as(&bob, "small.yml -o bob-out/c2");
	rc = as_user(&bob, &o, "watch %d -q", b);
	ok(b && rc == 0, "bob's job runs (exit %d)", rc);
	free(o);
}

static int
position(int id)
{
	return (int)td_job_num(id, "position");
}

/*
 * What the watcher of the last job in the queue saw (test_priority): its
 * place said at once, with what it waits for, then each time it moved
 * up, and never a place further back.
 */
static void
test_watch_positions(int job)
{
	char want[128], *w = NULL, *p, *path = tl_at(td_dir, "watch-b1.txt");
	int i, pos, last = 6, moves = 0;
	bool back = false;

	/* The watch ends with the job; its last line may still come. */
	for (i = 0; i < 600; i++) {
		free(w);
		w = tl_read(path, NULL);
		if (w != NULL && strstr(w, " done: ") != NULL)
			break;
		usleep(50000);
	}
	snprintf(want, sizeof want, "job %d queued: position 5, waiting for "
	    "job %d (interrupted)\n", job, GATE2);
	ok_str_has(w, want, "watch says where a queued job is and why it "
	    "waits");
	for (p = w; p != NULL && (p = strstr(p, "queued: position ")) !=
	    NULL; p++) {
		pos = atoi(p + strlen("queued: position "));
		back |= pos > last;
		moves += pos < last;
		last = pos;
	}
	ok(!back && moves >= 4 && last == 1, "and each move up, to position "
	    "1 (%d moves), never back", moves);
	ok_str_has(w, " done: ", "then its end");
	free(w);
	free(path);
}

/*
 * The background watch has said its first line before the gate opens:
 * otherwise it may first see gate 2 already running (a busy machine).
 */
static void
wait_watch_started(void)
{
	char *w = NULL, *path = tl_at(td_dir, "watch-b1.txt");
	int i;

	for (i = 0; i < 600; i++) {
		w = tl_read(path, NULL);
		if (w != NULL && strstr(w, "queued: position ") != NULL)
			break;
		free(w);
		w = NULL;
		usleep(50000);
	}
	free(w);
	free(path);
}

/* Row 9: fairness first; priority orders a user's own jobs; root's all. */
static void
test_priority(void)
{
	char *o = NULL;
	int rc, a, a2, b1, b2, rt;
	double ta, ta2, tb1, tb2, tr;

	if (!need_users("row 9"))
		return;
	restart("--keep-finished 0 --max-running 1");
	a = submit_as(&alice, "small.yml -o alice-out/d1 --after 2");
	b1 = submit_as(&bob, "small.yml -o bob-out/d1 --after 2");
	b2 = submit_as(&bob, "small.yml -o bob-out/d2 --after 2 "
	    "--priority 1000");
	a2 = submit_as(&alice, "small.yml -o alice-out/d2 --after 2");
	rt = submit_as(NULL, "small.yml -o root-out/d1 --after 2 --priority 5");
	ok(a && b1 && b2 && a2 && rt && state_is(a, "queued") &&
	    state_is(b2, "queued") && state_is(rt, "queued"), "alice, bob "
	    "(one at priority 1000) and root (priority 5) queue behind gate 2");
	ok(position(rt) == 1 && position(a) == 2 && position(b2) == 3 &&
	    position(a2) == 4 && position(b1) == 5, "their positions in the "
	    "queue are the order they will start in: %d %d %d %d %d",
	    position(rt), position(a), position(b2), position(a2),
	    position(b1));
	/* Bob's last job, watched from before the gate opens. */
	rc = td_ctl(&o, "watch %d > watch-b1.txt 2>&1 &", b1);
	free(o);
	wait_watch_started();
	rc = td_ctl(&o, "resume %d -q", GATE2);
	free(o);
	rc |= td_ctl(&o, "watch %d -q", GATE2);
	free(o);
	ok_int_eq(rc, 0, "the gate is resumed and done");
	rc = as_user(&bob, &o, "watch %d -q", b1);
	free(o);
	rc |= td_ctl(&o, "watch %d -q", a2);
	free(o);
	ok_int_eq(rc, 0, "every job ran");
	tr = started(rt);
	ta = started(a);
	tb2 = started(b2);
	ta2 = started(a2);
	tb1 = started(b1);
	ok(tr > 0 && tr < ta && tr < tb2, "root's priority goes first");
	ok(ta > 0 && ta < tb2, "bob's priority 1000 does not pass alice's "
	    "older job (%.3f < %.3f)", ta, tb2);
	ok(tb2 < tb1, "bob's priority orders his own jobs");
	ok(tb2 < ta2 && ta2 < tb1, "and the users take turns: alice, bob, "
	    "alice, bob (%.3f %.3f %.3f %.3f)", ta, tb2, ta2, tb1);
	test_watch_positions(b1);
}

static bool
removed(int id)
{
	char *o = NULL;
	int rc = td_ctl(&o, "status %d", id);

	free(o);
	return rc == 6;
}

/* rm and clean: records and logs only, finished jobs only, one's own. */
static void
test_rm_clean(void)
{
	char *o = NULL, path[4096];
	int rc, done, c;
	long n;

	if (!need_users("rm and clean"))
		return;
	rc = as_user(&bob, &o, "rm %d", DEP_DONE);
	ok(rc == 7 && strstr(o, "belongs to merged-alice"), "bob cannot rm "
	    "alice's job (exit %d)", rc);
	free(o);
	rc = as_user(&alice, &o, "rm 9999999");
	ok_int_eq(rc, 6, "rm of no such job: exit 6");
	free(o);
	rc = as_user(&alice, &o, "rm %d", DEP_DONE);
	ok(rc == 1 && strstr(o, "runs after job"), "a job an unfinished one "
	    "runs after is kept (exit %d): %s", rc, o);
	free(o);
	rc = as_user(&alice, &o, "rm %d", DEP_WAITING);
	ok(rc == 1 && strstr(o, "is interrupted; cancel it first"), "an "
	    "interrupted job is kept: cancel it first (exit %d)", rc);
	free(o);
	rc = as_user(&alice, &o, "rm x");
	ok_int_eq(rc, 2, "rm x: usage error");
	free(o);

	done = submit_as(&alice, "small.yml -o alice-out/e1 --wait");
	ok(done && state_is(done, "done") && store_count("SELECT count(*) "
	    "FROM logs WHERE job = %d", done) > 0, "alice's job is done, with "
	    "a log");
	rc = as_user(&alice, &o, "rm %d", done);
	ok(rc == 0 && strstr(o, "removed job"), "alice removes it (exit %d)",
	    rc);
	free(o);
	snprintf(path, sizeof path, "%s/alice-out/e1/model.safetensors", dir);
	ok(removed(done) && tl_exists(path), "it is gone; its output stays");
	ok_int_eq(store_count("SELECT count(*) FROM logs WHERE job = %d", done),
	    0, "and so are its log lines");

	c = submit_as(&bob, "small.yml -o bob-out/e1 --after 1");
	rc = as_user(&bob, &o, "cancel %d", c);
	free(o);
	rc = as_user(&bob, &o, "clean --state failed");
	ok(rc == 0 && strstr(o, "removed 0 finished jobs"), "bob: clean "
	    "--state failed removes none: %s", o);
	free(o);
	rc = as_user(&bob, &o, "clean --state cancelled --older-than 1d");
	ok(rc == 0 && strstr(o, "removed 0 finished jobs") && !removed(c),
	    "--older-than 1d keeps his recent cancelled job");
	free(o);
	rc = as_user(&bob, &o, "clean --state cancelled");
	ok(rc == 0 && strstr(o, "removed 1 finished job\n") && removed(c),
	    "--state cancelled removes it: %s", o);
	free(o);
	rc = as_user(&bob, &o, "clean --state running");
	ok_int_eq(rc, 2, "clean --state running: usage error");
	free(o);

	n = store_count("SELECT count(*) FROM jobs WHERE owner = %u",
	    (unsigned)bob.uid);
	rc = as_user(&alice, &o, "clean");
	ok(rc == 0 && strstr(o, "removed ") && store_count("SELECT count(*) "
	    "FROM jobs WHERE owner = %u AND state IN ('done', 'failed', "
	    "'cancelled')", (unsigned)alice.uid) == 1, "alice: clean removes "
	    "her finished jobs but the one still needed, in several requests "
	    "(%s)", o);
	free(o);
	ok(n > 0 && store_count("SELECT count(*) FROM jobs WHERE owner = %u",
	    (unsigned)bob.uid) == n, "and none of bob's");
	rc = td_ctl(&o, "clean");
	ok(rc == 0 && store_count("SELECT count(*) FROM jobs WHERE state IN "
	    "('done', 'failed', 'cancelled')") == 1, "root: clean removes "
	    "everyone's (%s)", o);
	free(o);
}

/* --keep-finished: old finished jobs go, in batches, by themselves. */
static void
test_retention(void)
{
	char *o = NULL, *sql, path[4096];
	double old = (double)time(NULL) - 40 * 86400;
	int rc, i, id;
	long n = -1;

	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly");
	pid = 0;
	sql = sqlite3_mprintf("INSERT INTO jobs (owner, owner_gid, user, name,"
	    " state, priority, after, config, out_dir, out_name, staging, "
	    "memory, seed, created, started, finished) WITH RECURSIVE n(i) AS "
	    "(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 700) SELECT 0, "
	    "0, 'root', 'old-' || i, 'done', 0, 0, 'x', '/o', 'o', '.s', 0, 0, "
	    "%f, %f, %f FROM n; INSERT INTO logs (job, ts, line) SELECT id, 0, "
	    "'x' FROM jobs WHERE name LIKE 'old-%%'", old, old, old);
	free(store_sql(sql));
	sqlite3_free(sql);
	ok_int_eq(store_count("SELECT count(*) FROM jobs WHERE finished > 0 "
	    "AND finished < %f", old + 1), 700, "700 jobs finished 40 days "
	    "ago");
	restart("");
	for (i = 0; i < 1200 && n != 0; i++) {
		if (i > 0)
			td_sleep_ms(50);
		n = store_count("SELECT count(*) FROM jobs WHERE finished > 0 "
		    "AND finished < %f", old + 1);
	}
	ok(n == 0 && store_count("SELECT count(*) FROM logs WHERE line = 'x'")
	    == 0, "the default 30 days: merged removes them and their logs, "
	    "in batches");
	ok(!removed(GATE1) && !removed(DEP_DONE), "and keeps what is "
	    "unfinished or needed");
	rc = as_user(NULL, &o, "status");
	ok_int_eq(rc, 0, "status works meanwhile");
	free(o);
	if (!need_users("--keep-finished 1s"))
		return;
	restart("--keep-finished 1s");
	id = submit_as(&alice, "small.yml -o alice-out/f1 --wait");
	ok(id > 0, "alice's job is done");
	for (i = 0; i < 1200 && !removed(id); i++)
		td_sleep_ms(50);
	snprintf(path, sizeof path, "%s/alice-out/f1/model.safetensors", dir);
	ok(removed(id) && tl_exists(path), "--keep-finished 1s: its record "
	    "goes by itself; its output stays");
}

int
main(int argc, char **argv)
{
	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("queue");
	td_init(dir);
	setup();
	/* The store, made by a first start. */
	if (getgrnam("merged") != NULL && geteuid() == 0)
		mode = "--group merged";
	restart("--keep-finished 0");
	ok_int_eq(td_stop(pid, SIGTERM), 0, "a first start makes the store");
	seed();
	pid = 0;
	restart("--keep-finished 0");
	test_bounds();
	test_bounds_raw();
	test_list_pages();
	test_caps();
	test_priority();
	test_rm_clean();
	test_retention();
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly");
	ok(td_store_ok(), "the store passes PRAGMA integrity_check");
	return tap_done();
}
