"""Requantization: from a 32-bit accumulator back to an 8-bit (or narrower) output.

The arithmetic of requantization is a named ``method`` (:data:`REQUANT_METHODS`),
each one the pipeline of the engines that use it, proved bit for bit against
them (``tests/test_requant.py``: transcriptions of gemmlowp/TFLite and ONNX
Runtime; ``tests/test_litert.py``: LiteRT's three kernel paths):

``"double"``   gemmlowp / TFLite default: a saturating rounding doubling high
               multiply by a Q31 multiplier (ties toward +inf), then a rounding
               divide by a power of two (ties away from zero): two roundings.
               LiteRT's reference CONV_2D and DEPTHWISE_CONV_2D.
``"single"``   TFLite built with ``TFLITE_SINGLE_ROUNDING``:
               ``(acc * m + 2^(s-1)) >> s`` with ``s = 31 - shift``: one rounding
               (ties toward +inf).
``"ruy"``      LiteRT's optimized kernels (the ruy GEMM behind FULLY_CONNECTED and
               CONV_2D; the 8-channel output loops of DEPTHWISE_CONV_2D): the
               doubling high multiply of ``"double"``, then ``(v + 2^(r-1)) >> r``,
               ties toward +inf (``"double"`` rounds them away from zero).
``"float"``    ONNX ``QLinearMatMul`` reference and XNNPACK (LiteRT's default
               delegate): ``float32(acc) * scale`` in float32, round half to even.
``"float64"``  LiteRT's reference FULLY_CONNECTED:
               ``round((double)acc * real)``, half away from zero.

The fixed-point methods take ``(multiplier, shift)`` from
:func:`quantize_multiplier`; the float methods take the real scale.  Then the
output zero point is added and the result clamped to the output format.  As in
the engines' 32-bit registers, the fixed-point methods and ``"float64"`` add the
zero point in int32 arithmetic: a value that leaves int32 wraps (``"float64"``
turns a product outside int32 into INT32_MIN first, as x86's conversion does);
``"float"`` clamps before adding it, so it never wraps.
"""
from __future__ import annotations

import math

import numpy as np

from . import _quant
from . import dask_arrays
from ._checks import as_integer_array, check_choice, check_int_range, resolve_threads
from .accumulate import Accumulator, matmul
from .formats import IntFormat, as_format, int_format_pair

__all__ = ["quantize_multiplier", "requantize", "requantize_with_values", "qlinear", "REQUANT_METHODS"]

REQUANT_METHODS = {
    "double": "gemmlowp/TFLite: rounding doubling high multiply, then rounding divide by 2^n "
              "(ties away from zero)",
    "single": "TFLite single rounding: (acc * m + 2^(s-1)) >> s, s = 31 - shift",
    "ruy": "LiteRT optimized kernels (ruy): doubling high multiply, then (v + 2^(n-1)) >> n "
           "(ties toward +inf)",
    "float": "ONNX QLinearMatMul reference, XNNPACK: float32 rescale, round half to even",
    "float64": "LiteRT reference FULLY_CONNECTED: round(double(acc) * real), half away from zero",
}

