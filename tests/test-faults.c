/* SPDX-License-Identifier: MIT */
/*
 * test-faults.c: the daemon under faults.  A real merged, real socket,
 * real store, real generated models; faults are made with a small tmpfs
 * (when mounting is allowed), with an LD_PRELOAD library that fails or
 * kills at a chosen file write (faultshim.c), with kill -9, and by
 * changing input files under a queued or running job.
 *
 *   - disk full while shards are written (ENOSPC from write, from fsync,
 *     and from a real full filesystem): the job fails naming the error,
 *     its staging directory is removed, an existing destination is left
 *     as it was, and the daemon goes on serving;
 *   - kill -9 at 20 points drawn at random among the daemon's writes to
 *     its store and to the job's shards: after each, the store passes
 *     PRAGMA integrity_check, no accepted job is lost, and resuming gives
 *     output byte-identical to an uninterrupted run; and right after the
 *     publish (plain and --force), before the store has recorded it;
 *   - a version 1 store is upgraded, a newer one refused;
 *   - an input truncated while its job is queued, truncated while it
 *     runs, or rewritten in place while it runs: that job fails clearly,
 *     another job running at the same time is not disturbed;
 *   - a state directory that cannot be written, or a full one: merged
 *     refuses to start, saying why;
 *   - a daemon that is not root is not asked to write where it cannot;
 *   - clients that go away mid-submit and mid-line.
 *
 * The random kill points come from a seed printed in the output; set
 * FAULT_SEED to replay a run, or FAULT_KILL_ALL=1 to kill at every
 * point in turn.
 */
#define _GNU_SOURCE
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "tap.h"
#include "testd.h"
#include "testlib.h"

#define NOBODY 65534
#define KILLS 20

static const char *dir;
static const char *shim;	/* path of faultshim.so */

static char *
fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *
fmt(const char *f, ...)
{
	va_list ap;
	char *s;

	va_start(ap, f);
	if (vasprintf(&s, f, ap) < 0)
		abort();
	va_end(ap);
	return s;
}

