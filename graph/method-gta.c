/* SPDX-License-Identifier: MIT */
/*
 * method-gta.c: mergekit's "generalized task arithmetic" family
 * (MERGEKIT.md Part B 4.2 and 4.4): task_arithmetic, ties, dare_ties,
 * dare_linear, breadcrumbs, breadcrumbs_ties, della and della_linear.
 *
 * Eight methods in one file, on purpose: they are one kernel (the passes
 * below) with a different sparsifier, sign rule and parameter list, so
 * each is one GTA_METHOD line at the end rather than a file of its own
 * that would repeat the passes.  "One method, one file" (method.c) holds
 * for kernels, not for names.
 *
 * For every non-base input i, delta_i = X_i - B (rounded to float32, the
 * precision the sparsifiers rank and sum in).  A sparsifier keeps part of
 * each delta and may rescale it to its former L1 norm; the kept deltas
 * are weighted, optionally filtered by sign consensus ("sum": an element
 * of a delta counts only where its weighted sign agrees with the sign of
 * the sum), summed, divided by the weights (normalize), scaled by lambda
 * and added to the base.  How each sparsifier runs in bounded memory:
 *
 *  magnitude (ties), magnitude_outliers (breadcrumbs): keep the ascending
 *    positions [lo, hi) of |delta| over the whole tensor, ties at a cut
 *    by element index.  Two histogram passes find the keys at the cuts
 *    (select.h, the wide levels: 16 bits, then 15).  In the second, each
 *    block also lists the distinct keys it has in each cut's first-level
 *    bin, with their counts: few, since 16-bit weights give few distinct
 *    deltas there.  From the lists the reduction knows how many keys equal
 *    to each cut came before every block (so the apply pass can break
 *    ties by index) and the L1 sums.  Only where a block had more than
 *    SEL_LIST distinct keys in a bin (float32 models) does a third pass
 *    count the ties per block and the sums.
 *  random (dare_*): keep an element with probability density, drawn from
 *    the counter-based stream of (seed, tensor, model, element); one pass
 *    for the L1 sums when rescaling.
 *  della_magprune (della*): per vector along axis 1 (rows of a matrix; a
 *    1-D tensor is one vector), rank |delta| and keep with probability
 *    density - epsilon + 2 epsilon (rank - 1) / (C - 1), or density when
 *    the vector has one element (C = 1, where upstream divides by zero).
 *
 * Differences from mergekit, on purpose: ties at a cut are broken by
 * index (upstream: unspecified); breadcrumbs keeps the right count when
 * top = 0 (Part A item 12); random draws come from our stream (item 11);
 * a density that would keep nothing, or a della epsilon out of range, is
 * a plan error rather than a crash halfway through the merge.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "method.h"
#include "select.h"

enum gta_sparse {
	GS_NONE,
	GS_MAGNITUDE,
	GS_OUTLIERS,
	GS_RANDOM,
	GS_DELLA,
};

struct gta_kind {
	enum gta_sparse sparse;
	bool consensus;
};

/*
 * Cut-based sparsifiers: the two selection levels, then, only where a
 * block's lists overflowed, a pass counting the ties per block.
 */
#define GTA_LEVEL0 0
#define GTA_LEVEL1 1
#define GTA_COUNT_PASS 2

/*
 * A block's partials, per delta, for the cut-based sparsifiers.  Level 1:
 * per cut, its list (select.h), then the sums of |delta| over all and over
 * the keys strictly between the cuts' first-level bins.  The count pass:
 * ties at each cut, the sum over all, the sum strictly inside the cuts.
 */
#define GTA_RED (2 * SEL_LIST_RED + 2)

/*
 * Per tensor.  Followed, for the cut-based sparsifiers, by the histograms
 * (k deltas x SEL_WIDE_BINS0: level 0's, then level 1's of both cuts) and
 * the ties before each block (blocks x k x 2), all uint64_t.
 */
struct gta_state {
	struct sel_range range[GRAPH_MAX_INPUTS];	/* by delta */
	double scale[GRAPH_MAX_INPUTS];		/* L1 rescale, by delta */
	bool listed;		/* level 1 listed every tie: no count pass */
	/* della with rescale: its statistics pass left every delta's keep
	 * mask in the cache (one bit an element, ms.cache_on), which the
	 * apply pass reads instead of ranking every row again. */
	bool masks;
};

static const struct gta_kind *
gta_kind(const struct plan_tensor *t)
{
	return t->method->priv;
}

static uint64_t
gta_nblocks(const struct plan_tensor *t)
{
	return (t->numel + GRAPH_QUANTUM - 1) / GRAPH_QUANTUM;
}

static uint64_t *
gta_hist(const struct plan_tensor *t, void *state, size_t i)
{
	(void)t;
	return (uint64_t *)((struct gta_state *)state + 1) +
	    i * SEL_WIDE_BINS0;
}

static uint64_t *
gta_ties(const struct plan_tensor *t, const void *state, uint64_t q,
    size_t i)
{
	size_t k = t->nin - 1;

	return (uint64_t *)((const struct gta_state *)state + 1) +
	    k * SEL_WIDE_BINS0 + (q * k + i) * 2;
}

