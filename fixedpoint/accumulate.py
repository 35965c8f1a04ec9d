"""Integer matrix multiplication through an accumulator of chosen width.

An :class:`Accumulator` says how the products of a dot product are summed:
``block`` terms are added exactly, then that block sum is added into a
signed ``bits``-bit register that either wraps (modulo ``2**bits``) or
saturates (clamps), block after block in K order.  A term is one product,
or, with ``pair_bits``, the sum of two adjacent products clamped to a
``pair_bits``-bit signed range.  Wrapping is associative, so for ``"wrap"``
the result is the exact sum of the terms modulo ``2**bits`` whatever the
block; saturation is not, so the block size decides the bits.

Hardware this describes (docs/semantics.md section 2):

* ``Accumulator(32, "wrap")``: ``mma.sync ... .s32.s8.s8.s32``, ONNX
  MatMulInteger on CPUs with VNNI (exact while the sums stay inside int32), a
  Verilog ``accum <= accum + a * b`` register.
* ``Accumulator(32, "saturate", block=16)``: the Hopper cuBLASLt INT8 GEMM
  (``torch._int_mm``), measured: a recording designed to separate block
  sizes fits 16 and nothing else; the earlier recordings fit 16 and 32
  alike (so ``block=32`` reproduces them too).
* ``Accumulator(32, "saturate", block=32)`` with ``c=``: ``mma.sync ...
  .satfinite.s32.s8.s8.s32`` (one clamp per 32-product instruction).
* ``Accumulator(32, "wrap", block=2, pair_bits=16)`` with
  ``fmt=("uint8", "int8")``: x86 CPUs without VNNI (AVX2 ``vpmaddubsw``),
  as ONNX Runtime's MatMulInteger / QLinearMatMul u8 x s8 kernels and
  fbgemm-style kernels compute (see :class:`Accumulator`).

The compiled kernels are exact on every path; which instruction path runs
(AVX-512 VNNI, AVX2, portable C, or the generic int64 loop) is chosen from
the CPU and can be forced with the ``FIXEDPOINT_GEMM_PATH`` environment
variable (:func:`gemm_path`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import _int
from . import dask_arrays
from ._checks import (as_format_array, as_integer_array, check_choice, check_int_range,
                      check_nonneg_int, check_positive_int, matmul_operands, resolve_threads)
from .formats import as_format, int_format_pair
from .intops import OVERFLOW_MODES

__all__ = ["Accumulator", "matmul", "dot", "gemm_path"]

_MAX_BLOCK = 1 << 24
_I32_MAX = (1 << 31) - 1

#: Environment variable that forces the instruction path of the integer GEMM.
PATH_ENV = "FIXEDPOINT_GEMM_PATH"
#: Its values: "auto" (the fastest this CPU runs), one of the compiled paths,
#: or "generic" (the int64 loop for everything).
PATHS = ("auto", "vnni512", "vnni256", "avx2", "portable", "generic")


@dataclass(frozen=True)
class Accumulator:
    """A signed accumulator register of ``bits`` bits (8 to 64).

    Parameters
    ----------
    bits : int
        Register width, 8 to 64.
    overflow : {"saturate", "wrap"}
        ``"saturate"``: clamp to ``[-2**(bits-1), 2**(bits-1) - 1]`` at every
        add into the register; ``"wrap"``: modulo ``2**bits``.
    block : int
        How many terms are summed exactly before each add into the register
        (1 to 2**24).
    pair_bits : int, optional
        When set (2 to 64), a term is not one product but a pair: the products
        ``k = 2p`` and ``k = 2p + 1`` (``p = 0, 1, ...``, counted from the
        first element of the operands as given; an odd last product is paired
        with 0) are summed exactly and the pair sum is clamped to the signed
        ``pair_bits``-bit range before it joins the block sum.

    Notes
    -----
    ``pair_bits=16`` is x86 ``vpmaddubsw`` (u8 x s8 byte pairs summed with
    signed 16-bit saturation).  ONNX Runtime (MLAS ``MlasGemmU8S8KernelAvx2``
    and ``MlasGemvU8S8KernelAvx2``, the path of MatMulInteger and
    QLinearMatMul with uint8 A and int8 B on CPUs without AVX-VNNI or
    AVX512-VNNI) packs k in groups of four, pads K with zeros, and runs
    ``vpmaddubsw`` (pairs ``2p, 2p + 1``, saturated to int16), then
    ``vpmaddwd`` with ones (two adjacent pairs summed exactly into int32),
    then ``vpaddd`` (wrapping int32 adds): that is
    ``Accumulator(32, "wrap", block=2, pair_bits=16)``.  The saturation applies
    to the raw codes: MLAS subtracts the zero points afterwards, exactly, from
    row and column sums.  Proved bit for bit against ONNX Runtime on an
    emulated AVX2 CPU in ``tests/test_gemm_paths.py``.

    Examples
    --------
    >>> Accumulator(32, "saturate", block=32).max
    2147483647
    >>> Accumulator(32, "wrap", block=2, pair_bits=16).pair_max
    32767
    """

    bits: int = 32
    overflow: str = "saturate"
    block: int = 1
    pair_bits: int | None = None

    def __post_init__(self):
        bits = check_positive_int(self.bits, "bits")
        if not 8 <= bits <= 64:
            raise ValueError(f"bits: accumulator width must be between 8 and 64, got {bits}")
        check_choice(self.overflow, "overflow", OVERFLOW_MODES)
        block = check_positive_int(self.block, "block")
        if block > _MAX_BLOCK:
            raise ValueError(f"block: must be at most {_MAX_BLOCK}, got {block}")
        pair_bits = self.pair_bits
        if pair_bits is not None:
            if isinstance(pair_bits, bool) or not isinstance(pair_bits, (int, np.integer)):
                raise TypeError(f"pair_bits: expected None or an int, got "
                                f"{type(pair_bits).__name__}")
            if not 2 <= pair_bits <= 64:
                raise ValueError(f"pair_bits: expected None or 2 to 64, got {pair_bits}")
            pair_bits = int(pair_bits)
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "block", block)
        object.__setattr__(self, "pair_bits", pair_bits)

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def pair_min(self) -> int | None:
        """Lower clamp of a pair sum (None without pairs)."""
        return None if self.pair_bits is None else -(1 << (self.pair_bits - 1))

    @property
    def pair_max(self) -> int | None:
        """Upper clamp of a pair sum (None without pairs)."""
        return None if self.pair_bits is None else (1 << (self.pair_bits - 1)) - 1

    @property
    def dtype(self) -> np.dtype:
        """int32 up to 32 bits, int64 above."""
        return np.dtype(np.int32 if self.bits <= 32 else np.int64)

    def _terms(self, fa, fb, k):
        """(a bound on |term|, the number of terms) of a k-long product."""
        maxprod = _maxabs(fa) * _maxabs(fb)
        if self.pair_bits is None:
            return maxprod, k
        return min(2 * maxprod, -self.pair_min), (k + 1) // 2

    def can_overflow(self, fmt_a, fmt_b, k, c_max=0) -> bool:
        """Whether a ``k``-long product of ``fmt_a`` x ``fmt_b`` operands, from an
        initial register value of magnitude at most ``c_max``, can overflow.

        Every value the register takes is c plus a prefix of the terms, so
        when ``c_max + terms * max|term|`` fits the register, no add can
        overflow: wrap, saturate and the exact sum agree, whatever the block,
        and :func:`matmul`'s overflow counts are all zero.

        Examples
        --------
        >>> Accumulator(32).can_overflow("int8", "int8", 131071)    # 131071 * 128^2 < 2^31
        False
        >>> Accumulator(32).can_overflow("int8", "int8", 131072)
        True
        """
        fa, fb = as_format(fmt_a, "fmt_a", "int"), as_format(fmt_b, "fmt_b", "int")
        k = check_nonneg_int(k, "k")
        c_max = check_nonneg_int(c_max, "c_max")
        maxterm, nterms = self._terms(fa, fb, k)
        return c_max + nterms * maxterm > self.max


def gemm_path() -> str:
    """The instruction path of the integer GEMM kernels in this process.

    ``FIXEDPOINT_GEMM_PATH`` (read at every call) forces one of
    ``"vnni512"`` (AVX-512 VNNI ``vpdpwssd`` on int16 pairs, 512-bit vectors;
    int8/uint8 x int8 operands summed modulo 2^32 without counts take
    ``vpdpbusd`` on four bytes, the int8 side shifted to uint8 and corrected
    by 128 x the column sums of B), ``"vnni256"`` (the same on 256-bit
    vectors), ``"avx2"`` (``vpmaddwd``), ``"portable"`` (plain C the compiler
    vectorises) or ``"generic"`` (the int64 loop for every product); ``"auto"``
    or unset picks the fastest path the build and the CPU offer.  Every path
    gives the same bits.

    Examples
    --------
    >>> from fixedpoint.accumulate import gemm_path
    >>> gemm_path() in ("vnni512", "vnni256", "avx2", "portable", "generic")
    True
    """
    name = os.environ.get(PATH_ENV, "auto").strip().lower() or "auto"
    if name not in PATHS:
        raise ValueError(f"{PATH_ENV}: expected one of {list(PATHS)}, got {name!r}")
    if name == "auto":
        for cand in ("vnni512", "avx2", "portable"):
            if _int.gemm_available(_int.GEMM_PATHS[cand]):
                return cand
    if name in _int.GEMM_PATHS and not _int.gemm_available(_int.GEMM_PATHS[name]):
        raise ValueError(f"{PATH_ENV}: the {name!r} path is not available on this build or CPU")
    return name


def _maxabs(f) -> int:
    return max(abs(f.min), abs(f.max))


def _fits_int16(f) -> bool:
    return f.min >= -(1 << 15) and f.max < (1 << 15)


def _matmul_2d(a, b, c0, fa, fb, acc, want_counts, nthreads, path):
    """One M x K @ K x N product; a, b C-contiguous in their formats' storage
    dtypes, c0 None, M x N or 1 x N (the same row for every row) integers.
    Returns (out of acc.dtype, int64 counts)."""
    M, K = a.shape
    N = b.shape[1]
    pairs = acc.pair_bits is not None
    maxterm, nterms = acc._terms(fa, fb, K)
    if pairs:
        plo, phi = acc.pair_min, acc.pair_max
        pair_exact = 2 * _maxabs(fa) * _maxabs(fb) <= _I32_MAX     # pair sums exact in int32 lanes
    else:
        plo, phi, pair_exact = 0, 0, True
    cmax = 0 if c0 is None or c0.size == 0 else max(int(c0.max()), -int(c0.min()))
    no_overflow = not acc.can_overflow(fa, fb, K, cmax)
    fast = (path != "generic" and _fits_int16(fa) and _fits_int16(fb) and pair_exact
            and K < (1 << 31))
    plo32, phi32 = max(plo, -(1 << 31)), min(phi, _I32_MAX)
    if no_overflow:
        counts = np.zeros((M, N), dtype=np.int64) if want_counts else None
        if fast and cmax + nterms * maxterm <= _I32_MAX:
            out = _gemm(a, b, c0, path, merge=False, saturate=False, bits=32, pairs=pairs,
                        block=1, plo=plo32, phi=phi32, counts=None, nthreads=nthreads)
            return out.astype(acc.dtype, copy=False), counts
        whole = Accumulator(acc.bits, "wrap", min(max(nterms, 1), _MAX_BLOCK), acc.pair_bits)
        out, _ = _generic(a, b, c0, whole, False, nthreads)
        return out, counts
    if fast and acc.bits <= 32:
        saturate = acc.overflow == "saturate"
        if not saturate and not want_counts:
            # the sum of the terms modulo 2^32, wrapped to the register's width
            out = _gemm(a, b, c0, path, merge=False, saturate=False, bits=acc.bits, pairs=pairs,
                        block=1, plo=plo32, phi=phi32, counts=None, nthreads=nthreads)
            return out, None
        # blocks are summed exactly in int32 lanes, then added into the register
        # (for bits < 32 the register plus a block sum must also be exact in int32)
        if acc.block * maxterm <= (_I32_MAX if acc.bits == 32 else 1 << 30):
            counts = np.empty((M, N), dtype=np.int64) if want_counts else None
            out = _gemm(a, b, c0, path, merge=True, saturate=saturate, bits=acc.bits,
                        pairs=pairs, block=acc.block, plo=plo32, phi=phi32, counts=counts,
                        nthreads=nthreads, maxblk=acc.block * maxterm)
            return out, counts
    return _generic(a, b, c0, acc, want_counts, nthreads)


def _gemm(a, b, c0, path, *, merge, saturate, bits, pairs, block, plo, phi, counts, nthreads,
          maxblk=0):
    M, N = a.shape[0], b.shape[1]
    out = np.empty((M, N), dtype=np.int32)
    c32 = None if c0 is None else np.ascontiguousarray(c0, dtype=np.int32)
    _int.gemm_i16(a, b, c32, out, counts, _int.GEMM_PATHS[path], merge, saturate, bits, pairs,
                  block, plo, phi, maxblk, nthreads)
    return out


def _generic(a, b, c0, acc, want_counts, nthreads):
    M, N = a.shape[0], b.shape[1]
    out = np.empty((M, N), dtype=acc.dtype)
    counts = np.empty((M, N), dtype=np.int64) if want_counts else None
    c64 = None if c0 is None else np.ascontiguousarray(np.broadcast_to(c0, (M, N)), dtype=np.int64)
    pairs = acc.pair_bits is not None
    _int.matmul_generic(np.ascontiguousarray(a, dtype=np.int32),
                        np.ascontiguousarray(b, dtype=np.int32), c64, out, counts,
                        acc.block, acc.bits, acc.overflow == "saturate", pairs,
                        acc.pair_min if pairs else 0, acc.pair_max if pairs else 0, nthreads)
    return out, counts


def _as_array(x):
    """0-d results stay arrays (``matmul_operands`` returns NumPy scalars)."""
    return None if x is None else np.asarray(x)


def matmul(a, b, fmt, *, acc=None, c=None, return_overflow=False, num_threads=None):
    """Integer matrix product ``a @ b`` through an :class:`Accumulator`.

    Parameters
    ----------
    a : array_like of integers, shape (..., M, K) or (K,)
    b : array_like of integers, shape (..., K, N) or (K,)
        Operands in their formats' ranges; leading dimensions broadcast as in
        ``numpy.matmul``, and 1-D operands are promoted and squeezed the same
        way (two vectors give a 0-d array).
    fmt : IntFormat or str, or a pair (fmt_a, fmt_b)
        Format of both operands (``"int8"``, ``"uint8"``, ``"int4"``, ...), or
        one per operand (``("uint8", "int8")``); each operand is checked
        against its own format.
    acc : Accumulator, optional
        Default ``Accumulator(32, "saturate")``.
    c : array_like of integers, optional
        Initial accumulator value (``D = A @ B + C``), broadcast to the
        output shape, inside the accumulator's range.
    return_overflow : bool
        Also return, per output element, how many block adds wrapped or
        clamped (int64).
    num_threads : int, optional
        Threads to use; results are identical for any count.

    Returns
    -------
    out : ndarray of int32 (int64 for accumulators wider than 32 bits)
    overflow_counts : ndarray of int64, only if ``return_overflow``

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> a = np.full((1, 4), 127, np.int8); b = np.full((4, 1), 127, np.int8)
    >>> fp.matmul(a, b, "int8", acc=fp.Accumulator(16, "saturate"), return_overflow=True)
    (array([[32767]], dtype=int32), array([[2]]))
    >>> fp.matmul(a, b, "int8", acc=fp.Accumulator(16, "wrap"))
    array([[-1020]], dtype=int32)

    u8 x s8 pairs saturated to int16, as x86 ``vpmaddubsw``:

    >>> u8s8 = fp.Accumulator(32, "wrap", block=2, pair_bits=16)
    >>> fp.matmul([[255, 255]], [[127], [127]], ("uint8", "int8"), acc=u8s8)
    array([[32767]], dtype=int32)
    """
    if dask_arrays.is_dask(a, b, c):
        return dask_arrays.matmul(matmul, a, b, fmt, acc=acc, c=c, return_overflow=return_overflow,
                                  num_threads=num_threads)
    fa, fb = int_format_pair(fmt, "(fmt_a, fmt_b)")
    if acc is None:
        acc = Accumulator()
    if not isinstance(acc, Accumulator):
        raise TypeError(f"acc: expected an Accumulator, got {type(acc).__name__}")
    if not isinstance(return_overflow, (bool, np.bool_)):
        raise TypeError(f"return_overflow: expected a bool, got {type(return_overflow).__name__}")
    nthreads = resolve_threads(num_threads)
    path = gemm_path()
    A, B, batch, M, K, N, finish = matmul_operands(as_format_array(a, "a", fa),
                                                   as_format_array(b, "b", fb))
    full_shape = batch + (M, N)
    C = None
    if c is not None:
        C = as_integer_array(c, "c")
        check_int_range(C, "c", acc.min, acc.max, f"the {acc.bits}-bit accumulator")
        try:
            C = np.broadcast_to(C, full_shape)    # converted per product, without a copy
                                                  # when already int32 and contiguous
        except ValueError:
            raise ValueError(f"c: shape {C.shape} does not broadcast to the output shape "
                             f"{full_shape}") from None
    if not batch:      # the common 2-D case: no copy into a batch array
        if C is not None and not any(C.strides[:-1]):
            C = C[:1]      # one row for every row (a bias): passed as that row
        out, counts = _matmul_2d(np.ascontiguousarray(A), np.ascontiguousarray(B), C, fa, fb,
                                 acc, return_overflow, nthreads, path)
    else:
        out = np.empty(full_shape, dtype=acc.dtype)
        counts = np.empty(full_shape, dtype=np.int64) if return_overflow else None
        for idx in np.ndindex(*batch):
            o, n = _matmul_2d(np.ascontiguousarray(A[idx]), np.ascontiguousarray(B[idx]),
                              None if C is None else C[idx], fa, fb, acc, return_overflow,
                              nthreads, path)
            out[idx] = o
            if return_overflow:
                counts[idx] = n
    out, counts = _as_array(finish(out)), _as_array(finish(counts))
    return (out, counts) if return_overflow else out


def dot(a, b, fmt, *, acc=None, return_overflow=False, num_threads=None):
    """Dot product of two integer vectors through an :class:`Accumulator`.

    The same as :func:`matmul` of two 1-D operands: a 0-d array (and a 0-d
    count with ``return_overflow``).

    Examples
    --------
    >>> import fixedpoint as fp
    >>> fp.dot([42, 1], [38, -1], "int8")
    array(1595, dtype=int32)
    >>> fp.dot([255, 255], [127, 127], ("uint8", "int8"))
    array(64770, dtype=int32)
    """
    A = as_integer_array(a, "a")
    B = as_integer_array(b, "b")
    if A.ndim != 1 or B.ndim != 1:
        raise ValueError(f"a and b: dot expects 1-D vectors, got shapes {A.shape} and {B.shape}")
    return matmul(A, B, fmt, acc=acc, return_overflow=return_overflow, num_threads=num_threads)
