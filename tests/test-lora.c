/* SPDX-License-Identifier: MIT */
/*
 * test-lora.c: LoRA adapters applied inside a merge ("model+adapter"),
 * end to end, against a reference written here.
 *
 * genmodel writes PEFT adapters for a small Llama (--lora and its
 * options).  Each adapter is applied in a linear merge of the one model
 * with weight 1, so that the output is the adapted model itself, and
 * every element of every tensor is compared with W + s * sum_k B_ik A_kj
 * computed here in float64 from the files (read with testlib's own
 * safetensors reader), with s = alpha / r or alpha / sqrt(r) and the
 * per-module alpha the test states, not read from adapter_config.json:
 * float32 outputs within Part A 9's 1e-6 relative (in practice exact),
 * bf16 outputs within 1 ulp.  Covered: several targets with differing
 * shapes, rsLoRA, rank_pattern and alpha_pattern, fan_in_fan_out (the
 * transposed product), embeddings (lora_embedding_A/B, transposed),
 * modules_to_save (whole replacements), bf16 factors over a bf16 model,
 * --lora-merge-dtype, the object form's lora:, a della_linear merge of
 * five adapters over one base against the same merge of the adapted
 * models written out in full, plan's adapter lines, the refusals (each
 * naming the adapter file and tensor, all found together, exit code 3),
 * and the daemon writing the same bytes as mergectl run.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include <fcntl.h>
#include <unistd.h>

#include "stmodel.h"
#include "tap.h"
#include "testd.h"
#include "testlib.h"

#define PREFIX "base_model.model."

static const char *dir;

/* What the test knows an adapter to mean (from the options it made it
 * with), independently of its adapter_config.json. */
struct aspec {
	const char *name;
	const char *args;	/* genmodel's, beside the shape */
	double alpha;
	bool rslora;
	bool fifo;		/* fan_in_fan_out */
	const char *alpha_key;	/* alpha_pattern's one key, or NULL */
	double alpha_pat;
};

static const char shape[] = "--family llama --layers 2 --hidden 32 "
    "--intermediate 48 --heads 4 --kv-heads 2 --vocab 64 --untied";

static const struct aspec adapters[] = {
	{ "ad1", "--dtype f32 --seed 11 --lora 4 --lora-targets "
	    "q_proj,v_proj,down_proj,lm_head --lora-alpha 8", 8, false, false,
	    NULL, 0 },
	{ "ad2", "--dtype f32 --seed 12 --lora 8 --rslora --lora-alpha 16 "
	    "--lora-targets q_proj,v_proj,o_proj --rank-pattern q_proj=2 "
	    "--alpha-pattern v_proj=3", 16, true, false, "v_proj", 3 },
	{ "ad3", "--dtype f32 --seed 13 --lora 4 --fan-in-fan-out "
	    "--lora-targets q_proj,o_proj,up_proj", 8, false, true, NULL, 0 },
	{ "ad4", "--dtype f32 --seed 14 --lora 4 --lora-embed "
	    "--modules-to-save lm_head --lora-targets k_proj", 8, false, false,
	    NULL, 0 },
	{ "ad5", "--dtype bf16 --seed 15 --lora 32 --lora-targets "
	    "gate_proj,up_proj,lm_head --lora-alpha 6", 6, false, false, NULL,
	    0 },
};

#define NADAPTERS (sizeof adapters / sizeof *adapters)

/* A path in the test's directory. */
#define at(...) tl_at(dir, __VA_ARGS__)

static void
write_at(const char *name, const char *text)
{
	char *p = at("%s", name);

	if (tl_write(p, text) != 0)
		exit(99);
	free(p);
}

