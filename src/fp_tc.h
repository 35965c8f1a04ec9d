/* Tensor-core style block accumulation of FP8 products (docs/tensorcore.md).
 *
 * For one output element, with a running block result c (starting at 0):
 *   1. K is split into blocks of `block` products (zero padded);
 *   2. each product a*b is exact; its exponent is ea + eb (the operands'
 *      exponents as the tables give them): significands in [1, 4);
 *   3. E = max(exponents of the block's nonzero products, floor(log2|c|));
 *   4. every term (products and c) is truncated toward zero to a multiple of
 *      2^(E - frac_bits);
 *   5. the truncated terms are added exactly;
 *   6. the sum is rounded (toward zero on Hopper) to res_frac + 1
 *      significant bits: the new c.
 * With promotion, every `promote` K-elements c is added into an IEEE float32
 * accumulator (round to nearest even), which starts at C (or 0), and c
 * restarts from 0.  frac_bits = -1 means exact block sums (one block per
 * promotion slice, or the whole K), rounded once.
 *
 * Operands arrive as uint8 codes with strides and per-format tables
 * (fp_tc_table): value = sig * 2^(exp - man).  An optional `kmap` gives, for
 * each padded k, the source column of A / row of B (-1: a zero pad); it
 * reorders K inside a promotion slice (the mma.sync interleave).
 *
 * Ranges (checked by the Python wrapper, never here): every nonzero value and
 * every exponent lies in [2^-60, 2^61); frac_bits <= 40; man <= 7.  Then
 * products lie in [2^-120, 2^122), every truncated term and every block sum is
 * a multiple of 2^-120 (so a nonzero block result is a normal float32), and a
 * block result may only overflow float32 at the top, which fp_round_sum
 * handles as IEEE rounding does.
 */
#ifndef FP_TC_H
#define FP_TC_H

#include <float.h>
#include <math.h>
#include "fp_common.h"

typedef struct {
    int64_t block;      /* products per block; the slice (or K) for exact sums */
    int32_t frac_bits;  /* alignment: terms truncated to 2^(E - frac_bits); -1 = exact */
    int32_t res_frac;   /* fraction bits kept in each block result (<= 23) */
    int32_t exact_exp;  /* 1: product exponent = floor(log2|p|); 0: ea + eb */
    int32_t rne;        /* block result rounding: 1 nearest even, 0 toward zero */
    int64_t promote;    /* K-elements per promotion into float32; 0 = never */
} fp_tc_params;

/* Per-code tables of one operand format (built by fixedpoint/tensorcore.py). */
typedef struct {
    int32_t sig[256];     /* signed integer significand; 0 for zero, NaN and Inf */
    int32_t exp[256];     /* exponent: value = sig * 2^(exp - man) */
    float val[256];       /* the value (exact in float32); 0 for NaN and Inf */
    int8_t e8[256];       /* exp for the fast kernels; -128 for zero, NaN and Inf */
    int8_t l8[256];       /* exponent of the value's lowest set bit; 127 for zero, NaN, Inf */
    int8_t l8neg[256];    /* l8 for negative values, 127 for the rest */
    int8_t l8pos[256];    /* l8 for positive values, 127 for the rest */
    uint8_t neg[256];     /* 1 for a negative nonzero finite value */
    uint8_t special[256]; /* 1 for NaN and Inf */
    int32_t man;          /* fraction bits of sig */
    int32_t lo;           /* min over nonzero codes of exp - man: weight of the lowest bit */
} fp_tc_table;

/* A strided uint8 matrix: element (r, c) at p[r * rs + c * cs]. */
typedef struct {
    const uint8_t *p;
    int64_t rs, cs;
} fp_tc_mat;

typedef __int128 fp_i128;
typedef unsigned __int128 fp_u128;

/* The source k of padded position k: kmap[k], or k itself below K (-1: a pad). */
static inline int64_t fp_tc_src(const int64_t *kmap, int64_t k, int64_t K) {
    if (kmap) return kmap[k];
    return k < K ? k : -1;
}

/* trunc(v * 2^shift) toward zero, for |v| < 2^63 and shift <= 63: callers pass
 * shift <= frac_bits <= 40 (a term's exponent never exceeds E), so the result
 * is below 2^103 in magnitude.  A shift <= -64 leaves nothing: exactly 0. */
