/* SPDX-License-Identifier: MIT */
/*
 * kernels.c: the inner loops the merge methods share.
 *
 * Elementwise combinations accumulate in double and round once to float32,
 * which makes them at least as accurate as the float32 arithmetic that
 * MERGEKIT.md Part A item 9 asks for.  Reductions over a quantum use eight
 * independent double accumulators in a fixed order: the association is
 * fixed by this code (so results never depend on the compiler, the chunk
 * size or the thread that runs them) while the eight lanes still map onto
 * SIMD registers.  Pure functions on caller-owned buffers.
 */
#include <string.h>

#include "graph-int.h"

GRAPH_SIMD static void
kern_scale_simd(float *restrict out, const float *restrict in, double k, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		out[i] = (float)((double)in[i] * k);
}

#define KERN_STRIP 256

/*
 * out = sum_j w[j] * in[j], accumulated in double in input order.  The
 * general case goes a strip at a time through a double buffer, so that
 * every loop runs over elements and vectorizes.
 */
GRAPH_SIMD static void
kern_combine_simd(float *restrict out, const float *const *in, const double *w,
    size_t nin, size_t n)
{
	double acc[KERN_STRIP];
	size_t i, j, s, len;

	if (nin == 2) {
		const float *restrict a = in[0], *restrict b = in[1];
		double wa = w[0], wb = w[1];
		for (i = 0; i < n; i++)
			out[i] = (float)(wa * a[i] + wb * b[i]);
		return;
	}
	if (nin == 3) {
		const float *restrict a = in[0], *restrict b = in[1];
		const float *restrict c = in[2];
		double wa = w[0], wb = w[1], wc = w[2];
		for (i = 0; i < n; i++)
			out[i] = (float)((wa * a[i] + wb * b[i]) + wc * c[i]);
		return;
	}
	for (s = 0; s < n; s += len) {
		len = n - s < KERN_STRIP ? n - s : KERN_STRIP;
		for (i = 0; i < len; i++)
			acc[i] = nin > 0 ? w[0] * in[0][s + i] : 0;
		for (j = 1; j < nin; j++) {
			const float *restrict x = in[j] + s;
			double wj = w[j];
			for (i = 0; i < len; i++)
				acc[i] += wj * x[i];
		}
		for (i = 0; i < len; i++)
			out[s + i] = (float)acc[i];
	}
}

/* The eight lanes' sum, in the one order every reduction here uses. */
static inline double
kern_lanes(const double *s)
{
	return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] +
	    s[7]));
}

/* aa = sum a^2, bb = sum b^2, ab = sum a b over n elements. */
GRAPH_SIMD static void
kern_dots_simd(const float *restrict a, const float *restrict b, size_t n,
    double *aa, double *bb, double *ab)
{
	double sa[8] = { 0 }, sb[8] = { 0 }, sab[8] = { 0 };
	size_t i, k;

	for (i = 0; i + 8 <= n; i += 8) {
		for (k = 0; k < 8; k++) {
			double x = a[i + k], y = b[i + k];
			sa[k] += x * x;
			sb[k] += y * y;
			sab[k] += x * y;
		}
	}
	for (k = 0; i < n; i++, k++) {
		double x = a[i], y = b[i];
		sa[k] += x * x;
		sb[k] += y * y;
		sab[k] += x * y;
	}
	*aa = kern_lanes(sa);
	*bb = kern_lanes(sb);
	*ab = kern_lanes(sab);
}

/*
 * sum x^2 over n float64 elements.  Sixteen lanes, folded to the eight
 * (lane k and k + 8) at the end: with eight, each vector's adds wait on
 * the one before (inspect spent 14% of its time here, against 12%).
 */
GRAPH_SIMD static double
kern_sumsq_simd(const double *restrict x, size_t n)
{
	double s[16] = { 0 }, t[8];
	size_t i, k;

	for (i = 0; i + 16 <= n; i += 16)
		for (k = 0; k < 16; k++)
			s[k] += x[i + k] * x[i + k];
	for (k = 0; i < n; i++, k++)
		s[k] += x[i] * x[i];
	for (k = 0; k < 8; k++)
		t[k] = s[k] + s[k + 8];
	return kern_lanes(t);
}


/*
 * The exported names call the cloned implementations: an ifunc'd
 * function must be local for clang (graph-int.h GRAPH_SIMD).
 */
void
kern_scale(float *restrict out, const float *restrict in, double k, size_t n)
{
	kern_scale_simd(out, in, k, n);
}

void
kern_combine(float *restrict out, const float *const *in, const double *w,
    size_t nin, size_t n)
{
	kern_combine_simd(out, in, w, nin, n);
}

void
kern_dots(const float *restrict a, const float *restrict b, size_t n,
    double *aa, double *bb, double *ab)
{
	kern_dots_simd(a, b, n, aa, bb, ab);
}

double
kern_sumsq(const double *restrict x, size_t n)
{
	return kern_sumsq_simd(x, n);
}