/* mergectl in the test directory; output into *o. */
static int
ctl(char **o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
ctl(char **o, const char *fmt, ...)
{
	char *args;
	va_list ap;
	int rc;

	va_start(ap, fmt);
	if (vasprintf(&args, fmt, ap) < 0)
		exit(99);
	va_end(ap);
	rc = tl_runf(o, "cd %s && %s %s 2>&1", dir, tl_mergectl, args);
	free(args);
	return rc;
}

static struct tl_tensor *
st_find(struct tl_st *s, const char *fmt, ...) __attribute__((format(printf,
    2, 3)));

static struct tl_tensor *
st_find(struct tl_st *s, const char *fmt, ...)
{
	char name[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);
	return (struct tl_tensor *)tl_st_find(s, name);
}

/* "x.y.q_proj" ends with the module key "q_proj" after a dot. */
static bool
ends_with_module(const char *module, const char *key)
{
	size_t n = strlen(module), k = strlen(key);

	return n >= k && strcmp(module + n - k, key) == 0 &&
	    (n == k || module[n - k - 1] == '.');
}

/*
 * Tensor name of the base as the adapter makes it, in float64: the
 * reference.  *kind says what the adapter did: 0 nothing, 1 a product,
 * 2 a replacement.
 */
static double *
reference(const struct tl_tensor *w, struct tl_st *ad, const struct aspec *sp,
    int *kind)
{
	const struct tl_tensor *a, *b, *rep;
	char module[256];
	double *v, s, alpha, d;
	int64_t rows, cols, r, i, j, k;
	bool tr;

	v = calloc(w->numel, sizeof *v);
	if (v == NULL)
		exit(99);
	*kind = 0;
	for (i = 0; i < (int64_t)w->numel; i++)
		v[i] = tl_value(w, (uint64_t)i);
	if ((rep = st_find(ad, PREFIX "%s", w->name)) != NULL) {
		for (i = 0; i < (int64_t)w->numel; i++)
			v[i] = tl_value(rep, (uint64_t)i);
		*kind = 2;
		return v;
	}
	snprintf(module, sizeof module, "%.*s", (int)(strlen(w->name) - 7),
	    w->name);
	tr = sp->fifo;
	if ((a = st_find(ad, PREFIX "%s.lora_A.weight", module)) != NULL) {
		b = st_find(ad, PREFIX "%s.lora_B.weight", module);
	} else if ((a = st_find(ad, PREFIX "%s.lora_embedding_A", module)) !=
	    NULL) {
		b = st_find(ad, PREFIX "%s.lora_embedding_B", module);
		tr = true;
	} else {
		return v;
	}
	if (b == NULL)
		exit(99);
	*kind = 1;
	rows = w->shape[0];
	cols = w->shape[1];
	r = a->shape[0];
	alpha = sp->alpha_key != NULL && ends_with_module(module,
	    sp->alpha_key) ? sp->alpha_pat : sp->alpha;
	s = sp->rslora ? alpha / sqrt((double)r) : alpha / (double)r;
	for (i = 0; i < rows; i++)
		for (j = 0; j < cols; j++) {
			d = 0;
			for (k = 0; k < r; k++)
				d += tr ? tl_value(a, (uint64_t)(k * rows + i)) *
				    tl_value(b, (uint64_t)(j * r + k)) :
				    tl_value(b, (uint64_t)(i * r + k)) *
				    tl_value(a, (uint64_t)(k * cols + j));
			v[i * cols + j] += s * d;
		}
	return v;
}

static float
to_f32(double x)
{
	return (float)x;
}

/*
 * Output out is base adapted by sp (a linear merge of the one model):
 * every element as the reference says; round_to: "BF16" when
 * --lora-merge-dtype bfloat16 rounded the adapted float32 values.
 */
static void
check_adapted(const char *what, const char *out, const char *base,
    const struct aspec *sp, const char *round_to)
{
	struct tl_st *bm = NULL, *om = NULL, ad;
	const struct tl_tensor *w, *o;
	size_t nb = 0, no = 0, i;
	uint64_t e, n = 0, exact = 0, bad = 0, prods = 0, reps = 0;
	double *ref, want, got, worst = 0, rel;
	char *p, *q;
	int kind;

	p = at("%s/adapter_model.safetensors", sp->name);
	q = at("%s", out);
	if (tl_model_load(base, &bm, &nb) != 0 || tl_model_load(q, &om,
	    &no) != 0 || tl_st_load(p, &ad) != 0) {
		ok(false, "%s: the models load", what);
		free(p);
		free(q);
		return;
	}
	free(p);
	free(q);
	for (i = 0; i < bm[0].n; i++) {
		w = &bm[0].t[i];
		o = tl_model_find(om, no, w->name);
		if (o == NULL || o->numel != w->numel) {
			bad++;
			continue;
		}
		ref = reference(w, &ad, sp, &kind);
		prods += kind == 1;
		reps += kind == 2;
		for (e = 0; e < w->numel; e++) {
			got = tl_value(o, e);
			if (strcmp(o->dtype, "F32") == 0) {
				want = to_f32(ref[e]);
				if (round_to != NULL && kind == 1)
					want = tl_round(round_to, want);
				rel = fabs(got - want) / (fabs(want) > 1e-1 ?
				    fabs(want) : 1e-1);
				exact += got == want;
				if (rel > 1e-6)
					bad++;
			} else {
				rel = tl_ulps(o->dtype, got, ref[e]);
				exact += got == tl_round(o->dtype, ref[e]);
				if (rel > 1)
					bad++;
			}
			if (rel > worst)
				worst = rel;
			n++;
		}
		free(ref);
	}
	ok(bad == 0 && n > 0 && prods > 0, "%s: %" PRIu64 " elements of %zu "
	    "tensors (%" PRIu64 " adapted, %" PRIu64 " replaced) as W + "
	    "s*B*A in float64 (%" PRIu64 " exact, worst %s %.3g)", what, n,
	    bm[0].n, prods, reps, exact, strcmp(om[0].t[0].dtype, "F32") == 0 ?
	    "relative" : "ulps", worst);
	tl_st_free(&ad);
	tl_model_free(bm, nb);
	tl_model_free(om, no);
}

static void
one_config(const char *file, const char *model, const char *dtype)
{
	char text[1024];

	snprintf(text, sizeof text, "merge_method: linear\ndtype: %s\n"
	    "models:\n  - model: %s\n    parameters:\n      weight: 1.0\n",
	    dtype, model);
	write_at(file, text);
}

/* Each adapter over the float32 base, and ad5's bf16 over the bf16 one. */
static void
test_apply(void)
{
	char cfg[64], ref[64], out[64], *o = NULL, *b;
	size_t i;
	int rc;

	for (i = 0; i < NADAPTERS; i++) {
		snprintf(cfg, sizeof cfg, "%s.yml", adapters[i].name);
		snprintf(ref, sizeof ref, "%s+%s", i == 4 ? "base16" : "base",
		    adapters[i].name);
		snprintf(out, sizeof out, "out-%s", adapters[i].name);
		one_config(cfg, ref, i == 4 ? "bfloat16" : "float32");
		rc = ctl(&o, "run %s %s", cfg, out);
		if (!ok(rc == 0, "mergectl run %s", ref))
			tap_diag("%s", o ? o : "");
		free(o);
		o = NULL;
		b = at("%s", i == 4 ? "base16" : "base");
		check_adapted(adapters[i].args, out, b, &adapters[i], NULL);
		free(b);
	}
}

/* --lora-merge-dtype bfloat16: the adapted weights are bf16 values. */
static void
test_merge_dtype(void)
{
	char *o = NULL, *b;
	int rc;

	rc = ctl(&o, "run ad1.yml out-ad1-bf16 --lora-merge-dtype bfloat16 "
	    "--lora-merge-cache /nonexistent");
	if (!ok(rc == 0, "--lora-merge-dtype bfloat16 (and "
	    "--lora-merge-cache)"))
		tap_diag("%s", o ? o : "");
	ok_str_has(o, "--lora-merge-cache changes nothing", "--lora-merge-"
	    "cache is accepted with one note");
	free(o);
	b = at("base");
	check_adapted("ad1, rounded to bfloat16 before the merge",
	    "out-ad1-bf16", b, &adapters[0], "BF16");
	free(b);
	rc = ctl(&o, "run ad1.yml out-x --lora-merge-dtype bf16");
	ok(rc == 2 && strstr(o, "did you mean 'bfloat16'") != NULL,
	    "--lora-merge-dtype bf16: usage error suggesting bfloat16 (exit "
	    "%d)", rc);
	free(o);
}

/* The object form with lora: {path} is the same model as "base+ad2". */
static void
test_object_form(void)
{
	char *o = NULL, *p1, *p2;
	int rc;

	write_at("obj.yml", "merge_method: linear\ndtype: float32\nmodels:\n"
	    "  - model:\n      model: base\n      lora: {path: ad2}\n"
	    "    parameters:\n      weight: 1.0\n");
	rc = ctl(&o, "run obj.yml out-obj");
	ok_int_eq(rc, 0, "the object form's lora: merges");
	free(o);
	p1 = at("out-obj/model.safetensors");
	p2 = at("out-ad2/model.safetensors");
	ok(tl_files_equal(p1, p2), "and writes the same weights as base+ad2");
	free(p1);
	free(p2);
}

/* A safetensors file of float32 tensors, in the order given. */
static void
write_f32_model(const char *path, struct tl_tensor *const *t, double *const *v,
    size_t n)
{
	FILE *fp;
	char *h = NULL, *tmp;
	uint64_t off = 0, len, e;
	size_t i;
	float f;
	int k;

	if ((h = strdup("{")) == NULL)
		exit(99);
	for (i = 0; i < n; i++) {
		tmp = h;
		if (asprintf(&h, "%s%s\"%s\":{\"dtype\":\"F32\",\"shape\":[",
		    tmp, i ? "," : "", t[i]->name) < 0)
			exit(99);
		free(tmp);
		for (k = 0; k < t[i]->ndim; k++) {
			tmp = h;
			if (asprintf(&h, "%s%s%" PRId64, tmp, k ? "," : "",
			    t[i]->shape[k]) < 0)
				exit(99);
			free(tmp);
		}
		tmp = h;
		if (asprintf(&h, "%s],\"data_offsets\":[%" PRIu64 ",%" PRIu64
		    "]}", tmp, off, off + t[i]->numel * 4) < 0)
			exit(99);
		free(tmp);
		off += t[i]->numel * 4;
	}
	tmp = h;
	if (asprintf(&h, "%s}", tmp) < 0)
		exit(99);
	free(tmp);
	if ((fp = fopen(path, "wb")) == NULL)
		exit(99);
	len = strlen(h);
	fwrite(&len, 8, 1, fp);
	fwrite(h, 1, len, fp);
	for (i = 0; i < n; i++)
		for (e = 0; e < t[i]->numel; e++) {
			f = (float)v[i][e];
			fwrite(&f, 4, 1, fp);
		}
	if (fclose(fp) != 0)
		exit(99);
	free(h);
}

/* base adapted by sp, written out in full as model full/NAME. */
static void
materialize(const struct aspec *sp, const char *name)
{
	struct tl_st *bm = NULL, ad;
	struct tl_tensor **t;
	double **v;
	size_t nb = 0, i;
	char *p, *o = NULL;
	int kind;

	p = at("base");
	if (tl_model_load(p, &bm, &nb) != 0)
		exit(99);
	free(p);
	p = at("%s/adapter_model.safetensors", sp->name);
	if (tl_st_load(p, &ad) != 0)
		exit(99);
	free(p);
	t = calloc(bm[0].n, sizeof *t);
	v = calloc(bm[0].n, sizeof *v);
	if (t == NULL || v == NULL)
		exit(99);
	for (i = 0; i < bm[0].n; i++) {
		t[i] = &bm[0].t[i];
		v[i] = reference(t[i], &ad, sp, &kind);
	}
	if (tl_runf(&o, "cd %s && mkdir -p %s && cp base/config.json %s/",
	    dir, name, name) != 0)
		exit(99);
	free(o);
	p = at("%s/model.safetensors", name);
	write_f32_model(p, t, v, bm[0].n);
	free(p);
	for (i = 0; i < bm[0].n; i++)
		free(v[i]);
	free(v);
	free(t);
	tl_st_free(&ad);
	tl_model_free(bm, nb);
}

/*
 * Published configs merge several adapters over one base (one of the
 * 28 tried: five adapters, della_linear).  The same merge of the adapted
 * models written out in full, as mergekit's LoRA cache would hold them,
 * must give the same weights.
 */
static void
test_five_adapters(void)
{
	static const char body[] =
	    "merge_method: della_linear\nbase_model: base\ndtype: float32\n"
	    "parameters:\n  density: 0.6\n  epsilon: 0.15\n  lambda: 1.0\n"
	    "models:\n";
	static const char *const refs[] = { "base+ad1", "base+ad2", "base+ad3",
		"base+ad4", "base+ad1b" };
	struct tl_st *a = NULL, *b = NULL;
	size_t na = 0, nb = 0, i;
	uint64_t e, n = 0, bad = 0, exact = 0;
	char lora[2048], full[2048], name[32], *o = NULL, *p;
	struct aspec s;
	double x, y;
	int rc;

	snprintf(lora, sizeof lora, "%s", body);
	snprintf(full, sizeof full, "%s", body);
	for (i = 0; i < 5; i++) {
		snprintf(lora + strlen(lora), sizeof lora - strlen(lora),
		    "  - model: %s\n    parameters:\n      weight: 0.%zu\n",
		    refs[i], i + 1);
		snprintf(full + strlen(full), sizeof full - strlen(full),
		    "  - model: full%zu\n    parameters:\n      weight: 0.%zu\n",
		    i, i + 1);
		s = adapters[i < 4 ? i : 0];
		s.name = refs[i] + strlen("base+");
		snprintf(name, sizeof name, "full%zu", i);
		materialize(&s, name);
	}
	write_at("five.yml", lora);
	write_at("five-full.yml", full);
	rc = ctl(&o, "run five.yml out-five --random-seed 7");
	if (!ok(rc == 0, "della_linear over five adapters of one base"))
		tap_diag("%s", o ? o : "");
	free(o);
	rc = ctl(&o, "run five-full.yml out-five-full --random-seed 7");
	if (!ok(rc == 0, "the same merge of the adapted models in full"))
		tap_diag("%s", o ? o : "");
	free(o);
	p = at("out-five");
	if (tl_model_load(p, &a, &na) != 0)
		na = 0;
	free(p);
	p = at("out-five-full");
	if (tl_model_load(p, &b, &nb) != 0)
		nb = 0;
	free(p);
	for (i = 0; na > 0 && nb > 0 && i < a[0].n; i++) {
		const struct tl_tensor *t = &a[0].t[i];
		const struct tl_tensor *u = tl_model_find(b, nb, t->name);
		if (u == NULL || u->numel != t->numel) {
			bad++;
			continue;
		}
		for (e = 0; e < t->numel; e++, n++) {
			x = tl_value(t, e);
			y = tl_value(u, e);
			exact += x == y;
			if (fabs(x - y) > 1e-6 * (fabs(y) > 1e-1 ? fabs(y) :
			    1e-1))
				bad++;
		}
	}
	ok(n > 0 && bad == 0, "every one of %" PRIu64 " elements as from the "
	    "models in full (%" PRIu64 " exact)", n, exact);
	tl_model_free(a, na);
	tl_model_free(b, nb);
}

/* Every adapted weight of config cfg's one model sums in dtype sum. */
static bool
sums_are(const char *cfg, const char *sum)
{
	cJSON *j = NULL, *w;
	char *o = NULL;
	int n = 0, good = 0;

	if (tl_runf(&o, "cd %s && %s plan %s --json 2>/dev/null", dir,
	    tl_mergectl, cfg) == 0 && o != NULL)
		j = cJSON_Parse(o);
	cJSON_ArrayForEach(w, cJSON_GetObjectItem(cJSON_GetObjectItem(
	    cJSON_GetArrayItem(cJSON_GetObjectItem(j, "models"), 0),
	    "adapter"), "weights")) {
		n++;
		good += strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(w,
		    "sum")) ? cJSON_GetStringValue(cJSON_GetObjectItem(w,
		    "sum")) : "", sum) == 0;
	}
	cJSON_Delete(j);
	free(o);
	return n > 0 && good == n;
}

