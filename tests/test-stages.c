/* SPDX-License-Identifier: MIT */
/*
 * test-stages.c: multi-stage configs (mergekit-multi files) through
 * mergectl run, mergekit-multi and mergectl plan.
 *
 * A three-stage pipeline (two independent stages feeding a third, with a
 * random method so that the stage seeds matter) gives the same bytes as
 * its three configs run by hand with the stages' seeds; every stage is
 * planned before any runs, so a problem that shows only against an
 * earlier stage's planned output stops everything before a byte is
 * written; reruns skip the stages that are up to date and rerun what an
 * input change reaches; intermediates are kept or removed on request;
 * a directory that mergectl did not write is never replaced.
 */
#include <sys/stat.h>

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "graph.h"
#include "tap.h"
#include "testd.h"
#include "testlib.h"

static const char *dir;
static char multi[4096];	/* the mergekit-multi name, a symlink */
static const char *shim;	/* faultshim.so: slow writes */

#define STAGE_AB \
    "name: ab\n" \
    "merge_method: linear\n" \
    "models:\n" \
    "  - model: ./base\n" \
    "    parameters: {weight: 0.5}\n" \
    "  - model: ./t1\n" \
    "    parameters: {weight: 0.5}\n" \
    "dtype: float32\n"
#define STAGE_CD \
    "name: cd\n" \
    "merge_method: dare_ties\n" \
    "base_model: ./base\n" \
    "models:\n" \
    "  - model: ./t2\n" \
    "    parameters: {weight: 1.0, density: 0.5}\n" \
    "  - model: ./t3\n" \
    "    parameters: {weight: 1.0, density: 0.5}\n" \
    "dtype: float32\n"
#define STAGE_FINAL(ab, cd) \
    "merge_method: slerp\n" \
    "base_model: " ab "\n" \
    "models:\n" \
    "  - model: " ab "\n" \
    "  - model: " cd "\n" \
    "parameters:\n" \
    "  t: 0.3\n" \
    "dtype: bfloat16\n"

/* The final merge first: the order is the dependencies', not the file's. */
static const char pipe3[] =
    "# two merges, then a SLERP of their results\n"
    STAGE_FINAL("ab", "cd") "---\n" STAGE_AB "---\n" STAGE_CD;

