/* SPDX-License-Identifier: MIT */
/*
 * test-merge.c: mergectl run end to end on generated models, checked
 * against float64 references computed here from the inputs.
 *
 * Models are big enough that the large tensors span several reduction
 * quanta and, with the small memory budgets used, several chunks, so chunk
 * boundaries are exercised.  Each method runs in bf16, f16 and f32; 16-bit
 * outputs must be within 1 ulp of the float64 value, f32 outputs within a
 * relative 1e-6 (absolute 1e-7 near zero): MERGEKIT.md Part A item 9.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "testlib.h"

#define SHAPE "--layers 4 --hidden 256 --intermediate 768 --heads 4 " \
	"--kv-heads 2 --vocab 1000"

#define HASH "0123456789abcdef0123456789abcdef01234567"

static const char *dir;

/*
 * TEST_MERGE_DTYPES (a comma list; all three when unset) narrows the
 * per-dtype numeric passes.  The ThreadSanitizer build sets it to bf16:
 * the dtypes share every threaded code path and differ only in the
 * single-threaded conversions, which the other builds check, and under
 * TSan's slowdown all three would not fit the test's time limit.
 */
static bool
dtype_wanted(const char *dt)
{
	const char *list = getenv("TEST_MERGE_DTYPES");
	size_t n = strlen(dt);
	const char *p;

	if (list == NULL || *list == '\0')
		return true;
	for (p = list; (p = strstr(p, dt)) != NULL; p += n)
		if ((p == list || p[-1] == ',') &&
		    (p[n] == '\0' || p[n] == ','))
			return true;
	return false;
}

struct model {
	struct tl_st *st;
	size_t n;
};

static void
load(const char *path, struct model *m)
{
	if (tl_model_load(path, &m->st, &m->n) != 0) {
		fprintf(stderr, "cannot load %s\n", path);
		exit(99);
	}
}

static const struct tl_tensor *
find(struct model *m, const char *name)
{
	return tl_model_find(m->st, m->n, name);
}

/*
 * Within tolerance of the float64 reference for the output's dtype.  The
 * reference itself is rounded in float64: where the result cancels to
 * almost nothing, its own error (about 1e-16 of the inputs' magnitude,
 * scale) can exceed an ulp of the tiny result, so that much is allowed.
 */
static bool
close_enough(const char *dtype, double got, double want, double scale)
{
	if (fabs(got - want) <= 1e-12 * scale)
		return true;
	if (strcmp(dtype, "F32") == 0)
		return fabs(got - want) <= 1e-6 * fabs(want) ||
		    fabs(got - want) <= 1e-7;
	return tl_ulps(dtype, got, want) <= 1.0;
}

/* Reference values of one output tensor, from the same-named inputs. */
typedef void (*ref_fn)(const char *, const struct tl_tensor *const *, size_t,
    double *, uint64_t);

/* Output layer of a tensor name, -1 outside the layers. */
static int
layer_of(const char *name)
{
	const char *p = strstr(name, "layers.");

	return p != NULL ? atoi(p + 7) : -1;
}

/*
 * Compares every element of every output tensor with the reference.
 * Returns the number of elements compared, or -1 after reporting the
 * first mismatch.
 */
static long
check_all(struct model *out, struct model *in, size_t nin, ref_fn ref,
    const char *what)
{
	const struct tl_tensor *t, *x[8];
	double *want;
	long count = 0;
	size_t i, k, j;

	for (i = 0; i < out->n; i++) {
		for (k = 0; k < out->st[i].n; k++) {
			t = &out->st[i].t[k];
			for (j = 0; j < nin; j++)
				if ((x[j] = find(&in[j], t->name)) == NULL ||
				    x[j]->numel != t->numel) {
					tap_diag("%s: %s missing or resized",
					    what, t->name);
					return -1;
				}
			want = calloc(t->numel + 1, sizeof *want);
			ref(t->name, x, nin, want, t->numel);
			for (uint64_t e = 0; e < t->numel; e++) {
				double got = tl_value(t, e), scale = 0;
				for (j = 0; j < nin; j++)
					if (fabs(tl_value(x[j], e)) > scale)
						scale = fabs(tl_value(x[j], e));
				if (close_enough(t->dtype, got, want[e], scale))
					continue;
				tap_diag("%s: %s[%llu]: got %.9g want %.9g "
				    "(%.2f ulp)", what, t->name,
				    (unsigned long long)e, got, want[e],
				    tl_ulps(t->dtype, got, want[e]));
				free(want);
				return -1;
			}
			count += (long)t->numel;
			free(want);
		}
	}
	return count;
}

static int
mergectl(char **out, const char *cfg, const char *dest, const char *extra)
{
	return tl_runf(out, "cd %s && %s run %s %s --quiet %s 2>&1", dir,
	    tl_mergectl, cfg, dest, extra);
}

static void
write_cfg(const char *name, const char *text)
{
	tl_write_at(dir, name, text);
}

static void
gen(const char *name, const char *args)
{
	char full[1024];

	snprintf(full, sizeof full, "--family llama %s %s", SHAPE, args);
	tl_gen_at(dir, name, full);
}

/* Opens <dir>/<name>, or <dir>/<name>-<dt> when dt is not NULL. */
static struct model
open_model(const char *name, const char *dt)
{
	char path[4096];
	struct model m;

	if (dt != NULL)
		snprintf(path, sizeof path, "%s/%s-%s", dir, name, dt);
	else
		snprintf(path, sizeof path, "%s/%s", dir, name);
	load(path, &m);
	return m;
}

static void
close_model(struct model *m)
{
	tl_model_free(m->st, m->n);
}

/* Runs cfg into out-<tag> and checks it against ref over the inputs. */
static void
run_and_check(const char *tag, const char *dt, const char *cfg,
    const char *const *inputs, size_t nin, ref_fn ref, const char *extra)
{
	struct model in[8], out;
	char name[64], dest[64], *o = NULL;
	size_t j;
	int rc;
	long n;

	snprintf(name, sizeof name, "%s-%s.yml", tag, dt);
	snprintf(dest, sizeof dest, "out-%s-%s", tag, dt);
	write_cfg(name, cfg);
	rc = mergectl(&o, name, dest, extra);
	ok_int_eq(rc, 0, "%s %s: mergectl run exits 0", tag, dt);
	if (rc != 0) {
		tap_diag("%s", o);
		free(o);
		return;
	}
	free(o);
	for (j = 0; j < nin; j++)
		in[j] = open_model(inputs[j], dt);
	out = open_model(dest, NULL);
	n = check_all(&out, in, nin, ref, tag);
	ok(n > 1000000, "%s %s: all %ld elements within tolerance of the "
	    "float64 reference", tag, dt, n);
	for (j = 0; j < nin; j++)
		close_model(&in[j]);
	close_model(&out);
}

static void
ref_linear(const char *name, const struct tl_tensor *const *x, size_t nin,
    double *want, uint64_t n)
{
	(void)name;
	(void)nin;
	for (uint64_t e = 0; e < n; e++)
		want[e] = (0.6 * tl_value(x[0], e) + 0.4 * tl_value(x[1], e)) /
		    (0.6 + 0.4);
}

/* t: self_attn tensors follow [0, 0.5, 1] over 4 layers, others 0.3. */
static double
slerp_t(const char *name)
{
	int l = layer_of(name);
	double pos, s, f;
	int i0;

	if (l < 0 || strstr(name, "self_attn") == NULL)
		return 0.3;
	pos = l / 3.0;
	s = pos * 2;
	i0 = (int)s;
	f = s - i0;
	return i0 >= 2 ? 1.0 : (1 - f) * (i0 * 0.5) + f * ((i0 + 1) * 0.5);
}

