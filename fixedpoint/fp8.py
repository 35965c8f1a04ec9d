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
from . import dask_arrays
from ._checks import check_choice, check_out, float_source, ml_dtypes_name, resolve_threads, seed_value
from .formats import E2M1, E2M3, E3M2, E4M3, E4M3FNUZ, E5M2, E5M2FNUZ, FloatFormat, as_format

__all__ = ["FloatCodes", "to_fp8", "from_fp8", "as_ml_dtypes", "ROUNDING_MODES", "OVERFLOW_MODES",
           "format_params", "codes_and_format", "check_overflow"]

#: Rounding modes of the conversion: one line each.
ROUNDING_MODES = {
    "nearest_even": "round to the nearest representable value, ties to the even code",
    "toward_zero": "truncate the magnitude (finite overflow gives +-max, as IEEE)",
    "stochastic": "round up with probability equal to the remainder's fraction of a step "
                  "(seeded, counter-based: reproducible and independent of threads)",
}

#: What happens beyond the largest finite value: one line each.
OVERFLOW_MODES = {
    "saturate": "+-max for overflow and +-Inf; NaN to the positive NaN code (+max without NaN), "
                "as Hopper's cvt.rn.satfinite",
    "nonfinite": "overflow to +-Inf, or to NaN where the format has no Inf; NaN keeps its sign "
                 "(PyTorch's casts)",
}

# ml_dtypes counterparts, keyed by the format's fields (formats compare by fields)
_ML_DTYPES_NAMES = {
    E5M2: "float8_e5m2", E4M3: "float8_e4m3fn", E4M3FNUZ: "float8_e4m3fnuz",
    E5M2FNUZ: "float8_e5m2fnuz", E3M2: "float6_e3m2fn", E2M3: "float6_e2m3fn",
    E2M1: "float4_e2m1fn",
}
_ML_DTYPES_FORMATS = {v: k for k, v in _ML_DTYPES_NAMES.items()}


class FloatCodes(np.ndarray):
    """uint8 codes of a minifloat format that carry the format with them.

    An ``ndarray`` subclass: NumPy functions accept it, slices, views, copies
    and reshapes keep :attr:`fmt`, and arithmetic on it (any ufunc) returns
    a plain array, since the result is no longer a code of the format.

    Parameters
    ----------
    codes : array_like of uint8
    fmt : str or FloatFormat

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> c = fp.to_fp8(np.array([1.0, -2.0], np.float32), "e4m3")
    >>> c
    FloatCodes([ 56, 192], dtype=uint8, fmt='e4m3')
    >>> c[1:].fmt.name, type(c + 1).__name__
    ('e4m3', 'ndarray')
    >>> fp.FloatCodes(np.array([0x3C], np.uint8), "e5m2").fmt.max_value
    57344.0
    """

    def __new__(cls, codes, fmt):
        arr = np.asarray(codes)
        if arr.dtype != np.uint8:
            raise TypeError(f"codes: expected uint8 codes, got an array of dtype {arr.dtype}")
        f = as_format(fmt, "fmt", "float")
        if f.nbits < 8 and arr.size and int(arr.max()) >= (1 << f.nbits):
            raise ValueError(f"codes: value {int(arr.max())} does not fit the {f.nbits}-bit "
                             f"format {f.name}")
        obj = arr.view(cls)
        obj._fmt = f
        return obj

    def __array_finalize__(self, obj):
        self._fmt = getattr(obj, "_fmt", None)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        args = [x.view(np.ndarray) if isinstance(x, FloatCodes) else x for x in inputs]
        if out is not None:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, FloatCodes) else o
                                  for o in out)
        return getattr(ufunc, method)(*args, **kwargs)

    def __reduce__(self):
        # keep the format through pickling (multiprocessing, Dask workers)
        rebuild, args, state = super().__reduce__()
        return rebuild, args, (state, self._fmt)

    def __setstate__(self, state):
        base, fmt = state
        super().__setstate__(base)
        self._fmt = fmt

    @property
    def fmt(self) -> FloatFormat | None:
        """The format of the codes (None for a bare view made without one)."""
        return self._fmt

    def __repr__(self) -> str:
        base = repr(self.view(np.ndarray))
        name = self._fmt.name if self._fmt is not None else None
        return "FloatCodes" + base[len("array"):-1] + f", fmt={name!r})"


def codes_and_format(x, fmt, name: str = "codes"):
    """``(uint8 ndarray, FloatFormat)`` of codes given as a :class:`FloatCodes`, an
    ml_dtypes float8/6/4 array, or a plain uint8 array together with ``fmt``.

    A format given with codes that carry one must agree with it (by fields).
    """
    if x is None:
        raise TypeError(f"{name}: expected minifloat codes, got None")
    f = None if fmt is None else as_format(fmt, "fmt" if name == "codes" else f"fmt ({name})",
                                           "float")
    if isinstance(x, FloatCodes) and x.fmt is not None:
        own = x.fmt
        arr = x.view(np.ndarray)
    else:
        arr = np.asarray(x)
        own = _ML_DTYPES_FORMATS.get(ml_dtypes_name(arr.dtype))
        if own is not None:
            arr = arr.view(np.uint8)
        elif ml_dtypes_name(arr.dtype) is not None:
            raise TypeError(f"{name}: an array of {arr.dtype} does not hold minifloat codes")
        elif arr.dtype != np.uint8:
            raise TypeError(f"{name}: expected uint8 minifloat codes, got an array of dtype "
                            f"{arr.dtype}")
    if own is not None and f is not None and own != f:
        raise ValueError(f"{name}: the codes are {own.name} codes, but fmt says {f.name}")
    f = own if own is not None else f
    if f is None:
        raise TypeError(f"{name}: plain uint8 codes carry no format: give fmt, or pass the "
                        f"FloatCodes that to_fp8 returns")
    if f.nbits < 8 and arr.size and int(arr.max()) >= (1 << f.nbits):
        raise ValueError(f"{name}: value {int(arr.max())} does not fit the {f.nbits}-bit "
                         f"format {f.name}")
    return arr, f


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
        nan = (mx, mx)                            # PTX satfinite: NaN -> +max
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


