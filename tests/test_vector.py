"""The vector units' float kernels (fixedpoint._vector, through
layers.round_to_float_type and onnx_ops.erf) against NumPy's float16
conversion, ml_dtypes' bfloat16 and Python's math.erf: every sign and exponent
with every pattern of the bits that decide the rounding."""
import math

import numpy as np
import pytest

from fixedpoint import layers, onnx_ops
from extras import need

md = need("ml_dtypes", "pip install ml_dtypes")


def _patterns(low_bits, rng, tops=3):
    """float32 bit patterns: every sign and exponent, every value of the low
    ``low_bits`` mantissa bits, combined with all-zero, all-one and random upper bits."""
    low = np.arange(1 << low_bits, dtype=np.uint32)
    upper_bits = 23 - low_bits
    uppers = [0, (1 << upper_bits) - 1] + rng.integers(0, 1 << upper_bits, tops - 2).tolist()
    for se in range(512):
        for up in uppers:
            yield (np.uint32(se) << np.uint32(23)) | (np.uint32(up) << np.uint32(low_bits)) | low


def _same(got, want):
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    bad = np.flatnonzero(got.view(np.uint32)[~nan] != want.view(np.uint32)[~nan])
    assert bad.size == 0, (got[~nan][bad[:5]], want[~nan][bad[:5]])


def test_float16_rounding_every_deciding_bit(rng):
    # the 13 dropped bits and the kept last bit decide the rounding: all 2^14 of them
    for bits in _patterns(14, rng):
        x = bits.view(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            want = x.astype(np.float16).astype(np.float32)
        _same(layers.round_to_float_type(x, "float16"), want)


def test_bfloat16_rounding_every_deciding_bit(rng):
    for bits in _patterns(17, rng, tops=2):
        x = bits.view(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            want = x.astype(md.bfloat16).astype(np.float32)
        _same(layers.round_to_float_type(x, "bfloat16"), want)


@pytest.mark.parametrize("ftype, top", [("float16", 65504.0), ("bfloat16", float(md.finfo(md.bfloat16).max))])
def test_saturate_gives_the_largest_finite_value(ftype, top):
    x = np.array([top, -top, top * 1.003, -top * 1.003, 3.4e38, np.inf, -np.inf, np.nan], np.float32)
    sat = layers.round_to_float_type(x, ftype, "saturate")
    ieee = layers.round_to_float_type(x, ftype)
    assert sat[:5].tolist() == [top, -top, top, -top, top]
    assert ieee[2:5].tolist() == [np.inf, -np.inf, np.inf]
    assert sat[5:7].tolist() == [np.inf, -np.inf] and np.isnan(sat[7])    # Inf stays Inf


def test_layouts_threads_and_chunks_change_nothing(rng):
    from fixedpoint import set_num_threads
    x = (rng.standard_normal((300, 700)) * 1e3).astype(np.float32)
    want = x.astype(np.float16).astype(np.float32)
    for t in (1, 2, 3):
        set_num_threads(t)
        try:
            _same(layers.round_to_float_type(x, "float16"), want)
            _same(layers.round_to_float_type(np.asfortranarray(x), "float16"), want)
            _same(layers.round_to_float_type(x[::-1, ::2], "float16"), want[::-1, ::2])
            _same(layers.round_to_float_type(x.astype(">f4"), "float16"), want)
            e = onnx_ops.erf(x[::-1] / 1e3)
            _same(e, onnx_ops.erf(np.ascontiguousarray(x[::-1] / 1e3)))
        finally:
            set_num_threads(None)
    assert layers.round_to_float_type(x, "float16").base is not x          # a new array


def test_bad_type_and_overflow_names():
    with pytest.raises(ValueError, match="^ftype: expected"):
        layers.round_to_float_type(np.ones(2, np.float32), "float8")
    with pytest.raises(ValueError, match="^overflow: "):
        layers.round_to_float_type(np.ones(2, np.float32), "float16", "wrap")


def test_erf_equals_math_erf_in_both_precisions(rng):
    x64 = np.concatenate([rng.standard_normal(20000) * 3, rng.uniform(-1e-6, 1e-6, 2000),
                          [0.0, -0.0, 0.5, -0.5, 6.0, 27.0, -27.0, np.inf, -np.inf, 5e-324]])
    got = onnx_ops.erf(x64)
    assert got.dtype == np.float64
    assert got.tolist() == [math.erf(v) for v in x64.tolist()]
    x32 = x64.astype(np.float32)
    want32 = np.array([math.erf(float(v)) for v in x32], np.float64).astype(np.float32)
    _same(onnx_ops.erf(x32), want32)
    assert np.isnan(onnx_ops.erf(np.array([np.nan]))[0])
    assert math.copysign(1, onnx_ops.erf(np.array([-0.0]))[0]) == -1
