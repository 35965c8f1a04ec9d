"""Quantization: float tensors to the integer or minifloat codes an accelerator stores.

With ``scale`` (and ``zero_point``) given, :func:`quantize` is ONNX
``QuantizeLinear``: ``x / scale`` by IEEE division in the input's precision
(float32 for float16/bfloat16 input), rounded (half to even by default), plus
the zero point, saturated to the format.  For float formats the quotient is
converted with :func:`fixedpoint.to_fp8` (``overflow`` chooses the behaviour).

Without ``scale`` the range is calibrated from the data (``calibration=``: a
method name, a :class:`~fixedpoint.Calibrator` that has seen batches, or a
:class:`~fixedpoint.DelayedScaling`), and
:func:`fixedpoint.calibrate.scale_from_range` turns it into a scale:

* symmetric (default): ``scale = amax / qmax`` (0.5 / 127 for INT8 when
  ``amax = 0.5``), zero point 0;
* asymmetric, integer zero point (ONNX/TFLite): the range is widened to
  include 0 so that 0.0 is exact, ``scale = (rmax - rmin) / (qmax - qmin)``,
  ``zero_point = round(qmin - rmin / scale)``;
* asymmetric with ``float_zero_point=True`` (the design notes' form):
  ``code = round((x - rmin) / scale) + qmin``, no widening; the real offset
  ``rmin`` is kept as the zero point;
* float formats: ``scale = amax / fmt.max_value * 2**margin`` (Transformer
  Engine's scale is the reciprocal: it multiplies).

Scales are float32 and computed in float32.  A block whose scale is 0 (all
zeros, or values so small that ``amax / qmax`` underflows float32) keeps scale
0, as Core ML does: nonzero values divide to +-Inf and saturate, zeros (0 / 0)
give the zero point; every code dequantizes to 0.  No path lets the NaN of
0 / 0 reach a clamp.
"""
from __future__ import annotations

import numpy as np

from . import _fp8, _quant
from . import dask_arrays
from ._checks import (as_format_array, check_axis, check_choice, check_positive_int, expand_param,
                      float_source, ml_dtypes_name, resolve_threads, seed_value)
from .calibrate import CALIBRATION, Calibrator, DelayedScaling, block_view, scale_from_range
from .formats import FloatFormat, IntFormat, as_format
from .fp8 import FloatCodes, check_overflow, codes_and_format, format_params, from_fp8, to_fp8

__all__ = ["QTensor", "quantize", "dequantize", "fake_quant", "ROUNDING", "round_values",
           "pack_codes", "unpack_codes", "expand_param"]

#: Rounding of ``x / scale`` to an integer code: one line each.
ROUNDING = {
    "nearest_even": "to the nearest integer, ties to even (ONNX, TFLite, Core ML)",
    "nearest_away": "to the nearest integer, ties away from zero (C round())",
    "toward_zero": "truncate",
    "floor": "toward minus infinity",
    "stochastic": "up with probability equal to the fractional part (seeded)",
}
_FLOAT_ROUNDING = ("nearest_even", "toward_zero", "stochastic")


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
    gen = np.random.Generator(np.random.Philox(seed_value(seed)))
    f = np.floor(v)
    return f + (gen.random(np.shape(v)) < (v - f))


# ---------------------------------------------------------------------------
# Granularity: the shape of scales and zero points

