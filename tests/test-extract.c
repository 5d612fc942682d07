/* SPDX-License-Identifier: MIT */
/*
 * test-extract.c: mergectl extract-lora end to end on generated models,
 * checked against float64 references computed here.
 *
 * A small llama base and a fine-tune of it (the base plus 0.01 N(0,1)
 * noise, so every task vector has full rank and a spread of singular
 * values).  The adapter is read with testlib's own safetensors reader,
 * and only products B A are compared, never the factors (they are unique
 * only up to signs).  Singular values are computed here without LAPACK:
 * the eigenvalues of the smaller Gram matrix by cyclic Jacobi rotations
 * in float64.  Checked: full rank reproduces every task vector; a lower
 * rank misses exactly the discarded singular values; --fast's reported
 * error bounds its real one and is near the optimum, and its bytes
 * depend on the seed only (not on -j); adapter_config.json, the tensor
 * names, shapes and dtypes, the tensors saved in full byte for byte;
 * --embed-lora, --save-module, the regular expressions,
 * --skip-undecomposable and --sv-epsilon; an adapted reference as FT;
 * BASE+adapter through mergectl run giving FT back; the refusals with
 * their exit codes; and the same extraction as a daemon job (mergectl
 * submit --extract-lora): byte-identical to the command's, refused at
 * submit with every problem, sharing the budget with a merge, cancelled,
 * interrupted by a daemon stopping and resumed.
 */
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "tap.h"
#include "testd.h"
#include "testlib.h"

#define SHAPE "--family llama --hidden 64 --intermediate 96 --layers 2 " \
	"--heads 4 --kv-heads 2 --vocab 128"
#define PREFIX "base_model.model."

static const char *dir;
static struct tl_st *ft, *base;
static size_t nft, nbase;

/* The decomposable weights of the models: 7 per layer. */
static const char *const kinds[] = { "self_attn.q_proj", "self_attn.k_proj",
	"self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
	"mlp.down_proj" };
#define NKINDS (sizeof kinds / sizeof *kinds)
#define NMODULES (2 * NKINDS)

/* A path in the test's directory. */
#define at(...) tl_at(dir, __VA_ARGS__)

/* The module name of decomposable weight i. */
static void
module_name(size_t i, char *buf, size_t len)
{
	snprintf(buf, len, "model.layers.%zu.%s", i / NKINDS,
	    kinds[i % NKINDS]);
}

/*
 * mergectl extract-lora with FT and BASE (names in dir) and args, out
 * to dir/out; stdout and stderr together in *o.  Returns the exit code.
 */
static int
extract(char **o, const char *ftname, const char *basename, const char *out,
    const char *args)
{
	return tl_runf(o, "cd %s && %s extract-lora --model %s --base-model %s "
	    "--out-path %s %s 2>&1", dir, tl_mergectl, ftname, basename, out,
	    args);
}

/* Runs an extraction that must succeed. */
static bool
extract_ok(const char *out, const char *args, char **o)
{
	char *text = NULL;
	int rc = extract(&text, "ft", "base", out, args);

	if (rc != 0)
		tap_diag("extract-lora %s: exit %d: %s", args, rc, text);
	if (o != NULL)
		*o = text;
	else
		free(text);
	return rc == 0;
}

struct adapter {
	struct tl_st st;
	cJSON *config;
};

static bool
adapter_load(const char *out, struct adapter *a)
{
	char *path = at("%s/adapter_model.safetensors", out), *text;

	memset(a, 0, sizeof *a);
	if (tl_st_load(path, &a->st) != 0) {
		free(path);
		return false;
	}
	free(path);
	path = at("%s/adapter_config.json", out);
	text = tl_read(path, NULL);
	free(path);
	a->config = text != NULL ? cJSON_Parse(text) : NULL;
	free(text);
	return a->config != NULL;
}

static void
adapter_free(struct adapter *a)
{
	tl_st_free(&a->st);
	cJSON_Delete(a->config);
}

static const struct tl_tensor *
afind(const struct adapter *a, const char *module, const char *suffix)
{
	char name[512];

	snprintf(name, sizeof name, PREFIX "%s%s", module, suffix);
	return tl_st_find(&a->st, name);
}

/* A model's tensor as float64, row-major. */
static double *
values(const struct tl_tensor *t)
{
	double *v = malloc(t->numel * sizeof *v);
	uint64_t i;

	for (i = 0; i < t->numel; i++)
		v[i] = tl_value(t, i);
	return v;
}

/* FT - BASE of a weight (transposed for an embedding), [rows, cols]. */
static double *
task_vector(const char *name, bool transpose, int64_t *rows, int64_t *cols)
{
	const struct tl_tensor *f = tl_model_find(ft, nft, name);
	const struct tl_tensor *b = tl_model_find(base, nbase, name);
	double *d;
	int64_t r, c;

	if (f == NULL || b == NULL)
		return NULL;
	*rows = transpose ? f->shape[1] : f->shape[0];
	*cols = transpose ? f->shape[0] : f->shape[1];
	d = malloc((size_t)(*rows * *cols) * sizeof *d);
	for (r = 0; r < f->shape[0]; r++)
		for (c = 0; c < f->shape[1]; c++) {
			uint64_t i = (uint64_t)(r * f->shape[1] + c);
			d[transpose ? (uint64_t)(c * *cols + r) : i] =
			    tl_value(f, i) - tl_value(b, i);
		}
	return d;
}

/* B A: b [rows, k], a [k, cols]. */
static double *
product(const struct tl_tensor *a, const struct tl_tensor *b)
{
	int64_t rows = b->shape[0], k = b->shape[1], cols = a->shape[1];
	double *p = calloc((size_t)(rows * cols), sizeof *p), *av = values(a);
	double *bv = values(b);
	int64_t i, j, l;

	for (i = 0; i < rows; i++)
		for (l = 0; l < k; l++)
			for (j = 0; j < cols; j++)
				p[i * cols + j] += bv[i * k + l] *
				    av[l * cols + j];
	free(av);
	free(bv);
	return p;
}

static double
frob(const double *x, size_t n)
{
	double s = 0;
	size_t i;

	for (i = 0; i < n; i++)
		s += x[i] * x[i];
	return sqrt(s);
}

static double
frob_diff(const double *x, const double *y, size_t n)
{
	double s = 0;
	size_t i;

	for (i = 0; i < n; i++)
		s += (x[i] - y[i]) * (x[i] - y[i]);
	return sqrt(s);
}

/* Eigenvalues of the symmetric n x n a (destroyed), by cyclic Jacobi. */
static void
jacobi(double *a, int n, double *ev)
{
	int sweep, p, q, k;
	double off, theta, t, c, s, x, y;

	for (sweep = 0; sweep < 100; sweep++) {
		off = 0;
		for (p = 0; p < n; p++)
			for (q = p + 1; q < n; q++)
				off += a[p * n + q] * a[p * n + q];
		if (off < 1e-40)
			break;
		for (p = 0; p < n; p++)
			for (q = p + 1; q < n; q++) {
				if (fabs(a[p * n + q]) < 1e-300)
					continue;
				theta = (a[q * n + q] - a[p * n + p]) /
				    (2 * a[p * n + q]);
				t = (theta >= 0 ? 1 : -1) / (fabs(theta) +
				    sqrt(theta * theta + 1));
				c = 1 / sqrt(t * t + 1);
				s = t * c;
				for (k = 0; k < n; k++) {
					x = a[k * n + p];
					y = a[k * n + q];
					a[k * n + p] = c * x - s * y;
					a[k * n + q] = s * x + c * y;
				}
				for (k = 0; k < n; k++) {
					x = a[p * n + k];
					y = a[q * n + k];
					a[p * n + k] = c * x - s * y;
					a[q * n + k] = s * x + c * y;
				}
			}
	}
	for (k = 0; k < n; k++)
		ev[k] = a[k * n + k];
}

