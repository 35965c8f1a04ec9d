"""Slow reference implementations, written from the specifications.

Everything here works on Python integers (and ``fractions.Fraction`` for
floating point), one element at a time, so that it is obviously right and
independent of the compiled kernels it checks.  It is far too slow for real
work; the tests compare the fast kernels against it.
"""
from __future__ import annotations

from fractions import Fraction
import bisect
import functools
import math

import numpy as np

# ---------------------------------------------------------------------------
# Integers (docs/semantics.md sections 1-2)


def int_range(bits: int, signed: bool = True, narrow: bool = False):
    """(min, max) of a two's complement or unsigned integer of ``bits`` bits."""
    if signed:
        return -(2 ** (bits - 1)) + (1 if narrow else 0), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def saturate_int(v: int, lo: int, hi: int) -> int:
    """Clamp v to [lo, hi]."""
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


def wrap_int(v: int, bits: int, signed: bool = True) -> int:
    """v modulo 2**bits, read back as two's complement when signed."""
    r = v % (2 ** bits)            # Python's % is non-negative for a positive modulus
    if signed and r >= 2 ** (bits - 1):
        r -= 2 ** bits
    return r


def mul(a: int, b: int, bits: int, signed: bool, overflow: str, narrow: bool = False) -> int:
    lo, hi = int_range(bits, signed, narrow)
    p = a * b
    return saturate_int(p, lo, hi) if overflow == "saturate" else wrap_int(p, bits, signed)


def add(a: int, b: int, bits: int, signed: bool, overflow: str, narrow: bool = False) -> int:
    lo, hi = int_range(bits, signed, narrow)
    s = a + b
    return saturate_int(s, lo, hi) if overflow == "saturate" else wrap_int(s, bits, signed)


def accumulate(products, bits: int, overflow: str, block: int, init: int = 0):
    """Sum ``products`` in K order through a ``bits``-bit signed register.

    ``block`` products are summed exactly, then added into the register,
    which wraps or clamps.  Returns (value, number of adds that overflowed).
    """
    lo, hi = int_range(bits, True)
    acc, overflows = init, 0
    products = list(products)
    for start in range(0, len(products), block):
        exact = acc + sum(products[start:start + block])
        if exact < lo or exact > hi:
            overflows += 1
            acc = saturate_int(exact, lo, hi) if overflow == "saturate" else wrap_int(exact, bits)
        else:
            acc = exact
    return acc, overflows


def matmul(a, b, bits: int = 32, overflow: str = "wrap", block: int = 1, c=None):
    """A (M x K) @ B (K x N) element by element; returns (values, overflow counts)."""
    M, K = np.shape(a)
    N = np.shape(b)[1]
    a = [[int(v) for v in row] for row in np.asarray(a)]
    b = [[int(v) for v in row] for row in np.asarray(b)]
    out = np.zeros((M, N), dtype=object)
    cnt = np.zeros((M, N), dtype=object)
    for i in range(M):
        for j in range(N):
            init = 0 if c is None else int(np.asarray(c)[i, j])
            out[i, j], cnt[i, j] = accumulate((a[i][k] * b[k][j] for k in range(K)),
                                              bits, overflow, block, init)
    return out, cnt


# ---------------------------------------------------------------------------
# Minifloats (OCP OFP8 rev 1.0 rules, docs/semantics.md section 3), from scratch:
# the grid of representable magnitudes is enumerated from the format's
# fields and the input is placed on it with exact rational arithmetic.

@functools.lru_cache(maxsize=None)
def minifloat_grid(exp_bits: int, man_bits: int, bias: int, nan_kind):
    """Sorted list of (value, magnitude code) of every finite non-negative code."""
    out = []
    for code in range(2 ** (exp_bits + man_bits)):
        e, mnt = code >> man_bits, code % (2 ** man_bits)
        if nan_kind == "ieee" and e == 2 ** exp_bits - 1:
            continue                                    # Inf and NaN
        if nan_kind == "all_ones" and code == 2 ** (exp_bits + man_bits) - 1:
            continue                                    # the single NaN
        if e == 0:
            v = Fraction(mnt, 2 ** man_bits) * Fraction(2) ** (1 - bias)
        else:
            v = (1 + Fraction(mnt, 2 ** man_bits)) * Fraction(2) ** (e - bias)
        out.append((v, code))
    out.sort()
    return tuple(out)


