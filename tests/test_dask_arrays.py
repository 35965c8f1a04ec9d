"""Dask arrays through the kernels: lazy results, bit-identical to the in-memory
call on the whole array for every chunking (hypothesis draws the chunks)."""
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extras import need

da = need("dask.array", 'pip install "fixedpoint[dask]"')
import dask  # noqa: E402

import fixedpoint as fp  # noqa: E402
from fixedpoint import dask_arrays  # noqa: E402


@pytest.fixture(autouse=True)
def _synchronous():
    # one thread in the in-memory references too: the bits never depend on it, and tiny
    # calls are faster without a thread team on a loaded machine
    before = fp.get_num_threads()
    fp.set_num_threads(1)
    with dask.config.set(scheduler="synchronous"):
        yield
    fp.set_num_threads(before)


def _split(draw, n):
    """Random chunk sizes summing to n."""
    if n == 0:
        return (0,)
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=min(3, n - 1)))) if n > 1 else []
    edges = [0] + cuts + [n]
    return tuple(b - a for a, b in zip(edges[:-1], edges[1:]))


@st.composite
def chunked(draw, max_dims=3, max_len=16):
    shape = tuple(draw(st.lists(st.integers(1, max_len), min_size=1, max_size=max_dims)))
    chunks = tuple(_split(draw, n) for n in shape)
    seed = draw(st.integers(0, 2**32))
    return shape, chunks, seed


