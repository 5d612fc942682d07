/* SPDX-License-Identifier: MIT */
/*
 * test-plan.c: the planner on generated models: architecture choice, the
 * optional slerp t, cross-family name mapping, and every plan-time error
 * (MERGEKIT.md Part A items 4-8), all found from headers and reported
 * together; and the limits on an input's tensors (issue 9, row 6), with
 * messages that name the file, the count and the limit.  Calls
 * graph_config_load_buffer and graph_plan_build directly.
 */
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "graph-int.h"
#include "tap.h"
#include "testlib.h"

static const char *dir;

/*
 * Plans text with o (NULL: the defaults) from the test's directory;
 * returns the plan (or NULL) and all messages joined.
 */
static struct graph_plan *
plan_with(const char *text, const struct graph_plan_opts *opts, char **msgs)
{
	struct graph_plan_opts o;
	struct graph_config *cfg = NULL;
	struct graph_plan *p = NULL;
	struct graph_diags d;

	graph_diags_init(&d);
	if (opts != NULL)
		o = *opts;
	else
		graph_plan_opts_default(&o);
	o.env.cwd = dir;
	if (graph_config_load_buffer("cfg.yml", text, strlen(text), &cfg,
	    &d) == 0)
		graph_plan_build(cfg, &o, &p, &d);
	*msgs = graph_diags_join(&d);
	graph_diags_fini(&d);
	graph_config_free(cfg);
	return p;
}

static struct graph_plan *
plan(const char *text, char **msgs, bool crimes)
{
	struct graph_plan_opts o;

	graph_plan_opts_default(&o);
	o.merge.allow_crimes = crimes;
	return plan_with(text, &o, msgs);
}

static const struct plan_tensor *
tensor(const struct graph_plan *p, const char *name)
{
	size_t i;

	for (i = 0; p != NULL && i < p->ntensors; i++)
		if (strcmp(p->tensors[i].name, name) == 0)
			return &p->tensors[i];
	return NULL;
}

static void
expect_error(const char *what, const char *text, const char *needle)
{
	struct graph_plan *p;
	char *m;

	p = plan(text, &m, false);
	ok(p == NULL, "%s: rejected", what);
	ok_str_has(m, needle, "%s: message", what);
	graph_plan_free(p);
	free(m);
}

static void
test_arch_choice(void)
{
	struct graph_plan *p;
	struct graph_plan_summary s;
	char *m;

	p = plan("merge_method: linear\nmodels:\n  - model: llama\n"
	    "    parameters: {weight: 1}\n  - model: llama2\n"
	    "    parameters: {weight: 1}\n", &m, false);
	graph_plan_summary(p, &s);
	ok(p != NULL && strcmp(s.arch_model, "llama") == 0 &&
	    strstr(s.arch_reason, "first model") != NULL, "no base: the first "
	    "model's architecture (%s)", m);
	graph_plan_free(p);
	free(m);
	p = plan("merge_method: linear\nbase_model: llama2\nmodels:\n"
	    "  - model: llama\n    parameters: {weight: 1}\n"
	    "  - model: llama2\n    parameters: {weight: 1}\n", &m, false);
	graph_plan_summary(p, &s);
	ok(p != NULL && strcmp(s.arch_model, "llama2") == 0 &&
	    strstr(s.arch_reason, "base") != NULL, "base given: the base "
	    "model's architecture wins though listed second");
	graph_plan_free(p);
	free(m);
	p = plan("merge_method: slerp\nbase_model: qwen3\nslices:\n"
	    "  - sources:\n      - model: llama\n        layer_range: [0, 1]\n"
	    "      - model: qwen3\n        layer_range: [3, 4]\n"
	    "    parameters:\n      t:\n        - filter: q_proj\n"
	    "          value: 0.5\n", &m, true);
	graph_plan_summary(p, &s);
	ok(p != NULL && strcmp(s.arch, "Qwen3ForCausalLM") == 0, "a qwen3 "
	    "base over a llama donor gives a qwen3 model (%s)", m);
	ok(tensor(p, "model.layers.0.self_attn.q_norm.weight") != NULL &&
	    tensor(p, "model.layers.0.self_attn.q_norm.weight")->method ==
	    &method_copy, "with q_norm copied from the base: the llama "
	    "donor is not asked for one");
	graph_plan_free(p);
	free(m);
	p = plan("merge_method: linear\narchitecture: qwen3\nallow_crimes: true"
	    "\nmodels:\n  - model: llama\n    parameters: {weight: 1}\n", &m,
	    false);
	ok(p == NULL, "an explicit architecture must be one of the models");
	ok_str_has(m, "'architecture: qwen3' names none of the models", "and "
	    "the error says so");
	free(m);
	expect_error("mixed families without --allow-crimes",
	    "merge_method: slerp\nbase_model: llama\nparameters: {t: 0.5}\n"
	    "slices:\n  - sources:\n      - model: llama\n"
	    "        layer_range: [0, 1]\n      - model: qwen3\n"
	    "        layer_range: [0, 1]\n", "llama is LlamaForCausalLM, qwen3 "
	    "is Qwen3ForCausalLM); merging across families needs "
	    "--allow-crimes");
}

