/* SPDX-License-Identifier: MIT */
/*
 * test-config.c: unit tests for graph/config.c and graph/yaml.c, loading a
 * merge config from YAML text into the typed struct graph_config.
 *
 * Valid configs in each form mergekit accepts (models:, slices:, modules:
 * default) must fill the typed fields exactly: references with revisions
 * and the object form, scalar, gradient and conditional parameters with
 * YAML 1.2 numbers, booleans and quoted numbers, dtypes, allow_crimes and
 * architecture.  Each kind of mistake must be refused with a diagnostic at
 * the right "file:line:column" whose message names the problem (and the
 * fix, where there is one), several mistakes in one file must all be
 * reported, and hostile input (an alias bomb, a second document, a NUL
 * byte) must fail quickly with an error.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "graph-int.h"
#include "tap.h"

struct bad_config {
	const char *what;
	const char *yaml;
	const char *where;	/* exact "where" of the expected diagnostic */
	const char *phrase;	/* must appear in its message */
};

static int load(const char *, struct graph_config **, struct graph_diags *);
static const struct graph_diag *find_diag(const struct graph_diags *,
    const char *, const char *);
static void dump_diags(const struct graph_diags *);
static void check_bad(const struct bad_config *);
static const struct graph_param *param(const struct graph_params *,
    const char *);
static bool pvalue_is(const struct graph_pvalue *, bool, size_t,
    const double *);
static void test_models_form(void);
static void test_models_params(const struct graph_config *);
static void test_slices_form(void);
static void test_modules_form(void);
static void test_empty_models_with_slices(void);
static void test_numbers(void);
static void test_aliases(void);
static void test_bad_configs(void);
static void test_many_errors(void);
static void test_alias_bomb(void);
static void test_nul_byte(void);
static void test_nulls(void);
static void test_lora_forms(void);