static void
ref_slerp(const char *name, const struct tl_tensor *const *x, size_t nin,
    double *want, uint64_t n)
{
	double aa = 0, bb = 0, ab = 0, na, nb, d, th, t = slerp_t(name);
	double ca, cb;

	(void)nin;
	for (uint64_t e = 0; e < n; e++) {
		double a = tl_value(x[0], e), b = tl_value(x[1], e);
		aa += a * a;
		bb += b * b;
		ab += a * b;
	}
	na = sqrt(aa);
	nb = sqrt(bb);
	d = ab / ((na > 1e-8 ? na : 1) * (nb > 1e-8 ? nb : 1));
	if (fabs(d) > 0.9995) {
		ca = 1 - t;
		cb = t;
	} else {
		th = acos(d);
		ca = sin((1 - t) * th) / sin(th);
		cb = sin(t * th) / sin(th);
	}
	for (uint64_t e = 0; e < n; e++)
		want[e] = ca * tl_value(x[0], e) + cb * tl_value(x[1], e);
}

static void
ref_task(const char *name, const struct tl_tensor *const *x, size_t nin,
    double *want, uint64_t n)
{
	(void)name;
	(void)nin;
	for (uint64_t e = 0; e < n; e++) {
		double b = tl_value(x[0], e);
		double d = 0.7 * (tl_value(x[1], e) - b) +
		    0.5 * (tl_value(x[2], e) - b);
		want[e] = b + 0.9 * d / (0.7 + 0.5);
	}
}

/* nearswap, t = 0.01: w = clamp(t / max(|a - b|, 1e-6), 0, 1). */
static void
ref_nearswap(const char *name, const struct tl_tensor *const *x, size_t nin,
    double *want, uint64_t n)
{
	(void)name;
	(void)nin;
	for (uint64_t e = 0; e < n; e++) {
		double a = tl_value(x[0], e), b = tl_value(x[1], e);
		double d = fabs(a - b), w = 0.01 / (d > 1e-6 ? d : 1e-6);
		w = w > 1 ? 1 : w < 0 ? 0 : w;
		want[e] = w * b + (1 - w) * a;
	}
}

/*
 * ram over base x[0] and x[1..]: a model is active where |tau| > eps;
 * unique changes kept (times lambda_i), shared ones averaged.
 */
static void
ram_ref(const struct tl_tensor *const *x, size_t nin, double *want,
    uint64_t n, const double *lambda, double eps)
{
	for (uint64_t e = 0; e < n; e++) {
		double b = tl_value(x[0], e), us = 0, ss = 0;
		int cnt = 0;
		for (size_t j = 1; j < nin; j++) {
			double tau = tl_value(x[j], e) - b;
			if (!(fabs(tau) > eps))
				continue;
			cnt++;
			ss += tau;
			us += lambda ? lambda[j] * tau : tau;
		}
		want[e] = b + (cnt == 1 ? us : cnt > 1 ? ss / cnt : 0);
	}
}

static void
ref_ram(const char *name, const struct tl_tensor *const *x, size_t nin,
    double *want, uint64_t n)
{
	(void)name;
	ram_ref(x, nin, want, n, NULL, 0.01);
}

/* ramplus_tl, r = 0.5, alpha = 1, epsilon = 0.01. */
static void
ref_ramplus(const char *name, const struct tl_tensor *const *x, size_t nin,
    double *want, uint64_t n)
{
	double shared[8] = { 0 }, unique[8] = { 0 }, lambda[8], rho;
	size_t j;

	(void)name;
	for (uint64_t e = 0; e < n; e++) {
		int cnt = 0;
		bool act[8] = { false };
		for (j = 1; j < nin; j++) {
			act[j] = fabs(tl_value(x[j], e) - tl_value(x[0], e)) >
			    0.01;
			cnt += act[j];
		}
		for (j = 1; j < nin; j++) {
			if (act[j] && cnt == 1)
				unique[j]++;
			else if (act[j])
				shared[j]++;
		}
	}
	for (j = 1; j < nin; j++) {
		rho = shared[j] / (unique[j] > 0.01 ? unique[j] : 0.01);
		lambda[j] = 1 + 0.5 * (rho < 0 ? 0 : rho > 1 ? 1 : rho);
	}
	ram_ref(x, nin, want, n, lambda, 0.01);
}

/* Dot product of x[i] - base and x[j] - base (base NULL: none). */
static double
dot_minus(const struct tl_tensor *x, const struct tl_tensor *y,
    const struct tl_tensor *base, uint64_t n)
{
	double s = 0, b;

	for (uint64_t e = 0; e < n; e++) {
		b = base != NULL ? tl_value(base, e) : 0;
		s += (tl_value(x, e) - b) * (tl_value(y, e) - b);
	}
	return s;
}

/*
 * multislerp over base x[0], task vectors of x[1] (weight 0.7) and x[2]
 * (0.5), normalized weights, eps 1e-8: computed element by element.
 */
static void
ref_multislerp(const char *name, const struct tl_tensor *const *x,
    size_t nin, double *want, uint64_t n)
{
	double w[2] = { 0.7 / 1.2, 0.5 / 1.2 }, nr[2], mm = 0, tt = 0;
	double um[2] = { 0 }, nu, scale, eps = 1e-8;
	double *m = calloc(n, sizeof *m), *tv = calloc(n, sizeof *tv);
	uint64_t e;
	size_t i;

	(void)name;
	(void)nin;
	for (i = 0; i < 2; i++)
		nr[i] = sqrt(dot_minus(x[i + 1], x[i + 1], x[0], n));
	scale = w[0] * nr[0] + w[1] * nr[1];
	for (e = 0; e < n; e++) {
		for (i = 0; i < 2; i++)
			m[e] += w[i] * (tl_value(x[i + 1], e) -
			    tl_value(x[0], e)) / (nr[i] + eps);
		mm += m[e] * m[e];
	}
	mm = sqrt(mm);
	for (e = 0; e < n; e++) {
		m[e] /= mm;
		for (i = 0; i < 2; i++)
			um[i] += (tl_value(x[i + 1], e) - tl_value(x[0], e)) /
			    (nr[i] + eps) * m[e];
	}
	for (e = 0; e < n; e++) {
		for (i = 0; i < 2; i++)
			tv[e] += w[i] * ((tl_value(x[i + 1], e) -
			    tl_value(x[0], e)) / (nr[i] + eps) - um[i] * m[e]);
		tt += tv[e] * tv[e];
	}
	nu = sqrt(tt) + eps;
	for (e = 0; e < n; e++)
		want[e] = tl_value(x[0], e) + scale * (m[e] * cos(nu) +
		    tv[e] * sin(nu) / nu);
	free(m);
	free(tv);
}

/* karcher over three inputs, max_iter 10, tol 1e-5, element by element. */
static void
ref_karcher(const char *name, const struct tl_tensor *const *x, size_t nin,
    double *want, uint64_t n)
{
	double nr[3], scale = 0, un, tn, d[3], th, tol = 1e-5;
	double *u = calloc(n, sizeof *u), *tv = calloc(n, sizeof *tv);
	uint64_t e;
	size_t i;
	int it;

	(void)name;
	for (i = 0; i < nin; i++) {
		nr[i] = sqrt(dot_minus(x[i], x[i], NULL, n));
		scale += nr[i] / 3;
	}
	un = 0;
	for (e = 0; e < n; e++) {
		for (i = 0; i < nin; i++)
			u[e] += tl_value(x[i], e) / nr[i] / 3;
		un += u[e] * u[e];
	}
	for (e = 0; e < n; e++)
		u[e] /= sqrt(un);
	for (it = 0; it < 10; it++) {
		memset(d, 0, sizeof d);
		for (e = 0; e < n; e++)
			for (i = 0; i < nin; i++)
				d[i] += u[e] * tl_value(x[i], e) / nr[i];
		memset(tv, 0, n * sizeof *tv);
		tn = 0;
		for (e = 0; e < n; e++) {
			for (i = 0; i < nin; i++) {
				double c = d[i] < -1 ? -1 : d[i] > 1 ? 1 :
				    d[i];
				if ((th = acos(c)) < tol)
					continue;
				tv[e] += th / sin(th) / 3 *
				    (tl_value(x[i], e) / nr[i] - c * u[e]);
			}
			tn += tv[e] * tv[e];
		}
		if ((tn = sqrt(tn)) < tol)
			break;
		un = 0;
		for (e = 0; e < n; e++) {
			u[e] = cos(tn) * u[e] + sin(tn) * tv[e] / tn;
			un += u[e] * u[e];
		}
		if ((un = sqrt(un)) > tol)
			for (e = 0; e < n; e++)
				u[e] /= un;
	}
	for (e = 0; e < n; e++)
		want[e] = scale * u[e];
	free(u);
	free(tv);
}

