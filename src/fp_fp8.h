/* Minifloat (FP8, FP6, FP4) encoding from float32/float64 and LUT decoding.
 *
 * One generic encoder serves every FloatFormat: the format is a small struct
 * of loop-invariant numbers, so the loops stay branch-free and vectorise.
 *
 *   float32:   s eeeeeeee mmmmmmmmmmmmmmmmmmmmmmm
 *   minifloat: s EEEE MMM             (e.g. E4M3: exp_bits 4, man_bits 3)
 *
 * Normal results: round the float's bits to man_bits mantissa bits (an
 * integer add then shift, so a mantissa carry bumps the exponent as it
 * should) and rebias the exponent.  Subnormal results: shift the full
 * significand right by the distance to the minifloat's smallest quantum,
 * rounding the same way.  Rounding happens first; the range check (overflow)
 * comes after, as OCP OFP8 specifies.
 */
#ifndef FP_FP8_H
#define FP_FP8_H

#include "fp_common.h"

enum { FP_RN_EVEN = 0, FP_RN_ZERO = 1, FP_RN_STOCHASTIC = 2 };

typedef struct {
    int32_t man_bits;      /* m */
    int32_t emin;          /* unbiased exponent of the smallest normal: 1 - bias */
    int32_t bias;
    uint32_t sign_bit;     /* 1 << (exp_bits + man_bits) */
    uint32_t max_mag;      /* magnitude code of the largest finite value */
    uint32_t ovf_code[2];  /* code for overflow (+, -): Inf, NaN or +-max */
    uint32_t nan_code[2];  /* code for a NaN input (+, -) */
    uint32_t zero_code[2]; /* code for a result that rounds to zero (+, -) */
    int32_t rtz_saturates; /* toward zero: finite overflow gives +-max (IEEE) */
    float sub_scale1;      /* 2^(m - emin) = sub_scale1 * sub_scale2, both exact powers of 2 */
    float sub_scale2;
    int32_t stream_out;    /* large conversion: write the codes around the cache */
} fp_minifloat;

/* Branch-free select: c ? x : y for c in {0, 1}. */
static inline uint32_t fp_sel32(uint32_t c, uint32_t x, uint32_t y) {
    const uint32_t m = 0u - c;
    return (x & m) | (y & ~m);
}

static inline uint64_t fp_sel64(uint64_t c, uint64_t x, uint64_t y) {
    const uint64_t m = (uint64_t)0 - c;
    return (x & m) | (y & ~m);
}

/* Final code from the sign s, the rounded magnitude code mag (possibly past
 * the range) and the NaN/Inf flags of the input. */
static inline uint32_t fp_finish(uint32_t s, uint32_t mag, uint32_t too_big, uint32_t is_nan,
                                 uint32_t is_inf, const fp_minifloat *f, int mode) {
    const uint32_t sign = fp_sel32(s, f->sign_bit, 0u);
    uint32_t code = fp_sel32(mag == 0, fp_sel32(s, f->zero_code[1], f->zero_code[0]), sign | mag);
    uint32_t ovf_code = fp_sel32(s, f->ovf_code[1], f->ovf_code[0]);
    if (mode == FP_RN_ZERO)  /* IEEE: truncation never reaches Inf from a finite value */
        ovf_code = fp_sel32((uint32_t)f->rtz_saturates & (is_inf ^ 1u), sign | f->max_mag, ovf_code);
    code = fp_sel32(too_big, ovf_code, code);
    return fp_sel32(is_nan, fp_sel32(s, f->nan_code[1], f->nan_code[0]), code);
}