/* The environment that loads the shim into merged, with its settings. */
static char *
shim_env(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *
shim_env(const char *f, ...)
{
	va_list ap;
	char *more, *s;

	va_start(ap, f);
	if (vasprintf(&more, f, ap) < 0)
		abort();
	va_end(ap);
	/* ASan wants its runtime first in the library list; the shim only
	 * wraps libc calls and does not mind coming before it. */
	s = fmt("LD_PRELOAD=%s ASAN_OPTIONS=${ASAN_OPTIONS:-}:"
	    "verify_asan_link_order=0 %s", shim, more);
	free(more);
	return s;
}

static bool
out_same(const char *ref, const char *out)
{
	char *o = NULL;
	int rc = tl_runf(&o, "cd %s && test -d %s && for f in %s/*.safetensors "
	    "%s/*.json; do cmp $f %s/$(basename $f) || exit 1; done 2>&1", dir,
	    out, ref, ref, out);

	free(o);
	return rc == 0;
}

/* The job's error text, or "". */
static char *
job_error(int id)
{
	return td_job_field(id, "error");
}

/* Watches a job to its end; returns mergectl's exit status. */
static int
watch(int id)
{
	char *o = NULL;
	int rc = td_ctl(&o, "watch %d --quiet", id);

	free(o);
	return rc;
}

/* A destination that exists, to check a failed --force leaves it. */
static void
make_dest(const char *rel)
{
	char *o = NULL;

	tl_runf(&o, "mkdir -p %s/%s && echo old >%s/%s/keep", dir, rel, dir,
	    rel);
	free(o);
}

static bool
dest_untouched(const char *rel)
{
	char *o = NULL;
	int rc = tl_runf(&o, "cd %s/%s && test \"$(cat keep)\" = old && "
	    "test \"$(ls -A)\" = keep", dir, rel);

	free(o);
	return rc == 0;
}

static bool
staging_in(const char *sub)
{
	char *o = NULL;
	int rc = tl_runf(&o, "ls -a %s/%s | grep -q merging", dir, sub);

	free(o);
	return rc == 0;
}

/* The daemon serves: a small merge submitted now completes. */
static bool
serves(const char *out)
{
	int id = td_submit("small.yml -o %s", out);

	return id != 0 && watch(id) == 0;
}

/*
 * One disk-full case: a daemon whose writes into full/ fail as settings
 * say, a --force job onto an existing full/out, and what must follow.
 */
static void
enospc_case(const char *what, const char *settings, const char *want,
    const char *after)
{
	char *env, *e;
	pid_t pid;
	int id;

	make_dest("full/out");
	env = shim_env("FAULT_PATH=%s/full/ %s", dir, settings);
	pid = td_start("--memory 64M", env);
	free(env);
	id = td_submit("mid.yml -o full/out --force --out-shard-size 4M");
	ok(id != 0 && watch(id) != 0, "%s: the job fails", what);
	e = job_error(id);
	ok_str_has(e, want, "%s: the error says so", what);
	free(e);
	ok(!staging_in("full"), "%s: no staging directory is left", what);
	ok(dest_untouched("full/out"), "%s: the existing destination is as "
	    "it was", what);
	ok(serves(after), "%s: the daemon goes on serving", what);
	ok_int_eq(td_stop(pid, SIGTERM), 0, "%s: merged exits cleanly", what);
}

static void
test_enospc(void)
{
	char fsync_errno[64];

	/* A write past 3 MB of shard data fails: mid-shard, after the
	 * space was reserved, as on a filesystem that overcommits. */
	enospc_case("ENOSPC on write", "FAULT_ENOSPC_AFTER=3000000",
	    "No space left on device", "after-enospc");
	/* fsync is where a full disk shows on some filesystems. */
	snprintf(fsync_errno, sizeof fsync_errno, "FAULT_FSYNC_ERRNO=%d",
	    ENOSPC);
	enospc_case("ENOSPC on fsync", fsync_errno,
	    "fsync: No space left on device", "after-fsync");
}

/* A real full filesystem: a 2 MB tmpfs, when this process may mount. */
static void
test_tmpfs_full(void)
{
	char path[1024], *e;
	pid_t pid;
	int id;

	snprintf(path, sizeof path, "%s/small", dir);
	mkdir(path, 0755);
	if (mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=2m") !=
	    0) {
		tap_diag("cannot mount a tmpfs (%s): the real disk-full case "
		    "is skipped", strerror(errno));
		ok(1, "# SKIP disk full on a real filesystem: cannot mount");
		return;
	}
	pid = td_start("--memory 64M", NULL);
	id = td_submit("mid.yml -o small/out");
	ok(id != 0 && watch(id) != 0, "a full tmpfs: the job fails");
	e = job_error(id);
	ok_str_has(e, "No space left on device", "a full tmpfs: the error "
	    "says so");
	free(e);
	ok(!staging_in("small"), "a full tmpfs: no staging directory is "
	    "left");
	ok(serves("after-tmpfs"), "a full tmpfs: the daemon goes on serving");
	td_stop(pid, SIGTERM);
	umount2(path, MNT_DETACH);
}

/* How many watched calls a whole job makes, counted by the shim. */
static unsigned long
count_calls(const char *watch_paths)
{
	char cf[1024], *env, *t;
	unsigned long n = 0;
	pid_t pid;
	int id;

	snprintf(cf, sizeof cf, "%s/calls", dir);
	env = shim_env("FAULT_PATH=%s FAULT_COUNT_FILE=%s", watch_paths, cf);
	pid = td_start("--memory 24M --threads 1", env);
	free(env);
	id = td_submit("mid.yml -o k-count --random-seed 5 --out-shard-size "
	    "8M");
	if (id != 0)
		watch(id);
	td_stop(pid, SIGTERM);
	if ((t = tl_read(cf, NULL)) != NULL)
		n = strtoul(t, NULL, 10);
	free(t);
	return n;
}

/* What the kills did, summed over all of them. */
struct kills {
	int runs, died, in_store, in_shards, before_reply;
	int unsound, lost, differ;
	int next_id;		/* the id the next accepted job gets */
	char last[32];		/* the last job's state, resumed to its end */
};

/*
 * One job under a daemon that the shim kills (settings: the FAULT_*
 * variables that choose the point), then a restart without the shim:
 * the store must be sound, the job there if it was accepted, and it must
 * resume (or have finished) with the reference's bytes.
 */
static void
kill_once(struct kills *k, const char *what, const char *settings,
    bool force)
{
	char out[64], note[1024], *env, *o = NULL, *t, *s;
	int id, jid;
	pid_t pid;

	snprintf(out, sizeof out, "k-%d", k->runs++);
	/* With force, an older output to replace. */
	if (force)
		tl_runf(NULL, "cd %s && mkdir %s && echo old >%s/old", dir, out,
		    out);
	snprintf(note, sizeof note, "%s/kill-note", dir);
	unlink(note);
	env = shim_env("FAULT_PATH=%s/merged.db:%s/.k- FAULT_NOTE_FILE=%s %s",
	    td_state, dir, note, settings);
	pid = td_start("--memory 24M --threads 1", env);
	free(env);
	id = td_submit("mid.yml -o %s --random-seed 5 --out-shard-size 8M%s",
	    out, force ? " --force" : "");
	k->before_reply += id == 0;
	/* It dies at its point, or finishes if it never gets there. */
	if (id != 0)
		watch(id);
	/* Reaped either way; the shim's note says whether it hit its point
	 * (the socket closes before the dying process can be waited for). */
	td_stop(pid, SIGKILL);
	if ((t = tl_read(note, NULL)) != NULL) {
		k->died++;
		k->in_store += strstr(t, "merged.db") != NULL;
		k->in_shards += strstr(t, ".safetensors") != NULL;
		free(t);
	}
	if (!td_store_ok()) {
		k->unsound++;
		tap_diag("kill %s: the store is damaged", what);
	}
	pid = td_start("--memory 64M", NULL);
	/* Without a reply the job may still have been recorded. */
	jid = id != 0 ? id : k->next_id;
	s = td_job_field(jid, "state");
	if (id != 0 && *s == '\0') {
		k->lost++;
		tap_diag("kill %s: job %d was accepted and is gone", what, id);
	}
	if (*s != '\0') {
		if (strcmp(s, "interrupted") == 0 && td_ctl(&o,
		    "resume %d --quiet", jid) != 0)
			tap_diag("resume %d: %s", jid, o);
		free(o);
		if (watch(jid) != 0 || !out_same("k-ref", out)) {
			k->differ++;
			tap_diag("kill %s (job %d, %s after restart): output "
			    "differs or is missing", what, jid, s);
		}
		k->next_id = jid + 1;
		free(s);
		s = td_job_field(jid, "state");
	}
	snprintf(k->last, sizeof k->last, "%s", s);
	free(s);
	td_stop(pid, SIGTERM);
}

/*
 * kill -9 at chosen points (while the job finishes, inside a store
 * commit, between shard writes) and at KILLS points drawn among all the
 * daemon's writes to its store and to the job's shards; all in one store.
 */
static void
test_kills(void)
{
	struct kills k = { 0 };
	char paths[2048], what[64], set[128], *t;
	unsigned long total, point;
	unsigned seed;
	pid_t pid;
	bool all;
	int i, nkills;

	t = getenv("FAULT_SEED");
	seed = t != NULL ? (unsigned)strtoul(t, NULL, 10) :
	    (unsigned)time(NULL);
	srand(seed);
	tap_diag("kill points drawn with FAULT_SEED=%u", seed);
	snprintf(paths, sizeof paths, "%s/merged.db:%s/.k-", td_state, dir);
	total = count_calls(paths);
	ok(total > 20, "kill -9: a job makes %lu writes and syncs to choose "
	    "from", total);
	pid = td_start("--memory 64M", NULL);
	k.next_id = td_submit("small.yml -o k-probe") + 1;
	td_stop(pid, SIGTERM);

	kill_once(&k, "while finishing", "FAULT_KILL_NAME=config.json", false);
	ok(k.died == 1 && k.differ == 0 && k.lost == 0, "kill -9 while the "
	    "job writes config.json after its last shard: resumed, it "
	    "completes with the same bytes");
	kill_once(&k, "in a commit", "FAULT_KILL_NAME=merged.db-wal "
	    "FAULT_KILL_AT=3", false);
	ok(k.died == 2 && k.unsound == 0 && k.differ == 0 && k.lost == 0,
	    "kill -9 inside a store commit: the store is sound, the job "
	    "completes with the same bytes");
	kill_once(&k, "between shards", "FAULT_KILL_NAME=model-00004",
	    false);
	ok(k.died == 3 && k.differ == 0 && k.lost == 0, "kill -9 as the "
	    "fourth shard starts: resumed, it completes with the same bytes");
	/* The output renamed into place, the store not yet told. */
	kill_once(&k, "just published", "FAULT_KILL_RENAME=1", false);
	ok(k.died == 4 && k.differ == 0 && k.lost == 0, "kill -9 right after "
	    "the output is renamed into place: resumed, the job is done with "
	    "the same bytes");
	ok(strcmp(k.last, "done") == 0, "and its state is done (%s)",
	    k.last);
	kill_once(&k, "just exchanged", "FAULT_KILL_RENAME=1", true);
	ok(k.died == 5 && k.differ == 0 && k.lost == 0, "kill -9 right after "
	    "a --force exchange: resumed, the job is done with the same bytes");
	ok(tl_runf(NULL, "cd %s && test ! -e k-%d/old && ! ls -d .k-%d.* "
	    ">/dev/null 2>&1", dir, k.runs - 1, k.runs - 1) == 0, "and the "
	    "replaced output is gone, with no staging directory left");
	/* FAULT_KILL_ALL=1: every point in turn (minutes, not for CI);
	 * FAULT_KILLS=N: N drawn points (the sanitizer builds draw fewer,
	 * tests/meson.build). */
	all = getenv("FAULT_KILL_ALL") != NULL;
	t = getenv("FAULT_KILLS");
	nkills = t != NULL && atoi(t) > 0 ? atoi(t) : KILLS;
	for (i = 0; all ? (unsigned long)i < total : i < nkills && total > 0;
	    i++) {
		point = all ? (unsigned long)i + 1 : 1 +
		    (unsigned long)rand() % total;
		snprintf(what, sizeof what, "%d at call %lu", i, point);
		snprintf(set, sizeof set, "FAULT_KILL_AT=%lu", point);
		kill_once(&k, what, set, false);
	}
	tap_diag("kill -9: %d of %d runs died at their point (%d in a store "
	    "file, %d in a shard, %d before submit was answered)", k.died,
	    k.runs, k.in_store, k.in_shards, k.before_reply);
	ok(k.died >= k.runs / 2, "kill -9: most runs died at their point "
	    "(%d of %d)", k.died, k.runs);
	ok_int_eq(k.unsound, 0, "kill -9: the store passes PRAGMA "
	    "integrity_check after every kill");
	ok_int_eq(k.lost, 0, "kill -9: no accepted job is lost");
	ok_int_eq(k.differ, 0, "kill -9: every job resumes or reruns to "
	    "output byte-identical to the uninterrupted run");
}

/* The weights and config.json of two outputs are the same. */
static bool
weights_same(const char *ref, const char *out)
{
	char *o = NULL;
	int rc = tl_runf(&o, "cd %s && test -d %s && for f in %s/*.safetensors "
	    "%s/config.json; do cmp $f %s/$(basename $f) || exit 1; done 2>&1",
	    dir, out, ref, ref, out);

	free(o);
	return rc == 0;
}

/*
 * One three-stage pipeline (stages a and b feed the final one) under a
 * daemon that the shim kills at its point (settings), then a restart
 * without it: the store is sound, the group there if it was accepted,
 * whole, and resumed (or finished) it gives the reference's bytes, its
 * stages' included.
 */
static void
kill_stages_once(struct kills *k, const char *what, const char *watch_rel,
    const char *settings)
{
	char out[64], note[1024], a[128], b[128], *env, *o = NULL, *s, *t;
	int id, gid;
	pid_t pid;

	snprintf(out, sizeof out, "ps-%d", k->runs++);
	snprintf(note, sizeof note, "%s/kill-note", dir);
	unlink(note);
	env = shim_env("FAULT_PATH=%s/merged.db:%s/%s%s FAULT_NOTE_FILE=%s %s",
	    td_state, dir, out, watch_rel, note, settings);
	pid = td_start("--memory 24M --threads 1", env);
	free(env);
	id = td_submit("pipe3.yml -o %s --random-seed 5 --out-shard-size 8M",
	    out);
	k->before_reply += id == 0;
	if (id != 0)
		watch(id);
	td_stop(pid, SIGKILL);
	if ((t = tl_read(note, NULL)) != NULL) {
		k->died++;
		free(t);
	}
	if (!td_store_ok()) {
		k->unsound++;
		tap_diag("kill %s: the store is damaged", what);
	}
	pid = td_start("--memory 64M", NULL);
	gid = id != 0 ? id : k->next_id;
	s = td_job_field(gid, "state");
	if (id != 0 && *s == '\0') {
		k->lost++;
		tap_diag("kill %s: group %d was accepted and is gone", what, id);
	}
	if (*s != '\0') {
		if (strcmp(s, "interrupted") == 0 && td_ctl(&o,
		    "resume %d --quiet", gid) != 0)
			tap_diag("resume %d: %s", gid, o);
		free(o);
		snprintf(a, sizeof a, "%s.stages/b", out);
		snprintf(b, sizeof b, "%s.stages/a", out);
		if (watch(gid) != 0 || !weights_same("ps-ref", out) ||
		    !weights_same("ps-ref.stages/b", a) ||
		    !weights_same("ps-ref.stages/a", b)) {
			k->differ++;
			tap_diag("kill %s (group %d, %s after restart): an "
			    "output differs or is missing", what, gid, s);
		}
		/* The group and its three stages. */
		k->next_id = gid + 4;
	}
	free(s);
	td_stop(pid, SIGTERM);
}

/*
 * kill -9 across the stages of a pipeline: while stage b writes its
 * second shard, while the final stage finishes, and at a point drawn
 * among the whole group's writes to the store and to its files.
 */
static void
test_stage_kills(void)
{
	struct kills k = { 0 };
	char set[128];
	pid_t pid;

	pid = td_start("--memory 64M", NULL);
	k.next_id = td_submit("small.yml -o ps-probe") + 1;
	td_stop(pid, SIGTERM);
	kill_stages_once(&k, "in stage b", ".stages/.b.",
	    "FAULT_KILL_NAME=model-00002");
	ok(k.died == 1 && k.unsound == 0 && k.lost == 0 && k.differ == 0,
	    "kill -9 while the middle stage writes a shard: the group "
	    "resumes to the same bytes, every stage's");
	kill_stages_once(&k, "finishing the last stage", "",
	    "FAULT_KILL_NAME=mergectl_stage.json");
	ok(k.died == 2 && k.unsound == 0 && k.lost == 0 && k.differ == 0,
	    "kill -9 while the final stage finishes: the same");
	snprintf(set, sizeof set, "FAULT_KILL_AT=%d", 1 + rand() % 60);
	kill_stages_once(&k, set, "", set);
	ok(k.unsound == 0 && k.lost == 0 && k.differ == 0, "kill -9 at a "
	    "drawn point of the group's writes (%s, %s): the same", set,
	    k.died == 3 ? "it died there" : "it finished first");
}

/* Runs sql on the daemon's store (stopped); the first column of its last
 * row as text ("" when none), or NULL on an error. */
static char *
store_sql(const char *sql)
{
	char path[700], *r = NULL;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	const char *tail = sql;
	int rc;

	snprintf(path, sizeof path, "%s/merged.db", td_state);
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) !=
	    SQLITE_OK)
		goto out;
	while (*tail != '\0') {
		if (sqlite3_prepare_v2(db, tail, -1, &st, &tail) != SQLITE_OK)
			goto out;
		if (st == NULL)
			break;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			free(r);
			r = strdup(sqlite3_column_text(st, 0) != NULL ?
			    (const char *)sqlite3_column_text(st, 0) : "");
		}
		sqlite3_finalize(st);
		st = NULL;
		if (rc != SQLITE_DONE) {
			free(r);
			r = NULL;
			goto out;
		}
	}
	if (r == NULL)
		r = strdup("");