/* plan names each model's adapter, its weights, ranks and scales. */
static void
test_plan(void)
{
	cJSON *j = NULL, *m, *ad, *ws, *w;
	char *o = NULL;
	int rc, found = 0;

	rc = tl_runf(&o, "cd %s && %s plan ad2.yml --json 2>/dev/null", dir,
	    tl_mergectl);
	ok_int_eq(rc, 0, "plan --json of base+ad2");
	if (o != NULL)
		j = cJSON_Parse(o);
	m = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "models"), 0);
	ad = cJSON_GetObjectItem(m, "adapter");
	ws = cJSON_GetObjectItem(ad, "weights");
	cJSON_ArrayForEach(w, ws) {
		const char *n = cJSON_GetStringValue(cJSON_GetObjectItem(w,
		    "name"));
		double r = cJSON_GetNumberValue(cJSON_GetObjectItem(w, "rank"));
		double s = cJSON_GetNumberValue(cJSON_GetObjectItem(w,
		    "scale"));
		if (n == NULL)
			continue;
		if (strstr(n, "q_proj") != NULL && r == 2 &&
		    fabs(s - 16 / sqrt(2)) < 1e-12)
			found++;
		else if (strstr(n, "v_proj") != NULL && r == 8 &&
		    fabs(s - 3 / sqrt(8)) < 1e-12)
			found++;
		else if (strstr(n, "o_proj") != NULL && r == 8 &&
		    fabs(s - 16 / sqrt(8)) < 1e-12)
			found++;
	}
	ok(found == 6 && cJSON_GetArraySize(ws) == 6, "it lists the 6 adapted "
	    "weights with rank_pattern's rank 2 for q_proj and "
	    "alpha_pattern's alpha for v_proj (rsLoRA scales)");
	if (found != 6)
		tap_diag("%s", o ? o : "");
	cJSON_Delete(j);
	free(o);
	ok(sums_are("ad2.yml", "float64"), "a float32 merge sums over the "
	    "rank in float64 (dgemm)");
	ok(sums_are("ad5.yml", "float32"), "a bfloat16 one in float32 "
	    "(sgemm), whose outputs test_apply found within one ulp of the "
	    "float64 reference");
}

