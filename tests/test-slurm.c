/* SPDX-License-Identifier: MIT */
/*
 * test-slurm.c: merged --backend slurm on a real one-node Slurm cluster
 * (munged, slurmctld, slurmd), which contrib/slurm-testcluster.sh starts
 * around this program and tears down afterwards (tests/meson.build runs
 * it as "slurm-testcluster.sh run -- test-slurm ...", which sets
 * SLURM_CONF).  Needs root (slurmd starts jobs as their users) and the
 * accounts of contrib/deps.sh --test; under CI=true a missing piece is a
 * failure, never a skip.
 *
 * Every output is compared byte for byte with mergectl run's: the batch
 * jobs run the same engine.  Checked: jobs chained with --after become
 * Slurm jobs with afterok and all finish; cancel reaches Slurm and
 * removes the shards; a job whose inputs vanish before it runs fails
 * with Slurm's account of it; a job the daemon stops in the middle is
 * resumed on the cluster from the shards it wrote (the same files, not
 * rewritten), and so does one Slurm requeues; one Slurm requeues after
 * it completed is done, by its output; a team daemon as root
 * submits as the user who asked (sbatch --uid), whose job runs and
 * writes as that user; a team daemon not run as root refuses the
 * backend, saying why.
 */
#include <sys/stat.h>
#include <sys/wait.h>

#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"
#include "testd.h"
#include "testlib.h"

static const char *dir;
static pid_t pid;
static double t0;
static char first_shard[256];	/* of refbig, the big merge */

static const char cfg[] =
    "merge_method: dare_ties\n"
    "base_model: ./xa\n"
    "models:\n"
    "  - model: ./xa\n"
    "  - model: ./xb\n"
    "    parameters: {weight: 0.5, density: 0.5}\n";

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Under CI=true a missing piece fails; elsewhere the test skips. */
static bool
need(bool have, const char *what)
{
	const char *ci = getenv("CI");

	if (have)
		return true;
	if (ci != NULL && strcmp(ci, "true") == 0)
		ok(0, "needs %s (contrib/deps.sh --test)", what);
	else
		ok(1, "# SKIP needs %s (contrib/deps.sh --test)", what);
	return false;
}

static bool
outputs_equal(const char *a, const char *b)
{
	return tl_outputs_equal(dir, a, b);
}

/* What squeue says of the batch job behind a job's reason or log. */
static char *
slurm_field(unsigned long long sid, const char *field)
{
	char *o = NULL;

	tl_runf(&o, "squeue --json | python3 -c 'import json,sys; "
	    "print(next((str(j[\"%s\"]) for j in json.load(sys.stdin)"
	    "[\"jobs\"] if j[\"job_id\"] == %llu), \"\"), end=\"\")'", field,
	    sid);
	return o;
}

/*
 * On a failure, what the daemon and Slurm say of job id (Slurm job sid),
 * in lines short enough to survive CI's cut of long ones.
 */
static void
slurm_diag(int id, unsigned long long sid)
{
	char *o = NULL;

	td_ctl(&o, "logs %d", id);
	tap_diag("the daemon's log of job %d:\n%s", id, o);
	free(o);
	o = NULL;
	tl_runf(&o, "scontrol show job %llu 2>&1 | tr -s ' ' '\\n' | grep "
	    "-E '^(JobState|Reason|Restarts|BeginTime|StartTime|EndTime|"
	    "Requeue|ExitCode)='; grep -F 'JobId=%llu' "
	    "\"$SLURM_TESTCLUSTER/slurmctld.log\" | tail -n 25 | cut -c1-160",
	    sid, sid);
	tap_diag("Slurm's account of job %llu:\n%s", sid, o);
	free(o);
}

/* The Slurm job id the daemon logged for job id. */
static unsigned long long
slurm_id(int id)
{
	char *o = NULL, *p;
	unsigned long long sid = 0;

	td_ctl(&o, "logs %d", id);
	if (o != NULL && (p = strstr(o, "submitted to Slurm as job ")) != NULL)
		sid = strtoull(p + strlen("submitted to Slurm as job "), NULL,
		    10);
	free(o);
	return sid;
}