static const struct bad_config bad_configs[] = {
	{ "unknown top-level key",
	    "merge_method: linear\nmodels:\n  - model: a\nparamters:\n"
	    "  weight: 1\n",
	    "cfg.yml:4:1", "did you mean 'parameters'" },
	{ "unknown key in a slice source",
	    "merge_method: passthrough\nslices:\n  - sources:\n"
	    "      - model: a\n        layer_rnge: [0, 4]\n",
	    "cfg.yml:5:9", "unknown key 'layer_rnge' in a slice source; did "
	    "you mean 'layer_range'" },
	{ "unknown key in a model entry",
	    "merge_method: linear\nmodels:\n  - model: a\n    paramters: {}\n",
	    "cfg.yml:4:5", "did you mean 'parameters'" },
	{ "unknown key in a slice",
	    "merge_method: linear\nslices:\n  - sources:\n      - model: a\n"
	    "        layer_range: [0, 1]\n    base_modle: a\n",
	    "cfg.yml:6:5", "did you mean 'base_model'" },
	{ "duplicate key",
	    "merge_method: linear\nmerge_method: slerp\nmodels:\n"
	    "  - model: a\n",
	    "cfg.yml:2:1", "'merge_method' appears twice" },
	{ "duplicate parameter",
	    "merge_method: linear\nparameters:\n  t: 1\n  t: 2\nmodels:\n"
	    "  - model: a\n",
	    "cfg.yml:4:3", "parameter 't' appears twice" },
	{ "dtype bf16",
	    "merge_method: linear\ndtype: bf16\nmodels:\n  - model: a\n",
	    "cfg.yml:2:8", "did you mean 'bfloat16'" },
	{ "out_dtype fp16",
	    "merge_method: linear\nout_dtype: fp16\nmodels:\n  - model: a\n",
	    "cfg.yml:2:12", "did you mean 'float16'" },
	{ "dtype float64",
	    "merge_method: linear\ndtype: float64\nmodels:\n  - model: a\n",
	    "cfg.yml:2:8", "unknown dtype 'float64'" },
	{ "missing merge_method",
	    "models:\n  - model: a\n", "cfg.yml", "missing 'merge_method'" },
	{ "empty merge_method",
	    "merge_method: ''\nmodels:\n  - model: a\n", "cfg.yml:1:15",
	    "non-empty string" },
	{ "models and slices",
	    "merge_method: linear\nmodels:\n  - model: a\nslices:\n"
	    "  - sources:\n      - model: a\n        layer_range: [0, 1]\n",
	    "cfg.yml", "exactly one of 'models', 'slices' or 'modules'" },
	{ "empty models list",
	    "merge_method: linear\nmodels: []\n", "cfg.yml",
	    "exactly one of" },
	{ "no model list at all",
	    "merge_method: linear\n", "cfg.yml", "exactly one of" },
	{ "models not a list",
	    "merge_method: linear\nmodels:\n  a: 1\n", "cfg.yml:3:3",
	    "'models' must be a list" },
	{ "layer_range with one element",
	    "merge_method: passthrough\nslices:\n  - sources:\n"
	    "      - model: a\n        layer_range: [0]\n",
	    "cfg.yml:5:22", "exactly two integers" },
	{ "layer_range with three elements",
	    "merge_method: passthrough\nslices:\n  - sources:\n"
	    "      - model: a\n        layer_range: [0, 1, 2]\n",
	    "cfg.yml:5:22", "exactly two integers" },
	{ "layer_range non-integer",
	    "merge_method: passthrough\nslices:\n  - sources:\n"
	    "      - model: a\n        layer_range: [0, 1.5]\n",
	    "cfg.yml:5:26", "expected an integer" },
	{ "layer_range quoted",
	    "merge_method: passthrough\nslices:\n  - sources:\n"
	    "      - model: a\n        layer_range: [\"0\", 4]\n",
	    "cfg.yml:5:23", "expected an integer" },
	{ "layer_range negative",
	    "merge_method: passthrough\nslices:\n  - sources:\n"
	    "      - model: a\n        layer_range: [-1, 4]\n",
	    "cfg.yml:5:23", "out of range" },
	{ "layer_range end = start",
	    "merge_method: passthrough\nslices:\n  - sources:\n"
	    "      - model: a\n        layer_range: [4, 4]\n",
	    "cfg.yml:5:22", "is empty; the end is exclusive" },
	{ "layer_range end < start",
	    "merge_method: passthrough\nslices:\n  - sources:\n"
	    "      - model: a\n        layer_range: [8, 2]\n",
	    "cfg.yml:5:22", "is empty" },
	{ "layer_range missing",
	    "merge_method: passthrough\nslices:\n  - sources:\n"
	    "      - model: a\n",
	    "cfg.yml:4:9", "needs 'layer_range" },
	{ "slice without sources",
	    "merge_method: passthrough\nslices:\n  - base_model: a\n",
	    "cfg.yml:3:5", "non-empty 'sources'" },
	{ "bare conditional mapping",
	    "merge_method: linear\nmodels:\n  - model: a\n    parameters:\n"
	    "      weight: {filter: x, value: 1}\n",
	    "cfg.yml:5:15", "must be a list of entries" },
	{ "bare conditional mapping, block style",
	    "merge_method: linear\nparameters:\n  weight:\n    filter: x\n"
	    "    value: 1\nmodels:\n  - model: a\n",
	    "cfg.yml:4:5", "must be a list of entries" },
	{ "mixed list",
	    "merge_method: linear\nparameters:\n  weight: [1, {value: 2}]\n"
	    "models:\n  - model: a\n",
	    "cfg.yml:3:11", "mixes conditional entries and plain values" },
	{ "conditional entry without value",
	    "merge_method: linear\nparameters:\n  weight:\n"
	    "    - filter: mlp\nmodels:\n  - model: a\n",
	    "cfg.yml:4:7", "needs 'value'" },
	{ "conditional entry with a typo",
	    "merge_method: linear\nparameters:\n  weight:\n"
	    "    - filter: mlp\n      valeu: 1\nmodels:\n  - model: a\n",
	    "cfg.yml:5:7", "did you mean 'value'" },
	{ "non-numeric parameter",
	    "merge_method: linear\nparameters:\n  weight: heavy\nmodels:\n"
	    "  - model: a\n",
	    "cfg.yml:3:11", "expected a number, got 'heavy'" },
	{ "non-numeric gradient element",
	    "merge_method: linear\nparameters:\n  weight: [0, x, 1]\nmodels:\n"
	    "  - model: a\n",
	    "cfg.yml:3:15", "expected a number, got 'x'" },
	{ "empty gradient",
	    "merge_method: linear\nparameters:\n  weight: []\nmodels:\n"
	    "  - model: a\n",
	    "cfg.yml:3:11", "at least one value" },
	{ ".inf",
	    "merge_method: linear\nparameters:\n  weight: .inf\nmodels:\n"
	    "  - model: a\n",
	    "cfg.yml:3:11", "finite" },
	{ "-.inf in a gradient",
	    "merge_method: linear\nparameters:\n  weight: [0, -.inf]\n"
	    "models:\n  - model: a\n",
	    "cfg.yml:3:15", "'-.inf'" },
	{ "1e999 overflows",
	    "merge_method: linear\nparameters:\n  weight: 1e999\nmodels:\n"
	    "  - model: a\n",
	    "cfg.yml:3:11", "finite" },
	{ ".nan",
	    "merge_method: linear\nparameters:\n  weight: .nan\nmodels:\n"
	    "  - model: a\n",
	    "cfg.yml:3:11", ".nan" },
	{ "parameters not a mapping",
	    "merge_method: linear\nparameters: [1]\nmodels:\n  - model: a\n",
	    "cfg.yml:2:13", "'parameters' must be a mapping" },
	{ "tokenizer_source and tokenizer both",
	    "merge_method: linear\ntokenizer_source: union\n"
	    "tokenizer: {source: base}\nmodels:\n  - model: a\n",
	    "cfg.yml:3:12", "give 'tokenizer_source' or 'tokenizer', not "
	    "both" },
	{ "tokenizer: an unknown key",
	    "merge_method: linear\ntokenizer: {sorce: base}\nmodels:\n"
	    "  - model: a\n",
	    "cfg.yml:2:13", "unknown key 'sorce' in 'tokenizer'; did you "
	    "mean 'source'?" },
	{ "tokenizer: pad_to_multiple_of 0",
	    "merge_method: linear\ntokenizer: {pad_to_multiple_of: 0}\n"
	    "models:\n  - model: a\n",
	    "cfg.yml:2:33", "'pad_to_multiple_of' must be at least 1" },
	{ "tokenizer: model_token with both token_id and token",
	    "merge_method: linear\ntokenizer:\n  tokens:\n    x:\n"
	    "      source: {kind: model_token, model: a, token_id: 1, "
	    "token: y}\nmodels:\n  - model: a\n",
	    "cfg.yml:5:15", "exactly one of 'token_id' and 'token'" },
	{ "tokenizer: an unknown source kind",
	    "merge_method: linear\ntokenizer:\n  tokens:\n    x:\n"
	    "      source: {kind: mean}\nmodels:\n  - model: a\n",
	    "cfg.yml:5:22", "'kind' is 'model_token' or 'zero'" },
	{ "tokenizer: force not a boolean",
	    "merge_method: linear\ntokenizer:\n  tokens:\n    x:\n"
	    "      force: 2\nmodels:\n  - model: a\n",
	    "cfg.yml:5:14", "'force' must be true or false" },
	{ "tokenizer: a token listed twice",
	    "merge_method: linear\ntokenizer:\n  tokens:\n    x: {}\n"
	    "    'x': {}\nmodels:\n  - model: a\n",
	    "cfg.yml:5:5", "token 'x' is listed twice" },
	{ "chat_template: a typo of a built-in name",
	    "merge_method: linear\nchat_template: chatm1\nmodels:\n"
	    "  - model: a\n",
	    "cfg.yml:2:16", "did you mean 'chatml'?" },
	{ "chat_template: too short for a template",
	    "merge_method: linear\nchat_template: '{{ x }}'\nmodels:\n"
	    "  - model: a\n",
	    "cfg.yml:2:16", "at least 20 characters and a '{'" },
	{ "chat_template: not a string",
	    "merge_method: linear\nchat_template: [chatml]\nmodels:\n"
	    "  - model: a\n",
	    "cfg.yml:2:16", "'chat_template' must be a non-empty string" },
	{ "an adapter given twice",
	    "merge_method: linear\nmodels:\n  - model:\n      model: a+c\n"
	    "      lora: b\n",
	    "cfg.yml:5:13", "already names an adapter" },
	{ "lora: a list",
	    "merge_method: linear\nmodels:\n  - model:\n      model: a\n"
	    "      lora: [b]\n",
	    "cfg.yml:5:13", "'lora' must be an adapter path" },
	{ "lora: a '+' in the adapter",
	    "merge_method: linear\nmodels:\n  - model:\n      model: a\n"
	    "      lora: b+c\n",
	    "cfg.yml:5:13", "an adapter path has no '+'" },
	{ "lora: an unknown key",
	    "merge_method: linear\nmodels:\n  - model:\n      model: a\n"
	    "      lora: {path: b, rev: x}\n",
	    "cfg.yml:5:23", "unknown key 'rev' in a LoRA adapter path" },
	{ "two '@'",
	    "merge_method: linear\nmodels:\n  - model: a@b@c\n",
	    "cfg.yml:3:12", "more than one '@'" },
	{ "two '+'",
	    "merge_method: linear\nmodels:\n  - model: a+b+c\n",
	    "cfg.yml:3:12", "more than one '+'" },
	{ "empty revision",
	    "merge_method: linear\nbase_model: org/a@\nmodels:\n"
	    "  - model: a\n",
	    "cfg.yml:2:13", "empty revision" },
	{ "object reference without model",
	    "merge_method: linear\nmodels:\n  - model: {path: a}\n",
	    "cfg.yml:3:13", "unknown key 'path'" },
	{ "object path with a typo",
	    "merge_method: linear\nmodels:\n  - model:\n      model: "
	    "{path: a, revison: b}\n",
	    "cfg.yml:4:24", "did you mean 'revision'" },
	{ "allow_crimes not a boolean",
	    "merge_method: linear\nallow_crimes: maybe\nmodels:\n"
	    "  - model: a\n",
	    "cfg.yml:2:15", "true or false" },
	{ "a module that is not a mapping",
	    "merge_method: linear\nmodules:\n  text_decoder: [a]\n",
	    "cfg.yml:3:17", "module 'text_decoder' must be a mapping" },
	{ "an empty default module (found by fuzz-config)",
	    "merge_method: linear\nmodules:\n  default:\n",
	    "cfg.yml:3:3", "module 'default' needs exactly one of" },
	{ "default twice in modules (found by fuzz-config)",
	    "merge_method: linear\nmodules:\n  default:\n  default:\n",
	    "cfg.yml:4:3", "key 'default' appears twice in 'modules'" },
	{ "module with both slices and models",
	    "merge_method: linear\nmodules:\n  default:\n    models:\n"
	    "      - model: a\n    slices:\n      - sources:\n"
	    "          - model: a\n            layer_range: [0, 1]\n",
	    "cfg.yml:4:5", "exactly one of 'slices' or 'models'" },
	{ "YAML syntax error",
	    "merge_method: linear\nmodels:\n  - model: a\n   bad: x\n",
	    "cfg.yml:4:4", "YAML syntax error" },
	{ "tab indentation",
	    "merge_method: linear\nmodels:\n\t- model: a\n",
	    "cfg.yml:3:1", "YAML syntax error" },
	{ "non-scalar key",
	    "merge_method: linear\n? [a]\n: 1\nmodels:\n  - model: a\n",
	    "cfg.yml:2:3", "keys must be plain strings" },
	{ "unknown alias",
	    "merge_method: linear\nmodels:\n  - model: *nope\n",
	    "cfg.yml:3:12", "unknown alias" },
	{ "second document",
	    "merge_method: linear\nmodels:\n  - model: a\n---\n"
	    "merge_method: slerp\n",
	    "cfg.yml:4:1", "more than one YAML document" },
	{ "empty document", "", "cfg.yml", "empty" },
	{ "only a comment", "# merge config\n\n", "cfg.yml", "empty" },
	{ "a scalar document", "linear\n", "cfg.yml:1:1",
	    "must be a mapping" },
	{ "a list document", "- merge_method: linear\n", "cfg.yml:1:1",
	    "must be a mapping" },
};

