# cython: language_level=3
"""Compiled integer kernels (private).  The wrappers in ``fixedpoint.intops``
and ``fixedpoint.accumulate`` validate values; these check only what keeps
memory safe (types, contiguity, shapes) and loop."""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint32_t

from fp_int cimport *

from fp_chunks cimport CHUNK, chunk_len, n_chunks

cnp.import_array()

_DTYPES = {np.dtype(np.int8): FP_I8, np.dtype(np.uint8): FP_U8,
           np.dtype(np.int16): FP_I16, np.dtype(np.uint16): FP_U16}
_WIDE = {np.dtype(np.int8): np.dtype(np.int16), np.dtype(np.uint8): np.dtype(np.uint16),
         np.dtype(np.int16): np.dtype(np.int32), np.dtype(np.uint16): np.dtype(np.uint32)}
_OPS = {"mul": FP_OP_MUL, "add": FP_OP_ADD, "mul_wide": FP_OP_MULWIDE}

#: Instruction paths of the int16-pair GEMM, by name (see src/fp_int.h).
GEMM_PATHS = {"portable": FP_GEMM_PORTABLE, "avx2": FP_GEMM_AVX2,
              "vnni256": FP_GEMM_VNNI256, "vnni512": FP_GEMM_VNNI512}
#: The paths this build compiled (whether or not this CPU runs them).
GEMM_COMPILED = tuple(name for name, on in (("portable", True),
                                            ("avx2", bool(FP_HAVE_AVX2_KERNELS)),
                                            ("vnni256", bool(FP_HAVE_AVX512_KERNELS)),
                                            ("vnni512", bool(FP_HAVE_AVX512_KERNELS))) if on)