/*
 * Vectors of a tensor for the per-vector methods: the whole tensor (0),
 * rows along the last axis (1), or columns along the first axis (2).
 */
static int vec_mode;

static uint64_t
vec_count(const struct tl_tensor *t, uint64_t *len)
{
	uint64_t last = t->ndim > 0 ? (uint64_t)t->shape[t->ndim - 1] : 1;
	uint64_t first = t->ndim > 0 ? (uint64_t)t->shape[0] : 1;

	*len = vec_mode == 0 ? t->numel : vec_mode == 1 ? last : first;
	return t->numel / *len;
}

static uint64_t
vec_elem(const struct tl_tensor *t, uint64_t v, uint64_t k, uint64_t len)
{
	if (vec_mode == 2)
		return k * (t->numel / len) + v;
	return v * len + k;
}

/* model_stock over base x[0] and x[1], x[2], per vec_mode vector. */
static void
ref_model_stock(const char *name, const struct tl_tensor *const *x,
    size_t nin, double *want, uint64_t n)
{
	uint64_t len, nv = vec_count(x[0], &len), v, k, e;
	double g11, g12, g22, c, np, t;

	(void)name;
	(void)nin;
	(void)n;
	for (v = 0; v < nv; v++) {
		g11 = g12 = g22 = 0;
		for (k = 0; k < len; k++) {
			e = vec_elem(x[0], v, k, len);
			double o1 = tl_value(x[1], e) - tl_value(x[0], e);
			double o2 = tl_value(x[2], e) - tl_value(x[0], e);
			g11 += o1 * o1;
			g12 += o1 * o2;
			g22 += o2 * o2;
		}
		np = sqrt(g11) * sqrt(g22);
		c = g12 / (np > 1e-6 ? np : 1e-6);
		c = c < -1 ? -1 : c > 1 ? 1 : c;
		t = 2 * c / (1 + c);
		for (k = 0; k < len; k++) {
			e = vec_elem(x[0], v, k, len);
			want[e] = t * (tl_value(x[1], e) + tl_value(x[2], e)) /
			    2 + (1 - t) * tl_value(x[0], e);
		}
	}
}

/*
 * nuslerp of x[1] (weight 0.4) and x[2] (0.6) around base x[0] (or of
 * x[0] (0.4) and x[1] (0.6) without one, nin 2), per vec_mode vector.
 */
static void
ref_nuslerp(const char *name, const struct tl_tensor *const *x, size_t nin,
    double *want, uint64_t n)
{
	const struct tl_tensor *b = nin == 3 ? x[0] : NULL;
	const struct tl_tensor *v0 = x[nin - 2], *v1 = x[nin - 1];
	uint64_t len, nv = vec_count(x[0], &len), v, k, e;
	double aa, ab, bb, n0, n1, d, th, s, c0, c1, t = 0.6, p, q, o;

	(void)name;
	(void)n;
	for (v = 0; v < nv; v++) {
		aa = ab = bb = 0;
		for (k = 0; k < len; k++) {
			e = vec_elem(x[0], v, k, len);
			o = b != NULL ? tl_value(b, e) : 0;
			p = tl_value(v0, e) - o;
			q = tl_value(v1, e) - o;
			aa += p * p;
			ab += p * q;
			bb += q * q;
		}
		n0 = sqrt(aa) > 1e-7 ? sqrt(aa) : 1e-7;
		n1 = sqrt(bb) > 1e-7 ? sqrt(bb) : 1e-7;
		d = ab / (n0 * n1);
		th = acos(d < -1 ? -1 : d > 1 ? 1 : d);
		s = sin(th);
		c0 = fabs(s) < 1e-8 ? 1 - t : sin((1 - t) * th) / s;
		c1 = fabs(s) < 1e-8 ? t : sin(t * th) / s;
		for (k = 0; k < len; k++) {
			e = vec_elem(x[0], v, k, len);
			o = b != NULL ? tl_value(b, e) : 0;
			want[e] = o + c0 * (tl_value(v0, e) - o) +
			    c1 * (tl_value(v1, e) - o);
		}
	}
}

/*
 * The task-vector family, element by element: deltas rounded to float32,
 * sparsified by sorting (qsort, independent of the engine's histogram
 * selection), rescaled, weighted, filtered by sign consensus, normalized.
 * Random draws follow the documented stream (docs/methods.md): a key
 * s = mix(mix(mix(seed) ^ fnv1a64(tensor)) ^ model index), and for element
 * e the word h(h(lo32(e) ^ lo32(s)) ^ hi32(s) ^ hi32(e) * 0x9e3779b9),
 * h = lowbias32; kept when the word is below p 2^32.
 */
enum { SP_NONE, SP_MAGNITUDE, SP_OUTLIERS, SP_RANDOM, SP_DELLA };

static struct {
	int sparse;
	bool cons, norm, rescale;
	double lambda, w[2], dens[2], gamma[2], eps[2];
	uint64_t seed;
} gta;

static uint64_t
mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t
lowbias32(uint32_t x)
{
	x = (x ^ (x >> 16)) * 0x7feb352du;
	x = (x ^ (x >> 15)) * 0x846ca68bu;
	return x ^ (x >> 16);
}

