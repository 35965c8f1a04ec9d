/* Block-scaled tensor-core GEMM: NVIDIA Blackwell tcgen05.mma as published
 * with Microsoft's MMA-Sim (Xie et al., arXiv 2511.10909;
 * mmasim/simulator/arithmetic.py: fused_dot_add, nv_fused_dot_add,
 * nv_fused_dot_add_with_block_scale).  One call of an instruction computes,
 * for one output element, D = fused(products of one K step, C):
 *
 * kind::f8f6f4 / kind::mxf8f6f4 (K step 32), fp_mx_f8_rows:
 *   each operand x has an exponent e(x) = floor(log2|x|), subnormals at their
 *   format's emin, zero at -126 (the published model's convention);
 *   a product's exponent is e(a) + e(b) + the two scale exponents; C's is
 *   e(C) (zero and float32 subnormals at -126);
 *   E = the largest of them; every term (products times scales, and C) is
 *   truncated toward zero to a multiple of 2^(E - 25); the truncated terms are
 *   added exactly; the sum is truncated to float32 (24 bits, subnormals on the
 *   2^-149 grid; beyond the float32 range: +-Inf).  The result is the next C.
 *
 * kind::mxf4 / kind::mxf4nvf4 (K step 64), fp_mx_f4_rows:
 *   the 16-element groups are summed exactly; each group sum times the two
 *   scales' significands is a term whose exponent is the sum of the scales'
 *   exponents only; then the same alignment with 35 fraction bits.
 *
 * NaN results are 0x7FFFFFFF.  Kernels never validate: fixedpoint/blockscaled.py
 * checks and lays out the operands (B transposed: N x K, row major).
 *
 * Exactness of the f8 path: a product of two element values has at most 8
 * significant bits, so fa*fb is exact in float32; multiplying it by a power of
 * two f = 2^(25 + S - E) is exact whenever the result is >= 1, and a result
 * below 1 truncates to 0 whatever its rounding; |result| < 2^27, so the float
 * to int32 conversion truncates exactly, and 16 of them fit an int32.
 */
#ifndef FP_MX_H
#define FP_MX_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fp_common.h"

#define FP_MX_ZERO_EXP (-126)      /* exponent the published model gives a zero */
#define FP_MX_NAN_BITS 0x7FFFFFFFu

static inline float fp_mx_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The published model's exponent of a float32 value: floor(log2|c|), with
 * zero and subnormals at -126.  c finite. */
static inline int fp_mx_c_exp(float c) {
    uint32_t u;
    memcpy(&u, &c, sizeof u);
    const int bexp = (int)((u >> 23) & 0xFF);
    return bexp == 0 ? -126 : bexp - 127;
}

/* S * 2^L truncated toward zero to float32 (24 significant bits, the 2^-149
 * grid below 2^-126); +-Inf beyond the float32 range; +0 for zero.  Built
 * from bits (no libm call). */
static inline float fp_mx_rz_f32(int64_t S, int64_t L) {
    if (S == 0) return 0.0f;
    const uint32_t sign = S < 0 ? 0x80000000u : 0u;
    uint64_t mag = S < 0 ? (uint64_t)0 - (uint64_t)S : (uint64_t)S;
    int nb = 64 - __builtin_clzll(mag);
    const int64_t top = L + nb - 1;                 /* exponent of the leading bit */
    if (top > 127) return fp_mx_from_bits(sign | 0x7F800000u);
    if (top >= -126) {
        /* normal: keep the leading 24 bits */
        const uint64_t m24 = nb > 24 ? mag >> (nb - 24) : mag << (24 - nb);
        return fp_mx_from_bits(sign | ((uint32_t)(top + 127) << 23) | ((uint32_t)m24 & 0x7FFFFFu));
    }
    /* subnormal: multiples of 2^-149, truncated */
    const int64_t sh = L + 149;                     /* mag * 2^sh units of 2^-149 */
    uint64_t m;
    if (sh >= 0) m = mag << sh;                      /* top < -126 keeps this below 2^23 */
    else m = sh <= -64 ? 0 : mag >> (-sh);
    if (m == 0) return 0.0f;
    return fp_mx_from_bits(sign | (uint32_t)m);
}

