/* SPDX-License-Identifier: MIT */
/*
 * extract-svd.c: the truncated SVD of a task vector, for mergectl
 * extract-lora (extract.c): exact, with LAPACK's sgesdd, or randomized
 * (Halko, Martinsson and Tropp 2011, algorithms 4.4 and 5.1).  Pure
 * functions of a caller-owned float buffer, safe on any thread; the work
 * space they allocate is exactly what svd_exact_bytes() and
 * svd_fast_bytes() count, so that the caller's budget holds, and comes
 * from buf_alloc (mmap), so that it leaves the process when freed.
 *
 * The matrix is given as it is stored: x row-major [m, n].  Row-major
 * [m, n] is column-major [n, m], that is x^T, which is what LAPACK and
 * cblas (column-major here) are handed, without a copy; "transpose" asks
 * for the SVD of x^T (an embedding: PEFT's lora_embedding_A/B factor the
 * transposed weight) rather than of x.  The decomposed matrix X is R x C
 * and X = U diag(S) Vt; U and Vt are left where LAPACK wrote them and
 * read through strides (struct svd), which covers both orientations.
 *
 * Debian's OpenBLAS ships no lapacke.h, so the Fortran entry points are
 * declared here, with the hidden length of each character argument that
 * gfortran passes last.  OpenBLAS runs single-threaded (graph_init()):
 * several weights are decomposed at once on the pool instead, and the
 * result of each never depends on how many.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "graph-int.h"
#include "select.h"

void sgesdd_(const char *jobz, const int *m, const int *n, float *a,
    const int *lda, float *s, float *u, const int *ldu, float *vt,
    const int *ldvt, float *work, const int *lwork, int *iwork, int *info,
    size_t jobz_len);
void sgeqrf_(const int *m, const int *n, float *a, const int *lda,
    float *tau, float *work, const int *lwork, int *info);
void sorgqr_(const int *m, const int *n, const int *k, float *a,
    const int *lda, const float *tau, float *work, const int *lwork,
    int *info);

static int64_t
min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* Rounds a LAPACK work size (returned as a float) up to an int. */
static int
svd_lwork(float w)
{
	double v = ceil((double)w * (1 + 1e-6)) + 1;

	return v > INT_MAX ? INT_MAX : (int)v;
}

/* sgesdd's optimal work size for a column-major M x N, JOBZ='S'. */
static int
svd_gesdd_lwork(int m, int n)
{
	int p = m < n ? m : n, lwork = -1, info = 0, iw = 0;
	float q = 0, dummy = 0;

	sgesdd_("S", &m, &n, &dummy, &m, &dummy, &dummy, &m, &dummy, &p, &q,
	    &lwork, &iw, &info, 1);
	return info == 0 ? svd_lwork(q) : 0;
}

/* The work size geqrf and orgqr need for a column-major M x L. */
static int
svd_qr_lwork(int m, int l)
{
	int lwork = -1, info = 0, a, b;
	float q = 0, dummy = 0;

	sgeqrf_(&m, &l, &dummy, &m, &dummy, &q, &lwork, &info);
	a = info == 0 ? svd_lwork(q) : 0;
	sorgqr_(&m, &l, &l, &dummy, &m, &dummy, &q, &lwork, &info);
	b = info == 0 ? svd_lwork(q) : 0;
	return a > b ? a : b;
}

/*
 * Whether LAPACK's 32-bit integers can describe the decomposition of a
 * stored [m, n]: its sides, and sgesdd's work space, which grows with the
 * square of the smaller side.
 */
bool
svd_fits(int64_t m, int64_t n)
{
	int w;

	if (m < 1 || n < 1 || m > INT_MAX || n > INT_MAX)
		return false;
	w = svd_gesdd_lwork((int)n, (int)m);
	return w > 0 && w < INT_MAX;
}

