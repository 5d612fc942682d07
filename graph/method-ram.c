/* SPDX-License-Identifier: MIT */
/*
 * method-ram.c: Reinforced Agent Merging, ram and ramplus_tl.
 *
 * MERGEKIT.md Part B 4.3.  With task vectors tau_i = X_i - B, a model is
 * active at a position where |tau_i| > epsilon; c is the number of active
 * models there.  A change made by one model alone is kept, changes made by
 * several are averaged over them, untouched positions keep the base.
 * ramplus_tl scales each model's unique changes by
 * lambda_i = 1 + r * clamp(shared_i / max(unique_i, epsilon), 0, alpha),
 * where shared_i and unique_i count, over the whole tensor, the positions
 * where model i is active together with others or alone: a statistics
 * pass counts them per block (exact integers held in doubles, so the sum
 * does not depend on the order), and reduce turns them into lambda.
 * Unlike mergekit, ramplus_tl does not switch the output to float32
 * (Part A item 10).
 */
#include <math.h>
#include <string.h>

#include "method.h"

struct ramplus_state {
	double lambda[GRAPH_MAX_INPUTS];	/* by input index */
};

static const struct method_param ram_params[] = {
	{ "epsilon", false, MP_OPTIONAL, MP_FLOAT, 1e-5 },
};

static const struct method_param ramplus_params[] = {
	{ "r", false, MP_OPTIONAL, MP_FLOAT, 0.1 },
	{ "alpha", false, MP_OPTIONAL, MP_FLOAT, 0.2 },
	{ "epsilon", false, MP_OPTIONAL, MP_FLOAT, 1e-5 },
};

static void
ram_plan(struct method_plan *mp)
{
	struct plan_tensor *t = mp->t;

	if (t->nin == 1) {
		mp->fold_copy = true;	/* only the base */
		mp->fold_input = (size_t)t->base;
	}
}

/* Two counts per model: positions shared with others, and alone. */
static void
ramplus_shape(const struct plan_tensor *t, struct method_shape *ms)
{
	ms->nred = 2 * (int)t->nin;
}

/*
 * Loops run a strip at a time, over elements, so that they vectorize:
 * first how many models are active at each element, then what each
 * model adds.
 */
#define RAM_STRIP 512

/* act[] = whether model x is active (|x - b| > eps); adds it to cnt. */
GRAPH_SIMD static void
ram_active(const float *restrict x, const float *restrict b, size_t n,
    double eps, uint8_t *restrict act, uint32_t *restrict cnt)
{
	size_t e;

	for (e = 0; e < n; e++) {
		act[e] = fabs((double)x[e] - (double)b[e]) > eps;
		cnt[e] += act[e];
	}
}

/*
 * Every model's activity over a strip, found once for the strip: act[j]
 * by input, cnt the active models at each element.
 */
static void
ram_actives(const struct plan_tensor *t, const struct mchunk *c, size_t s,
    size_t n, double eps, uint8_t (*act)[RAM_STRIP], uint32_t *cnt)
{
	size_t idx[GRAPH_MAX_INPUTS], k = plan_others(t, idx), i;

	memset(cnt, 0, n * sizeof *cnt);
	for (i = 0; i < k; i++)
		ram_active(c->in[idx[i]] + s, c->in[t->base] + s, n, eps,
		    act[idx[i]], cnt);
}

/* Positions where a model is active with others, and alone. */
GRAPH_SIMD static void
ramplus_tally(const uint8_t *restrict act, const uint32_t *restrict cnt,
    size_t n, double *shared, double *unique)
{
	uint32_t sh = 0, un = 0;
	size_t e;

	for (e = 0; e < n; e++) {
		sh += act[e] & (cnt[e] > 1);
		un += act[e] & (cnt[e] == 1);
	}
	*shared += sh;
	*unique += un;
}

static void
ramplus_stats(const struct plan_tensor *t, void *state, int pass,
    const struct mchunk *c)
{
	double eps = plan_g(t, "epsilon"), *p = c->partials;
	uint8_t act[GRAPH_MAX_INPUTS][RAM_STRIP];
	uint32_t cnt[RAM_STRIP];
	size_t idx[GRAPH_MAX_INPUTS], k = plan_others(t, idx), i, j, s, n;

	(void)state;
	(void)pass;
	memset(p, 0, 2 * t->nin * sizeof *p);
	for (s = 0; s < c->n; s += n) {
		n = c->n - s < RAM_STRIP ? c->n - s : RAM_STRIP;
		ram_actives(t, c, s, n, eps, act, cnt);
		for (i = 0; i < k; i++) {
			j = idx[i];
			ramplus_tally(act[j], cnt, n, &p[2 * j], &p[2 * j + 1]);
		}
	}
}

