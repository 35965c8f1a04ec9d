# cython: language_level=3
"""Compiled float kernels of the vector units (private; ``fixedpoint.layers``
and ``fixedpoint.onnx_ops`` validate): float16 and bfloat16 rounding, erf.

Entry points take typed memoryviews (dtype and contiguity checked by Cython)
and check that the output is as long as the input before any pointer is taken."""
from cython.parallel cimport prange
from libc.stdint cimport int64_t

from fp_chunks cimport CHUNK, chunk_len, n_chunks


cdef extern from "fp_vector.h" nogil:
    void fpv_round_chunk(const float *x, float *out, int64_t n, int bf16, int saturate)
    void fpv_erf_f32(const float *x, float *out, int64_t n)
    void fpv_erf_f64(const double *x, double *out, int64_t n)


cdef _same_length(int64_t n_in, int64_t n_out):
    if n_in != n_out:
        raise ValueError(f"out: expected {n_in} elements, got {n_out}")


def round_float(const float[::1] x, float[::1] out, str ftype, bint saturate, int nthreads):
    """out[:] = x rounded to ftype ("float16" or "bfloat16"), nearest even, as float32."""
    _same_length(x.shape[0], out.shape[0])
    if ftype not in ("float16", "bfloat16"):
        raise ValueError(f"ftype: expected 'float16' or 'bfloat16', got {ftype!r}")
    cdef int bf16 = ftype == "bfloat16"
    cdef int sat = saturate
    cdef int64_t n = x.shape[0]
    cdef int64_t nchunks = n_chunks(n)
    cdef int nt = max(1, min(nthreads, nchunks))
    cdef int64_t c
    if n == 0:
        return
    cdef const float *px = &x[0]
    cdef float *po = &out[0]
    with nogil:
        for c in prange(nchunks, num_threads=nt, schedule="static"):
            fpv_round_chunk(px + c * CHUNK, po + c * CHUNK, chunk_len(c, n), bf16, sat)


ctypedef fused real:
    float
    double


def erf(const real[::1] x, real[::1] out, int nthreads):
    """out[:] = erf(x), computed in float64 and rounded once to the dtype of out."""
    _same_length(x.shape[0], out.shape[0])
    cdef int64_t n = x.shape[0]
    cdef int64_t nchunks = n_chunks(n)
    cdef int nt = max(1, min(nthreads, nchunks))
    cdef int64_t c
    if n == 0:
        return
    with nogil:
        for c in prange(nchunks, num_threads=nt, schedule="static"):
            if real is float:
                fpv_erf_f32(&x[0] + c * CHUNK, &out[0] + c * CHUNK, chunk_len(c, n))
            else:
                fpv_erf_f64(&x[0] + c * CHUNK, &out[0] + c * CHUNK, chunk_len(c, n))