def encode_minifloat(x, exp_bits, man_bits, bias, inf, nan_kind, saturate,
                     rounding="nearest_even", u=None):
    """Encode the real number x (a Fraction, or a float that may be NaN/Inf).

    ``u`` in [0, 1) is the uniform draw for stochastic rounding: round up when
    u < (x - lower) / (upper - lower).
    """
    sb = 2 ** (exp_bits + man_bits)
    grid = minifloat_grid(exp_bits, man_bits, bias, nan_kind)
    max_v, max_code = grid[-1]
    top = sb - 1
    inf_code = (2 ** exp_bits - 1) * 2 ** man_bits

    def nan_code(sign):
        if nan_kind == "neg_zero":
            return sb
        if nan_kind is None:
            if saturate:       # PTX cvt.rn.satfinite to FP6/FP4: NaN -> +max normal
                return max_code
            raise ValueError("no NaN in this format")
        return top if (saturate or not sign) else top | sb

    def overflow_code(sign, from_inf):
        if saturate or nan_kind is None or (rounding == "toward_zero" and not from_inf):
            return max_code | (sb if sign else 0)
        if nan_kind == "neg_zero":
            return sb
        if inf:
            return inf_code | (sb if sign else 0)
        return top | (sb if sign else 0)               # no Inf: NaN

    if isinstance(x, float) and math.isnan(x):
        return nan_code(math.copysign(1.0, x) < 0)
    if isinstance(x, float) and math.isinf(x):
        return overflow_code(x < 0, True)
    if isinstance(x, float):
        sign = math.copysign(1.0, x) < 0
        x = Fraction(x)
    else:
        sign = x < 0
    mag = abs(x)
    # the grid continues past max with max's own spacing 2^(e - bias - m),
    # and the code parity continues too (ties at the top go to the even code)
    e_max = max(max_code >> man_bits, 1)
    ulp_top = Fraction(2) ** (e_max - bias - man_bits)
    ext = list(grid) + [(max_v + ulp_top, max_code + 1)]
    lo_i = bisect.bisect_right([v for v, _ in ext], mag) - 1
    if mag >= ext[-1][0]:
        result = None                                   # beyond even the extended step
        if rounding == "toward_zero" and mag >= max_v:
            result = max_code
    else:
        (v0, c0), (v1, c1) = ext[lo_i], ext[lo_i + 1]
        if mag == v0:
            result = c0
        elif rounding == "toward_zero":
            result = c0
        elif rounding == "stochastic":
            result = c1 if u < (mag - v0) / (v1 - v0) else c0
        else:
            d0, d1 = mag - v0, v1 - mag
            result = c0 if d0 < d1 else c1 if d1 < d0 else (c0 if c0 % 2 == 0 else c1)
    if result is None or result > max_code:
        return overflow_code(sign, False)
    if result == 0 and (nan_kind == "neg_zero" or not sign):
        return 0
    return result | (sb if sign else 0)


# ---------------------------------------------------------------------------
# Calibration thresholds on a histogram of |x|, one candidate at a time
# (fixedpoint.calibrate vectorises these over candidates and blocks).

def entropy_threshold(mag, width, nlevels):
    """TensorRT's KL-divergence calibration, bin by bin as its description reads.

    For each candidate i >= nlevels: P = the first i bins with everything
    beyond folded into bin i - 1; Q = P merged into nlevels levels (runs of
    i // nlevels bins, the remainder joining the last level), each level's
    mass spread evenly over its nonzero bins of P.  The threshold is
    (i + 0.5) bin widths for the first i with the least KL(P || Q).
    """
    nbins = len(mag)
    best_i, best_kl = nbins, math.inf
    if sum(mag) == 0:
        return 0.0
    for i in range(nlevels, nbins + 1):
        p = [float(v) for v in mag[:i]]
        p[i - 1] += float(sum(mag[i:]))
        m = i // nlevels
        q = [0.0] * i
        for lv in range(nlevels):
            a = lv * m
            b = (lv + 1) * m if lv < nlevels - 1 else i
            nz = [j for j in range(a, b) if p[j] > 0]
            if nz:
                share = sum(p[a:b]) / len(nz)
                for j in nz:
                    q[j] = share
        tp, tq = sum(p), sum(q)
        kl = sum((p[j] / tp) * math.log((p[j] / tp) / (q[j] / tq)) for j in range(i) if p[j] > 0)
        if kl < best_kl:
            best_i, best_kl = i, kl
    return (best_i + 0.5) * width


