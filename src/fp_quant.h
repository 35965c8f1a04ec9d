/* Quantization kernels: float32 -> 8-bit (or packed 4-bit) integer codes.
 *
 *   code = clamp(round(x / scale) + zero_point, lo, hi)
 *
 * x / scale is an IEEE float32 division (ONNX QuantizeLinear); round is to
 * nearest even, toward zero or toward minus infinity; the sum with the zero
 * point and the clamp are exact in float32 (all values are small integers).
 * Inputs are finite (the wrapper checks); the one NaN that can arise, 0 / 0
 * under a zero scale, becomes the zero point before any clamp or conversion.
 *
 */
#ifndef FP_QUANT_H
#define FP_QUANT_H

#include <math.h>
#include "fp_common.h"

enum { FP_Q_RNE = 0, FP_Q_RTZ = 1, FP_Q_FLOOR = 2 };

static inline float fp_q_round(float v, int mode) {
    return mode == FP_Q_RNE ? rintf(v) : (mode == FP_Q_RTZ ? truncf(v) : floorf(v));
}

/* One code.  A zero scale makes x / s an infinity (clamped below) or, for
 * x = 0, NaN: that is the zero point, so no NaN reaches the clamp or the
 * conversion to int (which would be undefined). */
static inline int32_t fp_q_one(float x, float s, float zp, float lo, float hi, int mode) {
    float v = fp_q_round(x / s, mode) + zp;
    v = v != v ? zp : v;
    v = v < lo ? lo : (v > hi ? hi : v);
    return (int32_t)v;
}

static inline int fp_q_finite(float v) {
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    return (b & 0x7f800000u) != 0x7f800000u;
}

/* The one 4-bit packer: two codes in a byte, the first in the low nibble
 * (ONNX >= 1.17 INT4/UINT4 order).  The AVX2 loop below does the same 32
 * codes at a time. */
static inline uint8_t fp_nibbles(uint32_t first, uint32_t second) {
    return (uint8_t)((first & 0x0fu) | ((second & 0x0fu) << 4));
}

/* The code of x[i], or 0 for a non-finite x[i] (counted in *bad). */
static inline uint32_t fp_q_code(const float *x, int64_t i, float s, float zp, float lo, float hi,
                                 int mode, int64_t *bad) {
    const int ok = fp_q_finite(x[i]);
    *bad += !ok;
    return ok ? (uint32_t)fp_q_one(x[i], s, zp, lo, hi, mode) & 0xffu : 0u;
}

/* Portable loop: n codes, one per byte, or two per byte when pack4 (an odd
 * last code fills a byte alone).  Returns the number of non-finite inputs
 * (which get code 0: no NaN reaches a float -> int conversion). */
static int64_t fp_quant_run_scalar(const float *x, uint8_t *o, int64_t n, float s, float zp,
                                   float lo, float hi, int mode, int pack4) {
    int64_t bad = 0;
    if (!pack4) {
        for (int64_t i = 0; i < n; i++) o[i] = (uint8_t)fp_q_code(x, i, s, zp, lo, hi, mode, &bad);
        return bad;
    }
    for (int64_t i = 0; i + 1 < n; i += 2) {
        const uint32_t c0 = fp_q_code(x, i, s, zp, lo, hi, mode, &bad);
        o[i / 2] = fp_nibbles(c0, fp_q_code(x, i + 1, s, zp, lo, hi, mode, &bad));
    }
    if (n & 1) o[n / 2] = fp_nibbles(fp_q_code(x, n - 1, s, zp, lo, hi, mode, &bad), 0u);
    return bad;
}

#if FP_HAVE_AVX2_KERNELS
#include <immintrin.h>

/* Adds -1 per lane for each non-finite value among x[0:32]. */
FP_TARGET_AVX2 static inline __m256i fp_q_count_bad(__m256i bad, const float *p) {
    const __m256i expo = _mm256_set1_epi32(0x7f800000);
    for (int v = 0; v < 4; v++) {
        const __m256i e = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + 8 * v)), expo);
        bad = _mm256_add_epi32(bad, _mm256_cmpeq_epi32(e, expo));
    }
    return bad;
}

