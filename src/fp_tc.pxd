# Declarations of the tensor-core accumulation kernels (src/fp_tc.h).
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t

cdef extern from "fp_tc.h" nogil:
    int FP_TC_ZEXP
    int FP_TC_LIMBS
    int FP_TC_PATH_AUTO
    int FP_TC_PATH_AVX2
    int FP_TC_PATH_AVX512
    ctypedef struct fp_tc_params:
        int64_t block
        int32_t frac_bits
        int32_t res_frac
        int32_t exact_exp
        int32_t rne
        int64_t promote
    ctypedef struct fp_tc_table:
        int32_t sig[256]
        int32_t exp[256]
        float val[256]
        int8_t e8[256]
        int8_t l8[256]
        int8_t l8neg[256]
        int8_t l8pos[256]
        uint8_t neg[256]
        uint8_t special[256]
        int32_t man
        int32_t lo
    ctypedef struct fp_tc_mat:
        const uint8_t *p
        int64_t rs
        int64_t cs
    void fp_tc_generic_rows(fp_tc_mat A, fp_tc_mat B, int64_t K, int64_t Kp, int64_t N,
                            const int64_t *kmap, const fp_tc_table *ta, const fp_tc_table *tb,
                            const float *c0, float *out, int64_t i0, int64_t i1,
                            const fp_tc_params *prm)
    int64_t fp_tc_count_special(fp_tc_mat X, int64_t R, int64_t C, const fp_tc_table *t)
    int fp_tc_fast(fp_tc_mat A, fp_tc_mat B, int64_t M, int64_t K, int64_t Kp, int64_t N,
                   const int64_t *kmap, const fp_tc_table *ta, const fp_tc_table *tb,
                   const float *c0, float *out, const fp_tc_params *prm, int path, int nthreads,
                   int64_t *nspecial)
