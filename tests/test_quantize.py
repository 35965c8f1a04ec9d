"""Quantization against ONNX Runtime, the design notes and properties."""
import ctypes

import numpy as np
import pytest
from hypothesis import given, strategies as st

import fixedpoint as fp
from fixedpoint.quantization import expand_param, round_values

from extras import need

ort = need("onnxruntime", 'pip install "fixedpoint[test]"')
onnx = need("onnx", 'pip install "fixedpoint[models]"')
from onnx import TensorProto, helper  # noqa: E402

ONNX_TYPE = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int4": TensorProto.INT4,
             "uint4": TensorProto.UINT4, "e4m3": TensorProto.FLOAT8E4M3FN, "e5m2": TensorProto.FLOAT8E5M2}


def _ort_raw(model, feeds, nbytes):
    """Run and return the output's raw bytes (ORT cannot hand int4/float8 to NumPy)."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    b = sess.io_binding()
    for k, v in feeds.items():
        b.bind_cpu_input(k, v)
    b.bind_output("y", "cpu")
    sess.run_with_iobinding(b)
    o = b.get_outputs()[0]
    return np.frombuffer((ctypes.c_uint8 * nbytes).from_address(o.data_ptr()), np.uint8).copy()


def _quantize_model(shape, fmt, scale, zp, axis=None, block_size=None, saturate=None):
    ty = ONNX_TYPE[fmt]
    sshape = list(np.shape(scale))
    attrs = {}
    if axis is not None:
        attrs["axis"] = axis
    if block_size is not None:
        attrs["block_size"] = block_size
    if saturate is not None:
        attrs["saturate"] = int(saturate)
    zvals = np.asarray(zp).ravel().tolist()
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], **attrs)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", ty, list(shape))],
        [helper.make_tensor("s", TensorProto.FLOAT, sshape, np.asarray(scale, np.float32).ravel().tolist()),
         helper.make_tensor("z", ty, sshape, zvals)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def _with_ties(rng, shape, scale):
    """Values that include exact ties (x / scale = n + 0.5) and far out-of-range ones."""
    n = rng.integers(-400, 400, shape)
    x = (n + rng.choice([0.0, 0.5, 0.25, -0.5], shape)) * np.float32(scale)
    x.flat[::7] = rng.standard_normal(x.flat[::7].shape) * 1000 * scale
    return x.astype(np.float32)


@pytest.mark.parametrize("fmt", ["int8", "uint8", "int4", "uint4"])
def test_quantizelinear_per_tensor_and_axis(fmt, rng):
    f = fp.IntFormat(int(fmt[-1]), signed=not fmt.startswith("u"))
    shape = (6, 10)
    x = _with_ties(rng, shape, 0.25)
    for axis in (None, 1):
        if axis is None:
            scale, zp = np.float32(0.25), np.array(f.min + 3 if not f.signed else -2)
        else:
            scale = np.float32(0.25) * 2.0 ** rng.integers(-2, 3, shape[1]).astype(np.float32)
            zp = rng.integers(f.min, f.max + 1, shape[1])
        q = fp.quantize(x, f, scale=scale, zero_point=zp, axis=axis)
        nbytes = len(q.pack())
        want = _ort_raw(_quantize_model(shape, fmt, scale, zp, axis=axis), {"x": x}, nbytes)
        np.testing.assert_array_equal(q.pack(), want, err_msg=f"{fmt} axis={axis}")
        # and the packed bytes unpack to the same codes
        back = fp.QTensor.from_packed(q.pack(), f, shape, scale=q.scale, zero_point=q.zero_point,
                                      axis=axis)
        np.testing.assert_array_equal(back.codes, q.codes)


def test_quantizelinear_blocked_int4(rng):
    shape, bs = (4, 64), 32
    x = _with_ties(rng, shape, 0.5)
    scale = (np.float32(0.5) * 2.0 ** rng.integers(-1, 2, (4, 2))).astype(np.float32)
    zp = np.zeros((4, 2), np.int8)
    q = fp.quantize(x, "int4", scale=scale, zero_point=zp, axis=1, group_size=bs)
    want = _ort_raw(_quantize_model(shape, "int4", scale, zp, axis=1, block_size=bs), {"x": x}, len(q.pack()))
    np.testing.assert_array_equal(q.pack(), want)


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@pytest.mark.parametrize("saturate", [True, False])
def test_quantizelinear_fp8(fmt, saturate, rng):
    f = fp.formats.as_format(fmt)
    x = (rng.standard_normal(4000) * rng.choice([1, 100, 1e4], 4000)).astype(np.float32)
    x[:50] = np.linspace(-2, 2, 50) * f.max_value * 1.2        # around the overflow edges
    scale = np.float32(0.75)
    q = fp.quantize(x, fmt, scale=scale, overflow="saturate" if saturate else "nonfinite")
    want = _ort_raw(_quantize_model(x.shape, fmt, scale, 0, saturate=saturate), {"x": x}, x.size)
    keep = np.ones(x.size, bool)
    if not saturate:
        # known ONNX Runtime 1.32 deviations from OCP (docs/semantics.md section 5), excluded:
        r = np.abs(x / scale)
        keep = ~((r >= 61440) & (r < 65536)) if fmt == "e5m2" else ~((r >= 480) & (r < 496))
    np.testing.assert_array_equal(q.codes[keep], want[keep])
    assert keep.mean() > 0.9


@pytest.mark.parametrize("fmt", ["int8", "uint8", "e4m3", "e5m2"])
def test_dequantizelinear(fmt, rng):
    shape = (5, 8)
    ty = ONNX_TYPE[fmt]
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    axis = 1 if fmt in ("int8", "uint8") else None
    q = fp.quantize(x, fmt, axis=axis, symmetric=fmt == "int8")
    sshape = list(np.shape(q.scale))
    init = helper.make_tensor("c", ty, list(shape), q.codes.tobytes(), raw=True)
    inputs = ["c", "s"] + (["z"] if fmt in ("int8", "uint8") else [])
    inits = [init, helper.make_tensor("s", TensorProto.FLOAT, sshape, q.scale.ravel().tolist())]
    if fmt in ("int8", "uint8"):
        inits.append(helper.make_tensor("z", ty, sshape, np.asarray(q.zero_point).ravel().tolist()))
    attrs = {"axis": axis} if axis is not None else {}
    g = helper.make_graph([helper.make_node("DequantizeLinear", inputs, ["y"], **attrs)], "g", [],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))], inits)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
                                .SerializeToString(), so, providers=["CPUExecutionProvider"])
    want = sess.run(None, {})[0]
    np.testing.assert_array_equal(q.dequantize().view(np.uint32), want.view(np.uint32))


def test_design_notes_examples():
    x = np.array([-0.5, -0.2, 0.1, 0.3, 0.5])
    q = fp.quantize(x, "int8")
    assert q.scale == np.float32(0.5 / 127)
    assert q.codes.tolist() == [-127, -51, 25, 76, 127]
    # asymmetric, real-valued offset: 0.1 .. 0.5 onto 0 .. 255
    y = np.array([0.1, 0.3, 0.5])
    qa = fp.quantize(y, "uint8", symmetric=False, float_zero_point=True)
    assert qa.codes[0] == 0 and qa.codes[2] == 255
    # 0.3 sits on a tie: (0.3 - 0.1) / (0.4 / 255) = 127.5 exactly; with the float32
    # scale (a hair below 0.4/255) the quotient is 127.5000004, so 128 either way.
    assert qa.codes[1] == 128
    # the notes say 127 because they rounded the scale to 0.00157 first: 127.39 -> 127
    qn = fp.quantize(y, "uint8", scale=0.00157, zero_point=0.1, symmetric=False, float_zero_point=True)
    assert qn.codes.tolist() == [0, 127, 255]


def test_integer_zero_point_form_widens_to_zero(rng):
    x = rng.uniform(0.1, 0.5, 1000).astype(np.float32)
    q = fp.quantize(x, "uint8", symmetric=False)
    assert q.zero_point == 0                     # range widened to [0, 0.5]: 0.0 is exact
    np.testing.assert_allclose(q.scale, np.float32(x.max() / 255))
    assert q.dequantize()[np.argmin(x)] > 0.09


@pytest.mark.parametrize("fmt", ["int8", "int4", "int2", "uint8", "uint4", "e4m3", "e5m2"])
@pytest.mark.parametrize("gran", ["tensor", "channel", "group"])
def test_error_within_half_a_step_and_codes_in_format(fmt, gran, rng):
    x = (rng.standard_normal((8, 64)) * rng.uniform(0.1, 10, (8, 1))).astype(np.float32)
    kw = {"tensor": {}, "channel": {"axis": 0}, "group": {"axis": 1, "group_size": 16}}[gran]
    sym = not fmt.startswith("u")
    q = fp.quantize(x, fmt, symmetric=sym, **kw)
    deq = q.dequantize()
    if fmt.startswith("e"):
        # FP8: relative error of at most half an ulp (3 mantissa bits: 2^-4; 2 bits: 2^-3),
        # above the subnormal range
        f = fp.formats.as_format(fmt)
        s = np.broadcast_to(expand_param(q.scale, x.shape, q.axis, q.group_size), x.shape)
        normal = np.abs(x / s) >= f.min_normal
        rel = np.abs(deq - x)[normal] / np.abs(x)[normal]
        assert rel.max() <= 2.0 ** -(f.man_bits + 1) * (1 + 1e-6)
    else:
        f = q.fmt
        assert q.codes.min() >= f.min and q.codes.max() <= f.max
        s = expand_param(q.scale, x.shape, q.axis, q.group_size)
        err = np.abs(deq - x) / np.broadcast_to(s, x.shape)
        assert err.max() <= 0.5 + 1e-5


def test_rounding_modes():
    v = np.array([2.5, -2.5, 0.5, -0.5, 1.2, -1.2, -1.7])
    assert round_values(v, "nearest_even").tolist() == [2, -2, 0, -0.0, 1, -1, -2]
    assert round_values(v, "nearest_away").tolist() == [3, -3, 1, -1, 1, -1, -2]
    assert round_values(v, "toward_zero").tolist() == [2, -2, 0, 0, 1, -1, -1]
    assert round_values(v, "floor").tolist() == [2, -3, 0, -1, 1, -2, -2]
    r = round_values(np.full(100_000, 0.3), "stochastic", seed=1)
    assert set(np.unique(r)) == {0.0, 1.0} and abs(r.mean() - 0.3) < 0.01
    np.testing.assert_array_equal(r, round_values(np.full(100_000, 0.3), "stochastic", seed=1))
    x = np.array([0.124, 0.126, -0.375], np.float32)
    assert fp.quantize(x, "int8", scale=0.25, rounding="nearest_away").codes.tolist() == [0, 1, -2]
    assert fp.quantize(x, "int8", scale=0.25, rounding="floor").codes.tolist() == [0, 0, -2]


def test_pack_layout():
    q = fp.quantize(np.array([1.0, -1.0, 2.0], np.float32), "int4", scale=1.0)
    assert q.codes.tolist() == [1, -1, 2]
    assert q.pack().tolist() == [0xF1, 0x02]          # first element in the low nibble
    q2 = fp.quantize(np.array([1.0, -1.0, 0.0, -2.0, 1.0], np.float32), "int2", scale=1.0)
    assert q2.pack().tolist() == [0b10001101, 0b01]    # four per byte from the low bits
    np.testing.assert_array_equal(fp.QTensor.from_packed(q2.pack(), "int2", (5,), scale=1.0).codes,
                                  q2.codes)


def test_all_zero_and_constant_tensors():
    q = fp.quantize(np.zeros(10, np.float32), "int8")
    assert q.scale == 0.0 and not q.codes.any()          # Core ML's rule: a zero scale stays 0
    qa = fp.quantize(np.full(4, 0.7, np.float32), "uint8", symmetric=False, float_zero_point=True)
    np.testing.assert_allclose(qa.dequantize(), 0.7)


def test_metrics():
    ref = np.array([1.0, -2.0, 3.0])
    assert fp.metrics.mse(ref, ref) == 0 and fp.metrics.sqnr_db(ref, ref) == np.inf
    assert fp.metrics.max_abs_error(ref, ref + [0, 0.5, -1]) == 1.0
    assert abs(fp.metrics.cosine_similarity(ref, 2 * ref) - 1) < 1e-15
    with pytest.raises(ValueError, match="shapes"):
        fp.metrics.mse([1.0], [1.0, 2.0])


def test_bad_input():
    x = np.ones((4, 6), np.float32)
    with pytest.raises(ValueError, match=r"x: non-finite value nan at index \(1, 2\)"):
        y = x.copy()
        y[1, 2] = np.nan
        fp.quantize(y, "int8")
    y = x.copy()
    y[0, 0] = np.nan
    assert np.isnan(fp.quantize(y, "e4m3", nan="propagate").dequantize()[0, 0])
    with pytest.raises(ValueError, match="scale: must be finite and non-negative, got -1.0"):
        fp.quantize(x, "int8", scale=-1.0)
    with pytest.raises(ValueError, match="scale: must be finite and non-negative, got inf"):
        fp.quantize(x, "int8", scale=np.inf)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'fmt'"):
        fp.quantize(x)
    with pytest.raises(ValueError, match="overflow: expected one of \\['saturate'\\]"):
        fp.quantize(x, "int8", overflow="wrap")
    with pytest.raises(ValueError, match="zero_point: give it together with scale"):
        fp.quantize(x, "int8", zero_point=1)
    with pytest.raises(ValueError, match="zero_point: 300 is outside"):
        fp.quantize(x, "int8", scale=1.0, zero_point=300)
    with pytest.raises(ValueError, match="group_size: 4 does not divide axis 1 of length 6"):
        fp.quantize(x, "int4", axis=1, group_size=4)
    with pytest.raises(ValueError, match="axis: 2 is out of range"):
        fp.quantize(x, "int8", axis=2)
    with pytest.raises(ValueError, match="scale: expected shape"):
        fp.quantize(x, "int8", scale=np.ones(3), axis=1)
    with pytest.raises(TypeError, match="x: expected float16, float32, float64 or bfloat16 values"):
        fp.quantize(np.ones(3, np.int32), "int8")
    with pytest.raises(ValueError, match="fmt: unknown format"):
        fp.quantize(x, "int99")
    with pytest.raises(ValueError, match="symmetric: uint8 is unsigned"):
        fp.quantize(x, "uint8")
    with pytest.raises(ValueError, match="rounding: expected one of"):
        fp.quantize(x, "int8", rounding="banker")
    with pytest.raises(ValueError, match="calibration: expected one of"):
        fp.quantize(x, "int8", calibration="magic")


@given(st.integers(0, 2**32 - 1), st.sampled_from(["int8", "int4", "uint8", "e4m3"]),
       st.integers(1, 40))
def test_percentile_clips_outliers(seed, fmt, n):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 50)).astype(np.float32)
    x[0, 0] = 1000.0
    sym = not fmt.startswith("u")
    qp = fp.quantize(x, fmt, symmetric=sym, calibration="percentile", percentile=99.0)
    qm = fp.quantize(x, fmt, symmetric=sym)
    assert qp.scale < qm.scale


def test_non_finite_found_by_the_compiled_pass(rng):
    """With a scale given, float32 input is checked inside the quantize kernel
    (one pass): any non-finite value still raises, naming its index."""
    x = rng.standard_normal(100_003).astype(np.float32)
    for where, bad in ((17, np.inf), (100_002, -np.inf), (65_536, np.nan)):
        y = x.copy()
        y[where] = bad
        with pytest.raises(ValueError, match=rf"x: non-finite value .* at index \({where},\)"):
            fp.quantize(y, "int8", scale=0.1)
    # and the compiled path agrees with the general one (float64 input takes NumPy)
    q32 = fp.quantize(x, "int8", scale=0.01, zero_point=3)
    q64 = fp.quantize(x.astype(np.float64), "int8", scale=np.float32(0.01), zero_point=3)
    d = np.flatnonzero(q32.codes != q64.codes)
    # float32 and float64 division can differ on a tie: only there
    assert all(abs(abs(np.float64(x[i]) / np.float64(np.float32(0.01))) % 1 - 0.5) < 1e-4 for i in d)
    x2 = rng.standard_normal((64, 96)).astype(np.float32)
    for kw in ({"axis": 0}, {"axis": 1, "group_size": 32}, {"axis": 1}):
        q = fp.quantize(x2, "int4", **kw)
        s = expand_param(q.scale, x2.shape, q.axis, q.group_size)
        want = np.clip(np.rint(x2 / s), -8, 7)
        np.testing.assert_array_equal(q.codes, want, err_msg=str(kw))


def test_fp8_rounding_modes(rng):
    x = rng.standard_normal(5000).astype(np.float32) * 10
    for mode in ("nearest_even", "toward_zero"):
        q = fp.quantize(x, "e4m3", scale=0.5, rounding=mode)
        np.testing.assert_array_equal(q.codes, fp.to_fp8((x / np.float32(0.5)).astype(np.float32), "e4m3",
                                                        rounding=mode))
    q1 = fp.quantize(x, "e4m3", scale=0.5, rounding="stochastic", seed=4)
    q2 = fp.quantize(x, "e4m3", scale=0.5, rounding="stochastic", seed=4)
    np.testing.assert_array_equal(q1.codes, q2.codes)
    with pytest.raises(ValueError, match="rounding: float formats take"):
        fp.quantize(x, "e4m3", rounding="floor")


@pytest.mark.parametrize("n", [2, 64, 1002, 70_000])
def test_fused_int4_packing_matches_unfused(n, rng):
    """float32 per-tensor 4-bit quantization writes packed bytes in its pass; the
    codes (unpacked on demand) and bytes must equal the float64 (NumPy) path's."""
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    for fmt in ("int4", "uint4"):
        kw = {"scale": 0.5, "zero_point": 3 if fmt == "uint4" else -1}
        fused = fp.quantize(x, fmt, **kw)
        plain = fp.quantize(x.astype(np.float64), fmt, scale=np.float32(0.5), zero_point=kw["zero_point"])
        np.testing.assert_array_equal(fused.pack(), plain.pack())
        np.testing.assert_array_equal(fused.codes, plain.codes)
        assert not fused.pack().flags.writeable