/* ---- float32 ------------------------------------------------------------ */
static inline uint32_t fp_enc_f32(uint32_t bits, const fp_minifloat *f, int mode,
                                  uint64_t seed, uint64_t index) {
    const uint32_t s = bits >> 31;
    const uint32_t a = bits & 0x7fffffffu;
    const int32_t m = f->man_bits;
    const uint32_t fexp = a >> 23;

    /* normal result: keep m of the 23 mantissa bits (shift = 23 - m) */
    const uint32_t shift = (uint32_t)(23 - m);
    uint32_t inc, rnd = 0;
    if (mode == FP_RN_STOCHASTIC) rnd = fp_rand32(seed, index);
    if (mode == FP_RN_EVEN)
        inc = ((1u << (shift - 1)) - 1u) + ((a >> shift) & 1u);
    else if (mode == FP_RN_ZERO)
        inc = 0;
    else
        inc = rnd >> (32 - shift);
    const uint32_t rebias = (uint32_t)(127 - f->bias) << m;
    const uint32_t mag_n = ((a + inc) >> shift) - rebias;

    /* subnormal result: significand * 2^(e_eff - 150) in quanta of
     * 2^(emin - m), i.e. a right shift by sh = 150 + emin - m - e_eff >= 1.
     * Both sides are computed for every element, so sh is clamped into the
     * width of the shift for the elements that take the normal path. */
    const uint32_t has_exp = fexp != 0;
    const uint32_t e_eff = fexp | (has_exp ^ 1u);
    const uint32_t mant = (a & 0x7fffffu) | (has_exp << 23);
    int32_t sh = 150 + f->emin - m - (int32_t)e_eff;
    sh = sh < 1 ? 1 : sh;
    uint32_t mag_s;
    if (mode == FP_RN_STOCHASTIC) {
        /* 64-bit so that tiny values keep their (tiny) chance to round up */
        const uint64_t sh64 = (uint64_t)(sh > 63 ? 63 : sh);
        const uint64_t r64 = ((uint64_t)fp_rand32(seed ^ 0x5bd1e9955bd1e995ull, index) << 32) | rnd;
        mag_s = (uint32_t)(((uint64_t)mant + (r64 >> (64 - sh64))) >> sh64);
    } else {
        const uint32_t sh32 = (uint32_t)(sh > 31 ? 31 : sh);
        uint32_t inc_s = 0;
        if (mode == FP_RN_EVEN) inc_s = ((1u << (sh32 - 1)) - 1u) + ((mant >> sh32) & 1u);
        mag_s = (mant + inc_s) >> sh32;
    }
    const uint32_t is_normal = (int32_t)fexp >= f->emin + 127;
    const uint32_t mag = fp_sel32(is_normal, mag_n, mag_s);
    return fp_finish(s, mag, mag > f->max_mag, a > 0x7f800000u, a == 0x7f800000u, f, mode);
}

#if FP_HAVE_AVX2_KERNELS
#include <immintrin.h>
/* float32 -> minifloat, round to nearest even or toward zero, 8 lanes at a
 * time; the same arithmetic as fp_enc_f32 except for the subnormal side:
 * there |x| / 2^(emin - m) is exact in float32 (a power-of-two scaling of a
 * value below 2^emin) and is rounded to an integer by adding and removing 2^23 (IEEE round to nearest
 * even; lanes at or above 2^23 are on the normal path and unused) or by the
 * truncating conversion. */
typedef struct {
    __m128i vshift;
    __m256i absmask, half_m1, lsbmask, rebias, thr, maxmag, infbits, sgn, zero;
    __m256i z0, z1, o0, o1, q0, q1, ovf_mag, nan_mag;
    __m256 scale1, scale2, magic;
} fp_enc_consts;

/* One vector of 8 codes.  The flags are compile-time constants at each call:
 *   rne     round to nearest even (else toward zero)
 *   simple  -0 exists, overflow gives sign | X, NaN gives sign | Y or Y
 *   rtzsat  toward zero saturates finite overflow (IEEE)
 *   nds     NaN drops the sign (satfinite)
 *   two     the subnormal scale needs two multiplies */