/* Whether delta i (of input j) is sparsified at all. */
static bool
gta_active(const struct plan_tensor *t, size_t j)
{
	return gta_kind(t)->sparse != GS_NONE &&
	    plan_pm(t, j, "density") < 1;
}

/* The kept ascending positions of a cut-based sparsifier. */
static void
gta_range(const struct plan_tensor *t, size_t j, struct sel_range *r)
{
	uint64_t n = t->numel, keep, top, bottom;
	double d = plan_pm(t, j, "density");

	keep = (uint64_t)(d * (double)n);
	if (gta_kind(t)->sparse == GS_MAGNITUDE) {
		sel_range_init(r, n, n - keep, n);
		return;
	}
	top = (uint64_t)(plan_pm(t, j, "gamma") * (double)n);
	if (keep + top > n) {
		top = n - keep;
		bottom = 0;
	} else {
		bottom = n - keep - top;
	}
	sel_range_init(r, n, bottom, n - top);
}

static void
gta_plan(struct method_plan *mp)
{
	struct plan_tensor *t = mp->t;
	enum gta_sparse sp = gta_kind(t)->sparse;
	size_t idx[GRAPH_MAX_INPUTS], k = plan_others(t, idx), i, j;
	double d, g;

	if (k == 0) {
		mp->fold_copy = true;	/* only the base: nothing to add */
		mp->fold_input = (size_t)t->base;
		return;
	}
	for (i = 0; i < k; i++) {
		j = idx[i];
		d = plan_pm(t, j, "density");
		if (sp == GS_NONE || d >= 1)
			continue;
		if (d < 0 && sp != GS_DELLA) {
			plan_tensor_error(mp, "density %g is negative", d);
			return;
		}
		if (sp == GS_MAGNITUDE && (uint64_t)(d * (double)t->numel) ==
		    0) {
			plan_tensor_error(mp, "density %g keeps none of its "
			    "%llu elements; %s needs a larger density", d,
			    (unsigned long long)t->numel, t->method->name);
			return;
		}
		if (sp == GS_OUTLIERS && (g = plan_pm(t, j, "gamma")) < 0) {
			plan_tensor_error(mp, "gamma %g is negative", g);
			return;
		}
		if (sp == GS_DELLA && d > 0 &&
		    (d + (g = plan_pm(t, j, "epsilon")) >= 1 || d - g <= 0)) {
			plan_tensor_error(mp, "epsilon %g with density %g: "
			    "density - epsilon and density + epsilon must lie "
			    "in (0, 1)", g, d);
			return;
		}
	}
}

/* One delta's keep mask: a bit an element. */
static size_t
gta_mask_bytes(const struct plan_tensor *t)
{
	return (size_t)((t->numel + 7) / 8);
}

/* Delta i's keep mask in the tensor's cache (ms.cache_on). */
static uint8_t *
gta_mask(const struct plan_tensor *t, const void *state, size_t i)
{
	return (uint8_t *)state + t->ms.state_size + i * gta_mask_bytes(t);
}

/*
 * keep[] of n elements from e0 into mask's bits.  Units cover disjoint
 * elements, but two may share the byte at their border: those bytes are
 * or-ed in atomically, the others stored.
 */
static void
gta_mask_put(uint8_t *mask, uint64_t e0, const uint8_t *keep, size_t n)
{
	uint64_t e = e0, end = e0 + n;
	uint8_t b;
	int k;

	for (; e < end && (e & 7) != 0; e++)
		if (keep[e - e0])
			__atomic_fetch_or(&mask[e >> 3], (uint8_t)(1u <<
			    (e & 7)), __ATOMIC_RELAXED);
	for (; e + 8 <= end; e += 8) {
		for (b = 0, k = 0; k < 8; k++)
			b |= (uint8_t)((keep[e - e0 + k] != 0) << k);
		mask[e >> 3] = b;
	}
	for (; e < end; e++)
		if (keep[e - e0])
			__atomic_fetch_or(&mask[e >> 3], (uint8_t)(1u <<
			    (e & 7)), __ATOMIC_RELAXED);
}

/* keep[] of n elements from e0, from mask's bits. */
static void
gta_mask_get(const uint8_t *mask, uint64_t e0, size_t n, uint8_t *keep)
{
	uint64_t e;

	for (e = e0; e < e0 + n; e++)
		keep[e - e0] = (uint8_t)(mask[e >> 3] >> (e & 7) & 1);
}

