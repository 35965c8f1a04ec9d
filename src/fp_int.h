/* Integer kernels: elementwise multiply/add with saturation or wrap, and
 * matrix multiplication into an accumulator of 8..64 bits that wraps or
 * saturates after every block of exactly-summed products.
 *
 * The kernels never validate: the Python wrappers have checked every value
 * against its format, chosen the storage type and allocated the outputs.
 */
#ifndef FP_INT_H
#define FP_INT_H

#include "fp_common.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if FP_HAVE_AVX2_KERNELS
#include <immintrin.h>
#endif

/* Storage types understood by the elementwise kernels. */
enum { FP_I8 = 0, FP_U8 = 1, FP_I16 = 2, FP_U16 = 3 };
/* Operations. */
enum { FP_OP_MUL = 0, FP_OP_ADD = 1, FP_OP_MULWIDE = 2 };

/* ------------------------------------------------------------------ */
/* Elementwise.  Inputs of at most 16 bits: products and sums fit in int32.
 *
 *   saturate:  r = min(max(x, lo), hi)
 *   wrap:      r = ((x - lo) mod 2^bits) + lo      (mask = 2^bits - 1)
 */
static inline int64_t fp_sat_i64(int64_t x, int32_t lo, int32_t hi) {
    return x < lo ? lo : (x > hi ? hi : x);
}

static inline int32_t fp_sat32(int32_t x, int32_t lo, int32_t hi) {
    return x < lo ? lo : (x > hi ? hi : x);
}

/* The product or sum arrives as any integer; converting it to uint32 is
 * reduction modulo 2^32 (well defined), consistent with modulo 2^bits. */
static inline int32_t fp_wrap32(uint32_t x, int32_t lo, uint32_t mask) {
    return fp_u2s32(((x - (uint32_t)lo) & mask) + (uint32_t)lo);
}

/* T: storage type, TW: exact product type, CT: compute type wide enough for
 * any product or sum of two T values (int32 up to int16; int64 for uint16,
 * whose products reach 2^32 - 2^17 + 1). */
#define FP_ELEMENTWISE(SUFFIX, T, TW, CT, SAT)                                                \
    FP_CLONES static void fp_mul_sat_##SUFFIX(const T *a, const T *b, T *o, int64_t n,        \
                                              int32_t lo, int32_t hi) {                       \
        for (int64_t i = 0; i < n; i++) o[i] = (T)SAT((CT)a[i] * (CT)b[i], lo, hi);           \
    }                                                                                         \
    FP_CLONES static void fp_mul_wrap_##SUFFIX(const T *a, const T *b, T *o, int64_t n,       \
                                               int32_t lo, uint32_t mask) {                   \
        for (int64_t i = 0; i < n; i++)                                                       \
            o[i] = (T)fp_wrap32((uint32_t)((CT)a[i] * (CT)b[i]), lo, mask);                   \
    }                                                                                         \
    FP_CLONES static void fp_add_sat_##SUFFIX(const T *a, const T *b, T *o, int64_t n,        \
                                              int32_t lo, int32_t hi) {                       \
        for (int64_t i = 0; i < n; i++) o[i] = (T)SAT((CT)a[i] + (CT)b[i], lo, hi);           \
    }                                                                                         \
    FP_CLONES static void fp_add_wrap_##SUFFIX(const T *a, const T *b, T *o, int64_t n,       \
                                               int32_t lo, uint32_t mask) {                   \
        for (int64_t i = 0; i < n; i++)                                                       \
            o[i] = (T)fp_wrap32((uint32_t)((CT)a[i] + (CT)b[i]), lo, mask);                   \
    }                                                                                         \
    FP_CLONES static void fp_mulwide_##SUFFIX(const T *a, const T *b, TW *o, int64_t n) {     \
        for (int64_t i = 0; i < n; i++) o[i] = (TW)((TW)a[i] * (TW)b[i]);                     \
    }

FP_ELEMENTWISE(i8, int8_t, int16_t, int32_t, fp_sat32)
FP_ELEMENTWISE(u8, uint8_t, uint16_t, int32_t, fp_sat32)
FP_ELEMENTWISE(i16, int16_t, int32_t, int32_t, fp_sat32)
FP_ELEMENTWISE(u16, uint16_t, uint32_t, int64_t, fp_sat_i64)

/* One chunk [start, start + n) of an elementwise operation on contiguous
 * arrays.  `out` is of the storage type, or twice as wide for mul_wide. */
static void fp_binop_chunk(int op, int saturate, int dtype, const void *a, const void *b,
                           void *out, int64_t start, int64_t n, int32_t lo, int32_t hi,
                           uint32_t mask) {
#define FP_DISPATCH(SUFFIX, T, TW)                                                       \
    {                                                                                    \
        const T *pa = (const T *)a + start;                                              \
        const T *pb = (const T *)b + start;                                              \
        if (op == FP_OP_MULWIDE) {                                                       \
            fp_mulwide_##SUFFIX(pa, pb, (TW *)out + start, n);                           \
        } else {                                                                         \
            T *po = (T *)out + start;                                                    \
            if (op == FP_OP_MUL)                                                         \
                saturate ? fp_mul_sat_##SUFFIX(pa, pb, po, n, lo, hi)                    \
                         : fp_mul_wrap_##SUFFIX(pa, pb, po, n, lo, mask);                \
            else                                                                         \
                saturate ? fp_add_sat_##SUFFIX(pa, pb, po, n, lo, hi)                    \
                         : fp_add_wrap_##SUFFIX(pa, pb, po, n, lo, mask);                \
        }                                                                                \
        return;                                                                          \
    }
    switch (dtype) {
        case FP_I8: FP_DISPATCH(i8, int8_t, int16_t)
        case FP_U8: FP_DISPATCH(u8, uint8_t, uint16_t)
        case FP_I16: FP_DISPATCH(i16, int16_t, int32_t)
        default: FP_DISPATCH(u16, uint16_t, uint32_t)
    }
#undef FP_DISPATCH
}

/* ------------------------------------------------------------------ */
/* Accumulator update: acc + s, where acc is already in [lo, hi] (a signed
 * accumulator of `bits` bits, 8 <= bits <= 64) and s is the exact sum of one
 * block of terms.  Returns the new accumulator; *ovf is set to 1 when the
 * exact result left [lo, hi] (and was wrapped or clamped). */
static inline int64_t fp_acc_add(int64_t acc, int64_t s, int64_t lo, int64_t hi, int bits,
                                 int saturate, int *ovf) {
    int64_t t;
    if (__builtin_add_overflow(acc, s, &t)) {
        /* Only possible for bits == 64: the exact sum is outside int64. */
        *ovf = 1;
        if (saturate) return s > 0 ? INT64_MAX : INT64_MIN;
        return fp_u2s64((uint64_t)acc + (uint64_t)s);
    }
    if (t < lo || t > hi) {
        *ovf = 1;
        return saturate ? (t < lo ? lo : hi) : fp_wrap64(t, lo, bits);
    }
    *ovf = 0;
    return t;
}

/* ------------------------------------------------------------------ */
/* Generic matrix multiply (any operand of at most 16 bits, any register of
 * 8..64 bits, any block): out = A @ B (+ C) one row at a time, in int64.
 *
 * Terms.  Product mode (pairs = 0): term k is a[i,k] * b[k,j], k < K.
 * Pair mode (pairs = 1): term p is clamp(a[i,2p] b[2p,j] + a[i,2p+1] b[2p+1,j],
 * plo, phi), p < ceil(K / 2) (a missing k = K contributes 0).  `block` terms
 * are summed exactly, then added into the register (fp_acc_add), in K order.
 *
 *   a: M x K int32, b: K x N int32 (row-major), c0: M x N int64 or NULL,
 *   out: M x N, int64 (out64 = 1) or int32 (register of at most 32 bits),
 *   counts: M x N int64 or NULL, scratch: 2 N int64 (block sums, register).
 * Products of 16-bit values are exact in int64 and a block of at most 2^24
 * terms of at most 2^33 cannot overflow it. */
static void fp_generic_rows(const int32_t *a, const int32_t *b, const int64_t *c0, void *out,
                            int out64, int64_t *counts, int64_t *scratch, int64_t i0, int64_t i1,
                            int64_t K, int64_t N, int64_t block, int bits, int saturate, int pairs,
                            int64_t plo, int64_t phi) {
    const int64_t lo = bits >= 64 ? INT64_MIN : -((int64_t)1 << (bits - 1));
    const int64_t hi = bits >= 64 ? INT64_MAX : ((int64_t)1 << (bits - 1)) - 1;
    const int64_t nterms = pairs ? (K + 1) / 2 : K;
    int64_t *bsum = scratch, *reg = scratch + N;
    for (int64_t i = i0; i < i1; i++) {
        int64_t *cnt = counts ? counts + i * N : NULL;
        for (int64_t j = 0; j < N; j++) {
            reg[j] = c0 ? c0[i * N + j] : 0;
            if (cnt) cnt[j] = 0;
        }
        for (int64_t t0 = 0; t0 < nterms; t0 += block) {
            const int64_t t1 = t0 + block < nterms ? t0 + block : nterms;
            for (int64_t j = 0; j < N; j++) bsum[j] = 0;
            for (int64_t t = t0; t < t1; t++) {
                if (!pairs) {
                    const int64_t aik = a[i * K + t];
                    const int32_t *bk = b + t * N;
                    if (aik == 0) continue;
                    for (int64_t j = 0; j < N; j++) bsum[j] += aik * (int64_t)bk[j];
                } else {
                    const int64_t k0 = 2 * t, k1 = 2 * t + 1;
                    const int64_t a0 = a[i * K + k0], a1 = k1 < K ? a[i * K + k1] : 0;
                    const int32_t *b0 = b + k0 * N, *b1 = k1 < K ? b + k1 * N : b0;
                    for (int64_t j = 0; j < N; j++) {
                        int64_t s = a0 * (int64_t)b0[j] + a1 * (int64_t)b1[j];
                        bsum[j] += s < plo ? plo : (s > phi ? phi : s);
                    }
                }
            }
            for (int64_t j = 0; j < N; j++) {
                int ovf;
                reg[j] = fp_acc_add(reg[j], bsum[j], lo, hi, bits, saturate, &ovf);
                if (cnt) cnt[j] += ovf;
            }
        }
        if (out64) {
            memcpy((int64_t *)out + i * N, reg, (size_t)N * sizeof(int64_t));
        } else {
            int32_t *o = (int32_t *)out + i * N;
            for (int64_t j = 0; j < N; j++) o[j] = (int32_t)reg[j]; /* in [lo, hi], bits <= 32 */
        }
    }
}