/* The same, once the daemon has handed the job to Slurm: up to 10 s. */
static unsigned long long
slurm_id_wait(int id)
{
	unsigned long long sid = 0;
	int i;

	for (i = 0; i < 200 && id > 0 && (sid = slurm_id(id)) == 0; i++)
		td_sleep_ms(50);
	return sid;
}

/* squeue's job_state of Slurm job sid once it contains want, waiting up
 * to ms; what it last was otherwise. */
static char *
slurm_wait_state(unsigned long long sid, const char *want, int ms)
{
	char *st = NULL;
	int i;

	for (i = 0; i <= ms / 50; i++) {
		free(st);
		st = slurm_field(sid, "job_state");
		if (st != NULL && strstr(st, want) != NULL)
			break;
		td_sleep_ms(50);
	}
	return st;
}

static void
restart(const char *opts)
{
	const char *engine = getenv("TEST_SLURM_ENGINE");
	char extra[4096];

	if (pid > 0)
		ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly");
	/* TSan checks the daemon: contrib/test.sh gives its batch jobs the
	 * normal build's engine, whose threads test-merge, test-exec and
	 * test-resume check under TSan. */
	snprintf(extra, sizeof extra, "--backend slurm --memory 256M %s%s %s",
	    engine != NULL ? "--slurm-engine " : "", engine != NULL ? engine :
	    "", opts);
	pid = td_start(extra, NULL);
}

/* Three jobs, each after the one before: afterok orders them. */
static void
test_chain(void)
{
	int a, b, c;
	char *o = NULL, *reason;
	unsigned long long sc;

	a = td_submit("c.yml -o s1 --random-seed 7 --out-shard-size 4M");
	b = td_submit("c.yml -o s2 --random-seed 7 --out-shard-size 4M "
	    "--after %d", a);
	c = td_submit("c.yml -o s3 --random-seed 7 --out-shard-size 4M "
	    "--after %d", b);
	ok(a && b && c, "three jobs submitted, each after the one before");
	/* Handed to Slurm at once, the later ones held by afterok. */
	sc = slurm_id_wait(c);
	o = slurm_field(sc, "dependency");
	ok(sc != 0 && strstr(o, "afterok:") != NULL, "the third is Slurm job "
	    "%llu at once, with a dependency: %s", sc, o);
	free(o);
	reason = td_job_field(c, "reason");
	ok(strncmp(reason, "slurm: Slurm job ", 17) == 0, "status says "
	    "which Slurm job it is and how it waits: %s", reason);
	free(reason);
	ok(td_wait_state(c, "done", 120000) && td_wait_state(a, "done", 1000)
	    && td_wait_state(b, "done", 1000), "all three are done");
	ok(outputs_equal("ref", "s1") && outputs_equal("ref", "s2") &&
	    outputs_equal("ref", "s3"), "each byte for byte mergectl run's "
	    "output");
	ok(!td_staging_left("s3") && tl_runf(NULL, "test -e %s/.s3.partial",
	    dir) != 0, "no staging directory left");
	td_ctl(&o, "watch %d", c);
	ok(strstr(o, "100% (75/75 tensors, 19/19 shards") != NULL,
	    "watch ends with the whole job: %s", o);
	free(o);
}

/* cancel: scancel, the shards removed; its dependent fails, said. */
static void
test_cancel(void)
{
	int a, b, rc;
	char *o = NULL, *state, *err;
	unsigned long long sa = 0;

	/* Held by an afterok on a job that waits for a hold. */
	a = td_submit("c.yml -o k1 --random-seed 7 --out-shard-size 4M");
	sa = slurm_id_wait(a);
	tl_runf(NULL, "scontrol hold %llu", sa);
	b = td_submit("c.yml -o k2 --after %d", a);
	rc = td_ctl(&o, "cancel %d", a);
	free(o);
	state = slurm_wait_state(sa, "CANCELLED", 10000);
	ok(rc == 0 && td_wait_state(a, "cancelled", 5000) && strcmp(state,
	    "CANCELLED") == 0, "cancel cancels Slurm job %llu too (%s)", sa,
	    state);
	free(state);
	ok(td_wait_state(b, "failed", 20000), "the job after it fails");
	err = td_job_field(b, "error");
	ok(strstr(err, "which it runs after, was cancelled") != NULL,
	    "saying why: %s", err);
	free(err);
	/* Once Slurm has ended it (and a few seconds for its processes):
	 * a job that had just started may have made its staging. */
	for (int i = 0; i < 200 && tl_runf(NULL, "test -e %s/.k1.partial",
	    dir) == 0; i++)
		td_sleep_ms(50);
	ok(tl_runf(NULL, "test -e %s/.k1.partial || test -e %s/k1", dir,
	    dir) != 0, "nothing of it is left");
}