_FLOAT_METHODS = ("float", "float64")
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real):
    """``(multiplier, shift)`` with ``real ~= multiplier * 2**(shift - 31)``, as TFLite.

    ``frexp`` splits ``real`` into a fraction in [0.5, 1) and an exponent; the
    fraction becomes a Q31 integer rounded half away from zero; a fraction that
    rounds up to 2^31 is halved and the shift raised by one; shifts below -31
    flush to (0, 0).

    Parameters
    ----------
    real : float or array_like of floats
        Finite, non-negative real multipliers (e.g. ``s_in * s_w / s_out``);
        an array (per-channel multipliers) gives two int64 arrays.

    Examples
    --------
    >>> quantize_multiplier(0.5)
    (1073741824, 0)
    >>> quantize_multiplier(0.0035)
    (1924145349, -8)
    >>> quantize_multiplier([0.5, 0.0035])
    (array([1073741824, 1924145349]), array([ 0, -8]))
    """
    scalar = not isinstance(real, (list, tuple, np.ndarray))
    if scalar and (isinstance(real, (bool, np.bool_))
                   or not isinstance(real, (int, float, np.floating, np.integer))):
        raise TypeError(f"real: expected a float, got {type(real).__name__}")
    arr = np.asarray(real)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"real: expected floats, got an array of dtype {arr.dtype}")
    r = arr.astype(np.float64)
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        bad = r[~(np.isfinite(r) & (r >= 0))].ravel()[0]
        raise ValueError(f"real: expected a finite, non-negative multiplier, got {bad}")
    # frexp is exact; frac * 2^31 + 0.5 is exact in float64 (frac has 53 bits and the
    # sum stays below 2^31), so floor() rounds half away from zero (frac > 0)
    frac, shift = np.frexp(r)
    q = np.floor(frac * 2.0**31 + 0.5).astype(np.int64)
    shift = shift.astype(np.int64)
    top = q == 2**31                       # rounded up to 2^31: halve, one more shift
    q = np.where(top, q // 2, q)
    shift = np.where(top, shift + 1, shift)
    flush = (r == 0) | (shift < -31)
    q, shift = np.where(flush, 0, q), np.where(flush, 0, shift)
    return (int(q), int(shift)) if scalar else (q, shift)


def requantize(acc, multiplier, shift=0, *, zero_point=0, out_fmt, method="double",
               num_threads=None):
    """Bring 32-bit accumulator values back into an integer output format.

    Parameters
    ----------
    acc : array_like of integers
        Accumulator values in [-2^31, 2^31 - 1].
    multiplier : int, float or array_like
        Fixed-point methods: Q31 multipliers in [0, 2^31 - 1] (from
        :func:`quantize_multiplier`).  ``"float"``/``"float64"``: the real scale
        (finite, non-negative; ``"float"`` rounds it to float32).  Broadcast
        against ``acc`` (per channel: one per column of the last axis).
    shift : int or array_like of int
        Exponents in [-31, 30] (must be 0 for the float methods).
    zero_point : int or array_like
        Output zero point, inside ``out_fmt``.
    out_fmt : IntFormat or str
        Output format (required).
    method : {"double", "single", "ruy", "float", "float64"}
        The arithmetic; see :data:`REQUANT_METHODS` and the module notes.
    num_threads : int, optional
        Threads of the compiled kernel; results never depend on it.

    Returns
    -------
    ndarray of ``out_fmt``'s dtype (0-d for 0-d input)

    Examples
    --------
    >>> import fixedpoint as fp
    >>> m, s = fp.quantize_multiplier(0.0035)
    >>> fp.requantize([1000, -1000, 100000], m, s, zero_point=-3, out_fmt="int8").tolist()
    [1, -7, 127]
    >>> fp.requantize([2, -2, 6, -6], 2**30, -1, out_fmt="int8", method="ruy").tolist()
    [1, 0, 2, -1]
    >>> fp.requantize([1000, -1000], 0.0035, out_fmt="int8", method="float").tolist()
    [4, -4]
    """
    return _requantize(acc, multiplier, shift, zero_point, out_fmt, method, num_threads, None)


def requantize_with_values(acc, multiplier, shift=0, *, zero_point=0, scale, out_fmt="int8",
                           method="double", num_threads=None):
    """:func:`requantize`, and the float32 values its codes stand for, in one pass:
    ``(codes, float32(codes - zero_point) * float32(scale))``.

    The arguments are :func:`requantize`'s, with ``scale`` the output scale
    (a finite, non-negative float).  With a single zero point, an 8-bit signed
    output format and any method but ``"float64"``, one compiled loop writes
    both arrays (what a layer returns: its output codes and their values);
    otherwise the values are computed from the codes.  The values are the
    same either way.

    Examples
    --------
    >>> import fixedpoint as fp
    >>> m, s = fp.quantize_multiplier(0.0035)
    >>> codes, values = fp.requantize_with_values([1000, -1000], m, s, zero_point=-3, scale=0.5)
    >>> codes.tolist(), values.tolist()
    ([1, -7], [2.0, -2.0])
    """
    sc = np.float32(scale) if isinstance(scale, (float, int, np.floating, np.integer)) and \
        not isinstance(scale, bool) else None
    if sc is None:
        raise TypeError(f"scale: expected a float, got {type(scale).__name__}")
    if not np.isfinite(sc) or sc < 0:
        raise ValueError(f"scale: expected a finite, non-negative float, got {scale!r}")
    return _requantize(acc, multiplier, shift, zero_point, out_fmt, method, num_threads, sc)


def _requantize(acc, multiplier, shift, zero_point, out_fmt, method, num_threads, values_scale):
    """requantize's body; with ``values_scale``, returns (codes, values)."""
    if dask_arrays.is_dask(acc, multiplier, shift, zero_point):
        codes = dask_arrays.requantize(requantize, acc, multiplier, shift, zero_point=zero_point,
                                       out_fmt=out_fmt, method=method, num_threads=num_threads)
        return codes if values_scale is None else (codes, _values(codes, zero_point, values_scale))
    f = as_format(out_fmt, "out_fmt", "int")
    check_choice(method, "method", REQUANT_METHODS)
    a = as_integer_array(acc, "acc")
    if a.size and a.dtype.itemsize >= 4 and a.dtype != np.int32 and \
            (int(a.min()) < _I32_MIN or int(a.max()) > _I32_MAX):   # narrower dtypes always fit
        raise ValueError(f"acc: values must fit int32, got [{a.min()}, {a.max()}]")
    nthreads = resolve_threads(num_threads)
    zp = as_integer_array(zero_point, "zero_point").astype(np.int64, copy=False)
    zlo, zhi = (int(zp), int(zp)) if zp.ndim == 0 else (zp.min(initial=0), zp.max(initial=0))
    if zlo < f.min or zhi > f.max:
        bad = zlo if zlo < f.min else zhi
        raise ValueError(f"zero_point: {bad} is outside the {f.name} range [{f.min}, {f.max}]")
    if method in _FLOAT_METHODS:
        sh = as_integer_array(shift, "shift")
        if np.any(sh != 0):
            raise ValueError(f"shift: must be 0 with method={method!r} (multiplier is the real "
                             f"scale)")
        real = np.asarray(multiplier)
        if real.dtype.kind not in "fiu":
            raise TypeError(f"multiplier: expected real scales with method={method!r}, got an "
                            f"array of dtype {real.dtype}")
        real = real.astype(np.float64)
        if method == "float":
            with np.errstate(over="ignore"):
                real = real.astype(np.float32).astype(np.float64)   # the engines' float32 scale
        if not np.all(np.isfinite(real)) or np.any(real < 0):
            raise ValueError(f"multiplier: expected finite, non-negative real scales with "
                             f"method={method!r}" + (" (float32)" if method == "float" else ""))
        pshape = np.broadcast_shapes(real.shape, sh.shape)
        q = np.zeros(pshape, np.int32)
        s = np.zeros(pshape, np.int32)
        r = np.broadcast_to(real, pshape)
    else:
        m = as_integer_array(multiplier, "multiplier").astype(np.int64, copy=False)
        s = as_integer_array(shift, "shift").astype(np.int64, copy=False)
        if m.size and (m.min() < 0 or m.max() > _I32_MAX):
            raise ValueError(f"multiplier: Q31 multipliers must lie in [0, 2^31 - 1], got "
                             f"[{m.min()}, {m.max()}]")
        if s.size and (s.min() < -31 or s.max() > 30):
            raise ValueError(f"shift: must lie in [-31, 30], got [{s.min()}, {s.max()}]")
        pshape = np.broadcast_shapes(m.shape, s.shape)
        q = m if m.shape == pshape else np.broadcast_to(m, pshape)
        s = s if s.shape == pshape else np.broadcast_to(s, pshape)
        r = np.zeros(pshape, np.float64)
    shape = np.broadcast_shapes(a.shape, pshape)
    n = math.prod(shape)
    if n == 0:
        codes = np.empty(np.broadcast_shapes(shape, zp.shape), f.dtype)
        return codes if values_scale is None else (codes, _values(codes, zp, values_scale))
    C = shape[-1] if shape else 1
    if all(d == 1 for d in pshape[:-1]) and math.prod(pshape) in (1, C):
        # one multiplier, or one per column of the last axis (shape (C,), (1, C), ...): as given
        k = math.prod(pshape)
        q, s, r = q.reshape(k), s.reshape(k), r.reshape(k)
    else:
        # any other broadcasting: one multiplier per element (a single "row")
        C = n
        q, s, r = (np.broadcast_to(v, shape).reshape(-1) for v in (q, s, r))
    q = np.ascontiguousarray(q, np.int32)
    s = np.ascontiguousarray(s, np.int32)
    r = np.ascontiguousarray(r, np.float64)
    flat = np.ascontiguousarray(a if a.shape == shape else np.broadcast_to(a, shape),
                                dtype=np.int32).reshape(-1)
    if values_scale is not None and zp.ndim == 0 and f.dtype == np.int8 and method != "float64":
        codes, values = np.empty(n, np.int8), np.empty(n, np.float32)
        _quant.requantize_dequantize(flat, codes, values, C, q, s, r, int(zp), f.min, f.max, method,
                                     values_scale, nthreads)
        return codes.reshape(shape), values.reshape(shape)
    res = np.empty(n, np.int32)
    if zp.ndim == 0:                   # zero point and clamp fused into the kernel
        _quant.requantize(flat, res, C, q, s, r, int(zp), f.min, f.max, method, nthreads)
        out = res.reshape(shape).astype(f.dtype)
        return out if values_scale is None else (out, _values(out, zp, values_scale))
    # per-element zero points: the kernel's values with zero point 0 (int32, and
    # for "float" clamped to int32, which cannot change the final clamp), then
    # the output stage in NumPy
    _quant.requantize(flat, res, C, q, s, r, 0, _I32_MIN, _I32_MAX, method, nthreads)
    y = res.reshape(shape).astype(np.int64)
    if method == "float":
        out = np.clip(y, f.min - zp, f.max - zp) + zp
    else:
        out = np.clip((y + zp + 2**31) % 2**32 - 2**31, f.min, f.max)   # int32 add: wraps
    out = out.astype(f.dtype)
    return out if values_scale is None else (out, _values(out, zp, values_scale))


def _values(codes, zero_point, scale):
    """float32(codes - zero_point) * scale (the difference is exact in float32 for
    formats of at most 16 bits)."""
    zp = np.asarray(zero_point)
    v = np.subtract(codes, zp, dtype=np.float32) if not dask_arrays.is_dask(codes) else \
        (codes.astype(np.int32) - zp).astype(np.float32)
    return v * np.float32(scale)


def _signed_format_for(lo: int, hi: int) -> IntFormat:
    """The narrowest signed integer format holding [lo, hi]."""
    bits = max(2, max((-lo - 1).bit_length() if lo < 0 else 0, max(hi, 0).bit_length()) + 1)
    if bits > 16:
        raise ValueError(f"x_q/w_q: zero-point corrected operands span [{lo}, {hi}]; at most "
                         f"16-bit signed operands are supported")
    return as_format(f"int{bits}", "fmt", "int")


def _fold_zero_points(X, W, xz, wz, b, fx, fw, raw_fmt, acc):
    """The register's initial value that lets the raw codes stand for ``x - xz``
    and ``w - wz``, or None where that could change the bits.

    ``b + sum (x - xz)(w - wz) = (b - xz colsum(w) - wz rowsum(x) + K xz wz)
    + sum x w``.  A wrapping register sums modulo 2^bits in any order, so the
    folded start (reduced modulo 2^bits) gives the same bits always.  A
    saturating one does only when neither sum can reach its limits (then
    neither ever clamps and both are exact).  Scalar ``xz`` and scalar or
    per-column ``wz`` only."""
    N, K = W.shape[1], W.shape[0]
    if xz.ndim != 0 or wz.ndim > 1 or wz.size not in (1, N):
        return None
    x0, w0 = int(xz), wz.reshape(-1).astype(np.int64)
    colsum = W.sum(axis=0, dtype=np.int64)
    rowsum = X.sum(axis=-1, dtype=np.int64)[..., None]
    c = b - x0 * colsum - w0 * rowsum + K * x0 * w0
    if acc.overflow == "wrap":                 # int64 sums: exact, then modulo 2^bits
        return c if acc.bits == 64 else (c - acc.min) % (1 << acc.bits) + acc.min
    bmax = int(np.abs(b).max(initial=0))
    xmax = max(abs(fx.min - x0), abs(fx.max - x0))
    wmax = int(max(np.abs(fw.min - w0).max(), np.abs(fw.max - w0).max()))
    rmax = max(abs(raw_fmt.min), raw_fmt.max) ** 2
    cmax = int(np.abs(c).max(initial=0))
    if bmax + K * xmax * wmax <= acc.max and cmax + K * rmax <= acc.max:
        return c
    return None


def qlinear(x_q, w_q, fmt, *, bias_q=None, x_zero_point=0, w_zero_point=0, multiplier, shift=0,
            out_zero_point=0, out_fmt, acc=None, method="double", num_threads=None):
    """An integer linear layer, the way int8 runtimes run it.

    ``out = requantize(bias + sum_k (x - x_zp)(w - w_zp))``: the int32 bias is
    the register's initial value and the zero-point corrected products are
    summed into it through ``acc``, then :func:`requantize` with ``method`` and
    the output zero point, clamped to ``out_fmt``.  The codes are multiplied as
    they are; nonzero zero points are folded into the register's initial value
    where that gives the same bits (a wrapping register, or a saturating one
    that provably never clamps), and otherwise widen the codes to the narrowest
    signed format holding ``code - zero_point``.

    Parameters
    ----------
    x_q : (..., K) integer codes
    w_q : (K, N) integer codes
    fmt : IntFormat or str, or a pair ``(x_fmt, w_fmt)``
        Format of both operands, or of each.
    bias_q : (N,) integers, optional
        Inside the accumulator's range.
    x_zero_point, w_zero_point : int (``w_zero_point`` may be one per column)
    multiplier, shift : see :func:`requantize` (per output column allowed)
    out_zero_point : int
    out_fmt : IntFormat or str
        Output format (required).
    acc : Accumulator, optional
        Default ``Accumulator(32, "saturate")``; wider registers are clamped to
        int32 before requantization.
    method : str
        See :data:`REQUANT_METHODS`.
    num_threads : int, optional

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> x = np.array([[10, -20, 30]], np.int8); w = np.array([[1], [2], [3]], np.int8)
    >>> fp.qlinear(x, w, "int8", bias_q=[5], multiplier=1 << 30, out_fmt="int8").tolist()
    [[33]]
    """
    fx, fw = int_format_pair(fmt, "(x_fmt, w_fmt)")
    if acc is None:
        acc = Accumulator(32, "saturate")
    elif not isinstance(acc, Accumulator):
        raise TypeError(f"acc: expected an Accumulator, got {type(acc).__name__}")
    X = as_integer_array(x_q, "x_q")
    W = as_integer_array(w_q, "w_q")
    if W.ndim != 2:
        raise ValueError(f"w_q: expected a K x N matrix, got shape {W.shape}")
    if X.ndim < 1 or X.shape[-1] != W.shape[0]:
        raise ValueError(f"x_q: expected shape (..., {W.shape[0]}), got {X.shape}")
    xz = as_integer_array(x_zero_point, "x_zero_point").astype(np.int64)
    wz = as_integer_array(w_zero_point, "w_zero_point").astype(np.int64)
    for name, z, f in (("x_zero_point", xz, fx), ("w_zero_point", wz, fw)):
        if z.size and (z.min() < f.min or z.max() > f.max):
            raise ValueError(f"{name}: outside the {f.name} range [{f.min}, {f.max}]")
    check_int_range(X, "x_q", fx.min, fx.max, f"the {fx.name}")
    check_int_range(W, "w_q", fw.min, fw.max, f"the {fw.name}")
    N = W.shape[1]
    b = np.zeros(N, np.int64)
    if bias_q is not None:
        b = as_integer_array(bias_q, "bias_q").astype(np.int64)
        if b.size and (b.min() < acc.min or b.max() > acc.max):
            raise ValueError(f"bias_q: outside the {acc.bits}-bit accumulator range "
                             f"[{acc.min}, {acc.max}]")
    # the bias is the register's initial value, before any product
    c = np.broadcast_to(b, X.shape[:-1] + (N,)) if bias_q is not None else None
    # the codes as they are: one format for both, no copies when it is theirs
    raw_fmt = fx if fx == fw else _signed_format_for(min(fx.min, fw.min), max(fx.max, fw.max))
    op_fmt, xs, ws = raw_fmt, X, W
    if np.any(xz) or np.any(wz):
        folded = _fold_zero_points(X, W, xz, wz, b, fx, fw, raw_fmt, acc)
        if folded is not None:
            # sum (x - xz)(w - wz) = sum x w - xz colsum(w) - wz rowsum(x) + K xz wz, folded
            # into the register's initial value: the same bits (see _fold_zero_points)
            c = folded
        else:                          # widen to the narrowest format holding code - zp
            lo = min(fx.min - int(xz.max(initial=0)), fw.min - int(wz.max(initial=0)))
            hi = max(fx.max - int(xz.min(initial=0)), fw.max - int(wz.min(initial=0)))
            op_fmt = _signed_format_for(lo, hi)
            xs = X.astype(np.int64) - xz if np.any(xz) else X
            ws = W.astype(np.int64) - wz if np.any(wz) else W
    a = matmul(np.asarray(xs).astype(op_fmt.dtype, copy=False),
               np.asarray(ws).astype(op_fmt.dtype, copy=False), op_fmt, acc=acc, c=c,
               num_threads=num_threads)
    a = np.asarray(a)
    if acc.bits > 32:
        a = np.clip(a, _I32_MIN, _I32_MAX)
    return requantize(a, multiplier, shift, zero_point=out_zero_point, out_fmt=out_fmt,
                      method=method, num_threads=num_threads)