/* The generic product over threads (blocks of 4 rows).  The scratch rows of
 * every thread are allocated before the parallel region, so no allocation can
 * fail inside it.  Returns 0, or -1 when memory ran out (nothing written). */
static int fp_matmul_generic(const int32_t *a, const int32_t *b, const int64_t *c0, void *out,
                             int out64, int64_t *counts, int64_t M, int64_t K, int64_t N,
                             int64_t block, int bits, int saturate, int pairs, int64_t plo,
                             int64_t phi, int nthreads) {
    if (M <= 0 || N <= 0) return 0;
    int nt = nthreads < 1 ? 1 : nthreads;
#ifndef _OPENMP
    nt = 1;
#endif
    int64_t *scratch = (int64_t *)malloc((size_t)nt * 2u * (size_t)N * sizeof(int64_t));
    if (!scratch) return -1;
    const int64_t rows = 4, nchunks = (M + rows - 1) / rows;
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        int64_t *mine = scratch + (int64_t)omp_get_thread_num() * 2 * N;
#else
        int64_t *mine = scratch;
#endif
#pragma omp for schedule(dynamic, 1)
        for (int64_t ci = 0; ci < nchunks; ci++) {
            const int64_t i0 = ci * rows, i1 = i0 + rows < M ? i0 + rows : M;
            fp_generic_rows(a, b, c0, out, out64, counts, mine, i0, i1, K, N, block, bits,
                            saturate, pairs, plo, phi);
        }
    }
    free(scratch);
    return 0;
}

/* ================================================================== */
/* Exact GEMM on int16 pairs, for operands whose values fit int16 (every
 * format of at most 8 bits, and the wider ones up to int16 / uint15), into a
 * register of 8 to 32 bits.
 *
 * Positions.  Logical k is stored at position
 *     pos(k) = (k / gblk) * gstride + k % gblk,
 * gstride = gblk rounded up to even, so that no pair of positions straddles
 * two blocks of an odd size (the padding positions hold 0, and a zero
 * product changes no sum).  Without blocks, gblk = gstride = K: pos(k) = k.
 * Positions 2p and 2p + 1 form pair p; Q positions make kp = ceil(Q / 2)
 * pairs.
 *
 * Packed A, per panel of MR rows (rows past M are zero):
 *   SIMD paths: for each pair p, MR words, word r = [ a(r, 2p+1) : a(r, 2p) ]
 *               (high int16 : low int16 of an int32);
 *   portable:   for each row r, the 2 kp positions a(r, q) as int16.
 * Packed B, per panel of NR columns (columns past N are zero):
 *   SIMD paths: for each pair p, NR words, word j = [ b(2p+1, j) : b(2p, j) ];
 *   portable:   for each column j, the 2 kp positions b(q, j) as int16.
 *
 * Products.  vpmaddwd(broadcast(A word), B words) gives in int32 lane j
 *     a(2p) b(2p, j) + a(2p+1) b(2p+1, j)
 * exactly whenever that sum fits int32 (every case but int16 -32768 pairs,
 * where it wraps modulo 2^32), and vpdpwssd adds it into the lane modulo
 * 2^32 with no saturation.
 *
 * Modes (what the caller has proved exact, see fixedpoint/accumulate.py):
 *   merge = 0: one sum per output modulo 2^32 (wrap without counts, or a
 *              register that cannot overflow); a register narrower than 32
 *              bits is wrapped at the end (2^bits divides 2^32).
 *   merge = 1: blocks of blk2 pairs are summed exactly in int32 (the caller
 *              bounds block * max|term| below 2^31, 2^30 for bits < 32), then
 *              added into the register in K order, which clamps or wraps,
 *              counting the adds that overflowed when counts are asked.
 *   pairclamp: each pair sum is clamped to [plo, phi] before it is summed
 *              (x86 vpmaddubsw pairs: a term is one clamped pair).
 * Every output element is computed by exactly one thread, in K order, so
 * the bits never depend on threads, tiles or chunks.
 */
enum { FP_GEMM_PORTABLE = 0, FP_GEMM_AVX2 = 1, FP_GEMM_VNNI256 = 2, FP_GEMM_VNNI512 = 3,
       FP_GEMM_NPATHS = 4 };

#if FP_HAVE_AVX2_KERNELS && !defined(FP_NO_AVX512) && \
    (defined(__clang__) ? (__clang_major__ >= 7) : (__GNUC__ >= 8))
#define FP_HAVE_AVX512_KERNELS 1
#define FP_TARGET_AVX512 \
    __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))
static inline int fp_cpu_has_avx512vnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}
#else
#define FP_HAVE_AVX512_KERNELS 0
static inline int fp_cpu_has_avx512vnni(void) { return 0; }
#endif

#if defined(__GNUC__)
#define FP_ALWAYS_INLINE inline __attribute__((always_inline))
#define FP_UNROLL _Pragma("GCC unroll 32")
#else
#define FP_ALWAYS_INLINE inline
#define FP_UNROLL
#endif

/* Tile shapes: MR rows by NR columns of int32 accumulators. */
static const int fp_gemm_mr_sum[FP_GEMM_NPATHS] = {4, 6, 12, 12};
static const int fp_gemm_mr_merge[FP_GEMM_NPATHS] = {4, 6, 6, 6}; /* registers in registers */
static const int fp_gemm_nr[FP_GEMM_NPATHS] = {4, 16, 16, 32};

/* 1 when the path was compiled and this CPU runs it. */
static int fp_gemm_path_available(int path) {
    switch (path) {
        case FP_GEMM_PORTABLE: return 1;
        case FP_GEMM_AVX2: return FP_HAVE_AVX2_KERNELS && fp_cpu_has_avx2();
        case FP_GEMM_VNNI256:
        case FP_GEMM_VNNI512: return FP_HAVE_AVX512_KERNELS && fp_cpu_has_avx512vnni();
        default: return 0;
    }
}

/* The register after a block: what the merges need. */
typedef struct {
    int32_t lo, hi;   /* register range */
    int32_t plo, phi; /* pair clamp range */
    int sh;           /* 32 - bits */
    int64_t ld;       /* portable panels: positions per packed row */
    int64_t maxblk;   /* a bound on |block sum| (merge mode) */
    int32_t plov[16], phiv[16]; /* plo, phi broadcast (memory operands of the pair steps) */
} fp_merge_t;

/* One register element: c + s (s the exact block sum, |s| < 2^31, and
 * |s| <= 2^30 when bits < 32, so that c + s is exact in int32 there). */
static FP_ALWAYS_INLINE void fp_merge1(int32_t *c, int32_t *cnt, uint32_t s,
                                       const fp_merge_t *mg, const int sat, const int b32) {
    const int32_t cv = *c, sv = fp_u2s32(s);
    int32_t r;
    int ovf;
    if (b32) {
        const int32_t t = fp_u2s32((uint32_t)cv + s); /* modulo 2^32 */
        ovf = sv >= 0 ? t < cv : t > cv;
        r = (ovf && sat) ? (sv >= 0 ? INT32_MAX : INT32_MIN) : t;
    } else {
        const int32_t t = cv + sv; /* exact: |cv| < 2^30, |sv| <= 2^30 */
        ovf = t < mg->lo || t > mg->hi;
        r = !ovf ? t : sat ? (t < mg->lo ? mg->lo : mg->hi)
                           : (int32_t)fp_wrap64(t, mg->lo, 32 - mg->sh);
    }
    *c = r;
    if (cnt) *cnt += ovf;
}

/* Blocks merged one at a time after a failed run check before the next
 * check (see the tile loops). */
#define FP_RUN_WAIT 3

/* Tile functions: ap/bp point at pair p0 of their panels, np pairs. */
typedef void (*fp_tile_fn)(const int32_t *ap, const void *bp, int64_t np, int64_t blk2,
                           int32_t *c, int64_t ldc, int32_t *cnt, int64_t ldn,
                           const fp_merge_t *mg);

/* ---- portable: plain C that compilers vectorise.  Dot products along k of
 * int16 rows (A) and int16 columns (B), a 4 x 4 block of independent sums: the
 * form that GCC and Clang turn into pmaddwd / smlal dot-product reductions.
 * Sums are uint32 (modulo 2^32, no overflow UB).  The panels are row-major in
 * positions: a(r, q) at a[r * ld + q], b(q, j) at b[j * ld + q]. */
#define FP_PMR 4
#define FP_PNR 4

/* s[r][j] += the terms of positions [q0, q1) (pairs clamped in pair mode). */
static FP_ALWAYS_INLINE void fp_portable_sums(const int16_t *a, const int16_t *b, int64_t ld,
                                              int64_t q0, int64_t q1, int32_t plo, int32_t phi,
                                              const int pairclamp,
                                              uint32_t s[FP_PMR][FP_PNR]) {
    if (!pairclamp) {
        for (int64_t q = q0; q < q1; q++) {
            FP_UNROLL for (int r = 0; r < FP_PMR; r++) {
                FP_UNROLL for (int j = 0; j < FP_PNR; j++)
                    s[r][j] += (uint32_t)((int32_t)a[r * ld + q] * (int32_t)b[j * ld + q]);
            }
        }
    } else {
        for (int64_t q = q0; q < q1; q += 2) {
            FP_UNROLL for (int r = 0; r < FP_PMR; r++) {
                FP_UNROLL for (int j = 0; j < FP_PNR; j++) {
                    int32_t t = (int32_t)a[r * ld + q] * (int32_t)b[j * ld + q] +
                                (int32_t)a[r * ld + q + 1] * (int32_t)b[j * ld + q + 1];
                    t = t < plo ? plo : t; /* exact: the caller bounds pair sums */
                    t = t > phi ? phi : t;
                    s[r][j] += (uint32_t)t;
                }
            }
        }
    }
}