static void
gta_shape(const struct plan_tensor *t, struct method_shape *ms)
{
	const struct gta_kind *kind = gta_kind(t);
	size_t idx[GRAPH_MAX_INPUTS], k = plan_others(t, idx), i;
	bool active = false, rescale = plan_g(t, "rescale") != 0;

	for (i = 0; i < k; i++)
		active = active || gta_active(t, idx[i]);
	if (!active)
		return;		/* a plain weighted sum: no statistics */
	ms->state_size = sizeof(struct gta_state);
	switch (kind->sparse) {
	case GS_NONE:
		break;
	case GS_MAGNITUDE:
	case GS_OUTLIERS:
		ms->npasses = GTA_COUNT_PASS + 1;
		ms->nred = GTA_RED * (int)k;
		/* A unit counts at most 2^32 - 1 keys a bin: uint32_t. */
		ms->scratch = k * SEL_WIDE_BINS0 * sizeof(uint32_t);
		ms->state_size += (k * SEL_WIDE_BINS0 + gta_nblocks(t) * k *
		    2) * sizeof(uint64_t);
		break;
	case GS_RANDOM:
		ms->npasses = rescale ? 1 : 0;
		ms->nred = 2 * (int)k;
		break;
	case GS_DELLA:
		ms->npasses = rescale ? 1 : 0;
		ms->nred = 2 * (int)k;
		ms->rows = true;
		ms->row_len = t->ndim >= 2 ? t->numel / (uint64_t)t->shape[0] :
		    t->numel;
		/* Ranking every row is most of della's time: done once,
		 * in the statistics pass, its masks kept for the apply
		 * pass when the budget has room (layout_caches). */
		if (rescale)
			ms->cache_size = k * gta_mask_bytes(t);
		break;
	}
}

/*
 * Deltas go through the kernels a strip at a time: delta_i (float32) and
 * its ranking key for every element of the strip, then the keep mask, in
 * loops over elements that vectorize.
 */
#define GTA_STRIP 512

GRAPH_SIMD static void
gta_strip(const float *restrict x, const float *restrict b, size_t n,
    float *restrict d, uint32_t *restrict key)
{
	uint32_t k;
	size_t e;
	float v;

	for (e = 0; e < n; e++) {
		v = x[e] - b[e];
		d[e] = v;
		memcpy(&k, &v, sizeof k);
		key[e] = k & 0x7fffffffu;	/* |v| */
	}
}

/*
 * word[] = the stream's words for elements e0 .. e0 + n - 1.  A run that
 * stays under one multiple of 2^32 (all but one in 4 billion) works on
 * 32-bit words, which vectorizes.
 */
GRAPH_SIMD static void
gta_words(uint64_t stream, uint64_t e0, size_t n, uint32_t *restrict word)
{
	uint32_t lo = (uint32_t)e0, a = (uint32_t)stream, b;
	size_t e;

	if ((e0 >> 32) != ((e0 + n - 1) >> 32)) {
		for (e = 0; e < n; e++)
			word[e] = rng_u32(stream, e0 + e);
		return;
	}
	b = (uint32_t)(stream >> 32) ^ (uint32_t)(e0 >> 32) * 0x9e3779b9u;
	for (e = 0; e < n; e++)
		word[e] = rng_h32(rng_h32((lo + (uint32_t)e) ^ a) ^ b);
}

/* keep[] of a strip by the random stream: its word below thr. */
GRAPH_SIMD static void
gta_keep_random(uint64_t stream, uint64_t e0, size_t n, uint64_t thr,
    uint8_t *restrict keep)
{
	uint32_t word[GTA_STRIP], t32 = (uint32_t)thr;
	size_t e;

	if (thr > UINT32_MAX) {
		memset(keep, 1, n);
		return;
	}
	gta_words(stream, e0, n, word);
	for (e = 0; e < n; e++)
		keep[e] = word[e] < t32;
}

/*
 * della's keep[] of one contiguous vector of C elements: kept with
 * probability lo + 2 epsilon rank / (C - 1), as word < p 2^32; the
 * scalar path's expression, operation for operation.
 */
GRAPH_SIMD static void
gta_della_strip(const uint32_t *restrict word, const uint32_t *restrict rank,
    size_t n, double lo, double twoeps, uint8_t *restrict keep)
{
	double den = (double)(n - 1);
	size_t e;

	for (e = 0; e < n; e++)
		keep[e] = (double)word[e] < (lo + twoeps * (double)rank[e] /
		    den) * 4294967296.0;
}

/* The |delta| keys of n contiguous elements. */
GRAPH_SIMD static void
gta_keys(const float *restrict x, const float *restrict b, size_t n,
    uint32_t *restrict key)
{
	uint32_t k;
	size_t e;
	float v;

	for (e = 0; e < n; e++) {
		v = x[e] - b[e];
		memcpy(&k, &v, sizeof k);
		key[e] = k & 0x7fffffffu;
	}
}

/*
 * della: keep[] for one block of whole slabs (a slab is everything under
 * one index of axis 0; its vectors run along axis 1).
 */
