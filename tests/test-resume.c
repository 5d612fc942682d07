/* SPDX-License-Identifier: MIT */
/*
 * test-resume.c: mergectl run --resume, and the record it keeps
 * (graph/record.c, graph/exec-record.c): what a Slurm job requeued after
 * a node failure runs (docs/cluster.md).
 *
 * A run killed with SIGKILL after some shards leaves them and its record
 * in .OUT.partial; the same command goes on from there and the result is
 * byte for byte the uninterrupted run's.  A stopped run says why in the
 * record; another plan, or a directory without a record, starts over and
 * says so; the record is read as a hostile user's file (no links, no
 * FIFOs, a size cap, its owner); the config may come on standard input.
 */
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "graph.h"
#include "tap.h"
#include "testlib.h"

static const char *dir;

static const char cfg[] =
    "merge_method: dare_ties\n"
    "base_model: ./xa\n"
    "models:\n"
    "  - model: ./xa\n"
    "  - model: ./xb\n"
    "    parameters: {weight: 0.5, density: 0.5}\n";

static void
sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* mergectl run ARGS in dir, in the background; its pid. */
static pid_t
spawn_run(const char *args)
{
	char cmd[8192];
	pid_t pid;

	snprintf(cmd, sizeof cmd, "exec %s run %s >/dev/null 2>&1",
	    tl_mergectl, args);
	if ((pid = fork()) == 0) {
		if (chdir(dir) != 0)
			_exit(99);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(99);
	}
	return pid;
}

/* The record of dir/.NAME.partial, or rc < 0. */
static int
read_record(const char *name, struct graph_record *r, char **cause)
{
	char staging[256];
	int dfd = open(dir, O_RDONLY | O_DIRECTORY), rc;

	snprintf(staging, sizeof staging, ".%s.partial", name);
	rc = graph_record_read(dfd, staging, (int64_t)geteuid(), r, cause);
	close(dfd);
	return rc;
}

static bool
outputs_equal(const char *a, const char *b)
{
	return tl_outputs_equal(dir, a, b);
}

/*
 * Killed like a node that dies: SIGKILL once the record says a shard
 * is written (and before the last), then the same command again.
 */
static void
test_killed(void)
{
	struct graph_record r;
	char *cause = NULL, *o = NULL;
	int i, rc, status, seen = -1;
	pid_t pid;
	size_t nshards = 0;

	pid = spawn_run("c.yml out --resume --random-seed 7 "
	    "--out-shard-size 4M -j 1");
	for (i = 0; i < 20000 && seen < 0; i++) {
		if (read_record("out", &r, &cause) == 0) {
			if (r.shards_done > 0 && r.shards_done <
			    strlen(r.shards)) {
				kill(pid, SIGKILL);
				seen = (int)r.shards_done;
				nshards = strlen(r.shards);
			}
			graph_record_fini(&r);
		}
		free(cause);
		cause = NULL;
		if (seen < 0)
			sleep_ms(1);
	}
	if (seen < 0)
		kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	ok(seen > 0 && WIFSIGNALED(status), "a run killed after %d of %zu "
	    "shards", seen, nshards);
	rc = read_record("out", &r, &cause);
	ok(rc == 0 && r.shards_done >= (size_t)seen && r.error == NULL &&
	    r.bytes_done < r.bytes_total && tl_runf(NULL, "test -e %s/out",
	    dir) != 0, "leaves its shards and its record in .out.partial, no "
	    "output (%s)", rc == 0 ? r.shards : cause);
	graph_record_fini(&r);
	free(cause);
	rc = tl_runf(&o, "cd %s && %s run c.yml out --resume --random-seed 7 "
	    "--out-shard-size 4M 2>&1", dir, tl_mergectl);
	ok(rc == 0 && strstr(o, "resuming out: ") && strstr(o, "shards "
	    "written by an earlier run"), "the same command resumes it "
	    "(exit %d): %s", rc, o);
	free(o);
	ok(outputs_equal("ref", "out"), "byte for byte the uninterrupted "
	    "run's output");
	ok(tl_runf(NULL, "test -e %s/.out.partial || test -e "
	    "%s/out/.merged-progress.json || test -e "
	    "%s/out/.merged-progress.json.tmp", dir, dir, dir) != 0, "no "
	    "staging directory left, no record in the output");
}

