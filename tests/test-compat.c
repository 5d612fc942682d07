/* SPDX-License-Identifier: MIT */
/*
 * test-compat.c: the compatibility suite (tests/compat/): configs in the
 * shapes people publish, each run with a mergekit-yaml command line on
 * generated models, asserting what mergekit would do: accept it with the
 * same tensors, accept it with a warning, or refuse it for the same
 * reason.  mergekit cannot run here, so each expectation is written by
 * hand in the config's opening comment, citing MERGEKIT.md:
 *
 *   # cite: MERGEKIT.md Part B 4.1 ...  where the expectation comes from
 *   # expect: ok | refused              exit 0, or exit 3 (nothing written)
 *   # args: ...                         more options on the command line
 *   # stderr: TEXT                      said on stderr (any number)
 *   # no-stderr: TEXT                   not said
 *   # same-tensors: MODEL               the output's tensor names are MODEL's
 *   # layers: N                         config.json's layer count is N
 *   # tensor: NAME METHOD               plan --json merges NAME with METHOD
 *   # config: KEY VALUE                 config.json has "KEY": VALUE
 *
 * Models (llama-shaped, 4 layers): base, tuned and tuned2 (fine-tunes of
 * base), tied and tied2 (embedding-tied), qwen (another family), chatty
 * (chat tokens added past base's vocabulary), binmodel (tuned, as sharded
 * pytorch_model.bin checkpoints).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"

#define MAX_CONFIGS 128

static const char *dir;
static char compat[4096];
static char mk[4096];

/* The mergekit-style command line every config runs with. */
static const char mk_args[] = "--copy-tokenizer --lazy-unpickle "
    "--write-model-card --out-shard-size 5B --safe-serialization";

static int
by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The value of each "# key: value" line, in turn (*pos: where to go on). */
static char *
directive(const char *text, const char *key, const char **pos)
{
	char pat[64];
	const char *p, *end;

	snprintf(pat, sizeof pat, "# %s: ", key);
	for (p = *pos; (p = strstr(p, pat)) != NULL; p++) {
		if (p != text && p[-1] != '\n')
			continue;
		p += strlen(pat);
		end = strchr(p, '\n');
		*pos = end != NULL ? end : p + strlen(p);
		return strndup(p, (size_t)(*pos - p));
	}
	return NULL;
}

/* The sorted tensor names of a model directory, joined by newlines. */
static char *
tensor_names(const char *model)
{
	struct tl_st *st = NULL;
	size_t nst = 0, i, j, n = 0, len = 1;
	char path[4096], **v = NULL, *out;

	snprintf(path, sizeof path, "%s/%s", dir, model);
	if (tl_model_load(path, &st, &nst) != 0)
		return NULL;
	for (i = 0; i < nst; i++)
		for (j = 0; j < st[i].n; j++) {
			v = realloc(v, (n + 1) * sizeof *v);
			v[n++] = st[i].t[j].name;
			len += strlen(st[i].t[j].name) + 1;
		}
	qsort(v, n, sizeof *v, by_name);
	out = calloc(1, len);
	for (i = 0; i < n; i++) {
		strcat(out, v[i]);
		strcat(out, "\n");
	}
	free(v);
	tl_model_free(st, nst);
	return out;
}

static void
check_ok(const char *name, const char *text, const char *out)
{
	const char *pos;
	char *v, *a, *b, *plan = NULL, want[512], path[4096], *cfg;
	int rc;

	snprintf(path, sizeof path, "%s/%s/config.json", dir, out);
	cfg = tl_read(path, NULL);
	for (pos = text; (v = directive(text, "same-tensors", &pos)) != NULL;
	    free(v)) {
		a = tensor_names(out);
		b = tensor_names(v);
		ok(a != NULL && b != NULL && strcmp(a, b) == 0, "%s: the "
		    "tensors of %s", name, v);
		free(a);
		free(b);
	}
	for (pos = text; (v = directive(text, "layers", &pos)) != NULL;
	    free(v)) {
		snprintf(want, sizeof want, "\"num_hidden_layers\": %s", v);
		ok(cfg != NULL && strstr(cfg, want) != NULL, "%s: %s layers",
		    name, v);
	}
	for (pos = text; (v = directive(text, "config", &pos)) != NULL;
	    free(v)) {
		a = strchr(v, ' ');
		if (a == NULL)
			continue;
		snprintf(want, sizeof want, "\"%.*s\": %s", (int)(a - v), v,
		    a + 1);
		ok(cfg != NULL && strstr(cfg, want) != NULL, "%s: config.json "
		    "has %s", name, want);
	}
	free(cfg);
	pos = text;
	if ((v = directive(text, "tensor", &pos)) == NULL)
		return;
	free(v);
	rc = tl_runf(&plan, "cd %s && %s plan %s/%s.yml --json "
	    "--random-seed 1 2>/dev/null", dir, tl_mergectl, compat, name);
	ok_int_eq(rc, 0, "%s: plan --json", name);
	for (pos = text; (v = directive(text, "tensor", &pos)) != NULL;
	    free(v)) {
		a = strchr(v, ' ');
		if (a == NULL)
			continue;
		snprintf(want, sizeof want, "{\"name\":\"%.*s\",\"method\":"
		    "\"%s\"", (int)(a - v), v, a + 1);
		ok(plan != NULL && strstr(plan, want) != NULL, "%s: %.*s is "
		    "merged with %s", name, (int)(a - v), v, a + 1);
	}
	free(plan);
}

