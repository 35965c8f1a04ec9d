"""Conversion between IEEE floats and FP8 (and other minifloats of <= 8 bits).

Rules (OCP OFP8 rev 1.0): round **first** (to nearest, ties to even, by
default), then check the range.  What happens out of range is an explicit
choice:

``saturate=True``  (the Hopper ``cvt.rn.satfinite`` instruction)
    overflow and +-Inf become +-max; every NaN becomes the positive NaN code
    (0x7F for E4M3 and E5M2: the sign is dropped).
``saturate=False`` (PyTorch's casts)
    E5M2 overflow becomes +-Inf; E4M3 (no Inf) overflow, i.e. anything whose
    magnitude rounds above 448 (so above 464), becomes NaN; NaN keeps its
    sign (0x7F / 0xFF).  FNUZ formats use their single NaN 0x80; formats
    without Inf and NaN saturate.

Tiny values round to +-0 keeping their sign (FNUZ formats have no -0).
float64 inputs are rounded once, directly; ``double_rounding=True``
reproduces libraries that go through float32 first.
"""
from __future__ import annotations

import numpy as np

from . import _fp8
from ._checks import check_choice, resolve_threads
from .formats import FloatFormat, as_float_format

__all__ = ["to_fp8", "from_fp8", "ROUNDING_MODES", "as_ml_dtypes", "format_params"]

#: Rounding modes of the conversion: one line each.
ROUNDING_MODES = {
    "nearest_even": "round to the nearest representable value, ties to the even code",
    "toward_zero": "truncate the magnitude (finite overflow gives +-max, as IEEE)",
    "stochastic": "round up with probability equal to the remainder's fraction of a step "
                  "(seeded, counter-based: reproducible and independent of threads)",
}

_ML_DTYPES_NAMES = {
    "e5m2": "float8_e5m2", "e4m3": "float8_e4m3fn", "e4m3fnuz": "float8_e4m3fnuz",
    "e5m2fnuz": "float8_e5m2fnuz", "e3m2": "float6_e3m2fn", "e2m3": "float6_e2m3fn",
    "e2m1": "float4_e2m1fn",
}


def format_params(fmt: FloatFormat, saturate: bool) -> dict:
    """The numbers the C encoder needs for ``fmt`` (see ``src/fp_fp8.h``)."""
    sb = fmt.sign_bit
    top = sb - 1                                  # all exponent and mantissa bits set
    mx = fmt.max_code
    sat_codes = (mx, mx | sb)
    if fmt.nan == "neg_zero":
        nan = (sb, sb)
        ovf = sat_codes if saturate else (sb, sb)
    elif fmt.nan is None:
        nan = (0, 0)                              # refused before it is used
        ovf = sat_codes
    else:
        nan = (top, top) if saturate else (top, top | sb)
        if saturate:
            ovf = sat_codes
        elif fmt.inf:
            inf = fmt.max_exp_field << fmt.man_bits
            ovf = (inf, inf | sb)
        else:
            ovf = (top, top | sb)                 # no Inf: overflow is NaN
    return {
        "man_bits": fmt.man_bits, "emin": fmt.emin, "bias": fmt.bias, "sign_bit": sb,
        "max_mag": mx, "ovf_code": ovf, "nan_code": nan,
        "zero_code": (0, 0) if fmt.nan == "neg_zero" else (0, sb),
        "rtz_saturates": 1,
        # 2^(m - emin), split into two factors that float32 holds exactly
        "sub_scale1": 2.0 ** min(fmt.man_bits - fmt.emin, 100),
        "sub_scale2": 2.0 ** (fmt.man_bits - fmt.emin - min(fmt.man_bits - fmt.emin, 100)),
    }


def _ml_dtypes_name(dtype: np.dtype) -> str | None:
    mod = getattr(dtype.type, "__module__", "") or ""
    return dtype.name if mod.startswith("ml_dtypes") else None


