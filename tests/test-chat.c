/* SPDX-License-Identifier: MIT */
/*
 * test-chat.c: chat_template (MERGEKIT.md Part B 1.8, 2.9) end to end.
 *
 * Each built-in template is merged into a model and the output's
 * tokenizer_config.json is rendered by Hugging Face's own Jinja
 * implementation (@huggingface/jinja under node, tests/js/render-chat.mjs)
 * for one conversation; the prompt must be the standard format's, written
 * out here by hand.  Also: a literal template; "auto" choosing the
 * template most models have, from tokenizer_config.json strings, a list of
 * named templates and chat_template.jinja files alike; the donor's other
 * tokenizer files and keys kept; its chat_template.jinja not copied (it
 * would win over the new template); plan naming the template; a bad value
 * refused with a suggestion; --no-copy-tokenizer and a donor without a
 * tokenizer warned about.  node and the package come from
 * contrib/deps.sh --test; under CI=true their absence fails the test.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tap.h"
#include "testd.h"
#include "testlib.h"

static const char *dir;
static const char *modules;	/* node_modules with @huggingface/jinja */
static const char *script;	/* tests/js/render-chat.mjs */

static const char conversation[] =
    "[{\"role\": \"system\", \"content\": \"You are terse.\"},\n"
    " {\"role\": \"user\", \"content\": \"Hi\"},\n"
    " {\"role\": \"assistant\", \"content\": \"Hello.\"},\n"
    " {\"role\": \"user\", \"content\": \"Sum 2+2?\"}]\n";

/* The standard prompt formats, for that conversation, bos <s>, eos </s>. */
static const struct {
	const char *name;
	const char *prompt;
} formats[] = {
	{ "alpaca", "You are terse.\n\n### Instruction:\nHi\n\n"
	    "### Response:\nHello.\n\n### Instruction:\nSum 2+2?\n\n"
	    "### Response:\n" },
	{ "chatml", "<|im_start|>system\nYou are terse.<|im_end|>\n"
	    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello."
	    "<|im_end|>\n<|im_start|>user\nSum 2+2?<|im_end|>\n"
	    "<|im_start|>assistant\n" },
	{ "exaone", "[|system|]You are terse.[|endofturn|]\n[|user|]Hi\n"
	    "[|assistant|]Hello.[|endofturn|]\n[|user|]Sum 2+2?\n"
	    "[|assistant|]" },
	{ "llama3", "<s><|start_header_id|>system<|end_header_id|>\n\n"
	    "You are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>"
	    "\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
	    "Hello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
	    "Sum 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
	    "\n\n" },
	{ "mistral", "<s> [INST] You are terse.\n\nHi [/INST] Hello.</s> "
	    "[INST] Sum 2+2? [/INST]" },
};

static bool have_node;

/* Whether node and @huggingface/jinja are there; fails under CI. */
static void
check_node(void)
{
	bool ci = getenv("CI") != NULL && strcmp(getenv("CI"), "true") == 0;
	char pkg[4096];

	snprintf(pkg, sizeof pkg, "%s/@huggingface/jinja/package.json",
	    modules ? modules : "");
	have_node = modules != NULL && tl_exists(pkg) &&
	    tl_runf(NULL, "node --version >/dev/null 2>&1") == 0;
	if (have_node)
		return;
	if (ci)
		ok(0, "node and @huggingface/jinja are installed (contrib/"
		    "deps.sh --test)");
	else
		ok(1, "# SKIP node or @huggingface/jinja missing: run "
		    "contrib/deps.sh --test");
}

static char *
at(const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);

	if (p == NULL)
		exit(99);
	snprintf(p, n, "%s/%s", dir, name);
	return p;
}

