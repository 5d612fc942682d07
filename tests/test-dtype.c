/* SPDX-License-Identifier: MIT */
/*
 * test-dtype.c: unit tests for graph/dtype.c, the element types and the
 * float32 conversions every merge reads and writes through.
 *
 * Half and bfloat16 decoding is checked for all 65536 bit patterns against
 * a decoder written here from the IEEE field layout with ldexp.  Encoding
 * (round to nearest even, overflow to infinity) is checked against a
 * reference computed in double arithmetic: the value is divided by the
 * quantum of the target format at its binade, rounded with nearbyint and
 * scaled back.  Inputs are every tie and near-tie between neighbouring
 * representable values, millions of random float bit patterns, subnormals
 * of both formats, zeros, infinities and NaNs.  The array coders, the
 * float8 decoders, the integer decoders and the dtype names are checked
 * against hand-computed values.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"
#include "tap.h"

/* A format with a 1-bit sign, an exponent field and a mantissa field. */
struct fmt {
	const char *name;
	int man_bits;		/* stored mantissa bits */
	int emin;		/* exponent of the smallest normal */
	double overflow;	/* values from here on round to infinity */
	uint32_t elo, ehi;	/* float32 exponent fields around its range */
	float (*decode)(uint16_t);
	uint16_t (*encode)(float);
};

static float ref_f16_decode(uint16_t);
static float ref_bf16_decode(uint16_t);
static float ref_e4m3(uint8_t);
static float ref_e5m2(uint8_t);
static double ref_round(const struct fmt *, double);
static int check_round(const struct fmt *, float);
static int same_float(float, float);
static float bits_float(uint32_t);
static uint32_t float_bits(float);
static uint64_t rng_next(uint64_t *);
static void test_decode_all(const struct fmt *, float (*)(uint16_t));
static void test_ties(const struct fmt *);
static void test_random(const struct fmt *);
static void test_specials(void);
static void test_overflow(void);
static void test_arrays(void);
static void test_float8(void);
static void test_integers(void);
static void test_round(void);
static void test_names(void);

static const struct fmt fmt_f16 = {
	"f16", 10, -14, 65520.0, 100, 146, graph_f16_to_f32,
	graph_f32_to_f16,
};

static const struct fmt fmt_bf16 = {
	"bf16", 7, -126, 0x1.ffp127, 0, 254, graph_bf16_to_f32,
	graph_f32_to_bf16,
};

static float
bits_float(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof f);
	return f;
}

static uint32_t
float_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof u);
	return u;
}

/* xorshift64*: reproducible inputs without libc's rand(). */
static uint64_t
rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* Equal values, equal signs of zero, or both NaN. */
static int
same_float(float a, float b)
{
	if (isnan(a) || isnan(b))
		return isnan(a) && isnan(b);
	return a == b && signbit(a) == signbit(b);
}

/* IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. */
static float
ref_f16_decode(uint16_t h)
{
	int e = (h >> 10) & 31, m = h & 1023;
	double v;

	if (e == 31)
		v = m ? NAN : INFINITY;
	else if (e == 0)
		v = ldexp(m, -24);
	else
		v = ldexp(1024 + m, e - 25);
	return (float)((h & 0x8000) ? -v : v);
}

/* bfloat16: 1 sign, 8 exponent (bias 127), 7 mantissa bits. */
static float
ref_bf16_decode(uint16_t h)
{
	int e = (h >> 7) & 255, m = h & 127;
	double v;

	if (e == 255)
		v = m ? NAN : INFINITY;
	else if (e == 0)
		v = ldexp(m, -133);
	else
		v = ldexp(128 + m, e - 134);
	return (float)((h & 0x8000) ? -v : v);
}

/*
 * The value of x rounded to format f, to nearest with ties to even:
 * x / quantum is exact in double, nearbyint rounds it (the default
 * rounding mode is to nearest even), and anything at or past the halfway
 * point above the largest finite value becomes infinity.
 */