static int
desc(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

/* x's singular values, descending, into s (min(rows, cols) of them). */
static int64_t
singular_values(const double *x, int64_t rows, int64_t cols, double *s)
{
	int64_t n = rows < cols ? rows : cols, i, j, k;
	double *g = calloc((size_t)(n * n), sizeof *g);

	/* The smaller Gram matrix: x^T x or x x^T. */
	for (i = 0; i < n; i++)
		for (j = 0; j < n; j++)
			for (k = 0; k < (rows < cols ? cols : rows); k++)
				g[i * n + j] += rows < cols ?
				    x[i * cols + k] * x[j * cols + k] :
				    x[k * cols + i] * x[k * cols + j];
	jacobi(g, (int)n, s);
	for (i = 0; i < n; i++)
		s[i] = s[i] > 0 ? sqrt(s[i]) : 0;
	qsort(s, (size_t)n, sizeof *s, desc);
	free(g);
	return n;
}

/*
 * The adapter's largest relative error ||dW - B A|| / ||dW|| over the
 * decomposed weights, and how many it has (embedding: also the input
 * embedding, transposed).
 */
static double
worst_error(const struct adapter *a, size_t *found)
{
	char module[128];
	const struct tl_tensor *ta, *tb;
	double *d, *p, e, worst = 0;
	int64_t rows, cols;
	size_t i;

	*found = 0;
	for (i = 0; i < NMODULES; i++) {
		module_name(i, module, sizeof module);
		ta = afind(a, module, ".lora_A.weight");
		tb = afind(a, module, ".lora_B.weight");
		if (ta == NULL || tb == NULL)
			continue;
		strcat(module, ".weight");
		d = task_vector(module, false, &rows, &cols);
		p = product(ta, tb);
		e = frob_diff(d, p, (size_t)(rows * cols)) /
		    frob(d, (size_t)(rows * cols));
		if (e > worst)
			worst = e;
		(*found)++;
		free(d);
		free(p);
	}
	return worst;
}

/* --json's object, from a command's output (notes come before it). */
static cJSON *
json_of(const char *o)
{
	const char *p = o != NULL ? strstr(o, "{\"ok\"") : NULL;

	return p != NULL ? cJSON_Parse(p) : NULL;
}

/* The reported relative error of a module in --json's weights, or -1. */
static double
reported(const cJSON *j, const char *module)
{
	const cJSON *e;

	cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "weights"))
		if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(e, "name")),
		    module) == 0)
			return cJSON_GetNumberValue(cJSON_GetObjectItem(e,
			    "rel_error"));
	return -1;
}

static const cJSON *
cfg(const struct adapter *a, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(a->config, key);
}

/* A JSON list of strings as "a,b,c". */
static void
list_str(const cJSON *l, char *buf, size_t len)
{
	const cJSON *e;
	size_t at = 0;

	buf[0] = '\0';
	cJSON_ArrayForEach(e, l)
		at += (size_t)snprintf(buf + at, len - at, "%s%s", at ? "," :
		    "", cJSON_IsString(e) ? e->valuestring : "?");
}

/* Every tensor named base_model.model.NAME equals FT's NAME, byte for byte. */
static bool
full_tensors_equal(const struct adapter *a, size_t *n)
{
	const struct tl_tensor *t, *f;
	size_t i;

	*n = 0;
	for (i = 0; i < a->st.n; i++) {
		t = &a->st.t[i];
		if (strstr(t->name, ".lora_") != NULL)
			continue;
		f = tl_model_find(ft, nft, t->name + strlen(PREFIX));
		if (f == NULL || f->nbytes != t->nbytes || strcmp(f->dtype,
		    t->dtype) != 0 || memcmp(f->data, t->data,
		    t->nbytes) != 0) {
			tap_diag("%s differs from the fine-tuned model's",
			    t->name);
			return false;
		}
		(*n)++;
	}
	return true;
}

static double section_t0;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
section(const char *name)
{
	static const char *last;

	if (last != NULL)
		tap_diag("%s took %.2f s", last, now() - section_t0);
	last = name;
	section_t0 = now();
}

/* 1 and 4: full rank, adapter_config.json, names, shapes, dtypes. */
static void
test_full_rank(void)
{
	struct adapter a;
	char buf[512], module[128];
	const cJSON *rp, *ap, *e;
	const struct tl_tensor *ta, *tb;
	size_t found, nfull, i, bad = 0;
	double worst;

	section("full rank");
	if (!ok(extract_ok("full", "--max-rank 128", NULL), "extract-lora at "
	    "full rank") || !ok(adapter_load("full", &a), "the adapter loads"))
		return;
	worst = worst_error(&a, &found);
	ok_int_eq(found, NMODULES, "every weight is decomposed");
	if (!ok(worst < 1e-5, "B A reproduces every task vector (worst "
	    "relative error %.3g)", worst))
		tap_diag("worst %g", worst);
	ok_int_eq(cJSON_GetNumberValue(cfg(&a, "r")), 64, "r is the largest "
	    "real rank, 64, not --max-rank");
	ok_int_eq(cJSON_GetNumberValue(cfg(&a, "lora_alpha")), 64,
	    "lora_alpha = r");
	rp = cfg(&a, "rank_pattern");
	ap = cfg(&a, "alpha_pattern");
	ok_int_eq(cJSON_GetArraySize(rp), 4, "rank_pattern: the four k/v "
	    "projections");
	cJSON_ArrayForEach(e, rp)
		bad += cJSON_GetNumberValue(e) != 32 || strstr(e->string,
		    "_proj") == NULL || (strstr(e->string, "k_proj") == NULL &&
		    strstr(e->string, "v_proj") == NULL);
	ok_int_eq(bad, 0, "rank_pattern: k_proj and v_proj at rank 32, by "
	    "full module name");
	ok(cJSON_Compare(rp, ap, true), "alpha_pattern = rank_pattern");
	ok(cJSON_GetNumberValue(cJSON_GetObjectItem(rp,
	    "model.layers.1.self_attn.v_proj")) == 32, "keyed by full name");
	list_str(cfg(&a, "target_modules"), buf, sizeof buf);
	ok_str_eq(buf, "down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,"
	    "v_proj", "target_modules: sorted leaf names");
	list_str(cfg(&a, "modules_to_save"), buf, sizeof buf);
	ok_str_eq(buf, "embed_tokens,input_layernorm,lm_head,norm,"
	    "post_attention_layernorm", "modules_to_save: the embeddings and "
	    "the norms");
	ok_str_eq(cJSON_GetStringValue(cfg(&a, "peft_type")), "LORA",
	    "peft_type");
	ok_str_eq(cJSON_GetStringValue(cfg(&a, "task_type")), "CAUSAL_LM",
	    "task_type");
	ok_str_eq(cJSON_GetStringValue(cfg(&a, "base_model_name_or_path")),
	    "base", "base_model_name_or_path: --base-model");
	ok(cJSON_IsFalse(cfg(&a, "use_rslora")) &&
	    cJSON_IsFalse(cfg(&a, "fan_in_fan_out")) &&
	    cJSON_IsTrue(cfg(&a, "inference_mode")) &&
	    cJSON_GetNumberValue(cfg(&a, "lora_dropout")) == 0,
	    "use_rslora, fan_in_fan_out, inference_mode, lora_dropout");
	ok_int_eq(cJSON_GetArraySize(a.config), 13, "mergekit's 13 keys");
	for (i = 0, bad = 0; i < NMODULES; i++) {
		module_name(i, module, sizeof module);
		ta = afind(&a, module, ".lora_A.weight");
		tb = afind(&a, module, ".lora_B.weight");
		if (ta == NULL || tb == NULL)
			continue;
		strcat(module, ".weight");
		const struct tl_tensor *w = tl_model_find(ft, nft, module);
		int64_t k = w->shape[0] < w->shape[1] ? w->shape[0] :
		    w->shape[1];
		bad += ta->ndim != 2 || tb->ndim != 2 || ta->shape[0] != k ||
		    ta->shape[1] != w->shape[1] || tb->shape[0] !=
		    w->shape[0] || tb->shape[1] != k ||
		    strcmp(ta->dtype, "F32") != 0 ||
		    strcmp(tb->dtype, "F32") != 0;
	}
	ok_int_eq(bad, 0, "lora_A [r, in], lora_B [out, r], F32");
	ok(full_tensors_equal(&a, &nfull) && nfull == 7, "7 tensors saved in "
	    "full, equal to the fine-tuned model's bytes");
	ok_int_eq(a.st.n, 2 * NMODULES + 7, "nothing else in the file");
	ok(tl_st_find(&a.st, PREFIX "model.layers.0.self_attn.q_proj.lora_B."
	    "bias") == NULL, "no lora_B.bias");
	ok(strstr(a.st.header, "\"__metadata__\":{\"format\":\"pt\"}") !=
	    NULL, "metadata {\"format\": \"pt\"}");
	adapter_free(&a);
}

