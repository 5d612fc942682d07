/* SPDX-License-Identifier: MIT */
/*
 * method-sce.c: SCE, select, calculate, erase (MERGEKIT.md Part B 4.3).
 *
 * With task vectors tau_i = X_i - B (float32): when select_topk < 1, only
 * the k = trunc(nonzero * select_topk) positions of largest variance
 * across the models are kept (variance in float64, rounded to float32 to
 * rank; nonzero counts the positions whose rounded variance is not 0).
 * Each model then weighs s_i = mean(tau_i^2) over the masked tensor,
 * normalized to sum 1 (uniform when the sum is below 1e-6), elements whose
 * sign disagrees with the sign of sum_i tau_i are erased, and the result
 * is B + sum_i tau_i e_i / max(sum_i e_i, 1e-6) with e_i = s_i where kept.
 *
 * Passes: two histogram passes find the top-k cut (select.h, the wide
 * levels; ties at the cut by element index, as the task-vector family),
 * the second also listing each block's keys in the cut's first-level bin,
 * from which the ties before each block are known; only where a block
 * overflowed its list does a third pass count them.  Then one pass sums
 * tau_i^2.  Without selection, only the last.
 */
#include <math.h>
#include <string.h>

#include "method.h"
#include "select.h"

#define SCE_LEVEL1 1
#define SCE_COUNT_PASS 2	/* only where a list overflowed */
#define SCE_SUM_PASS 3

/* Followed by the ties before each block, 2 uint64_t per block. */
struct sce_state {
	struct sel_range range;
	uint64_t hist[SEL_WIDE_BINS0];	/* level 0's, then level 1's */
	uint64_t zeros;		/* positions of zero variance */
	double s[GRAPH_MAX_INPUTS];	/* weights, by delta */
	bool listed;		/* every block listed its ties */
};

struct sce_scratch {
	uint32_t hist[SEL_WIDE_BINS0];
	uint64_t zeros;
};

static const struct method_param sce_params[] = {
	{ "int8_mask", false, MP_OPTIONAL, MP_BOOL, 0 },
	{ "select_topk", false, MP_OPTIONAL, MP_FLOAT, 1 },
};

static bool
sce_selects(const struct plan_tensor *t)
{
	return plan_g(t, "select_topk") < 1;
}

/* The pass's role: the selection passes are skipped without selection. */
static int
sce_phase(const struct plan_tensor *t, int pass)
{
	return sce_selects(t) ? pass : pass + SCE_SUM_PASS;
}

static uint64_t *
sce_ties(const void *state, uint64_t q)
{
	return (uint64_t *)((const struct sce_state *)state + 1) + 2 * q;
}

static void
sce_plan(struct method_plan *mp)
{
	struct plan_tensor *t = mp->t;

	if (t->nin == 1 || plan_g(t, "select_topk") <= 0) {
		/* Nothing to add, or everything masked: the base. */
		mp->fold_copy = true;
		mp->fold_input = (size_t)t->base;
	}
}

static void
sce_shape(const struct plan_tensor *t, struct method_shape *ms)
{
	size_t k = t->nin - 1;
	uint64_t nq = (t->numel + GRAPH_QUANTUM - 1) / GRAPH_QUANTUM;

	ms->npasses = sce_selects(t) ? SCE_SUM_PASS + 1 : 1;
	ms->nred = (int)(k > SEL_LIST_RED ? k : SEL_LIST_RED);
	ms->scratch = sizeof(struct sce_scratch);
	ms->state_size = sizeof(struct sce_state) + 2 * nq * sizeof(uint64_t);
}

/*
 * A strip of n elements from offset s: every model's tau (float32) and
 * the variance key of each element, in loops over elements.
 */
#define SCE_STRIP 256

GRAPH_SIMD static void
sce_strip(const struct plan_tensor *t, const struct mchunk *c, size_t s,
    size_t n, float (*restrict tau)[SCE_STRIP], uint32_t *restrict key)
{
	const float *restrict b = c->in[t->base] + s;
	double mean[SCE_STRIP], v[SCE_STRIP], dv, k = (double)(t->nin - 1);
	size_t e, i, j;
	float f;

	memset(mean, 0, n * sizeof *mean);
	memset(v, 0, n * sizeof *v);
	for (j = 0, i = 0; j < t->nin; j++) {
		const float *restrict x = c->in[j] + s;
		if ((int)j == t->base)
			continue;
		for (e = 0; e < n; e++) {
			tau[i][e] = x[e] - b[e];
			mean[e] += tau[i][e];
		}
		i++;
	}
	for (e = 0; e < n; e++)
		mean[e] /= k;
	for (i = 0; i < t->nin - 1; i++) {
		for (e = 0; e < n; e++) {
			dv = tau[i][e] - mean[e];
			v[e] += dv * dv;
		}
	}
	for (e = 0; e < n; e++) {
		f = (float)(v[e] / k);
		memcpy(&key[e], &f, sizeof key[e]);	/* f >= 0 */
	}
}

