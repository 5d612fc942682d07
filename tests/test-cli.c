/* SPDX-License-Identifier: MIT */
/*
 * test-cli.c: mergekit-yaml command lines run unchanged (MERGEKIT.md
 * Part A 18, Part B §6.1).
 *
 * Every option of mergekit-yaml is given to mergectl run (and plan, and
 * submit where the daemon does not decide it), through the mergekit-yaml
 * name as a script would call it: the options that change the merge do
 * what mergekit does (checked on the files written), the ones that mean
 * nothing here say so in one line each and change no byte of the output,
 * and the one mergectl cannot honour (--no-safe-serialization) is a usage
 * error saying why.  Option typos get a suggestion.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"

#define HASH "0123456789abcdef0123456789abcdef01234567"

static const char *dir;
static char mk[4096];		/* the mergekit-yaml name, a symlink */

static const char ties[] =
    "merge_method: ties\n"
    "base_model: ./base\n"
    "models:\n"
    "  - model: ./tuned\n"
    "    parameters: {weight: 0.6, density: 0.5}\n"
    "  - model: ./tuned2\n"
    "    parameters: {weight: 0.4, density: 0.7}\n"
    "parameters: {normalize: true}\n"
    "dtype: bfloat16\n";

/* Lines of text that contain s. */
static int
count_lines_with(const char *text, const char *s)
{
	const char *p = text;
	int n = 0;

	while (p != NULL && (p = strstr(p, s)) != NULL) {
		n++;
		p = strchr(p, '\n');
	}
	return n;
}

static bool
exists_in(const char *out, const char *file)
{
	char path[4096];

	snprintf(path, sizeof path, "%s/%s/%s", dir, out, file);
	return tl_exists(path);
}

/*
 * A command line as published for mergekit, with every option that means
 * nothing here: exit 0, one note per option asked for, none for the
 * --no- forms, and the very bytes of a plain mergectl run
 * (--lora-merge-dtype is no note: it rounds adapted weights, and this
 * merge has no adapter).
 */
static void
test_published_line(void)
{
	static const char *const noted[] = { "--cuda", "--low-cpu-memory",
		"--lazy-unpickle", "--trust-remote-code", "--clone-tensors",
		"--async-write", "--read-to-gpu", "--multi-gpu", "--gpu-rich",
		"--write-threads", "--device", "--lora-merge-cache" };
	char *o = NULL, note[128];
	size_t i;
	int rc;

	rc = tl_runf(&o, "cd %s && %s ties.yml ./out-mk --cuda --device cuda "
	    "--copy-tokenizer --allow-crimes --out-shard-size 1B "
	    "--lazy-unpickle --write-model-card --random-seed 7 "
	    "--low-cpu-memory --trust-remote-code --clone-tensors "
	    "--async-write --write-threads 4 --read-to-gpu --multi-gpu "
	    "--gpu-rich --safe-serialization --lora-merge-cache /tmp/lmc "
	    "--lora-merge-dtype bfloat16 --no-cuda --no-async-write "
	    "--num-threads 2 -j 1 --quiet 2>&1", dir, mk);
	ok_int_eq(rc, 0, "mergekit-yaml with all its options exits 0");
	if (rc != 0)
		tap_diag("%s", o ? o : "");
	for (i = 0; i < sizeof noted / sizeof *noted; i++) {
		snprintf(note, sizeof note, "note: %s changes nothing: ",
		    noted[i]);
		ok_int_eq(count_lines_with(o, note), 1, "one line says %s "
		    "changes nothing", noted[i]);
	}
	ok_int_eq(count_lines_with(o, "note:"), (int)(sizeof noted /
	    sizeof *noted), "and no other note (none for --no-cuda, "
	    "--no-async-write, --safe-serialization)");
	ok(count_lines_with(o, "mergekit-yaml: note: --cuda changes "
	    "nothing: mergectl merges on the CPU") == 1,
	    "notes carry the mergekit-yaml name and what happens instead");
	free(o);
	rc = tl_runf(&o, "cd %s && %s run ties.yml ./out-plain --random-seed "
	    "7 --quiet 2>&1", dir, tl_mergectl);
	ok_int_eq(rc, 0, "the plain mergectl run exits 0");
	free(o);
	ok(tl_same_at(dir, "out-mk/model.safetensors",
	    "out-plain/model.safetensors"), "the same tensors, byte for byte");
	ok(tl_same_at(dir, "out-mk/config.json", "out-plain/config.json") &&
	    tl_same_at(dir, "out-mk/tokenizer.json", "out-plain/tokenizer.json"),
	    "the same config.json and tokenizer");
}