/* Inputs gone before the node plans: Slurm's FAILED, the exit code. */
static void
test_failed(void)
{
	int a, b;
	char *err = NULL, path[4096];
	unsigned long long sa = 0, sb = 0;

	tl_runf(NULL, "cd %s && cp -r xb xc && sed 's/xb/xc/' c.yml > "
	    "gone.yml", dir);
	a = td_submit("c.yml -o f1 --random-seed 7 --out-shard-size 4M");
	sa = slurm_id_wait(a);
	tl_runf(NULL, "scontrol hold %llu", sa);
	b = td_submit("gone.yml -o f2 --after %d", a);
	/* Handed to Slurm first: the daemon checks its inputs then. */
	sb = slurm_id_wait(b);
	/* The config goes to the node on standard input; its messages name
	 * it as submitted. */
	tl_runf(&err, "scontrol write batch_script %llu - | grep -o -- "
	    "\"--config-name '[^']*gone.yml'\"", sb);
	ok(err != NULL && strstr(err, "gone.yml") != NULL, "its batch script "
	    "names the config as submitted: %s", err ? err : "");
	free(err);
	tl_runf(NULL, "rm -rf %s/xc && scontrol release %llu", dir, sa);
	ok(td_wait_state(b, "failed", 120000), "a job whose input vanished "
	    "before it ran fails");
	err = td_job_field(b, "error");
	ok(strstr(err, ": FAILED (exit code 3): ") != NULL && strstr(err,
	    "xc") != NULL, "with Slurm's state, the engine's exit code (3: "
	    "its plan was refused) and what it said on the node: %s", err);
	free(err);
	err = NULL;
	td_ctl(&err, "logs %d", b);
	ok(err != NULL && strstr(err, "on the node: ") != NULL, "its log "
	    "has the engine's last lines: %s", err);
	free(err);
	snprintf(path, sizeof path, "%s/.f2.slurm.log", dir);
	ok(!tl_exists(path), "the file they were in is gone");
	ok(td_wait_state(a, "done", 60000), "the job before it is done");
}

/*
 * Waits until out's record says a shard is written; 0 with the first
 * shard's identity in *st, or -1.  The record is read here, not by a
 * command: on a fast node the rest of the merge takes a second or two.
 */
static int
first_shard_written(const char *out, struct stat *st)
{
	char path[4096], *rec;
	bool have;
	int i;

	snprintf(path, sizeof path, "%s/.%s.partial/.merged-progress.json",
	    dir, out);
	for (i = 0; i < 12000; i++) {
		rec = tl_read(path, NULL);
		have = rec != NULL && strstr(rec, "\"shards\":\"1") != NULL;
		free(rec);
		if (have) {
			snprintf(path, sizeof path, "%s/.%s.partial/%s", dir,
			    out, first_shard);
			return stat(path, st);
		}
		td_sleep_ms(10);
	}
	return -1;
}

/* Sends sig to the engine the batch job for output out runs; pkill's
 * exit: 0 when there was one. */
static int
engine_signal(const char *out, const char *sig)
{
	return tl_runf(NULL, "pkill -%s -f -- '--resume --quiet .*/%s$'", sig,
	    out);
}

/*
 * Submits the big merge to out and stops its engine on the node
 * (SIGSTOP) after the first shard, before it ends: the job id, the
 * shard's identity in *st.  On a fast node the engine may end first;
 * then the job is let finish and tried again: that is no fault of the
 * daemon's, and what the callers test needs a job cut off midway.
 */
