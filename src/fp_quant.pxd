# Declarations of the quantization kernels (src/fp_quant.h).
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t

cdef extern from "fp_quant.h" nogil:
    enum:
        FP_Q_RNE
        FP_Q_RTZ
        FP_Q_FLOOR
    enum:
        FP_RQ_DOUBLE
        FP_RQ_SINGLE
        FP_RQ_RUY
        FP_RQ_FLOAT
        FP_RQ_FLOAT64
    int64_t fp_quant_run(const float *x, uint8_t *o, int64_t n, float s, float zp, float lo,
                         float hi, int mode, int is_unsigned, int stream, int pack4)
    void fp_pack4(const uint8_t *c, uint8_t *o, int64_t npairs)
    int64_t fp_minmax_f32(const float *x, int64_t n, float *mn, float *mx)
    void fp_requantize(const int32_t *acc, int32_t *out, int64_t start, int64_t n, int64_t C,
                       const int32_t *q, const int32_t *shift, const double *real, int percol,
                       int64_t zp, int64_t lo, int64_t hi, int method)
    ctypedef struct fp_rq_cols:
        const uint64_t *left
        const uint64_t *right
        const int64_t *aux
        const int32_t *q
        const float *realf
    void fp_requantize_cols(const int32_t *acc, int32_t *out, int64_t start, int64_t n, int64_t C,
                            const fp_rq_cols *p, int64_t zp, int64_t lo, int64_t hi, int method)
    void fp_requantize_cols_dq(const int32_t *acc, int8_t *out, float *outf, int64_t start,
                               int64_t n, int64_t C, const fp_rq_cols *p, int64_t zp, int64_t lo,
                               int64_t hi, int method, float scale)
    int64_t fp_srdhm(int32_t a, int32_t b)