/*
 * The budget: at most --memory admitted at once, a weight bigger than it
 * alone; the bytes do not change.  j: the --max-rank 16 run's --json.
 */
static void
test_memory(const cJSON *j)
{
	char *o = NULL, *p1, *p2, *line;
	cJSON *k;
	double peak, biggest = 0;
	size_t n;

	ok(extract_ok("mem1", "--max-rank 16 --memory 400K -j 8 --json", &o),
	    "--memory 400K");
	k = json_of(o);
	peak = cJSON_GetNumberValue(cJSON_GetObjectItem(k, "peak_memory"));
	ok(peak > 0 && peak <= 400 * 1024, "at most --memory held (%.0f "
	    "bytes)", peak);
	biggest = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "peak_memory"));
	ok(biggest > peak, "less than without the budget (%.0f)", biggest);
	cJSON_Delete(k);
	free(o);
	ok(extract_ok("mem2", "--max-rank 16 --memory 64K -j 4 -v", &o),
	    "--memory 64K, smaller than any weight");
	ok_str_has(o, "each runs alone", "said once");
	for (line = o, n = 0; (line = strstr(line, "] rank 16, relative "
	    "error")) != NULL; line++)
		n++;
	ok_int_eq(n, NMODULES, "-v: a line per weight");
	p1 = at("r16/adapter_model.safetensors");
	p2 = at("mem1/adapter_model.safetensors");
	ok(tl_files_equal(p1, p2), "the same bytes under a budget");
	free(p2);
	p2 = at("mem2/adapter_model.safetensors");
	ok(tl_files_equal(p1, p2), "and one weight at a time");
	free(p1);
	free(p2);
	free(o);
}

/* 2: a lower rank misses exactly the discarded singular values. */
static void
test_truncated(void)
{
	struct adapter a;
	char module[128], *o = NULL;
	const struct tl_tensor *ta, *tb;
	double *d, *p, s[128], tail, miss, worst = 0, worst_rep = 0, rep, norm;
	int64_t rows, cols, n, k;
	cJSON *j = NULL;
	size_t i;

	section("truncated");
	if (!ok(extract_ok("r16", "--max-rank 16 --json -j 3", &o),
	    "extract-lora --max-rank 16") || !ok(adapter_load("r16", &a),
	    "the adapter loads"))
		goto out;
	j = json_of(o);
	ok(j != NULL && cJSON_IsTrue(cJSON_GetObjectItem(j, "ok")),
	    "--json prints an object");
	ok_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "weights")),
	    NMODULES, "--json: every weight");
	ok_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "mode")),
	    "exact", "--json: the mode");
	for (i = 0; i < NMODULES; i++) {
		module_name(i, module, sizeof module);
		ta = afind(&a, module, ".lora_A.weight");
		tb = afind(&a, module, ".lora_B.weight");
		if (ta == NULL || tb == NULL || ta->shape[0] != 16) {
			tap_diag("%s: missing or not rank 16", module);
			worst = 1;
			continue;
		}
		rep = reported(j, module);
		strcat(module, ".weight");
		d = task_vector(module, false, &rows, &cols);
		p = product(ta, tb);
		n = singular_values(d, rows, cols, s);
		for (tail = 0, k = 16; k < n; k++)
			tail += s[k] * s[k];
		tail = sqrt(tail);
		miss = frob_diff(d, p, (size_t)(rows * cols));
		if (fabs(miss - tail) / tail > worst)
			worst = fabs(miss - tail) / tail;
		/* The reported relative error, against the tail's. */
		norm = frob(d, (size_t)(rows * cols));
		rep = fabs(rep - tail / norm) / (tail / norm);
		if (rep > worst_rep)
			worst_rep = rep;
		free(d);
		free(p);
	}
	ok(worst < 1e-4, "||dW - B A|| is the discarded singular values' "
	    "norm (worst relative difference %.3g)", worst);
	ok(worst_rep < 1e-4, "the reported errors are the tails' (worst "
	    "relative difference %.3g)", worst_rep);
	ok_int_eq(cJSON_GetNumberValue(cfg(&a, "r")), 16, "r 16");
	ok_int_eq(cJSON_GetArraySize(cfg(&a, "rank_pattern")), 0,
	    "rank_pattern {} when every rank is r");
	adapter_free(&a);
	test_memory(j);
out:
	cJSON_Delete(j);
	free(o);
}

/* 3: --fast. */
static void
test_fast(void)
{
	struct adapter a;
	char module[128], *o = NULL, *p1, *p2, *readme;
	const struct tl_tensor *ta, *tb;
	double *d, *p, s[128], tail, miss, norm, rep, worst_bound = -1;
	double worst_ratio = 0;
	int64_t rows, cols, n, k;
	cJSON *j = NULL;
	size_t i;

	section("fast");
	if (!ok(extract_ok("fast1", "--fast --max-rank 16 --random-seed 7 -j 1 "
	    "--json", &o), "extract-lora --fast") ||
	    !ok(adapter_load("fast1", &a), "the adapter loads"))
		goto out;
	j = json_of(o);
	ok_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "mode")),
	    "fast", "--json: mode fast");
	ok_int_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "seed")), 7,
	    "--json: the seed");
	for (i = 0; i < NMODULES; i++) {
		module_name(i, module, sizeof module);
		ta = afind(&a, module, ".lora_A.weight");
		tb = afind(&a, module, ".lora_B.weight");
		if (ta == NULL || tb == NULL)
			continue;
		rep = reported(j, module);
		strcat(module, ".weight");
		d = task_vector(module, false, &rows, &cols);
		p = product(ta, tb);
		n = singular_values(d, rows, cols, s);
		for (tail = 0, k = 16; k < n; k++)
			tail += s[k] * s[k];
		norm = frob(d, (size_t)(rows * cols));
		tail = sqrt(tail) / norm;
		miss = frob_diff(d, p, (size_t)(rows * cols)) / norm;
		/* Positive: the real error exceeds the reported one. */
		if (miss - rep > worst_bound)
			worst_bound = miss - rep;
		if (rep / tail > worst_ratio)
			worst_ratio = rep / tail;
		free(d);
		free(p);
	}
	ok(worst_bound <= 1e-6, "||dW - B A|| is at most the reported error "
	    "(worst excess %.3g)", worst_bound);
	ok(worst_ratio >= 1 - 1e-6 && worst_ratio < 1.5, "the reported error "
	    "is within 1.5x of the optimum (worst ratio %.4f)", worst_ratio);
	adapter_free(&a);
	ok(extract_ok("fast2", "--fast --max-rank 16 --random-seed 7 -j 4",
	    NULL), "again, -j 4");
	ok(extract_ok("fast3", "--fast --max-rank 16 --random-seed 8", NULL),
	    "another seed");
	p1 = at("fast1/adapter_model.safetensors");
	p2 = at("fast2/adapter_model.safetensors");
	ok(tl_files_equal(p1, p2), "same seed, -j 1 and -j 4: the same bytes");
	free(p2);
	p2 = at("fast3/adapter_model.safetensors");
	ok(!tl_files_equal(p1, p2), "another seed: other bytes");
	free(p1);
	free(p2);
	p1 = at("fast1/README.md");
	readme = tl_read(p1, NULL);
	ok_str_has(readme, "random seed 7", "README.md records the seed");
	free(readme);
	free(p1);
	free(o);
	o = NULL;
	ok(extract_ok("fast4", "--fast --max-rank 16", &o), "--fast without "
	    "a seed");
	p1 = at("fast4/README.md");
	readme = tl_read(p1, NULL);
	p2 = o != NULL ? strstr(o, "seed ") : NULL;
	ok(p2 != NULL && readme != NULL && strstr(readme, "random seed ") !=
	    NULL && strncmp(strstr(readme, "random seed ") + 12, p2 + 5,
	    strspn(p2 + 5, "0123456789")) == 0 && strspn(p2 + 5,
	    "0123456789") > 0, "a drawn seed is printed and recorded");
	free(readme);
	free(p1);