static int
submit_stopped(const char *out, struct stat *st)
{
	char path[4096];
	struct stat pub;
	int a = 0, try, rc;

	snprintf(path, sizeof path, "%s/%s", dir, out);
	for (try = 0; try < 3; try++) {
		tl_runf(NULL, "rm -rf %s", path);
		a = td_submit("big.yml -o %s --random-seed 7 --out-shard-size "
		    "4M --memory 64M", out);
		if (first_shard_written(out, st) != 0)
			return 0;
		rc = engine_signal(out, "STOP");
		if (rc == 0 && stat(path, &pub) != 0)
			return a;
		engine_signal(out, "CONT");
		tap_diag("job %d's engine ended before it could be stopped "
		    "(pkill %d); once more", a, rc);
		td_wait_state(a, "done", 120000);
	}
	return 0;
}

/* out's first shard is the file *before was: not written again. */
static bool
first_shard_kept(const char *out, const struct stat *before)
{
	struct stat after;
	char path[4096];

	snprintf(path, sizeof path, "%s/%s/%s", dir, out, first_shard);
	return stat(path, &after) == 0 && after.st_ino == before->st_ino &&
	    after.st_mtime == before->st_mtime;
}

/*
 * The daemon restarts while one job runs on Slurm and another waits for
 * it there: the batch jobs go on, and the daemon, started again,
 * reattaches to both from its store and sees them to their end.
 */
/* A batch job's state while it waits, runs or has succeeded. */
static bool
going_on(const char *state)
{
	static const char *const ok_states[] = { "PENDING", "RUNNING",
	    "COMPLETING", "COMPLETED", NULL };
	size_t i;

	for (i = 0; ok_states[i] != NULL; i++)
		if (strcmp(state, ok_states[i]) == 0)
			return true;
	return false;
}

static void
test_restart(void)
{
	struct stat before;
	char *o = NULL, *st1, *st2, *reason;
	unsigned long long s1, s2;
	int a, b, i, have;

	a = td_submit("big.yml -o r1 --random-seed 7 --out-shard-size 4M "
	    "--memory 64M");
	b = td_submit("c.yml -o r2 --random-seed 7 --out-shard-size 4M "
	    "--after %d", a);
	have = first_shard_written("r1", &before);
	s1 = slurm_id(a);
	s2 = slurm_id(b);
	td_ctl(&o, "status");
	tap_diag("status, one job running on Slurm, one waiting there:\n%s",
	    o);
	free(o);
	ok(have == 0 && s1 != 0 && s2 != 0, "a job runs on Slurm (job %llu), "
	    "another waits for it there (job %llu)", s1, s2);
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly");
	pid = 0;
	/* Neither cancelled: the first may have ended meanwhile, and the
	 * second started (a busy machine). */
	st1 = slurm_field(s1, "job_state");
	st2 = slurm_field(s2, "job_state");
	ok(going_on(st1) && going_on(st2), "its batch jobs go on without "
	    "it (%s, %s)", st1, st2);
	free(st1);
	free(st2);
	restart("");
	/* The first poll of squeue comes within a second. */
	for (i = 0; i < 100; i++) {
		reason = td_job_field(b, "reason");
		if (strstr(reason, "PENDING") != NULL || strstr(reason,
		    "RUNNING") != NULL || td_wait_state(b, "done", 1))
			break;
		free(reason);
		reason = NULL;
		td_sleep_ms(100);
	}
	ok(reason != NULL, "started again, it knows the waiting one: %s",
	    reason ? reason : "no");
	free(reason);
	ok(td_wait_state(a, "done", 300000) && td_wait_state(b, "done",
	    60000), "and sees both to their end");
	ok(outputs_equal("refbig", "r1") && outputs_equal("ref", "r2"),
	    "byte for byte mergectl run's outputs");
	/* The one that waited was live when the daemon stopped; the first
	 * may have been done by then (a fast machine). */
	td_ctl(&o, "logs %d", b);
	ok(strstr(o, "reattached to Slurm job") != NULL, "the waiting one's "
	    "log says it reattached:\n%s", o);
	free(o);
}

