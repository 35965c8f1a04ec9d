"""Number formats: fixed-width integers and minifloats of at most 8 bits.

An :class:`IntFormat` is a two's complement (or unsigned) integer of 2 to 16
bits, optionally with the narrow ("symmetric") range that drops the most
negative value.  A :class:`FloatFormat` is a sign bit, ``exp_bits`` exponent
bits and ``man_bits`` mantissa bits with a bias and one of the NaN/Inf
encodings used by the OCP and vendor formats.  Both accept the usual names
as strings (``"int8"``, ``"uint4"``, ``"e4m3"``, ``"e5m2fnuz"``, ...);
:func:`as_format` is the one place where names are read.  Formats compare by
their fields, never by their names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

__all__ = ["IntFormat", "FloatFormat", "as_format", "FLOAT_FORMATS"]


@dataclass(frozen=True)
class IntFormat:
    """A signed or unsigned integer format of ``bits`` bits (2 to 16).

    Parameters
    ----------
    bits : int
        Width in bits, 2 to 16.
    signed : bool
        Two's complement (default) or unsigned.
    narrow : bool
        Narrow ("symmetric") range: drop the most negative value, so INT8
        holds [-127, 127].  Signed formats only.

    Examples
    --------
    >>> IntFormat(8).min, IntFormat(8).max
    (-128, 127)
    >>> IntFormat(8, narrow=True).min
    -127
    >>> as_format("uint4").max
    15
    """

    bits: int
    signed: bool = True
    narrow: bool = False

    def __post_init__(self):
        if not isinstance(self.bits, (int, np.integer)) or isinstance(self.bits, bool):
            raise TypeError(f"IntFormat: bits must be an int, got {type(self.bits).__name__}")
        if not 2 <= self.bits <= 16:
            raise ValueError(f"IntFormat: bits must be between 2 and 16, got {self.bits}")
        if self.narrow and not self.signed:
            raise ValueError("IntFormat: narrow range applies to signed formats only")
        object.__setattr__(self, "bits", int(self.bits))
        object.__setattr__(self, "signed", bool(self.signed))
        object.__setattr__(self, "narrow", bool(self.narrow))

    @property
    def min(self) -> int:
        """Smallest representable value."""
        if not self.signed:
            return 0
        return -(1 << (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def max(self) -> int:
        """Largest representable value."""
        return (1 << (self.bits - (1 if self.signed else 0))) - 1

    @property
    def dtype(self) -> np.dtype:
        """The smallest NumPy integer dtype that holds the format."""
        if self.bits <= 8:
            return np.dtype(np.int8 if self.signed else np.uint8)
        return np.dtype(np.int16 if self.signed else np.uint16)

    @property
    def wide_dtype(self) -> np.dtype:
        """The smallest NumPy integer dtype that holds any exact product."""
        bits = 2 * self.bits
        if self.signed:
            return np.dtype(np.int8 if bits <= 8 else np.int16 if bits <= 16 else np.int32)
        return np.dtype(np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32)

    @property
    def name(self) -> str:
        base = f"{'' if self.signed else 'u'}int{self.bits}"
        return base + ("_narrow" if self.narrow else "")

    def __str__(self) -> str:
        return f"{self.name} [{self.min}, {self.max}]"


_INT_NAME = re.compile(r"^(u?)int(\d+)(_narrow)?$")


# ---------------------------------------------------------------------------
# Minifloats

_NAN_KINDS = ("ieee", "all_ones", "neg_zero", None)


@dataclass(frozen=True)
class FloatFormat:
    """A minifloat of at most 8 bits: sign, ``exp_bits`` exponent, ``man_bits`` mantissa.

    Parameters
    ----------
    exp_bits, man_bits : int
        Field widths; ``1 + exp_bits + man_bits <= 8`` and ``exp_bits >= 1``.
    bias : int, optional
        Exponent bias; default ``2**(exp_bits - 1) - 1``.
    inf : bool
        Whether the all-ones exponent with a zero mantissa encodes infinity
        (IEEE style, as E5M2).  Requires ``nan="ieee"``.
    nan : {"ieee", "all_ones", "neg_zero", None}
        ``"ieee"``: all-ones exponent with a nonzero mantissa is NaN (E5M2).
        ``"all_ones"``: only ``S.111..1`` is NaN, the rest of the top binade
        is finite (OCP E4M3FN).  ``"neg_zero"``: the code ``1000 0000`` (minus
        zero) is the only NaN and there is no -0 (the FNUZ formats).
        ``None``: no NaN at all (FP6, FP4).
    name : str, optional
        A label used in messages.  It takes no part in comparisons: two
        formats with the same fields are equal whatever their names.

    Examples
    --------
    >>> e4m3 = FloatFormat(4, 3, nan="all_ones", inf=False)
    >>> e4m3.max_value
    448.0
    >>> e4m3 == as_format("e4m3"), e4m3.name
    (True, 'e4m3fn')
    >>> as_format("e5m2").max_value
    57344.0
    """

    exp_bits: int
    man_bits: int
    bias: int | None = None
    inf: bool = True
    nan: str | None = "ieee"
    name: str = field(default="", compare=False)

    def __post_init__(self):
        for attr in ("exp_bits", "man_bits"):
            v = getattr(self, attr)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise TypeError(f"FloatFormat: {attr} must be an int, got {type(v).__name__}")
        e, m = int(self.exp_bits), int(self.man_bits)
        if e < 1 or m < 0 or 1 + e + m > 8:
            raise ValueError(
                f"FloatFormat: 1 + exp_bits + man_bits must fit in 8 bits with exp_bits >= 1, "
                f"got exp_bits={e}, man_bits={m}")
        bias = (1 << (e - 1)) - 1 if self.bias is None else self.bias
        if not isinstance(bias, (int, np.integer)) or isinstance(bias, bool):
            raise TypeError(f"FloatFormat: bias must be an int, got {type(bias).__name__}")
        if self.nan not in _NAN_KINDS:
            raise ValueError(f"FloatFormat: nan must be one of {_NAN_KINDS}, got {self.nan!r}")
        if self.inf and self.nan != "ieee":
            raise ValueError("FloatFormat: inf=True needs nan='ieee' (IEEE-style top binade)")
        if self.nan == "ieee" and e < 2:
            raise ValueError("FloatFormat: an IEEE-style top binade needs exp_bits >= 2")
        if self.nan == "all_ones" and e + m < 2:
            raise ValueError("FloatFormat: nan='all_ones' needs at least 2 exponent+mantissa bits")
        object.__setattr__(self, "exp_bits", e)
        object.__setattr__(self, "man_bits", m)
        object.__setattr__(self, "bias", int(bias))
        object.__setattr__(self, "inf", bool(self.inf))
        # Every value must be exact in float32 (decoding is exact) and the
        # float32 kernel needs min normal >= 2^-126.
        if 1 - self.bias < -126 or self.emax > 127:
            raise ValueError(
                f"FloatFormat: bias {self.bias} puts the range outside float32 "
                f"(need 1 - bias >= -126 and a largest exponent <= 127)")
        if not self.name:
            object.__setattr__(self, "name", self._default_name())

    def _default_name(self) -> str:
        suffix = {"ieee": "", "all_ones": "fn", "neg_zero": "fnuz", None: "fn_nonan"}[self.nan]
        default_bias = (1 << (self.exp_bits - 1)) - 1
        b = "" if self.bias == default_bias else f"_b{self.bias}"
        return f"e{self.exp_bits}m{self.man_bits}{suffix}{b}"

    # --- derived quantities -------------------------------------------------
    @property
    def nbits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal number."""
        return 1 - self.bias

    @property
    def max_exp_field(self) -> int:
        return (1 << self.exp_bits) - 1

    @property
    def max_code(self) -> int:
        """Magnitude code (sign bit clear) of the largest finite value."""
        top = (1 << (self.exp_bits + self.man_bits)) - 1   # all ones
        if self.nan == "ieee":
            return top - (1 << self.man_bits)               # exponent all ones - 1, mantissa all ones
        if self.nan == "all_ones":
            return top - 1
        return top                                          # neg_zero or no NaN

    @property
    def emax(self) -> int:
        return (self.max_code >> self.man_bits) - self.bias

    @property
    def max_value(self) -> float:
        return float(self.decode_exact(self.max_code))

    @property
    def min_normal(self) -> float:
        return 2.0 ** self.emin

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.man_bits)

    @property
    def sign_bit(self) -> int:
        return 1 << (self.exp_bits + self.man_bits)

    def is_nan_code(self, code: int) -> bool:
        mag = code & (self.sign_bit - 1)
        if self.nan == "ieee":
            return (mag >> self.man_bits) == self.max_exp_field and (mag & ((1 << self.man_bits) - 1)) != 0
        if self.nan == "all_ones":
            return mag == self.sign_bit - 1
        if self.nan == "neg_zero":
            return code == self.sign_bit
        return False

    def is_inf_code(self, code: int) -> bool:
        mag = code & (self.sign_bit - 1)
        return self.inf and mag == (self.max_exp_field << self.man_bits)

    def decode_exact(self, code: int):
        """The value of ``code`` as a Fraction, or a float for NaN/Inf."""
        if not 0 <= code < (1 << self.nbits):
            raise ValueError(f"code {code} does not fit {self.nbits} bits")
        if self.is_nan_code(code):
            return float("nan")
        sign = -1 if code & self.sign_bit else 1
        if self.is_inf_code(code):
            return sign * float("inf")
        mag = code & (self.sign_bit - 1)
        ef = mag >> self.man_bits
        mf = mag & ((1 << self.man_bits) - 1)
        if ef == 0:
            value = Fraction(mf, 1 << self.man_bits) * Fraction(2) ** self.emin
        else:
            value = (1 + Fraction(mf, 1 << self.man_bits)) * Fraction(2) ** (ef - self.bias)
        return sign * value

    def __str__(self) -> str:
        return self.name