out:
	cJSON_Delete(j);
	free(o);
}

/* 5: --embed-lora. */
static void
test_embed(void)
{
	struct adapter a;
	const struct tl_tensor *ta, *tb;
	char buf[512];
	double *d, *p, e;
	int64_t rows, cols;

	section("embed-lora");
	if (!ok(extract_ok("emb", "--embed-lora --max-rank 128", NULL),
	    "extract-lora --embed-lora") || !ok(adapter_load("emb", &a),
	    "the adapter loads"))
		return;
	ta = afind(&a, "model.embed_tokens", ".lora_embedding_A");
	tb = afind(&a, "model.embed_tokens", ".lora_embedding_B");
	ok(ta != NULL && tb != NULL && ta->shape[0] == 64 &&
	    ta->shape[1] == 128 && tb->shape[0] == 64 && tb->shape[1] == 64,
	    "lora_embedding_A [r, vocab], lora_embedding_B [dim, r]");
	if (ta != NULL && tb != NULL) {
		d = task_vector("model.embed_tokens.weight", true, &rows,
		    &cols);
		p = product(ta, tb);
		e = frob_diff(d, p, (size_t)(rows * cols)) /
		    frob(d, (size_t)(rows * cols));
		ok(e < 1e-5, "B A is the transposed task vector (relative "
		    "error %.3g)", e);
		free(d);
		free(p);
	}
	ta = afind(&a, "lm_head", ".lora_A.weight");
	tb = afind(&a, "lm_head", ".lora_B.weight");
	ok(ta != NULL && tb != NULL && ta->shape[1] == 64 &&
	    tb->shape[0] == 128, "lm_head as a Linear: lora_A, lora_B");
	if (ta != NULL && tb != NULL) {
		d = task_vector("lm_head.weight", false, &rows, &cols);
		p = product(ta, tb);
		e = frob_diff(d, p, (size_t)(rows * cols)) /
		    frob(d, (size_t)(rows * cols));
		ok(e < 1e-5, "lm_head's B A (relative error %.3g)", e);
		free(d);
		free(p);
	}
	list_str(cfg(&a, "modules_to_save"), buf, sizeof buf);
	ok_str_eq(buf, "input_layernorm,norm,post_attention_layernorm",
	    "modules_to_save: the norms only");
	list_str(cfg(&a, "target_modules"), buf, sizeof buf);
	ok_str_has(buf, "embed_tokens", "target_modules has embed_tokens");
	ok_str_has(buf, "lm_head", "and lm_head");
	ok(tl_st_find(&a.st, PREFIX "model.embed_tokens.weight") == NULL,
	    "the embedding is not saved in full");
	adapter_free(&a);
	/* --fast at the embedding's full rank: l is cut to 64, so the
	 * randomized path, transposed, is exact too. */
	if (!ok(extract_ok("embf", "--embed-lora --fast --max-rank 64 "
	    "--random-seed 3", NULL), "--embed-lora --fast") ||
	    !adapter_load("embf", &a))
		return;
	ta = afind(&a, "model.embed_tokens", ".lora_embedding_A");
	tb = afind(&a, "model.embed_tokens", ".lora_embedding_B");
	if (ok(ta != NULL && tb != NULL, "lora_embedding_A/B")) {
		d = task_vector("model.embed_tokens.weight", true, &rows,
		    &cols);
		p = product(ta, tb);
		e = frob_diff(d, p, (size_t)(rows * cols)) /
		    frob(d, (size_t)(rows * cols));
		ok(e < 1e-5, "randomized, transposed: B A is the task vector^T "
		    "(relative error %.3g)", e);
		free(d);
		free(p);
	}
	adapter_free(&a);
}

/* 5: the vocabularies differ: --embed-lora is turned off. */
static void
test_vocab(void)
{
	struct adapter a;
	char *o = NULL, *path, *readme;
	int rc;

	section("vocabulary");
	rc = extract(&o, "ftv", "base", "vocab", "--embed-lora --max-rank 8");
	ok_int_eq(rc, 0, "extract-lora with vocabularies of 136 and 128");
	ok_str_has(o, "the vocabularies differ", "a warning says so");
	if (rc == 0 && adapter_load("vocab", &a)) {
		ok(tl_st_find(&a.st, PREFIX "model.embed_tokens.weight") !=
		    NULL && afind(&a, "model.embed_tokens",
		    ".lora_embedding_A") == NULL, "the embedding is saved in "
		    "full");
		adapter_free(&a);
	}
	path = at("vocab/README.md");
	readme = tl_read(path, NULL);
	ok_str_has(readme, "The vocabulary size has been extended from the "
	    "base model's 128 to 136", "README.md's vocabulary warning");
	free(readme);
	free(path);
	free(o);
}

