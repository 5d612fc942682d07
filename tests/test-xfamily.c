/* SPDX-License-Identifier: MIT */
/*
 * test-xfamily.c: cross-family merges end to end (the user's headline
 * request) and "mergectl plan".
 *
 * A Llama-shaped base and a Qwen3-shaped donor (same hidden size and
 * attention shapes, a wider MLP, q_norm/k_norm); output layer 0 <- base
 * layer 5 and donor layer 10, slerping only q_proj and k_proj.  The
 * output must be a Llama model of one layer, with no k_norm/q_norm, q/k
 * slerped (checked against a float64 computation here) and every other
 * tensor byte-identical to the base's; the same bytes with the models
 * in the other order, ten runs in a row, and through the daemon.  Other
 * family pairs, and golden "plan --json" outputs for three configs
 * (tests/golden/; GOLDEN_UPDATE=1 rewrites them).
 */
#define _GNU_SOURCE
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"

static const char scenario[] = "merge_method: slerp\n"
    "base_model: ./llama-base\nslices:\n  - sources:\n"
    "      - model: ./llama-base\n        layer_range: [5, 6]\n"
    "      - model: ./qwen3-donor\n        layer_range: [10, 11]\n"
    "    parameters:\n      t:\n        - filter: self_attn.q_proj\n"
    "          value: 0.5\n        - filter: self_attn.k_proj\n"
    "          value: 0.5\n";

/* The same merge with the models listed the other way round. */
static const char scenario_swapped[] = "merge_method: slerp\n"
    "base_model: ./llama-base\nslices:\n  - sources:\n"
    "      - model: ./qwen3-donor\n        layer_range: [10, 11]\n"
    "      - model: ./llama-base\n        layer_range: [5, 6]\n"
    "    parameters:\n      t:\n        - filter: self_attn.q_proj\n"
    "          value: 0.5\n        - filter: self_attn.k_proj\n"
    "          value: 0.5\n";
static const char *dir;
static const char *golden_dir;

static void
write_cfg(const char *name, const char *text)
{
	tl_write_at(dir, name, text);
}