out:
	if (r == NULL)
		tap_diag("%s: %s", sql, db != NULL ? sqlite3_errmsg(db) : "");
	sqlite3_finalize(st);
	sqlite3_close(db);
	return r;
}

/*
 * The store kept by the kill tests, turned back into each older version
 * (version 1: no jobs.stage_dev, stage_ino; version 2: no lora_dtype;
 * version 3: no kind; version 4: one "after", no groups; version 5: no
 * on_done; version 6: no samples; version 7: no Slurm columns; version
 * 8: no card): merged upgrades it to the current one (9) and keeps
 * every job, without a hook, each older one a merge, an older "after"
 * its one dependency; a job of a kind it does not know is kept, failed,
 * saying so; a store of a version it does not know is refused.
 */
static void
test_store_versions(void)
{
	static const char *const back[] = {
		/* 9 -> 8 */
		"ALTER TABLE jobs DROP COLUMN card;",
		/* 8 -> 7 */
		"ALTER TABLE jobs DROP COLUMN slurm_id;"
		" ALTER TABLE jobs DROP COLUMN slurm_verify;"
		" ALTER TABLE jobs DROP COLUMN out_dev;"
		" ALTER TABLE jobs DROP COLUMN out_ino;",
		/* 7 -> 6 */
		"DROP TABLE samples;",
		/* 6 -> 5 */
		"ALTER TABLE jobs DROP COLUMN on_done;",
		/* 5 -> 4 */
		"ALTER TABLE jobs DROP COLUMN deps;"
		" ALTER TABLE jobs DROP COLUMN grp;"
		" ALTER TABLE jobs DROP COLUMN stage;"
		" ALTER TABLE jobs DROP COLUMN inter_dir;"
		" ALTER TABLE jobs DROP COLUMN keep_inter;",
		/* 4 -> 3 */
		"ALTER TABLE jobs DROP COLUMN kind;",
		/* 3 -> 2 */
		"ALTER TABLE jobs DROP COLUMN lora_dtype;",
		/* 2 -> 1 */
		"ALTER TABLE jobs DROP COLUMN stage_dev;"
		" ALTER TABLE jobs DROP COLUMN stage_ino;",
	};
	char *n, *last, *v, *s, *m, *o = NULL, *sql, *first, *deps;
	int rc, from, k;
	pid_t pid;

	for (from = 8; from >= 1; from--) {
		n = store_sql("SELECT count(*) FROM jobs");
		last = store_sql("SELECT id || ' ' || state FROM jobs ORDER BY "
		    "id");
		sql = NULL;
		for (k = 0; k <= 8 - from; k++) {
			s = sql;
			if (asprintf(&sql, "%s%s", s ? s : "", back[k]) < 0)
				sql = NULL;
			free(s);
		}
		/* Its last job ran after its first, as --after wrote it (from
		 * version 5 on, in deps too). */
		s = sql;
		if (asprintf(&sql, "%s UPDATE jobs SET after = (SELECT min(id) "
		    "FROM jobs) WHERE id = (SELECT max(id) FROM jobs);%s PRAGMA "
		    "user_version = %d; PRAGMA user_version", s ? s : "",
		    from >= 5 ? " UPDATE jobs SET deps = CAST(after AS TEXT) "
		    "WHERE after != 0;" : "", from) < 0)
			sql = NULL;
		free(s);
		v = sql ? store_sql(sql) : NULL;
		free(sql);
		ok(n != NULL && last != NULL && v != NULL && atoi(v) == from,
		    "a version %d store with %s jobs", from, n ? n : "?");
		free(v);
		pid = td_start("--memory 64M", NULL);
		s = last != NULL ? td_job_field(atoi(last), "state") :
		    strdup("");
		ok(last != NULL && strcmp(s, strchr(last, ' ') + 1) == 0,
		    "merged opens it and knows job %s as it was (%s)",
		    last ? last : "?", s);
		free(s);
		s = last != NULL ? td_job_field(atoi(last), "kind") :
		    strdup("");
		ok_str_eq(s, "merge", "a merge");
		free(s);
		ok_int_eq(td_stop(pid, SIGTERM), 0, "and stops cleanly");
		v = store_sql("SELECT count(*) FROM jobs");
		m = store_sql("SELECT count(*) FROM jobs WHERE kind = 'merge'");
		s = store_sql("SELECT count(stage_dev) + count(stage_ino) + "
		    "count(lora_dtype) + count(grp) + count(on_done) + "
		    "count(slurm_verify) + count(out_ino) + count(card) + "
		    "(SELECT count(*) FROM samples) >= 0 "
		    "FROM jobs; PRAGMA user_version");
		ok(v != NULL && n != NULL && strcmp(v, n) == 0 && s != NULL &&
		    strcmp(s, "9") == 0 && m != NULL && strcmp(m, n) == 0,
		    "upgraded from version %d to 9 with every job, each a "
		    "merge, and a history table (%s of %s)", from, m ? m : "?",
		    n ? n : "?");
		free(s);
		s = store_sql("SELECT count(*) FROM jobs WHERE slurm_id != 0");
		ok(s != NULL && strcmp(s, "0") == 0, "none of them on Slurm");
		free(s);
		s = store_sql("SELECT count(*) FROM jobs WHERE on_done IS NOT "
		    "NULL");
		ok(s != NULL && strcmp(s, "0") == 0, "none of them with a "
		    "hook");
		free(s);
		first = store_sql("SELECT min(id) FROM jobs");
		deps = store_sql("SELECT deps FROM jobs WHERE id = (SELECT "
		    "max(id) FROM jobs)");
		ok(first != NULL && deps != NULL && strcmp(first, deps) == 0,
		    "its after became its one dependency (%s)", deps ? deps :
		    "?");
		free(first);
		free(deps);
		/* As it was, for the next round. */
		free(store_sql("UPDATE jobs SET deps = '', after = 0"));
		free(m);
		free(v);
		free(last);
		free(n);
	}

	/* A kind from a newer merged: kept, failed, and said. */
	last = store_sql("SELECT max(id) FROM jobs");
	free(store_sql("UPDATE jobs SET kind = 'distill' WHERE id = "
	    "(SELECT max(id) FROM jobs)"));
	pid = td_start("--memory 64M", NULL);
	s = last != NULL ? td_job_field(atoi(last), "state") : strdup("");
	ok_str_eq(s, "failed", "a job of an unknown kind is failed");
	free(s);
	s = last != NULL ? td_job_field(atoi(last), "error") : strdup("");
	ok_str_has(s, "kind 'distill'", "saying its kind is unknown");
	free(s);
	ok_int_eq(td_stop(pid, SIGTERM), 0, "and merged stops cleanly");
	free(store_sql("UPDATE jobs SET kind = 'merge'"));
	free(last);

	free(store_sql("PRAGMA user_version = 99"));
	rc = tl_runf(&o, "timeout 20 %s --socket %s --state-dir %s 2>&1",
	    tl_merged, td_sock, td_state);
	ok(rc == 1, "a store of a newer version: merged refuses to start "
	    "(exit %d)", rc);
	ok_str_has(o, "schema version 99", "saying which version it is");
	free(o);
	free(store_sql("PRAGMA user_version = 9"));
}

