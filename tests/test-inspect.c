/* SPDX-License-Identifier: MIT */
/*
 * test-inspect.c: mergectl inspect on generated models of known
 * structure.
 *
 * - A donor made from the base with its layers moved up by 3 (genmodel
 *   --shift 3, plus noise): the map finds layer i + 3 of the donor for
 *   each layer i of the base that has one, and suggests exactly that
 *   mapping as slices.
 * - Two fine-tunes of one base with proportional noise (the same --seed,
 *   --delta 0.01 and 0.02, float32): against --base, layer i's task
 *   vectors are parallel (cosine 1) and other layers' not; one cosine
 *   and every layer's norm of the difference from the base equal what
 *   this test computes itself in float64 from the files.
 * - A budget below one row of every layer is refused, saying the least.
 * - The SVG renders in headless Chromium (a screenshot is kept in
 *   $TEST_ARTIFACTS).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "tap.h"
#include "testlib.h"

#define LAYERS 12

static const char *dir;

static cJSON *
inspect_json(const char *args)
{
	char *o = NULL;
	cJSON *j = NULL;

	if (tl_runf(&o, "cd %s && %s inspect %s --json 2>/dev/null", dir,
	    tl_mergectl, args) == 0)
		j = cJSON_Parse(o);
	if (j == NULL)
		tap_diag("inspect %s: %s", args, o ? o : "");
	free(o);
	return j;
}

static double
num(const cJSON *j)
{
	return cJSON_GetNumberValue(j);
}

static void
test_shift(void)
{
	char *o = NULL;
	cJSON *j, *b;
	int i, right = 0;
	double worst = 1;

	j = inspect_json("base shifted");
	cJSON_ArrayForEach(b, cJSON_GetObjectItem(j, "best")) {
		i = (int)num(cJSON_GetObjectItem(b, "layer"));
		if (i + 3 < LAYERS && (int)num(cJSON_GetObjectItem(b,
		    "match")) == i + 3) {
			right++;
			if (num(cJSON_GetObjectItem(b, "cos")) < worst)
				worst = num(cJSON_GetObjectItem(b, "cos"));
		}
	}
	ok(right == LAYERS - 3 && worst > 0.9, "a donor shifted by 3 layers: "
	    "each layer's best match is 3 above it (%d of %d, cosine at least "
	    "%.3f)", right, LAYERS - 3, worst);
	ok(j != NULL && strstr(cJSON_GetStringValue(cJSON_GetObjectItem(j,
	    "slices")), "      - model: base\n        layer_range: [0, 9]\n"
	    "      - model: shifted\n        layer_range: [3, 12]\n") != NULL,
	    "and the slices it suggests map layers 0-8 to 3-11");
	cJSON_Delete(j);
	tl_runf(&o, "cd %s && %s inspect base shifted 2>&1", dir,
	    tl_mergectl);
	ok(o != NULL && strstr(o, "    0 :::@") != NULL && strstr(o,
	    "-> 3 (") != NULL, "the terminal map marks the best match of each "
	    "row");
	free(o);
}

/* dir/name's tensors. */
static void
load(const char *name, struct tl_st **m, size_t *n)
{
	char path[600];

	snprintf(path, sizeof path, "%s/%s", dir, name);
	tl_model_load(path, m, n);
}

/* Sum of squares of (x - base) over every tensor of layer i. */
static double
layer_diff2(struct tl_st *x, size_t nx, struct tl_st *base, size_t nb,
    int layer)
{
	char prefix[64];
	const struct tl_tensor *t, *u;
	double s = 0, d;
	uint64_t e;
	size_t f, k;

	snprintf(prefix, sizeof prefix, "model.layers.%d.", layer);
	for (f = 0; f < nx; f++)
		for (k = 0; k < x[f].n; k++) {
			t = &x[f].t[k];
			if (strncmp(t->name, prefix, strlen(prefix)) != 0 ||
			    (u = tl_model_find(base, nb, t->name)) == NULL)
				continue;
			for (e = 0; e < t->numel; e++) {
				d = tl_value(t, e) - tl_value(u, e);
				s += d * d;
			}
		}
	return s;
}

