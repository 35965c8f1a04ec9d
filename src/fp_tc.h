/* Tensor-core style block accumulation of FP8 products (docs/semantics.md section 4).
 *
 * For one output element, with a running block result c (starting at 0):
 *   1. K is split into blocks of `block` products (zero padded);
 *   2. each product a*b is exact; its exponent is ea + eb (operands' unbiased
 *      exponents, subnormals counted at emin): significands in [1, 4);
 *   3. E = max(exponents of the block's nonzero products, floor(log2|c|));
 *   4. every term (products and c) is truncated toward zero to a multiple of
 *      2^(E - frac_bits);
 *   5. the truncated terms are added exactly;
 *   6. the sum is rounded (toward zero on Hopper) to res_frac + 1
 *      significant bits: the new c.
 * With promotion, every `promote` K-elements c is added into an IEEE float32
 * accumulator (round to nearest even) and restarts from 0.
 *
 * Operands arrive decoded: a signed integer significand `sig` (with the
 * format's man_bits fraction bits) and the unbiased exponent `exp`, so that
 * value = sig * 2^(exp - man_bits); zero has sig = 0.
 */
#ifndef FP_TC_H
#define FP_TC_H

#include <math.h>
#include "fp_common.h"

typedef struct {
    int64_t block;      /* products per block; K (padded) for one block per slice */
    int32_t frac_bits;  /* alignment: terms truncated to 2^(E - frac_bits); -1 = exact */
    int32_t res_frac;   /* fraction bits kept in each block result (<= 23) */
    int32_t exact_exp;  /* 1: product exponent = floor(log2|p|); 0: ea + eb */
    int32_t rne;        /* block result rounding: 1 nearest even, 0 toward zero */
    int64_t promote;    /* K-elements per promotion into float32; 0 = never */
} fp_tc_params;

typedef __int128 fp_i128;
typedef unsigned __int128 fp_u128;

/* trunc(v * 2^shift) toward zero, for |v| < 2^63. */
static inline fp_i128 fp_shift_trunc(int64_t v, int64_t shift) {
    if (shift >= 0) {
        if (shift > 62) shift = 62;   /* callers keep shift small; clamp for safety */
        return (fp_i128)v * ((fp_i128)1 << shift);
    }
    if (shift <= -64) return 0;
    const uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    const uint64_t q = mag >> (-shift);
    return v < 0 ? -(fp_i128)q : (fp_i128)q;
}

static inline int fp_bitlen128(fp_u128 u) {
    const uint64_t hi = (uint64_t)(u >> 64), lo = (uint64_t)u;
    if (hi) return 128 - __builtin_clzll(hi);
    return lo ? 64 - __builtin_clzll(lo) : 0;
}

/* S * 2^L rounded to p significant bits (toward zero or nearest even), as a
 * float32.  p <= 24, and the result stays a normal float32 here. */
static inline float fp_round_sum(fp_i128 S, int64_t L, int p, int rne) {
    if (S == 0) return 0.0f;
    const int neg = S < 0;
    fp_u128 u = neg ? (fp_u128)0 - (fp_u128)S : (fp_u128)S;
    const int nb = fp_bitlen128(u);
    if (nb > p) {
        const int drop = nb - p;
        const fp_u128 rem = u & ((((fp_u128)1) << drop) - 1);
        const fp_u128 half = ((fp_u128)1) << (drop - 1);
        u >>= drop;
        if (rne && (rem > half || (rem == half && (u & 1)))) u += 1;
        L += drop;
    }
    const float v = ldexpf((float)(uint64_t)u, (int)L);   /* u <= 2^24: exact */
    return neg ? -v : v;
}

/* floor(log2|x|) of a normal float32, from its bits. */
static inline int32_t fp_f32_exp(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return (int32_t)((b >> 23) & 0xffu) - 127;
}

/* The general kernel, one output element at a time: rows [i0, i1).
 * sa, xa: M x Kp significands and exponents of A (row-major);
 * sb, xb: Kp x N of B; out: M x N float32. */