static double
ref_round(const struct fmt *f, double x)
{
	double a = fabs(x), q, r;
	int e;

	if (isnan(x) || isinf(x))
		return x;
	if (a < ldexp(1, f->emin)) {
		e = f->emin;
	} else {
		(void)frexp(a, &e);
		e -= 1;		/* a = 1.xxx * 2^e */
	}
	q = ldexp(1, e - f->man_bits);
	r = nearbyint(a / q) * q;
	if (a >= f->overflow)
		r = INFINITY;
	return copysign(r, x);
}

/* One encode check; prints a diagnostic only on failure. */
static int
check_round(const struct fmt *f, float x)
{
	float got = f->decode(f->encode(x));
	float want = (float)ref_round(f, x);

	if (same_float(got, want))
		return 1;
	tap_diag("%s: %a (0x%08x) encodes to %a, want %a", f->name,
	    (double)x, float_bits(x), (double)got, (double)want);
	return 0;
}

static void
test_decode_all(const struct fmt *f, float (*ref)(uint16_t))
{
	unsigned bad_dec = 0, bad_rt = 0;
	uint32_t h;
	float v;

	for (h = 0; h < 65536; h++) {
		v = f->decode((uint16_t)h);
		if (!same_float(v, ref((uint16_t)h))) {
			if (bad_dec++ < 5)
				tap_diag("%s 0x%04x decodes to %a, want %a",
				    f->name, h, (double)v,
				    (double)ref((uint16_t)h));
		}
		if (isnan(v) ? !isnan(f->decode(f->encode(v))) :
		    f->encode(v) != h) {
			if (bad_rt++ < 5)
				tap_diag("%s 0x%04x does not round-trip "
				    "(0x%04x)", f->name, h, f->encode(v));
		}
	}
	ok_int_eq(bad_dec, 0, "%s: all 65536 patterns decode exactly",
	    f->name);
	ok_int_eq(bad_rt, 0, "%s: all 65536 decoded values round-trip "
	    "(NaN stays NaN)", f->name);
}

/*
 * Between every pair of neighbouring finite values of the format, the
 * exact midpoint (representable in float: one more bit) must go to the
 * even neighbour, and the floats just below and above it to the nearer.
 */
static void
test_ties(const struct fmt *f)
{
	unsigned bad = 0, n = 0;
	uint32_t h, s;
	float lo, hi, mid;

	for (s = 0; s <= 0x8000; s += 0x8000) {
		for (h = 0; h < 0x7fff; h++) {
			lo = f->decode((uint16_t)(h | s));
			hi = f->decode((uint16_t)((h + 1) | s));
			if (isinf(hi) || isnan(hi))
				break;
			mid = (float)(((double)lo + (double)hi) / 2);
			bad += !check_round(f, mid);
			bad += !check_round(f, nextafterf(mid, 0));
			bad += !check_round(f, nextafterf(mid, 2 * mid));
			bad += f->encode(mid) != ((h & 1) ? h + 1 : h) + s;
			n += 4;
			if (bad > 10)
				break;
		}
	}
	ok(bad == 0 && n > 100000, "%s: %u ties and near-ties round to "
	    "nearest even", f->name, n);
}

static void
test_random(const struct fmt *f)
{
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	unsigned bad = 0, i;
	uint32_t u, e;

	/* Any bit pattern: mostly overflow and underflow. */
	for (i = 0; i < 1500000 && bad < 10; i++)
		bad += !check_round(f, bits_float((uint32_t)rng_next(&seed)));
	ok_int_eq(bad, 0, "%s: 1.5M random float bit patterns", f->name);
	/* Exponents around the format's own range, subnormals included. */
	bad = 0;
	for (i = 0; i < 1500000 && bad < 10; i++) {
		u = (uint32_t)(rng_next(&seed) >> 16);
		e = f->elo + (uint32_t)(rng_next(&seed) %
		    (f->ehi - f->elo + 1));
		u = (u & 0x807fffffu) | e << 23;
		bad += !check_round(f, bits_float(u));
	}
	ok_int_eq(bad, 0, "%s: 1.5M random floats in and near its range",
	    f->name);
	/* Every float subnormal exponent of the format, low bits random. */
	bad = 0;
	for (i = 0; i < 200000 && bad < 10; i++)
		bad += !check_round(f, bits_float((uint32_t)rng_next(&seed) &
		    0x807fffffu));
	ok_int_eq(bad, 0, "%s: 200k random float32 subnormals",
	    f->name);
}