/* The cosine of (x_i - base_i) and (y_j - base_j) for one weight. */
static double
cos_ref(struct tl_st *x, size_t nx, struct tl_st *y, size_t ny,
    struct tl_st *base, size_t nb, const char *kind, int i, int j)
{
	char na[128], nb_[128];
	const struct tl_tensor *a, *b, *ba, *bb;
	double dot = 0, aa = 0, bbs = 0, p, q;
	uint64_t e;

	snprintf(na, sizeof na, "model.layers.%d.%s", i, kind);
	snprintf(nb_, sizeof nb_, "model.layers.%d.%s", j, kind);
	a = tl_model_find(x, nx, na);
	b = tl_model_find(y, ny, nb_);
	ba = tl_model_find(base, nb, na);
	bb = tl_model_find(base, nb, nb_);
	if (a == NULL || b == NULL || ba == NULL || bb == NULL)
		return NAN;
	for (e = 0; e < a->numel; e++) {
		p = tl_value(a, e) - tl_value(ba, e);
		q = tl_value(b, e) - tl_value(bb, e);
		dot += p * q;
		aa += p * p;
		bbs += q * q;
	}
	return dot / sqrt(aa * bbs);
}

static double
kind_cos(const cJSON *j, const char *kind, int i, int jj)
{
	const cJSON *k;

	cJSON_ArrayForEach(k, cJSON_GetObjectItem(j, "kinds"))
		if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(k,
		    "kind")), kind) == 0)
			return num(cJSON_GetArrayItem(cJSON_GetArrayItem(
			    cJSON_GetObjectItem(k, "cos"), i), jj));
	return NAN;
}

static void
test_base(void)
{
	struct tl_st *b = NULL, *x = NULL, *y = NULL;
	size_t nb = 0, nx = 0, ny = 0;
	double diag = 1, off = 0, v, ref, norm, worst = 0;
	cJSON *j, *na;
	int i, k;

	j = inspect_json("ft1 ft2 --base base32");
	for (i = 0; i < LAYERS; i++)
		for (k = 0; k < LAYERS; k++) {
			v = num(cJSON_GetArrayItem(cJSON_GetArrayItem(
			    cJSON_GetObjectItem(j, "mean"), i), k));
			if (i == k && v < diag)
				diag = v;
			if (i != k && fabs(v) > off)
				off = fabs(v);
		}
	ok(j != NULL && diag > 0.9999 && off < 0.1, "two fine-tunes with "
	    "proportional noise, against --base: task vectors of one layer "
	    "are parallel (cosine at least %.6f), of two layers not (at most "
	    "%.3f)", diag, off);
	load("base32", &b, &nb);
	load("ft1", &x, &nx);
	load("ft2", &y, &ny);
	ref = cos_ref(x, nx, y, ny, b, nb, "mlp.up_proj.weight", 2, 5);
	v = kind_cos(j, "mlp.up_proj.weight", 2, 5);
	ok(fabs(v - ref) < 1e-9, "the cosine of layer 2's and layer 5's "
	    "mlp.up_proj task vectors is the float64 one (%.12f, %.12f)", v,
	    ref);
	na = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "norm_a"), 0);
	for (i = 0; i < LAYERS; i++) {
		ref = sqrt(layer_diff2(x, nx, b, nb, i));
		norm = num(cJSON_GetArrayItem(na, i));
		if (fabs(norm - ref) / ref > worst)
			worst = fabs(norm - ref) / ref;
	}
	ok(worst < 1e-12, "every layer's norm of its difference from the "
	    "base is the float64 one (relative error %.2g)", worst);
	tl_model_free(b, nb);
	tl_model_free(x, nx);
	tl_model_free(y, ny);
	cJSON_Delete(j);
}

/*
 * Each side is widened to float64 from the bytes as stored: half against
 * bfloat16, less a float32 base, gives the float64 cosines of the values
 * the files hold.
 */
