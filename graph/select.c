/* SPDX-License-Identifier: MIT */
/*
 * select.c: radix selection, ranking within a vector, and the random
 * streams (select.h).
 */
#include <math.h>
#include <stdlib.h>

#include "graph-int.h"
#include "select.h"

static const unsigned sel_width[SEL_LEVELS] = { 11, 11, 10 };

static void
sel_cut_init(struct sel_cut *c, uint64_t rank)
{
	memset(c, 0, sizeof *c);
	c->on = true;
	c->rank = rank;
}

/* Keeps ascending positions [lo, hi) of n keys. */
void
sel_range_init(struct sel_range *r, uint64_t n, uint64_t lo, uint64_t hi)
{
	memset(r, 0, sizeof *r);
	r->lo = lo;
	r->hi = hi;
	if (lo >= hi || lo >= n) {
		r->none = true;
		return;
	}
	if (lo > 0)
		sel_cut_init(&r->cut[0], lo);
	if (hi < n)
		sel_cut_init(&r->cut[1], hi - 1);
}

/*
 * One level's histogram narrows the cut: the bin holding the wanted
 * position becomes part of the prefix.  NULL, or why the counts cannot
 * hold it (fewer keys were counted than the plan said there would be:
 * a file changed under us, or a bug).
 */
static const char *
sel_step_bins(struct sel_cut *c, const uint64_t *hist, size_t nbins,
    unsigned width, bool last)
{
	uint64_t cum = c->below;
	size_t b;

	if (!c->on)
		return NULL;
	for (b = 0; b < nbins; b++) {
		if (cum + hist[b] > c->rank) {
			c->prefix = (c->prefix << width) | (uint32_t)b;
			c->below = cum;
			if (last) {
				c->key = c->prefix;
				c->eq = hist[b];
			}
			return NULL;
		}
		cum += hist[b];
	}
	return "order statistics: fewer values counted than expected";
}

const char *
sel_step(struct sel_cut *c, const uint64_t *hist, int level)
{
	return sel_step_bins(c, hist, SEL_BINS, sel_width[level],
	    level == SEL_LEVELS - 1);
}

/* The same for the two wide levels (16 bits, then 15). */
const char *
sel_step_wide(struct sel_cut *c, const uint64_t *hist, int level)
{
	return level == 0 ? sel_step_bins(c, hist, SEL_WIDE_BINS0,
	    32 - 1 - SEL_WIDE_SHIFT, false) : sel_step_bins(c, hist,
	    SEL_WIDE_BINS1, SEL_WIDE_SHIFT, true);
}

/*
 * The keys equal to a cut that the range keeps: their count, and their
 * values at each cut (for sums).  Call after the last level.
 */
uint64_t
sel_range_ties_kept(const struct sel_range *r, double *at_lo, double *at_hi)
{
	const struct sel_cut *a = &r->cut[0], *b = &r->cut[1];
	uint64_t nlo = 0, nhi = 0;

	if (!r->none && a->on && b->on && a->key == b->key) {
		nlo = r->hi - r->lo;	/* everything kept is a tie */
	} else if (!r->none) {
		if (a->on)
			nlo = a->eq - (r->lo - a->below);
		if (b->on)
			nhi = r->hi - b->below;
	}
	*at_lo = a->on ? (double)nlo * sel_fval(a->key) : 0;
	*at_hi = b->on ? (double)nhi * sel_fval(b->key) : 0;
	return nlo + nhi;
}

/*
 * rank[i] = ascending position of keys[i] among n keys (ties by index),
 * by a stable three-digit LSD radix sort; tmp holds 2 n entries.
 */