/* 5: --save-module, the regular expressions, --skip-undecomposable. */
static void
test_filters(void)
{
	struct adapter a;
	char buf[512], *o = NULL;
	size_t found, i, n;
	const char *p;

	section("filters");
	if (ok(extract_ok("save", "--max-rank 8 --save-module q_proj "
	    "--save-module model.layers.1.mlp.up_proj", NULL), "--save-module")
	    && adapter_load("save", &a)) {
		ok(tl_st_find(&a.st, PREFIX "model.layers.0.self_attn.q_proj."
		    "weight") != NULL && tl_st_find(&a.st, PREFIX
		    "model.layers.1.self_attn.q_proj.weight") != NULL &&
		    afind(&a, "model.layers.0.self_attn.q_proj",
		    ".lora_A.weight") == NULL, "q_proj (a leaf) saved in full");
		ok(tl_st_find(&a.st, PREFIX "model.layers.1.mlp.up_proj.weight")
		    != NULL && afind(&a, "model.layers.0.mlp.up_proj",
		    ".lora_A.weight") != NULL, "a full name: that module only");
		list_str(cfg(&a, "modules_to_save"), buf, sizeof buf);
		ok_str_eq(buf, "embed_tokens,input_layernorm,lm_head,"
		    "model.layers.1.mlp.up_proj,norm,post_attention_layernorm,"
		    "q_proj", "modules_to_save names them");
		list_str(cfg(&a, "target_modules"), buf, sizeof buf);
		ok(strstr(buf, "q_proj") == NULL, "q_proj is no target");
		ok(full_tensors_equal(&a, &n) && n == 10, "10 tensors in full, "
		    "FT's bytes");
		adapter_free(&a);
	}
	if (ok(extract_ok("exc", "--max-rank 8 -e 'layers\\.1\\.' "
	    "--exclude-regex 'mlp\\.down'", NULL), "--exclude-regex") &&
	    adapter_load("exc", &a)) {
		(void)worst_error(&a, &found);
		ok_int_eq(found, NKINDS - 1, "layer 1 and down_proj left out");
		for (i = 0, n = 0; i < a.st.n; i++)
			n += strstr(a.st.t[i].name, "layers.1.") != NULL &&
			    strstr(a.st.t[i].name, "layernorm") == NULL;
		ok_int_eq(n, 0, "nothing of layer 1 but its norms, whose leaf "
		    "is saved (PEFT wraps every module of that leaf)");
		adapter_free(&a);
	}
	if (ok(extract_ok("inc", "--max-rank 8 -i 'self_attn\\.[qk]_proj' "
	    "--include-regex 'layers\\.\\d\\.self_attn\\.o'", NULL),
	    "--include-regex") && adapter_load("inc", &a)) {
		(void)worst_error(&a, &found);
		ok_int_eq(found, 6, "q, k and o projections only");
		list_str(cfg(&a, "modules_to_save"), buf, sizeof buf);
		ok_str_eq(buf, "embed_tokens,lm_head", "the embeddings are "
		    "saved all the same, the norms are not included");
		adapter_free(&a);
	}
	if (ok(extract_ok("skip", "--max-rank 8 --skip-undecomposable "
	    "--no-write-model-card", &o), "--skip-undecomposable") &&
	    adapter_load("skip", &a)) {
		char *readme = at("skip/README.md");
		ok(!tl_exists(readme), "--no-write-model-card: no README.md");
		free(readme);
		list_str(cfg(&a, "modules_to_save"), buf, sizeof buf);
		ok_str_eq(buf, "embed_tokens,lm_head", "modules_to_save: the "
		    "embeddings");
		for (i = 0, n = 0; i < a.st.n; i++)
			n += strstr(a.st.t[i].name, "norm") != NULL;
		ok_int_eq(n, 0, "no norms");
		for (p = o, n = 0; (p = strstr(p, "--skip-undecomposable)")) !=
		    NULL; p++)
			n++;
		ok_int_eq(n, 3, "one warning per leaf");
		adapter_free(&a);
	}
	free(o);
}

/* --no-distribute-scale: all of S in lora_A, lora_B's columns orthonormal. */
static void
test_scale(void)
{
	struct adapter a;
	const struct tl_tensor *ta, *tb;
	double *bv, dot, worst = 0, e;
	size_t found;
	int64_t i, j, r, k, n;

	section("no-distribute-scale");
	if (!ok(extract_ok("nods", "--max-rank 8 --no-distribute-scale", NULL),
	    "--no-distribute-scale") || !adapter_load("nods", &a))
		return;
	tb = afind(&a, "model.layers.1.mlp.gate_proj", ".lora_B.weight");
	ta = afind(&a, "model.layers.1.mlp.gate_proj", ".lora_A.weight");
	if (ok(ta != NULL && tb != NULL, "gate_proj's factors")) {
		bv = values(tb);
		n = tb->shape[0];
		k = tb->shape[1];
		for (i = 0; i < k; i++)
			for (j = 0; j < k; j++) {
				for (dot = 0, r = 0; r < n; r++)
					dot += bv[r * k + i] * bv[r * k + j];
				if (fabs(dot - (i == j)) > worst)
					worst = fabs(dot - (i == j));
			}
		ok(worst < 1e-5, "lora_B = U: orthonormal columns (worst %.3g)",
		    worst);
		free(bv);
	}
	adapter_free(&a);
	/* The products are those of the default's, at the same rank. */
	if (!ok(extract_ok("ds8", "--max-rank 8", NULL), "--max-rank 8") ||
	    !adapter_load("ds8", &a))
		return;
	e = worst_error(&a, &found);
	adapter_free(&a);
	if (adapter_load("nods", &a)) {
		ok(fabs(worst_error(&a, &found) - e) < 1e-5 * e && found ==
		    NMODULES, "the same errors as with sqrt(S) on both sides");
		adapter_free(&a);
	}
}

/*
 * References looked up in the Hugging Face cache (--transformers-cache):
 * README.md links them and lists them in its front matter, as mergekit's.
 */
static void
test_hub(void)
{
	static const char hash[] = "0123456789abcdef0123456789abcdef01234567";
	struct adapter a;
	char *o = NULL, *path, *readme;
	int rc;

	section("hub");
	rc = tl_runf(&o, "cd %s && for m in base ft; do d=hub/models--org--$m; "
	    "mkdir -p $d/refs $d/snapshots && printf %s >$d/refs/main && "
	    "cp -r $m $d/snapshots/%s || exit 1; done 2>&1", dir, hash, hash);
	if (!ok(rc == 0, "a Hugging Face cache")) {
		tap_diag("%s", o);
		free(o);
		return;
	}
	free(o);
	rc = tl_runf(&o, "cd %s && %s extract-lora --model org/ft --base-model "
	    "org/base --out-path hubout --max-rank 4 --transformers-cache "
	    "%s/hub 2>&1", dir, tl_mergectl, dir);
	ok_int_eq(rc, 0, "extract-lora --model org/ft --base-model org/base");
	free(o);
	path = at("hubout/README.md");
	readme = tl_read(path, NULL);
	ok_str_has(readme, "---\nbase_model:\n- org/base\n- org/ft\n"
	    "library_name: peft\ntags:\n- mergekit\n- peft\n---\n# hubout\n",
	    "front matter and title");
	ok_str_has(readme, "extracted from [org/ft](https://huggingface.co/"
	    "org/ft) and uses [org/base](https://huggingface.co/org/base) as "
	    "a base.", "the models, linked");
	ok_str_has(readme, "by exact SVD (LAPACK sgesdd): relative error ",
	    "how, and the error");
	ok_str_has(readme, "```sh\nmergectl extract-lora --model org/ft "
	    "--base-model org/base --out-path hubout --max-rank 4", "the "
	    "command line");
	free(readme);
	free(path);
	if (adapter_load("hubout", &a)) {
		ok_str_eq(cJSON_GetStringValue(cfg(&a,
		    "base_model_name_or_path")), "org/base",
		    "base_model_name_or_path: the Hub id");
		adapter_free(&a);
	}
}

/* 5: --sv-epsilon: an absolute threshold; rank 0 leaves a weight out. */
static void
test_epsilon(void)
{
	struct adapter a;
	char module[128], args[128], *o = NULL;
	const struct tl_tensor *ta;
	double *d, s[NMODULES][128], lo = INFINITY, hi = 0, eps;
	int64_t rows, cols, n[NMODULES], k, want;
	size_t i, bad = 0, zeros = 0;
	const cJSON *rp;
	int rc;

	section("sv-epsilon");
	for (i = 0; i < NMODULES; i++) {
		module_name(i, module, sizeof module);
		strcat(module, ".weight");
		d = task_vector(module, false, &rows, &cols);
		n[i] = singular_values(d, rows, cols, s[i]);
		if (s[i][0] < lo)
			lo = s[i][0];
		if (s[i][0] > hi)
			hi = s[i][0];
		free(d);
	}
	/* Between the smallest and the largest top singular value: some
	 * weights keep nothing, some keep a few. */
	eps = (lo + hi) / 2;
	snprintf(args, sizeof args, "--sv-epsilon %.9g", eps);
	if (!ok(extract_ok("eps", args, &o), "extract-lora --sv-epsilon %g",
	    eps) || !ok(adapter_load("eps", &a), "the adapter loads"))
		goto out;
	rp = cfg(&a, "rank_pattern");
	for (i = 0; i < NMODULES; i++) {
		module_name(i, module, sizeof module);
		for (want = 0, k = 0; k < n[i]; k++)
			want += s[i][k] > eps;
		ta = afind(&a, module, ".lora_A.weight");
		zeros += want == 0;
		if (want == 0 ? ta != NULL : ta == NULL || ta->shape[0] != want)
			bad++;
		else if (want > 0 && want != cJSON_GetNumberValue(cfg(&a,
		    "r")) && cJSON_GetNumberValue(cJSON_GetObjectItem(rp,
		    module)) != (double)want)
			bad++;
	}
	ok(zeros > 0 && zeros < NMODULES, "some weights keep nothing (%zu)",
	    zeros);
	ok_int_eq(bad, 0, "each rank counts the singular values above it, "
	    "in the file and in rank_pattern");
	ok_str_has(o, "left out, as PEFT refuses rank 0", "a weight of rank "
	    "0 is a warning");
	adapter_free(&a);
	free(o);
	o = NULL;
	rc = extract(&o, "ft", "base", "eps2", "--sv-epsilon 1e9");
	ok_int_eq(rc, 1, "nothing above --sv-epsilon: exit 1");
	ok_str_has(o, "no weight keeps a singular value", "saying why");
	free(o);
	o = at("eps2");
	ok(!tl_exists(o), "and nothing is left behind");
out:
	free(o);
}