/* The element's word as a fraction of 2^32. */
static double
draw(const char *tensor, uint64_t model, uint64_t e)
{
	uint64_t h = 0xcbf29ce484222325ull, s;
	uint32_t x;

	for (const char *p = tensor; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
	s = mix64(mix64(mix64(gta.seed) ^ h) ^ model);
	x = lowbias32((uint32_t)e ^ (uint32_t)s);
	x = lowbias32(x ^ (uint32_t)(s >> 32) ^ (uint32_t)(e >> 32) *
	    0x9e3779b9u);
	return (double)x / 4294967296.0;
}

static const float *sort_key;

static int
by_key(const void *a, const void *b)
{
	uint64_t i = *(const uint64_t *)a, j = *(const uint64_t *)b;
	float x = fabsf(sort_key[i]), y = fabsf(sort_key[j]);

	if (x != y)
		return x < y ? -1 : 1;
	return i < j ? -1 : i > j;
}

/* keep[] for one delta d of n elements of tensor t, model index mi. */
static void
gta_keep_ref(const struct tl_tensor *t, const float *d, uint64_t n, size_t i,
    uint64_t mi, bool *keep)
{
	uint64_t *ord = malloc(n * sizeof *ord), lo, hi, keepn, top, e, c;
	uint64_t cols = t->ndim >= 2 ? (uint64_t)t->shape[1] : n;
	double dn = gta.dens[i];

	if (gta.sparse == SP_NONE || dn >= 1) {
		for (e = 0; e < n; e++)
			keep[e] = true;
		free(ord);
		return;
	}
	sort_key = d;
	switch (gta.sparse) {
	case SP_MAGNITUDE:
	case SP_OUTLIERS:
		for (e = 0; e < n; e++)
			ord[e] = e;
		qsort(ord, n, sizeof *ord, by_key);
		keepn = (uint64_t)(dn * (double)n);
		top = gta.sparse == SP_OUTLIERS ?
		    (uint64_t)(gta.gamma[i] * (double)n) : 0;
		if (keepn + top > n)
			top = n - keepn;
		lo = n - keepn - top;
		hi = n - top;
		for (e = 0; e < n; e++)
			keep[ord[e]] = e >= lo && e < hi;
		break;
	case SP_RANDOM:
		for (e = 0; e < n; e++)
			keep[e] = draw(t->name, mi, e) < dn;
		break;
	case SP_DELLA:
		for (uint64_t r0 = 0; r0 < n; r0 += cols) {
			for (c = 0; c < cols; c++)
				ord[c] = r0 + c;
			qsort(ord, cols, sizeof *ord, by_key);
			for (c = 0; c < cols; c++) {
				double p = cols == 1 ? dn : dn - gta.eps[i] +
				    2 * gta.eps[i] * (double)c /
				    (double)(cols - 1);
				keep[ord[c]] = draw(t->name, mi, ord[c]) < p;
			}
		}
		break;
	}
	free(ord);
}

static void
ref_gta(const char *name, const struct tl_tensor *const *x, size_t nin,
    double *want, uint64_t n)
{
	float *d[2];
	bool *keep[2];
	double sc[2], before, after, sum, mixed, div, wd;
	uint64_t e;
	size_t i;

	(void)name;
	for (i = 0; i + 1 < nin; i++) {
		d[i] = malloc(n * sizeof *d[i]);
		keep[i] = malloc(n * sizeof *keep[i]);
		for (e = 0; e < n; e++)
			d[i][e] = (float)tl_value(x[i + 1], e) -
			    (float)tl_value(x[0], e);
		gta_keep_ref(x[0], d[i], n, i, i + 1, keep[i]);
		before = after = 0;
		for (e = 0; e < n; e++) {
			before += fabsf(d[i][e]);
			after += keep[i][e] ? fabsf(d[i][e]) : 0;
		}
		sc[i] = gta.rescale && before >= 1e-7 && after >= 1e-7 ?
		    before / after : 1;
	}
	for (e = 0; e < n; e++) {
		sum = 0;
		for (i = 0; i + 1 < nin; i++)
			sum += keep[i][e] ? gta.w[i] * sc[i] * d[i][e] : 0;
		mixed = sum;
		div = gta.w[0] + gta.w[1];
		if (gta.cons) {
			mixed = div = 0;
			for (i = 0; i + 1 < nin; i++) {
				wd = keep[i][e] ? gta.w[i] * sc[i] * d[i][e] : 0;
				if (sum >= 0 ? wd > 0 : wd < 0) {
					mixed += wd;
					div += gta.w[i];
				}
			}
			if (div == 0)
				div = 1;
		}
		want[e] = tl_value(x[0], e) + (gta.norm ? mixed / div : mixed) *
		    gta.lambda;
	}
	for (i = 0; i + 1 < nin; i++) {
		free(d[i]);
		free(keep[i]);
	}
}

/* One family member on a, b, c in dtype dt; extra is the parameters. */
static void
run_gta(const char *method, const char *dt, const char *pb, const char *pc,
    const char *globals)
{
	const char *abc[] = { "a", "b", "c" };
	char cfg[1024];

	snprintf(cfg, sizeof cfg, "merge_method: %s\nbase_model: ./a-%s\n"
	    "models:\n  - model: ./b-%s\n    parameters: %s\n"
	    "  - model: ./c-%s\n    parameters: %s\nparameters: %s\n",
	    method, dt, dt, pb, dt, pc, globals);
	run_and_check(method, dt, cfg, abc, 3, ref_gta,
	    "--memory 4M --threads 2 --random-seed 42");
}

static void
test_gta(const char *dt)
{
	gta.seed = 42;
	gta.lambda = 1;
	gta.w[0] = 0.7;
	gta.w[1] = 0.5;
	gta.sparse = SP_MAGNITUDE;
	gta.cons = gta.norm = true;
	gta.rescale = false;
	gta.dens[0] = 0.4;
	gta.dens[1] = 0.6;
	run_gta("ties", dt, "{weight: 0.7, density: 0.4}",
	    "{weight: 0.5, density: 0.6}", "{}");
	gta.sparse = SP_RANDOM;
	gta.norm = false;
	gta.rescale = true;
	gta.dens[0] = 0.5;
	gta.dens[1] = 0.7;
	run_gta("dare_ties", dt, "{weight: 0.7, density: 0.5}",
	    "{weight: 0.5, density: 0.7}", "{}");
	gta.cons = false;
	gta.lambda = 0.9;
	run_gta("dare_linear", dt, "{weight: 0.7, density: 0.5}",
	    "{weight: 0.5, density: 0.7}", "{lambda: 0.9}");
	/* gamma 0.003: the 256-element norms have top = 0 (QUIRK fixed). */
	gta.sparse = SP_OUTLIERS;
	gta.lambda = 1;
	gta.rescale = true;
	gta.dens[0] = 0.8;
	gta.dens[1] = 0.7;
	gta.gamma[0] = 0.05;
	gta.gamma[1] = 0.003;
	run_gta("breadcrumbs", dt, "{weight: 0.7, density: 0.8, gamma: 0.05}",
	    "{weight: 0.5, density: 0.7, gamma: 0.003}", "{rescale: true}");
	gta.cons = true;
	gta.rescale = false;
	run_gta("breadcrumbs_ties", dt, "{weight: 0.7, density: 0.8, "
	    "gamma: 0.05}", "{weight: 0.5, density: 0.7, gamma: 0.003}", "{}");
	gta.sparse = SP_DELLA;
	gta.norm = gta.rescale = true;
	gta.dens[0] = 0.5;
	gta.dens[1] = 0.6;
	gta.eps[0] = 0.2;
	gta.eps[1] = 0.1;
	run_gta("della", dt, "{weight: 0.7, density: 0.5, epsilon: 0.2}",
	    "{weight: 0.5, density: 0.6, epsilon: 0.1}", "{}");
	gta.cons = gta.norm = false;
	run_gta("della_linear", dt, "{weight: 0.7, density: 0.5, "
	    "epsilon: 0.2}", "{weight: 0.5, density: 0.6, epsilon: 0.1}",
	    "{}");
}

static double sce_topk;
static float *sce_var;

static int
by_var(const void *a, const void *b)
{
	uint64_t i = *(const uint64_t *)a, j = *(const uint64_t *)b;

	if (sce_var[i] != sce_var[j])
		return sce_var[i] < sce_var[j] ? -1 : 1;
	return i < j ? -1 : i > j;
}

/* sce over base x[0] and x[1], x[2], select_topk sce_topk. */
static void
ref_sce(const char *name, const struct tl_tensor *const *x, size_t nin,
    double *want, uint64_t n)
{
	float *tau[2];
	bool *keep = malloc(n * sizeof *keep);
	uint64_t *ord = malloc(n * sizeof *ord), e, nz = 0, k;
	double s[2] = { 0, 0 }, sum, num, den, mean, v;
	size_t i;

	(void)name;
	(void)nin;
	sce_var = malloc(n * sizeof *sce_var);
	for (i = 0; i < 2; i++) {
		tau[i] = malloc(n * sizeof *tau[i]);
		for (e = 0; e < n; e++)
			tau[i][e] = (float)tl_value(x[i + 1], e) -
			    (float)tl_value(x[0], e);
	}
	for (e = 0; e < n; e++) {
		mean = ((double)tau[0][e] + tau[1][e]) / 2;
		v = ((tau[0][e] - mean) * (tau[0][e] - mean) +
		    (tau[1][e] - mean) * (tau[1][e] - mean)) / 2;
		sce_var[e] = (float)v;
		nz += sce_var[e] != 0;
		ord[e] = e;
		keep[e] = sce_topk >= 1;
	}
	if (sce_topk < 1) {
		qsort(ord, n, sizeof *ord, by_var);
		k = (uint64_t)((double)nz * sce_topk);
		for (e = n - k; e < n; e++)
			keep[ord[e]] = true;
	}
	for (i = 0; i < 2; i++) {
		for (e = 0; e < n; e++)
			s[i] += keep[e] ? (double)tau[i][e] * tau[i][e] : 0;
		s[i] /= (double)n;
	}
	sum = s[0] + s[1];
	for (i = 0; i < 2; i++)
		s[i] = fabs(sum) < 1e-6 ? 0.5 : s[i] / sum;
	for (e = 0; e < n; e++) {
		double t0 = keep[e] ? tau[0][e] : 0, t1 = keep[e] ? tau[1][e] : 0;
		sum = t0 + t1;
		num = den = 0;
		if (sum >= 0 ? t0 > 0 : t0 < 0) {
			num += t0 * s[0];
			den += s[0];
		}
		if (sum >= 0 ? t1 > 0 : t1 < 0) {
			num += t1 * s[1];
			den += s[1];
		}
		want[e] = tl_value(x[0], e) + num / (den > 1e-6 ? den : 1e-6);
	}
	for (i = 0; i < 2; i++)
		free(tau[i]);
	free(sce_var);
	free(keep);
	free(ord);
}

static int
by_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return x < y ? -1 : x > y;
}