static int
ctl(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
ctl(char **out, const char *fmt, ...)
{
	va_list ap;
	char *args;
	int rc;

	va_start(ap, fmt);
	if (vasprintf(&args, fmt, ap) < 0)
		abort();
	va_end(ap);
	rc = tl_runf(out, "cd %s && %s %s 2>&1", dir, tl_mergectl, args);
	free(args);
	return rc;
}

static bool
same(const char *a, const char *b)
{
	return tl_same_at(dir, a, b);
}

struct model {
	struct tl_st *st;
	size_t n;
};

static struct model
load(const char *name)
{
	char path[4096];
	struct model m;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (tl_model_load(path, &m.st, &m.n) != 0)
		exit(99);
	return m;
}

static const struct tl_tensor *
find(struct model *m, const char *name)
{
	return tl_model_find(m->st, m->n, name);
}

static bool
bytes_equal(const struct tl_tensor *a, const struct tl_tensor *b)
{
	return a != NULL && b != NULL && a->nbytes == b->nbytes &&
	    memcmp(a->data, b->data, a->nbytes) == 0;
}

/* slerp of whole tensors a, b at t, in float64, checked per element. */
static bool
slerp_ok(const struct tl_tensor *o, const struct tl_tensor *a,
    const struct tl_tensor *b, double t)
{
	double aa = 0, bb = 0, ab = 0, d, th, ca, cb, want;
	uint64_t e;

	for (e = 0; e < a->numel; e++) {
		aa += tl_value(a, e) * tl_value(a, e);
		bb += tl_value(b, e) * tl_value(b, e);
		ab += tl_value(a, e) * tl_value(b, e);
	}
	d = ab / (sqrt(aa) * sqrt(bb));
	th = acos(d);
	ca = fabs(d) > 0.9995 ? 1 - t : sin((1 - t) * th) / sin(th);
	cb = fabs(d) > 0.9995 ? t : sin(t * th) / sin(th);
	for (e = 0; e < o->numel; e++) {
		want = ca * tl_value(a, e) + cb * tl_value(b, e);
		if (tl_ulps(o->dtype, tl_value(o, e), want) > 1.0) {
			tap_diag("element %llu: got %g want %g",
			    (unsigned long long)e, tl_value(o, e), want);
			return false;
		}
	}
	return true;
}

static void
test_scenario(void)
{
	struct model out, base, donor;
	const struct tl_tensor *t, *b;
	char name[256], *o = NULL, *conf, path[4096];
	size_t i, copied = 0, bad = 0;
	int rc, k;

	rc = ctl(&o, "run s1.yml out-s1 --allow-crimes --quiet");
	ok_int_eq(rc, 0, "scenario: mergectl run exits 0");
	free(o);
	rc = ctl(&o, "run s2.yml out-s2 --allow-crimes --quiet");
	ok_int_eq(rc, 0, "scenario, models swapped: exits 0");
	free(o);
	snprintf(path, sizeof path, "%s/out-s1/config.json", dir);
	conf = tl_read(path, NULL);
	ok(conf && strstr(conf, "\"LlamaForCausalLM\"") &&
	    strstr(conf, "\"model_type\": \"llama\"") &&
	    strstr(conf, "\"num_hidden_layers\": 1"), "a Llama model (config "
	    "architectures, model_type) of one layer");
	free(conf);
	out = load("out-s1");
	base = load("llama-base");
	donor = load("qwen3-donor");
	ok(out.n == 1 && out.st[0].n == 12, "12 tensors: embeddings, 9 of "
	    "one layer, norm, lm_head");
	ok(find(&out, "model.layers.0.self_attn.q_norm.weight") == NULL &&
	    find(&out, "model.layers.0.self_attn.k_norm.weight") == NULL,
	    "no q_norm or k_norm");
	for (i = 0; i < out.st[0].n; i++) {
		t = &out.st[0].t[i];
		if (strstr(t->name, "q_proj") || strstr(t->name, "k_proj"))
			continue;
		snprintf(name, sizeof name, "%s", t->name);
		if (strncmp(name, "model.layers.0.", 15) == 0)
			snprintf(name, sizeof name, "model.layers.5.%s",
			    t->name + 15);
		if (bytes_equal(t, find(&base, name)))
			copied++;
		else
			bad++;
	}
	ok(copied == 10 && bad == 0, "every other tensor is byte-identical "
	    "to the base's (layer 5 for the layer's)");
	for (k = 0; k < 2; k++) {
		snprintf(name, sizeof name, "model.layers.0.self_attn.%s.weight",
		    k ? "k_proj" : "q_proj");
		t = find(&out, name);
		snprintf(name, sizeof name, "model.layers.5.self_attn.%s.weight",
		    k ? "k_proj" : "q_proj");
		b = find(&base, name);
		snprintf(name, sizeof name, "model.layers.10.self_attn.%s."
		    "weight", k ? "k_proj" : "q_proj");
		ok(t && b && find(&donor, name) && slerp_ok(t, b,
		    find(&donor, name), 0.5), "%s of the output is slerp(base "
		    "layer 5, donor layer 10, 0.5) within 1 ulp",
		    k ? "k_proj" : "q_proj");
	}
	tl_model_free(out.st, out.n);
	tl_model_free(base.st, base.n);
	tl_model_free(donor.st, donor.n);
	ok(same("out-s1/model.safetensors", "out-s2/model.safetensors") &&
	    same("out-s1/config.json", "out-s2/config.json"), "the models in "
	    "the other order give byte-identical output");
	for (k = 0, rc = 0; k < 10; k++) {
		rc |= ctl(&o, "run s2.yml out-again --allow-crimes --quiet "
		    "--force --threads %d --memory %s", 1 + k % 2,
		    k % 3 ? "2M" : "1G");
		free(o);
		if (!same("out-s1/model.safetensors",
		    "out-again/model.safetensors"))
			rc = 1;
	}
	ok_int_eq(rc, 0, "ten runs (1 or 2 threads, 2M or 1G) give the same "
	    "bytes");
	rc = ctl(&o, "run s1.yml out-none --quiet");
	ok(rc == 3 && strstr(o, "./llama-base is LlamaForCausalLM, "
	    "./qwen3-donor is Qwen3ForCausalLM"), "without --allow-crimes the "
	    "error says which models differ and how");
	free(o);
}

/* The scenario through the daemon: the same bytes as mergectl run. */
static void
test_scenario_daemon(void)
{
	char *o = NULL;
	int rc;

	rc = tl_runf(&o, "cd %s && export MERGED_SOCKET=%s/run/m.sock "
	    "MERGED_BIN=%s XDG_STATE_HOME=%s/state && %s submit s1.yml "
	    "-o out-daemon --allow-crimes --wait --quiet 2>&1; r=$?; %s daemon "
	    "stop -q; exit $r", dir, dir, tl_merged, dir, tl_mergectl,
	    tl_mergectl);
	ok_int_eq(rc, 0, "scenario through the daemon: submit --wait exits 0");
	if (rc != 0)
		tap_diag("%s", o);
	free(o);
	ok(same("out-s1/model.safetensors", "out-daemon/model.safetensors"),
	    "and gives mergectl run's bytes");
}

static void
test_pairs(void)
{
	struct model out, q2;
	char *o = NULL, path[4096], *conf;
	int rc;

	write_cfg("lm.yml", "merge_method: slerp\nbase_model: ./llama-base\n"
	    "allow_crimes: true\nmodels:\n  - model: ./llama-base\n"
	    "  - model: ./mistral\nparameters:\n  t: 0.3\n");
	rc = ctl(&o, "run lm.yml out-lm --quiet");
	ok_int_eq(rc, 0, "llama base + mistral (allow_crimes in the config)");
	free(o);
	write_cfg("ml.yml", "merge_method: slerp\nbase_model: ./mistral\n"
	    "allow_crimes: true\nmodels:\n  - model: ./llama-base\n"
	    "  - model: ./mistral\nparameters:\n  t: 0.3\n");
	rc = ctl(&o, "run ml.yml out-ml --quiet");
	free(o);
	snprintf(path, sizeof path, "%s/out-ml/config.json", dir);
	conf = tl_read(path, NULL);
	ok(rc == 0 && conf && strstr(conf, "\"MistralForCausalLM\""),
	    "mistral base + llama: a Mistral model though listed second");
	free(conf);
	write_cfg("ql.yml", "merge_method: slerp\nbase_model: ./qwen2\n"
	    "allow_crimes: true\nslices:\n  - sources:\n"
	    "      - model: ./qwen2\n        layer_range: [0, 4]\n"
	    "      - model: ./llama4\n        layer_range: [0, 4]\n"
	    "    parameters:\n      t:\n        - filter: weight\n"
	    "          value: 0.4\n");
	rc = ctl(&o, "run ql.yml out-ql --quiet");
	ok_int_eq(rc, 0, "qwen2 base + llama donor, t on weights only");
	free(o);
	out = load("out-ql");
	q2 = load("qwen2");
	ok(bytes_equal(find(&out, "model.layers.3.self_attn.q_proj.bias"),
	    find(&q2, "model.layers.3.self_attn.q_proj.bias")), "the biases "
	    "come from the base alone, bit for bit");
	tl_model_free(out.st, out.n);
	tl_model_free(q2.st, q2.n);
	write_cfg("lq.yml", "merge_method: slerp\nbase_model: ./llama4\n"
	    "allow_crimes: true\nslices:\n  - sources:\n"
	    "      - model: ./llama4\n        layer_range: [0, 4]\n"
	    "      - model: ./qwen2\n        layer_range: [0, 4]\n"
	    "    parameters:\n      t: 0.4\n");
	rc = ctl(&o, "run lq.yml out-lq --quiet");
	out = load("out-lq");
	ok(rc == 0 && find(&out, "model.layers.0.self_attn.q_proj.bias") ==
	    NULL, "llama base + qwen2 donor: no biases in the output");
	free(o);
	tl_model_free(out.st, out.n);
}

/* plan --json of name.yml equals tests/golden/name.json. */
static void
golden(const char *name, const char *extra, int want_rc)
{
	char path[4096], *o = NULL, *g;
	int rc;

	rc = ctl(&o, "plan %s.yml --json --memory 1G --out-shard-size 300K "
	    "%s", name, extra);
	ok_int_eq(rc, want_rc, "plan %s: exit %d", name, want_rc);
	snprintf(path, sizeof path, "%s/%s.json", golden_dir, name);
	if (getenv("GOLDEN_UPDATE") != NULL)
		tl_write(path, o);
	g = tl_read(path, NULL);
	if (!ok(g != NULL && strcmp(o, g) == 0, "plan %s --json matches "
	    "tests/golden/%s.json", name, name))
		tap_diag("got: %s", o);
	free(g);
	free(o);
}

static void
test_golden(void)
{
	write_cfg("g-scenario.yml", scenario);
	write_cfg("g-linear.yml", "merge_method: linear\nmodels:\n"
	    "  - model: ./llama-base\n    parameters:\n"
	    "      weight: [1, 0.5, 0]\n  - model: ./llama-tuned\n"
	    "    parameters:\n      weight:\n        - filter: mlp\n"
	    "          value: 2\n        - value: 1\n"
	    "parameters:\n  normalize: true\ndtype: float32\n");
	write_cfg("g-errors.yml", "merge_method: slerp\nbase_model: "
	    "./llama-base\nallow_crimes: true\nslices:\n  - sources:\n"
	    "      - model: ./llama-base\n        layer_range: [5, 6]\n"
	    "      - model: ./qwen3-donor\n        layer_range: [10, 11]\n"
	    "    parameters:\n      t: 0.5\n");
	golden("g-scenario", "--allow-crimes", 0);
	golden("g-linear", "", 0);
	golden("g-errors", "", 3);
}

static void
gen(const char *name, const char *args)
{
	tl_gen_at(dir, name, args);
}

int
main(int argc, char **argv)
{
	tl_init(argc, argv);
	golden_dir = argc > 4 ? argv[4] : "tests/golden";
	tap_plan_lazy();
	dir = tl_tmpdir("xfamily");
	gen("llama-base", "--family llama --layers 8 --hidden 128 "
	    "--intermediate 256 --vocab 512 --seed 1");
	gen("llama-tuned", "--family llama --layers 8 --hidden 128 "
	    "--intermediate 256 --vocab 512 --seed 2 --finetune-of 1 "
	    "--delta 0.01");
	gen("qwen3-donor", "--family qwen3 --layers 12 --hidden 128 "
	    "--intermediate 384 --vocab 512 --seed 7");
	gen("mistral", "--family mistral --layers 8 --hidden 128 "
	    "--intermediate 256 --vocab 512 --seed 3");
	gen("qwen2", "--family qwen2 --layers 4 --hidden 128 --intermediate "
	    "256 --vocab 512 --seed 4");
	gen("llama4", "--family llama --layers 4 --hidden 128 --intermediate "
	    "256 --vocab 512 --seed 5");
	write_cfg("s1.yml", scenario);
	write_cfg("s2.yml", scenario_swapped);
	test_scenario();
	test_scenario_daemon();
	test_pairs();
	test_golden();
	return tap_done();
}