FP_TARGET_AVX2 static inline __attribute__((always_inline)) __m256i
fp_enc8(const uint32_t *p, const fp_enc_consts *k, const int rne, const int simple,
        const int rtzsat, const int nds, const int two) {
    const __m256i b = _mm256_loadu_si256((const __m256i *)p);
    const __m256i a = _mm256_and_si256(b, k->absmask);
    const __m256i neg = _mm256_srai_epi32(b, 31);
    __m256i r;
    if (rne) {
        const __m256i lsb = _mm256_and_si256(_mm256_srl_epi32(a, k->vshift), k->lsbmask);
        r = _mm256_srl_epi32(_mm256_add_epi32(a, _mm256_add_epi32(k->half_m1, lsb)), k->vshift);
    } else {
        r = _mm256_srl_epi32(a, k->vshift);
    }
    const __m256i mag_n = _mm256_sub_epi32(r, k->rebias);
    __m256 y = _mm256_mul_ps(_mm256_castsi256_ps(a), k->scale1);
    if (two) y = _mm256_mul_ps(y, k->scale2);
    /* lanes on the normal path may hold huge values, Inf or NaN here: their
     * conversion gives 0x80000000 (defined for the instruction) and the
     * blend below discards it */
    if (rne) y = _mm256_sub_ps(_mm256_add_ps(y, k->magic), k->magic);
    const __m256i mag_s = _mm256_cvttps_epi32(y);
    const __m256i mag = _mm256_blendv_epi8(mag_s, mag_n, _mm256_cmpgt_epi32(a, k->thr));
    const __m256i too_big = _mm256_cmpgt_epi32(mag, k->maxmag);
    const __m256i is_nan = _mm256_cmpgt_epi32(a, k->infbits);
    const __m256i sign = _mm256_and_si256(neg, k->sgn);
    if (simple) {
        __m256i m2 = _mm256_blendv_epi8(mag, k->ovf_mag, too_big);
        if (rtzsat)
            m2 = _mm256_blendv_epi8(m2, k->maxmag,
                                    _mm256_andnot_si256(_mm256_cmpeq_epi32(a, k->infbits), too_big));
        m2 = _mm256_blendv_epi8(m2, k->nan_mag, is_nan);
        return _mm256_or_si256(nds ? _mm256_andnot_si256(is_nan, sign) : sign, m2);
    }
    __m256i code = _mm256_or_si256(sign, mag);
    code = _mm256_blendv_epi8(code, _mm256_blendv_epi8(k->z0, k->z1, neg),
                              _mm256_cmpeq_epi32(mag, k->zero));
    __m256i ovfc = _mm256_blendv_epi8(k->o0, k->o1, neg);
    if (rtzsat)
        ovfc = _mm256_blendv_epi8(_mm256_or_si256(sign, k->maxmag), ovfc,
                                  _mm256_cmpeq_epi32(a, k->infbits));
    code = _mm256_blendv_epi8(code, ovfc, too_big);
    return _mm256_blendv_epi8(code, _mm256_blendv_epi8(k->q0, k->q1, neg), is_nan);
}

#define FP_ENC32_LOOP(RNE, SIMPLE, RTZSAT, NDS, TWO)                                         \
    for (int64_t i = 0; i < n; i += 32) {                                                   \
        const __m256i c0 = fp_enc8(x + i, &k, RNE, SIMPLE, RTZSAT, NDS, TWO);               \
        const __m256i c1 = fp_enc8(x + i + 8, &k, RNE, SIMPLE, RTZSAT, NDS, TWO);           \
        const __m256i c2 = fp_enc8(x + i + 16, &k, RNE, SIMPLE, RTZSAT, NDS, TWO);          \
        const __m256i c3 = fp_enc8(x + i + 24, &k, RNE, SIMPLE, RTZSAT, NDS, TWO);          \
        /* 4 x 8 int32 codes (each < 256) -> 32 bytes in order */                           \
        const __m256i p01 = _mm256_packus_epi32(c0, c1);                                    \
        const __m256i p23 = _mm256_packus_epi32(c2, c3);                                    \
        const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(p01, p23), perm); \
        if (stream)                                                                         \
            _mm256_stream_si256((__m256i *)(out + i), bytes);                               \
        else                                                                                \
            _mm256_storeu_si256((__m256i *)(out + i), bytes);                               \
    }