def _float_source(x, double_rounding: bool):
    """x as a contiguous native float32 or float64 array holding the exact
    source values (float16/bfloat16/FP8 widen exactly to float32)."""
    if x is None:
        raise TypeError("x: expected a float array, got None")
    arr = np.asarray(x)
    dt = arr.dtype
    ml = _ml_dtypes_name(dt)
    if ml == "bfloat16":
        bits = np.ascontiguousarray(arr).view(np.uint16).astype(np.uint32) << np.uint32(16)
        return bits.view(np.float32)
    if ml is not None and ml.startswith(("float8", "float6", "float4")):
        return np.ascontiguousarray(arr.astype(np.float32))          # exact widening
    if dt.kind != "f":
        raise TypeError(f"x: expected float16, float32, float64 or bfloat16 values, "
                        f"got an array of dtype {dt}")
    if dt.itemsize == 2:
        return arr.astype(np.float32)                                 # exact
    if dt.itemsize == 4:
        return np.ascontiguousarray(arr, dtype=np.float32)
    if dt.itemsize == 8:
        a64 = np.ascontiguousarray(arr, dtype=np.float64)
        if not double_rounding:
            return a64
        with np.errstate(over="ignore"):         # overflow to Inf is the intended result
            return a64.astype(np.float32)
    raise TypeError(f"x: {dt} is not supported (one rounding from it cannot be guaranteed); "
                    f"convert to float64 first")