static void
gta_della_keep(const struct plan_tensor *t, size_t j, const struct mchunk *c,
    uint8_t *keep)
{
	const float *x = c->in[j], *b = c->in[t->base];
	double d = plan_pm(t, j, "density"), eps = plan_pm(t, j, "epsilon");
	uint64_t len = (uint64_t)c->cols, e0, e;
	uint64_t nv = t->ndim >= 2 ? (uint64_t)t->shape[1] : len;
	uint64_t stride = len / nv, stream;
	double lo = d - eps;
	uint32_t *key, *rank, *word, r;
	uint64_t *tmp;
	size_t s, v;
	float dv;

	if (d <= 0) {
		memset(keep, 0, c->n);
		return;
	}
	stream = rng_stream(t->seed, t->name, t->in[j].model);
	key = xreallocarray(NULL, 3 * nv, sizeof *key);
	rank = key + nv;
	word = rank + nv;
	tmp = xreallocarray(NULL, 2 * nv, sizeof *tmp);
	for (s = 0; s < c->nrows; s++) {
		for (v = 0; v < stride; v++) {
			e0 = s * len + v;
			if (stride == 1) {
				/* Matrices: the vector is contiguous. */
				gta_keys(x + e0, b + e0, nv, key);
			} else {
				for (r = 0; r < nv; r++) {
					dv = x[e0 + r * stride] -
					    b[e0 + r * stride];
					key[r] = sel_fkey(dv);
				}
			}
			sel_rank(key, (uint32_t)nv, rank, tmp);
			/* word < ceil(p 2^32) is word < p 2^32 */
			if (stride == 1 && nv > 1) {
				gta_words(stream, c->e0 + e0, nv, word);
				gta_della_strip(word, rank, nv, lo, 2 * eps,
				    keep + e0);
				continue;
			}
			for (r = 0; r < nv; r++) {
				e = e0 + r * stride;
				keep[e] = (double)rng_u32(stream, c->e0 + e) <
				    (nv == 1 ? d : lo + 2 * eps *
				    (double)rank[r] / (double)(nv - 1)) *
				    4294967296.0;
			}
		}
	}
	free(tmp);
	free(key);
}

/* What the kernels need of one delta, fixed for the tensor. */
struct gta_delta {
	const float *x;		/* its input, this block */
	bool active;		/* sparsified */
	uint64_t stream;	/* random */
	uint64_t thr;
	uint8_t *keep;		/* della: the whole block's mask */
	uint64_t tie[2];	/* cuts: ties so far */
};

static void
gta_setup(const struct plan_tensor *t, const void *state,
    const struct mchunk *c, size_t *idx, size_t k, struct gta_delta *dl)
{
	enum gta_sparse sp = gta_kind(t)->sparse;
	size_t i;

	for (i = 0; i < k; i++) {
		memset(&dl[i], 0, sizeof dl[i]);
		dl[i].x = c->in[idx[i]];
		dl[i].active = gta_active(t, idx[i]);
		if (!dl[i].active)
			continue;
		if (sp == GS_RANDOM) {
			dl[i].stream = rng_stream(t->seed, t->name,
			    t->in[idx[i]].model);
			dl[i].thr = rng_threshold(plan_pm(t, idx[i],
			    "density"));
		} else if (sp == GS_DELLA) {
			dl[i].keep = xmalloc(c->n);
			if (state != NULL &&
			    ((const struct gta_state *)state)->masks)
				gta_mask_get(gta_mask(t, state, i), c->e0, c->n,
				    dl[i].keep);
			else
				gta_della_keep(t, idx[i], c, dl[i].keep);
		} else if (sp != GS_NONE && state != NULL) {
			memcpy(dl[i].tie, gta_ties(t, state, c->e0 /
			    c->quantum, i), sizeof dl[i].tie);
		}
	}
}

static void
gta_teardown(struct gta_delta *dl, size_t k)
{
	size_t i;

	for (i = 0; i < k; i++)
		free(dl[i].keep);
}

/* keep[] of delta i over the strip at offset s of the block. */
static void
gta_keep(const struct plan_tensor *t, const struct gta_state *st,
    struct gta_delta *dl, size_t i, const struct mchunk *c, size_t s,
    size_t n, const uint32_t *key, uint8_t *keep)
{
	if (!dl->active) {
		memset(keep, 1, n);
		return;
	}
	switch (gta_kind(t)->sparse) {
	case GS_NONE:
		memset(keep, 1, n);
		break;
	case GS_MAGNITUDE:
	case GS_OUTLIERS:
		sel_keep_strip(&st->range[i], key, n, dl->tie, keep);
		break;
	case GS_RANDOM:
		gta_keep_random(dl->stream, c->e0 + s, n, dl->thr, keep);
		break;
	case GS_DELLA:
		memcpy(keep, dl->keep + s, n);
		break;
	}
}

/* Level 0 of the cut-based sparsifiers: every key, by its top 16 bits. */
GRAPH_SIMD static void
gta_count0(uint32_t *restrict h, const uint32_t *restrict key, size_t n)
{
	size_t e;

	for (e = 0; e < n; e++)
		h[key[e] >> SEL_WIDE_SHIFT]++;
}

/* keep[] of the keys strictly between the cuts' level-0 bins. */
GRAPH_SIMD static void
gta_inside0(const struct sel_range *r, const uint32_t *restrict key, size_t n,
    uint8_t *restrict keep)
{
	uint32_t lo = r->cut[0].prefix, hi = r->cut[1].prefix, b;
	int lo_on = r->cut[0].on, hi_on = r->cut[1].on, some = !r->none;
	size_t e;

	for (e = 0; e < n; e++) {
		b = key[e] >> SEL_WIDE_SHIFT;
		keep[e] = some & ((!lo_on) | (b > lo)) & ((!hi_on) | (b < hi));
	}
}

