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

#include "graph-int.h"

struct ramplus_state {
	double lambda[GRAPH_MAX_INPUTS];	/* by input index */
};

static const struct method_param ram_params[] = {
	{ "epsilon", false, false, MP_FLOAT, 1e-5 },
};

static const struct method_param ramplus_params[] = {
	{ "r", false, false, MP_FLOAT, 0.1 },
	{ "alpha", false, false, MP_FLOAT, 0.2 },
	{ "epsilon", false, false, MP_FLOAT, 1e-5 },
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

static void
ramplus_stats(const struct plan_tensor *t, void *state, int pass,
    const struct mchunk *c)
{
	const float *b = c->in[t->base];
	double eps = plan_g(t, "epsilon"), *p = c->partials;
	size_t i, j, cnt;
	bool act[GRAPH_MAX_INPUTS];

	(void)state;
	(void)pass;
	memset(p, 0, 2 * t->nin * sizeof *p);
	for (i = 0; i < c->n; i++) {
		cnt = 0;
		for (j = 0; j < t->nin; j++) {
			act[j] = (int)j != t->base &&
			    fabs((double)c->in[j][i] - b[i]) > eps;
			cnt += act[j];
		}
		for (j = 0; j < t->nin; j++)
			if (act[j])
				p[2 * j + (cnt == 1)] += 1;
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

/* lambda NULL: plain ram, unique changes kept as they are. */
static void
ram_combine(const struct plan_tensor *t, const double *lambda,
    const struct mchunk *c)
{
	const float *b = c->in[t->base];
	double eps = plan_g(t, "epsilon"), tau, sum_u, sum_s;
	size_t i, j, cnt;

	for (i = 0; i < c->n; i++) {
		cnt = 0;
		sum_u = sum_s = 0;
		for (j = 0; j < t->nin; j++) {
			if ((int)j == t->base)
				continue;
			tau = (double)c->in[j][i] - b[i];
			if (fabs(tau) <= eps)
				continue;
			cnt++;
			sum_s += tau;
			sum_u += lambda != NULL ? lambda[j] * tau : tau;
		}
		c->out[i] = (float)(b[i] + (cnt == 1 ? sum_u : cnt > 1 ?
		    sum_s / (double)cnt : 0));
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