struct refusal {
	const char *what;
	const char *model;
	const char *phrase;
};

/* Each bad adapter is a plan error naming its file and tensor (exit 3);
 * several are reported together. */
static void
test_refusals(void)
{
	static const struct refusal cases[] = {
		{ "an adapter for a deeper model", "base+adlayers",
		    "model.layers.2.self_attn.q_proj.lora_A.weight adapts "
		    "'model.layers.2.self_attn.q_proj.weight', which model "
		    "'base+adlayers' does not have" },
		{ "an adapter for a narrower model", "base+adnarrow",
		    "do not fit 'model.layers.0.self_attn.q_proj.weight' "
		    "[32, 32]" },
		{ "peft_type IA3", "base+adia3",
		    "peft_type 'IA3' is not supported" },
		{ "DoRA", "base+addora", "DoRA adapters (use_dora: true) are "
		    "not supported" },
		{ "no adapter there", "base+nope", "adapter 'nope' not found" },
		{ "a model dir, not an adapter", "base+base",
		    "adapter_config.json" },
		{ "rank_pattern against the file", "base+adrank",
		    "rank 4 in the file, but rank_pattern says 3" },
		{ "a counted repetition in a pattern (a regex bomb)",
		    "base+adbomb", "uses a counted repetition ({m,n}), which "
		    "this project does not read" },
		{ "too many pattern keys", "base+adkeys", "has 300 keys, more "
		    "than the 256 this project reads" },
		{ "a zero-width weight", "zero+adzero", "is empty" },
	};
	char file[64], text[512], *o = NULL;
	size_t i;
	int rc;

	for (i = 0; i < sizeof cases / sizeof *cases; i++) {
		snprintf(file, sizeof file, "bad%zu.yml", i);
		one_config(file, cases[i].model, "float32");
		rc = ctl(&o, "run %s out-bad", file);
		ok(rc == 3, "%s: refused with exit code 3 (got %d)",
		    cases[i].what, rc);
		if (!ok(o != NULL && strstr(o, cases[i].phrase) != NULL,
		    "%s: says so", cases[i].what))
			tap_diag("%s", o ? o : "");
		free(o);
		o = NULL;
	}
	snprintf(text, sizeof text, "merge_method: linear\ndtype: float32\n"
	    "models:\n  - model: base+adia3\n    parameters: {weight: 0.5}\n"
	    "  - model: base+adnarrow\n    parameters: {weight: 0.5}\n");
	write_at("bad-two.yml", text);
	rc = ctl(&o, "run bad-two.yml out-bad");
	ok(rc == 3 && strstr(o, "IA3") != NULL && strstr(o, "do not fit") !=
	    NULL && strstr(o, "adnarrow/adapter_model.safetensors") != NULL,
	    "two bad adapters: both problems reported at once, naming the "
	    "adapter file");
	free(o);
	o = at("out-bad");
	ok(!tl_exists(o), "and nothing was written");
	free(o);
}