def check_overflow(overflow, f: FloatFormat) -> bool:
    """True for "saturate"; refuses "nonfinite" for formats without Inf and NaN."""
    check_choice(overflow, "overflow", OVERFLOW_MODES)
    if overflow == "nonfinite" and f.nan is None and not f.inf:
        raise ValueError(f"overflow: {f.name} has neither Inf nor NaN, so nothing to overflow to; "
                         f"use 'saturate'")
    return overflow == "saturate"


def to_fp8(x, fmt, *, overflow="saturate", rounding="nearest_even", seed=None, out=None,
           double_rounding=False, num_threads=None):
    """Convert floats to FP8 (or any :class:`FloatFormat`) codes.

    Parameters
    ----------
    x : array_like
        float16, float32, float64, or ml_dtypes bfloat16/float8 values.  Each
        value is rounded once, from its own precision.
    fmt : str or FloatFormat
        ``"e5m2"``, ``"e4m3"`` (OCP E4M3FN), ``"e4m3fnuz"``, ``"e5m2fnuz"``,
        ``"e3m2"``, ``"e2m3"``, ``"e2m1"`` or a FloatFormat.  Required.
    overflow : {"saturate", "nonfinite"}
        See ``OVERFLOW_MODES``: the Hopper ``satfinite`` conversion (default) or
        PyTorch's (overflow to Inf, or NaN without Inf).
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
    FloatCodes, the shape of ``x`` (``out`` itself when given); codes of
    formats narrower than 8 bits sit in the low bits.

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> fp.to_fp8(np.array([1.0, 464.0, 465.0, 1e9], np.float32), "e4m3", overflow="nonfinite")
    FloatCodes([ 56, 126, 127, 127], dtype=uint8, fmt='e4m3')
    >>> fp.to_fp8(np.array([1e9, np.nan], np.float32), "e5m2")
    FloatCodes([123, 127], dtype=uint8, fmt='e5m2')
    """
    if dask_arrays.is_dask(x):
        return dask_arrays.to_fp8(to_fp8, x, fmt, overflow=overflow, rounding=rounding, seed=seed, out=out, double_rounding=double_rounding, num_threads=num_threads)
    f = as_format(fmt, "fmt", "float")
    saturate = check_overflow(overflow, f)
    check_choice(rounding, "rounding", ROUNDING_MODES)
    if not isinstance(double_rounding, (bool, np.bool_)):
        raise TypeError(f"double_rounding: expected a bool, got {type(double_rounding).__name__}")
    nthreads = resolve_threads(num_threads)
    seed_v = seed_value(seed) if rounding == "stochastic" else 0
    src = float_source(x, "x", double_rounding=bool(double_rounding))
    result = check_out(out, src.shape, np.dtype(np.uint8))
    _fp8.encode(src.reshape(-1), result.reshape(-1), format_params(f, saturate), rounding, seed_v,
                nthreads)
    if isinstance(result, FloatCodes):
        result._fmt = f
        return result
    if out is not None:
        return result
    return FloatCodes(result, f)


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


def from_fp8(codes, fmt=None, *, dtype=np.float32, out=None, num_threads=None):
    """Decode FP8 (or other minifloat) codes to float16, float32 or float64.

    Decoding is exact (values of formats wider than float16's range round
    once, to nearest even, when ``dtype`` is float16).  NaN codes give the
    default quiet NaN with the code's sign.

    Parameters
    ----------
    codes : FloatCodes, ml_dtypes float8/6/4 array, or uint8 array with ``fmt``
    fmt : str or FloatFormat, optional
        The codes' format: taken from ``codes`` when they carry it (a format
        given as well must agree); required for plain uint8 codes.
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
    >>> fp.from_fp8(fp.to_fp8(np.array([1.0, 448.0]), "e4m3"))
    array([  1., 448.], dtype=float32)
    """
    if dask_arrays.is_dask(codes):
        return dask_arrays.from_fp8(from_fp8, codes, fmt, dtype=dtype, out=out, num_threads=num_threads)
    arr, f = codes_and_format(codes, fmt)
    nthreads = resolve_threads(num_threads)
    try:
        out_dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected float16, float32 or float64, got {dtype!r}") from None
    if out_dtype not in (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype: expected float16, float32 or float64, got {out_dtype}")
    arr = np.asarray(arr, order="C")
    result = check_out(out, arr.shape, out_dtype)
    lut = _lut(f, out_dtype)
    _fp8.decode(arr.reshape(-1), result.reshape(-1).view(lut.dtype), lut, nthreads)
    return result


def as_ml_dtypes(codes, fmt=None):
    """View codes as the matching ml_dtypes array (needs ml_dtypes).

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> fp.as_ml_dtypes(fp.to_fp8(np.array([1.0]), "e4m3")).dtype.name
    'float8_e4m3fn'
    """
    arr, f = codes_and_format(codes, fmt)
    name = _ML_DTYPES_NAMES.get(f)
    if name is None:
        raise ValueError(f"fmt: {f.name} has no ml_dtypes counterpart")
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes is a test dependency
        raise ImportError("as_ml_dtypes needs the ml_dtypes package (pip install ml_dtypes)") from None
    return arr.view(getattr(ml_dtypes, name))