/* The scenario: base layer 5 <- donor layer 10, partial t. */
static void
test_cross_family(void)
{
	static const char cfg[] = "merge_method: slerp\nbase_model: llama\n"
	    "slices:\n  - sources:\n      - model: llama\n"
	    "        layer_range: [5, 6]\n      - model: qwen3\n"
	    "        layer_range: [10, 11]\n    parameters:\n      t:\n"
	    "        - filter: self_attn.q_proj\n          value: 0.5\n"
	    "        - filter: self_attn.k_proj\n          value: 0.5\n";
	const struct plan_tensor *q, *v, *e;
	struct graph_plan *p;
	char *m;

	p = plan(cfg, &m, true);
	ok(p != NULL, "cross-family scenario plans (%s)", m);
	q = tensor(p, "model.layers.0.self_attn.q_proj.weight");
	v = tensor(p, "model.layers.0.self_attn.v_proj.weight");
	e = tensor(p, "model.embed_tokens.weight");
	ok(q != NULL && q->nin == 2 && q->method->name[0] == 's' &&
	    strcmp(q->in[0].name, "model.layers.5.self_attn.q_proj.weight")
	    == 0 && strcmp(q->in[1].name,
	    "model.layers.10.self_attn.q_proj.weight") == 0,
	    "q_proj of output layer 0 slerps base layer 5 with donor layer 10");
	ok(v != NULL && v->nin == 1 && v->method == &method_copy &&
	    strcmp(v->in[0].name, "model.layers.5.self_attn.v_proj.weight")
	    == 0, "v_proj (no t) is a copy of base layer 5");
	ok(e != NULL && e->method == &method_copy, "embeddings (no t) "
	    "are the base's although the vocab sizes agree");
	ok(tensor(p, "model.layers.0.self_attn.k_norm.weight") == NULL,
	    "no k_norm: the donor's extra tensors are never asked for");
	ok(tensor(p, "model.layers.0.mlp.up_proj.weight") != NULL &&
	    tensor(p, "model.layers.0.mlp.up_proj.weight")->shape[0] == 256,
	    "mlp keeps the base's width (no t, so the donor's 384 is never "
	    "compared)");
	ok(p != NULL && p->out_layers[p->arch.main] == 1, "config.json layer count is the "
	    "slice's, 1");
	graph_plan_free(p);
	free(m);
	/* Now ask for the MLP too: shapes differ, reported at plan time. */
	p = plan("merge_method: slerp\nbase_model: llama\nallow_crimes: true\n"
	    "slices:\n  - sources:\n      - model: llama\n"
	    "        layer_range: [5, 6]\n      - model: qwen3\n"
	    "        layer_range: [10, 11]\n    parameters:\n      t: 0.5\n",
	    &m, false);
	ok(p == NULL, "slerping every tensor across widths is rejected");
	ok_str_has(m, "model.layers.0.mlp.down_proj.weight: error: shapes "
	    "differ (llama:model.layers.5.mlp.down_proj.weight@5 [128, 256], "
	    "qwen3:model.layers.10.mlp.down_proj.weight@10 [128, 384]); add a "
	    "filter so that no t applies to this tensor (the base's is then "
	    "kept)", "with the tensor, both models, their layers and shapes, "
	    "and the fix");
	graph_plan_free(p);
	free(m);
}