/* Merge mode runs of blocks: when no register of the tile can leave its
 * range within the next n blocks (|register| + n * maxblk <= hi, maxblk
 * bounding |block sum|), merging those blocks one by one is the same as
 * adding their total, and nothing overflows: the run is summed in one pass
 * (one reduction instead of n).  Otherwise one block is merged. */
static FP_ALWAYS_INLINE void fp_tile_portable_impl(const int32_t *ap32, const void *bpv,
                                                   int64_t np, int64_t blk2, int32_t *c,
                                                   int64_t ldc, int32_t *cnt, int64_t ldn,
                                                   const fp_merge_t *mg, const int merge,
                                                   const int pairclamp, const int sat,
                                                   const int b32, const int counting) {
    const int16_t *a = (const int16_t *)ap32, *b = (const int16_t *)bpv;
    const int64_t ld = mg->ld;
    const int32_t plo = mg->plo, phi = mg->phi;
    const int64_t hi = b32 ? INT32_MAX : mg->hi;
    int64_t p0 = 0;
    int wait = 0;
    int64_t gmax = -1; /* max |register| of the tile, once known (-1: not yet) */
    while (p0 < np) {
        int64_t p1 = np;
        int single = 0;
        if (merge && (wait > 0 || mg->maxblk == 0)) {
            if (wait > 0) wait--;
            p1 = p0 + blk2 < np ? p0 + blk2 : np;
            single = 1;
        } else if (merge) {
            if (gmax < 0) {
                gmax = 0;
                for (int r = 0; r < FP_PMR; r++)
                    for (int j = 0; j < FP_PNR; j++) {
                        const int64_t v = c[r * ldc + j];
                        gmax = v < 0 ? (-v > gmax ? -v : gmax) : (v > gmax ? v : gmax);
                    }
            }
            /* nsafe = room / maxblk, without a division for the common few blocks */
            const int64_t room = hi - gmax, mb = mg->maxblk;
            int64_t nsafe = 0;
            if (room > 0) {
                while (nsafe < 8 && (nsafe + 1) * mb <= room) nsafe++;
                if (nsafe == 8) nsafe = room / mb;
            }
            if (nsafe >= 2) {
                if (nsafe < (np - p0 + blk2 - 1) / blk2) p1 = p0 + nsafe * blk2;
            } else {
                p1 = p0 + blk2 < np ? p0 + blk2 : np;
                single = 1;
                wait = FP_RUN_WAIT;
            }
        }
        uint32_t s[FP_PMR][FP_PNR];
        memset(s, 0, sizeof s);
        fp_portable_sums(a, b, ld, 2 * p0, 2 * p1, plo, phi, pairclamp, s);
        int64_t newmax = 0;
        for (int r = 0; r < FP_PMR; r++)
            for (int j = 0; j < FP_PNR; j++) {
                int32_t *cp = c + r * ldc + j;
                if (single) {
                    fp_merge1(cp, counting ? cnt + r * ldn + j : NULL, s[r][j], mg, sat, b32);
                } else { /* modulo 2^32: exact in a run, the sum itself without merges */
                    *cp = fp_u2s32((uint32_t)*cp + s[r][j]);
                }
                const int64_t v = *cp;
                newmax = v < 0 ? (-v > newmax ? -v : newmax) : (v > newmax ? v : newmax);
            }
        gmax = newmax;
        p0 = p1;
    }
}

/* Every tile function comes in 18 variants, so that the loops carry no test:
 * [pairclamp][0] sums without merges, [pairclamp][1 + 4 counting + 2 sat + b32]
 * merges blocks (b32: a 32-bit register). */
#define FP_TILE_V(P, ATTR, ID, IMPL, MERGE, PAIR, SAT, B32, CNT)                              \
    ATTR static void P##_v##ID(const int32_t *ap, const void *bp, int64_t np, int64_t blk2,   \
                               int32_t *c, int64_t ldc, int32_t *cnt, int64_t ldn,           \
                               const fp_merge_t *mg) {                                       \
        IMPL(ap, bp, np, blk2, c, ldc, cnt, ldn, mg, MERGE, PAIR, SAT, B32, CNT);            \
    }
