# cython: language_level=3
"""Compiled minifloat conversion kernels (private; ``fixedpoint.fp8`` validates).

Every entry point takes typed memoryviews (dtype and contiguity are checked
by Cython) and checks that the output is as long as the input before any
pointer is taken."""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from fp_fp8 cimport *

from fp_chunks cimport CHUNK, chunk_len, n_chunks

cnp.import_array()

_MODES = {"nearest_even": FP_RN_EVEN, "toward_zero": FP_RN_ZERO, "stochastic": FP_RN_STOCHASTIC}

ctypedef fused float_in:
    float
    double

ctypedef fused word:
    uint16_t
    uint32_t
    uint64_t


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


cdef _same_length(int64_t n_in, int64_t n_out):
    if n_in != n_out:
        raise ValueError(f"out: expected {n_in} elements, got {n_out}")


def encode(const float_in[::1] x, uint8_t[::1] out, dict params, str rounding, uint64_t seed,
           int nthreads):
    """out[:] = codes of x (float32 or float64, contiguous, native order)."""
    _same_length(x.shape[0], out.shape[0])
    cdef fp_minifloat f = _format(params, x.shape[0])
    cdef int mode = _MODES[rounding]
    cdef int is64 = float_in is double
    cdef int64_t n = x.shape[0]
    cdef int64_t nchunks = n_chunks(n)
    cdef int64_t c
    cdef int nt = max(1, min(nthreads, nchunks))    # no team of threads for one chunk
    if n == 0:
        return
    cdef const void *px = &x[0]
    cdef uint8_t *po = &out[0]
    with nogil:
        for c in prange(nchunks, num_threads=nt, schedule="dynamic"):
            fp_encode_chunk(px, is64, po, c * CHUNK, chunk_len(c, n), &f, mode, seed)


def encode_scaled(const float[::1] x, uint8_t[::1] out, float scale, dict params, str rounding,
                  uint64_t seed, int nthreads):
    """out[:] = codes of x / scale (IEEE float32 division, then the encoder), fused:
    the quotients live in one CHUNK-sized buffer per thread."""
    _same_length(x.shape[0], out.shape[0])
    cdef fp_minifloat f = _format(params, x.shape[0])
    cdef int mode = _MODES[rounding]
    cdef int64_t n = x.shape[0]
    cdef int64_t nchunks = n_chunks(n)
    cdef int nt = max(1, min(nthreads, nchunks))
    cdef int64_t c
    if n == 0:
        return
    bufs = np.empty((nt, CHUNK), np.float32)
    cdef float[:, ::1] vb = bufs
    with nogil:
        for c in prange(nchunks, num_threads=nt, schedule="dynamic"):
            fp_encode_scaled_chunk(&x[0], scale, &vb[threadid(), 0], &out[0], c * CHUNK,
                                   chunk_len(c, n), &f, mode, seed)


def decode(const uint8_t[::1] codes, word[::1] out, const word[::1] lut, int nthreads):
    """out[:] = lut[codes]; lut holds the 256 output bit patterns (16, 32 or 64 bits)."""
    _same_length(codes.shape[0], out.shape[0])
    if lut.shape[0] != 256:
        raise ValueError(f"lut: expected 256 entries, got {lut.shape[0]}")
    cdef int64_t n = codes.shape[0]
    cdef int64_t nchunks = n_chunks(n)
    cdef int64_t c
    cdef int stream = n >= (1 << 22)
    cdef int itemsize = sizeof(word)
    cdef int nt = max(1, min(nthreads, nchunks))
    if n == 0:
        return
    with nogil:
        for c in prange(nchunks, num_threads=nt, schedule="dynamic"):
            fp_decode_chunk(&codes[0], &out[0], itemsize, &lut[0], c * CHUNK, chunk_len(c, n),
                            stream)