def mse_threshold(mag, width, qmax, candidates=128):
    """The symmetric integer clipping threshold (among ``candidates`` evenly
    spaced up to the top nonzero bin) whose quantize-dequantize squared error
    over the histogram is least, one candidate at a time."""
    nz = [j for j, v in enumerate(mag) if v > 0]
    if not nz:
        return 0.0
    centers = [(j + 0.5) * width for j in range(len(mag))]
    top = centers[nz[-1]] + width / 2
    best_t, best_err = top, math.inf
    for k in range(1, candidates + 1):
        t = top * k / candidates
        s = t / qmax
        err = 0.0
        for c, n in zip(centers, mag):
            code = min(max(round(c / s), -qmax), qmax)        # round(): half to even
            err += n * (c - code * s) ** 2
        if err < best_err:
            best_t, best_err = t, err
    return best_t


# ---------------------------------------------------------------------------
# Tensor-core block accumulation (docs/semantics.md section 4), with Fractions.

def _fraction_exponent(x: Fraction) -> int:
    """floor(log2|x|) of a nonzero Fraction."""
    e = x.numerator.bit_length() - x.denominator.bit_length()
    if abs(x) < Fraction(2) ** e:
        e -= 1
    return e


def _trunc_to_grid(x: Fraction, step: Fraction) -> Fraction:
    """x truncated toward zero to a multiple of step."""
    q = abs(x) / step
    n = q.numerator // q.denominator
    return (n if x >= 0 else -n) * step


def _round_significant(x: Fraction, bits: int, mode: str) -> Fraction:
    """x rounded to `bits` significant bits (toward zero or nearest even)."""
    if x == 0:
        return Fraction(0)
    step = Fraction(2) ** (_fraction_exponent(x) - (bits - 1))
    if mode == "toward_zero":
        return _trunc_to_grid(x, step)
    q = x / step
    n, r = divmod(q.numerator, q.denominator)
    twice = 2 * r
    if twice > q.denominator or (twice == q.denominator and n % 2):
        n += 1
    return n * step


def _round_f32(x: Fraction) -> Fraction:
    """Nearest-even float32 (the values here stay in the normal range)."""
    return _round_significant(x, 24, "nearest_even")