/*
 * A one-layer Llama of the given width whose down_proj has down_cols
 * columns (model NAME), and an adapter for it (ADAPTER) with ad1's
 * config at rank r and a weights file of this header whose data are
 * zeros, sparse: the crafted pairs of the refusal tests.
 */
static void
crafted(const char *name, int width, int down_cols, const char *adapter,
    int r, const char *header, uint64_t data)
{
	uint64_t len = strlen(header);
	char layout[512], *p, *o = NULL;
	int fd;

	snprintf(layout, sizeof layout, "model.embed_tokens.weight 16 %d\n"
	    "model.layers.0.input_layernorm.weight %d\n"
	    "model.layers.0.mlp.down_proj.weight 4 %d\n"
	    "model.norm.weight %d\nlm_head.weight 16 %d\n", width, width,
	    down_cols, width, width);
	p = at("%s", name);
	stm_write(p, layout, "{\"architectures\": [\"LlamaForCausalLM\"], "
	    "\"model_type\": \"llama\", \"num_hidden_layers\": 1}", 1);
	free(p);
	if (tl_runf(&o, "mkdir -p %s/%s && cp %s/ad1/adapter_config.json "
	    "%s/%s/ && sed -i 's/\"r\": 4/\"r\": %d/' "
	    "%s/%s/adapter_config.json", dir, adapter, dir, dir, adapter, r,
	    dir, adapter) != 0)
		exit(99);
	free(o);
	p = at("%s/adapter_model.safetensors", adapter);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, &len, 8) != 8 || write(fd, header, len) !=
	    (ssize_t)len || ftruncate(fd, (off_t)(8 + len + data)) != 0)
		exit(99);
	close(fd);
	free(p);
}

