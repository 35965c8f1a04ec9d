# cython: language_level=3
"""Compiled tensor-core accumulation kernels (private; ``fixedpoint.tensorcore`` validates).

Operands are uint8 code matrices of any strides; per-format tables (built by
``fixedpoint.tensorcore``) give each code's significand, exponents and value.
"""
from cython.parallel cimport prange
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t
from libc.string cimport memcpy

from fp_tc cimport *

ZERO_EXP = FP_TC_ZEXP
LIMBS = FP_TC_LIMBS
PATHS = {"auto": FP_TC_PATH_AUTO, "avx2": FP_TC_PATH_AVX2, "avx512": FP_TC_PATH_AVX512}

cdef const uint8_t _ZERO = 0


cdef fp_tc_params _params(dict p):
    cdef fp_tc_params prm
    prm.block = p["block"]
    prm.frac_bits = p["frac_bits"]
    prm.res_frac = p["res_frac"]
    prm.exact_exp = p["exact_exp"]
    prm.rne = p["rne"]
    prm.promote = p["promote"]
    return prm


cdef fp_tc_table _table(dict t) except *:
    cdef fp_tc_table tab
    cdef const int32_t[::1] sig = t["sig"]
    cdef const int32_t[::1] exp = t["exp"]
    cdef const float[::1] val = t["val"]
    cdef const int8_t[::1] e8 = t["e8"]
    cdef const int8_t[::1] l8 = t["l8"]
    cdef const int8_t[::1] l8neg = t["l8neg"]
    cdef const int8_t[::1] l8pos = t["l8pos"]
    cdef const uint8_t[::1] neg = t["neg"]
    cdef const uint8_t[::1] special = t["special"]
    if (sig.shape[0] != 256 or exp.shape[0] != 256 or val.shape[0] != 256 or e8.shape[0] != 256
            or l8.shape[0] != 256 or l8neg.shape[0] != 256 or l8pos.shape[0] != 256
            or neg.shape[0] != 256 or special.shape[0] != 256):
        raise ValueError("table: expected 256 entries per field")
    memcpy(tab.sig, &sig[0], 256 * sizeof(int32_t))
    memcpy(tab.exp, &exp[0], 256 * sizeof(int32_t))
    memcpy(tab.val, &val[0], 256 * sizeof(float))
    memcpy(tab.e8, &e8[0], 256)
    memcpy(tab.l8, &l8[0], 256)
    memcpy(tab.l8neg, &l8neg[0], 256)
    memcpy(tab.l8pos, &l8pos[0], 256)
    memcpy(tab.neg, &neg[0], 256)
    memcpy(tab.special, &special[0], 256)
    tab.man = t["man"]
    tab.lo = t["lo"]
    return tab


cdef fp_tc_mat _mat(const uint8_t[:, :] x):
    cdef fp_tc_mat m
    m.p = &x[0, 0] if x.shape[0] > 0 and x.shape[1] > 0 else &_ZERO
    m.rs = x.strides[0]
    m.cs = x.strides[1]
    return m


cdef int _check_args(kmap, int64_t Kp, c0, float[:, ::1] out, int64_t M, int64_t N,
                     const int64_t **pk, const float **pc) except -1:
    """Check ``kmap`` (None or int64 (Kp,)), ``c0`` (None or float32 (M, N)) and
    ``out`` (M, N); point ``pk`` and ``pc`` at their data (NULL when absent or
    empty).  The caller's arrays keep the data alive for the call."""
    cdef const int64_t[::1] km
    cdef const float[:, ::1] cv
    if kmap is not None:
        km = kmap
        if km.shape[0] != Kp:
            raise ValueError("kmap: expected Kp entries")
        if Kp > 0:
            pk[0] = &km[0]
    if c0 is not None:
        cv = c0
        if cv.shape[0] != M or cv.shape[1] != N:
            raise ValueError("c0: expected shape (M, N)")
        if M > 0 and N > 0:
            pc[0] = &cv[0, 0]
    if out.shape[0] != M or out.shape[1] != N:
        raise ValueError("out: expected shape (M, N)")
    return 0


def matmul_generic(const uint8_t[:, :] a, const uint8_t[:, :] b, int64_t Kp, kmap, dict ta,
                   dict tb, c0, float[:, ::1] out, dict params, int nthreads):
    """The general model, element by element (any parameters).  ``kmap``: None
    or int64 (Kp,) source indexes (-1: pad); ``c0``: None or float32 (M, N)
    C-contiguous initial accumulator.  Returns the number of NaN/Inf codes."""
    cdef fp_tc_params prm = _params(params)
    cdef fp_tc_table tab_a = _table(ta)
    cdef fp_tc_table tab_b = _table(tb)
    cdef int64_t M = a.shape[0], K = a.shape[1], N = b.shape[1]
    cdef fp_tc_mat A = _mat(a)
    cdef fp_tc_mat B = _mat(b)
    cdef const int64_t *pk = NULL
    cdef const float *pc = NULL
    _check_args(kmap, Kp, c0, out, M, N, &pk, &pc)
    cdef int64_t ci, nspecial
    if M == 0 or N == 0:
        return 0
    with nogil:
        nspecial = fp_tc_count_special(A, M, K, &tab_a) + fp_tc_count_special(B, K, N, &tab_b)
        for ci in prange(M, num_threads=nthreads, schedule="static"):
            fp_tc_generic_rows(A, B, K, Kp, N, pk, &tab_a, &tab_b, pc, &out[0, 0], ci, ci + 1, &prm)
    return nspecial


def matmul_fast(const uint8_t[:, :] a, const uint8_t[:, :] b, int64_t Kp, kmap, dict ta,
                dict tb, c0, float[:, ::1] out, dict params, str path, int nthreads):
    """A SIMD path from the codes (``path``: "auto", "avx2" or "avx512").
    Returns None when the CPU lacks that path, else the number of NaN/Inf codes."""
    cdef fp_tc_params prm = _params(params)
    cdef fp_tc_table tab_a = _table(ta)
    cdef fp_tc_table tab_b = _table(tb)
    cdef int64_t M = a.shape[0], K = a.shape[1], N = b.shape[1]
    cdef fp_tc_mat A = _mat(a)
    cdef fp_tc_mat B = _mat(b)
    cdef int ipath = PATHS[path]
    cdef const int64_t *pk = NULL
    cdef const float *pc = NULL
    cdef int64_t nspecial = 0
    cdef int rc
    _check_args(kmap, Kp, c0, out, M, N, &pk, &pc)
    if M == 0 or N == 0:
        return 0
    with nogil:
        rc = fp_tc_fast(A, B, M, K, Kp, N, pk, &tab_a, &tab_b, pc, &out[0, 0], &prm, ipath,
                        nthreads, &nspecial)
    if rc == -1:
        raise MemoryError("fp8_matmul: out of memory for the packed operands")
    return None if rc == -2 else nspecial