def tensorcore_dot(a_vals, a_exps, b_vals, b_exps, block, frac_bits, product_exponent="sum",
                   final_rounding="toward_zero", promote_every=None, result_frac_bits=None):
    """One output element of the block-accumulation model.

    a_vals/b_vals: exact operand values (Fractions), a_exps/b_exps: their
    unbiased exponents as the format counts them (subnormals at emin).
    Returns the float32 accumulator value as a Fraction.
    """
    K = len(a_vals)
    if result_frac_bits is None:
        result_frac_bits = 23 if frac_bits is None else min(frac_bits, 23)
    unit = block or promote_every or max(K, 1)
    kp = -(-K // unit) * unit if K else 0
    acc, c = Fraction(0), Fraction(0)
    for k0 in range(0, kp, unit):
        terms = [(a_vals[k] * b_vals[k], a_exps[k] + b_exps[k])
                 for k in range(k0, min(k0 + unit, K)) if a_vals[k] != 0 and b_vals[k] != 0]
        if frac_bits is None:
            exact = sum((p for p, _ in terms), Fraction(0)) + c
            c = _round_significant(exact, result_frac_bits + 1, final_rounding)
        else:
            exps = [(_fraction_exponent(p) if product_exponent == "exact" else e) for p, e in terms]
            if c != 0:
                exps.append(_fraction_exponent(c))
            if exps:
                step = Fraction(2) ** (max(exps) - frac_bits)
                s = sum((_trunc_to_grid(p, step) for p, _ in terms), Fraction(0))
                s += _trunc_to_grid(c, step)
                c = _round_significant(s, result_frac_bits + 1, final_rounding)
        k1 = k0 + unit
        if promote_every and (k1 % promote_every == 0 or k1 >= kp):
            acc = _round_f32(acc + c)
            c = Fraction(0)
    return acc if promote_every else c


def fp8_matmul(a, b, fa, fb, acc):
    """A 2-D FP8 matrix product through the tensor-core model, element by element
    with :func:`tensorcore_dot`: the float32 accumulator values, unscaled."""
    from .formats import as_format
    fa, fb = as_format(fa, kind="float"), as_format(fb, kind="float")

    def decode(codes, f):
        vals, exps = [], []
        for code in codes:
            v = f.decode_exact(int(code))
            mag = int(code) & (f.sign_bit - 1)
            e = (mag >> f.man_bits)
            vals.append(v)
            exps.append(f.emin if e == 0 else e - f.bias)
        return vals, exps

    M, K = a.shape
    N = b.shape[1]
    rows = [decode(a[i], fa) for i in range(M)]
    cols = [decode(b[:, j], fb) for j in range(N)]
    out = np.zeros((M, N), np.float32)
    for i in range(M):
        for j in range(N):
            v = tensorcore_dot(rows[i][0], rows[i][1], cols[j][0], cols[j][1], acc.block,
                                   acc.frac_bits, acc.product_exponent, acc.final_rounding,
                                   acc.promote_every, acc.result_frac_bits)
            out[i, j] = np.float32(float(v))
            assert Fraction(float(out[i, j])) == v     # the model's values are float32
    return out


# ---------------------------------------------------------------------------
# Requantization (docs/semantics.md section 5), one Python integer at a time.

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def tflite_quantize_multiplier(real):
    """(q, shift) with real = q * 2^(shift - 31), q rounded half away from zero."""
    if real == 0:
        return 0, 0
    x = Fraction(real)
    shift = 0
    while x >= 1:                     # bring x into [0.5, 1)
        x /= 2
        shift += 1
    while x < Fraction(1, 2):
        x *= 2
        shift -= 1
    scaled = x * 2 ** 31
    q = math.floor(scaled + Fraction(1, 2))
    if q == 2 ** 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def gemmlowp_srdhm(a, b):
    """SaturatingRoundingDoublingHighMul for int32 a, b (Python ints)."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    total = ab + nudge
    q = abs(total) // (1 << 31)       # C++ division truncates toward zero
    return q if total >= 0 else -q


def gemmlowp_rounding_divide_by_pot(x, exponent):
    mask = (1 << exponent) - 1
    remainder = x & mask              # Python ints: two's complement semantics
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def tflite_multiply_by_quantized_multiplier(x, q, shift, single_rounding=False):
    if single_rounding:
        total = 31 - shift
        return (x * q + (1 << (total - 1))) >> total
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    xs = wrap_int(x * (1 << left), 32)          # int32 arithmetic in the C++ source
    return gemmlowp_rounding_divide_by_pot(gemmlowp_srdhm(xs, q), right)


# ---------------------------------------------------------------------------
# Requantization of LiteRT's kernel paths and the engines' output stage
# (fixedpoint.requant.REQUANT_METHODS), one Python integer at a time, written
# from the C++ sources' semantics.

def ruy_multiply_by_quantized_multiplier(x, q, shift):
    """ruy's x86 kernels (and TFLite's NEON output loops): the int32 left
    shift (wraps), the rounding doubling high multiply, then a rounding right
    shift whose ties go toward +infinity: ``(v + 2^(r-1)) >> r``."""
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    v = gemmlowp_srdhm(wrap_int(x * (1 << left), 32), q)
    return (v + (1 << right) // 2) >> right           # Python >> is floor: exact


def tflite_round_double(x, real):
    """``static_cast<int32_t>(round(static_cast<double>(x) * real))``, TFLite's
    reference FULLY_CONNECTED: the double product (rounded to nearest even),
    ``std::round`` (half away from zero), and x86's int32 conversion, which
    gives INT32_MIN ("integer indefinite") for anything outside int32."""
    p = Fraction(float(Fraction(x) * Fraction(real)))   # the IEEE double product
    r = math.floor(abs(p) + Fraction(1, 2))
    r = r if p >= 0 else -r
    return r if INT32_MIN <= r <= INT32_MAX else INT32_MIN


def float32_rescale(x, scale):
    """ONNX QLinearMatMul / XNNPACK: ``(float)x * (float)scale`` in float32,
    rounded half to even (an integer, not yet clamped; normal-range values)."""
    p = _round_f32(_round_f32(Fraction(x)) * _round_f32(Fraction(scale)))
    fl = math.floor(p)
    frac = p - fl
    if frac > Fraction(1, 2) or (frac == Fraction(1, 2) and fl % 2):
        fl += 1
    return fl


def requantize_value(x, method, multiplier, shift, zero_point, lo, hi):
    """One output code: the engines' arithmetic, then the output stage.

    The fixed-point methods and ``"float64"`` leave an int32 value; the engines
    add the zero point in int32 arithmetic (wrapping) and clamp to [lo, hi].
    ``"float"`` clamps to [lo - zp, hi - zp] before adding the zero point."""
    if method == "float":
        v = float32_rescale(x, multiplier)
        return int(min(max(v, lo - zero_point), hi - zero_point)) + zero_point
    if method == "float64":
        v = tflite_round_double(x, multiplier)
    elif method == "ruy":
        v = ruy_multiply_by_quantized_multiplier(x, multiplier, shift)
    else:
        v = wrap_int(tflite_multiply_by_quantized_multiplier(x, multiplier, shift,
                                                             method == "single"), 32)
    return min(max(wrap_int(v + zero_point, 32), lo), hi)


# ---------------------------------------------------------------------------
# Block-scaled formats (fixedpoint.blockscaled), from the specifications:
# OCP MX v1.0 (sections 5.4.1, 6.3), PTX cvt .ue8m0x2, the libraries' float32
# operation orders, and the tcgen05.mma model published with MMA-Sim
# (arXiv 2511.10909).  Exact rationals, one value at a time.

def f32_round(x) -> Fraction:
    """The float32 nearest to the rational x (ties to even, subnormals on the
    2^-149 grid); a float +-inf beyond the range."""
    x = Fraction(x)
    if x == 0:
        return Fraction(0)
    e = max(_fraction_exponent(x), -126)
    step = Fraction(2) ** (e - 23)
    q = abs(x) / step
    n, r = divmod(q.numerator, q.denominator)
    if 2 * r > q.denominator or (2 * r == q.denominator and n % 2):
        n += 1
    v = n * step
    if v >= Fraction(2) ** 128:
        return math.copysign(math.inf, x)
    return v if x > 0 else -v


def f32_op(a, b, op):
    """One IEEE float32 operation on float32 values given as Fractions (or
    +-inf / nan floats), rounded to nearest even."""
    if any(isinstance(v, float) for v in (a, b)):
        r = {"*": lambda: float(a) * float(b), "/": lambda: float(a) / float(b)
             if float(b) != 0 else (math.nan if float(a) == 0 or a != a else
                                    math.copysign(math.inf, float(a)) * math.copysign(1.0, float(b)))}[op]()
        return r if math.isinf(r) or r != r else Fraction(r)
    if op == "*":
        return f32_round(a * b)
    if b == 0:
        return math.nan if a == 0 else math.copysign(math.inf, a)
    return f32_round(Fraction(a) / b)


def e8m0_encode(x, rounding, overflow):
    """E8M0 code of x (a float or Fraction): rounding 'toward_zero' / 'up' /
    'nearest_away' (midpoints go up), overflow 'saturate' (PTX .satfinite:
    Inf and overflow -> 254, zero -> 0, sign ignored) or 'nonfinite'
    (ml_dtypes: Inf, overflow, zero and negatives -> 255)."""
    sat = overflow == "saturate"
    if isinstance(x, float) and math.isnan(x):
        return 255
    if isinstance(x, float) and math.isinf(x):
        return 254 if sat else 255
    x = Fraction(x)
    if x == 0 or (x < 0 and not sat):
        return 0 if sat else 255
    m = abs(x)
    k = _fraction_exponent(m)                       # 2^k <= m < 2^(k+1)
    lo = Fraction(2) ** k
    if rounding == "up" and m != lo:
        k += 1
    elif rounding == "nearest_away" and m - lo >= 2 * lo - m:
        k += 1
    k = max(k, -127)
    if k > 127:
        return 254 if sat else 255
    return k + 127


def minifloat_nearest_away(x, exp_bits, man_bits, bias, nan_kind, negative=None):
    """Saturating encode with round-to-nearest, ties away from zero (finite x;
    ``negative`` gives the sign of a zero)."""
    neg = (x < 0) if negative is None else negative
    x = Fraction(x)
    grid = minifloat_grid(exp_bits, man_bits, bias, nan_kind)
    sb = 2 ** (exp_bits + man_bits)
    mag = abs(x)
    best = None
    for i, (v, code) in enumerate(grid):
        if v >= mag:
            if i == 0 or v == mag:
                best = code
            else:
                v0, c0 = grid[i - 1]
                best = c0 if mag - v0 < v - mag else code
            break
    if best is None:
        best = grid[-1][1]
    if best == 0 and not neg:
        return 0
    return best | (sb if neg else 0)


MX_EMAX = {(4, 3): 8, (5, 2): 15, (3, 2): 4, (2, 3): 2, (2, 1): 2}


def mx_block(values, fmt, rule, rounding="nearest_even"):
    """One OCP MX block: (E8M0 scale code, element codes) of float32 ``values``
    (Python floats).  ``fmt`` is a FloatFormat or an IntFormat of 8 bits (MXINT8).
    Rules as fixedpoint.blockscaled.SCALE_RULES, computed from exact rationals."""
    from .formats import FloatFormat
    is_float = isinstance(fmt, FloatFormat)
    emax = MX_EMAX[(fmt.exp_bits, fmt.man_bits)] if is_float else 0
    if any(math.isnan(v) for v in values):
        amax = math.nan
    else:
        amax = max((abs(v) for v in values), default=0.0)
    if rule == "rceil":
        maxv = Fraction(fmt.max_value) if is_float else Fraction(127, 64)
        if math.isnan(amax) or math.isinf(amax):
            code = e8m0_encode(amax, "up", "saturate")
        else:
            code = e8m0_encode(f32_round(Fraction(amax) * f32_round(1 / maxv)), "up", "saturate")
    elif math.isnan(amax) or math.isinf(amax):
        code = 255
    elif amax == 0:
        code = 0
    else:
        a = Fraction(amax)
        k = _fraction_exponent(a)
        if rule == "ceil" and a != Fraction(2) ** k:
            k += 1
        if rule == "even":
            # round the float32 significand to man_bits, ties up, then floor
            e = max(k, -126)
            step = Fraction(2) ** (e - fmt.man_bits)
            r = math.floor(a / step + Fraction(1, 2)) * step
            k = _fraction_exponent(r) if r else -127
            if r >= Fraction(2) ** 128:
                k = None
        code = 255 if k is None else min(max(k - emax, -127), 127) + 127
    codes = []
    for v in values:
        if code == 255 or math.isnan(v):
            s = math.nan
        elif math.isinf(v):
            s = v
        else:
            s = Fraction(v) / Fraction(2) ** (code - 127)
            if s == 0:
                s = v                               # keeps the sign of zero
        if is_float:
            if not isinstance(s, float) and rounding == "nearest_away":
                codes.append(minifloat_nearest_away(s, fmt.exp_bits, fmt.man_bits, fmt.bias,
                                                    fmt.nan, math.copysign(1.0, v) < 0))
            else:
                codes.append(encode_minifloat(s, fmt.exp_bits, fmt.man_bits, fmt.bias, fmt.inf,
                                              fmt.nan, True, "nearest_even"))
        else:
            if isinstance(s, float) and (math.isnan(s) or math.isinf(s)):
                q = 0 if math.isnan(s) else (fmt.max if s > 0 else fmt.min)
            else:
                w = s * 64
                n = math.floor(w)
                r = w - n
                if rounding == "nearest_even":
                    n += 1 if (r > Fraction(1, 2) or (r == Fraction(1, 2) and n % 2)) else 0
                else:
                    n = (math.floor(abs(w) + Fraction(1, 2))) * (1 if w >= 0 else -1)
                q = min(max(n, fmt.min), fmt.max)
            codes.append(q)
    return code, codes


def _e4m3_sat(x):
    """E4M3 code (saturating, round to nearest even) of a float32 value."""
    return encode_minifloat(x, 4, 3, 7, False, "all_ones", True, "nearest_even")


def _e4m3_value(code):
    from .formats import E4M3
    return E4M3.decode_exact(code)


def nvfp4_block(values, amax_t, arithmetic):
    """One NVFP4 block of 16 float32 values (Python floats) and the tensor amax
    (a float): (E4M3 scale code, E2M1 codes, tensor decode factor), every float32
    operation rounded with f32_round in the library's order."""
    F = Fraction
    def e2m1(v):
        return encode_minifloat(v, 2, 1, 1, False, None, True, "nearest_even")
    finite = [v for v in values if not math.isnan(v)]
    if arithmetic == "encode_multiply":
        bam = max((abs(v) for v in finite), default=0.0)
        if amax_t == 0 or math.isinf(amax_t):
            s_enc = F(1)                                # 2688 / amax is Inf or 0: 1
        else:
            s_enc = f32_op(F(2688), F(amax_t), "/")
            if isinstance(s_enc, float):
                s_enc = F(float(np.finfo(np.float32).max))    # overflow: FLT_MAX
        s_dec = f32_op(F(1), s_enc, "/")
        t = f32_op(s_enc, f32_op(F(1), F(6), "/"), "*")
        bv = f32_op(F(bam) if not math.isinf(bam) else bam, t, "*")
        code = _e4m3_sat(bv if isinstance(bv, float) else bv)
        sv = _e4m3_value(code)
        p = f32_op(sv, s_dec, "*")
        inv = f32_op(F(1), p, "/")
        if isinstance(inv, float) or inv > F(float(np.finfo(np.float32).max)):
            inv = F(float(np.finfo(np.float32).max))
        out = []
        for v in values:
            if math.isnan(v):
                out.append(e2m1(math.nan))
                continue
            y = f32_op(v if math.isinf(v) else F(v), inv, "*")
            out.append(e2m1(y))
        return code, out, s_dec
    amax = max((abs(v) for v in values), default=0.0)
    s = f32_op(F(amax_t), F(2688), "/")
    if arithmetic == "decode_reciprocal":
        bs = f32_op(F(amax), F(6), "/")
        sbs = f32_op(bs, s, "/")
        sbs = min(max(sbs, F(1, 64)), F(448))
        code = _e4m3_sat(sbs)
        sv = _e4m3_value(code)
        mult = f32_op(f32_op(F(1), s, "/"), sv, "/")
        out = []
        for v in values:
            y = f32_op(F(v), mult, "*")
            y = min(max(y, F(-6)), F(6))
            out.append(e2m1(y))
        return code, out, s
    pbs = f32_op(F(amax), f32_op(F(6), s, "*"), "/")
    if pbs == 0:
        pbs = F(1)
    code = _e4m3_sat(pbs)
    sv = _e4m3_value(code)
    div = f32_op(sv, s, "*")
    return code, [e2m1(f32_op(F(v), div, "/")) for v in values], s


