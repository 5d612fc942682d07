/* SPDX-License-Identifier: MIT */
/*
 * gram.c: Gram matrices, for the methods whose result is a combination
 * of their inputs (slerp-like and mean-like: nuslerp, multislerp, karcher,
 * model_stock).
 *
 * Such a method only needs the inputs' pairwise dot products: every
 * vector it builds (unit vectors, means, tangents, the Karcher iterate) is
 * a linear combination of the inputs, so it can be carried as its m
 * coefficients, and a dot product of two of them is a^T G b.  One
 * statistics pass computes G a block at a time (float64, fixed order, so
 * the result does not depend on the chunking), the algorithm runs in
 * coefficient space in float64, and one apply pass combines the inputs.
 * This keeps memory bounded for any tensor size and is exact where
 * mergekit rounds every intermediate tensor to the native dtype.
 */
#include <math.h>
#include <string.h>

#include "graph-int.h"

size_t
gram_size(size_t m)
{
	return m * (m + 1) / 2;
}

/* Position of (i, j), i <= j, in the packed upper triangle. */
static size_t
gram_at(size_t i, size_t j, size_t m)
{
	if (i > j) {
		size_t t = i;
		i = j;
		j = t;
	}
	return i * m - i * (i + 1) / 2 + j;
}

#define GRAM_LANES 8
#define GRAM_SWEEP 8	/* up to this many vectors: one sweep for all pairs */

static double
gram_lanes(const double *acc)
{
	return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) +
	    (acc[6] + acc[7]));
}

/* One pair at a time: for many vectors, where the sweep's table is big. */
static void
gram_pairs(const float *const *x, size_t m, const float *base, size_t n,
    double *g)
{
	double acc[GRAM_LANES], a, b;
	size_t i, j, e, k;

	for (i = 0; i < m; i++) {
		for (j = i; j < m; j++) {
			memset(acc, 0, sizeof acc);
			for (e = 0; e < n; e++) {
				k = e % GRAM_LANES;
				a = x[i][e];
				b = x[j][e];
				if (base != NULL) {
					a -= base[e];
					b -= base[e];
				}
				acc[k] += a * b;
			}
			g[gram_at(i, j, m)] = gram_lanes(acc);
		}
	}
}

/*
 * Dot products of the m vectors x[k] (minus base, when not NULL) over n
 * elements, into the packed triangle g.  Element e goes to accumulator
 * e mod 8 of its pair, in order, and the eight are added in a fixed tree:
 * the association is this code's, never the compiler's, whichever of the
 * two loops below runs.  Up to eight vectors, one sweep over the elements
 * serves every pair.
 */
GRAPH_SIMD static void
kern_gram_simd(const float *const *x, size_t m, const float *base, size_t n,
    double *g)
{
	double acc[GRAM_SWEEP * (GRAM_SWEEP + 1) / 2][GRAM_LANES];
	double d[GRAM_SWEEP][GRAM_LANES];
	size_t i, j, p, e, k, len, np = gram_size(m);

	if (m > GRAM_SWEEP) {
		gram_pairs(x, m, base, n, g);
		return;
	}
	memset(acc, 0, sizeof acc);
	for (e = 0; e < n; e += GRAM_LANES) {
		len = n - e < GRAM_LANES ? n - e : GRAM_LANES;
		for (i = 0; i < m; i++) {
			for (k = 0; k < len; k++)
				d[i][k] = (double)x[i][e + k] -
				    (base != NULL ? (double)base[e + k] : 0);
			for (; k < GRAM_LANES; k++)
				d[i][k] = 0;
		}
		for (i = 0, p = 0; i < m; i++)
			for (j = i; j < m; j++, p++)
				for (k = 0; k < GRAM_LANES; k++)
					acc[p][k] += d[i][k] * d[j][k];
	}
	for (p = 0; p < np; p++)
		g[p] = gram_lanes(acc[p]);
}

void
kern_gram(const float *const *x, size_t m, const float *base, size_t n,
    double *g)
{
	kern_gram_simd(x, m, base, n, g);	/* local: see kernels.c */
}

/* Sums n blocks' packed partials into the full m x m matrix G. */
void
gram_sum(const double *partials, size_t n, size_t m, double *G)
{
	size_t q, i, j, np = gram_size(m);

	memset(G, 0, m * m * sizeof *G);
	for (q = 0; q < n; q++)
		for (i = 0; i < m; i++)
			for (j = i; j < m; j++)
				G[i * m + j] += partials[q * np +
				    gram_at(i, j, m)];
	for (i = 0; i < m; i++)
		for (j = 0; j < i; j++)
			G[i * m + j] = G[j * m + i];
}

/* Unpacks one block's (or row's) partials into G. */
void
gram_unpack(const double *packed, size_t m, double *G)
{
	gram_sum(packed, 1, m, G);
}

/* a^T G b for coefficient vectors a and b. */
double
gram_dot(const double *G, size_t m, const double *a, const double *b)
{
	double s = 0;
	size_t i, j;

	for (i = 0; i < m; i++)
		for (j = 0; j < m; j++)
			s += a[i] * G[i * m + j] * b[j];
	return s;
}

double
gram_norm(const double *G, size_t m, const double *a)
{
	double d = gram_dot(G, m, a, a);

	return d > 0 ? sqrt(d) : 0;
}