FP_TARGET_AVX2 static inline __m256i fp_q8(const float *p, __m256 vs, __m256 vzp, __m256 vlo,
                                          __m256 vhi, const int mode) {
    __m256 v = _mm256_div_ps(_mm256_loadu_ps(p), vs);
    if (mode == FP_Q_RNE)
        v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    else if (mode == FP_Q_RTZ)
        v = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    else
        v = _mm256_round_ps(v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    v = _mm256_add_ps(v, vzp);
    /* 0 / 0 (a zero scale) is NaN: the zero point.  min/max would turn a NaN
     * into their second operand (-127 here), so it never reaches them. */
    v = _mm256_blendv_ps(v, vzp, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    v = _mm256_min_ps(_mm256_max_ps(v, vlo), vhi);
    return _mm256_cvtps_epi32(v);                      /* exact: v is an integer */
}

/* 32 inputs per step. */
#define FP_QUANT_LOOP(MODE)                                                                  \
    for (; i + 32 <= n; i += 32) {                                                           \
        bad = fp_q_count_bad(bad, x + i);                                                     \
        __m256i c0 = fp_q8(x + i, vs, vzp, vlo, vhi, MODE);                                  \
        __m256i c1 = fp_q8(x + i + 8, vs, vzp, vlo, vhi, MODE);                              \
        __m256i c2 = fp_q8(x + i + 16, vs, vzp, vlo, vhi, MODE);                             \
        __m256i c3 = fp_q8(x + i + 24, vs, vzp, vlo, vhi, MODE);                             \
        __m256i w01 = _mm256_packs_epi32(c0, c1), w23 = _mm256_packs_epi32(c2, c3);          \
        __m256i b = is_unsigned ? _mm256_packus_epi16(w01, w23) : _mm256_packs_epi16(w01, w23); \
        b = _mm256_permutevar8x32_epi32(b, perm);                                            \
        if (pack4) {                                                                         \
            /* 16-bit lanes [c(2k+1) : c(2k)] -> byte c(2k) & 15 | (c(2k+1) & 15) << 4 */     \
            __m256i w = _mm256_or_si256(_mm256_and_si256(b, lo_nib),                         \
                                        _mm256_and_si256(_mm256_srli_epi16(b, 4), hi_nib));  \
            w = _mm256_permute4x64_epi64(_mm256_packus_epi16(w, w), 0xd8);                   \
            _mm_storeu_si128((__m128i *)(o + i / 2), _mm256_castsi256_si128(w));             \
        } else if (stream) {                                                                 \
            _mm256_stream_si256((__m256i *)(o + i), b);                                      \
        } else {                                                                             \
            _mm256_storeu_si256((__m256i *)(o + i), b);                                      \
        }                                                                                    \
    }

/* Returns how many inputs were done (a multiple of 32); *nbad gets the
 * number of non-finite inputs among them (their codes are meaningless). */
FP_TARGET_AVX2 static int64_t fp_quant_run_avx2(const float *x, uint8_t *o, int64_t n, float s,
                                                float zp, float lo, float hi, int mode,
                                                int is_unsigned, int stream, int pack4,
                                                int64_t *nbad) {
    __m256i bad = _mm256_setzero_si256();
    const __m256i lo_nib = _mm256_set1_epi16(0x000f), hi_nib = _mm256_set1_epi16(0x00f0);
    const __m256 vs = _mm256_set1_ps(s), vzp = _mm256_set1_ps(zp);
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    stream = stream && ((uintptr_t)o & 31) == 0;
    int64_t i = 0;
    if (mode == FP_Q_RNE) {
        FP_QUANT_LOOP(FP_Q_RNE)
    } else if (mode == FP_Q_RTZ) {
        FP_QUANT_LOOP(FP_Q_RTZ)
    } else {
        FP_QUANT_LOOP(FP_Q_FLOOR)
    }
    if (stream) _mm_sfence();
    int32_t c[8];
    _mm256_storeu_si256((__m256i *)c, bad);
    int64_t total = 0;
    for (int k = 0; k < 8; k++) total -= c[k];
    *nbad = total;
    return i;
}
#undef FP_QUANT_LOOP
#endif

/* One run of n inputs sharing (scale, zero point): n codes out (int8 or
 * uint8 as is_unsigned says, as bytes), or (n + 1) / 2 bytes of packed 4-bit
 * codes when pack4.  Returns the number of non-finite inputs: the caller
 * refuses the result when it is not 0. */
static int64_t fp_quant_run(const float *x, uint8_t *o, int64_t n, float s, float zp, float lo,
                            float hi, int mode, int is_unsigned, int stream, int pack4) {
    int64_t done = 0, bad = 0;
#if FP_HAVE_AVX2_KERNELS
    if (fp_cpu_has_avx2())
        done = fp_quant_run_avx2(x, o, n, s, zp, lo, hi, mode, is_unsigned, stream, pack4, &bad);
#else
    (void)is_unsigned; (void)stream;
#endif
    return bad + fp_quant_run_scalar(x + done, o + (pack4 ? done / 2 : done), n - done, s, zp, lo, hi,
                                     mode, pack4);
}

/* Two 4-bit codes per byte, the first in the low nibble: o[i] from c[2i], c[2i+1]
 * for i < n / 2 (the caller pads an odd tail). */
FP_CLONES static void fp_pack4(const uint8_t *c, uint8_t *o, int64_t npairs) {
    for (int64_t i = 0; i < npairs; i++) o[i] = fp_nibbles(c[2 * i], c[2 * i + 1]);
}

/* min, max and the number of non-finite values of x[0:n] (min/max are
 * meaningful only when that number is 0). */
static int64_t fp_minmax_f32_scalar(const float *x, int64_t n, float *mn, float *mx) {
    float lo = INFINITY, hi = -INFINITY;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        uint32_t b;
        memcpy(&b, &v, sizeof b);
        bad += (b & 0x7f800000u) == 0x7f800000u;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    *mn = lo;
    *mx = hi;
    return bad;
}

#if FP_HAVE_AVX2_KERNELS
/* NaN inputs: min/max_ps return their second operand when either is NaN, so
 * a NaN can be dropped (or kept) silently here; that is why the non-finite
 * values are counted alongside, and the caller discards min/max unless the
 * count is 0. */
FP_TARGET_AVX2 static int64_t fp_minmax_f32_avx2(const float *x, int64_t n, float *mn, float *mx) {
    __m256 lo0 = _mm256_set1_ps(INFINITY), hi0 = _mm256_set1_ps(-INFINITY);
    __m256 lo1 = lo0, hi1 = hi0;
    __m256i bad = _mm256_setzero_si256();
    const __m256i expo = _mm256_set1_epi32(0x7f800000);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        lo0 = _mm256_min_ps(lo0, a);
        hi0 = _mm256_max_ps(hi0, a);
        lo1 = _mm256_min_ps(lo1, b);
        hi1 = _mm256_max_ps(hi1, b);
        const __m256i ea = _mm256_and_si256(_mm256_castps_si256(a), expo);
        const __m256i eb = _mm256_and_si256(_mm256_castps_si256(b), expo);
        bad = _mm256_sub_epi32(bad, _mm256_cmpeq_epi32(ea, expo));   /* all-ones lanes: -1 */
        bad = _mm256_sub_epi32(bad, _mm256_cmpeq_epi32(eb, expo));
    }
    float l[8], h[8];
    int32_t c[8];
    _mm256_storeu_ps(l, _mm256_min_ps(lo0, lo1));
    _mm256_storeu_ps(h, _mm256_max_ps(hi0, hi1));
    _mm256_storeu_si256((__m256i *)c, bad);
    float tl, th;
    int64_t nbad = fp_minmax_f32_scalar(x + i, n - i, &tl, &th);
    for (int k = 0; k < 8; k++) {
        tl = l[k] < tl ? l[k] : tl;
        th = h[k] > th ? h[k] : th;
        nbad += c[k];
    }
    *mn = tl;
    *mx = th;
    return nbad;
}
#endif

/* Chunks here are at most 2^16 elements, so the int32 lane counters above
 * cannot overflow. */
static int64_t fp_minmax_f32(const float *x, int64_t n, float *mn, float *mx) {
#if FP_HAVE_AVX2_KERNELS
    if (fp_cpu_has_avx2()) return fp_minmax_f32_avx2(x, n, mn, mx);
#endif
    return fp_minmax_f32_scalar(x, n, mn, mx);
}

/* ------------------------------------------------------------------------
 * Requantization of int32 accumulators (fixedpoint.requant documents the
 * methods), without undefined or implementation-defined behaviour: right
 * shifts of negative values go through the complement, products are formed
 * in int64, and values that leave int32 wrap through uint32 (the engines'
 * 32-bit registers wrap there).
 *
 *   FP_RQ_DOUBLE   gemmlowp / TFLite: SRDHM(x << left, q), then
 *                  RoundingDivideByPOT (ties away from zero)
 *   FP_RQ_SINGLE   TFLITE_SINGLE_ROUNDING: (x * q + 2^(t-1)) >> t, t = 31 - shift
 *   FP_RQ_RUY      ruy's x86 kernels and TFLite's NEON loops: SRDHM(x << left, q),
 *                  then (v + 2^(r-1)) >> r (ties toward +infinity)
 *   FP_RQ_FLOAT    (float)x * scale in float32, nearest even, clamped in float
 *   FP_RQ_FLOAT64  TFLite's reference FULLY_CONNECTED: round((double)x * real),
 *                  half away from zero; outside int32 the x86 conversion's
 *                  "integer indefinite" INT32_MIN
 *
 * The integer methods and FP_RQ_FLOAT64 add the zero point in int32 arithmetic
 * (wrapping) and clamp to [lo, hi]; FP_RQ_FLOAT clamps to [lo - zp, hi - zp]
 * first and adds the zero point after.
 */
enum { FP_RQ_DOUBLE = 0, FP_RQ_SINGLE = 1, FP_RQ_RUY = 2, FP_RQ_FLOAT = 3, FP_RQ_FLOAT64 = 4 };

/* v modulo 2^32, as a signed 32-bit value. */
static inline int32_t fp_wrap32(uint64_t v) {
    uint32_t u = (uint32_t)v;
    return (int32_t)((int64_t)u - ((int64_t)(u >> 31) << 32));
}

/* floor(x / 2^e), 0 <= e <= 62, branch-free: a negative x is shifted as its
 * complement (non-negative), then complemented back. */
static inline int64_t fp_asr64(int64_t x, int e) {
    int64_t m = -(int64_t)(x < 0);                         /* all ones when x < 0 */
    return m ^ (int64_t)((uint64_t)(m ^ x) >> e);          /* m ^ x >= 0: a logical shift */
}

/* SaturatingRoundingDoublingHighMul: round(a * b / 2^31), ties toward
 * +infinity (nudge 2^30 for ab >= 0, 1 - 2^30 below, then truncation toward
 * zero); only INT32_MIN * INT32_MIN saturates. */
static inline int64_t fp_srdhm(int32_t a, int32_t b) {
    int64_t ab = (int64_t)a * (int64_t)b;                  /* |ab| <= 2^62 */
    int64_t neg = (int64_t)(ab < 0);
    int64_t t = ab + ((int64_t)1 << 30) - neg * (((int64_t)1 << 31) - 1);
    int64_t tneg = (int64_t)(t < 0);
    int64_t r = fp_asr64(t + tneg * (((int64_t)1 << 31) - 1), 31);   /* truncating t / 2^31 */
    return (a == INT32_MIN && b == INT32_MIN) ? (int64_t)INT32_MAX : r;
}

/* RoundingDivideByPOT: x / 2^e rounded half away from zero, 0 <= e <= 31 */
static inline int64_t fp_rdbpot(int64_t x, int e) {
    uint64_t mask = ((uint64_t)1 << e) - 1u;
    int64_t remainder = (int64_t)((uint64_t)x & mask);     /* low e bits, two's complement */
    int64_t threshold = (int64_t)(mask >> 1) + (int64_t)(x < 0);
    return fp_asr64(x, e) + (int64_t)(remainder > threshold);
}

/* x / 2^e rounded half toward +infinity: (x + 2^(e-1)) >> e, 0 <= e <= 31,
 * |x| <= 2^31 (no overflow in int64; e = 0 adds nothing). */
static inline int64_t fp_rshift_up(int64_t x, int e) {
    return fp_asr64(x + (((int64_t)1 << e) >> 1), e);
}

/* The fixed-point methods: the int32 value before the zero point.
 * -31 <= shift <= 30, 0 <= q <= 2^31 - 1. */
static inline int32_t fp_requant_int(int32_t x, int32_t q, int shift, int method) {
    if (method == FP_RQ_SINGLE) {
        int total = 31 - shift;                            /* 1..62 */
        /* |x * q| <= 2^62, + 2^61: no overflow; the int32 cast of the C++ wraps */
        return fp_wrap32((uint64_t)fp_asr64((int64_t)x * q + ((int64_t)1 << (total - 1)), total));
    }
    int left = shift > 0 ? shift : 0;
    int right = shift > 0 ? 0 : -shift;
    /* x * 2^left in int32 arithmetic (wraps), computed in uint64 */
    int32_t xs = fp_wrap32((uint64_t)(int64_t)x << left);
    int64_t v = fp_srdhm(xs, q);
    return (int32_t)(method == FP_RQ_RUY ? fp_rshift_up(v, right) : fp_rdbpot(v, right));
}

/* round((double)x * m) half away from zero; outside int32 INT32_MIN (what
 * x86's cvttsd2si gives the C++ int32 cast).  m is finite. */
static inline int32_t fp_requant_f64(int32_t x, double m) {
    double r = round((double)x * m);
    return (r >= -2147483648.0 && r < 2147483648.0) ? (int32_t)r : INT32_MIN;
}

/* One output value of any method. */
static inline int32_t fp_requant_out(int32_t x, int32_t q, int shift, double real, int method,
                                     int64_t zp, int64_t lo, int64_t hi) {
    if (method == FP_RQ_FLOAT) {
        /* float32 product, nearest even (rintf in the default rounding mode),
         * clamped in double (exact for these integers) before any conversion */
        double y = (double)rintf((float)x * (float)real);
        double l = (double)(lo - zp), h = (double)(hi - zp);
        y = y < l ? l : (y > h ? h : y);
        return (int32_t)((int64_t)y + zp);
    }
    int32_t v = method == FP_RQ_FLOAT64 ? fp_requant_f64(x, real)
                                        : fp_requant_int(x, q, shift, method);
    int64_t w = fp_wrap32((uint64_t)((int64_t)v + zp));  /* int32 add of the engines */
    return (int32_t)(w < lo ? lo : (w > hi ? hi : w));
}

/* One method's loop: one (q, shift, real) for all, or one per column. */
#define FP_RQ_LOOP(METHOD)                                                                 \
    if (!percol) {                     /* one multiplier: a loop the compiler vectorizes */ \
        const int32_t q0 = q[0];                                                            \
        const int s0 = shift[0];                                                            \
        const double r0 = real[0];                                                          \
        for (int64_t i = start; i < start + n; i++)                                         \
            out[i] = fp_requant_out(acc[i], q0, s0, r0, METHOD, zp, lo, hi);                \
    } else {                           /* row by row (the chunk may start mid-row) */       \
        int64_t i = start, end = start + n, c = start % C;                                  \
        while (i < end) {                                                                   \
            int64_t len = C - c < end - i ? C - c : end - i;                                \
            for (int64_t j = 0; j < len; j++)                                               \
                out[i + j] = fp_requant_out(acc[i + j], q[c + j], shift[c + j], real[c + j], \
                                            METHOD, zp, lo, hi);                            \
            i += len;                                                                       \
            c = 0;                                                                          \
        }                                                                                   \
    }

/* out[i] = requantized acc[i] with zero point zp, clamped to [lo, hi], for
 * the flat elements [start, start + n) of a (rows x C) array; q, shift and
 * real hold one value (percol = 0) or one per column. */
FP_CLONES
static void fp_requantize(const int32_t *acc, int32_t *out, int64_t start, int64_t n, int64_t C,
                          const int32_t *q, const int32_t *shift, const double *real, int percol,
                          int64_t zp, int64_t lo, int64_t hi, int method) {
    switch (method) {
    case FP_RQ_SINGLE: FP_RQ_LOOP(FP_RQ_SINGLE) break;
    case FP_RQ_RUY: FP_RQ_LOOP(FP_RQ_RUY) break;
    case FP_RQ_FLOAT: FP_RQ_LOOP(FP_RQ_FLOAT) break;
    case FP_RQ_FLOAT64: FP_RQ_LOOP(FP_RQ_FLOAT64) break;
    default: FP_RQ_LOOP(FP_RQ_DOUBLE) break;
    }
}
#undef FP_RQ_LOOP

/* Per-column parameters, precomputed once per call so that the per-column
 * loops below are plain 64-bit lane arithmetic that the compiler vectorizes
 * (the general loop above recomputes shifts and masks per element; variable
 * shifts need counts as wide as the values they shift):
 *   DOUBLE: left = max(shift, 0), right = max(-shift, 0), aux = 2^right - 1;
 *   RUY:    left, right as DOUBLE, aux = 2^right / 2 (0 when right = 0);
 *   SINGLE: right = 31 - shift, aux = 2^(right - 1);
 *   FLOAT:  realf = (float)real. */
typedef struct {
    const uint64_t *left;
    const uint64_t *right;
    const int64_t *aux;
    const int32_t *q;
    const float *realf;
} fp_rq_cols;

/* v modulo 2^32 as a signed value, in 64-bit lanes (as fp_wrap32). */
static inline int64_t fp_wrap32_64(uint64_t v) {
    const uint64_t u = v & 0xFFFFFFFFu;
    return (int64_t)u - (int64_t)((u >> 31) << 32);
}

/* The same values as fp_requant_out for one column, each step as there:
 * x << left in int32 (wraps), SRDHM (q >= 0 is never INT32_MIN, so it never
 * saturates), then the method's right shift; the zero point added in int32
 * (wraps) and the clamp. */
static inline int32_t fp_rq_col_int(int32_t x, uint64_t left, int32_t q, uint64_t right,
                                    int64_t aux, int ruy, int64_t zp, int64_t lo, int64_t hi) {
    const int64_t xs = fp_wrap32_64((uint64_t)(int64_t)x << left);
    const int64_t ab = xs * (int64_t)q;                              /* |ab| <= 2^62 */
    const int64_t neg = -(int64_t)(ab < 0);                          /* all ones when ab < 0 */
    const int64_t t = ab + ((int64_t)1 << 30) + (neg & (1 - ((int64_t)1 << 31)));
    const int64_t tt = t + ((-(int64_t)(t < 0)) & (((int64_t)1 << 31) - 1));
    const int64_t mt = -(int64_t)(tt < 0);
    const int64_t v = mt ^ (int64_t)((uint64_t)(mt ^ tt) >> 31);     /* truncating t / 2^31 */
    int64_t r;
    if (ruy) {                                                       /* ties toward +inf */
        const int64_t y = v + aux;
        const int64_t my = -(int64_t)(y < 0);
        r = my ^ (int64_t)((uint64_t)(my ^ y) >> right);
    } else {                                                         /* ties away from zero */
        const int64_t mv = -(int64_t)(v < 0);
        const int64_t rem = (int64_t)((uint64_t)v & (uint64_t)aux);
        const int64_t thr = (aux >> 1) - mv;
        r = (mv ^ (int64_t)((uint64_t)(mv ^ v) >> right)) + (int64_t)(rem > thr);
    }
    const int64_t w = fp_wrap32_64((uint64_t)(r + zp));
    return (int32_t)(w < lo ? lo : (w > hi ? hi : w));
}

static inline int32_t fp_rq_col_single(int32_t x, int32_t q, uint64_t right, int64_t nudge,
                                       int64_t zp, int64_t lo, int64_t hi) {
    const int64_t y = (int64_t)x * (int64_t)q + nudge;              /* |y| < 2^62 + 2^61 */
    const int64_t my = -(int64_t)(y < 0);
    const int64_t v = fp_wrap32_64((uint64_t)(my ^ (int64_t)((uint64_t)(my ^ y) >> right)));
    const int64_t w = fp_wrap32_64((uint64_t)(v + zp));
    return (int32_t)(w < lo ? lo : (w > hi ? hi : w));
}

static inline int32_t fp_rq_col_float(int32_t x, float real, int64_t zp, int64_t lo, int64_t hi) {
    double y = (double)rintf((float)x * real);                       /* as fp_requant_out */
    const double l = (double)(lo - zp), h = (double)(hi - zp);
    y = y < l ? l : (y > h ? h : y);
    return (int32_t)y + (int32_t)zp;  /* y integral in [lo - zp, hi - zp]: inside int32 (16-bit
                                         formats, or the int32 range with zp = 0) */
}

#define FP_RQ_COLS(EXPR)                                                                   \
    {                                                                                      \
        int64_t i = start, end = start + n, c = start % C;                                 \
        while (i < end) {                                                                  \
            const int64_t len = C - c < end - i ? C - c : end - i;                         \
            const int32_t *a = acc + i;                                                    \
            for (int64_t j = 0; j < len; j++) {                                            \
                const int64_t k = c + j;                                                   \
                const int32_t v_ = (EXPR);                                                 \
                STORE(i + j, v_);                                                          \
            }                                                                              \
            i += len;                                                                      \
            c = 0;                                                                         \
        }                                                                                  \
    }

/* fp_requantize with one (q, shift, real) per column, for the methods whose
 * per-column parameters fp_rq_cols holds (not FP_RQ_FLOAT64). */
#define FP_RQ_COLS_METHODS                                                                  \
    const uint64_t *restrict L = p->left;                                                   \
    const uint64_t *restrict R = p->right;                                                  \
    const int64_t *restrict U = p->aux;                                                     \
    const int32_t *restrict Q = p->q;                                                       \
    const float *restrict F = p->realf;                                                     \
    switch (method) {                                                                       \
    case FP_RQ_SINGLE: FP_RQ_COLS(fp_rq_col_single(a[j], Q[k], R[k], U[k], zp, lo, hi)) break; \
    case FP_RQ_RUY: FP_RQ_COLS(fp_rq_col_int(a[j], L[k], Q[k], R[k], U[k], 1, zp, lo, hi)) break; \
    case FP_RQ_FLOAT: FP_RQ_COLS(fp_rq_col_float(a[j], F[k], zp, lo, hi)) break;           \
    default: FP_RQ_COLS(fp_rq_col_int(a[j], L[k], Q[k], R[k], U[k], 0, zp, lo, hi)) break;  \
    }

FP_CLONES_V4
static void fp_requantize_cols(const int32_t *acc, int32_t *out, int64_t start, int64_t n,
                               int64_t C, const fp_rq_cols *p, int64_t zp, int64_t lo, int64_t hi,
                               int method) {
#define STORE(idx, v) out[idx] = (v)
    FP_RQ_COLS_METHODS
#undef STORE
}

/* The same codes as int8 (lo >= -128, hi <= 127), and with them their float
 * values (code - zp) * scale in float32 (one rounding: the difference is a
 * small integer, exact in float32).  Blocks of the int32 codes on the stack,
 * then both outputs: two loops that compilers vectorise. */
#define FP_RQ_DQ_BLOCK 1024
FP_CLONES_V4
static void fp_requantize_cols_dq(const int32_t *acc, int8_t *out, float *outf, int64_t start0,
                                  int64_t n0, int64_t C, const fp_rq_cols *p, int64_t zp, int64_t lo,
                                  int64_t hi, int method, float scale) {
    int32_t tmp[FP_RQ_DQ_BLOCK];
    const int32_t z = (int32_t)zp;
    for (int64_t s0 = start0; s0 < start0 + n0; s0 += FP_RQ_DQ_BLOCK) {
        const int64_t start = s0;
        const int64_t n = start0 + n0 - s0 < FP_RQ_DQ_BLOCK ? start0 + n0 - s0 : FP_RQ_DQ_BLOCK;
#define STORE(idx, v) tmp[(idx) - s0] = (v)
        FP_RQ_COLS_METHODS
#undef STORE
        for (int64_t t = 0; t < n; t++) out[s0 + t] = (int8_t)tmp[t];
        for (int64_t t = 0; t < n; t++) outf[s0 + t] = (float)(tmp[t] - z) * scale;
    }
}
#undef FP_RQ_DQ_BLOCK
#undef FP_RQ_COLS_METHODS
#undef FP_RQ_COLS

#endif