static void fp_tc_generic_rows(const int32_t *sa, const int32_t *xa, int32_t ma, int32_t emin_a,
                               const int32_t *sb, const int32_t *xb, int32_t mb, int32_t emin_b,
                               float *out, int64_t i0, int64_t i1, int64_t Kp, int64_t N,
                               const fp_tc_params *prm) {
    const int p = prm->res_frac + 1;
    const int64_t f = prm->frac_bits;
    for (int64_t i = i0; i < i1; i++) {
        for (int64_t j = 0; j < N; j++) {
            float acc = 0.0f, c = 0.0f;
            for (int64_t k0 = 0; k0 < Kp; k0 += prm->block) {
                const int64_t k1 = k0 + prm->block < Kp ? k0 + prm->block : Kp;
                if (f < 0) {
                    /* exact: every product as an integer multiple of 2^L */
                    const int64_t L = (int64_t)emin_a - ma + emin_b - mb;
                    fp_i128 S = 0;
                    for (int64_t k = k0; k < k1; k++) {
                        const int64_t P = (int64_t)sa[i * Kp + k] * sb[k * N + j];
                        if (!P) continue;
                        S += (fp_i128)P * ((fp_i128)1 << (xa[i * Kp + k] - emin_a + xb[k * N + j] - emin_b));
                    }
                    /* c is 0 here: an exact block spans a whole promotion slice */
                    c = fp_round_sum(S, L, p, prm->rne);
                } else {
                    int64_t E = INT64_MIN;
                    if (c != 0.0f) E = fp_f32_exp(c);
                    for (int64_t k = k0; k < k1; k++) {
                        const int64_t P = (int64_t)sa[i * Kp + k] * sb[k * N + j];
                        if (!P) continue;
                        int64_t pe = (int64_t)xa[i * Kp + k] + xb[k * N + j];
                        if (prm->exact_exp) {
                            const uint64_t mag = P < 0 ? (uint64_t)0 - (uint64_t)P : (uint64_t)P;
                            pe += (63 - __builtin_clzll(mag)) - ma - mb;
                        }
                        E = pe > E ? pe : E;
                    }
                    if (E != INT64_MIN) {
                        fp_i128 S = 0;
                        for (int64_t k = k0; k < k1; k++) {
                            const int64_t P = (int64_t)sa[i * Kp + k] * sb[k * N + j];
                            if (!P) continue;
                            const int64_t e = (int64_t)xa[i * Kp + k] + xb[k * N + j] - ma - mb;
                            S += fp_shift_trunc(P, e - E + f);
                        }
                        if (c != 0.0f) {
                            /* c = cs * 2^(ce - 23) with a 24-bit integer significand */
                            const int32_t ce = fp_f32_exp(c);
                            const int64_t cs = (int64_t)ldexpf(c, 23 - ce);
                            S += fp_shift_trunc(cs, ce - 23 - E + f);
                        }
                        c = fp_round_sum(S, E - f, p, prm->rne);
                    }
                }
                if (prm->promote && (k1 % prm->promote == 0 || k1 == Kp)) {
                    acc = acc + c;   /* IEEE float32, round to nearest even */
                    c = 0.0f;
                }
            }
            out[i * N + j] = prm->promote ? acc : c;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Fast path (AVX2), for exponent = ea + eb, frac_bits >= 0, block sums that
 * float32 holds exactly ((4 * block + 2) * 2^frac_bits <= 2^24) and operand
 * exponents that fit the int8 lanes below (the wrapper checks).
 *
 * Inside a block every truncated term is an integer multiple of 2^(E - f)
 * smaller than 2^(f + 2), so scaling the exact float32 products by 2^(f - E)
 * and truncating with cvttps gives the integer terms; their int32 sum is
 * exact, and converting it back to float32 is exact too.  Rounding the
 * block result to res_frac bits is done on the float's bits.
 *
 * E is found on int8 lanes (32 per vector): ea + eb with saturation, zero
 * operands carrying -128 so that they never win.
 *
 * Layout: A values M x Kp float, exponents M x Kp int8 (row-major); B in
 * panels of FP_TC_NC = 32 columns: values (q * Kp + k) * 32 + l (float),
 * exponents likewise (int8).  A tile is FP_TC_MR rows x 32 columns. */
#define FP_TC_NC 32
#define FP_TC_MR 4
#define FP_TC_ZEXP (-100000)
#define FP_TC_ZEXP8 (-128)

#if FP_HAVE_AVX2_KERNELS
#include <immintrin.h>

FP_TARGET_AVX2 static inline __m256 fp_pow2_ps(__m256i e) {
    /* 2^e for -126 <= e <= 127 */
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23));
}

/* floor(log2|c|) from the bits, or FP_TC_ZEXP where c == 0. */
FP_TARGET_AVX2 static inline __m256i fp_cexp(__m256 c) {
    const __m256i cb = _mm256_castps_si256(c);
    const __m256i ce = _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(cb, 23), _mm256_set1_epi32(0xff)),
                                        _mm256_set1_epi32(127));
    const __m256i cz = _mm256_cmpeq_epi32(_mm256_slli_epi32(cb, 1), _mm256_setzero_si256());
    return _mm256_blendv_epi8(ce, _mm256_set1_epi32(FP_TC_ZEXP), cz);
}