static int64_t
mtime_at(const char *path)
{
	char p[4096];
	struct stat st;

	snprintf(p, sizeof p, "%s/%s", dir, path);
	if (stat(p, &st) != 0)
		return -1;
	return (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
}

static bool
exists_at(const char *path)
{
	char p[4096];

	snprintf(p, sizeof p, "%s/%s", dir, path);
	return tl_exists(p);
}

static char *
read_at(const char *path)
{
	char p[4096];

	snprintf(p, sizeof p, "%s/%s", dir, path);
	return tl_read(p, NULL);
}

/* mergectl with the arguments, in the test's directory. */
static int __attribute__((format(printf, 2, 3)))
run(char **o, const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	return tl_runf(o, "cd %s && %s %s 2>&1", dir, tl_mergectl, cmd);
}

/* The pipeline, and the same three configs run one by one. */
static void
test_by_hand(void)
{
	char *o = NULL, *t;
	int rc;

	rc = run(&o, "run %s out --random-seed 11", "pipe.yml");
	ok_int_eq(rc, 0, "run FILE OUT exits 0");
	ok(o != NULL && strstr(o, "stage 1/3 ab: merging into "
	    "out.stages/ab") != NULL && strstr(o, "stage 2/3 cd") != NULL &&
	    strstr(o, "stage 3/3 (final): merging into out") != NULL,
	    "the stages run in dependency order, named stages beside OUT");
	if (rc != 0)
		tap_diag("%s", o);
	free(o);

	tl_write_at(dir, "ab.yml", STAGE_AB);
	tl_write_at(dir, "cd.yml", STAGE_CD);
	tl_write_at(dir, "final.yml", STAGE_FINAL("hand/ab", "hand/cd"));
	rc = tl_runf(&o, "cd %s && %s run ab.yml hand/ab -q --random-seed "
	    "%llu && %s run cd.yml hand/cd -q --random-seed %llu && %s run "
	    "final.yml hand/final -q --random-seed %llu 2>&1", dir,
	    tl_mergectl, (unsigned long long)graph_stage_seed(11, "ab"),
	    tl_mergectl, (unsigned long long)graph_stage_seed(11, "cd"),
	    tl_mergectl, (unsigned long long)graph_stage_seed(11, ""));
	ok_int_eq(rc, 0, "the three configs run by hand");
	free(o);
	ok(tl_same_at(dir, "out.stages/ab/model.safetensors",
	    "hand/ab/model.safetensors") && tl_same_at(dir,
	    "out.stages/cd/model.safetensors", "hand/cd/model.safetensors"),
	    "each intermediate is byte-identical to its config run by hand "
	    "with the stage's seed (dare_ties: random)");
	ok(tl_same_at(dir, "out/model.safetensors",
	    "hand/final/model.safetensors") && tl_same_at(dir,
	    "out/config.json", "hand/final/config.json"), "so is the final "
	    "output, weights and config.json");
	ok(!tl_same_at(dir, "hand/cd/model.safetensors",
	    "hand/ab/model.safetensors"), "(the stages differ)");

	t = read_at("out.stages/ab/mergekit_config.yml");
	ok_str_eq(t, STAGE_AB, "a stage's mergekit_config.yml is its own "
	    "document");
	free(t);
	t = read_at("out/mergekit_config.yml");
	ok_str_eq(t, STAGE_FINAL("out.stages/ab", "out.stages/cd"), "the "
	    "final one has its references to stages rewritten, as "
	    "mergekit writes it");
	free(t);
	t = read_at("out/README.md");
	ok(t != NULL && strstr(t, "### Pipeline") != NULL && strstr(t,
	    "2. `cd`: dare_ties, written to out.stages/cd") != NULL &&
	    strstr(t, "name: ab\n") != NULL, "the final card lists the whole "
	    "pipeline");
	free(t);
	t = read_at("out.stages/ab/README.md");
	ok(t != NULL && strstr(t, "### Pipeline") == NULL, "a stage's card "
	    "is its own");
	free(t);
	t = read_at("out.stages/cd/mergectl_stage.json");
	ok(t != NULL && strstr(t, "\"stage\": \"cd\"") != NULL &&
	    strstr(t, "\"pipeline_seed\": 11,") != NULL &&
	    strstr(t, "t3/model.safetensors") != NULL, "each stage holds its "
	    "record: name, seeds, input files");
	free(t);
}

/* A chain of element-wise stages, rounded to other dtypes on the way. */
static const char chain[] =
    "name: x\n"
    "merge_method: linear\n"
    "models:\n"
    "  - model: ./t1\n"
    "    parameters: {weight: 0.7}\n"
    "  - model: ./t2\n"
    "    parameters: {weight: 0.3}\n"
    "dtype: bfloat16\n"
    "---\n"
    "name: y\n"
    "merge_method: task_arithmetic\n"
    "base_model: ./base\n"
    "models:\n"
    "  - model: x\n"
    "    parameters: {weight: 0.8}\n"
    "  - model: ./t3\n"
    "    parameters: {weight: 0.4}\n"
    "dtype: float16\n"
    "---\n"
    "merge_method: slerp\n"
    "base_model: y\n"
    "models:\n"
    "  - model: y\n"
    "  - model: ./t3\n"
    "parameters:\n"
    "  t: 0.6\n"
    "dtype: bfloat16\n";

/* The same pipeline with a stage read by two. */
static const char shared[] =
    "name: x\n"
    "merge_method: linear\n"
    "models:\n"
    "  - model: ./t1\n"
    "    parameters: {weight: 0.5}\n"
    "  - model: ./t2\n"
    "    parameters: {weight: 0.5}\n"
    "---\n"
    "name: y\n"
    "merge_method: linear\n"
    "models:\n"
    "  - model: x\n"
    "    parameters: {weight: 0.5}\n"
    "  - model: ./t3\n"
    "    parameters: {weight: 0.5}\n"
    "---\n"
    "merge_method: slerp\n"
    "base_model: x\n"
    "models:\n"
    "  - model: x\n"
    "  - model: y\n"
    "parameters:\n"
    "  t: 0.5\n";

/* The two outputs' weights, config and tokenizer the same (the record,
 * the card and mergekit_config.yml name the stages' directories). */
static bool
same_model(const char *a, const char *b)
{
	static const char *const files[] = { "model.safetensors",
	    "config.json", "tokenizer.json", "tokenizer_config.json" };
	char pa[512], pb[512];
	size_t i;

	for (i = 0; i < sizeof files / sizeof *files; i++) {
		snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
		snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
		if (!tl_same_at(dir, pa, pb)) {
			tap_diag("%s and %s differ", pa, pb);
			return false;
		}
	}
	return true;
}

/* The final stage's least memory, from plan --json; -1: none. */
static double
final_min_memory(const char *file, const char *opts)
{
	char *o = NULL;
	cJSON *j, *st;
	double v = -1;

	if (run(&o, "plan %s %s --json", file, opts) == 0 &&
	    (j = cJSON_Parse(o)) != NULL) {
		st = cJSON_GetObjectItem(j, "stages");
		st = cJSON_GetArrayItem(st, cJSON_GetArraySize(st) - 1);
		v = cJSON_GetNumberValue(cJSON_GetObjectItem(
		    cJSON_GetObjectItem(st, "plan"), "min_memory"));
		cJSON_Delete(j);
	}
	free(o);
	return v;
}

/* --fuse: what the plan proves element-wise is computed where it is read. */
static void
test_fuse(void)
{
	const cJSON *st;
	char *o = NULL, *t;
	cJSON *j;
	int rc;

	/* The three-stage pipeline: ab (linear) fuses, cd (dare_ties, which
	 * ranks magnitudes over a whole tensor first) does not. */
	rc = run(&o, "run %s fz/out --fuse --random-seed 11", "pipe.yml");
	ok_int_eq(rc, 0, "run --fuse exits 0");
	ok(o != NULL && strstr(o, "stage 1/3 ab: fused into stage (final), "
	    "not written") != NULL && strstr(o, "stage 2/3 cd: merging "
	    "into fz/out.stages/cd") != NULL, "it says which stage is fused");
	if (rc != 0)
		tap_diag("%s", o);
	free(o);
	ok(!exists_at("fz/out.stages/ab") && exists_at("fz/out.stages/cd"),
	    "the fused stage is not written; the other one is");
	ok(tl_same_at(dir, "fz/out/model.safetensors",
	    "hand/final/model.safetensors") && tl_same_at(dir,
	    "fz/out/config.json", "hand/final/config.json"), "the output is "
	    "byte-identical to the three configs run by hand");
	t = read_at("fz/out/README.md");
	ok(t != NULL && strstr(t, "1. `ab`: linear, fused into the stage "
	    "reading it (not written)") != NULL, "its card says so");
	free(t);
	t = read_at("fz/out/mergectl_stage.json");
	ok(t != NULL && strstr(t, "t1/model.safetensors") != NULL &&
	    strstr(t, "out.stages/ab/model") == NULL, "its record lists the "
	    "fused "
	    "stage's inputs, not the stage");
	free(t);
	rc = run(&o, "run %s fz/out --fuse --random-seed 11 --force",
	    "pipe.yml");
	ok(rc == 0 && o != NULL && strstr(o, "stage 2/3 cd: fz/out.stages/cd "
	    "is up to date") != NULL && strstr(o, "ab: fused into") != NULL &&
	    strstr(o, "(final): merging into fz/out") != NULL, "a rerun skips "
	    "what is up to date and runs the fused chain again: it left no "
	    "intermediate to find (so the output is replaced: --force)");
	if (rc != 0 || o == NULL || strstr(o, "is up to date") == NULL)
		tap_diag("%s", o);
	free(o);

	rc = run(&o, "plan %s --fuse --json", "pipe.yml");
	j = rc == 0 ? cJSON_Parse(o) : NULL;
	st = cJSON_GetObjectItem(j, "stages");
	ok(j != NULL && strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(
	    cJSON_GetArrayItem(st, 0), "action")), "fused") == 0 &&
	    strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(
	    cJSON_GetArrayItem(st, 0), "fused_into")), "(final)") == 0,
	    "plan --fuse --json: ab is fused into the final stage");
	ok(j != NULL && strstr(cJSON_GetStringValue(cJSON_GetObjectItem(
	    cJSON_GetArrayItem(st, 1), "not_fused")), "dare_ties merges ") !=
	    NULL, "and says why cd is not: %s", cJSON_GetStringValue(
	    cJSON_GetObjectItem(cJSON_GetArrayItem(st, 1), "not_fused")));
	cJSON_Delete(j);
	free(o);

	/* A stage the final one only copies: fused, the final stage
	 * computes what it copied, and its least memory says so. */
	tl_write_at(dir, "copyfuse.yml", "name: x\nmerge_method: linear\n"
	    "models:\n  - model: ./t1\n    parameters: {weight: 0.5}\n"
	    "  - model: ./t2\n    parameters: {weight: 0.5}\n---\n"
	    "merge_method: passthrough\nmodels:\n  - model: x\n");
	ok(final_min_memory("copyfuse.yml", "") == 0 && final_min_memory(
	    "copyfuse.yml", "--fuse") > 0, "a stage that copies a fused one "
	    "needs memory to compute it, and its plan says so (%.0f bytes)",
	    final_min_memory("copyfuse.yml", "--fuse"));

	/* A chain of two fused stages, through bfloat16 and float16. */
	tl_write_at(dir, "chain.yml", chain);
	rc = run(&o, "run %s ch/plain -q && %s run %s ch/fused -q --fuse && "
	    "%s plan %s --fuse --intermediate-dir ch/fused.stages", "chain.yml",
	    tl_mergectl, "chain.yml", tl_mergectl, "chain.yml");
	ok_int_eq(rc, 0, "a chain of three stages, fused and not");
	ok(o != NULL && strstr(o, "x                linear         reads "
	    "models only          -> nothing: not written  (fused into y")
	    != NULL && strstr(o, "(fused into (final)") != NULL, "both "
	    "fuse, x into y and y into the final one");
	if (rc != 0)
		tap_diag("%s", o);
	free(o);
	ok(same_model("ch/plain", "ch/fused"), "the fused chain's output is "
	    "the unfused one's, file for file");
	ok(!exists_at("ch/fused.stages/x") && !exists_at("ch/fused.stages/y")
	    && exists_at("ch/plain.stages/y"), "and writes no intermediate");

	tl_write_at(dir, "shared.yml", shared);
	rc = run(&o, "run %s shr/plain -q && %s run %s shr/fused --fuse",
	    "shared.yml", tl_mergectl, "shared.yml");
	ok(rc == 0 && o != NULL && strstr(o, "stage 2/3 y: fused into stage "
	    "(final)") != NULL && strstr(o, "x: merging into") != NULL,
	    "a stage read by two stages is written; one read by one fuses");
	free(o);
	ok(same_model("shr/plain", "shr/fused"), "and the result is the same");
	rc = run(&o, "plan %s --fuse", "shared.yml");
	ok(rc == 0 && o != NULL && strstr(o, "not fused: it is read by 2 "
	    "stages") != NULL, "plan says why x is not fused");
	free(o);

	rc = run(&o, "submit %s -o fz/sub --fuse", "pipe.yml");
	ok(rc == 2 && o != NULL && strstr(o, "--fuse is for 'mergectl run': "
	    "submit runs each stage as a job of its own") != NULL, "submit "
	    "--fuse is a usage error that says why (exit %d)", rc);
	free(o);
}

