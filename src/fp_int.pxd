# Declarations of the integer C kernels (src/fp_int.h).
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint32_t

cdef extern from "fp_int.h" nogil:
    int FP_OPENMP
    enum:
        FP_I8
        FP_U8
        FP_I16
        FP_U16
        FP_OP_MUL
        FP_OP_ADD
        FP_OP_MULWIDE
    void fp_binop_chunk(int op, int saturate, int dtype, const void *a, const void *b,
                        void *out, int64_t start, int64_t n, int32_t lo, int32_t hi,
                        uint32_t mask)
    void fp_matmul_generic_rows(const int32_t *a, const int32_t *b, const int64_t *c0,
                                int64_t *out, int64_t *counts, int64_t *blocksum,
                                int64_t i0, int64_t i1, int64_t K, int64_t N, int64_t block,
                                int bits, int saturate)
    int fp_matmul_u8i8_acc32(const void *a, const void *b, int is_unsigned, const int32_t *c0,
                             int32_t *out, int32_t *counts, int64_t M, int64_t K, int64_t N,
                             int64_t block, int saturate, int nthreads)