/* Bytes svd_exact allocates for a stored [m, n] (either orientation). */
uint64_t
svd_exact_bytes(int64_t m, int64_t n)
{
	uint64_t p = (uint64_t)min64(m, n);

	/* U [n, p], Vt [p, m] (column-major), S, the work and 8p ints. */
	return 4 * (p * (uint64_t)n + p * (uint64_t)m + p + 8 * p +
	    (uint64_t)svd_gesdd_lwork((int)n, (int)m));
}

/* The larger QR work size of X's two sides. */
static int
svd_qr_lwork2(int r, int c, int l)
{
	int a = svd_qr_lwork(r, l), b = svd_qr_lwork(c, l);

	return a > b ? a : b;
}

/* Bytes svd_fast allocates for a stored [m, n] (or its transpose). */
uint64_t
svd_fast_bytes(int64_t m, int64_t n, bool transpose, int64_t l)
{
	uint64_t r = (uint64_t)(transpose ? n : m);
	uint64_t c = (uint64_t)(transpose ? m : n), k = (uint64_t)l;

	/* Omega (then Z) [c, l], Y [r, l], tau, the QR work, Bs [l, c],
	 * Ub [l, l], Vt [l, c], S, U [r, l], 8l ints and sgesdd's work. */
	return 4 * (c * k + r * k + k + (uint64_t)svd_qr_lwork2((int)r,
	    (int)c, (int)l) + k * c + k * k + k * c + k + r * k + 8 * k +
	    (uint64_t)svd_gesdd_lwork((int)l, (int)c));
}

void
svd_fini(struct svd *s)
{
	buf_free(s->buf, s->bytes);
	memset(s, 0, sizeof *s);
}

static float *
svd_take(float **at, uint64_t n)
{
	float *p = *at;

	*at += n;
	return p;
}

/*
 * The exact thin SVD of x [m, n] (or of x^T), with sgesdd; x is
 * destroyed.  0, or -EIO with *cause when LAPACK fails.
 */
int
svd_exact(float *x, int64_t m, int64_t n, bool transpose, struct svd *out,
    char **cause)
{
	/* Column-major, x is D = x^T: M = n rows, N = m columns. */
	int M = (int)n, N = (int)m, p = (int)min64(m, n), lwork, info = 0;
	float *at, *u, *vt;
	int *iwork;

	memset(out, 0, sizeof *out);
	lwork = svd_gesdd_lwork(M, N);
	out->bytes = svd_exact_bytes(m, n);
	out->buf = buf_alloc(out->bytes);
	at = out->buf;
	u = svd_take(&at, (uint64_t)M * (uint64_t)p);
	vt = svd_take(&at, (uint64_t)p * (uint64_t)N);
	out->s = svd_take(&at, (uint64_t)p);
	iwork = (int *)svd_take(&at, 8 * (uint64_t)p);
	sgesdd_("S", &M, &N, x, &M, out->s, u, &M, vt, &p, at, &lwork, iwork,
	    &info, 1);
	if (info != 0) {
		*cause = xasprintf("the SVD (LAPACK sgesdd) %s (info %d)",
		    info > 0 ? "did not converge" : "refused its arguments",
		    info);
		svd_fini(out);
		return -EIO;
	}
	out->p = p;
	if (!transpose) {
		/* X = x = D^T = V' S U'^T: X's U is V', Vt is U'^T, both
		 * row-major in LAPACK's buffers. */
		out->rows = m;
		out->cols = n;
		out->u = vt;
		out->u_rs = p;
		out->u_cs = 1;
		out->vt = u;
		out->vt_rs = M;
		out->vt_cs = 1;
	} else {
		/* X = x^T = D = U' S V'^T, column-major. */
		out->rows = n;
		out->cols = m;
		out->u = u;
		out->u_rs = 1;
		out->u_cs = M;
		out->vt = vt;
		out->vt_rs = 1;
		out->vt_cs = p;
	}
	return 0;
}

