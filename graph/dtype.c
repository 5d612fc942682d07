/* SPDX-License-Identifier: MIT */
/*
 * dtype.c: element types, their names, and conversion to and from float32.
 *
 * All merge arithmetic happens in float32 (float64 for reductions), so every
 * stored type is decoded to float32 on load and encoded once, with
 * round-to-nearest-even, on write (MERGEKIT.md Part A item 9).  The loops
 * are written branch-free over plain integers so that gcc and clang
 * vectorise them; they are the innermost loops of every merge.  Pure
 * functions, safe on any thread.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "graph-int.h"

struct dtype_info {
	const char *st;		/* safetensors name */
	const char *hf;		/* torch / mergekit name, NULL if none */
	size_t size;
};

static const struct dtype_info dtypes[GRAPH_DT_COUNT] = {
	[GRAPH_DT_NONE] = { "NONE", NULL, 0 },
	[GRAPH_DT_F64] = { "F64", "float64", 8 },
	[GRAPH_DT_F32] = { "F32", "float32", 4 },
	[GRAPH_DT_F16] = { "F16", "float16", 2 },
	[GRAPH_DT_BF16] = { "BF16", "bfloat16", 2 },
	[GRAPH_DT_I64] = { "I64", "int64", 8 },
	[GRAPH_DT_I32] = { "I32", "int32", 4 },
	[GRAPH_DT_I16] = { "I16", "int16", 2 },
	[GRAPH_DT_I8] = { "I8", "int8", 1 },
	[GRAPH_DT_U8] = { "U8", "uint8", 1 },
	[GRAPH_DT_BOOL] = { "BOOL", "bool", 1 },
	[GRAPH_DT_F8_E4M3] = { "F8_E4M3", "float8_e4m3fn", 1 },
	[GRAPH_DT_F8_E5M2] = { "F8_E5M2", "float8_e5m2", 1 },
};

size_t
graph_dtype_size(enum graph_dtype dt)
{
	return dt < GRAPH_DT_COUNT ? dtypes[dt].size : 0;
}

const char *
graph_dtype_st_name(enum graph_dtype dt)
{
	return dt < GRAPH_DT_COUNT ? dtypes[dt].st : "?";
}

const char *
graph_dtype_hf_name(enum graph_dtype dt)
{
	return dt < GRAPH_DT_COUNT && dtypes[dt].hf ? dtypes[dt].hf : "?";
}

enum graph_dtype
graph_dtype_from_st_name(const char *s)
{
	int i;

	for (i = 1; i < GRAPH_DT_COUNT; i++)
		if (strcmp(s, dtypes[i].st) == 0)
			return (enum graph_dtype)i;
	return GRAPH_DT_NONE;
}

/*
 * The dtype names a config may use are mergekit's, so that configs stay
 * portable: bfloat16, float16, float32 and int64, optionally prefixed with
 * "torch.".  Anything else gets GRAPH_DT_NONE and, when we can guess what
 * was meant, a suggestion.
 */
enum graph_dtype
graph_dtype_from_config_name(const char *s, const char **suggest)
{
	static const struct {
		const char *alias;
		const char *name;
	} guesses[] = {
		{ "bf16", "bfloat16" }, { "fp16", "float16" },
		{ "f16", "float16" }, { "half", "float16" },
		{ "fp32", "float32" }, { "f32", "float32" },
		{ "float", "float32" }, { "i64", "int64" },
		{ "long", "int64" },
	};
	size_t i;

	*suggest = NULL;
	if (strncmp(s, "torch.", 6) == 0)
		s += 6;
	if (strcmp(s, "bfloat16") == 0)
		return GRAPH_DT_BF16;
	if (strcmp(s, "float16") == 0)
		return GRAPH_DT_F16;
	if (strcmp(s, "float32") == 0)
		return GRAPH_DT_F32;
	if (strcmp(s, "int64") == 0)
		return GRAPH_DT_I64;
	for (i = 0; i < sizeof guesses / sizeof guesses[0]; i++)
		if (strcasecmp(s, guesses[i].alias) == 0)
			*suggest = guesses[i].name;
	return GRAPH_DT_NONE;
}