/* An adapted FT ("base+adapter") gives back the adapter's products. */
static void
test_adapted(void)
{
	struct adapter a, b;
	char module[128];
	const struct tl_tensor *ta, *tb, *ua, *ub;
	double *p, *q, e, worst = 0;
	size_t i, n, same = 0, full = 0;

	section("adapted model");
	if (!ok(extract(NULL, "base+full", "base", "again", "--max-rank 128") ==
	    0, "extract-lora --model base+ADAPTER") ||
	    !adapter_load("again", &a))
		return;
	if (!adapter_load("full", &b)) {
		adapter_free(&a);
		return;
	}
	for (i = 0; i < NMODULES; i++) {
		module_name(i, module, sizeof module);
		ta = afind(&a, module, ".lora_A.weight");
		tb = afind(&a, module, ".lora_B.weight");
		ua = afind(&b, module, ".lora_A.weight");
		ub = afind(&b, module, ".lora_B.weight");
		if (ta == NULL || tb == NULL || ua == NULL || ub == NULL) {
			worst = 1;
			continue;
		}
		p = product(ta, tb);
		q = product(ua, ub);
		n = (size_t)(tb->shape[0] * ta->shape[1]);
		e = frob_diff(p, q, n) / frob(q, n);
		if (e > worst)
			worst = e;
		free(p);
		free(q);
	}
	ok(worst < 1e-5, "the same products (worst relative difference "
	    "%.3g)", worst);
	for (i = 0; i < a.st.n; i++) {
		if (strstr(a.st.t[i].name, ".lora_") != NULL)
			continue;
		full++;
		ta = tl_st_find(&b.st, a.st.t[i].name);
		same += ta != NULL && ta->nbytes == a.st.t[i].nbytes &&
		    memcmp(ta->data, a.st.t[i].data, ta->nbytes) == 0;
	}
	ok(full == 7 && same == full, "the adapter's modules_to_save, as it "
	    "stores them");
	adapter_free(&a);
	adapter_free(&b);
}

/* dir/NAME merged by mergectl run from REF alone, in float32. */
static bool
apply(const char *ref, const char *name)
{
	char yml[64], *o = NULL;
	char text[256];
	int rc;

	snprintf(yml, sizeof yml, "%s.yml", name);
	snprintf(text, sizeof text, "models:\n  - model: %s\n    parameters:\n"
	    "      weight: 1.0\nmerge_method: linear\ndtype: float32\n", ref);
	tl_write_at(dir, yml, text);
	rc = tl_runf(&o, "cd %s && %s run %s %s 2>&1", dir, tl_mergectl, yml,
	    name);
	if (rc != 0)
		tap_diag("mergectl run %s: exit %d: %s", ref, rc, o);
	free(o);
	return rc == 0;
}

/* The largest relative difference between two models' tensors. */
static double
models_differ(const char *x, const char *y, size_t *count)
{
	struct tl_st *m = NULL, *n = NULL;
	size_t nm = 0, nn = 0, i, k;
	const struct tl_tensor *t, *f;
	char *px = at("%s", x), *py = at("%s", y);
	double *a, *b, e, worst = 0;

	*count = 0;
	if (tl_model_load(px, &m, &nm) != 0 || tl_model_load(py, &n, &nn) != 0)
		worst = INFINITY;
	for (i = 0; i < nm && worst < INFINITY; i++)
		for (k = 0; k < m[i].n; k++) {
			t = &m[i].t[k];
			f = tl_model_find(n, nn, t->name);
			if (f == NULL || f->numel != t->numel) {
				worst = INFINITY;
				break;
			}
			a = values(t);
			b = values(f);
			e = frob_diff(a, b, t->numel) / frob(b, t->numel);
			if (e > worst)
				worst = e;
			(*count)++;
			free(a);
			free(b);
		}
	tl_model_free(m, nm);
	tl_model_free(n, nn);
	free(px);
	free(py);
	return worst;
}

/*
 * A PEFT adapter that changes lm_head, which is saved in full: read
 * adapted on the pool.  BASE+extracted applies as BASE+adapter does.
 */
static void
test_adapted_head(void)
{
	char *o = NULL;
	size_t n;
	double e;
	int rc;

	section("adapted lm_head");
	rc = extract(&o, "base+gl", "base", "glx", "--max-rank 8 -v");
	ok_int_eq(rc, 0, "extract-lora from an adapter that changes lm_head");
	ok_str_has(o, "lm_head.weight: saved in full, as its adapter changes "
	    "it", "lm_head is read adapted");
	free(o);
	if (!apply("base+gl", "gl-applied") || !apply("base+glx",
	    "glx-applied"))
		return;
	e = models_differ("glx-applied", "gl-applied", &n);
	ok(n == 21 && e < 1e-6, "BASE+extracted is BASE+adapter (worst "
	    "relative difference %.3g)", e);
}

/* 6: BASE+adapter through mergectl run is FT again. */
static void
test_round_trip(void)
{
	struct tl_st *m = NULL;
	size_t nm = 0, i, k, bad = 0, count = 0;
	const struct tl_tensor *t, *f;
	double *x, *y, e, worst = 0;
	char *o = NULL;

	section("round trip");
	if (!ok(apply("base+full", "applied"), "mergectl run on base+ADAPTER"))
		return;
	o = at("applied");
	if (tl_model_load(o, &m, &nm) != 0) {
		ok(false, "the merged model loads");
		free(o);
		return;
	}
	for (i = 0; i < nm; i++)
		for (k = 0; k < m[i].n; k++) {
			t = &m[i].t[k];
			f = tl_model_find(ft, nft, t->name);
			if (f == NULL || f->numel != t->numel) {
				bad++;
				continue;
			}
			x = values(t);
			y = values(f);
			e = frob_diff(x, y, t->numel) / frob(y, t->numel);
			if (e > worst)
				worst = e;
			count++;
			free(x);
			free(y);
		}
	ok(bad == 0 && count == 21, "every tensor of FT, and only those");
	ok(worst < 1e-5, "BASE + B A is FT within float32 rounding (worst "
	    "relative error %.3g)", worst);
	tl_model_free(m, nm);
	free(o);
}

/* bf16 stays bf16: the factors in the task vector's dtype. */
static void
test_bf16(void)
{
	struct adapter a;
	const struct tl_tensor *t;
	size_t i, bad = 0, lora = 0;
	char *o = NULL;
	int rc;

	section("bf16");
	rc = extract(&o, "ft16", "base16", "b16", "--max-rank 8");
	if (!ok(rc == 0, "extract-lora on bf16 models")) {
		tap_diag("%s", o);
		free(o);
		return;
	}
	free(o);
	if (!adapter_load("b16", &a))
		return;
	for (i = 0; i < a.st.n; i++) {
		t = &a.st.t[i];
		lora += strstr(t->name, ".lora_") != NULL;
		bad += memcmp(t->dtype, "BF16", 5) != 0;
	}
	ok(lora == 2 * NMODULES && bad == 0, "every tensor is BF16");
	adapter_free(&a);
}