/*
 * A stage the store refuses to record (a trigger stands in for a full
 * disk or a broken database between two inserts): the pipeline is
 * refused whole, nothing of it is kept, in the store or the queue, and
 * the next submit works.
 */
static void
test_group_rollback(void)
{
	char *o = NULL, *before, *after;
	pid_t pid;
	int rc;

	free(store_sql("CREATE TRIGGER no_b BEFORE INSERT ON jobs WHEN "
	    "NEW.stage = 'b' BEGIN SELECT RAISE(ABORT, 'no room'); END"));
	pid = td_start("--memory 64M", NULL);
	before = store_sql("SELECT count(*) || ' ' || max(id) FROM jobs");
	rc = td_ctl(&o, "submit pipe3.yml -o rb-out --intermediate-dir rb");
	ok(rc == 1 && o != NULL && strstr(o, "cannot record the pipeline's "
	    "stages; nothing was queued"), "a pipeline whose stage cannot be "
	    "recorded is refused (exit %d)", rc);
	free(o);
	after = store_sql("SELECT count(*) || ' ' || max(id) FROM jobs");
	ok(before != NULL && after != NULL && strcmp(before, after) == 0,
	    "the store keeps none of it (jobs, last id: %s)", after ? after :
	    "?");
	free(before);
	free(after);
	rc = td_ctl(&o, "list --name 'rb-out*' --json");
	ok(rc == 0 && o != NULL && strncmp(o, "[]", 2) == 0, "nor does the "
	    "queue");
	free(o);
	free(store_sql("DROP TRIGGER no_b"));
	rc = td_ctl(&o, "submit pipe3.yml -o rb-out --intermediate-dir rb "
	    "--wait -q");
	ok_int_eq(rc, 0, "the same pipeline, submitted again, runs");
	free(o);
	ok_int_eq(td_stop(pid, SIGTERM), 0, "and the daemon stops cleanly");
}