static void
test_families(void)
{
	const struct plan_tensor *t;
	struct graph_plan *p;
	char *m;

	/* Qwen2 has q/k/v biases; a llama base has none, so none are made. */
	p = plan("merge_method: slerp\nbase_model: llama\nparameters: {t: 0.3}"
	    "\nslices:\n  - sources:\n      - model: llama\n"
	    "        layer_range: [0, 4]\n      - model: qwen2\n"
	    "        layer_range: [0, 4]\n", &m, true);
	ok(p != NULL && tensor(p, "model.layers.0.self_attn.q_proj.bias") ==
	    NULL, "llama base + qwen2: no biases in the output (%s)", m);
	graph_plan_free(p);
	free(m);
	p = plan("merge_method: slerp\nbase_model: qwen2\nparameters: {t: 0.3}"
	    "\nslices:\n  - sources:\n      - model: qwen2\n"
	    "        layer_range: [0, 4]\n      - model: llama\n"
	    "        layer_range: [0, 4]\n", &m, true);
	ok(p == NULL, "qwen2 base + llama with t everywhere: rejected");
	ok_str_has(m, "model llama has no tensor "
	    "'model.layers.0.self_attn.q_proj.bias' (at its own layer index); "
	    "leave t unset for this tensor", "the missing bias is named with "
	    "the fix");
	graph_plan_free(p);
	free(m);
	p = plan("merge_method: slerp\nbase_model: qwen2\nslices:\n"
	    "  - sources:\n      - model: qwen2\n        layer_range: [0, 4]\n"
	    "      - model: llama\n        layer_range: [0, 4]\n"
	    "    parameters:\n      t:\n        - filter: weight\n"
	    "          value: 0.3\n", &m, true);
	t = tensor(p, "model.layers.2.self_attn.v_proj.bias");
	ok(t != NULL && t->method == &method_copy, "and with t only on "
	    "weights, the biases come from the base alone (%s)", m);
	graph_plan_free(p);
	free(m);
	/* An untied base takes a tied donor's embedding as its lm_head. */
	p = plan("merge_method: linear\nmodels:\n  - model: llama\n"
	    "    parameters: {weight: 1}\n  - model: tied\n"
	    "    parameters: {weight: 1}\n", &m, false);
	t = tensor(p, "lm_head.weight");
	ok(t != NULL && t->nin == 2 && strcmp(t->in[1].name,
	    "model.embed_tokens.weight") == 0, "untied base, tied donor: the "
	    "donor's embed_tokens stands in for its lm_head (%s)", m);
	graph_plan_free(p);
	free(m);
	p = plan("merge_method: linear\nmodels:\n  - model: tied\n"
	    "    parameters: {weight: 1}\n  - model: llama\n"
	    "    parameters: {weight: 1}\n", &m, false);
	/* Part A 16: a tied base and a model that stores a head: the
	 * output stores the merged head, untied (mergekit drops it). */
	t = tensor(p, "lm_head.weight");
	ok(t != NULL && t->nin == 2 && strcmp(t->in[0].name,
	    "model.embed_tokens.weight") == 0 && strcmp(t->in[1].name,
	    "lm_head.weight") == 0 && p->untied, "tied base, a donor with a "
	    "head: the merged head is stored, the base's embedding standing "
	    "in for its head, and the output is untied (%s)", m);
	graph_plan_free(p);
	free(m);
	p = plan("merge_method: linear\nmodels:\n  - model: tied\n"
	    "    parameters: {weight: 1}\n", &m, false);
	ok(p != NULL && tensor(p, "lm_head.weight") == NULL && !p->untied,
	    "no input stores a head: the output has none and stays tied (%s)",
	    m);
	graph_plan_free(p);
	free(m);
	/* Vocab sizes differ: linear rectifies, task_arithmetic crops. */
	p = plan("merge_method: linear\nmodels:\n  - model: llama\n"
	    "    parameters: {weight: 1}\n  - model: bigvocab\n"
	    "    parameters: {weight: 1}\n", &m, false);
	t = tensor(p, "model.embed_tokens.weight");
	ok(t != NULL && t->shape[0] == 256 && t->in[1].rectified,
	    "linear over vocab 256 and 300: the common [256, 128] block");
	ok_str_has(m, "warning: embedding sizes differ", "with a warning");
	graph_plan_free(p);
	free(m);
	expect_error("task_arithmetic: a donor embedding smaller than the base",
	    "merge_method: task_arithmetic\nbase_model: bigvocab\nmodels:\n"
	    "  - model: llama\n    parameters: {weight: 1}\n",
	    "an embedding smaller than the base's cannot be cropped");
}

