"""Elementwise integer arithmetic with explicit overflow behaviour.

``"saturate"`` clamps the exact result to the format's range; ``"wrap"``
keeps the exact result modulo ``2**bits`` (two's complement for signed
formats), as a plain hardware register does.  Inputs must already be in the
format: a value outside it is an error, never silently reinterpreted.
"""
from __future__ import annotations

import numpy as np

from . import _int
from . import dask_arrays
from ._checks import as_format_array, as_integer_array, check_choice, resolve_threads
from .formats import as_format

__all__ = ["saturate", "wrap", "mul", "mul_wide", "add", "OVERFLOW_MODES"]

#: Overflow policies: one line each.
OVERFLOW_MODES = {
    "saturate": "clamp the exact result to the format's [min, max]",
    "wrap": "keep the exact result modulo 2**bits (two's complement), like a plain register",
}


def saturate(x, fmt):
    """Clamp integers into ``fmt``'s range.

    Parameters
    ----------
    x : array_like of integers
        Any integer values (any integer dtype).
    fmt : IntFormat or str
        Target format, e.g. ``"int8"`` or ``IntFormat(8, narrow=True)``.

    Returns
    -------
    ndarray of ``fmt.dtype`` (0-d for scalar input).

    Examples
    --------
    >>> import fixedpoint as fp
    >>> fp.saturate([-300, -5, 200], "int8")
    array([-128,   -5,  127], dtype=int8)
    >>> fp.saturate(-128, "int8_narrow")
    array(-127, dtype=int8)
    """
    f = as_format(fmt, "fmt", "int")
    arr = as_integer_array(x, "x")
    if arr.dtype.kind == "u":
        out = np.minimum(arr, np.array(f.max, dtype=arr.dtype))
        out = np.maximum(out, np.array(f.min, dtype=arr.dtype)) if f.min > 0 else out
    else:
        a64 = arr.astype(np.int64, copy=False)
        out = np.clip(a64, f.min, f.max)
    return np.asarray(out.astype(f.dtype))


def wrap(x, fmt):
    """Reduce integers modulo ``2**fmt.bits`` into ``fmt``'s range (two's complement wrap).

    Narrow-range formats are refused: a modulo-``2**bits`` wrap needs all
    ``2**bits`` codes.

    Examples
    --------
    >>> import fixedpoint as fp
    >>> fp.wrap([128, 255, -129, 1596], "int8")
    array([-128,   -1,  127,   60], dtype=int8)
    >>> fp.wrap(17, "uint4")
    array(1, dtype=uint8)
    """
    f = as_format(fmt, "fmt", "int")
    if f.narrow:
        raise ValueError(f"fmt: wrap needs the full range of {f.bits}-bit codes; {f.name} is narrow")
    arr = as_integer_array(x, "x")
    # Work in uint64: wrapping there is modulo 2^64, consistent with 2^bits.
    # (as 1-D arrays: NumPy warns on wrapping scalar arithmetic, never on arrays)
    flat = arr.reshape(-1)
    u = flat.astype(np.int64).view(np.uint64) if arr.dtype.kind == "i" else flat.astype(np.uint64)
    lo = np.uint64(f.min % (1 << 64))
    r = ((u - lo) & np.uint64((1 << f.bits) - 1)) + lo
    return r.view(np.int64).astype(f.dtype).reshape(arr.shape)


def _binary(op, a, b, fmt, overflow, num_threads):
    f = as_format(fmt, "fmt", "int")
    saturate_ = True
    if op != "mul_wide":
        check_choice(overflow, "overflow", OVERFLOW_MODES)
        saturate_ = overflow == "saturate"
        if not saturate_ and f.narrow:
            raise ValueError(f"overflow: 'wrap' needs the full range of {f.bits}-bit codes; "
                             f"{f.name} is narrow")
    nthreads = resolve_threads(num_threads)
    a_arr = as_format_array(a, "a", f)
    b_arr = as_format_array(b, "b", f)
    try:
        shape = np.broadcast_shapes(a_arr.shape, b_arr.shape)
    except ValueError:
        raise ValueError(f"a and b: shapes {a_arr.shape} and {b_arr.shape} do not broadcast") from None
    a_c = np.asarray(np.broadcast_to(a_arr, shape), order="C").reshape(-1)
    b_c = np.asarray(np.broadcast_to(b_arr, shape), order="C").reshape(-1)
    if op == "mul_wide":
        kernel_wide = {1: np.int16, 2: np.int32}[f.dtype.itemsize]
        if not f.signed:
            kernel_wide = {1: np.uint16, 2: np.uint32}[f.dtype.itemsize]
        out = np.empty(shape, dtype=kernel_wide)
    else:
        out = np.empty(shape, dtype=f.dtype)
    _int.binop(op, a_c, b_c, out.reshape(-1), saturate_, f.min, f.max, f.bits, nthreads)
    if op == "mul_wide":
        out = out.astype(f.wide_dtype, copy=False)
    return out


def mul(a, b, fmt, *, overflow="saturate", num_threads=None):
    """Elementwise product brought back into ``fmt`` by saturation or wrap.

    Parameters
    ----------
    a, b : array_like of integers
        Values inside ``fmt``'s range (else ``ValueError``); NumPy broadcasting.
    fmt : IntFormat or str
        Format of the operands and of the result.
    overflow : {"saturate", "wrap"}
        What happens to products outside the range (see ``OVERFLOW_MODES``).
    num_threads : int, optional
        Threads to use; default :func:`fixedpoint.get_num_threads`.

    Returns
    -------
    ndarray of ``fmt.dtype``

    Examples
    --------
    >>> import fixedpoint as fp
    >>> fp.mul([42, -128, 100], [38, -128, -2], "int8")
    array([ 127,  127, -128], dtype=int8)
    >>> fp.mul([42, -128], [38, -128], "int8", overflow="wrap")
    array([60,  0], dtype=int8)
    """
    if dask_arrays.is_dask(a, b):
        return dask_arrays.elementwise(mul, a, b, fmt=fmt, overflow=overflow, num_threads=num_threads)
    return _binary("mul", a, b, fmt, overflow, num_threads)


def mul_wide(a, b, fmt, *, num_threads=None):
    """The exact elementwise product in ``2 * fmt.bits`` bits (8 x 8 -> 16).

    Examples
    --------
    >>> import fixedpoint as fp
    >>> fp.mul_wide(42, 38, "int8")
    array(1596, dtype=int16)
    >>> fp.mul_wide([-128], [-128], "int8")
    array([16384], dtype=int16)
    """
    return _binary("mul_wide", a, b, fmt, None, num_threads)


def add(a, b, fmt, *, overflow="saturate", num_threads=None):
    """Elementwise sum brought back into ``fmt`` by saturation or wrap.

    Examples
    --------
    >>> import fixedpoint as fp
    >>> fp.add([100, -100], [100, -100], "int8")
    array([ 127, -128], dtype=int8)
    >>> fp.add([100], [100], "int8", overflow="wrap")
    array([-56], dtype=int8)
    """
    if dask_arrays.is_dask(a, b):
        return dask_arrays.elementwise(add, a, b, fmt=fmt, overflow=overflow, num_threads=num_threads)
    return _binary("add", a, b, fmt, overflow, num_threads)