/* Loads text as cfg.yml into a fresh diagnostics list. */
static int
load(const char *text, struct graph_config **cfg, struct graph_diags *d)
{
	graph_diags_init(d);
	return graph_config_load_buffer("cfg.yml", text, strlen(text), cfg,
	    d);
}

/* The error at exactly where whose message contains phrase, or NULL. */
static const struct graph_diag *
find_diag(const struct graph_diags *d, const char *where, const char *phrase)
{
	size_t i;

	for (i = 0; i < d->n; i++) {
		if (d->v[i].sev != GRAPH_SEV_ERROR || d->v[i].where == NULL)
			continue;
		if (strcmp(d->v[i].where, where) == 0 &&
		    strstr(d->v[i].msg, phrase) != NULL)
			return &d->v[i];
	}
	return NULL;
}

static void
dump_diags(const struct graph_diags *d)
{
	size_t i;

	for (i = 0; i < d->n; i++)
		tap_diag("  %s: %s: %s", d->v[i].where ? d->v[i].where : "-",
		    d->v[i].sev == GRAPH_SEV_ERROR ? "error" : "warning",
		    d->v[i].msg);
}

static void
check_bad(const struct bad_config *b)
{
	struct graph_config *cfg = (void *)1;
	struct graph_diags d;
	int rc;

	rc = load(b->yaml, &cfg, &d);
	ok(rc < 0 && cfg == NULL && d.nerrors > 0, "%s: refused", b->what);
	if (!ok(find_diag(&d, b->where, b->phrase) != NULL,
	    "%s: error at %s says \"%s\"", b->what, b->where, b->phrase))
		dump_diags(&d);
	if (rc == 0)
		graph_config_free(cfg);
	graph_diags_fini(&d);
}