/* SIGINT: exit 130, the staging directory kept with the reason. */
static void
test_interrupted(void)
{
	struct graph_record r;
	char *cause = NULL, *o = NULL;
	int i, rc, status;
	pid_t pid;

	pid = spawn_run("c.yml out2 --resume --random-seed 7 "
	    "--out-shard-size 4M -j 1");
	for (i = 0; i < 20000; i++) {
		rc = read_record("out2", &r, &cause);
		free(cause);
		cause = NULL;
		if (rc == 0) {
			graph_record_fini(&r);
			break;
		}
		sleep_ms(1);
	}
	kill(pid, SIGINT);
	waitpid(pid, &status, 0);
	rc = read_record("out2", &r, &cause);
	ok(WIFEXITED(status) && WEXITSTATUS(status) == 130 && rc == 0 &&
	    r.error != NULL && strcmp(r.error, "cancelled") == 0,
	    "interrupted: exit 130, and the record says why (%s)", rc == 0 &&
	    r.error ? r.error : cause);
	graph_record_fini(&r);
	free(cause);

	/* Another seed is another plan: nothing of the old run is kept. */
	rc = tl_runf(&o, "cd %s && %s run c.yml out2 --resume --random-seed "
	    "8 --out-shard-size 4M 2>&1", dir, tl_mergectl);
	ok(rc == 0 && strstr(o, "note: starting out2 over: .out2.partial was "
	    "left by an earlier run, but its plan was another"), "another "
	    "plan starts over, and says so (exit %d): %s", rc, o);
	free(o);
	ok(outputs_equal("ref8", "out2"), "and writes that plan's output");
}

/* A staging directory without a record: started over, junk gone. */
static void
test_no_record(void)
{
	char *o = NULL;
	int rc;

	rc = tl_runf(NULL, "cd %s && mkdir .out3.partial && echo x > "
	    ".out3.partial/junk && echo y > "
	    ".out3.partial/model-00001-of-00016.safetensors", dir);
	rc |= tl_runf(&o, "cd %s && %s run c.yml out3 --resume --random-seed "
	    "7 --out-shard-size 4M -q 2>&1", dir, tl_mergectl);
	ok(rc == 0 && strstr(o, "it holds no record of what it finished"),
	    "a staging directory without a record starts over (exit %d): "
	    "%s", rc, o);
	free(o);
	ok(outputs_equal("ref", "out3") && tl_runf(NULL, "test -e "
	    "%s/out3/junk", dir) != 0, "nothing of what was there is kept");
}

/* The record as a hostile user's file. */
static void
test_hostile_record(void)
{
	struct graph_record r;
	char *cause = NULL, *o = NULL, *big;
	int rc, dfd;
	size_t n = GRAPH_RECORD_MAX + 10;

	rc = tl_runf(NULL, "cd %s && mkdir -p .h1.partial h1-real && "
	    "cp .out2.partial/.merged-progress.json h1-real/ 2>/dev/null; "
	    "echo '{}' > h1-real/.merged-progress.json && ln -s "
	    "../h1-real/.merged-progress.json .h1.partial/", dir);
	dfd = open(dir, O_RDONLY | O_DIRECTORY);
	rc |= graph_record_read(dfd, ".h1.partial", -1, &r, &cause);
	ok(rc == -ELOOP && cause != NULL, "a record that is a symlink is "
	    "not followed: %s", cause ? cause : "read");
	free(cause);
	cause = NULL;
	rc = tl_runf(NULL, "cd %s && ln -s h1-real .h2.partial && mkdir "
	    ".h3.partial && mkfifo .h3.partial/.merged-progress.json", dir);
	rc = graph_record_read(dfd, ".h2.partial", -1, &r, &cause);
	ok(rc == -ENOTDIR, "nor a staging directory that is one: %s",
	    cause ? cause : "");
	free(cause);
	cause = NULL;
	rc = graph_record_read(dfd, ".h3.partial", -1, &r, &cause);
	ok(rc == -EPERM && cause && strstr(cause, "not a regular file"),
	    "a FIFO is refused without blocking: %s", cause ? cause : "");
	free(cause);
	cause = NULL;
	big = malloc(n + 1);
	memset(big, ' ', n);
	big[n] = '\0';
	tl_runf(NULL, "mkdir %s/.h4.partial", dir);
	tl_write_at(dir, ".h4.partial/.merged-progress.json", big);
	free(big);
	rc = graph_record_read(dfd, ".h4.partial", -1, &r, &cause);
	ok(rc == -EFBIG, "a record over %d bytes is refused: %s",
	    GRAPH_RECORD_MAX, cause ? cause : "");
	free(cause);
	cause = NULL;
	if (geteuid() == 0) {
		tl_runf(NULL, "cd %s && mkdir .h5.partial && echo '{}' > "
		    ".h5.partial/.merged-progress.json && chown nobody "
		    ".h5.partial/.merged-progress.json", dir);
		rc = graph_record_read(dfd, ".h5.partial", 0, &r, &cause);
		ok(rc == -EPERM, "a record another user owns is refused: %s",
		    cause ? cause : "");
		free(cause);
		cause = NULL;
	}
	close(dfd);

	/* mergectl run --resume over a FIFO: it starts over, at once. */
	rc = tl_runf(&o, "cd %s && mkdir .out4.partial && mkfifo "
	    ".out4.partial/.merged-progress.json && timeout 120 %s run c.yml "
	    "out4 --resume --random-seed 7 --out-shard-size 4M -q 2>&1", dir,
	    tl_mergectl);
	ok(rc == 0 && strstr(o, "its record is unreadable") &&
	    outputs_equal("ref", "out4"), "mergectl run --resume over a FIFO "
	    "record starts over (exit %d): %s", rc, o);
	free(o);
}