cdef int _storage(cnp.ndarray x, str name) except -1:
    """The kernel storage code of ``x`` (C-contiguous int8/uint8/int16/uint16)."""
    dt = x.dtype
    if dt not in _DTYPES or not dt.isnative:
        raise TypeError(f"{name}: expected a native int8, uint8, int16 or uint16 array, got {dt}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(x):
        raise ValueError(f"{name}: expected a C-contiguous array")
    return _DTYPES[dt]


cdef void _check_out(cnp.ndarray x, str name, dtype, tuple shape) except *:
    if x.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {x.dtype}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(x) or not cnp.PyArray_ISWRITEABLE(x):
        raise ValueError(f"{name}: expected a writeable C-contiguous array")
    if (<object>x).shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {(<object>x).shape}")


def binop(str op, cnp.ndarray a, cnp.ndarray b, cnp.ndarray out, bint saturate,
          int lo, int hi, int bits, int nthreads):
    """out = op(a, b) elementwise; a, b contiguous, same storage dtype and size."""
    if op not in _OPS:
        raise ValueError(f"op: expected one of {list(_OPS)}, got {op!r}")
    cdef int c_op = _OPS[op]
    cdef int dtype = _storage(a, "a")
    if b.dtype != a.dtype:
        raise TypeError(f"b: expected dtype {a.dtype} like a, got {b.dtype}")
    _storage(b, "b")
    want = _WIDE[a.dtype] if c_op == FP_OP_MULWIDE else a.dtype
    _check_out(out, "out", want, (<object>out).shape)
    if b.size != a.size or out.size != a.size:
        raise ValueError(f"a, b and out: sizes differ ({a.size}, {b.size}, {out.size})")
    if not 1 <= bits <= 16:
        raise ValueError(f"bits: expected 1 to 16, got {bits}")
    if nthreads < 1:
        raise ValueError(f"nthreads: expected a positive int, got {nthreads}")
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


def matmul_generic(const int32_t[:, ::1] a, const int32_t[:, ::1] b, c0, cnp.ndarray out,
                   counts, int64_t block, int bits, bint saturate, bint pair_mode,
                   int64_t plo, int64_t phi, int nthreads):
    """out = A @ B (+ c0) through a `bits`-bit register, in int64 (any operand).

    out is int64, or int32 for a register of at most 32 bits; counts int64."""
    cdef int64_t M = a.shape[0], K = a.shape[1], N = b.shape[1]
    if b.shape[0] != K:
        raise ValueError(f"b: expected {K} rows, got {b.shape[0]}")
    if not 8 <= bits <= 64 or block < 1 or nthreads < 1 or plo > phi:
        raise ValueError("bits, block, nthreads or the pair range: out of range")
    cdef int out64 = out.dtype == np.int64
    if not out64 and bits > 32:
        raise TypeError("out: a register wider than 32 bits needs int64")
    _check_out(out, "out", np.int64 if out64 else np.int32, (M, N))
    cdef const int64_t *pc = NULL
    cdef int64_t *pcnt = NULL
    cdef const int64_t[:, ::1] c0v
    cdef int64_t[:, ::1] cntv
    if c0 is not None:
        c0v = c0
        if c0v.shape[0] not in (1, M) or c0v.shape[1] != N:
            raise ValueError(f"c0: expected shape {(M, N)} or {(1, N)}")
        pc = &c0v[0, 0] if M * N > 0 else NULL
        ldc0 = N if c0v.shape[0] == M else 0
    if counts is not None:
        cntv = counts
        if cntv.shape[0] != M or cntv.shape[1] != N:
            raise ValueError(f"counts: expected shape {(M, N)}")
        pcnt = &cntv[0, 0] if M * N > 0 else NULL
    if M == 0 or N == 0:
        return
    cdef const int32_t *pa = &a[0, 0] if K > 0 else NULL
    cdef const int32_t *pb = &b[0, 0] if K > 0 else NULL
    cdef void *po = cnp.PyArray_DATA(out)
    cdef int rc
    with nogil:
        rc = fp_matmul_generic(pa, pb, pc, po, out64, pcnt, M, K, N, block, bits, saturate,
                               pair_mode, plo, phi, nthreads)
    if rc == -1:
        raise MemoryError("matmul: out of memory for the accumulator scratch rows")


def gemm_available(int path):
    """True when the int16-pair GEMM path was compiled and this CPU runs it."""
    return 0 <= path < FP_GEMM_NPATHS and bool(fp_gemm_path_available(path))


def gemm_i16(cnp.ndarray a, cnp.ndarray b, c0, int32_t[:, ::1] out, counts, int path,
             bint merge, bint saturate, int bits, bint pair_mode, int64_t block,
             int32_t plo, int32_t phi, int64_t maxblk, int nthreads):
    """out = A @ B (+ c0) on int16 pairs into a register of 8..32 bits.

    a, b: 2-D C-contiguous int8/uint8/int16/uint16 whose values fit int16;
    c0: None, M x N int32, or 1 x N (one row for every row of out);
    counts (merge mode only): int64; maxblk bounds |block sum| (0: unknown);
    the caller has proved the mode exact (see fixedpoint/accumulate.py)."""
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError("a and b: expected 2-D arrays")
    cdef int da = _storage(a, "a"), db = _storage(b, "b")
    cdef int64_t M = a.shape[0], K = a.shape[1], N = b.shape[1]
    if b.shape[0] != K:
        raise ValueError(f"b: expected {K} rows, got {b.shape[0]}")
    if out.shape[0] != M or out.shape[1] != N:
        raise ValueError(f"out: expected shape {(M, N)}")
    if not 8 <= bits <= 32 or block < 1 or nthreads < 1 or plo > phi or maxblk < 0:
        raise ValueError("bits, block, nthreads, maxblk or the pair range: out of range")
    cdef const int32_t *pc = NULL
    cdef int64_t ldc0 = N
    cdef int64_t *pcnt = NULL
    cdef const int32_t[:, ::1] c0v
    cdef int64_t[:, ::1] cntv
    if c0 is not None:
        c0v = c0
        if c0v.shape[0] not in (1, M) or c0v.shape[1] != N:
            raise ValueError(f"c0: expected shape {(M, N)} or {(1, N)}")
        pc = &c0v[0, 0] if M * N > 0 else NULL
        ldc0 = N if c0v.shape[0] == M else 0
    if counts is not None:
        if not merge:
            raise ValueError("counts: only counted in merge mode")
        cntv = counts
        if cntv.shape[0] != M or cntv.shape[1] != N:
            raise ValueError(f"counts: expected shape {(M, N)}")
        pcnt = &cntv[0, 0] if M * N > 0 else NULL
    if M == 0 or N == 0:
        return
    cdef const void *pa = cnp.PyArray_DATA(a)
    cdef const void *pb = cnp.PyArray_DATA(b)
    cdef int32_t *po = &out[0, 0]
    cdef int rc
    with nogil:
        rc = fp_gemm_i16(pa, da, pb, db, pc, ldc0, po, pcnt, M, K, N, path, merge, saturate,
                         bits, pair_mode, block, plo, phi, maxblk, nthreads)
    if rc == -1:
        raise MemoryError("matmul: out of memory for the packed operands")
    if rc == -2:
        raise ValueError(f"path: instruction path {path} is not available on this build or CPU")


def has_openmp():
    """True when the extension was compiled with OpenMP."""
    return bool(FP_OPENMP)