/* trunc(v * 2^sh) toward zero (sign-magnitude); |v| < 2^50, sh <= 12. */
static inline int64_t fp_mx_shift(int64_t v, int64_t sh) {
    if (sh >= 0) return (int64_t)((uint64_t)v << sh);
    if (sh <= -63) return 0;
    const uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    const uint64_t q = mag >> (-sh);
    return v < 0 ? -(int64_t)q : (int64_t)q;
}

/* C (finite) truncated toward zero to a multiple of 2^(E - frac): an integer
 * count of grid steps (|c| < 2^(E+1), so |result| < 2^(frac+1)). */
static inline int64_t fp_mx_c_term(float c, int64_t E, int frac) {
    uint32_t u;
    memcpy(&u, &c, sizeof u);
    const int bexp = (int)((u >> 23) & 0xFF);
    int64_t sig = u & 0x7FFFFF;
    if (bexp) sig |= 0x800000;
    if (sig == 0) return 0;
    const int64_t lsb = bexp ? bexp - 150 : -149;  /* c = sig * 2^lsb */
    return fp_mx_shift(u >> 31 ? -sig : sig, lsb + frac - E);
}

/* 2^e as a float32, e in [-126, 127]. */
static inline float fp_mx_pow2f(int64_t e) {
    return fp_mx_from_bits((uint32_t)(e + 127) << 23);
}

/* IEEE result class of one step that holds NaN/Inf operands (the published
 * model adds the float64 products a*b*sa*sb and C, and returns that sum when
 * it is NaN or Inf).  Returns 0 when the step is finite after all. */
static inline int fp_mx_special_step(const float *fa, const float *fb, int64_t n,
                                     int scale_nan, float c, float *res) {
    int nan = scale_nan || isnan(c);
    int pos = isinf(c) && c > 0, neg = isinf(c) && c < 0;
    for (int64_t k = 0; k < n && !nan; k++) {
        const double p = (double)fa[k] * (double)fb[k];
        if (isnan(p)) nan = 1;
        else if (isinf(p)) { if (p > 0) pos = 1; else neg = 1; }
    }
    if (nan || (pos && neg)) { *res = fp_mx_from_bits(FP_MX_NAN_BITS); return 1; }
    if (pos) { *res = INFINITY; return 1; }
    if (neg) { *res = -INFINITY; return 1; }
    return 0;
}

/* The largest e(a) + e(b) of one 32-element step, and the products' sum
 * sum_k (int)(fa*fb*f) (see the exactness note at the top). */
static inline int fp_mx_ep_c(const int16_t *qa, const int16_t *qb) {
    int16_t ep = INT16_MIN;
    for (int k = 0; k < 32; k++) {
        const int16_t e = (int16_t)(qa[k] + qb[k]);
        ep = e > ep ? e : ep;
    }
    return ep;
}

static inline int64_t fp_mx_psum_c(const float *pa, const float *pb, float f) {
    int32_t s1 = 0, s2 = 0;
    for (int k = 0; k < 16; k++) s1 += (int32_t)((pa[k] * pb[k]) * f);
    for (int k = 16; k < 32; k++) s2 += (int32_t)((pa[k] * pb[k]) * f);
    return (int64_t)s1 + (int64_t)s2;
}