/*
 * Requeued by Slurm, as after a node failure: queued again with Slurm's
 * reason, then run again, going on from the shards written.
 */
static void
test_requeue(void)
{
	struct stat before;
	char *reason = NULL;
	unsigned long long sa = 0;
	int a, i, rc;
	bool queued = false;

	/* Slurm wakes the stopped engine to end it (SIGCONT, SIGTERM). */
	a = submit_stopped("q1", &before);
	sa = slurm_id(a);
	rc = tl_runf(NULL, "scontrol requeue %llu", sa);
	for (i = 0; i < 100 && !queued; i++) {
		free(reason);
		reason = td_job_field(a, "reason");
		queued = strstr(reason, "PENDING") != NULL;
		if (!queued)
			td_sleep_ms(100);
	}
	ok(a > 0 && rc == 0 && queued, "requeued by Slurm after its "
	    "first shard, it is queued again: %s", reason);
	free(reason);
	td_ctl(&reason, "status %d", a);
	ok(strstr(reason, "Slurm job ") != NULL && strstr(reason,
	    "position") == NULL, "status tells how it waits in Slurm, and no "
	    "place in merged's queue, which it is not in:\n%s", reason);
	free(reason);
	/*
	 * Slurm holds a requeued job for AuthInfo cred_expire seconds
	 * (ten on the test cluster, two minutes by default) before it
	 * may start again.
	 */
	if (!ok(td_wait_state(a, "done", 300000), "then it runs again and "
	    "is done"))
		slurm_diag(a, sa);
	td_ctl(&reason, "logs %d", a);
	ok(strstr(reason, "Slurm requeued job ") != NULL, "its log tells "
	    "the requeue:\n%s", reason);
	free(reason);
	ok(a > 0 && first_shard_kept("q1", &before), "from the shards "
	    "written before");
	ok(outputs_equal("refbig", "q1"), "byte for byte mergectl run's "
	    "output");
}

/*
 * Requeued after it had completed, while the daemon was stopped (Slurm
 * requeues a COMPLETED batch job too): the run again finds the output
 * its first run published and refuses it (exit 4), and Slurm lists the
 * job FAILED.  The daemon, started again, judges the job by its output,
 * as it judges a completed one: done, not failed.
 */
static void
test_requeue_done(void)
{
	unsigned long long sid;
	char *st, *ec, *o = NULL;
	int a, rc;

	a = td_submit("c.yml -o rq --random-seed 7 --out-shard-size 4M");
	sid = slurm_id_wait(a);
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly");
	pid = 0;
	st = slurm_wait_state(sid, "COMPLETED", 120000);
	rc = tl_runf(NULL, "scontrol requeue %llu", sid);
	ok(a > 0 && sid != 0 && strstr(st, "COMPLETED") != NULL && rc == 0,
	    "a job completes on Slurm (job %llu, %s) while the daemon is "
	    "stopped, and is requeued (exit %d)", sid, st, rc);
	free(st);
	/* Held for cred_expire (ten seconds here), then run again. */
	st = slurm_wait_state(sid, "FAILED", 120000);
	ec = slurm_field(sid, "exit_code");
	ok(strstr(st, "FAILED") != NULL, "it runs again and fails, finding "
	    "its output there: %s, exit code %s", st, ec);
	free(st);
	free(ec);
	restart("");
	if (!ok(td_wait_state(a, "done", 60000), "the daemon, started "
	    "again, judges it by its output: done"))
		slurm_diag(a, sid);
	ok(outputs_equal("ref", "rq"), "byte for byte mergectl run's "
	    "output");
	td_ctl(&o, "logs %d", a);
	ok(strstr(o, "found its output already there (exit code 4)") != NULL,
	    "its log says why:\n%s", o);
	free(o);
}

/* Two snapshots of one model in a Hugging Face cache. */
#define HF_REV1 "1111111111111111111111111111111111111111"
#define HF_REV2 "2222222222222222222222222222222222222222"