/* A merge of a and b with the given extra config lines and options. */
static int
merge(const char *out, const char *extra, const char *opts, char **err)
{
	char cfg[8192];

	snprintf(cfg, sizeof cfg, "models:\n  - model: ./a\n"
	    "    parameters: {weight: 0.5}\n  - model: ./b\n"
	    "    parameters: {weight: 0.5}\nmerge_method: linear\n%s", extra);
	tl_write_at(dir, "chat.yml", cfg);
	return tl_runf(err, "cd %s && rm -rf %s && %s run chat.yml %s %s "
	    "2>&1", dir, out, tl_mergectl, out, opts);
}

/* The prompt node renders from out/tokenizer_config.json, or NULL. */
static char *
render(const char *out)
{
	char *o = NULL;
	int rc;

	rc = tl_runf(&o, "cd %s && node %s %s %s/tokenizer_config.json "
	    "conv.json 2>&1", dir, script, modules, out);
	if (rc != 0) {
		tap_diag("render: %s", o ? o : "");
		free(o);
		return NULL;
	}
	return o;
}

static cJSON *
json_at(const char *out, const char *file)
{
	char path[4096], *text;
	size_t len;
	cJSON *j;

	snprintf(path, sizeof path, "%s/%s/%s", dir, out, file);
	if ((text = tl_read(path, &len)) == NULL)
		return NULL;
	j = cJSON_Parse(text);
	free(text);
	return j;
}

static void
test_builtins(void)
{
	char out[64], extra[128], *o, *p;
	size_t i;

	for (i = 0; i < sizeof formats / sizeof *formats; i++) {
		snprintf(out, sizeof out, "out-%s", formats[i].name);
		snprintf(extra, sizeof extra, "chat_template: %s\n",
		    formats[i].name);
		o = NULL;
		ok(merge(out, extra, "--quiet", &o) == 0, "%s: the merge runs",
		    formats[i].name);
		free(o);
		if (!have_node)
			continue;
		p = render(out);
		ok(p != NULL && strcmp(p, formats[i].prompt) == 0,
		    "%s: Hugging Face's Jinja renders the standard prompt "
		    "from the output's tokenizer_config.json",
		    formats[i].name);
		if (p != NULL && strcmp(p, formats[i].prompt) != 0)
			tap_diag("got [%s]", p);
		free(p);
	}
}

/* The donor's other files and keys are kept; its .jinja is not. */
static void
test_files(void)
{
	cJSON *donor = json_at("a", "tokenizer_config.json"),
	    *out = json_at("out-chatml", "tokenizer_config.json"), *e;
	char *p1 = at("a/generation_config.json"),
	    *p2 = at("out-chatml/generation_config.json"),
	    *p3 = at("out-chatml/chat_template.jinja"),
	    *p4 = at("a/tokenizer.json"), *p5 = at("out-chatml/tokenizer.json");
	bool same = donor != NULL && out != NULL &&
	    cJSON_GetArraySize(donor) == cJSON_GetArraySize(out);

	cJSON_ArrayForEach(e, donor) {
		if (strcmp(e->string, "chat_template") != 0)
			same = same && cJSON_Compare(e,
			    cJSON_GetObjectItemCaseSensitive(out, e->string),
			    1);
	}
	ok(same, "every other key of the donor's tokenizer_config.json is "
	    "kept, and no key is added");
	ok(tl_files_equal(p1, p2) && tl_files_equal(p4, p5),
	    "generation_config.json and tokenizer.json are the donor's");
	ok(!tl_exists(p3), "the donor's chat_template.jinja, which would "
	    "win over the new template, is not copied");
	cJSON_Delete(donor);
	cJSON_Delete(out);
	free(p1);
	free(p2);
	free(p3);
	free(p4);
	free(p5);
}

static void
test_literal(void)
{
	char *o = NULL, *p;

	ok(merge("out-literal", "chat_template: \"{% for m in messages %}"
	    "{{ m['role'][0] + ':' + m['content'] + '|' }}{% endfor %}\"\n",
	    "--quiet", &o) == 0, "a literal template: the merge runs");
	free(o);
	if (!have_node)
		return;
	p = render("out-literal");
	ok(p != NULL && strcmp(p, "s:You are terse.|u:Hi|a:Hello.|"
	    "u:Sum 2+2?|") == 0, "a literal template renders as written");
	free(p);
}