/* --lazy, the default: what is up to date is not run again. */
static void
test_lazy(void)
{
	int64_t ab = mtime_at("out.stages/ab/model.safetensors");
	int64_t cd = mtime_at("out.stages/cd/model.safetensors");
	int64_t fin = mtime_at("out/model.safetensors");
	char *o = NULL;
	int rc;

	rc = run(&o, "run %s out --random-seed 11", "pipe.yml");
	ok(rc == 0 && o != NULL && strstr(o, "ab: out.stages/ab is up to "
	    "date") != NULL && strstr(o, "(final): out is up to date") !=
	    NULL, "a rerun finds every stage up to date");
	free(o);
	rc = run(&o, "run %s out", "pipe.yml");
	ok(rc == 0 && o != NULL && strstr(o, "merging") == NULL, "so does "
	    "one without --random-seed: it takes the recorded seed");
	free(o);
	ok(mtime_at("out.stages/ab/model.safetensors") == ab &&
	    mtime_at("out/model.safetensors") == fin, "nothing was written");

	/* An input of stage cd changes. */
	tl_runf(&o, "touch %s/t3/model.safetensors", dir);
	free(o);
	rc = run(&o, "run %s out", "pipe.yml");
	ok(rc == 4 && o != NULL && strstr(o, "out already exists; use "
	    "--force") != NULL, "an input changed: the final output must be "
	    "replaced, which needs --force (exit %d)", rc);
	free(o);
	ok(mtime_at("out.stages/cd/model.safetensors") == cd, "and nothing "
	    "ran before that was said");
	rc = run(&o, "run %s out --force", "pipe.yml");
	ok(rc == 0 && o != NULL && strstr(o, "ab: out.stages/ab is up to "
	    "date") != NULL && strstr(o, "stage 2/3 cd: merging") != NULL &&
	    strstr(o, "stage 3/3 (final): merging") != NULL, "with --force "
	    "the changed stage and the one reading it run, the other not");
	free(o);
	ok(mtime_at("out.stages/ab/model.safetensors") == ab &&
	    mtime_at("out.stages/cd/model.safetensors") != cd,
	    "on disk too");
	ok(tl_same_at(dir, "out/model.safetensors",
	    "hand/final/model.safetensors"), "with the same bytes as before");
	rc = run(&o, "run %s out --force --no-lazy", "pipe.yml");
	ok(rc == 0 && mtime_at("out.stages/ab/model.safetensors") != ab,
	    "--no-lazy runs every stage");
	free(o);

	/* Only an input's config.json changes: its weights do not. */
	ab = mtime_at("out.stages/ab/model.safetensors");
	tl_runf(&o, "sed -i '1s/^{/{\"x_note\": 1,/' %s/t3/config.json", dir);
	free(o);
	rc = run(&o, "run %s out --force", "pipe.yml");
	ok(rc == 0 && o != NULL && strstr(o, "stage 2/3 cd: merging") != NULL &&
	    mtime_at("out.stages/ab/model.safetensors") == ab, "a changed "
	    "config.json of an input reruns the stage that reads it, not the "
	    "other (exit %d)", rc);
	free(o);

	/* Only the tokenizer_config.json of the model whose tokenizer ab
	 * copies: the output's changes with it. */
	tl_runf(&o, "sed -i '1s/^{/{\"x_note\": 2,/' "
	    "%s/base/tokenizer_config.json", dir);
	free(o);
	rc = run(&o, "run %s out --force", "pipe.yml");
	ok(rc == 0 && o != NULL && strstr(o, "stage 1/3 ab: merging") != NULL,
	    "a changed tokenizer file of an input reruns the stage that "
	    "copies it (exit %d)", rc);
	free(o);
	o = read_at("out/tokenizer_config.json");
	ok(o != NULL && strstr(o, "\"x_note\": 2") != NULL, "and the "
	    "output's tokenizer is the changed one");
	free(o);
}

