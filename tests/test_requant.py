"""Requantization against transcriptions of gemmlowp/TFLite and ONNX Runtime."""
import itertools

import numpy as np
import pytest

import fixedpoint as fp
from fixedpoint import _reference as ref

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def test_quantize_multiplier_against_transcription(rng):
    reals = [0.0, 1e-30, 2.0**-32, 2.0**-31 * 0.75, 0.0035, 0.5, 0.75, 1.0, 1.5, 1000.5, 2.0**29,
             np.nextafter(1.0, 0.0),            # rounds up to 2^31: halved, shift + 1
             np.nextafter(0.5, 1.0)]
    reals += list(rng.uniform(0, 1, 300)) + list(2.0 ** rng.uniform(-40, 20, 300))
    for r in reals:
        assert fp.quantize_multiplier(float(r)) == ref.tflite_quantize_multiplier(float(r)), r
    assert fp.quantize_multiplier(np.nextafter(1.0, 0.0)) == (2**30, 1)
    with pytest.raises(ValueError, match="real: expected a finite, non-negative"):
        fp.quantize_multiplier(-1.0)
    with pytest.raises(TypeError, match="real: expected a float"):
        fp.quantize_multiplier("0.5")


def _edge_accs():
    base = [ref.INT32_MIN, ref.INT32_MIN + 1, -(2**30), -1000, -3, -2, -1, 0, 1, 2, 3, 1000,
            2**30, ref.INT32_MAX - 1, ref.INT32_MAX]
    return np.array(base, dtype=np.int64)


@pytest.mark.parametrize("mode", ["double", "single"])
def test_requantize_against_transcription(mode, rng):
    accs = np.concatenate([_edge_accs(), rng.integers(ref.INT32_MIN, ref.INT32_MAX, 400, endpoint=True)])
    mults = [0, 1, 2**30, 2**31 - 1, ref.INT32_MAX // 3] + list(rng.integers(2**30, 2**31, 6))
    shifts = range(-31, 31) if mode == "double" else range(-31, 1)
    for m, s in itertools.product(mults, shifts):
        got = fp.requantize(accs, m, s, fmt="int16", rounding=mode)
        want = [max(-2**15, min(2**15 - 1, ref.tflite_multiply_by_quantized_multiplier(
            int(a), m, s, mode == "single"))) for a in accs]
        np.testing.assert_array_equal(got.astype(np.int64), want, err_msg=f"m={m} s={s}")


def test_ties_of_both_signs():
    m, s = 2**30, -1                         # multiply by 1/4
    # exact ties: +-2 -> +-0.5, +-6 -> +-1.5
    assert fp.requantize([2, -2, 6, -6], m, s, rounding="double").tolist() == [1, -1, 2, -2]
    assert fp.requantize([2, -2, 6, -6], m, s, rounding="single").tolist() == [1, 0, 2, -1]
    assert fp.requantize([2, -2, 6, -6], 0.25, rounding="float").tolist() == [0, 0, 2, -2]
    # the doubling high multiply on its corners (INT32_MIN * INT32_MIN saturates;
    # no valid multiplier reaches it through requantize, the primitive must still)
    from fixedpoint import _quant
    corners = [ref.INT32_MIN, ref.INT32_MIN + 1, -(2**30), -3, -1, 0, 1, 3, 2**30, ref.INT32_MAX]
    for a, b in itertools.product(corners, corners):
        assert _quant.srdhm(a, b) == ref.gemmlowp_srdhm(a, b)


def test_per_channel_and_zero_point(rng):
    acc = rng.integers(-10**6, 10**6, (5, 3))
    reals = [0.001, 0.0007, 0.02]
    ms, ss = zip(*(fp.quantize_multiplier(r) for r in reals))
    got = fp.requantize(acc, np.array(ms), np.array(ss), zero_point=5)
    for j in range(3):
        np.testing.assert_array_equal(got[:, j], fp.requantize(acc[:, j], ms[j], ss[j], zero_point=5))


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize("xtype", ["int8", "uint8"])
def test_qlinear_float_against_ort_qlinearmatmul(xtype, rng):
    """ONNX Runtime 1.32's uint8 x int8 path adds pairs of products with 16-bit
    saturation (AVX2 vpmaddubsw, SEMANTICS.md section 5), so for uint8 inputs
    the comparison uses x in [0, 127], where no pair can exceed int16."""
    M, K, N = 7, 50, 9
    lo, hi = (-128, 127) if xtype == "int8" else (0, 127)
    ot = TensorProto.INT8 if xtype == "int8" else TensorProto.UINT8
    x = rng.integers(lo, hi + 1, (M, K)).astype(xtype)
    w = rng.integers(-128, 128, (K, N)).astype(np.int8)
    xs, ws, ys = np.float32(0.02), np.float32(0.013), np.float32(0.11)
    xz = np.array(3 if xtype == "int8" else 128, xtype)
    wz = np.array(0, np.int8)
    yz = np.array(-5 if xtype == "int8" else 120, xtype)
    g = helper.make_graph(
        [helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])], "g",
        [helper.make_tensor_value_info("x", ot, [M, K]), helper.make_tensor_value_info("w", TensorProto.INT8, [K, N])],
        [helper.make_tensor_value_info("y", ot, [M, N])],
        [helper.make_tensor("xs", TensorProto.FLOAT, [], [float(xs)]), helper.make_tensor("xz", ot, [], [int(xz)]),
         helper.make_tensor("ws", TensorProto.FLOAT, [], [float(ws)]), helper.make_tensor("wz", TensorProto.INT8, [], [0]),
         helper.make_tensor("ys", TensorProto.FLOAT, [], [float(ys)]), helper.make_tensor("yz", ot, [], [int(yz)])])
    want = _ort(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]), {"x": x, "w": w})
    scale = np.float32(xs * ws / ys)
    got = fp.qlinear(x, w, x_zero_point=int(xz), w_zero_point=int(wz), multiplier=scale,
                     out_zero_point=int(yz), in_fmt=xtype, w_fmt="int8", out_fmt=xtype, rounding="float")
    np.testing.assert_array_equal(got, want)


