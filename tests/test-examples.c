/* SPDX-License-Identifier: MIT */
/*
 * test-examples.c: every config in examples/ runs on generated models,
 * with mergectl run and through a daemon, and gives the same bytes both
 * ways (a pipeline, examples/pipeline.yml, as one job group); together
 * the examples cover every merge method of mergekit's registry.  (The
 * numbers themselves are checked in test-merge.c.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"
#include "tap.h"
#include "testlib.h"

#define MAX_EXAMPLES 64

static const char *dir;
static const char *examples;
static char sock[512];

/* The merge_method of an example, from its text. */
static char *
method_of(const char *name)
{
	char path[4096], *text, *p, *end, *m = NULL;

	snprintf(path, sizeof path, "%s/%s.yml", examples, name);
	if ((text = tl_read(path, NULL)) == NULL)
		return NULL;
	if ((p = strstr(text, "merge_method:")) != NULL) {
		p += strlen("merge_method:");
		p += strspn(p, " ");
		end = p + strcspn(p, " \n#");
		m = strndup(p, (size_t)(end - p));
	}
	free(text);
	return m;
}

static void
gen_models(void)
{
	static const char shape[] = "--family llama --layers 4 --hidden 128 "
	    "--intermediate 256 --heads 4 --kv-heads 2 --vocab 500";
	char args[512];

	snprintf(args, sizeof args, "%s --seed 1", shape);
	tl_gen_at(dir, "demo/llama-base", args);
	snprintf(args, sizeof args, "%s --seed 2 --finetune-of 1 --delta 0.01",
	    shape);
	tl_gen_at(dir, "demo/llama-tuned", args);
	snprintf(args, sizeof args, "%s --seed 3 --finetune-of 1 --delta 0.01",
	    shape);
	tl_gen_at(dir, "demo/llama-tuned2", args);
	/* Two LoRA adapters of the base (examples/lora.yml). */
	snprintf(args, sizeof args, "%s --seed 11 --lora 8 --lora-targets "
	    "q_proj,k_proj,v_proj,o_proj", shape);
	tl_gen_at(dir, "demo/lora-chat", args);
	snprintf(args, sizeof args, "%s --seed 12 --lora 16 --lora-targets "
	    "gate_proj,up_proj,down_proj --rslora", shape);
	tl_gen_at(dir, "demo/lora-code", args);
}

/* A file of several documents: a pipeline (examples/pipeline.yml). */
static bool
is_pipeline(const char *name)
{
	char path[4096], *text;
	bool yes;

	snprintf(path, sizeof path, "%s/%s.yml", examples, name);
	text = tl_read(path, NULL);
	yes = text != NULL && strstr(text, "\n---\n") != NULL;
	free(text);
	return yes;
}

static void
run_example(const char *name)
{
	char *o = NULL, path[4096], *card;
	int rc;

	rc = tl_runf(&o, "cd %s && %s run %s/%s.yml run-%s --quiet "
	    "--random-seed 5 --memory 8M 2>&1", dir, tl_mergectl, examples,
	    name, name);
	ok_int_eq(rc, 0, "%s: mergectl run exits 0", name);
	if (rc != 0)
		tap_diag("%s", o);
	free(o);
	snprintf(path, sizeof path, "%s/run-%s/model.safetensors", dir, name);
	ok(tl_exists(path), "%s: the model is written", name);
	snprintf(path, sizeof path, "%s/run-%s/README.md", dir, name);
	card = tl_read(path, NULL);
	ok(card != NULL && strstr(card, "merge method") != NULL,
	    "%s: with its model card", name);
	if (is_pipeline(name))
		ok(card != NULL && strstr(card, "### Pipeline") != NULL,
		    "%s: a pipeline, whose card lists its stages", name);
	free(card);
}

/* Every example submitted at once to one daemon, then each watched. */
static void
daemon_examples(char **names, size_t n)
{
	char *o = NULL, a[4096], b[4096];
	int ids[MAX_EXAMPLES], rc;
	size_t i;

	snprintf(sock, sizeof sock, "%s/d.sock", dir);
	rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s XDG_STATE_HOME=%s/state "
	    "MERGED_BIN=%s %s daemon start -q 2>&1", dir, sock, dir,
	    tl_merged, tl_mergectl);
	ok_int_eq(rc, 0, "a daemon starts");
	free(o);
	for (i = 0; i < n; i++) {
		rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s %s submit %s/%s.yml "
		    "-o daemon-%s --random-seed 5 --quiet 2>&1", dir, sock,
		    tl_mergectl, examples, names[i], names[i]);
		ids[i] = rc == 0 && o != NULL ? atoi(o) : 0;
		if (ids[i] == 0)
			tap_diag("submit %s: %s", names[i], o ? o : "");
		free(o);
	}
	for (i = 0; i < n; i++) {
		rc = tl_runf(&o, "MERGED_SOCKET=%s %s watch %d --quiet 2>&1",
		    sock, tl_mergectl, ids[i]);
		ok(ids[i] > 0 && rc == 0, "%s: the daemon's job %d succeeds",
		    names[i], ids[i]);
		if (rc != 0)
			tap_diag("%s", o ? o : "");
		free(o);
		snprintf(a, sizeof a, "run-%s/model.safetensors", names[i]);
		snprintf(b, sizeof b, "daemon-%s/model.safetensors", names[i]);
		ok(tl_same_at(dir, a, b), "%s: the same bytes as mergectl run",
		    names[i]);
	}
	rc = tl_runf(&o, "MERGED_SOCKET=%s %s daemon stop -q 2>&1", sock,
	    tl_mergectl);
	ok_int_eq(rc, 0, "the daemon stops");
	free(o);
}

int
main(int argc, char **argv)
{
	char *names[MAX_EXAMPLES], *m;
	const char *reg[GRAPH_MAX_METHODS];
	size_t n, i, j, nreg;
	bool found;

	tl_init(argc, argv);
	examples = argc > 5 ? argv[5] : "examples";
	tap_plan_lazy();
	dir = tl_tmpdir("examples");
	gen_models();
	n = tl_list(examples, ".yml", names, MAX_EXAMPLES);
	ok(n >= 20, "examples/ holds %zu configs", n);
	nreg = method_names(reg, GRAPH_MAX_METHODS);
	for (j = 0; j < nreg; j++) {
		found = false;
		for (i = 0; i < n && !found; i++) {
			m = method_of(names[i]);
			found = m != NULL && strcmp(m, reg[j]) == 0;
			free(m);
		}
		ok(found, "an example uses %s", reg[j]);
	}
	for (i = 0; i < n; i++)
		run_example(names[i]);
	daemon_examples(names, n);
	for (i = 0; i < n; i++)
		free(names[i]);
	return tap_done();
}
