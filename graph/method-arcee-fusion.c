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
 * Importance is rounded to float32 for ranking and comparing.  One
 * statistics pass: each block computes its rows' KL and, with it, the
 * importance of the sampled elements it holds, which it stores in the
 * tensor's state at their place in the sample (at most 4 MB); between
 * the passes the three quantiles are found in that array (select.h's
 * levels, run in memory), so the inputs are read twice in all, not five
 * times.  Unlike upstream, the output keeps the usual output dtype
 * instead of switching to float32 (Part A item 10).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "method.h"
#include "select.h"

#define AF_SAMPLE 1000000u
#define AF_NQ 3

/* Followed by the KL of every row, doubles, then the sample's keys. */
struct af_state {
	struct sel_cut q[AF_NQ];
	double threshold;
};

static uint64_t af_sample_size(const struct plan_tensor *t);

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
	ms->npasses = 1;
	ms->nred = 1;
	ms->rows = true;
	ms->state_size = sizeof(struct af_state) + (size_t)t->rows *
	    sizeof(double) + (size_t)af_sample_size(t) * sizeof(uint32_t);
}

static const double *
af_kl(const void *state)
{
	return (const double *)((const struct af_state *)state + 1);
}

/* The sample's importance keys, by place in the sample. */
static uint32_t *
af_sample_keys(const struct plan_tensor *t, void *state)
{
	return (uint32_t *)((double *)((struct af_state *)state + 1) +
	    t->rows);
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

/* The importance of element e of the block, whose row's KL is kl. */
static float
af_importance(const struct plan_tensor *t, const struct mchunk *c,
    double kl, size_t e)
{
	const float *a = c->in[t->base], *b = c->in[1 - t->base];

	return (float)(fabs((double)b[e] - a[e]) * kl);
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

/*
 * The KL of the block's rows, into its partials, and the importance keys
 * of the sampled elements it holds, into the state at their places in
 * the sample: the blocks hold different elements, so they write
 * different keys.
 */
static void
af_stats(const struct plan_tensor *t, void *state, int pass,
    const struct mchunk *c)
{
	uint32_t *keys = af_sample_keys(t, state);
	uint64_t m = af_sample_size(t), n = t->numel;
	uint64_t i, e, stream;
	double *ex;
	size_t r, len = c->cols;

	(void)pass;
	ex = xreallocarray(NULL, 2 * len, sizeof *ex);
	for (r = 0; r < c->nrows; r++)
		c->partials[r] = af_row_kl(c->in[t->base] + r * len,
		    c->in[1 - t->base] + r * len, len, ex);
	free(ex);
	if (m == n) {
		for (r = 0; r < c->nrows; r++)
			af_keys(c->in[t->base] + r * len, c->in[1 - t->base] +
			    r * len, len, c->partials[r], keys + c->e0 +
			    r * len);
		return;
	}
	/* The strata that meet this block, and their picks inside it. */
	stream = rng_stream(t->seed, t->name, t->in[1 - t->base].model);
	i = c->e0 * m / n;
	while (i > 0 && af_stratum(i, m, n) > c->e0)
		i--;
	for (; i < m && af_stratum(i, m, n) < c->e0 + c->n; i++) {
		e = af_pick(stream, i, m, n) - c->e0;
		if (e < c->n)
			keys[i] = sel_fkey(af_importance(t, c,
			    c->partials[e / len], (size_t)e));
	}
}

/* The three quantiles of the sample, and the threshold from them. */
static const char *
af_reduce(const struct plan_tensor *t, void *state, int pass,
    const double *partials, size_t nq)
{
	static const float qs[AF_NQ] = { 0.25f, 0.5f, 0.75f };
	struct af_state *st = state;
	uint64_t m = af_sample_size(t), hist[SEL_BINS];
	const char *why;
	int j;

	(void)pass;
	memcpy((double *)af_kl(state), partials, nq * sizeof *partials);
	for (j = 0; j < AF_NQ; j++) {
		memset(&st->q[j], 0, sizeof st->q[j]);
		st->q[j].on = true;
		st->q[j].rank = (uint64_t)(qs[j] * (float)(m - 1));
	}
	if ((why = sel_find(st->q, AF_NQ, af_sample_keys(t, state), (size_t)m,
	    hist)) != NULL)
		return why;
	st->threshold = (double)sel_fval(st->q[1].key) + 1.5 *
	    ((double)sel_fval(st->q[2].key) - (double)sel_fval(st->q[0].key));
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
		c->out[e] = af_importance(t, c, kl[c->r0 + e / c->cols], e) >=
		    st->threshold ? b[e] : a[e];
}

const struct graph_method method_arcee_fusion = {
	.name = "arcee_fusion",
	.pretty = "Arcee Fusion",
	.url = "https://arcee.ai",
	.flags = METHOD_NEEDS_BASE | METHOD_RECTIFY,
	.plan = af_plan,
	.shape = af_shape,
	.stats = af_stats,
	.reduce = af_reduce,
	.apply = af_apply,
};