void
sel_rank(const uint32_t *keys, uint32_t n, uint32_t *rank, uint32_t *tmp)
{
	uint32_t count[SEL_BINS], *src = tmp, *dst = tmp + n, *sw, i, sum, c;
	unsigned shift = 0;
	int level;

	for (i = 0; i < n; i++)
		src[i] = i;
	for (level = SEL_LEVELS - 1; level >= 0; level--) {
		memset(count, 0, sizeof count);
		for (i = 0; i < n; i++)
			count[(keys[src[i]] >> shift) & (SEL_BINS - 1)]++;
		for (sum = 0, i = 0; i < SEL_BINS; i++) {
			c = count[i];
			count[i] = sum;
			sum += c;
		}
		for (i = 0; i < n; i++)
			dst[count[(keys[src[i]] >> shift) &
			    (SEL_BINS - 1)]++] = src[i];
		sw = src;
		src = dst;
		dst = sw;
		shift += sel_width[level];
	}
	for (i = 0; i < n; i++)
		rank[src[i]] = i;
}

uint64_t
rng_stream(uint64_t seed, const char *tensor, uint64_t model)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *tensor != '\0'; tensor++) {
		h ^= (unsigned char)*tensor;
		h *= 0x100000001b3ull;
	}
	return rng_mix(rng_mix(rng_mix(seed) ^ h) ^ model);
}

/* Words below this are kept with probability p (2^32: always). */
uint64_t
rng_threshold(double p)
{
	if (!(p > 0))
		return 0;
	if (p >= 1)
		return 1ull << 32;
	return (uint64_t)ceil(p * 4294967296.0);
}

/*
 * Counts n keys into the cut's level histogram: all of them at level 0,
 * else those sharing its prefix, found by a comparison that vectorizes
 * (at levels past 0 few keys share it, so the increments are rare).
 */
GRAPH_SIMD static void
sel_count_simd(const struct sel_cut *c, uint64_t *restrict hist,
    const uint32_t *restrict key, size_t n, int level)
{
	static const unsigned shift[SEL_LEVELS] = { 21, 10, 0 };
	uint8_t match[256];
	unsigned s0, s1;
	uint32_t prefix;
	size_t e, b, len, any;

	if (!c->on)
		return;
	if (level == 0) {
		for (e = 0; e < n; e++)
			hist[key[e] >> shift[0]]++;
		return;
	}
	s0 = shift[level - 1];
	s1 = shift[level];
	prefix = c->prefix;
	for (b = 0; b < n; b += len) {
		len = n - b < sizeof match ? n - b : sizeof match;
		any = 0;
		for (e = 0; e < len; e++) {
			match[e] = key[b + e] >> s0 == prefix;
			any += match[e];
		}
		for (e = 0; any > 0 && e < len; e++) {
			if (match[e]) {
				hist[(key[b + e] >> s1) & (SEL_BINS - 1)]++;
				any--;
			}
		}
	}
}

/*
 * keep[] of a strip for a cut-based sparsifier: strictly inside the cuts
 * by comparison; keys equal to a cut (rare, but many in 16-bit models)
 * then in order, against the ties counted before them.
 */
GRAPH_SIMD static void
sel_keep_strip_simd(const struct sel_range *r, const uint32_t *restrict key,
    size_t n, uint64_t *tie, uint8_t *restrict keep)
{
	uint32_t lo = r->cut[0].on ? r->cut[0].key : 0;
	uint32_t hi = r->cut[1].on ? r->cut[1].key : UINT32_MAX;
	bool lo_on = r->cut[0].on, hi_on = r->cut[1].on;
	size_t e;

	if (r->none) {
		memset(keep, 0, n);
		return;
	}
	for (e = 0; e < n; e++)
		keep[e] = (!lo_on || key[e] > lo) & (!hi_on || key[e] < hi);
	for (e = 0; e < n; e++)
		if ((lo_on && key[e] == lo) || (hi_on && key[e] == hi))
			keep[e] = sel_keep(r, key[e], tie);
}

/* The exported names call the cloned implementations (see kernels.c). */
void
sel_count(const struct sel_cut *c, uint64_t *restrict hist,
    const uint32_t *restrict key, size_t n, int level)
{
	sel_count_simd(c, hist, key, n, level);
}

void
sel_keep_strip(const struct sel_range *r, const uint32_t *restrict key,
    size_t n, uint64_t *tie, uint8_t *restrict keep)
{
	sel_keep_strip_simd(r, key, n, tie, keep);
}