def _param_shape(shape, axis, group_size):
    if axis is None:
        return ()
    if group_size is None:
        return (shape[axis],)
    return shape[:axis] + (shape[axis] // group_size,) + shape[axis + 1:]


def _check_granularity(shape, axis, group_size):
    """Normalised (axis, group_size) for a tensor of ``shape``."""
    ax = check_axis(axis, len(shape))
    gs = None
    if group_size is not None:
        gs = check_positive_int(group_size, "group_size")
        if ax is None:
            raise ValueError("group_size: needs axis (the axis along which groups run)")
        if shape[ax] % gs:
            raise ValueError(f"group_size: {gs} does not divide axis {ax} of length {shape[ax]}")
    return ax, gs


def _as_scale(scale, shape, axis, group_size) -> np.ndarray:
    sc = np.asarray(scale)
    if sc.dtype.kind not in "fiu" or sc.dtype == np.bool_:
        raise TypeError(f"scale: expected floats, got an array of dtype {sc.dtype}")
    sc = sc.astype(np.float32)
    want = _param_shape(shape, axis, group_size)
    if sc.shape != want:
        raise ValueError(f"scale: expected shape {want} for this granularity, got {sc.shape}")
    if not np.all(np.isfinite(sc)) or np.any(sc < 0):
        bad = sc[~(np.isfinite(sc) & (sc >= 0))].ravel()[0]
        raise ValueError(f"scale: must be finite and non-negative, got {bad}")
    return sc


def _as_zero_point(zp, f, shape, axis, group_size, float_zero_point) -> np.ndarray:
    want = _param_shape(shape, axis, group_size)
    if zp is None:
        return np.zeros(want, np.float32 if float_zero_point else np.int32)
    z = np.asarray(zp)
    if z.shape == () and want != ():
        z = np.broadcast_to(z, want)
    if z.shape != want:
        raise ValueError(f"zero_point: expected shape {want} for this granularity, got {z.shape}")
    if float_zero_point:
        if z.dtype.kind not in "fiu" or not np.all(np.isfinite(z)):
            raise ValueError("zero_point: a float zero point must be finite numbers")
        return z.astype(np.float32)
    if z.dtype.kind not in "iu":
        raise TypeError(f"zero_point: expected integers, got an array of dtype {z.dtype}")
    if isinstance(f, FloatFormat):
        if np.any(z != 0):
            raise ValueError(f"zero_point: {f.name} codes take zero point 0")
    elif z.size and (int(z.min()) < f.min or int(z.max()) > f.max):
        bad = int(z.min()) if int(z.min()) < f.min else int(z.max())
        raise ValueError(f"zero_point: {bad} is outside the {f.name} range [{f.min}, {f.max}]")
    return z.astype(np.int32)


# ---------------------------------------------------------------------------
# Packing

def _bits_per_code(f) -> int:
    return f.nbits if isinstance(f, FloatFormat) else f.bits


def pack_codes(codes: np.ndarray, fmt) -> np.ndarray:
    """Pack codes of a 2-, 4- or 8-bit format into bytes, C order: 8-bit formats
    one per byte; 4-bit two per byte, first element in the low nibble; 2-bit four
    per byte from the low bits (ONNX >= 1.17); odd counts padded with zeros.

    Examples
    --------
    >>> import numpy as np
    >>> pack_codes(np.array([1, -1, 7], np.int8), "int4").tolist()
    [241, 7]
    """
    f = as_format(fmt)
    bits = _bits_per_code(f)
    flat = np.ascontiguousarray(codes).reshape(-1)
    if bits == 8:
        return flat.view(np.uint8).copy()
    if bits not in (2, 4):
        raise ValueError(f"fmt: packing is defined for 2-, 4- and 8-bit formats, not {bits}-bit")
    u8 = flat.view(np.uint8) if flat.dtype.itemsize == 1 else flat.astype(np.uint8)
    if bits == 4:
        if u8.size % 2:
            u8 = np.concatenate([u8, np.zeros(1, np.uint8)])
        out = np.empty(u8.size // 2, np.uint8)
        _quant.pack4(u8, out)
        return out
    u = u8 & np.uint8(3)
    pad = (-u.size) % 4
    u = np.concatenate([u, np.zeros(pad, np.uint8)]).reshape(-1, 4)
    return (u[:, 0] | (u[:, 1] << 2) | (u[:, 2] << 4) | (u[:, 3] << 6)).astype(np.uint8)


def unpack_codes(packed, fmt, shape) -> np.ndarray:
    """Inverse of :func:`pack_codes` (signed codes sign-extended; float formats'
    codes as :class:`~fixedpoint.FloatCodes`)."""
    f = as_format(fmt)
    bits = _bits_per_code(f)
    p = np.asarray(packed)
    if p.dtype != np.uint8:
        raise TypeError(f"packed: expected uint8 bytes, got an array of dtype {p.dtype}")
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64))
    if bits == 8:
        if p.size != n:
            raise ValueError(f"packed: expected {n} bytes for shape {shape}, got {p.size}")
        vals = p.reshape(-1).copy()
    else:
        if bits not in (2, 4):
            raise ValueError(f"fmt: packing is defined for 2-, 4- and 8-bit formats, not {bits}-bit")
        per = 8 // bits
        if p.size != -(-n // per):
            raise ValueError(f"packed: expected {-(-n // per)} bytes for shape {shape}, got {p.size}")
        mask = np.uint8((1 << bits) - 1)
        vals = np.stack([(p.reshape(-1) >> np.uint8(bits * i)) & mask for i in range(per)],
                        axis=1).reshape(-1)[:n]
    if isinstance(f, FloatFormat):
        return FloatCodes(vals.reshape(shape), f)
    if f.signed and bits < 8:
        v = vals.astype(np.int16)
        vals = np.where(v >= (1 << (bits - 1)), v - (1 << bits), v)
    return vals.astype(f.dtype).reshape(shape) if bits < 8 else vals.view(f.dtype).reshape(shape)


# ---------------------------------------------------------------------------

class QTensor:
    """Quantized codes with what it takes to read them back.

    ``x ~= (codes - zero_point) * scale`` (integer formats),
    ``x ~= (codes - qmin) * scale + zero_point`` (``float_zero_point``),
    ``x ~= value(codes) * scale`` (float formats).  ``scale`` and
    ``zero_point`` have shape ``()`` (per tensor), ``(C,)`` (per channel along
    ``axis``) or the tensor's shape with ``axis`` divided by ``group_size``
    (per group, as ONNX blocked quantization).

    Parameters
    ----------
    codes : array_like
        Integer codes inside ``fmt``'s range, or minifloat codes
        (:class:`~fixedpoint.FloatCodes`, or uint8 with ``fmt``).
    fmt : str, IntFormat or FloatFormat, optional
        Required unless the codes carry their format.
    scale : float or array, keyword-only
        Finite, non-negative float32 scales of the granularity's shape.
    zero_point : int or array, optional
        Integer zero points inside the format (0 for float formats), or
        floats with ``float_zero_point``.
    axis, group_size : optional
        Granularity, as in :func:`quantize`.
    float_zero_point : bool

    Every argument is checked; a QTensor is always consistent.  One made by
    :func:`quantize` for a 4-bit format may hold its codes packed (the
    quantizer writes them packed in the same pass); ``codes`` then unpacks them
    on first use.

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> q = fp.QTensor(np.array([[10, -20]], np.int8), "int8", scale=[0.5, 0.25], axis=1)
    >>> q.dequantize().tolist()
    [[5.0, -5.0]]
    >>> fp.QTensor(np.array([300]), "int8", scale=1.0)
    Traceback (most recent call last):
    ...
    ValueError: codes: value 300 at index (0,) is outside the int8 range [-128, 127]
    """

    def __init__(self, codes, fmt=None, *, scale, zero_point=None, axis=None, group_size=None,
                 float_zero_point=False):
        f = None if fmt is None else as_format(fmt)
        if f is None and not isinstance(codes, FloatCodes) and \
                ml_dtypes_name(np.asarray(codes).dtype) is None:
            raise TypeError("fmt: the codes carry no format; give fmt (e.g. 'int8' or 'e4m3')")
        if f is None or isinstance(f, FloatFormat):
            arr, f = codes_and_format(codes, f)
            c = FloatCodes(arr, f)
        else:
            c = as_format_array(codes, "codes", f)
        if not isinstance(float_zero_point, (bool, np.bool_)):
            raise TypeError(f"float_zero_point: expected a bool, got {type(float_zero_point).__name__}")
        if float_zero_point and not isinstance(f, IntFormat):
            raise ValueError("float_zero_point: applies to integer formats")
        ax, gs = _check_granularity(c.shape, axis, group_size)
        self._set(c, None, c.shape, f, _as_scale(scale, c.shape, ax, gs),
                  _as_zero_point(zero_point, f, c.shape, ax, gs, bool(float_zero_point)), ax, gs,
                  bool(float_zero_point))

    def _set(self, codes, packed, shape, f, scale, zero_point, axis, group_size, fzp):
        self._codes, self._packed, self._shape = codes, packed, tuple(shape)
        self._fmt, self._scale, self._zero_point = f, scale, zero_point
        self._axis, self._group_size, self._fzp = axis, group_size, fzp

    @classmethod
    def _trusted(cls, codes, packed, shape, f, scale, zero_point, axis, group_size, fzp=False):
        """Built by the quantizer itself, whose results are consistent by construction."""
        q = cls.__new__(cls)
        q._set(codes, packed, shape, f, np.asarray(scale, np.float32), np.asarray(zero_point),
               axis, group_size, fzp)
        return q

    @classmethod
    def from_packed(cls, packed, fmt, shape, *, scale, zero_point=None, axis=None,
                    group_size=None, float_zero_point=False) -> "QTensor":
        """Rebuild a QTensor from :meth:`pack`'s bytes."""
        f = as_format(fmt)
        return cls(unpack_codes(packed, f, shape), f, scale=scale, zero_point=zero_point,
                   axis=axis, group_size=group_size, float_zero_point=float_zero_point)

    # read-only attributes
    fmt = property(lambda self: self._fmt, doc="The format (IntFormat or FloatFormat).")
    scale = property(lambda self: self._scale, doc="float32 scales, the granularity's shape.")
    zero_point = property(lambda self: self._zero_point, doc="Zero points, the scales' shape.")
    axis = property(lambda self: self._axis, doc="Axis of the per-channel/group scales, or None.")
    group_size = property(lambda self: self._group_size, doc="Elements per group, or None.")
    float_zero_point = property(lambda self: self._fzp, doc="Whether the zero point is a real offset.")
    shape = property(lambda self: self._shape, doc="Shape of the quantized tensor.")

    @property
    def codes(self) -> np.ndarray:
        """The codes, one per element: the format's integer dtype, or FloatCodes."""
        if self._codes is None:
            self._codes = unpack_codes(self._packed, self._fmt, self._shape)
        return self._codes

    def __repr__(self) -> str:
        return (f"QTensor(shape={self.shape}, fmt={self.fmt.name}, axis={self.axis}, "
                f"group_size={self.group_size}, scale shape={np.shape(self.scale)})")

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        """Float values of the codes (ONNX ``DequantizeLinear``: float32 arithmetic)."""
        codes = self.codes
        s = expand_param(self.scale, codes.shape, self.axis, self.group_size).astype(np.float32)
        if isinstance(self.fmt, FloatFormat):
            out = from_fp8(codes, dtype=np.float32) * s
        elif self.float_zero_point:
            z = expand_param(self.zero_point, codes.shape, self.axis, self.group_size)
            out = (codes.astype(np.float32) - np.float32(self.fmt.min)) * s + z.astype(np.float32)
        else:
            z = expand_param(self.zero_point, codes.shape, self.axis, self.group_size)
            out = (codes.astype(np.int32) - z.astype(np.int32)).astype(np.float32) * s
        return np.asarray(out).astype(dtype, copy=False)

    def pack(self) -> np.ndarray:
        """The codes as stored bytes (see :func:`pack_codes`).  When the QTensor
        already holds packed codes this is a read-only view of them."""
        if self._packed is not None:
            view = self._packed.view()
            view.flags.writeable = False
            return view
        return pack_codes(self.codes, self.fmt)


# ---------------------------------------------------------------------------

def _check_finite(x, nan, f):
    if x.size == 0 or np.isfinite(x).all():
        return
    if nan == "propagate" and isinstance(f, FloatFormat) and f.nan is not None:
        return
    bad = np.argwhere(~np.isfinite(x))[0]
    where = tuple(int(i) for i in bad)
    raise ValueError(f"x: non-finite value {x[where]} at index {where}"
                     + (" (nan='propagate' keeps NaN for float formats that have one)"
                        if isinstance(f, FloatFormat) else ""))


def _block_minmax(X, ax, gs, nthreads):
    """Min and max of each block sharing a scale, in the scale's layout, for
    finite float32 ``X`` (C-contiguous): contiguous runs go to the compiled
    kernel (one row per thread), other layouts to a NumPy reduction."""
    shape = X.shape
    if gs is None:
        outer = int(np.prod(shape[:ax], dtype=np.int64))
        inner = int(np.prod(shape[ax + 1:], dtype=np.int64))
        if inner >= 32:
            mn, mx, _ = _quant.row_minmax(X.reshape(-1, inner), nthreads)
            C = shape[ax]
            return mn.reshape(outer, C).min(axis=0), mx.reshape(outer, C).max(axis=0)
        others = tuple(i for i in range(X.ndim) if i != ax)
        return X.min(axis=others), X.max(axis=others)
    G = shape[ax] // gs
    if ax == X.ndim - 1 and gs >= 16:
        mn, mx, _ = _quant.row_minmax(X.reshape(-1, gs), nthreads)
        out = shape[:-1] + (G,)
        return mn.reshape(out), mx.reshape(out)
    v = X.reshape(shape[:ax] + (G, gs) + shape[ax + 1:])
    return v.min(axis=ax + 1), v.max(axis=ax + 1)


def _calibrated(X, f, calibration, ax, gs, symmetric, float_zero_point, margin, percentile, nan,
                nthreads):
    """(scale, zero point) in the scale's layout, from the data or a calibrator."""
    sym = symmetric or isinstance(f, FloatFormat)
    if isinstance(calibration, DelayedScaling):
        if calibration.fmt != f:
            raise ValueError(f"calibration: this DelayedScaling is for {calibration.fmt.name}, "
                             f"not {f.name}")
        if ax is not None:
            raise ValueError("calibration: delayed scaling gives one scale per tensor (axis=None)")
        _check_finite(X, nan, f)
        fin = X[np.isfinite(X)] if nan == "propagate" else X
        return np.asarray(calibration.step_scale(fin), np.float32), np.zeros((), np.int32)
    if isinstance(calibration, Calibrator):
        cax = check_axis(calibration.axis, X.ndim)
        if (cax, calibration.group_size) != (ax, gs):
            raise ValueError(f"calibration: the Calibrator has axis={calibration.axis}, "
                             f"group_size={calibration.group_size}; quantize was given "
                             f"axis={ax}, group_size={gs}")
        scale, zp = calibration.scale_zero_point(f, float_zero_point=float_zero_point, margin=margin)
        return np.asarray(scale, np.float32), np.asarray(zp)
    if not isinstance(calibration, str):
        raise TypeError(f"calibration: expected one of {list(CALIBRATION)}, a Calibrator or a "
                        f"DelayedScaling, got {type(calibration).__name__}")
    check_choice(calibration, "calibration", CALIBRATION)
    if X.size == 0:
        raise ValueError("x: an empty tensor has no range to calibrate; give scale")
    if calibration == "minmax":
        if X.dtype == np.float32:
            mn, mx, nbad = _quant.minmax(X.reshape(-1), nthreads)
        else:
            nbad = int(np.count_nonzero(~np.isfinite(X)))
        if nbad:
            _check_finite(X, nan, f)              # raises unless NaN may pass to a float format
            blocks, restore = block_view(X, ax, gs)
            with np.errstate(invalid="ignore"):
                fin = np.where(np.isfinite(blocks), blocks, 0)
            rmin, rmax = restore(fin.min(axis=1)), restore(fin.max(axis=1))
        elif ax is None and X.dtype == np.float32:
            rmin, rmax = np.asarray(mn, np.float32), np.asarray(mx, np.float32)
        elif X.dtype == np.float32:
            rmin, rmax = _block_minmax(X, ax, gs, nthreads)
        else:
            blocks, restore = block_view(X, ax, gs)
            rmin, rmax = restore(blocks.min(axis=1)), restore(blocks.max(axis=1))
        return scale_from_range(rmin, rmax, f, symmetric=sym, float_zero_point=float_zero_point,
                                margin=margin)
    _check_finite(X, "raise", f)
    cal = Calibrator(calibration, symmetric=sym, axis=ax, group_size=gs, percentile=percentile)
    cal.update(X)
    scale, zp = cal.scale_zero_point(f, float_zero_point=float_zero_point, margin=margin)
    return np.asarray(scale, np.float32), np.asarray(zp)


def quantize(x, fmt, *, scale=None, zero_point=None, symmetric=True, axis=None, group_size=None,
             narrow_range=False, rounding="nearest_even", calibration="minmax", percentile=99.99,
             float_zero_point=False, margin=0, overflow="saturate", nan="raise", seed=None,
             num_threads=None) -> QTensor:
    """Quantize floats to integer or minifloat codes.

    Parameters
    ----------
    x : array_like of floats
    fmt : str, IntFormat or FloatFormat
        ``"int8"``, ``"uint8"``, ``"int4"``, ``"uint4"``, ``"int2"``, ...,
        ``"e4m3"``, ``"e5m2"``, ...  Required.
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
        One of ``ROUNDING``; float formats take "nearest_even", "toward_zero"
        and "stochastic" (those of :func:`fixedpoint.to_fp8`).
    calibration : str, Calibrator or DelayedScaling
        How the range is found when ``scale`` is None: one of
        :data:`fixedpoint.calibrate.CALIBRATION`, or a calibrator that has
        seen the data (its axis and group size apply).
    percentile : float
        For ``calibration="percentile"``.
    float_zero_point : bool
        Asymmetric with a real-valued offset and no widening (the design notes' form).
    margin : int
        Float formats: ``scale = amax / max * 2**margin``.
    overflow : {"saturate", "nonfinite"}
        Integer formats always saturate; float formats saturate (Hopper) or
        overflow to Inf/NaN (see :data:`fixedpoint.fp8.OVERFLOW_MODES`).
    nan : {"raise", "propagate"}
        Non-finite input raises ``ValueError`` saying where; ``"propagate"``
        lets NaN through to float formats that have a NaN.
    seed : int, optional
        For ``rounding="stochastic"``.
    num_threads : int, optional

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> q = fp.quantize(np.array([-0.5, -0.2, 0.1, 0.3, 0.5]), "int8")
    >>> q.codes.tolist(), bool(q.scale == np.float32(0.5) / np.float32(127))
    ([-127, -51, 25, 76, 127], True)
    >>> fp.quantize(np.array([0.1, 0.3, 0.5]), "uint8", symmetric=False, float_zero_point=True).codes.tolist()
    [0, 128, 255]
    """
    if dask_arrays.is_dask(x):
        return dask_arrays.quantize(quantize, x, fmt, scale=scale, zero_point=zero_point, symmetric=symmetric, axis=axis, group_size=group_size, narrow_range=narrow_range, rounding=rounding, calibration=calibration, percentile=percentile, float_zero_point=float_zero_point, margin=margin, overflow=overflow, nan=nan, seed=seed, num_threads=num_threads)
    f = as_format(fmt)
    is_float = isinstance(f, FloatFormat)
    check_choice(rounding, "rounding", ROUNDING)
    check_choice(nan, "nan", ("raise", "propagate"))
    for name, v in (("symmetric", symmetric), ("narrow_range", narrow_range),
                    ("float_zero_point", float_zero_point)):
        if not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{name}: expected a bool, got {type(v).__name__}")
    if is_float:
        saturate = check_overflow(overflow, f)
        if rounding not in _FLOAT_ROUNDING:
            raise ValueError(f"rounding: float formats take {list(_FLOAT_ROUNDING)}, not {rounding!r}")
    elif overflow != "saturate":
        check_choice(overflow, "overflow", ("saturate",))
    if narrow_range:
        if is_float or not f.signed:
            raise ValueError("narrow_range: applies to signed integer formats only")
        f = IntFormat(f.bits, True, True)
    if float_zero_point and (symmetric or is_float):
        raise ValueError("float_zero_point: needs symmetric=False and an integer format")
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)):
        raise TypeError(f"margin: expected an int, got {type(margin).__name__}")
    X = float_source(x, "x")
    nthreads = resolve_threads(num_threads)
    if scale is None and isinstance(calibration, Calibrator) and axis is None and group_size is None:
        axis, group_size = calibration.axis, calibration.group_size     # the calibrator's layout
    ax, gs = _check_granularity(X.shape, axis, group_size)
    if scale is None:
        if zero_point is not None:
            raise ValueError("zero_point: give it together with scale, or neither")
        sc, zp = _calibrated(X, f, calibration, ax, gs, bool(symmetric), bool(float_zero_point),
                             int(margin), percentile, nan, nthreads)
        zp = zp.astype(np.float32 if float_zero_point else np.int32)
    else:
        sc = _as_scale(scale, X.shape, ax, gs)
        zp = _as_zero_point(zero_point, f, X.shape, ax, gs, bool(float_zero_point))
    zero_scale = bool(np.any(sc == 0))

    if is_float:
        return _quantize_float(X, f, sc, ax, gs, saturate, rounding, seed, nan, zero_scale, nthreads)
    runs = None
    if (not float_zero_point and f.bits <= 8 and X.dtype == np.float32
            and rounding in ("nearest_even", "toward_zero", "floor")):
        runs = _runs(X, sc, zp, ax, gs)
    if runs is not None:
        x2, s_run, z_run = runs
        pack4 = f.bits == 4 and x2.shape[1] % 2 == 0
        out = np.empty((x2.shape[0], x2.shape[1] // 2 if pack4 else x2.shape[1]), np.uint8)
        if _quant.quantize_runs(x2, out, s_run, z_run, float(f.min), float(f.max), rounding,
                                not f.signed, nthreads, pack4):
            _check_finite(X, "raise", f)             # raises, saying where
        if pack4:       # QTensor.codes unpacks on demand
            return QTensor._trusted(None, out.reshape(-1), X.shape, f, sc, zp, ax, gs)
        return QTensor._trusted(out.view(f.dtype).reshape(X.shape), None, X.shape, f, sc, zp, ax, gs)
    _check_finite(X, "raise", f)
    s_full = expand_param(sc, X.shape, ax, gs).astype(X.dtype)
    z_full = expand_param(zp, X.shape, ax, gs)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if float_zero_point:
            v = round_values((X - z_full.astype(X.dtype)) / s_full, rounding, seed) + f.min
            v = np.where(np.isnan(v), f.min, v)                       # 0 / 0: the zero point
        else:
            v = round_values(X / s_full, rounding, seed) + z_full
            v = np.where(np.isnan(v), np.broadcast_to(z_full, v.shape), v)
        codes = np.clip(v, f.min, f.max).astype(f.dtype)
    return QTensor._trusted(codes, None, X.shape, f, sc, zp, ax, gs, bool(float_zero_point))


def _quantize_float(X, f, sc, ax, gs, saturate, rounding, seed, nan, zero_scale, nthreads):
    _check_finite(X, nan, f)
    zp = np.zeros(np.shape(sc), np.int32)
    if X.dtype == np.float32 and np.ndim(sc) == 0 and not zero_scale:
        # per tensor: the division fused into the encoder (same bits as x / s, then to_fp8)
        codes = np.empty(X.shape, np.uint8)
        _fp8.encode_scaled(X.reshape(-1), codes.reshape(-1), float(sc), format_params(f, saturate),
                           rounding, seed_value(seed) if rounding == "stochastic" else 0, nthreads)
        return QTensor._trusted(FloatCodes(codes, f), None, X.shape, f, sc, zp, ax, gs)
    s_full = expand_param(sc, X.shape, ax, gs).astype(X.dtype)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        q = X / s_full
        if zero_scale:          # 0 / 0: a zero of x's sign, not NaN
            q = np.where((s_full == 0) & (X == 0), np.copysign(np.zeros((), X.dtype), X), q)
    codes = to_fp8(q, f, overflow="saturate" if saturate else "nonfinite", rounding=rounding,
                   seed=seed, num_threads=nthreads)
    return QTensor._trusted(codes, None, X.shape, f, sc, zp, ax, gs)


def _runs(X, sc, zp, ax, gs, min_run=32):
    """X as rows that each share one (scale, zero point), for the compiled
    kernel: per tensor, per channel (rows of the trailing dimensions) and per
    group along the last axis.  None when the layout has short runs."""
    sc = np.asarray(sc, np.float32)
    zf = np.asarray(zp).astype(np.float32)
    if ax is None:
        return X.reshape(1, -1), sc.reshape(1), zf.reshape(1)
    if gs is None:
        outer = int(np.prod(X.shape[:ax], dtype=np.int64))
        inner = int(np.prod(X.shape[ax + 1:], dtype=np.int64))
        if inner < min_run:
            return None
        return (X.reshape(-1, inner), np.ascontiguousarray(np.tile(sc, outer)),
                np.ascontiguousarray(np.tile(zf, outer)))
    if ax != X.ndim - 1 or gs < min_run:
        return None
    return X.reshape(-1, gs), np.ascontiguousarray(sc.reshape(-1)), np.ascontiguousarray(zf.reshape(-1))


def dequantize(q: QTensor, *, dtype=np.float32) -> np.ndarray:
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


def fake_quant(x, fmt, **kwargs) -> np.ndarray:
    """Quantize then dequantize, in x's float dtype (float32 for 16-bit input).

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> fp.fake_quant(np.array([0.1, 0.26, -0.3], np.float32), "int2").tolist()
    [0.0, 0.30000001192092896, -0.30000001192092896]
    """
    X = float_source(x, "x")
    return quantize(X, fmt, **kwargs).dequantize(X.dtype)
