"""Quantization: float tensors to the integer or FP8 codes an accelerator stores.

With ``scale`` (and ``zero_point``) given, :func:`quantize` is ONNX
``QuantizeLinear``: ``x / scale`` by IEEE division in the input's precision
(float32 for float16/bfloat16 input), rounded (half to even by default), plus
the zero point, saturated to the format.  For FP8 formats the quotient is
converted with :func:`fixedpoint.to_fp8` (``saturate`` chooses the behaviour).

Without ``scale`` the range is calibrated from the data:

* symmetric (default): ``scale = amax / fmt.max`` (0.5 / 127 for INT8 when
  ``amax = 0.5``), zero point 0;
* asymmetric, integer zero point (ONNX/TFLite): the range is widened to
  include 0 so that 0.0 is exact, ``scale = (rmax - rmin) / (qmax - qmin)``,
  ``zero_point = round(qmin - rmin / scale)``;
* asymmetric with ``float_zero_point=True`` (the design notes' form):
  ``code = round((x - rmin) / scale) + qmin``, no widening; the real offset
  ``rmin`` is kept as the zero point;
* FP8: ``scale = amax / fmt.max_value * 2**margin`` (Transformer Engine's
  scale is the reciprocal: it multiplies).

A range of zero (an all-zero tensor or block) gets ``scale = 1.0``.
"""
from __future__ import annotations

import numpy as np

from . import _fp8, _quant
from ._checks import check_choice, check_positive_int, resolve_threads
from .formats import FloatFormat, IntFormat, as_float_format, as_int_format
from .fp8 import _seed_value, format_params, from_fp8, to_fp8

__all__ = ["QTensor", "quantize", "dequantize", "fake_quant", "ROUNDING", "CALIBRATION",
           "round_values"]

#: Rounding of ``x / scale`` to an integer code: one line each.
ROUNDING = {
    "nearest_even": "to the nearest integer, ties to even (ONNX, TFLite, Core ML)",
    "nearest_away": "to the nearest integer, ties away from zero (C round())",
    "toward_zero": "truncate",
    "floor": "toward minus infinity",
    "stochastic": "up with probability equal to the fractional part (seeded)",
}

#: How the range is found when no scale is given.
CALIBRATION = {
    "minmax": "the smallest and largest values (per tensor, channel or group)",
    "percentile": "the given percentile of |x| (symmetric) or of x at both ends",
    "mse": "the symmetric threshold with the least quantize-dequantize error (histogram)",
    "entropy": "the symmetric threshold with the least KL divergence, as TensorRT (histogram)",
}


def _as_format(fmt):
    if isinstance(fmt, (IntFormat, FloatFormat)):
        return fmt
    if isinstance(fmt, str):
        try:
            return as_int_format(fmt)
        except ValueError:
            try:
                return as_float_format(fmt)
            except ValueError:
                raise ValueError(f"fmt: unknown format {fmt!r}; expected an integer format "
                                 f"('int8', 'uint4', ...) or an FP8 format ('e4m3', 'e5m2', ...)") from None
    raise TypeError(f"fmt: expected a format or its name, got {type(fmt).__name__}")


def round_values(v: np.ndarray, rounding: str = "nearest_even", seed=None) -> np.ndarray:
    """Round a float array to integers (as floats) with one of ``ROUNDING``.

    Examples
    --------
    >>> import numpy as np
    >>> round_values(np.array([2.5, -2.5, 0.5, -1.7]), "nearest_away").tolist()
    [3.0, -3.0, 1.0, -2.0]
    >>> round_values(np.array([2.5, -2.5, 0.5, -1.7])).tolist()
    [2.0, -2.0, 0.0, -2.0]
    """
    check_choice(rounding, "rounding", ROUNDING)
    if rounding == "nearest_even":
        return np.rint(v)
    if rounding == "toward_zero":
        return np.trunc(v)
    if rounding == "floor":
        return np.floor(v)
    if rounding == "nearest_away":
        t = np.trunc(v)
        frac = v - t                       # exact
        return t + np.where(np.abs(frac) >= 0.5, np.sign(v), 0)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed: expected a non-negative int or None, got {seed!r}")
    gen = np.random.Generator(np.random.Philox(seed))
    f = np.floor(v)
    return f + (gen.random(v.shape) < (v - f))