def test_matmulinteger_against_ort(rng):
    """ONNX Runtime's int8 x int8 MatMulInteger is exact (its uint8 x int8 path
    clips pairs of products to 16 bits, SEMANTICS.md section 5: not compared)."""
    M, K, N = 6, 300, 11
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-128, 128, (K, N)).astype(np.int8)
    g = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w", "xz", "wz"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.INT8, [M, K]),
         helper.make_tensor_value_info("w", TensorProto.INT8, [K, N])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [M, N])],
        [helper.make_tensor("xz", TensorProto.INT8, [], [-7]), helper.make_tensor("wz", TensorProto.INT8, [], [4])])
    want = _ort(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), {"x": x, "w": w})
    got = fp.matmul(x.astype(np.int16) + 7, w.astype(np.int16) - 4, "int10", fp.Accumulator(32, "wrap"))
    np.testing.assert_array_equal(got, want)


def test_qlinear_double_against_reference(rng):
    x = rng.integers(-128, 128, (4, 40)).astype(np.int8)
    w = rng.integers(-127, 128, (40, 6)).astype(np.int8)
    bias = rng.integers(-5000, 5000, 6)
    m, s = fp.quantize_multiplier(0.004)
    got = fp.qlinear(x, w, bias, x_zero_point=-12, multiplier=m, shift=s, out_zero_point=3)
    acc = (x.astype(np.int64) + 12) @ w.astype(np.int64) + bias
    want = [[max(-128, min(127, ref.tflite_multiply_by_quantized_multiplier(int(v), m, s) + 3))
             for v in row] for row in acc]
    np.testing.assert_array_equal(got, want)
    # through a saturating 16-bit register the bias still comes first
    sat = fp.qlinear(x, w, bias, x_zero_point=-12, multiplier=m, shift=s,
                     acc=fp.Accumulator(16, "saturate", 1))
    assert sat.dtype == np.int8


