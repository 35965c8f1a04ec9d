# cython: language_level=3
"""Compiled quantization kernels (private; ``fixedpoint.quantize`` validates)."""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t

from fp_quant cimport *

from fp_chunks cimport CHUNK, chunk_len, n_chunks

cnp.import_array()

_MODES = {"nearest_even": FP_Q_RNE, "toward_zero": FP_Q_RTZ, "floor": FP_Q_FLOOR}

def quantize_runs(const float[:, ::1] x, uint8_t[:, ::1] out, const float[::1] scale,
                  const float[::1] zp, float lo, float hi, str rounding, bint is_unsigned,
                  int nthreads, bint pack4=False):
    """out[r, :] = codes of x[r, :] with (scale[r], zp[r]): one run per row.

    With pack4, out holds x.shape[1] // 2 bytes per row (rows of even length):
    two 4-bit codes per byte, first in the low nibble.

    Returns the number of non-finite inputs (the codes are then meaningless)."""
    cdef int mode = _MODES[rounding]
    cdef int64_t R = x.shape[0], L = x.shape[1]
    cdef int64_t nchunks = n_chunks(L)
    cdef int pk = pack4
    cdef int64_t t, r, c, start, m
    cdef int stream = R * L >= (1 << 22)
    cdef int64_t bad = 0
    if R == 0 or L == 0:
        return 0
    with nogil:
        for t in prange(R * nchunks, num_threads=max(1, min(nthreads, R * nchunks)), schedule="static"):
            r = t // nchunks
            c = t % nchunks
            start = c * CHUNK
            m = chunk_len(c, L)
            bad += fp_quant_run(&x[r, start], &out[r, start // 2 if pk else start], m, scale[r],
                                zp[r], lo, hi, mode, is_unsigned, stream, pk)
    return bad


def minmax(const float[::1] x, int nthreads):
    """(min, max, number of non-finite values) of a float32 vector."""
    cdef int64_t n = x.shape[0]
    cdef int64_t nchunks = n_chunks(n)
    mins = np.empty(max(nchunks, 1), np.float32)
    maxs = np.empty(max(nchunks, 1), np.float32)
    bads = np.zeros(max(nchunks, 1), np.int64)
    cdef float[::1] vmin = mins, vmax = maxs
    cdef int64_t[::1] vbad = bads
    cdef int64_t c, start, m
    if n == 0:
        return np.inf, -np.inf, 0
    with nogil:
        for c in prange(nchunks, num_threads=max(1, min(nthreads, nchunks)), schedule="dynamic"):
            start = c * CHUNK
            m = chunk_len(c, n)
            vbad[c] = fp_minmax_f32(&x[start], m, &vmin[c], &vmax[c])
    return float(mins.min()), float(maxs.max()), int(bads.sum())


def pack4(const uint8_t[::1] codes, uint8_t[::1] out):
    """Two 4-bit codes per byte (len(codes) even)."""
    cdef int64_t npairs = codes.shape[0] // 2
    if npairs == 0:
        return
    with nogil:
        fp_pack4(&codes[0], &out[0], npairs)


_RQ_METHODS = {"double": FP_RQ_DOUBLE, "single": FP_RQ_SINGLE, "ruy": FP_RQ_RUY,
               "float": FP_RQ_FLOAT, "float64": FP_RQ_FLOAT64}


def requantize(const int32_t[::1] acc, int32_t[::1] out, int64_t C, const int32_t[::1] q,
               const int32_t[::1] shift, const double[::1] real, int64_t zp, int64_t lo,
               int64_t hi, str method, int nthreads):
    """out = clamp(requant(acc) + zp, lo, hi) by ``method``; acc is a flat
    (rows x C) array; q, shift and real hold one value each, or one per column
    (C of them; all three the same length)."""
    cdef int m = _RQ_METHODS[method]
    cdef int64_t n = acc.shape[0]
    cdef int64_t nchunks = n_chunks(n)
    cdef int percol = q.shape[0] > 1
    cdef int64_t c
    if n == 0:
        return
    if out.shape[0] != n or q.shape[0] != shift.shape[0] or q.shape[0] != real.shape[0] \
            or q.shape[0] not in (1, C) or q.shape[0] == 0:
        raise ValueError("requantize: inconsistent kernel arguments")
    if percol and m != FP_RQ_FLOAT64:
        _requantize_cols(acc, out, C, q, shift, real, zp, lo, hi, m, nthreads)
        return
    if m == FP_RQ_FLOAT and C >= 16:    # the per-column loop vectorizes; the general one does not
        _requantize_cols(acc, out, C, np.full(C, q[0], np.int32), np.full(C, shift[0], np.int32),
                         np.full(C, real[0]), zp, lo, hi, m, nthreads)
        return
    with nogil:
        for c in prange(nchunks, num_threads=max(1, min(nthreads, nchunks)), schedule="dynamic"):
            fp_requantize(&acc[0], &out[0], c * CHUNK, chunk_len(c, n), C, &q[0], &shift[0],
                          &real[0], percol, zp, lo, hi, m)


cdef _requantize_cols(const int32_t[::1] acc, int32_t[::1] out, int64_t C, const int32_t[::1] q,
                      const int32_t[::1] shift, const double[::1] real, int64_t zp, int64_t lo,
                      int64_t hi, int m, int nthreads, int8_t[::1] out8=None,
                      float[::1] outf=None, float scale=0):
    """One multiplier per column: the columns' shifts, nudges and float32 scales
    computed once here, then fp_requantize_cols (the same values as fp_requantize),
    or fp_requantize_cols_dq into out8 and outf."""
    sh = np.asarray(shift, np.int64)
    if m == FP_RQ_SINGLE:
        right = 31 - sh
        aux = np.int64(1) << (right - 1)
    else:
        right = np.maximum(-sh, 0)
        aux = (np.int64(1) << right) - 1 if m == FP_RQ_DOUBLE else (np.int64(1) << right) >> 1
    left = np.maximum(sh, 0).astype(np.uint64)
    right = right.astype(np.uint64)
    aux = aux.astype(np.int64)
    realf = np.asarray(real, np.float64).astype(np.float32)
    cdef const uint64_t[::1] vl = left
    cdef const uint64_t[::1] vr = right
    cdef const int64_t[::1] va = aux
    cdef const float[::1] vf = realf
    cdef fp_rq_cols p
    p.left = &vl[0]
    p.right = &vr[0]
    p.aux = &va[0]
    p.q = &q[0]
    p.realf = &vf[0]
    cdef int64_t n = acc.shape[0]
    cdef int64_t nchunks = n_chunks(n)
    cdef int64_t c
    cdef int dq = out8 is not None
    cdef int32_t *po = NULL if dq else &out[0]
    cdef int8_t *p8 = &out8[0] if dq else NULL
    cdef float *pf = &outf[0] if dq else NULL
    with nogil:
        for c in prange(nchunks, num_threads=max(1, min(nthreads, nchunks)), schedule="dynamic"):
            if dq:
                fp_requantize_cols_dq(&acc[0], p8, pf, c * CHUNK, chunk_len(c, n), C, &p, zp, lo,
                                      hi, m, scale)
            else:
                fp_requantize_cols(&acc[0], po, c * CHUNK, chunk_len(c, n), C, &p, zp, lo, hi, m)


def requantize_dequantize(const int32_t[::1] acc, int8_t[::1] out, float[::1] outf, int64_t C,
                          const int32_t[::1] q, const int32_t[::1] shift, const double[::1] real,
                          int64_t zp, int64_t lo, int64_t hi, str method, float scale,
                          int nthreads):
    """out = requantize(acc) as int8 codes (-128 <= lo <= hi <= 127) and outf =
    (out - zp) * scale in float32; q, shift and real hold one value per column
    (C of them), or one for all (any method but float64)."""
    cdef int m = _RQ_METHODS[method]
    cdef int64_t n = acc.shape[0]
    if n == 0:
        return
    if out.shape[0] != n or outf.shape[0] != n or q.shape[0] != shift.shape[0] \
            or q.shape[0] != real.shape[0] or q.shape[0] not in (1, C) or lo < -128 or hi > 127 \
            or m == FP_RQ_FLOAT64:
        raise ValueError("requantize_dequantize: inconsistent kernel arguments")
    if q.shape[0] == 1 and C > 1:
        q, shift, real = (np.full(C, q[0], np.int32), np.full(C, shift[0], np.int32),
                          np.full(C, real[0]))
    _requantize_cols(acc, None, C, q, shift, real, zp, lo, hi, m, nthreads, out, outf, scale)


def row_minmax(const float[:, ::1] x, int nthreads):
    """(mins, maxs, number of non-finite values) of each row of a float32 matrix."""
    cdef int64_t R = x.shape[0], L = x.shape[1]
    mins = np.empty(R, np.float32)
    maxs = np.empty(R, np.float32)
    bads = np.zeros(R, np.int64)
    cdef float[::1] vmin = mins, vmax = maxs
    cdef int64_t[::1] vbad = bads
    cdef int64_t r
    if R == 0 or L == 0:
        return mins, maxs, 0
    with nogil:
        for r in prange(R, num_threads=max(1, min(nthreads, R)), schedule="static"):
            vbad[r] = fp_minmax_f32(&x[r, 0], L, &vmin[r], &vmax[r])
    return mins, maxs, int(bads.sum())


def srdhm(int32_t a, int32_t b):
    """The kernel's SaturatingRoundingDoublingHighMul on one pair (for the tests:
    requantize never reaches the INT32_MIN * INT32_MIN corner)."""
    return fp_srdhm(a, b)