class QTensor:
    """Quantized codes with what it takes to read them back.

    ``x ~= (codes - zero_point) * scale`` (integer formats),
    ``x ~= (codes - qmin) * scale + zero_point`` (``float_zero_point``),
    ``x ~= value(codes) * scale`` (FP8).  ``scale`` and ``zero_point`` have
    shape ``()`` (per tensor), ``(C,)`` (per channel along ``axis``) or the
    tensor's shape with ``axis`` divided by ``group_size`` (per group, as ONNX
    blocked quantization).

    A QTensor made by :func:`quantize` for a 4-bit format may hold its codes
    packed (the quantizer writes them packed in the same pass); ``codes`` then
    unpacks them on first use.
    """

    def __init__(self, codes, scale, zero_point, fmt, axis=None, group_size=None,
                 float_zero_point=False, *, packed=None, shape=None):
        if codes is None and (packed is None or shape is None):
            raise ValueError("codes: give the codes, or packed bytes and the shape")
        self._codes = codes
        self._packed = packed
        self._shape = tuple(codes.shape) if codes is not None else tuple(shape)
        self.scale = scale
        self.zero_point = zero_point
        self.fmt = fmt
        self.axis = axis
        self.group_size = group_size
        self.float_zero_point = bool(float_zero_point)

    @property
    def codes(self) -> np.ndarray:
        """The codes, one per element, in the format's storage dtype."""
        if self._codes is None:
            self._codes = unpack_codes(self._packed, self.fmt, self._shape)
        return self._codes

    def __repr__(self) -> str:
        return (f"QTensor(shape={self.shape}, fmt={getattr(self.fmt, 'name', self.fmt)}, "
                f"axis={self.axis}, group_size={self.group_size}, scale={np.shape(self.scale)})")

    @property
    def shape(self):
        return self._shape

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        """Float values of the codes (ONNX ``DequantizeLinear``: float32 arithmetic)."""
        s = _expand(self.scale, self.codes.shape, self.axis, self.group_size).astype(np.float32)
        if isinstance(self.fmt, FloatFormat):
            out = from_fp8(self.codes, self.fmt, np.float32) * s
        elif self.float_zero_point:
            z = _expand(self.zero_point, self.codes.shape, self.axis, self.group_size)
            out = ((self.codes.astype(np.float32) - np.float32(self.fmt.min)) * s
                   + z.astype(np.float32))
        else:
            z = _expand(self.zero_point, self.codes.shape, self.axis, self.group_size)
            out = (self.codes.astype(np.int32) - z.astype(np.int32)).astype(np.float32) * s
        return out.astype(dtype, copy=False)

    def pack(self) -> np.ndarray:
        """The codes as stored bytes: 8-bit formats one per byte; 4-bit two per
        byte, first element in the low nibble; 2-bit four per byte from the low
        bits (ONNX >= 1.17); odd counts padded with zeros.  C order.  When the
        QTensor already holds packed codes this is a read-only view of them."""
        if self._packed is not None:
            view = self._packed.view()
            view.flags.writeable = False
            return view
        return pack_codes(self.codes, self.fmt)

    @classmethod
    def unpack(cls, packed, fmt, shape, scale, zero_point=0, axis=None, group_size=None,
               float_zero_point=False) -> "QTensor":
        """Rebuild a QTensor from :meth:`pack`'s bytes."""
        f = _as_format(fmt)
        codes = unpack_codes(packed, f, shape)
        return cls(codes, np.asarray(scale, np.float32), np.asarray(zero_point), f, axis,
                   group_size, float_zero_point)


def _bits_per_code(f) -> int:
    return f.nbits if isinstance(f, FloatFormat) else f.bits