/* The --x/--no-x pairs that change what is written. */
static void
test_pairs(void)
{
	char *o = NULL;
	int rc;

	rc = tl_runf(&o, "cd %s && %s ties.yml out-notok --no-copy-tokenizer "
	    "--no-write-model-card --quiet 2>&1", dir, mk);
	ok_int_eq(rc, 0, "--no-copy-tokenizer --no-write-model-card: exit 0");
	free(o);
	ok(!exists_in("out-notok", "tokenizer.json") &&
	    !exists_in("out-notok", "tokenizer_config.json"),
	    "--no-copy-tokenizer: no tokenizer files");
	ok(!exists_in("out-notok", "README.md") &&
	    !exists_in("out-notok", "mergekit_config.yml"),
	    "--no-write-model-card: no README.md nor mergekit_config.yml");
	ok(exists_in("out-notok", "config.json") &&
	    exists_in("out-notok", "model.safetensors"), "but the model");
	rc = tl_runf(&o, "cd %s && %s ties.yml out-again --no-copy-tokenizer "
	    "--copy-tokenizer --no-model-card --write-model-card --quiet "
	    "2>&1", dir, mk);
	ok_int_eq(rc, 0, "the last of a pair wins: exit 0");
	free(o);
	ok(exists_in("out-again", "tokenizer.json") &&
	    exists_in("out-again", "README.md"), "--copy-tokenizer and "
	    "--write-model-card after their --no- forms: both written");
	rc = tl_runf(&o, "cd %s && %s ties.yml out-shards --out-shard-size "
	    "300K --quiet 2>&1 && ls out-shards | grep -c "
	    "'^model-0000[1-9]-of-0000[1-9].safetensors$'", dir, mk);
	ok_int_eq(rc, 0, "--out-shard-size 300K: exit 0");
	ok(o != NULL && atoi(o) > 1 && exists_in("out-shards",
	    "model.safetensors.index.json"), "300K shards: %d of them, and "
	    "an index", o ? atoi(o) : 0);
	free(o);
	rc = tl_runf(&o, "cd %s && %s ties.yml out-unsafe "
	    "--no-safe-serialization 2>&1", dir, mk);
	ok_int_eq(rc, 2, "--no-safe-serialization is a usage error");
	ok_str_has(o, "--no-safe-serialization: outputs are always "
	    "safetensors", "saying why");
	free(o);
	ok(!exists_in("out-unsafe", "config.json"), "and nothing is written");
}