static const struct graph_param *
param(const struct graph_params *ps, const char *name)
{
	const struct graph_param *p = params_find(ps, name);

	if (p == NULL)
		tap_diag("no parameter '%s'", name);
	return p;
}

/* A value with exactly these numbers (compared with ==). */
static bool
pvalue_is(const struct graph_pvalue *v, bool gradient, size_t n,
    const double *want)
{
	size_t i;

	if (v->gradient != gradient || v->n != n)
		return false;
	for (i = 0; i < n; i++)
		if (v->v[i] != want[i])
			return false;
	return true;
}

static const char models_yaml[] =
    "merge_method: linear\n"
    "base_model: org/base@v1.0\n"
    "dtype: torch.bfloat16\n"
    "out_dtype: float16\n"
    "allow_crimes: yes\n"
    "architecture: org/arch\n"
    "parameters:\n"
    "  normalize: true\n"
    "  int8_mask: on\n"
    "  rescale: off\n"
    "  lambda: 1e-5\n"
    "  eps: \"0.5\"\n"
    "  t:\n"
    "    - filter: self_attn\n"
    "      value: [0, 0.5, 1]\n"
    "    - filter: \"*\"\n"
    "      value: 0.25\n"
    "models:\n"
    "  - model: org/a\n"
    "    parameters:\n"
    "      weight: 0.7\n"
    "      density: [1, 0.5]\n"
    "  - model:\n"
    "      model:\n"
    "        path: ./local/b\n"
    "        revision: main\n"
    "    parameters:\n"
    "      weight:\n"
    "        - filter: mlp\n"
    "          value: 2\n"
    "        - value: 3\n";

