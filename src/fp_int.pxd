# Declarations of the integer C kernels (src/fp_int.h).
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint32_t

cdef extern from "fp_int.h" nogil:
    int FP_OPENMP
    int FP_HAVE_AVX2_KERNELS
    int FP_HAVE_AVX512_KERNELS
    enum:
        FP_I8
        FP_U8
        FP_I16
        FP_U16
        FP_OP_MUL
        FP_OP_ADD
        FP_OP_MULWIDE
    enum:
        FP_GEMM_PORTABLE
        FP_GEMM_AVX2
        FP_GEMM_VNNI256
        FP_GEMM_VNNI512
        FP_GEMM_NPATHS
    void fp_binop_chunk(int op, int saturate, int dtype, const void *a, const void *b,
                        void *out, int64_t start, int64_t n, int32_t lo, int32_t hi,
                        uint32_t mask)
    int fp_matmul_generic(const int32_t *a, const int32_t *b, const int64_t *c0, void *out,
                          int out64, int64_t *counts, int64_t M, int64_t K, int64_t N,
                          int64_t block, int bits, int saturate, int pairs, int64_t plo,
                          int64_t phi, int nthreads)
    int fp_gemm_path_available(int path)
    int fp_gemm_i16(const void *a, int a_dtype, const void *b, int b_dtype, const int32_t *c0,
                    int64_t ldc0,
                    int32_t *out, int64_t *counts, int64_t M, int64_t K, int64_t N, int path,
                    int merge, int saturate, int bits, int pair_mode, int64_t block,
                    int32_t plo, int32_t phi, int64_t maxblk, int nthreads)
