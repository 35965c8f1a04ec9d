/* Shared helpers for the fixedpoint C kernels.
 *
 * Everything here is free of undefined behaviour: integer wrap-around is
 * done in unsigned arithmetic, shifts are checked against the width, and
 * indexes are 64-bit.
 */
#ifndef FP_COMMON_H
#define FP_COMMON_H

#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#define FP_OPENMP 1
#else
#define FP_OPENMP 0
#endif

/* Loops marked FP_CLONES are compiled twice (AVX2 and baseline x86-64) and
 * the loader picks the right one at run time (GCC's ifunc dispatch), so the
 * package stays portable while the hot loops vectorise with AVX2. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(FP_NO_CLONES)
#define FP_CLONES __attribute__((target_clones("avx2", "default")))
/* and a third time for AVX-512 (x86-64-v4), for loops on 64-bit lanes, whose
 * multiplies AVX2 lacks */
#define FP_CLONES_V4 __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define FP_CLONES
#define FP_CLONES_V4
#endif

#if defined(__GNUC__) && defined(__x86_64__) && !defined(FP_NO_AVX2)
#define FP_HAVE_AVX2_KERNELS 1
#define FP_TARGET_AVX2 __attribute__((target("avx2,fma")))
static inline int fp_cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
#define FP_HAVE_AVX2_KERNELS 0
static inline int fp_cpu_has_avx2(void) { return 0; }
#endif

/* uint64 -> int64 two's complement reinterpretation without relying on
 * implementation-defined conversions. */
static inline int64_t fp_u2s64(uint64_t u) {
    return u <= (uint64_t)INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
}

static inline int32_t fp_u2s32(uint32_t u) {
    return u <= (uint32_t)INT32_MAX ? (int32_t)u : -(int32_t)(~u) - 1;
}

/* Clamp x into [lo, hi]. */
static inline int64_t fp_sat64(int64_t x, int64_t lo, int64_t hi) {
    return x < lo ? lo : (x > hi ? hi : x);
}

/* x modulo 2^bits, placed in [lo, lo + 2^bits): two's complement wrap when
 * lo = -2^(bits-1), plain modulo when lo = 0.  1 <= bits <= 64. */
static inline int64_t fp_wrap64(int64_t x, int64_t lo, int bits) {
    uint64_t mask = bits >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << bits) - 1u);
    uint64_t u = ((uint64_t)x - (uint64_t)lo) & mask;
    return fp_u2s64(u + (uint64_t)lo);
}

/* A counter-based random stream: 32 random bits for (seed, index), the same
 * whatever thread or chunk computes it.  Two rounds of a 32-bit integer hash
 * (multiply-xorshift, constants from Chris Wellons' "lowbias32" search). */
static inline uint32_t fp_mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

static inline uint32_t fp_rand32(uint64_t seed, uint64_t index) {
    uint32_t h = fp_mix32((uint32_t)index ^ (uint32_t)seed);
    return fp_mix32(h ^ (uint32_t)(index >> 32) ^ (uint32_t)(seed >> 32) ^ 0x9e3779b9u);
}

#endif
