"""Block-scaled formats: E8M0 scales, OCP Microscaling (MX), NVFP4, and the
NVIDIA Blackwell block-scaled tensor-core product.

* :data:`E8M0` scales and :func:`to_e8m0` / :func:`from_e8m0`: the rounding
  of PTX ``cvt.rz``/``cvt.rp .satfinite.ue8m0x2`` and of ml_dtypes/PyTorch.
* :func:`mx_quantize` -> :class:`MXTensor`: OCP MX v1.0 blocks (MXFP8, MXFP6,
  MXFP4, MXINT8) with the scale rules in use (:data:`SCALE_RULES`).
* :func:`nvfp4_quantize` -> :class:`NVFP4Tensor`: E2M1 elements, blocks of 16,
  E4M3 block scales and a float32 tensor scale, in the float32 operation
  order of Transformer Engine (or of torchao / ModelOpt).
* :func:`blockscaled_matmul`: ``tcgen05.mma`` ``kind::f8f6f4``,
  ``kind::mxf8f6f4``, ``kind::mxf4`` and ``kind::mxf4nvf4`` as published with
  Microsoft's MMA-Sim (arXiv 2511.10909).

docs/blockscaled.md gives the source of every rule and where the libraries
differ in bits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _mx
from ._checks import (as_integer_array, check_axis, check_choice, check_int_range, check_positive_int,
                      float_source, resolve_threads)
from .formats import E2M1, E2M3, E3M2, E4M3, E5M2, FloatFormat, IntFormat, as_format
from .fp8 import FloatCodes, codes_and_format, from_fp8, to_fp8
from .quantization import pack_codes

__all__ = ["E8M0", "E8M0Format", "E8M0_ROUNDING", "E8M0_OVERFLOW", "to_e8m0", "from_e8m0",
           "MX_ELEMENTS", "SCALE_RULES", "ELEMENT_ROUNDING", "MXTensor", "mx_quantize",
           "NVFP4_ARITHMETIC", "NVFP4Tensor", "nvfp4_quantize", "KINDS", "blockscaled_matmul",
           "BlockScaledMMA"]

_F32_MAX = np.float32(np.finfo(np.float32).max)


# ---------------------------------------------------------------------------
# E8M0 scales (OCP MX v1.0 section 5.4.1)

@dataclass(frozen=True)
class E8M0Format:
    """The unsigned 8-bit exponent ``2**(code - 127)``: no sign, no zero, no
    Inf; code 0xFF is NaN.  Codes 0..254 are 2^-127 .. 2^127.

    Examples
    --------
    >>> E8M0.bias, E8M0.nan_code, E8M0.min_exp, E8M0.max_exp
    (127, 255, -127, 127)
    """

    bias: int = 127
    nan_code: int = 255
    min_exp: int = -127
    max_exp: int = 127
    name: str = "e8m0"

    def __str__(self) -> str:
        return self.name


E8M0 = E8M0Format()

#: How a positive value is rounded to a power of two: one line each.
E8M0_ROUNDING = {
    "toward_zero": "the largest power of two <= |x| (floor of log2; PTX cvt.rz.satfinite.ue8m0x2)",
    "up": "the smallest power of two >= |x| (ceil of log2; PTX cvt.rp.satfinite.ue8m0x2)",
    "nearest_away": "the nearer power of two in the linear domain, the midpoint 1.5 * 2^e going "
                    "up (ml_dtypes and PyTorch float8_e8m0fnu casts)",
}

#: What happens to values without a finite E8M0 code: one line each.
E8M0_OVERFLOW = {
    "saturate": "PTX .satfinite: NaN -> 0xFF; +-Inf and values above 2^127 -> 0xFE; zero and "
                "values below 2^-127 -> 0x00; the sign is ignored",
    "nonfinite": "ml_dtypes: NaN, +-Inf, values rounding above 2^127, zero and negative values "
                 "-> 0xFF (NaN); values below 2^-127 -> 0x00",
}


def _e8m0_from_f32(x: np.ndarray, rounding: str, sat: bool) -> np.ndarray:
    """to_e8m0 on float32 bits (the exponent field is the biased code)."""
    u = x.view(np.uint32)
    mag = u & np.uint32(0x7FFFFFFF)
    bexp = (mag >> np.uint32(23)).astype(np.int32)
    mant = mag & np.uint32(0x7FFFFF)
    if rounding == "up":
        inc = np.where(bexp == 0, mant > 0x400000, mant != 0)
    elif rounding == "nearest_away":
        inc = np.where(bexp == 0, mant >= 0x600000, mant >= 0x400000)
    else:
        inc = False
    k = bexp + inc                                   # subnormals: 0 (2^-127) or 1 (2^-126)
    codes = np.minimum(k, 254 if sat else 255).astype(np.uint8)
    if sat:
        codes[bexp == 255] = 254                     # +-Inf (NaN below)
        codes[mag == 0] = 0
    else:
        codes[(bexp == 255) | (mag == 0) | (u >> np.uint32(31)).astype(bool)] = 255
    codes[(bexp == 255) & (mant != 0)] = 255
    return codes


def _e8m0_from_f64(x: np.ndarray, rounding: str, sat: bool) -> np.ndarray:
    """to_e8m0 on float64 values, rounded once (frexp)."""
    with np.errstate(invalid="ignore"):
        a = x.astype(np.float64)
    mag = np.abs(a)
    finite_pos = np.isfinite(a) & (mag > 0)
    m, e = np.frexp(np.where(finite_pos, mag, 1.0))     # mag = m * 2^e, m in [0.5, 1)
    k = e.astype(np.int64) - 1                          # floor(log2 |x|)
    if rounding == "up":
        k = k + (m != 0.5)
    elif rounding == "nearest_away":
        k = k + (m >= 0.75)
    k = np.maximum(k, -127)                             # below 2^-127: the smallest code
    codes = np.clip(k + 127, 0, 254).astype(np.uint8)
    codes[k > 127] = 254 if sat else 255
    codes[np.isinf(a)] = 254 if sat else 255
    if sat:
        codes[mag == 0] = 0
    else:
        codes[(mag == 0) | (a < 0)] = 255
    codes[np.isnan(a)] = 255
    return codes


def to_e8m0(x, *, rounding, overflow="saturate"):
    """Round values to E8M0 scale codes (powers of two).

    Parameters
    ----------
    x : array_like
        float16, bfloat16, float32 or float64 values (each rounded once, from
        its own precision).
    rounding : {"toward_zero", "up", "nearest_away"}
        See :data:`E8M0_ROUNDING`.  Required: the three are all in use and
        differ on most inputs.
    overflow : {"saturate", "nonfinite"}
        See :data:`E8M0_OVERFLOW`.

    Returns
    -------
    ndarray of uint8, the shape of ``x`` (0-d for a scalar).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([1.0, 1.5, 3.0, 0.0, np.inf], np.float32)
    >>> to_e8m0(x, rounding="up").tolist()
    [127, 128, 129, 0, 254]
    >>> to_e8m0(x, rounding="nearest_away", overflow="nonfinite").tolist()
    [127, 128, 129, 255, 255]
    """
    check_choice(rounding, "rounding", E8M0_ROUNDING)
    check_choice(overflow, "overflow", E8M0_OVERFLOW)
    src = float_source(x, "x")
    sat = overflow == "saturate"
    if src.dtype == np.float32:
        codes = _e8m0_from_f32(src.reshape(-1), rounding, sat)
    else:
        codes = _e8m0_from_f64(src.reshape(-1), rounding, sat)
    return codes.reshape(src.shape)


def from_e8m0(codes, *, dtype=np.float32):
    """Decode E8M0 codes to exact powers of two (0xFF -> NaN).

    Parameters
    ----------
    codes : array_like of uint8 (or an ml_dtypes float8_e8m0fnu array)
    dtype : float32 or float64
        Every code is exact in both (code 0 is the float32 subnormal 2^-127).

    Examples
    --------
    >>> from_e8m0([0, 127, 254, 255]).tolist()
    [5.877471754111438e-39, 1.0, 1.7014118346046923e+38, nan]
    """
    arr = np.asarray(codes)
    if getattr(arr.dtype.type, "__module__", "").startswith("ml_dtypes"):
        if arr.dtype.name != "float8_e8m0fnu":
            raise TypeError(f"codes: an array of {arr.dtype} does not hold E8M0 codes")
        arr = arr.view(np.uint8)
    arr = as_integer_array(arr, "codes")
    check_int_range(arr, "codes", 0, 255, "the E8M0 code")
    try:
        out_dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if out_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype: expected float32 or float64, got {out_dtype}")
    c = arr.astype(np.int64).reshape(-1)
    out = np.ldexp(np.ones(c.shape, out_dtype), np.where(c == 255, 0, c - 127).astype(np.int32))
    out = out.astype(out_dtype)
    out[c == 255] = np.nan
    return out.reshape(arr.shape)


# ---------------------------------------------------------------------------
# MX quantization (OCP MX v1.0 sections 5 and 6.3)

INT8 = IntFormat(8)
INT8_NARROW = IntFormat(8, narrow=True)

#: Element formats of the MX formats and their emax_elem (exponent of the
#: largest power of two in the element format; OCP MX v1.0 table 1).
MX_ELEMENTS = {E4M3: 8, E5M2: 15, E3M2: 4, E2M3: 2, E2M1: 2, INT8: 0, INT8_NARROW: 0}

#: Rules for the shared scale X of a block with largest magnitude amax: one line each.
SCALE_RULES = {
    "floor": "X = 2^(floor(log2 amax) - emax_elem), exponent clamped to [-127, 127]; amax = 0 "
             "gives 2^-127; NaN/Inf in the block give the NaN scale (OCP MX v1.0 section 6.3; "
             "microxcaling, torchao FLOOR)",
    "ceil": "X = 2^(ceil(log2 amax) - emax_elem), clamped the same way (torchao CEIL)",
    "even": "amax's float32 significand first rounded half up to the element's mantissa "
            "width, then 'floor' (torchao EVEN; amax rounding past 2^128 gives the NaN scale)",
    "rceil": "X = the smallest power of two >= float32(amax * float32(1 / max_elem)), by "
             "cvt.rp.satfinite.ue8m0x2 (Transformer Engine, cuBLAS, vLLM, torchao RCEIL); "
             "NaN -> NaN scale, Inf -> 2^127",
}

#: Rounding of the scaled elements: one line each.
ELEMENT_ROUNDING = {
    "nearest_even": "round to nearest, ties to even, then clamp to +-max (OCP; Transformer "
                    "Engine, torchao)",
    "nearest_away": "round to nearest, ties away from zero, then clamp (microxcaling's default "
                    "round='nearest')",
}


def _mx_elem(elem):
    f = as_format(elem, "elem")
    if f not in MX_ELEMENTS:
        raise ValueError(f"elem: expected one of e4m3, e5m2, e3m2, e2m3, e2m1, int8, "
                         f"int8_narrow, got {f.name}")
    for known in MX_ELEMENTS:
        if known == f:
            return known
    return f   # pragma: no cover - unreachable: f is one of the keys


def _blocks(x: np.ndarray, axis: int, block: int):
    """x with ``axis`` moved last and zero-padded to whole blocks:
    shape (..., nblocks, block)."""
    xm = np.moveaxis(x, axis, -1)
    K = xm.shape[-1]
    nb = -(-K // block)
    pad = nb * block - K
    if pad:
        xm = np.concatenate([xm, np.zeros(xm.shape[:-1] + (pad,), xm.dtype)], axis=-1)
    return xm.reshape(xm.shape[:-1] + (nb, block)), K


def _unblocks(y: np.ndarray, K: int, axis: int) -> np.ndarray:
    y = y.reshape(y.shape[:-2] + (-1,))[..., :K]
    return np.ascontiguousarray(np.moveaxis(y, -1, axis))


def _amax(xb: np.ndarray, ignore_nan: bool = False) -> np.ndarray:
    a = np.abs(xb)
    if ignore_nan:
        a = np.where(np.isnan(a), np.float32(0), a)
    return np.max(a, axis=-1) if a.shape[-1] else np.zeros(a.shape[:-1], a.dtype)


def _scale_codes(amax: np.ndarray, elem, rule: str) -> np.ndarray:
    """E8M0 codes of the block scales from the float32 block maxima."""
    emax = MX_ELEMENTS[elem]
    if rule == "rceil":
        maxv = (np.float32(127) / np.float32(64)) if isinstance(elem, IntFormat) \
            else np.float32(elem.max_value)
        descale = amax * (np.float32(1) / maxv)
        return to_e8m0(descale, rounding="up", overflow="saturate")
    nonfinite = ~np.isfinite(amax)
    if rule == "even":
        # torchao EVEN: round amax's float32 significand half up to the element's
        # mantissa width (bit arithmetic), then take the exponent field
        bits = amax.view(np.uint32).astype(np.int64)
        bits = (bits + (1 << (23 - elem.man_bits - 1))) & 0xFF800000
        nonfinite |= (bits >> 23) >= 255
        k = ((bits >> 23) & 0xFF) - 127                 # float32 subnormals and zero: -127
    else:
        with np.errstate(invalid="ignore"):
            a = np.where(np.isfinite(amax) & (amax > 0), amax, 1).astype(np.float64)
        m, e = np.frexp(a)
        k = e.astype(np.int64) - 1                      # floor(log2 amax)
        if rule == "ceil":
            k = k + (m != 0.5)
        k = np.where(amax == 0, -127, k)
    k = np.clip(k - emax, -127, 127)
    codes = (k + 127).astype(np.uint8)
    codes[nonfinite] = 255
    return codes


def _round_int8(v: np.ndarray, f: IntFormat, rounding: str) -> np.ndarray:
    """MXINT8 elements: v * 64 rounded, clamped to the format's range; NaN -> 0."""
    with np.errstate(invalid="ignore"):
        w = v.astype(np.float64) * 64.0
    nan = np.isnan(w)
    w = np.where(nan, 0.0, w)
    if rounding == "nearest_even":
        r = np.rint(w)
    else:
        r = np.sign(w) * np.floor(np.abs(w) + 0.5)
    return np.clip(r, f.min, f.max).astype(np.int8)