# --- tcgen05.mma as published with MMA-Sim ---------------------------------

def _rz_f32(x: Fraction):
    """x truncated toward zero to float32 (2^-149 grid below 2^-126); +-inf
    beyond; the published model's final normalisation."""
    if x == 0:
        return Fraction(0)
    e = _fraction_exponent(x)
    if e > 127:
        return math.copysign(math.inf, x)
    return _trunc_to_grid(x, Fraction(2) ** (max(e, -126) - 23))


def _model_exp(v, emin):
    """The published model's exponent of an operand value: floor(log2|v|),
    subnormals at the format's emin, zero at -126."""
    if v == 0:
        return -126
    return max(_fraction_exponent(v), emin)


def mmasim_fused(terms, c, frac):
    """One fused step: terms [(value, exponent)] and the float32 accumulator c
    (a Fraction): every term and c truncated to a multiple of 2^(E - frac), E
    the largest exponent; the exact sum truncated to float32."""
    ec = -126 if c == 0 else max(_fraction_exponent(c), -126)
    E = max([e for _, e in terms] + [ec])
    step = Fraction(2) ** (E - frac)
    s = _trunc_to_grid(c, step) + sum((_trunc_to_grid(v, step) for v, _ in terms), Fraction(0))
    return _rz_f32(s)