/*
 * Sum of tau^2 where kept, element e into lane e mod 8 and the lanes
 * added in a fixed order: one accumulator would chain every addition
 * to the one before, and the order would not be the same either way.
 */
GRAPH_SIMD static double
sce_sumsq(const float *restrict tau, const uint8_t *restrict keep, size_t n)
{
	double acc[8] = { 0 }, v;
	uint32_t u;
	size_t e, l;
	float f;

	for (e = 0; e + 8 <= n; e += 8) {
		for (l = 0; l < 8; l++) {
			/* Masked by its bits, not times keep (inf * 0 is
			 * NaN), and without a branch: it vectorizes. */
			memcpy(&u, &tau[e + l], sizeof u);
			u &= 0u - (uint32_t)keep[e + l];
			memcpy(&f, &u, sizeof f);
			v = (double)f;
			acc[l] += v * v;
		}
	}
	for (l = 0; e < n; e++, l++) {
		v = (double)tau[e];
		acc[l] += keep[e] ? v * v : 0;
	}
	return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) +
	    (acc[6] + acc[7]));
}

static void
sce_stats(const struct plan_tensor *t, void *state, int pass,
    const struct mchunk *c)
{
	const struct sce_state *st = state;
	struct sce_scratch *sc = c->scratch;
	int phase = sce_phase(t, pass);
	float tau[GRAPH_MAX_INPUTS][SCE_STRIP];
	uint32_t key[SCE_STRIP], lo = st->range.cut[0].key;
	uint8_t keep[SCE_STRIP];
	uint64_t eq = 0, tie[2];
	double sq[GRAPH_MAX_INPUTS] = { 0 };
	struct sel_list list = { .n = 0 };
	size_t e, i, s, n, k = t->nin - 1;
	bool sel = sce_selects(t), lo_on = st->range.cut[0].on;

	if (sel && phase > SCE_COUNT_PASS)
		memcpy(tie, sce_ties(state, c->e0 / c->quantum), sizeof tie);
	for (s = 0; s < c->n; s += n) {
		n = c->n - s < SCE_STRIP ? c->n - s : SCE_STRIP;
		sce_strip(t, c, s, n, tau, key);
		if (phase == 0) {
			for (e = 0; e < n; e++) {
				sc->zeros += key[e] == 0;
				sc->hist[key[e] >> SEL_WIDE_SHIFT]++;
			}
			continue;
		}
		if (phase == SCE_LEVEL1) {
			sel_list_strip(&st->range.cut[0], &list, sc->hist, key,
			    n);
			continue;
		}
		if (phase == SCE_COUNT_PASS) {
			for (e = 0; e < n; e++)
				eq += lo_on && key[e] == lo;
			continue;
		}
		if (sel)
			sel_keep_strip(&st->range, key, n, tie, keep);
		else
			memset(keep, 1, n);
		for (i = 0; i < k; i++)
			sq[i] += sce_sumsq(tau[i], keep, n);
	}
	if (phase == SCE_LEVEL1)
		sel_list_save(&list, c->partials);
	else if (phase == SCE_COUNT_PASS)
		c->partials[0] = (double)eq;
	else if (phase > SCE_COUNT_PASS)
		memcpy(c->partials, sq, k * sizeof *sq);
}

static void
sce_merge(const struct plan_tensor *t, void *state, int pass,
    const void *scratch)
{
	struct sce_state *st = state;
	const struct sce_scratch *sc = scratch;
	size_t b;

	if (sce_phase(t, pass) > SCE_LEVEL1)
		return;
	for (b = 0; b < SEL_WIDE_BINS0; b++)
		st->hist[b] += sc->hist[b];
	st->zeros += sc->zeros;
}