/* 7: refusals and their exit codes. */
static void
test_refusals(void)
{
	static const struct {
		const char *args;
		const char *says;
	} usage[] = {
		{ "--max-rank 0", "--max-rank" },
		{ "--max-rank x", "--max-rank" },
		{ "--sv-epsilon -1", "--sv-epsilon" },
		{ "--power-iters many", "--power-iters" },
		{ "--oversample -3", "--oversample" },
		{ "--include-regex '(?<=x)'", "--include-regex" },
		{ "--exclude-regex '('", "--exclude-regex" },
		/* Each + doubles glibc's tree: 2 GB before this was refused. */
		{ "--include-regex '(((((((((((((((a+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)'",
		    "8192 nodes" },
		{ "--include-regex 'x+*'", "a quantifier repeated" },
		{ "--max-rnak 8", "did you mean --max-rank" },
		{ "--memory lots", "--memory" },
		{ "extra", "no arguments" },
	};
	char *o = NULL, *path;
	size_t i;
	int rc;

	section("refusals");
	rc = extract(&o, "nope", "base", "x1", "");
	ok_int_eq(rc, 3, "a missing model: exit 3");
	ok_str_has(o, "not found", "saying it is not found");
	ok_str_has(o, "--model", "naming the option");
	free(o);
	rc = extract(&o, "ft", "other", "x2", "");
	ok_int_eq(rc, 3, "a base of another shape: exit 3");
	ok_str_has(o, "model.layers.0.mlp.down_proj.weight", "naming the "
	    "tensor");
	ok_str_has(o, "[64, 96] in the fine-tuned model 'ft'", "and the "
	    "fine-tuned model");
	ok_str_has(o, "in the base model 'other'", "and the base model");
	ok_str_has(o, "nothing was read or written", "before reading");
	path = at("x2");
	ok(!tl_exists(path), "nothing is written");
	free(path);
	free(o);
	rc = extract(&o, "ft", "base", "full", "--max-rank 4");
	ok_int_eq(rc, 4, "an existing output without --force: exit 4");
	ok_str_has(o, "already exists", "saying so");
	free(o);
	rc = tl_runf(&o, "cd %s && %s extract-lora --model ft --base-model "
	    "base 2>&1", dir, tl_mergectl);
	ok_int_eq(rc, 2, "no --out-path: exit 2");
	ok_str_has(o, "--out-path", "naming it");
	free(o);
	for (i = 0; i < sizeof usage / sizeof *usage; i++) {
		rc = extract(&o, "ft", "base", "x3", usage[i].args);
		ok_int_eq(rc, 2, "%s: exit 2", usage[i].args);
		ok_str_has(o, usage[i].says, "%s: the message", usage[i].args);
		free(o);
	}
	rc = extract(&o, "ft", "base", "x4", "--max-rank 4 --cuda "
	    "--lazy-unpickle --out-shard-size 1B -q");
	ok_int_eq(rc, 0, "mergekit's options that mean nothing: accepted");
	ok_str_has(o, "note: --cuda changes nothing", "with a note");
	ok_str_has(o, "note: --out-shard-size changes nothing", "each");
	free(o);
	rc = extract(&o, "ft", "base", "x4", "--max-rank 4 --force");
	ok_int_eq(rc, 0, "--force replaces the output");
	free(o);
}

/* A job's field from "status --json" as a number. */
static long
job_num(int id, const char *field)
{
	char *s = td_job_field(id, field);
	long v = atol(s);

	free(s);
	return v;
}

/* Waits until job id has decomposed a weight, or ended; its state. */
static char *
wait_started(int id)
{
	char *st = NULL;
	int i;

	for (i = 0; i < 3000; i++) {
		free(st);
		st = td_job_field(id, "state");
		if (strcmp(st, "running") != 0 && strcmp(st, "queued") != 0)
			break;
		if (strcmp(st, "running") == 0 &&
		    job_num(id, "tensors_done") >= 1)
			break;
		td_sleep_ms(20);
	}
	return st;
}