/* Counts the keys equal to each cut; keep[] the keys strictly inside. */
GRAPH_SIMD static void
gta_tie_strip(const struct sel_range *r, const uint32_t *restrict key,
    size_t n, uint64_t *eq, uint8_t *restrict keep)
{
	uint32_t lo = r->cut[0].key, hi = r->cut[1].key;
	int lo_on = r->cut[0].on, hi_on = r->cut[1].on, some = !r->none;
	uint64_t n0 = 0, n1 = 0;
	size_t e;

	for (e = 0; e < n; e++) {
		n0 += lo_on & (key[e] == lo);
		n1 += hi_on & (key[e] == hi);
		keep[e] = some & ((!lo_on) | (key[e] > lo)) &
		    ((!hi_on) | (key[e] < hi));
	}
	eq[0] += n0;
	eq[1] += n1;
}

/*
 * Sum of |d| (where keep, if given), element e into lane e mod 8, the
 * lanes added in a fixed order.
 */
GRAPH_SIMD static double
gta_l1(const float *restrict d, const uint8_t *restrict keep, size_t n)
{
	double acc[8] = { 0 };
	size_t e, l;

	if (keep == NULL) {
		for (e = 0; e + 8 <= n; e += 8)
			for (l = 0; l < 8; l++)
				acc[l] += (double)fabsf(d[e + l]);
	} else {
		/* Times 0 or 1 rather than a branch: it vectorizes. */
		for (e = 0; e + 8 <= n; e += 8)
			for (l = 0; l < 8; l++)
				acc[l] += (double)fabsf(d[e + l]) *
				    (double)keep[e + l];
	}
	for (l = 0; e < n; e++, l++)
		acc[l] += keep == NULL || keep[e] ? (double)fabsf(d[e]) : 0;
	return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) +
	    (acc[6] + acc[7]));
}

/*
 * One block of a statistics pass of a cut-based sparsifier, for delta i:
 * p its partials (GTA_RED doubles), h its part of the unit's scratch.
 */
static void
gta_stats_cuts(const struct plan_tensor *t, const struct sel_range *r,
    int pass, const float *x, const float *b, size_t len, double *p,
    uint32_t *h)
{
	bool sums = plan_g(t, "rescale") != 0;
	struct sel_list list[2] = { { .n = 0 }, { .n = 0 } };
	float d[GTA_STRIP];
	uint32_t key[GTA_STRIP];
	uint8_t keep[GTA_STRIP];
	uint64_t eq[2] = { 0, 0 };
	size_t s, n;

	if (pass != GTA_LEVEL0)
		memset(p, 0, GTA_RED * sizeof *p);
	for (s = 0; s < len; s += n) {
		n = len - s < GTA_STRIP ? len - s : GTA_STRIP;
		if (pass == GTA_LEVEL0 || (pass == GTA_LEVEL1 && !sums))
			gta_keys(x + s, b + s, n, key);
		else
			gta_strip(x + s, b + s, n, d, key);
		switch (pass) {
		case GTA_LEVEL0:
			gta_count0(h, key, n);
			break;
		case GTA_LEVEL1:
			sel_list_strip(&r->cut[0], &list[0], h, key, n);
			sel_list_strip(&r->cut[1], &list[1], h +
			    SEL_WIDE_BINS1, key, n);
			if (sums) {
				gta_inside0(r, key, n, keep);
				p[2 * SEL_LIST_RED] += gta_l1(d, NULL, n);
				p[2 * SEL_LIST_RED + 1] += gta_l1(d, keep, n);
			}
			break;
		default:
			gta_tie_strip(r, key, n, eq, keep);
			if (sums) {
				p[2] += gta_l1(d, NULL, n);
				p[3] += gta_l1(d, keep, n);
			}
			break;
		}
	}
	if (pass == GTA_LEVEL1) {
		sel_list_save(&list[0], p);
		sel_list_save(&list[1], p + SEL_LIST_RED);
	} else if (pass == GTA_COUNT_PASS) {
		p[0] = (double)eq[0];
		p[1] = (double)eq[1];
	}
}

static void
gta_stats(const struct plan_tensor *t, void *state, int pass,
    const struct mchunk *c)
{
	const struct gta_state *st = state;
	enum gta_sparse sp = gta_kind(t)->sparse;
	size_t idx[GRAPH_MAX_INPUTS], k = plan_others(t, idx), i, s, n, r;
	struct gta_delta dl[GRAPH_MAX_INPUTS];
	size_t rows = t->ms.rows ? c->nrows : 1;
	size_t len = t->ms.rows ? c->cols : c->n;
	const float *b = c->in[t->base];
	float d[GTA_STRIP];
	uint32_t key[GTA_STRIP];
	uint8_t keep[GTA_STRIP];
	double *p;

	if (sp == GS_MAGNITUDE || sp == GS_OUTLIERS) {
		for (i = 0; i < k; i++)
			if (gta_active(t, idx[i]))
				gta_stats_cuts(t, &st->range[i], pass,
				    c->in[idx[i]], b, c->n, c->partials + i *
				    GTA_RED, (uint32_t *)c->scratch + i *
				    SEL_WIDE_BINS0);
		return;
	}
	gta_setup(t, state, c, idx, k, dl);
	for (i = 0; i < k; i++) {
		if (!dl[i].active)
			continue;
		if (dl[i].keep != NULL && t->ms.cache_on)
			gta_mask_put(gta_mask(t, state, i), c->e0, dl[i].keep,
			    c->n);
		for (r = 0; r < rows; r++) {
			p = c->partials + (r * k + i) * 2;
			memset(p, 0, 2 * sizeof *p);
			for (s = r * len; s < (r + 1) * len; s += n) {
				n = (r + 1) * len - s < GTA_STRIP ?
				    (r + 1) * len - s : GTA_STRIP;
				gta_strip(dl[i].x + s, b + s, n, d, key);
				gta_keep(t, st, &dl[i], i, c, s, n, key, keep);
				p[0] += gta_l1(d, NULL, n);
				p[1] += gta_l1(d, keep, n);
			}
		}
	}
	gta_teardown(dl, k);
}

