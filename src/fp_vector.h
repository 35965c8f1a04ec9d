/* Float kernels of the vector units (fixedpoint._vector): float32 values
 * rounded to float16 or bfloat16 and widened back, and the error function.
 *
 * Rounding is to nearest even, as the IEEE conversions.  Every function works
 * on the bits of one float32 and uses only exact integer arithmetic, except the
 * float16 subnormal range, where one float32 addition of 0.5 rounds to the
 * grid of 2^-24 (nearest even, the default mode; the build forbids contraction
 * and fast-math).  NaN stays NaN (its payload is not modelled). */
#ifndef FP_VECTOR_H
#define FP_VECTOR_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t fpv_bits(float x) { uint32_t b; memcpy(&b, &x, 4); return b; }
static inline float fpv_float(uint32_t b) { float x; memcpy(&x, &b, 4); return x; }

#define FPV_F16_MAX_BITS 0x477FE000u   /* 65504 */
#define FPV_F16_OVF_BITS 0x477FF000u   /* 65520: the halfway point to 2^16, ties to Inf */
#define FPV_F16_MIN_NORMAL 0x38800000u /* 2^-14 */
#define FPV_BF16_MAX_BITS 0x7F7F0000u

/* float32 -> float16 -> float32; saturate: finite overflow gives +-65504.
 * Branch-free (selects), so that the loop below vectorises. */
static inline uint32_t fpv_round_f16_bits(uint32_t b, uint32_t sat_bits)
{
    uint32_t mag = b & 0x7FFFFFFFu, sign = b ^ mag;
    uint32_t normal = (mag + 0x0FFFu + ((mag >> 13) & 1u)) & ~0x1FFFu;
    /* float16 subnormals are the multiples of 2^-24: ulp(0.5f) = 2^-24, so the
     * addition rounds to that grid (nearest even) and the subtraction is exact */
    uint32_t sub = fpv_bits((fpv_float(mag) + 0.5f) - 0.5f);
    uint32_t r = mag < FPV_F16_MIN_NORMAL ? sub : normal;
    r = mag >= FPV_F16_OVF_BITS ? (mag == 0x7F800000u ? mag : sat_bits) : r;
    r = mag > 0x7F800000u ? mag : r;                      /* NaN as it is */
    return sign | r;
}

static inline float fpv_round_f16(float x, int saturate)
{
    return fpv_float(fpv_round_f16_bits(fpv_bits(x), saturate ? FPV_F16_MAX_BITS : 0x7F800000u));
}

/* float32 -> bfloat16 -> float32; saturate: finite overflow gives +-max. */
static inline uint32_t fpv_round_bf16_bits(uint32_t b, uint32_t sat_bits)
{
    uint32_t mag = b & 0x7FFFFFFFu, sign = b ^ mag;
    /* mag < 2^31: the sum cannot wrap */
    uint32_t r = (mag + 0x7FFFu + ((mag >> 16) & 1u)) & 0xFFFF0000u;
    r = (r == 0x7F800000u && mag < 0x7F800000u) ? sat_bits : r;
    r = mag >= 0x7F800000u ? mag : r;                     /* Inf and NaN as they are */
    return sign | r;
}

static inline float fpv_round_bf16(float x, int saturate)
{
    return fpv_float(fpv_round_bf16_bits(fpv_bits(x), saturate ? FPV_BF16_MAX_BITS : 0x7F800000u));
}

static inline void fpv_round_chunk(const float *x, float *out, int64_t n, int bf16, int saturate)
{
    const uint32_t *xb = (const uint32_t *)x;     /* built with -fno-strict-aliasing */
    uint32_t *ob = (uint32_t *)out;
    int64_t i;
    if (bf16) {
        uint32_t sat = saturate ? FPV_BF16_MAX_BITS : 0x7F800000u;
        for (i = 0; i < n; i++)
            ob[i] = fpv_round_bf16_bits(xb[i], sat);
    } else {
        uint32_t sat = saturate ? FPV_F16_MAX_BITS : 0x7F800000u;
        for (i = 0; i < n; i++)
            ob[i] = fpv_round_f16_bits(xb[i], sat);
    }
}

/* erf in float64 (the C library's, which is what Python's math.erf calls),
 * rounded once to the output type. */
static inline void fpv_erf_f32(const float *x, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)erf((double)x[i]);
}

static inline void fpv_erf_f64(const double *x, double *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = erf(x[i]);
}

#endif