static void
run_config(const char *name)
{
	char path[8192], out[256], *text, *v, *o = NULL, *args;
	const char *pos;
	int rc, want;

	snprintf(path, sizeof path, "%s/%s.yml", compat, name);
	if ((text = tl_read(path, NULL)) == NULL) {
		ok(0, "%s: readable", name);
		return;
	}
	pos = text;
	v = directive(text, "cite", &pos);
	ok(v != NULL && (strstr(v, "MERGEKIT.md") != NULL ||
	    strstr(v, "issue") != NULL), "%s: cites where its expectation "
	    "comes from", name);
	free(v);
	pos = text;
	v = directive(text, "expect", &pos);
	want = v != NULL && strcmp(v, "ok") == 0 ? 0 : v != NULL &&
	    strcmp(v, "refused") == 0 ? 3 : -1;
	ok(want >= 0, "%s: says what to expect", name);
	free(v);
	pos = text;
	args = directive(text, "args", &pos);
	snprintf(out, sizeof out, "out-%s", name);
	rc = tl_runf(&o, "cd %s && %s %s %s %s %s 2>&1", dir, mk, path, out,
	    mk_args, args != NULL ? args : "");
	free(args);
	ok_int_eq(rc, want, "%s: exit %d", name, want);
	if (rc != want)
		tap_diag("%s", o != NULL ? o : "");
	for (pos = text; (v = directive(text, "stderr", &pos)) != NULL;
	    free(v))
		ok_str_has(o, v, "%s: says so", name);
	for (pos = text; (v = directive(text, "no-stderr", &pos)) != NULL;
	    free(v))
		ok(o != NULL && strstr(o, v) == NULL, "%s: does not say '%s'",
		    name, v);
	if (want == 0 && rc == 0)
		check_ok(name, text, out);
	if (want == 3) {
		snprintf(path, sizeof path, "%s/%s", dir, out);
		ok(!tl_exists(path), "%s: nothing written", name);
	}
	free(o);
	free(text);
}

static void
gen_models(void)
{
	static const char shape[] = "--family llama --layers 4 --hidden 64 "
	    "--intermediate 128 --heads 4 --kv-heads 2 --vocab 128";
	char args[512];

	snprintf(args, sizeof args, "%s --seed 1", shape);
	tl_gen_at(dir, "base", args);
	snprintf(args, sizeof args, "%s --seed 2 --finetune-of 1 --delta "
	    "0.01", shape);
	tl_gen_at(dir, "tuned", args);
	snprintf(args, sizeof args, "%s --seed 3 --finetune-of 1 --delta "
	    "0.01", shape);
	tl_gen_at(dir, "tuned2", args);
	snprintf(args, sizeof args, "%s --seed 4 --tied", shape);
	tl_gen_at(dir, "tied", args);
	snprintf(args, sizeof args, "%s --seed 5 --tied --finetune-of 4 "
	    "--delta 0.01", shape);
	tl_gen_at(dir, "tied2", args);
	tl_gen_at(dir, "qwen", "--family qwen2 --layers 4 --hidden 64 "
	    "--intermediate 128 --heads 4 --kv-heads 2 --vocab 128 --seed 6");
	/* Another model whose tokenizer adds chat tokens past base's. */
	snprintf(args, sizeof args, "%s --seed 7 --added-tokens "
	    "'<|im_start|>:special,<|im_end|>:special'", shape);
	tl_gen_at(dir, "chatty", args);
	/* tuned again, as a sharded torch checkpoint (pytorch_model.bin). */
	snprintf(args, sizeof args, "%s --seed 2 --finetune-of 1 --delta "
	    "0.01 --format bin --shard-size 100K", shape);
	tl_gen_at(dir, "binmodel", args);
}

int
main(int argc, char **argv)
{
	char *names[MAX_CONFIGS];
	size_t n, i;

	tl_init(argc, argv);
	tap_plan_lazy();
	/* tests/compat beside the examples directory the suite is given. */
	snprintf(compat, sizeof compat, "%s/../tests/compat",
	    argc > 5 ? argv[5] : "examples");
	dir = tl_tmpdir("compat");
	gen_models();
	snprintf(mk, sizeof mk, "%s/mergekit-yaml", dir);
	if (symlink(tl_mergectl, mk) != 0)
		return 99;
	n = tl_list(compat, ".yml", names, MAX_CONFIGS);
	ok(n >= 25, "tests/compat holds %zu configs", n);
	for (i = 0; i < n; i++) {
		run_config(names[i]);
		free(names[i]);
	}
	return tap_done();
}