static void
test_specials(void)
{
	ok_int_eq(graph_f32_to_f16(1.0f + 0x1p-11f), 0x3c00,
	    "f16: 1 + 2^-11 is a tie and rounds down to 1");
	ok_int_eq(graph_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02,
	    "f16: 1 + 3*2^-11 rounds up to 1 + 2^-9");
	ok_int_eq(graph_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80,
	    "bf16: 1 + 2^-8 is a tie and rounds down to 1");
	ok_int_eq(graph_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82,
	    "bf16: 1 + 3*2^-8 rounds up to 1 + 2^-6");
	ok_int_eq(graph_f32_to_f16(0x1p-24f), 0x0001,
	    "f16: 2^-24 is the smallest subnormal");
	ok_int_eq(graph_f32_to_f16(0x1p-25f), 0x0000,
	    "f16: 2^-25 is a tie with zero and rounds to 0");
	ok_int_eq(graph_f32_to_f16(0x1.8p-25f), 0x0001,
	    "f16: 1.5*2^-25 rounds up to the smallest subnormal");
	ok_int_eq(graph_f32_to_f16(3 * 0x1p-25f), 0x0002,
	    "f16: 3*2^-25 is a tie and rounds to 2*2^-24");
	ok_int_eq(graph_f32_to_f16(-0.0f), 0x8000, "f16: -0 keeps its sign");
	ok_int_eq(graph_f32_to_bf16(-0.0f), 0x8000, "bf16: -0 keeps its sign");
	ok_int_eq(graph_f32_to_f16(-0x1p-30f), 0x8000,
	    "f16: a tiny negative value rounds to -0");
	ok_int_eq(graph_f32_to_f16(INFINITY), 0x7c00, "f16: +inf");
	ok_int_eq(graph_f32_to_f16(-INFINITY), 0xfc00, "f16: -inf");
	ok_int_eq(graph_f32_to_bf16(-INFINITY), 0xff80, "bf16: -inf");
	ok_int_eq(graph_f32_to_bf16(0x1p-133f), 0x0001,
	    "bf16: 2^-133 is the smallest subnormal");
	ok_int_eq(graph_f32_to_bf16(0x1p-134f), 0x0000,
	    "bf16: 2^-134 is a tie with zero and rounds to 0");
	ok(isnan(graph_f16_to_f32(graph_f32_to_f16(NAN))),
	    "f16: NaN stays NaN");
	ok(isnan(graph_f16_to_f32(graph_f32_to_f16(bits_float(0x7f800001u)))),
	    "f16: a NaN with only the lowest payload bit is not inf");
	ok(isnan(graph_bf16_to_f32(graph_f32_to_bf16(bits_float(0x7f800001u)))),
	    "bf16: a NaN with only the lowest payload bit is not inf");
	ok(isnan(graph_bf16_to_f32(graph_f32_to_bf16(bits_float(0x7fffffffu)))),
	    "bf16: the largest NaN payload does not carry into the sign");
	ok(graph_f32_to_bf16(bits_float(0xffffffffu)) & 0x8000,
	    "bf16: a negative NaN keeps its sign");
}

static void
test_overflow(void)
{
	ok_int_eq(graph_f32_to_f16(65504.0f), 0x7bff, "f16: 65504 is the max");
	ok_int_eq(graph_f32_to_f16(65519.99f), 0x7bff,
	    "f16: 65519.99 rounds down to 65504");
	ok_int_eq(graph_f32_to_f16(65520.0f), 0x7c00,
	    "f16: 65520 (halfway to 2^16) rounds to inf");
	ok_int_eq(graph_f32_to_f16(-65520.0f), 0xfc00,
	    "f16: -65520 rounds to -inf");
	ok_int_eq(graph_f32_to_f16(1e10f), 0x7c00, "f16: 1e10 is inf");
	ok_int_eq(graph_f32_to_bf16(0x1.fep127f), 0x7f7f,
	    "bf16: the largest finite value stays");
	ok_int_eq(graph_f32_to_bf16(0x1.ffp127f), 0x7f80,
	    "bf16: halfway past the largest finite value rounds to inf");
	ok_int_eq(graph_f32_to_bf16(0x1.fefffep127f), 0x7f7f,
	    "bf16: just under halfway stays finite");
}