/* n must be a multiple of 32. */
FP_TARGET_AVX2 static void fp_enc_f32_avx2(const uint32_t *x, uint8_t *out, int64_t n,
                                           const fp_minifloat *f, int rne) {
    const uint32_t shift = (uint32_t)(23 - f->man_bits);
    const uint32_t sb = f->sign_bit;
    fp_enc_consts k;
    k.vshift = _mm_cvtsi32_si128((int)shift);
    k.absmask = _mm256_set1_epi32(0x7fffffff);
    k.half_m1 = _mm256_set1_epi32((int)((1u << (shift - 1)) - 1u));
    k.lsbmask = _mm256_set1_epi32(1);
    k.rebias = _mm256_set1_epi32((127 - f->bias) << f->man_bits);
    k.scale1 = _mm256_set1_ps(f->sub_scale1);
    k.scale2 = _mm256_set1_ps(f->sub_scale2);
    k.magic = _mm256_set1_ps(8388608.0f);
    k.thr = _mm256_set1_epi32(((f->emin + 127) << 23) - 1);
    k.maxmag = _mm256_set1_epi32((int)f->max_mag);
    k.infbits = _mm256_set1_epi32(0x7f800000);
    k.sgn = _mm256_set1_epi32((int)sb);
    k.zero = _mm256_setzero_si256();
    k.z0 = _mm256_set1_epi32((int)f->zero_code[0]);
    k.z1 = _mm256_set1_epi32((int)f->zero_code[1]);
    k.o0 = _mm256_set1_epi32((int)f->ovf_code[0]);
    k.o1 = _mm256_set1_epi32((int)f->ovf_code[1]);
    k.q0 = _mm256_set1_epi32((int)f->nan_code[0]);
    k.q1 = _mm256_set1_epi32((int)f->nan_code[1]);
    k.ovf_mag = k.o0;
    k.nan_mag = k.q0;
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const int simple = f->zero_code[0] == 0 && f->zero_code[1] == sb &&
                       f->ovf_code[1] == (f->ovf_code[0] | sb) && f->ovf_code[0] < sb &&
                       f->nan_code[0] < sb &&
                       (f->nan_code[1] == (f->nan_code[0] | sb) || f->nan_code[1] == f->nan_code[0]);
    const int nds = f->nan_code[1] == f->nan_code[0];
    const int two = f->sub_scale2 != 1.0f;
    const int rtzsat = !rne && f->rtz_saturates;
    /* Large outputs bypass the cache (no read for ownership of the output
     * lines); needs 32-byte alignment. */
    const int stream = f->stream_out && ((uintptr_t)out & 31) == 0;
    if (rne && simple && nds && !two) {
        FP_ENC32_LOOP(1, 1, 0, 1, 0)
    } else if (rne && simple && !nds && !two) {
        FP_ENC32_LOOP(1, 1, 0, 0, 0)
    } else if (rne) {
        FP_ENC32_LOOP(1, 0, 0, 0, 1)
    } else if (rtzsat && simple && nds && !two) {
        FP_ENC32_LOOP(0, 1, 1, 1, 0)
    } else if (rtzsat && simple && !nds && !two) {
        FP_ENC32_LOOP(0, 1, 1, 0, 0)
    } else if (rtzsat) {
        FP_ENC32_LOOP(0, 0, 1, 0, 1)
    } else {
        FP_ENC32_LOOP(0, 0, 0, 0, 1)
    }
    if (stream) _mm_sfence();
}
#undef FP_ENC32_LOOP
#endif