/*
 * An adapter whose factor would need more work space than a pool thread
 * may hold (rank 65536 over a 4096-wide weight: 2 GiB in float64) is
 * refused at plan time, before anything is allocated.  Its file is
 * sparse: the header is real, the data holes.
 */
static void
test_work_space(void)
{
	static const char header[] =
	    "{\"base_model.model.model.layers.0.mlp.down_proj.lora_A.weight\":"
	    "{\"dtype\":\"F32\",\"shape\":[65536,4096],\"data_offsets\":[0,"
	    "1073741824]},"
	    "\"base_model.model.model.layers.0.mlp.down_proj.lora_B.weight\":"
	    "{\"dtype\":\"F32\",\"shape\":[4,65536],\"data_offsets\":"
	    "[1073741824,1074790400]}}";
	char *o = NULL;
	int rc;

	crafted("wide", 4096, 4096, "adhuge", 65536, header, 1074790400);
	one_config("huge.yml", "wide+adhuge", "float32");
	rc = ctl(&o, "run huge.yml out-huge");
	ok(rc == 3 && o != NULL && strstr(o, "needs 2050 MiB of work space per "
	    "thread, more than the 128 MiB") != NULL, "a factor too big for a "
	    "thread's work space: refused at plan time (exit %d)", rc);
	if (rc != 3 || strstr(o, "MiB of work space") == NULL)
		tap_diag("%s", o ? o : "");
	free(o);
}

