"""Hypothesis fuzzing of the compiled conversion and quantization kernels
against the slow reference: random shapes (0- and 1-sized dimensions too),
strides, byte orders, source dtypes and extreme values (issue 8)."""
import numpy as np
from hypothesis import given, strategies as st

import fixedpoint as fp
from fixedpoint import _reference as ref
from fixedpoint.formats import FLOAT_FORMATS

EXTREMES = [0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 3.4e38, -3.4e38, 448.0, 464.0, 465.0,
            57344.0, 61440.0, 2.0**-9, 2.0**-10, 2.0**-16, 2.0**-17]


@st.composite
def float_arrays(draw, allow_nan=True):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(0, 6)) for _ in range(ndim))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    vals = rng.standard_normal(n) * 10.0 ** rng.integers(-12, 8, n)
    pick = rng.random(n) < 0.3
    vals[pick] = rng.choice(EXTREMES, int(pick.sum()))
    if allow_nan and n:
        vals[rng.random(n) < 0.05] = np.nan
    dtype = draw(st.sampled_from(["<f4", ">f4", "<f8", ">f8", "<f2"]))
    with np.errstate(over="ignore"):            # overflow to Inf in float16/32 is wanted
        x = vals.reshape(shape).astype(dtype)
    # a strided or reversed view of a larger array
    if x.ndim and x.shape[-1] > 1 and draw(st.booleans()):
        big = np.repeat(x, 2, axis=-1)
        x = big[..., ::2] if draw(st.booleans()) else big[..., ::-2]
    return x


@given(float_arrays(), st.sampled_from(["e5m2", "e4m3", "e4m3fnuz", "e5m2fnuz", "e2m3"]),
       st.booleans(), st.sampled_from(["nearest_even", "toward_zero"]))
def test_to_fp8_against_reference(x, name, saturate, rounding):
    f = FLOAT_FORMATS[name]
    if f.nan is None:
        x = np.where(np.isnan(x), 0, x).astype(x.dtype)
    got = fp.to_fp8(x, f, saturate=saturate, rounding=rounding)
    assert got.shape == x.shape
    src = np.asarray(x, dtype=np.float64).ravel()       # float16/32 widen exactly
    want = [ref.encode_minifloat(float(v), f.exp_bits, f.man_bits, f.bias, f.inf, f.nan, saturate,
                                 rounding) for v in src]
    np.testing.assert_array_equal(got.ravel(), np.array(want, dtype=np.uint8))
    # decoding what we encoded gives back an exactly representable value
    dec = fp.from_fp8(got, f, np.float64)
    for c, d in zip(got.ravel()[:50], dec.ravel()[:50]):
        v = f.decode_exact(int(c))
        assert (np.isnan(d) and isinstance(v, float) and np.isnan(v)) or d == float(v)


@given(float_arrays(allow_nan=False), st.sampled_from(["int8", "uint8", "int4", "uint4", "int2"]),
       st.sampled_from(["nearest_even", "toward_zero", "floor", "nearest_away"]),
       st.floats(1e-3, 1e3))
def test_quantize_given_scale_against_reference(x, name, rounding, scale):
    x = np.where(np.isfinite(x), x, 0).astype(x.dtype)
    f = fp.formats.as_int_format(name)
    s32 = np.float32(scale)
    zp = 1 if not f.signed else -1
    q = fp.quantize(x, f, scale=s32, zero_point=zp, rounding=rounding)
    assert q.codes.shape == x.shape and q.codes.dtype == f.dtype
    # ONNX QuantizeLinear: division in the input's precision (float32 for float16)
    xs = np.asarray(x, dtype=np.float64 if x.dtype.itemsize == 8 else np.float32)
    with np.errstate(over="ignore"):            # overflow to Inf saturates: intended
        quot = (xs / xs.dtype.type(s32)).astype(np.float64).ravel()
    from fractions import Fraction

    def rnd(v):
        fr = Fraction(v)
        fl = fr.numerator // fr.denominator
        rem = fr - fl
        if rounding == "floor":
            return fl
        if rounding == "toward_zero":
            return fl if fr >= 0 else -((-fr.numerator) // fr.denominator)
        if rem > Fraction(1, 2):
            return fl + 1
        if rem < Fraction(1, 2):
            return fl
        if rounding == "nearest_away":
            return fl + 1 if fr > 0 else fl
        return fl if fl % 2 == 0 else fl + 1
    want = [min(max(rnd(v) + zp, f.min), f.max) if np.isfinite(v) else (f.max if v > 0 else f.min)
            for v in quot]
    np.testing.assert_array_equal(q.codes.ravel().astype(np.int64), want)
    # packing round trip for the sub-byte formats
    if f.bits < 8:
        back = fp.QTensor.unpack(q.pack(), f, x.shape, q.scale, q.zero_point)
        np.testing.assert_array_equal(back.codes, q.codes)