static void
test_errors(void)
{
	struct graph_plan *p;
	char *m;

	expect_error("layer_range out of bounds", "merge_method: passthrough\n"
	    "slices:\n  - sources:\n      - model: llama\n"
	    "        layer_range: [6, 9]\n", "cfg.yml:4:9: error: layer_range "
	    "[6, 9] is out of bounds: model llama has 8 layers (0 to 7)");
	expect_error("unequal slice lengths", "merge_method: slerp\n"
	    "base_model: llama\nparameters: {t: 0.5}\nslices:\n  - sources:\n"
	    "      - model: llama\n        layer_range: [0, 2]\n"
	    "      - model: llama2\n        layer_range: [0, 3]\n",
	    "all sources of a slice must have the same number of layers");
	expect_error("a model twice in one slice", "merge_method: slerp\n"
	    "base_model: llama\nparameters: {t: 0.5}\nslices:\n  - sources:\n"
	    "      - model: llama\n        layer_range: [0, 1]\n"
	    "      - model: llama\n        layer_range: [3, 4]\n",
	    "appears twice in this slice's sources");
	expect_error("unknown method", "merge_method: slurp\nmodels:\n"
	    "  - model: llama\n", "unknown merge method 'slurp'; did you mean "
	    "'slerp'?");
	expect_error("a parameter the method does not have",
	    "merge_method: linear\nmodels:\n  - model: llama\n"
	    "    parameters: {wieght: 1}\n", "'wieght' is not a parameter of "
	    "merge method linear; did you mean 'weight'?");
	expect_error("a global parameter per model", "merge_method: slerp\n"
	    "base_model: llama\nmodels:\n  - model: llama\n  - model: llama2\n"
	    "    parameters: {t: 0.5}\n", "'t' is a global parameter of slerp");
	expect_error("a missing required parameter", "merge_method: "
	    "task_arithmetic\nbase_model: llama\nmodels:\n  - model: llama2\n",
	    "missing required parameter 'weight' for llama2.");
	expect_error("linear with the base added by models: syntax",
	    "merge_method: linear\nbase_model: llama\nmodels:\n"
	    "  - model: llama2\n    parameters: {weight: 1}\n",
	    "linear needs a weight for every input, but the base model llama "
	    "has none");
	expect_error("passthrough with two inputs", "merge_method: passthrough"
	    "\nbase_model: llama\nmodels:\n  - model: llama2\n",
	    "passthrough takes exactly one input, got 2");
	expect_error("slerp without a base", "merge_method: slerp\nmodels:\n"
	    "  - model: llama\n  - model: llama2\nparameters: {t: 0.5}\n",
	    "merge method slerp needs a base_model");
	expect_error("linear weights summing to zero", "merge_method: linear\n"
	    "models:\n  - model: llama\n    parameters: {weight: 1}\n"
	    "  - model: llama2\n    parameters: {weight: -1}\n",
	    "the weights sum to 0");
	expect_error("model_stock with one model besides the base",
	    "merge_method: model_stock\nbase_model: llama\nmodels:\n"
	    "  - model: llama2\n", "model_stock needs the base and at least "
	    "two other models, got 2 inputs");
	expect_error("nuslerp with three models", "merge_method: nuslerp\n"
	    "models:\n  - model: llama\n    parameters: {weight: 1}\n"
	    "  - model: llama2\n    parameters: {weight: 1}\n"
	    "  - model: tied\n    parameters: {weight: 1}\n",
	    "nuslerp merges exactly two models, got 3 inputs");
	expect_error("nuslerp with a base that is not an input",
	    "merge_method: nuslerp\nbase_model: tied\nslices:\n"
	    "  - sources:\n      - model: llama\n        layer_range: [0, 8]\n"
	    "        parameters: {weight: 1}\n      - model: llama2\n"
	    "        layer_range: [0, 8]\n        parameters: {weight: 1}\n",
	    "nuslerp: the base model must be an input besides the two models "
	    "merged");
	expect_error("multislerp with only the base", "merge_method: "
	    "multislerp\nbase_model: llama\nmodels:\n  - model: llama\n",
	    "multislerp needs at least one model besides the base");
	expect_error("karcher with a negative max_iter", "merge_method: "
	    "karcher\nmodels:\n  - model: llama\n  - model: llama2\n"
	    "parameters: {max_iter: -1}\n", "max_iter must not be negative");
	expect_error("ties with a density that keeps nothing",
	    "merge_method: ties\nbase_model: llama\nmodels:\n"
	    "  - model: llama2\n    parameters: {weight: 1, density: 0}\n",
	    "density 0 keeps none of its");
	expect_error("della with epsilon out of range", "merge_method: della\n"
	    "base_model: llama\nmodels:\n  - model: llama2\n"
	    "    parameters: {weight: 1, density: 0.5, epsilon: 1.35}\n",
	    "epsilon 1.35 with density 0.5: density - epsilon and density + "
	    "epsilon must lie in (0, 1)");
	expect_error("dare with a negative density", "merge_method: "
	    "dare_linear\nbase_model: llama\nmodels:\n  - model: llama2\n"
	    "    parameters: {weight: 1, density: -0.5}\n",
	    "density -0.5 is negative");
	expect_error("breadcrumbs with a negative gamma", "merge_method: "
	    "breadcrumbs\nbase_model: llama\nmodels:\n  - model: llama2\n"
	    "    parameters: {weight: 1, density: 0.5, gamma: -0.1}\n",
	    "gamma -0.1 is negative");
	expect_error("arcee_fusion with three models", "merge_method: "
	    "arcee_fusion\nbase_model: llama\nmodels:\n  - model: llama2\n"
	    "  - model: tied\n", "arcee_fusion merges exactly two models "
	    "(the base and one other), got 3 inputs");
	/* Several mistakes in one config: every one is reported. */
	p = plan("merge_method: task_arithmetic\nbase_model: llama\nmodels:\n"
	    "  - model: llama2\n    parameters: {wieght: 1}\n"
	    "  - model: nowhere\n  - model: qwen3\n", &m, false);
	ok(p == NULL && strstr(m, "'wieght' is not a parameter") &&
	    strstr(m, "model 'nowhere' not found") != NULL,
	    "a bad parameter and a missing model are both reported");
	free(m);
	graph_plan_free(p);
	p = plan("merge_method: slerp\nbase_model: llama\nparameters:\n"
	    "  t: 0.5\nslices:\n  - sources:\n      - model: llama\n"
	    "        layer_range: [0, 8]\n      - model: qwen3\n"
	    "        layer_range: [0, 8]\n", &m, true);
	ok(p == NULL && strstr(m, "more errors like the ones above") != NULL,
	    "repeated errors are counted, not printed a hundred times");
	free(m);
	graph_plan_free(p);
}