#define FP_TILE_VARIANTS_PAIR(P, ATTR, SUM, MRG, PAIR, B)                                     \
    FP_TILE_V(P, ATTR, B##0, SUM, 0, PAIR, 0, 0, 0)                                           \
    FP_TILE_V(P, ATTR, B##1, MRG, 1, PAIR, 0, 0, 0)                                           \
    FP_TILE_V(P, ATTR, B##2, MRG, 1, PAIR, 0, 1, 0)                                           \
    FP_TILE_V(P, ATTR, B##3, MRG, 1, PAIR, 1, 0, 0)                                           \
    FP_TILE_V(P, ATTR, B##4, MRG, 1, PAIR, 1, 1, 0)                                           \
    FP_TILE_V(P, ATTR, B##5, MRG, 1, PAIR, 0, 0, 1)                                           \
    FP_TILE_V(P, ATTR, B##6, MRG, 1, PAIR, 0, 1, 1)                                           \
    FP_TILE_V(P, ATTR, B##7, MRG, 1, PAIR, 1, 0, 1)                                           \
    FP_TILE_V(P, ATTR, B##8, MRG, 1, PAIR, 1, 1, 1)
/* SUM: the tile loop used without merges; MRG: with merges (the two may use
 * different row counts, see fp_gemm_mr_sum / fp_gemm_mr_merge). */
#define FP_TILE_VARIANTS(P, ATTR, SUM, MRG)                                                  \
    FP_TILE_VARIANTS_PAIR(P, ATTR, SUM, MRG, 0, 0)                                            \
    FP_TILE_VARIANTS_PAIR(P, ATTR, SUM, MRG, 1, 1)                                            \
    static const fp_tile_fn P##_table[2][9] = {                                               \
        {P##_v00, P##_v01, P##_v02, P##_v03, P##_v04, P##_v05, P##_v06, P##_v07, P##_v08},    \
        {P##_v10, P##_v11, P##_v12, P##_v13, P##_v14, P##_v15, P##_v16, P##_v17, P##_v18}};

FP_TILE_VARIANTS(fp_tile_portable, FP_CLONES, fp_tile_portable_impl, fp_tile_portable_impl)

/* ---- SIMD paths: one tile loop, instantiated per instruction set with the
 * FPV_* operations and FPK_MR defined just before.  Tiles are MR rows by two
 * vectors; the accumulators are named variables (s<row>_<vector>), not an
 * array, so that compilers keep all of them in registers. */
#define FP_ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define FP_ROWS6_HI(X) X(6) X(7) X(8) X(9) X(10) X(11)
#define FP_ROWS12(X) FP_ROWS6(X) FP_ROWS6_HI(X)
#define FP_T_DECL(r) FPV s##r##_0 = FPV_ZERO(), s##r##_1 = FPV_ZERO();
/* One pair step of a whole tile (all rows, both vectors) as one assembly
 * block: the accumulators are its only register operands, so the compiler
 * cannot spill them (GCC spills accumulators or the B vectors around the
 * vpdpwssd builtin, depending on unrelated flags such as -fwrapv).  The
 * block reads B (two vectors at bp + p * 2L) and the MR words of A at
 * ap + p * MR, declared as memory inputs.  GCC allows 30 operands (a "+"
 * operand counts twice), so tiles of 12 rows take two blocks of 6. */
#define FP_STR_(x) #x
#define FP_STR(x) FP_STR_(x)
#define FP_ASM_OUT(CONS, r) [s##r##_0] CONS(s##r##_0), [s##r##_1] CONS(s##r##_1),
#define FP_ASM_OUTV(r) FP_ASM_OUT("+v", r)
#define FP_ASM_OUTX(r) FP_ASM_OUT("+x", r)
/* AVX-512 (V: zmm or ymm): V29 = broadcast A word, V30/V31 = B; INSN is
 * vpdpwssd (int16 pairs) or vpdpbusd (the byte steps below) */
#define FP_ASM_ROWV(INSN, V, r)                                                               \
    "vpbroadcastd " FP_STR(r) "*4(%[a]), %%" V "29\n\t"                                       \
    INSN " %%" V "30, %%" V "29, %[s" #r "_0]\n\t"                                            \
    INSN " %%" V "31, %%" V "29, %[s" #r "_1]\n\t"
#define FP_ASM_ROW512(r) FP_ASM_ROWV("vpdpwssd", "zmm", r)
#define FP_ASM_ROW256(r) FP_ASM_ROWV("vpdpwssd", "ymm", r)
/* AVX2: ymm15 = broadcast A word, ymm13/ymm14 = B, ymm12 = product */
#define FP_ASM_ROWAVX2(r)                                                                     \
    "vpbroadcastd " FP_STR(r) "*4(%[a]), %%ymm15\n\t"                                         \
    "vpmaddwd %%ymm13, %%ymm15, %%ymm12\n\t"                                                  \
    "vpaddd %%ymm12, %[s" #r "_0], %[s" #r "_0]\n\t"                                          \
    "vpmaddwd %%ymm14, %%ymm15, %%ymm15\n\t"                                                  \
    "vpaddd %%ymm15, %[s" #r "_1], %[s" #r "_1]\n\t"
#define FP_ASM_STEP(ROWS, LOADS, ROW, OUT, LANES, ...)                                        \
    do {                                                                                      \
        const int32_t *aq = ap + p * FPK_MR, *bq = bp + p * (2 * (LANES));                    \
        __asm__(LOADS ROWS(ROW)                                                               \
                : ROWS(OUT)[a] "+r"(aq)                                                       \
                : [b] "r"(bq), "m"(*(const int32_t(*)[2 * (LANES)])bq),                       \
                  "m"(*(const int32_t(*)[FPK_MR])aq)                                          \
                : __VA_ARGS__);                                                               \
    } while (0)
#define FP_STEP512_ROW(ROW, ROWS)                                                             \
    FP_ASM_STEP(ROWS, "vmovdqu64 (%[b]), %%zmm30\n\tvmovdqu64 64(%[b]), %%zmm31\n\t",         \
                ROW, FP_ASM_OUTV, 16, "zmm29", "zmm30", "zmm31")
#define FP_STEP256_ROW(ROW, ROWS)                                                             \
    FP_ASM_STEP(ROWS, "vmovdqu32 (%[b]), %%ymm30\n\tvmovdqu32 32(%[b]), %%ymm31\n\t",         \
                ROW, FP_ASM_OUTV, 8, "xmm29", "xmm30", "xmm31")
#define FP_STEP512(ROWS) FP_STEP512_ROW(FP_ASM_ROW512, ROWS)
#define FP_STEP256(ROWS) FP_STEP256_ROW(FP_ASM_ROW256, ROWS)
#define FP_STEP512_12(ROWS) FP_STEP512(FP_ROWS6); FP_STEP512(FP_ROWS6_HI)
#define FP_STEP256_12(ROWS) FP_STEP256(FP_ROWS6); FP_STEP256(FP_ROWS6_HI)
#define FP_STEPAVX2(ROWS)                                                                     \
    FP_ASM_STEP(ROWS, "vmovdqu (%[b]), %%ymm13\n\tvmovdqu 32(%[b]), %%ymm14\n\t",             \
                FP_ASM_ROWAVX2, FP_ASM_OUTX, 8, "xmm12", "xmm13", "xmm14", "xmm15")
/* Byte steps (VNNI, sum mode only): the A word holds 4 unsigned bytes and
 * each B lane 4 signed bytes; vpdpbusd adds the 4 products of a lane (each
 * sum of 4 is exact: |sum| <= 4 * 255 * 128 < 2^31) into it modulo 2^32. */
#define FP_ASM_ROW512B(r) FP_ASM_ROWV("vpdpbusd", "zmm", r)
#define FP_ASM_ROW256B(r) FP_ASM_ROWV("vpdpbusd", "ymm", r)
#define FP_STEP512B(ROWS) FP_STEP512_ROW(FP_ASM_ROW512B, ROWS)
#define FP_STEP256B(ROWS) FP_STEP256_ROW(FP_ASM_ROW256B, ROWS)
#define FP_STEP512B_12(ROWS) FP_STEP512B(FP_ROWS6); FP_STEP512B(FP_ROWS6_HI)
#define FP_STEP256B_12(ROWS) FP_STEP256B(FP_ROWS6); FP_STEP256B(FP_ROWS6_HI)
/* The pair steps (pairclamp): each pair sum clamped to [plo, phi] (vectors
 * of the two bounds in fp_merge_t, read as memory operands) before it is
 * added; zmm28 / ymm28 / ymm12 hold the pair sums.  Blocks of 4 (or 3) rows. */
#define FP_ASM_PROW(T, BCAST, B0, B1, LO, HI, r)                                              \
    "vpbroadcastd " FP_STR(r) "*4(%[a]), " BCAST "\n\t"                                       \
    "vpmaddwd " B0 ", " BCAST ", " T "\n\t"                                                   \
    "vpmaxsd " LO ", " T ", " T "\n\t"                                                        \
    "vpminsd " HI ", " T ", " T "\n\t"                                                        \
    "vpaddd " T ", %[s" #r "_0], %[s" #r "_0]\n\t"                                            \
    "vpmaddwd " B1 ", " BCAST ", " T "\n\t"                                                   \
    "vpmaxsd " LO ", " T ", " T "\n\t"                                                        \
    "vpminsd " HI ", " T ", " T "\n\t"                                                        \
    "vpaddd " T ", %[s" #r "_1], %[s" #r "_1]\n\t"
/* AVX-512: the bounds in zmm26 / zmm27 (ymm26 / ymm27); AVX2 has no register
 * to spare and reads them from memory */
#define FP_ASM_PROW512(r)                                                                     \
    FP_ASM_PROW("%%zmm28", "%%zmm29", "%%zmm30", "%%zmm31", "%%zmm26", "%%zmm27", r)
#define FP_ASM_PROW256(r)                                                                     \
    FP_ASM_PROW("%%ymm28", "%%ymm29", "%%ymm30", "%%ymm31", "%%ymm26", "%%ymm27", r)
#define FP_ASM_PROWAVX2(r)                                                                    \
    FP_ASM_PROW("%%ymm12", "%%ymm15", "%%ymm13", "%%ymm14", "%[plo]", "%[phi]", r)
#define FP_ASM_PSTEP(ROWS, LOADS, ROW, OUT, LANES, ...)                                       \
    do {                                                                                      \
        const int32_t *aq = ap + p * FPK_MR, *bq = bp + p * (2 * (LANES));                    \
        __asm__(LOADS ROWS(ROW)                                                               \
                : ROWS(OUT)[a] "+r"(aq)                                                       \
                : [b] "r"(bq), "m"(*(const int32_t(*)[2 * (LANES)])bq),                       \
                  "m"(*(const int32_t(*)[FPK_MR])aq),                                         \
                  [plo] "m"(*(const int32_t(*)[LANES])mg->plov),                              \
                  [phi] "m"(*(const int32_t(*)[LANES])mg->phiv)                               \
                : __VA_ARGS__);                                                               \
    } while (0)
#define FP_ROWS4_0(X) X(0) X(1) X(2) X(3)
#define FP_ROWS4_1(X) X(4) X(5) X(6) X(7)
#define FP_ROWS4_2(X) X(8) X(9) X(10) X(11)
#define FP_ROWS3_0(X) X(0) X(1) X(2)
#define FP_ROWS3_1(X) X(3) X(4) X(5)
#define FP_PSTEP512(ROWS)                                                                     \
    FP_ASM_PSTEP(ROWS,                                                                        \
                 "vmovdqu64 (%[b]), %%zmm30\n\tvmovdqu64 64(%[b]), %%zmm31\n\t"               \
                 "vmovdqu64 %[plo], %%zmm26\n\tvmovdqu64 %[phi], %%zmm27\n\t",                \
                 FP_ASM_PROW512, FP_ASM_OUTV, 16, "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", \
                 "xmm31")
#define FP_PSTEP256(ROWS)                                                                     \
    FP_ASM_PSTEP(ROWS,                                                                        \
                 "vmovdqu32 (%[b]), %%ymm30\n\tvmovdqu32 32(%[b]), %%ymm31\n\t"               \
                 "vmovdqu32 %[plo], %%ymm26\n\tvmovdqu32 %[phi], %%ymm27\n\t",                \
                 FP_ASM_PROW256, FP_ASM_OUTV, 8, "xmm26", "xmm27", "xmm28", "xmm29", "xmm30",  \
                 "xmm31")
#define FP_PSTEPAVX2(ROWS)                                                                    \
    FP_ASM_PSTEP(ROWS, "vmovdqu (%[b]), %%ymm13\n\tvmovdqu 32(%[b]), %%ymm14\n\t",            \
                 FP_ASM_PROWAVX2, FP_ASM_OUTX, 8, "xmm12", "xmm13", "xmm14", "xmm15")
#define FP_PSTEP512_12(ROWS)                                                                  \
    FP_PSTEP512(FP_ROWS4_0); FP_PSTEP512(FP_ROWS4_1); FP_PSTEP512(FP_ROWS4_2)
#define FP_PSTEP512_6(ROWS) FP_PSTEP512(FP_ROWS3_0); FP_PSTEP512(FP_ROWS3_1)
#define FP_PSTEP256_12(ROWS)                                                                  \
    FP_PSTEP256(FP_ROWS4_0); FP_PSTEP256(FP_ROWS4_1); FP_PSTEP256(FP_ROWS4_2)
#define FP_PSTEP256_6(ROWS) FP_PSTEP256(FP_ROWS3_0); FP_PSTEP256(FP_ROWS3_1)
#define FP_PSTEPAVX2_6(ROWS) FP_PSTEPAVX2(FP_ROWS3_0); FP_PSTEPAVX2(FP_ROWS3_1)
#define FP_T_MERGE(r)                                                                         \
    FPV_MERGE(c + r * ldc, counting ? cnt + r * ldn : NULL, s##r##_0, mg, sat, b32);          \
    FPV_MERGE(c + r * ldc + FPV_L, counting ? cnt + r * ldn + FPV_L : NULL, s##r##_1, mg, sat, \
              b32);
#define FP_T_ADD(r)                                                                           \
    FPV_STORE(c + r * ldc, FPV_ADD(FPV_LOAD(c + r * ldc), s##r##_0));                         \
    FPV_STORE(c + r * ldc + FPV_L, FPV_ADD(FPV_LOAD(c + r * ldc + FPV_L), s##r##_1));

/* Runs of blocks.  In merge mode, when no register of the tile can leave
 * its range within the next n >= 2 blocks (max |register| + n * maxblk <= hi,
 * maxblk bounding |block sum|), merging those blocks one at a time gives the
 * same bits as adding their total (nothing clamps, wraps or counts), so the
 * run is summed in one pass.  Otherwise blocks are merged one at a time, and
 * the check waits 3 blocks before it is tried again (so that registers pinned
 * at a limit cost at most one check per 4 blocks). */
#define FP_T_ABSMAX(r)                                                                        \
    gm = FPV_MAXU(gm, FPV_MAXU(FPV_ABS(FPV_LOAD(c + r * ldc)),                                \
                               FPV_ABS(FPV_LOAD(c + r * ldc + FPV_L))));
#define FP_R_ABSMAX(r) gm = FPV_MAXU(gm, FPV_MAXU(FPV_ABS(g##r##_0), FPV_ABS(g##r##_1)));
/* sets nb (blocks in this step) and single (merge them one by one) */
#define FP_RUN_PLAN(ROWS, ABSMAX)                                                             \
    int64_t nb = 1;                                                                           \
    int single = 1;                                                                           \
    if (mg->maxblk > 0 && wait == 0) {                                                        \
        FPV gm = FPV_ZERO();                                                                  \
        ROWS(ABSMAX)                                                                          \
        const int64_t room = hi - (int64_t)FPV_HMAXU(gm);                                     \
        const int64_t nsafe = room > 0 ? room / mg->maxblk : 0;                               \
        if (nsafe >= 2) {                                                                     \
            nb = nsafe;                                                                       \
            single = 0;                                                                       \
        } else {                                                                              \
            wait = FP_RUN_WAIT;                                                               \
        }                                                                                     \
    } else if (wait > 0) {                                                                    \
        wait--;                                                                               \
    }                                                                                         \
    const int64_t p1 = (np - p0 + blk2 - 1) / blk2 <= nb ? np : p0 + nb * blk2;

#define FP_SIMD_STEPS(ROWS)                                                                   \
    for (int64_t p = p0; p < p1; p++) {                                                       \
        if (pairclamp) {                                                                      \
            FPV_PSTEPALL(ROWS);                                                               \
        } else {                                                                              \
            FPV_STEPALL(ROWS);                                                                \
        }                                                                                     \
    }

#define FP_SIMD_TILE(P, ATTR, ROWS)                                                           \
    ATTR static FP_ALWAYS_INLINE void P##_impl(                                               \
        const int32_t *ap, const void *bpv, int64_t np, int64_t blk2, int32_t *c,             \
        int64_t ldc, int32_t *cnt, int64_t ldn, const fp_merge_t *mg, const int merge,        \
        const int pairclamp, const int sat, const int b32, const int counting) {              \
        const int32_t *bp = (const int32_t *)bpv;                                             \
        if (!merge) {                                                                         \
            const int64_t p0 = 0, p1 = np;                                                    \
            ROWS(FP_T_DECL)                                                                   \
            FP_SIMD_STEPS(ROWS)                                                               \
            ROWS(FP_T_ADD)                                                                    \
            return;                                                                           \
        }                                                                                     \
        const int64_t hi = b32 ? INT32_MAX : mg->hi;                                          \
        int wait = 0;                                                                         \
        for (int64_t p0 = 0; p0 < np;) {                                                      \
            FP_RUN_PLAN(ROWS, FP_T_ABSMAX)                                                    \
            ROWS(FP_T_DECL)                                                                   \
            FP_SIMD_STEPS(ROWS)                                                               \
            if (single) {                                                                     \
                ROWS(FP_T_MERGE)                                                              \
            } else {                                                                          \
                ROWS(FP_T_ADD)                                                                \
            }                                                                                 \
            p0 = p1;                                                                          \
        }                                                                                     \
    }

/* The merging tile with the registers themselves held in vector registers
 * (g<row>_<vector>) for the whole chunk: a block costs a few register
 * operations per accumulator and no memory traffic (counts stay in memory). */
#define FP_R_DECL(r)                                                                          \
    FPV g##r##_0 = FPV_LOAD(c + r * ldc), g##r##_1 = FPV_LOAD(c + r * ldc + FPV_L);           \
    FPV s##r##_0, s##r##_1;
#define FP_R_ZERO(r) s##r##_0 = FPV_ZERO(); s##r##_1 = FPV_ZERO();
#define FP_R_MERGE(r)                                                                         \
    g##r##_0 = FPV_MERGER(g##r##_0, s##r##_0, counting ? cnt + r * ldn : NULL, mg, sat, b32); \
    g##r##_1 = FPV_MERGER(g##r##_1, s##r##_1, counting ? cnt + r * ldn + FPV_L : NULL, mg,    \
                          sat, b32);
#define FP_R_ADD(r)                                                                           \
    g##r##_0 = FPV_ADD(g##r##_0, s##r##_0);                                                   \
    g##r##_1 = FPV_ADD(g##r##_1, s##r##_1);
#define FP_R_STORE(r)                                                                         \
    FPV_STORE(c + r * ldc, g##r##_0);                                                         \
    FPV_STORE(c + r * ldc + FPV_L, g##r##_1);

#define FP_SIMD_TILE_R(P, ATTR, ROWS)                                                         \
    ATTR static FP_ALWAYS_INLINE void P##_rimpl(                                              \
        const int32_t *ap, const void *bpv, int64_t np, int64_t blk2, int32_t *c,             \
        int64_t ldc, int32_t *cnt, int64_t ldn, const fp_merge_t *mg, const int merge,        \
        const int pairclamp, const int sat, const int b32, const int counting) {              \
        const int32_t *bp = (const int32_t *)bpv;                                             \
        const int64_t hi = b32 ? INT32_MAX : mg->hi;                                          \
        int wait = 0;                                                                         \
        (void)merge;                                                                          \
        ROWS(FP_R_DECL)                                                                       \
        for (int64_t p0 = 0; p0 < np;) {                                                      \
            FP_RUN_PLAN(ROWS, FP_R_ABSMAX)                                                    \
            ROWS(FP_R_ZERO)                                                                   \
            FP_SIMD_STEPS(ROWS)                                                               \
            if (single) {                                                                     \
                ROWS(FP_R_MERGE)                                                              \
            } else {                                                                          \
                ROWS(FP_R_ADD)                                                                \
            }                                                                                 \
            p0 = p1;                                                                          \
        }                                                                                     \
        ROWS(FP_R_STORE)                                                                      \
    }

/* The byte tile (sum mode): np words of 4 positions each, added into c. */
#define FP_SIMD_TILE_BYTES(P, ATTR, ROWS, STEP)                                               \
    ATTR static void P(const int32_t *ap, const void *bpv, int64_t np, int64_t blk2,         \
                       int32_t *c, int64_t ldc, int32_t *cnt, int64_t ldn,                   \
                       const fp_merge_t *mg) {                                               \
        const int32_t *bp = (const int32_t *)bpv;                                             \
        (void)blk2;                                                                           \
        (void)cnt;                                                                            \
        (void)ldn;                                                                            \
        (void)mg;                                                                             \
        ROWS(FP_T_DECL)                                                                       \
        for (int64_t p = 0; p < np; p++) {                                                    \
            STEP(ROWS);                                                                       \
        }                                                                                     \
        ROWS(FP_T_ADD)                                                                        \
    }

#if FP_HAVE_AVX2_KERNELS
/* Register update on 8 lanes; lanes that overflowed subtract 1 from *cnt
 * (comparison masks are all-ones = -1). */
FP_TARGET_AVX2 static FP_ALWAYS_INLINE void fp_merge_avx2(int32_t *c, int32_t *cnt, __m256i s,
                                                         const fp_merge_t *mg, const int sat,
                                                         const int b32) {
    const __m256i cv = _mm256_loadu_si256((const __m256i *)c);
    const __m256i t = _mm256_add_epi32(cv, s); /* modulo 2^32; exact when bits < 32 */
    __m256i r, m;
    if (b32) {
        /* overflow iff c and s have the same sign and t the other one */
        m = _mm256_srai_epi32(_mm256_and_si256(_mm256_xor_si256(t, cv), _mm256_xor_si256(t, s)), 31);
        if (sat) /* c < 0: 0x80000000, c >= 0: 0x7fffffff */
            r = _mm256_blendv_epi8(t, _mm256_xor_si256(_mm256_srai_epi32(cv, 31),
                                                       _mm256_set1_epi32(INT32_MAX)), m);
        else
            r = t;
    } else {
        if (sat) {
            r = _mm256_min_epi32(_mm256_max_epi32(t, _mm256_set1_epi32(mg->lo)),
                                 _mm256_set1_epi32(mg->hi));
        } else { /* two's complement wrap to `bits`: shift left, shift back arithmetically */
            const __m128i sh = _mm_cvtsi32_si128(mg->sh);
            r = _mm256_sra_epi32(_mm256_sll_epi32(t, sh), sh);
        }
        m = _mm256_xor_si256(_mm256_cmpeq_epi32(r, t), _mm256_set1_epi32(-1));
    }
    _mm256_storeu_si256((__m256i *)c, r);
    if (cnt)
        _mm256_storeu_si256((__m256i *)cnt,
                            _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)cnt), m));
}

/* The largest of 8 uint32 lanes. */
FP_TARGET_AVX2 static inline uint32_t fp_hmaxu_avx2(__m256i v) {
    __m128i x = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    x = _mm_max_epu32(x, _mm_shuffle_epi32(x, 0x4e));
    x = _mm_max_epu32(x, _mm_shuffle_epi32(x, 0xb1));
    return (uint32_t)_mm_cvtsi128_si32(x);
}

#define FPV __m256i
#define FPV_L 8
#define FPV_ZERO() _mm256_setzero_si256()
#define FPV_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define FPV_STORE(p, v) _mm256_storeu_si256((__m256i *)(p), (v))
#define FPV_ADD(x, y) _mm256_add_epi32((x), (y))
#define FPV_ABS(x) _mm256_abs_epi32(x)
#define FPV_MAXU(x, y) _mm256_max_epu32((x), (y))
#define FPV_HMAXU(x) fp_hmaxu_avx2(x)
#define FPV_STEPALL FP_STEPAVX2
#define FPV_PSTEPALL FP_PSTEPAVX2_6
#define FPV_MERGE fp_merge_avx2
#define FPK_MR 6
FP_SIMD_TILE(fp_tile_avx2, FP_TARGET_AVX2, FP_ROWS6)
FP_TILE_VARIANTS(fp_tile_avx2, FP_TARGET_AVX2, fp_tile_avx2_impl, fp_tile_avx2_impl)
#undef FPK_MR
#undef FPV_MERGE
#undef FPV_STEPALL
#undef FPV_PSTEPALL
#undef FPV_ADD
#undef FPV_ABS
#undef FPV_MAXU
#undef FPV_HMAXU
#undef FPV_STORE
#undef FPV_LOAD
#undef FPV_ZERO
#undef FPV_L
#undef FPV
#endif /* FP_HAVE_AVX2_KERNELS */

#if FP_HAVE_AVX512_KERNELS
/* 16 lanes; overflowed lanes add 1 to *cnt under a mask. */
FP_TARGET_AVX512 static FP_ALWAYS_INLINE void fp_merge_avx512(int32_t *c, int32_t *cnt,
                                                             __m512i s, const fp_merge_t *mg,
                                                             const int sat, const int b32) {
    const __m512i cv = _mm512_loadu_si512(c);
    const __m512i t = _mm512_add_epi32(cv, s);
    __m512i r;
    __mmask16 m;
    if (b32) {
        m = _mm512_cmplt_epi32_mask(_mm512_and_si512(_mm512_xor_si512(t, cv), _mm512_xor_si512(t, s)),
                                    _mm512_setzero_si512());
        r = sat ? _mm512_mask_mov_epi32(t, m, _mm512_xor_si512(_mm512_srai_epi32(cv, 31),
                                                                         _mm512_set1_epi32(INT32_MAX)))
                         : t;
    } else {
        if (sat) {
            r = _mm512_min_epi32(_mm512_max_epi32(t, _mm512_set1_epi32(mg->lo)),
                                 _mm512_set1_epi32(mg->hi));
        } else {
            const __m128i sh = _mm_cvtsi32_si128(mg->sh);
            r = _mm512_sra_epi32(_mm512_sll_epi32(t, sh), sh);
        }
        m = _mm512_cmpneq_epi32_mask(r, t);
    }
    _mm512_storeu_si512(c, r);
    if (cnt) {
        const __m512i n = _mm512_loadu_si512(cnt);
        _mm512_storeu_si512(cnt, _mm512_mask_add_epi32(n, m, n, _mm512_set1_epi32(1)));
    }
}

/* Register update held in a register: returns g + s clamped or wrapped; the
 * lanes that overflowed add 1 to cnt[] (when counted). */
#define FP_MERGER_BODY(W, MASK)                                                                \
    const __m##W##i t = _mm##W##_add_epi32(g, s);                                              \
    __m##W##i r;                                                                               \
    MASK m;                                                                                    \
    if (b32) {                                                                                 \
        m = _mm##W##_cmplt_epi32_mask(_mm##W##_and_si##W(_mm##W##_xor_si##W(t, g),             \
                                                          _mm##W##_xor_si##W(t, s)),           \
                                      _mm##W##_setzero_si##W());                               \
        r = sat ? _mm##W##_mask_xor_epi32(t, m, _mm##W##_srai_epi32(g, 31),                     \
                                          _mm##W##_set1_epi32(INT32_MAX))                      \
                : t;                                                                           \
    } else {                                                                                   \
        if (sat) {                                                                             \
            r = _mm##W##_min_epi32(_mm##W##_max_epi32(t, _mm##W##_set1_epi32(mg->lo)),          \
                                   _mm##W##_set1_epi32(mg->hi));                               \
        } else {                                                                               \
            const __m128i sh = _mm_cvtsi32_si128(mg->sh);                                      \
            r = _mm##W##_sra_epi32(_mm##W##_sll_epi32(t, sh), sh);                              \
        }                                                                                      \
        m = _mm##W##_cmpneq_epi32_mask(r, t);                                                  \
    }                                                                                          \
    if (cnt) {                                                                                 \
        const __m##W##i n = _mm##W##_loadu_si##W((const void *)cnt);                           \
        _mm##W##_storeu_si##W((void *)cnt, _mm##W##_mask_add_epi32(n, m, n, _mm##W##_set1_epi32(1))); \
    }                                                                                          \
    return r;

FP_TARGET_AVX512 static FP_ALWAYS_INLINE __m512i fp_merger_avx512(__m512i g, __m512i s,
                                                                  int32_t *cnt,
                                                                  const fp_merge_t *mg,
                                                                  const int sat, const int b32) {
    FP_MERGER_BODY(512, __mmask16)
}

FP_TARGET_AVX512 static FP_ALWAYS_INLINE __m256i fp_merger_avx512vl(__m256i g, __m256i s,
                                                                    int32_t *cnt,
                                                                    const fp_merge_t *mg,
                                                                    const int sat,
                                                                    const int b32) {
    FP_MERGER_BODY(256, __mmask8)
}
#undef FP_MERGER_BODY

/* 256-bit EVEX (AVX512VL + VNNI): the AVX2 register update inlines here. */
#define FPV __m256i
#define FPV_L 8
#define FPV_ZERO() _mm256_setzero_si256()
#define FPV_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define FPV_STORE(p, v) _mm256_storeu_si256((__m256i *)(p), (v))
#define FPV_ADD(x, y) _mm256_add_epi32((x), (y))
#define FPV_ABS(x) _mm256_abs_epi32(x)
#define FPV_MAXU(x, y) _mm256_max_epu32((x), (y))
#define FPV_HMAXU(x) fp_hmaxu_avx2(x)
#define FPV_STEPALL FP_STEP256_12
#define FPV_PSTEPALL FP_PSTEP256_12
#define FPV_MERGE fp_merge_avx2
#define FPV_MERGER fp_merger_avx512vl
#define FPK_MR 12
FP_SIMD_TILE(fp_tile_vnni256, FP_TARGET_AVX512, FP_ROWS12)
#undef FPK_MR
#undef FPV_STEPALL
#undef FPV_PSTEPALL
#define FPV_STEPALL FP_STEP256
#define FPV_PSTEPALL FP_PSTEP256_6
#define FPK_MR 6
FP_SIMD_TILE_R(fp_tile_vnni256, FP_TARGET_AVX512, FP_ROWS6)
#undef FPK_MR
FP_TILE_VARIANTS(fp_tile_vnni256, FP_TARGET_AVX512, fp_tile_vnni256_impl, fp_tile_vnni256_rimpl)
#define FPK_MR 12
FP_SIMD_TILE_BYTES(fp_tile_vnni256_bytes, FP_TARGET_AVX512, FP_ROWS12, FP_STEP256B_12)
#undef FPK_MR
#undef FPV_MERGER
#undef FPV_MERGE
#undef FPV_STEPALL
#undef FPV_PSTEPALL
#undef FPV_ADD
#undef FPV_ABS
#undef FPV_MAXU
#undef FPV_HMAXU
#undef FPV_STORE
#undef FPV_LOAD
#undef FPV_ZERO
#undef FPV_L
#undef FPV

#define FPV __m512i
#define FPV_L 16
#define FPV_ZERO() _mm512_setzero_si512()
#define FPV_LOAD(p) _mm512_loadu_si512((const void *)(p))
#define FPV_STORE(p, v) _mm512_storeu_si512((void *)(p), (v))
#define FPV_ADD(x, y) _mm512_add_epi32((x), (y))
#define FPV_ABS(x) _mm512_abs_epi32(x)
#define FPV_MAXU(x, y) _mm512_max_epu32((x), (y))
#define FPV_HMAXU(x) _mm512_reduce_max_epu32(x)
#define FPV_STEPALL FP_STEP512_12
#define FPV_PSTEPALL FP_PSTEP512_12
#define FPV_MERGE fp_merge_avx512
#define FPV_MERGER fp_merger_avx512
#define FPK_MR 12
FP_SIMD_TILE(fp_tile_vnni512, FP_TARGET_AVX512, FP_ROWS12)
#undef FPK_MR
#undef FPV_STEPALL
#undef FPV_PSTEPALL
#define FPV_STEPALL FP_STEP512
#define FPV_PSTEPALL FP_PSTEP512_6
#define FPK_MR 6
FP_SIMD_TILE_R(fp_tile_vnni512, FP_TARGET_AVX512, FP_ROWS6)
#undef FPK_MR
FP_TILE_VARIANTS(fp_tile_vnni512, FP_TARGET_AVX512, fp_tile_vnni512_impl, fp_tile_vnni512_rimpl)
#define FPK_MR 12
FP_SIMD_TILE_BYTES(fp_tile_vnni512_bytes, FP_TARGET_AVX512, FP_ROWS12, FP_STEP512B_12)
#undef FPK_MR
#undef FPV_MERGER
#undef FPV_MERGE
#undef FPV_STEPALL
#undef FPV_PSTEPALL
#undef FPV_ADD
#undef FPV_ABS
#undef FPV_MAXU
#undef FPV_HMAXU
#undef FPV_STORE
#undef FPV_LOAD
#undef FPV_ZERO
#undef FPV_L
#undef FPV
#endif /* FP_HAVE_AVX512_KERNELS */

/* The tile function of a path for a mode. */
static fp_tile_fn fp_gemm_tile(int path, int merge, int pairclamp, int sat, int b32,
                               int counting) {
    const int v = merge ? 1 + 4 * (counting != 0) + 2 * (sat != 0) + (b32 != 0) : 0;
    const int pc = pairclamp != 0;
    switch (path) {
#if FP_HAVE_AVX512_KERNELS
        case FP_GEMM_VNNI512: return fp_tile_vnni512_table[pc][v];
        case FP_GEMM_VNNI256: return fp_tile_vnni256_table[pc][v];
#endif
#if FP_HAVE_AVX2_KERNELS
        case FP_GEMM_AVX2: return fp_tile_avx2_table[pc][v];
#endif
        default: return fp_tile_portable_table[pc][v];
    }
}

/* ---- packing ---- */
/* [ hi : lo ] as an int32 whose low half is lo (values in int16 range). */
static inline int32_t fp_word(int32_t lo, int32_t hi) {
    return fp_u2s32(((uint32_t)lo & 0xffffu) | ((uint32_t)hi << 16));
}

/* Logical k of position q, or -1 for a padding position. */
static inline int64_t fp_pos_k(int64_t q, int64_t K, int64_t gblk, int64_t gstride) {
    const int64_t blk = q / gstride, off = q % gstride;
    const int64_t k = blk * gblk + off;
    return (off < gblk && k < K) ? k : -1;
}

/* Rows i0 .. i0 + MR of A (row-major M x K, `dtype`) into one panel (rows
 * past M hold zeros). */
FP_CLONES static void fp_pack_a(const void *a, int dtype, int64_t M, int64_t K, int64_t i0, int mr,
                      int64_t kp, int64_t gblk, int64_t gstride, int words, void *dst) {
    const int direct = gblk == gstride; /* pos(k) = k */
    const int h = M - i0 < mr ? (int)(M - i0) : mr;  /* rows that exist */
#define FP_PACK_A(T)                                                                       \
    {                                                                                      \
        const T *src = (const T *)a + i0 * K;                                              \
        if (words && direct && K % 2 == 0) {                                               \
            /* pairs in place: word (p, r) from a[r, 2p], a[r, 2p + 1] */                  \
            int32_t *d = (int32_t *)dst;                                                   \
            for (int64_t p = 0; p < kp; p++) {                                             \
                for (int r = 0; r < h; r++)                                                \
                    d[p * mr + r] = fp_word(src[r * K + 2 * p], src[r * K + 2 * p + 1]);   \
                for (int r = h; r < mr; r++) d[p * mr + r] = 0;                            \
            }                                                                              \
            break;                                                                         \
        }                                                                                  \
        for (int64_t p = 0; p < kp; p++) {                                                 \
            int64_t k0 = 2 * p, k1 = 2 * p + 1;                                            \
            if (!direct) {                                                                 \
                k0 = fp_pos_k(2 * p, K, gblk, gstride);                                    \
                k1 = fp_pos_k(2 * p + 1, K, gblk, gstride);                                \
            }                                                                              \
            for (int r = 0; r < mr; r++) {                                                 \
                int32_t x0 = 0, x1 = 0;                                                    \
                if (r < h) {                                                               \
                    if (k0 >= 0 && k0 < K) x0 = src[r * K + k0];                           \
                    if (k1 >= 0 && k1 < K) x1 = src[r * K + k1];                           \
                }                                                                          \
                if (words) {                                                               \
                    ((int32_t *)dst)[p * mr + r] = fp_word(x0, x1);                        \
                } else { /* row r of the panel, positions 2p and 2p + 1 */                 \
                    ((int16_t *)dst)[r * 2 * kp + 2 * p] = (int16_t)x0;                    \
                    ((int16_t *)dst)[r * 2 * kp + 2 * p + 1] = (int16_t)x1;                \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        break;                                                                             \
    }
    switch (dtype) {
        case FP_I8: FP_PACK_A(int8_t)
        case FP_U8: FP_PACK_A(uint8_t)
        case FP_I16: FP_PACK_A(int16_t)
        default: FP_PACK_A(uint16_t)
    }
#undef FP_PACK_A
}

/* Columns j0 .. j0 + NR of B (row-major K x N, `dtype`) into one panel. */
FP_CLONES static void fp_pack_b(const void *b, int dtype, int64_t K, int64_t N, int64_t j0, int nr,
                      int64_t kp, int64_t gblk, int64_t gstride, int words, void *dst) {
    const int64_t w = N - j0 < nr ? N - j0 : nr;
    const int direct = gblk == gstride; /* pos(k) = k */
    for (int64_t p = 0; p < kp; p++) {
        const int64_t k0 = direct ? (2 * p < K ? 2 * p : -1) : fp_pos_k(2 * p, K, gblk, gstride);
        const int64_t k1 =
            direct ? (2 * p + 1 < K ? 2 * p + 1 : -1) : fp_pos_k(2 * p + 1, K, gblk, gstride);
#define FP_PACK_B_ROWS(T)                                                                  \
    {                                                                                      \
        const T *r0 = k0 >= 0 ? (const T *)b + k0 * N + j0 : NULL;                         \
        const T *r1 = k1 >= 0 ? (const T *)b + k1 * N + j0 : NULL;                         \
        if (words) {                                                                       \
            int32_t *d = (int32_t *)dst + p * nr;                                          \
            for (int64_t j = 0; j < w; j++)                                                \
                d[j] = fp_word(r0 ? (int32_t)r0[j] : 0, r1 ? (int32_t)r1[j] : 0);          \
            for (int64_t j = w; j < nr; j++) d[j] = 0;                                     \
        } else { /* column j of the panel, positions 2p and 2p + 1 */                     \
            int16_t *d = (int16_t *)dst + 2 * p;                                           \
            for (int64_t j = 0; j < w; j++) {                                              \
                d[j * 2 * kp] = r0 ? (int16_t)r0[j] : 0;                                   \
                d[j * 2 * kp + 1] = r1 ? (int16_t)r1[j] : 0;                               \
            }                                                                              \
            for (int64_t j = w; j < nr; j++) d[j * 2 * kp] = d[j * 2 * kp + 1] = 0;        \
        }                                                                                  \
        break;                                                                             \
    }
        switch (dtype) {
            case FP_I8: FP_PACK_B_ROWS(int8_t)
            case FP_U8: FP_PACK_B_ROWS(uint8_t)
            case FP_I16: FP_PACK_B_ROWS(int16_t)
            default: FP_PACK_B_ROWS(uint16_t)
        }
#undef FP_PACK_B_ROWS
    }
}

/* ---- byte operands (VNNI vpdpbusd, sum mode) ----
 * When A holds int8 or uint8 values and B int8 values, four positions share
 * a word: A word (quad p, row r) = bytes a(r, 4p .. 4p + 3) + shift (shift =
 * 128 for int8, making them unsigned; 0 for uint8), B word (quad p, column j)
 * = bytes b(4p .. 4p + 3, j), 0 past K.  Then
 *     sum_k (a + shift) b = sum_k a b + shift * colsum_j(B)
 * modulo 2^32, and the registers start at c0 - shift * colsum_j(B), so the
 * tile's sums are the sums of the products themselves, modulo 2^32 (the
 * pair kernels' sum mode: the caller has proved them exact or asked for the
 * wrap).  Byte words halve the instructions per product against int16
 * pairs. */
static int fp_gemm_bytes_ok(int path, int merge, int pair_mode, int a_dtype, int b_dtype) {
    return (path == FP_GEMM_VNNI512 || path == FP_GEMM_VNNI256) && !merge && !pair_mode &&
           (a_dtype == FP_I8 || a_dtype == FP_U8) && b_dtype == FP_I8;
}

static fp_tile_fn fp_gemm_tile_bytes(int path) {
#if FP_HAVE_AVX512_KERNELS
    return path == FP_GEMM_VNNI512 ? fp_tile_vnni512_bytes : fp_tile_vnni256_bytes;
#else
    (void)path;
    return NULL;
#endif
}

/* Rows i0 .. i0 + MR of A into one panel of kq quads (rows past M hold 0;
 * B is 0 past K, so the bytes there are free). */
FP_CLONES static void fp_pack_a_bytes(const void *a, int dtype, int64_t M, int64_t K, int64_t i0,
                                      int mr, int64_t kq, uint32_t *dst) {
    const uint8_t *src = (const uint8_t *)a + i0 * K;
    const uint32_t flip = dtype == FP_I8 ? 0x80808080u : 0u; /* int8 bits -> int8 + 128 */
    const int h = M - i0 < mr ? (int)(M - i0) : mr;
    const int64_t kf = K / 4; /* whole quads */
    for (int64_t p = 0; p < kq; p++) {
        for (int r = 0; r < h; r++) {
            const uint8_t *q = src + r * K + 4 * p;
            uint32_t w = 0;
            if (p < kf) {
                w = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 |
                    (uint32_t)q[3] << 24;
            } else { /* the last, partial quad (B is 0 past K: any byte will do here) */
                for (int t = 0; 4 * p + t < K; t++) w |= (uint32_t)q[t] << (8 * t);
            }
            dst[p * mr + r] = w ^ flip;
        }
        for (int r = h; r < mr; r++) dst[p * mr + r] = 0;
    }
}

/* Columns j0 .. j0 + NR of B (int8, K x N) into one panel of kq quads, and
 * the sums of those columns (modulo 2^32) into colsum[0 .. NR). */
/* Quad p of one panel (w of its nr columns hold codes), its bytes added into colsum. */
static inline void fp_pack_b_quad(const int8_t *b, int64_t K, int64_t N, int64_t j0, int nr,
                                  int64_t w, int64_t p, uint32_t *dst, uint32_t *colsum) {
    uint32_t *d = dst + p * nr;
    for (int64_t j = 0; j < nr; j++) d[j] = 0;
    for (int t = 0; t < 4 && 4 * p + t < K; t++) {
        const int8_t *row = b + (4 * p + t) * N + j0;
        for (int64_t j = 0; j < w; j++) {
            d[j] |= (uint32_t)(uint8_t)row[j] << (8 * t);
            colsum[j] += (uint32_t)(int32_t)row[j];
        }
    }
}

FP_CLONES static void fp_pack_b_bytes(const int8_t *b, int64_t K, int64_t N, int64_t j0, int nr,
                                      int64_t kq, uint32_t *dst, uint32_t *colsum) {
    const int64_t w = N - j0 < nr ? N - j0 : nr;
    for (int64_t j = 0; j < nr; j++) colsum[j] = 0;
    for (int64_t p = 0; p < kq; p++) fp_pack_b_quad(b, K, N, j0, nr, w, p, dst, colsum);
}

#if FP_HAVE_AVX512_KERNELS
/* fp_pack_b_bytes for whole panels (nr of 16 or 32 columns): four rows of
 * 16 bytes become 16 words by two rounds of unpacking, and vpdpbusd with a
 * vector of ones adds each word's 4 signed bytes into its column sum. */
FP_TARGET_AVX512 static void fp_pack_b_bytes_vnni(const int8_t *b, int64_t K, int64_t N,
                                                  int64_t j0, int nr, int64_t kq, uint32_t *dst,
                                                  uint32_t *colsum) {
    if (N - j0 < nr || (nr != 16 && nr != 32)) {
        fp_pack_b_bytes(b, K, N, j0, nr, kq, dst, colsum);
        return;
    }
    const int64_t kf = K / 4;
    const __m128i ones = _mm_set1_epi8(1);
    __m128i cs[8];
    for (int i = 0; i < 8; i++) cs[i] = _mm_setzero_si128();
    for (int64_t p = 0; p < kf; p++) {
        const int8_t *r0 = b + 4 * p * N + j0;
        for (int g = 0; g < nr / 16; g++) {
            const __m128i x0 = _mm_loadu_si128((const __m128i *)(r0 + 16 * g));
            const __m128i x1 = _mm_loadu_si128((const __m128i *)(r0 + N + 16 * g));
            const __m128i x2 = _mm_loadu_si128((const __m128i *)(r0 + 2 * N + 16 * g));
            const __m128i x3 = _mm_loadu_si128((const __m128i *)(r0 + 3 * N + 16 * g));
            const __m128i lo01 = _mm_unpacklo_epi8(x0, x1), hi01 = _mm_unpackhi_epi8(x0, x1);
            const __m128i lo23 = _mm_unpacklo_epi8(x2, x3), hi23 = _mm_unpackhi_epi8(x2, x3);
            const __m128i w[4] = {_mm_unpacklo_epi16(lo01, lo23), _mm_unpackhi_epi16(lo01, lo23),
                                  _mm_unpacklo_epi16(hi01, hi23), _mm_unpackhi_epi16(hi01, hi23)};
            for (int v = 0; v < 4; v++) {
                _mm_storeu_si128((__m128i *)(dst + p * nr + 16 * g + 4 * v), w[v]);
                cs[4 * g + v] = _mm_dpbusd_epi32(cs[4 * g + v], ones, w[v]);
            }
        }
    }
    for (int i = 0; i < nr / 4; i++) _mm_storeu_si128((__m128i *)(colsum + 4 * i), cs[i]);
    if (kq > kf) fp_pack_b_quad(b, K, N, j0, nr, nr, kf, dst, colsum); /* the partial quad */
}
#endif

/* 64-byte aligned block of n bytes; *base receives the pointer to free. */
static void *fp_alloc64(size_t n, void **base) {
    char *p = (char *)malloc(n + 64);
    *base = p;
    if (!p) return NULL;
    return p + (64 - ((uintptr_t)p & 63));
}

/* out (M x N int32) = A (M x K) @ B (K x N) through a register of `bits`
 * (8..32) bits, on instruction path `path`.
 *   a, b: row-major contiguous, storage types a_dtype / b_dtype, values in
 *         int16 range; c0: initial register (M x N int32, rows ldc0 apart:
 *         0 gives every row the same initial row) or NULL;
 *   counts: M x N int64 or NULL (merge mode only);
 *   block: terms per exact block (products, or pairs in pair mode);
 *   pair_mode: terms are pair sums clamped to [plo, phi];
 *   maxblk: a bound on |block sum| (merge mode; 0 when none is known).
 * Returns 0, -1 when memory ran out (nothing is written then), -2 when the
 * path is not available on this build or CPU. */
static int fp_gemm_i16(const void *a, int a_dtype, const void *b, int b_dtype, const int32_t *c0,
                       int64_t ldc0, int32_t *out, int64_t *counts, int64_t M, int64_t K, int64_t N, int path,
                       int merge, int saturate, int bits, int pair_mode, int64_t block,
                       int32_t plo, int32_t phi, int64_t maxblk, int nthreads) {
    if (path < 0 || path >= FP_GEMM_NPATHS || !fp_gemm_path_available(path)) return -2;
    if (M <= 0 || N <= 0) return 0;
    const int mr = merge ? fp_gemm_mr_merge[path] : fp_gemm_mr_sum[path], nr = fp_gemm_nr[path];
    const int words = path != FP_GEMM_PORTABLE;
    int64_t gblk = K > 0 ? K : 1, gstride = gblk, blk2 = 1;
    if (merge) {
        if (pair_mode) {
            blk2 = block;
        } else if (block < K) {
            gblk = block;
            gstride = block + (block & 1);
            blk2 = gstride / 2;
        } else {
            blk2 = (K + 1) / 2 > 0 ? (K + 1) / 2 : 1;
        }
    }
    const int64_t q = (K / gblk) * gstride + K % gblk; /* positions */
    const int bytes = fp_gemm_bytes_ok(path, merge, pair_mode, a_dtype, b_dtype);
    const int64_t kp = bytes ? (K + 3) / 4 : (q + 1) / 2; /* words: quads or pairs */
    const int64_t nib = (M + mr - 1) / mr, npn = (N + nr - 1) / nr;
    const size_t apanel = (size_t)kp * (size_t)mr * 4u, bpanel = (size_t)kp * (size_t)nr * 4u;
    void *abase, *bbase;
    char *ap = (char *)fp_alloc64(apanel * (size_t)nib + 64, &abase);
    char *bp = (char *)fp_alloc64(bpanel * (size_t)npn + (size_t)npn * (size_t)nr * 4u + 64,
                                  &bbase);
    if (!ap || !bp) {
        free(abase);
        free(bbase);
        return -1;
    }
    /* byte operands: B's column sums after its panels, and the shift of A */
    uint32_t *colsum = (uint32_t *)(bp + bpanel * (size_t)npn);
    const uint32_t shift = a_dtype == FP_I8 ? 128u : 0u;
    fp_merge_t mg;
    mg.sh = 32 - (bits >= 32 ? 32 : bits);
    mg.lo = bits >= 32 ? INT32_MIN : -(int32_t)((uint32_t)1 << (bits - 1));
    mg.hi = bits >= 32 ? INT32_MAX : (int32_t)(((uint32_t)1 << (bits - 1)) - 1u);
    mg.plo = plo;
    mg.phi = phi;
    mg.ld = 2 * kp;
    mg.maxblk = maxblk;
    for (int l = 0; l < 16; l++) {
        mg.plov[l] = plo;
        mg.phiv[l] = phi;
    }
    int64_t *cnt = merge ? counts : NULL;
    const fp_tile_fn tile = bytes ? fp_gemm_tile_bytes(path)
                                  : fp_gemm_tile(path, merge, pair_mode, saturate, bits >= 32,
                                                 cnt != NULL);
    /* Chunks of K (a whole number of blocks) keep the B chunk in L1 while
     * one group of A panels runs past it (8 KiB chunks for the byte kernel,
     * whose words carry twice the products: 9% faster than 16 KiB on Zen 4,
     * 256 x 1024 x 1024, 1 and 2 threads). */
    const int64_t target = (bytes ? 8192 : 16384) / (4 * nr);
    int64_t kc = merge ? (target / blk2 > 0 ? target / blk2 : 1) * blk2 : target;
    if (kc > kp) kc = kp > 0 ? kp : 1;
    const int64_t group = 144 / mr > 0 ? 144 / mr : 1; /* A panels per task */
    const int64_t ngroups = (nib + group - 1) / group, ntasks = ngroups * npn;
    int nt = nthreads < 1 ? 1 : nthreads;
#ifndef _OPENMP
    nt = 1;
#endif
    /* Each task keeps the registers (and counts) of its tiles in a contiguous
     * buffer of group * MR * NR int32 while it runs over K: rows of `out` are
     * N apart, and a tile's rows 4 KiB apart would share L1 sets. */
    const size_t tbuf = (size_t)group * (size_t)mr * (size_t)nr;
    void *cbase;
    int32_t *cbufs = (int32_t *)fp_alloc64((size_t)nt * 2u * tbuf * sizeof(int32_t), &cbase);
    if (!cbufs) {
        free(abase);
        free(bbase);
        free(cbase);
        return -1;
    }
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        int32_t *creg = cbufs + (size_t)omp_get_thread_num() * 2u * tbuf;
#else
        int32_t *creg = cbufs;
#endif
        int32_t *ccnt = creg + tbuf;
#pragma omp for schedule(static)
        for (int64_t ib = 0; ib < nib; ib++) {
            if (bytes)
                fp_pack_a_bytes(a, a_dtype, M, K, ib * mr, mr, kp, (uint32_t *)(ap + ib * apanel));
            else
                fp_pack_a(a, a_dtype, M, K, ib * mr, mr, kp, gblk, gstride, words,
                          ap + ib * apanel);
        }
#pragma omp for schedule(static)
        for (int64_t pn = 0; pn < npn; pn++) {
            if (bytes)
#if FP_HAVE_AVX512_KERNELS
                fp_pack_b_bytes_vnni((const int8_t *)b, K, N, pn * nr, nr, kp,
                                     (uint32_t *)(bp + pn * bpanel), colsum + pn * nr);
#else
                fp_pack_b_bytes((const int8_t *)b, K, N, pn * nr, nr, kp,
                                (uint32_t *)(bp + pn * bpanel), colsum + pn * nr);
#endif
            else
                fp_pack_b(b, b_dtype, K, N, pn * nr, nr, kp, gblk, gstride, words,
                          bp + pn * bpanel);
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < ntasks; t++) {
            const int64_t ig = t / npn, pn = t % npn;
            const int64_t ib0 = ig * group, ib1 = ib0 + group < nib ? ib0 + group : nib;
            const int64_t j0 = pn * nr, w = N - j0 < nr ? N - j0 : nr;
            /* registers start at c0 (or 0), padding lanes at 0 */
            memset(creg, 0, (size_t)(ib1 - ib0) * (size_t)mr * (size_t)nr * sizeof(int32_t));
            if (cnt) memset(ccnt, 0, (size_t)(ib1 - ib0) * (size_t)mr * (size_t)nr * sizeof(int32_t));
            if (c0)
                for (int64_t i = ib0 * mr; i < ib1 * mr && i < M; i++)
                    memcpy(creg + (i - ib0 * mr) * nr, c0 + i * ldc0 + j0, (size_t)w * sizeof(int32_t));
            if (bytes && shift) /* less shift * colsum, modulo 2^32 */
                for (int64_t i = 0; i < (ib1 - ib0) * mr; i++)
                    for (int64_t j = 0; j < nr; j++)
                        creg[i * nr + j] =
                            fp_u2s32((uint32_t)creg[i * nr + j] - shift * colsum[pn * nr + j]);
            for (int64_t p0 = 0; p0 < kp; p0 += kc) {
                const int64_t np = kp - p0 < kc ? kp - p0 : kc;
                /* pair p0 of the panels: p0 * (MR or NR) words, or position 2 p0 of
                 * every portable row */
                const char *bpp = bp + pn * bpanel + (size_t)p0 * (words ? (size_t)nr * 4u : 4u);
                for (int64_t ib = ib0; ib < ib1; ib++) {
                    const int32_t *app =
                        (const int32_t *)(ap + ib * apanel +
                                          (size_t)p0 * (words ? (size_t)mr * 4u : 4u));
                    const size_t off = (size_t)(ib - ib0) * (size_t)mr * (size_t)nr;
                    tile(app, bpp, np, blk2, creg + off, nr, cnt ? ccnt + off : NULL, nr, &mg);
                }
            }
            for (int64_t i = ib0 * mr; i < ib1 * mr && i < M; i++) {
                const int32_t *src = creg + (i - ib0 * mr) * nr;
                int32_t *dst = out + i * N + j0;
                if (!merge && bits < 32) /* the sum modulo 2^32, wrapped to `bits` */
                    for (int64_t j = 0; j < w; j++) dst[j] = (int32_t)fp_wrap64(src[j], mg.lo, bits);
                else
                    memcpy(dst, src, (size_t)w * sizeof(int32_t));
                if (cnt)
                    for (int64_t j = 0; j < w; j++) cnt[i * N + j0 + j] = ccnt[(i - ib0 * mr) * nr + j];
            }
        }
    }
    free(cbase);
    free(abase);
    free(bbase);
    return 0;
}

#endif