/* --transformers-cache is where model references are looked up. */
static void
test_transformers_cache(void)
{
	char *o = NULL;
	int rc;

	rc = tl_runf(&o, "cd %s && H=cache/models--acme--base && "
	    "mkdir -p $H/refs $H/snapshots/%s && cp base/* $H/snapshots/%s/ "
	    "&& printf '%s\\n' > $H/refs/main && printf 'merge_method: "
	    "passthrough\\nmodels:\\n  - model: acme/base\\n' > hub.yml", dir,
	    HASH, HASH, HASH);
	ok_int_eq(rc, 0, "a Hugging Face cache under cache/");
	free(o);
	rc = tl_runf(&o, "cd %s && HF_HUB_CACHE=%s/nowhere %s hub.yml out-hub "
	    "--transformers-cache %s/cache --quiet 2>&1", dir, dir, mk, dir);
	ok_int_eq(rc, 0, "--transformers-cache DIR: acme/base is found there");
	if (rc != 0)
		tap_diag("%s", o ? o : "");
	free(o);
	rc = tl_runf(&o, "cd %s && printf 'merge_method: passthrough\n"
	    "models:\n  - model: ./base\n' > local.yml && %s run local.yml "
	    "out-local --quiet 2>&1", dir, tl_mergectl);
	ok_int_eq(rc, 0, "the same merge of ./base");
	free(o);
	ok(tl_same_at(dir, "out-hub/model.safetensors",
	    "out-local/model.safetensors"), "gives the same bytes: the cache's "
	    "snapshot was merged");
	rc = tl_runf(&o, "cd %s && HF_HUB_CACHE=%s/nowhere %s hub.yml "
	    "out-hub2 --quiet 2>&1", dir, dir, mk);
	ok_int_eq(rc, 3, "without it, $HF_HUB_CACHE is searched: not found");
	free(o);
}

/* Usage errors: a typo is named with the nearest option. */
static void
test_usage_errors(void)
{
	char *o = NULL;
	int rc;

	rc = tl_runf(&o, "cd %s && %s ties.yml out-x --random-sed 3 2>&1", dir,
	    mk);
	ok_int_eq(rc, 2, "an unknown option is a usage error");
	ok_str_has(o, "mergekit-yaml: unknown option '--random-sed' (did you "
	    "mean --random-seed?)", "with the nearest option");
	free(o);
	rc = tl_runf(&o, "cd %s && %s run ties.yml out-x --memory 2>&1", dir,
	    tl_mergectl);
	ok_int_eq(rc, 2, "an option without its value is a usage error");
	ok_str_has(o, "mergectl run: --memory needs a value", "saying so");
	free(o);
	rc = tl_runf(&o, "cd %s && %s ties.yml out-x -j 0 2>&1", dir, mk);
	ok_int_eq(rc, 2, "-j 0 is a usage error");
	ok_str_has(o, "-j: '0' is not a number from 1 to 256", "saying why");
	free(o);
	rc = tl_runf(&o, "cd %s && %s ties.yml out-x --lora-merge-dtype bf16 "
	    "2>&1", dir, mk);
	ok_int_eq(rc, 2, "--lora-merge-dtype takes mergekit's dtype names");
	free(o);
	rc = tl_runf(&o, "%s --help", mk);
	ok(rc == 0 && strncmp(o, "usage: mergekit-yaml CONFIG OUT", 31) == 0,
	    "mergekit-yaml --help names itself");
	ok_str_has(o, "--transformers-cache DIR", "and lists the options");
	free(o);
}

/* -v says what the plan is before merging. */
static void
test_verbose(void)
{
	char *o = NULL;
	int rc;

	rc = tl_runf(&o, "cd %s && %s ties.yml out-v -v --quiet 2>&1", dir,
	    mk);
	ok_int_eq(rc, 0, "-v: exit 0");
	ok_str_has(o, "architecture LlamaForCausalLM from ./base (the base "
	    "model)", "-v names the architecture and why");
	ok_str_has(o, "tensors in 1 file: reads", "and the plan's size");
	free(o);
}

/* plan: a summary; the per-tensor table only with --tensors. */
static void
test_plan_summary(void)
{
	char *o = NULL;
	int rc;

	rc = tl_runf(&o, "cd %s && %s plan ties.yml 2>&1", dir, tl_mergectl);
	ok_int_eq(rc, 0, "plan: exit 0");
	ok(o != NULL && strstr(o, "method        ties, 2 output layers, ") !=
	    NULL && strstr(o, "copied unchanged)") != NULL && strstr(o,
	    "memory        peak ") != NULL && strstr(o, " or more\n") !=
	    NULL && strstr(o, "TENSOR") == NULL && count_lines_with(o,
	    "model.layers.") == 0, "plan prints a summary, no tensor "
	    "table:\n%s", o);
	free(o);
	rc = tl_runf(&o, "cd %s && %s plan ties.yml --tensors 2>&1", dir,
	    tl_mergectl);
	ok(rc == 0 && o != NULL && strstr(o, "TENSOR") != NULL &&
	    count_lines_with(o, "model.layers.1.mlp.up_proj.weight ") == 1,
	    "plan --tensors adds the table");
	free(o);
}