static void
test_layout(void)
{
	struct graph_plan_opts o;
	struct graph_plan *p;
	const char *text = "merge_method: linear\nmodels:\n  - model: llama\n"
	    "    parameters: {weight: 1}\n";
	size_t i;
	uint64_t sum = 0;
	bool order = true;
	char *m;

	graph_plan_opts_default(&o);
	o.merge.shard_size = 100000;
	p = plan_with(text, &o, &m);
	free(m);
	ok(p != NULL && p->nshards > 1, "100 kB shards: %zu shards",
	    p ? p->nshards : 0);
	for (i = 0; p != NULL && i < p->nshards; i++) {
		sum += p->shards[i].size - p->shards[i].header_len;
		if (i > 0 && p->tensors[p->shards[i].first].shard != i)
			order = false;
	}
	ok(p != NULL && sum == p->total_out, "shard data sums to the total");
	ok(p != NULL && strcmp(p->tensors[0].name,
	    "model.embed_tokens.weight") == 0 && strcmp(p->tensors[1].name,
	    "model.layers.0.input_layernorm.weight") == 0 && order,
	    "natural order: embeddings, then layer 0, ...");
	ok(p != NULL && strcmp(p->tensors[p->ntensors - 1].name,
	    "model.norm.weight") == 0 && strstr(p->tensors[9 * 8].name,
	    "layers.7.") != NULL, "... layers by number, then the rest");
	graph_plan_free(p);
}

/*
 * The memory a plan is sized for (its "memory_budget", mergectl plan's
 * "budget"): the runner's budget, the one default when none is given,
 * narrowed by the merge's own --memory but never widened by it.
 */
static uint64_t
planned_budget(uint64_t budget, uint64_t cap)
{
	struct graph_plan_opts o;
	struct graph_plan *p;
	const char *text = "merge_method: linear\nmodels:\n  - model: llama\n"
	    "    parameters: {weight: 1}\n";
	struct cJSON *j;
	uint64_t got = 0;
	char *m;

	graph_plan_opts_default(&o);
	o.budget = budget;
	o.merge.memory = cap;
	p = plan_with(text, &o, &m);
	free(m);
	j = graph_plan_json(p, NULL);
	if (p != NULL)
		got = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j,
		    "memory_budget"));
	cJSON_Delete(j);
	graph_plan_free(p);
	return got;
}

/*
 * The least memory a plan runs in: a linear merge of two models holds at
 * least one block (65536 elements) of both inputs in float32, its result
 * and the result encoded (with a page's room to place it at its file
 * alignment, for O_DIRECT), and no statistics; the executor's budget of a
 * memory M under 16 MiB is 3M/4.  A cap below that is refused with it,
 * in bytes; a cap of exactly that is planned.
 */
static void
test_min_memory(void)
{
	struct graph_plan_opts o;
	struct graph_plan *p;
	const char *text = "merge_method: linear\nmodels:\n  - model: llama\n"
	    "    parameters: {weight: 0.5}\n  - model: llama2\n"
	    "    parameters: {weight: 0.5}\n";
	uint64_t need, want = 0;
	char *m, num[32];

	graph_plan_opts_default(&o);
	p = plan_with(text, &o, &m);
	free(m);
	if (p != NULL) {
		need = 65536ull * (2 * 4 + 4 +
		    graph_dtype_size(p->tensors[0].out_dtype)) + 4096;
		want = (need * 4 + 2) / 3;
	}
	ok(p != NULL && p->min_memory == want, "the least memory: %llu "
	    "bytes (%llu)", (unsigned long long)want,
	    (unsigned long long)(p ? p->min_memory : 0));
	graph_plan_free(p);
	o.merge.memory = want - 1;
	p = plan_with(text, &o, &m);
	snprintf(num, sizeof num, "%llu bytes", (unsigned long long)want);
	ok(p == NULL && strstr(m, "cfg.yml: error: --memory ") != NULL &&
	    strstr(m, "is too small for this merge: it needs at least ") !=
	    NULL && strstr(m, num) != NULL, "a byte less is refused, with "
	    "the least in bytes: %s", m);
	free(m);
	graph_plan_free(p);
	o.merge.memory = want;
	p = plan_with(text, &o, &m);
	ok(p != NULL, "exactly that is planned");
	free(m);
	graph_plan_free(p);
	o.merge.memory = 0;
	o.budget = want - 1;
	o.budget_shared = true;
	p = plan_with(text, &o, &m);
	ok(p == NULL && strstr(m, "the daemon's memory budget ") != NULL &&
	    strstr(m, "merged --memory sets it") != NULL, "a daemon's budget "
	    "below it is named as the daemon's");
	free(m);
	graph_plan_free(p);
}

static void
test_memory(void)
{
	ok_int_eq(planned_budget(64 << 20, 0), 64 << 20,
	    "no cap: the runner's budget");
	ok_int_eq(planned_budget(64 << 20, 32 << 20), 32 << 20,
	    "a cap below the budget narrows it");
	ok_int_eq(planned_budget(64 << 20, 1ull << 30), 64 << 20,
	    "a cap above the budget caps nothing");
	ok_int_eq(planned_budget(0, 0), graph_default_memory(),
	    "no budget: the one default");
	ok_int_eq(planned_budget(0, 32 << 20), 32 << 20,
	    "no budget, a cap: the cap");
	test_min_memory();
}