/* Adds a unit's histograms (uint32_t) into the tensor's (uint64_t). */
static void
gta_merge(const struct plan_tensor *t, void *state, int pass,
    const void *scratch)
{
	const uint32_t *s = scratch;
	uint64_t *h = gta_hist(t, state, 0);
	size_t i, n = (t->nin - 1) * SEL_WIDE_BINS0;

	if (pass > GTA_LEVEL1)
		return;
	for (i = 0; i < n; i++)
		h[i] += s[i];
}

static double
gta_rescale(const struct plan_tensor *t, double before, double after)
{
	if (plan_g(t, "rescale") == 0 || before < 1e-7 || after < 1e-7)
		return 1;
	return before / after;
}

/*
 * Level 1 of delta i from the blocks' lists, added to the histograms of
 * the blocks that overflowed: the cuts' keys, then, when every block
 * listed its keys, the ties before each block and the L1 rescale.  False
 * when the count pass must do the last two.
 */
static bool
gta_level1(const struct plan_tensor *t, struct gta_state *st, size_t i,
    const double *partials, size_t nq, const char **why)
{
	struct sel_range *r = &st->range[i];
	size_t k = t->nin - 1, q, c;
	uint64_t *h = gta_hist(t, st, i), run[2] = { 0, 0 }, *tie, cnt;
	double all = 0, in = 0, at_lo, at_hi, v;
	bool listed = true;
	uint32_t key;
	int j;

	for (c = 0; c < 2; c++)
		if ((*why = sel_list_step(&r->cut[c], h + c * SEL_WIDE_BINS1,
		    partials + i * GTA_RED + c * SEL_LIST_RED, k * GTA_RED, nq,
		    &listed)) != NULL)
			return false;
	if (!listed)
		return false;
	for (q = 0; q < nq; q++) {
		const double *p = partials + (q * k + i) * GTA_RED;
		tie = gta_ties(t, st, q, i);
		for (c = 0; c < 2; c++) {
			tie[c] = run[c];
			run[c] += sel_list_ties(&r->cut[c], p + c *
			    SEL_LIST_RED);
		}
		if (plan_g(t, "rescale") == 0)
			continue;
		all += p[2 * SEL_LIST_RED];
		in += p[2 * SEL_LIST_RED + 1];
		/* Keys in the cuts' level-0 bins strictly between the cut
		 * keys; both lists are one when the cuts share a bin. */
		for (c = 0; c < 2 && !r->none; c++) {
			if (!r->cut[c].on || (c == 1 && r->cut[0].on &&
			    r->cut[0].key >> SEL_WIDE_SHIFT ==
			    r->cut[1].key >> SEL_WIDE_SHIFT))
				continue;
			for (j = 0; j < (int)p[c * SEL_LIST_RED]; j++) {
				key = r->cut[c].key >> SEL_WIDE_SHIFT <<
				    SEL_WIDE_SHIFT | sel_list_low(p + c *
				    SEL_LIST_RED, j);
				cnt = sel_list_count(p + c * SEL_LIST_RED, j);
				v = (double)sel_fval(key);
				if ((!r->cut[0].on || key > r->cut[0].key) &&
				    (!r->cut[1].on || key < r->cut[1].key))
					in += (double)cnt * v;
			}
		}
	}
	sel_range_ties_kept(r, &at_lo, &at_hi);
	st->scale[i] = gta_rescale(t, all, in + at_lo + at_hi);
	return true;
}