/* auto: the template most models have, whatever file holds it. */
static void
test_auto(void)
{
	char *o = NULL;
	cJSON *out;
	const cJSON *t;
	int rc;

	/* a: genmodel's own template, in a chat_template.jinja too; b: X
	 * as a string; c: X as the "default" of a list. */
	rc = tl_runf(&o, "cd %s && printf 'models:\\n  - model: ./a\\n"
	    "    parameters: {weight: 1}\\n  - model: ./b\\n"
	    "    parameters: {weight: 1}\\n  - model: ./c\\n"
	    "    parameters: {weight: 1}\\nmerge_method: linear\\n"
	    "chat_template: auto\\n' > auto.yml && %s plan auto.yml 2>&1 | "
	    "grep '^chat template' && %s run auto.yml out-auto --quiet",
	    dir, tl_mergectl, tl_mergectl);
	ok(rc == 0 && o != NULL && strstr(o, "chat template auto: ./b's (2 "
	    "of the 3 models with a template have it): {{ 'X' }}") != NULL,
	    "auto: plan says it takes the template two of three models "
	    "have, the first seen");
	if (o != NULL)
		tap_diag("%s", o);
	free(o);
	out = json_at("out-auto", "tokenizer_config.json");
	t = cJSON_GetObjectItemCaseSensitive(out, "chat_template");
	ok(cJSON_IsString(t) && strcmp(t->valuestring,
	    "{{ 'X' }}{% for m in messages %}{{ m['content'] }}{% endfor %}")
	    == 0, "auto: the output holds it, stripped of white space");
	cJSON_Delete(out);
}

/* Empty templates are none; a template that is not text is refused. */
static void
test_auto_edges(void)
{
	char *o = NULL;
	int rc;

	if (tl_runf(&o, "cd %s && for m in e f g; do cp -r b $m; done && "
	    "sed -i 's/\"chat_template\": .*,$/\"chat_template\": \"\",/' "
	    "e/tokenizer_config.json && sed -i 's/\"chat_template\": .*,$/"
	    "\"chat_template\": \"  \\\\n \",/' f/tokenizer_config.json && "
	    "printf '{%%%% for m in messages %%%%}\\377{{ m }}{%%%% endfor "
	    "%%%%}' > g/chat_template.jinja && printf 'models:\\n"
	    "  - model: ./e\\n  - model: ./f\\n  - model: ./b\\n"
	    "merge_method: linear\\nparameters: {weight: 1}\\n"
	    "chat_template: auto\\n' > edges.yml && "
	    "sed 's#./e#./g#' edges.yml > bad-utf8.yml", dir) != 0) {
		tap_diag("%s", o ? o : "");
		exit(99);
	}
	free(o);
	o = NULL;
	rc = tl_runf(&o, "cd %s && %s plan edges.yml 2>&1 | grep "
	    "'^chat template'", dir, tl_mergectl);
	ok(rc == 0 && o != NULL && strstr(o, "chat template auto: ./b's (1 "
	    "of the 1 models with a template have it)") != NULL, "auto: "
	    "empty and blank templates count as none");
	if (o != NULL)
		tap_diag("%s", o);
	free(o);
	o = NULL;
	rc = tl_runf(&o, "cd %s && %s plan bad-utf8.yml 2>&1", dir,
	    tl_mergectl);
	ok(rc == 3 && o != NULL && strstr(o, "g/chat_template.jinja: its "
	    "chat template is not UTF-8 text") != NULL, "auto: a template "
	    "that is not UTF-8 is refused (exit 3), naming the file");
	if (rc != 3)
		tap_diag("exit %d: %s", rc, o ? o : "");
	free(o);
}