/*
 * config.json and the index as untrusted text (found by fuzz-model): what
 * would be copied into the output's config.json must be one JSON object,
 * and a tensor the index lists twice must not be planned twice.
 */
static void
test_model_files(void)
{
	static const char *const cfg = "merge_method: passthrough\n"
	    "models:\n  - model: odd\n";
	struct graph_plan *p;
	char path[1024], *m, *text, *dup;
	const cJSON *shard;
	cJSON *idx;

	snprintf(path, sizeof path, "%s/odd/config.json", dir);
	text = tl_read(path, NULL);
	tl_write(path, "{\"architectures\": [\"LlamaForCausalLM\"]} {}");
	expect_error("config.json with data after the object", cfg,
	    "odd/config.json: data after the JSON object (at byte 40)");
	tl_write(path, "{\"architectures\": [\"LlamaForCausalLM\"], "
	    "\"x\": \"a\\u0000b\"}");
	p = plan(cfg, &m, false);
	ok(p != NULL, "an escaped NUL in a config.json string is fine (%s)",
	    m);
	graph_plan_free(p);
	free(m);
	snprintf(path, sizeof path, "%s/odd/config.json", dir);
	{
		char *bom = xasprintf("\xef\xbb\xbf%s", text);
		tl_write(path, bom);
		free(bom);
	}
	p = plan(cfg, &m, false);
	ok(p != NULL && strncmp(p->models[p->donor].m->config_text, "{",
	    1) == 0,
	    "a byte order mark is accepted, and dropped from the text the "
	    "output's config.json is made from");
	graph_plan_free(p);
	free(m);
	tl_write(path, text);
	free(text);

	snprintf(path, sizeof path, "%s/sharded/model.safetensors.index.json",
	    dir);
	text = tl_read(path, NULL);
	idx = cJSON_Parse(text);
	shard = cJSON_GetObjectItem(cJSON_GetObjectItem(idx, "weight_map"),
	    "model.norm.weight");
	dup = xasprintf("{\"weight_map\": {\"model.norm.weight\": \"%s\", "
	    "\"model.norm.weight\": \"%s\"}}", cJSON_GetStringValue(shard),
	    cJSON_GetStringValue(shard));
	tl_write(path, dup);
	free(dup);
	cJSON_Delete(idx);
	expect_error("an index listing a tensor twice",
	    "merge_method: passthrough\nmodels:\n  - model: sharded\n",
	    "model.safetensors.index.json: tensor 'model.norm.weight' is "
	    "listed twice");
	tl_write(path, text);
	free(text);
}

/* A binary file at dir/rel. */
static void
put(const char *rel, const void *data, size_t len)
{
	char path[1024];
	FILE *fp;

	snprintf(path, sizeof path, "%s/%s", dir, rel);
	fp = fopen(path, "wb");
	ok(fp != NULL && fwrite(data, 1, len, fp) == len && fclose(fp) == 0,
	    "write %s", rel);
}

/* dir/rel: n zero-size tensors named PREFIX.tI, the header only. */
static void
put_shard(const char *rel, const char *prefix, size_t n)
{
	struct safetensors_tensor *t = xcalloc(n, sizeof *t);
	uint8_t *h;
	size_t i, len;

	for (i = 0; i < n; i++) {
		t[i].name = xasprintf("%s.t%zu", prefix, i);
		t[i].dtype = GRAPH_DT_BF16;
		t[i].ndim = 1;
	}
	h = safetensors_header_build(t, n, &len);
	put(rel, h, len);
	for (i = 0; i < n; i++)
		free(t[i].name);
	free(t);
	free(h);
}

/*
 * At most MODEL_MAX_TENSORS tensors over all of a model's shards:
 * five shards at the per-file limit pass it with the fifth; an index that
 * lists more is refused before any shard is opened.  A malformed shard is
 * reported with its path.
 */