static void
test_arrays(void)
{
	static const float in[4] = { 1.0f, -2.5f, 0x1p-24f, 65504.0f };
	static const uint8_t f16[8] = { 0x00, 0x3c, 0x00, 0xc1, 0x01, 0x00,
		0xff, 0x7b };
	static const uint8_t bf16[8] = { 0x80, 0x3f, 0x20, 0xc0, 0x80, 0x33,
		0x80, 0x47 };
	uint8_t buf[32];
	float out[4];
	double d;

	graph_encode_f32(GRAPH_DT_F16, in, buf, 4);
	ok(memcmp(buf, f16, 8) == 0, "encode F16: little-endian halves");
	graph_decode_f32(GRAPH_DT_F16, f16, out, 4);
	ok(memcmp(out, in, sizeof in) == 0, "decode F16: the same values");
	graph_encode_f32(GRAPH_DT_BF16, in, buf, 4);
	ok(memcmp(buf, bf16, 8) == 0, "encode BF16: little-endian bfloat16");
	graph_decode_f32(GRAPH_DT_BF16, bf16, out, 4);
	ok(out[0] == 1.0f && out[1] == -2.5f && out[2] == 0x1p-24f &&
	    out[3] == 65536.0f, "decode BF16 (65504 rounded to 65536)");
	graph_encode_f32(GRAPH_DT_F32, in, buf, 4);
	graph_decode_f32(GRAPH_DT_F32, buf, out, 4);
	ok(memcmp(out, in, sizeof in) == 0, "F32 encode/decode is a copy");
	graph_encode_f32(GRAPH_DT_F64, in, buf, 4);
	memcpy(&d, buf + 8, sizeof d);
	ok(d == -2.5, "encode F64: second element is -2.5 as a double");
	memcpy(&d, buf + 16, sizeof d);
	ok(d == 0x1p-24, "encode F64: third element exact");
	d = 0.1;
	memcpy(buf, &d, sizeof d);
	graph_decode_f32(GRAPH_DT_F64, buf, out, 1);
	ok(out[0] == 0.1f, "decode F64: 0.1 rounds to the float 0.1f");
}

static float
ref_e4m3(uint8_t b)
{
	int e = (b >> 3) & 15, m = b & 7;
	double v;

	if (e == 15 && m == 7)
		return NAN;
	v = e == 0 ? m / 512.0 : (1 + m / 8.0) * pow(2, e - 7);
	return (float)((b & 0x80) ? -v : v);
}

static float
ref_e5m2(uint8_t b)
{
	int e = (b >> 2) & 31, m = b & 3;
	double v;

	if (e == 31)
		return m ? NAN : (b & 0x80) ? -INFINITY : INFINITY;
	v = e == 0 ? m / 65536.0 : (1 + m / 4.0) * pow(2, e - 15);
	return (float)((b & 0x80) ? -v : v);
}