/*
 * arcee_fusion of base x[0] and x[1]: per-row KL of the softmaxes, the
 * importance threshold from quantiles of the whole tensor, or beyond a
 * million elements of one element drawn from each of a million strata.
 */
static void
ref_arcee(const char *name, const struct tl_tensor *const *x, size_t nin,
    double *want, uint64_t n)
{
	uint64_t cols = (uint64_t)x[0]->shape[x[0]->ndim - 1], e, r, i;
	uint64_t m = n > 1000000 ? 1000000 : n, lo, hi;
	float *imp = malloc(n * sizeof *imp), *smp = malloc(m * sizeof *smp);
	double ma, mb, sa, sb, kl, p, q, thr, a, b;
	static const float qs[3] = { 0.25f, 0.5f, 0.75f };
	float qv[3];

	(void)nin;
	for (r = 0; r < n / cols; r++) {
		ma = mb = -INFINITY;
		for (e = r * cols; e < (r + 1) * cols; e++) {
			ma = fmax(ma, tl_value(x[0], e));
			mb = fmax(mb, tl_value(x[1], e));
		}
		sa = sb = kl = 0;
		for (e = r * cols; e < (r + 1) * cols; e++) {
			sa += exp(tl_value(x[0], e) - ma);
			sb += exp(tl_value(x[1], e) - mb);
		}
		for (e = r * cols; e < (r + 1) * cols; e++) {
			p = exp(tl_value(x[1], e) - mb) / sb + 1e-8;
			q = exp(tl_value(x[0], e) - ma) / sa + 1e-8;
			kl += p * log(p / q);
		}
		for (e = r * cols; e < (r + 1) * cols; e++)
			imp[e] = (float)(fabs(tl_value(x[1], e) -
			    tl_value(x[0], e)) * kl);
	}
	for (i = 0; i < m; i++) {
		if (m == n) {
			smp[i] = imp[i];
			continue;
		}
		lo = i * n / m;
		hi = (i + 1) * n / m;
		smp[i] = imp[lo + (uint64_t)(draw(name, 1, i) *
		    (double)(hi - lo))];
	}
	qsort(smp, m, sizeof *smp, by_float);
	for (i = 0; i < 3; i++)
		qv[i] = smp[(uint64_t)(qs[i] * (float)(m - 1))];
	thr = (double)qv[1] + 1.5 * ((double)qv[2] - (double)qv[0]);
	for (e = 0; e < n; e++) {
		a = tl_value(x[0], e);
		b = tl_value(x[1], e);
		want[e] = imp[e] >= thr ? b : a;
	}
	free(imp);
	free(smp);
}

/*
 * The random sparsifiers, statistically: over all tensors, the fraction of
 * task-vector elements kept is within 3 standard deviations of density,
 * and with rescale the kept deltas have the L1 norm of the whole ones.
 */
static void
random_stats(const char *method, const char *extra, bool rescale)
{
	char cfg[512], dest[64], *o = NULL;
	struct model a, b, out;
	const struct tl_tensor *ta, *tb, *to;
	double kept = 0, seen = 0, l1in, l1out, worst = 0, d, p = 0.3, sd;
	size_t i, k;
	int rc;

	snprintf(cfg, sizeof cfg, "merge_method: %s\nbase_model: ./a-f32\n"
	    "models:\n  - model: ./b-f32\n    parameters: {weight: 1, "
	    "density: 0.3%s}\nparameters: {rescale: %s}\n", method, extra,
	    rescale ? "true" : "false");
	snprintf(dest, sizeof dest, "out-stats-%s-%d", method, rescale);
	write_cfg("stats.yml", cfg);
	rc = mergectl(&o, "stats.yml", dest, "--random-seed 9");
	ok_int_eq(rc, 0, "%s statistics: mergectl run exits 0", method);
	free(o);
	if (rc != 0)
		return;
	a = open_model("a", "f32");
	b = open_model("b", "f32");
	out = open_model(dest, NULL);
	for (i = 0; i < out.n; i++) {
		for (k = 0; k < out.st[i].n; k++) {
			to = &out.st[i].t[k];
			ta = find(&a, to->name);
			tb = find(&b, to->name);
			l1in = l1out = 0;
			for (uint64_t e = 0; e < to->numel; e++) {
				double x = tl_value(ta, e), y = tl_value(tb, e);
				double z = tl_value(to, e);
				if (x == y)
					continue;
				seen++;
				kept += z != x;
				l1in += fabs((double)((float)y - (float)x));
				l1out += fabs(z - x);
			}
			d = fabs(l1out - l1in) / l1in;
			if (rescale && d > worst)
				worst = d;
		}
	}
	sd = sqrt(seen * p * (1 - p));
	ok(fabs(kept - p * seen) <= 3 * sd, "%s: kept %.0f of %.0f elements, "
	    "within 3 sd (%.0f) of density 0.3", method, kept, seen, sd);
	if (rescale)
		ok(worst < 1e-4, "%s: rescale restores each tensor's L1 norm "
		    "(worst relative difference %.2g)", method, worst);
	close_model(&a);
	close_model(&b);
	close_model(&out);
}

static void
test_random_stats(void)
{
	random_stats("dare_linear", "", false);
	random_stats("dare_linear", "", true);
	random_stats("della_linear", ", epsilon: 0.1", true);
}

