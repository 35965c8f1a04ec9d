# cython: language_level=3
"""Compiled minifloat conversion kernels (private; ``fixedpoint.fp8`` validates)."""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from fp_fp8 cimport *

from fp_chunks cimport CHUNK, chunk_len, n_chunks

cnp.import_array()

_MODES = {"nearest_even": FP_RN_EVEN, "toward_zero": FP_RN_ZERO, "stochastic": FP_RN_STOCHASTIC}


cdef fp_minifloat _format(dict params, int64_t size):
    cdef fp_minifloat f
    f.man_bits = params["man_bits"]
    f.emin = params["emin"]
    f.bias = params["bias"]
    f.sign_bit = params["sign_bit"]
    f.max_mag = params["max_mag"]
    f.ovf_code[0], f.ovf_code[1] = params["ovf_code"]
    f.nan_code[0], f.nan_code[1] = params["nan_code"]
    f.zero_code[0], f.zero_code[1] = params["zero_code"]
    f.rtz_saturates = params["rtz_saturates"]
    f.sub_scale1 = params["sub_scale1"]
    f.sub_scale2 = params["sub_scale2"]
    f.stream_out = size >= (1 << 22)
    return f


def encode(cnp.ndarray x, cnp.ndarray out, dict params, str rounding, uint64_t seed,
           bint count_nans, int nthreads):
    """out[:] = codes of x (float32 or float64, contiguous, native order).

    Returns the number of NaN inputs if count_nans, else 0."""
    cdef fp_minifloat f = _format(params, x.size)
    cdef int mode = _MODES[rounding]
    cdef int is64 = x.dtype.itemsize == 8
    cdef const void *px = cnp.PyArray_DATA(x)
    cdef uint8_t *po = <uint8_t *>cnp.PyArray_DATA(out)
    cdef int64_t n = x.size
    cdef int64_t nchunks = n_chunks(n)
    cdef int64_t c, start, m
    cdef int64_t nans = 0
    cdef int cn = count_nans
    with nogil:
        for c in prange(nchunks, num_threads=nthreads, schedule="dynamic"):
            start = c * CHUNK
            m = chunk_len(c, n)
            nans += fp_encode_chunk(px, is64, po, start, m, &f, mode, seed, cn)
    return nans


def encode_scaled(const float[::1] x, uint8_t[::1] out, float scale, dict params, str rounding,
                  uint64_t seed, bint count_nans, int nthreads):
    """out[:] = codes of x / scale (IEEE float32 division, then the encoder), fused:
    the quotients live in one CHUNK-sized buffer per thread.

    Returns the number of NaN quotients if count_nans, else 0."""
    cdef fp_minifloat f = _format(params, x.shape[0])
    cdef int mode = _MODES[rounding]
    cdef int64_t n = x.shape[0]
    cdef int64_t nchunks = n_chunks(n)
    cdef int nt = max(1, min(nthreads, nchunks))
    bufs = np.empty((nt, CHUNK), np.float32)
    cdef float[:, ::1] vb = bufs
    cdef int64_t c, start, m
    cdef int64_t nans = 0
    cdef int cn = count_nans
    if n == 0:
        return 0
    with nogil:
        for c in prange(nchunks, num_threads=nt, schedule="dynamic"):
            start = c * CHUNK
            m = chunk_len(c, n)
            nans += fp_encode_scaled_chunk(&x[0], scale, &vb[threadid(), 0], &out[0], start, m, &f,
                                           mode, seed, cn)
    return nans


def decode(cnp.ndarray codes, cnp.ndarray out, cnp.ndarray lut, int nthreads):
    """out[:] = lut[codes] for contiguous uint8 codes; lut holds output bit patterns."""
    cdef const uint8_t *pc = <const uint8_t *>cnp.PyArray_DATA(codes)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef const void *pl = cnp.PyArray_DATA(lut)
    cdef int itemsize = out.dtype.itemsize
    cdef int64_t n = codes.size
    cdef int64_t nchunks = n_chunks(n)
    cdef int64_t c, start, m
    cdef int stream = n >= (1 << 22)
    with nogil:
        for c in prange(nchunks, num_threads=nthreads, schedule="dynamic"):
            start = c * CHUNK
            m = chunk_len(c, n)
            fp_decode_chunk(pc, po, itemsize, pl, start, m, stream)
