# cython: language_level=3
"""Compiled integer kernels (private).  The wrappers in ``fixedpoint.intops``
and ``fixedpoint.accumulate`` validate; these only loop."""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint32_t
from libc.stdlib cimport malloc, free

from fp_int cimport *

from fp_chunks cimport CHUNK, chunk_len, n_chunks

cnp.import_array()

_DTYPES = {np.dtype(np.int8): FP_I8, np.dtype(np.uint8): FP_U8,
           np.dtype(np.int16): FP_I16, np.dtype(np.uint16): FP_U16}
_OPS = {"mul": FP_OP_MUL, "add": FP_OP_ADD, "mul_wide": FP_OP_MULWIDE}


def binop(str op, cnp.ndarray a, cnp.ndarray b, cnp.ndarray out, bint saturate,
          int lo, int hi, int bits, int nthreads):
    """out = op(a, b) elementwise; a, b contiguous, same storage dtype and size."""
    cdef int c_op = _OPS[op]
    cdef int dtype = _DTYPES[a.dtype]
    cdef const void *pa = cnp.PyArray_DATA(a)
    cdef const void *pb = cnp.PyArray_DATA(b)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef int64_t n = a.size
    cdef int64_t nchunks = n_chunks(n)
    cdef int64_t c, start, m
    cdef uint32_t mask = <uint32_t>((1 << bits) - 1)
    with nogil:
        for c in prange(nchunks, num_threads=nthreads, schedule="dynamic"):
            start = c * CHUNK
            m = chunk_len(c, n)
            fp_binop_chunk(c_op, saturate, dtype, pa, pb, po, start, m, lo, hi, mask)


def matmul_generic(const int32_t[:, ::1] a, const int32_t[:, ::1] b, c0,
                   int64_t[:, ::1] out, counts, int64_t block, int bits, bint saturate,
                   int nthreads):
    """out = A @ B (+ c0) through a `bits`-bit accumulator; any operand width."""
    cdef int64_t M = a.shape[0], K = a.shape[1], N = b.shape[1]
    cdef const int64_t *pc = NULL
    cdef int64_t *pcnt = NULL
    cdef const int64_t[:, ::1] c0v
    cdef int64_t[:, ::1] cntv
    if c0 is not None:
        c0v = c0
        pc = &c0v[0, 0] if M * N > 0 else NULL
    if counts is not None:
        cntv = counts
        pcnt = &cntv[0, 0] if M * N > 0 else NULL
    if M == 0 or N == 0:
        return
    cdef const int32_t *pa = &a[0, 0] if K > 0 else NULL
    cdef const int32_t *pb = &b[0, 0] if K > 0 else NULL
    cdef int64_t nrows_chunk = 4
    cdef int64_t nchunks = (M + nrows_chunk - 1) // nrows_chunk
    cdef int64_t ci, i0, i1
    cdef int64_t *scratch
    cdef int failed = 0
    with nogil:
        for ci in prange(nchunks, num_threads=nthreads, schedule="dynamic"):
            i0 = ci * nrows_chunk
            i1 = i0 + nrows_chunk
            if i1 > M:
                i1 = M
            scratch = <int64_t *>malloc((N if N > 0 else 1) * sizeof(int64_t))
            if scratch == NULL:
                failed = 1
            else:
                fp_matmul_generic_rows(pa, pb, pc, &out[0, 0], pcnt, scratch, i0, i1, K, N,
                                       block, bits, saturate)
                free(scratch)
    if failed:
        raise MemoryError("matmul: out of memory for the accumulator scratch rows")


def matmul_acc32_8bit(cnp.ndarray a, cnp.ndarray b, bint is_unsigned, c0,
                      int32_t[:, ::1] out, counts, int64_t block, bint saturate, int nthreads):
    """AVX2 kernel for 8-bit operands into a 32-bit accumulator.

    Returns False when the CPU has no AVX2 (the caller falls back)."""
    cdef int64_t M = a.shape[0], K = a.shape[1], N = b.shape[1]
    cdef const int32_t *pc = NULL
    cdef int32_t *pcnt = NULL
    cdef const int32_t[:, ::1] c0v
    cdef int32_t[:, ::1] cntv
    if c0 is not None:
        c0v = c0
        pc = &c0v[0, 0] if M * N > 0 else NULL
    if counts is not None:
        cntv = counts
        pcnt = &cntv[0, 0] if M * N > 0 else NULL
    if M == 0 or N == 0:
        return True
    cdef const void *pa = cnp.PyArray_DATA(a)
    cdef const void *pb = cnp.PyArray_DATA(b)
    cdef int rc
    with nogil:
        rc = fp_matmul_u8i8_acc32(pa, pb, is_unsigned, pc, &out[0, 0], pcnt, M, K, N, block,
                                  saturate, nthreads)
    if rc == -1:
        raise MemoryError("matmul: out of memory for the packed operands")
    return rc == 0


def has_openmp():
    """True when the extension was compiled with OpenMP."""
    return bool(FP_OPENMP)