static void
truncate_file(const char *rel, const char *how)
{
	char *o = NULL;

	tl_runf(&o, "cd %s && %s %s 2>&1", dir, how, rel);
	free(o);
}

static void
test_inputs_change(void)
{
	char *e, *env, *o = NULL;
	pid_t pid;
	int busy, q, r, w, other;

	tl_runf(&o, "cd %s && cp -r m1 qa && cp -r m1 ra && cp -r m1 wa", dir);
	free(o);
	pid = td_start("--max-running 1 --memory 24M --threads 1", NULL);
	busy = td_submit("mid.yml -o c-busy --random-seed 5 "
	    "--out-shard-size 8M");
	q = td_submit("q.yml -o c-queued");
	ok(busy && q && td_wait_state(q, "queued", 5000), "changed input: a "
	    "job waits in the queue");
	truncate_file("qa/model.safetensors", "truncate -s 100000");
	ok(watch(q) != 0, "truncated while queued: the job fails");
	e = job_error(q);
	ok_str_has(e, "qa/model.safetensors", "truncated while queued: the "
	    "error names the file");
	free(e);
	ok(watch(busy) == 0 && out_same("k-ref", "c-busy"), "the job running "
	    "meanwhile is not disturbed");
	td_stop(pid, SIGTERM);

	/* Slow writes for the two jobs whose inputs change under them, so
	 * that they are surely still running when that happens. */
	env = shim_env("FAULT_PATH=%s/.c-running:%s/.c-rewritten "
	    "FAULT_SLOW_US=20000", dir, dir);
	pid = td_start("--max-running 2 --memory 48M --threads 2", env);
	free(env);
	r = td_submit("r.yml -o c-running --memory 8M");
	other = td_submit("mid.yml -o c-other --random-seed 5 "
	    "--out-shard-size 8M --memory 16M");
	ok(r && other && td_wait_state(r, "running", 10000), "a job runs");
	truncate_file("ra/model.safetensors", "truncate -s 5000000");
	ok(watch(r) != 0, "truncated while running: the job fails");
	e = job_error(r);
	ok(strstr(e, "ra/model.safetensors") != NULL, "truncated while "
	    "running: the error names the file (%s)", e);
	free(e);
	ok(watch(other) == 0 && out_same("k-ref", "c-other"), "the other "
	    "running job is not disturbed");
	ok(!staging_in(".") || !td_staging_left("c-running"), "no staging "
	    "directory of the failed job is left");

	w = td_submit("w.yml -o c-rewritten --memory 8M");
	ok(w && td_wait_state(w, "running", 10000), "another job runs");
	/* Same size, new bytes: only the modification time shows it. */
	tl_runf(&o, "cd %s && dd if=/dev/urandom bs=4096 count=16 seek=64 "
	    "conv=notrunc of=wa/model.safetensors 2>&1", dir);
	free(o);
	ok(watch(w) != 0, "rewritten in place while running: the job fails "
	    "rather than publish a mixture");
	e = job_error(w);
	ok_str_has(e, "changed on disk", "rewritten in place: the error says "
	    "the input changed");
	free(e);
	ok(!td_staging_left("c-rewritten"), "and its staging directory is "
	    "removed");
	ok(serves("after-changes"), "the daemon goes on serving");
	td_stop(pid, SIGTERM);
}