bool
graph_dtype_is_float(enum graph_dtype dt)
{
	switch (dt) {
	case GRAPH_DT_F64:
	case GRAPH_DT_F32:
	case GRAPH_DT_F16:
	case GRAPH_DT_BF16:
	case GRAPH_DT_F8_E4M3:
	case GRAPH_DT_F8_E5M2:
		return true;
	default:
		return false;
	}
}

bool
graph_dtype_is_encodable(enum graph_dtype dt)
{
	switch (dt) {
	case GRAPH_DT_F64:
	case GRAPH_DT_F32:
	case GRAPH_DT_F16:
	case GRAPH_DT_BF16:
		return true;
	default:
		return false;
	}
}

static inline float
bits_f32(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof f);
	return f;
}

static inline uint32_t
f32_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof u);
	return u;
}

/* Round to nearest even; NaN stays a quiet NaN with its sign. */
static inline uint16_t
f32_to_bf16(float f)
{
	uint32_t u = f32_bits(f);
	uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
	uint32_t nan = (u >> 16) | 0x0040u;

	return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

/*
 * IEEE half <-> single, after Fabian Giesen's "half" routines, written
 * with selects instead of branches so that the loops vectorise.  The
 * subnormal cases lean on the FPU's own round-to-nearest-even by adding a
 * magic constant, so results are correctly rounded without a loop.
 */
static inline float
f16_to_f32(uint16_t h)
{
	uint32_t o = (uint32_t)(h & 0x7fffu) << 13;
	uint32_t exp = o & (0x7c00u << 13);
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t norm = o + ((uint32_t)(127 - 15) << 23);
	uint32_t infnan = norm + ((uint32_t)(128 - 16) << 23);
	uint32_t sub = f32_bits(bits_f32(norm + (1u << 23)) -
	    bits_f32(113u << 23));

	o = exp == (0x7c00u << 13) ? infnan : exp == 0 ? sub : norm;
	return bits_f32(o | sign);
}

static inline uint16_t
f32_to_f16(float f)
{
	const uint32_t f32inf = 255u << 23, f16max = (127u + 16u) << 23;
	const uint32_t magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
	uint32_t u = f32_bits(f), sign = u & 0x80000000u;
	uint32_t a = u ^ sign;
	uint32_t big = a > f32inf ? 0x7e00u : 0x7c00u;
	uint32_t sub = f32_bits(bits_f32(a) + bits_f32(magic)) - magic;
	uint32_t norm = (a + ((uint32_t)(15 - 127) << 23) + 0xfffu +
	    ((a >> 13) & 1u)) >> 13;
	uint32_t o = a >= f16max ? big : a < (113u << 23) ? sub : norm;

	return (uint16_t)(o | (sign >> 16));
}

/* Little-endian 16-bit loads and stores (safetensors is little endian). */
static inline uint16_t
ld16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof v);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = (uint16_t)(v << 8 | v >> 8);
#endif
	return v;
}

static inline void
st16(uint8_t *p, uint16_t v)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = (uint16_t)(v << 8 | v >> 8);
#endif
	memcpy(p, &v, sizeof v);
}

float
graph_bf16_to_f32(uint16_t h)
{
	return bits_f32((uint32_t)h << 16);
}

uint16_t
graph_f32_to_bf16(float f)
{
	return f32_to_bf16(f);
}

/* Single values, for callers outside the array loops. */
float
graph_f16_to_f32(uint16_t h)
{
	return f16_to_f32(h);
}

uint16_t
graph_f32_to_f16(float f)
{
	return f32_to_f16(f);
}