def pack_codes(codes: np.ndarray, fmt) -> np.ndarray:
    """Pack codes of a 2-, 4- or 8-bit format into bytes (see :meth:`QTensor.pack`)."""
    f = _as_format(fmt)
    bits = _bits_per_code(f)
    flat = np.ascontiguousarray(codes).reshape(-1)
    if bits == 8:
        return flat.view(np.uint8).copy()
    if bits not in (2, 4):
        raise ValueError(f"fmt: packing is defined for 2-, 4- and 8-bit formats, not {bits}-bit")
    if bits == 4:
        u8 = flat.view(np.uint8)
        if u8.size % 2:
            u8 = np.concatenate([u8, np.zeros(1, np.uint8)])
        out = np.empty(u8.size // 2, np.uint8)
        _quant.pack4(u8, out)
        return out
    per = 8 // bits
    u = (flat.astype(np.int16) & ((1 << bits) - 1)).astype(np.uint8)
    pad = (-u.size) % per
    u = np.concatenate([u, np.zeros(pad, np.uint8)]).reshape(-1, per)
    out = np.zeros(u.shape[0], np.uint8)
    for i in range(per):
        out |= u[:, i] << np.uint8(bits * i)
    return out


def unpack_codes(packed, fmt, shape) -> np.ndarray:
    """Inverse of :func:`pack_codes` (signed codes sign-extended)."""
    f = _as_format(fmt)
    bits = _bits_per_code(f)
    p = np.asarray(packed)
    if p.dtype != np.uint8:
        raise TypeError(f"packed: expected uint8 bytes, got {p.dtype}")
    n = int(np.prod(shape))
    if bits == 8:
        if p.size != n:
            raise ValueError(f"packed: expected {n} bytes for shape {tuple(shape)}, got {p.size}")
        dt = f.dtype if isinstance(f, IntFormat) else np.uint8
        return p.reshape(-1).view(dt).reshape(shape).copy()
    if bits not in (2, 4):
        raise ValueError(f"fmt: packing is defined for 2-, 4- and 8-bit formats, not {bits}-bit")
    per = 8 // bits
    if p.size != -(-n // per):
        raise ValueError(f"packed: expected {-(-n // per)} bytes for shape {tuple(shape)}, got {p.size}")
    vals = np.stack([(p >> np.uint8(bits * i)) & np.uint8((1 << bits) - 1) for i in range(per)], axis=1)
    vals = vals.reshape(-1)[:n].astype(np.int16)
    if isinstance(f, IntFormat) and f.signed:
        vals = np.where(vals >= (1 << (bits - 1)), vals - (1 << bits), vals)
    dt = f.dtype if isinstance(f, IntFormat) else np.uint8
    return vals.astype(dt).reshape(shape)


# ---------------------------------------------------------------------------
# granularity

def _check_axis(axis, ndim):
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis: expected an int or None, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis: {axis} is out of range for a {ndim}-d tensor")
    return int(axis) % ndim


def _blocks(x: np.ndarray, axis, group_size):
    """(2-D view of the blocks that share a scale, function mapping one value per
    block back to the scale's shape)."""
    if axis is None:
        return x.reshape(1, -1), lambda v: np.asarray(v).reshape(())
    if group_size is None:
        C = x.shape[axis]
        return np.moveaxis(x, axis, 0).reshape(C, -1), lambda v: np.asarray(v).reshape(C)
    L = x.shape[axis]
    xm = np.moveaxis(x, axis, -1)
    other = xm.shape[:-1]
    G = L // group_size

    def restore(v):
        return np.moveaxis(np.asarray(v).reshape(other + (G,)), -1, axis)
    return xm.reshape(-1, group_size), restore


def _block_minmax(X, ax, gs, nthreads):
    """Min and max of each block sharing a scale, in the scale's layout
    (``(C,)`` per channel, the shape with ``axis`` divided by ``gs`` per group),
    for finite float32 ``X``: contiguous runs go to the compiled kernel (one row
    per thread), other layouts to a NumPy reduction over a reshaped view."""
    Xc = np.ascontiguousarray(X)
    shape = Xc.shape
    if gs is None:
        outer = int(np.prod(shape[:ax], dtype=np.int64))
        inner = int(np.prod(shape[ax + 1:], dtype=np.int64))
        if inner >= 32:
            mn, mx, _ = _quant.row_minmax(Xc.reshape(-1, inner), nthreads)
            C = shape[ax]
            return (mn.reshape(outer, C).min(axis=0).astype(np.float64),
                    mx.reshape(outer, C).max(axis=0).astype(np.float64))
        others = tuple(i for i in range(Xc.ndim) if i != ax)
        return Xc.min(axis=others).astype(np.float64), Xc.max(axis=others).astype(np.float64)
    G = shape[ax] // gs
    if ax == Xc.ndim - 1 and gs >= 16:
        mn, mx, _ = _quant.row_minmax(Xc.reshape(-1, gs), nthreads)
        out = shape[:-1] + (G,)
        return mn.reshape(out).astype(np.float64), mx.reshape(out).astype(np.float64)
    v = Xc.reshape(shape[:ax] + (G, gs) + shape[ax + 1:])
    return v.min(axis=ax + 1).astype(np.float64), v.max(axis=ax + 1).astype(np.float64)


def _expand(param, shape, axis, group_size):
    """Broadcast a scale/zero-point array of the QTensor convention to ``shape``."""
    p = np.asarray(param)
    if p.ndim == 0 or axis is None:
        return p
    if group_size is None:
        view = [1] * len(shape)
        view[axis] = shape[axis]
        return p.reshape(view)
    return np.repeat(p, group_size, axis=axis)


# ---------------------------------------------------------------------------

def _float_input(x) -> np.ndarray:
    if x is None:
        raise TypeError("x: expected a float array, got None")
    arr = np.asarray(x)
    mod = getattr(arr.dtype.type, "__module__", "") or ""
    if mod.startswith("ml_dtypes"):
        return arr.astype(np.float32)
    if arr.dtype.kind != "f":
        raise TypeError(f"x: expected float values, got an array of dtype {arr.dtype}")
    if arr.dtype.itemsize == 2:
        return arr.astype(np.float32)
    if arr.dtype.itemsize > 8:
        raise TypeError(f"x: {arr.dtype} is not supported; convert to float64 first")
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _check_finite(x, nan, f):
    if x.size == 0 or np.isfinite(x).all():
        return
    if nan == "propagate" and isinstance(f, FloatFormat) and f.nan is not None:
        return
    bad = np.argwhere(~np.isfinite(x))[0]
    where = tuple(int(i) for i in bad)
    raise ValueError(f"x: non-finite value {x[where]} at index {where}"
                     + (" (nan='propagate' keeps NaN for FP8 formats)" if isinstance(f, FloatFormat) else ""))


def quantize(x, fmt="int8", *, scale=None, zero_point=None, symmetric=True, axis=None,
             group_size=None, narrow_range=False, rounding="nearest_even",
             calibration="minmax", percentile=99.99, float_zero_point=False, margin=0,
             saturate=True, nan="raise", seed=None, num_threads=None) -> QTensor:
    """Quantize floats to integer or FP8 codes.

    Parameters
    ----------
    x : array_like of floats
    fmt : str, IntFormat or FloatFormat
        ``"int8"``, ``"uint8"``, ``"int4"``, ``"uint4"``, ``"int2"``, ...,
        ``"e4m3"``, ``"e5m2"``, ...
    scale, zero_point : optional
        Given: ONNX ``QuantizeLinear`` semantics.  Shapes: scalar, ``(C,)`` with
        ``axis``, or the tensor's shape with ``axis`` divided by ``group_size``.
    symmetric : bool
        Calibrated integer scales: symmetric (zero point 0) or asymmetric.
    axis : int, optional
        Per-channel scales along ``axis`` (or the axis along which groups run).
    group_size : int, optional
        Per-group scales: groups of ``group_size`` consecutive elements along
        ``axis`` (which must be divisible by it).
    narrow_range : bool
        Use [-2^(n-1) + 1, 2^(n-1) - 1] for signed formats ([-127, 127] for INT8).
    rounding : str
        One of ``ROUNDING``; FP8 formats take "nearest_even", "toward_zero"
        and "stochastic" (those of :func:`fixedpoint.to_fp8`).
    calibration : {"minmax", "percentile", "mse", "entropy"}
        See ``CALIBRATION``; :class:`fixedpoint.Calibrator` accumulates over batches.
    percentile : float
        For ``calibration="percentile"``.
    float_zero_point : bool
        Asymmetric with a real-valued offset and no widening (the design notes' form).
    margin : int
        FP8: ``scale = amax / max * 2**margin``.
    saturate : bool
        FP8: saturating (True, as Hopper) or non-saturating conversion.
    nan : {"raise", "propagate"}
        Non-finite input raises ``ValueError`` saying where; ``"propagate"``
        lets NaN through to FP8 formats that have a NaN.
    seed : int, optional
        For ``rounding="stochastic"``.
    num_threads : int, optional

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> q = fp.quantize(np.array([-0.5, -0.2, 0.1, 0.3, 0.5]), "int8")
    >>> q.codes.tolist(), bool(q.scale == np.float32(0.5 / 127))
    ([-127, -51, 25, 76, 127], True)
    >>> fp.quantize(np.array([0.1, 0.3, 0.5]), "uint8", symmetric=False, float_zero_point=True).codes.tolist()
    [0, 128, 255]
    """
    f = _as_format(fmt)
    check_choice(rounding, "rounding", ROUNDING)
    check_choice(calibration, "calibration", CALIBRATION)
    check_choice(nan, "nan", ("raise", "propagate"))
    is_fp8 = isinstance(f, FloatFormat)
    if narrow_range:
        if is_fp8 or not f.signed:
            raise ValueError("narrow_range: applies to signed integer formats only")
        f = IntFormat(f.bits, True, True)
    if is_fp8 and rounding not in ("nearest_even", "toward_zero", "stochastic"):
        raise ValueError(f"rounding: FP8 formats take 'nearest_even', 'toward_zero' or 'stochastic', "
                         f"not {rounding!r}")
    if float_zero_point and (symmetric or is_fp8):
        raise ValueError("float_zero_point: needs symmetric=False and an integer format")
    X = _float_input(x)
    nthreads = resolve_threads(num_threads)
    fast_minmax = None
    if scale is not None and X.dtype == np.float32:
        pass          # the compiled kernel (or the path below) checks finiteness in its pass
    elif X.dtype == np.float32 and X.size:
        flat = np.ascontiguousarray(X).reshape(-1)
        mn, mx, nbad = _quant.minmax(flat, nthreads)
        if nbad:
            _check_finite(X, nan, f)
        else:
            fast_minmax = (mn, mx)
    else:
        _check_finite(X, nan, f)
    ax = _check_axis(axis, X.ndim)
    gs = None
    if group_size is not None:
        gs = check_positive_int(group_size, "group_size")
        if ax is None:
            raise ValueError("group_size: needs axis (the axis along which groups run)")
        if X.shape[ax] % gs:
            raise ValueError(f"group_size: {gs} does not divide axis {ax} of length {X.shape[ax]}")
    if scale is None:
        if X.size == 0:
            raise ValueError("x: an empty tensor has no range to calibrate; give scale")
        if zero_point is not None:
            raise ValueError("zero_point: give it together with scale, or neither")
        if calibration in ("mse", "entropy"):
            _, restore = _blocks(X, ax, gs)
            from .calibrate import Calibrator
            cal = Calibrator(calibration, symmetric=symmetric or is_fp8, axis=ax, group_size=gs)
            cal.update(X)
            rmin, rmax = cal.block_range(f)
        elif calibration == "minmax" and ax is None and fast_minmax is not None:
            rmin, rmax = np.array([fast_minmax[0]]), np.array([fast_minmax[1]])   # fused pass
            restore = lambda v: np.asarray(v).reshape(())     # noqa: E731
        elif calibration == "minmax" and fast_minmax is not None:
            # float32, all finite: per-block ranges without copying the blocks
            rmin, rmax = _block_minmax(X, ax, gs, nthreads)
            restore = lambda v: np.asarray(v)       # noqa: E731 - already in the scale's layout
        else:
            blocks, restore = _blocks(X, ax, gs)
            with np.errstate(invalid="ignore"):
                fin = np.where(np.isfinite(blocks), blocks, 0.0)   # NaN passed to FP8: ignored
            if calibration == "minmax":
                rmin, rmax = fin.min(axis=1).astype(np.float64), fin.max(axis=1).astype(np.float64)
            elif symmetric or is_fp8:
                amax = np.percentile(np.abs(fin), percentile, axis=1)
                rmin, rmax = -amax, amax
            else:
                rmin = np.percentile(fin, 100 - percentile, axis=1)
                rmax = np.percentile(fin, percentile, axis=1)
        scale_v, zp_v = _scale_from_range(rmin, rmax, f, symmetric, float_zero_point, margin)
        sc, zp = restore(scale_v), restore(zp_v)
    else:
        sc = np.asarray(scale)
        if sc.dtype.kind not in "fiu":
            raise TypeError(f"scale: expected floats, got dtype {sc.dtype}")
        sc = sc.astype(np.float32)
        _check_param_shape(sc, "scale", X.shape, ax, gs)
        if not np.all(np.isfinite(sc)) or np.any(sc <= 0):
            bad = sc[~(np.isfinite(sc) & (sc > 0))].ravel()[0]
            raise ValueError(f"scale: must be finite and positive, got {bad}")
        if zero_point is None:
            zp = np.zeros(sc.shape, np.float32 if float_zero_point else np.int32)
        else:
            zp = np.asarray(zero_point)
            _check_param_shape(zp, "zero_point", X.shape, ax, gs)
            if float_zero_point:
                zp = zp.astype(np.float32)
            else:
                if zp.dtype.kind not in "iu":
                    raise TypeError(f"zero_point: expected integers, got dtype {zp.dtype}")
                if is_fp8:
                    if np.any(zp != 0):
                        raise ValueError("zero_point: FP8 quantization takes zero_point 0")
                elif zp.size and (zp.min() < f.min or zp.max() > f.max):
                    bad = zp.min() if zp.min() < f.min else zp.max()
                    raise ValueError(f"zero_point: {bad} is outside the {f.name} range [{f.min}, {f.max}]")

    runs = _runs(X, sc, zp, ax, gs) if (not is_fp8 and not float_zero_point and f.bits <= 8
                                        and X.dtype == np.float32
                                        and rounding in ("nearest_even", "toward_zero", "floor")) else None
    if runs is not None:
        x2, s_run, z_run = runs
        if f.bits == 4 and x2.shape[1] % 2 == 0:
            # write the codes packed in the same pass; QTensor.codes unpacks on demand
            packed = np.empty((x2.shape[0], x2.shape[1] // 2), np.uint8)
            if _quant.quantize_runs(x2, packed, s_run, z_run, float(f.min), float(f.max),
                                    rounding, not f.signed, nthreads, True):
                _check_finite(X, "raise", f)             # raises, saying where
            return QTensor(None, np.asarray(sc, np.float32), np.asarray(zp), f, ax, gs, False,
                           packed=packed.reshape(-1), shape=X.shape)
        out = np.empty(x2.shape, np.uint8)
        if _quant.quantize_runs(x2, out, s_run, z_run, float(f.min), float(f.max), rounding,
                                not f.signed, nthreads, False):
            _check_finite(X, "raise", f)             # raises, saying where
        codes = out.view(f.dtype).reshape(X.shape)
        return QTensor(codes, np.asarray(sc, np.float32), np.asarray(zp), f, ax, gs, False)
    if scale is not None and X.dtype == np.float32:
        _check_finite(X, nan, f)
    s_full = _expand(sc, X.shape, ax, gs).astype(X.dtype)
    if is_fp8 and X.dtype == np.float32 and np.ndim(sc) == 0:
        # per tensor: the division fused into the encoder (same bits as x / s, then to_fp8)
        codes = np.empty(X.shape, np.uint8)
        _fp8.encode_scaled(np.ascontiguousarray(X).reshape(-1), codes.reshape(-1), float(sc),
                           format_params(f, bool(saturate)), rounding,
                           _seed_value(seed) if rounding == "stochastic" else 0, False, nthreads)
        zp = np.zeros((), np.int32)
    elif is_fp8:
        with np.errstate(over="ignore", invalid="ignore"):
            q = (X / s_full).astype(np.float32)
        codes = to_fp8(q, f, saturate=saturate, rounding=rounding, seed=seed, num_threads=nthreads)
        zp = np.zeros(np.shape(sc), np.int32)
    else:
        z_full = _expand(zp, X.shape, ax, gs)
        with np.errstate(over="ignore", invalid="ignore"):
            if float_zero_point:
                v = round_values((X - z_full.astype(X.dtype)) / s_full, rounding, seed) + f.min
            else:
                v = round_values(X / s_full, rounding, seed) + z_full
            codes = np.clip(v, f.min, f.max).astype(f.dtype)
    return QTensor(codes, np.asarray(sc, np.float32), np.asarray(zp), f, ax, gs, bool(float_zero_point))


def _runs(X, sc, zp, ax, gs, min_run=32):
    """X as rows that each share one (scale, zero point), for the compiled
    kernel: per tensor, per channel (rows of the trailing dimensions) and per
    group along the last axis.  None when the layout has short runs."""
    Xc = np.ascontiguousarray(X)
    sc = np.asarray(sc, np.float32)
    zf = np.asarray(zp).astype(np.float32)
    if ax is None:
        return Xc.reshape(1, -1), sc.reshape(1), zf.reshape(1)
    if gs is None:
        outer = int(np.prod(Xc.shape[:ax], dtype=np.int64))
        inner = int(np.prod(Xc.shape[ax + 1:], dtype=np.int64))
        if inner < min_run:
            return None
        return (Xc.reshape(-1, inner), np.ascontiguousarray(np.tile(sc, outer)),
                np.ascontiguousarray(np.tile(zf, outer)))
    if ax != Xc.ndim - 1 or gs < min_run:
        return None
    return Xc.reshape(-1, gs), np.ascontiguousarray(sc.reshape(-1)), np.ascontiguousarray(zf.reshape(-1))


def _check_param_shape(p, name, shape, ax, gs):
    if ax is None:
        want = ()
    elif gs is None:
        want = (shape[ax],)
    else:
        want = shape[:ax] + (shape[ax] // gs,) + shape[ax + 1:]
    if p.shape != want:
        raise ValueError(f"{name}: expected shape {want} for this granularity, got {p.shape}")


def _scale_from_range(rmin, rmax, f, symmetric, float_zp, margin):
    rmin = np.asarray(rmin, np.float64)
    rmax = np.asarray(rmax, np.float64)
    if isinstance(f, FloatFormat):
        amax = np.maximum(np.abs(rmin), np.abs(rmax))
        scale = amax / f.max_value * 2.0 ** margin
        zp = np.zeros(scale.shape, np.int32)
    elif symmetric:
        if not f.signed:
            raise ValueError(f"symmetric: {f.name} is unsigned; use symmetric=False")
        amax = np.maximum(np.abs(rmin), np.abs(rmax))
        scale = amax / f.max
        zp = np.zeros(scale.shape, np.int32)
    elif float_zp:
        scale = (rmax - rmin) / (f.max - f.min)
        zp = rmin.astype(np.float32)
    else:
        lo, hi = np.minimum(rmin, 0.0), np.maximum(rmax, 0.0)
        scale = (hi - lo) / (f.max - f.min)
        safe = np.where(scale > 0, scale, 1.0)
        zp = np.clip(np.rint(f.min - lo / safe), f.min, f.max).astype(np.int32)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)     # a range of zero: scale 1
    return scale, zp


def dequantize(q: QTensor, dtype=np.float32) -> np.ndarray:
    """``q.dequantize(dtype)``.

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> fp.dequantize(fp.quantize(np.array([0.0, 0.5, -1.0]), "int4")).tolist()
    [0.0, 0.4285714626312256, -1.0]
    """
    if not isinstance(q, QTensor):
        raise TypeError(f"q: expected a QTensor, got {type(q).__name__}")
    return q.dequantize(dtype)


def fake_quant(x, fmt="int8", **kwargs) -> np.ndarray:
    """Quantize then dequantize, in x's float dtype (float32 for 16-bit input).

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> fp.fake_quant(np.array([0.1, 0.26, -0.3], np.float32), "int2").tolist()
    [0.0, 0.30000001192092896, -0.30000001192092896]
    """
    X = _float_input(x)
    return quantize(X, fmt, **kwargs).dequantize(X.dtype)