/* merged refuses to start on a state directory it cannot use. */
static void
test_bad_state_dir(void)
{
	char *o = NULL, path[1024];
	int rc;

	if (geteuid() != 0) {
		ok(1, "# SKIP state directory checks: need root for nobody "
		    "and mount");
		return;
	}
	tl_runf(&o, "cd %s && mkdir -p ro-state nb-run && chown %d nb-run",
	    dir, NOBODY);
	free(o);
	rc = tl_runf(&o, "cd %s && timeout 20 setpriv --reuid=%d --regid=%d "
	    "--clear-groups %s --socket nb-run/s --state-dir ro-state 2>&1",
	    dir, NOBODY, NOBODY, tl_merged);
	ok(rc == 1, "a state directory merged may not write: it refuses to "
	    "start (exit %d)", rc);
	ok_str_has(o, "ro-state", "naming the directory");
	free(o);

	snprintf(path, sizeof path, "%s/full-state", dir);
	mkdir(path, 0755);
	if (mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k") !=
	    0) {
		ok(1, "# SKIP a full state directory: cannot mount a tmpfs");
		return;
	}
	tl_runf(&o, "dd if=/dev/zero of=%s/fill bs=4k count=100 2>&1", path);
	free(o);
	rc = tl_runf(&o, "cd %s && timeout 20 %s --socket nb-run/f "
	    "--state-dir full-state 2>&1", dir, tl_merged);
	ok(rc == 1, "a full state directory: merged refuses to start (exit "
	    "%d)", rc);
	ok_str_has(o, "full", "saying the disk is full");
	free(o);
	umount2(path, MNT_DETACH);
}

