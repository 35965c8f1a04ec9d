# cython: language_level=3
"""Compiled tensor-core accumulation kernels (private; ``fixedpoint.tensorcore`` validates)."""
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t

from fp_tc cimport *

cnp.import_array()

ZERO_EXP = FP_TC_ZEXP


cdef fp_tc_params _params(dict p):
    cdef fp_tc_params prm
    prm.block = p["block"]
    prm.frac_bits = p["frac_bits"]
    prm.res_frac = p["res_frac"]
    prm.exact_exp = p["exact_exp"]
    prm.rne = p["rne"]
    prm.promote = p["promote"]
    return prm


def matmul_generic(const int32_t[:, ::1] sa, const int32_t[:, ::1] xa, int ma, int emin_a,
                   const int32_t[:, ::1] sb, const int32_t[:, ::1] xb, int mb, int emin_b,
                   float[:, ::1] out, dict params, int nthreads):
    """The general model, element by element (any parameters)."""
    cdef fp_tc_params prm = _params(params)
    cdef int64_t M = sa.shape[0], Kp = sa.shape[1], N = sb.shape[1]
    if M == 0 or N == 0:
        return
    cdef int64_t ci, i0, i1, nchunks = M
    cdef const int32_t *psa = &sa[0, 0] if Kp > 0 else NULL
    cdef const int32_t *pxa = &xa[0, 0] if Kp > 0 else NULL
    cdef const int32_t *psb = &sb[0, 0] if Kp > 0 else NULL
    cdef const int32_t *pxb = &xb[0, 0] if Kp > 0 else NULL
    with nogil:
        for ci in prange(nchunks, num_threads=nthreads, schedule="static"):
            fp_tc_generic_rows(psa, pxa, ma, emin_a, psb, pxb, mb, emin_b, &out[0, 0],
                               ci, ci + 1, Kp, N, &prm)


def matmul_fast(const uint8_t[:, ::1] a, const uint8_t[:, ::1] b, int64_t Kp,
                const float[::1] lva, const int8_t[::1] lea, const uint8_t[::1] lsa,
                const float[::1] lvb, const int8_t[::1] leb, const uint8_t[::1] lsb,
                float[:, ::1] out, dict params, int nthreads):
    """AVX2 path from the codes.  Returns None when the CPU has no AVX2, else
    the number of NaN/Inf codes seen in a and b."""
    cdef fp_tc_params prm = _params(params)
    cdef int64_t M = a.shape[0], K = a.shape[1], N = b.shape[1]
    cdef int64_t nspecial = 0
    if M == 0 or N == 0:
        return 0
    cdef const uint8_t *pa = &a[0, 0] if K > 0 else NULL
    cdef const uint8_t *pb = &b[0, 0] if K > 0 else NULL
    cdef int rc
    with nogil:
        rc = fp_tc_fast(pa, pb, M, K, Kp, N, &lva[0], &lea[0], &lsa[0], &lvb[0], &leb[0],
                        &lsb[0], &out[0, 0], &prm, nthreads, &nspecial)
    if rc == -1:
        raise MemoryError("fp8_matmul: out of memory for the packed operands")
    return None if rc == -2 else nspecial