#if FP_HAVE_AVX2_KERNELS
#include <immintrin.h>
FP_TARGET_AVX2 static inline int fp_mx_ep_avx2(const int16_t *qa, const int16_t *qb) {
    const __m256i e0 = _mm256_add_epi16(_mm256_loadu_si256((const __m256i *)qa),
                                        _mm256_loadu_si256((const __m256i *)qb));
    const __m256i e1 = _mm256_add_epi16(_mm256_loadu_si256((const __m256i *)(qa + 16)),
                                        _mm256_loadu_si256((const __m256i *)(qb + 16)));
    const __m256i m = _mm256_max_epi16(e0, e1);
    __m128i h = _mm_max_epi16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    h = _mm_max_epi16(h, _mm_srli_si128(h, 8));
    h = _mm_max_epi16(h, _mm_srli_si128(h, 4));
    h = _mm_max_epi16(h, _mm_srli_si128(h, 2));
    return (int16_t)_mm_extract_epi16(h, 0);
}

FP_TARGET_AVX2 static inline int64_t fp_mx_psum_avx2(const float *pa, const float *pb, float f) {
    const __m256 vf = _mm256_set1_ps(f);
    __m256i acc = _mm256_setzero_si256();
    for (int q = 0; q < 4; q++) {
        const __m256 p = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(pa + 8 * q),
                                                     _mm256_loadu_ps(pb + 8 * q)), vf);
        acc = _mm256_add_epi32(acc, _mm256_cvttps_epi32(p));   /* lanes < 2^29 */
    }
    const __m256i w = _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(acc)),
                                       _mm256_cvtepi32_epi64(_mm256_extracti128_si256(acc, 1)));
    const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}
#endif

#define FP_MX_TILE 8     /* rows sharing each column of B while it is in cache */

/* kind::f8f6f4 / mxf8f6f4 for rows [i0, i1).
 *   fa, ea: A (M x Kp) element values (float32, NaN/Inf kept) and exponents;
 *   fb, eb: B transposed (N x Kp);
 *   sa: M x T scale exponents, sb: N x T (T = Kp / 32), or NULL (no scales);
 *   san, sbn: M x T / N x T flags, bit 0 = scale is NaN, bit 1 = the step's
 *   elements hold NaN/Inf (both may be NULL when nothing is special);
 *   c: M x N initial accumulator or NULL; out: M x N. */
/* The loop nest of fp_mx_f8_rows, with EP and PSUM the step helpers (one
 * copy compiled for AVX2, one for baseline x86-64). */
#define FP_MX_F8_BODY(EP, PSUM)                                                          \
    const int64_t T = Kp / 32;                                                          \
    for (int64_t ib = i0; ib < i1; ib += FP_MX_TILE) {                                  \
        const int64_t ie = ib + FP_MX_TILE < i1 ? ib + FP_MX_TILE : i1;                 \
        for (int64_t j = 0; j < N; j++) {                                               \
            for (int64_t i = ib; i < ie; i++) {                                         \
                float acc = c ? c[i * N + j] : 0.0f;                                    \
                for (int64_t t = 0; t < T; t++) {                                       \
                    const float *pa = fa + i * Kp + t * 32, *pb = fb + j * Kp + t * 32; \
                    const int16_t *qa = ea + i * Kp + t * 32, *qb = eb + j * Kp + t * 32; \
                    const int flag = (san ? san[i * T + t] : 0) | (sbn ? sbn[j * T + t] : 0); \
                    if (flag || !isfinite(acc)) {                                       \
                        float r;                                                        \
                        if (fp_mx_special_step(pa, pb, 32, flag & 1, acc, &r)) {        \
                            acc = r;                                                    \
                            continue;                                                   \
                        }                                                               \
                    }                                                                   \
                    const int64_t S = (sa ? sa[i * T + t] : 0) + (sb ? sb[j * T + t] : 0); \
                    const int ep = EP(qa, qb);                                          \
                    const int64_t ec = fp_mx_c_exp(acc);                                \
                    const int64_t E = (int64_t)ep + S > ec ? (int64_t)ep + S : ec;      \
                    int64_t sum = fp_mx_c_term(acc, E, 25);                             \
                    const int64_t fexp = 25 + S - E;                                    \
                    if (ep > -100 && fexp >= -126) sum += PSUM(pa, pb, fp_mx_pow2f(fexp)); \
                    acc = fp_mx_rz_f32(sum, E - 25);                                    \
                }                                                                       \
                out[i * N + j] = acc;                                                   \
            }                                                                           \
        }                                                                               \
    }

