"""Integer matrix multiplication through an accumulator of chosen width.

An :class:`Accumulator` says how the products of a dot product are summed:
``block`` products are added exactly, then that block sum is added into a
signed ``bits``-bit register that either wraps (modulo ``2**bits``) or
saturates (clamps), block after block in K order.  Wrapping is associative,
so for ``"wrap"`` the result is the exact sum modulo ``2**bits`` whatever the
block; saturation is not, so the block size decides the bits.

Hardware this describes (docs/semantics.md section 2):

* ``Accumulator(32, "wrap")``: ``mma.sync ... .s32.s8.s8.s32``, ONNX
  MatMulInteger, a Verilog ``accum <= accum + a * b`` register.
* ``Accumulator(32, "saturate", block=16)``: the Hopper cuBLASLt INT8 GEMM
  (``torch._int_mm``), measured: a recording designed to separate block
  sizes fits 16 and nothing else; the earlier recordings fit 16 and 32
  alike (so ``block=32`` reproduces them too).
* ``Accumulator(32, "saturate", block=32)`` with ``c=``: ``mma.sync ...
  .satfinite.s32.s8.s8.s32`` (one clamp per 32-product instruction).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _int
from . import dask_arrays
from ._checks import (as_format_array, as_integer_array, check_choice, check_int_range,
                      check_positive_int, matmul_operands, resolve_threads)
from .formats import as_int_format
from .intops import OVERFLOW_MODES

__all__ = ["Accumulator", "matmul", "dot"]

_MAX_BLOCK = 1 << 24


@dataclass(frozen=True)
class Accumulator:
    """A signed accumulator register of ``bits`` bits (8 to 64).

    Parameters
    ----------
    bits : int
        Register width, 8 to 64.
    overflow : {"wrap", "saturate"}
        ``"wrap"``: modulo ``2**bits``; ``"saturate"``: clamp to
        ``[-2**(bits-1), 2**(bits-1) - 1]`` at every add.
    block : int
        How many products are summed exactly before each add into the
        register (1 to 2**24).

    Examples
    --------
    >>> Accumulator(32, "saturate", block=32).max
    2147483647
    """

    bits: int = 32
    overflow: str = "wrap"
    block: int = 1

    def __post_init__(self):
        bits = check_positive_int(self.bits, "bits")
        if not 8 <= bits <= 64:
            raise ValueError(f"bits: accumulator width must be between 8 and 64, got {bits}")
        check_choice(self.overflow, "overflow", OVERFLOW_MODES)
        block = check_positive_int(self.block, "block")
        if block > _MAX_BLOCK:
            raise ValueError(f"block: must be at most {_MAX_BLOCK}, got {block}")
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "block", block)

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def dtype(self) -> np.dtype:
        """int32 up to 32 bits, int64 above."""
        return np.dtype(np.int32 if self.bits <= 32 else np.int64)


def _matmul_2d(a, b, c0, f, acc, want_counts, nthreads):
    """One M x K @ K x N product; a, b contiguous in f's storage dtype."""
    M, K = a.shape
    N = b.shape[1]
    maxprod = max(abs(f.min), abs(f.max)) ** 2
    # Every value the register takes is c plus a prefix of the products, so
    # |value| <= max|c| + K * max|product|.  When that bound fits the
    # register no add can overflow: wrap, saturate and the exact sum agree,
    # whatever the block, and the overflow counts are zero.  Take the
    # fastest exact kernel then (one wrapping block).
    cmax = 0 if c0 is None or c0.size == 0 else int(np.abs(c0).max())
    if cmax + K * maxprod <= acc.max:
        if acc.bits <= 32 and f.bits <= 8:
            exact_acc = Accumulator(32, "wrap", 1)
        else:
            exact_acc = Accumulator(acc.bits, "wrap", max(K, 1))
        out, _ = _matmul_2d_kernel(a, b, c0, f, exact_acc, False, nthreads)
        counts = np.zeros((M, N), dtype=np.int64) if want_counts else None
        return out.astype(acc.dtype, copy=False), counts
    return _matmul_2d_kernel(a, b, c0, f, acc, want_counts, nthreads)