/*
 * submit takes the same options, except those that choose threads or
 * devices: the daemon decides those.  Refused before any connection.
 */
static void
test_submit(void)
{
	static const char *const refused[] = { "--cuda", "--device cpu",
		"-j 2", "--num-threads 2", "--multi-gpu", "--gpu-rich",
		"--read-to-gpu", "--low-cpu-memory", "--write-threads 2",
		"--no-cuda" };
	char *o = NULL, sock[4096];
	size_t i;
	int rc;

	snprintf(sock, sizeof sock, "%s/none.sock", dir);
	for (i = 0; i < sizeof refused / sizeof *refused; i++) {
		rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s %s submit ties.yml "
		    "-o out-s %s 2>&1", dir, sock, tl_mergectl, refused[i]);
		ok(rc == 2 && strstr(o, "the daemon decides") != NULL,
		    "submit %s: usage error, the daemon decides (%d)",
		    refused[i], rc);
		free(o);
	}
	rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s XDG_STATE_HOME=%s/state "
	    "MERGED_BIN=%s %s daemon start -q 2>&1", dir, sock, dir,
	    tl_merged, tl_mergectl);
	ok_int_eq(rc, 0, "a daemon starts");
	free(o);
	rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s %s submit ties.yml "
	    "-o out-sub --wait --quiet --random-seed 7 --lazy-unpickle "
	    "--trust-remote-code --copy-tokenizer --write-model-card "
	    "--allow-crimes --safe-serialization 2>&1", dir, sock,
	    tl_mergectl);
	ok_int_eq(rc, 0, "submit with mergekit's other options: done");
	ok_int_eq(count_lines_with(o, "note:"), 2, "two notes");
	free(o);
	ok(tl_same_at(dir, "out-sub/model.safetensors",
	    "out-plain/model.safetensors"), "the same bytes as mergectl run");
	rc = tl_runf(&o, "MERGED_SOCKET=%s %s daemon stop -q 2>&1", sock,
	    tl_mergectl);
	ok_int_eq(rc, 0, "the daemon stops");
	free(o);
}

/* Every command's --help says what it does and lists its options. */
static void
test_help(void)
{
	static const char *const cmds[] = { "submit", "status", "list",
		"watch", "logs", "cancel", "resume", "rm", "clean", "daemon",
		"plan", "run" };
	char *o = NULL;
	size_t i;
	int rc;

	for (i = 0; i < sizeof cmds / sizeof *cmds; i++) {
		rc = tl_runf(&o, "%s %s --help", tl_mergectl, cmds[i]);
		ok(rc == 0 && strncmp(o, "usage: mergectl ", 16) == 0 &&
		    strstr(o, "--json") != NULL && strchr(o, '\n') !=
		    strrchr(o, '\n'), "%s --help: usage and its options", cmds[i]);
		free(o);
	}
	rc = tl_runf(&o, "%s submit --help", tl_mergectl);
	ok_str_has(o, "-q, --quiet", "submit --help lists -q");
	free(o);
	rc = tl_runf(&o, "%s statsu 2>&1", tl_mergectl);
	ok_int_eq(rc, 2, "an unknown command: exit 2");
	ok_str_has(o, "unknown command 'statsu' (did you mean status?)",
	    "with the nearest command");
	ok(strstr(o, "exit codes") == NULL, "in one line, not the whole usage");
	free(o);
}