def _special(vals_a, vals_b, scale_nan, c):
    """IEEE class of a step with NaN/Inf (float) operands: 'nan', +-inf, or None."""
    if scale_nan or (isinstance(c, float) and math.isnan(c)):
        return "nan"
    pos = isinstance(c, float) and c > 0
    neg = isinstance(c, float) and c < 0
    for a, b in zip(vals_a, vals_b):
        if isinstance(a, float) or isinstance(b, float):
            p = float(a) * float(b)
            if p != p:
                return "nan"
            if math.isinf(p):
                pos, neg = pos or p > 0, neg or p < 0
    if pos and neg:
        return "nan"
    if pos or neg:
        return math.inf if pos else -math.inf
    return None


def tcgen05_f8_dot(a_codes, b_codes, fa, fb, sa_codes=None, sb_codes=None, c=0.0, frac=25,
                   step=32):
    """One output element of kind::f8f6f4 (no scales) or kind::mxf8f6f4 (one
    E8M0 scale code per step for a and for b).  Returns a Python float: the
    float32 value, or nan / +-inf."""
    K = len(a_codes)
    acc = Fraction(c) if not (math.isnan(c) or math.isinf(c)) else c
    for t, k0 in enumerate(range(0, max(K, 1) if K else 0, step)):
        ks = range(k0, min(k0 + step, K))
        va = [fa.decode_exact(int(a_codes[k])) for k in ks]
        vb = [fb.decode_exact(int(b_codes[k])) for k in ks]
        S, snan = 0, False
        if sa_codes is not None:
            snan = sa_codes[t] == 255 or sb_codes[t] == 255
            S = int(sa_codes[t]) - 127 + int(sb_codes[t]) - 127
        sp = _special(va, vb, snan, acc)
        if sp == "nan":
            return math.nan
        if sp is not None:
            acc = sp
            continue
        terms = [(a * b * Fraction(2) ** S,
                  _model_exp(a, fa.emin) + _model_exp(b, fb.emin) + S) for a, b in zip(va, vb)]
        if len(terms) < step:                   # zero padding: zero operands
            terms += [(Fraction(0), -126 - 126 + S)] * (step - len(terms))
        acc = mmasim_fused(terms, acc, frac)
    return acc if isinstance(acc, float) else float(acc)