/* The daemon writes the same files as mergectl run. */
static void
test_daemon(void)
{
	char *o = NULL, *p1, *p2, *p3, *p4;
	pid_t pid;
	int id;

	td_init(dir);
	merge("out-run", "chat_template: llama3\n", "--quiet", &o);
	free(o);
	pid = td_start("", NULL);
	id = td_submit("chat.yml -o out-daemon");
	p1 = at("out-run/tokenizer_config.json");
	p2 = at("out-daemon/tokenizer_config.json");
	p3 = at("out-run/model.safetensors");
	p4 = at("out-daemon/model.safetensors");
	ok(id > 0 && td_wait_state(id, "done", 120000) &&
	    tl_files_equal(p1, p2) && tl_files_equal(p3, p4),
	    "through the daemon: tokenizer_config.json and the weights are "
	    "byte-identical to mergectl run's");
	td_stop(pid, SIGTERM);
	free(p1);
	free(p2);
	free(p3);
	free(p4);
}

static void
test_refusals(void)
{
	char *o = NULL, *p = at("out-nocopy/tokenizer_config.json");

	ok(merge("out-bad", "chat_template: chatm1\n", "", &o) == 3 &&
	    o != NULL && strstr(o, "'chat_template' is not 'auto', a "
	    "built-in template (alpaca, chatml, exaone, llama3, mistral) or "
	    "a Jinja template") != NULL && strstr(o, "did you mean 'chatml'?")
	    != NULL, "a bad value: exit 3, what is allowed, a suggestion");
	free(o);
	o = NULL;
	ok(merge("out-nocopy", "chat_template: chatml\n",
	    "--no-copy-tokenizer", &o) == 0 && o != NULL && strstr(o,
	    "chat_template is ignored: --no-copy-tokenizer writes no "
	    "tokenizer") != NULL && !tl_exists(p), "--no-copy-tokenizer: "
	    "a warning, and no tokenizer files");
	free(o);
	free(p);
}

int
main(int argc, char **argv)
{
	static const char shape[] = "--family llama --layers 2 --hidden 32 "
	    "--intermediate 64 --heads 4 --kv-heads 2 --vocab 300";
	struct timespec t0, t1;
	char args[256], *o = NULL;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	tl_init(argc, argv);
	tap_plan_lazy();
	modules = getenv("HF_NODE_MODULES");
	script = getenv("HF_RENDER_CHAT");
	dir = tl_tmpdir("chat");
	snprintf(args, sizeof args, "%s --seed 1", shape);
	tl_gen_at(dir, "a", args);
	snprintf(args, sizeof args, "%s --seed 2", shape);
	tl_gen_at(dir, "b", args);
	snprintf(args, sizeof args, "%s --seed 3", shape);
	tl_gen_at(dir, "c", args);
	tl_write_at(dir, "conv.json", conversation);
	/* a's template also as a file; b's and c's changed to X. */
	if (tl_runf(&o, "cd %s && echo '{{ bos_token }}' > "
	    "a/chat_template.jinja && sed -i 's/\"chat_template\": .*,$/"
	    "\"chat_template\": \"  {{ '\"'\"'X'\"'\"' }}{%% for m in messages "
	    "%%}{{ m['\"'\"'content'\"'\"'] }}{%% endfor %%}\\\\n\",/' "
	    "b/tokenizer_config.json && sed -i 's/\"chat_template\": .*,$/"
	    "\"chat_template\": [{\"name\": \"tool_use\", \"template\": "
	    "\"{{ 1 }}\"}, {\"name\": \"default\", \"template\": \"{{ "
	    "'\"'\"'X'\"'\"' }}{%% for m in messages %%}{{ "
	    "m['\"'\"'content'\"'\"'] }}{%% endfor %%}\"}],/' "
	    "c/tokenizer_config.json", dir) != 0) {
		tap_diag("%s", o ? o : "");
		exit(99);
	}
	free(o);
	check_node();
	test_builtins();
	test_files();
	test_literal();
	test_auto();
	test_auto_edges();
	test_refusals();
	test_daemon();
	clock_gettime(CLOCK_MONOTONIC, &t1);
	tap_diag("test-chat took %.1f s", (double)(t1.tv_sec - t0.tv_sec) +
	    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	tl_cleanup();
	return tap_done();
}
