"""Accelerator profiles: every rule that decides a layer's bits, as data.

An :class:`AcceleratorProfile` is nested frozen data that mirrors its file:

``weights``, ``activations`` (:class:`QuantSpec`)
    format, scale granularity, group size, symmetry, narrow range,
    calibration, rounding, overflow, the format the scales are stored in,
    and (activations) whether scales are static or computed per call;
``accumulator``
    an :class:`~fixedpoint.Accumulator` (integer formats) or a
    :class:`~fixedpoint.TensorCoreAccumulator` (float formats);
``output`` (:class:`OutputSpec`)
    what a layer hands on: INT8 codes through a requantization ``method``,
    or float32/float16/bfloat16;
``vector``
    the arithmetic of the vector units between layers (float32, float16 as
    on the Neural Engine, bfloat16): the graph runner rounds every other
    operator's outputs to it;
``cost`` (:class:`CostModel`) and ``notes`` (what is public, what is assumed).

Profiles never run anything: :mod:`fixedpoint.layers` executes them.  Files
(TOML or JSON) are read and written by walking the dataclasses, so a file has
exactly the fields above; custom formats are tables (``format = {kind =
"float", exp_bits = 4, man_bits = 3, ...}``).  Files in the flat layout of
fixedpoint 0.1 still load, with a ``DeprecationWarning`` naming what moved.

Built-in profiles (:func:`names`); :func:`get` returns one (or reads a file
without registering it), :func:`register` adds one under its name.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._checks import parse_toml
from .accumulate import Accumulator
from .blockscaled import MX_ELEMENTS, NVFP4_ARITHMETIC, SCALE_RULES, BlockScaledMMA
from .calibrate import CALIBRATION
from .formats import FloatFormat, IntFormat, as_format
from .fp8 import OVERFLOW_MODES, ROUNDING_MODES
from .quantization import ROUNDING
from .requant import REQUANT_METHODS
from .tensorcore import TensorCoreAccumulator

__all__ = ["AcceleratorProfile", "QuantSpec", "OutputSpec", "CostModel", "Notes", "get", "names",
           "register", "load", "loads", "BUILTIN_NAMES", "WEIGHT_GRANULARITY",
           "ACTIVATION_GRANULARITY", "OUTPUTS", "SCALE_FORMATS", "VECTOR_TYPES", "ACTIVATION_MATMUL"]

#: Scale granularity of a K x N weight matrix: one line each.
WEIGHT_GRANULARITY = {
    "tensor": "one scale for the whole weight matrix",
    "channel": "one scale per output channel (column of the K x N weight matrix)",
    "group": "one scale per group of `group_size` consecutive inputs of each output channel",
}
#: Scale granularity of activations (..., K): one line each.
ACTIVATION_GRANULARITY = {
    "tensor": "one scale for the whole tensor (static from calibration, or per call)",
    "token": "one scale per row (token): computed per call, as LLM.int8() and ZeroQuant do",
    "group": "one scale per block of `group_size` inputs of each row, computed per call (the "
             "block-scaled formats: MX, NVFP4)",
}
#: What a layer hands to the next operator: one line each.
OUTPUTS = {
    "int8": "requantized to INT8 codes with the output scale (integer pipelines)",
    "float32": "float32",
    "float16": "IEEE half, rounded to nearest even from float32",
    "bfloat16": "bfloat16, rounded to nearest even from float32",
}
#: Formats the scales are stored (and computed with) in: one line each.
SCALE_FORMATS = {
    "float32": "IEEE single",
    "float16": "IEEE half: the calibrated float32 scale rounded to nearest even",
    "bfloat16": "bfloat16: the calibrated float32 scale rounded to nearest even",
    "e8m0": "OCP MX: a power of two (E8M0) per block of `group_size` elements, chosen by "
            "`scale_rule` (fixedpoint.blockscaled.SCALE_RULES)",
    "e4m3": "NVFP4: an E4M3 scale per block of 16 E2M1 elements and a float32 tensor scale, in "
            "the float32 operation order `scale_rule` (fixedpoint.blockscaled.NVFP4_ARITHMETIC)",
}
BLOCK_SCALE_FORMATS = ("e8m0", "e4m3")
#: Arithmetic of the vector units between layers: one line each.
VECTOR_TYPES = {
    "float32": "float32, as the reference",
    "float16": "every other operator's output rounded to IEEE half (as the Neural Engine)",
    "bfloat16": "every other operator's output rounded to bfloat16",
}

#: How a product of two activations (attention scores and context) runs: one line each.
ACTIVATION_MATMUL = {
    "quantized": "both operands quantized with the activation spec, through the accumulator",
    "float32": "not quantized: float32, rounded to the output type (ONNX Runtime's quantize_dynamic "
               "leaves such MatMul nodes in float)",
}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _choice(v, key, choices):
    if not isinstance(v, str):
        raise TypeError(f"{key}: expected one of {list(choices)}, got {v!r}")
    if v not in choices:
        raise ValueError(f"{key}: expected one of {list(choices)}, got {v!r}")


def _bool(v, key):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{key}: expected true or false, got {v!r}")


@dataclass(frozen=True)
class QuantSpec:
    """How one operand (weights or activations) is quantized.

    Parameters
    ----------
    format : str, IntFormat or FloatFormat
        The element format (``"int8"``, ``"int4"``, ``"e4m3"``, a custom format).
    granularity : str
        ``WEIGHT_GRANULARITY`` for weights, ``ACTIVATION_GRANULARITY`` for activations.
    group_size : int or None
        Inputs per group (``"group"`` only).  A reduction length that is not
        a multiple is padded with zeros (the last group is shorter, as ONNX
        blocked quantization allows).
    symmetric : bool
        Zero point 0 (signed formats), or an integer zero point.
    narrow_range : bool
        ``[-2^(b-1) + 1, 2^(b-1) - 1]`` (signed, symmetric integer formats).
    calibration : str
        How the range is found (:data:`fixedpoint.calibrate.CALIBRATION`).
    rounding : str
        Rounding of ``x / scale`` (:data:`fixedpoint.quantization.ROUNDING`;
        float formats: nearest_even, toward_zero, stochastic).
    overflow : {"saturate", "nonfinite"}
        Float formats: saturating conversion (Hopper) or Inf/NaN; integer
        formats always saturate.
    scale_format : str
        ``SCALE_FORMATS``: what the scales are stored in.  ``"e8m0"`` and
        ``"e4m3"`` are the block-scaled formats (MX, NVFP4): per group along
        the reduction axis, for weights and activations alike.
    scale_rule : str or None
        How a block's scale is chosen: one of
        :data:`fixedpoint.blockscaled.SCALE_RULES` for ``"e8m0"`` (default
        ``"floor"``, OCP), of :data:`fixedpoint.blockscaled.NVFP4_ARITHMETIC` for
        ``"e4m3"`` (default ``"encode_multiply"``, Transformer Engine); None otherwise.
    static : bool
        Activations: scales fixed by calibration (True) or computed from each
        call's data (False; required for per-token scales).  Weights are
        always quantized once.
    """

    format: typing.Any
    granularity: str = "tensor"
    group_size: int | None = None
    symmetric: bool = True
    narrow_range: bool = False
    calibration: str = "minmax"
    rounding: str = "nearest_even"
    overflow: str = "saturate"
    scale_format: str = "float32"
    scale_rule: str | None = None
    static: bool = True

    def __post_init__(self):
        object.__setattr__(self, "format", as_format(self.format, "format"))
        for key in ("symmetric", "narrow_range", "static"):
            _bool(getattr(self, key), key)
        _choice(self.granularity, "granularity",
                {**WEIGHT_GRANULARITY, **ACTIVATION_GRANULARITY})
        gs = self.group_size
        if self.granularity == "group":
            if not _is_int(gs) or gs < 1:
                raise ValueError(f"group_size: group granularity needs a positive int, got {gs!r}")
            object.__setattr__(self, "group_size", int(gs))
        elif gs is not None:
            raise ValueError("group_size: only for granularity 'group'")
        _choice(self.calibration, "calibration", CALIBRATION)
        _choice(self.rounding, "rounding", ROUNDING)
        _choice(self.scale_format, "scale_format", SCALE_FORMATS)
        f = self.format
        if self.scale_format in BLOCK_SCALE_FORMATS:
            self._check_block_scaled(f)
        elif self.scale_rule is not None:
            raise ValueError(f"scale_rule: only for the block-scaled scale formats "
                             f"{list(BLOCK_SCALE_FORMATS)}, not {self.scale_format!r}")
        if isinstance(f, FloatFormat):
            _choice(self.overflow, "overflow", OVERFLOW_MODES)
            if self.overflow == "nonfinite" and f.nan is None and not f.inf:
                raise ValueError(f"overflow: {f.name} has neither Inf nor NaN; use 'saturate'")
            if self.rounding not in ROUNDING_MODES:
                raise ValueError(f"rounding: float formats take {list(ROUNDING_MODES)}, "
                                 f"got {self.rounding!r}")
            if self.narrow_range:
                raise ValueError("narrow_range: applies to integer formats")
        else:
            _choice(self.overflow, "overflow", ("saturate",))
            if f.narrow:
                raise ValueError(f"format: give the base format and narrow_range = true, not "
                                 f"{f.name}")
            if self.symmetric and not f.signed:
                raise ValueError(f"symmetric: {f.name} is unsigned; use symmetric = false")
            if self.narrow_range and not (f.signed and self.symmetric):
                raise ValueError("narrow_range: needs a signed format and symmetric scales")

    def _check_block_scaled(self, f):
        if self.granularity != "group":
            raise ValueError(f"granularity: {self.scale_format} scales are per block: use 'group'")
        if self.scale_format == "e8m0":
            if f not in MX_ELEMENTS:
                raise ValueError(f"format: MX elements are {[e.name for e in MX_ELEMENTS]}, not {f.name}")
            rule = "floor" if self.scale_rule is None else self.scale_rule
            _choice(rule, "scale_rule", SCALE_RULES)
        else:
            if f != as_format("e2m1") or self.group_size != 16:
                raise ValueError("format: NVFP4 (e4m3 block scales) is E2M1 elements in groups of 16")
            rule = "encode_multiply" if self.scale_rule is None else self.scale_rule
            _choice(rule, "scale_rule", NVFP4_ARITHMETIC)
        object.__setattr__(self, "scale_rule", rule)
        if not self.symmetric or self.narrow_range:
            raise ValueError("symmetric: block-scaled formats are symmetric, without narrow range")
        if self.overflow != "saturate":
            raise ValueError("overflow: block-scaled elements saturate")

    @property
    def block_scaled(self) -> bool:
        """MX or NVFP4 scales (per block, chosen per call for activations)."""
        return self.scale_format in BLOCK_SCALE_FORMATS

    @property
    def element_format(self):
        """The format of the codes (narrow range applied)."""
        f = self.format
        if isinstance(f, IntFormat) and self.narrow_range:
            return IntFormat(f.bits, True, True)
        return f

    @property
    def bits(self) -> int:
        f = self.format
        return f.nbits if isinstance(f, FloatFormat) else f.bits

    @property
    def scale_bytes(self) -> int:
        return {"float32": 4, "float16": 2, "bfloat16": 2, "e8m0": 1, "e4m3": 1}[self.scale_format]


@dataclass(frozen=True)
class OutputSpec:
    """What a layer hands to the next operator.

    Parameters
    ----------
    type : str
        ``OUTPUTS``: ``"int8"`` requantizes; the others round float32 results.
    method : str or None
        Requantization arithmetic for ``type = "int8"``
        (:data:`fixedpoint.requant.REQUANT_METHODS`); None otherwise.
    overflow : {"saturate", "nonfinite"}
        float16/bfloat16 results beyond the format's largest finite value:
        clamp, or Inf as the IEEE conversion gives (INT8 always saturates).
    multiplier : {"float32", "float64"}
        How the real multiplier ``x_scale * w_scale / out_scale`` is formed:
        the product rounded to float32 first (XNNPACK, TFLite's optimized
        per-tensor kernels), or product and quotient in float64 (TFLite's
        per-channel and convolution kernels, its reference kernels).
    linear_method : str or None
        The method of fully connected layers, when it differs from
        ``method`` (LiteRT's reference kernels: ``"float64"``).
    depthwise_vector, depthwise_tail_method :
        Depthwise convolutions whose channels are requantized ``depthwise_vector``
        at a time with ``method`` and the remaining ``channels %
        depthwise_vector`` one at a time with ``depthwise_tail_method``
        (LiteRT's optimized depthwise kernel: 8, ``"double"``); 0 and None: all
        channels alike.
    """

    type: str = "float32"
    method: str | None = None
    overflow: str = "saturate"
    multiplier: str = "float32"
    linear_method: str | None = None
    depthwise_vector: int = 0
    depthwise_tail_method: str | None = None

    def __post_init__(self):
        _choice(self.type, "type", OUTPUTS)
        _choice(self.overflow, "overflow", OVERFLOW_MODES)
        _choice(self.multiplier, "multiplier", ("float32", "float64"))
        if not _is_int(self.depthwise_vector) or self.depthwise_vector < 0:
            raise ValueError(f"depthwise_vector: expected a non-negative int, got {self.depthwise_vector!r}")
        if self.type == "int8":
            if self.method is None:
                raise ValueError("method: 'int8' output needs a requantization method, one of "
                                 f"{list(REQUANT_METHODS)}")
            _choice(self.method, "method", REQUANT_METHODS)
            for key in ("linear_method", "depthwise_tail_method"):
                if getattr(self, key) is not None:
                    _choice(getattr(self, key), key, REQUANT_METHODS)
            if (self.depthwise_vector > 0) != (self.depthwise_tail_method is not None):
                raise ValueError("depthwise_tail_method: give it together with depthwise_vector > 0")
        else:
            for key in ("method", "linear_method", "depthwise_tail_method"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: only with type = 'int8', not {self.type!r}")
            if self.depthwise_vector:
                raise ValueError(f"depthwise_vector: only with type = 'int8', not {self.type!r}")

    def method_for(self, op: str) -> str | None:
        """The requantization method of a layer kind (``"linear"``, ``"conv"``, ``"matmul"``)."""
        if op == "linear" and self.linear_method is not None:
            return self.linear_method
        return self.method


@dataclass(frozen=True)
class CostModel:
    """Cost figures of the target, for the design study's estimates.

    Energies in pJ: one multiply and one accumulator add; the epilogue per
    output value (requantize or float rescale, per group for per-group
    scales); 64 bits of weights from DRAM and of activations through the
    cache.  Peak operations per second (2 per multiply-add) and memory
    bandwidth give a roofline time.  ``source`` says where they come from.
    """

    mul_pj: float = 0.2
    add_pj: float = 0.1
    epilogue_pj: float = 3.7
    dram_pj_per_64bit: float = 1300.0
    sram_pj_per_64bit: float = 10.0
    peak_ops_per_s: float = 1e12
    memory_bandwidth_bytes_per_s: float = 1e11
    source: str = ""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.name == "source":
                if not isinstance(self.source, str):
                    raise TypeError(f"source: expected a string, got {self.source!r}")
                continue
            v = getattr(self, f.name)
            if not _is_number(v):
                raise TypeError(f"{f.name}: expected a number, got {v!r}")
            positive = f.name.startswith(("peak", "memory"))
            if not math.isfinite(v) or v < 0 or (positive and v == 0):
                raise ValueError(f"{f.name}: expected a finite {'positive' if positive else 'non-negative'}"
                                 f" number, got {v!r}")
            object.__setattr__(self, f.name, float(v))


@dataclass(frozen=True)
class Notes:
    """What is public about the target, and what the profile assumes."""

    public: tuple = ()
    assumptions: tuple = ()

    def __post_init__(self):
        for key in ("public", "assumptions"):
            v = getattr(self, key)
            if isinstance(v, str) or not isinstance(v, (list, tuple)) or \
                    not all(isinstance(s, str) for s in v):
                raise TypeError(f"{key}: expected a list of strings, got {v!r}")
            object.__setattr__(self, key, tuple(v))


@dataclass(frozen=True)
class AcceleratorProfile:
    """Everything that decides the bits of a layer on one target, and what it costs.

    Parameters
    ----------
    name, description : str
    weights, activations : QuantSpec or None
        None for both: the float32 reference (no quantization).
    accumulator : Accumulator, TensorCoreAccumulator or None
    output : OutputSpec
    vector : str
        ``VECTOR_TYPES``: the arithmetic between layers.
    activation_matmul : str
        ``ACTIVATION_MATMUL``: whether a product of two activations is
        quantized (``"quantized"``, the default) or runs in float32.
    cost : CostModel
    notes : Notes

    Examples
    --------
    >>> from fixedpoint import profiles
    >>> p = profiles.get("ane-int8")
    >>> p.weights.format.name, p.weights.granularity, p.output.method
    ('int8', 'channel', 'double')
    >>> import dataclasses
    >>> wide = dataclasses.replace(p, name="ane-int8-acc20",
    ...                            accumulator=dataclasses.replace(p.accumulator, bits=20))
    >>> profiles.loads(wide.to_toml()) == wide
    True
    """

    name: str
    description: str = ""
    weights: QuantSpec | None = None
    activations: QuantSpec | None = None
    accumulator: typing.Any = None
    output: OutputSpec = OutputSpec()
    vector: str = "float32"
    activation_matmul: str = "quantized"
    cost: CostModel = CostModel()
    notes: Notes = Notes()

    def __post_init__(self):
        for key in ("name", "description"):
            if not isinstance(getattr(self, key), str):
                raise TypeError(f"{key}: expected a string, got {getattr(self, key)!r}")
        if not self.name:
            raise ValueError("name: must not be empty")
        for key, cls in (("weights", QuantSpec), ("activations", QuantSpec), ("output", OutputSpec),
                         ("cost", CostModel), ("notes", Notes)):
            v = getattr(self, key)
            if not (v is None and key in ("weights", "activations")) and not isinstance(v, cls):
                raise TypeError(f"{key}: expected a {cls.__name__}, got {type(v).__name__}")
        _choice(self.vector, "vector", VECTOR_TYPES)
        _choice(self.activation_matmul, "activation_matmul", ACTIVATION_MATMUL)
        w, a, acc = self.weights, self.activations, self.accumulator
        if (w is None) != (a is None):
            raise ValueError("weights: give both weights and activations, or neither (the float32 "
                             "reference)")
        if w is None:
            if acc is not None:
                raise ValueError("accumulator: the float32 reference has no accumulator model")
            if self.output.type == "int8":
                raise ValueError("output.type: the float32 reference outputs floats")
            return
        _choice(w.granularity, "weights.granularity", WEIGHT_GRANULARITY)
        _choice(a.granularity, "activations.granularity", ACTIVATION_GRANULARITY)
        if a.granularity in ("token", "group") and a.static:
            raise ValueError(f"activations.static: per-{a.granularity} scales are computed per "
                             f"call; set static = false")
        if a.granularity == "group" and not a.block_scaled:
            raise ValueError("activations.granularity: per-group activation scales are for the "
                             "block-scaled formats (scale_format 'e8m0' or 'e4m3')")
        if w.block_scaled != a.block_scaled:
            raise ValueError("activations.scale_format: weights and activations are both block-scaled "
                             "or neither")
        if isinstance(acc, BlockScaledMMA) or w.block_scaled:
            self._check_block_mma(w, a, acc)
            return
        is_int = isinstance(w.format, IntFormat)
        if is_int != isinstance(a.format, IntFormat):
            raise ValueError("activations.format: weights and activations must be both integer or "
                             "both float formats")
        if is_int:
            if not isinstance(acc, Accumulator):
                raise ValueError(f"accumulator: integer formats need an Accumulator "
                                 f"(kind = 'integer'), got {type(acc).__name__}")
            if w.bits > 8 or a.bits > 8:
                raise ValueError("weights.format: integer formats of at most 8 bits")
            if acc.pair_bits is not None and (acc.overflow != "wrap" or w.granularity == "group"):
                raise ValueError("accumulator.pair_bits: pairs of products (vpmaddubsw) are modelled "
                                 "with a wrapping register and per-tensor or per-channel weights, "
                                 "whose zero points come off after the sum")
        else:
            if not isinstance(acc, TensorCoreAccumulator):
                raise ValueError(f"accumulator: float formats need a TensorCoreAccumulator "
                                 f"(kind = 'tensor_core'), got {type(acc).__name__}")
            if w.granularity == "group":
                raise ValueError("weights.granularity: float weights take 'tensor' or 'channel'")
        if self.output.type == "int8":
            if not is_int:
                raise ValueError("output.type: 'int8' output needs integer formats")
            if w.granularity == "group":
                raise ValueError("output.type: 'int8' output needs one weight scale per channel "
                                 "(per-group scales are applied in float)")

    def _check_block_mma(self, w, a, acc):
        if not isinstance(acc, BlockScaledMMA):
            raise ValueError("accumulator: block-scaled operands need a block-scaled product "
                             "(kind = 'block_scaled')")
        kind = acc.instruction
        fmts = {w.format.name, a.format.name}
        if kind == "f8f6f4":
            if w.block_scaled or not all(isinstance(s.format, FloatFormat) for s in (w, a)):
                raise ValueError("accumulator.instruction: 'f8f6f4' multiplies float codes with "
                                 "per-tensor or per-channel scales")
        elif not (w.block_scaled and a.block_scaled and w.group_size == a.group_size
                  and w.scale_format == a.scale_format):
            raise ValueError(f"accumulator.instruction: {kind!r} needs weights and activations with "
                             f"the same block scales")
        elif kind in ("mxf8f6f4", "mxf4") and (w.scale_format != "e8m0" or w.group_size != 32):
            raise ValueError(f"accumulator.instruction: {kind!r} takes E8M0 scales on blocks of 32")
        elif kind in ("mxf4", "mxf4nvf4") and fmts != {"e2m1"}:
            raise ValueError(f"accumulator.instruction: {kind!r} takes E2M1 elements")
        elif kind == "mxf8f6f4" and not all(isinstance(s.format, FloatFormat) for s in (w, a)):
            raise ValueError("accumulator.instruction: 'mxf8f6f4' takes float elements")
        if self.output.type == "int8":
            raise ValueError("output.type: block-scaled products give float results")

    # -- what it is ------------------------------------------------------------
    @property
    def is_float(self) -> bool:
        """True for the float32 reference (nothing is quantized)."""
        return self.weights is None

    @property
    def doc(self) -> str:
        """The profile described in words: what it is, what is public, what is assumed."""
        lines = [f"{self.name}: {self.description}"]
        if self.notes.public:
            lines += ["", "Public:"] + [f"  - {s}" for s in self.notes.public]
        if self.notes.assumptions:
            lines += ["", "Assumed (override in a profile file):"] + \
                     [f"  - {s}" for s in self.notes.assumptions]
        if self.cost.source:
            lines += ["", f"Cost figures: {self.cost.source}"]
        return "\n".join(lines)

    # -- costs -----------------------------------------------------------------
    def weight_bytes(self, k: int, n: int, bias: bool = True) -> int:
        """Bytes to store a K x N layer: codes (packed), scales, zero points and bias."""
        w = self.weights
        if w is None:
            return 4 * k * n + (4 * n if bias else 0)
        codes = -(-k * n * w.bits // 8)
        groups = -(-k // w.group_size) if w.granularity == "group" else 1
        nscales = {"tensor": 1, "channel": n, "group": groups * n}[w.granularity]
        zps = 0 if (w.symmetric or isinstance(w.format, FloatFormat)) else nscales * -(-w.bits // 8)
        return codes + nscales * w.scale_bytes + zps + (4 * n if bias else 0)

    def _act_bytes(self, which: str) -> float:
        if which == "in":
            return 4.0 if self.activations is None else self.activations.bits / 8
        return {"int8": 1, "float32": 4, "float16": 2, "bfloat16": 2}[self.output.type]

    def layer_cost(self, m: int, k: int, n: int, *, weights: bool = True, bias: bool = True) -> dict:
        """Estimated cost of one ``(m x k) @ (k x n)`` layer.

        ``weights``: the right operand is a stored weight matrix (read once
        from DRAM); otherwise both operands are activations (through the
        cache).  Returns ``macs``, ``weight_bytes``, ``energy_pj`` (parts and
        total) and ``roofline_s`` (compute, memory, time and which bounds it).

        Examples
        --------
        >>> from fixedpoint import profiles
        >>> c = profiles.get("ane-int8").layer_cost(1, 64, 128)
        >>> c["macs"], c["weight_bytes"]
        (8192, 9216)
        """
        macs = m * k * n
        groups = -(-k // self.weights.group_size) if (self.weights is not None and
                                                       self.weights.granularity == "group") else 1
        wbytes = self.weight_bytes(k, n, bias) if weights else 0
        act_bytes = m * k * self._act_bytes("in") + m * n * self._act_bytes("out")
        if not weights:
            act_bytes += k * n * self._act_bytes("in")
        c = self.cost
        energy = {
            "mac": macs * (c.mul_pj + c.add_pj),
            "epilogue": m * n * groups * c.epilogue_pj,
            "weights_dram": wbytes / 8 * c.dram_pj_per_64bit,
            "activations_sram": act_bytes / 8 * c.sram_pj_per_64bit,
        }
        energy["total"] = sum(energy.values())
        t_c = 2.0 * macs / c.peak_ops_per_s
        t_m = (wbytes + act_bytes) / c.memory_bandwidth_bytes_per_s
        return {"macs": macs, "weight_bytes": wbytes, "energy_pj": energy,
                "roofline_s": {"compute_s": t_c, "memory_s": t_m, "time_s": max(t_c, t_m),
                               "bound": "compute" if t_c >= t_m else "memory"}}

    # -- files -----------------------------------------------------------------
    def to_dict(self) -> dict:
        """Nested dictionary, as in a profile file (None fields left out)."""
        return _to_dict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "profile") -> "AcceleratorProfile":
        """Build a profile from :meth:`to_dict`'s layout; errors name the file and field.
        The flat layout of fixedpoint 0.1 is converted with a DeprecationWarning."""
        if not isinstance(d, dict):
            raise TypeError(f"{source}: expected a table of fields, got {type(d).__name__}")
        d = _upgrade_flat(d, source)
        return _from_dict(cls, d, source, "")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_toml(self) -> str:
        return _toml(self.to_dict())

    def save(self, path) -> None:
        """Write the profile to ``path`` (``.toml`` or ``.json``)."""
        p = Path(path)
        if p.suffix not in (".toml", ".json"):
            raise ValueError(f"path: expected a .toml or .json file name, got {str(path)!r}")
        p.write_text(self.to_toml() if p.suffix == ".toml" else self.to_json(), encoding="utf-8")


# ---------------------------------------------------------------------------
# Walking the dataclasses: to and from the file layout

_ACCUMULATORS = {"integer": Accumulator, "tensor_core": TensorCoreAccumulator,
                 "block_scaled": BlockScaledMMA}


def _format_to_file(f):
    """A format's name when the name reads back as the same format, else a table."""
    try:
        if as_format(f.name) == f:
            return f.name
    except ValueError:
        pass
    if isinstance(f, IntFormat):
        return {"kind": "int", "bits": f.bits, "signed": f.signed}
    return {"kind": "float", "exp_bits": f.exp_bits, "man_bits": f.man_bits, "bias": f.bias,
            "inf": f.inf, "nan": "none" if f.nan is None else f.nan}


def _format_from_file(v, key):
    if isinstance(v, str):
        return as_format(v, key)
    if not isinstance(v, dict):
        raise TypeError(f"{key}: expected a format name or a table, got {v!r}")
    v = dict(v)
    kind = v.pop("kind", None)
    try:
        if kind == "int":
            return IntFormat(**v)
        if kind == "float":
            if v.get("nan") == "none":
                v["nan"] = None
            return FloatFormat(**v)
    except TypeError as e:
        raise ValueError(f"{key}: {e}") from None
    raise ValueError(f"{key}.kind: expected 'int' or 'float', got {kind!r}")


def _to_dict(obj) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if v is None:
            continue
        if isinstance(v, (IntFormat, FloatFormat)):
            v = _format_to_file(v)
        elif isinstance(v, (Accumulator, TensorCoreAccumulator, BlockScaledMMA)):
            kind = {Accumulator: "integer", TensorCoreAccumulator: "tensor_core",
                    BlockScaledMMA: "block_scaled"}[type(v)]
            v = {"kind": kind, **{k: x for k, x in _to_dict(v).items()}}
        elif dataclasses.is_dataclass(v):
            v = _to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    if isinstance(obj, AcceleratorProfile) and obj.accumulator is None:
        out["accumulator"] = {"kind": "none"}
    return out


def _from_dict(cls, d, source, prefix):
    if not isinstance(d, dict):
        raise TypeError(f"{source}: {prefix.rstrip('.') or 'profile'}: expected a table, got {d!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in d:
        if k not in fields:
            raise ValueError(f"{source}: unknown field {prefix}{k}; expected one of {list(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name not in d:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{source}: missing field {key}")
            continue
        v = d[name]
        hint = hints[name]
        try:
            if name == "format":
                v = _format_from_file(v, key)
            elif name == "accumulator":
                v = _accumulator_from(v, source, key)
            elif _is_dataclass_hint(hint):
                v = _from_dict(_dataclass_of(hint), v, source, key + ".")
            elif isinstance(v, list):
                v = tuple(v)
        except (TypeError, ValueError) as e:
            if str(e).startswith(source):
                raise
            raise type(e)(f"{source}: {key}: {e}") from None
        kwargs[name] = v
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        msg = str(e)
        if msg.startswith(source):
            raise
        raise type(e)(f"{source}: {prefix}{msg}") from None


def _is_dataclass_hint(hint) -> bool:
    return _dataclass_of(hint) is not None


def _dataclass_of(hint):
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _accumulator_from(a, source, key):
    if not isinstance(a, dict):
        raise ValueError(f"expected a table, got {a!r}")
    a = dict(a)
    kind = a.pop("kind", None)
    if kind == "none":
        if a:
            raise ValueError(f"kind 'none' takes no other field, got {sorted(a)}")
        return None
    if kind not in _ACCUMULATORS:
        raise ValueError(f"kind: expected 'integer', 'tensor_core', 'block_scaled' or 'none', got {kind!r}")
    cls = _ACCUMULATORS[kind]
    names = [f.name for f in dataclasses.fields(cls)]
    for k in a:
        if k not in names:
            raise ValueError(f"unknown field {k} for kind {kind!r}; expected {names}")
    if kind == "tensor_core":           # an absent optional field means None
        for k in ("block", "frac_bits", "promote_every"):
            a.setdefault(k, None)
    return cls(**a)


def _upgrade_flat(d, source):
    """The 0.1 layout (output.requantize, output.rounding, output.fp8_saturate,
    cost.scale_bytes, float32 formats) in the nested one, with a warning."""
    out = d.get("output", {})
    cost = d.get("cost", {})
    w = d.get("weights", {})
    old = [k for k in ("requantize", "rounding", "fp8_saturate") if isinstance(out, dict) and k in out]
    old += ["cost.scale_bytes"] if isinstance(cost, dict) and "scale_bytes" in cost else []
    flat_float = isinstance(w, dict) and w.get("format") == "float32"
    if not old and not flat_float:
        return d
    new = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    nout, ncost = new.get("output", {}), new.get("cost", {})
    rounding = nout.pop("rounding", None)
    sat = nout.pop("fp8_saturate", None)
    if "requantize" in nout:
        m = nout.pop("requantize")
        if m is not None:
            nout["method"] = m
    sbytes = ncost.pop("scale_bytes", None)
    if flat_float:
        new.pop("weights", None)
        new.pop("activations", None)
    for role in ("weights", "activations"):
        spec = new.get(role)
        if not isinstance(spec, dict):
            continue
        if rounding is not None:
            spec.setdefault("rounding", rounding)
        if sat is not None and str(spec.get("format", "")).startswith("e"):
            spec.setdefault("overflow", "saturate" if sat else "nonfinite")
        if role == "weights" and sbytes is not None:
            spec.setdefault("scale_format", {4: "float32", 2: "float16"}.get(sbytes, "float32"))
    moved = ", ".join(old + (["weights.format = 'float32'"] if flat_float else []))
    warnings.warn(f"{source}: profile file in the fixedpoint 0.1 layout ({moved}); it was converted: "
                  f"output.requantize is output.method, output.rounding and output.fp8_saturate are "
                  f"weights/activations.rounding and .overflow, cost.scale_bytes is "
                  f"weights.scale_format, and the float32 reference has no weights/activations "
                  f"tables. Save it again to write the new layout.", DeprecationWarning, stacklevel=4)
    return new


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, str):
        return json.dumps(v)             # a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml(d: dict) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for sec, table in d.items():
        if isinstance(table, dict):
            lines += ["", f"[{sec}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# The built-in profiles

_HORO = "Horowitz, ISSCC 2014, 45 nm (docs/semantics.md section 7)"
_DRAM = ("weights read once per inference from DRAM at 1300 pJ per 64 bits, the low end of "
         "Horowitz's 1300-2600; activations through an 8 KB cache at 10 pJ per 64 bits")
_H100_COST = dict(mul_pj=0.2, add_pj=0.9, epilogue_pj=3.7, peak_ops_per_s=1979e12,
                  memory_bandwidth_bytes_per_s=3.35e12)


def _cpu_cost(epilogue_pj, epilogue, simd):
    """The cost figures of a generic 2-core x86 CPU (an INT8 engine's host)."""
    return CostModel(mul_pj=0.2, add_pj=0.1, epilogue_pj=epilogue_pj, peak_ops_per_s=1e12,
                     memory_bandwidth_bytes_per_s=50e9,
                     source=f"energy: {_HORO} (8-bit multiply 0.2, 32-bit add 0.1, {epilogue} "
                            f"{epilogue_pj:g}); {_DRAM}; roofline: a generic 2-core {simd} CPU (1 TOPS "
                            f"INT8, 50 GB/s; assumed, for comparison only)")


def _int8_act(**kw):
    return QuantSpec("int8", **kw)


_BUILTIN = [
    AcceleratorProfile(
        name="ane-int8",
        description="Apple-Neural-Engine-style W8A8: per-channel symmetric INT8 weights in [-127, 127], "
                    "per-tensor INT8 activations, 32-bit integer accumulation, requantization to INT8, "
                    "float16 vector units.",
        weights=QuantSpec("int8", "channel", narrow_range=True),
        activations=_int8_act(),
        accumulator=Accumulator(32, "wrap"),
        output=OutputSpec("int8", "double"),
        vector="float16",
        cost=CostModel(mul_pj=0.2, add_pj=0.1, epilogue_pj=3.1, peak_ops_per_s=38e12,
                       memory_bandwidth_bytes_per_s=120e9,
                       source=f"energy: {_HORO} (8-bit multiply 0.2, 32-bit add 0.1, requantize = one "
                              f"32-bit multiply 3.1); {_DRAM}; roofline: Apple M4 Neural Engine 38 TOPS "
                              f"and 120 GB/s unified memory (Apple, May 2024; the precision of the TOPS "
                              f"figure is not stated)"),
        notes=Notes(
            public=("W8A8 runs faster int8 x int8 compute on A17 Pro / M4 (coremltools docs)",
                    "weights: linear_symmetric mode, INT8 in [-127, 127], scale = max|w| / 127 in the "
                    "weight's float32, round half to even; per-channel granularity recommended on the "
                    "Neural Engine (checked bit for bit against coremltools.optimize.coreml."
                    "linear_quantize_weights)",
                    "activations: 8-bit, per tensor; the Neural Engine computes in float16 otherwise"),
            assumptions=("the accumulator is 32 bits and wraps (Apple does not publish width or "
                         "overflow)", "requantization is the TFLite/gemmlowp double-rounding "
                         "fixed-point multiply (not published)",
                         "outputs saturate to [-128, 127] (not published)",
                         "activations are symmetric (zero point 0) with static scales"))),
    AcceleratorProfile(
        name="h100-fp8",
        description="NVIDIA H100-style FP8: E4M3 weights and activations with per-tensor scales, "
                    "saturating conversion, the Hopper tensor-core accumulation with promotion to "
                    "float32 every 128 products (cuBLAS default), bfloat16 output.",
        weights=QuantSpec("e4m3"), activations=QuantSpec("e4m3"),
        accumulator=TensorCoreAccumulator.hopper_fp8(),
        output=OutputSpec("bfloat16"),
        cost=CostModel(**_H100_COST,
                       source=f"energy: {_HORO}: FP8 multiply assumed equal to the 8-bit integer "
                              f"multiply (0.2; not in the table), float32 add 0.9, float32 rescale 3.7; "
                              f"{_DRAM}; roofline: H100 SXM datasheet, 1979 dense FP8 TFLOPS, 3.35 TB/s "
                              f"HBM3"),
        notes=Notes(
            public=("E4M3 per OCP OFP8; cvt.rn.satfinite saturates to +-448",
                    "accumulation verified bit for bit against recorded H100/H200 torch._scaled_mm "
                    "results (docs/semantics.md section 4)"),
            assumptions=("per-tensor scales from min/max (amax / 448), as Transformer Engine's "
                         "default recipe", "bias added in float32 before the bfloat16 rounding "
                         "(cuBLASLt epilogue)"))),
    AcceleratorProfile(
        name="h100-fp8-fast",
        description="h100-fp8 with use_fast_accum=True: no promotion to float32, the 13-fraction-bit "
                    "tensor-core sum runs over the whole K.",
        weights=QuantSpec("e4m3"), activations=QuantSpec("e4m3"),
        accumulator=TensorCoreAccumulator.hopper_fp8(fast_accum=True),
        output=OutputSpec("bfloat16"),
        cost=CostModel(**_H100_COST, source="as h100-fp8"),
        notes=Notes(public=("verified bit for bit against recorded torch._scaled_mm(use_fast_accum="
                            "True) results",), assumptions=("as h100-fp8",))),
    AcceleratorProfile(
        name="h100-fp8-e5m2",
        description="H100-style FP8 with E5M2 activations (the gradient format of FP8 training: more "
                    "range, one fraction bit less) and E4M3 weights; Hopper has no E5M2 x E5M2 GEMM.",
        weights=QuantSpec("e4m3"), activations=QuantSpec("e5m2"),
        accumulator=TensorCoreAccumulator.hopper_fp8(),
        output=OutputSpec("bfloat16"),
        cost=CostModel(**_H100_COST, source="as h100-fp8"),
        notes=Notes(public=("E5M2 per OCP OFP8 (max 57344, has Inf)",
                            "cuBLASLt FP8 GEMMs take E4M3 x E4M3, E4M3 x E5M2 and E5M2 x E4M3"),
                    assumptions=("the E5M2 operand goes through the same datapath as E4M3 (verified "
                                 "for E4M3 and mixed E4M3/E5M2 recordings)",))),
    AcceleratorProfile(
        name="h100-int8",
        description="H100-style INT8: per-channel symmetric INT8 weights, per-tensor INT8 activations, "
                    "the Hopper cuBLASLt INT8 GEMM (32-bit register that saturates after every block "
                    "of 16 products), int32 result scaled in float32, bfloat16 output.",
        weights=QuantSpec("int8", "channel", narrow_range=True),
        activations=_int8_act(),
        accumulator=Accumulator(32, "saturate", block=16),
        output=OutputSpec("bfloat16"),
        cost=CostModel(mul_pj=0.2, add_pj=0.1, epilogue_pj=3.7, peak_ops_per_s=1979e12,
                       memory_bandwidth_bytes_per_s=3.35e12,
                       source=f"energy: {_HORO}; {_DRAM}; roofline: H100 SXM datasheet, 1979 dense "
                              f"INT8 TOPS, 3.35 TB/s"),
        notes=Notes(public=("torch._int_mm clamps after every 16 products (recorded on an H200, "
                            "tests/data/int_mm_block_probe.npz)",),
                    assumptions=("the int32 result is scaled by float32(sx * sw) and rounded to "
                                 "bfloat16, as torchao-style dynamic INT8 inference does",))),
    AcceleratorProfile(
        name="edge-int4",
        description="Edge-NPU-style W4A8: symmetric INT4 weights with one float16 scale per group of "
                    "32 inputs, per-tensor INT8 activations, a 32-bit accumulator per group, group "
                    "results scaled and summed in float32, float16 output.",
        weights=QuantSpec("int4", "group", 32, scale_format="float16"),
        activations=_int8_act(),
        accumulator=Accumulator(32, "wrap"),
        output=OutputSpec("float16", overflow="nonfinite"),
        cost=CostModel(mul_pj=0.05, add_pj=0.1, epilogue_pj=4.6, peak_ops_per_s=67e12,
                       memory_bandwidth_bytes_per_s=102e9,
                       source=f"energy: {_HORO}: the 4-bit multiply is assumed to scale with the square "
                              f"of the width from the 8-bit one (0.2 / 4 = 0.05), per-group rescale = "
                              f"float32 multiply + add (4.6); {_DRAM}; roofline: Jetson Orin Nano Super "
                              f"datasheet (67 sparse INT8 TOPS, i.e. 33.5 dense; 102 GB/s LPDDR5), INT4 "
                              f"assumed at twice the dense INT8 rate as on Ampere tensor cores"),
        notes=Notes(public=("group-wise INT4 weight formats: ONNX blocked quantization, Core ML "
                            "per-block quantization (4-bit weights)",),
                    assumptions=("no specific chip: group size 32, symmetric weights, float16 scales "
                                 "(the calibrated float32 scale rounded to nearest even)",
                                 "each group's int32 sum is scaled in float32 and summed in group order",
                                 "the accumulator is 32 bits and wraps",
                                 "float16 output overflows to Inf, as the IEEE conversion"))),
    AcceleratorProfile(
        name="int2-research",
        description="Research W2A8: ternary INT2 weights (narrow range, {-1, 0, 1} times a scale) with "
                    "one float16 scale per group of 16 inputs, per-tensor INT8 activations, 32-bit "
                    "group accumulators, float32 output.",
        weights=QuantSpec("int2", "group", 16, narrow_range=True, scale_format="float16"),
        activations=_int8_act(),
        accumulator=Accumulator(32, "wrap"),
        output=OutputSpec("float32"),
        cost=CostModel(mul_pj=0.0125, add_pj=0.1, epilogue_pj=4.6, peak_ops_per_s=134e12,
                       memory_bandwidth_bytes_per_s=102e9,
                       source=f"energy: {_HORO}: the 2-bit multiply assumed at (2/8)^2 of the 8-bit "
                              f"one; {_DRAM}; roofline: no INT2 hardware is public: the edge-int4 "
                              f"platform at four times its dense INT8 rate (assumed)"),
        notes=Notes(public=("none: INT2 weights are a research format (ternary networks, BitNet "
                            "b1.58)",),
                    assumptions=("all of it: group size 16, ternary codes, float16 scales, float32 "
                                 "group sums",))),
    *[AcceleratorProfile(
        name=f"litert-{path}-int8",
        description=f"LiteRT (TensorFlow Lite) INT8 on x86, {what}: per-channel symmetric INT8 "
                    f"weights in [-127, 127], asymmetric per-tensor INT8 activations, int32 "
                    f"accumulation with the bias as the register's initial value, INT8 output.",
        weights=QuantSpec("int8", "channel", narrow_range=True),
        activations=QuantSpec("int8", symmetric=False),
        accumulator=Accumulator(32, "wrap"),
        output=out,
        cost=_cpu_cost(3.1, "requantize", "AVX-512"),
        notes=Notes(
            public=(f"{src}; checked bit for bit against ai-edge-litert 2.3.0 on FULLY_CONNECTED, "
                    f"CONV_2D and DEPTHWISE_CONV_2D (tests/test_litert.py, tests/test_layers_litert.py)",
                    "TFLite quantization spec: int8 per-channel symmetric weights with zero point 0, "
                    "int8 asymmetric activations, int32 bias at input_scale * weight_scale"),
            assumptions=("activation scales and zero points from the calibration data's min/max "
                         "(the converter's calibration is not modelled)",
                         "the bias is quantized as round_half_even(bias / float32(sx * sw))")))
      for path, what, out, src in (
          ("xnnpack", "the default XNNPACK delegate (float32 rescale)",
           OutputSpec("int8", "float", multiplier="float32"),
           "XNNPACK requantizes with input_scale * kernel_scale / output_scale in float32 and "
           "rounds to nearest even"),
          ("reference", "the reference kernels (BUILTIN_REF)",
           OutputSpec("int8", "double", multiplier="float64", linear_method="float64"),
           "the reference FULLY_CONNECTED rounds (double)acc * real half away from zero; CONV_2D and "
           "DEPTHWISE_CONV_2D use gemmlowp's MultiplyByQuantizedMultiplier"),
          ("optimized", "the optimized kernels without delegates (ruy)",
           OutputSpec("int8", "ruy", multiplier="float64", depthwise_vector=8,
                      depthwise_tail_method="double"),
           "ruy's requantization: the doubling high multiply, then a rounding right shift with ties "
           "toward +inf; the optimized depthwise kernel does channels 8 at a time that way and the "
           "last channels % 8 with MultiplyByQuantizedMultiplier"))],
    AcceleratorProfile(
        name="x86-avx2-u8s8",
        description="ONNX Runtime's dynamic INT8 on an x86 CPU with AVX2 and no VNNI (quantize_dynamic "
                    "defaults): per-tensor symmetric INT8 weights in [-127, 127], per-tensor asymmetric "
                    "UINT8 activations quantized per call, MLAS's u8 x s8 kernel (vpmaddubsw: byte "
                    "pairs summed with int16 saturation, then int32 wrapping adds), int32 result "
                    "scaled in float32, float32 output.",
        weights=QuantSpec("int8", narrow_range=True),
        activations=QuantSpec("uint8", symmetric=False, static=False),
        accumulator=Accumulator(32, "wrap", 2, pair_bits=16),
        output=OutputSpec("float32"),
        activation_matmul="float32",
        cost=_cpu_cost(3.7, "float32 rescale", "AVX2"),
        notes=Notes(
            public=("onnxruntime.quantization.quantize_dynamic: QInt8 weights, symmetric, per tensor "
                    "(per_channel=False, reduce_range=False); DynamicQuantizeLinear: uint8, scale = "
                    "(max(x, 0) - min(x, 0)) / 255, zero point round(-min / scale)",
                    "MLAS MlasGemmU8S8KernelAvx2 saturates each vpmaddubsw pair to int16 on raw codes "
                    "and subtracts the zero points afterwards from row and column sums (onnxruntime "
                    "issue 6004: the reason for reduce_range on AVX2); proved bit for bit against "
                    "ONNX Runtime on an emulated Haswell CPU (tests/test_gemm_paths.py, "
                    "tests/test_layers_onnxruntime.py)",
                    "the result is float32(acc) * float32(a_scale * b_scale) (MatMulIntegerToFloat)",
                    "quantize_dynamic quantizes MatMul nodes with a constant weight; a MatMul of two "
                    "activations (attention) stays float32"),
            assumptions=("bias added in float32 after the rescale (ONNX Runtime's Add after the "
                         "quantized MatMul)", "a CPU without VNNI: with AVX-VNNI or AVX512-VNNI MLAS "
                         "uses vpdpbusd, which does not saturate (the same profile with "
                         "accumulator = Accumulator(32, 'wrap'))"))),
    *[AcceleratorProfile(
        name=name, description=desc, weights=spec, activations=dataclasses.replace(spec, static=static,
                                                                                   granularity=agran),
        accumulator=BlockScaledMMA(kind), output=OutputSpec("bfloat16"),
        cost=CostModel(mul_pj=mul, add_pj=0.9, epilogue_pj=3.7, peak_ops_per_s=peak,
                       memory_bandwidth_bytes_per_s=8e12,
                       source=f"energy: {_HORO}: FP8 multiply assumed equal to the 8-bit integer multiply "
                              f"(0.2), FP4 at a quarter of it (assumed), float32 add 0.9; {_DRAM}; "
                              f"roofline: NVIDIA HGX B200 (1000 W) dense {peak / 1e15:g} PFLOPS at this "
                              f"precision, 8 TB/s HBM3e (NVIDIA Blackwell technical brief)"),
        notes=Notes(public=public, assumptions=(
            "the tcgen05.mma arithmetic is Microsoft's MMA-Sim model (arXiv 2511.10909), checked against "
            "its published description, not against Blackwell hardware (docs/blockscaled.md)",
            "bias added in float32 before the bfloat16 rounding (cuBLASLt epilogue)") + extra))
      for name, desc, spec, static, agran, kind, mul, peak, public, extra in (
          ("b200-fp8", "NVIDIA B200-style FP8: E4M3 weights and activations with per-tensor scales, "
                       "Blackwell's f8f6f4 product (25 fraction bits per K step of 32, no promotion), "
                       "bfloat16 output.",
           QuantSpec("e4m3"), True, "tensor", "f8f6f4", 0.2, 4.5e15,
           ("E4M3 per OCP OFP8",), ("per-tensor scales from min/max (amax / 448)",)),
          ("b200-mxfp8", "NVIDIA B200-style MXFP8: E4M3 elements with an E8M0 scale per block of 32 "
                         "along K (Transformer Engine's rceil rule), the mxf8f6f4 product, bfloat16 "
                         "output.",
           QuantSpec("e4m3", "group", 32, scale_format="e8m0", scale_rule="rceil"), False, "group",
           "mxf8f6f4", 0.2, 4.5e15, ("OCP MX v1.0 MXFP8; Transformer Engine's MXFP8 recipe",), ()),
          ("b200-mxfp4", "NVIDIA B200-style MXFP4: E2M1 elements with an E8M0 scale per block of 32 "
                         "along K (the OCP floor rule of published MXFP4 checkpoints), the mxf4 product, "
                         "bfloat16 output.",
           QuantSpec("e2m1", "group", 32, scale_format="e8m0", scale_rule="floor"), False, "group",
           "mxf4", 0.05, 9e15, ("OCP MX v1.0 MXFP4",), ()),
          ("b200-nvfp4", "NVIDIA B200-style NVFP4: E2M1 elements, an E4M3 scale per block of 16 and a "
                         "float32 tensor scale (Transformer Engine's operation order), the mxf4nvf4 "
                         "product, bfloat16 output.",
           QuantSpec("e2m1", "group", 16, scale_format="e4m3"), False, "group", "mxf4nvf4", 0.05,
           9e15, ("NVFP4 as Transformer Engine quantizes it",),
           ("the tensor scales multiply the float32 result (cuBLASLt's alpha)",)))],
    AcceleratorProfile(
        name="fp32",
        description="The float reference: float32 weights and activations, NumPy's float32 matmul.",
        output=OutputSpec("float32"),
        cost=CostModel(mul_pj=3.7, add_pj=0.9, epilogue_pj=0.0, peak_ops_per_s=67e12,
                       memory_bandwidth_bytes_per_s=3.35e12,
                       source=f"energy: {_HORO} (float32 multiply 3.7, add 0.9); {_DRAM}; roofline: "
                              f"H100 SXM datasheet, 67 float32 TFLOPS (no tensor cores), 3.35 TB/s"),
        notes=Notes(public=("IEEE float32",),
                    assumptions=("the sum order is NumPy's (BLAS); not a model of any accelerator",))),
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
    """The registered profile called ``name``, or the profile in a ``.toml``/``.json``
    file (read, not registered: nothing is registered as a side effect).

    Examples
    --------
    >>> from fixedpoint import profiles
    >>> profiles.get("edge-int4").weights.group_size
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
    """Parse a profile from TOML or JSON text."""
    if fmt == "toml":
        d = parse_toml(text, source)
    elif fmt == "json":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON: {e}") from None
    else:
        raise ValueError(f"fmt: expected 'toml' or 'json', got {fmt!r}")
    return AcceleratorProfile.from_dict(d, source)


def load(path) -> AcceleratorProfile:
    """Read a ``.toml`` or ``.json`` profile file (not registered; see :func:`register`)."""
    p = Path(path)
    if p.suffix not in (".toml", ".json"):
        raise ValueError(f"path: expected a .toml or .json file, got {str(path)!r}")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"path: cannot read {str(path)!r}: {e.strerror}") from None
    return loads(text, p.suffix[1:], source=str(p))