def tcgen05_f4_dot(a_codes, b_codes, sa, sb, block, scale_kind, c=0.0):
    """One output element of kind::mxf4 / mxf4nvf4: E2M1 codes, scale codes per
    block (E8M0, or E4M3 whose sign is ignored), K steps of 64, 35 bits."""
    from .formats import E2M1, E4M3
    K = len(a_codes)
    Kp = -(-K // 64) * 64

    def scale(code):
        """(significand, exponent, is_nan) as the published model reads a scale."""
        if scale_kind == "e8m0":
            return (Fraction(1), int(code) - 127, code == 255)
        mag = int(code) & 0x7F
        if mag == 0x7F:
            return (Fraction(0), 0, True)
        v = E4M3.decode_exact(mag)
        if v == 0:
            return (Fraction(0), -126, False)
        e = max(_fraction_exponent(v), -6)
        return (v / Fraction(2) ** e, e, False)

    def val(codes, k):
        return E2M1.decode_exact(int(codes[k])) if k < K else Fraction(0)

    acc = Fraction(c) if not (math.isnan(c) or math.isinf(c)) else c
    for k0 in range(0, Kp, 64):
        groups = []
        snan = False
        for g in range(4):
            kg = k0 + 16 * g
            bi = kg // block
            ca = sa[bi] if bi < len(sa) else 0
            cb = sb[bi] if bi < len(sb) else 0
            m0, e0, n0 = scale(ca)
            m1, e1, n1 = scale(cb)
            snan = snan or n0 or n1
            s = sum((val(a_codes, k) * val(b_codes, k) for k in range(kg, kg + 16)), Fraction(0))
            groups.append((s * m0 * m1 * Fraction(2) ** (e0 + e1), e0 + e1))
        if snan or (isinstance(acc, float) and math.isnan(acc)):
            return math.nan
        if isinstance(acc, float):
            continue                                # Inf + finite (assumed)
        acc = mmasim_fused(groups, acc, 35)
    return acc if isinstance(acc, float) else float(acc)


def mmasim_wgmma_fp8(a_codes, b_codes, fa, fb):
    """One output element of Hopper FP8 wgmma as published with MMA-Sim: K
    steps of 32 chained through C (from 0), 13 fraction bits, the result
    truncated to 13 fraction bits (f32_e8m13)."""
    acc = Fraction(0)
    K = len(a_codes)
    for k0 in range(0, K, 32):
        ks = range(k0, min(k0 + 32, K))
        terms = []
        for k in ks:
            a = fa.decode_exact(int(a_codes[k]))
            b = fb.decode_exact(int(b_codes[k]))
            terms.append((a * b, _model_exp(a, fa.emin) + _model_exp(b, fb.emin)))
        ec = -126 if acc == 0 else max(_fraction_exponent(acc), -126)
        E = max([e for _, e in terms] + [ec])
        step = Fraction(2) ** (E - 13)
        s = _trunc_to_grid(acc, step) + sum((_trunc_to_grid(v, step) for v, _ in terms),
                                            Fraction(0))
        acc = Fraction(0) if s == 0 else _trunc_to_grid(
            s, Fraction(2) ** (max(_fraction_exponent(s), -126) - 13))
    return float(acc)