static void
test_model_limits(void)
{
	static const char *const cfg = "merge_method: passthrough\n"
	    "models:\n  - model: many\n";
	static const char hole[] = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],"
	    "\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"U8\",\"shape\":[4],"
	    "\"data_offsets\":[8,12]}}";
	char path[1024], rel[64], want[256], *config;
	struct xbuf idx = { 0 };
	uint8_t buf[8 + sizeof hole - 1 + 12] = { 0 };
	size_t i;
	int k;

	snprintf(path, sizeof path, "%s/odd/config.json", dir);
	config = tl_read(path, NULL);
	snprintf(path, sizeof path, "%s/many", dir);
	ok(mkdir(path, 0700) == 0, "mkdir many");
	put("many/config.json", config, strlen(config));
	xbuf_add(&idx, "{\"weight_map\": {", 16);
	for (k = 1; k <= 5; k++) {
		snprintf(rel, sizeof rel, "many/s%d.safetensors", k);
		snprintf(want, sizeof want, "s%d", k);
		put_shard(rel, want, SAFETENSORS_MAX_TENSORS);
		xbuf_printf(&idx, "%s\"s%d.t0\": \"s%d.safetensors\"",
		    k > 1 ? ", " : "", k, k);
	}
	xbuf_add(&idx, "}}", 2);
	put("many/model.safetensors.index.json", idx.data, idx.len);
	snprintf(want, sizeof want, "many/s5.safetensors: the model's shards "
	    "hold %d tensors with this one, over the limit of %d per model",
	    5 * SAFETENSORS_MAX_TENSORS, MODEL_MAX_TENSORS);
	expect_error("five shards of 65,536 tensors", cfg, want);

	idx.len = 0;
	xbuf_add(&idx, "{\"weight_map\": {", 16);
	for (i = 0; i <= MODEL_MAX_TENSORS; i++)
		xbuf_printf(&idx, "%s\"t%zu\": \"s1.safetensors\"",
		    i > 0 ? ", " : "", i);
	xbuf_add(&idx, "}}", 2);
	put("many/model.safetensors.index.json", idx.data, idx.len);
	snprintf(want, sizeof want, "many/model.safetensors.index.json: "
	    "weight_map lists %d tensors, over the limit of %d per model",
	    MODEL_MAX_TENSORS + 1, MODEL_MAX_TENSORS);
	expect_error("an index of 262,145 tensors", cfg, want);
	xbuf_free(&idx);

	snprintf(path, sizeof path, "%s/hole", dir);
	ok(mkdir(path, 0700) == 0, "mkdir hole");
	put("hole/config.json", config, strlen(config));
	for (i = 0; i < 8; i++)
		buf[i] = (uint8_t)((sizeof hole - 1) >> (8 * i));
	memcpy(buf + 8, hole, sizeof hole - 1);
	put("hole/model.safetensors", buf, sizeof buf);
	expect_error("a shard whose offsets leave a hole",
	    "merge_method: passthrough\nmodels:\n  - model: hole\n",
	    "hole/model.safetensors: data bytes [4, 8) between tensors \"a\" "
	    "and \"b\" belong to no tensor");
	free(config);
}

static void
gen(const char *name, const char *args)
{
	tl_gen_at(dir, name, args);
}

/*
 * The tensors of a model directory, from its files: of layers lo to hi-1
 * (lo < 0: those of no layer).
 */
static size_t
model_tensors(const char *name, int lo, int hi)
{
	struct tl_st *st = NULL;
	size_t nst = 0, i, j, n = 0;
	char path[4096];
	const char *l;
	int idx;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (tl_model_load(path, &st, &nst) != 0)
		return 0;
	for (i = 0; i < nst; i++)
		for (j = 0; j < st[i].n; j++) {
			l = strstr(st[i].t[j].name, "layers.");
			idx = l != NULL ? atoi(l + 7) : -1;
			n += lo < 0 ? l == NULL : idx >= lo && idx < hi;
		}
	tl_model_free(st, nst);
	return n;
}

/* How many weight names layers la of model a and lb of b have together. */
static size_t
layer_union(const char *a, int la, const char *b, int lb)
{
	struct tl_st *st = NULL;
	size_t nst = 0, i, j, n = 0, k, nn = 0;
	char path[4096], pre[64], *names[512];
	const char *const which[2] = { a, b };
	const int idx[2] = { la, lb };
	int w;

	for (w = 0; w < 2; w++) {
		snprintf(path, sizeof path, "%s/%s", dir, which[w]);
		snprintf(pre, sizeof pre, "model.layers.%d.", idx[w]);
		if (tl_model_load(path, &st, &nst) != 0)
			return 0;
		for (i = 0; i < nst; i++)
			for (j = 0; j < st[i].n; j++) {
				if (strncmp(st[i].t[j].name, pre,
				    strlen(pre)) != 0)
					continue;
				for (k = 0; k < nn; k++)
					if (strcmp(names[k], st[i].t[j].name +
					    strlen(pre)) == 0)
						break;
				if (k == nn && nn < 512)
					names[nn++] = strdup(st[i].t[j].name +
					    strlen(pre));
			}
		tl_model_free(st, nst);
	}
	n = nn;
	for (k = 0; k < nn; k++)
		free(names[k]);
	return n;
}

/*
 * Hybrid layers (Part A 17): layers of alternating kinds keep every
 * weight, whichever model the architecture comes from, in slices, in
 * models: merges and where layers of different kinds meet.  The shapes
 * of LFM2 (convolution and attention), Granite 4 (mamba and attention)
 * and GLM4-MoE (dense layers, then experts).  mixer names a weight of
 * B's layer 2 that A's layer 2 also has but not every layer has.
 */