/* ---- float64: the same with 52 mantissa bits and bias 1023 --------------- */
static inline uint32_t fp_enc_f64(uint64_t bits, const fp_minifloat *f, int mode,
                                  uint64_t seed, uint64_t index) {
    const uint32_t s = (uint32_t)(bits >> 63);
    const uint64_t a = bits & 0x7fffffffffffffffull;
    const int32_t m = f->man_bits;
    const uint64_t fexp = a >> 52;

    const uint64_t shift = (uint64_t)(52 - m);
    uint64_t inc, rnd = 0;
    if (mode == FP_RN_STOCHASTIC)
        rnd = ((uint64_t)fp_rand32(seed ^ 0x5bd1e9955bd1e995ull, index) << 32) | fp_rand32(seed, index);
    if (mode == FP_RN_EVEN)
        inc = (((uint64_t)1 << (shift - 1)) - 1u) + ((a >> shift) & 1u);
    else if (mode == FP_RN_ZERO)
        inc = 0;
    else
        inc = rnd >> (64 - shift);
    const uint64_t rebias = (uint64_t)(1023 - f->bias) << m;
    const uint64_t mag_n = ((a + inc) >> shift) - rebias;

    const uint64_t has_exp = fexp != 0;
    const uint64_t e_eff = fexp | (has_exp ^ 1u);
    const uint64_t mant = (a & 0xfffffffffffffull) | (has_exp << 52);
    int64_t sh = 1075 + (int64_t)f->emin - m - (int64_t)e_eff;   /* >= 1 on this path */
    sh = sh < 1 ? 1 : (sh > 63 ? 63 : sh);
    const uint64_t sh64 = (uint64_t)sh;
    uint64_t inc_s = 0;
    if (mode == FP_RN_EVEN)
        inc_s = (((uint64_t)1 << (sh64 - 1)) - 1u) + ((mant >> sh64) & 1u);
    else if (mode == FP_RN_STOCHASTIC)
        inc_s = rnd >> (64 - sh64);
    const uint64_t mag_s = (mant + inc_s) >> sh64;
    const uint64_t is_normal = (int64_t)fexp >= (int64_t)f->emin + 1023;
    const uint64_t mag64 = fp_sel64(is_normal, mag_n, mag_s);
    const uint32_t too_big = mag64 > (uint64_t)f->max_mag;
    return fp_finish(s, (uint32_t)(mag64 & 0xffu) | (uint32_t)(mag64 > 0xffu), too_big,
                     a > 0x7ff0000000000000ull, a == 0x7ff0000000000000ull, f, mode);
}

/* Loops, one per rounding mode so that each is branch-free. */
#define FP_ENC_LOOP(NAME, IN_T, ENC, MODE)                                                \
    FP_CLONES static void NAME(const IN_T *x, uint8_t *out, int64_t n,                    \
                               const fp_minifloat *fmt, uint64_t seed, int64_t start) {   \
        const fp_minifloat f = *fmt;                                                      \
        for (int64_t i = 0; i < n; i++)                                                   \
            out[i] = (uint8_t)ENC(x[i], &f, MODE, seed, (uint64_t)(start + i));           \
    }

FP_ENC_LOOP(fp_enc_f32_rne, uint32_t, fp_enc_f32, FP_RN_EVEN)
FP_ENC_LOOP(fp_enc_f32_rtz, uint32_t, fp_enc_f32, FP_RN_ZERO)
FP_ENC_LOOP(fp_enc_f32_sr, uint32_t, fp_enc_f32, FP_RN_STOCHASTIC)
FP_ENC_LOOP(fp_enc_f64_rne, uint64_t, fp_enc_f64, FP_RN_EVEN)
FP_ENC_LOOP(fp_enc_f64_rtz, uint64_t, fp_enc_f64, FP_RN_ZERO)
FP_ENC_LOOP(fp_enc_f64_sr, uint64_t, fp_enc_f64, FP_RN_STOCHASTIC)

/* Encode n float32 bit patterns p[0..n) into o[0..n); `index0` is the global
 * index of p[0] (it keys the stochastic-rounding stream). */
static void fp_encode_f32_run(const uint32_t *p, uint8_t *o, int64_t index0, int64_t n,
                              const fp_minifloat *f, int mode, uint64_t seed) {
#if FP_HAVE_AVX2_KERNELS
    if (mode != FP_RN_STOCHASTIC && fp_cpu_has_avx2()) {
        const int64_t nv = n & ~(int64_t)31;
        fp_enc_f32_avx2(p, o, nv, f, mode == FP_RN_EVEN);
        p += nv;
        o += nv;
        index0 += nv;
        n -= nv;
    }
#endif
    if (mode == FP_RN_EVEN) fp_enc_f32_rne(p, o, n, f, seed, index0);
    else if (mode == FP_RN_ZERO) fp_enc_f32_rtz(p, o, n, f, seed, index0);
    else fp_enc_f32_sr(p, o, n, f, seed, index0);
}

/* Encode x[start : start + n] of a float32 or float64 (is64) array. */
static void fp_encode_chunk(const void *x, int is64, uint8_t *out, int64_t start, int64_t n,
                            const fp_minifloat *f, int mode, uint64_t seed) {
    if (!is64) {
        fp_encode_f32_run((const uint32_t *)x + start, out + start, start, n, f, mode, seed);
        return;
    }
    const uint64_t *p = (const uint64_t *)x + start;
    if (mode == FP_RN_EVEN) fp_enc_f64_rne(p, out + start, n, f, seed, start);
    else if (mode == FP_RN_ZERO) fp_enc_f64_rtz(p, out + start, n, f, seed, start);
    else fp_enc_f64_sr(p, out + start, n, f, seed, start);
}