static void
test_methods(const char *dt)
{
	const char *ab[] = { "a", "b" };
	const char *abc[] = { "a", "b", "c" };
	char cfg[1024];

	snprintf(cfg, sizeof cfg, "merge_method: linear\nmodels:\n"
	    "  - model: ./a-%s\n    parameters: {weight: 0.6}\n"
	    "  - model: ./b-%s\n    parameters: {weight: 0.4}\n", dt, dt);
	run_and_check("linear", dt, cfg, ab, 2, ref_linear,
	    "--memory 3M --threads 2");
	snprintf(cfg, sizeof cfg, "merge_method: slerp\nbase_model: ./a-%s\n"
	    "models:\n  - model: ./a-%s\n  - model: ./b-%s\nparameters:\n"
	    "  t:\n    - filter: self_attn\n      value: [0, 0.5, 1]\n"
	    "    - value: 0.3\n", dt, dt, dt);
	run_and_check("slerp", dt, cfg, ab, 2, ref_slerp,
	    "--memory 3M --threads 2");
	snprintf(cfg, sizeof cfg, "merge_method: task_arithmetic\n"
	    "base_model: ./a-%s\nmodels:\n"
	    "  - model: ./b-%s\n    parameters: {weight: 0.7}\n"
	    "  - model: ./c-%s\n    parameters: {weight: 0.5}\n"
	    "parameters: {normalize: true, lambda: 0.9}\n", dt, dt, dt);
	run_and_check("task", dt, cfg, abc, 3, ref_task,
	    "--memory 4M --threads 2");
	snprintf(cfg, sizeof cfg, "merge_method: nearswap\nbase_model: ./a-%s\n"
	    "models:\n  - model: ./a-%s\n  - model: ./b-%s\n"
	    "parameters: {t: 0.01}\n", dt, dt, dt);
	run_and_check("nearswap", dt, cfg, ab, 2, ref_nearswap,
	    "--memory 3M --threads 2");
	snprintf(cfg, sizeof cfg, "merge_method: ram\nbase_model: ./a-%s\n"
	    "models:\n  - model: ./b-%s\n  - model: ./c-%s\n"
	    "parameters: {epsilon: 0.01}\n", dt, dt, dt);
	run_and_check("ram", dt, cfg, abc, 3, ref_ram,
	    "--memory 4M --threads 2");
	snprintf(cfg, sizeof cfg, "merge_method: ramplus_tl\n"
	    "base_model: ./a-%s\nmodels:\n  - model: ./b-%s\n"
	    "  - model: ./c-%s\nparameters: {epsilon: 0.01, r: 0.5, "
	    "alpha: 1}\n", dt, dt, dt);
	run_and_check("ramplus", dt, cfg, abc, 3, ref_ramplus,
	    "--memory 4M --threads 2");
	snprintf(cfg, sizeof cfg, "merge_method: multislerp\n"
	    "base_model: ./a-%s\nmodels:\n"
	    "  - model: ./b-%s\n    parameters: {weight: 0.7}\n"
	    "  - model: ./c-%s\n    parameters: {weight: 0.5}\n", dt, dt, dt);
	run_and_check("multislerp", dt, cfg, abc, 3, ref_multislerp,
	    "--memory 4M --threads 2");
	snprintf(cfg, sizeof cfg, "merge_method: karcher\nmodels:\n"
	    "  - model: ./a-%s\n  - model: ./b-%s\n  - model: ./c-%s\n",
	    dt, dt, dt);
	run_and_check("karcher", dt, cfg, abc, 3, ref_karcher,
	    "--memory 4M --threads 2");
	sce_topk = 0.4;
	snprintf(cfg, sizeof cfg, "merge_method: sce\nbase_model: ./a-%s\n"
	    "models:\n  - model: ./b-%s\n  - model: ./c-%s\n"
	    "parameters: {select_topk: 0.4}\n", dt, dt, dt);
	run_and_check("sce", dt, cfg, abc, 3, ref_sce,
	    "--memory 4M --threads 2");
	snprintf(cfg, sizeof cfg, "merge_method: arcee_fusion\n"
	    "base_model: ./a-%s\nmodels:\n  - model: ./a-%s\n"
	    "  - model: ./b-%s\n", dt, dt, dt);
	run_and_check("arcee_fusion", dt, cfg, ab, 2, ref_arcee,
	    "--memory 4M --threads 2");
	vec_mode = 0;
	snprintf(cfg, sizeof cfg, "merge_method: model_stock\n"
	    "base_model: ./a-%s\nmodels:\n"
	    "  - model: ./b-%s\n  - model: ./c-%s\n", dt, dt, dt);
	run_and_check("model_stock", dt, cfg, abc, 3, ref_model_stock,
	    "--memory 4M --threads 2");
	snprintf(cfg, sizeof cfg, "merge_method: nuslerp\n"
	    "base_model: ./a-%s\nmodels:\n"
	    "  - model: ./b-%s\n    parameters: {weight: 0.4}\n"
	    "  - model: ./c-%s\n    parameters: {weight: 0.6}\n", dt, dt, dt);
	run_and_check("nuslerp", dt, cfg, abc, 3, ref_nuslerp,
	    "--memory 4M --threads 2");
}

/* The per-vector variants, in one dtype: rows and columns. */
static void
test_vector_modes(void)
{
	const char *ab[] = { "a", "b" };
	const char *abc[] = { "a", "b", "c" };

	vec_mode = 1;
	run_and_check("model_stock_fw", "bf16", "merge_method: model_stock\n"
	    "base_model: ./a-bf16\nmodels:\n  - model: ./b-bf16\n"
	    "  - model: ./c-bf16\nparameters: {filter_wise: true}\n", abc, 3,
	    ref_model_stock, "--memory 4M --threads 2");
	run_and_check("nuslerp_rows", "bf16", "merge_method: nuslerp\n"
	    "models:\n  - model: ./a-bf16\n    parameters: {weight: 0.4}\n"
	    "  - model: ./b-bf16\n    parameters: {weight: 0.6}\n"
	    "parameters: {nuslerp_flatten: false}\n", ab, 2, ref_nuslerp,
	    "--memory 4M --threads 2");
	/* Embeddings of 1.1M elements: the quantiles come from a sample. */
	tl_gen_at(dir, "big-a-bf16", "--family llama --layers 1 --hidden 256 "
	    "--intermediate 256 --heads 4 --kv-heads 2 --vocab 4300 "
	    "--dtype bf16 --seed 7");
	tl_gen_at(dir, "big-b-bf16", "--family llama --layers 1 --hidden 256 "
	    "--intermediate 256 --heads 4 --kv-heads 2 --vocab 4300 "
	    "--dtype bf16 --seed 8 --finetune-of 7 --delta 0.05");
	{
		const char *big[] = { "big-a", "big-b" };
		gta.seed = 42;
		run_and_check("arcee_sample", "bf16", "merge_method: "
		    "arcee_fusion\nbase_model: ./big-a-bf16\nmodels:\n"
		    "  - model: ./big-a-bf16\n  - model: ./big-b-bf16\n", big,
		    2, ref_arcee, "--memory 16M --threads 2 --random-seed 42");
	}
	sce_topk = 1;
	run_and_check("sce_all", "bf16", "merge_method: sce\n"
	    "base_model: ./a-bf16\nmodels:\n  - model: ./b-bf16\n"
	    "  - model: ./c-bf16\n", abc, 3, ref_sce,
	    "--memory 4M --threads 2");
	vec_mode = 2;
	run_and_check("nuslerp_cols", "bf16", "merge_method: nuslerp\n"
	    "base_model: ./a-bf16\nmodels:\n"
	    "  - model: ./b-bf16\n    parameters: {weight: 0.4}\n"
	    "  - model: ./c-bf16\n    parameters: {weight: 0.6}\n"
	    "parameters: {nuslerp_flatten: false, nuslerp_row_wise: true}\n",
	    abc, 3, ref_nuslerp, "--memory 4M --threads 2");
	vec_mode = 0;
}

static bool
bytes_equal(const struct tl_tensor *a, const struct tl_tensor *b)
{
	return a != NULL && b != NULL && a->nbytes == b->nbytes &&
	    strcmp(a->dtype, b->dtype) == 0 &&
	    memcmp(a->data, b->data, a->nbytes) == 0;
}

/* Stacking layer ranges copies tensors bit for bit; scale multiplies. */
static void
test_passthrough(void)
{
	struct model a, b, out;
	const struct tl_tensor *t;
	char name[256], src[256], *o = NULL, *conf;
	bool same = true, zero = true, scaled = true;
	int l, rc;

	write_cfg("pt.yml", "merge_method: passthrough\nslices:\n"
	    "  - sources:\n      - model: ./a-bf16\n        layer_range: [0, 2]\n"
	    "  - sources:\n      - model: ./b-bf16\n        layer_range: [1, 3]\n"
	    "    parameters:\n      scale:\n        - filter: o_proj\n"
	    "          value: 0\n        - filter: down_proj\n"
	    "          value: 0.5\n");
	rc = mergectl(&o, "pt.yml", "out-pt", "--memory 2M");
	ok_int_eq(rc, 0, "passthrough: exits 0");
	free(o);
	a = open_model("a", "bf16");
	b = open_model("b", "bf16");
	out = open_model("out-pt", NULL);
	for (l = 0; l < 4; l++) {
		snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj."
		    "weight", l);
		snprintf(src, sizeof src, "model.layers.%d.self_attn.q_proj."
		    "weight", l < 2 ? l : l - 1);
		same &= bytes_equal(find(&out, name), find(l < 2 ? &a : &b,
		    src));
		snprintf(name, sizeof name, "model.layers.%d.self_attn.o_proj."
		    "weight", l);
		t = find(&out, name);
		for (uint64_t e = 0; t != NULL && e < t->numel && l >= 2; e++)
			zero &= tl_value(t, e) == 0;
		snprintf(name, sizeof name, "model.layers.%d.mlp.down_proj."
		    "weight", l);
		snprintf(src, sizeof src, "model.layers.%d.mlp.down_proj."
		    "weight", l - 1);
		if (l >= 2) {
			const struct tl_tensor *s = find(&b, src);
			t = find(&out, name);
			for (uint64_t e = 0; e < t->numel; e++)
				scaled &= tl_value(t, e) == 0.5 *
				    tl_value(s, e);
		}
	}
	ok(same, "passthrough: q_proj of output layers 0-3 are bytes of a:0, "
	    "a:1, b:1, b:2");
	ok(zero, "passthrough: conditional scale 0 zeroes o_proj of the "
	    "second slice");
	ok(scaled, "passthrough: scale 0.5 halves down_proj exactly");
	ok(bytes_equal(find(&out, "model.embed_tokens.weight"),
	    find(&a, "model.embed_tokens.weight")), "passthrough: embeddings "
	    "come from the first slice");
	ok(bytes_equal(find(&out, "lm_head.weight"), find(&b,
	    "lm_head.weight")), "passthrough: lm_head comes from the last "
	    "slice");
	snprintf(name, sizeof name, "%s/out-pt/config.json", dir);
	conf = tl_read(name, NULL);
	ok_str_has(conf, "\"num_hidden_layers\": 4", "passthrough: "
	    "config.json has the layer count of the slices");
	ok_str_has(conf, "\"LlamaForCausalLM\"", "passthrough: config.json "
	    "names the architecture");
	free(conf);
	close_model(&a);
	close_model(&b);
	close_model(&out);
}