/* CONFIG "-": the config on standard input. */
static void
test_stdin(void)
{
	char *o = NULL;
	int rc;

	rc = tl_runf(&o, "cd %s && cat c.yml | %s run - out5 --random-seed 7 "
	    "--out-shard-size 4M -q 2>&1", dir, tl_mergectl);
	ok(rc == 0 && outputs_equal("ref", "out5"), "run - reads the config "
	    "from standard input, a pipe (exit %d): %s", rc, o);
	free(o);
	rc = tl_runf(&o, "cd %s && printf 'merge_method: linear\\nmodels:\\n"
	    "  - model: ./nothere\\n' | %s run - outn --config-name "
	    "my.yml 2>&1", dir, tl_mergectl);
	ok(rc == 3 && strstr(o, "my.yml:3:") != NULL, "--config-name names "
	    "standard input's config in messages (exit %d): %s", rc, o);
	free(o);
	rc = tl_runf(&o, "cd %s && printf 'merge_method: linear\\n---\\n"
	    "merge_method: linear\\n' | %s run - out6 2>&1", dir,
	    tl_mergectl);
	ok(rc == 2 && strstr(o, "CONFIG - reads one merge's config"),
	    "two documents on standard input: a usage error (exit %d): %s",
	    rc, o);
	free(o);
	tl_write_at(dir, "two.yml", "name: one\nmerge_method: linear\n"
	    "models:\n  - model: ./xa\n  - model: ./xb\nparameters: "
	    "{weight: 0.5}\n---\nmerge_method: linear\nmodels:\n  - model: "
	    "one\n  - model: ./xb\nparameters: {weight: 0.5}\n");
	rc = tl_runf(&o, "cd %s && %s run two.yml out7 --resume 2>&1", dir,
	    tl_mergectl);
	ok(rc == 2 && strstr(o, "--resume runs one merge"), "--resume with a "
	    "pipeline of stages: a usage error (exit %d): %s", rc, o);
	free(o);
}

/*
 * --stage-record and --stage-card (a pipeline's stage as a Slurm batch
 * job): the record is the output's mergectl_stage.json as given, the
 * card's text ends its README.md; the weights are the same.
 */
static void
test_stage_files(void)
{
	char *o = NULL, *rec, *card, path[4096];
	int rc;

	tl_write_at(dir, "rec.json", "{\"mergectl_stage\": 1}\n");
	tl_write_at(dir, "card.md", "### Pipeline\n\nStage one of two.\n");
	rc = tl_runf(&o, "cd %s && %s run c.yml out8 --random-seed 7 "
	    "--out-shard-size 4M -q --stage-record rec.json --stage-card "
	    "card.md 2>&1", dir, tl_mergectl);
	snprintf(path, sizeof path, "%s/out8/mergectl_stage.json", dir);
	rec = tl_read(path, NULL);
	snprintf(path, sizeof path, "%s/out8/README.md", dir);
	card = tl_read(path, NULL);
	ok(rc == 0 && tl_runf(NULL, "cd %s && for f in ref/*.safetensors; "
	    "do cmp -s $f out8/${f#ref/} || exit 1; done", dir) == 0 &&
	    rec != NULL &&
	    strcmp(rec, "{\"mergectl_stage\": 1}\n") == 0, "--stage-record "
	    "FILE: the output holds it as its record (exit %d): %s", rc, o);
	ok(card != NULL && strlen(card) > 32 && strcmp(card + strlen(card) -
	    32, "### Pipeline\n\nStage one of two.\n") == 0, "--stage-card "
	    "FILE: its text ends the model card");
	free(rec);
	free(card);
	free(o);
	rc = tl_runf(&o, "cd %s && %s run c.yml out9 --stage-record nothere "
	    "2>&1", dir, tl_mergectl);
	snprintf(path, sizeof path, "%s/out9", dir);
	ok(rc == 1 && strstr(o, "--stage-record nothere: No such file") !=
	    NULL && !tl_exists(path), "a record file that is not "
	    "there: exit %d, nothing written: %s", rc, o);
	free(o);
}