static const char *
gta_reduce_cuts(const struct plan_tensor *t, struct gta_state *st, int pass,
    const double *partials, size_t nq)
{
	size_t idx[GRAPH_MAX_INPUTS], k = plan_others(t, idx), i, q;
	struct sel_range *r;
	const char *why = NULL;
	uint64_t run[2], *h, *tie;
	double all, in, at_lo, at_hi;

	if (pass == GTA_LEVEL1)
		st->listed = true;
	for (i = 0; i < k; i++) {
		if (pass == GTA_LEVEL0)
			st->scale[i] = 1;
		if (!gta_active(t, idx[i]))
			continue;
		r = &st->range[i];
		if (pass == GTA_LEVEL0) {
			gta_range(t, idx[i], r);
			/* One histogram for both cuts. */
			h = gta_hist(t, st, i);
			if ((why = sel_step_wide(&r->cut[0], h, 0)) != NULL ||
			    (why = sel_step_wide(&r->cut[1], h, 0)) != NULL)
				return why;
			memset(h, 0, SEL_WIDE_BINS0 * sizeof *h);
			continue;
		}
		if (pass == GTA_LEVEL1) {
			if (!gta_level1(t, st, i, partials, nq, &why))
				st->listed = false;
			if (why != NULL)
				return why;
			continue;
		}
		run[0] = run[1] = 0;
		all = in = 0;
		for (q = 0; q < nq; q++) {
			const double *p = partials + (q * k + i) * GTA_RED;
			tie = gta_ties(t, st, q, i);
			tie[0] = run[0];
			tie[1] = run[1];
			run[0] += (uint64_t)p[0];
			run[1] += (uint64_t)p[1];
			all += p[2];
			in += p[3];
		}
		sel_range_ties_kept(r, &at_lo, &at_hi);
		st->scale[i] = gta_rescale(t, all, in + at_lo + at_hi);
	}
	return NULL;
}

/* The count pass is needed only where a block's lists overflowed. */
static bool
gta_skip_next(const struct plan_tensor *t, const void *state, int pass)
{
	const struct gta_state *st = state;
	enum gta_sparse sp = gta_kind(t)->sparse;

	return (sp == GS_MAGNITUDE || sp == GS_OUTLIERS) &&
	    pass == GTA_LEVEL1 && st->listed;
}

static const char *
gta_reduce(const struct plan_tensor *t, void *state, int pass,
    const double *partials, size_t nq)
{
	struct gta_state *st = state;
	size_t k = t->nin - 1, i, q;
	double all, kept;

	if (gta_kind(t)->sparse == GS_MAGNITUDE ||
	    gta_kind(t)->sparse == GS_OUTLIERS)
		return gta_reduce_cuts(t, st, pass, partials, nq);
	for (i = 0; i < k; i++) {
		all = kept = 0;
		for (q = 0; q < nq; q++) {
			all += partials[(q * k + i) * 2];
			kept += partials[(q * k + i) * 2 + 1];
		}
		st->scale[i] = gta_rescale(t, all, kept);
	}
	/* Every unit of the pass has put its masks: the apply pass's. */
	st->masks = gta_kind(t)->sparse == GS_DELLA && t->ms.cache_on;
	return NULL;
}

/* sum[] += f (x - b), the delta rounded to float32 first, for a delta
 * kept whole. */
GRAPH_SIMD static void
gta_sum_whole(const float *restrict x, const float *restrict b, size_t n,
    double f, double *restrict sum)
{
	size_t e;
	float d;

	for (e = 0; e < n; e++) {
		d = x[e] - b[e];
		sum[e] += f * d;
	}
}

/*
 * Sign consensus over a strip: an element of a weighted delta counts
 * where its sign is the sign of their sum (a zero never counts); the
 * divisor is the sum of the counted weights, 1 where none.
 */
GRAPH_SIMD static void
gta_consensus(const double *restrict sum, const double *restrict wd,
    double w, size_t n, double *restrict mixed, double *restrict div)
{
	int agree;
	size_t e;

	for (e = 0; e < n; e++) {
		agree = ((sum[e] >= 0) & (wd[e] > 0)) |
		    ((sum[e] < 0) & (wd[e] < 0));
		mixed[e] += agree ? wd[e] : 0;
		div[e] += agree ? w : 0;
	}
}

GRAPH_SIMD static void
gta_apply(const struct plan_tensor *t, const void *state,
    const struct mchunk *c)
{
	const struct gta_state *st = state;
	size_t idx[GRAPH_MAX_INPUTS], k = plan_others(t, idx), i, e, s, n;
	struct gta_delta dl[GRAPH_MAX_INPUTS];
	const float *b = c->in[t->base];
	double w[GRAPH_MAX_INPUTS], f[GRAPH_MAX_INPUTS], wsum = 0, lambda;
	double sum[GTA_STRIP], mixed[GTA_STRIP], div[GTA_STRIP], *wd;
	bool cons = gta_kind(t)->consensus, norm = plan_g(t, "normalize") != 0;
	float d[GTA_STRIP];
	uint32_t key[GTA_STRIP];
	uint8_t keep[GTA_STRIP];

	for (i = 0; i < k; i++) {
		wsum += w[i] = plan_pm(t, idx[i], "weight");
		/* The delta's factor where kept: weight times rescale. */
		f[i] = w[i] * (t->ms.npasses > 0 ? st->scale[i] : 1);
	}
	if (fabs(wsum) < 1e-8)
		wsum = 1;
	lambda = plan_g(t, "lambda");
	gta_setup(t, state, c, idx, k, dl);
	wd = xreallocarray(NULL, k * GTA_STRIP, sizeof *wd);
	for (s = 0; s < c->n; s += n) {
		n = c->n - s < GTA_STRIP ? c->n - s : GTA_STRIP;
		memset(sum, 0, n * sizeof *sum);
		for (i = 0; i < k; i++) {
			double *restrict v = wd + i * GTA_STRIP, fi = f[i];
			/* Without consensus nothing reads v[]; a delta kept
			 * whole adds to the sum with the same operations. */
			if (!cons && (!dl[i].active ||
			    gta_kind(t)->sparse == GS_NONE)) {
				gta_sum_whole(dl[i].x + s, b + s, n, fi, sum);
				continue;
			}
			gta_strip(dl[i].x + s, b + s, n, d, key);
			gta_keep(t, st, &dl[i], i, c, s, n, key, keep);
			for (e = 0; e < n; e++) {
				v[e] = keep[e] ? fi * d[e] : 0;
				sum[e] += v[e];
			}
		}
		if (cons) {
			memset(mixed, 0, n * sizeof *mixed);
			memset(div, 0, n * sizeof *div);
			for (i = 0; i < k; i++)
				gta_consensus(sum, wd + i * GTA_STRIP, w[i], n,
				    mixed, div);
			for (e = 0; e < n; e++)
				div[e] = div[e] == 0 ? 1 : div[e];
			for (e = 0; e < n; e++)
				c->out[s + e] = (float)((double)b[s + e] +
				    (norm ? mixed[e] / div[e] : mixed[e]) *
				    lambda);
		} else {
			for (e = 0; e < n; e++)
				c->out[s + e] = (float)((double)b[s + e] +
				    (norm ? sum[e] / wsum : sum[e]) * lambda);
		}
	}
	free(wd);
	gta_teardown(dl, k);
}