def _matmul_2d_kernel(a, b, c0, f, acc, want_counts, nthreads):
    M, K = a.shape
    N = b.shape[1]
    maxprod = max(abs(f.min), abs(f.max)) ** 2
    fast = (f.bits <= 8 and acc.bits == 32
            and ((acc.overflow == "wrap" and not want_counts)
                 or (acc.block % 2 == 0 and acc.block * maxprod < 2**31)))
    if fast:
        out = np.empty((M, N), dtype=np.int32)
        counts = np.empty((M, N), dtype=np.int32) if want_counts else None
        c32 = None if c0 is None else np.ascontiguousarray(c0, dtype=np.int32)
        if _int.matmul_acc32_8bit(a, b, not f.signed, c32, out, counts, acc.block,
                                  acc.overflow == "saturate", nthreads):
            return out, (counts.astype(np.int64) if want_counts else None)
    out = np.empty((M, N), dtype=np.int64)
    counts = np.empty((M, N), dtype=np.int64) if want_counts else None
    c64 = None if c0 is None else np.ascontiguousarray(c0, dtype=np.int64)
    _int.matmul_generic(np.ascontiguousarray(a, dtype=np.int32),
                        np.ascontiguousarray(b, dtype=np.int32), c64, out, counts,
                        acc.block, acc.bits, acc.overflow == "saturate", nthreads)
    return out.astype(acc.dtype, copy=False), counts


def matmul(a, b, fmt="int8", acc=None, *, c=None, return_overflow=False, num_threads=None):
    """Integer matrix product ``a @ b`` through an :class:`Accumulator`.

    Parameters
    ----------
    a : array_like of integers, shape (..., M, K) or (K,)
    b : array_like of integers, shape (..., K, N) or (K,)
        Operands in ``fmt``'s range; leading dimensions broadcast as in
        ``numpy.matmul``, and 1-D operands are promoted and squeezed the same way.
    fmt : IntFormat or str
        Format of both operands (``"int8"``, ``"uint8"``, ``"int4"``, ...).
    acc : Accumulator, optional
        Default ``Accumulator(32, "wrap")``.
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
    >>> fp.matmul(a, b, acc=fp.Accumulator(16, "saturate"), return_overflow=True)
    (array([[32767]], dtype=int32), array([[2]]))
    >>> fp.matmul(a, b, acc=fp.Accumulator(16, "wrap"))
    array([[-1020]], dtype=int32)
    """
    if dask_arrays.is_dask(a, b, c):
        return dask_arrays.matmul(matmul, a, b, fmt, acc, c=c, return_overflow=return_overflow, num_threads=num_threads)
    f = as_int_format(fmt)
    if acc is None:
        acc = Accumulator()
    if not isinstance(acc, Accumulator):
        raise TypeError(f"acc: expected an Accumulator, got {type(acc).__name__}")
    nthreads = resolve_threads(num_threads)
    A, B, batch, M, K, N, finish = matmul_operands(as_format_array(a, "a", f),
                                                   as_format_array(b, "b", f))
    full_shape = batch + (M, N)
    C = None
    if c is not None:
        C = as_integer_array(c, "c")
        check_int_range(C, "c", acc.min, acc.max, f"the {acc.bits}-bit accumulator")
        try:
            C = np.broadcast_to(C.astype(np.int64), full_shape)
        except ValueError:
            raise ValueError(f"c: shape {C.shape} does not broadcast to the output shape "
                             f"{full_shape}") from None
    if not batch:      # the common 2-D case: no copy into a batch array
        out, counts = _matmul_2d(np.ascontiguousarray(A), np.ascontiguousarray(B), C, f, acc,
                                 return_overflow, nthreads)
    else:
        out = np.empty(full_shape, dtype=acc.dtype)
        counts = np.empty(full_shape, dtype=np.int64) if return_overflow else None
        for idx in np.ndindex(*batch):
            o, n = _matmul_2d(np.ascontiguousarray(A[idx]), np.ascontiguousarray(B[idx]),
                              None if C is None else C[idx], f, acc, return_overflow, nthreads)
            out[idx] = o
            if return_overflow:
                counts[idx] = n
    out, counts = finish(out), finish(counts)
    return (out, counts) if return_overflow else out


def dot(a, b, fmt="int8", acc=None, *, return_overflow=False):
    """Dot product of two integer vectors through an :class:`Accumulator`.

    Examples
    --------
    >>> import fixedpoint as fp
    >>> fp.dot([42, 1], [38, -1], "int8")
    np.int32(1595)
    """
    A = as_integer_array(a, "a")
    B = as_integer_array(b, "b")
    if A.ndim != 1 or B.ndim != 1:
        raise ValueError(f"a and b: dot expects 1-D vectors, got shapes {A.shape} and {B.shape}")
    return matmul(A, B, fmt, acc, return_overflow=return_overflow)
