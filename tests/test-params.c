/* SPDX-License-Identifier: MIT */
/*
 * test-params.c: unit tests for graph/params.c, the evaluation of a
 * parameter setting for one tensor at one interpolation position.
 *
 * Gradients must give mergekit's numbers: the worked example of MERGEKIT.md
 * Part B 1.6 (t: [0, 0.5, 0.3, 0.7, 1] over a 40-layer slice) is checked
 * against the published values and, for every layer, against the same
 * formula evaluated here in exact rational form.  Conditional lists must
 * take the first entry whose filter is a plain, case-sensitive substring of
 * the tensor name (no filter matches everything) and report -ENOENT when
 * none matches, so that lookup falls through to the next level.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"
#include "tap.h"

static double exact_gradient(const double *, int, int, int);
static void test_worked_example(void);
static double worst_error(double *, size_t, int);
static void test_all_layers(void);
static void test_short_gradients(void);
static void test_conditional(void);
static void test_no_match(void);
static void test_find(void);
static void test_from_config(void);

static double example[] = { 0, 0.5, 0.3, 0.7, 1 };

/*
 * Layer i of n under gradient g of length L, with t = i / (n - 1) kept as
 * the fraction i (L - 1) / (n - 1): the integer part and the remainder
 * are exact, so only the final interpolation rounds.
 */
static double
exact_gradient(const double *g, int L, int i, int n)
{
	int num = i * (L - 1), den = n - 1;
	int i0 = num / den, i1 = i0 + 1 < L ? i0 + 1 : L - 1;
	double f = (double)(num - i0 * den) / den;

	return g[i0] + f * (g[i1] - g[i0]);
}

static void
test_worked_example(void)
{
	static const int layer[] = { 0, 1, 9, 10, 20, 39 };
	static const double want[] = { 0.0, 0.05128, 0.46154, 0.49487,
		0.32051, 1.0 };
	struct graph_pvalue v = { example, 5, true };
	double got;
	size_t k;
	int rc;

	for (k = 0; k < sizeof layer / sizeof *layer; k++) {
		got = -1;
		rc = pvalue_eval(&v, layer[k] / 39.0, &got);
		ok_int_eq(rc, 0, "layer %d evaluates", layer[k]);
		ok_dbl_near(got, want[k], 1e-5, "layer %d is %.5f (MERGEKIT.md "
		    "1.6)", layer[k], want[k]);
		ok_dbl_near(got, exact_gradient(example, 5, layer[k], 40),
		    1e-12, "layer %d matches the exact formula", layer[k]);
	}
}

/* The largest distance from the exact formula over n layers. */
static double
worst_error(double *g, size_t L, int n)
{
	struct graph_pvalue v = { g, L, true };
	double got, err, worst = 0;
	int i;

	for (i = 0; i < n; i++) {
		got = NAN;
		if (pvalue_eval(&v, (double)i / (n - 1), &got) != 0)
			return INFINITY;
		err = fabs(got - exact_gradient(g, (int)L, i, n));
		if (!(err <= worst))
			worst = err;
	}
	return worst;
}

static void
test_all_layers(void)
{
	double g[7] = { 1, -1, 2, 0.25, 8, 0, 3 };
	double w;

	w = worst_error(example, 5, 40);
	ok(w <= 1e-12, "all 40 layers within 1e-12 (worst %g)", w);
	/* 13 layers over 7 knots: every other layer lands on a knot. */
	w = worst_error(g, 7, 13);
	ok(w <= 1e-12, "7 knots over 13 layers (worst %g)", w);
	w = worst_error(g, 7, 100);
	ok(w <= 1e-12, "7 knots over 100 layers (worst %g)", w);
}

static void
test_short_gradients(void)
{
	double one[1] = { 0.42 }, two[2] = { 2, 4 };
	struct graph_pvalue g1 = { one, 1, true }, sc = { one, 1, false };
	struct graph_pvalue g2 = { two, 2, true }, empty = { NULL, 0, true };
	double got = 0;

	ok(pvalue_eval(&g1, 0.0, &got) == 0 && got == 0.42,
	    "a 1-element gradient at t = 0");
	ok(pvalue_eval(&g1, 1.0, &got) == 0 && got == 0.42,
	    "a 1-element gradient at t = 1");
	ok(pvalue_eval(&sc, 0.7, &got) == 0 && got == 0.42,
	    "a scalar ignores t");
	ok(pvalue_eval(&g2, 0.5, &got) == 0 && got == 3,
	    "[2, 4] at t = 0.5 is 3");
	ok(pvalue_eval(&g2, 1.0, &got) == 0 && got == 4,
	    "[2, 4] at t = 1 is the last value");
	ok(pvalue_eval(&g2, 0.0, &got) == 0 && got == 2,
	    "[2, 4] at t = 0 (embeddings, norm, lm_head) is the first");
	ok_int_eq(pvalue_eval(&empty, 0.5, &got), -EINVAL,
	    "an empty gradient is -EINVAL, not a crash");
}