static const char *
sce_reduce(const struct plan_tensor *t, void *state, int pass,
    const double *partials, size_t nq)
{
	struct sce_state *st = state;
	int phase = sce_phase(t, pass);
	uint64_t run = 0, sel, *tie;
	double sum = 0, k = (double)(t->nin - 1);
	const char *why;
	size_t q, i;

	if (phase == 0) {
		/* Zero-variance positions are known only now. */
		sel = (uint64_t)((double)(t->numel - st->zeros) *
		    plan_g(t, "select_topk"));
		sel_range_init(&st->range, t->numel, t->numel - sel, t->numel);
		why = sel_step_wide(&st->range.cut[0], st->hist, 0);
		memset(st->hist, 0, sizeof st->hist);
		return why;
	}
	if (phase == SCE_LEVEL1) {
		st->listed = true;
		if ((why = sel_list_step(&st->range.cut[0], st->hist, partials,
		    (size_t)t->ms.nred, nq, &st->listed)) != NULL ||
		    !st->listed)
			return why;
	}
	if (phase <= SCE_COUNT_PASS) {
		/* From the lists, or from the count pass. */
		for (q = 0; q < nq; q++) {
			tie = sce_ties(state, q);
			tie[0] = run;
			tie[1] = 0;
			run += phase == SCE_LEVEL1 ?
			    sel_list_ties(&st->range.cut[0], partials + q *
			    (size_t)t->ms.nred) :
			    (uint64_t)partials[q * (size_t)t->ms.nred];
		}
		return NULL;
	}
	for (i = 0; i + 1 < t->nin; i++) {
		st->s[i] = 0;
		for (q = 0; q < nq; q++)
			st->s[i] += partials[q * (size_t)t->ms.nred + i];
		st->s[i] /= (double)t->numel;
		sum += st->s[i];
	}
	for (i = 0; i + 1 < t->nin; i++)
		st->s[i] = fabs(sum) < 1e-6 ? 1 / k : st->s[i] / sum;
	return NULL;
}

/* Sign consensus weighted by s_i, over a strip of kept elements. */
GRAPH_SIMD static void
sce_mix(const float (*restrict tau)[SCE_STRIP], const double *s, size_t k,
    const float *restrict b, const uint8_t *restrict keep, size_t n,
    float *restrict out)
{
	double sum[SCE_STRIP], num[SCE_STRIP], den[SCE_STRIP], td[SCE_STRIP];
	double si;
	size_t e, i;
	int agree;

	memset(sum, 0, n * sizeof *sum);
	memset(num, 0, n * sizeof *num);
	memset(den, 0, n * sizeof *den);
	for (i = 0; i < k; i++)
		for (e = 0; e < n; e++)
			sum[e] += tau[i][e];
	for (i = 0; i < k; i++) {
		si = s[i];
		for (e = 0; e < n; e++)
			td[e] = tau[i][e];
		for (e = 0; e < n; e++) {
			agree = ((sum[e] >= 0) & (td[e] > 0)) |
			    ((sum[e] < 0) & (td[e] < 0));
			num[e] += agree ? td[e] * si : 0;
			den[e] += agree ? si : 0;
		}
	}
	/* Where the position is masked, every tau is 0: the base. */
	for (e = 0; e < n; e++)
		out[e] = keep[e] ? (float)((double)b[e] + num[e] /
		    (den[e] > 1e-6 ? den[e] : 1e-6)) : b[e];
}

/* The count pass is needed only where a block's list overflowed. */
static bool
sce_skip_next(const struct plan_tensor *t, const void *state, int pass)
{
	const struct sce_state *st = state;

	return sce_selects(t) && pass == SCE_LEVEL1 && st->listed;
}

static void
sce_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	const struct sce_state *st = state;
	float tau[GRAPH_MAX_INPUTS][SCE_STRIP];
	uint32_t key[SCE_STRIP];
	uint8_t keep[SCE_STRIP];
	uint64_t tie[2];
	size_t s, n;
	bool sel = sce_selects(t);

	if (sel)
		memcpy(tie, sce_ties(state, c->e0 / c->quantum), sizeof tie);
	for (s = 0; s < c->n; s += n) {
		n = c->n - s < SCE_STRIP ? c->n - s : SCE_STRIP;
		sce_strip(t, c, s, n, tau, key);
		if (sel)
			sel_keep_strip(&st->range, key, n, tie, keep);
		else
			memset(keep, 1, n);
		sce_mix((const float (*)[SCE_STRIP])tau, st->s, t->nin - 1,
		    c->in[t->base] + s, keep, n, c->out + s);
	}
}

const struct graph_method method_sce = {
	.name = "sce",
	.pretty = "SCE",
	.url = "https://arxiv.org/abs/2408.07990",
	.params = sce_params,
	.nparams = sizeof sce_params / sizeof *sce_params,
	.flags = METHOD_NEEDS_BASE,
	.plan = sce_plan,
	.shape = sce_shape,
	.stats = sce_stats,
	.merge = sce_merge,
	.reduce = sce_reduce,
	.skip_next = sce_skip_next,
	.apply = sce_apply,
};
