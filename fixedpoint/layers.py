"""Layers: one accelerator operation, from float inputs to the float values the
next operator sees, computed with a profile's arithmetic.

Every layer follows one small protocol:

``calibrate(*inputs)``
    records the statistics of a batch of (float) inputs and of the float
    result, from which static activation and output scales are fixed
    (``profile.activations.calibration``);
``run(*inputs)``
    computes the layer as the target does and returns float32;
``trace``
    a :class:`LayerTrace` of the last ``run`` (codes, scales, accumulator
    values, overflow counts, clipped inputs, the largest input magnitude).

:class:`Linear` (``x @ w + b`` with a weight matrix), :class:`MatMul` (the
product of two activations, as in attention) and :class:`Conv2d` (NCHW, any
groups, stride, padding, dilation; through im2col) run every profile; the
graph runner and the study only compose them.  Nothing here branches on a
profile's name: the datapath follows from the formats, granularities,
accumulator and output spec.

The arithmetic, step by step (each step a public primitive):

1. Activations are quantized with :func:`fixedpoint.quantize`: per tensor
   with a static scale (calibrated) or one per call, or per token (one scale
   per row of the product's left operand, per column of a right activation
   operand).  Weights are quantized once, per tensor, channel or group (the
   reduction axis padded with zeros to whole groups); scales are rounded to
   ``scale_format``.
2. Integer formats: the zero-point-corrected codes are multiplied with
   :func:`fixedpoint.matmul` through ``profile.accumulator``.  INT8 output:
   the bias, quantized at ``x_scale * w_scale``, is the register's initial
   value; :func:`fixedpoint.quantize_multiplier` and
   :func:`fixedpoint.requantize` bring the register to INT8 at the output
   scale, and the codes are dequantized.  Float outputs: ``float32(acc) *
   float32(x_scale * w_scale) + bias`` in float32; per-group weights sum each
   group through the accumulator and add the groups' scaled results in
   float32 in group order.
3. Float formats: :func:`fixedpoint.fp8_matmul` through the tensor-core
   accumulator with the scales, then ``+ bias`` in float32.
4. The result is rounded to ``profile.output.type``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _vector
from ._checks import check_choice, resolve_threads
from .accumulate import Accumulator, matmul
from .blockscaled import (BlockScaledMMA, MXTensor, NVFP4Tensor, blockscaled_matmul, from_e8m0,
                          mx_quantize, nvfp4_quantize)
from .calibrate import Calibrator
from .fp8 import from_fp8
from .formats import E2M1, FloatFormat, IntFormat
from .profiles import AcceleratorProfile, get
from .quantization import QTensor, quantize
from .requant import quantize_multiplier, requantize, requantize_with_values
from .tensorcore import fp8_matmul

__all__ = ["LayerTrace", "Linear", "MatMul", "Conv2d", "linear", "round_to_float_type"]


@dataclass(frozen=True)
class LayerTrace:
    """What a layer computed on the way (its last ``run``).

    Attributes
    ----------
    name, op : str
        The layer's name and kind (``"linear"``, ``"matmul"``, ``"conv"``).
    x, w : QTensor or None
        The quantized left operand (the im2col matrix for a convolution, in
        the layout the product sees) and the quantized weights (or right
        activation operand).  None for the float reference.
    accumulator : ndarray or None
        Integer formats: the register values (int32/int64), per group first
        for per-group weights; float formats: the float32 tensor-core result,
        scaled, before the bias.
    overflow : ndarray of int64 or None
        Per output element, how many accumulator adds wrapped or clamped
        (summed over groups); for an accumulator with ``pair_bits``, 1 where
        the result differs from the exact sum (a clamped pair or a wrap).
        Where no add can overflow (:meth:`Accumulator.can_overflow`), a
        read-only view of zeros, which costs no memory.
    output_codes, output_scale, output_zero_point :
        INT8 outputs: the requantized codes and their quantization.
    clipped_inputs : int
        Inputs beyond the activation format's range at the scale used (saturated).
    x_scale : float or ndarray or None
        The activation scale(s) used.
    x_absmax : float
        The largest input magnitude in this call.
    dims : tuple
        ``(batch, m, k, n)``: ``batch`` products of ``(m x k) @ (k x n)`` (a
        convolution: ``m`` output pixels, ``k = C/groups * kh * kw``, ``n`` all
        output channels).
    """

    name: str
    op: str
    x: QTensor | None = None
    w: QTensor | None = None
    accumulator: np.ndarray | None = None
    overflow: np.ndarray | None = None
    output_codes: np.ndarray | None = None
    output_scale: np.ndarray | None = None
    output_zero_point: np.ndarray | None = None
    clipped_inputs: int = 0
    x_scale: np.ndarray | None = None
    x_absmax: float = 0.0
    dims: tuple = ()

    @property
    def overflow_count(self) -> int:
        """Total accumulator overflows (0 without an integer accumulator)."""
        return 0 if self.overflow is None else int(self.overflow.sum())

    @property
    def outlier_ratio(self) -> float:
        """``max|x| / (x_scale * qmax)``: above 1, the largest input was clipped
        (the largest scale is used for per-token scales)."""
        if self.x is None or self.x_scale is None:
            return 0.0
        f = self.x.fmt
        qmax = f.max_value if isinstance(f, FloatFormat) else max(abs(f.min), f.max)
        s = float(np.max(self.x_scale))
        return float("inf") if s == 0 and self.x_absmax > 0 else (
            0.0 if s == 0 else self.x_absmax / (s * qmax))


# ---------------------------------------------------------------------------
# Float results to the profile's output and vector types

_NARROW_FLOATS = ("float16", "bfloat16")      # largest finite: 65504 and (2 - 2^-7) * 2^127


def round_to_float_type(y, ftype: str, overflow: str = "nonfinite", *, out=None) -> np.ndarray:
    """float32 values rounded to ``"float32"``, ``"float16"`` or ``"bfloat16"``
    (nearest even) and widened back exactly to float32.  Beyond the type's
    largest finite value: Inf (``"nonfinite"``, the IEEE conversion) or the
    largest finite value (``"saturate"``).  NaN stays NaN (payload not
    modelled).  A compiled kernel (``fixedpoint._vector``), the same values as
    NumPy's float16 and ml_dtypes' bfloat16 conversions.  ``out``: a C-contiguous
    float32 array of ``y``'s shape to write into (``y`` itself for in place).

    Examples
    --------
    >>> import numpy as np
    >>> round_to_float_type(np.array([1 + 2**-11, 70000.0], np.float32), "float16").tolist()
    [1.0, inf]
    >>> round_to_float_type(np.array([70000.0], np.float32), "float16", "saturate").tolist()
    [65504.0]
    """
    y = np.asarray(y, np.float32)
    if ftype == "float32":
        return y
    if ftype not in _NARROW_FLOATS:
        raise ValueError(f"ftype: expected 'float32', 'float16' or 'bfloat16', got {ftype!r}")
    check_choice(overflow, "overflow", ("nonfinite", "saturate"))
    if out is None:
        out = np.empty(y.shape, np.float32)
    elif not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == y.shape
              and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"out: expected a writeable C-contiguous float32 array of shape {y.shape}")
    src = y if out is y else np.ascontiguousarray(y)
    _vector.round_float(src.reshape(-1), out.reshape(-1), ftype, overflow == "saturate",
                        resolve_threads(None))
    return out


def _round_scale(s, scale_format: str) -> np.ndarray:
    """Scales stored in ``scale_format`` (float32 values of it)."""
    s = np.asarray(s, np.float32)
    if scale_format == "float32":
        return s
    return round_to_float_type(s, scale_format, "saturate").astype(np.float32)


# ---------------------------------------------------------------------------
# Quantizing operands

def _block_quantize(spec, x: np.ndarray, axis: int):
    """MX or NVFP4 quantization along the reduction axis (weights: 0, activations: -1)."""
    if spec.scale_format == "e8m0":
        return mx_quantize(x, spec.format, block=spec.group_size, axis=axis,
                           scale_rule=spec.scale_rule, rounding=spec.rounding)
    return nvfp4_quantize(x, axis=axis, arithmetic=spec.scale_rule)


def _columns(t, lo, hi):
    """Columns [lo, hi) of a K x N MX or NVFP4 weight tensor quantized along K (its
    blocks run down each column, so a slice keeps every block; NVFP4 keeps the
    whole tensor's scale)."""
    if isinstance(t, NVFP4Tensor):
        return NVFP4Tensor(t.codes[:, lo:hi], t.scales[:, lo:hi], t.tensor_scale, axis=0)
    return MXTensor(t.codes[:, lo:hi], t.scales[:, lo:hi], t.elem, block=t.block, axis=0)


def _block_clipped(t, x) -> int:
    """Elements beyond the largest magnitude their block can hold (clamped)."""
    f = t.elem if hasattr(t, "elem") else E2M1
    top = f.max_value if isinstance(f, FloatFormat) else max(-f.min, f.max) / 64
    if hasattr(t, "elem"):
        s = from_e8m0(t.scales, dtype=np.float64)
    else:
        s = from_fp8(t.scales, dtype=np.float64) * float(t.tensor_scale)
    s = np.repeat(np.moveaxis(s, t.axis, -1), t.block, axis=-1)[..., :t.shape[t.axis]]
    with np.errstate(invalid="ignore", over="ignore"):
        beyond = np.abs(np.moveaxis(np.asarray(x, np.float64), t.axis, -1)) > top * s
    return int(np.count_nonzero(beyond))


def _quantize_weights(spec, w_kn: np.ndarray):
    """A K x N weight matrix as the target stores it: QTensor of the K x N
    codes (K padded with zero rows to whole groups for per-group scales), or an
    MX/NVFP4 tensor quantized along K."""
    if spec.block_scaled:
        return _block_quantize(spec, w_kn, 0)
    K, N = w_kn.shape
    axis = {"tensor": None, "channel": 1, "group": 0}[spec.granularity]
    gs = spec.group_size
    if gs is not None and K % gs:
        w_kn = np.concatenate([w_kn, np.zeros((gs - K % gs, N), w_kn.dtype)])
    q = quantize(w_kn, spec.format, axis=axis, group_size=gs, symmetric=spec.symmetric,
                 narrow_range=spec.narrow_range, calibration=spec.calibration,
                 rounding=spec.rounding, overflow=spec.overflow)
    if spec.scale_format == "float32":
        return q
    sc = _round_scale(q.scale, spec.scale_format)
    return quantize(w_kn, spec.format, scale=sc, zero_point=None if spec.symmetric else q.zero_point,
                    axis=axis, group_size=gs, narrow_range=spec.narrow_range, rounding=spec.rounding,
                    overflow=spec.overflow)


def _quantize_act(spec, X: np.ndarray, static, rows_axis: int | None):
    """Activations quantized per tensor (``static`` = (scale, zero point) or
    None for this call's range) or per token: one scale per slice along every
    axis but ``rows_axis``'s complement (the reduction axis ``-1`` for a left
    operand, ``-2`` for a right one)."""
    f = spec.format
    kw = dict(rounding=spec.rounding, overflow=spec.overflow)
    narrow = isinstance(f, IntFormat) and spec.narrow_range
    if spec.granularity == "token":
        red = X.ndim - 1 if rows_axis is None else rows_axis % X.ndim
        moved = np.moveaxis(X, red, -1)
        flat = moved.reshape(-1, moved.shape[-1])
        q = quantize(flat, f, axis=0, symmetric=spec.symmetric, narrow_range=narrow,
                     calibration=spec.calibration, **kw)
        if spec.scale_format != "float32":
            q = quantize(flat, f, axis=0, scale=_round_scale(q.scale, spec.scale_format),
                         zero_point=None if spec.symmetric else q.zero_point, narrow_range=narrow, **kw)
        codes = np.moveaxis(q.codes.reshape(moved.shape), -1, red)
        shape = list(X.shape)
        shape[red] = 1
        return codes, q.scale.reshape(shape), np.asarray(q.zero_point).reshape(shape), q
    if static is not None:
        scale, zp = static
        q = quantize(X, f, scale=scale, zero_point=None if isinstance(f, FloatFormat) else zp,
                     narrow_range=narrow, **kw)
    else:
        q = quantize(X, f, symmetric=spec.symmetric, narrow_range=narrow,
                     calibration="minmax", **kw)
        if spec.scale_format != "float32":
            q = quantize(X, f, scale=_round_scale(q.scale, spec.scale_format),
                         zero_point=None if spec.symmetric or isinstance(f, FloatFormat)
                         else q.zero_point, narrow_range=narrow, **kw)
    return q.codes, q.scale, q.zero_point, q


def _count_clipped(X, scale, zp, f, extremes=None) -> int:
    """Inputs beyond the representable range at the scale used (``extremes``:
    X's (min, max) when the caller has them)."""
    if X.size and np.size(scale) == 1 and np.size(zp) == 1:
        # x / s + z is monotonic in x (s > 0): nothing clips when the extremes do not
        ext = np.array(extremes if extremes is not None else [X.min(), X.max()],
                       X.dtype if X.dtype in (np.float32, np.float64) else np.float32)
        if np.all(np.isfinite(ext)) and _count_clipped_all(ext, scale, zp, f) == 0:
            return 0
    return _count_clipped_all(X, scale, zp, f)


def _count_clipped_all(X, scale, zp, f) -> int:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        dt = X.dtype if X.dtype in (np.float32, np.float64) else np.float32
        v = X.astype(dt, copy=False) / np.asarray(scale).astype(dt)
        if isinstance(f, FloatFormat):
            return int(np.count_nonzero(np.abs(v) > f.max_value))
        v = v + np.asarray(zp).astype(dt)
        return int(np.count_nonzero((v > f.max + 0.5) | (v < f.min - 0.5)))


def _centred(codes, zp, op_dtype):
    """``codes - zero point`` in the operand dtype; no copy when zp is 0."""
    if not np.any(zp) and codes.dtype == op_dtype:
        return codes
    return (codes.astype(np.int16) - np.asarray(zp).astype(np.int16)).astype(op_dtype)


def _operand_format(fa, za, fb, zb) -> IntFormat:
    """The narrowest signed format that holds both zero-point-corrected operands."""
    za, zb = np.asarray(za), np.asarray(zb)
    lo = min(fa.min - int(za.max(initial=0)), fb.min - int(zb.max(initial=0)))
    hi = max(fa.max - int(za.min(initial=0)), fb.max - int(zb.min(initial=0)))
    return IntFormat(max(2, max(-lo - 1, hi).bit_length() + 1), True)


# ---------------------------------------------------------------------------
# The product of quantized operands

def _integer_accumulate(p, xc, zx, fx, wc, zw, fw, bias, groups, name):
    """Integer operands through the accumulator.

    xc: (..., R, K) codes with zero points ``zx`` (per tensor or (..., R, 1));
    wc: (..., K, N) codes with zero points ``zw`` (per tensor, (1, N), or
    (G, N) per group of ``groups`` rows of K).  INT8 output: ``bias`` (int64,
    quantized by the caller) is the register's initial value.  Returns (acc,
    overflow counts); per group: acc is (G, ..., R, N)."""
    acc = p.accumulator
    if acc.pair_bits is not None:
        return _pair_accumulate(acc, xc, zx, fx, wc, zw, fw, bias)
    op = _operand_format(fx, zx, fw, zw)
    xs = _centred(xc, zx, op.dtype)
    if groups is not None and np.ndim(zw):
        zw = np.repeat(np.asarray(zw), groups, axis=0)
    ws = _centred(wc, zw, op.dtype)
    if groups is None:
        cmax = 0 if bias is None else int(np.max(np.abs(bias.astype(np.int64)), initial=0))
        if not acc.can_overflow(op, op, xs.shape[-1], cmax):     # no counts to take
            out = matmul(xs, ws, op, acc=acc, c=bias)
            return out, np.broadcast_to(np.int64(0), out.shape)
        return matmul(xs, ws, op, acc=acc, c=bias, return_overflow=True)
    K = ws.shape[-2]
    G = K // groups
    if xs.shape[-1] != K:            # K padded to whole groups: zero columns
        xs = np.concatenate([xs, np.zeros(xs.shape[:-1] + (K - xs.shape[-1],), xs.dtype)], axis=-1)
    lead = xs.shape[:-1]
    xg = np.ascontiguousarray(np.moveaxis(xs.reshape(-1, G, groups), 1, 0))       # (G, R, g)
    wg = ws.reshape(G, groups, -1)
    out_shape = lead + (ws.shape[-1],)
    if not acc.can_overflow(op, op, groups):     # no group sum can overflow
        acc_all = matmul(xg, wg, op, acc=acc)
        overflow = np.broadcast_to(np.int64(0), out_shape)
    else:
        acc_all, n = matmul(xg, wg, op, acc=acc, return_overflow=True)
        overflow = n.sum(axis=0).reshape(out_shape)
    return acc_all.reshape((G,) + out_shape), overflow


def _wrap(v, bits):
    """int64 values modulo 2**bits into the signed range (int64 wraps by itself at 64)."""
    if bits < 64:
        half = np.int64(1) << (bits - 1)
        v = ((v + half) & ((half << 1) - 1)) - half
    return v


def _pair_accumulate(acc, xc, zx, fx, wc, zw, fw, c):
    """An accumulator whose products are summed in clamped pairs (``pair_bits``,
    x86 ``vpmaddubsw``), as ONNX Runtime's MLAS runs it: the raw unsigned x
    signed codes go through the pairs and the wrapping register, and the zero
    points come off afterwards from exact row and column sums, wrapping too.
    Operands that are not unsigned x signed (the u8 x u8 product of two
    activations) take MLAS's u8 x u8 kernel, which widens bytes to 16 bits and
    adds pairs exactly in 32 bits: no pair clamp.  Overflow counts: 1 where
    the result differs from the exact sum (a clamped pair or a wrap)."""
    if not (fw.signed and not fx.signed):
        acc = Accumulator(acc.bits, acc.overflow)
    raw = matmul(xc, wc, (fx, fw), acc=acc)
    zx64, zw64 = np.asarray(zx, np.int64), np.asarray(zw, np.int64)
    r = raw.astype(np.int64)
    if np.any(zw64):
        r -= zw64 * xc.sum(axis=-1, keepdims=True, dtype=np.int64)
    if np.any(zx64):
        r -= zx64 * wc.sum(axis=-2, keepdims=True, dtype=np.int64)
        if np.any(zw64):
            r += xc.shape[-1] * zx64 * zw64
    if c is not None:
        r += c
    r = _wrap(r, acc.bits)
    # |exact| <= K * 255 * 255 < 2**53: float64 is exact
    exact = np.matmul(xc.astype(np.float64) - zx64, wc.astype(np.float64) - zw64)
    if c is not None:
        exact += c
    ovf = (r != _wrap(exact.astype(np.int64), acc.bits)).astype(np.int64)
    return r.astype(np.int32 if acc.bits <= 32 else np.int64), ovf


def _group_sum(acc_all, sx, sw, bias):
    """float32(acc_g) * float32(sx * sw_g), summed in float32 in group order, + bias."""
    sx32 = np.asarray(sx, np.float32)
    sw32 = np.asarray(sw, np.float32)
    y = part = None
    for j in range(acc_all.shape[0]):
        s = (sx32 * sw32[j]).astype(np.float32)
        if y is None:
            y = np.multiply(acc_all[j], s, dtype=np.float32)     # float32(acc) * s, one pass
        else:
            part = np.multiply(acc_all[j], s, out=part, dtype=np.float32)
            y += part
    return y + bias if bias is not None else y


def _bias_codes(bias, s, out_shape, acc, name):
    """The float bias as int register values at scale ``s`` (x_scale * w_scale),
    in the smallest shape that broadcasts to ``out_shape`` (one row for per-tensor
    and per-channel scales: the product broadcasts it)."""
    shape = np.broadcast_shapes(np.shape(s), bias.shape)
    shape = (1,) * (len(out_shape) - len(shape)) + shape
    s_full = np.broadcast_to(s, shape).astype(np.float64)
    b_full = np.broadcast_to(bias.astype(np.float64), shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        bq = np.rint(b_full / s_full)
    if np.any(~np.isfinite(bq) & (b_full != 0)):
        raise ValueError(f"{name}: the bias cannot be represented at x_scale * w_scale = 0 (an "
                         f"all-zero activation or weight scale); calibrate on data that reaches "
                         f"this layer")
    bq = np.where(b_full == 0, 0.0, bq)
    if np.any(np.abs(bq) > acc.max):
        raise ValueError(f"{name}: the bias does not fit the {acc.bits}-bit accumulator at "
                         f"x_scale * w_scale = {float(np.min(s)):g}")
    return bq.astype(np.int32 if acc.bits <= 32 else np.int64)


def _dynamic_output(p, parts):
    """INT8 output scale and zero point from this call's range: the extremes
    of acc * s over every part (acc, s).  s >= 0, so with one scale per column
    the extremes are those of each column's extremes (no M x N float64 copy)."""
    lo, hi = np.inf, -np.inf
    for acc_v, s in parts:
        s = np.asarray(s, np.float64)
        n = acc_v.shape[-1] if acc_v.ndim else 1
        a2 = acc_v.reshape(-1, n)
        if s.size in (1, n) and (s.ndim == 0 or s.shape[-1] == s.size):
            sc = np.broadcast_to(s.reshape(-1), (n,))
            lo = min(lo, float((a2.min(axis=0) * sc).min()))
            hi = max(hi, float((a2.max(axis=0) * sc).max()))
        else:                                              # per-row scales: every element
            v = a2 * np.broadcast_to(s, acc_v.shape).reshape(a2.shape)
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    oq = quantize(np.array([lo, hi]), "int8", symmetric=p.activations.symmetric)
    return np.float32(oq.scale), int(oq.zero_point)


def _real_multiplier(p, sx, sw, so):
    """``x_scale * w_scale / out_scale`` as float64, formed as ``output.multiplier`` says,
    in the scales' own broadcast shape (one per column, or per element for per-token scales)."""
    sx32, sw32 = np.asarray(sx, np.float32), np.asarray(sw, np.float32)
    if p.output.multiplier == "float64":
        return sx32.astype(np.float64) * sw32.astype(np.float64) / np.float64(so)
    return (sx32 * sw32).astype(np.float32).astype(np.float64) / np.float64(so)


def _requantize_with(method, a32, real, zo, cache=None, values_scale=None):
    """INT8 codes by ``method`` (and with ``values_scale``, their float values too:
    ``(codes, values)``)."""
    def run(m, sh=0):
        if values_scale is None:
            return requantize(a32, m, sh, zero_point=zo, out_fmt="int8", method=method)
        return requantize_with_values(a32, m, sh, zero_point=zo, scale=values_scale,
                                      out_fmt="int8", method=method)
    if method in ("float", "float64"):
        return run(real)
    key = None
    if cache is not None and real.size <= 4096:            # static scales: the same every call
        key = (method, real.shape, real.tobytes())
        if key in cache:
            return run(*cache[key])
    m, sh = quantize_multiplier(real)
    if key is not None:
        cache[key] = (m, sh)
    return run(m, sh)


def _requantized(p, acc_v, sx, sw, so, zo, op, depthwise=False, cache=None):
    """INT8 codes of the register values at output scale ``so``, and their float
    values, with the profile's method for this kind of layer (per column for a
    depthwise convolution whose last channels take a tail method)."""
    so32 = np.float32(so)
    a32 = acc_v if acc_v.dtype == np.int32 else np.clip(acc_v.astype(np.int64), -2**31, 2**31 - 1)
    out = p.output
    if so32 == 0:                       # an all-zero output range: every code is the zero point
        codes = np.full(a32.shape, zo, np.int8)
    else:
        real = _real_multiplier(p, sx, sw, so32)
        tail = a32.shape[-1]
        if depthwise and out.depthwise_vector:
            tail = a32.shape[-1] // out.depthwise_vector * out.depthwise_vector
        if tail == a32.shape[-1]:             # codes and values in one pass
            return _requantize_with(out.method_for(op), a32, real, zo, cache, values_scale=so32)
        codes = _requantize_with(out.method_for(op), a32, real, zo, cache)
        rt = np.broadcast_to(real, np.broadcast_shapes(real.shape, (1, a32.shape[-1])))
        codes[..., tail:] = _requantize_with(out.depthwise_tail_method, a32[..., tail:],
                                             rt[..., tail:], zo)
    y = np.subtract(codes, np.int16(zo), dtype=np.float32)   # exact: small integers
    y *= so32
    return codes, y


def _integer_product(p, xc, sx, zx, fx, wc, sw, zw, fw, bias, groups, out_q, name, op, cache=None):
    """Integer operands, to the float values of the profile's output: returns
    (y, acc, overflow counts, output codes, output scale, output zero point)."""
    if groups is not None:
        acc_all, ovf = _integer_accumulate(p, xc, zx, fx, wc, zw, fw, None, groups, name)
        return _group_sum(acc_all, sx, sw, bias).astype(np.float32), acc_all, ovf, None, None, None
    s = (np.asarray(sx, np.float32) * np.asarray(sw, np.float32)).astype(np.float32)
    if p.output.type != "int8":
        acc_v, ovf = _integer_accumulate(p, xc, zx, fx, wc, zw, fw, None, None, name)
        y = acc_v.astype(np.float32) * s
        return (y + bias if bias is not None else y), acc_v, ovf, None, None, None
    out_shape = np.broadcast_shapes(xc.shape[:-1] + (1,), wc.shape[:-2] + (1, wc.shape[-1]))
    c = None
    if bias is not None:
        key = (("bias", s.shape, s.tobytes(), bias.tobytes(), len(out_shape))
               if cache is not None and s.size <= 4096 else None)
        c = cache.get(key) if key is not None else None     # static scales: the same every call
        if c is None:
            c = _bias_codes(bias, s, out_shape, p.accumulator, name)
            if key is not None:
                cache[key] = c
    acc_v, ovf = _integer_accumulate(p, xc, zx, fx, wc, zw, fw, c, None, name)
    so, zo = out_q if out_q[0] is not None else _dynamic_output(p, [(acc_v, s)])
    codes, y = _requantized(p, acc_v, sx, sw, so, zo, op, cache=cache)
    return y, acc_v, ovf, codes, np.float32(so), np.int32(zo)


def _f8f6f4(p, xc, wc, fmt, sx, sw):
    """One 2-D product through Blackwell's ``kind::f8f6f4`` (no block scales), then the
    per-tensor/row/column scales as cuBLASLt applies them: ``acc * float32(sx * sw)``."""
    from .fp8 import FloatCodes
    acc = blockscaled_matmul(FloatCodes(np.ascontiguousarray(xc), fmt[0]),
                             FloatCodes(np.ascontiguousarray(wc), fmt[1]), kind="f8f6f4")
    scale = (np.asarray(sx, np.float32).reshape(-1, 1) * np.asarray(sw, np.float32).reshape(1, -1))
    with np.errstate(over="ignore", invalid="ignore"):
        return (acc * scale.astype(np.float32)).astype(np.float32)


def _float_product(p, xc, sx, wc, sw, bias, fmt):
    """Float-format operands (codes of the pair of formats ``fmt``) through the
    tensor-core model."""
    sx = np.asarray(sx, np.float32)
    sw = np.asarray(sw, np.float32)
    blackwell = isinstance(p.accumulator, BlockScaledMMA)
    if xc.ndim == 2 and wc.ndim == 2 and blackwell:
        acc = _f8f6f4(p, xc, wc, fmt, sx, sw)
    elif xc.ndim == 2 and wc.ndim == 2:
        acc = fp8_matmul(xc, wc, fmt, scale_a=sx.reshape(-1) if sx.size > 1 else sx.reshape(()),
                         scale_b=sw.reshape(-1) if sw.size > 1 else sw.reshape(()),
                         acc=p.accumulator)
    else:      # batched: one product per leading index, with its own per-row/column scales
        batch = np.broadcast_shapes(xc.shape[:-2], wc.shape[:-2])
        M, N = xc.shape[-2], wc.shape[-1]
        xb = np.broadcast_to(xc, batch + xc.shape[-2:])
        wb = np.broadcast_to(wc, batch + wc.shape[-2:])
        sxb = np.broadcast_to(sx, batch + (M, 1)) if sx.ndim else None
        swb = np.broadcast_to(sw, batch + (1, N)) if sw.ndim else None
        acc = np.empty(batch + (M, N), np.float32)
        for idx in np.ndindex(*batch):
            a = sx if sxb is None else sxb[idx].reshape(-1)
            b = sw if swb is None else swb[idx].reshape(-1)
            acc[idx] = (_f8f6f4(p, xb[idx], wb[idx], fmt, a, b) if blackwell else
                        fp8_matmul(xb[idx], wb[idx], fmt, scale_a=a, scale_b=b, acc=p.accumulator))
    y = acc + bias if bias is not None else acc
    return y.astype(np.float32), acc


def _block_product(p, X, W, wq, bias, b_axis=0):
    """Block-scaled operands through ``tcgen05.mma``: ``X`` (..., R, K) quantized per
    block along K here, the right operand already quantized (``wq``) or quantized
    per block along K from ``W`` (activations)."""
    a = p.activations
    kind = p.accumulator.instruction
    if X.ndim == 2 and (wq is not None or W.ndim == 2):
        xq = _block_quantize(a, X, 1)
        rq = wq if wq is not None else _block_quantize(a, W, 0)
        acc = blockscaled_matmul(xq, rq, kind=kind)
        return (acc + bias if bias is not None else acc), acc, xq, rq
    batch = np.broadcast_shapes(X.shape[:-2], W.shape[:-2])
    Xb = np.broadcast_to(X, batch + X.shape[-2:])
    Wb = np.broadcast_to(W, batch + W.shape[-2:])
    y = np.empty(batch + (X.shape[-2], W.shape[-1]), np.float32)
    xq = rq = None
    for idx in np.ndindex(*batch):
        xq = _block_quantize(a, np.ascontiguousarray(Xb[idx]), 1)
        rq = _block_quantize(a, np.ascontiguousarray(Wb[idx]), 0)
        y[idx] = blockscaled_matmul(xq, rq, kind=kind)
    return y, y, xq, rq


# ---------------------------------------------------------------------------

class _Layer:
    op = ""

    def __init__(self, profile, name):
        self.profile = profile if isinstance(profile, AcceleratorProfile) else get(profile)
        if not isinstance(name, str):
            raise TypeError(f"name: expected a string, got {type(name).__name__}")
        self.name = name
        self.trace: LayerTrace | None = None
        self._in_cal: list = []
        self._out_cal = None
        self._fixed_out = None
        self._fixed_in = {}
        self._mcache = {}          # Q31 multipliers of static scales, computed once
        self._scales = {}          # static scales from the calibrators, until they see more data

    # -- static scales ---------------------------------------------------------
    def _calibrator(self):
        a = self.profile.activations
        return Calibrator(a.calibration, symmetric=a.symmetric or isinstance(a.format, FloatFormat))

    def _observe(self, inputs, y):
        if self.profile.is_float:
            return
        if not self._in_cal:
            self._in_cal = [self._calibrator() for _ in inputs]
            self._out_cal = self._calibrator() if self.profile.output.type == "int8" else None
        self._scales.clear()
        for cal, x in zip(self._in_cal, inputs):
            cal.update(np.asarray(x, np.float32))
        if self._out_cal is not None:
            self._out_cal.update(np.asarray(y, np.float32))

    def _static_in(self, i):
        a = self.profile.activations
        if i in self._fixed_in:
            return self._fixed_in[i]
        if not self._in_cal or not a.static or a.granularity != "tensor":
            return None
        return self._cached_scale(("in", i), lambda: self._in_scale(i))

    def _in_scale(self, i):
        a = self.profile.activations
        s, z = self._in_cal[i].scale_zero_point(a.element_format)
        return _round_scale(s, a.scale_format), z

    def _static_out(self):
        if self._fixed_out is not None:
            return self._fixed_out
        if self._out_cal is None:
            return None, None
        return self._cached_scale("out", self._out_scale)

    def _out_scale(self):
        s, z = self._out_cal.scale_zero_point("int8")
        return np.float32(s), int(z)

    def _cached_scale(self, key, compute):
        """A static scale, computed once for this profile and these calibrators' data."""
        hit = self._scales.get(key)
        if hit is None or hit[0] is not self.profile:
            hit = (self.profile, compute())
            self._scales[key] = hit
        return hit[1]

    def set_input_quantization(self, scale, zero_point=0, *, operand=0) -> None:
        """Fix a per-tensor activation scale and zero point (of ``operand`` 0 or 1)
        instead of calibrating them."""
        a = self.profile.activations
        if a is None or a.granularity != "tensor":
            raise ValueError(f"scale: {self.profile.name} has no per-tensor activation scales")
        s = np.float32(scale)
        if not np.isfinite(s) or s < 0:
            raise ValueError(f"scale: expected a finite, non-negative float, got {scale!r}")
        self._fixed_in[operand] = (s, np.int32(zero_point))

    def static_input(self, operand=0):
        """The static ``(scale, zero_point)`` of a per-tensor activation operand
        (fixed, or from calibration), or None when scales are taken per call."""
        return self._static_in(operand)

    def set_output_quantization(self, scale, zero_point=0) -> None:
        """Fix the INT8 output's scale and zero point (e.g. the next layer's input
        quantization, for a fused ReLU) instead of calibrating them."""
        if self.profile.output.type != "int8":
            raise ValueError(f"scale: {self.profile.name} does not output INT8")
        s = np.float32(scale)
        if not np.isfinite(s) or s < 0:
            raise ValueError(f"scale: expected a finite, non-negative float, got {scale!r}")
        if isinstance(zero_point, bool) or not isinstance(zero_point, (int, np.integer)) \
                or not -128 <= zero_point <= 127:
            raise ValueError(f"zero_point: expected an int in [-128, 127], got {zero_point!r}")
        self._fixed_out = (s, int(zero_point))

    def _finish(self, y):
        o = self.profile.output
        if o.type == "int8":
            return y
        return round_to_float_type(y, o.type, o.overflow)


def _as_float_array(x, name, copy=True, extremes=False):
    """``x`` as float32 (a copy unless ``copy=False`` allows the caller's own
    float32 array), checked finite; with ``extremes``, ``(arr, min, max)``."""
    arr = np.asarray(x)
    if arr.dtype.kind != "f" and not (getattr(arr.dtype.type, "__module__", "") or "").startswith("ml_dtypes"):
        raise TypeError(f"{name}: expected floats, got an array of dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=copy)
    lo, hi = (arr.min(), arr.max()) if arr.size else (np.float32(0), np.float32(0))
    if not (np.isfinite(lo) and np.isfinite(hi)):       # a NaN or an infinity reaches the extremes
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name}: non-finite value {arr[bad]} at index {bad}")
    return (arr, float(lo), float(hi)) if extremes else arr


def _as_bias(bias, n, name):
    if bias is None:
        return None
    b = np.asarray(bias)
    if b.dtype.kind not in "fiu" or b.shape != (n,):
        raise ValueError(f"{name}: expected {n} floats, got shape {b.shape} of dtype {b.dtype}")
    b = b.astype(np.float32)
    if not np.all(np.isfinite(b)):
        raise ValueError(f"{name}: must be finite")
    return b


class Linear(_Layer):
    """A fully connected layer ``x @ w + bias`` on a profile.

    Parameters
    ----------
    profile : AcceleratorProfile or str
    weight : array_like of floats, shape (K, N)
        (transpose a PyTorch/ONNX ``N x K`` weight).
    bias : array_like of floats, shape (N,), optional
    name : str
    weights : QTensor, optional
        Weights already quantized by this profile (their format, granularity
        and group size must match the profile's weight spec).

    Examples
    --------
    >>> import numpy as np
    >>> from fixedpoint import layers
    >>> x = np.array([[1.0, -2.0, 0.5, 4.0]], np.float32)          # scale 4/127
    >>> w = np.array([[0.5], [0.25], [1.0], [0.125]], np.float32)  # scale 1/127
    >>> fc = layers.Linear("ane-int8", w)
    >>> y = fc.run(x)
    >>> fc.trace.x.codes.tolist(), fc.trace.w.codes.ravel().tolist()   # ties to even: 63.5 -> 64
    ([[32, -64, 16, 127]], [64, 32, 127, 16])
    >>> int(fc.trace.accumulator[0, 0]), fc.trace.output_codes.tolist()  # 4064 * 4/127 * 1/127
    (4064, [[127]])
    >>> round(float(y[0, 0]), 6), float((x @ w)[0, 0])
    (1.007874, 1.0)
    """

    op = "linear"

    def __init__(self, profile, weight, bias=None, *, name="linear", weights=None):
        super().__init__(profile, name)
        p = self.profile
        W = _as_float_array(weight, "weight")
        if W.ndim != 2:
            raise ValueError(f"weight: expected a K x N matrix, got shape {W.shape}")
        self.K, self.N = W.shape
        self.w = np.ascontiguousarray(W)          # BLAS's sum order follows the layout: fix it
        self.bias = _as_bias(bias, self.N, "bias")
        if weights is not None:
            self._check_weights(weights)
        self.wq = None if p.is_float else (weights if weights is not None else
                                          _quantize_weights(p.weights, W))
        self._wq_cache = {}

    def _check_weights(self, q):
        """Weights quantized elsewhere must be what this profile stores."""
        if not isinstance(q, QTensor):
            raise TypeError(f"weights: expected a QTensor, got {type(q).__name__}")
        spec = self.profile.weights
        if spec is None:
            raise ValueError("weights: the float32 reference takes float weights, not a QTensor")
        want_axis = {"tensor": None, "channel": 1, "group": 0}[spec.granularity]
        gs = spec.group_size
        kp = self.K if gs is None else -(-self.K // gs) * gs
        if q.fmt != spec.element_format or q.axis != want_axis or q.group_size != gs \
                or q.float_zero_point or (spec.symmetric and np.any(q.zero_point)):
            raise ValueError(f"weights: quantized as {q.fmt.name} axis={q.axis} group_size="
                             f"{q.group_size}, but {self.profile.name} stores {spec.element_format.name} "
                             f"per {spec.granularity}" + (f" of {gs}" if gs else "")
                             + (" with zero point 0" if spec.symmetric else ""))
        if q.shape != (kp, self.N):
            raise ValueError(f"weights: expected shape {(kp, self.N)}, got {q.shape}")

    def reference(self, x) -> np.ndarray:
        """The float32 result, as the float model computes it (NumPy)."""
        y = np.matmul(np.asarray(x, np.float32), self.w)
        return (y + self.bias if self.bias is not None else y).astype(np.float32)

    def calibrate(self, x) -> None:
        """Record a batch of inputs (and the float result) for static scales."""
        X = self._input(x)
        self._observe([X], self.reference(X))

    def _input(self, x, extremes=False):
        r = _as_float_array(x, "x", copy=False, extremes=extremes)
        X = r[0] if extremes else r
        if X.ndim < 1 or X.shape[-1] != self.K:
            raise ValueError(f"x: expected shape (..., {self.K}), got {X.shape}")
        return r

    def _weights_for(self, sx):
        """The weights, with a channel's scale raised where its bias would not fit
        half the accumulator at x_scale * w_scale (TensorFlow Lite's converter
        does the same for near-zero channels)."""
        p = self.profile
        if self.bias is None or p.output.type != "int8" or p.weights.granularity == "group":
            return self.wq
        sxm = float(np.min(sx))
        if sxm == 0:
            return self.wq
        key = sxm
        if key in self._wq_cache:
            return self._wq_cache[key]
        limit = 2.0 ** (p.accumulator.bits - 2)
        need = np.abs(self.bias.astype(np.float64)) / (sxm * limit)
        if p.weights.granularity == "tensor":
            need = need.max(initial=0.0)
        wq = self.wq
        if np.any(np.asarray(wq.scale, np.float64) < need):
            spec = p.weights
            sc = np.maximum(np.asarray(wq.scale, np.float64), need).astype(np.float32)
            sc = np.maximum(_round_scale(sc, spec.scale_format), sc)
            wq = quantize(self.w, spec.format, scale=sc, zero_point=None if spec.symmetric else wq.zero_point,
                          axis=wq.axis, narrow_range=spec.narrow_range, rounding=spec.rounding)
        if p.activations.static:
            self._wq_cache[key] = wq
        return wq

    def run(self, x) -> np.ndarray:
        """``x @ w + bias`` as the target computes it: float32, shape (..., N)."""
        X, lo, hi = self._input(x, extremes=True)
        lead = X.shape[:-1]
        return self._run2d(X.reshape(-1, self.K), (lo, hi)).reshape(lead + (self.N,))

    def _run2d(self, X, ext):
        p = self.profile
        dims = (1, X.shape[0], self.K, self.N)
        absmax = max(-ext[0], ext[1])
        if p.is_float:
            self.trace = LayerTrace(self.name, self.op, x_absmax=absmax, dims=dims)
            return self._finish(self.reference(X))
        a = p.activations
        if a.block_scaled:
            y, acc, xq, wq = _block_product(p, X, None, self.wq, self.bias)
            self.trace = LayerTrace(self.name, self.op, xq, wq, acc, None,
                                    clipped_inputs=_block_clipped(xq, X), x_absmax=absmax, dims=dims)
            return self._finish(y)
        xc, sx, zx, xq = _quantize_act(a, X, self._static_in(0), None)
        wq = self._weights_for(sx)
        clipped = _count_clipped(X, sx, zx, xq.fmt, ext)
        if isinstance(wq.fmt, FloatFormat):
            y, acc = _float_product(p, xc, sx, wq.codes, wq.scale, self.bias, (xq.fmt, wq.fmt))
            self.trace = LayerTrace(self.name, self.op, xq, wq, acc, None, clipped_inputs=clipped,
                                    x_scale=np.asarray(sx), x_absmax=absmax, dims=dims)
            return self._finish(y)
        groups = p.weights.group_size if p.weights.granularity == "group" else None
        sw = wq.scale
        zw = wq.zero_point
        if groups is None and np.ndim(sw):
            sw, zw = sw.reshape(1, -1), np.asarray(zw).reshape(1, -1)
        y, acc, ovf, codes, so, zo = _integer_product(
            p, xc, sx, zx, xq.fmt, wq.codes, sw, zw, wq.fmt, self.bias, groups, self._static_out(),
            self.name, "linear", self._mcache)
        self.trace = LayerTrace(self.name, self.op, xq, wq, acc, ovf, codes, so, zo, clipped,
                                np.asarray(sx), absmax, dims)
        return self._finish(y)


def _absmax(X) -> float:
    return max(-float(X.min()), float(X.max())) if X.size else 0.0


class MatMul(_Layer):
    """The product of two activations ``a @ b`` (attention scores and context)
    on a profile: both operands quantized with the activation spec (per tensor,
    or per token: rows of ``a``, columns of ``b``).  Leading dimensions
    broadcast as ``numpy.matmul``.  A profile with ``activation_matmul =
    "float32"`` leaves the product in float32 (rounded to its output type).

    Examples
    --------
    >>> import numpy as np
    >>> from fixedpoint import layers
    >>> mm = layers.MatMul("h100-int8")
    >>> a = np.array([[1.0, 2.0]], np.float32); b = np.array([[3.0], [0.5]], np.float32)
    >>> y = mm.run(a, b)                 # codes [64, 127] and [127, 21]: 10795 * 2/127 * 3/127
    >>> int(mm.trace.accumulator[0, 0]), y.tolist()   # 4.0157, rounded to bfloat16
    (10795, [[4.03125]])
    """

    op = "matmul"

    def __init__(self, profile, *, name="matmul"):
        super().__init__(profile, name)

    def _inputs(self, a, b):
        A, B = _as_float_array(a, "a"), _as_float_array(b, "b")
        if A.ndim < 2 or B.ndim < 2:
            raise ValueError(f"a and b: expected at least 2-D operands, got shapes {A.shape} and {B.shape}")
        if A.shape[-1] != B.shape[-2]:
            raise ValueError(f"a and b: inner dimensions differ: {A.shape} @ {B.shape}")
        try:
            np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        except ValueError:
            raise ValueError(f"a and b: batch dimensions of {A.shape} and {B.shape} do not broadcast") from None
        return A, B

    def reference(self, a, b) -> np.ndarray:
        """The float32 product (NumPy)."""
        return np.matmul(np.asarray(a, np.float32), np.asarray(b, np.float32)).astype(np.float32)

    def calibrate(self, a, b) -> None:
        A, B = self._inputs(a, b)
        self._observe([A, B], self.reference(A, B))

    def run(self, a, b) -> np.ndarray:
        A, B = self._inputs(a, b)
        p = self.profile
        lead = np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        dims = (int(np.prod(lead, dtype=np.int64)), A.shape[-2], A.shape[-1], B.shape[-1])
        if p.is_float or p.activation_matmul == "float32":
            self.trace = LayerTrace(self.name, self.op, x_absmax=_absmax(A), dims=dims)
            return self._finish(np.matmul(A, B).astype(np.float32))
        act = p.activations
        if act.block_scaled:
            y, _, aq, bq = _block_product(p, A, B, None, None)
            self.trace = LayerTrace(self.name, self.op, aq, bq, y, None, x_absmax=_absmax(A), dims=dims)
            return self._finish(y)
        ac, sa, za, aq = _quantize_act(act, A, self._static_in(0), -1)
        bc, sb, zb, bq = _quantize_act(act, B, self._static_in(1), -2)
        clipped = _count_clipped(A, sa, za, aq.fmt) + _count_clipped(B, sb, zb, bq.fmt)
        if isinstance(aq.fmt, FloatFormat):
            y, acc = _float_product(p, ac, sa, bc, sb, None, (aq.fmt, bq.fmt))
            self.trace = LayerTrace(self.name, self.op, aq, bq, acc, None, clipped_inputs=clipped,
                                    x_scale=np.asarray(sa), x_absmax=_absmax(A), dims=dims)
            return self._finish(y)
        y, acc, ovf, codes, so, zo = _integer_product(
            p, ac, sa, za, aq.fmt, bc, sb, zb, bq.fmt, None, None, self._static_out(), self.name,
            "matmul", self._mcache)
        self.trace = LayerTrace(self.name, self.op, aq, bq, acc, ovf, codes, so, zo, clipped,
                                np.asarray(sa), _absmax(A), dims)
        return self._finish(y)


def _pair(v, name):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v), int(v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(
            isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in v):
        return int(v[0]), int(v[1])
    raise TypeError(f"{name}: expected an int or a pair of ints, got {v!r}")


class Conv2d(_Layer):
    """A 2-D convolution (NCHW, as ONNX ``Conv``) on a profile, through im2col.

    Parameters
    ----------
    profile : AcceleratorProfile or str
    weight : array_like of floats, shape (O, C / groups, kh, kw)
    bias : array_like of floats, shape (O,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int) or (top, left, bottom, right)
        Zeros around the input (ONNX ``pads`` order is top, left, bottom, right).
    groups : int
        ``groups = C = O`` is a depthwise convolution.
    name : str

    Each output pixel is a row of the im2col matrix (``C / groups * kh * kw``
    inputs): the reduction runs over input channel, then kernel row, then
    kernel column.  Weights are quantized as a ``(C / groups * kh * kw) x O``
    matrix: per output channel, or per group along that reduction.

    Examples
    --------
    >>> import numpy as np
    >>> from fixedpoint import layers
    >>> conv = layers.Conv2d("fp32", np.ones((1, 1, 2, 2), np.float32))
    >>> conv.run(np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)).tolist()
    [[[[8.0, 12.0], [20.0, 24.0]]]]
    """

    op = "conv"

    def __init__(self, profile, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1,
                 name="conv"):
        super().__init__(profile, name)
        Wt = _as_float_array(weight, "weight")
        if Wt.ndim != 4:
            raise ValueError(f"weight: expected shape (O, C/groups, kh, kw), got {Wt.shape}")
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ValueError(f"groups: expected a positive int, got {groups!r}")
        O, Cg, kh, kw = Wt.shape
        if O % groups:
            raise ValueError(f"groups: {groups} does not divide the {O} output channels")
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        if isinstance(padding, (tuple, list)) and len(padding) == 4:
            if not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) and t >= 0
                       for t in padding):
                raise ValueError(f"padding: expected non-negative ints, got {padding!r}")
            self.pads = tuple(int(t) for t in padding)
        else:
            ph, pw = _pair(padding, "padding")
            self.pads = (ph, pw, ph, pw)
        if min(self.stride) < 1 or min(self.dilation) < 1 or min(self.pads) < 0:
            raise ValueError("stride, dilation: expected positive ints; padding: non-negative")
        self.groups = int(groups)
        self.depthwise = groups > 1 and Cg == 1 and O == groups     # one channel per group
        self.weight = Wt
        self.O, self.Cg, self.kh, self.kw = O, Cg, kh, kw
        self.bias = _as_bias(bias, O, "bias")
        # (Cg*kh*kw) x O: the reduction axis first, as Linear's K x N
        self.w_kn = np.ascontiguousarray(Wt.reshape(O, -1).T)
        p = self.profile
        self.wq = None if p.is_float else _quantize_weights(p.weights, self.w_kn)

    def _input(self, x):
        X = _as_float_array(x, "x")
        if X.ndim != 4 or X.shape[1] != self.Cg * self.groups:
            raise ValueError(f"x: expected shape (N, {self.Cg * self.groups}, H, W), got {X.shape}")
        return X

    def _cols(self, X, pad_value=0):
        """im2col: (N, OH, OW, groups, Cg * kh * kw) in the input's dtype."""
        t, l, b, r = self.pads
        Xp = np.pad(X, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=pad_value) if any(self.pads) else X
        sh, sw = self.stride
        dh, dw = self.dilation
        ekh, ekw = (self.kh - 1) * dh + 1, (self.kw - 1) * dw + 1
        N, C, H, W = Xp.shape
        if H < ekh or W < ekw:
            raise ValueError(f"x: input {X.shape[2:]} (padded {(H, W)}) is smaller than the dilated "
                             f"kernel {(ekh, ekw)}")
        win = np.lib.stride_tricks.sliding_window_view(Xp, (ekh, ekw), axis=(2, 3))
        win = win[:, :, ::sh, ::sw, ::dh, ::dw]                      # (N, C, OH, OW, kh, kw)
        OH, OW = win.shape[2], win.shape[3]
        win = win.reshape(N, self.groups, self.Cg, OH, OW, self.kh, self.kw)
        cols = win.transpose(0, 3, 4, 1, 2, 5, 6).reshape(N, OH, OW, self.groups, -1)
        return np.ascontiguousarray(cols), OH, OW

    def reference(self, x) -> np.ndarray:
        """The float32 convolution (im2col and NumPy's matmul)."""
        X = np.asarray(x, np.float32)
        cols, OH, OW = self._cols(X)
        N = X.shape[0]
        Og = self.O // self.groups
        out = np.empty((N, OH, OW, self.O), np.float32)
        for g in range(self.groups):
            out[..., g * Og:(g + 1) * Og] = cols[..., g, :] @ self.w_kn[:, g * Og:(g + 1) * Og]
        if self.bias is not None:
            out += self.bias
        return out.transpose(0, 3, 1, 2)

    def calibrate(self, x) -> None:
        X = self._input(x)
        self._observe([X], self.reference(X))

    def run(self, x) -> np.ndarray:
        """The convolution as the target computes it: float32 (N, O, OH, OW)."""
        X = self._input(x)
        p = self.profile
        if p.is_float:
            y = self.reference(X)
            dims = (1, y.shape[0] * y.shape[2] * y.shape[3], self.Cg * self.kh * self.kw, self.O)
            self.trace = LayerTrace(self.name, self.op, x_absmax=_absmax(X), dims=dims)
            return self._finish(np.ascontiguousarray(y))
        a = p.activations
        N, G = X.shape[0], self.groups
        Og = self.O // G
        if a.block_scaled:                    # per block of every im2col row, per conv group
            colsf, OH, OW = self._cols(X)
            out = np.empty((N * OH * OW, self.O), np.float32)
            clipped = 0
            for g in range(G):
                rows = np.ascontiguousarray(colsf[..., g, :].reshape(N * OH * OW, -1))
                b = self.bias[g * Og:(g + 1) * Og] if self.bias is not None else None
                out[:, g * Og:(g + 1) * Og], _, xq, _ = _block_product(
                    p, rows, None, _columns(self.wq, g * Og, (g + 1) * Og), b)
                clipped += _block_clipped(xq, rows)
            y = out.reshape(N, OH, OW, self.O).transpose(0, 3, 1, 2)
            self.trace = LayerTrace(self.name, self.op, xq, self.wq, out, None, clipped_inputs=clipped,
                                    x_absmax=_absmax(X), dims=(1, N * OH * OW, self.Cg * self.kh * self.kw,
                                                               self.O))
            return self._finish(np.ascontiguousarray(y))
        if a.granularity == "token":          # one scale per output pixel: quantize im2col rows
            colsf, OH, OW = self._cols(X)
            rows = colsf.reshape(-1, colsf.shape[-1])
            xc, sx, zx, xq = _quantize_act(a, rows, None, None)
            clipped = _count_clipped(rows, sx, zx, xq.fmt)
            xc = xc.reshape(N * OH * OW, G, -1)
            sx, zx = np.asarray(sx).reshape(N * OH * OW, G, 1), np.asarray(zx).reshape(N * OH * OW, G, 1)
        else:
            codes, sx, zx, xq = _quantize_act(a, X, self._static_in(0), None)
            pad = 0 if isinstance(xq.fmt, FloatFormat) else int(zx)      # real 0 is the zero point
            cc, OH, OW = self._cols(np.asarray(codes), pad)
            xc = cc.reshape(N * OH * OW, G, -1)
            clipped = _count_clipped(X, sx, zx, xq.fmt)
        wq = self.wq
        wgroups = p.weights.group_size if p.weights.granularity == "group" else None
        per_g = [self._operands(wq, sx, zx, xc, g, Og, wgroups) for g in range(G)]
        out = np.empty((N * OH * OW, self.O), np.float32)
        accs, ovfs, codes_out = [], [], []
        so = zo = None
        if isinstance(wq.fmt, FloatFormat):
            for g, (xg, sxg, _, wcg, swg, _, b) in enumerate(per_g):
                y, acc = _float_product(p, xg, sxg, wcg, swg, b, (xq.fmt, wq.fmt))
                out[:, g * Og:(g + 1) * Og] = y
                accs.append(acc)
            ovf = None
        elif wgroups is not None or p.output.type != "int8":
            for g, (xg, sxg, zxg, wcg, swg, zwg, b) in enumerate(per_g):
                y, acc, o, _, _, _ = _integer_product(p, xg, sxg, zxg, xq.fmt, wcg, swg, zwg, wq.fmt, b,
                                                      wgroups, (None, None), self.name, "conv")
                out[:, g * Og:(g + 1) * Og] = y
                accs.append(acc)
                ovfs.append(o)
            ovf = np.concatenate(ovfs, axis=-1)
        else:
            # INT8 output: every group through the accumulator first, then one output
            # quantization for the whole output tensor
            scales = []
            for xg, sxg, zxg, wcg, swg, zwg, b in per_g:
                s = (np.asarray(sxg, np.float32) * np.asarray(swg, np.float32)).astype(np.float32)
                c = None if b is None else _bias_codes(b, s, (xg.shape[0], wcg.shape[1]),
                                                       p.accumulator, self.name)
                acc, o = _integer_accumulate(p, xg, zxg, xq.fmt, wcg, zwg, wq.fmt, c, None, self.name)
                accs.append(acc)
                ovfs.append(o)
                scales.append(s)
            out_q = self._static_out()
            so, zo = out_q if out_q[0] is not None else _dynamic_output(p, list(zip(accs, scales)))
            if self.depthwise:        # requantize the channels together, in channel order
                acc_all = np.concatenate(accs, axis=-1)
                sw_all = wq.scale.reshape(1, -1) if np.ndim(wq.scale) else wq.scale
                sx_all = np.asarray(sx).reshape(np.shape(sx)[0], -1) if np.ndim(sx) == 3 else sx
                cds, yy = _requantized(p, acc_all, sx_all, sw_all, so, zo, "conv", depthwise=True,
                                       cache=self._mcache)
                codes_out.append(cds)
                out[:] = yy
            else:
                for g, (acc, (_, sxg, _, _, swg, _, _)) in enumerate(zip(accs, per_g)):
                    cds, y = _requantized(p, acc, sxg, swg, so, zo, "conv", cache=self._mcache)
                    codes_out.append(cds)
                    out[:, g * Og:(g + 1) * Og] = y
            ovf = np.concatenate(ovfs, axis=-1)
            so, zo = np.float32(so), np.int32(zo)
        y = out.reshape(N, OH, OW, self.O).transpose(0, 3, 1, 2)
        cds = np.concatenate(codes_out, axis=-1) if codes_out else None
        self.trace = LayerTrace(self.name, self.op, xq, wq, np.concatenate(accs, axis=-1), ovf, cds,
                                so, zo, clipped, np.asarray(sx), _absmax(X),
                                (1, N * OH * OW, self.Cg * self.kh * self.kw, self.O))
        return self._finish(np.ascontiguousarray(y))

    def _operands(self, wq, sx, zx, xc, g, Og, wgroups):
        """Conv group g's im2col codes and weight columns with their scales."""
        cols = slice(g * Og, (g + 1) * Og)
        xg = np.ascontiguousarray(xc[:, g, :])
        sxg = sx[:, g, :] if np.ndim(sx) == 3 else sx
        zxg = zx[:, g, :] if np.ndim(zx) == 3 else zx
        wcg = np.ascontiguousarray(wq.codes[:, cols])
        if wgroups is not None:
            swg, zwg = wq.scale[:, cols], np.asarray(wq.zero_point)[:, cols]
        elif np.ndim(wq.scale):
            swg, zwg = wq.scale[cols].reshape(1, -1), np.asarray(wq.zero_point)[cols].reshape(1, -1)
        else:
            swg, zwg = wq.scale, wq.zero_point
        if isinstance(wq.fmt, FloatFormat):
            swg = np.asarray(swg).reshape(-1) if np.ndim(swg) else swg
            sxg = np.asarray(sxg).reshape(-1) if np.ndim(sxg) else sxg
        b = self.bias[cols] if self.bias is not None else None
        return xg, sxg, zxg, wcg, swg, zwg, b


def linear(profile, x, w, bias=None, *, weights=None):
    """One fully connected layer ``x @ w + bias`` as ``profile``'s target
    computes it, with this call's activation range: ``(y, trace)``.

    A convenience for :class:`Linear`; build the layer once and call
    :meth:`Linear.run` to quantize the weights only once.

    Examples
    --------
    >>> import numpy as np
    >>> from fixedpoint import layers
    >>> y, tr = layers.linear("edge-int4", np.ones((2, 64), np.float32), np.full((64, 3), 0.5, np.float32))
    >>> y.tolist(), tr.w.scale.shape
    ([[32.0, 32.0, 32.0], [32.0, 32.0, 32.0]], (2, 3))
    """
    layer = Linear(profile, w, bias, weights=weights)
    y = layer.run(x)
    return y, layer.trace