static void
test_conditional(void)
{
	double a[1] = { 0.1 }, b[2] = { 0, 1 }, c[1] = { 0.9 };
	struct graph_pcond conds[3] = {
		{ .filter = "self_attn", .value = { a, 1, false } },
		{ .filter = "mlp", .value = { b, 2, true } },
		{ .filter = NULL, .value = { c, 1, false } },
	};
	struct graph_param p = { .name = "t", .conditional = true,
		.conds = conds, .nconds = 3 };
	double got = -1;

	ok(param_eval(&p, "model.layers.0.self_attn.q_proj.weight",
	    0.5, &got) == 0 && got == 0.1, "self_attn entry");
	ok(param_eval(&p, "model.layers.3.mlp.up_proj.weight", 0.5,
	    &got) == 0 && got == 0.5, "mlp entry is a gradient: 0.5 at t 0.5");
	ok(param_eval(&p, "model.embed_tokens.weight", 0.0, &got) == 0 &&
	    got == 0.9, "no filter matches every other tensor");
	ok(param_eval(&p, "layers.1.self_attn.mlp_gate", 0.0, &got) ==
	    0 && got == 0.1, "the first matching entry wins");
	conds[0].filter = "attn";
	ok(param_eval(&p, "model.layers.0.self_attn.o_proj.weight",
	    0.0, &got) == 0 && got == 0.1, "a filter matches as a substring");
	conds[0].filter = "layers.1";
	ok(param_eval(&p, "model.layers.12.input_layernorm.weight", 0.0,
	    &got) == 0 && got == 0.1,
	    "substring semantics: 'layers.1' matches layer 12 (as mergekit)");
	conds[0].filter = NULL;
	ok(param_eval(&p, "model.layers.3.mlp.up_proj.weight", 1.0,
	    &got) == 0 && got == 0.1, "a NULL filter first wins over all");
}

static void
test_no_match(void)
{
	double a[1] = { 1 }, b[1] = { 2 };
	struct graph_pcond conds[2] = {
		{ .filter = "*mlp*", .value = { a, 1, false } },
		{ .filter = "MLP", .value = { b, 1, false } },
	};
	struct graph_param p = { .name = "w", .conditional = true,
		.conds = conds, .nconds = 2 };
	struct graph_param none = { .name = "w", .conditional = true };
	double got = 0;

	ok_int_eq(param_eval(&p, "model.layers.0.mlp.up_proj.weight",
	    0.0, &got), -ENOENT, "no globbing, case-sensitive: -ENOENT");
	ok_int_eq(param_eval(&p, "a*mlp*b", 0.0, &got), 0,
	    "'*' inside a filter is a literal character");
	ok(got == 1, "and its entry's value is used");
	ok_int_eq(param_eval(&none, "x", 0.0, &got), -ENOENT,
	    "an empty conditional list matches nothing");
}

static void
test_find(void)
{
	double one[1] = { 1 };
	struct graph_param v[3] = {
		{ .name = "a", .value = { one, 1, false } },
		{ .name = "b", .value = { one, 1, false } },
		{ .name = "weight", .value = { one, 1, false } },
	};
	struct graph_params ps = { v, 3 }, empty = { NULL, 0 };

	ok(params_find(&ps, "weight") == &v[2], "find 'weight'");
	ok(params_find(&ps, "a") == &v[0], "find 'a'");
	ok(params_find(&ps, "w") == NULL, "no prefix matches");
	ok(params_find(&ps, "weights") == NULL, "no longer name");
	ok(params_find(&empty, "a") == NULL, "empty set");
}

/* The same numbers through the config loader, as a user writes them. */
static void
test_from_config(void)
{
	static const char yaml[] =
	    "merge_method: slerp\n"
	    "parameters:\n"
	    "  t:\n"
	    "    - filter: self_attn\n"
	    "      value: [0, 0.5, 0.3, 0.7, 1]\n"
	    "    - value: 0.5\n"
	    "models:\n"
	    "  - model: a\n";
	struct graph_config *cfg = NULL;
	const struct graph_param *t;
	struct graph_diags d;
	double got = -1;

	graph_diags_init(&d);
	if (graph_config_load_buffer("cfg.yml", yaml, sizeof yaml - 1, &cfg,
	    &d) != 0) {
		ok(0, "config loads");
		graph_diags_fini(&d);
		return;
	}
	t = params_find(&cfg->params, "t");
	ok(t != NULL && param_eval(t, "model.layers.20.self_attn.k_proj."
	    "weight", 20 / 39.0, &got) == 0 && fabs(got - 0.32051) < 1e-5,
	    "loaded gradient: layer 20 of 40 is 0.32051");
	ok(t != NULL && param_eval(t, "model.layers.20.mlp.up_proj."
	    "weight", 20 / 39.0, &got) == 0 && got == 0.5,
	    "loaded conditional falls back to the unfiltered entry");
	graph_config_free(cfg);
	graph_diags_fini(&d);
}

int
main(void)
{
	tap_plan_lazy();
	test_worked_example();
	test_all_layers();
	test_short_gradients();
	test_conditional();
	test_no_match();
	test_find();
	test_from_config();
	return tap_done();
}