/*
 * A model from a Hugging Face cache that only the submitter's
 * environment names (HF_HUB_CACHE): the batch job plans from the
 * snapshot the client resolved, not from the node's environment, and
 * not from where the branch points by the time the job runs.
 */
static void
test_hf_cache(void)
{
	char *o = NULL, hub[4096];
	unsigned long long sa = 0;
	int a, h, rc;

	rc = tl_runf(&o, "cd %s && r=hub/models--org--tiny && mkdir -p "
	    "$r/refs $r/snapshots && cp -r xb $r/snapshots/%s && cp -r xa "
	    "$r/snapshots/%s && echo %s > $r/refs/main && sed "
	    "'s|\\./xb|org/tiny|' c.yml > hf.yml && HF_HUB_CACHE=%s/hub %s "
	    "run hf.yml refhf --random-seed 7 --out-shard-size 4M -q 2>&1",
	    dir, HF_REV1, HF_REV2, HF_REV1, dir, tl_mergectl);
	ok(rc == 0, "a reference from the cache (exit %d): %s", rc, o);
	free(o);
	a = td_submit("c.yml -o hf0 --random-seed 7 --out-shard-size 4M");
	sa = slurm_id_wait(a);
	tl_runf(NULL, "scontrol hold %llu", sa);
	snprintf(hub, sizeof hub, "%s/hub", dir);
	setenv("HF_HUB_CACHE", hub, 1);
	h = td_submit("hf.yml -o h1 --random-seed 7 --out-shard-size 4M "
	    "--after %d", a);
	unsetenv("HF_HUB_CACHE");
	/* The branch moves on before the job runs. */
	tl_runf(NULL, "echo %s > %s/models--org--tiny/refs/main && scontrol "
	    "release %llu", HF_REV2, hub, sa);
	ok(h > 0 && td_wait_state(h, "done", 120000), "a job of a model in "
	    "the submitter's cache, which the daemon's environment does not "
	    "name, is done on the node");
	ok(outputs_equal("refhf", "h1"), "from the snapshot resolved at "
	    "submit, byte for byte mergectl run's output then");
	ok(td_wait_state(a, "done", 60000), "the job before it is done");
}

/* The record a stage's output holds (graph.h GRAPH_STAGE_MANIFEST). */
#define STAGE_RECORD "mergectl_stage.json"

/* A three-stage pipeline: each stage a Slurm job, planned when due. */
static void
test_group(void)
{
	char *o = NULL;
	int g, rc;

	rc = td_ctl(&o, "submit pipe.yml -o p1 --random-seed 7 -q");
	g = rc == 0 ? atoi(o) : 0;
	ok(g > 0, "a pipeline of three stages is submitted (exit %d): %s", rc,
	    o);
	free(o);
	ok(g > 0 && td_wait_state(g, "done", 180000), "it is done");
	rc = td_ctl(&o, "logs %d", g + 1);
	ok(rc == 0 && strstr(o, "submitted to Slurm as job") != NULL, "its "
	    "stages ran as Slurm jobs: %s", o);
	free(o);
	/*
	 * Every file: the weights, the model card telling the pipeline,
	 * each stage's record of what it ran.  The card and records name
	 * the stages by path: the reference is run again where the job
	 * wrote, its output moved aside first.  A record holds the times
	 * its inputs were written, which for the stages differ.
	 */
	rc = tl_runf(&o, "cd %s && mv p1 ps && mv p1.stages ps.stages && "
	    "%s run pipe.yml %s/p1 --random-seed 7 -q 2>&1 && diff -r ps p1 "
	    "-x %s 2>&1 && diff -r ps.stages p1.stages 2>&1 && for r in "
	    "ps/%s p1/%s; do sed 's/\"mtime_ns\": [0-9]*//' $r > $r.x; done "
	    "&& diff ps/%s.x p1/%s.x 2>&1", dir, tl_mergectl, dir,
	    STAGE_RECORD, STAGE_RECORD, STAGE_RECORD, STAGE_RECORD,
	    STAGE_RECORD);
	ok(rc == 0, "its output and its stages' are byte for byte mergectl "
	    "run's, model card and records too: %s", o);
	free(o);
}