/* Problems: all of them before anything is written. */
static void
test_refusals(void)
{
	char *o = NULL;
	int rc;

	/* Stage ab has 4 layers: the final's layer range is wrong, which
	 * only ab's planned output can tell. */
	tl_write_at(dir, "late.yml", STAGE_AB "---\n"
	    "merge_method: passthrough\n"
	    "slices:\n"
	    "  - sources:\n"
	    "      - model: ab\n"
	    "        layer_range: [0, 6]\n"
	    "dtype: bfloat16\n");
	rc = run(&o, "run %s late", "late.yml");
	ok(rc == 3 && !exists_at("late") && !exists_at("late.stages"),
	    "a problem in the last stage, against the first one's planned "
	    "output, is found before anything runs (exit %d)", rc);
	ok(o != NULL && strstr(o, "late.stages/ab") != NULL, "and names the "
	    "stage output it reads");
	if (rc != 3 || o == NULL || strstr(o, "late.stages/ab") == NULL)
		tap_diag("%s", o);
	free(o);

	tl_write_at(dir, "two.yml", "name: ab\nmerge_method: linear\n"
	    "models: [{model: ./nope}, {model: ./t1}]\n---\n"
	    "merge_method: lineer\nmodels: [{model: ab}, {model: ./t2}]\n");
	rc = run(&o, "run %s two", "two.yml");
	ok(rc == 3 && o != NULL && strstr(o, "nope") != NULL &&
	    strstr(o, "lineer") != NULL && !exists_at("two.stages"),
	    "problems in two stages are reported together (exit %d)", rc);
	free(o);

	tl_runf(&o, "mkdir -p %s/foreign.stages/ab && echo mine > "
	    "%s/foreign.stages/ab/notes.txt", dir, dir);
	free(o);
	rc = run(&o, "run %s foreign", "pipe.yml");
	ok(rc == 3 && o != NULL && strstr(o, "foreign.stages/ab exists and "
	    "is not a stage that mergectl wrote") != NULL &&
	    exists_at("foreign.stages/ab/notes.txt") && !exists_at("foreign"),
	    "a directory mergectl did not write is never replaced (exit %d)",
	    rc);
	free(o);
	rc = run(&o, "run %s --force foreign", "pipe.yml");
	ok(rc == 3 && exists_at("foreign.stages/ab/notes.txt"),
	    "not even with --force");
	free(o);

	/* Whoever else may write there could swap a stage in between. */
	tl_runf(&o, "mkdir -m 777 %s/shared && chmod 777 %s/shared", dir, dir);
	free(o);
	rc = run(&o, "run %s sh --intermediate-dir shared", "pipe.yml");
	ok(rc == 3 && o != NULL && strstr(o, "the stage directory shared is "
	    "writable by its group or by others") != NULL && !exists_at("sh"),
	    "a stage directory others may write in is refused (exit %d)", rc);
	free(o);
	tl_runf(&o, "mkdir %s/theirs && chown 1 %s/theirs", dir, dir);
	free(o);
	rc = run(&o, "run %s th --intermediate-dir theirs", "pipe.yml");
	ok(rc == 3 && o != NULL && strstr(o, "belongs to another user") !=
	    NULL, "so is one of another user (exit %d)", rc);
	free(o);
	rc = run(&o, "submit %s -o th --intermediate-dir theirs", "pipe.yml");
	ok(rc == 3 && o != NULL && strstr(o, "belongs to another user") !=
	    NULL, "by submit too, before anything is sent (exit %d)", rc);
	free(o);
	tl_runf(&o, "ln -s only %s/link", dir);
	free(o);
	rc = run(&o, "run %s ln --intermediate-dir link", "pipe.yml");
	ok(rc == 3 && o != NULL && strstr(o, "symbolic link") != NULL,
	    "and a symbolic link (exit %d)", rc);
	free(o);

	rc = run(&o, "run %s", "pipe.yml");
	ok(rc == 2 && o != NULL && strstr(o, "final merge: give its output")
	    != NULL, "a final stage needs OUT (exit %d)", rc);
	free(o);
	tl_write_at(dir, "cycle.yml", "name: x\nmerge_method: linear\n"
	    "models: [{model: y}]\n---\nname: y\nmerge_method: linear\n"
	    "models: [{model: x}]\n");
	rc = run(&o, "run %s --intermediate-dir cyc", "cycle.yml");
	ok(rc == 3 && o != NULL && strstr(o, "cycle") != NULL &&
	    !exists_at("cyc"), "a cycle is refused (exit %d)", rc);
	free(o);
}