static void
test_models_form(void)
{
	struct graph_config *cfg = NULL;
	struct graph_diags d;
	int rc;

	rc = load(models_yaml, &cfg, &d);
	ok(rc == 0 && cfg != NULL && d.n == 0, "models: form loads cleanly");
	if (rc != 0) {
		dump_diags(&d);
		graph_diags_fini(&d);
		return;
	}
	ok_str_eq(cfg->method, "linear", "merge_method");
	ok(cfg->method_mark.line == 1 && cfg->method_mark.col == 15,
	    "merge_method's position is 1:15");
	ok(cfg->has_base && strcmp(cfg->base.path, "org/base") == 0 &&
	    cfg->base.rev != NULL && strcmp(cfg->base.rev, "v1.0") == 0,
	    "base_model org/base@v1.0 splits path and revision");
	ok_int_eq(cfg->dtype, GRAPH_DT_BF16, "dtype torch.bfloat16");
	ok_int_eq(cfg->out_dtype, GRAPH_DT_F16, "out_dtype float16");
	ok(cfg->allow_crimes, "allow_crimes: yes");
	ok(cfg->has_arch && strcmp(cfg->arch.path, "org/arch") == 0 &&
	    cfg->arch.rev == NULL, "architecture: org/arch");
	ok_int_eq(cfg->mods[0].form, GRAPH_FORM_MODELS, "form is models");
	ok(!cfg->modules && cfg->mods[0].nslices == 0, "no modules, no slices");
	ok(cfg->text_len == strlen(models_yaml) &&
	    memcmp(cfg->text, models_yaml, cfg->text_len) == 0,
	    "the original text is kept");
	ok_str_eq(cfg->path, "cfg.yml", "path for messages");
	test_models_params(cfg);
	graph_config_free(cfg);
	graph_diags_fini(&d);
}

static void
test_models_params(const struct graph_config *cfg)
{
	static const double one[] = { 1 }, zero[] = { 0 }, half[] = { 0.5 };
	static const double lam[] = { 1e-5 }, grad[] = { 0, 0.5, 1 };
	static const double q[] = { 0.25 }, w[] = { 0.7 };
	static const double dens[] = { 1, 0.5 }, two[] = { 2 }, three[] = { 3 };
	const struct graph_param *p;
	const struct graph_source *m;

	ok_int_eq(cfg->params.n, 6, "six top-level parameters");
	p = param(&cfg->params, "normalize");
	ok(p && !p->conditional && pvalue_is(&p->value, false, 1, one),
	    "normalize: true is 1.0");
	p = param(&cfg->params, "int8_mask");
	ok(p && pvalue_is(&p->value, false, 1, one), "int8_mask: on is 1.0");
	p = param(&cfg->params, "rescale");
	ok(p && pvalue_is(&p->value, false, 1, zero), "rescale: off is 0.0");
	p = param(&cfg->params, "lambda");
	ok(p && pvalue_is(&p->value, false, 1, lam),
	    "lambda: 1e-5 is a number (YAML 1.2)");
	p = param(&cfg->params, "eps");
	ok(p && pvalue_is(&p->value, false, 1, half), "eps: \"0.5\" is 0.5");
	p = param(&cfg->params, "t");
	ok(p && p->conditional && p->nconds == 2, "t is a 2-entry conditional");
	if (p && p->conditional && p->nconds == 2) {
		ok_str_eq(p->conds[0].filter, "self_attn", "t[0] filter");
		ok(pvalue_is(&p->conds[0].value, true, 3, grad),
		    "t[0] value is the gradient [0, 0.5, 1]");
		ok(p->conds[1].filter == NULL,
		    "filter \"*\" is stored as NULL");
		ok(pvalue_is(&p->conds[1].value, false, 1, q),
		    "t[1] value 0.25");
		ok(p->mark.line == 13 && p->mark.col == 3, "t's position");
		ok(p->conds[1].mark.line == 16, "t[1]'s position");
	}
	ok_int_eq(cfg->mods[0].nmodels, 2, "two models");
	if (cfg->mods[0].nmodels != 2)
		return;
	m = &cfg->mods[0].models[0];
	ok(strcmp(m->model.path, "org/a") == 0 && m->model.rev == NULL &&
	    !m->has_range, "models[0] is org/a without revision or range");
	ok(m->mark.line == 19 && m->mark.col == 5, "models[0] position 19:5");
	p = param(&m->params, "weight");
	ok(p && pvalue_is(&p->value, false, 1, w), "models[0] weight 0.7");
	p = param(&m->params, "density");
	ok(p && pvalue_is(&p->value, true, 2, dens),
	    "models[0] density gradient [1, 0.5]");
	m = &cfg->mods[0].models[1];
	ok(strcmp(m->model.path, "./local/b") == 0 && m->model.rev != NULL &&
	    strcmp(m->model.rev, "main") == 0,
	    "object form {model: {path, revision}}");
	p = param(&m->params, "weight");
	ok(p && p->conditional && p->nconds == 2 && p->conds[0].filter &&
	    strcmp(p->conds[0].filter, "mlp") == 0 &&
	    pvalue_is(&p->conds[0].value, false, 1, two) &&
	    p->conds[1].filter == NULL &&
	    pvalue_is(&p->conds[1].value, false, 1, three),
	    "models[1] weight: [mlp -> 2, (no filter) -> 3]");
	ok(params_find(&m->params, "density") == NULL,
	    "models[1] has no density");
}

