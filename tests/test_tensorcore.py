"""FP8 tensor-core GEMM: every recorded Hopper element, and the slow reference."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import fixedpoint as fp
from fixedpoint import _reference as ref
from fixedpoint.formats import as_float_format
from conftest import load_cases

ml_dtypes = pytest.importorskip("ml_dtypes")

TC = fp.TensorCoreAccumulator
OUT = {"f32": ("float32", np.int32), "f16": ("float16", np.int16), "bf16": ("bfloat16", np.int16)}


@pytest.mark.parametrize("fname", ["scaled_mm.npz", "scaled_mm_scaled.npz"])
def test_every_recorded_element(data_dir, fname):
    z = np.load(data_dir / fname)
    cases = load_cases(z)
    seen = set()
    for c in cases:
        a, b, want = z[c["id"] + "_a"], z[c["id"] + "_b"], z[c["id"] + "_out"]
        out_dtype, bits = OUT[c["out"]]
        got = fp.fp8_matmul(a, b.T, (c["fa"], c["fb"]), scale_a=c.get("scale_a", 1.0),
                            scale_b=c.get("scale_b", 1.0), out_dtype=out_dtype,
                            acc=TC.hopper_fp8(fast_accum=c["fast"]))
        assert got.shape == want.shape
        np.testing.assert_array_equal(got.view(bits), want, err_msg=str(c))
        seen.add((c["fa"], c["fb"], c["out"], c["fast"]))
    # each file covers fast and split accumulation and more than one output type
    assert {s[3] for s in seen} == {True, False}
    assert len({s[2] for s in seen}) >= 2


def test_the_model_matters(data_dir):
    """A float32-accumulating emulator (the exact sum rounded once) disagrees
    with the hardware on most of these elements: the test can fail."""
    z = np.load(data_dir / "scaled_mm.npz")
    differ = total = 0
    for c in load_cases(z)[:60]:
        if c["out"] != "f32":
            continue
        a, b, want = z[c["id"] + "_a"], z[c["id"] + "_b"], z[c["id"] + "_out"]
        ideal = fp.fp8_matmul(a, b.T, (c["fa"], c["fb"]), acc=TC.exact())
        differ += (ideal.view(np.int32) != want).sum()
        total += want.size
    assert differ > total // 4


_ref_matmul = ref.fp8_matmul


ACCS = [fp.TensorCoreAccumulator.hopper_fp8(), fp.TensorCoreAccumulator.hopper_fp8(True),
        fp.TensorCoreAccumulator.exact(), fp.TensorCoreAccumulator.b200_fp8(),
        fp.TensorCoreAccumulator.hopper_fp16(), fp.TensorCoreAccumulator.a100_fp16(),
        fp.TensorCoreAccumulator(16, 10, "exact", "nearest_even", 64),
        fp.TensorCoreAccumulator(32, 13, "sum", "nearest_even", None),
        fp.TensorCoreAccumulator(8, 3, "sum", "toward_zero", 8),
        fp.TensorCoreAccumulator(None, None, "sum", "toward_zero", 32, 10)]


def _adversarial(rng, kind, shape, fmt):
    f = as_float_format(fmt)
    if kind == "codes":          # uniform over finite codes
        codes = rng.integers(0, 256, shape).astype(np.uint8)
        bad = np.vectorize(lambda c: f.is_nan_code(int(c)) or f.is_inf_code(int(c)))(codes)
        codes[bad] = 0
        return fp.FloatCodes(codes, f)
    if kind == "cancel":         # one huge term per row among tiny ones, and its negative
        x = rng.standard_normal(shape) * 2.0 ** rng.integers(-12, -4, shape)
        x[..., 0] = 400 if fmt.startswith("e4") else 50000
        x[..., -1] = -x[..., 0]
    elif kind == "subnormal":
        x = rng.standard_normal(shape) * f.min_normal
    elif kind == "zero_rows":
        x = rng.standard_normal(shape)
        x[::2] = 0
    else:
        x = rng.standard_normal(shape) * 2.0 ** rng.integers(-8, 8, shape)
    return fp.to_fp8(x.astype(np.float32), f)


@pytest.mark.parametrize("acc", ACCS, ids=lambda a: repr(a)[21:70])
@pytest.mark.parametrize("kind", ["codes", "cancel", "subnormal", "zero_rows", "wide"])
def test_kernels_match_slow_reference(acc, kind, rng):
    for fa, fb, K in (("e4m3", "e4m3", 77), ("e5m2", "e4m3", 130), ("e5m2", "e5m2", 33)):
        a = _adversarial(rng, kind, (3, K), fa)
        b = _adversarial(rng, kind, (K, 5), fb).T.copy().T if kind != "zero_rows" else \
            _adversarial(rng, "wide", (K, 5), fb)
        got = fp.fp8_matmul(a, b.copy(order="C"), acc=acc)
        want = _ref_matmul(a, b, fa, fb, acc)
        np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


@given(st.integers(0, 2**32 - 1), st.integers(1, 300), st.sampled_from(["e4m3", "e5m2"]),
       st.sampled_from([0, 1, 7]))
def test_fast_and_general_kernels_agree(seed, K, fmt, acc_i):
    """The AVX2 path against the general (int128) kernel on the same model."""
    from fixedpoint import tensorcore
    rng = np.random.default_rng(seed)
    a = _adversarial(rng, "wide", (6, K), fmt)
    b = _adversarial(rng, "codes", (K, 35), fmt)
    acc = ACCS[acc_i]
    f = as_float_format(fmt)
    fast, _ = tensorcore._matmul_2d(a.view(np.ndarray), b.view(np.ndarray), f, f, acc, 2)
    slow_acc = fp.TensorCoreAccumulator(acc.block, acc.frac_bits, "sum", acc.final_rounding,
                                        acc.promote_every, acc.result_frac_bits)
    object.__setattr__(slow_acc, "_fast_ok", lambda: False)   # force the general kernel
    slow, _ = tensorcore._matmul_2d(a.view(np.ndarray), b.view(np.ndarray), f, f, slow_acc, 1)
    np.testing.assert_array_equal(fast.view(np.int32), slow.view(np.int32))


def test_scales_and_output_rounding(rng):
    a = _adversarial(rng, "wide", (9, 64), "e4m3")
    b = _adversarial(rng, "wide", (64, 7), "e4m3")
    acc = fp.fp8_matmul(a, b)
    sa, sb = np.float32(0.3), np.float32(1.7)
    got = fp.fp8_matmul(a, b, scale_a=0.3, scale_b=1.7)
    np.testing.assert_array_equal(got, acc * np.float32(sa * sb))
    row = rng.uniform(0.1, 3, 9).astype(np.float32)
    col = rng.uniform(0.1, 3, 7).astype(np.float32)
    got = fp.fp8_matmul(a, b, scale_a=row, scale_b=col)
    np.testing.assert_array_equal(got, acc * (row[:, None] * col[None, :]))
    f16 = fp.fp8_matmul(a, b, out_dtype="float16")
    np.testing.assert_array_equal(f16, acc.astype(np.float16))
    bf = fp.fp8_matmul(a, b, out_dtype=ml_dtypes.bfloat16)
    assert bf.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(bf, acc.astype(ml_dtypes.bfloat16))


def test_nan_and_inf_follow_ieee():
    e5 = as_float_format("e5m2")
    one, inf, ninf, nan, zero = 0x3C, 0x7C, 0xFC, 0x7E, 0x00
    a = np.array([[one, one], [inf, one], [inf, ninf], [nan, one], [inf, zero], [one, one]], np.uint8)
    b = np.array([[one, one], [one, one]], np.uint8)
    b2 = b.copy()
    b2[1, 1] = zero
    got = fp.fp8_matmul(a, b, "e5m2")
    assert got[0, 0] == 2.0
    assert got[1, 0] == np.inf
    assert np.isnan(got[2, 0])          # +Inf + -Inf
    assert np.isnan(got[3, 0])          # NaN wins
    assert got[4, 0] == np.inf          # Inf * 1 + 0 * 1
    got2 = fp.fp8_matmul(a, b2, "e5m2")
    assert got2[4, 1] == np.inf         # Inf * 1 + 0 * 0
    b3 = np.array([[zero], [one]], np.uint8)
    assert np.isnan(fp.fp8_matmul(a, b3, "e5m2")[4, 0])   # Inf * 0 + 0 * 1
    assert np.isnan(fp.fp8_matmul(np.array([[inf]], np.uint8), np.array([[zero]], np.uint8),
                                  "e5m2")[0, 0])
    assert e5.is_inf_code(inf)
    e4nan = fp.fp8_matmul(np.array([[0x7F, 0x38]], np.uint8), np.array([[0x38], [0x38]], np.uint8),
                          "e4m3")
    assert np.isnan(e4nan[0, 0])


def test_shapes_threads_and_layouts(rng):
    a = _adversarial(rng, "wide", (2, 1, 5, 40), "e4m3")
    b = _adversarial(rng, "wide", (3, 40, 6), "e4m3")
    got = fp.fp8_matmul(a, b)
    assert got.shape == (2, 3, 5, 6)
    np.testing.assert_array_equal(got[1, 2], fp.fp8_matmul(a[1, 0], b[2]))
    v = b[0, :, 0]
    assert fp.fp8_matmul(a[0, 0], v).shape == (5,)
    big_a = _adversarial(rng, "wide", (70, 300), "e4m3")
    big_b = _adversarial(rng, "wide", (300, 90), "e4m3")
    r1 = fp.fp8_matmul(big_a, big_b, num_threads=1)
    np.testing.assert_array_equal(r1, fp.fp8_matmul(big_a, big_b, num_threads=2))
    np.testing.assert_array_equal(r1, fp.fp8_matmul(big_a.T.copy().T, big_b.copy(order="F")))
    assert fp.fp8_matmul(np.zeros((0, 4), np.uint8), np.zeros((4, 3), np.uint8), "e4m3").shape == (0, 3)
    np.testing.assert_array_equal(fp.fp8_matmul(np.zeros((2, 0), np.uint8), np.zeros((0, 3), np.uint8),
                                                "e4m3"),
                                  np.zeros((2, 3), np.float32))


def test_bad_input():
    a = np.zeros((2, 3), np.uint8)
    with pytest.raises(TypeError, match="a: expected uint8 minifloat codes"):
        fp.fp8_matmul(a.astype(np.int8), a.T, "e4m3")
    with pytest.raises(TypeError, match="a: plain uint8 codes carry no format"):
        fp.fp8_matmul(a, a.T)
    with pytest.raises(ValueError, match="inner dimensions differ"):
        fp.fp8_matmul(a, a, "e4m3")
    with pytest.raises(ValueError, match=r"fmt \(a\): unknown format 'e9m9'"):
        fp.fp8_matmul(a, a.T, "e9m9")
    with pytest.raises(ValueError, match="fmt: expected one format or a pair"):
        fp.fp8_matmul(a, a.T, ("e4m3", "e4m3", "e4m3"))
    with pytest.raises(ValueError, match="b: the codes are e4m3 codes, but fmt says e5m2"):
        fp.fp8_matmul(a, fp.FloatCodes(a.T, "e4m3"), ("e4m3", "e5m2"))
    with pytest.raises(ValueError, match="out_dtype: expected"):
        fp.fp8_matmul(a, a.T, "e4m3", out_dtype="int8")
    with pytest.raises(ValueError, match="scale_a: scales must be finite and positive"):
        fp.fp8_matmul(a, a.T, "e4m3", scale_a=0.0)
    with pytest.raises(ValueError, match="scale_b: scales must be finite and positive"):
        fp.fp8_matmul(a, a.T, "e4m3", scale_b=np.inf)
    with pytest.raises(ValueError, match="scale_a: expected a scalar or a vector of length 2"):
        fp.fp8_matmul(a, a.T, "e4m3", scale_a=[1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="acc: expected a TensorCoreAccumulator"):
        fp.fp8_matmul(a, a.T, "e4m3", acc=fp.Accumulator())
    with pytest.raises(ValueError, match="promote_every: must be a multiple of block"):
        fp.TensorCoreAccumulator(block=32, promote_every=100)
    with pytest.raises(ValueError, match="frac_bits"):
        fp.TensorCoreAccumulator(frac_bits=41)