static inline fp_i128 fp_shift_trunc(int64_t v, int64_t shift) {
    if (shift >= 0) return (fp_i128)v * ((fp_i128)1 << shift);
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
 * float32.  p <= 24; |S| < 2^127.  The result is never below 2^-126 (see the
 * ranges above).  Above float32's range it is +-Inf when rounding to nearest
 * and the largest p-bit value when truncating, as IEEE rounding gives. */
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
    if (L + fp_bitlen128(u) - 1 > 127) {
        const float big = rne ? INFINITY : ldexpf((float)((1u << p) - 1u), 128 - p);
        return neg ? -big : big;
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

/* ------------------------------------------------------------------ */
/* An exact accumulator for any span of exponents: radix-2^32 digits held in
 * int64 limbs, carries propagated lazily.  The wrapper checks that the
 * largest possible sum fits 32 * (FP_TC_LIMBS - 1) bits above the lowest
 * product weight, so the top limb never overflows. */
#define FP_TC_LIMBS 12
#define FP_TC_LIMB_PENDING 65536

typedef struct {
    int64_t d[FP_TC_LIMBS];
    int32_t pending;
} fp_tc_long;

static inline void fp_long_clear(fp_tc_long *x) {
    memset(x->d, 0, sizeof x->d);
    x->pending = 0;
}

/* Every limb but the top one into [0, 2^32); the top one keeps the sign. */
static inline void fp_long_carry(fp_tc_long *x) {
    for (int i = 0; i < FP_TC_LIMBS - 1; i++) {
        const int64_t t = x->d[i];
        const int64_t low = (int64_t)((uint64_t)t & 0xffffffffu);
        x->d[i] = low;
        x->d[i + 1] += (t - low) / ((int64_t)1 << 32);   /* exact division */
    }
    x->pending = 0;
}

/* x += P * 2^shift for |P| < 2^16, 0 <= shift < 32 * (FP_TC_LIMBS - 1):
 * the limb gains less than 2^47, and carries run every 2^16 additions. */
static inline void fp_long_add(fp_tc_long *x, int64_t P, int64_t shift) {
    x->d[shift >> 5] += P * ((int64_t)1 << (shift & 31));
    if (++x->pending == FP_TC_LIMB_PENDING) fp_long_carry(x);
}

/* The accumulated value times 2^L, rounded to p significant bits. */
static inline float fp_long_round(fp_tc_long *x, int64_t L, int p, int rne) {
    fp_long_carry(x);
    const int neg = x->d[FP_TC_LIMBS - 1] < 0;
    if (neg) {
        for (int i = 0; i < FP_TC_LIMBS; i++) x->d[i] = -x->d[i];
        fp_long_carry(x);
    }
    int t = FP_TC_LIMBS - 1;
    while (t >= 0 && x->d[t] == 0) t--;
    if (t < 0) return 0.0f;
    /* up to three limbs (65 or more significant bits) and a sticky bit below:
     * far more than p + 2 bits, so the rounding sees the exact value's side */
    const int lo = t >= 2 ? t - 2 : 0;
    fp_u128 u = 0;
    for (int i = t; i >= lo; i--) u = (u << 32) | (fp_u128)(uint64_t)x->d[i];
    int sticky = 0;
    for (int i = 0; i < lo; i++) sticky |= x->d[i] != 0;
    u |= (fp_u128)sticky;
    const fp_i128 S = neg ? -(fp_i128)u : (fp_i128)u;
    return fp_round_sum(S, L + 32 * (int64_t)lo, p, rne);
}

/* ------------------------------------------------------------------ */
/* The general kernel, one output element at a time: rows [i0, i1) of
 * out (M x N, row-major).  c0: the initial float32 accumulator (M x N,
 * row-major) or NULL for 0; only used with promotion. */
static void fp_tc_generic_rows(fp_tc_mat A, fp_tc_mat B, int64_t K, int64_t Kp, int64_t N,
                               const int64_t *kmap, const fp_tc_table *ta, const fp_tc_table *tb,
                               const float *c0, float *out, int64_t i0, int64_t i1,
                               const fp_tc_params *prm) {
    const int p = prm->res_frac + 1;
    const int64_t f = prm->frac_bits;
    const int64_t ma = ta->man, mb = tb->man;
    fp_tc_long big;
    for (int64_t i = i0; i < i1; i++) {
        for (int64_t j = 0; j < N; j++) {
            float acc = c0 ? c0[i * N + j] : 0.0f, c = 0.0f;
            for (int64_t k0 = 0; k0 < Kp; k0 += prm->block) {
                const int64_t k1 = k0 + prm->block < Kp ? k0 + prm->block : Kp;
                if (f < 0) {
                    /* exact: every product as an integer multiple of 2^(lo_a + lo_b);
                     * c is 0 here: an exact block spans a whole promotion slice */
                    fp_long_clear(&big);
                    for (int64_t k = k0; k < k1; k++) {
                        const int64_t s = fp_tc_src(kmap, k, K);
                        if (s < 0) continue;
                        const uint8_t ca = A.p[i * A.rs + s * A.cs], cb = B.p[s * B.rs + j * B.cs];
                        const int64_t P = (int64_t)ta->sig[ca] * tb->sig[cb];
                        if (!P) continue;
                        fp_long_add(&big, P, (ta->exp[ca] - ma - ta->lo) + (tb->exp[cb] - mb - tb->lo));
                    }
                    c = fp_long_round(&big, (int64_t)ta->lo + tb->lo, p, prm->rne);
                } else if (isfinite(c)) {
                    /* (an infinite c, from an overflowing block, stays infinite) */
                    int64_t E = INT64_MIN;
                    if (c != 0.0f) E = fp_f32_exp(c);
                    for (int64_t k = k0; k < k1; k++) {
                        const int64_t s = fp_tc_src(kmap, k, K);
                        if (s < 0) continue;
                        const uint8_t ca = A.p[i * A.rs + s * A.cs], cb = B.p[s * B.rs + j * B.cs];
                        const int64_t P = (int64_t)ta->sig[ca] * tb->sig[cb];
                        if (!P) continue;
                        int64_t pe = (int64_t)ta->exp[ca] + tb->exp[cb];
                        if (prm->exact_exp) {
                            const uint64_t mag = P < 0 ? (uint64_t)0 - (uint64_t)P : (uint64_t)P;
                            pe += (63 - __builtin_clzll(mag)) - ma - mb;
                        }
                        E = pe > E ? pe : E;
                    }
                    if (E != INT64_MIN) {
                        fp_i128 S = 0;
                        for (int64_t k = k0; k < k1; k++) {
                            const int64_t s = fp_tc_src(kmap, k, K);
                            if (s < 0) continue;
                            const uint8_t ca = A.p[i * A.rs + s * A.cs], cb = B.p[s * B.rs + j * B.cs];
                            const int64_t P = (int64_t)ta->sig[ca] * tb->sig[cb];
                            if (!P) continue;
                            const int64_t e = (int64_t)ta->exp[ca] + tb->exp[cb] - ma - mb;
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

/* Number of NaN/Inf codes in rows [0, R) x columns [0, C) of a strided matrix. */
static int64_t fp_tc_count_special(fp_tc_mat X, int64_t R, int64_t C, const fp_tc_table *t) {
    int64_t n = 0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < C; c++) n += t->special[X.p[r * X.rs + c * X.cs]];
    return n;
}

/* ------------------------------------------------------------------ */
/* Fast paths, for exponent = ea + eb, frac_bits >= 0 and formats whose
 * exponents fit the int8 lanes (the wrapper checks the exact conditions:
 * tensorcore.py::_fast_path).  Both are bit-identical to the general kernel.
 *
 * AVX-512 (FP_TC_PATH_AVX512), the floor-and-count kernel.  For one block
 * and one output element, in units of u = 2^(E - f), every term x_k is
 * trunc(x_k): floor(x_k) for x_k >= 0 and floor(x_k) + 1 for a negative x_k
 * that is not an integer.  So
 *     sum trunc(x_k) = sum floor(x_k) + #{k: x_k < 0 and x_k not a multiple of u}.
 * The first sum is one fused multiply-add per term, rounded toward zero
 * ({rz-sae}) into an accumulator biased to 1.5 * 2^23 u: the accumulator
 * stays in [2^23 u, 2^24 u), where float32's spacing is exactly u, so
 * RZ(acc + a*b) = acc + floor(a*b / u) * u (the product is exact inside the
 * FMA).  The count is int8 arithmetic: a*b is a multiple of u iff
 * lsb(a) + lsb(b) >= E - f (lsb: exponent of the lowest set bit), and the
 * product is negative iff the signs differ, which picks one of two lsb rows
 * of B per element of A (b < 0 lanes, or b > 0 lanes; the rest hold 127).
 * E itself is a max over int8 lanes (exponent sums, zero operands at -128).
 * Bounds: (4 * block + 2) * 2^f <= 2^22 keeps the accumulator in its binade;
 * block <= 127 keeps the count in int8.
 *
 * AVX2 (FP_TC_PATH_AVX2): products scaled by 2^(f - E) and truncated with
 * cvttps (exact integers when (4 * block + 2) * 2^f <= 2^24), summed in int32.
 */
#define FP_TC_PATH_AUTO 0
#define FP_TC_PATH_AVX2 1
#define FP_TC_PATH_AVX512 2

#define FP_TC_NC 32
#define FP_TC_MR 4
#define FP_TC_MB 16
#define FP_TC_ZEXP (-100000)
#define FP_TC_ZEXP8 (-128)
#define FP_TC_NOLSB 127

#if FP_HAVE_AVX2_KERNELS
#include <immintrin.h>

#define FP_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
static inline int fp_cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl");
}

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

/* AVX2 tile: FP_TC_MR rows x 32 columns.  A: values and int8 exponents,
 * row-major with row stride Kp; B: one panel, (k * 32 + l).  acc0: the
 * initial float32 accumulator (row stride ldc) or NULL; dst: nrows x ncols. */
FP_TARGET_AVX2 static void fp_tc_tile_avx2(const float *av, const int8_t *ea, int64_t Kp,
                                           const float *bv, const int8_t *eb,
                                           const fp_tc_params *prm, const float *acc0, int64_t ldc,
                                           float *dst, int64_t ldd, int nrows, int ncols) {
    __m256 c[FP_TC_MR][4], acc[FP_TC_MR][4];
    const int64_t block = prm->block;
    const __m256i vf = _mm256_set1_epi32(prm->frac_bits);
    const __m256i floor_e = _mm256_set1_epi32(-64);
    const int dropbits = 23 - prm->res_frac;
    const __m256i keep = _mm256_set1_epi32((int)(0xffffffffu << dropbits));
    const __m256i half_m1 = _mm256_set1_epi32(dropbits > 0 ? (int)((1u << (dropbits - 1)) - 1u) : 0);
    const __m256i one = _mm256_set1_epi32(1);
    const __m128i vdrop = _mm_cvtsi32_si128(dropbits);
    for (int r = 0; r < FP_TC_MR; r++) {
        float tmp[FP_TC_NC] = {0};
        if (acc0 && r < nrows)
            for (int l = 0; l < ncols; l++) tmp[l] = acc0[r * ldc + l];
        for (int v = 0; v < 4; v++) {
            c[r][v] = _mm256_setzero_ps();
            acc[r][v] = _mm256_loadu_ps(tmp + 8 * v);
        }
    }
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

/* AVX-512 tile (floor and count, see above): FP_TC_MR rows x 32 columns.
 * A (one panel of FP_TC_MR rows): per k, FP_TC_MR values av, exponents ea,
 * lowest-bit exponents la and the offsets as of their B lsb row (0 or 32)
 * at [k * FP_TC_MR + r].  B (one panel): per k, 32 values bv and exponents
 * eb at [k * 32 + l], and two rows of lowest-bit exponents at
 * [(2k + s) * 32 + l]: s = 0 holds the lanes with b < 0, s = 1 those with
 * b > 0, 127 elsewhere. */
#define FP_TC_RZ (_MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC)

FP_TARGET_AVX512 static void fp_tc_tile_avx512(const float *av, const int8_t *ea, const int8_t *la,
                                               const uint8_t *as, int64_t Kp, const float *bv,
                                               const int8_t *eb, const int8_t *lb,
                                               const fp_tc_params *prm, const float *acc0, int64_t ldc,
                                               float *dst, int64_t ldd, int nrows, int ncols) {
    __m512 c[FP_TC_MR][2], acc[FP_TC_MR][2];
    const int64_t block = prm->block;
    const int f = prm->frac_bits;
    const int dropbits = 23 - prm->res_frac;
    const __m512i keep = _mm512_set1_epi32((int)(0xffffffffu << dropbits));
    const __m512i half_m1 = _mm512_set1_epi32(dropbits > 0 ? (int)((1u << (dropbits - 1)) - 1u) : 0);
    const __m512i one = _mm512_set1_epi32(1);
    const __mmask32 colmask = ncols >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << ncols) - 1u);
    int c_zero = 1;                       /* every c is 0 (at the start and after a promotion) */
    for (int r = 0; r < FP_TC_MR; r++) {
        for (int v = 0; v < 2; v++) {
            c[r][v] = _mm512_setzero_ps();
            acc[r][v] = _mm512_setzero_ps();
            if (acc0 && r < nrows)
                acc[r][v] = _mm512_maskz_loadu_ps((__mmask16)(colmask >> (16 * v)), acc0 + r * ldc + 16 * v);
        }
    }
    for (int64_t k0 = 0; k0 < Kp; k0 += block) {
        const int64_t k1 = k0 + block;
        /* pass 1: E, the largest product exponent, on int8 lanes */
        __m256i E8[FP_TC_MR];
        for (int r = 0; r < FP_TC_MR; r++) E8[r] = _mm256_set1_epi8(FP_TC_ZEXP8);
        for (int64_t k = k0; k < k1; k++) {
            const __m256i e = _mm256_loadu_si256((const __m256i *)(eb + k * FP_TC_NC));
            for (int r = 0; r < FP_TC_MR; r++)
                E8[r] = _mm256_max_epi8(E8[r], _mm256_adds_epi8(e, _mm256_set1_epi8(ea[k * FP_TC_MR + r])));
        }
        /* merge c's exponent; biases, spacings, c's truncated term, E - f as int8.
         * Bit patterns: ulp = 2^(E - f), bias = 1.5 * 2^(23 + E - f) = ulp's
         * pattern + (23 << 23) + 0x400000, up = 2^(f - E). */
        __m512 P[FP_TC_MR][2], bias[FP_TC_MR][2], ulp[FP_TC_MR][2];
        __m256i T8[FP_TC_MR], cnt[FP_TC_MR];
        const __m512i g0 = _mm512_set1_epi32(127 - f);
        for (int r = 0; r < FP_TC_MR; r++) {
            const __m512i w[2] = {_mm512_cvtepi8_epi32(_mm256_castsi256_si128(E8[r])),
                                  _mm512_cvtepi8_epi32(_mm256_extracti128_si256(E8[r], 1))};
            __m128i t8[2];
            for (int v = 0; v < 2; v++) {
                __m512i E = _mm512_max_epi32(w[v], _mm512_set1_epi32(-64));
                if (!c_zero) {
                    const __m512i cb = _mm512_castps_si512(c[r][v]);
                    const __m512i ce = _mm512_maskz_sub_epi32(
                        _mm512_test_epi32_mask(cb, _mm512_set1_epi32(0x7fffffff)),
                        _mm512_srli_epi32(_mm512_and_si512(cb, _mm512_set1_epi32(0x7fffffff)), 23),
                        _mm512_set1_epi32(127));          /* floor(log2|c|); 0 where c == 0 */
                    E = _mm512_mask_max_epi32(E, _mm512_test_epi32_mask(cb, _mm512_set1_epi32(0x7fffffff)),
                                              E, ce);
                }
                const __m512i ub = _mm512_add_epi32(_mm512_slli_epi32(E, 23), _mm512_slli_epi32(g0, 23));
                ulp[r][v] = _mm512_castsi512_ps(ub);
                bias[r][v] = _mm512_castsi512_ps(_mm512_add_epi32(ub, _mm512_set1_epi32((23 << 23) | 0x400000)));
                P[r][v] = bias[r][v];
                if (!c_zero) {
                    const __m512 up = _mm512_castsi512_ps(_mm512_sub_epi32(_mm512_set1_epi32(254 << 23), ub));
                    const __m512 tc = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvttps_epi32(_mm512_mul_ps(c[r][v], up))),
                                                    ulp[r][v]);                           /* exact */
                    P[r][v] = _mm512_add_ps(bias[r][v], tc);                              /* exact */
                }
                t8[v] = _mm512_cvtepi32_epi8(_mm512_sub_epi32(E, _mm512_set1_epi32(f)));
            }
            T8[r] = _mm256_inserti128_si256(_mm256_castsi128_si256(t8[0]), t8[1], 1);
            cnt[r] = _mm256_setzero_si256();
        }
        /* pass 2: one FMA per term rounded toward zero, and the count */
        for (int64_t k = k0; k < k1; k++) {
            const __m512 b0 = _mm512_loadu_ps(bv + k * FP_TC_NC), b1 = _mm512_loadu_ps(bv + k * FP_TC_NC + 16);
            const int8_t *lbk = lb + 2 * k * FP_TC_NC;
            for (int r = 0; r < FP_TC_MR; r++) {
                const int64_t ix = k * FP_TC_MR + r;
                const __m512 a = _mm512_set1_ps(av[ix]);
                P[r][0] = _mm512_fmadd_round_ps(a, b0, P[r][0], FP_TC_RZ);
                P[r][1] = _mm512_fmadd_round_ps(a, b1, P[r][1], FP_TC_RZ);
                const __m256i l = _mm256_loadu_si256((const __m256i *)(lbk + as[ix]));
                const __m256i thr = _mm256_subs_epi8(T8[r], _mm256_set1_epi8(la[ix]));
                cnt[r] = _mm256_sub_epi8(cnt[r], _mm256_cmpgt_epi8(thr, l));
            }
        }
        const int promote_now = prm->promote && (k1 % prm->promote == 0 || k1 == Kp);
        for (int r = 0; r < FP_TC_MR; r++) {
            const __m512i cw[2] = {_mm512_cvtepi8_epi32(_mm256_castsi256_si128(cnt[r])),
                                   _mm512_cvtepi8_epi32(_mm256_extracti128_si256(cnt[r], 1))};
            for (int v = 0; v < 2; v++) {
                /* the exact block sum: (P - bias) + count * ulp, both multiples of
                 * ulp below 2^23 ulp, so the fused add rounds nothing */
                const __m512 S = _mm512_fmadd_ps(_mm512_cvtepi32_ps(cw[v]), ulp[r][v],
                                                 _mm512_sub_ps(P[r][v], bias[r][v]));
                __m512i sb = _mm512_castps_si512(S);
                if (prm->rne && dropbits > 0)
                    sb = _mm512_add_epi32(sb, _mm512_add_epi32(half_m1,
                                                               _mm512_and_si512(_mm512_srli_epi32(sb, (unsigned)dropbits), one)));
                c[r][v] = _mm512_castsi512_ps(_mm512_and_si512(sb, keep));   /* sign-magnitude */
                if (promote_now) {
                    acc[r][v] = _mm512_add_ps(acc[r][v], c[r][v]);           /* IEEE, nearest even */
                    c[r][v] = _mm512_setzero_ps();
                }
            }
        }
        c_zero = promote_now;
    }
    for (int r = 0; r < nrows; r++)
        for (int v = 0; v < 2; v++)
            _mm512_mask_storeu_ps(dst + r * ldd + 16 * v, (__mmask16)(colmask >> (16 * v)),
                                  prm->promote ? acc[r][v] : c[r][v]);
}
#endif

#if FP_HAVE_AVX2_KERNELS
/* Packing of the fast path, one row of A or one k-row of a B panel at a
 * time.  Positions without a code (K padding, rows past M, columns past N,
 * kmap's -1) hold value 0, exponent -128, no lowest bit.  The direct case
 * (no kmap, k < K) has its own loop without per-element tests, which the
 * compiler vectorises; it stores the same bytes as the general loop. */
FP_CLONES static int64_t fp_tc_pack_a_row(const uint8_t *row, int64_t cs, int in_row,
                                         const int64_t *kmap, int64_t K, int64_t Kp,
                                         const fp_tc_table *ta, int wide, int64_t dstep,
                                         float *restrict ap, int8_t *restrict eap,
                                         int8_t *restrict lap, uint8_t *restrict asp) {
    int64_t special = 0;
    int64_t k0 = 0;
    if (in_row && !kmap) {                               /* the direct positions */
        for (int64_t k = 0; k < K; k++) {
            const uint8_t code = row[k * cs];
            const int64_t d = k * dstep;
            ap[d] = ta->val[code];
            eap[d] = ta->e8[code];
            if (wide) {
                lap[d] = ta->l8[code];
                asp[d] = (uint8_t)(ta->neg[code] * FP_TC_NC);
            }
            special += ta->special[code];
        }
        k0 = K;
    }
    for (int64_t k = k0; k < Kp; k++) {
        const int64_t s = in_row ? fp_tc_src(kmap, k, K) : -1;
        const int in = s >= 0;
        const uint8_t code = in ? row[s * cs] : 0;
        const int64_t d = k * dstep;
        ap[d] = in ? ta->val[code] : 0.0f;
        eap[d] = in ? ta->e8[code] : (int8_t)FP_TC_ZEXP8;
        if (wide) {
            lap[d] = in ? ta->l8[code] : (int8_t)FP_TC_NOLSB;
            asp[d] = (uint8_t)(in * ta->neg[code] * FP_TC_NC);
        }
        special += in ? ta->special[code] : 0;
    }
    return special;
}

/* One panel of B: columns j0 .. j0 + nl (nl <= FP_TC_NC; the other lanes pad)
 * for every position k < Kp, k-row d = k * FP_TC_NC of the panel's arrays.
 * The tables are copied to the stack first: the build does not assume strict
 * aliasing, and the int8 stores could otherwise alias them. */
FP_CLONES static int64_t fp_tc_pack_b_panel(fp_tc_mat B, int64_t j0, int64_t nl,
                                           const int64_t *kmap, int64_t K, int64_t Kp,
                                           const fp_tc_table *tb, int wide,
                                           float *restrict bv, int8_t *restrict eb,
                                           int8_t *restrict lb) {
    float val[256];
    int8_t e8[256], lneg[256], lpos[256];
    uint8_t sp[256];
    memcpy(val, tb->val, sizeof val);
    memcpy(e8, tb->e8, sizeof e8);
    memcpy(lneg, tb->l8neg, sizeof lneg);
    memcpy(lpos, tb->l8pos, sizeof lpos);
    memcpy(sp, tb->special, sizeof sp);
    int64_t special = 0;
    for (int64_t k = 0; k < Kp; k++) {
        const int64_t s = fp_tc_src(kmap, k, K);
        const int64_t n = s >= 0 ? nl : 0;       /* lanes holding codes; the rest pads */
        const uint8_t *src = B.p + (s >= 0 ? s : 0) * B.rs + j0 * B.cs;
        float *brow = bv + k * FP_TC_NC;
        int8_t *erow = eb + k * FP_TC_NC;
        int8_t *lrow = wide ? lb + 2 * k * FP_TC_NC : NULL;
        for (int64_t l = 0; l < n; l++) {
            const uint8_t code = src[l * B.cs];
            brow[l] = val[code];
            erow[l] = e8[code];
            if (wide) {
                lrow[l] = lneg[code];                 /* read by a >= 0 */
                lrow[FP_TC_NC + l] = lpos[code];      /* read by a < 0 */
            }
            special += sp[code];
        }
        for (int64_t l = n; l < FP_TC_NC; l++) {
            brow[l] = 0.0f;
            erow[l] = (int8_t)FP_TC_ZEXP8;
            if (wide) lrow[l] = lrow[FP_TC_NC + l] = (int8_t)FP_TC_NOLSB;
        }
    }
    return special;
}
#endif

/* Fast path driver, straight from the codes.  A: M x K, B: K x N (strided);
 * K is zero-padded (or reordered by kmap) to Kp.  c0: initial float32
 * accumulator (M x N, row-major) or NULL.  *nspecial receives the number of
 * NaN/Inf codes (those read as zero here).  path: FP_TC_PATH_*.
 * Returns 0, -1 when memory ran out, -2 when the path is not available.
 * Memory: one packed copy of each operand (AVX-512: 7 bytes per element;
 * AVX2: 5), allocated before any thread starts. */
static int fp_tc_fast(fp_tc_mat A, fp_tc_mat B, int64_t M, int64_t K, int64_t Kp, int64_t N,
                      const int64_t *kmap, const fp_tc_table *ta, const fp_tc_table *tb,
                      const float *c0, float *out, const fp_tc_params *prm, int path, int nthreads,
                      int64_t *nspecial) {
#if FP_HAVE_AVX2_KERNELS
    if (path == FP_TC_PATH_AUTO) path = fp_cpu_has_avx512() ? FP_TC_PATH_AVX512 : FP_TC_PATH_AVX2;
    if (path == FP_TC_PATH_AVX512 && !fp_cpu_has_avx512()) return -2;
    if (path == FP_TC_PATH_AVX2 && !fp_cpu_has_avx2()) return -2;
    const int wide = path == FP_TC_PATH_AVX512;
    const int64_t npan = (N + FP_TC_NC - 1) / FP_TC_NC;
    const int64_t mp = (M + FP_TC_MR - 1) / FP_TC_MR * FP_TC_MR;
    const int64_t nib = mp / FP_TC_MR;
    const size_t nb = (size_t)(npan * Kp * FP_TC_NC > 0 ? npan * Kp * FP_TC_NC : 1);
    const size_t na = (size_t)(mp * Kp > 0 ? mp * Kp : 1);
    float *bvp = (float *)malloc(nb * sizeof(float));
    int8_t *ebp = (int8_t *)malloc(nb);
    int8_t *lbp = wide ? (int8_t *)malloc(2 * nb) : NULL;
    float *ap = (float *)malloc(na * sizeof(float));
    int8_t *eap = (int8_t *)malloc(na);
    int8_t *lap = wide ? (int8_t *)malloc(na) : NULL;
    uint8_t *asp = wide ? (uint8_t *)malloc(na) : NULL;
    if (!bvp || !ebp || !ap || !eap || (wide && (!lbp || !lap || !asp))) {
        free(bvp); free(ebp); free(lbp); free(ap); free(eap); free(lap); free(asp);
        return -1;
    }
    int64_t special = 0;
#pragma omp parallel num_threads(nthreads)
    {
        /* A: AVX2 row-major (i * Kp + k); AVX-512 panels of FP_TC_MR rows
         * ((ib * Kp + k) * FP_TC_MR + r).  Pads and zeros: value 0, exponent
         * -128, lowest bit 127; as holds the byte offset of the B lsb row that
         * the element reads (0: the b < 0 lanes, for a >= 0; 32: b > 0, for a < 0). */
#pragma omp for schedule(static) reduction(+ : special)
        for (int64_t i = 0; i < mp; i++) {
            const int64_t dstep = wide ? FP_TC_MR : 1;
            const int64_t d0 = wide ? (i / FP_TC_MR) * Kp * FP_TC_MR + i % FP_TC_MR : i * Kp;
            const uint8_t *row = A.p + (i < M ? i : 0) * A.rs;
            special += fp_tc_pack_a_row(row, A.cs, i < M, kmap, K, Kp, ta, wide, dstep, ap + d0,
                                        eap + d0, wide ? lap + d0 : NULL, wide ? asp + d0 : NULL);
        }
#pragma omp for schedule(static) reduction(+ : special)
        for (int64_t q = 0; q < npan; q++) {
            const int64_t nl = N - q * FP_TC_NC < FP_TC_NC ? N - q * FP_TC_NC : FP_TC_NC;
            const int64_t d = q * Kp * FP_TC_NC;
            special += fp_tc_pack_b_panel(B, q * FP_TC_NC, nl, kmap, K, Kp, tb, wide, bvp + d,
                                          ebp + d, wide ? lbp + 2 * d : NULL);
        }
        /* tiles in blocks of FP_TC_MB row panels: a block of A (FP_TC_MB * FP_TC_MR
         * rows) stays in cache while the column panels of B pass */
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < npan * nib; t++) {
            const int64_t mb = t / (npan * FP_TC_MB), rest = t % (npan * FP_TC_MB);
            const int64_t rows_in_block = nib - mb * FP_TC_MB < FP_TC_MB ? nib - mb * FP_TC_MB : FP_TC_MB;
            const int64_t q = rest / rows_in_block, ib = mb * FP_TC_MB + rest % rows_in_block;
            const int64_t i0 = ib * FP_TC_MR, j0 = q * FP_TC_NC;
            const int nr = (int)(M - i0 < FP_TC_MR ? M - i0 : FP_TC_MR);
            const int nc = (int)(N - j0 < FP_TC_NC ? N - j0 : FP_TC_NC);
            const float *a0 = c0 ? c0 + i0 * N + j0 : NULL;
            if (wide)
                fp_tc_tile_avx512(ap + ib * Kp * FP_TC_MR, eap + ib * Kp * FP_TC_MR, lap + ib * Kp * FP_TC_MR,
                                  asp + ib * Kp * FP_TC_MR, Kp, bvp + q * Kp * FP_TC_NC,
                                  ebp + q * Kp * FP_TC_NC, lbp + 2 * q * Kp * FP_TC_NC, prm, a0, N,
                                  out + i0 * N + j0, N, nr, nc);
            else
                fp_tc_tile_avx2(ap + i0 * Kp, eap + i0 * Kp, Kp, bvp + q * Kp * FP_TC_NC,
                                ebp + q * Kp * FP_TC_NC, prm, a0, N, out + i0 * N + j0, N, nr, nc);
        }
    }
    free(bvp); free(ebp); free(lbp); free(ap); free(eap); free(lap); free(asp);
    *nspecial = special;
    return 0;
#else
    (void)A; (void)B; (void)M; (void)K; (void)Kp; (void)N; (void)kmap; (void)ta; (void)tb;
    (void)c0; (void)out; (void)prm; (void)path; (void)nthreads; (void)nspecial;
    return -2;
#endif
}

#endif