/* Orthonormalizes the columns of a column-major [rows, l], in place. */
static int
svd_orth(float *a, int rows, int l, float *tau, float *work, int lwork)
{
	int info = 0;

	sgeqrf_(&rows, &l, a, &rows, tau, work, &lwork, &info);
	if (info == 0)
		sorgqr_(&rows, &l, &l, a, &rows, tau, work, &lwork, &info);
	return info;
}

/*
 * Omega, column-major [c, l], standard normal: element e (column-major
 * order, so that a column does not depend on l) is drawn from the
 * counter-based stream (select.h), words 2(e/2) and 2(e/2)+1 making one
 * Box-Muller pair in double.
 */
static void
svd_gaussian(float *o, uint64_t c, uint64_t l, uint64_t stream)
{
	uint64_t e, n = c * l;
	double u1, u2, r;

	for (e = 0; e < n; e += 2) {
		u1 = ((double)rng_u32(stream, e) + 0.5) / 4294967296.0;
		u2 = ((double)rng_u32(stream, e + 1) + 0.5) / 4294967296.0;
		r = sqrt(-2 * log(u1));
		o[e] = (float)(r * cos(2 * M_PI * u2));
		if (e + 1 < n)
			o[e + 1] = (float)(r * sin(2 * M_PI * u2));
	}
}

/*
 * The randomized SVD of x [m, n] (or of x^T) with l columns, q power
 * iterations, each re-orthonormalized (algorithm 4.4), and the random
 * matrix drawn from stream; x is left as it is.  S holds l values.
 */
int
svd_fast(const float *x, int64_t m, int64_t n, bool transpose, int64_t l,
    int q, uint64_t stream, struct svd *out, char **cause)
{
	/* X = op(D), D = x^T column-major [n, m] with leading dimension n. */
	enum CBLAS_TRANSPOSE op = transpose ? CblasNoTrans : CblasTrans;
	enum CBLAS_TRANSPOSE opt = transpose ? CblasTrans : CblasNoTrans;
	int R = (int)(transpose ? n : m), C = (int)(transpose ? m : n);
	int L = (int)l, ld = (int)n, qrw, info = 0, lwork, it;
	float *at, *z, *y, *tau, *work, *bs, *ub, *vt, *u;
	int *iwork;
	const char *step = "QR";

	memset(out, 0, sizeof *out);
	qrw = svd_qr_lwork2(R, C, L);
	lwork = svd_gesdd_lwork(L, C);
	out->bytes = svd_fast_bytes(m, n, transpose, l);
	out->buf = buf_alloc(out->bytes);
	at = out->buf;
	z = svd_take(&at, (uint64_t)C * (uint64_t)L);
	y = svd_take(&at, (uint64_t)R * (uint64_t)L);
	tau = svd_take(&at, (uint64_t)L);
	work = svd_take(&at, (uint64_t)qrw);
	bs = svd_take(&at, (uint64_t)L * (uint64_t)C);
	ub = svd_take(&at, (uint64_t)L * (uint64_t)L);
	vt = svd_take(&at, (uint64_t)L * (uint64_t)C);
	out->s = svd_take(&at, (uint64_t)L);
	u = svd_take(&at, (uint64_t)R * (uint64_t)L);
	iwork = (int *)svd_take(&at, 8 * (uint64_t)L);
	/* Y = X Omega; Omega lives in Z's room until Z is needed. */
	svd_gaussian(z, (uint64_t)C, (uint64_t)L, stream);
	cblas_sgemm(CblasColMajor, op, CblasNoTrans, R, L, C, 1.0f, x, ld, z,
	    C, 0.0f, y, R);
	if ((info = svd_orth(y, R, L, tau, work, qrw)) != 0)
		goto fail;
	for (it = 0; it < q; it++) {
		/* Z = orth(X^T Q), Q = orth(X Z). */
		cblas_sgemm(CblasColMajor, opt, CblasNoTrans, C, L, R, 1.0f, x,
		    ld, y, R, 0.0f, z, C);
		if ((info = svd_orth(z, C, L, tau, work, qrw)) != 0)
			goto fail;
		cblas_sgemm(CblasColMajor, op, CblasNoTrans, R, L, C, 1.0f, x,
		    ld, z, C, 0.0f, y, R);
		if ((info = svd_orth(y, R, L, tau, work, qrw)) != 0)
			goto fail;
	}
	/* Bs = Q^T X [l, c], its SVD Ub S Vt, and U = Q Ub. */
	cblas_sgemm(CblasColMajor, CblasTrans, op, L, C, R, 1.0f, y, R, x, ld,
	    0.0f, bs, L);
	step = "SVD (LAPACK sgesdd)";
	sgesdd_("S", &L, &C, bs, &L, out->s, ub, &L, vt, &L, at, &lwork, iwork,
	    &info, 1);
	if (info != 0)
		goto fail;
	cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, R, L, L, 1.0f, y,
	    R, ub, L, 0.0f, u, R);
	out->rows = R;
	out->cols = C;
	out->p = L;
	out->u = u;
	out->u_rs = 1;
	out->u_cs = R;
	out->vt = vt;
	out->vt_rs = 1;
	out->vt_cs = L;
	return 0;
