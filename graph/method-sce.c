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
 * Passes: three histogram passes and a tie count find the top-k cut
 * (select.h; ties at the cut by element index, as the task-vector
 * family), then one pass sums tau_i^2.  Without selection, only the last.
 */
#include <math.h>
#include <string.h>

#include "graph-int.h"
#include "select.h"

#define SCE_SUM_PASS (SEL_LEVELS + 1)

/* Followed by the ties before each block, 2 uint64_t per block. */
struct sce_state {
	struct sel_range range;
	uint64_t hist[SEL_BINS];
	uint64_t zeros;		/* positions of zero variance */
	double s[GRAPH_MAX_INPUTS];	/* weights, by delta */
};

struct sce_scratch {
	uint64_t hist[SEL_BINS];
	uint64_t zeros;
};

static const struct method_param sce_params[] = {
	{ "int8_mask", false, false, MP_BOOL, 0 },
	{ "select_topk", false, false, MP_FLOAT, 1 },
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
	ms->nred = (int)(k > 2 ? k : 2);
	ms->scratch = sizeof(struct sce_scratch);
	ms->state_size = sizeof(struct sce_state) + 2 * nq * sizeof(uint64_t);
}

/* The task vectors at element e, into tau; returns their count. */
static size_t
sce_tau(const struct plan_tensor *t, const struct mchunk *c, size_t e,
    float *tau)
{
	const float *b = c->in[t->base];
	size_t j, k = 0;

	for (j = 0; j < t->nin; j++)
		if ((int)j != t->base)
			tau[k++] = c->in[j][e] - b[e];
	return k;
}

/* The population variance across the models, as a ranking key. */
static uint32_t
sce_key(const float *tau, size_t k)
{
	double mean = 0, v = 0;
	size_t i;

	for (i = 0; i < k; i++)
		mean += tau[i];
	mean /= (double)k;
	for (i = 0; i < k; i++)
		v += (tau[i] - mean) * (tau[i] - mean);
	return sel_fkey((float)(v / (double)k));
}

static void
sce_stats(const struct plan_tensor *t, void *state, int pass,
    const struct mchunk *c)
{
	const struct sce_state *st = state;
	struct sce_scratch *sc = c->scratch;
	int phase = sce_phase(t, pass);
	float tau[GRAPH_MAX_INPUTS];
	uint64_t eq = 0, tie[2];
	double sq[GRAPH_MAX_INPUTS] = { 0 };
	struct sel_cut all = { .on = true };
	uint32_t key;
	size_t e, i, k = t->nin - 1;
	bool kept;

	if (phase < SEL_LEVELS) {
		for (e = 0; e < c->n; e++) {
			sce_tau(t, c, e, tau);
			key = sce_key(tau, k);
			sc->zeros += key == 0;
			sel_add(phase == 0 ? &all : &st->range.cut[0],
			    sc->hist, key, phase);
		}
		return;
	}
	if (phase == SEL_LEVELS) {
		for (e = 0; e < c->n; e++) {
			sce_tau(t, c, e, tau);
			eq += st->range.cut[0].on &&
			    sce_key(tau, k) == st->range.cut[0].key;
		}
		c->partials[0] = (double)eq;
		return;
	}
	if (sce_selects(t))
		memcpy(tie, sce_ties(state, c->e0 / c->quantum), sizeof tie);
	for (e = 0; e < c->n; e++) {
		sce_tau(t, c, e, tau);
		kept = !sce_selects(t) || sel_keep(&st->range,
		    sce_key(tau, k), tie);
		if (kept)
			for (i = 0; i < k; i++)
				sq[i] += (double)tau[i] * tau[i];
	}
	memcpy(c->partials, sq, k * sizeof *sq);
}

static void
sce_merge(const struct plan_tensor *t, void *state, int pass,
    const void *scratch)
{
	struct sce_state *st = state;
	const struct sce_scratch *sc = scratch;
	size_t b;

	if (sce_phase(t, pass) >= SEL_LEVELS)
		return;
	for (b = 0; b < SEL_BINS; b++)
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
	}
	if (phase < SEL_LEVELS) {
		why = sel_step(&st->range.cut[0], st->hist, phase);
		memset(st->hist, 0, sizeof st->hist);
		return why;
	}
	if (phase == SEL_LEVELS) {
		for (q = 0; q < nq; q++) {
			tie = sce_ties(state, q);
			tie[0] = run;
			tie[1] = 0;
			run += (uint64_t)partials[q * (size_t)t->ms.nred];
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

static void
sce_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	const struct sce_state *st = state;
	const float *b = c->in[t->base];
	float tau[GRAPH_MAX_INPUTS];
	uint64_t tie[2];
	double sum, num, den;
	size_t e, i, k = t->nin - 1;

	if (sce_selects(t))
		memcpy(tie, sce_ties(state, c->e0 / c->quantum), sizeof tie);
	for (e = 0; e < c->n; e++) {
		sce_tau(t, c, e, tau);
		if (sce_selects(t) && !sel_keep(&st->range, sce_key(tau, k),
		    tie)) {
			c->out[e] = b[e];	/* every tau masked */
			continue;
		}
		sum = num = den = 0;
		for (i = 0; i < k; i++)
			sum += tau[i];
		for (i = 0; i < k; i++) {
			if (sum >= 0 ? tau[i] > 0 : tau[i] < 0) {
				num += tau[i] * st->s[i];
				den += st->s[i];
			}
		}
		c->out[e] = (float)(b[e] + num / (den > 1e-6 ? den : 1e-6));
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
	.apply = sce_apply,
};