/* buf[i] = x[i] / s in IEEE float32 (the quantizer's division), i < n */
FP_CLONES static void fp_div_f32(const float *x, float s, float *buf, int64_t n) {
    for (int64_t i = 0; i < n; i++) buf[i] = x[i] / s;
}

/* The codes of x[start..start+n) / s: the division into `buf` (n floats, one
 * buffer per thread), then the encoder; the same bits as dividing first and
 * encoding the quotients. */
static void fp_encode_scaled_chunk(const float *x, float s, float *buf, uint8_t *out,
                                   int64_t start, int64_t n, const fp_minifloat *f, int mode,
                                   uint64_t seed) {
    fp_div_f32(x + start, s, buf, n);
    uint32_t *bits = (uint32_t *)(void *)buf;
    fp_encode_f32_run(bits, out + start, start, n, f, mode, seed);
}

/* ---- decoding: a 256-entry table of the output type's bit patterns ---------- */
FP_CLONES static void fp_decode_u16(const uint8_t *c, uint16_t *o, int64_t n, const uint16_t *lut) {
    for (int64_t i = 0; i < n; i++) o[i] = lut[c[i]];
}
FP_CLONES static void fp_decode_u32(const uint8_t *c, uint32_t *o, int64_t n, const uint32_t *lut) {
    for (int64_t i = 0; i < n; i++) o[i] = lut[c[i]];
}
FP_CLONES static void fp_decode_u64(const uint8_t *c, uint64_t *o, int64_t n, const uint64_t *lut) {
    for (int64_t i = 0; i < n; i++) o[i] = lut[c[i]];
}

#if FP_HAVE_AVX2_KERNELS
/* float32 decoding, 32 codes at a time: widen the bytes to int32 indexes and
 * gather from the table; large outputs are written around the cache.
 * n must be a multiple of 32. */
FP_TARGET_AVX2 static void fp_decode_u32_avx2(const uint8_t *c, uint32_t *o, int64_t n,
                                              const uint32_t *lut, int stream) {
    for (int64_t i = 0; i < n; i += 32) {
        const __m256i bytes = _mm256_loadu_si256((const __m256i *)(c + i));
        const __m128i lo = _mm256_castsi256_si128(bytes), hi = _mm256_extracti128_si256(bytes, 1);
        const __m256i idx[4] = {_mm256_cvtepu8_epi32(lo), _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)),
                                _mm256_cvtepu8_epi32(hi), _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))};
        for (int v = 0; v < 4; v++) {
            const __m256i val = _mm256_i32gather_epi32((const int *)lut, idx[v], 4);
            if (stream)
                _mm256_stream_si256((__m256i *)(o + i + 8 * v), val);
            else
                _mm256_storeu_si256((__m256i *)(o + i + 8 * v), val);
        }
    }
    if (stream) _mm_sfence();
}
#endif

/* Decode codes[start : start + n]; `stream` asks for cache-bypassing stores
 * (large outputs). */
static void fp_decode_chunk(const uint8_t *codes, void *out, int itemsize, const void *lut,
                            int64_t start, int64_t n, int stream) {
#if FP_HAVE_AVX2_KERNELS
    if (itemsize == 4 && fp_cpu_has_avx2()) {
        uint32_t *o = (uint32_t *)out + start;
        const int64_t nv = n & ~(int64_t)31;
        fp_decode_u32_avx2(codes + start, o, nv, (const uint32_t *)lut,
                           stream && ((uintptr_t)o & 31) == 0);
        start += nv;
        n -= nv;
    }
#endif
    if (itemsize == 2)
        fp_decode_u16(codes + start, (uint16_t *)out + start, n, (const uint16_t *)lut);
    else if (itemsize == 4)
        fp_decode_u32(codes + start, (uint32_t *)out + start, n, (const uint32_t *)lut);
    else
        fp_decode_u64(codes + start, (uint64_t *)out + start, n, (const uint64_t *)lut);
}

#endif