/* FP_TC_MR rows x 32 columns, written to dst (row stride ldd): nrows x ncols. */
FP_TARGET_AVX2 static void fp_tc_tile_avx2(const float *av, const int8_t *ea, int64_t Kp,
                                           const float *bv, const int8_t *eb,
                                           const fp_tc_params *prm, float *dst, int64_t ldd,
                                           int nrows, int ncols) {
    __m256 c[FP_TC_MR][4], acc[FP_TC_MR][4];
    const int64_t block = prm->block;
    const __m256i vf = _mm256_set1_epi32(prm->frac_bits);
    const __m256i floor_e = _mm256_set1_epi32(-64);
    const int dropbits = 23 - prm->res_frac;
    const __m256i keep = _mm256_set1_epi32((int)(0xffffffffu << dropbits));
    const __m256i half_m1 = _mm256_set1_epi32(dropbits > 0 ? (int)((1u << (dropbits - 1)) - 1u) : 0);
    const __m256i one = _mm256_set1_epi32(1);
    const __m128i vdrop = _mm_cvtsi32_si128(dropbits);
    for (int r = 0; r < FP_TC_MR; r++)
        for (int v = 0; v < 4; v++) c[r][v] = acc[r][v] = _mm256_setzero_ps();
    for (int64_t k0 = 0; k0 < Kp; k0 += block) {
        const int64_t k1 = k0 + block;
        /* pass 1: the largest product exponent, 32 lanes at a time */
        __m256i E8[FP_TC_MR];
        for (int r = 0; r < FP_TC_MR; r++) E8[r] = _mm256_set1_epi8(FP_TC_ZEXP8);
        for (int64_t k = k0; k < k1; k++) {
            const __m256i e = _mm256_loadu_si256((const __m256i *)(eb + k * FP_TC_NC));
            for (int r = 0; r < FP_TC_MR; r++)
                E8[r] = _mm256_max_epi8(E8[r], _mm256_adds_epi8(e, _mm256_set1_epi8(ea[r * Kp + k])));
        }
        const int promote_now = prm->promote && (k1 % prm->promote == 0 || k1 == Kp);
        for (int r = 0; r < FP_TC_MR; r++) {
            /* widen the 32 int8 maxima to 4 x 8 int32 lanes, merge c's exponent */
            __m256i E[4], S[4];
            __m256 up[4];
            const __m128i lo = _mm256_castsi256_si128(E8[r]), hi = _mm256_extracti128_si256(E8[r], 1);
            const __m256i w[4] = {_mm256_cvtepi8_epi32(lo), _mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)),
                                  _mm256_cvtepi8_epi32(hi), _mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))};
            for (int v = 0; v < 4; v++) {
                const __m256i none = _mm256_cmpeq_epi32(w[v], _mm256_set1_epi32(FP_TC_ZEXP8));
                const __m256i pe = _mm256_blendv_epi8(w[v], _mm256_set1_epi32(FP_TC_ZEXP), none);
                E[v] = _mm256_max_epi32(_mm256_max_epi32(pe, fp_cexp(c[r][v])), floor_e);
                up[v] = fp_pow2_ps(_mm256_sub_epi32(vf, E[v]));
                S[v] = _mm256_cvttps_epi32(_mm256_mul_ps(c[r][v], up[v]));
            }
            /* pass 2: the truncated terms of this row */
            for (int64_t k = k0; k < k1; k++) {
                const __m256 a = _mm256_set1_ps(av[r * Kp + k]);
                const float *bk = bv + k * FP_TC_NC;
                for (int v = 0; v < 4; v++) {
                    const __m256 prod = _mm256_mul_ps(_mm256_loadu_ps(bk + 8 * v), a);
                    S[v] = _mm256_add_epi32(S[v], _mm256_cvttps_epi32(_mm256_mul_ps(prod, up[v])));
                }
            }
            for (int v = 0; v < 4; v++) {
                __m256i sb = _mm256_castps_si256(_mm256_cvtepi32_ps(S[v]));   /* exact */
                if (prm->rne && dropbits > 0)
                    sb = _mm256_add_epi32(sb, _mm256_add_epi32(half_m1, _mm256_and_si256(_mm256_srl_epi32(sb, vdrop), one)));
                sb = _mm256_and_si256(sb, keep);       /* sign-magnitude: truncation toward zero */
                c[r][v] = _mm256_mul_ps(_mm256_castsi256_ps(sb), fp_pow2_ps(_mm256_sub_epi32(E[v], vf)));
                if (promote_now) {
                    acc[r][v] = _mm256_add_ps(acc[r][v], c[r][v]);
                    c[r][v] = _mm256_setzero_ps();
                }
            }
        }
    }
    for (int r = 0; r < nrows; r++) {
        float tmp[FP_TC_NC];
        for (int v = 0; v < 4; v++) _mm256_storeu_ps(tmp + 8 * v, prm->promote ? acc[r][v] : c[r][v]);
        for (int l = 0; l < ncols; l++) dst[r * ldd + l] = tmp[l];
    }
}
#endif