/* float8 e4m3fn: bias 7, no infinities, S.1111.111 is NaN. */
static float
f8e4m3_to_f32(uint8_t b)
{
	int sign = b >> 7, exp = (b >> 3) & 15, man = b & 7;
	float v;

	if (exp == 15 && man == 7)
		return NAN;
	if (exp == 0)
		v = ldexpf((float)man, -9);
	else
		v = ldexpf((float)(8 + man), exp - 10);
	return sign ? -v : v;
}

/* float8 e5m2 is the top byte of an IEEE half. */
static float
f8e5m2_to_f32(uint8_t b)
{
	return f16_to_f32((uint16_t)(b << 8));
}

GRAPH_SIMD static void
graph_decode_f32_simd(enum graph_dtype dt, const void *restrict src,
    float *restrict dst, size_t n)
{
	const uint8_t *restrict s = src;
	size_t i;

	switch (dt) {
	case GRAPH_DT_F32:
		memcpy(dst, src, n * sizeof *dst);
		break;
	case GRAPH_DT_BF16:
		for (i = 0; i < n; i++)
			dst[i] = bits_f32((uint32_t)ld16(s + 2 * i) << 16);
		break;
	case GRAPH_DT_F16:
		for (i = 0; i < n; i++)
			dst[i] = f16_to_f32(ld16(s + 2 * i));
		break;
	case GRAPH_DT_F64:
		for (i = 0; i < n; i++) {
			double d;
			memcpy(&d, s + 8 * i, sizeof d);
			dst[i] = (float)d;
		}
		break;
	case GRAPH_DT_I64:
		for (i = 0; i < n; i++) {
			int64_t v;
			memcpy(&v, s + 8 * i, sizeof v);
			dst[i] = (float)v;
		}
		break;
	case GRAPH_DT_I32:
		for (i = 0; i < n; i++) {
			int32_t v;
			memcpy(&v, s + 4 * i, sizeof v);
			dst[i] = (float)v;
		}
		break;
	case GRAPH_DT_I16:
		for (i = 0; i < n; i++) {
			int16_t v;
			memcpy(&v, s + 2 * i, sizeof v);
			dst[i] = (float)v;
		}
		break;
	case GRAPH_DT_I8:
		for (i = 0; i < n; i++)
			dst[i] = (float)(int8_t)s[i];
		break;
	case GRAPH_DT_U8:
	case GRAPH_DT_BOOL:
		for (i = 0; i < n; i++)
			dst[i] = (float)s[i];
		break;
	case GRAPH_DT_F8_E4M3:
		for (i = 0; i < n; i++)
			dst[i] = f8e4m3_to_f32(s[i]);
		break;
	case GRAPH_DT_F8_E5M2:
		for (i = 0; i < n; i++)
			dst[i] = f8e5m2_to_f32(s[i]);
		break;
	default:
		memset(dst, 0, n * sizeof *dst);
		break;
	}
}

GRAPH_SIMD static void
graph_encode_f32_simd(enum graph_dtype dt, const float *restrict src,
    void *restrict dst, size_t n)
{
	uint8_t *restrict d = dst;
	size_t i;

	switch (dt) {
	case GRAPH_DT_F32:
		memcpy(dst, src, n * sizeof *src);
		break;
	case GRAPH_DT_BF16:
		for (i = 0; i < n; i++)
			st16(d + 2 * i, f32_to_bf16(src[i]));
		break;
	case GRAPH_DT_F16:
		for (i = 0; i < n; i++)
			st16(d + 2 * i, f32_to_f16(src[i]));
		break;
	case GRAPH_DT_F64:
		for (i = 0; i < n; i++) {
			double v = src[i];
			memcpy(d + 8 * i, &v, sizeof v);
		}
		break;
	default:
		/* The planner only chooses encodable output types. */
		memset(dst, 0, n * graph_dtype_size(dt));
		break;
	}
}