static void
test_slices_form(void)
{
	static const char yaml[] =
	    "merge_method: slerp\n"
	    "base_model: org/a\n"
	    "slices:\n"
	    "  - sources:\n"
	    "      - model: org/a\n"
	    "        layer_range: [0, 16]\n"
	    "      - model: org/b@abc\n"
	    "        layer_range: [8, 24]\n"
	    "        parameters:\n"
	    "          weight: 0.5\n"
	    "    base_model: org/b\n"
	    "    parameters:\n"
	    "      t: [0, 1]\n"
	    "  - sources:\n"
	    "      - model: org/a\n"
	    "        layer_range: [16, 32]\n"
	    "    residual_weight: 0.5\n";
	static const double t[] = { 0, 1 }, half[] = { 0.5 };
	struct graph_config *cfg = NULL;
	const struct graph_slice *s;
	const struct graph_param *p;
	struct graph_diags d;
	int rc;

	rc = load(yaml, &cfg, &d);
	ok(rc == 0 && cfg != NULL, "slices: form loads");
	if (rc != 0) {
		dump_diags(&d);
		graph_diags_fini(&d);
		return;
	}
	ok(d.nerrors == 0 && d.n == 1 && d.v[0].sev == GRAPH_SEV_WARNING &&
	    strstr(d.v[0].msg, "residual_weight") != NULL,
	    "residual_weight is accepted with a warning");
	ok(d.n == 1 && d.v[0].where != NULL &&
	    strcmp(d.v[0].where, "cfg.yml:17:22") == 0,
	    "the warning points at the value");
	ok(cfg->mods[0].form == GRAPH_FORM_SLICES && cfg->mods[0].nslices == 2 &&
	    cfg->mods[0].nmodels == 0 && !cfg->modules, "two slices");
	s = &cfg->mods[0].slices[0];
	ok(s->nsrc == 2 && s->src[0].has_range && s->src[0].start == 0 &&
	    s->src[0].end == 16, "slice 0 source 0: org/a [0, 16)");
	ok(strcmp(s->src[1].model.path, "org/b") == 0 &&
	    s->src[1].model.rev != NULL &&
	    strcmp(s->src[1].model.rev, "abc") == 0 &&
	    s->src[1].start == 8 && s->src[1].end == 24,
	    "slice 0 source 1: org/b@abc [8, 24)");
	p = param(&s->src[1].params, "weight");
	ok(p && pvalue_is(&p->value, false, 1, half), "source parameters");
	ok(s->has_base && strcmp(s->base.path, "org/b") == 0,
	    "slice base_model");
	p = param(&s->params, "t");
	ok(p && pvalue_is(&p->value, true, 2, t), "slice parameters t");
	s = &cfg->mods[0].slices[1];
	ok(s->nsrc == 1 && !s->has_base && s->params.n == 0 &&
	    s->src[0].start == 16 && s->src[0].end == 32,
	    "slice 1: org/a [16, 32), no base, no parameters");
	ok(cfg->has_base && strcmp(cfg->base.path, "org/a") == 0,
	    "global base_model");
	graph_config_free(cfg);
	graph_diags_fini(&d);
}

static void
test_modules_form(void)
{
	static const char slices[] =
	    "merge_method: passthrough\n"
	    "modules:\n"
	    "  default:\n"
	    "    slices:\n"
	    "      - sources:\n"
	    "          - model: org/a\n"
	    "            layer_range: [0, 4]\n"
	    "    parameters:\n"
	    "      scale: 2\n";
	static const char models[] =
	    "merge_method: linear\n"
	    "modules:\n"
	    "  default:\n"
	    "    models:\n"
	    "      - model: org/a\n"
	    "      - model: org/b\n";
	static const double two[] = { 2 };
	struct graph_config *cfg = NULL;
	const struct graph_param *p;
	struct graph_diags d;
	int rc;

	rc = load(slices, &cfg, &d);
	ok(rc == 0 && cfg != NULL, "modules: {default: {slices}} loads");
	if (rc == 0) {
		ok(cfg->modules && cfg->mods[0].form == GRAPH_FORM_SLICES &&
		    cfg->mods[0].nslices == 1 && cfg->mods[0].slices[0].nsrc == 1 &&
		    cfg->mods[0].slices[0].src[0].end == 4,
		    "modules flag and the module's slices");
		p = param(&cfg->mods[0].params, "scale");
		ok(p && pvalue_is(&p->value, false, 1, two) &&
		    cfg->params.n == 0, "module parameters are kept apart");
	} else {
		dump_diags(&d);
	}
	graph_config_free(cfg);
	graph_diags_fini(&d);
	rc = load(models, &cfg, &d);
	ok(rc == 0 && cfg != NULL && cfg->modules &&
	    cfg->mods[0].form == GRAPH_FORM_MODELS && cfg->mods[0].nmodels == 2 &&
	    strcmp(cfg->mods[0].models[1].model.path, "org/b") == 0,
	    "modules: {default: {models}} loads");
	graph_config_free(cfg);
	graph_diags_fini(&d);
}