E5M2 = FloatFormat(5, 2, inf=True, nan="ieee", name="e5m2")
E4M3 = FloatFormat(4, 3, inf=False, nan="all_ones", name="e4m3")
E4M3FNUZ = FloatFormat(4, 3, bias=8, inf=False, nan="neg_zero", name="e4m3fnuz")
E5M2FNUZ = FloatFormat(5, 2, bias=16, inf=False, nan="neg_zero", name="e5m2fnuz")
E3M2 = FloatFormat(3, 2, inf=False, nan=None, name="e3m2")
E2M3 = FloatFormat(2, 3, inf=False, nan=None, name="e2m3")
E2M1 = FloatFormat(2, 1, inf=False, nan=None, name="e2m1")

FLOAT_FORMATS = {
    "e5m2": E5M2,
    "e4m3": E4M3,
    "e4m3fn": E4M3,
    "e4m3fnuz": E4M3FNUZ,
    "e5m2fnuz": E5M2FNUZ,
    "e3m2": E3M2,
    "fp6_e3m2": E3M2,
    "e2m3": E2M3,
    "fp6_e2m3": E2M3,
    "e2m1": E2M1,
    "fp4_e2m1": E2M1,
}


_PARSED: dict = {}


def as_format(fmt, argname: str = "fmt", kind: str | None = None):
    """Turn ``fmt`` (a name or a format object) into an :class:`IntFormat` or
    :class:`FloatFormat`.

    Parameters
    ----------
    fmt : str, IntFormat or FloatFormat
        ``"int2"`` .. ``"int16"``, ``"uint2"`` .. ``"uint16"`` (signed ones with an
        optional ``"_narrow"``), or a float format name (``FLOAT_FORMATS``).
    argname : str
        The argument's name, for error messages.
    kind : {None, "int", "float"}
        Accept only integer or only float formats.

    Examples
    --------
    >>> as_format("uint4").max
    15
    >>> as_format("e5m2").max_value
    57344.0
    >>> as_format("int8", kind="float")
    Traceback (most recent call last):
    ...
    ValueError: fmt: expected a float format (e.g. 'e4m3'), got the integer format int8
    """
    if fmt is None:
        raise TypeError(f"{argname}: a format is required (a name such as 'int8' or 'e4m3', "
                        f"or a format object); there is no default")
    if isinstance(fmt, str) and fmt in _PARSED:
        fmt = _PARSED[fmt]
    if isinstance(fmt, str):
        name = fmt
        key = fmt.strip().lower()
        m = _INT_NAME.match(key)
        if m and 2 <= int(m.group(2)) <= 16:
            fmt = IntFormat(int(m.group(2)), signed=not m.group(1), narrow=bool(m.group(3)))
        elif key in FLOAT_FORMATS:
            fmt = FLOAT_FORMATS[key]
        else:
            raise ValueError(
                f"{argname}: unknown format {fmt!r}; expected an integer format ('int2'..'int16', "
                f"'uint2'..'uint16', signed ones optionally with '_narrow') or one of "
                f"{sorted(FLOAT_FORMATS)}")
        if len(_PARSED) < 256:          # names parsed once (formats are immutable)
            _PARSED[name] = fmt
    elif not isinstance(fmt, (IntFormat, FloatFormat)):
        raise TypeError(f"{argname}: expected a format name or an IntFormat/FloatFormat, got "
                        f"{type(fmt).__name__}")
    if kind == "int" and not isinstance(fmt, IntFormat):
        raise ValueError(f"{argname}: expected an integer format (e.g. 'int8'), got the float "
                         f"format {fmt.name}")
    if kind == "float" and not isinstance(fmt, FloatFormat):
        raise ValueError(f"{argname}: expected a float format (e.g. 'e4m3'), got the integer "
                         f"format {fmt.name}")
    return fmt


def int_format_pair(fmt, pair: str = "(fmt_a, fmt_b)"):
    """One integer format for both operands, or a pair of them: ``(fa, fb)``.
    ``pair`` names the two in the error for a sequence of the wrong length."""
    if isinstance(fmt, (tuple, list)):
        if len(fmt) != 2:
            raise ValueError(f"fmt: expected one format or a pair {pair}, got {len(fmt)} formats")
        return as_format(fmt[0], "fmt", "int"), as_format(fmt[1], "fmt", "int")
    f = as_format(fmt, "fmt", "int")
    return f, f