/*
 * The engine killed on the node (as a node failure kills it): the job
 * fails with Slurm's account; resume goes on from its shards.
 */
static void
test_killed(void)
{
	struct stat before;
	char *o = NULL, *err;
	int a, rc;

	a = submit_stopped("n1", &before);
	rc = engine_signal("n1", "KILL");
	ok(a > 0 && rc == 0, "the engine is killed on the node after its "
	    "first shard");
	ok(td_wait_state(a, "failed", 60000), "the job fails");
	err = td_job_field(a, "error");
	ok(strstr(err, ": FAILED (signal 9)") != NULL, "with Slurm's account "
	    "of it: %s", err);
	free(err);
	rc = td_ctl(&o, "resume %d", a);
	ok(rc == 0, "resume (exit %d): %s", rc, o);
	free(o);
	ok(td_wait_state(a, "done", 300000), "it is done");
	ok(a > 0 && first_shard_kept("n1", &before), "from the shards "
	    "written before, not written again");
	ok(outputs_equal("refbig", "n1"), "byte for byte mergectl run's "
	    "output");
}

/*
 * A path that names one directory to mergectl and another to the daemon
 * (and so to the nodes): mergectl in a mount namespace of its own, with
 * another model mounted over ./xa.  Refused at submit, exit 3.
 */
static void
test_paths(void)
{
	char *o = NULL;
	int rc;

	if (!need(tl_runf(NULL, "unshare -m true") == 0, "unshare -m (a "
	    "mount namespace, as root)"))
		return;
	rc = tl_runf(&o, "cd %s && unshare -m sh -c 'mount --bind xb xa && "
	    "MERGED_SOCKET=%s %s submit c.yml -o pp' 2>&1", dir, td_sock,
	    tl_mergectl);
	ok(rc == 3 && strstr(o, "/xa is not, as the daemon sees it, the "
	    "directory mergectl found; the cluster's nodes must see the same "
	    "paths") != NULL, "a model the daemon sees elsewhere by its path "
	    "is refused at submit (exit %d): %s", rc, o);
	free(o);
}

/* A team daemon as root: each job is its user's Slurm job. */
static void
test_second_user(void)
{
	struct passwd *pw = getpwnam("merged-alice");
	struct stat st;
	char *o = NULL, *user, path[4096];
	unsigned long long sa = 0;
	int rc, a = 0;

	if (!need(pw != NULL && getgrnam("merged") != NULL, "the accounts "
	    "merged-alice and merged-bob"))
		return;
	tl_runf(NULL, "cd %s && chmod 755 . && mkdir -p alice-out && chown "
	    "merged-alice alice-out", dir);
	/* A team daemon's socket directory is its group's, not root's. */
	if (pid > 0)
		ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly");
	pid = 0;
	snprintf(td_sock, sizeof td_sock, "%s/team/merged.sock", dir);
	restart("--group merged");
	rc = td_as("merged-alice", &o, "%s submit c.yml -o alice-out/m "
	    "--random-seed 7 --out-shard-size 4M -q", tl_mergectl);
	if (rc == 0)
		a = atoi(o);
	else
		tap_diag("alice's submit (exit %d): %s", rc, o);
	free(o);
	sa = slurm_id_wait(a);
	user = slurm_field(sa, "user_name");
	ok(a > 0 && strcmp(user, "merged-alice") == 0, "alice's job is her "
	    "own Slurm job (%s)", user);
	free(user);
	ok(a > 0 && td_wait_state(a, "done", 120000), "it is done");
	snprintf(path, sizeof path, "%s/alice-out/m/config.json", dir);
	ok(stat(path, &st) == 0 && st.st_uid == pw->pw_uid, "its files are "
	    "alice's, written by her job");
	ok(outputs_equal("ref", "alice-out/m"), "byte for byte mergectl "
	    "run's output");
	/* Not root: it cannot submit as anyone but itself. */
	rc = tl_runf(&o, "cd %s && setpriv --reuid=merged-bob "
	    "--regid=merged-bob --init-groups %s --team --socket %s/bob.sock "
	    "--state-dir %s/bob-state --backend slurm 2>&1", dir, tl_merged,
	    dir, dir);
	ok(rc != 0 && strstr(o, "--backend slurm: a team daemon submits each "
	    "job as the user who asked for it (sbatch --uid/--gid), which only "
	    "root can"), "a team daemon not run as root refuses the backend "
	    "(exit %d): %s", rc, o);
	free(o);
}