/* Named stages only; --no-keep-intermediates; mergekit-multi's spelling. */
static void
test_forms(void)
{
	char *o = NULL;
	int rc;

	tl_write_at(dir, "named.yml", STAGE_AB "---\n" STAGE_CD);
	rc = run(&o, "run %s --intermediate-dir only -q", "named.yml");
	ok(rc == 0 && exists_at("only/ab/model.safetensors") &&
	    exists_at("only/cd/model.safetensors"), "a file of named stages "
	    "writes them all to --intermediate-dir (exit %d)", rc);
	free(o);

	rc = run(&o, "run %s dropped --no-keep-intermediates -q "
	    "--random-seed 11", "pipe.yml");
	ok(rc == 0 && exists_at("dropped/model.safetensors") &&
	    !exists_at("dropped.stages/ab") && !exists_at("dropped.stages/cd"),
	    "--no-keep-intermediates removes them once read (exit %d)", rc);
	ok(tl_same_at(dir, "dropped/model.safetensors",
	    "hand/final/model.safetensors"), "and the result is the same");
	free(o);

	rc = tl_runf(&o, "cd %s && %s pipe.yml --intermediate-dir im "
	    "--out-path om --random-seed 11 -q 2>&1", dir, multi);
	ok(rc == 0 && exists_at("im/ab/config.json") && tl_same_at(dir,
	    "om/model.safetensors", "hand/final/model.safetensors"),
	    "mergekit-multi FILE --intermediate-dir DIR --out-path OUT "
	    "(exit %d)", rc);
	free(o);
	rc = tl_runf(&o, "cd %s && %s pipe.yml --out-path om2 2>&1", dir,
	    multi);
	ok(rc == 2 && o != NULL && strstr(o, "--intermediate-dir") != NULL,
	    "mergekit-multi without --intermediate-dir: usage error");
	free(o);
}