def test_empty_tensors():
    for fmt in ("int8", "int4", "e4m3"):
        q = fp.quantize(np.zeros((0, 3), np.float32), fmt, scale=0.5)
        assert q.codes.shape == (0, 3) and q.dequantize().shape == (0, 3)
    with pytest.raises(ValueError, match="x: an empty tensor has no range to calibrate"):
        fp.quantize(np.zeros(0, np.float32), "int8")


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2", "e4m3fnuz", "e2m1"])
@pytest.mark.parametrize("rounding", ["nearest_even", "toward_zero", "stochastic"])
@pytest.mark.parametrize("saturate", [False, True])
def test_fp8_per_tensor_equals_divide_then_convert(fmt, rounding, saturate):
    """The per-tensor FP8 quantizer fuses x / scale into the encoder: the codes are
    those of the IEEE float32 quotient converted by to_fp8 (more than one chunk,
    odd length, overflowing quotients, NaN where the format has one)."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(200_003) * 10.0 ** rng.integers(-8, 8, 200_003)).astype(np.float32)
    f = fp.formats.as_format(fmt)
    nan = "raise"
    if f.nan is not None:
        x[::997] = np.nan
        nan = "propagate"
    s = np.float32(0.37)
    ovf = "saturate" if saturate or f.nan is None else "nonfinite"
    q = fp.quantize(x, fmt, scale=s, rounding=rounding, overflow=ovf, seed=11, nan=nan,
                    num_threads=2)
    with np.errstate(over="ignore", invalid="ignore"):
        want = fp.to_fp8(x / s, fmt, rounding=rounding, overflow=ovf, seed=11)
    np.testing.assert_array_equal(q.codes, want)