static void
test_float8(void)
{
	uint8_t all[256], b[6] = { 0x38, 0x7f, 0x01, 0x7e, 0x08, 0xb8 };
	float out[256];
	unsigned bad4 = 0, bad5 = 0, i;

	graph_decode_f32(GRAPH_DT_F8_E4M3, b, out, 6);
	ok(out[0] == 1.0f, "e4m3 0x38 is 1.0");
	ok(isnan(out[1]), "e4m3 0x7f is NaN");
	ok(out[2] == 0x1p-9f, "e4m3 0x01 is 2^-9");
	ok(out[3] == 448.0f, "e4m3 0x7e is 448, the max");
	ok(out[4] == 0x1p-6f, "e4m3 0x08 is 2^-6, the smallest normal");
	ok(out[5] == -1.0f, "e4m3 0xb8 is -1.0");
	for (i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	graph_decode_f32(GRAPH_DT_F8_E4M3, all, out, 256);
	for (i = 0; i < 256; i++)
		bad4 += !same_float(out[i], ref_e4m3((uint8_t)i));
	ok_int_eq(bad4, 0, "e4m3: all 256 values (no infinities)");
	graph_decode_f32(GRAPH_DT_F8_E5M2, all, out, 256);
	for (i = 0; i < 256; i++)
		bad5 += !same_float(out[i], ref_e5m2((uint8_t)i));
	ok_int_eq(bad5, 0, "e5m2: all 256 values");
	ok(out[0x3c] == 1.0f && out[0x7b] == 57344.0f && isinf(out[0x7c]) &&
	    out[0x01] == 0x1p-16f, "e5m2: 0x3c = 1, 0x7b = 57344, 0x7c = inf, "
	    "0x01 = 2^-16");
}

/*
 * graph_decode_f64 (inspect's reader) equals decoding to float32 and
 * widening, for every dtype: every 16-bit pattern of bfloat16 and half,
 * every byte of the 8-bit kinds, at a length that is no multiple of
 * the fallback's strip.
 */
static void
test_decode_f64(void)
{
	enum { N = 65536 + 3 };
	uint8_t *raw = malloc(N * 8);
	float *f = malloc(N * sizeof *f);
	double *d = malloc(N * sizeof *d);
	unsigned bad, i, dt;
	uint64_t x = 0x9e3779b97f4a7c15u;

	for (i = 0; i < N * 8; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		raw[i] = (uint8_t)x;
	}
	/* Every 16-bit pattern once, for the 2-byte kinds. */
	for (i = 0; i < 65536; i++) {
		raw[2 * i] = (uint8_t)i;
		raw[2 * i + 1] = (uint8_t)(i >> 8);
	}
	for (dt = GRAPH_DT_F64; dt < GRAPH_DT_COUNT; dt++) {
		graph_decode_f32((enum graph_dtype)dt, raw, f, N);
		graph_decode_f64((enum graph_dtype)dt, raw, d, N);
		for (bad = 0, i = 0; i < N; i++)
			bad += !(isnan(d[i]) ? isnan(f[i]) : d[i] ==
			    (double)f[i] && !signbit(d[i]) == !signbit(f[i]));
		ok(bad == 0, "decode_f64 %s: float32's values, widened",
		    graph_dtype_st_name((enum graph_dtype)dt));
	}
	free(raw);
	free(f);
	free(d);
}

/*
 * graph_decode_f64_sumsq and graph_sub_f64_sumsq (inspect's norms): the
 * values are graph_decode_f64's and the differences exact, and each sum
 * of squares is within a few float64 roundings of the sum taken in long
 * double, at lengths around the lanes (16) and strips (512).
 */
static void
test_sumsq(void)
{
	static const size_t lens[] = { 0, 1, 15, 16, 17, 511, 512, 513, 5003 };
	static const enum graph_dtype dts[] = { GRAPH_DT_F32, GRAPH_DT_BF16,
	    GRAPH_DT_F16 };
	enum { N = 5003 };
	float *v = malloc(N * sizeof *v);
	uint8_t *raw = malloc(N * 4), *rawb = malloc(N * 4);
	double *d = malloc(N * sizeof *d), *e = malloc(N * sizeof *e);
	double *b = malloc(N * sizeof *b), got;
	long double ref, refd;
	uint64_t x = 0x2545f4914f6cdd1du;
	unsigned bad_vals, bad_sums;
	size_t i, l, t;

	for (t = 0; t < sizeof dts / sizeof dts[0]; t++) {
		bad_vals = bad_sums = 0;
		for (i = 0; i < N; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			v[i] = (float)((double)(x >> 11) * 0x1p-53 * 4 - 2);
		}
		graph_encode_f32(dts[t], v, raw, N);
		for (i = 0; i < N; i++)
			v[i] = v[N - 1 - i] * 0.5f;
		graph_encode_f32(dts[t], v, rawb, N);
		for (l = 0; l < sizeof lens / sizeof lens[0]; l++) {
			graph_decode_f64(dts[t], raw, e, lens[l]);
			got = graph_decode_f64_sumsq(dts[t], raw, d, lens[l]);
			for (ref = 0, i = 0; i < lens[l]; i++) {
				bad_vals += d[i] != e[i];
				ref += (long double)e[i] * e[i];
			}
			bad_sums += fabsl(got - ref) > 1e-13L * ref;
			graph_decode_f64(dts[t], rawb, b, lens[l]);
			for (refd = 0, i = 0; i < lens[l]; i++)
				refd += ((long double)e[i] - b[i]) *
				    ((long double)e[i] - b[i]);
			got = graph_sub_f64_sumsq(d, b, lens[l]);
			for (i = 0; i < lens[l]; i++)
				bad_vals += d[i] != e[i] - b[i];
			bad_sums += fabsl(got - refd) > 1e-13L * refd;
		}
		ok_int_eq(bad_vals, 0, "decode_f64_sumsq %s: decode_f64's "
		    "values, and exact differences",
		    graph_dtype_st_name(dts[t]));
		ok_int_eq(bad_sums, 0, "decode_f64_sumsq %s: sums of squares "
		    "within 1e-13 of long double's", graph_dtype_st_name(dts[t]));
	}
	free(v);
	free(raw);
	free(rawb);
	free(d);
	free(e);
	free(b);
}

static void
test_integers(void)
{
	static const int8_t i8[3] = { -128, 127, -1 };
	static const uint8_t u8[2] = { 255, 0 };
	static const int16_t i16[2] = { -32768, 32767 };
	static const int32_t i32[2] = { INT32_MIN, 16777217 };
	static const int64_t i64[2] = { -1, (1ll << 53) + 1 };
	static const uint8_t bl[2] = { 1, 0 };
	float o[3];

	graph_decode_f32(GRAPH_DT_I8, i8, o, 3);
	ok(o[0] == -128.0f && o[1] == 127.0f && o[2] == -1.0f, "decode I8");
	graph_decode_f32(GRAPH_DT_U8, u8, o, 2);
	ok(o[0] == 255.0f && o[1] == 0.0f, "decode U8 is unsigned");
	graph_decode_f32(GRAPH_DT_I16, i16, o, 2);
	ok(o[0] == -32768.0f && o[1] == 32767.0f, "decode I16");
	graph_decode_f32(GRAPH_DT_I32, i32, o, 2);
	ok(o[0] == -0x1p31f && o[1] == 16777216.0f,
	    "decode I32 (2^24+1 rounds to even)");
	graph_decode_f32(GRAPH_DT_I64, i64, o, 2);
	ok(o[0] == -1.0f && o[1] == 0x1p53f, "decode I64");
	graph_decode_f32(GRAPH_DT_BOOL, bl, o, 2);
	ok(o[0] == 1.0f && o[1] == 0.0f, "decode BOOL");
}

static void
test_round(void)
{
	float v[4] = { 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 70000.0f, 0.1f };
	float w[4];

	memcpy(w, v, sizeof v);
	graph_dtype_round(GRAPH_DT_BF16, w, 4);
	ok(w[0] == 1.0f && w[1] == 1.0f + 0x1p-6f && w[2] == 70144.0f &&
	    w[3] == 0x1.9ap-4f, "round to BF16 in place");
	memcpy(w, v, sizeof v);
	graph_dtype_round(GRAPH_DT_F16, w, 4);
	ok(w[0] == 1.0f + 0x1p-8f && w[1] == 1.0f + 3 * 0x1p-8f &&
	    isinf(w[2]) && w[3] == (float)0x1.998p-4,
	    "round to F16 in place (70000 is inf)");
	memcpy(w, v, sizeof v);
	graph_dtype_round(GRAPH_DT_F32, w, 4);
	ok(memcmp(w, v, sizeof v) == 0, "round to F32 changes nothing");
}

static void
test_names(void)
{
	const char *s;
	int i;

	for (i = 1; i < GRAPH_DT_COUNT; i++)
		if ((int)graph_dtype_from_st_name(graph_dtype_st_name(
		    (enum graph_dtype)i)) != i)
			break;
	ok_int_eq(i, GRAPH_DT_COUNT, "every safetensors name maps back");
	ok_int_eq(graph_dtype_from_st_name("BF16"), GRAPH_DT_BF16, "st BF16");
	ok_int_eq(graph_dtype_from_st_name("F8_E4M3"), GRAPH_DT_F8_E4M3,
	    "st F8_E4M3");
	ok_int_eq(graph_dtype_from_st_name("bf16"), GRAPH_DT_NONE,
	    "st names are case-sensitive");
	ok_int_eq(graph_dtype_from_st_name("NONE"), GRAPH_DT_NONE,
	    "st NONE is not a dtype");
	ok_int_eq(graph_dtype_from_st_name(""), GRAPH_DT_NONE, "st empty");
	ok(graph_dtype_size(GRAPH_DT_F64) == 8 &&
	    graph_dtype_size(GRAPH_DT_F32) == 4 &&
	    graph_dtype_size(GRAPH_DT_F16) == 2 &&
	    graph_dtype_size(GRAPH_DT_BF16) == 2 &&
	    graph_dtype_size(GRAPH_DT_I64) == 8 &&
	    graph_dtype_size(GRAPH_DT_I32) == 4 &&
	    graph_dtype_size(GRAPH_DT_I16) == 2 &&
	    graph_dtype_size(GRAPH_DT_I8) == 1 &&
	    graph_dtype_size(GRAPH_DT_U8) == 1 &&
	    graph_dtype_size(GRAPH_DT_BOOL) == 1 &&
	    graph_dtype_size(GRAPH_DT_F8_E4M3) == 1 &&
	    graph_dtype_size(GRAPH_DT_F8_E5M2) == 1, "element sizes");
	ok(graph_dtype_size(GRAPH_DT_NONE) == 0 &&
	    graph_dtype_size(GRAPH_DT_COUNT) == 0, "no size for NONE/COUNT");
	ok_str_eq(graph_dtype_hf_name(GRAPH_DT_BF16), "bfloat16", "hf name");
	ok(graph_dtype_is_encodable(GRAPH_DT_BF16) &&
	    !graph_dtype_is_encodable(GRAPH_DT_I64) &&
	    !graph_dtype_is_encodable(GRAPH_DT_F8_E4M3) &&
	    graph_dtype_is_float(GRAPH_DT_F8_E5M2) &&
	    !graph_dtype_is_float(GRAPH_DT_BOOL), "is_float / is_encodable");
	ok_int_eq(graph_dtype_from_config_name("bfloat16", &s), GRAPH_DT_BF16,
	    "config bfloat16");
	ok_int_eq(graph_dtype_from_config_name("torch.float16", &s),
	    GRAPH_DT_F16, "config torch.float16");
	ok_int_eq(graph_dtype_from_config_name("float32", &s), GRAPH_DT_F32,
	    "config float32");
	ok_int_eq(graph_dtype_from_config_name("int64", &s), GRAPH_DT_I64,
	    "config int64");
	ok_int_eq(graph_dtype_from_config_name("bf16", &s), GRAPH_DT_NONE,
	    "config bf16 is rejected");
	ok_str_eq(s, "bfloat16", "bf16 suggests bfloat16");
	ok_int_eq(graph_dtype_from_config_name("fp16", &s), GRAPH_DT_NONE,
	    "config fp16 is rejected");
	ok_str_eq(s, "float16", "fp16 suggests float16");
	ok_int_eq(graph_dtype_from_config_name("float64", &s), GRAPH_DT_NONE,
	    "config float64 is rejected (mergekit cannot use it)");
	ok_int_eq(graph_dtype_from_config_name("torch.", &s), GRAPH_DT_NONE,
	    "config bare torch. is rejected");
	ok_int_eq(graph_dtype_from_config_name("Float32", &s), GRAPH_DT_NONE,
	    "config names are case-sensitive");
}

int
main(void)
{
	tap_plan_lazy();
	test_decode_all(&fmt_f16, ref_f16_decode);
	test_decode_all(&fmt_bf16, ref_bf16_decode);
	test_ties(&fmt_f16);
	test_ties(&fmt_bf16);
	test_random(&fmt_f16);
	test_random(&fmt_bf16);
	test_specials();
	test_overflow();
	test_arrays();
	test_float8();
	test_decode_f64();
	test_sumsq();
	test_integers();
	test_round();
	test_names();
	return tap_done();
}