/* mergectl plan FILE: the stage graph and each stage's plan. */
static void
test_plan(void)
{
	const cJSON *st, *reads;
	char *o = NULL;
	cJSON *j;
	int rc;

	rc = run(&o, "plan %s --json --intermediate-dir out.stages "
	    "--out-path out", "pipe.yml");
	j = rc == 0 ? cJSON_Parse(o) : NULL;
	ok(j != NULL && cJSON_IsTrue(cJSON_GetObjectItem(j, "ok")),
	    "plan --json of a pipeline (exit %d)", rc);
	st = cJSON_GetObjectItem(j, "stages");
	ok(cJSON_GetArraySize(st) == 3 && strcmp(cJSON_GetStringValue(
	    cJSON_GetObjectItem(cJSON_GetArrayItem(st, 0), "name")), "ab") ==
	    0, "its stages in the order they run");
	reads = cJSON_GetObjectItem(cJSON_GetArrayItem(st, 2), "reads");
	ok(cJSON_GetArraySize(reads) == 2 && cJSON_IsNull(cJSON_GetObjectItem(
	    cJSON_GetArrayItem(st, 2), "name")), "the final one reads two");
	ok(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(
	    cJSON_GetArrayItem(st, 2), "plan"), "ok")) && strcmp(
	    cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(st,
	    0), "action")), "up to date") == 0, "each with its plan, and "
	    "whether run would skip it");
	cJSON_Delete(j);
	free(o);
	rc = run(&o, "plan %s", "pipe.yml");
	ok(rc == 0 && o != NULL && strstr(o, "stage 3/3   (final)") != NULL &&
	    strstr(o, "reads ab, cd") != NULL && strstr(o, "== stage cd ==")
	    != NULL, "plan FILE prints the stage graph and the plans");
	free(o);
	rc = run(&o, "plan %s", "late.yml");
	ok(rc == 3, "plan finds the late problem too (exit %d)", rc);
	free(o);
}

/* A job's JSON (status ID --json), or NULL. */
static cJSON *
job_json(int id)
{
	char *o = NULL;
	cJSON *j;

	td_ctl(&o, "status %d --json", id);
	j = o != NULL ? cJSON_Parse(o) : NULL;
	free(o);
	return j;
}