/* Fast path driver, straight from the codes: a (M x K) and b (K x N) uint8
 * codes, row-major; per-format tables give each code's float32 value (0 for
 * NaN/Inf), int8 exponent (-128 for zero) and whether it is NaN or Inf.
 * K is zero-padded to Kp.  *nspecial receives the number of NaN/Inf codes.
 * Returns 0, -1 when memory ran out, -2 without AVX2. */
static int fp_tc_fast(const uint8_t *a, const uint8_t *b, int64_t M, int64_t K, int64_t Kp,
                      int64_t N, const float *lva, const int8_t *lea, const uint8_t *lsa,
                      const float *lvb, const int8_t *leb, const uint8_t *lsb, float *out,
                      const fp_tc_params *prm, int nthreads, int64_t *nspecial) {
#if FP_HAVE_AVX2_KERNELS
    if (!fp_cpu_has_avx2()) return -2;
    const int64_t npan = (N + FP_TC_NC - 1) / FP_TC_NC;
    const int64_t mp = (M + FP_TC_MR - 1) / FP_TC_MR * FP_TC_MR;
    const int64_t nib = mp / FP_TC_MR;
    const size_t nb = (size_t)(npan * Kp * FP_TC_NC > 0 ? npan * Kp * FP_TC_NC : 1);
    const size_t na = (size_t)(mp * Kp > 0 ? mp * Kp : 1);
    float *bvp = (float *)malloc(nb * sizeof(float));
    int8_t *ebp = (int8_t *)malloc(nb);
    float *ap = (float *)malloc(na * sizeof(float));
    int8_t *eap = (int8_t *)malloc(na);
    if (!bvp || !ebp || !ap || !eap) {
        free(bvp); free(ebp); free(ap); free(eap);
        return -1;
    }
    int64_t special = 0;
#pragma omp parallel num_threads(nthreads)
    {
#pragma omp for schedule(static) reduction(+ : special)
        for (int64_t i = 0; i < mp; i++)
            for (int64_t k = 0; k < Kp; k++) {
                const int in = i < M && k < K;
                const uint8_t code = in ? a[i * K + k] : 0;
                ap[i * Kp + k] = in ? lva[code] : 0.0f;
                eap[i * Kp + k] = in ? lea[code] : (int8_t)FP_TC_ZEXP8;
                special += in ? lsa[code] : 0;
            }
#pragma omp for schedule(static) reduction(+ : special)
        for (int64_t q = 0; q < npan; q++)
            for (int64_t k = 0; k < Kp; k++)
                for (int64_t l = 0; l < FP_TC_NC; l++) {
                    const int64_t j = q * FP_TC_NC + l, d = (q * Kp + k) * FP_TC_NC + l;
                    const int in = j < N && k < K;
                    const uint8_t code = in ? b[k * N + j] : 0;
                    bvp[d] = in ? lvb[code] : 0.0f;
                    ebp[d] = in ? leb[code] : (int8_t)FP_TC_ZEXP8;
                    special += in ? lsb[code] : 0;
                }
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < npan * nib; t++) {
            const int64_t q = t / nib, ib = t % nib;
            const int64_t i0 = ib * FP_TC_MR, j0 = q * FP_TC_NC;
            fp_tc_tile_avx2(ap + i0 * Kp, eap + i0 * Kp, Kp, bvp + q * Kp * FP_TC_NC,
                            ebp + q * Kp * FP_TC_NC, prm, out + i0 * N + j0, N,
                            (int)(M - i0 < FP_TC_MR ? M - i0 : FP_TC_MR),
                            (int)(N - j0 < FP_TC_NC ? N - j0 : FP_TC_NC));
        }
    }
    free(bvp); free(ebp); free(ap); free(eap);
    *nspecial = special;
    return 0;
#else
    (void)a; (void)b; (void)M; (void)K; (void)Kp; (void)N; (void)lva; (void)lea; (void)lsa;
    (void)lvb; (void)leb; (void)lsb; (void)out; (void)prm; (void)nthreads; (void)nspecial;
    return -2;
#endif
}

#endif
