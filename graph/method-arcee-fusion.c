/* SPDX-License-Identifier: MIT */
/*
 * method-arcee-fusion.c: Arcee Fusion (MERGEKIT.md Part B 4.3).
 *
 * A = base, B = the other model.  Per row (last axis; a 1-D tensor is one
 * row) KL = sum p log(p / q), p = softmax(B) + 1e-8, q = softmax(A) + 1e-8;
 * importance = |B - A| KL.  With Q the quantiles of the importance over a
 * sample, threshold = Q(0.5) + 1.5 (Q(0.75) - Q(0.25)), Q(q) being the
 * sorted sample's element at trunc(q (m - 1)) (float32 product); where
 * importance >= threshold the result is B, elsewhere A.
 *
 * The sample is the whole tensor up to 1,000,000 elements; beyond, it is
 * exactly 1,000,000 elements, one drawn uniformly from each of 1,000,000
 * equal strata of the flattened tensor with the job's random stream
 * (upstream: a uniform random subset from torch's generator; both are
 * estimates of the same quantiles, ours reproducible for a seed).
 * Importance is rounded to float32 for ranking and comparing.  Passes:
 * the KL of every row, then three histogram passes (select.h) that find
 * the three quantiles at once.  Unlike upstream, the output keeps the
 * usual output dtype instead of switching to float32 (Part A item 10).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "method.h"
#include "select.h"

#define AF_SAMPLE 1000000u
#define AF_NQ 3

/* Followed by the KL of every row, doubles. */
struct af_state {
	struct sel_cut q[AF_NQ];
	uint64_t hist[AF_NQ][SEL_BINS];
	double threshold;
};

static void
af_plan(struct method_plan *mp)
{
	struct plan_tensor *t = mp->t;

	if (t->nin == 1) {
		mp->fold_copy = true;
		mp->fold_input = 0;
	} else if (t->nin != 2) {
		plan_tensor_error(mp, "arcee_fusion merges exactly two models "
		    "(the base and one other), got %zu inputs", t->nin);
	} else if (t->numel > UINT64_MAX / AF_SAMPLE) {
		plan_tensor_error(mp, "arcee_fusion: %llu elements are more "
		    "than it can sample", (unsigned long long)t->numel);
	}
}

static void
af_shape(const struct plan_tensor *t, struct method_shape *ms)
{
	ms->npasses = 1 + SEL_LEVELS;
	ms->nred = 1;
	ms->rows = true;
	ms->scratch = sizeof(uint64_t) * AF_NQ * SEL_BINS;
	ms->state_size = sizeof(struct af_state) + (size_t)t->rows *
	    sizeof(double);
}

static const double *
af_kl(const void *state)
{
	return (const double *)((const struct af_state *)state + 1);
}

static uint64_t
af_sample_size(const struct plan_tensor *t)
{
	return t->numel > AF_SAMPLE ? AF_SAMPLE : t->numel;
}

/*
 * First element of stratum i of m over n elements.  i n stays below
 * 2^64: the plan refuses tensors of more than 2^64 / AF_SAMPLE elements.
 */
static uint64_t
af_stratum(uint64_t i, uint64_t m, uint64_t n)
{
	return i * n / m;
}

/* The sampled element of stratum i. */
static uint64_t
af_pick(uint64_t stream, uint64_t i, uint64_t m, uint64_t n)
{
	uint64_t lo = af_stratum(i, m, n), hi = af_stratum(i + 1, m, n);

	return lo + (uint64_t)((double)rng_u32(stream, i) * 0x1p-32 *
	    (double)(hi - lo));
}

static float
af_importance(const struct plan_tensor *t, const struct mchunk *c,
    const double *kl, size_t e)
{
	const float *a = c->in[t->base], *b = c->in[1 - t->base];

	return (float)(fabs((double)b[e] - a[e]) * kl[c->r0 + e / c->cols]);
}

/*
 * Softmax of a row: ex[i] = exp(x[i] - max), returns their sum (added in
 * order).
 */
static double
af_softmax(const float *x, size_t n, double *ex)
{
	double mx = -INFINITY, sum = 0;
	size_t i;

	for (i = 0; i < n; i++)
		if (x[i] > mx)
			mx = x[i];
	for (i = 0; i < n; i++)
		sum += ex[i] = exp(x[i] - mx);
	return sum;
}

/* KL of one row; ex holds 2 n doubles of scratch. */
static double
af_row_kl(const float *a, const float *b, size_t n, double *ex)
{
	double sa, sb, p, q, s = 0;
	size_t i;

	sa = af_softmax(a, n, ex);
	sb = af_softmax(b, n, ex + n);
	for (i = 0; i < n; i++) {
		p = ex[n + i] / sb + 1e-8;
		q = ex[i] / sa + 1e-8;
		s += p * log(p / q);
	}
	return s;
}