def _floats(shape, seed, scale=100.0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * scale * rng.choice([1e-6, 1e-2, 1, 10], shape)
    return x.astype(dtype)


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


# ---------------------------------------------------------------------------
# conversions

@settings(max_examples=40)
@given(chunked(), st.sampled_from(["e4m3", "e5m2", "e2m1", "e3m2"]),
       st.sampled_from(["nearest_even", "toward_zero", "stochastic"]),
       st.sampled_from(["saturate", "nonfinite"]), st.sampled_from([np.float32, np.float64, np.float16]))
def test_to_fp8_and_back_match_numpy(case, fmt, rounding, overflow, dtype):
    shape, chunks, seed = case
    if overflow == "nonfinite" and fmt in ("e2m1", "e3m2"):
        overflow = "saturate"          # no Inf or NaN to overflow to
    x = _floats(shape, seed, dtype=dtype)
    dx = da.from_array(x, chunks=chunks)
    c = fp.to_fp8(dx, fmt, rounding=rounding, overflow=overflow, seed=seed)
    assert isinstance(c, da.Array) and c.chunks == dx.chunks
    ref = fp.to_fp8(x, fmt, rounding=rounding, overflow=overflow, seed=seed)
    assert _same(c.compute(), ref)
    assert dask_arrays.format_of(c) == ref.fmt
    assert _same(fp.from_fp8(c, dtype=np.float64).compute(), fp.from_fp8(ref, dtype=np.float64))


def test_stochastic_rounding_uses_global_indices_across_many_chunks():
    # 2^k boundaries and runs that cross them: the pieces of each run must line up
    x = _floats((3, 1029), 1)
    ref = fp.to_fp8(x, "e4m3", rounding="stochastic", seed=2**64 - 1)
    for chunks in [(3, 100), (2, 512), (1, 1029), (3, 257)]:
        got = fp.to_fp8(da.from_array(x, chunks=chunks), "e4m3", rounding="stochastic", seed=2**64 - 1)
        assert _same(got.compute(), ref)
    # the same seed gives the same bits; None draws a fresh seed once per call, for every block
    s1 = fp.to_fp8(da.from_array(x, chunks=(1, 100)), "e4m3", rounding="stochastic")
    a = s1.compute()
    assert _same(a, s1.compute())


def test_format_travels_with_slices_and_rechunks_and_fmt_is_checked():
    x = da.from_array(_floats((8, 6), 0), chunks=(3, 4))
    c = fp.to_fp8(x, "e5m2")
    for v in (c[2:7, 1:], c.T, c.rechunk((8, 1)), c[::2]):
        assert dask_arrays.format_of(v) == fp.formats.E5M2
        assert _same(fp.from_fp8(v).compute(), fp.from_fp8(np.asarray(v.compute()), "e5m2"))
    with pytest.raises(ValueError, match="^codes: the codes are e5m2 codes, but fmt says e4m3"):
        fp.from_fp8(c, "e4m3")
    plain = da.from_array(np.zeros(4, np.uint8), chunks=2)
    with pytest.raises(TypeError, match="^codes: plain uint8 codes carry no format"):
        fp.from_fp8(plain)
    assert _same(fp.from_fp8(plain, "e4m3").compute(), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="^out: not supported for dask arrays"):
        fp.to_fp8(x, "e4m3", out=np.empty((8, 6), np.uint8))
    with pytest.raises(ValueError, match="^fmt: unknown format"):
        fp.to_fp8(x, "e4m4")


def test_ml_dtypes_input_and_codes():
    ml_dtypes = need("ml_dtypes", "pip install ml_dtypes")
    x = _floats((5, 9), 3).astype(ml_dtypes.bfloat16)
    got = fp.to_fp8(da.from_array(x, chunks=(2, 4)), "e4m3", rounding="stochastic", seed=7).compute()
    assert _same(got, fp.to_fp8(x, "e4m3", rounding="stochastic", seed=7))
    codes = fp.as_ml_dtypes(fp.to_fp8(_floats((5, 9), 4), "e4m3"))
    dcodes = da.from_array(codes, chunks=(2, 2))
    assert dask_arrays.format_of(dcodes) == fp.formats.E4M3
    assert _same(fp.from_fp8(dcodes).compute(), fp.from_fp8(codes))


def test_results_are_lazy():
    calls = []

    def src(block):
        calls.append(block.shape)
        return block

    x = da.from_array(_floats((10, 10), 0), chunks=5).map_blocks(src, dtype=np.float32,
                                                                  meta=np.empty((0, 0), np.float32))
    c = fp.from_fp8(fp.to_fp8(x, "e4m3"))
    y = fp.quantize(x, "int8", scale=np.float32(0.1)).codes
    z = fp.mul(fp.quantize(x, "int8", scale=np.float32(0.1)).codes, 3, "int8")
    assert calls == [] and all(isinstance(v, da.Array) for v in (c, y, z))
    c.compute()
    assert len(calls) == 4


# ---------------------------------------------------------------------------
# quantization

@settings(max_examples=40)
@given(chunked(max_dims=3, max_len=20), st.sampled_from(["int8", "int4", "uint8", "e4m3", "e2m1"]),
       st.sampled_from(["tensor", "channel", "group"]),
       st.sampled_from(["nearest_even", "toward_zero", "stochastic", "nearest_away", "floor"]),
       st.booleans(), st.booleans(), st.sampled_from([np.float32, np.float64]))
def test_quantize_matches_numpy(case, fmt, gran, rounding, symmetric, given_scale, dtype):
    shape, chunks, seed = case
    is_float = fmt.startswith("e")
    if is_float and rounding in ("nearest_away", "floor"):
        rounding = "nearest_even"
    if fmt == "uint8" or is_float:
        symmetric = fmt != "uint8"
    x = _floats(shape, seed, scale=3.0, dtype=dtype)
    axis = group_size = None
    if gran != "tensor":
        axis = seed % len(shape) - len(shape) * (seed % 2)          # negative axes too
    if gran == "group":
        n = shape[axis]
        group_size = max(d for d in range(1, min(n, 6) + 1) if n % d == 0)
    kw = dict(axis=axis, group_size=group_size, rounding=rounding, seed=seed)
    if not is_float:
        kw["symmetric"] = symmetric
    ref = fp.quantize(x, fmt, **kw)
    if given_scale:
        kw.update(scale=ref.scale, zero_point=ref.zero_point)
    q = fp.quantize(da.from_array(x, chunks=chunks), fmt, **kw)
    assert isinstance(q, dask_arrays.QTensorArray) and isinstance(q.codes, da.Array)
    assert _same(q.scale, ref.scale) and np.array_equal(q.zero_point, ref.zero_point)
    assert _same(np.asarray(q.codes.compute()), np.asarray(ref.codes))
    assert _same(q.dequantize().compute(), ref.dequantize())
    back = q.compute()
    assert isinstance(back, fp.QTensor) and _same(np.asarray(back.codes), np.asarray(ref.codes))
    assert (back.axis, back.group_size) == (ref.axis, ref.group_size)


def test_quantize_asymmetric_float_zero_point_and_narrow_range():
    x = _floats((6, 40), 5, scale=2.0)
    for kw in (dict(symmetric=False, float_zero_point=True), dict(narrow_range=True, axis=1),
               dict(symmetric=False, axis=0, rounding="stochastic", seed=9),
               dict(symmetric=False, float_zero_point=True, rounding="stochastic", seed=9)):
        ref = fp.quantize(x, "uint8" if kw.get("symmetric") is False else "int8", **kw)
        q = fp.quantize(da.from_array(x, chunks=(4, 7)), ref.fmt.name if not kw.get("narrow_range")
                        else "int8", **kw)
        assert _same(np.asarray(q.codes.compute()), np.asarray(ref.codes)), kw
        assert _same(q.dequantize().compute(), ref.dequantize()), kw


def test_quantize_non_finite_input():
    x = _floats((5, 8), 6)
    x[3, 6] = np.nan
    dx = da.from_array(x, chunks=(2, 3))
    with pytest.raises(ValueError, match=r"^x: non-finite value nan at index \(3, 6\)"):
        fp.quantize(dx, "int8")
    ref = fp.quantize(x, "e4m3", nan="propagate")
    q = fp.quantize(dx, "e4m3", nan="propagate")
    assert _same(q.scale, ref.scale) and _same(np.asarray(q.codes.compute()), np.asarray(ref.codes))
    with pytest.raises(ValueError, match=r"^x: non-finite value nan at index \(3, 6\)"):
        fp.quantize(dx, "int8", scale=np.float32(0.1), rounding="stochastic", seed=1).codes.compute()


def test_quantize_argument_errors_are_eager():
    dx = da.from_array(_floats((4, 6), 0), chunks=2)
    with pytest.raises(ValueError, match="^calibration: 'mse' needs the whole tensor"):
        fp.quantize(dx, "int8", calibration="mse")
    with pytest.raises(ValueError, match=r"^scale: expected shape \(6,\)"):
        fp.quantize(dx, "int8", axis=1, scale=np.ones(4, np.float32))
    with pytest.raises(ValueError, match="^group_size: 4 does not divide axis 1 of length 6"):
        fp.quantize(dx, "int8", axis=1, group_size=4)
    with pytest.raises(ValueError, match="^zero_point: 300 is outside the int8 range"):
        fp.quantize(dx, "int8", scale=np.float32(1), zero_point=np.int32(300))
    with pytest.raises(ValueError, match="^rounding: "):
        fp.quantize(dx, "int8", scale=np.float32(1), rounding="up")
    with pytest.raises(TypeError, match="^x: expected float16"):
        fp.quantize(da.zeros(4, dtype=np.int32, chunks=2), "int8")


def test_quantize_with_a_fed_calibrator():
    x = _floats((16, 12), 8)
    cal = fp.Calibrator("percentile", percentile=99.0, axis=1)
    dx = da.from_array(x, chunks=(4, 12))
    for blk in dx.to_delayed().ravel():
        cal.update(blk.compute())
    ref_cal = fp.Calibrator("percentile", percentile=99.0, axis=1)
    ref_cal.update(x)
    q = fp.quantize(dx, "int8", calibration=cal)
    ref = fp.quantize(x, "int8", calibration=ref_cal)
    assert _same(q.scale, ref.scale) and _same(np.asarray(q.codes.compute()), np.asarray(ref.codes))


# ---------------------------------------------------------------------------
# elementwise integer kernels

@settings(max_examples=30)
@given(chunked(max_dims=2, max_len=30), st.sampled_from(["int8", "int4", "uint8"]),
       st.sampled_from(["saturate", "wrap"]), st.booleans())
def test_mul_add_match_numpy(case, fmt, overflow, row_operand):
    shape, chunks, seed = case
    f = fp.formats.as_format(fmt)
    rng = np.random.default_rng(seed)
    a = rng.integers(f.min, f.max + 1, shape).astype(f.dtype)
    b = rng.integers(f.min, f.max + 1, shape[-1:] if row_operand else shape).astype(f.dtype)
    for op in (fp.mul, fp.add):
        got = op(da.from_array(a, chunks=chunks), b, fmt, overflow=overflow)
        assert _same(got.compute(), op(a, b, fmt, overflow=overflow))


@settings(max_examples=30)
@given(chunked(max_dims=2, max_len=30), st.sampled_from(["double", "single", "float"]),
       st.booleans(), st.sampled_from(["int8", "uint8", "int4"]))
def test_requantize_matches_numpy(case, method, per_column, out_fmt):
    shape, chunks, seed = case
    rng = np.random.default_rng(seed)
    acc = rng.integers(-2**31, 2**31, shape, dtype=np.int64).astype(np.int32)
    acc[..., :1] //= 65536
    n = shape[-1]
    real = rng.uniform(1e-6, 0.02, n if per_column else None)
    zp = 1 if out_fmt != "uint8" else 100
    if method == "float":
        m, s = real, 0
    else:
        m, s = fp.quantize_multiplier(real)
    got = fp.requantize(da.from_array(acc, chunks=chunks), m, s, zero_point=zp, out_fmt=out_fmt,
                        method=method)
    assert _same(got.compute(), fp.requantize(acc, m, s, zero_point=zp, out_fmt=out_fmt, method=method))


def test_requantize_per_element_zero_points_and_errors():
    rng = np.random.default_rng(0)
    acc = rng.integers(-10**6, 10**6, (7, 9)).astype(np.int32)
    zp = rng.integers(-5, 5, (7, 9))
    got = fp.requantize(da.from_array(acc, chunks=3), 1 << 30, -10, zero_point=da.from_array(zp, chunks=4),
                        out_fmt="int8")
    assert _same(got.compute(), fp.requantize(acc, 1 << 30, -10, zero_point=zp, out_fmt="int8"))
    with pytest.raises(ValueError, match="^shift: must lie in"):
        fp.requantize(da.from_array(acc, chunks=3), 1 << 30, 40, out_fmt="int8")


# ---------------------------------------------------------------------------
# matrix products

ACCUMULATORS = [None, fp.Accumulator(32, "wrap"), fp.Accumulator(16, "saturate"),
                fp.Accumulator(20, "saturate", block=16), fp.Accumulator(14, "wrap", block=4),
                fp.Accumulator(32, "saturate", block=16), fp.Accumulator(40, "saturate", block=3)]


@st.composite
def gemm(draw, max_m=12, max_k=300, max_n=10):
    m, k, n = draw(st.integers(1, max_m)), draw(st.integers(0, max_k)), draw(st.integers(1, max_n))
    return (m, k, n), (_split(draw, m), _split(draw, k)), (_split(draw, k), _split(draw, n)), \
        draw(st.integers(0, 2**32))


@settings(max_examples=40)
@given(gemm(), st.sampled_from(ACCUMULATORS), st.booleans(), st.booleans(),
       st.sampled_from(["int8", "int4", "uint8"]))
def test_matmul_matches_numpy(case, acc, ro, with_c, fmt):
    (m, k, n), ca, cb, seed = case
    f = fp.formats.as_format(fmt)
    rng = np.random.default_rng(seed)
    a = rng.integers(f.min, f.max + 1, (m, k)).astype(f.dtype)
    b = rng.integers(f.min, f.max + 1, (k, n)).astype(f.dtype)
    lim = 1000 if acc is None or acc.bits > 16 else 100
    c = rng.integers(-lim, lim, (m, n)) if with_c else None
    got = fp.matmul(da.from_array(a, chunks=ca), da.from_array(b, chunks=cb), fmt, acc=acc, c=c,
                    return_overflow=ro)
    ref = fp.matmul(a, b, fmt, acc=acc, c=c, return_overflow=ro)
    if ro:
        assert _same(got[0].compute(), ref[0]) and _same(got[1].compute(), ref[1])
    else:
        assert _same(got.compute(), ref)


def test_matmul_k_chunks_fold_in_the_accumulators_order():
    # a running sum that clamps part-way: only an in-order fold at block boundaries keeps it
    K = 4096
    a = np.full((2, K), 127, np.int8)
    a[:, K // 2:] = -128
    b = np.full((K, 3), 127, np.int8)
    acc = fp.Accumulator(20, "saturate", block=16)
    ref, cnt = fp.matmul(a, b, "int8", acc=acc, return_overflow=True)
    assert cnt.sum() > 0
    got = fp.matmul(da.from_array(a, chunks=(1, 100)), da.from_array(b, chunks=(333, 2)), "int8", acc=acc,
                    return_overflow=True)
    assert _same(got[0].compute(), ref) and _same(got[1].compute(), cnt)
    # K boundaries were moved to multiples of the block; M and N kept
    out = fp.matmul(da.from_array(a, chunks=(1, 100)), da.from_array(b, chunks=(333, 2)), "int8", acc=acc)
    assert out.chunks == ((1, 1), (2, 1))
    # a dask c, chunked differently
    c = np.array([[5, -5, 0], [1 << 18, -(1 << 19), 7]])
    got = fp.matmul(da.from_array(a, chunks=(2, 1000)), b, "int8", acc=acc, c=da.from_array(c, chunks=1))
    assert _same(got.compute(), fp.matmul(a, b, "int8", acc=acc, c=c))


def test_matmul_errors():
    a = da.zeros((3, 4), dtype=np.int8, chunks=2)
    with pytest.raises(ValueError, match="^a and b: dask products take 2-D operands"):
        fp.matmul(a, np.zeros(4, np.int8), "int8")
    with pytest.raises(ValueError, match="^a and b: shapes"):
        fp.matmul(a, np.zeros((5, 2), np.int8), "int8")
    with pytest.raises(TypeError, match="^acc: expected an Accumulator"):
        fp.matmul(a, np.zeros((4, 2), np.int8), "int8", acc="wrap")
    with pytest.raises(ValueError, match=r"^c: shape \(4,\) does not broadcast"):
        fp.matmul(a, np.zeros((4, 2), np.int8), "int8", c=np.zeros(4, np.int64))


TC_ACCUMULATORS = [None, fp.TensorCoreAccumulator.hopper_fp8(fast_accum=True),
                   fp.TensorCoreAccumulator.exact(), fp.TensorCoreAccumulator(32, 13, promote_every=64),
                   fp.TensorCoreAccumulator(16, 25, promote_every=32, final_rounding="nearest_even"),
                   fp.TensorCoreAccumulator.b200_fp8()]


@settings(max_examples=40)
@given(gemm(max_k=600), st.sampled_from(TC_ACCUMULATORS), st.sampled_from(["float32", "float16", "bfloat16"]),
       st.sampled_from([("e4m3", "e4m3"), ("e5m2", "e4m3"), ("e5m2", "e5m2")]), st.booleans(), st.booleans())
def test_fp8_matmul_matches_numpy(case, acc, out_dtype, fmts, specials, vector_scales):
    if out_dtype == "bfloat16":
        need("ml_dtypes", "pip install ml_dtypes")
    (m, k, n), ca, cb, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32) * 30
    w = rng.standard_normal((k, n)).astype(np.float32) * 30
    if specials and k:
        x.flat[rng.integers(0, x.size, 2)] = [np.inf, np.nan]
        w.flat[rng.integers(0, w.size, 2)] = [-np.inf, 0.0]
    a = fp.to_fp8(x, fmts[0], overflow="nonfinite")
    b = fp.to_fp8(w, fmts[1], overflow="nonfinite")
    sa = rng.uniform(0.5, 2, m).astype(np.float32) if vector_scales else 0.75
    sb = rng.uniform(0.5, 2, n).astype(np.float32) if vector_scales else 1.25
    ref = fp.fp8_matmul(a, b, scale_a=sa, scale_b=sb, out_dtype=out_dtype, acc=acc)
    da_, db_ = (fp.to_fp8(da.from_array(x, chunks=ca), fmts[0], overflow="nonfinite"),
                fp.to_fp8(da.from_array(w, chunks=cb), fmts[1], overflow="nonfinite"))
    got = fp.fp8_matmul(da_, db_, scale_a=sa, scale_b=sb, out_dtype=out_dtype, acc=acc)
    assert _same(got.compute(), ref)


def test_fp8_matmul_keeps_k_whole_without_promotion_and_folds_with_it():
    rng = np.random.default_rng(0)
    a = fp.to_fp8(rng.standard_normal((4, 1000)).astype(np.float32), "e4m3")
    b = fp.to_fp8(rng.standard_normal((1000, 3)).astype(np.float32), "e4m3")
    dA, dB = da.from_array(a, chunks=(2, 300)), da.from_array(b, chunks=(300, 3))
    fast = fp.fp8_matmul(dA, dB, acc=fp.TensorCoreAccumulator.hopper_fp8(fast_accum=True))
    split = fp.fp8_matmul(dA, dB)
    assert _same(fast.compute(), fp.fp8_matmul(a, b, acc=fp.TensorCoreAccumulator.hopper_fp8(fast_accum=True)))
    assert _same(split.compute(), fp.fp8_matmul(a, b))
    assert len(split.__dask_graph__()) > len(fast.__dask_graph__())
    with pytest.raises(TypeError, match=r"^a: plain uint8 codes carry no format"):
        fp.fp8_matmul(da.from_array(np.asarray(a.view(np.ndarray)), chunks=2), b)
    with pytest.raises(ValueError, match=r"^scale_a: expected a scalar or a vector of length 4"):
        fp.fp8_matmul(dA, dB, scale_a=np.ones(3))


def test_numpy_only_import_does_not_load_dask():
    code = "import sys, fixedpoint, numpy as np; fixedpoint.to_fp8(np.zeros(3), 'e4m3'); " \
           "print(any(m == 'dask' or m.startswith('dask.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tempfile.gettempdir())   # not the source tree: the installed package
    assert out.stdout.strip() == "False"


def test_docstring_examples():
    import doctest
    result = doctest.testmod(dask_arrays, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_requantize_with_values_on_dask_arrays():
    """Dask codes and values equal the in-memory ones, chunk by chunk."""
    rng = np.random.default_rng(4)
    acc = rng.integers(-2**20, 2**20, (9, 13)).astype(np.int32)
    m, s = fp.quantize_multiplier(rng.uniform(1e-5, 1e-3, 13))
    codes, values = fp.requantize_with_values(da.from_array(acc, chunks=(4, 5)), m, s, zero_point=-2,
                                              scale=0.25)
    want_codes, want_values = fp.requantize_with_values(acc, m, s, zero_point=-2, scale=0.25)
    assert isinstance(codes, da.Array) and isinstance(values, da.Array)
    assert _same(codes.compute(), want_codes) and _same(values.compute(), want_values)
