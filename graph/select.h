/* SPDX-License-Identifier: MIT */
/*
 * select.h: order statistics over a tensor in bounded memory, and the
 * counter-based random numbers of the random methods.
 *
 * Selection works on 32-bit keys that order like the values (the bits of
 * a non-negative float32 do).  The key at a wanted ascending position is
 * found in three statistics passes, each counting the keys that share the
 * prefix found so far into a 2048-bin histogram of their next bits
 * (11, 11, then 10 bits); counts are integers, so the result does not
 * depend on how the passes were split into units.  Ties are ordered by
 * element index: "ascending position" always means the position in the
 * stable ascending sort of (key, index).
 */
#ifndef GRAPH_SELECT_H
#define GRAPH_SELECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SEL_BINS 2048
#define SEL_LEVELS 3

/*
 * The wide variant, in two levels: the key's top 16 bits, then its low
 * 15.  One pass fewer, for callers that can afford 65536 bins a
 * histogram and that see few keys share a 16-bit prefix (method-gta.c).
 */
#define SEL_WIDE_SHIFT 15
#define SEL_WIDE_BINS0 (1u << 16)
#define SEL_WIDE_BINS1 (1u << SEL_WIDE_SHIFT)

/*
 * At the wide level 1 a block may list, instead of counting them into a
 * histogram, the distinct keys it has in the cut's level-0 bin, with how
 * many of each: up to SEL_LIST, then it overflows into the unit's level-1
 * histogram.  From every block's list the reduction has the level-1
 * counts and the keys equal to the cut before each block (for ties by
 * index) without a pass of its own.  A list saved to a block's partials
 * takes SEL_LIST_RED doubles: its length (-1: overflowed), then each
 * key's low 15 bits times 2^17 plus its count, exact in a double.
 */
#define SEL_LIST 32
#define SEL_LIST_RED (1 + SEL_LIST)

struct sel_list {
	uint32_t low[SEL_LIST];
	uint32_t count[SEL_LIST];
	int n;			/* -1: overflowed */
};

/* The search for the key at one ascending position. */
struct sel_cut {
	bool on;
	uint64_t rank;		/* the ascending position wanted */
	uint64_t below;		/* keys below the current prefix's range */
	uint32_t prefix;	/* high bits found so far */
	uint32_t key;		/* the answer, after the last level */
	uint64_t eq;		/* how many keys equal it */
};

/*
 * Keeps the ascending positions [lo, hi) of n keys: a cut below (the key
 * at position lo) when lo > 0, one above (at hi - 1) when hi < n.
 */
struct sel_range {
	bool none;		/* keeps nothing */
	uint64_t lo, hi;
	struct sel_cut cut[2];	/* [0] below, [1] above */
};

void sel_range_init(struct sel_range *r, uint64_t n, uint64_t lo, uint64_t hi);
const char *sel_step(struct sel_cut *c, const uint64_t *hist, int level);
const char *sel_step_wide(struct sel_cut *c, const uint64_t *hist, int level);
const char *sel_find(struct sel_cut *c, size_t ncut, const uint32_t *key,
    size_t n, uint64_t *hist);
void sel_list_strip(const struct sel_cut *c, struct sel_list *l,
    uint32_t *restrict h, const uint32_t *restrict key, size_t n);
void sel_list_save(const struct sel_list *, double *);
uint32_t sel_list_low(const double *, int);
uint64_t sel_list_count(const double *, int);
const char *sel_list_step(struct sel_cut *c, uint64_t *h, const double *p,
    size_t stride, size_t nq, bool *listed);
uint64_t sel_list_ties(const struct sel_cut *, const double *);
uint64_t sel_range_ties_kept(const struct sel_range *r, double *at_lo,
    double *at_hi);
void sel_rank(const uint32_t *keys, uint32_t n, uint32_t *rank, uint64_t *tmp);
void sel_keep_strip(const struct sel_range *r, const uint32_t *restrict key,
    size_t n, uint64_t *tie, uint8_t *restrict keep);
void sel_count(const struct sel_cut *c, uint64_t *restrict hist,
    const uint32_t *restrict key, size_t n, int level);

static inline uint32_t
sel_fkey(float v)
{
	uint32_t k;

	v = v < 0 ? -v : v;
	memcpy(&k, &v, sizeof k);
	return k;
}

static inline float
sel_fval(uint32_t k)
{
	float v;

	memcpy(&v, &k, sizeof v);
	return v;
}

/*
 * The next flagged byte of flags[from, end) (flags 0 or 1, end a multiple
 * of 8 past the last flag, the rest 0), or end: a scan eight bytes a
 * step, since flagged bytes are few.
 */
static inline size_t
sel_next_flag(const uint8_t *flags, size_t from, size_t end)
{
	uint64_t w;
	size_t at = from & ~(size_t)7;

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	for (; at < end; at += 8) {
		memcpy(&w, flags + at, sizeof w);
		/* Bytes before from, in the first word, do not count. */
		if (at < from)
			w &= ~(uint64_t)0 << 8 * (from - at);
		if (w != 0)
			return at + (size_t)__builtin_ctzll(w) / 8;
	}
	return end;
#else
	/* The word trick reads the first byte as the lowest. */
	(void)w;
	for (at = from; at < end && flags[at] == 0; at++)
		;
	return at;
#endif
}

/*
 * Whether a key is kept by the range; tie[0] and tie[1] count the keys
 * equal to each cut seen so far, in index order (the caller starts them
 * at the count before its block).
 */
static inline bool
sel_keep(const struct sel_range *r, uint32_t key, uint64_t *tie)
{
	bool k = !r->none;

	if (r->cut[0].on) {
		if (key == r->cut[0].key)
			k = k && r->cut[0].below + tie[0]++ >= r->lo;
		else if (key < r->cut[0].key)
			k = false;
	}
	if (r->cut[1].on) {
		if (key == r->cut[1].key)
			k = k && r->cut[1].below + tie[1]++ < r->hi;
		else if (key > r->cut[1].key)
			k = false;
	}
	return k;
}

/*
 * Random numbers.  A stream is keyed by (seed, tensor, model):
 * s = mix(mix(mix(seed) ^ fnv1a64(tensor)) ^ model), mix = SplitMix64's
 * finalizer.  Its element e is the 32-bit
 *   h(h(lo32(e) ^ lo32(s)) ^ hi32(s) ^ hi32(e) * 0x9e3779b9)
 * with h Wellons' lowbias32, a bijection of 32-bit words: distinct
 * elements under 2^32 never collide, and it vectorizes (32-bit lanes).
 * An element is kept with probability p when its word is below
 * rng_threshold(p) = ceil(p 2^32).
 */
static inline uint64_t
rng_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint32_t
rng_h32(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7feb352du;
	x ^= x >> 15;
	x *= 0x846ca68bu;
	x ^= x >> 16;
	return x;
}

static inline uint32_t
rng_u32(uint64_t stream, uint64_t e)
{
	uint32_t x = rng_h32((uint32_t)e ^ (uint32_t)stream);

	return rng_h32(x ^ (uint32_t)(stream >> 32) ^
	    (uint32_t)(e >> 32) * 0x9e3779b9u);
}

uint64_t rng_fnv1a(const char *s);
uint64_t rng_stream(uint64_t seed, const char *tensor, uint64_t model);
uint64_t rng_threshold(double);

#endif