/* A daemon whose writes of stage cd's staging files are slow: that
 * stage is surely running when the test acts. */
static pid_t
start_slow(const char *out)
{
	char env[4096];

	snprintf(env, sizeof env, "LD_PRELOAD=%s ASAN_OPTIONS="
	    "${ASAN_OPTIONS:-}:verify_asan_link_order=0 FAULT_PATH=%s/%s.stages/"
	    ".cd.merging FAULT_SLOW_US=100000", shim, dir, out);
	return td_start("--memory 64M", env);
}

/*
 * The pipeline through the daemon: one group, a job per stage, the same
 * bytes as run; status shows the stages under their group; a rerun
 * finds them up to date; a problem of the last stage is refused at
 * submit.
 */
static void
test_daemon(void)
{
	const cJSON *deps;
	char *o = NULL, *s;
	int g, g2, rc;
	int64_t ab;
	pid_t pid;
	cJSON *j;

	td_init(dir);
	pid = td_start("--memory 64M", NULL);
	g = td_submit("pipe.yml -o dout --random-seed 11");
	ok(g > 0, "submit FILE -o OUT queues a pipeline (job %d)", g);
	rc = td_ctl(&o, "watch %d -q", g);
	ok_int_eq(rc, 0, "watch GROUP follows it to its end");
	free(o);
	ok(tl_same_at(dir, "dout/model.safetensors",
	    "hand/final/model.safetensors") && tl_same_at(dir,
	    "dout.stages/cd/model.safetensors", "hand/cd/model.safetensors") &&
	    tl_same_at(dir, "dout.stages/ab/model.safetensors",
	    "hand/ab/model.safetensors"), "the stages and the result are "
	    "byte-identical to the configs run by hand");
	s = read_at("dout/README.md");
	ok(s != NULL && strstr(s, "### Pipeline") != NULL && strstr(s,
	    "dout.stages/cd, seed") != NULL && strstr(s, "name: ab\n") !=
	    NULL, "its card lists the whole pipeline, as mergectl run's");
	free(s);
	j = job_json(g);
	ok(j != NULL && strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j,
	    "kind")), "pipeline") == 0 && strcmp(cJSON_GetStringValue(
	    cJSON_GetObjectItem(j, "state")), "done") == 0, "the group is a "
	    "pipeline job, done");
	cJSON_Delete(j);
	j = job_json(g + 3);
	deps = cJSON_GetObjectItem(j, "deps");
	ok(j != NULL && cJSON_GetNumberValue(cJSON_GetObjectItem(j,
	    "group")) == g && cJSON_IsNull(cJSON_GetObjectItem(j, "stage")) &&
	    cJSON_GetArraySize(deps) == 2 && cJSON_GetNumberValue(
	    cJSON_GetArrayItem(deps, 0)) == g + 1 && cJSON_GetNumberValue(
	    cJSON_GetArrayItem(deps, 1)) == g + 2, "the final stage is job %d "
	    "of group %d, after jobs %d and %d", g + 3, g, g + 1, g + 2);
	cJSON_Delete(j);
	rc = td_ctl(&o, "status --all");
	ok(rc == 0 && o != NULL && strstr(o, "  ab ") != NULL && strstr(o,
	    "  (final) ") != NULL, "status shows the stages under the group");
	free(o);
	rc = td_ctl(&o, "status %d", g);
	ok(rc == 0 && o != NULL && strstr(o, "  cd ") != NULL && strstr(o,
	    "seed          11") != NULL, "so does status GROUP, with the "
	    "pipeline's seed");
	free(o);

	ab = mtime_at("dout.stages/ab/model.safetensors");
	g2 = td_submit("pipe.yml -o dout");
	rc = td_ctl(&o, "watch %d -q", g2);
	ok(g2 > 0 && rc == 0 && mtime_at("dout.stages/ab/model.safetensors")
	    == ab, "submitted again, every stage is up to date: nothing is "
	    "written (exit %d)", rc);
	free(o);
	td_ctl(&o, "logs %d", g2 + 1);
	ok(o != NULL && strstr(o, "is up to date") != NULL, "the stage's log "
	    "says so");
	free(o);

	g = td_submit("pipe.yml -o dnk --random-seed 11 "
	    "--no-keep-intermediates");
	rc = td_ctl(&o, "watch %d -q", g);
	ok(g > 0 && rc == 0 && tl_same_at(dir, "dnk/model.safetensors",
	    "hand/final/model.safetensors") && !exists_at("dnk.stages/ab") &&
	    !exists_at("dnk.stages/cd"), "--no-keep-intermediates: the "
	    "stages are removed once the final one is done (exit %d)", rc);
	free(o);
	td_ctl(&o, "logs %d", g + 1);
	ok(o != NULL && strstr(o, "removed: every stage reading it is done") !=
	    NULL, "the stage's log says so");
	free(o);

	rc = td_ctl(&o, "rm %d", g + 1);
	ok(rc == 1 && o != NULL && strstr(o, "goes with its group") != NULL,
	    "a stage alone is not removed (exit %d)", rc);
	free(o);
	rc = td_ctl(&o, "rm %d", g);
	s = td_job_field(g + 1, "state");
	ok(rc == 0 && *s == '\0', "rm GROUP removes the group with its "
	    "stages");
	free(s);
	free(o);

	rc = td_ctl(&o, "submit late.yml -o dlate");
	ok(rc == 3 && o != NULL && strstr(o, "layer_range") != NULL &&
	    !exists_at("dlate.stages/ab") && !exists_at("dlate"), "a problem "
	    "of the last stage is refused at submit, before anything runs "
	    "(exit %d)", rc);
	free(o);
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly");
}

