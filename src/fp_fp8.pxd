# Declarations of the minifloat C kernels (src/fp_fp8.h).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cdef extern from "fp_fp8.h" nogil:
    enum:
        FP_RN_EVEN
        FP_RN_ZERO
        FP_RN_STOCHASTIC
    ctypedef struct fp_minifloat:
        int32_t man_bits
        int32_t emin
        int32_t bias
        uint32_t sign_bit
        uint32_t max_mag
        uint32_t ovf_code[2]
        uint32_t nan_code[2]
        uint32_t zero_code[2]
        int32_t rtz_saturates
        float sub_scale1
        float sub_scale2
        int32_t stream_out
    void fp_encode_chunk(const void *x, int is64, uint8_t *out, int64_t start, int64_t n,
                         const fp_minifloat *f, int mode, uint64_t seed)
    void fp_encode_scaled_chunk(const float *x, float s, float *buf, uint8_t *out, int64_t start,
                                int64_t n, const fp_minifloat *f, int mode, uint64_t seed)
    void fp_decode_chunk(const uint8_t *codes, void *out, int itemsize, const void *lut,
                         int64_t start, int64_t n, int stream)