static void
test_empty_models_with_slices(void)
{
	static const char yaml[] =
	    "merge_method: passthrough\n"
	    "models: []\n"
	    "slices:\n"
	    "  - sources:\n"
	    "      - model: a\n"
	    "        layer_range: [0, 2]\n";
	struct graph_config *cfg = NULL;
	struct graph_diags d;
	int rc;

	rc = load(yaml, &cfg, &d);
	ok(rc == 0 && cfg != NULL && cfg->mods[0].form == GRAPH_FORM_SLICES &&
	    cfg->mods[0].nslices == 1, "an empty models list beside slices is absent");
	graph_config_free(cfg);
	graph_diags_fini(&d);
}

/* Scalars a parameter may be written as, and what they mean. */
static void
test_numbers(void)
{
	static const struct {
		const char *text;
		double want;
	} nums[] = {
		{ "1e-5", 1e-5 }, { "1E+3", 1000 }, { "-.5", -0.5 },
		{ "+2.", 2 }, { "10", 10 }, { "010", 10 }, { "0x1F", 31 },
		{ "0o17", 15 }, { "true", 1 }, { "True", 1 }, { "yes", 1 },
		{ "on", 1 }, { "false", 0 }, { "no", 0 }, { "OFF", 0 },
		{ "\"0.5\"", 0.5 }, { "'3'", 3 },
	};
	struct graph_config *cfg;
	struct graph_diags d;
	char yaml[256];
	size_t i;
	int rc;

	for (i = 0; i < sizeof nums / sizeof *nums; i++) {
		snprintf(yaml, sizeof yaml, "merge_method: linear\n"
		    "parameters:\n  x: %s\nmodels:\n  - model: a\n",
		    nums[i].text);
		rc = load(yaml, &cfg, &d);
		ok(rc == 0 && cfg->params.n == 1 &&
		    cfg->params.v[0].value.n == 1 &&
		    cfg->params.v[0].value.v[0] == nums[i].want,
		    "parameter %s is %g", nums[i].text, nums[i].want);
		if (rc != 0)
			dump_diags(&d);
		graph_config_free(cfg);
		graph_diags_fini(&d);
	}
}

static void
test_aliases(void)
{
	static const char yaml[] =
	    "merge_method: linear\n"
	    "models:\n"
	    "  - model: &m org/m\n"
	    "    parameters: &p\n"
	    "      weight: [1, 2]\n"
	    "  - model: *m\n"
	    "    parameters: *p\n";
	static const double w[] = { 1, 2 };
	struct graph_config *cfg = NULL;
	const struct graph_param *p;
	struct graph_diags d;
	int rc;

	rc = load(yaml, &cfg, &d);
	ok(rc == 0 && cfg->mods[0].nmodels == 2 &&
	    strcmp(cfg->mods[0].models[1].model.path, "org/m") == 0,
	    "aliases are expanded");
	if (rc == 0) {
		p = param(&cfg->mods[0].models[1].params, "weight");
		ok(p && pvalue_is(&p->value, true, 2, w),
		    "an aliased parameter mapping is a copy");
	}
	graph_config_free(cfg);
	graph_diags_fini(&d);
}

static void
test_bad_configs(void)
{
	size_t i;

	for (i = 0; i < sizeof bad_configs / sizeof *bad_configs; i++)
		check_bad(&bad_configs[i]);
}

/* Independent mistakes are all reported, not only the first. */
static void
test_many_errors(void)
{
	static const char yaml[] =
	    "merge_method: linear\n"
	    "dtype: bf16\n"
	    "paramters:\n"
	    "  weight: 1\n"
	    "models:\n"
	    "  - model: a\n"
	    "    parameters:\n"
	    "      weight: heavy\n"
	    "  - model: b@x@y\n";
	struct graph_config *cfg = (void *)1;
	struct graph_diags d;
	int rc;

	rc = load(yaml, &cfg, &d);
	ok(rc < 0 && cfg == NULL, "a config with four mistakes is refused");
	ok(d.nerrors >= 4, "all four are reported (%zu errors)", d.nerrors);
	ok(find_diag(&d, "cfg.yml:2:8", "bfloat16") != NULL &&
	    find_diag(&d, "cfg.yml:3:1", "parameters") != NULL &&
	    find_diag(&d, "cfg.yml:8:15", "heavy") != NULL &&
	    find_diag(&d, "cfg.yml:9:12", "more than one '@'") != NULL,
	    "each at its own line and column");
	if (d.nerrors < 4)
		dump_diags(&d);
	graph_diags_fini(&d);
}