/* Nonzero products have ep >= -28 (the OCP element formats), a product with
 * a zero operand ep <= -111; when fexp = 25 + S - E is below -126 every
 * product is below 2^-124 on the grid, i.e. truncates to zero. */
#define FP_MX_F8_ARGS const float *fa, const int16_t *ea, const float *fb, const int16_t *eb, \
    const int32_t *sa, const int32_t *sb, const uint8_t *san, const uint8_t *sbn,            \
    const float *c, float *out, int64_t i0, int64_t i1, int64_t Kp, int64_t N

static void fp_mx_f8_rows_c(FP_MX_F8_ARGS) { FP_MX_F8_BODY(fp_mx_ep_c, fp_mx_psum_c) }

#if FP_HAVE_AVX2_KERNELS
FP_TARGET_AVX2 static void fp_mx_f8_rows_avx2(FP_MX_F8_ARGS) {
    FP_MX_F8_BODY(fp_mx_ep_avx2, fp_mx_psum_avx2)
}
#endif

static void fp_mx_f8_rows(FP_MX_F8_ARGS) {
#if FP_HAVE_AVX2_KERNELS
    if (fp_cpu_has_avx2()) { fp_mx_f8_rows_avx2(fa, ea, fb, eb, sa, sb, san, sbn, c, out, i0, i1, Kp, N); return; }
#endif
    fp_mx_f8_rows_c(fa, ea, fb, eb, sa, sb, san, sbn, c, out, i0, i1, Kp, N);
}

/* The four 16-element group sums of one 64-element step (int8 values in
 * [-12, 12]: products <= 144, so the AVX2 pair sums never saturate). */
static inline void fp_mx_dot64_c(const int8_t *pa, const int8_t *pb, int32_t *s) {
    for (int g = 0; g < 4; g++) {
        int32_t t = 0;
        for (int k = 0; k < 16; k++) t += (int32_t)pa[16 * g + k] * (int32_t)pb[16 * g + k];
        s[g] = t;
    }
}

#if FP_HAVE_AVX2_KERNELS
FP_TARGET_AVX2 static inline void fp_mx_dot64_avx2(const int8_t *pa, const int8_t *pb,
                                                   int32_t *s) {
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i a0 = _mm256_loadu_si256((const __m256i *)pa);
    const __m256i b0 = _mm256_loadu_si256((const __m256i *)pb);
    const __m256i a1 = _mm256_loadu_si256((const __m256i *)(pa + 32));
    const __m256i b1 = _mm256_loadu_si256((const __m256i *)(pb + 32));
    /* |a| * (b with a's sign): exact int16 pair sums, then int32 sums of 4 */
    const __m256i p0 = _mm256_madd_epi16(
        _mm256_maddubs_epi16(_mm256_abs_epi8(a0), _mm256_sign_epi8(b0, a0)), ones);
    const __m256i p1 = _mm256_madd_epi16(
        _mm256_maddubs_epi16(_mm256_abs_epi8(a1), _mm256_sign_epi8(b1, a1)), ones);
    /* lanes: p0 = [g0 g0 g0 g0 | g1 g1 g1 g1], p1 = [g2 .. | g3 ..] */
    __m256i h = _mm256_hadd_epi32(p0, p1);
    h = _mm256_hadd_epi32(h, h);          /* [g0 g2 g0 g2 | g1 g3 g1 g3] */
    s[0] = _mm256_extract_epi32(h, 0);
    s[2] = _mm256_extract_epi32(h, 1);
    s[1] = _mm256_extract_epi32(h, 4);
    s[3] = _mm256_extract_epi32(h, 5);
}