static const char *
ramplus_reduce(const struct plan_tensor *t, void *state, int pass,
    const double *partials, size_t n)
{
	struct ramplus_state *s = state;
	double shared, unique, rho, eps = plan_g(t, "epsilon");
	size_t j, q;

	(void)pass;
	for (j = 0; j < t->nin; j++) {
		shared = unique = 0;
		for (q = 0; q < n; q++) {
			shared += partials[q * 2 * t->nin + 2 * j];
			unique += partials[q * 2 * t->nin + 2 * j + 1];
		}
		rho = shared / (unique > eps ? unique : eps);
		rho = rho < 0 ? 0 : rho > plan_g(t, "alpha") ?
		    plan_g(t, "alpha") : rho;
		s->lambda[j] = 1 + plan_g(t, "r") * rho;
	}
	return NULL;
}

/* Adds model x's change where active: to ss, and times lam to su. */
GRAPH_SIMD static void
ram_add(const float *restrict x, const float *restrict b, size_t n,
    const uint8_t *restrict act, double lam, double *restrict ss,
    double *restrict su)
{
	double tau;
	size_t e;

	for (e = 0; e < n; e++) {
		tau = act[e] ? (double)x[e] - (double)b[e] : 0;
		ss[e] += tau;
		su[e] += lam * tau;
	}
}

/* lambda NULL: plain ram, unique changes kept as they are. */
static void
ram_combine(const struct plan_tensor *t, const double *lambda,
    const struct mchunk *c)
{
	const float *restrict b = c->in[t->base];
	float *restrict out = c->out;
	double eps = plan_g(t, "epsilon"), ss[RAM_STRIP], su[RAM_STRIP];
	uint8_t act[GRAPH_MAX_INPUTS][RAM_STRIP];
	uint32_t cnt[RAM_STRIP];
	size_t idx[GRAPH_MAX_INPUTS], k = plan_others(t, idx), e, i, j, s, n;

	for (s = 0; s < c->n; s += n) {
		n = c->n - s < RAM_STRIP ? c->n - s : RAM_STRIP;
		ram_actives(t, c, s, n, eps, act, cnt);
		memset(ss, 0, n * sizeof *ss);
		memset(su, 0, n * sizeof *su);
		for (i = 0; i < k; i++) {
			j = idx[i];
			ram_add(c->in[j] + s, b + s, n, act[j],
			    lambda != NULL ? lambda[j] : 1, ss, su);
		}
		for (e = 0; e < n; e++)
			out[s + e] = (float)((double)b[s + e] + (cnt[e] == 1 ?
			    su[e] : cnt[e] > 1 ? ss[e] / (double)cnt[e] : 0));
	}
}

static void
ram_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	(void)state;
	ram_combine(t, NULL, c);
}

static void
ramplus_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	const struct ramplus_state *s = state;

	ram_combine(t, s->lambda, c);
}

const struct graph_method method_ram = {
	.name = "ram",
	.pretty = "Reinforced Agent Merging",
	.url = "https://arxiv.org/abs/2601.13572",
	.params = ram_params,
	.nparams = sizeof ram_params / sizeof *ram_params,
	.flags = METHOD_NEEDS_BASE,
	.plan = ram_plan,
	.apply = ram_apply,
};

const struct graph_method method_ramplus_tl = {
	.name = "ramplus_tl",
	.pretty = "Reinforced Agent Merging Plus (Tensor-Local)",
	.url = "https://arxiv.org/abs/2601.13572",
	.params = ramplus_params,
	.nparams = sizeof ramplus_params / sizeof *ramplus_params,
	.flags = METHOD_NEEDS_BASE,
	.plan = ram_plan,
	.shape = ramplus_shape,
	.npasses = 1,
	.state_size = sizeof(struct ramplus_state),
	.stats = ramplus_stats,
	.reduce = ramplus_reduce,
	.apply = ramplus_apply,
};