/* --json: every error, mergectl's own included, is one object on stdout. */
static void
test_json_errors(void)
{
	char *o = NULL, sock[4096];
	int rc;

	tl_write_at(dir, "bad.yml", "merge_method: linear\nmodels:\n"
	    "  - model: ./nowhere\n    parameters: {weight: 1}\n");
	rc = tl_runf(&o, "cd %s && %s run bad.yml out-j --json 2>/dev/null",
	    dir, tl_mergectl);
	ok_int_eq(rc, 3, "run --json, a config error: exit 3");
	ok(o != NULL && strncmp(o, "{\"ok\":false,\"error\":{\"code\":"
	    "\"bad_config\",\"msg\":\"1 problem found; nothing was read or "
	    "written\",\"problems\":[\"bad.yml:3:12: error: model './nowhere' "
	    "not found", 111) == 0, "and one error object on stdout: %s",
	    o ? o : "");
	free(o);
	snprintf(sock, sizeof sock, "%s/none.sock", dir);
	rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s %s submit bad.yml -o out-j "
	    "--json 2>/dev/null", dir, sock, tl_mergectl);
	ok_int_eq(rc, 3, "submit --json, caught before sending: exit 3");
	ok_str_has(o, "\"code\":\"bad_config\",\"msg\":\"1 problem found; "
	    "nothing was submitted\"", "an error object on stdout");
	free(o);
	rc = tl_runf(&o, "%s run --json --random-sed 1 2>/dev/null",
	    tl_mergectl);
	ok_int_eq(rc, 2, "run --json, a usage error: exit 2");
	ok_str_has(o, "{\"ok\":false,\"error\":{\"code\":\"usage\",\"msg\":"
	    "\"unknown option '--random-sed' (did you mean --random-seed?)\"}}",
	    "an error object on stdout");
	free(o);
	rc = tl_runf(&o, "MERGED_SOCKET=%s %s status 7 --json 2>/dev/null",
	    sock, tl_mergectl);
	ok_int_eq(rc, 5, "status --json, no daemon: exit 5");
	ok_str_has(o, "{\"ok\":false,\"error\":{\"code\":\"no_daemon\","
	    "\"msg\":\"no daemon answers on ", "an error object on stdout");
	free(o);
	rc = tl_runf(&o, "cd %s && %s run ties.yml out-plain --json "
	    "2>/dev/null", dir, tl_mergectl);
	ok_int_eq(rc, 4, "run --json, the output exists: exit 4");
	ok_str_has(o, "\"error\":{\"code\":\"exists\",\"msg\":", "an "
	    "error object with its code");
	free(o);
}

int
main(int argc, char **argv)
{
	static const char shape[] = "--family llama --layers 2 --hidden 128 "
	    "--intermediate 256 --heads 4 --kv-heads 2 --vocab 500";
	char args[512], cfg[4096];

	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("cli");
	snprintf(args, sizeof args, "%s --seed 1", shape);
	tl_gen_at(dir, "base", args);
	snprintf(args, sizeof args, "%s --seed 2 --finetune-of 1 --delta 0.01",
	    shape);
	tl_gen_at(dir, "tuned", args);
	snprintf(args, sizeof args, "%s --seed 3 --finetune-of 1 --delta 0.01",
	    shape);
	tl_gen_at(dir, "tuned2", args);
	snprintf(cfg, sizeof cfg, "%s/ties.yml", dir);
	if (tl_write(cfg, ties) != 0)
		return 99;
	/* As `meson configure -Dmergekit_compat=true` installs it. */
	snprintf(mk, sizeof mk, "%s/mergekit-yaml", dir);
	if (symlink(tl_mergectl, mk) != 0)
		return 99;
	test_published_line();
	test_pairs();
	test_transformers_cache();
	test_usage_errors();
	test_verbose();
	test_plan_summary();
	test_submit();
	test_help();
	test_json_errors();
	return tap_done();
}