static void
test_dtypes(void)
{
	struct tl_st *b = NULL, *x = NULL, *y = NULL;
	size_t nb = 0, nx = 0, ny = 0;
	double v, ref, worst = 0;
	cJSON *j;
	int i, k;

	j = inspect_json("ft1h ft2b --base base32");
	load("base32", &b, &nb);
	load("ft1h", &x, &nx);
	load("ft2b", &y, &ny);
	for (i = 0; i < LAYERS; i += 3)
		for (k = 0; k < LAYERS; k += 4) {
			ref = cos_ref(x, nx, y, ny, b, nb,
			    "self_attn.o_proj.weight", i, k);
			v = kind_cos(j, "self_attn.o_proj.weight", i, k);
			if (!(fabs(v - ref) <= worst))
				worst = isnan(v - ref) ? INFINITY :
				    fabs(v - ref);
		}
	ok(j != NULL && worst < 1e-9, "f16 against bf16, less an f32 base: "
	    "the float64 cosines of the stored values (largest difference "
	    "%.2g)", worst);
	tl_model_free(b, nb);
	tl_model_free(x, nx);
	tl_model_free(y, ny);
	cJSON_Delete(j);
}

/*
 * The map is computed in blocks of rows, on several threads: the same
 * bytes whatever the threads, and the same numbers, to the last digits
 * a float64 sum in another order changes, whatever the budget.
 */
static void
test_threads(void)
{
	char *o = NULL;
	cJSON *a, *b;
	double v, w, worst = 0;
	int rc, i, k;

	rc = tl_runf(&o, "cd %s && %s inspect ft1 ft2 --base base32 --json "
	    "-j 1 > j1.json && %s inspect ft1 ft2 --base base32 --json -j 3 "
	    "> j3.json && cmp j1.json j3.json 2>&1", dir, tl_mergectl,
	    tl_mergectl);
	ok(rc == 0, "one thread or three: the same JSON, byte for byte "
	    "(exit %d) %s", rc, o);
	free(o);
	a = inspect_json("ft1 ft2 --base base32");
	b = inspect_json("ft1 ft2 --base base32 --memory 6M -j 2");
	for (i = 0; i < LAYERS; i++)
		for (k = 0; k < LAYERS; k++) {
			v = kind_cos(a, "mlp.up_proj.weight", i, k);
			w = kind_cos(b, "mlp.up_proj.weight", i, k);
			if (!(fabs(v - w) <= worst))
				worst = isnan(v - w) ? INFINITY : fabs(v - w);
		}
	ok(a != NULL && b != NULL && worst < 1e-12, "under --memory 6M, in "
	    "many blocks, the same cosines (largest difference %.2g)", worst);
	cJSON_Delete(a);
	cJSON_Delete(b);
}

/* --config: exactly the pairs the config merges across layers. */
static void
test_config(void)
{
	cJSON *j, *m, *p;
	char *o = NULL;
	double from_map, worst = 1, ours = NAN;
	int n = 0, rc;

	tl_write_at(dir, "across.yml", "merge_method: slerp\nbase_model: "
	    "./base\nslices:\n  - sources:\n      - model: ./base\n"
	    "        layer_range: [0, 4]\n      - model: ./shifted\n"
	    "        layer_range: [3, 7]\nparameters:\n  t: 0.5\n");
	tl_write_at(dir, "same.yml", "merge_method: slerp\nbase_model: "
	    "./base\nmodels:\n  - model: ./base\n  - model: ./shifted\n"
	    "parameters:\n  t: 0.5\n");
	j = inspect_json("--config across.yml");
	cJSON_ArrayForEach(p, cJSON_GetObjectItem(j, "pairs")) {
		n++;
		if (num(cJSON_GetObjectItem(p, "cos")) < worst)
			worst = num(cJSON_GetObjectItem(p, "cos"));
		if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(p,
		    "tensor")), "model.layers.0.mlp.up_proj.weight") == 0)
			ours = num(cJSON_GetObjectItem(p, "cos"));
	}
	ok(n == 4 * 9 && worst > 0.9, "--config: the %d pairs a config maps "
	    "across layers (4 layers, 9 kinds), each alike (at least %.3f)",
	    n, worst);
	cJSON_Delete(j);
	m = inspect_json("base shifted");
	from_map = kind_cos(m, "mlp.up_proj.weight", 0, 3);
	ok(fabs(ours - from_map) < 1e-9, "a pair's cosine is the map's, "
	    "computed the other way (%.12f, %.12f)", ours, from_map);
	cJSON_Delete(m);
	rc = tl_runf(&o, "cd %s && %s inspect --config same.yml 2>&1", dir,
	    tl_mergectl);
	ok(rc == 0 && o != NULL && strstr(o, "maps no tensor across layers"),
	    "a config that maps nothing across layers says so");
	free(o);
}

