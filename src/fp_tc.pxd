# Declarations of the tensor-core accumulation kernels (src/fp_tc.h).
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t

cdef extern from "fp_tc.h" nogil:
    int FP_TC_ZEXP
    ctypedef struct fp_tc_params:
        int64_t block
        int32_t frac_bits
        int32_t res_frac
        int32_t exact_exp
        int32_t rne
        int64_t promote
    void fp_tc_generic_rows(const int32_t *sa, const int32_t *xa, int32_t ma, int32_t emin_a,
                            const int32_t *sb, const int32_t *xb, int32_t mb, int32_t emin_b,
                            float *out, int64_t i0, int64_t i1, int64_t Kp, int64_t N,
                            const fp_tc_params *prm)
    int fp_tc_fast(const uint8_t *a, const uint8_t *b, int64_t M, int64_t K, int64_t Kp,
                   int64_t N, const float *lva, const int8_t *lea, const uint8_t *lsa,
                   const float *lvb, const int8_t *leb, const uint8_t *lsb, float *out,
                   const fp_tc_params *prm, int nthreads, int64_t *nspecial)
