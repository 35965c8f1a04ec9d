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
 * grid below 2^-126); +-Inf beyond the float32 range; +0 for zero. */
static inline float fp_mx_rz_f32(int64_t S, int64_t L) {
    if (S == 0) return 0.0f;
    const int neg = S < 0;
    uint64_t mag = neg ? (uint64_t)0 - (uint64_t)S : (uint64_t)S;
    const int nb = 64 - __builtin_clzll(mag);
    const int64_t top = L + nb - 1;                 /* exponent of the leading bit */
    if (top > 127) return neg ? -INFINITY : INFINITY;
    int64_t drop = 0;
    if (top >= -126) {
        if (nb > 24) drop = nb - 24;
    } else if (L < -149) {
        drop = -149 - L;
    }
    if (drop >= 64) return 0.0f;
    mag >>= drop;
    if (mag == 0) return 0.0f;
    const double v = ldexp((double)mag, (int)(L + drop));   /* exact: fits float32 */
    return (float)(neg ? -v : v);
}

/* trunc(v * 2^sh) toward zero (sign-magnitude); |v| < 2^50, sh <= 12. */
static inline int64_t fp_mx_shift(int64_t v, int64_t sh) {
    if (sh >= 0) return (int64_t)((uint64_t)v << sh);
    if (sh <= -63) return 0;
    const uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    const uint64_t q = mag >> (-sh);
    return v < 0 ? -(int64_t)q : (int64_t)q;
}

/* C truncated toward zero to a multiple of 2^(E - frac): an integer count of
 * grid steps (|c| < 2^(E+1), so |result| < 2^(frac+1)). */
static inline int64_t fp_mx_c_term(float c, int64_t E, int frac) {
    if (c == 0.0f) return 0;
    const double x = ldexp((double)c, (int)(frac - E));    /* exact: c has 24 bits */
    return (int64_t)x;                                       /* C truncates toward zero */
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

/* kind::f8f6f4 / mxf8f6f4 for rows [i0, i1).
 *   fa, ea: A (M x Kp) element values (float32, NaN/Inf kept) and exponents;
 *   fb, eb: B transposed (N x Kp);
 *   sa: M x T scale exponents, sb: N x T (T = Kp / 32), or NULL (no scales);
 *   san, sbn: M x T / N x T flags, bit 0 = scale is NaN, bit 1 = the step's
 *   elements hold NaN/Inf (both may be NULL when nothing is special);
 *   c: M x N initial accumulator or NULL; out: M x N. */
static void fp_mx_f8_rows(const float *fa, const int16_t *ea, const float *fb,
                          const int16_t *eb, const int32_t *sa, const int32_t *sb,
                          const uint8_t *san, const uint8_t *sbn, const float *c,
                          float *out, int64_t i0, int64_t i1, int64_t Kp, int64_t N) {
    const int64_t T = Kp / 32;
    for (int64_t i = i0; i < i1; i++) {
        for (int64_t j = 0; j < N; j++) {
            float acc = c ? c[i * N + j] : 0.0f;
            for (int64_t t = 0; t < T; t++) {
                const float *pa = fa + i * Kp + t * 32, *pb = fb + j * Kp + t * 32;
                const int16_t *qa = ea + i * Kp + t * 32, *qb = eb + j * Kp + t * 32;
                const int flag = (san ? san[i * T + t] : 0) | (sbn ? sbn[j * T + t] : 0);
                if (flag || !isfinite(acc)) {
                    float r;
                    if (fp_mx_special_step(pa, pb, 32, flag & 1, acc, &r)) { acc = r; continue; }
                }
                const int64_t S = (sa ? sa[i * T + t] : 0) + (sb ? sb[j * T + t] : 0);
                int ep = -32768;
                for (int k = 0; k < 32; k++) {
                    const int e = qa[k] + qb[k];
                    ep = e > ep ? e : ep;
                }
                const int64_t ec = fp_mx_c_exp(acc);
                const int64_t E = (int64_t)ep + S > ec ? (int64_t)ep + S : ec;
                int64_t sum = fp_mx_c_term(acc, E, 25);
                const int64_t fexp = 25 + S - E;        /* <= 25 - ep */
                /* nonzero products have ep >= -60 (checked by the wrapper);
                 * below 2^-160 every product truncates to zero */
                if (ep > -100 && fexp > -160) {
                    const float f = (float)ldexp(1.0, (int)fexp);
                    int32_t s1 = 0, s2 = 0;
                    for (int k = 0; k < 16; k++) s1 += (int32_t)((pa[k] * pb[k]) * f);
                    for (int k = 16; k < 32; k++) s2 += (int32_t)((pa[k] * pb[k]) * f);
                    sum += (int64_t)s1 + (int64_t)s2;
                }
                acc = fp_mx_rz_f32(sum, E - 25);
            }
            out[i * N + j] = acc;
        }
    }
}

/* kind::mxf4 / mxf4nvf4 for rows [i0, i1).
 *   a: M x Kp, b: N x Kp (B transposed), E2M1 values times 2 as int8 (-12..12);
 *   ma, xa: M x G scale significands in eighths (ue8m0: 8; ue4m3: 0..15) and
 *   exponents (zero scale: -126), one per 16-element group (G = Kp / 16);
 *   mb, xb: N x G; nan_a: M x (Kp/64), nan_b: N x (Kp/64) step flags (a NaN
 *   scale); c, out as above. */
static void fp_mx_f4_rows(const int8_t *a, const int8_t *b, const int32_t *ma,
                          const int32_t *xa, const int32_t *mb, const int32_t *xb,
                          const uint8_t *nan_a, const uint8_t *nan_b, const float *c,
                          float *out, int64_t i0, int64_t i1, int64_t Kp, int64_t N) {
    const int64_t T = Kp / 64, G = Kp / 16;
    for (int64_t i = i0; i < i1; i++) {
        for (int64_t j = 0; j < N; j++) {
            float acc = c ? c[i * N + j] : 0.0f;
            for (int64_t t = 0; t < T; t++) {
                if (nan_a[i * T + t] || nan_b[j * T + t] || isnan(acc)) {
                    acc = fp_mx_from_bits(FP_MX_NAN_BITS);
                    continue;
                }
                if (isinf(acc)) continue;           /* Inf + finite terms (assumed) */
                int64_t term[4];
                int64_t ex[4];
                int64_t E = fp_mx_c_exp(acc);
                for (int g = 0; g < 4; g++) {
                    const int8_t *pa = a + i * Kp + t * 64 + g * 16;
                    const int8_t *pb = b + j * Kp + t * 64 + g * 16;
                    int32_t s = 0;
                    for (int k = 0; k < 16; k++) s += (int32_t)pa[k] * (int32_t)pb[k];
                    const int64_t ga = i * G + t * 4 + g, gb = j * G + t * 4 + g;
                    term[g] = (int64_t)s * ma[ga] * mb[gb];   /* units of 2^(ex - 8) */
                    ex[g] = (int64_t)xa[ga] + xb[gb];
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

#endif