/* Part A item 6: a tensor no t applies to is the base's, bit for bit. */
static void
test_optional_t(void)
{
	struct model a, out;
	size_t i, k, copied = 0, merged = 0, bad = 0;
	char *o = NULL;
	int rc;

	write_cfg("opt.yml", "merge_method: slerp\nbase_model: ./a-bf16\n"
	    "models:\n  - model: ./a-bf16\n  - model: ./b-bf16\nparameters:\n"
	    "  t:\n    - filter: self_attn.q_proj\n      value: 0.5\n"
	    "    - filter: self_attn.k_proj\n      value: 0.5\n");
	rc = mergectl(&o, "opt.yml", "out-opt", "--memory 2M");
	ok_int_eq(rc, 0, "optional t: exits 0");
	free(o);
	a = open_model("a", "bf16");
	out = open_model("out-opt", NULL);
	for (i = 0; i < out.n; i++) {
		for (k = 0; k < out.st[i].n; k++) {
			const struct tl_tensor *t = &out.st[i].t[k];
			bool qk = strstr(t->name, "q_proj") ||
			    strstr(t->name, "k_proj");
			bool eq = bytes_equal(t, find(&a, t->name));
			if (qk && !eq)
				merged++;
			else if (!qk && eq)
				copied++;
			else
				bad++;
		}
	}
	ok(bad == 0 && merged == 8 && copied > 20, "optional t: q/k_proj "
	    "merged (%zu), every other tensor the base's bytes (%zu), "
	    "%zu wrong", merged, copied, bad);
	close_model(&a);
	close_model(&out);
}

static bool
same_file(const char *a, const char *b)
{
	return tl_same_at(dir, a, b);
}

/* Same bytes whatever the thread count and the budget (chunk size). */
static void
test_determinism(void)
{
	/* Whichever dtypes ran (dtype_wanted): f32 and f16 when all did. */
	const char *f32 = dtype_wanted("f32") ? "f32" : "bf16";
	const char *f16 = dtype_wanted("f16") ? "f16" : "bf16";
	char *o = NULL, cfg[64], out[64];
	int r1, r2, r3;

	r1 = mergectl(&o, "slerp-bf16.yml", "det-1", "--threads 1 "
	    "--memory 1G");
	free(o);
	r2 = mergectl(&o, "slerp-bf16.yml", "det-2", "--threads 2 "
	    "--memory 2M");
	free(o);
	snprintf(cfg, sizeof cfg, "task-%s.yml", f32);
	r3 = mergectl(&o, cfg, "det-3", "--threads 1 --memory 1G");
	free(o);
	ok(r1 == 0 && r2 == 0 && r3 == 0, "determinism: runs exit 0");
	ok(same_file("det-1/model.safetensors", "det-2/model.safetensors"),
	    "determinism: slerp bytes equal with 1 thread/1G and 2 "
	    "threads/2M");
	ok(same_file("det-1/model.safetensors",
	    "out-slerp-bf16/model.safetensors"), "determinism: and equal to "
	    "the 3M run");
	snprintf(out, sizeof out, "out-task-%s/model.safetensors", f32);
	ok(same_file("det-3/model.safetensors", out), "determinism: "
	    "task_arithmetic %s equal across budgets and threads", f32);
	/* Selection, ties and random draws do not depend on the schedule. */
	r1 = mergectl(&o, "ties-bf16.yml", "det-4", "--threads 1 --memory 1G");
	free(o);
	snprintf(cfg, sizeof cfg, "della-%s.yml", f16);
	r2 = mergectl(&o, cfg, "det-5", "--threads 1 --memory 1G "
	    "--random-seed 42");
	free(o);
	r3 = mergectl(&o, "dare_ties-bf16.yml", "det-6", "--threads 2 "
	    "--memory 4M --random-seed 43");
	free(o);
	ok(r1 == 0 && r2 == 0 && r3 == 0, "determinism: sparsified runs "
	    "exit 0");
	ok(same_file("det-4/model.safetensors",
	    "out-ties-bf16/model.safetensors"), "determinism: ties equal "
	    "across budgets and threads");
	snprintf(out, sizeof out, "out-della-%s/model.safetensors", f16);
	ok(same_file("det-5/model.safetensors", out), "determinism: della "
	    "with a seed equal across budgets and threads");
	/*
	 * della keeps each row's ranking for its apply pass where the
	 * budget has room (a quarter of it, and the tensor's least need
	 * with it): at the plan's least memory the hungriest tensor has
	 * none and ranks again.  Both ways, the same bytes.
	 */
	r1 = tl_runf(&o, "cd %s && m=$(%s plan %s --json | grep -o "
	    "'\"min_memory\": *[0-9]*' | grep -o '[0-9]*$') && %s run %s "
	    "det-7 --quiet --threads 2 --random-seed 42 --memory $m 2>&1",
	    dir, tl_mergectl, cfg, tl_mergectl, cfg);
	ok(r1 == 0 && same_file("det-7/model.safetensors", out),
	    "determinism: della at the plan's least memory, its largest "
	    "tensor ranked twice, equals the runs that kept the masks (exit "
	    "%d) %s", r1, o);
	free(o);
	ok(!same_file("det-6/model.safetensors",
	    "out-dare_ties-bf16/model.safetensors"), "determinism: another "
	    "seed draws other masks");
}

static void
test_shards(void)
{
	struct model out, ref;
	char path[4096], *idx, *o = NULL;
	size_t i, k, total = 0, tensors = 0;
	bool same = true;
	int rc;

	rc = mergectl(&o, "linear-bf16.yml", "out-shards",
	    "--out-shard-size 2M --memory 2M");
	ok_int_eq(rc, 0, "shards: exits 0");
	free(o);
	snprintf(path, sizeof path, "%s/out-shards/model.safetensors", dir);
	ok(!tl_exists(path), "shards: no model.safetensors when sharded");
	snprintf(path, sizeof path, "%s/out-shards/model.safetensors."
	    "index.json", dir);
	idx = tl_read(path, NULL);
	ok_str_has(idx, "\"mergekit_version\": \"0.1.4\"", "shards: index "
	    "metadata as mergekit writes it");
	out = open_model("out-shards", NULL);
	ref = open_model("out-linear-bf16", NULL);
	for (i = 0; i < out.n; i++) {
		snprintf(path, sizeof path, "%s/out-shards/model-%05zu-of-%05zu"
		    ".safetensors", dir, i + 1, out.n);
		same &= tl_exists(path);
	}
	ok(same && out.n >= 4, "shards: a 7.3 MB model in 2 MB shards is "
	    "model-0000k-of-%05zu.safetensors, k = 1..%zu", out.n, out.n);
	for (i = 0; i < out.n; i++) {
		for (k = 0; k < out.st[i].n; k++) {
			total += out.st[i].t[k].nbytes;
			tensors++;
			same &= bytes_equal(&out.st[i].t[k], find(&ref,
			    out.st[i].t[k].name));
		}
		ok(out.st[i].len <= 2000000 + 4096 || out.st[i].n == 1,
		    "shards: shard %zu holds at most 2 MB of tensors", i + 1);
	}
	snprintf(path, sizeof path, "\"total_size\": %zu", total);
	ok_str_has(idx, path, "shards: total_size is the sum of tensor bytes");
	ok(same && tensors == 39, "shards: all 39 tensors present and equal "
	    "to the unsharded merge");
	free(idx);
	close_model(&out);
	close_model(&ref);
}