/*
 * Nine levels of ten aliases expand to 10^9 nodes: this must be an error,
 * quickly, not an allocation storm or a hang.
 */
static void
test_alias_bomb(void)
{
	struct graph_config *cfg = (void *)1;
	struct graph_diags d;
	struct timespec t0, t1;
	char yaml[2048], *p = yaml;
	double secs;
	int i, j, rc;

	p += sprintf(p, "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
	for (i = 1; i < 9; i++) {
		p += sprintf(p, "a%d: &a%d [", i, i);
		for (j = 0; j < 10; j++)
			p += sprintf(p, "%s*a%d", j ? ", " : "", i - 1);
		p += sprintf(p, "]\n");
	}
	sprintf(p, "merge_method: linear\nmodels:\n  - model: m\n");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = load(yaml, &cfg, &d);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) +
	    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	ok(rc < 0 && cfg == NULL, "an alias bomb is refused");
	ok(d.nerrors == 1 && strstr(d.v[0].msg, "too many nodes") != NULL,
	    "with a 'too many nodes' error");
	/* The node limit bounds the work; the time is only reported, as a
	 * busy machine (valgrind, a build beside it) may take any time. */
	tap_diag("refused after %.3f s", secs);
	graph_diags_fini(&d);
}

/* mergekit's three spellings of one adapter reference are one reference. */
static void
test_lora_forms(void)
{
	static const char *const forms[] = {
		"merge_method: linear\nmodels:\n  - model: org/a@r1+ad/x@r2\n",
		"merge_method: linear\nmodels:\n  - model:\n      model: "
		    "org/a@r1\n      lora: ad/x@r2\n",
		"merge_method: linear\nmodels:\n  - model:\n      model: "
		    "{path: org/a, revision: r1}\n      lora: {path: ad/x, "
		    "revision: r2}\n",
	};
	struct graph_config *cfg;
	struct graph_diags d;
	char *s;
	size_t i;

	for (i = 0; i < sizeof forms / sizeof *forms; i++) {
		cfg = NULL;
		if (!ok(load(forms[i], &cfg, &d) == 0, "adapter form %zu loads",
		    i + 1)) {
			dump_diags(&d);
			graph_diags_fini(&d);
			continue;
		}
		s = graph_ref_str(&cfg->mods[0].models[0].model);
		ok_str_eq(s, "org/a@r1+ad/x@r2", "adapter form %zu is "
		    "org/a@r1+ad/x@r2", i + 1);
		free(s);
		graph_config_free(cfg);
		graph_diags_fini(&d);
	}
}

static void
test_nul_byte(void)
{
	static const char yaml[] = "merge_method: linear\0\nmodels:\n"
	    "  - model: a\n";
	struct graph_config *cfg = (void *)1;
	struct graph_diags d;
	int rc;

	graph_diags_init(&d);
	rc = graph_config_load_buffer("cfg.yml", yaml, sizeof yaml - 1, &cfg,
	    &d);
	ok(rc < 0 && cfg == NULL && d.nerrors == 1 &&
	    strstr(d.v[0].msg, "NUL") != NULL, "a NUL byte is refused");
	graph_diags_fini(&d);
}

int
main(void)
{
	tap_plan_lazy();
	test_models_form();
	test_slices_form();
	test_modules_form();
	test_empty_models_with_slices();
	test_numbers();
	test_aliases();
	test_bad_configs();
	test_many_errors();
	test_alias_bomb();
	test_nul_byte();
	test_nulls();
	test_lora_forms();
	return tap_done();
}

/* YAML null (empty, ~, null) means "not set", as it does for mergekit. */
static void
test_nulls(void)
{
	static const char text[] = "merge_method: linear\nbase_model:\n"
	    "dtype: ~\nparameters:\nmodels:\n  - model: a\n"
	    "    parameters: {weight: ~, density: null}\n";
	struct graph_config *cfg = NULL;
	struct graph_diags d;
	int rc;

	rc = load(text, &cfg, &d);
	ok_int_eq(rc, 0, "null values load");
	if (rc != 0)
		dump_diags(&d);
	ok(cfg != NULL && !cfg->has_base && cfg->dtype == GRAPH_DT_NONE &&
	    cfg->params.n == 0 && cfg->mods[0].models[0].params.n == 0,
	    "a null base_model, dtype, parameters or parameter is unset");
	graph_config_free(cfg);
	graph_diags_fini(&d);
	rc = load("merge_method: ~\nmodels:\n  - model: a\n", &cfg, &d);
	ok(rc != 0 && find_diag(&d, "cfg.yml", "missing 'merge_method'") !=
	    NULL, "a null merge_method is a missing one");
	graph_config_free(cfg);
	graph_diags_fini(&d);
}