FP_TARGET_AVX2 static void fp_mx_dot64_rows_avx2(const int8_t *pa, const int8_t *pb, int64_t T,
                                                 int32_t *s) {
    for (int64_t t = 0; t < T; t++) fp_mx_dot64_avx2(pa + 64 * t, pb + 64 * t, s + 4 * t);
}
#endif

/* All group sums of one row pair: s[g] for the Kp / 16 groups. */
static inline void fp_mx_group_sums(const int8_t *pa, const int8_t *pb, int64_t T, int avx2,
                                    int32_t *s) {
#if FP_HAVE_AVX2_KERNELS
    if (avx2) { fp_mx_dot64_rows_avx2(pa, pb, T, s); return; }
#endif
    (void)avx2;
    for (int64_t t = 0; t < T; t++) fp_mx_dot64_c(pa + 64 * t, pb + 64 * t, s + 4 * t);
}

/* kind::mxf4 / mxf4nvf4 for rows [i0, i1).
 *   a: M x Kp, b: N x Kp (B transposed), E2M1 values times 2 as int8 (-12..12);
 *   ma, xa: M x G scale significands in eighths (ue8m0: 8; ue4m3: 0..15) and
 *   exponents (zero scale: -126), one per 16-element group (G = Kp / 16);
 *   mb, xb: N x G; nan_a: M x (Kp/64), nan_b: N x (Kp/64) step flags (a NaN
 *   scale); c, out as above. */
FP_CLONES static int fp_mx_f4_rows(const int8_t *a, const int8_t *b, const int32_t *ma,
                         const int32_t *xa, const int32_t *mb, const int32_t *xb,
                         const uint8_t *nan_a, const uint8_t *nan_b, const float *c,
                         float *out, int64_t i0, int64_t i1, int64_t Kp, int64_t N) {
    const int64_t T = Kp / 64, G = Kp / 16;
    const int avx2 = fp_cpu_has_avx2();
    int32_t *gs = (int32_t *)malloc((size_t)(G > 0 ? G : 1) * sizeof(int32_t));
    if (!gs) return -1;
    for (int64_t ib = i0; ib < i1; ib += FP_MX_TILE) {
      const int64_t ie = ib + FP_MX_TILE < i1 ? ib + FP_MX_TILE : i1;
      for (int64_t j = 0; j < N; j++) {
        for (int64_t i = ib; i < ie; i++) {
            float acc = c ? c[i * N + j] : 0.0f;
            fp_mx_group_sums(a + i * Kp, b + j * Kp, T, avx2, gs);
            for (int64_t t = 0; t < T; t++) {
                if (nan_a[i * T + t] || nan_b[j * T + t] || isnan(acc)) {
                    acc = fp_mx_from_bits(FP_MX_NAN_BITS);
                    continue;
                }
                if (isinf(acc)) continue;           /* Inf + finite terms (assumed) */
                int64_t term[4];
                int64_t ex[4];
                int64_t E = fp_mx_c_exp(acc);
                const int32_t *pma = ma + i * G + t * 4, *pxa = xa + i * G + t * 4;
                const int32_t *pmb = mb + j * G + t * 4, *pxb = xb + j * G + t * 4;
                for (int g = 0; g < 4; g++) {
                    term[g] = (int64_t)gs[4 * t + g] * pma[g] * pmb[g];  /* units of 2^(ex - 8) */
                    ex[g] = (int64_t)pxa[g] + pxb[g];
                    if (ex[g] > E) E = ex[g];
                }
                int64_t sum = fp_mx_c_term(acc, E, 35);
                for (int g = 0; g < 4; g++) sum += fp_mx_shift(term[g], 27 + ex[g] - E);
                acc = fp_mx_rz_f32(sum, E - 35);
            }
            out[i * N + j] = acc;
        }
      }
    }
    free(gs);
    return 0;
}

#endif