fail:
	*cause = xasprintf("the randomized SVD's %s %s (info %d)", step,
	    info > 0 ? "did not converge" : "refused its arguments", info);
	svd_fini(out);
	return -EIO;
}

/*
 * The rank kept: at most max_rank and the matrix's smaller side, then
 * only the singular values above eps (absolute, as mergekit; 0: all).
 */
int64_t
svd_rank(const struct svd *s, int64_t max_rank, double eps)
{
	int64_t k = min64(max_rank, min64(s->rows, s->cols)), i, above = 0;

	if (k > s->p)
		k = s->p;
	if (!(eps > 0))
		return k;
	for (i = 0; i < k; i++)
		above += (double)s->s[i] > eps;
	return above;
}

/*
 * ||X - U_k S_k Vt_k||_F, in float64.  Exact: the discarded singular
 * values themselves, sqrt(sum_{i>=k} s_i^2), which is accurate however
 * small it is.  Randomized: the tail is not known, but U_k has
 * orthonormal columns, so U_k S_k Vt_k = U_k U_k^T X is a projection of
 * X and the residual is sqrt(||X||^2 - sum_{i<k} s_i^2) (norm2 is
 * ||X||^2), cut at 0 where rounding makes it negative.
 */
double
svd_residual(const struct svd *s, int64_t k, double norm2, bool exact)
{
	double sum = 0;
	int64_t i;

	if (exact) {
		for (i = k; i < s->p; i++)
			sum += (double)s->s[i] * (double)s->s[i];
		return sqrt(sum);
	}
	for (i = 0; i < k; i++)
		sum += (double)s->s[i] * (double)s->s[i];
	return norm2 > sum ? sqrt(norm2 - sum) : 0;
}

/*
 * The LoRA factors of rank k: a [k, cols] and b [rows, k], row-major,
 * with b a = U_k S_k Vt_k.  distribute: sqrt(S) on both sides
 * (mergekit's default); else all of S in a.
 */
void
svd_factors(const struct svd *s, int64_t k, bool distribute, float *a,
    float *b)
{
	int64_t i, j;
	float sa, sb;

	for (i = 0; i < k; i++) {
		sa = distribute ? sqrtf(s->s[i]) : s->s[i];
		for (j = 0; j < s->cols; j++)
			a[i * s->cols + j] = sa * s->vt[i * s->vt_rs +
			    j * s->vt_cs];
	}
	for (i = 0; i < k; i++) {
		sb = distribute ? sqrtf(s->s[i]) : 1.0f;
		for (j = 0; j < s->rows; j++)
			b[j * k + i] = s->u[j * s->u_rs + i * s->u_cs] * sb;
	}
}