/* The importance keys of n elements of one row, whose KL is kl. */
GRAPH_SIMD static void
af_keys(const float *restrict a, const float *restrict b, size_t n,
    double kl, uint32_t *restrict key)
{
	size_t e;
	float v;

	for (e = 0; e < n; e++) {
		v = (float)(fabs((double)b[e] - (double)a[e]) * kl);
		memcpy(&key[e], &v, sizeof key[e]);	/* v >= 0 */
	}
}

static void
af_add(const struct af_state *st, uint64_t *h, const uint32_t *key,
    size_t n, int level)
{
	static const struct sel_cut all = { .on = true };
	int j;

	for (j = 0; j < AF_NQ; j++)
		sel_count(level == 0 ? &all : &st->q[j], h + j * SEL_BINS, key,
		    n, level);
}

static void
af_stats(const struct plan_tensor *t, void *state, int pass,
    const struct mchunk *c)
{
	const struct af_state *st = state;
	const double *kl = af_kl(state);
	uint64_t *h = c->scratch, m = af_sample_size(t), n = t->numel;
	uint64_t i, e, stream;
	uint32_t *key, one;
	double *ex;
	size_t r, len = c->cols;

	if (pass == 0) {
		ex = xreallocarray(NULL, 2 * len, sizeof *ex);
		for (r = 0; r < c->nrows; r++)
			c->partials[r] = af_row_kl(c->in[t->base] + r * len,
			    c->in[1 - t->base] + r * len, len, ex);
		free(ex);
		return;
	}
	if (m == n) {
		key = xreallocarray(NULL, len, sizeof *key);
		for (r = 0; r < c->nrows; r++) {
			af_keys(c->in[t->base] + r * len, c->in[1 - t->base] +
			    r * len, len, kl[c->r0 + r], key);
			af_add(st, h, key, len, pass - 1);
		}
		free(key);
		return;
	}
	/* The strata that meet this block, and their picks inside it. */
	stream = rng_stream(t->seed, t->name, t->in[1 - t->base].model);
	i = c->e0 * m / n;
	while (i > 0 && af_stratum(i, m, n) > c->e0)
		i--;
	for (; i < m && af_stratum(i, m, n) < c->e0 + c->n; i++) {
		e = af_pick(stream, i, m, n);
		if (e >= c->e0 && e < c->e0 + c->n) {
			one = sel_fkey(af_importance(t, c, kl,
			    (size_t)(e - c->e0)));
			af_add(st, h, &one, 1, pass - 1);
		}
	}
}

static void
af_merge(const struct plan_tensor *t, void *state, int pass,
    const void *scratch)
{
	struct af_state *st = state;
	const uint64_t *s = scratch;
	uint64_t *h = &st->hist[0][0];
	size_t i;

	(void)t;
	if (pass == 0)
		return;
	for (i = 0; i < AF_NQ * SEL_BINS; i++)
		h[i] += s[i];
}

static const char *
af_reduce(const struct plan_tensor *t, void *state, int pass,
    const double *partials, size_t nq)
{
	static const float qs[AF_NQ] = { 0.25f, 0.5f, 0.75f };
	struct af_state *st = state;
	uint64_t m = af_sample_size(t);
	const char *why;
	int j;

	if (pass == 0) {
		memcpy((double *)af_kl(state), partials, nq * sizeof *partials);
		for (j = 0; j < AF_NQ; j++) {
			memset(&st->q[j], 0, sizeof st->q[j]);
			st->q[j].on = true;
			st->q[j].rank = (uint64_t)(qs[j] * (float)(m - 1));
		}
		return NULL;
	}
	for (j = 0; j < AF_NQ; j++)
		if ((why = sel_step(&st->q[j], st->hist[j], pass - 1)) != NULL)
			return why;
	memset(st->hist, 0, sizeof st->hist);
	if (pass == SEL_LEVELS)
		st->threshold = (double)sel_fval(st->q[1].key) + 1.5 *
		    ((double)sel_fval(st->q[2].key) -
		    (double)sel_fval(st->q[0].key));
	return NULL;
}

static void
af_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	const struct af_state *st = state;
	const double *kl = af_kl(state);
	const float *a = c->in[t->base], *b = c->in[1 - t->base];
	size_t e;

	for (e = 0; e < c->n; e++)
		c->out[e] = af_importance(t, c, kl, e) >= st->threshold ?
		    b[e] : a[e];
}

const struct graph_method method_arcee_fusion = {
	.name = "arcee_fusion",
	.pretty = "Arcee Fusion",
	.url = "https://arcee.ai",
	.flags = METHOD_NEEDS_BASE | METHOD_RECTIFY,
	.plan = af_plan,
	.shape = af_shape,
	.stats = af_stats,
	.merge = af_merge,
	.reduce = af_reduce,
	.apply = af_apply,
};