/*
 * --model-dirs (a Slurm batch job): references are resolved among the
 * directories given alone; one that is not there is the plan's problem.
 */
static void
test_model_dirs(void)
{
	char *o = NULL;
	int rc;

	/* ./xb is given as xa's directory: the same as a copy of xa. */
	tl_runf(NULL, "cd %s && rm -rf xa2 && cp -r xa xa2 && printf "
	    "'merge_method: linear\\nmodels:\\n  - model: ./xa\\n    "
	    "parameters: {weight: 0.3}\\n  - model: ./xb\\n    parameters: "
	    "{weight: 0.7}\\n' > lin.yml && sed 's|\\./xb|./xa2|' lin.yml > "
	    "lin2.yml && printf '[{\"ref\":\"./xa\",\"root\":\"%s/xa\","
	    "\"rel\":\".\"},{\"ref\":\"./xb\",\"root\":\"%s/xa\","
	    "\"rel\":\".\"}]' > dirs.json && %s run lin2.yml outaa "
	    "--out-shard-size 4M -q", dir, dir, dir, tl_mergectl);
	rc = tl_runf(&o, "cd %s && %s run lin.yml outmd --out-shard-size 4M "
	    "-q --model-dirs dirs.json 2>&1 && ls outaa/*.safetensors "
	    ">/dev/null && for f in outaa/*.safetensors; do cmp -s $f outmd/${f#outaa/} "
	    "|| exit 9; done", dir, tl_mergectl);
	ok(rc == 0, "--model-dirs: each reference is the directory given, "
	    "not the one its path names (exit %d): %s", rc, o);
	free(o);
	rc = tl_runf(&o, "cd %s && printf '[{\"ref\":\"./xb\",\"root\":"
	    "\"%s/gone\",\"rel\":\".\"}]' > gone.json && %s run c.yml "
	    "outgone --model-dirs gone.json 2>&1", dir, dir, tl_mergectl);
	ok(rc == 3 && strstr(o, "model ./xb: ") != NULL && strstr(o,
	    "/gone: No such file or directory") != NULL, "a directory that is "
	    "not there: exit %d, as a model not found: %s", rc, o);
	free(o);
	rc = tl_runf(&o, "cd %s && echo '{}' > bad.json && %s run c.yml "
	    "outbad --model-dirs bad.json 2>&1", dir, tl_mergectl);
	ok(rc == 2 && strstr(o, "not a JSON array") != NULL, "a file that is "
	    "not a list: a usage error (exit %d): %s", rc, o);
	free(o);
}

int
main(int argc, char **argv)
{
	char *o = NULL;
	int rc;

	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("resume");
	tl_gen_at(dir, "xa", "--family llama --hidden 512 --intermediate "
	    "1408 --layers 8 --vocab 8192 --heads 8 --kv-heads 4 --seed 5");
	tl_gen_at(dir, "xb", "--family llama --hidden 512 --intermediate "
	    "1408 --layers 8 --vocab 8192 --heads 8 --kv-heads 4 --seed 6 "
	    "--finetune-of 5 --delta 0.01");
	tl_write_at(dir, "c.yml", cfg);
	rc = tl_runf(&o, "cd %s && %s run c.yml ref --random-seed 7 "
	    "--out-shard-size 4M -q 2>&1 && %s run c.yml ref8 --random-seed "
	    "8 --out-shard-size 4M -q 2>&1", dir, tl_mergectl, tl_mergectl);
	ok(rc == 0, "references: uninterrupted runs (exit %d) %s", rc, o);
	free(o);
	test_killed();
	test_interrupted();
	test_no_record();
	test_hostile_record();
	test_stdin();
	test_stage_files();
	test_model_dirs();
	tl_cleanup();
	return tap_done();
}