void
graph_dtype_round(enum graph_dtype dt, float *v, size_t n)
{
	size_t i;

	switch (dt) {
	case GRAPH_DT_BF16:
		for (i = 0; i < n; i++)
			v[i] = bits_f32((uint32_t)f32_to_bf16(v[i]) << 16);
		break;
	case GRAPH_DT_F16:
		for (i = 0; i < n; i++)
			v[i] = f16_to_f32(f32_to_f16(v[i]));
		break;
	default:
		break;
	}
}

/*
 * As graph_decode_f32, to float64: every float32 value is exact in
 * float64, so this equals decoding to float32 and widening, in one pass
 * over the stored bytes.  bfloat16 and float32 have loops of their own
 * (what inspect reads); the rest go through float32 a strip at a time.
 */
GRAPH_SIMD static void
graph_decode_f64_simd(enum graph_dtype dt, const void *restrict src,
    double *restrict dst, size_t n)
{
	const uint8_t *restrict s = src;
	float strip[256];
	size_t i, j, k;

	switch (dt) {
	case GRAPH_DT_BF16:
		for (i = 0; i < n; i++)
			dst[i] = (double)bits_f32((uint32_t)ld16(s + 2 * i) <<
			    16);
		break;
	case GRAPH_DT_F32:
		for (i = 0; i < n; i++) {
			float v;
			memcpy(&v, s + 4 * i, sizeof v);
			dst[i] = (double)v;
		}
		break;
	default:
		for (i = 0; i < n; i += k) {
			k = n - i < 256 ? n - i : 256;
			graph_decode_f32_simd(dt, s + i * graph_dtype_size(dt),
			    strip, k);
			for (j = 0; j < k; j++)
				dst[i + j] = (double)strip[j];
		}
		break;
	}
}

/* Elements decoded, then summed while they are still in the L1 cache. */
#define SUMSQ_STRIP 512

/*
 * graph_decode_f64, returning the sum of the values' squares, each strip
 * summed (kern_sumsq) right after it is decoded, from the L1 cache
 * (OpenBLAS's ddot over a whole chunk of dst afterwards was 14% of
 * inspect's CPU time).  The strips' sums are added in order.
 */
double
graph_decode_f64_sumsq(enum graph_dtype dt, const void *restrict src,
    double *restrict dst, size_t n)
{
	const uint8_t *s = src;
	size_t es = graph_dtype_size(dt), i, k;
	double sum = 0;

	for (i = 0; i < n; i += k) {
		k = n - i < SUMSQ_STRIP ? n - i : SUMSQ_STRIP;
		graph_decode_f64_simd(dt, s + i * es, dst + i, k);
		sum += kern_sumsq(dst + i, k);
	}
	return sum;
}

GRAPH_SIMD static void
sub_f64_simd(double *restrict x, const double *restrict y, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		x[i] -= y[i];
}

/* x[i] -= y[i] (exact: both are float32 values), returning the sum of
 * the differences' squares, a strip at a time as above. */
double
graph_sub_f64_sumsq(double *restrict x, const double *restrict y, size_t n)
{
	size_t i, k;
	double sum = 0;

	for (i = 0; i < n; i += k) {
		k = n - i < SUMSQ_STRIP ? n - i : SUMSQ_STRIP;
		sub_f64_simd(x + i, y + i, k);
		sum += kern_sumsq(x + i, k);
	}
	return sum;
}

/* The exported names call the cloned implementations (see kernels.c). */
void
graph_decode_f32(enum graph_dtype dt, const void *restrict src,
    float *restrict dst, size_t n)
{
	graph_decode_f32_simd(dt, src, dst, n);
}

void
graph_decode_f64(enum graph_dtype dt, const void *restrict src,
    double *restrict dst, size_t n)
{
	graph_decode_f64_simd(dt, src, dst, n);
}

void
graph_encode_f32(enum graph_dtype dt, const float *restrict src,
    void *restrict dst, size_t n)
{
	graph_encode_f32_simd(dt, src, dst, n);
}