static void
test_refusals(void)
{
	char *o = NULL;
	int rc;

	rc = tl_runf(&o, "cd %s && %s inspect base shifted --memory 1K 2>&1",
	    dir, tl_mergectl);
	ok(rc == 3 && o != NULL && strstr(o, "needs at least") != NULL,
	    "a budget below one row of every layer is refused, saying the "
	    "least (exit %d)", rc);
	free(o);
	rc = tl_runf(&o, "cd %s && %s inspect base 2>&1", dir, tl_mergectl);
	ok(rc == 2, "one model is a usage error (exit %d)", rc);
	free(o);
	rc = tl_runf(&o, "cd %s && %s inspect base nowhere 2>&1", dir,
	    tl_mergectl);
	ok(rc == 3 && o != NULL && strstr(o, "nowhere") != NULL, "a model "
	    "that is not there is named (exit %d)", rc);
	free(o);
}

static void
test_svg(void)
{
	const char *art = getenv("TEST_ARTIFACTS");
	char *o = NULL, *shot;
	const char *ci = getenv("CI");
	int rc;

	rc = tl_runf(&o, "cd %s && %s inspect base shifted --svg map.svg -q "
	    ">/dev/null 2>&1", dir, tl_mergectl);
	free(o);
	ok(rc == 0, "--svg writes the map");
	if (tl_runf(NULL, "command -v chromium >/dev/null 2>&1") != 0) {
		if (ci != NULL && strcmp(ci, "true") == 0)
			ok(0, "headless Chromium is needed to render the SVG "
			    "(contrib/deps.sh --test)");
		else
			ok(1, "# SKIP headless Chromium is needed to render the "
			    "SVG (contrib/deps.sh --test)");
		return;
	}
	rc = tl_runf(&o, "HOME=%s timeout 120 chromium --headless --no-sandbox "
	    "--disable-gpu --no-first-run --dump-dom file://%s/map.svg "
	    "2>/dev/null", dir, dir);
	ok(rc == 0 && o != NULL && strstr(o, "<svg") != NULL && strstr(o,
	    "<rect") != NULL && strstr(o, "parsererror") == NULL, "Chromium "
	    "parses it as SVG, without an error");
	free(o);
	if (art == NULL)
		art = dir;
	tl_runf(NULL, "mkdir -p %s", art);
	shot = tl_at(art, "inspect-map.png");
	rc = tl_runf(&o, "HOME=%s timeout 120 chromium --headless --no-sandbox "
	    "--disable-gpu --no-first-run --hide-scrollbars "
	    "--window-size=520,460 --screenshot=%s file://%s/map.svg 2>&1", dir,
	    shot, dir);
	ok(rc == 0 && tl_exists(shot), "and renders it: %s", shot);
	free(shot);
	free(o);
}

int
main(int argc, char **argv)
{
	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("inspect");
	tl_gen_at(dir, "base", "--family llama --layers 12 --hidden 128 "
	    "--intermediate 256 --seed 11");
	tl_gen_at(dir, "shifted", "--family llama --layers 12 --hidden 128 "
	    "--intermediate 256 --seed 12 --finetune-of 11 --delta 0.005 "
	    "--shift 3");
	tl_gen_at(dir, "base32", "--family llama --layers 12 --hidden 64 "
	    "--intermediate 128 --seed 31 --dtype f32");
	tl_gen_at(dir, "ft1", "--family llama --layers 12 --hidden 64 "
	    "--intermediate 128 --seed 32 --finetune-of 31 --delta 0.01 "
	    "--dtype f32");
	tl_gen_at(dir, "ft2", "--family llama --layers 12 --hidden 64 "
	    "--intermediate 128 --seed 32 --finetune-of 31 --delta 0.02 "
	    "--dtype f32");
	tl_gen_at(dir, "ft1h", "--family llama --layers 12 --hidden 64 "
	    "--intermediate 128 --seed 32 --finetune-of 31 --delta 0.01 "
	    "--dtype f16");
	tl_gen_at(dir, "ft2b", "--family llama --layers 12 --hidden 64 "
	    "--intermediate 128 --seed 32 --finetune-of 31 --delta 0.02 "
	    "--dtype bf16");
	test_shift();
	test_base();
	test_dtypes();
	test_threads();
	test_config();
	test_refusals();
	test_svg();
	return tap_done();
}