def _to_float_elements(v: np.ndarray, f: FloatFormat, rounding: str) -> np.ndarray:
    codes = to_fp8(v, f, overflow="saturate").view(np.ndarray)
    if rounding == "nearest_away":
        # ties: v exactly halfway between the truncated code and the next one up
        tz = to_fp8(v, f, overflow="saturate", rounding="toward_zero").view(np.ndarray)
        mag = tz & np.uint8(f.sign_bit - 1)
        up = np.minimum(mag.astype(np.int32) + 1, f.max_code).astype(np.uint8)
        lo = from_fp8(mag, f, dtype=np.float64)
        hi = from_fp8(up, f, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            av = np.abs(v.astype(np.float64))
        tie = (up != mag) & ((lo + hi) / 2 == av)
        codes = np.where(tie, up | (tz & np.uint8(f.sign_bit)), codes)
    return codes


class MXTensor:
    """An OCP MX tensor: element codes and one E8M0 scale per block along ``axis``.

    The value of element ``i`` of block ``b`` is ``element(codes[i]) *
    2**(scales[b] - 127)``; a scale code 0xFF makes its block NaN.

    Parameters
    ----------
    codes : FloatCodes (or uint8 codes) of a float element format, or int8
        values for MXINT8 (``elem`` int8: the value is ``code / 64``).
    scales : array of uint8 E8M0 codes, the shape of ``codes`` with
        ``shape[axis]`` replaced by ``ceil(shape[axis] / block)``.
    elem : str or format
        "e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "int8" or "int8_narrow".
    block : int
        Elements per scale (32 in OCP MX; 16 for ``kind::mxf4nvf4``).
    axis : int
        The axis along which blocks run.  A last block shorter than ``block``
        is a block of its own (as if zero-padded).

    Examples
    --------
    >>> import numpy as np
    >>> t = mx_quantize(np.array([[1.0, -3.0, 0.25, 6.0]], np.float32), "e2m1", block=4)
    >>> t.scales.tolist(), t.dequantize().tolist()
    ([[127]], [[1.0, -3.0, 0.0, 6.0]])
    """

    __slots__ = ("codes", "scales", "elem", "block", "axis", "shape")

    def __init__(self, codes, scales, elem, *, block=32, axis=-1):
        f = _mx_elem(elem)
        self.block = check_positive_int(block, "block")
        if isinstance(f, FloatFormat):
            arr, own = codes_and_format(codes, f)
            self.codes = FloatCodes(np.array(arr, copy=True), own)
        else:
            arr = as_integer_array(codes, "codes")
            check_int_range(arr, "codes", f.min, f.max, f"the {f.name}")
            self.codes = np.array(arr, dtype=np.int8, copy=True)
        self.elem = f
        if self.codes.ndim == 0:
            raise ValueError("codes: expected at least 1-D codes, got a scalar")
        self.axis = check_axis(axis, self.codes.ndim, optional=False)
        self.shape = self.codes.shape
        sc = as_integer_array(scales, "scales")
        check_int_range(sc, "scales", 0, 255, "the E8M0 code")
        want = list(self.shape)
        want[self.axis] = -(-self.shape[self.axis] // self.block)
        if sc.shape != tuple(want):
            raise ValueError(f"scales: expected shape {tuple(want)} (one per block of "
                             f"{self.block} along axis {self.axis}), got {sc.shape}")
        self.scales = np.array(sc, dtype=np.uint8, copy=True)

    def element_values(self) -> np.ndarray:
        """The elements' own values (float32), before the block scales."""
        if isinstance(self.elem, FloatFormat):
            return from_fp8(self.codes)
        return self.codes.astype(np.float32) / np.float32(64)

    def dequantize(self) -> np.ndarray:
        """float32 values: element times its block's power of two (exact unless
        the product leaves the float32 range, then rounded once)."""
        v = self.element_values().astype(np.float64)
        s = np.repeat(np.moveaxis(from_e8m0(self.scales, dtype=np.float64), self.axis, -1),
                      self.block, axis=-1)[..., :self.shape[self.axis]]
        with np.errstate(over="ignore", invalid="ignore"):
            return (v * np.moveaxis(s, -1, self.axis)).astype(np.float32)

    def pack(self) -> np.ndarray:
        """FP4 codes two per byte along the blocks' axis, element 0 of each pair
        in the low nibble (the operand layout of Blackwell's ``kind::mxf4``,
        Transformer Engine, torchao, ModelOpt and ONNX): shape of the codes
        with the blocks' axis last and halved."""
        if not (isinstance(self.elem, FloatFormat) and self.elem.nbits == 4):
            raise ValueError(f"pack: packing two per byte is for 4-bit elements, not {self.elem.name}")
        c = np.moveaxis(self.codes.view(np.ndarray), self.axis, -1)
        if c.shape[-1] % 2:
            raise ValueError(f"pack: the blocks' axis has odd length {c.shape[-1]}")
        return pack_codes(c, self.elem).reshape(c.shape[:-1] + (c.shape[-1] // 2,))

    def __repr__(self) -> str:
        return (f"MXTensor(shape={self.shape}, elem={self.elem.name!r}, block={self.block}, "
                f"axis={self.axis})")


def mx_quantize(x, elem, *, block=32, axis=-1, scale_rule="floor", rounding="nearest_even"):
    """Quantize to an OCP MX format: one E8M0 scale per ``block`` elements along
    ``axis``, elements rounded and clamped to ``elem``.

    Parameters
    ----------
    x : array_like
        float16, bfloat16 or float32 values (float64 is rounded to float32
        first, as the libraries hold their tensors).
    elem : str or format
        "e4m3" (MXFP8), "e5m2", "e3m2" (MXFP6), "e2m3", "e2m1" (MXFP4),
        "int8" (MXINT8: two's complement with an implicit 2^-6, clamped to
        [-128, 127]) or "int8_narrow" (clamped to [-127, 127], as microxcaling).
    block : int
        32 for OCP MX; 16 for the ``kind::mxf4nvf4`` E8M0 variant.
    axis : int
        The axis of the blocks (the GEMM's K).  A last block shorter than
        ``block`` is quantized as if zero-padded (microxcaling pads with zeros).
    scale_rule : {"floor", "ceil", "even", "rceil"}
        See :data:`SCALE_RULES`.
    rounding : {"nearest_even", "nearest_away"}
        See :data:`ELEMENT_ROUNDING`.

    Returns
    -------
    MXTensor

    Notes
    -----
    Elements are ``float32(x * 2**-scale)`` (exact except where the result is
    a float32 subnormal, far below the element's smallest step), converted with
    the PTX ``cvt.rn.satfinite`` rule: overflow and +-Inf to +-max; NaN to the
    NaN code (E4M3, E5M2) or to +max (FP6, FP4; 0 for MXINT8).  A block whose
    scale is NaN decodes to NaN whatever its element codes.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.5, 1.0, 40.0, 500.0]], np.float32)
    >>> t = mx_quantize(x, "e4m3", block=4)
    >>> int(t.scales[0, 0]) - 127, t.dequantize().tolist()
    (0, [[0.5, 1.0, 40.0, 448.0]])
    >>> t = mx_quantize(x, "e4m3", block=4, scale_rule="rceil")
    >>> int(t.scales[0, 0]) - 127, t.dequantize().tolist()
    (1, [[0.5, 1.0, 40.0, 512.0]])
    """
    f = _mx_elem(elem)
    block = check_positive_int(block, "block")
    check_choice(scale_rule, "scale_rule", SCALE_RULES)
    check_choice(rounding, "rounding", ELEMENT_ROUNDING)
    if scale_rule == "even" and isinstance(f, IntFormat):
        raise ValueError("scale_rule: 'even' rounds amax to the element's mantissa width and "
                         "is defined for float elements only")
    src = float_source(x, "x", double_rounding=True).astype(np.float32, copy=False)
    if src.ndim == 0:
        raise ValueError("x: expected at least 1-D values, got a scalar")
    ax = check_axis(axis, src.ndim, optional=False)
    xb, K = _blocks(src, ax, block)
    scales = _scale_codes(_amax(xb), f, scale_rule)
    recip = from_e8m0(np.where(scales == 255, 255, 254 - scales.astype(np.int32)))
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        scaled = (xb * recip[..., None]).astype(np.float32)
    scaled = _unblocks(scaled, K, ax)
    if isinstance(f, FloatFormat):
        codes = FloatCodes(_to_float_elements(scaled, f, rounding), f)
    else:
        codes = _round_int8(scaled, f, rounding)
    return MXTensor(codes, np.moveaxis(scales, -1, ax), f, block=block, axis=ax)


# ---------------------------------------------------------------------------
# NVFP4 (E2M1 elements, 16-element blocks, E4M3 scales, float32 tensor scale)

#: Float32 operation orders of the NVFP4 scales: one line each.
NVFP4_ARITHMETIC = {
    "encode_multiply": "S_enc = 2688 / amax; block scale e4m3(amax_b * (S_enc * (1/6))); "
                       "elements x * (1 / (scale * S_dec)), S_dec = 1 / S_enc (Transformer "
                       "Engine; block maxima ignore NaN)",
    "decode_reciprocal": "s = amax / 2688; block scale e4m3(clamp((amax_b / 6) / s, 2^-6, 448)); "
                         "elements clamp(x * ((1 / s) / scale), -6, 6) (torchao)",
    "decode_divide": "s = amax / 2688; block scale e4m3(amax_b / (6 * s)), 0 -> 1; elements "
                     "x / (scale * s) (ModelOpt)",
}

_F32 = np.float32


def _nvfp4_scales(xb: np.ndarray, amax_t, arith: str):
    """(e4m3 scale codes, element multiplier or divisor per block, decode factor, divide?)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        if arith == "encode_multiply":
            bam = _amax(xb, ignore_nan=True)
            s_enc = _F32(2688) / amax_t
            s_enc = min(s_enc, _F32_MAX) if not np.isnan(s_enc) else _F32_MAX
            if amax_t == 0 or s_enc == 0:
                s_enc = _F32(1)
            s_enc = _F32(s_enc)
            s_dec = _F32(_F32(1) / s_enc)
            t = _F32(s_enc * _F32(_F32(1) / _F32(6)))
            codes = to_fp8((bam * t).astype(np.float32), "e4m3").view(np.ndarray)
            sv = from_fp8(codes, "e4m3")
            inv = np.minimum(_F32(1) / (sv * s_dec), _F32_MAX).astype(np.float32)
            return codes, inv, s_dec, False
        bam = _amax(xb)
        s = _F32(amax_t / _F32(2688))
        if arith == "decode_reciprocal":
            bs = (bam / _F32(6)).astype(np.float32)
            sbs = (bs / s).astype(np.float32)
            sbs = np.where(np.isnan(sbs), sbs, np.clip(sbs, _F32(2.0 ** -6), _F32(448)))
            codes = to_fp8(sbs.astype(np.float32), "e4m3").view(np.ndarray)
            sv = from_fp8(codes, "e4m3")
            mult = ((_F32(1) / s) / sv).astype(np.float32)
            return codes, mult, s, False
        pbs = (bam / _F32(_F32(6) * s)).astype(np.float32)
        pbs = np.where(pbs == 0, _F32(1), pbs)
        codes = to_fp8(pbs, "e4m3").view(np.ndarray)
        sv = from_fp8(codes, "e4m3")
        div = (sv * s).astype(np.float32)
        return codes, div, s, True


class NVFP4Tensor:
    """NVFP4: E2M1 codes, one E4M3 scale per 16 elements along ``axis``, and a
    float32 tensor scale.

    The value of an element is ``e2m1(code) * e4m3(scale) * tensor_scale``.

    Parameters
    ----------
    codes : FloatCodes (or uint8 codes) of E2M1
    scales : FloatCodes (or uint8 codes) of E4M3, the shape of ``codes`` with
        ``shape[axis]`` replaced by ``ceil(shape[axis] / 16)``
    tensor_scale : float
        The float32 decode factor (Transformer Engine's ``S_dec = 1 / S_enc``).
    axis : int

    Examples
    --------
    >>> import numpy as np
    >>> t = nvfp4_quantize(np.array([[4.0, -1.0, 0.5] + [0.0] * 13], np.float32))
    >>> t.block, t.codes[0, :3].tolist(), t.scales.tolist()
    (16, [7, 11, 2], [[126]])
    """

    __slots__ = ("codes", "scales", "tensor_scale", "axis", "shape", "block")

    def __init__(self, codes, scales, tensor_scale, *, axis=-1):
        arr, _ = codes_and_format(codes, E2M1)
        self.codes = FloatCodes(np.array(arr, copy=True), E2M1)
        if self.codes.ndim == 0:
            raise ValueError("codes: expected at least 1-D codes, got a scalar")
        sarr, _ = codes_and_format(scales, E4M3, "scales")
        self.block = 16
        self.axis = check_axis(axis, self.codes.ndim, optional=False)
        self.shape = self.codes.shape
        want = list(self.shape)
        want[self.axis] = -(-self.shape[self.axis] // 16)
        if sarr.shape != tuple(want):
            raise ValueError(f"scales: expected shape {tuple(want)} (one per block of 16 along "
                             f"axis {self.axis}), got {sarr.shape}")
        self.scales = FloatCodes(np.array(sarr, copy=True), E4M3)
        if isinstance(tensor_scale, (bool, np.bool_)) or np.ndim(tensor_scale) != 0:
            raise TypeError("tensor_scale: expected a float")
        ts = np.asarray(tensor_scale)
        if ts.dtype.kind not in "fiu":
            raise TypeError(f"tensor_scale: expected a float, got {ts.dtype}")
        ts = np.float32(ts)
        if not (np.isfinite(ts) and ts > 0):
            raise ValueError(f"tensor_scale: expected a finite positive float, got {ts}")
        self.tensor_scale = ts

    def dequantize(self) -> np.ndarray:
        """float32 values: ``e2m1 * e4m3 * tensor_scale`` rounded once."""
        v = from_fp8(self.codes, dtype=np.float64)
        s = np.moveaxis(from_fp8(self.scales, dtype=np.float64), self.axis, -1)
        s = np.repeat(s, 16, axis=-1)[..., :self.shape[self.axis]]
        with np.errstate(invalid="ignore"):
            return (v * np.moveaxis(s, -1, self.axis) * float(self.tensor_scale)).astype(np.float32)

    def pack(self) -> np.ndarray:
        """E2M1 codes two per byte along ``axis``, element 0 in the low nibble."""
        c = np.moveaxis(self.codes.view(np.ndarray), self.axis, -1)
        if c.shape[-1] % 2:
            raise ValueError(f"pack: the blocks' axis has odd length {c.shape[-1]}")
        return pack_codes(c, E2M1).reshape(c.shape[:-1] + (c.shape[-1] // 2,))

    def __repr__(self) -> str:
        return (f"NVFP4Tensor(shape={self.shape}, axis={self.axis}, "
                f"tensor_scale={float(self.tensor_scale)!r})")


def nvfp4_quantize(x, *, axis=-1, tensor_amax=None, arithmetic="encode_multiply"):
    """Quantize to NVFP4: E2M1 elements in blocks of 16 along ``axis``, E4M3 block
    scales, a float32 tensor scale.

    Parameters
    ----------
    x : array_like
        float16, bfloat16 or float32 values (float64 is rounded to float32 first).
    axis : int
        The axis of the blocks; a last block shorter than 16 is handled as if
        zero-padded.
    tensor_amax : float, optional
        The tensor's calibrated largest magnitude (finite, >= 0); default the
        largest finite-or-Inf magnitude of ``x``.
    arithmetic : {"encode_multiply", "decode_reciprocal", "decode_divide"}
        The float32 operation order of the scales, see :data:`NVFP4_ARITHMETIC`:
        Transformer Engine's (default), torchao's, or ModelOpt's.

    Returns
    -------
    NVFP4Tensor

    Notes
    -----
    Every step is one float32 operation rounded to nearest even, in the order
    of the library named; E4M3 and E2M1 conversions are PTX
    ``cvt.rn.satfinite`` (overflow and Inf to +-max, NaN to +max for E2M1).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.1, -0.7, 2.0, 5.0] * 4], np.float32)
    >>> t = nvfp4_quantize(x)
    >>> t.scales.tolist(), bool(t.tensor_scale == np.float32(1) / (np.float32(2688) / np.float32(5)))
    ([[126]], True)
    """
    check_choice(arithmetic, "arithmetic", NVFP4_ARITHMETIC)
    src = float_source(x, "x", double_rounding=True).astype(np.float32, copy=False)
    if src.ndim == 0:
        raise ValueError("x: expected at least 1-D values, got a scalar")
    ax = check_axis(axis, src.ndim, optional=False)
    if tensor_amax is None:
        a = np.abs(src)
        if arithmetic == "encode_multiply":
            a = np.where(np.isnan(a), _F32(0), a)
        amax_t = _F32(np.max(a)) if a.size else _F32(0)
    else:
        if isinstance(tensor_amax, (bool, np.bool_)) or np.ndim(tensor_amax) != 0 \
                or np.asarray(tensor_amax).dtype.kind not in "fiu":
            raise TypeError("tensor_amax: expected a float")
        amax_t = _F32(tensor_amax)
        if not (np.isfinite(amax_t) and amax_t >= 0):
            raise ValueError(f"tensor_amax: expected a finite float >= 0, got {tensor_amax}")
    if arithmetic != "encode_multiply" and not (np.isfinite(amax_t) and amax_t > 0):
        raise ValueError(f"x: {arithmetic!r} divides by the tensor amax, which is {amax_t}; "
                         f"give a finite positive tensor_amax")
    xb, K = _blocks(src, ax, 16)
    codes_s, factor, ts, divide = _nvfp4_scales(xb, amax_t, arithmetic)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
        v = xb / factor[..., None] if divide else xb * factor[..., None]
        v = v.astype(np.float32)
        if arithmetic == "decode_reciprocal":
            v = np.where(np.isnan(v), v, np.clip(v, _F32(-6), _F32(6)))
    codes = to_fp8(_unblocks(v, K, ax), E2M1)
    return NVFP4Tensor(codes, FloatCodes(np.moveaxis(codes_s, -1, ax), E4M3), ts, axis=ax)


# ---------------------------------------------------------------------------
# Blackwell block-scaled GEMM (tcgen05.mma, MMA-Sim's published model)

#: The tcgen05.mma kinds: one line each.
KINDS = {
    "f8f6f4": "FP8/FP6/FP4 codes without scales; K steps of 32; every term truncated to 25 "
              "fraction bits below the step's largest exponent; float32 result truncated",
    "mxf8f6f4": "MX operands (E4M3, E5M2, E3M2, E2M3, E2M1; E8M0 scales, blocks of 32); as "
                "f8f6f4 with the scale exponents added to the products' exponents",
    "mxf4": "MXFP4 operands (E2M1, E8M0 scales, blocks of 32); K steps of 64: exact 16-element "
            "group sums times the scales' significands, aligned with 35 fraction bits",
    "mxf4nvf4": "as mxf4, with E8M0 scales on blocks of 16 or 32 or NVFP4 operands (E4M3 scales, "
                "blocks of 16; the tensor scales multiply the float32 result)",
}

_F8_FORMATS = (E4M3, E5M2, E3M2, E2M3, E2M1)
_DECODE8: dict = {}


@dataclass(frozen=True)
class BlockScaledMMA:
    """The product of a Blackwell tensor core, ``tcgen05.mma`` of one ``kind``
    (:data:`KINDS`), as an accumulator a profile can name.

    Examples
    --------
    >>> BlockScaledMMA("mxf4").instruction
    'mxf4'
    """

    instruction: str = "mxf8f6f4"

    def __post_init__(self):
        check_choice(self.instruction, "instruction", KINDS)


def _decode8(f: FloatFormat):
    """Per code: float32 value (NaN/Inf kept), the published model's exponent
    (zero -126, subnormals at emin), and whether the code is NaN or Inf."""
    if f not in _DECODE8:
        val = np.zeros(256, np.float32)
        exp = np.full(256, -126, np.int16)
        spec = np.zeros(256, bool)
        vals = from_fp8(np.arange(1 << f.nbits, dtype=np.uint8), f)
        for code in range(1 << f.nbits):
            val[code] = vals[code]
            v = f.decode_exact(code)
            if isinstance(v, float):
                spec[code] = True
                continue
            mag = code & (f.sign_bit - 1)
            if mag == 0:
                continue
            ef = mag >> f.man_bits
            exp[code] = f.emin if ef == 0 else ef - f.bias
        _DECODE8[f] = (val, exp, spec)
    return _DECODE8[f]


def _kind_operand(x, name: str, kind: str, kaxis: int):
    """(element codes K-major 2-D (rows x K), format, scale tensor info) of one operand."""
    if kind == "f8f6f4":
        if isinstance(x, (MXTensor, NVFP4Tensor)):
            raise TypeError(f"{name}: kind 'f8f6f4' takes codes without block scales; "
                            f"use kind 'mxf8f6f4' or 'mxf4nvf4' for {type(x).__name__}")
        arr, f = codes_and_format(x, None, name)
        if arr.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D matrix of codes, got {arr.ndim}-D")
        return (arr if kaxis == 1 else arr.T), f, None
    if isinstance(x, NVFP4Tensor):
        if kind != "mxf4nvf4":
            raise ValueError(f"{name}: NVFP4 operands need kind 'mxf4nvf4', not {kind!r}")
        t, f = x, E2M1
    elif isinstance(x, MXTensor):
        t, f = x, x.elem
        if not isinstance(f, FloatFormat) or f not in _F8_FORMATS:
            raise ValueError(f"{name}: Blackwell has no block-scaled product for "
                             f"{f.name} elements")
        if kind == "mxf8f6f4" and t.block != 32:
            raise ValueError(f"{name}: kind 'mxf8f6f4' needs blocks of 32, got {t.block}")
        if kind in ("mxf4", "mxf4nvf4") and f != E2M1:
            raise ValueError(f"{name}: kind {kind!r} takes E2M1 elements, got {f.name}")
        if kind == "mxf4" and t.block != 32:
            raise ValueError(f"{name}: kind 'mxf4' needs blocks of 32, got {t.block}")
        if kind == "mxf4nvf4" and t.block not in (16, 32):
            raise ValueError(f"{name}: kind 'mxf4nvf4' needs blocks of 16 or 32, got {t.block}")
    else:
        raise TypeError(f"{name}: kind {kind!r} takes an MXTensor or NVFP4Tensor, got "
                        f"{type(x).__name__}")
    if len(t.shape) != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {t.shape}")
    if t.axis != kaxis:
        raise ValueError(f"{name}: must be quantized along K (axis {kaxis}), got axis {t.axis}")
    codes = t.codes.view(np.ndarray)
    scales = t.scales.view(np.ndarray)
    if kaxis == 0:
        codes, scales = codes.T, scales.T
    return codes, f, (t, scales)


def _pad_k(a: np.ndarray, Kp: int) -> np.ndarray:
    out = np.zeros((a.shape[0], Kp), a.dtype)
    out[:, :a.shape[1]] = a
    return out


def _f8_operand(codes, f, sc, Kp):
    val, exp, spec = _decode8(f)
    cp = _pad_k(np.ascontiguousarray(codes), Kp)
    T = Kp // 32
    flags = spec[cp].reshape(cp.shape[0], T, 32).any(axis=2).astype(np.uint8) << 1
    sexp = None
    if sc is not None:
        s = _pad_k(sc[1].astype(np.int32), T)
        flags |= (s == 255).astype(np.uint8)
        sexp = np.ascontiguousarray(np.where(s == 255, 0, s - 127).astype(np.int32))
    return (np.ascontiguousarray(val[cp]), np.ascontiguousarray(exp[cp]), sexp,
            np.ascontiguousarray(flags) if flags.any() else None)


_E2M1_TWICE = np.zeros(16, np.int8)
for _c in range(16):
    _v = E2M1.decode_exact(_c)
    _E2M1_TWICE[_c] = int(2 * _v)


def _f4_operand(codes, sc, Kp):
    t, scales = sc
    cp = _pad_k(np.ascontiguousarray(codes), Kp)
    G = Kp // 16
    per = t.block // 16
    s = np.repeat(scales.astype(np.int32), per, axis=1)
    s = _pad_k(s, G)                 # padding groups: code 0 (2^-127, or a zero E4M3 scale)
    if isinstance(t, NVFP4Tensor):
        mag = s & 0x7F               # the published model takes |scale|
        nan = mag == 0x7F
        ef, mf = mag >> 3, mag & 7
        m = np.where(ef == 0, mf, 8 + mf)
        x = np.where(ef == 0, np.where(mf == 0, -126, -6), ef - 7)
    else:
        nan = s == 255
        m = np.full(s.shape, 8)
        x = s - 127
    m = np.where(nan, 0, m).astype(np.int32)
    x = np.where(nan, 0, x).astype(np.int32)
    stepnan = nan.reshape(nan.shape[0], Kp // 64, 4).any(axis=2).astype(np.uint8)
    return (np.ascontiguousarray(_E2M1_TWICE[cp]), np.ascontiguousarray(m),
            np.ascontiguousarray(x), np.ascontiguousarray(stepnan))


def blockscaled_matmul(a, b, *, kind, c=None, num_threads=None):
    """Block-scaled matrix product as NVIDIA Blackwell's ``tcgen05.mma``
    computes it, in the model published with MMA-Sim.

    Parameters
    ----------
    a : MXTensor or NVFP4Tensor of shape (M, K) quantized along axis 1 (or, for
        kind 'f8f6f4', FloatCodes of shape (M, K))
    b : the same kind of operand, shape (K, N), quantized along axis 0
    kind : {"f8f6f4", "mxf8f6f4", "mxf4", "mxf4nvf4"}
        See :data:`KINDS`.  Required.
    c : array_like of shape (M, N), optional
        The initial float32 accumulator (rounded to float32 if wider).
    num_threads : int, optional

    Returns
    -------
    ndarray of float32, shape (M, N)

    Notes
    -----
    The K axis is consumed in instruction steps of 32 (64 for the FP4 kinds)
    in order, the float32 result of each step being the C of the next.  K not
    a multiple of the step is zero-padded (padding groups of the FP4 kinds get
    the scale code 0).  NaN results are 0x7FFFFFFF; NaN/Inf elements and NaN
    scales follow IEEE as in the published model; an Inf accumulator stays Inf
    in the FP4 kinds (the published model does not define it).  For NVFP4
    operands the result is ``float32(acc * float32(ts_a * ts_b))``.

    Examples
    --------
    >>> import numpy as np
    >>> a = mx_quantize(np.ones((1, 32), np.float32), "e4m3")
    >>> b = mx_quantize(np.full((32, 1), 0.5, np.float32), "e4m3", axis=0)
    >>> blockscaled_matmul(a, b, kind="mxf8f6f4")
    array([[16.]], dtype=float32)
    """
    check_choice(kind, "kind", KINDS)
    nthreads = resolve_threads(num_threads)
    A, fa, sca = _kind_operand(a, "a", kind, 1)
    B, fb, scb = _kind_operand(b, "b", kind, 0)
    if kind == "f8f6f4":
        for f, n in ((fa, "a"), (fb, "b")):
            if f not in _F8_FORMATS:
                raise ValueError(f"fmt ({n}): kind 'f8f6f4' takes e4m3, e5m2, e3m2, e2m3 or "
                                 f"e2m1 codes, got {f.name}")
    if (sca is None) != (scb is None) or (
            sca is not None and isinstance(sca[0], NVFP4Tensor) != isinstance(scb[0], NVFP4Tensor)):
        raise ValueError("a and b: both operands need the same kind of block scales")
    M, K = A.shape
    N, Kb = B.shape
    if K != Kb:
        raise ValueError(f"a and b: inner dimensions differ: a has K={K}, b has K={Kb}")
    cc = None
    if c is not None:
        cc = float_source(c, "c", double_rounding=True).astype(np.float32, copy=False)
        if cc.shape != (M, N):
            raise ValueError(f"c: expected shape {(M, N)}, got {cc.shape}")
        cc = np.ascontiguousarray(cc)
    out = np.empty((M, N), np.float32)
    if kind in ("f8f6f4", "mxf8f6f4"):
        Kp = -(-K // 32) * 32
        va, ea, sa, fla = _f8_operand(A, fa, sca, Kp)
        vb, eb, sb, flb = _f8_operand(B, fb, scb, Kp)
        _mx.mma_f8(va, ea, vb, eb, sa, sb, fla, flb, cc, out, nthreads)
        return out
    Kp = -(-K // 64) * 64
    qa, ma, xa, na = _f4_operand(A, sca, Kp)
    qb, mb, xb, nb = _f4_operand(B, scb, Kp)
    _mx.mma_f4(qa, qb, ma, xa, mb, xb, na, nb, cc, out, nthreads)
    if isinstance(sca[0], NVFP4Tensor):
        alpha = _F32(sca[0].tensor_scale * scb[0].tensor_scale)
        with np.errstate(over="ignore", invalid="ignore"):
            out = (out * alpha).astype(np.float32)
    return out