static void
test_daemon(void)
{
	/* Weights that take a while to decompose, for stopping mid-way. */
	static const char big[] = "--family llama --hidden 512 --intermediate "
	    "1536 --layers 4 --heads 4 --kv-heads 2 --vocab 128 --dtype bf16";
	char *o = NULL, *st, *p, *q, args[256];
	long total;
	int id, id2, rc;
	pid_t pid;

	section("daemon");
	snprintf(args, sizeof args, "%s --seed 1", big);
	tl_gen_at(dir, "bigbase", args);
	snprintf(args, sizeof args, "%s --seed 2 --finetune-of 1 --delta 0.01",
	    big);
	tl_gen_at(dir, "bigft", args);
	ok(tl_runf(&o, "cd %s && %s extract-lora --model bigft --base-model "
	    "bigbase --out-path big-ref --max-rank 8 -j 1 2>&1", dir,
	    tl_mergectl) == 0, "the reference for the big pair");
	free(o);
	o = NULL;
	td_init(dir);
	pid = td_start("--memory 256M", NULL);

	/* The same options as a daemon job: the same bytes. */
	ok(extract_ok("cli-ex", "--max-rank 8 --save-module lm_head", NULL),
	    "the command's adapter");
	id = td_submit("--extract-lora --model ft --base-model base -o d-ex "
	    "--max-rank 8 --save-module lm_head --name my-extract");
	ok(id > 0 && td_wait_state(id, "done", 60000), "the job is done");
	ok(tl_same_at(dir, "d-ex/adapter_model.safetensors",
	    "cli-ex/adapter_model.safetensors") && tl_same_at(dir,
	    "d-ex/adapter_config.json", "cli-ex/adapter_config.json"),
	    "its adapter is byte for byte the command's");
	st = td_job_field(id, "kind");
	ok_str_eq(st, "extract-lora", "status shows its kind");
	free(st);
	st = td_job_field(id, "name");
	ok_str_eq(st, "my-extract", "and its name");
	free(st);
	/* lm_head is copied, not decomposed: not a weight of the pool. */
	ok_int_eq((int)job_num(id, "tensors_done"), (int)NMODULES,
	    "every weight decomposed was counted");
	td_ctl(&o, "logs %d", id);
	ok_str_has(o, "model.layers.1.mlp.down_proj: [64, 96] rank 8, "
	    "relative error", "its log has a line per weight");
	ok_str_has(o, "wrote 14 weights decomposed (rank 8)", "and the "
	    "summary");
	free(o);
	o = NULL;
	p = at("d-ex/README.md");
	q = tl_read(p, NULL);
	ok_str_has(q, "mergectl submit --extract-lora --model ft", "the card "
	    "gives the command that made it");
	free(q);
	free(p);

	/* --fast with a seed: the command's bytes too. */
	ok(extract_ok("cli-fast", "--max-rank 4 --fast --random-seed 9 -j 1",
	    NULL), "the command's --fast adapter");
	id = td_submit("--extract-lora --model ft --base-model base -o d-fast "
	    "--max-rank 4 --fast --random-seed 9");
	ok(id > 0 && td_wait_state(id, "done", 60000) && tl_same_at(dir,
	    "d-fast/adapter_model.safetensors",
	    "cli-fast/adapter_model.safetensors"), "--fast: the same bytes "
	    "from the daemon");

	/* Refused at submit, every problem at once, nothing queued. */
	rc = td_ctl(&o, "submit --extract-lora --model nope --base-model nada "
	    "-o d-bad --max-rank 8");
	ok_int_eq(rc, 3, "missing models: exit 3");
	ok_str_has(o, "--model", "naming the first");
	ok_str_has(o, "--base-model", "and the second");
	free(o);
	o = NULL;
	rc = td_ctl(&o, "submit --extract-lora --model ft --base-model other "
	    "-o d-bad --max-rank 8");
	ok_int_eq(rc, 3, "a base of another shape: exit 3 from the daemon's "
	    "plan");
	ok_str_has(o, "model.layers.0.mlp.down_proj.weight", "naming the "
	    "tensor");
	free(o);
	o = NULL;
	rc = td_ctl(&o, "submit --extract-lora --model ft --base-model base "
	    "-o d-bad --max-rank 0");
	ok_int_eq(rc, 2, "--max-rank 0: exit 2");
	free(o);
	o = NULL;
	rc = td_ctl(&o, "submit --extract-lora --model ft --base-model base "
	    "-o d-bad -j 2");
	ok_int_eq(rc, 2, "-j: exit 2, the daemon decides");
	ok_str_has(o, "the daemon decides", "saying so");
	free(o);
	o = NULL;
	rc = td_ctl(&o, "submit --extract-lora --model ft --base-model base "
	    "-o d-ex --max-rank 8");
	ok_int_eq(rc, 4, "an existing output without --force: exit 4");
	free(o);
	o = NULL;
	p = at("d-bad");
	ok(!tl_exists(p), "nothing was written");
	free(p);

	/* A merge and an extraction at once, under one small budget. */
	td_stop(pid, SIGTERM);
	pid = td_start("--memory 40M --threads 2", NULL);
	tl_write_at(dir, "lin.yml", "merge_method: linear\nmodels:\n"
	    "  - model: bigbase\n    parameters: {weight: 0.5}\n"
	    "  - model: bigft\n    parameters: {weight: 0.5}\n"
	    "dtype: bfloat16\n");
	ok(tl_runf(&o, "cd %s && %s run lin.yml lin-ref -j 1 2>&1", dir,
	    tl_mergectl) == 0, "the merge's reference");
	free(o);
	o = NULL;
	id = td_submit("--extract-lora --model bigft --base-model bigbase "
	    "-o d-big --max-rank 8");
	id2 = td_submit("lin.yml -o d-lin");
	ok(id > 0 && id2 > 0 && td_wait_state(id, "done", 300000) &&
	    td_wait_state(id2, "done", 300000), "both finish");
	ok(tl_same_at(dir, "d-big/adapter_model.safetensors",
	    "big-ref/adapter_model.safetensors") && tl_same_at(dir,
	    "d-lin/model.safetensors", "lin-ref/model.safetensors"),
	    "each byte for byte as alone");
	td_ctl(&o, "daemon status --json");
	ok(o != NULL && strstr(o, "\"memory_peak\":") != NULL,
	    "the daemon reports its peak");
	if (o != NULL && (p = strstr(o, "\"memory_peak\":")) != NULL &&
	    (q = strstr(o, "\"memory_budget\":")) != NULL)
		ok(atof(p + 14) <= atof(q + 16) && atof(p + 14) > 0,
		    "which stayed within the budget (%.0f of %.0f)",
		    atof(p + 14), atof(q + 16));
	free(o);
	o = NULL;
	/* A weight larger than the whole budget: refused at submit. */
	rc = td_ctl(&o, "submit --extract-lora --model bigft --base-model "
	    "bigbase -o d-huge --max-rank 8 --memory 2M");
	ok_int_eq(rc, 3, "a budget too small for a weight: exit 3");
	ok_str_has(o, "too small", "saying the budget is too small");
	free(o);
	o = NULL;

	/* Cancelled mid-way: nothing left behind. */
	td_stop(pid, SIGTERM);
	pid = td_start("--memory 256M --threads 1", NULL);
	id = td_submit("--extract-lora --model bigft --base-model bigbase "
	    "-o d-cancel --max-rank 8");
	st = wait_started(id);
	total = job_num(id, "tensors_total");
	ok(strcmp(st, "running") == 0, "the job runs (%s)", st);
	free(st);
	ok_int_eq(td_ctl(NULL, "cancel %d", id), 0, "cancel: exit 0");
	ok(td_wait_state(id, "cancelled", 60000), "it ends cancelled");
	ok(job_num(id, "tensors_done") < total, "before its last weight");
	p = at("d-cancel");
	ok(!tl_exists(p) && !td_staging_left("d-cancel"), "no adapter and no "
	    "staging directory left");
	free(p);

	/* Interrupted by the daemon stopping; resumed after a restart. */
	id = td_submit("--extract-lora --model bigft --base-model bigbase "
	    "-o d-resume --max-rank 8");
	st = wait_started(id);
	ok(strcmp(st, "running") == 0, "a second job runs (%s)", st);
	free(st);
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly");
	pid = td_start("--memory 256M", NULL);
	st = td_job_field(id, "state");
	ok_str_eq(st, "interrupted", "the job was interrupted");
	free(st);
	ok(job_num(id, "tensors_done") < total, "before its last weight");
	rc = td_ctl(&o, "resume %d", id);
	ok_int_eq(rc, 0, "resume: exit 0");
	free(o);
	o = NULL;
	ok(td_wait_state(id, "done", 300000), "the resumed job is done");
	ok(tl_same_at(dir, "d-resume/adapter_model.safetensors",
	    "big-ref/adapter_model.safetensors") && tl_same_at(dir,
	    "d-resume/adapter_config.json", "big-ref/adapter_config.json"),
	    "byte for byte an uninterrupted run's");
	ok(!td_staging_left("d-resume"), "no staging directory left");
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon exits cleanly");
}

int
main(int argc, char **argv)
{
	double t0 = now();
	char *p, *q;

	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("extract");
	tl_gen_at(dir, "base", SHAPE " --dtype f32 --seed 1");
	tl_gen_at(dir, "ft", SHAPE " --dtype f32 --seed 2 --finetune-of 1 "
	    "--delta 0.01");
	/* Another vocabulary; another intermediate size. */
	tl_gen_at(dir, "ftv", "--family llama --hidden 64 --intermediate 96 "
	    "--layers 2 --heads 4 --kv-heads 2 --vocab 136 --dtype f32 "
	    "--seed 3");
	tl_gen_at(dir, "other", "--family llama --hidden 64 --intermediate 80 "
	    "--layers 2 --heads 4 --kv-heads 2 --vocab 128 --dtype f32 "
	    "--seed 4");
	/* A PEFT adapter of the base, lm_head among its targets. */
	tl_gen_at(dir, "gl", SHAPE " --seed 1 --lora 4 --lora-targets "
	    "q_proj,v_proj,lm_head");
	tl_gen_at(dir, "base16", SHAPE " --dtype bf16 --seed 1");
	tl_gen_at(dir, "ft16", SHAPE " --dtype bf16 --seed 2 --finetune-of 1 "
	    "--delta 0.01");
	p = at("ft");
	q = at("base");
	if (tl_model_load(p, &ft, &nft) != 0 ||
	    tl_model_load(q, &base, &nbase) != 0) {
		fprintf(stderr, "cannot load the models\n");
		return 99;
	}
	free(p);
	free(q);
	tap_diag("setup took %.2f s", now() - t0);
	test_full_rank();
	test_truncated();
	test_fast();
	test_embed();
	test_vocab();
	test_filters();
	test_scale();
	test_epsilon();
	test_adapted();
	test_adapted_head();
	test_round_trip();
	test_bf16();
	test_hub();
	test_refusals();
	test_daemon();
	section(NULL);
	tl_model_free(ft, nft);
	tl_model_free(base, nbase);
	tap_diag("test-extract took %.1f s", now() - t0);
	tl_cleanup();
	return tap_done();
}
