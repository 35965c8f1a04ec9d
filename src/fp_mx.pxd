# Declarations of the block-scaled tensor-core kernels (src/fp_mx.h).
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t

cdef extern from "fp_mx.h" nogil:
    void fp_mx_f8_rows(const float *fa, const int16_t *ea, const float *fb, const int16_t *eb,
                       const int32_t *sa, const int32_t *sb, const uint8_t *san,
                       const uint8_t *sbn, const float *c, float *out, int64_t i0, int64_t i1,
                       int64_t Kp, int64_t N)
    int fp_mx_f4_rows(const int8_t *a, const int8_t *b, const int32_t *ma, const int32_t *xa,
                       const int32_t *mb, const int32_t *xb, const uint8_t *nan_a,
                       const uint8_t *nan_b, const float *c, float *out, int64_t i0,
                       int64_t i1, int64_t Kp, int64_t N)
