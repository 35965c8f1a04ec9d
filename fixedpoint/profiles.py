"""Accelerator profiles: every rule that decides a layer's bits, as data.

An :class:`AcceleratorProfile` names the weight and activation formats, the
scale granularity, the accumulator, the requantization rounding and the output
type of one target, plus the cost figures the design study uses (energy per
operation, peak throughput, memory bandwidth).  Profiles are frozen
dataclasses, saved to and loaded from TOML or JSON; no kernel branches on a
profile's name.

:meth:`AcceleratorProfile.linear` runs one fully connected layer on float
inputs as the target would and returns the float result and a
:class:`LinearTrace` (codes, scales, accumulator values and overflow counts).
It is a composition of the public primitives only (:func:`fixedpoint.quantize`,
:func:`fixedpoint.matmul`, :func:`fixedpoint.fp8_matmul`,
:func:`fixedpoint.quantize_multiplier`, :func:`fixedpoint.requantize`), in the
order its docstring states.

Built-in profiles (:func:`names`): ``ane-int8``, ``h100-fp8``,
``h100-fp8-fast``, ``h100-fp8-e5m2``, ``h100-int8``, ``edge-int4``,
``int2-research`` and ``fp32``.  :func:`get` returns one, :func:`load` reads a
user file (and registers it), :func:`register` adds a profile made in Python.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .accumulate import Accumulator, matmul
from .formats import FloatFormat, IntFormat
from .quantization import QTensor, quantize, ROUNDING
from .calibrate import CALIBRATION
from .formats import as_format as _as_format
from .requant import REQUANT_ROUNDING, quantize_multiplier, requantize
from .tensorcore import TensorCoreAccumulator, _round_to_bf16, fp8_matmul

__all__ = ["AcceleratorProfile", "LinearTrace", "get", "names", "register", "load", "loads",
           "GRANULARITY", "OUTPUTS"]

#: Scale granularity of the weights.
GRANULARITY = {
    "tensor": "one scale for the whole weight matrix",
    "channel": "one scale per output channel (column of the K x N weight matrix)",
    "group": "one scale per group of `group_size` consecutive inputs of each output channel",
}

#: What a layer hands to the next one.
OUTPUTS = {
    "int8": "requantized to INT8 codes with the output scale (integer pipelines)",
    "float32": "float32",
    "float16": "IEEE half, rounded to nearest even from float32",
    "bfloat16": "bfloat16, rounded to nearest even from float32",
}

# (section, key, attribute) of every scalar field in a profile file
_LAYOUT = [
    ("", "name", "name"), ("", "description", "description"),
    ("weights", "format", "weight_format"), ("weights", "granularity", "weight_granularity"),
    ("weights", "group_size", "weight_group_size"), ("weights", "symmetric", "weight_symmetric"),
    ("weights", "narrow_range", "weight_narrow_range"), ("weights", "calibration", "weight_calibration"),
    ("activations", "format", "activation_format"),
    ("activations", "symmetric", "activation_symmetric"),
    ("activations", "calibration", "activation_calibration"),
    ("output", "type", "output"), ("output", "requantize", "requantize"),
    ("output", "rounding", "rounding"), ("output", "fp8_saturate", "fp8_saturate"),
    ("cost", "mul_pj", "mul_pj"), ("cost", "add_pj", "add_pj"),
    ("cost", "epilogue_pj", "epilogue_pj"),
    ("cost", "dram_pj_per_64bit", "dram_pj_per_64bit"),
    ("cost", "sram_pj_per_64bit", "sram_pj_per_64bit"),
    ("cost", "scale_bytes", "scale_bytes"),
    ("cost", "peak_ops_per_s", "peak_ops_per_s"),
    ("cost", "memory_bandwidth_bytes_per_s", "memory_bandwidth_bytes_per_s"),
    ("cost", "source", "cost_source"),
    ("notes", "public", "public"), ("notes", "assumptions", "assumptions"),
]
_KEY_OF = {attr: (f"{sec}.{key}" if sec else key) for sec, key, attr in _LAYOUT}
_ACC_FIELDS = {"integer": [f.name for f in dataclasses.fields(Accumulator)],
               "tensor_core": [f.name for f in dataclasses.fields(TensorCoreAccumulator)]}


def _label(attr: str) -> str:
    key = _KEY_OF.get(attr, attr)
    return attr if key == attr else f"{attr} ({key})"


def _fmt(name: str, attr: str):
    if name == "float32":
        return None
    try:
        return _as_format(name)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{_label(attr)}: {e}") from None


def _storage_bits(f) -> int:
    if f is None:
        return 32
    return f.nbits if isinstance(f, FloatFormat) else f.bits


@dataclass(frozen=True)
class LinearTrace:
    """What :meth:`AcceleratorProfile.linear` computed on the way.

    Attributes
    ----------
    x, w : QTensor or None
        The quantized input and weights (None for the float profile).
    accumulator : ndarray or None
        Integer profiles: the accumulator register values (int32/int64),
        bias included when the bias is the register's initial value; FP8
        profiles: the float32 tensor-core result, scaled, before the bias.
    overflow : ndarray of int64 or None
        Per output element, how many accumulator adds wrapped or clamped
        (integer profiles, summed over groups).
    output_codes : ndarray or None
        The requantized codes (``output="int8"``).
    output_scale, output_zero_point :
        Their scale and zero point.
    clipped_inputs : int
        How many inputs lay beyond the activation format's range at the
        scale used (and were saturated).
    """

    x: QTensor | None = None
    w: QTensor | None = None
    accumulator: np.ndarray | None = None
    overflow: np.ndarray | None = None
    output_codes: np.ndarray | None = None
    output_scale: np.float32 | None = None
    output_zero_point: int | None = None
    clipped_inputs: int = 0

    @property
    def overflow_count(self) -> int:
        """Total accumulator overflows (0 where the profile has no integer accumulator)."""
        return 0 if self.overflow is None else int(self.overflow.sum())


@dataclass(frozen=True)
class AcceleratorProfile:
    """Everything that decides the bits of a layer on one target, and what it costs.

    Formats are names: integer formats (``"int8"``, ``"int4"``, ``"int2"``, ...),
    FP8 formats (``"e4m3"``, ``"e5m2"``) or ``"float32"`` (no quantization).

    Parameters
    ----------
    name, description : str
    weight_format : str
    weight_granularity : {"tensor", "channel", "group"}
        See ``GRANULARITY``.  Channels are the N columns of a K x N weight.
    weight_group_size : int or None
        Inputs per group (``"group"`` only); must divide K.
    weight_symmetric, weight_narrow_range : bool
        Symmetric scales (zero point 0); ``[-2^(b-1) + 1, 2^(b-1) - 1]``.
    weight_calibration : str
        One of :data:`fixedpoint.quantize.CALIBRATION`.
    activation_format : str
    activation_symmetric : bool
    activation_calibration : str
        How static activation scales are found from calibration data (the study);
        :meth:`linear` without ``x_scale`` calibrates per call ("minmax").
    accumulator : Accumulator, TensorCoreAccumulator or None
        Integer formats need an :class:`Accumulator`, FP8 formats a
        :class:`TensorCoreAccumulator`, ``float32`` none.
    output : {"int8", "float32", "float16", "bfloat16"}
        See ``OUTPUTS``.
    requantize : {"double", "single", "float"} or None
        Requantization arithmetic for ``output="int8"`` (see
        :data:`fixedpoint.requant.REQUANT_ROUNDING`); None otherwise.
    rounding : str
        Rounding of the quantizers (``x / scale`` to a code).
    fp8_saturate : bool
        FP8 conversion saturates to the largest finite value (Hopper
        ``satfinite``) rather than producing Inf/NaN.
    mul_pj, add_pj : float
        Energy of one multiply and one accumulator add (pJ).
    epilogue_pj : float
        Energy per output value of the rescale (requantize or float scale).
    dram_pj_per_64bit, sram_pj_per_64bit : float
        Energy of reading 64 bits of weights (DRAM) and of activations (cache).
    scale_bytes : int
        Bytes per stored scale.
    peak_ops_per_s, memory_bandwidth_bytes_per_s : float
        For the roofline estimate (2 operations per multiply-add).
    cost_source : str
        Where the cost figures come from.
    public, assumptions : tuple of str
        What is public about the target, and what the profile assumes.
    """

    name: str
    description: str = ""
    weight_format: str = "int8"
    weight_granularity: str = "channel"
    weight_group_size: int | None = None
    weight_symmetric: bool = True
    weight_narrow_range: bool = False
    weight_calibration: str = "minmax"
    activation_format: str = "int8"
    activation_symmetric: bool = True
    activation_calibration: str = "minmax"
    accumulator: Accumulator | TensorCoreAccumulator | None = Accumulator(32, "wrap")
    output: str = "float32"
    requantize: str | None = None
    rounding: str = "nearest_even"
    fp8_saturate: bool = True
    mul_pj: float = 0.2
    add_pj: float = 0.1
    epilogue_pj: float = 3.7
    dram_pj_per_64bit: float = 1300.0
    sram_pj_per_64bit: float = 10.0
    scale_bytes: int = 4
    peak_ops_per_s: float = 1e12
    memory_bandwidth_bytes_per_s: float = 1e11
    cost_source: str = ""
    public: tuple = field(default_factory=tuple)
    assumptions: tuple = field(default_factory=tuple)

    def __post_init__(self):
        for attr in ("name", "description", "weight_format", "weight_granularity",
                     "weight_calibration", "activation_format", "activation_calibration",
                     "output", "rounding", "cost_source"):
            if not isinstance(getattr(self, attr), str):
                raise TypeError(f"{_label(attr)}: expected a string, got "
                                f"{type(getattr(self, attr)).__name__}")
        if not self.name:
            raise ValueError("name: must not be empty")
        for attr in ("weight_symmetric", "weight_narrow_range", "activation_symmetric", "fp8_saturate"):
            if not isinstance(getattr(self, attr), (bool, np.bool_)):
                raise TypeError(f"{_label(attr)}: expected true or false, got {getattr(self, attr)!r}")
        for attr in ("mul_pj", "add_pj", "epilogue_pj", "dram_pj_per_64bit", "sram_pj_per_64bit",
                     "peak_ops_per_s", "memory_bandwidth_bytes_per_s"):
            v = getattr(self, attr)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"{_label(attr)}: expected a number, got {v!r}")
            if not math.isfinite(v) or v < 0 or (attr.startswith(("peak", "memory")) and v == 0):
                raise ValueError(f"{_label(attr)}: expected a finite positive number, got {v!r}")
            object.__setattr__(self, attr, float(v))
        if isinstance(self.scale_bytes, bool) or not isinstance(self.scale_bytes, (int, np.integer)) \
                or self.scale_bytes < 0:
            raise ValueError(f"{_label('scale_bytes')}: expected a non-negative int, got {self.scale_bytes!r}")
        for attr in ("public", "assumptions"):
            v = getattr(self, attr)
            if isinstance(v, str) or not all(isinstance(s, str) for s in v):
                raise TypeError(f"{_label(attr)}: expected a list of strings, got {v!r}")
            object.__setattr__(self, attr, tuple(v))
        fw = _fmt(self.weight_format, "weight_format")
        fa = _fmt(self.activation_format, "activation_format")
        if (fw is None) != (fa is None):
            raise ValueError("weight_format (weights.format): float32 weights need float32 activations "
                             "and the other way round")
        if self.weight_granularity not in GRANULARITY:
            raise ValueError(f"{_label('weight_granularity')}: expected one of {list(GRANULARITY)}, "
                             f"got {self.weight_granularity!r}")
        gs = self.weight_group_size
        if self.weight_granularity == "group":
            if isinstance(gs, bool) or not isinstance(gs, (int, np.integer)) or gs < 1:
                raise ValueError(f"{_label('weight_group_size')}: group granularity needs a positive "
                                 f"int, got {gs!r}")
            object.__setattr__(self, "weight_group_size", int(gs))
        elif gs is not None:
            raise ValueError(f"{_label('weight_group_size')}: only for weight_granularity='group'")
        for attr in ("weight_calibration", "activation_calibration"):
            if getattr(self, attr) not in CALIBRATION:
                raise ValueError(f"{_label(attr)}: expected one of {list(CALIBRATION)}, "
                                 f"got {getattr(self, attr)!r}")
        if self.rounding not in ROUNDING:
            raise ValueError(f"{_label('rounding')}: expected one of {list(ROUNDING)}, got {self.rounding!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"{_label('output')}: expected one of {list(OUTPUTS)}, got {self.output!r}")
        if self.requantize is not None and self.requantize not in REQUANT_ROUNDING:
            raise ValueError(f"{_label('requantize')}: expected one of {list(REQUANT_ROUNDING)} or "
                             f"none, got {self.requantize!r}")
        acc = self.accumulator
        if fw is None:
            if acc is not None:
                raise ValueError("accumulator: the float32 profile has no accumulator model")
            if self.output == "int8" or self.requantize is not None:
                raise ValueError("output (output.type): float32 profiles output floats, no requantize")
            return
        is_int = isinstance(fw, IntFormat)
        if is_int != isinstance(fa, IntFormat):
            raise ValueError("activation_format (activations.format): weights and activations must be "
                             "both integer or both FP8")
        if is_int:
            if not isinstance(acc, Accumulator):
                raise ValueError(f"accumulator: integer formats need an Accumulator, got "
                                 f"{type(acc).__name__}")
            if fw.bits > 8 or fa.bits > 8:
                raise ValueError("weight_format (weights.format): integer formats of at most 8 bits")
            if self.weight_symmetric and not fw.signed:
                raise ValueError(f"{_label('weight_symmetric')}: {fw.name} is unsigned")
            if self.activation_symmetric and not fa.signed:
                raise ValueError(f"{_label('activation_symmetric')}: {fa.name} is unsigned")
            if self.weight_narrow_range and not (fw.signed and self.weight_symmetric):
                raise ValueError(f"{_label('weight_narrow_range')}: needs signed, symmetric weights")
        else:
            if not isinstance(acc, TensorCoreAccumulator):
                raise ValueError(f"accumulator: FP8 formats need a TensorCoreAccumulator, got "
                                 f"{type(acc).__name__}")
            if self.weight_granularity == "group":
                raise ValueError(f"{_label('weight_granularity')}: FP8 weights take 'tensor' or 'channel'")
            if self.weight_narrow_range:
                raise ValueError(f"{_label('weight_narrow_range')}: applies to integer weights")
            if self.rounding not in ("nearest_even", "toward_zero", "stochastic"):
                raise ValueError(f"{_label('rounding')}: FP8 formats take 'nearest_even', 'toward_zero' "
                                 f"or 'stochastic'")
        if self.output == "int8":
            if not is_int or self.requantize is None:
                raise ValueError("output (output.type): 'int8' output needs integer formats and a "
                                 "requantize rounding")
            if self.weight_granularity == "group":
                raise ValueError("output (output.type): 'int8' output needs one scale per channel "
                                 "(per-group scales are applied in float)")
        elif self.requantize is not None:
            raise ValueError(f"{_label('requantize')}: only with output='int8'")

    # -- formats ---------------------------------------------------------------
    @property
    def weight_fmt(self):
        """The weight format object (None for float32)."""
        f = _fmt(self.weight_format, "weight_format")
        if isinstance(f, IntFormat) and self.weight_narrow_range:
            f = IntFormat(f.bits, True, True)
        return f

    @property
    def activation_fmt(self):
        """The activation format object (None for float32)."""
        return _fmt(self.activation_format, "activation_format")

    @property
    def is_float(self) -> bool:
        return self.weight_fmt is None

    @property
    def doc(self) -> str:
        """The profile described in words: what it is, what is public, what is assumed."""
        lines = [f"{self.name}: {self.description}"]
        if self.public:
            lines += ["", "Public:"] + [f"  - {s}" for s in self.public]
        if self.assumptions:
            lines += ["", "Assumed (override in a profile file):"] + [f"  - {s}" for s in self.assumptions]
        if self.cost_source:
            lines += ["", f"Cost figures: {self.cost_source}"]
        return "\n".join(lines)

    # -- the layer -------------------------------------------------------------
    def quantize_weights(self, w, bias=None, x_scale=None) -> QTensor | None:
        """The weights as this target stores them (K x N, channels are columns).

        For ``output="int8"`` the bias is stored as int32 at scale
        ``x_scale * w_scale``; given ``bias`` and ``x_scale``, a channel whose
        weight scale is too small for its bias to fit in half the accumulator
        (2^30 for 32 bits) has its weight scale raised until it does
        (TensorFlow Lite's converter does the same for near-zero channels)."""
        if self.is_float:
            return None
        W = np.asarray(w)
        if W.ndim != 2:
            raise ValueError(f"w: expected a K x N weight matrix, got shape {W.shape}")
        axis = {"tensor": None, "channel": 1, "group": 0}[self.weight_granularity]
        gs = self.weight_group_size
        if gs is not None and W.shape[0] % gs:
            raise ValueError(f"w: the group size {gs} does not divide K = {W.shape[0]}")
        f = self.weight_fmt
        kw = dict(axis=axis, group_size=gs, calibration=self.weight_calibration, rounding=self.rounding)
        if isinstance(f, FloatFormat):
            return quantize(W, f, saturate=self.fp8_saturate, **kw)
        base = IntFormat(f.bits, f.signed)
        q = quantize(W, base, symmetric=self.weight_symmetric, narrow_range=self.weight_narrow_range, **kw)
        if bias is None or x_scale is None or self.output != "int8":
            return q
        limit = 2.0 ** (self.accumulator.bits - 2)       # half the register: 2^30 for 32 bits
        need = np.abs(np.asarray(bias, np.float64)) / (np.float64(x_scale) * limit)
        if self.weight_granularity == "tensor":
            need = need.max(initial=0.0)
        if not np.any(np.asarray(q.scale, np.float64) < need):
            return q
        sc = np.maximum(np.asarray(q.scale, np.float64), need).astype(np.float32)
        zp = None if self.weight_symmetric else q.zero_point
        del kw["calibration"]
        return quantize(W, base, scale=sc, zero_point=zp, narrow_range=self.weight_narrow_range, **kw)

    def calibrate_activations(self, samples):
        """Static per-tensor scale and zero point for activations like ``samples``,
        found with ``activation_calibration``: ``(scale, zero_point)``."""
        from .calibrate import Calibrator
        if self.is_float:
            return None, None
        f = self.activation_fmt
        sym = self.activation_symmetric or isinstance(f, FloatFormat)
        cal = Calibrator(self.activation_calibration, symmetric=sym)
        cal.update(np.asarray(samples, np.float32))
        scale, zp = cal.scale_zero_point(f)
        return np.float32(scale), int(zp)

    def _quantize_x(self, X, x_scale, x_zero_point):
        f = self.activation_fmt
        if isinstance(f, FloatFormat):
            if x_scale is None:
                return quantize(X, f, saturate=self.fp8_saturate, rounding=self.rounding)
            return quantize(X, f, scale=x_scale, saturate=self.fp8_saturate, rounding=self.rounding)
        if x_scale is None:
            return quantize(X, f, symmetric=self.activation_symmetric, rounding=self.rounding)
        zp = None if x_zero_point is None else np.int32(x_zero_point)
        return quantize(X, f, scale=x_scale, zero_point=zp, rounding=self.rounding)

    def linear(self, x, w, bias=None, *, x_scale=None, x_zero_point=None, out_scale=None,
               out_zero_point=None, weights=None):
        """One fully connected layer ``x @ w + bias`` as this target computes it.

        Parameters
        ----------
        x : array_like of floats, shape (..., K)
        w : array_like of floats, shape (K, N)
        bias : array_like of floats, shape (N,), optional
        x_scale, x_zero_point : optional
            Static activation quantization (from :meth:`calibrate_activations`);
            default: calibrated from ``x`` (per tensor, min/max).
        out_scale, out_zero_point : optional
            Output quantization for ``output="int8"``; default: calibrated from
            the layer's own result (min/max of the dequantized accumulator).
        weights : QTensor, optional
            Weights already quantized by :meth:`quantize_weights` (skips
            requantizing ``w`` on every call).

        Returns
        -------
        y : ndarray of float32, shape (..., N)
            The output as the next layer sees it (INT8 outputs dequantized,
            float16/bfloat16 outputs widened exactly to float32).
        trace : LinearTrace

        Examples
        --------
        >>> import numpy as np
        >>> from fixedpoint import profiles
        >>> x = np.array([[1.0, -2.0, 0.5, 4.0]], np.float32)     # scale 4/127
        >>> w = np.array([[0.5], [0.25], [1.0], [0.125]], np.float32)  # scale 1/127
        >>> y, tr = profiles.get("ane-int8").linear(x, w)
        >>> tr.x.codes.tolist(), tr.w.codes.ravel().tolist()         # ties to even: 63.5 -> 64
        ([[32, -64, 16, 127]], [64, 32, 127, 16])
        >>> int(tr.accumulator[0, 0]), tr.output_codes.tolist()     # 4064 * 4/127 * 1/127 = 128/127
        (4064, [[127]])
        >>> round(float(y[0, 0]), 6), float((x @ w)[0, 0])
        (1.007874, 1.0)

        Notes
        -----
        The steps, each a public primitive:

        1. ``xq = quantize(x, activation_format, ...)``, ``wq = quantize(w,
           weight_format, axis=..., group_size=...)`` (:meth:`quantize_weights`).
        2. Integer formats, per-tensor or per-channel weights,
           ``output="int8"``: ``acc = matmul(xq.codes - x_zp, wq.codes - w_zp,
           accumulator, c=bias_q)`` with ``bias_q = round_half_even(bias / (sx
           * sw))`` as the register's initial value; ``quantize_multiplier(sx
           * sw / s_out)``, ``requantize`` to INT8, ``y = (codes - zp_out) *
           s_out``.  Float outputs: ``y = float32(acc) * float32(sx * sw) +
           bias`` in float32, ``acc`` without bias.
           Per-group weights: each group of K summed through the accumulator
           (one batched ``matmul`` whose batches are the groups; no bias),
           each group's sum scaled by ``float32(sx * sw_g)`` and the groups
           summed in float32 in group order, then ``+ bias``.
        3. FP8 formats: ``y = fp8_matmul(xq, wq, scale_a=sx, scale_b=sw,
           accumulator=...) + bias`` in float32.
        4. The float result is rounded to ``output`` (nearest even).
        """
        X = np.asarray(x)
        if X.dtype.kind != "f":
            raise TypeError(f"x: expected floats, got dtype {X.dtype}")
        W = np.asarray(w) if weights is None else None
        if W is not None:
            if W.dtype.kind != "f":
                raise TypeError(f"w: expected floats, got dtype {W.dtype}")
            if W.ndim != 2:
                raise ValueError(f"w: expected a K x N weight matrix, got shape {W.shape}")
            K, N = W.shape
        else:
            if not isinstance(weights, QTensor):
                raise TypeError(f"weights: expected a QTensor from quantize_weights, got "
                                f"{type(weights).__name__}")
            K, N = weights.shape
        if X.ndim < 1 or X.shape[-1] != K:
            raise ValueError(f"x: expected shape (..., {K}) to match w, got {X.shape}")
        B = None
        if bias is not None:
            B = np.asarray(bias)
            if B.dtype.kind not in "fiu" or B.shape != (N,):
                raise ValueError(f"bias: expected {N} floats, got shape {B.shape} of dtype {B.dtype}")
            B = B.astype(np.float32)
            if not np.all(np.isfinite(B)):
                raise ValueError("bias: must be finite")
        if self.is_float:
            y = np.matmul(X.astype(np.float32), W.astype(np.float32))
            if B is not None:
                y = y + B
            return self._cast(y), LinearTrace()
        xq = self._quantize_x(X, x_scale, x_zero_point)
        wq = self.quantize_weights(W, B, xq.scale) if weights is None else weights
        clipped = _count_clipped(X, xq)
        if isinstance(self.weight_fmt, FloatFormat):
            acc = fp8_matmul(xq.codes, wq.codes, xq.fmt, wq.fmt, scale_a=xq.scale, scale_b=wq.scale,
                             accumulator=self.accumulator, out_dtype="float32")
            y = acc + B if B is not None else acc
            return self._cast(y), LinearTrace(xq, wq, acc, None, clipped_inputs=clipped)
        return self._integer_linear(X, xq, wq, B, out_scale, out_zero_point, clipped)

    def _integer_linear(self, X, xq, wq, B, out_scale, out_zero_point, clipped):
        fa, fw = xq.fmt, wq.fmt
        xz = int(xq.zero_point)
        wz = np.asarray(wq.zero_point, np.int16)
        if self.weight_granularity == "group":
            wz = np.repeat(wz, self.weight_group_size, axis=0)
        lo = min(fa.min - xz, fw.min - int(wz.max(initial=0)))
        hi = max(fa.max - xz, fw.max - int(wz.min(initial=0)))
        bits = max(2, max(-lo - 1, hi).bit_length() + 1)     # signed bits that hold both operands
        op = IntFormat(bits, True)

        def centred(codes, z):        # codes - zero point in op's dtype; no copy when z is 0
            if not np.any(z) and codes.dtype == op.dtype:
                return codes
            return (codes.astype(np.int16) - z).astype(op.dtype)
        xs, ws = centred(xq.codes, np.int16(xz)), centred(wq.codes, wz)
        sx = np.float32(xq.scale)
        if self.weight_granularity == "group":
            g = self.weight_group_size
            G = xs.shape[-1] // g
            lead = xs.shape[:-1]
            # every group's sum through the accumulator in one batched matmul: (G, M, N)
            xg = np.ascontiguousarray(xs.reshape(-1, G, g).transpose(1, 0, 2))
            out_shape = lead + (ws.shape[1],)
            if g * max(-op.min, op.max) ** 2 <= self.accumulator.max:
                # no group sum can overflow the register: no counts to gather
                acc_all = matmul(xg, ws.reshape(G, g, -1), op, self.accumulator)
                overflow = np.zeros(out_shape, np.int64)
            else:
                acc_all, n = matmul(xg, ws.reshape(G, g, -1), op, self.accumulator, return_overflow=True)
                overflow = n.sum(axis=0).reshape(out_shape)
            acc_all = acc_all.reshape((G,) + out_shape)
            # float32(acc_g) * float32(sx * sw_g) for every group at once, then the
            # float32 sum in group order
            scales = np.stack([(sx * wq.scale[j]).astype(np.float32) for j in range(G)])
            parts = acc_all.astype(np.float32)
            parts *= scales.reshape((G,) + (1,) * (acc_all.ndim - 2) + (-1,))
            y = parts[0].copy()
            for j in range(1, G):
                y += parts[j]
            if B is not None:
                y = y + B
            return self._cast(y), LinearTrace(xq, wq, acc_all, overflow, clipped_inputs=clipped)
        s = (sx * np.asarray(wq.scale, np.float32)).astype(np.float32)      # sx * sw, float32
        if self.output != "int8":           # int32 result scaled in float32, bias in float32
            acc_v, overflow = matmul(xs, ws, op, self.accumulator, return_overflow=True)
            y = acc_v.astype(np.float32) * s
            if B is not None:
                y = y + B
            return self._cast(y), LinearTrace(xq, wq, acc_v, overflow, clipped_inputs=clipped)
        c = None
        if B is not None:
            bq = np.rint(B.astype(np.float64) / s.astype(np.float64))
            acc = self.accumulator
            if np.any(np.abs(bq) > acc.max):
                raise ValueError(f"bias: does not fit the {acc.bits}-bit accumulator at scale "
                                 f"x_scale * w_scale = {float(np.min(s)):g} (quantize_weights(w, bias, "
                                 f"x_scale) raises such weight scales)")
            c = np.broadcast_to(bq.astype(np.int64), X.shape[:-1] + (ws.shape[1],))
        acc_v, overflow = matmul(xs, ws, op, self.accumulator, c=c, return_overflow=True)
        if out_scale is None:
            # min/max of acc * s (s > 0): per column, the column's extremes times its
            # scale (float64 rounding is monotonic), so no M x N float64 array is made;
            # the calibrated scale depends on nothing else
            a2 = acc_v.reshape(-1, acc_v.shape[-1]) if acc_v.ndim else acc_v.reshape(1, 1)
            s64 = np.broadcast_to(s.astype(np.float64), (a2.shape[1],))
            ext = np.array([(a2.min(axis=0) * s64).min(), (a2.max(axis=0) * s64).max()])
            oq = quantize(ext, "int8", symmetric=self.activation_symmetric)
            out_scale, out_zero_point = oq.scale, int(oq.zero_point)
        so = np.float32(out_scale)
        zo = 0 if out_zero_point is None else int(out_zero_point)
        a32 = np.clip(acc_v.astype(np.int64), -2**31, 2**31 - 1)
        if self.requantize == "float":
            codes = requantize(a32, s.astype(np.float64) / np.float64(so), rounding="float",
                               zero_point=zo, fmt="int8")
        else:
            m, sh = quantize_multiplier(s.astype(np.float64) / np.float64(so))
            codes = requantize(a32, m, sh, zero_point=zo, fmt="int8", rounding=self.requantize)
        y = (codes.astype(np.float32) - np.float32(zo)) * so
        return y, LinearTrace(xq, wq, acc_v, overflow, codes, so, zo, clipped)

    def _cast(self, y):
        y = np.asarray(y, np.float32)
        if self.output == "float16":
            with np.errstate(over="ignore"):        # beyond 65504: Inf, as the hardware's cast
                return y.astype(np.float16).astype(np.float32)
        if self.output == "bfloat16":
            return (_round_to_bf16(y).astype(np.uint32) << 16).view(np.float32)
        return y

    # -- costs -----------------------------------------------------------------
    def weight_bytes(self, k: int, n: int, bias: bool = True) -> int:
        """Bytes to store a K x N layer: codes (packed), scales, zero points and bias."""
        f = self.weight_fmt
        codes = -(-k * n * _storage_bits(f) // 8)
        if f is None:
            return codes + (4 * n if bias else 0)
        nscales = {"tensor": 1, "channel": n, "group": (k // (self.weight_group_size or 1)) * n}[
            self.weight_granularity]
        zps = 0 if (self.weight_symmetric or isinstance(f, FloatFormat)) else nscales * -(-f.bits // 8)
        return codes + nscales * self.scale_bytes + zps + (4 * n if bias else 0)

    def _act_bytes(self, which: str) -> float:
        if which == "in":
            return _storage_bits(self.activation_fmt) / 8
        return {"int8": 1, "float32": 4, "float16": 2, "bfloat16": 2}[self.output]

    def energy_pj(self, k: int, n: int, batch: int = 1) -> dict:
        """Estimated energy of a K x N layer for ``batch`` inputs (pJ), by part.

        multiply-adds ``batch*k*n*(mul_pj + add_pj)``; the epilogue
        ``batch*n*epilogue_pj`` (per group for per-group scales); reading the
        weights once from DRAM; reading inputs and writing outputs through the
        cache, per 64 bits."""
        macs = batch * k * n
        groups = k // self.weight_group_size if self.weight_granularity == "group" else 1
        act_bytes = batch * (k * self._act_bytes("in") + n * self._act_bytes("out"))
        parts = {
            "mac": macs * (self.mul_pj + self.add_pj),
            "epilogue": batch * n * groups * self.epilogue_pj,
            "weights_dram": self.weight_bytes(k, n) / 8 * self.dram_pj_per_64bit,
            "activations_sram": act_bytes / 8 * self.sram_pj_per_64bit,
        }
        parts["total"] = sum(parts.values())
        return parts

    def roofline_s(self, k: int, n: int, batch: int = 1) -> dict:
        """Roofline time of a K x N layer: max(compute, memory) at peak figures."""
        ops = 2.0 * batch * k * n
        nbytes = self.weight_bytes(k, n) + batch * (k * self._act_bytes("in") + n * self._act_bytes("out"))
        t_c = ops / self.peak_ops_per_s
        t_m = nbytes / self.memory_bandwidth_bytes_per_s
        return {"compute_s": t_c, "memory_s": t_m, "time_s": max(t_c, t_m),
                "bound": "compute" if t_c >= t_m else "memory"}

    # -- files -----------------------------------------------------------------
    def to_dict(self) -> dict:
        """Nested dictionary, as in a profile file (None fields left out)."""
        d: dict = {}
        for sec, key, attr in _LAYOUT:
            v = getattr(self, attr)
            if v is None:
                continue
            if isinstance(v, tuple):
                v = list(v)
            (d.setdefault(sec, {}) if sec else d)[key] = v
        acc = self.accumulator
        if acc is not None:
            kind = "integer" if isinstance(acc, Accumulator) else "tensor_core"
            a = {"kind": kind}
            for k in _ACC_FIELDS[kind]:
                if getattr(acc, k) is not None:
                    a[k] = getattr(acc, k)
            d["accumulator"] = a
        else:
            d["accumulator"] = {"kind": "none"}
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "profile") -> "AcceleratorProfile":
        """Build a profile from :meth:`to_dict`'s layout; errors name the field."""
        if not isinstance(d, dict):
            raise TypeError(f"{source}: expected a table of fields, got {type(d).__name__}")
        kwargs = {}
        known = {(sec, key): attr for sec, key, attr in _LAYOUT}
        sections = {sec for sec, _, _ in _LAYOUT if sec} | {"accumulator"}
        for k, v in d.items():
            if isinstance(v, dict):
                if k not in sections:
                    raise ValueError(f"{source}: unknown section [{k}]; expected one of {sorted(sections)}")
                if k == "accumulator":
                    continue
                for kk, vv in v.items():
                    if (k, kk) not in known:
                        raise ValueError(f"{source}: unknown field {k}.{kk}")
                    kwargs[known[(k, kk)]] = vv
            elif ("", k) in known:
                kwargs[known[("", k)]] = v
            else:
                raise ValueError(f"{source}: unknown field {k!r}")
        if "name" not in kwargs:
            raise ValueError(f"{source}: missing field 'name'")
        for attr in ("public", "assumptions"):
            if attr in kwargs and isinstance(kwargs[attr], list):
                kwargs[attr] = tuple(kwargs[attr])
        kwargs["accumulator"] = _accumulator_from(d.get("accumulator", {"kind": "none"}), source)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{source}: {e}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_toml(self) -> str:
        d = self.to_dict()
        out = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
        for sec, table in d.items():
            if isinstance(table, dict):
                out += ["", f"[{sec}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        return "\n".join(out) + "\n"

    def save(self, path) -> None:
        """Write the profile to ``path`` (``.toml`` or ``.json``)."""
        p = Path(path)
        if p.suffix not in (".toml", ".json"):
            raise ValueError(f"path: expected a .toml or .json file name, got {str(path)!r}")
        p.write_text(self.to_toml() if p.suffix == ".toml" else self.to_json(), encoding="utf-8")


def _accumulator_from(a, source):
    if not isinstance(a, dict):
        raise ValueError(f"{source}: accumulator: expected a table, got {a!r}")
    a = dict(a)
    kind = a.pop("kind", None)
    if kind == "none":
        if a:
            raise ValueError(f"{source}: accumulator: kind 'none' takes no other field, got {sorted(a)}")
        return None
    if kind not in _ACC_FIELDS:
        raise ValueError(f"{source}: accumulator.kind: expected 'integer', 'tensor_core' or 'none', "
                         f"got {kind!r}")
    for k in a:
        if k not in _ACC_FIELDS[kind]:
            raise ValueError(f"{source}: unknown field accumulator.{k} for kind {kind!r}; expected "
                             f"{_ACC_FIELDS[kind]}")
    cls = Accumulator if kind == "integer" else TensorCoreAccumulator
    if kind == "tensor_core":           # absent optional fields mean None
        for k in ("block", "frac_bits", "promote_every", "result_frac_bits"):
            a.setdefault(k, None)
        if a["result_frac_bits"] is None:
            del a["result_frac_bits"]
    try:
        return cls(**a)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{source}: accumulator.{e}") from None


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, str):
        return json.dumps(v)             # a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _count_clipped(X, q: QTensor) -> int:
    """Inputs beyond the representable range at the scale used."""
    f = q.fmt
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        dt = X.dtype if X.dtype in (np.float32, np.float64) else np.float32
        v = X.astype(dt) / np.asarray(q.scale).astype(dt)        # the quantizer's division
        if isinstance(f, FloatFormat):
            return int(np.count_nonzero(np.abs(v) > f.max_value))
        v = v + int(q.zero_point)
        return int(np.count_nonzero((v > f.max + 0.5) | (v < f.min - 0.5)))


# ---------------------------------------------------------------------------
# The built-in profiles

_HORO = "Horowitz, ISSCC 2014, 45 nm (SEMANTICS.md section 7)"
_DRAM = ("weights read once per inference from DRAM at 1300 pJ per 64 bits, the low end of "
         "Horowitz's 1300-2600; activations through an 8 KB cache at 10 pJ per 64 bits")

_BUILTIN = [
    AcceleratorProfile(
        name="ane-int8",
        description="Apple-Neural-Engine-style W8A8: per-channel symmetric INT8 weights in [-127, 127], "
                    "per-tensor INT8 activations, 32-bit integer accumulation, requantization to INT8.",
        weight_format="int8", weight_granularity="channel", weight_symmetric=True,
        weight_narrow_range=True, activation_format="int8", activation_symmetric=True,
        accumulator=Accumulator(32, "wrap"), output="int8", requantize="double",
        mul_pj=0.2, add_pj=0.1, epilogue_pj=3.1,
        peak_ops_per_s=38e12, memory_bandwidth_bytes_per_s=120e9,
        cost_source=f"energy: {_HORO} (8-bit multiply 0.2, 32-bit add 0.1, requantize = one 32-bit "
                    f"multiply 3.1); {_DRAM}; roofline: Apple M4 Neural Engine 38 TOPS and 120 GB/s "
                    f"unified memory (Apple, May 2024; the precision of the TOPS figure is not stated)",
        public=("W8A8 runs faster int8 x int8 compute on A17 Pro / M4 (coremltools docs)",
                "weights: linear_symmetric mode, INT8 in [-127, 127], scale = max|w| / 127, round half "
                "to even; per-channel granularity recommended on the Neural Engine",
                "activations: 8-bit, per tensor"),
        assumptions=("the accumulator is 32 bits and wraps (Apple does not publish width or overflow)",
                     "requantization is the TFLite/gemmlowp double-rounding fixed-point multiply "
                     "(not published)", "outputs saturate to [-128, 127] (not published)",
                     "activations are symmetric (zero point 0)")),
    AcceleratorProfile(
        name="h100-fp8",
        description="NVIDIA H100-style FP8: E4M3 weights and activations with per-tensor scales, "
                    "saturating conversion, the Hopper tensor-core accumulation with promotion to "
                    "float32 every 128 products (cuBLAS default), bfloat16 output.",
        weight_format="e4m3", weight_granularity="tensor", activation_format="e4m3",
        accumulator=TensorCoreAccumulator.hopper_fp8(), output="bfloat16", fp8_saturate=True,
        mul_pj=0.2, add_pj=0.9, epilogue_pj=3.7,
        peak_ops_per_s=1979e12, memory_bandwidth_bytes_per_s=3.35e12,
        cost_source=f"energy: {_HORO}: FP8 multiply assumed equal to the 8-bit integer multiply (0.2; "
                    f"not in the table), float32 add 0.9, float32 rescale 3.7; {_DRAM}; roofline: H100 "
                    f"SXM datasheet, 1979 dense FP8 TFLOPS, 3.35 TB/s HBM3",
        public=("E4M3 per OCP OFP8; cvt.rn.satfinite saturates to +-448",
                "accumulation verified bit for bit against recorded H100/H200 torch._scaled_mm "
                "results (SEMANTICS.md section 4)"),
        assumptions=("per-tensor scales from min/max (amax / 448), as Transformer Engine's default "
                     "recipe", "bias added in float32 before the bfloat16 rounding (cuBLASLt epilogue)")),
    AcceleratorProfile(
        name="h100-fp8-fast",
        description="h100-fp8 with use_fast_accum=True: no promotion to float32, the 13-fraction-bit "
                    "tensor-core sum runs over the whole K.",
        weight_format="e4m3", weight_granularity="tensor", activation_format="e4m3",
        accumulator=TensorCoreAccumulator.hopper_fp8(fast_accum=True), output="bfloat16",
        mul_pj=0.2, add_pj=0.9, epilogue_pj=3.7,
        peak_ops_per_s=1979e12, memory_bandwidth_bytes_per_s=3.35e12,
        cost_source="as h100-fp8",
        public=("verified bit for bit against recorded torch._scaled_mm(use_fast_accum=True) results",),
        assumptions=("as h100-fp8",)),
    AcceleratorProfile(
        name="h100-fp8-e5m2",
        description="H100-style FP8 with E5M2 activations (the gradient format of FP8 training: more "
                    "range, one fraction bit less) and E4M3 weights; Hopper has no E5M2 x E5M2 GEMM.",
        weight_format="e4m3", weight_granularity="tensor", activation_format="e5m2",
        accumulator=TensorCoreAccumulator.hopper_fp8(), output="bfloat16",
        mul_pj=0.2, add_pj=0.9, epilogue_pj=3.7,
        peak_ops_per_s=1979e12, memory_bandwidth_bytes_per_s=3.35e12,
        cost_source="as h100-fp8",
        public=("E5M2 per OCP OFP8 (max 57344, has Inf)",
                "cuBLASLt FP8 GEMMs take E4M3 x E4M3, E4M3 x E5M2 and E5M2 x E4M3"),
        assumptions=("the E5M2 operand goes through the same datapath as E4M3 (verified for E4M3 only)",)),
    AcceleratorProfile(
        name="h100-int8",
        description="H100-style INT8: per-channel symmetric INT8 weights, per-tensor INT8 activations, "
                    "the Hopper cuBLASLt INT8 GEMM (32-bit register that saturates after every block "
                    "of 16 products), int32 result scaled in float32, bfloat16 output.",
        weight_format="int8", weight_granularity="channel", weight_narrow_range=True,
        activation_format="int8", accumulator=Accumulator(32, "saturate", block=16),
        output="bfloat16", mul_pj=0.2, add_pj=0.1, epilogue_pj=3.7,
        peak_ops_per_s=1979e12, memory_bandwidth_bytes_per_s=3.35e12,
        cost_source=f"energy: {_HORO}; {_DRAM}; roofline: H100 SXM datasheet, 1979 dense INT8 TOPS, "
                    f"3.35 TB/s",
        public=("torch._int_mm clamps after every 16 products (recorded on an H200, "
                "tests/data/int_mm_block_probe.npz)",),
        assumptions=("the int32 result is scaled by float32(sx * sw) and rounded to bfloat16, as "
                     "torchao-style dynamic INT8 inference does",)),
    AcceleratorProfile(
        name="edge-int4",
        description="Edge-NPU-style W4A8: symmetric INT4 weights with one float16 scale per group of "
                    "32 inputs, per-tensor INT8 activations, a 32-bit accumulator per group, group "
                    "results scaled and summed in float32, float16 output.",
        weight_format="int4", weight_granularity="group", weight_group_size=32,
        activation_format="int8", accumulator=Accumulator(32, "wrap"), output="float16",
        mul_pj=0.05, add_pj=0.1, epilogue_pj=4.6, scale_bytes=2,
        peak_ops_per_s=67e12, memory_bandwidth_bytes_per_s=102e9,
        cost_source=f"energy: {_HORO}: the 4-bit multiply is assumed to scale with the square of the "
                    f"width from the 8-bit one (0.2 / 4 = 0.05), per-group rescale = float32 multiply "
                    f"+ add (4.6); {_DRAM}; roofline: Jetson Orin Nano Super datasheet (67 sparse INT8 "
                    f"TOPS, i.e. 33.5 dense; 102 GB/s LPDDR5), INT4 assumed at twice the dense INT8 "
                    f"rate as on Ampere tensor cores",
        public=("group-wise INT4 weight formats: ONNX blocked quantization, Core ML per-block "
                "quantization (4-bit weights)",),
        assumptions=("no specific chip: group size 32, symmetric weights, float16 scales",
                     "each group's int32 sum is scaled in float32 and summed in group order",
                     "the accumulator is 32 bits and wraps")),
    AcceleratorProfile(
        name="int2-research",
        description="Research W2A8: ternary INT2 weights (narrow range, {-1, 0, 1} times a scale) with "
                    "one float16 scale per group of 16 inputs, per-tensor INT8 activations, 32-bit "
                    "group accumulators, float32 output.",
        weight_format="int2", weight_granularity="group", weight_group_size=16,
        weight_narrow_range=True, activation_format="int8", accumulator=Accumulator(32, "wrap"),
        output="float32", mul_pj=0.0125, add_pj=0.1, epilogue_pj=4.6, scale_bytes=2,
        peak_ops_per_s=134e12, memory_bandwidth_bytes_per_s=102e9,
        cost_source=f"energy: {_HORO}: the 2-bit multiply assumed at (2/8)^2 of the 8-bit one; "
                    f"{_DRAM}; roofline: no INT2 hardware is public: the edge-int4 platform at four "
                    f"times its dense INT8 rate (assumed)",
        public=("none: INT2 weights are a research format (ternary networks, BitNet b1.58)",),
        assumptions=("all of it: group size 16, ternary codes, float16 scales, float32 group sums",)),
    AcceleratorProfile(
        name="fp32",
        description="The float reference: float32 weights and activations, NumPy's float32 matmul.",
        weight_format="float32", weight_granularity="tensor", activation_format="float32",
        accumulator=None, output="float32", mul_pj=3.7, add_pj=0.9, epilogue_pj=0.0,
        peak_ops_per_s=67e12, memory_bandwidth_bytes_per_s=3.35e12,
        cost_source=f"energy: {_HORO} (float32 multiply 3.7, add 0.9); {_DRAM}; roofline: H100 SXM "
                    f"datasheet, 67 float32 TFLOPS (no tensor cores), 3.35 TB/s",
        public=("IEEE float32",),
        assumptions=("the sum order is NumPy's (BLAS); not a model of any accelerator",)),
]

_REGISTRY: dict[str, AcceleratorProfile] = {p.name: p for p in _BUILTIN}
BUILTIN_NAMES = tuple(p.name for p in _BUILTIN)


def names() -> list[str]:
    """Names of the registered profiles, built-ins first.

    Examples
    --------
    >>> from fixedpoint import profiles
    >>> profiles.names()[:3]
    ['ane-int8', 'h100-fp8', 'h100-fp8-fast']
    """
    return list(_REGISTRY)


def get(name) -> AcceleratorProfile:
    """The registered profile called ``name`` (or a profile file's path).

    Examples
    --------
    >>> from fixedpoint import profiles
    >>> profiles.get("edge-int4").weight_group_size
    32
    """
    if isinstance(name, AcceleratorProfile):
        return name
    if not isinstance(name, (str, Path)):
        raise TypeError(f"name: expected a profile name or file path, got {type(name).__name__}")
    if str(name) in _REGISTRY:
        return _REGISTRY[str(name)]
    if str(name).endswith((".toml", ".json")):
        return load(name)
    raise ValueError(f"name: unknown profile {str(name)!r}; known: {names()} (or a .toml/.json file)")


def register(profile: AcceleratorProfile, *, replace: bool = False) -> AcceleratorProfile:
    """Add ``profile`` to the registry under its name."""
    if not isinstance(profile, AcceleratorProfile):
        raise TypeError(f"profile: expected an AcceleratorProfile, got {type(profile).__name__}")
    if profile.name in BUILTIN_NAMES and _REGISTRY[profile.name] != profile:
        raise ValueError(f"profile: {profile.name!r} is a built-in profile; choose another name")
    if profile.name in _REGISTRY and _REGISTRY[profile.name] != profile and not replace:
        raise ValueError(f"profile: a different profile called {profile.name!r} is registered "
                         f"(replace=True replaces it)")
    _REGISTRY[profile.name] = profile
    return profile


def loads(text: str, fmt: str = "toml", source: str = "profile") -> AcceleratorProfile:
    """Parse a profile from TOML or JSON text (not registered)."""
    if fmt == "toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{source}: not valid TOML: {e}") from None
    elif fmt == "json":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON: {e}") from None
    else:
        raise ValueError(f"fmt: expected 'toml' or 'json', got {fmt!r}")
    return AcceleratorProfile.from_dict(d, source)


def load(path, *, register_it: bool = True) -> AcceleratorProfile:
    """Read a ``.toml`` or ``.json`` profile file and register it (unless told not to)."""
    p = Path(path)
    if p.suffix not in (".toml", ".json"):
        raise ValueError(f"path: expected a .toml or .json file, got {str(path)!r}")
    prof = loads(p.read_text(encoding="utf-8"), p.suffix[1:], source=str(p))
    return register(prof, replace=True) if register_it else prof