/* A model with a weight of no columns, and an adapter for it. */
static void
make_zero(void)
{
	static const char header[] =
	    "{\"base_model.model.model.layers.0.mlp.down_proj.lora_A.weight\":"
	    "{\"dtype\":\"F32\",\"shape\":[1,0],\"data_offsets\":[0,0]},"
	    "\"base_model.model.model.layers.0.mlp.down_proj.lora_B.weight\":"
	    "{\"dtype\":\"F32\",\"shape\":[4,1],\"data_offsets\":[0,16]}}";

	crafted("zero", 8, 0, "adzero", 1, header, 16);
}

/* The daemon plans from the adapter directories the client opened. */
static void
test_daemon(void)
{
	char *p1, *p2;
	bool same;
	pid_t pid;
	int id, id2;

	td_init(dir);
	pid = td_start("", NULL);
	id = td_submit("ad4.yml -o ad4-daemon");
	id2 = td_submit("ad1.yml -o ad1-bf16-daemon --lora-merge-dtype "
	    "bfloat16");
	same = id > 0 && td_wait_state(id, "done", 120000);
	p1 = at("out-ad4/model.safetensors");
	p2 = at("ad4-daemon/model.safetensors");
	ok(same && tl_files_equal(p1, p2), "through the daemon: base+ad4 "
	    "(embedding factors, a replaced LM head) byte-identical to "
	    "mergectl run's");
	free(p1);
	free(p2);
	same = id2 > 0 && td_wait_state(id2, "done", 120000);
	p1 = at("out-ad1-bf16/model.safetensors");
	p2 = at("ad1-bf16-daemon/model.safetensors");
	ok(same && tl_files_equal(p1, p2), "and --lora-merge-dtype bfloat16 "
	    "travels with the job");
	free(p1);
	free(p2);
	td_stop(pid, SIGTERM);
}