#define GTA_COMMON(norm, resc) \
	{ "int8_mask", false, MP_OPTIONAL, MP_BOOL, 0 }, \
	{ "normalize", false, MP_OPTIONAL, MP_BOOL, norm }, \
	{ "rescale", false, MP_OPTIONAL, MP_BOOL, resc }, \
	{ "lambda", false, MP_OPTIONAL, MP_FLOAT, 1 }, \
	{ "weight", true, MP_REQUIRED, MP_FLOAT, 0 }, \
	{ "density", true, MP_OPTIONAL, MP_FLOAT, 1 }

static const struct method_param ta_params[] = { GTA_COMMON(0, 0) };
static const struct method_param ties_params[] = { GTA_COMMON(1, 0) };
static const struct method_param dare_params[] = { GTA_COMMON(0, 1) };
static const struct method_param crumbs_params[] = {
	GTA_COMMON(0, 0),
	{ "gamma", true, MP_OPTIONAL, MP_FLOAT, 0.01 },
};
static const struct method_param della_params[] = {
	GTA_COMMON(1, 1),
	{ "epsilon", true, MP_OPTIONAL, MP_FLOAT, 0.15 },
};
static const struct method_param della_linear_params[] = {
	GTA_COMMON(0, 1),
	{ "epsilon", true, MP_OPTIONAL, MP_FLOAT, 0.15 },
};

#define GTA_METHOD(sym, nm, pp, u, pr, sp, cons) \
	static const struct gta_kind sym##_kind = { sp, cons }; \
	const struct graph_method sym = { \
		.name = nm, \
		.pretty = pp, \
		.url = u, \
		.params = pr, \
		.nparams = sizeof pr / sizeof *pr, \
		.flags = METHOD_NEEDS_BASE | METHOD_BASE_CROP, \
		.priv = &sym##_kind, \
		.plan = gta_plan, \
		.shape = gta_shape, \
		.stats = gta_stats, \
		.merge = gta_merge, \
		.reduce = gta_reduce, \
		.skip_next = gta_skip_next, \
		.apply = gta_apply, \
	}

#define ARXIV_DARE "https://arxiv.org/abs/2311.03099"
#define ARXIV_CRUMBS "https://arxiv.org/abs/2312.06795"
#define ARXIV_DELLA "https://arxiv.org/abs/2406.11617"

GTA_METHOD(method_task_arithmetic, "task_arithmetic", "Task Arithmetic",
    "https://arxiv.org/abs/2212.04089", ta_params, GS_NONE, false);
GTA_METHOD(method_ties, "ties", "TIES", "https://arxiv.org/abs/2306.01708",
    ties_params, GS_MAGNITUDE, true);
GTA_METHOD(method_dare_ties, "dare_ties", "DARE TIES", ARXIV_DARE,
    dare_params, GS_RANDOM, true);
GTA_METHOD(method_dare_linear, "dare_linear", "Linear DARE", ARXIV_DARE,
    dare_params, GS_RANDOM, false);
GTA_METHOD(method_breadcrumbs, "breadcrumbs", "Model Breadcrumbs",
    ARXIV_CRUMBS, crumbs_params, GS_OUTLIERS, false);
GTA_METHOD(method_breadcrumbs_ties, "breadcrumbs_ties",
    "Model Breadcrumbs with TIES", ARXIV_CRUMBS, crumbs_params, GS_OUTLIERS,
    true);
GTA_METHOD(method_della, "della", "DELLA", ARXIV_DELLA, della_params,
    GS_DELLA, true);
GTA_METHOD(method_della_linear, "della_linear", "Linear DELLA", ARXIV_DELLA,
    della_linear_params, GS_DELLA, false);