static void
test_hybrid(const char *fam, const char *kinds, const char *mixer)
{
	char a[64], b[64], args[512], text[1024], file[128], name[256];
	const struct plan_tensor *t;
	struct graph_plan *p;
	size_t want, got;
	char *m = NULL, *o = NULL;
	int rc;

	snprintf(a, sizeof a, "%s-a", fam);
	snprintf(b, sizeof b, "%s-b", fam);
	snprintf(args, sizeof args, "--family llama --layers 4 --layer-kinds "
	    "%s --seed 11", kinds);
	gen(a, args);
	snprintf(args, sizeof args, "--family llama --layers 4 --layer-kinds "
	    "%s --seed 12 --finetune-of 11 --delta 0.01", kinds);
	gen(b, args);
	/* A[0,2] then B[1,4]: the architecture is A's, and B's layers keep
	 * their own kinds (they were dropped: issue 12). */
	snprintf(text, sizeof text, "slices:\n  - sources:\n      - model: "
	    "%s\n        layer_range: [0, 2]\n  - sources:\n      - model: "
	    "%s\n        layer_range: [1, 4]\nmerge_method: passthrough\n",
	    a, b);
	p = plan(text, &m, false);
	ok(p != NULL, "%s: A[0,2] + B[1,4] plans (%s)", fam, m);
	free(m);
	snprintf(name, sizeof name, "model.layers.3.%s", mixer);
	t = tensor(p, name);
	ok(t != NULL && t->nin == 1 && t->in[0].layer == 2 &&
	    t->in[0].model == 1, "%s: output layer 3 has B's layer-2 %s", fam,
	    mixer);
	graph_plan_free(p);
	snprintf(file, sizeof file, "%s-slices.yml", fam);
	tl_write_at(dir, file, text);
	rc = tl_runf(&o, "cd %s && %s run %s out-%s --quiet 2>&1", dir,
	    tl_mergectl, file, fam);
	ok_int_eq(rc, 0, "%s: mergectl run of those slices exits 0", fam);
	free(o);
	snprintf(name, sizeof name, "out-%s", fam);
	want = model_tensors(a, -1, 0) + model_tensors(a, 0, 2) +
	    model_tensors(b, 1, 4);
	got = model_tensors(name, -1, 0) + model_tensors(name, 0, 5);
	ok(want > 0 && got == want, "%s: every tensor of every source layer "
	    "is written (%zu of %zu)", fam, got, want);
	/* Layers of different kinds side by side: A[0,2] with B[1,3]. */
	snprintf(text, sizeof text, "slices:\n  - sources:\n      - model: "
	    "%s\n        layer_range: [0, 2]\n        parameters: {weight: "
	    "0.5}\n      - model: %s\n        layer_range: [1, 3]\n"
	    "        parameters: {weight: 0.5}\nmerge_method: linear\n", a, b);
	p = plan(text, &m, false);
	got = 0;
	for (size_t i = 0; p != NULL && i < p->ntensors; i++)
		got += p->tensors[i].layer >= 0;
	want = layer_union(a, 0, b, 1) + layer_union(a, 1, b, 2);
	ok(p != NULL, "%s: A[0,2] with B[1,3] plans (%s)", fam, m);
	free(m);
	/* Each output layer holds the union of its sources' weights: the
	 * ones both have once, merged; the others from the one that has
	 * them. */
	ok(p != NULL && got == want && p->nunused == 0, "%s: each output "
	    "layer holds the union of its sources' weights (%zu of %zu)", fam,
	    got, want);
	graph_plan_free(p);
	/* A models: merge keeps every weight of every layer. */
	snprintf(text, sizeof text, "merge_method: linear\nmodels:\n"
	    "  - model: %s\n    parameters: {weight: 0.5}\n  - model: %s\n"
	    "    parameters: {weight: 0.5}\n", b, a);
	p = plan(text, &m, false);
	want = model_tensors(a, -1, 0) + model_tensors(a, 0, 4);
	ok(p != NULL && p->ntensors == want && p->nunused == 0,
	    "%s: a models: merge has all %zu tensors (%s)", fam, want, m);
	graph_plan_free(p);
	free(m);
}

int
main(int argc, char **argv)
{
	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("plan");
	gen("llama", "--family llama --layers 8 --hidden 128 --intermediate "
	    "256 --seed 1");
	gen("llama2", "--family llama --layers 8 --hidden 128 --intermediate "
	    "256 --seed 2 --finetune-of 1 --delta 0.01");
	gen("tied", "--family llama --layers 8 --hidden 128 --intermediate "
	    "256 --seed 3 --tied");
	gen("bigvocab", "--family llama --layers 8 --hidden 128 "
	    "--intermediate 256 --seed 4 --vocab 300");
	gen("qwen3", "--family qwen3 --layers 12 --hidden 128 --intermediate "
	    "384 --seed 5");
	gen("qwen2", "--family qwen2 --layers 4 --hidden 128 --intermediate "
	    "256 --seed 6");
	test_arch_choice();
	test_cross_family();
	test_families();
	test_errors();
	test_layout();
	test_memory();
	gen("odd", "--family llama --layers 2 --seed 7");
	gen("sharded", "--family llama --layers 2 --seed 8 --shard-size 64K");
	test_model_files();
	test_model_limits();
	test_hybrid("lfm2", "conv,attn", "conv.in_proj.weight");
	test_hybrid("granite4", "mamba,mamba,mamba,attn",
	    "mamba.in_proj.weight");
	test_hybrid("glm4moe", "attn,attn,attn+moe,attn+moe",
	    "mlp.experts.1.up_proj.weight");
	return tap_done();
}