int
main(int argc, char **argv)
{
	static const struct {
		const char *name;
		const char *args;
	} bad[] = {
		{ "adlayers", "--dtype f32 --seed 21 --lora 4 --layers 3" },
		{ "adnarrow", "--dtype f32 --seed 22 --lora 4 --hidden 16" },
		{ "adia3", "--dtype f32 --seed 23 --lora 4 --peft-type IA3" },
		{ "addora", "--dtype f32 --seed 24 --lora 4 --lora-dora" },
		{ "adrank", "--dtype f32 --seed 25 --lora 4 --rank-pattern "
		    "q_proj=4" },
	};
	struct timespec t0, t1;
	char args[1024], *o = NULL;
	size_t i;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("lora");
	snprintf(args, sizeof args, "%s --dtype f32 --seed 1", shape);
	tl_gen_at(dir, "base", args);
	snprintf(args, sizeof args, "%s --dtype bf16 --seed 1", shape);
	tl_gen_at(dir, "base16", args);
	for (i = 0; i < NADAPTERS; i++) {
		snprintf(args, sizeof args, "%s %s", shape, adapters[i].args);
		tl_gen_at(dir, adapters[i].name, args);
	}
	snprintf(args, sizeof args, "%s %s --seed 31", shape, adapters[0].args);
	tl_gen_at(dir, "ad1b", args);
	for (i = 0; i < sizeof bad / sizeof *bad; i++) {
		/* Later options win: the shape is overridden where asked. */
		snprintf(args, sizeof args, "%s %s", shape, bad[i].args);
		tl_gen_at(dir, bad[i].name, args);
	}
	/* adrank's file has rank 4 everywhere; its config says q_proj has
	 * 3. */
	if (tl_runf(&o, "cd %s && sed -i 's/\"q_proj\": 4/\"q_proj\": 3/' "
	    "adrank/adapter_config.json && grep -q '\"q_proj\": 3' "
	    "adrank/adapter_config.json", dir) != 0) {
		tap_diag("%s", o ? o : "");
		exit(99);
	}
	free(o);
	/* adbomb: a 28-byte key that glibc would compile into gigabytes;
	 * adkeys: 300 keys. */
	if (tl_runf(&o, "cd %s && cp -r ad1 adbomb && cp -r ad1 adkeys && "
	    "sed -i 's/\"alpha_pattern\": {}/\"alpha_pattern\": "
	    "{\"(((.{0,50}){0,50}){0,50})\": 2}/' adbomb/adapter_config.json "
	    "&& python3 -c 'import json; p=\"adkeys/adapter_config.json\"; "
	    "c=json.load(open(p)); c[\"rank_pattern\"]={\"k%%d\" %% i: 4 for "
	    "i in range(300)}; json.dump(c, open(p, \"w\"))' && grep -q "
	    "'{0,50}' adbomb/adapter_config.json", dir) != 0) {
		tap_diag("%s", o ? o : "");
		exit(99);
	}
	free(o);
	make_zero();
	test_apply();
	test_merge_dtype();
	test_object_form();
	test_five_adapters();
	test_plan();
	test_refusals();
	test_work_space();
	test_daemon();
	clock_gettime(CLOCK_MONOTONIC, &t1);
	tap_diag("test-lora took %.1f s", (double)(t1.tv_sec - t0.tv_sec) +
	    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	tl_cleanup();
	return tap_done();
}