def _check_out(out, shape, dtype: np.dtype) -> np.ndarray:
    """A new output array, or the caller's ``out`` after checking it fits."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a numpy array, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out: expected dtype {dtype}, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out: expected shape {shape}, got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out: must be C-contiguous and writeable")
    return out


def _seed_value(seed) -> int:
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int or None, got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed: expected 0 <= seed < 2**64, got {seed}")
    return int(seed)


def to_fp8(x, fmt="e5m2", *, saturate=False, rounding="nearest_even", seed=None, out=None,
           double_rounding=False, num_threads=None):
    """Convert floats to FP8 (or any :class:`FloatFormat`) codes.

    Parameters
    ----------
    x : array_like
        float16, float32, float64, or ml_dtypes bfloat16/float8 values.  Each
        value is rounded once, from its own precision.
    fmt : str or FloatFormat
        ``"e5m2"``, ``"e4m3"`` (OCP E4M3FN), ``"e4m3fnuz"``, ``"e5m2fnuz"``,
        ``"e3m2"``, ``"e2m3"``, ``"e2m1"`` or a FloatFormat.
    saturate : bool
        True: the Hopper ``satfinite`` conversion (overflow and Inf to +-max,
        NaN to 0x7F).  False: PyTorch's (overflow to Inf, or NaN without Inf).
    rounding : {"nearest_even", "toward_zero", "stochastic"}
        See ``ROUNDING_MODES``.
    seed : int, optional
        Seed of the stochastic rounding (a fresh one if None).
    out : ndarray of uint8, optional
        C-contiguous, writeable, same shape as ``x``; filled and returned.
    double_rounding : bool
        Round float64 input to float32 first (PyTorch, ml_dtypes); off by default.
    num_threads : int, optional

    Returns
    -------
    ndarray of uint8, the shape of ``x``; codes of formats narrower than
    8 bits sit in the low bits.

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> fp.to_fp8(np.array([1.0, 464.0, 465.0, 1e9], np.float32), "e4m3")
    array([ 56, 126, 127, 127], dtype=uint8)
    >>> fp.to_fp8(np.array([1e9, np.nan], np.float32), "e5m2", saturate=True)
    array([123, 127], dtype=uint8)
    """
    f = as_float_format(fmt)
    if not isinstance(saturate, (bool, np.bool_)):
        raise TypeError(f"saturate: expected a bool, got {type(saturate).__name__}")
    check_choice(rounding, "rounding", ROUNDING_MODES)
    nthreads = resolve_threads(num_threads)
    seed_v = _seed_value(seed) if rounding == "stochastic" else 0
    src = _float_source(x, bool(double_rounding))
    result = _check_out(out, src.shape, np.dtype(np.uint8))
    params = format_params(f, bool(saturate))
    nans = _fp8.encode(src, result, params, rounding, seed_v, f.nan is None, nthreads)
    if nans:
        raise ValueError(f"x: contains {nans} NaN value(s), but {f.name} has no NaN encoding")
    return result


_LUT_CACHE: dict = {}


def _lut(f: FloatFormat, dtype: np.dtype) -> np.ndarray:
    key = (f, dtype.str)
    if key not in _LUT_CACHE:
        n = 1 << f.nbits
        vals = np.zeros(256, dtype=np.float64)
        for code in range(n):
            v = f.decode_exact(code)
            vals[code] = float(v)          # exact: every value fits float64
            if v == 0 and code & f.sign_bit:
                vals[code] = -0.0          # Fractions have no signed zero
        lut = vals.astype(dtype)           # exact for float32/64; one rounding for float16
        # NaN codes decode to the default quiet NaN, with the code's sign.
        for code in range(n):
            if f.is_nan_code(code):
                neg = bool(code & f.sign_bit) and f.nan != "neg_zero"
                lut[code] = -np.abs(np.array(np.nan, dtype)) if neg else np.abs(np.array(np.nan, dtype))
        _LUT_CACHE[key] = lut.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[dtype.itemsize])
    return _LUT_CACHE[key]


def from_fp8(codes, fmt="e5m2", dtype=np.float32, *, out=None, num_threads=None):
    """Decode FP8 (or other minifloat) codes to float16, float32 or float64.

    Decoding is exact (values of formats wider than float16's range round
    once, to nearest even, when ``dtype`` is float16).  NaN codes give the
    default quiet NaN with the code's sign.

    Parameters
    ----------
    codes : ndarray of uint8 (or an ml_dtypes float8/6/4 array of ``fmt``)
    fmt : str or FloatFormat
    dtype : float16, float32 or float64
    out : ndarray, optional
        C-contiguous, writeable, of ``dtype`` and the shape of ``codes``;
        filled and returned.
    num_threads : int, optional

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> fp.from_fp8(np.array([0x38, 0x7B, 0x7C, 0xFD], np.uint8), "e5m2").tolist()
    [0.5, 57344.0, inf, nan]
    >>> fp.from_fp8(np.array([56, 126], np.uint8), "e4m3")
    array([  1., 448.], dtype=float32)
    """
    f = as_float_format(fmt)
    nthreads = resolve_threads(num_threads)
    try:
        out_dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected float16, float32 or float64, got {dtype!r}") from None
    if out_dtype not in (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype: expected float16, float32 or float64, got {out_dtype}")
    arr = np.ascontiguousarray(as_codes(codes, "codes", f))
    out = _check_out(out, arr.shape, out_dtype)
    _fp8.decode(arr, out, _lut(f, out_dtype), nthreads)
    return out


def as_codes(x, name: str, f: FloatFormat) -> np.ndarray:
    """``x`` as uint8 codes of ``f`` (uint8 arrays, or ml_dtypes arrays of ``f``)."""
    if x is None:
        raise TypeError(f"{name}: expected a uint8 array of FP8 codes, got None")
    arr = np.asarray(x)
    ml = _ml_dtypes_name(arr.dtype)
    if ml is not None:
        if _ML_DTYPES_NAMES.get(f.name) != ml:
            raise ValueError(f"{name}: an array of {ml} does not hold {f.name} codes")
        arr = arr.view(np.uint8)
    elif arr.dtype != np.uint8:
        raise TypeError(f"{name}: expected uint8 FP8 codes, got an array of dtype {arr.dtype}")
    if f.nbits < 8 and arr.size and int(arr.max()) >= (1 << f.nbits):
        raise ValueError(f"{name}: value {int(arr.max())} does not fit the {f.nbits}-bit "
                         f"format {f.name}")
    return arr


def as_ml_dtypes(codes, fmt="e5m2"):
    """View uint8 codes as the matching ml_dtypes array (needs ml_dtypes).

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> fp.as_ml_dtypes(np.array([56], np.uint8), "e4m3").dtype.name
    'float8_e4m3fn'
    """
    f = as_float_format(fmt)
    name = _ML_DTYPES_NAMES.get(f.name)
    if name is None:
        raise ValueError(f"fmt: {f.name} has no ml_dtypes counterpart")
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes is a test dependency
        raise ImportError("as_ml_dtypes needs the ml_dtypes package") from None
    arr = np.asarray(codes)
    if arr.dtype != np.uint8:
        raise TypeError(f"codes: expected uint8 codes, got an array of dtype {arr.dtype}")
    return arr.view(getattr(ml_dtypes, name))
