"""Hypothesis fuzzing of the compiled conversion and quantization kernels
against the slow reference: random shapes (0- and 1-sized dimensions too),
strides, byte orders, source dtypes and extreme values (issue 8)."""
import numpy as np
from hypothesis import given, strategies as st

import fixedpoint as fp
from fixedpoint import _reference as ref
from fixedpoint.formats import FLOAT_FORMATS, as_format

import ml_dtypes


EXTREMES = [0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 3.4e38, -3.4e38, 448.0, 464.0, 465.0,
            57344.0, 61440.0, 2.0**-9, 2.0**-10, 2.0**-16, 2.0**-17]


SOURCE_DTYPES = ["<f4", ">f4", "<f8", ">f8", "<f2", ">f2", "bfloat16", "float8_e4m3fn", "float8_e5m2"]


@st.composite
def float_arrays(draw, allow_nan=True):
    """Float arrays of every accepted source dtype (float16/32/64 in either byte
    order, ml_dtypes bfloat16 and float8), in C or Fortran order, transposed,
    strided or reversed views."""
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
    name = draw(st.sampled_from(SOURCE_DTYPES))
    dtype = getattr(ml_dtypes, name) if name[0].isalpha() else np.dtype(name)
    with np.errstate(over="ignore", invalid="ignore"):   # overflow to Inf in 16/32 bits is wanted
        x = vals.reshape(shape).astype(dtype)
    layout = draw(st.sampled_from(["c", "fortran", "transposed", "strided", "reversed"]))
    if layout == "fortran":
        x = np.asfortranarray(x)
    elif layout == "transposed":
        x = np.ascontiguousarray(x.T).T                  # same values, reversed strides
    elif x.ndim and x.shape[-1] > 1 and layout in ("strided", "reversed"):
        big = np.repeat(x, 2, axis=-1)
        x = big[..., ::2] if layout == "strided" else big[..., ::-2]
    return x


def _exact_values(x):
    """Every source value exactly, as float64 (float16/bfloat16/FP8 widen exactly)."""
    return np.asarray(x.astype(np.float32) if x.dtype.itemsize < 4 else x, dtype=np.float64)


@given(float_arrays(), st.sampled_from(["e5m2", "e4m3", "e4m3fnuz", "e5m2fnuz", "e2m3"]),
       st.booleans(), st.sampled_from(["nearest_even", "toward_zero"]))
def test_to_fp8_against_reference(x, name, saturate, rounding):
    f = FLOAT_FORMATS[name]
    if f.nan is None and not f.inf:
        saturate = True                                  # nothing to overflow to otherwise
    got = fp.to_fp8(x, f, overflow="saturate" if saturate else "nonfinite", rounding=rounding)
    assert got.shape == x.shape and got.fmt == f
    src = _exact_values(x).ravel()
    want = [ref.encode_minifloat(float(v), f.exp_bits, f.man_bits, f.bias, f.inf, f.nan, saturate,
                                 rounding) for v in src]
    np.testing.assert_array_equal(got.ravel(), np.array(want, dtype=np.uint8))
    # decoding what we encoded gives back an exactly representable value
    dec = fp.from_fp8(got, dtype=np.float64)
    for c, d in zip(got.ravel()[:50], dec.ravel()[:50]):
        v = f.decode_exact(int(c))
        assert (np.isnan(d) and isinstance(v, float) and np.isnan(v)) or d == float(v)


@given(float_arrays(allow_nan=False), st.sampled_from(["int8", "uint8", "int4", "uint4", "int2"]),
       st.sampled_from(["nearest_even", "toward_zero", "floor", "nearest_away"]),
       st.floats(1e-3, 1e3))
def test_quantize_given_scale_against_reference(x, name, rounding, scale):
    x = np.where(np.isfinite(x.astype(np.float64)), x, 0).astype(x.dtype)
    f = as_format(name)
    s32 = np.float32(scale)
    zp = 1 if not f.signed else -1
    q = fp.quantize(x, f, scale=s32, zero_point=zp, rounding=rounding)
    assert q.codes.shape == x.shape and q.codes.dtype == f.dtype
    # ONNX QuantizeLinear: division in the input's precision (float32 for float16)
    xs = np.asarray(_exact_values(x), dtype=np.float64 if x.dtype.itemsize == 8 else np.float32)
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
        back = fp.QTensor.from_packed(q.pack(), f, x.shape, scale=q.scale, zero_point=q.zero_point)
        np.testing.assert_array_equal(back.codes, q.codes)


# -- FP8 GEMM layouts -----------------------------------------------------------

FP8_ACCS = [fp.TensorCoreAccumulator.hopper_fp8(), fp.TensorCoreAccumulator.hopper_fp8(True),
            fp.TensorCoreAccumulator.exact(), fp.TensorCoreAccumulator(8, 3, "sum", "toward_zero", 8)]


