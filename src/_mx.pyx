# cython: language_level=3
"""Compiled block-scaled tensor-core kernels (private; ``fixedpoint.blockscaled`` validates).

Rows of the output are independent: the threads split rows, so results never
depend on the number of threads.
"""
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t

from fp_mx cimport *

cnp.import_array()


def mma_f8(const float[:, ::1] fa, const int16_t[:, ::1] ea, const float[:, ::1] fb,
           const int16_t[:, ::1] eb, const int32_t[:, ::1] sa, const int32_t[:, ::1] sb,
           const uint8_t[:, ::1] san, const uint8_t[:, ::1] sbn, const float[:, ::1] c,
           float[:, ::1] out, int nthreads):
    """kind::f8f6f4 / mxf8f6f4: A (M x Kp), B transposed (N x Kp), Kp a multiple
    of 32; scale exponents and flags M x Kp/32 and N x Kp/32 (or None); c and
    out M x N (c may be None)."""
    cdef int64_t M = fa.shape[0], Kp = fa.shape[1], N = fb.shape[0]
    if M == 0 or N == 0:
        return
    cdef int64_t T = Kp // 32
    cdef const int32_t *psa = &sa[0, 0] if sa is not None and T > 0 else NULL
    cdef const int32_t *psb = &sb[0, 0] if sb is not None and T > 0 else NULL
    cdef const uint8_t *pan = &san[0, 0] if san is not None and T > 0 else NULL
    cdef const uint8_t *pbn = &sbn[0, 0] if sbn is not None and T > 0 else NULL
    cdef const float *pc = &c[0, 0] if c is not None else NULL
    cdef const float *pfa = &fa[0, 0] if Kp > 0 else NULL
    cdef const float *pfb = &fb[0, 0] if Kp > 0 else NULL
    cdef const int16_t *pea = &ea[0, 0] if Kp > 0 else NULL
    cdef const int16_t *peb = &eb[0, 0] if Kp > 0 else NULL
    cdef float *pout = &out[0, 0]
    cdef int64_t nchunks = min(M, 8 * nthreads), ci
    with nogil:
        for ci in prange(nchunks, num_threads=nthreads, schedule="static"):
            fp_mx_f8_rows(pfa, pea, pfb, peb, psa, psb, pan, pbn, pc, pout,
                          ci * M // nchunks, (ci + 1) * M // nchunks, Kp, N)


def mma_f4(const int8_t[:, ::1] a, const int8_t[:, ::1] b, const int32_t[:, ::1] ma,
           const int32_t[:, ::1] xa, const int32_t[:, ::1] mb, const int32_t[:, ::1] xb,
           const uint8_t[:, ::1] nan_a, const uint8_t[:, ::1] nan_b, const float[:, ::1] c,
           float[:, ::1] out, int nthreads):
    """kind::mxf4 / mxf4nvf4: twice the E2M1 values as int8, A (M x Kp) and B
    transposed (N x Kp), Kp a multiple of 64; per 16-element group scale
    significands (eighths) and exponents; NaN-scale flags per 64-step."""
    cdef int64_t M = a.shape[0], Kp = a.shape[1], N = b.shape[0]
    if M == 0 or N == 0:
        return
    cdef const float *pc = &c[0, 0] if c is not None else NULL
    cdef bint nonempty = Kp > 0
    cdef const int8_t *pa = &a[0, 0] if nonempty else NULL
    cdef const int8_t *pb = &b[0, 0] if nonempty else NULL
    cdef const int32_t *pma = &ma[0, 0] if nonempty else NULL
    cdef const int32_t *pxa = &xa[0, 0] if nonempty else NULL
    cdef const int32_t *pmb = &mb[0, 0] if nonempty else NULL
    cdef const int32_t *pxb = &xb[0, 0] if nonempty else NULL
    cdef const uint8_t *pna = &nan_a[0, 0] if nonempty else NULL
    cdef const uint8_t *pnb = &nan_b[0, 0] if nonempty else NULL
    cdef float *pout = &out[0, 0]
    # row chunks (one scratch buffer each); rows are independent
    cdef int64_t nchunks = min(M, 8 * nthreads), ci
    cdef int failed = 0
    with nogil:
        for ci in prange(nchunks, num_threads=nthreads, schedule="static"):
            if fp_mx_f4_rows(pa, pb, pma, pxa, pmb, pxb, pna, pnb, pc, pout,
                             ci * M // nchunks, (ci + 1) * M // nchunks, Kp, N) != 0:
                failed = 1
    if failed:
        raise MemoryError("blockscaled_matmul: out of memory for the group sums")
