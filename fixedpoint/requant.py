"""Requantization: from a 32-bit accumulator back to an 8-bit (or narrower) output.

Three arithmetic pipelines, named after what they do (SEMANTICS.md section 5):

``"double"``  gemmlowp / TFLite default: a saturating rounding doubling high
              multiply by a Q31 multiplier (ties toward +inf), then a rounding
              divide by a power of two (ties away from zero): two roundings.
``"single"``  TFLite built with ``TFLITE_SINGLE_ROUNDING``:
              ``(acc * m + 2^(s-1)) >> s`` with ``s = 31 - shift``: one rounding
              (ties toward +inf).  The two can differ by 1.
``"float"``   ONNX ``QLinearMatMul`` reference: ``acc * scale`` in float32, round
              half to even.

Then the output zero point is added and the result saturated to the format.
"""
from __future__ import annotations


import numpy as np

from . import _quant
from ._checks import as_integer_array, check_choice, check_int_range, resolve_threads
from .accumulate import Accumulator, matmul
from .formats import as_int_format

__all__ = ["quantize_multiplier", "requantize", "qlinear", "REQUANT_ROUNDING"]

REQUANT_ROUNDING = {
    "double": "gemmlowp/TFLite: rounding doubling high multiply, then rounding divide by 2^n",
    "single": "TFLite single rounding: (acc * m + 2^(s-1)) >> s, s = 31 - shift",
    "float": "ONNX QLinearMatMul reference: float32 rescale, round half to even",
}

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
    multiplier : int or array_like of int, or float for ``rounding="float"``
        Q31 multipliers in [0, 2^31 - 1] (from :func:`quantize_multiplier`),
        broadcast against ``acc`` (per-channel: one per output column). With
        ``rounding="float"``: the real scale, used in float32.
    shift : int or array_like of int
        Exponents in [-31, 30] (ignored, and must be 0, for ``"float"``).
    zero_point : int or array_like
        Output zero point, inside the output format.
    fmt : IntFormat or str
        Output format.
    rounding : {"double", "single", "float"}
        See ``REQUANT_ROUNDING``.
    num_threads : int, optional
        Threads of the compiled kernel ("double" and "single"); results
        never depend on it.

    Returns
    -------
    ndarray of ``fmt.dtype``

    Examples
    --------
    >>> import fixedpoint as fp
    >>> m, s = fp.quantize_multiplier(0.0035)
    >>> fp.requantize([1000, -1000, 100000], m, s, zero_point=-3, out_fmt="int8").tolist()
    [1, -7, 127]
    >>> fp.requantize([1000, -1000], 0.0035, out_fmt="int8", method="float").tolist()
    [4, -4]
    """
    f = as_int_format(out_fmt, "out_fmt")
    rounding = check_choice(method, "method", REQUANT_ROUNDING)
    a = as_integer_array(acc, "acc")
    if a.size and a.dtype.itemsize >= 4 and a.dtype != np.int32 and \
            (int(a.min()) < _I32_MIN or int(a.max()) > _I32_MAX):   # narrower dtypes always fit
        raise ValueError(f"acc: values must fit int32, got [{a.min()}, {a.max()}]")
    nthreads = resolve_threads(num_threads)
    zp = as_integer_array(zero_point, "zero_point").astype(np.int64)
    if zp.size and (zp.min() < f.min or zp.max() > f.max):
        bad = zp.min() if zp.min() < f.min else zp.max()
        raise ValueError(f"zero_point: {bad} is outside the {f.name} range [{f.min}, {f.max}]")
    if rounding == "float":
        if np.any(np.asarray(shift) != 0):
            raise ValueError("shift: must be 0 with rounding='float' (multiplier is the real scale)")
        scale = np.asarray(multiplier, dtype=np.float64)
        if scale.dtype.kind not in "fiu" or not np.all(np.isfinite(scale)) or np.any(scale < 0):
            raise ValueError("multiplier: expected finite, non-negative real scales with rounding='float'")
        with np.errstate(over="ignore", invalid="ignore"):
            y = np.rint(a.astype(np.float32) * scale.astype(np.float32))   # float32, half to even
            y = np.clip(y, -2.0**40, 2.0**40).astype(np.int64)
    else:
        m = as_integer_array(multiplier, "multiplier").astype(np.int64)
        s = as_integer_array(shift, "shift").astype(np.int64)
        if m.size and (m.min() < 0 or m.max() > _I32_MAX):
            raise ValueError(f"multiplier: Q31 multipliers must lie in [0, 2^31 - 1], got "
                             f"[{m.min()}, {m.max()}]")
        if s.size and (s.min() < -31 or s.max() > 30):
            raise ValueError(f"shift: must lie in [-31, 30], got [{s.min()}, {s.max()}]")
        shape = np.broadcast_shapes(a.shape, m.shape, s.shape)
        n = int(np.prod(shape, dtype=np.int64))
        if n == 0:
            return np.empty(shape, f.dtype)
        C = shape[-1] if shape else 1
        if m.ndim <= 1 and s.ndim <= 1 and m.size in (1, C) and s.size in (1, C):
            # one multiplier, or one per column of the last axis: as given
            percol = m.size > 1 or s.size > 1
            q = np.broadcast_to(m.reshape(-1), (C,) if percol else (1,))
            sh = np.broadcast_to(s.reshape(-1), (C,) if percol else (1,))
        else:
            # any other broadcasting: one multiplier per element (a single "row")
            C = n
            q, sh = np.broadcast_to(m, shape).reshape(-1), np.broadcast_to(s, shape).reshape(-1)
        q = np.ascontiguousarray(q, np.int32)
        sh = np.ascontiguousarray(sh, np.int32)
        flat = np.ascontiguousarray(np.broadcast_to(a, shape), dtype=np.int32).reshape(-1)
        res = np.empty(n, np.int32)
        if zp.ndim == 0:               # zero point and saturation fused into the kernel
            _quant.requantize(flat, res, C, q, sh, int(zp), f.min, f.max, rounding == "single",
                              nthreads)
            out = res.reshape(shape).astype(f.dtype)
            return out[()] if out.ndim == 0 else out
        # per-element zero points: the kernel's int32 results (clamped to int32, which
        # cannot change the final clamp to the narrower format), then + zp and saturate
        _quant.requantize(flat, res, C, q, sh, 0, _I32_MIN, _I32_MAX, rounding == "single", nthreads)
        y = res.reshape(shape).astype(np.int64)
    out = np.clip(y + zp, f.min, f.max).astype(f.dtype)
    return out[()] if out.ndim == 0 else out


def qlinear(x_q, w_q, bias_q=None, *, x_zero_point=0, w_zero_point=0, multiplier, shift=0,
            out_zero_point=0, in_fmt="int8", w_fmt=None, out_fmt="int8", acc=None,
            rounding="double", num_threads=None):
    """An integer linear layer, the way int8 runtimes run it.

    ``out = requantize(bias + sum_k (x - x_zp)(w - w_zp))``: the int32 bias is
    the register's initial value and the zero-point corrected products are
    summed into it through ``acc`` (default ``Accumulator(32, "wrap")``, where
    the order does not matter), then :func:`requantize` and saturation to
    ``out_fmt``.

    Parameters
    ----------
    x_q : (..., K) integer codes in ``in_fmt``
    w_q : (K, N) integer codes in ``w_fmt`` (default ``in_fmt``)
    bias_q : (N,) int32, optional
    x_zero_point, w_zero_point : int (or per-column array for ``w``)
    multiplier, shift : see :func:`requantize` (per output column allowed)
    out_zero_point : int

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> x = np.array([[10, -20, 30]], np.int8); w = np.array([[1], [2], [3]], np.int8)
    >>> fp.qlinear(x, w, np.array([5]), multiplier=1 << 30, shift=0).tolist()
    [[33]]
    """
    fi = as_int_format(in_fmt)
    fw = as_int_format(w_fmt if w_fmt is not None else in_fmt)
    if acc is None:
        acc = Accumulator(32, "wrap")
    X = as_integer_array(x_q, "x_q")
    W = as_integer_array(w_q, "w_q")
    if W.ndim != 2:
        raise ValueError(f"w_q: expected a K x N matrix, got shape {W.shape}")
    xz = as_integer_array(x_zero_point, "x_zero_point").astype(np.int64)
    wz = as_integer_array(w_zero_point, "w_zero_point").astype(np.int64)
    for name, z, f in (("x_zero_point", xz, fi), ("w_zero_point", wz, fw)):
        if z.size and (z.min() < f.min or z.max() > f.max):
            raise ValueError(f"{name}: outside the {f.name} range [{f.min}, {f.max}]")
    check_int_range(X, "x_q", fi.min, fi.max, f"the {fi.name}")
    check_int_range(W, "w_q", fw.min, fw.max, f"the {fw.name}")
    # zero-point corrected operands need one more bit: a signed format wide enough
    lo = min(fi.min - int(xz.max(initial=0)), fw.min - int(wz.max(initial=0)))
    hi = max(fi.max - int(xz.min(initial=0)), fw.max - int(wz.min(initial=0)))
    bits = max(2, max(abs(lo), hi + 1).bit_length() + 1)
    if bits > 16:
        raise ValueError("x_q/w_q: zero-point corrected operands must fit 16 bits")
    op_fmt = as_int_format(f"int{bits}")
    xs = X.astype(np.int64) - xz
    ws = W.astype(np.int64) - wz
    if bias_q is not None:
        b = as_integer_array(bias_q, "bias_q").astype(np.int64)
        if b.size and (b.min() < acc.min or b.max() > acc.max):
            raise ValueError(f"bias_q: outside the {acc.bits}-bit accumulator range")
        # the bias is the register's initial value: exact for "wrap", and one more
        # clamped add for "saturate" (written first, so it is never lost)
        c = np.broadcast_to(b, X.shape[:-1] + (W.shape[1],))
    else:
        c = None
    a = matmul(xs.astype(op_fmt.dtype), ws.astype(op_fmt.dtype), op_fmt, acc, c=c,
               num_threads=num_threads)
    a = np.asarray(a, dtype=np.int64)
    if acc.bits > 32:
        a = np.clip(a, _I32_MIN, _I32_MAX)
    return requantize(a, multiplier, shift, zero_point=out_zero_point, out_fmt=out_fmt, method=rounding)