def _finite_codes(rng, shape, f):
    codes = rng.integers(0, 256, shape).astype(np.uint8)
    bad = np.vectorize(lambda c: f.is_nan_code(int(c)) or f.is_inf_code(int(c)), otypes=[bool])(codes)
    codes[bad] = 0
    return codes


@given(st.integers(0, 2**32 - 1), st.sampled_from([(), (1,), (2,)]), st.integers(0, 3),
       st.integers(0, 40), st.integers(0, 3), st.sampled_from(["e4m3", "e5m2"]),
       st.sampled_from(range(len(FP8_ACCS))), st.sampled_from(["none", "a_T", "b_T", "rev", "bcast"]),
       st.booleans())
def test_fp8_matmul_layouts_against_reference(seed, batch, m, k, n, fb_name, acc_i, layout, vector_scales):
    """Batches (broadcast too), 0- and 1-sized dimensions, transposed and reversed
    views, per-row/column scales: every element equals the slow model."""
    rng = np.random.default_rng(seed)
    fa, fb = FLOAT_FORMATS["e4m3"], FLOAT_FORMATS[fb_name]
    acc = FP8_ACCS[acc_i]
    a = _finite_codes(rng, batch + (m, k), fa)
    b = _finite_codes(rng, (() if layout == "bcast" else batch) + (k, n), fb)
    A, B = a, b
    if layout == "a_T":
        A = np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    elif layout == "b_T":
        B = np.ascontiguousarray(np.swapaxes(b, -1, -2)).swapaxes(-1, -2)
    elif layout == "rev":
        A = np.ascontiguousarray(a[..., ::-1, ::-1])[..., ::-1, ::-1]
    assert np.array_equal(A, a) and np.array_equal(B, b)
    sa = rng.uniform(0.25, 4, m).astype(np.float32) if vector_scales else np.float32(0.5)
    sb = rng.uniform(0.25, 4, n).astype(np.float32) if vector_scales else np.float32(2.0)
    got = fp.fp8_matmul(A, B, (fa, fb), scale_a=sa, scale_b=sb, acc=acc)
    full = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    assert got.shape == full + (m, n) and got.dtype == np.float32
    scale = (np.reshape(sa, (-1, 1)) if np.ndim(sa) else sa) * (np.reshape(sb, (1, -1)) if np.ndim(sb) else sb)
    for idx in np.ndindex(*full):
        ai = a[idx] if a.ndim > 2 else a
        bi = b[idx] if b.ndim > 2 else b
        want = (ref.fp8_matmul(ai, bi, fa, fb, acc) * np.float32(1) * scale).astype(np.float32)
        np.testing.assert_array_equal(got[idx].view(np.uint32), want.view(np.uint32))


# -- requantization layouts -------------------------------------------------------

@given(st.integers(0, 2**32 - 1), st.sampled_from(["double", "single", "ruy", "float", "float64"]),
       st.sampled_from(["int8", "uint8", "int4", "int16"]), st.integers(0, 4), st.integers(1, 5),
       st.sampled_from(["<i4", ">i4", "<i8", "i2"]), st.booleans(), st.booleans())
def test_requantize_layouts_against_transcription(seed, method, fmt, rows, cols, dtype, per_channel,
                                                   strided):
    rng = np.random.default_rng(seed)
    f = as_format(fmt)
    info = np.iinfo(np.dtype(dtype))
    lo, hi = max(info.min, ref.INT32_MIN), min(info.max, ref.INT32_MAX)
    acc = rng.integers(lo, hi, (rows, cols), endpoint=True)
    acc[rng.random(acc.shape) < 0.2] = hi
    acc[rng.random(acc.shape) < 0.2] = lo
    acc = acc.astype(dtype)
    if strided:
        acc = np.repeat(acc, 2, axis=1)[:, ::2]
    shape = (cols,) if per_channel else ()
    if method in ("float", "float64"):
        m = 10.0 ** rng.uniform(-9, 1, shape)
        s = 0
    else:
        m = rng.integers(0, 2**31, shape)
        m[rng.random(shape) < 0.2] = 2**31 - 1
        s = rng.integers(-31, 30, shape, endpoint=True)
    zp = int(rng.integers(f.min, f.max, endpoint=True))
    got = fp.requantize(acc, m, s, zero_point=zp, out_fmt=fmt, method=method)
    assert got.shape == acc.shape and got.dtype == f.dtype
    mm, ss = np.broadcast_to(m, acc.shape), np.broadcast_to(s, acc.shape)
    for i, j in np.ndindex(*acc.shape):
        mult = float(mm[i, j]) if method in ("float", "float64") else int(mm[i, j])
        want = ref.requantize_value(int(acc[i, j]), method, mult, int(ss[i, j]), zp, f.min, f.max)
        assert int(got[i, j]) == want
