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

/*
 * The ncut searches of c over n keys held in memory: the SEL_LEVELS
 * levels a tensor's statistics passes would run, over the array (hist:
 * SEL_BINS counts of scratch).  Returns NULL, or why a search failed.
 */
const char *
sel_find(struct sel_cut *c, size_t ncut, const uint32_t *key, size_t n,
    uint64_t *hist)
{
	static const struct sel_cut all = { .on = true };
	const char *why;
	size_t j;
	int level;

	for (level = 0; level < SEL_LEVELS; level++) {
		for (j = 0; j < ncut; j++) {
			/* Level 0 counts every key, the same for each cut. */
			if (level > 0 || j == 0) {
				memset(hist, 0, SEL_BINS * sizeof *hist);
				sel_count(level == 0 ? &all : &c[j], hist, key,
				    n, level);
			}
			if ((why = sel_step(&c[j], hist, level)) != NULL)
				return why;
		}
	}
	return NULL;
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

#define SEL_LIST_PACK 131072.0	/* 2^17: a count is at most 65536 */

/*
 * Adds the keys of a strip in the cut's level-0 bin to the block's list;
 * once the list is full, it goes into the level-1 histogram h, and so
 * does every key after it.
 */
GRAPH_SIMD static void
sel_list_strip_simd(const struct sel_cut *c, struct sel_list *l,
    uint32_t *restrict h, const uint32_t *restrict key, size_t n)
{
	uint32_t prefix = c->prefix, low;
	uint8_t match[512];
	size_t e, b, len, end;
	int j;

	for (b = 0; b < n; b += len) {
		len = n - b < sizeof match ? n - b : sizeof match;
		end = (len + 7) & ~(size_t)7;
		for (e = 0; e < len; e++)
			match[e] = key[b + e] >> SEL_WIDE_SHIFT == prefix;
		memset(match + len, 0, end - len);
		for (e = sel_next_flag(match, 0, end); e < end;
		    e = sel_next_flag(match, e + 1, end)) {
			low = key[b + e] & (SEL_WIDE_BINS1 - 1);
			if (l->n < 0) {
				h[low]++;
				continue;
			}
			for (j = 0; j < l->n && l->low[j] != low; j++)
				;
			if (j < l->n) {
				l->count[j]++;
			} else if (l->n < SEL_LIST) {
				l->low[l->n] = low;
				l->count[l->n++] = 1;
			} else {
				for (j = 0; j < l->n; j++)
					h[l->low[j]] += l->count[j];
				h[low]++;
				l->n = -1;
			}
		}
	}
}

void
sel_list_strip(const struct sel_cut *c, struct sel_list *l,
    uint32_t *restrict h, const uint32_t *restrict key, size_t n)
{
	if (c->on)
		sel_list_strip_simd(c, l, h, key, n);
}

void
sel_list_save(const struct sel_list *l, double *p)
{
	int j;

	p[0] = l->n;
	for (j = 0; j < l->n; j++)
		p[1 + j] = (double)l->low[j] * SEL_LIST_PACK + l->count[j];
}

uint32_t
sel_list_low(const double *p, int j)
{
	return (uint32_t)(p[1 + j] / SEL_LIST_PACK);
}

uint64_t
sel_list_count(const double *p, int j)
{
	return (uint64_t)fmod(p[1 + j], SEL_LIST_PACK);
}

/*
 * Level 1 of a cut: the lists of the nq blocks (at p, then every stride
 * doubles) added to h, the histogram of the blocks that overflowed; then
 * the step.  *listed becomes false if a block overflowed.
 */
const char *
sel_list_step(struct sel_cut *c, uint64_t *h, const double *p, size_t stride,
    size_t nq, bool *listed)
{
	size_t q;
	int j;

	if (!c->on)
		return NULL;
	for (q = 0; q < nq; q++, p += stride) {
		*listed = *listed && p[0] >= 0;
		for (j = 0; j < (int)p[0]; j++)
			h[sel_list_low(p, j)] += sel_list_count(p, j);
	}
	return sel_step_wide(c, h, 1);
}

/* How many keys equal to the cut one block's list holds. */
uint64_t
sel_list_ties(const struct sel_cut *c, const double *p)
{
	uint64_t n = 0;
	uint32_t key;
	int j;

	if (!c->on)
		return 0;
	for (j = 0; j < (int)p[0]; j++) {
		key = c->prefix >> SEL_WIDE_SHIFT << SEL_WIDE_SHIFT |
		    sel_list_low(p, j);
		if (key == c->key)
			n += sel_list_count(p, j);
	}
	return n;
}

/*
 * rank[i] = ascending position of keys[i] among n keys (ties by index),
 * by a stable LSD radix sort of (key, index) pairs in tmp (2 n entries).
 * Only the bits that differ between the keys are sorted on (deltas of
 * 16-bit weights leave the low mantissa bits zero), 8 at a time.  A
 * row's keys crowd into few bins (its exponents), so consecutive
 * increments of one counter would wait on each other: each pass splits
 * the array into RANK_WAYS segments with counters of their own, worked
 * on interleaved.  Segment w's keys in a bin go after those of the
 * segments before it, so the sort stays stable.
 */
#define RANK_WAYS 4
#define RANK_BITS 8
#define RANK_BINS (1u << RANK_BITS)

void
sel_rank(const uint32_t *keys, uint32_t n, uint32_t *rank, uint64_t *tmp)
{
	uint32_t cnt[RANK_WAYS][RANK_BINS], any = 0;
	uint32_t all = UINT32_MAX, vary, i, w, b, sum, c, k, len, seg[RANK_WAYS];
	uint64_t *src = tmp, *dst = tmp + n, *sw, x;
	unsigned lo, ndig, d, sh;

	for (i = 0; i < n; i++) {
		any |= keys[i];
		all &= keys[i];
	}
	if ((vary = any ^ all) == 0) {
		for (i = 0; i < n; i++)
			rank[i] = i;	/* all equal: index order */
		return;
	}
	lo = (unsigned)__builtin_ctz(vary);
	ndig = (32 - (unsigned)__builtin_clz(vary) - lo + RANK_BITS - 1) /
	    RANK_BITS;
	/* Segments of len keys; the last also takes the n % RANK_WAYS. */
	len = n / RANK_WAYS;
	for (w = 0; w < RANK_WAYS; w++)
		seg[w] = w * len;
	for (i = 0; i < n; i++) {
		k = keys[i] >> lo;
		src[i] = (uint64_t)k << 32 | i;
	}
	for (d = 0; d < ndig; d++) {
		sh = 32 + d * RANK_BITS;
		memset(cnt, 0, sizeof cnt);
		for (i = 0; i < len; i++)
			for (w = 0; w < RANK_WAYS; w++)
				cnt[w][(src[seg[w] + i] >> sh) &
				    (RANK_BINS - 1)]++;
		for (i = RANK_WAYS * len; i < n; i++)
			cnt[RANK_WAYS - 1][(src[i] >> sh) & (RANK_BINS - 1)]++;
		for (sum = 0, b = 0; b < RANK_BINS; b++) {
			for (w = 0; w < RANK_WAYS; w++) {
				c = cnt[w][b];
				cnt[w][b] = sum;
				sum += c;
			}
		}
		for (i = 0; i < len; i++) {
			for (w = 0; w < RANK_WAYS; w++) {
				x = src[seg[w] + i];
				dst[cnt[w][(x >> sh) & (RANK_BINS - 1)]++] = x;
			}
		}
		for (i = RANK_WAYS * len; i < n; i++) {
			x = src[i];
			dst[cnt[RANK_WAYS - 1][(x >> sh) & (RANK_BINS - 1)]++] =
			    x;
		}
		sw = src;
		src = dst;
		dst = sw;
	}
	for (i = 0; i < n; i++)
		rank[(uint32_t)src[i]] = i;
}

/* FNV-1a, 64 bits, of a text (NULL: of the empty one). */
uint64_t
rng_fnv1a(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; s != NULL && *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ull;
	}
	return h;
}

uint64_t
rng_stream(uint64_t seed, const char *tensor, uint64_t model)
{
	return rng_mix(rng_mix(rng_mix(seed) ^ rng_fnv1a(tensor)) ^ model);
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
	int lo_on = r->cut[0].on, hi_on = r->cut[1].on;
	uint8_t eq[512];
	size_t e, b, len, end;

	if (r->none) {
		memset(keep, 0, n);
		return;
	}
	for (b = 0; b < n; b += len) {
		len = n - b < sizeof eq ? n - b : sizeof eq;
		end = (len + 7) & ~(size_t)7;
		for (e = 0; e < len; e++) {
			keep[b + e] = ((!lo_on) | (key[b + e] > lo)) &
			    ((!hi_on) | (key[b + e] < hi));
			eq[e] = (lo_on & (key[b + e] == lo)) |
			    (hi_on & (key[b + e] == hi));
		}
		memset(eq + len, 0, end - len);
		/* The ties, in index order, against the count before. */
		for (e = sel_next_flag(eq, 0, end); e < end;
		    e = sel_next_flag(eq, e + 1, end))
			keep[b + e] = sel_keep(r, key[b + e], tie);
	}
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