/*
 * A team daemon that is not root (nobody here, as the "merged" user of
 * the README) writes as itself: a submit to a directory only the client
 * may write is refused at once, saying what to do; one its group may
 * write works.
 */
static void
test_nonroot_daemon(void)
{
	char *o = NULL, path[1024];
	struct stat st;
	pid_t pid;
	int rc, i;

	if (geteuid() != 0) {
		ok(1, "# SKIP a daemon that is not root: needs root");
		return;
	}
	rc = tl_runf(&o, "cd %s && chmod 755 . && mkdir -p nr-run nr-state nr-root nr-team && "
	    "chown %d:%d nr-run nr-state && chmod 750 nr-run && "
	    "chgrp %d nr-team && chmod 2775 nr-team 2>&1", dir, NOBODY,
	    NOBODY, NOBODY);
	free(o);
	if ((pid = fork()) == 0) {
		if (chdir(dir) == 0)
			execl("/usr/bin/setpriv", "setpriv", "--reuid=65534",
			    "--regid=65534", "--clear-groups", tl_merged,
			    "--team", "--group", "nogroup", "--socket",
			    "nr-run/s", "--state-dir", "nr-state", (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 400 && tl_runf(NULL, "cd %s && MERGED_USER=nobody "
	    "%s daemon status --socket nr-run/s >/dev/null 2>&1", dir, tl_mergectl) != 0; i++)
		td_sleep_ms(25);
	rc = tl_runf(&o, "cd %s && MERGED_USER=nobody %s submit small.yml -o "
	    "nr-root/x --socket nr-run/s 2>&1", dir, tl_mergectl);
	ok(rc == 7, "a daemon running as nobody: a submit to a directory "
	    "only root may write is refused (exit %d)", rc);
	ok_str_has(o, "chmod g+ws", "saying how to let it write there");
	free(o);
	rc = tl_runf(&o, "cd %s && MERGED_USER=nobody %s submit small.yml -o "
	    "nr-team/y --socket nr-run/s --wait -q 2>&1", dir, tl_mergectl);
	snprintf(path, sizeof path, "%s/nr-team/y/model.safetensors", dir);
	ok(rc == 0 && stat(path, &st) == 0, "to a directory its group may "
	    "write, it merges (exit %d)", rc);
	free(o);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

/* Clients that vanish mid-line and mid-submit leave nothing behind. */
static void
test_vanishing_clients(void)
{
	static const char hello[] = "{\"v\":2,\"id\":1,\"op\":\"hello\"}\n";
	char *got, line[512];
	int fd, before, after, i;
	pid_t pid;

	/* The daemon may close a half-written connection before the
	 * second write: that is an EPIPE to note, not a death. */
	signal(SIGPIPE, SIG_IGN);
	pid = td_start("--memory 64M", NULL);
	td_sleep_ms(100);
	before = td_fd_count(pid);
	for (i = 0; i < 20; i++) {
		if ((fd = td_raw_connect()) < 0)
			continue;
		if (write(fd, hello, sizeof hello - 1) < 0)
			tap_diag("write: %s", strerror(errno));
		/* Half a request, then gone. */
		snprintf(line, sizeof line, "{\"v\":2,\"id\":2,\"op\":\"sub");
		if (write(fd, line, strlen(line)) < 0)
			tap_diag("write: %s", strerror(errno));
		close(fd);
	}
	for (i = 0; i < 20; i++) {
		/* A whole submit with no descriptors, gone before the reply. */
		if ((fd = td_raw_connect()) < 0)
			continue;
		snprintf(line, sizeof line, "%s{\"v\":2,\"id\":2,\"op\":"
		    "\"submit\",\"config\":\"merge_method: linear\","
		    "\"out\":\"x\"}\n", hello);
		if (write(fd, line, strlen(line)) < 0)
			tap_diag("write: %s", strerror(errno));
		close(fd);
	}
	td_sleep_ms(300);
	after = td_fd_count(pid);
	ok(before > 0 && after == before, "40 clients gone mid-line and "
	    "mid-submit: the daemon holds as many descriptors as before "
	    "(%d, %d)", before, after);
	fd = td_raw_connect();
	if (fd >= 0 && write(fd, hello, sizeof hello - 1) < 0)
		tap_diag("write: %s", strerror(errno));
	shutdown(fd, SHUT_WR);
	got = td_raw_read_all(fd, 5);
	ok_str_has(got, "\"ok\":true", "and answers the next client");
	free(got);
	close(fd);
	ok(serves("after-vanish"), "and merges");
	ok_int_eq(td_stop(pid, SIGTERM), 0, "and stops cleanly");
}

static void
setup(void)
{
	tl_gen_at(dir, "s1", "--family llama --seed 1");
	tl_gen_at(dir, "s2", "--family llama --seed 2 --finetune-of 1 "
	    "--delta 0.01");
	tl_gen_at(dir, "m1", "--family llama --hidden 512 --intermediate 1408 "
	    "--layers 8 --vocab 4096 --heads 8 --kv-heads 4 --seed 5");
	tl_gen_at(dir, "m2", "--family llama --hidden 512 --intermediate 1408 "
	    "--layers 8 --vocab 4096 --heads 8 --kv-heads 4 --seed 6 "
	    "--finetune-of 5 --delta 0.01");
	tl_write_at(dir, "small.yml", "merge_method: linear\nmodels:\n"
	    "  - model: ./s1\n    parameters: {weight: 0.5}\n"
	    "  - model: ./s2\n    parameters: {weight: 0.5}\n");
	tl_write_at(dir, "mid.yml", "merge_method: dare_ties\n"
	    "base_model: ./m1\nmodels:\n"
	    "  - model: ./m2\n    parameters: {weight: 0.7, density: 0.5}\n");
	tl_write_at(dir, "q.yml", "merge_method: slerp\nbase_model: ./qa\n"
	    "models:\n  - model: ./qa\n  - model: ./m2\nparameters: {t: 0.5}\n");
	tl_write_at(dir, "r.yml", "merge_method: slerp\nbase_model: ./ra\n"
	    "models:\n  - model: ./ra\n  - model: ./m2\nparameters: {t: 0.5}\n");
	ok_int_eq(tl_runf(NULL, "cd %s && %s run mid.yml k-ref --quiet "
	    "--random-seed 5 --out-shard-size 8M 2>&1", dir, tl_mergectl), 0,
	    "the reference merge, uninterrupted");
	tl_write_at(dir, "w.yml", "merge_method: slerp\nbase_model: ./wa\n"
	    "models:\n  - model: ./wa\n  - model: ./m2\nparameters: {t: 0.5}\n");
	tl_write_at(dir, "pipe3.yml", "name: a\nmerge_method: linear\n"
	    "models:\n  - model: ./m1\n    parameters: {weight: 0.5}\n"
	    "  - model: ./m2\n    parameters: {weight: 0.5}\n---\n"
	    "name: b\nmerge_method: dare_ties\nbase_model: ./m1\nmodels:\n"
	    "  - model: ./m2\n    parameters: {weight: 0.7, density: 0.5}\n"
	    "---\nmerge_method: slerp\nbase_model: a\nmodels:\n"
	    "  - model: a\n  - model: b\nparameters: {t: 0.5}\n");
	ok_int_eq(tl_runf(NULL, "cd %s && %s run pipe3.yml ps-ref --quiet "
	    "--random-seed 5 --out-shard-size 8M 2>&1", dir, tl_mergectl), 0,
	    "the reference pipeline, uninterrupted");
}

int
main(int argc, char **argv)
{
	tl_init(argc, argv);
	if (argc < 7) {
		fprintf(stderr, "usage: test-faults GENMODEL MERGECTL MERGED "
		    "GOLDEN EXAMPLES FAULTSHIM\n");
		return 99;
	}
	shim = argv[6];
	tap_plan_lazy();
	dir = tl_tmpdir("faults");
	td_init(dir);
	setup();
	test_enospc();
	test_tmpfs_full();
	test_inputs_change();
	test_kills();
	/* Before the pipelines: it turns the kills' store of merges into
	 * older versions, whose jobs were all merges. */
	test_store_versions();
	test_group_rollback();
	test_stage_kills();
	test_bad_state_dir();
	test_nonroot_daemon();
	test_vanishing_clients();
	return tap_done();
}