def test_bad_arguments():
    with pytest.raises(ValueError, match="rounding: expected one of"):
        fp.requantize([1], 1, 0, rounding="half_up")
    with pytest.raises(ValueError, match="shift: must lie in"):
        fp.requantize([1], 2**30, 31)
    with pytest.raises(ValueError, match="multiplier: Q31 multipliers"):
        fp.requantize([1], 2**31, 0)
    with pytest.raises(ValueError, match="acc: values must fit int32"):
        fp.requantize([2**31], 2**30, 0)
    with pytest.raises(ValueError, match="zero_point: 200 is outside"):
        fp.requantize([1], 2**30, 0, zero_point=200)
    with pytest.raises(TypeError, match="acc: expected integers"):
        fp.requantize([1.5], 2**30, 0)
    with pytest.raises(ValueError, match="shift: must be 0 with rounding='float'"):
        fp.requantize([1], 0.5, 3, rounding="float")


@pytest.mark.parametrize("mode", ["double", "single"])
def test_general_broadcasting_path_against_transcription(mode, rng):
    """Per-row multipliers and per-column zero points take the NumPy path; the
    compiled kernel takes per-tensor and per-column ones: both equal the
    transcription, for 1 and 2 threads."""
    acc = np.concatenate([_edge_accs(), rng.integers(ref.INT32_MIN, ref.INT32_MAX, 105, endpoint=True)])
    acc = acc.reshape(8, 15)
    m = rng.integers(0, 2**31, (8, 1))
    s = rng.integers(-31, 31 if mode == "double" else 1, (8, 1))
    zp = rng.integers(-5, 5, 15)
    got = fp.requantize(acc, m, s, zero_point=zp, fmt="int16", rounding=mode)
    mc, sc = rng.integers(0, 2**31, 15), rng.integers(-31, 1, 15)
    got_c = [fp.requantize(acc, mc, sc, zero_point=3, fmt="int16", rounding=mode, num_threads=t)
             for t in (1, 2)]
    for i, j in np.ndindex(*acc.shape):
        v = ref.tflite_multiply_by_quantized_multiplier(int(acc[i, j]), int(m[i, 0]), int(s[i, 0]),
                                                        mode == "single")
        assert got[i, j] == max(-2**15, min(2**15 - 1, v + int(zp[j])))
        v = ref.tflite_multiply_by_quantized_multiplier(int(acc[i, j]), int(mc[j]), int(sc[j]),
                                                        mode == "single")
        assert got_c[0][i, j] == got_c[1][i, j] == max(-2**15, min(2**15 - 1, v + 3))


def test_quantize_multiplier_arrays_match_the_transcription(rng):
    """Per-channel multipliers (arrays) follow the same rule as scalars: values
    next to every rounding boundary, 0, tiny values that flush, huge ones."""
    reals = np.concatenate([rng.uniform(0, 1, 300), 10.0 ** rng.uniform(-12, 4, 300),
                            [0.0, 0.5, 1.0, 2.0**-32, 2.0**-31, 2.0**-40, 1 - 2.0**-33, 0.0035],
                            (np.arange(1, 50) + 0.5) / 2.0**31 * 2.0**-3])
    m, s = fp.quantize_multiplier(reals)
    assert m.shape == s.shape == reals.shape
    for r, mm, ss in zip(reals, m, s):
        assert (int(mm), int(ss)) == ref.tflite_quantize_multiplier(float(r)), r
        assert (int(mm), int(ss)) == fp.quantize_multiplier(float(r))
    with pytest.raises(ValueError, match="real"):
        fp.quantize_multiplier(np.array([0.5, -1.0]))