int
main(int argc, char **argv)
{
	char *o = NULL;
	int rc;

	t0 = now();
	tl_init(argc, argv);
	tap_plan_lazy();
	if (!need(geteuid() == 0 && getenv("SLURM_CONF") != NULL, "root and "
	    "the cluster of contrib/slurm-testcluster.sh (SLURM_CONF)"))
		return tap_done();
	dir = tl_tmpdir("slurm");
	td_init(dir);
	tl_gen_at(dir, "xa", "--family llama --hidden 512 --intermediate "
	    "1408 --layers 8 --vocab 8192 --heads 8 --kv-heads 4 --seed 5");
	tl_gen_at(dir, "xb", "--family llama --hidden 512 --intermediate "
	    "1408 --layers 8 --vocab 8192 --heads 8 --kv-heads 4 --seed 6 "
	    "--finetune-of 5 --delta 0.01");
	/* Big enough for a test to act between its first shard and its
	 * last (34 shards of 4 MB), small enough for TSan. */
	tl_gen_at(dir, "ya", "--family llama --hidden 768 --intermediate "
	    "2048 --layers 8 --vocab 8192 --heads 8 --kv-heads 4 --seed 5");
	tl_gen_at(dir, "yb", "--family llama --hidden 768 --intermediate "
	    "2048 --layers 8 --vocab 8192 --heads 8 --kv-heads 4 --seed 6 "
	    "--finetune-of 5 --delta 0.01");
	tl_write_at(dir, "c.yml", cfg);
	tl_write_at(dir, "pipe.yml", "merge_method: slerp\nbase_model: ab\n"
	    "models:\n  - model: ab\n  - model: cd\nparameters:\n  t: 0.3\n"
	    "---\nname: ab\nmerge_method: linear\nmodels:\n  - model: ./xa\n"
	    "    parameters: {weight: 0.5}\n  - model: ./xb\n    parameters: "
	    "{weight: 0.5}\n---\nname: cd\nmerge_method: ties\nbase_model: "
	    "./xa\nmodels:\n  - model: ./xb\n    parameters: {weight: 1.0, "
	    "density: 0.5}\n");
	tl_write_at(dir, "big.yml", "merge_method: slerp\nbase_model: ./ya\n"
	    "models:\n  - model: ./ya\n  - model: ./yb\nparameters:\n"
	    "  t: 0.3\n");
	rc = tl_runf(&o, "cd %s && %s run c.yml ref --random-seed 7 "
	    "--out-shard-size 4M -q 2>&1 && %s run big.yml refbig "
	    "--random-seed 7 --out-shard-size 4M -q 2>&1 && %s run pipe.yml "
	    "refpipe --random-seed 7 -q 2>&1", dir, tl_mergectl, tl_mergectl,
	    tl_mergectl);
	ok(rc == 0, "references: mergectl run (exit %d) %s", rc, o);
	free(o);
	tl_runf(&o, "cd %s/refbig && ls model-00001-of-*.safetensors", dir);
	snprintf(first_shard, sizeof first_shard, "%.*s", o ? (int)strcspn(o,
	    "\n") : 0, o ? o : "");
	free(o);
	restart("");
	ok(pid > 0, "merged --backend slurm starts");
	test_chain();
	test_cancel();
	test_failed();
	test_hf_cache();
	test_restart();
	test_killed();
	test_requeue();
	test_requeue_done();
	test_group();
	test_paths();
	test_second_user();
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly");
	rc = tl_runf(&o, "find %s -name '.*.slurm.log'", dir);
	ok(rc == 0 && o != NULL && o[0] == '\0', "every job ended: no "
	    "batch job's output file is left: %s", o);
	free(o);
	tap_diag("test-slurm: %.1f s", now() - t0);
	tl_cleanup();
	return tap_done();
}