/* A group stopped with the daemon, resumed; and a group cancelled. */
static void
test_daemon_resume(void)
{
	char *o = NULL, *s;
	int g, rc;
	int64_t ab;
	pid_t pid;

	pid = start_slow("dslow");
	g = td_submit("pipe.yml -o dslow --random-seed 11");
	/* ab and cd are independent: they run side by side, ab fast. */
	ok(g > 0 && td_wait_state(g + 2, "running", 60000) &&
	    td_wait_state(g + 1, "done", 60000), "stage cd of group %d runs, "
	    "stage ab is done", g);
	s = td_job_field(g, "state");
	ok_str_eq(s, "running", "and so does its group");
	free(s);
	ab = mtime_at("dslow.stages/ab/model.safetensors");
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops meanwhile");
	pid = td_start("--memory 64M", NULL);
	s = td_job_field(g, "state");
	ok_str_eq(s, "interrupted", "the group is interrupted");
	free(s);
	rc = td_ctl(&o, "resume %d", g);
	ok_int_eq(rc, 0, "resume GROUP");
	free(o);
	rc = td_ctl(&o, "watch %d -q", g);
	ok(rc == 0 && tl_same_at(dir, "dslow/model.safetensors",
	    "hand/final/model.safetensors"), "it completes with the same "
	    "bytes as an uninterrupted run (exit %d)", rc);
	free(o);
	ok(mtime_at("dslow.stages/ab/model.safetensors") == ab,
	    "the stage done before was not run again");
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly");

	pid = start_slow("dcan");
	g = td_submit("pipe.yml -o dcan --random-seed 11");
	ok(g > 0 && td_wait_state(g + 2, "running", 60000), "a second group "
	    "runs");
	rc = td_ctl(&o, "cancel %d", g);
	ok_int_eq(rc, 0, "cancel GROUP");
	free(o);
	rc = td_ctl(&o, "watch %d -q", g);
	ok_int_eq(rc, 8, "the group ends cancelled");
	free(o);
	s = td_job_field(g + 3, "state");
	ok(strcmp(s, "cancelled") == 0 && !exists_at("dcan") &&
	    tl_runf(NULL, "ls -a %s/dcan.stages | grep -q merging", dir) != 0,
	    "with the stages not done, and no output or staging directory "
	    "left (%s)", s);
	free(s);
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly");
}

int
main(int argc, char **argv)
{
	static const char shape[] = "--family llama --layers 4 --hidden 64 "
	    "--intermediate 128 --heads 4 --kv-heads 2 --vocab 300";
	char args[512];
	int i;

	tl_init(argc, argv);
	shim = argc > 6 ? argv[6] : "";
	tap_plan_lazy();
	dir = tl_tmpdir("stages");
	snprintf(args, sizeof args, "%s --seed 1", shape);
	tl_gen_at(dir, "base", args);
	for (i = 1; i <= 3; i++) {
		char name[8];

		snprintf(args, sizeof args, "%s --seed %d --finetune-of 1 "
		    "--delta 0.02", shape, i + 1);
		snprintf(name, sizeof name, "t%d", i);
		tl_gen_at(dir, name, args);
	}
	tl_write_at(dir, "pipe.yml", pipe3);
	/* As `meson configure -Dmergekit_compat=true` installs it. */
	snprintf(multi, sizeof multi, "%s/mergekit-multi", dir);
	if (symlink(tl_mergectl, multi) != 0)
		return 99;
	test_by_hand();
	test_fuse();
	test_lazy();
	test_refusals();
	test_forms();
	test_plan();
	test_daemon();
	test_daemon_resume();
	tl_cleanup();
	return tap_done();
}
