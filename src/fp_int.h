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
 * block of products.  Returns the new accumulator; *ovf is set to 1 when the
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

/* Generic matrix multiply, rows [i0, i1) of out = A @ B (+ C).
 *   a: M x K int32 (row-major), b: K x N int32, c0: M x N int64 or NULL,
 *   out: M x N int64, counts: M x N int64 or NULL, blocksum: N int64 scratch.
 * Products are exact in int64; `block` products are summed exactly, then
 * added into the accumulator with wrap or saturation. */
static void fp_matmul_generic_rows(const int32_t *a, const int32_t *b, const int64_t *c0,
                                   int64_t *out, int64_t *counts, int64_t *blocksum,
                                   int64_t i0, int64_t i1, int64_t K, int64_t N, int64_t block,
                                   int bits, int saturate) {
    const int64_t lo = bits >= 64 ? INT64_MIN : -((int64_t)1 << (bits - 1));
    const int64_t hi = bits >= 64 ? INT64_MAX : ((int64_t)1 << (bits - 1)) - 1;
    for (int64_t i = i0; i < i1; i++) {
        int64_t *o = out + i * N;
        int64_t *cnt = counts ? counts + i * N : NULL;
        for (int64_t j = 0; j < N; j++) {
            o[j] = c0 ? c0[i * N + j] : 0;
            if (cnt) cnt[j] = 0;
        }
        for (int64_t k0 = 0; k0 < K; k0 += block) {
            int64_t k1 = k0 + block < K ? k0 + block : K;
            for (int64_t j = 0; j < N; j++) blocksum[j] = 0;
            for (int64_t k = k0; k < k1; k++) {
                const int64_t aik = a[i * K + k];
                const int32_t *bk = b + k * N;
                if (aik == 0) continue;
                for (int64_t j = 0; j < N; j++) blocksum[j] += aik * (int64_t)bk[j];
            }
            for (int64_t j = 0; j < N; j++) {
                int ovf;
                o[j] = fp_acc_add(o[j], blocksum[j], lo, hi, bits, saturate, &ovf);
                if (cnt) cnt[j] += ovf;
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* Fast path: 8-bit operands, 32-bit accumulator, AVX2.
 *
 * Packing.  K is padded to an even Kp (zero products change no sum).
 *   A (MR rows at a time): one int32 per row and k-pair, holding two int16
 *       [ a[i,2p+1] : a[i,2p] ]   (high half : low half)
 *   B (panels of NR = 16 columns): per k-pair, 16 int16 pairs
 *       [ b[2p,j] b[2p+1,j] ]  for j = 0..15   (64 bytes)
 * vpmaddwd(broadcast(A pair), B pairs) gives, in each int32 lane j,
 *   a[i,2p] * b[2p,j] + a[i,2p+1] * b[2p+1,j]
 * exactly (8-bit operands: |pair sum| <= 2 * 255 * 255).  Block sums stay
 * exact while block * 255 * 255 < 2^31 (the wrapper checks), and are added
 * into the running accumulator at each block end, in K order.
 */
#define FP_MR 6
#define FP_NR 16

#if FP_HAVE_AVX2_KERNELS
/* int32 saturating add, lane by lane; the lanes that overflowed subtract 1
 * from *cnt (mask lanes are all-ones = -1). */
FP_TARGET_AVX2 static inline __m256i fp_adds_epi32(__m256i a, __m256i b, __m256i *cnt,
                                                   int saturate) {
    __m256i s = _mm256_add_epi32(a, b); /* wraps modulo 2^32 */
    /* overflow iff a and b have the same sign and s has the other one */
    __m256i m = _mm256_srai_epi32(_mm256_and_si256(_mm256_xor_si256(s, a), _mm256_xor_si256(s, b)), 31);
    *cnt = _mm256_sub_epi32(*cnt, m);
    if (!saturate) return s;
    /* a < 0: 0x80000000, a >= 0: 0x7fffffff */
    __m256i limit = _mm256_xor_si256(_mm256_srai_epi32(a, 31), _mm256_set1_epi32(0x7fffffff));
    return _mm256_blendv_epi8(s, limit, m);
}

/* One MR x NR tile.  ap: MR rows of packed A (row stride lda2 int32),
 * bp: packed panel, kp2: number of k-pairs, blk2: pairs per block (kp2 for a
 * single block), acc/cnt: the tile's running accumulator and overflow counts
 * (cnt NULL: not counted). */
FP_TARGET_AVX2 static void fp_i8_tile_avx2(const int32_t *ap, int64_t lda2, const int16_t *bp,
                                           int64_t kp2, int64_t blk2, int saturate,
                                           int32_t acc[FP_MR][FP_NR], int32_t cnt[FP_MR][FP_NR]) {
    for (int64_t p0 = 0; p0 < kp2; p0 += blk2) {
        const int64_t p1 = p0 + blk2 < kp2 ? p0 + blk2 : kp2;
        __m256i s[FP_MR][2];
        for (int r = 0; r < FP_MR; r++) s[r][0] = s[r][1] = _mm256_setzero_si256();
        for (int64_t p = p0; p < p1; p++) {
            const __m256i b0 = _mm256_loadu_si256((const __m256i *)(bp + p * 32));
            const __m256i b1 = _mm256_loadu_si256((const __m256i *)(bp + p * 32 + 16));
            for (int r = 0; r < FP_MR; r++) {
                const __m256i av = _mm256_set1_epi32(ap[r * lda2 + p]);
                s[r][0] = _mm256_add_epi32(s[r][0], _mm256_madd_epi16(av, b0));
                s[r][1] = _mm256_add_epi32(s[r][1], _mm256_madd_epi16(av, b1));
            }
        }
        if (cnt) {
            for (int r = 0; r < FP_MR; r++) {
                for (int h = 0; h < 2; h++) {
                    __m256i c = _mm256_loadu_si256((const __m256i *)&acc[r][8 * h]);
                    __m256i n = _mm256_loadu_si256((const __m256i *)&cnt[r][8 * h]);
                    c = fp_adds_epi32(c, s[r][h], &n, saturate);
                    _mm256_storeu_si256((__m256i *)&acc[r][8 * h], c);
                    _mm256_storeu_si256((__m256i *)&cnt[r][8 * h], n);
                }
            }
        } else {
            for (int r = 0; r < FP_MR; r++) {
                for (int h = 0; h < 2; h++) {
                    __m256i c = _mm256_loadu_si256((const __m256i *)&acc[r][8 * h]);
                    __m256i unused = _mm256_setzero_si256();
                    c = fp_adds_epi32(c, s[r][h], &unused, saturate);
                    _mm256_storeu_si256((__m256i *)&acc[r][8 * h], c);
                }
            }
        }
    }
}
#endif

/* Operand element k of an int8 or uint8 row, widened. */
static inline int32_t fp_load8(const void *p, int is_unsigned, int64_t k) {
    return is_unsigned ? (int32_t)((const uint8_t *)p)[k] : (int32_t)((const int8_t *)p)[k];
}

/* One row of A as int16 pairs: dst[p] = [ a[2p+1] : a[2p] ]. */
FP_CLONES static void fp_pack_a_row(const void *a, int is_unsigned, int64_t off, int64_t K,
                                    int32_t *dst) {
    const int64_t half = K / 2;
    if (is_unsigned) {
        const uint8_t *r = (const uint8_t *)a + off;
        for (int64_t p = 0; p < half; p++)
            dst[p] = fp_u2s32((uint32_t)r[2 * p] | ((uint32_t)r[2 * p + 1] << 16));
    } else {
        const int8_t *r = (const int8_t *)a + off;
        for (int64_t p = 0; p < half; p++)
            dst[p] = fp_u2s32(((uint32_t)(int32_t)r[2 * p] & 0xffffu) |
                              ((uint32_t)(int32_t)r[2 * p + 1] << 16));
    }
    if (K & 1) dst[half] = (int32_t)(uint16_t)(int16_t)fp_load8(a, is_unsigned, off + K - 1);
}

/* One panel of FP_NR columns of B, starting at column j0, as int16 pairs
 * (columns past N stay zero: the buffer is zeroed). */
FP_CLONES static void fp_pack_b_panel(const void *b, int is_unsigned, int64_t K, int64_t N,
                                      int64_t j0, int16_t *dst) {
    const int64_t w = N - j0 < FP_NR ? N - j0 : FP_NR;
    for (int64_t k = 0; k < K; k++) {
        int16_t *d = dst + (k / 2) * 32 + (k & 1);
        if (is_unsigned) {
            const uint8_t *r = (const uint8_t *)b + k * N + j0;
            for (int64_t jj = 0; jj < w; jj++) d[2 * jj] = (int16_t)r[jj];
        } else {
            const int8_t *r = (const int8_t *)b + k * N + j0;
            for (int64_t jj = 0; jj < w; jj++) d[2 * jj] = (int16_t)r[jj];
        }
    }
}

/* out (M x N int32) = A (M x K) @ B (K x N) accumulated in 32 bits.
 * a, b: int8 (is_unsigned = 0) or uint8 (1), row-major contiguous.
 * c0: initial accumulator (M x N int32) or NULL; counts: M x N int32 or NULL.
 * block: products per exact block (ignored for wrap without counts).
 * Returns 0, -1 when memory ran out, -2 when the CPU lacks AVX2. */
static int fp_matmul_u8i8_acc32(const void *a, const void *b, int is_unsigned, const int32_t *c0,
                                int32_t *out, int32_t *counts, int64_t M, int64_t K, int64_t N,
                                int64_t block, int saturate, int nthreads) {
#if FP_HAVE_AVX2_KERNELS
    if (!fp_cpu_has_avx2()) return -2;
    const int64_t kp2 = (K + 1) / 2;
    const int64_t mp = (M + FP_MR - 1) / FP_MR * FP_MR;
    const int64_t npan = (N + FP_NR - 1) / FP_NR;
    const int64_t nib = mp / FP_MR;
    int64_t blk2 = (saturate || counts) ? block / 2 : kp2;
    if (blk2 < 1) blk2 = 1;
    int32_t *ap = (int32_t *)calloc((size_t)(mp * kp2 > 0 ? mp * kp2 : 1), sizeof(int32_t));
    int16_t *bp = (int16_t *)calloc((size_t)(npan * kp2 * 32 > 0 ? npan * kp2 * 32 : 1), sizeof(int16_t));
    if (!ap || !bp) {
        free(ap);
        free(bp);
        return -1;
    }
#pragma omp parallel num_threads(nthreads)
    {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < M; i++)
            fp_pack_a_row(a, is_unsigned, i * K, K, ap + i * kp2);
#pragma omp for schedule(static)
        for (int64_t pn = 0; pn < npan; pn++)
            fp_pack_b_panel(b, is_unsigned, K, N, pn * FP_NR, bp + pn * kp2 * 32);
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < npan * nib; t++) {
            const int64_t pn = t / nib, ib = t % nib;
            int32_t acc[FP_MR][FP_NR], cnt[FP_MR][FP_NR];
            memset(cnt, 0, sizeof cnt);
            int32_t (*cntp)[FP_NR] = counts ? cnt : NULL;
            for (int r = 0; r < FP_MR; r++)
                for (int jj = 0; jj < FP_NR; jj++) {
                    int64_t i = ib * FP_MR + r, j = pn * FP_NR + jj;
                    acc[r][jj] = (c0 && i < M && j < N) ? c0[i * N + j] : 0;
                }
            fp_i8_tile_avx2(ap + ib * FP_MR * kp2, kp2, bp + pn * kp2 * 32, kp2, blk2, saturate,
                            acc, cntp);
            for (int r = 0; r < FP_MR; r++)
                for (int jj = 0; jj < FP_NR; jj++) {
                    int64_t i = ib * FP_MR + r, j = pn * FP_NR + jj;
                    if (i < M && j < N) {
                        out[i * N + j] = acc[r][jj];
                        if (counts) counts[i * N + j] = cnt[r][jj];
                    }
                }
        }
    }
    free(ap);
    free(bp);
    return 0;
#else
    (void)a; (void)b; (void)is_unsigned; (void)c0; (void)out; (void)counts; (void)M; (void)K;
    (void)N; (void)block; (void)saturate; (void)nthreads;
    return -2;
#endif
}

#endif