static bool
staging_left(void)
{
	char *o = NULL;
	int rc = tl_runf(&o, "ls -a %s | grep -q merging", dir);

	free(o);
	return rc == 0;
}

static void
test_failures(void)
{
	char path[4096], *o = NULL;
	int rc;

	rc = mergectl(&o, "linear-bf16.yml", "out-linear-bf16", "");
	ok_int_eq(rc, 4, "exit 4 when the output exists");
	ok_str_has(o, "already exists; use --force", "and the message says "
	    "so");
	free(o);
	write_cfg("bad.yml", "merge_method: slerp\nbase_model: ./a-bf16\n"
	    "models:\n  - model: ./a-bf16\n  - model: ./nowhere\n"
	    "paramters:\n  t: 0.5\n");
	rc = mergectl(&o, "bad.yml", "out-bad", "");
	ok_int_eq(rc, 3, "exit 3 for a bad config");
	ok_str_has(o, "bad.yml:6:1: error: unknown key 'paramters' in the "
	    "config; did you mean 'parameters'?", "unknown key: line, column "
	    "and suggestion");
	free(o);
	write_cfg("bad2.yml", "merge_method: slerp\nbase_model: ./a-bf16\n"
	    "models:\n  - model: ./a-bf16\n  - model: ./nowhere\n");
	rc = mergectl(&o, "bad2.yml", "out-bad", "");
	ok_int_eq(rc, 3, "exit 3 for a missing model");
	ok_str_has(o, "model './nowhere' not found; looked in:", "missing "
	    "model: says where it looked");
	free(o);
	snprintf(path, sizeof path, "%s/out-bad", dir);
	ok(!tl_exists(path) && !staging_left(), "a rejected config writes "
	    "nothing");
	/* A write error: the file size limit makes space reservation fail. */
	rc = tl_runf(&o, "cd %s && ulimit -f 1000 && %s run linear-bf16.yml "
	    "out-full --quiet 2>&1", dir, tl_mergectl);
	ok_int_eq(rc, 1, "exit 1 when writing fails");
	ok_str_has(o, "cannot reserve", "the write error is named");
	free(o);
	snprintf(path, sizeof path, "%s/out-full", dir);
	ok(!tl_exists(path) && !staging_left(), "after a write error neither "
	    "the output nor the staging directory exists");
	/* Another merge's config, so that the replacement differs. */
	rc = mergectl(&o, dtype_wanted("f16") ? "linear-f16.yml" :
	    "slerp-bf16.yml", "out-linear-bf16", "--force");
	ok_int_eq(rc, 0, "--force replaces an existing output");
	free(o);
	ok(same_file("out-linear-bf16/model.safetensors",
	    dtype_wanted("f16") ? "out-linear-f16/model.safetensors" :
	    "out-slerp-bf16/model.safetensors"), "and the replacement is the "
	    "new merge");
	ok(!staging_left(), "no staging directory is left behind");
}

/* dtype converts inputs and sets the output type; out_dtype wins. */
static void
test_dtypes(void)
{
	struct model out;
	char *o = NULL, path[4096], *conf;
	const struct tl_tensor *t;
	int rc;

	write_cfg("dt.yml", "merge_method: linear\ndtype: float32\n"
	    "out_dtype: float16\nmodels:\n  - model: ./a-bf16\n"
	    "    parameters: {weight: 1}\n  - model: ./b-f32\n"
	    "    parameters: {weight: 1}\n");
	rc = mergectl(&o, "dt.yml", "out-dt", "");
	ok_int_eq(rc, 0, "dtype/out_dtype: exits 0");
	free(o);
	out = open_model("out-dt", NULL);
	t = find(&out, "model.norm.weight");
	ok(t != NULL && strcmp(t->dtype, "F16") == 0, "out_dtype float16 "
	    "gives F16 tensors");
	snprintf(path, sizeof path, "%s/out-dt/config.json", dir);
	conf = tl_read(path, NULL);
	ok_str_has(conf, "\"torch_dtype\": \"float16\"", "config.json records "
	    "out_dtype");
	free(conf);
	close_model(&out);
}

/*
 * A model in the Hugging Face cache layout: snapshot files are symlinks
 * into blobs/, resolved offline, read beneath models--org--name.
 */
static void
test_hf_cache(void)
{
	struct model a, out;
	char *o = NULL;
	int rc;

	rc = tl_runf(&o, "cd %s && H=hub/models--acme--llama && "
	    "mkdir -p $H/blobs $H/refs $H/snapshots/%s && "
	    "for f in a-bf16/*; do b=$(basename $f); cp $f $H/blobs/b-$b && "
	    "ln -s ../../blobs/b-$b $H/snapshots/%s/$b; done && "
	    "printf '%s\n' > $H/refs/main", dir, HASH, HASH, HASH);
	ok_int_eq(rc, 0, "hf cache: layout built");
	free(o);
	write_cfg("hf.yml", "merge_method: passthrough\nmodels:\n"
	    "  - model: acme/llama\n");
	rc = tl_runf(&o, "cd %s && HF_HUB_CACHE=%s/hub %s run hf.yml out-hf "
	    "--quiet 2>&1", dir, dir, tl_mergectl);
	ok_int_eq(rc, 0, "hf cache: acme/llama resolves offline (%s)", o);
	free(o);
	rc = tl_runf(&o, "cd %s && HF_HUB_CACHE=%s/nohub %s run hf.yml "
	    "out-hf2 --quiet 2>&1", dir, dir, tl_mergectl);
	ok_int_eq(rc, 3, "hf cache: a missing cache entry is a plan error");
	ok_str_has(o, "models--acme--llama/refs/main (no such ref)", "and "
	    "the error shows where it looked");
	free(o);
	a = open_model("a", "bf16");
	out = open_model("out-hf", NULL);
	ok(bytes_equal(find(&out, "model.layers.2.mlp.up_proj.weight"),
	    find(&a, "model.layers.2.mlp.up_proj.weight")), "hf cache: the "
	    "snapshot's tensors are read through the blob symlinks");
	close_model(&a);
	close_model(&out);
}

int
main(int argc, char **argv)
{
	static const char *const dts[] = { "bf16", "f16", "f32" };
	char args[256];
	size_t i;

	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("merge");
	for (i = 0; i < 3; i++) {
		snprintf(args, sizeof args, "--dtype %s --seed 1", dts[i]);
		snprintf(args + strlen(args), 64, "%s", "");
		gen(i == 0 ? "a-bf16" : i == 1 ? "a-f16" : "a-f32", args);
		snprintf(args, sizeof args, "--dtype %s --seed 2 --finetune-of 1"
		    " --delta 0.02", dts[i]);
		gen(i == 0 ? "b-bf16" : i == 1 ? "b-f16" : "b-f32", args);
		snprintf(args, sizeof args, "--dtype %s --seed 3 --finetune-of 1"
		    " --delta 0.02", dts[i]);
		gen(i == 0 ? "c-bf16" : i == 1 ? "c-f16" : "c-f32", args);
	}
	for (i = 0; i < 3; i++)
		if (!dtype_wanted(dts[i]))
			tap_diag("%s numerics skipped: TEST_MERGE_DTYPES=%s",
			    dts[i], getenv("TEST_MERGE_DTYPES"));
	for (i = 0; i < 3; i++)
		if (dtype_wanted(dts[i]))
			test_methods(dts[i]);
	for (i = 0; i < 3; i++)
		if (dtype_wanted(dts[i]))
			test_gta(dts[i]);
	test_vector_modes();
	test_random_stats();
	test_passthrough();
	test_optional_t();
	test_determinism();
	test_shards();
	test_failures();
	test_dtypes();
	test_hf_cache();
	return tap_done();
}
