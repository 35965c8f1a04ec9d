"""Requantization against transcriptions of gemmlowp/TFLite and ONNX Runtime."""
import itertools

import numpy as np
import pytest

import fixedpoint as fp
from fixedpoint import _reference as ref

from extras import need

ort = need("onnxruntime", 'pip install "fixedpoint[test]"')
onnx = need("onnx", 'pip install "fixedpoint[models]"')
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


def _want(accs, method, mult, shift, zp, f):
    return [ref.requantize_value(int(a), method, mult, shift, zp, f.min, f.max) for a in accs]


@pytest.mark.parametrize("method", ["double", "single", "ruy"])
def test_requantize_against_transcription(method, rng):
    """Every shift, multipliers at their corners, accumulators at theirs; the
    transcriptions wrap in int32 where the C++ does (left shift, int32 cast,
    zero-point add)."""
    accs = np.concatenate([_edge_accs(), rng.integers(ref.INT32_MIN, ref.INT32_MAX, 400, endpoint=True)])
    mults = [0, 1, 2**30, 2**31 - 1, ref.INT32_MAX // 3] + list(rng.integers(2**30, 2**31, 6))
    f = fp.formats.as_format("int16", kind="int")
    for m, s in itertools.product(mults, range(-31, 31)):
        got = fp.requantize(accs, m, s, out_fmt=f, method=method)
        np.testing.assert_array_equal(got.astype(np.int64), _want(accs, method, m, s, 0, f),
                                      err_msg=f"m={m} s={s}")
    # the zero point is added in int32: results next to +-2^31 wrap through it
    for zp in (-5, 7):
        got = fp.requantize(accs, 2**31 - 1, 0, zero_point=zp, out_fmt=f, method=method)
        np.testing.assert_array_equal(got.astype(np.int64), _want(accs, method, 2**31 - 1, 0, zp, f))


@pytest.mark.parametrize("method", ["float", "float64"])
def test_float_methods_against_transcription(method, rng):
    """Real multipliers from 1e-7 to 4 (and exact powers of two, which put
    accumulators on ties), every accumulator corner, zero points of both signs."""
    accs = np.concatenate([_edge_accs(), rng.integers(ref.INT32_MIN, ref.INT32_MAX, 200, endpoint=True),
                           np.arange(-40, 41)])
    reals = list(10.0 ** rng.uniform(-7, np.log10(4), 12)) + [2.0**-k for k in range(-2, 8)]
    for f in (fp.formats.as_format("int8", kind="int"), fp.formats.as_format("int16", kind="int")):
        for r, zp in itertools.product(reals, (-3, 0, 5)):
            got = fp.requantize(accs, r, zero_point=zp, out_fmt=f, method=method)
            np.testing.assert_array_equal(got.astype(np.int64), _want(accs, method, r, 0, zp, f),
                                          err_msg=f"real={r} zp={zp}")


def test_ties_of_every_method():
    """Hand-worked ties: multiply by 1/4, so +-2 -> +-0.5 and +-6 -> +-1.5."""
    m, s = 2**30, -1
    acc = [2, -2, 6, -6]
    # double: the high multiply is exact here, the divide by 2 rounds ties away from zero
    assert fp.requantize(acc, m, s, out_fmt="int8", method="double").tolist() == [1, -1, 2, -2]
    # single and ruy: ties toward +infinity
    assert fp.requantize(acc, m, s, out_fmt="int8", method="single").tolist() == [1, 0, 2, -1]
    assert fp.requantize(acc, m, s, out_fmt="int8", method="ruy").tolist() == [1, 0, 2, -1]
    # float: half to even; float64: std::round, half away from zero
    assert fp.requantize(acc, 0.25, out_fmt="int8", method="float").tolist() == [0, 0, 2, -2]
    assert fp.requantize(acc, 0.25, out_fmt="int8", method="float64").tolist() == [1, -1, 2, -2]
    # a tie of the high multiply itself: 3 * 2^30 / 2^31 = 1.5 -> 2 (toward +inf), then
    # / 2 = 1 exactly (double) or 1 (ruy); -3 -> -1.5 -> -1, then / 2 = -0.5 -> -1 (double,
    # away from zero) or 0 (ruy, toward +inf)
    assert fp.requantize([3, -3], m, s, out_fmt="int8", method="double").tolist() == [1, -1]
    assert fp.requantize([3, -3], m, s, out_fmt="int8", method="ruy").tolist() == [1, 0]
    # the doubling high multiply on its corners (INT32_MIN * INT32_MIN saturates;
    # no valid multiplier reaches it through requantize, the primitive must still)
    from fixedpoint import _quant
    corners = [ref.INT32_MIN, ref.INT32_MIN + 1, -(2**30), -3, -1, 0, 1, 3, 2**30, ref.INT32_MAX]
    for a, b in itertools.product(corners, corners):
        assert _quant.srdhm(a, b) == ref.gemmlowp_srdhm(a, b)


def test_int32_overflow_of_each_method():
    """What each engine does when the value leaves int32 (worked by hand)."""
    big = [2**31 - 1, -(2**31)]
    # float64: 4 * (2^31 - 1) and 4 * -2^31 are outside int32: x86's conversion gives
    # INT32_MIN for both; + 0 -> -128; + (-1) wraps to INT32_MAX -> 127
    assert fp.requantize(big, 4.0, out_fmt="int8", method="float64").tolist() == [-128, -128]
    assert fp.requantize(big, 4.0, zero_point=-1, out_fmt="int8", method="float64").tolist() \
        == [127, 127]
    # float clamps in float before adding the zero point: saturation, never a wrap
    assert fp.requantize(big, 4.0, zero_point=-1, out_fmt="int8", method="float").tolist() \
        == [127, -128]
    # multiplier 1.0 is (2^30, shift 1): x << 1 wraps in int32, (2^31 - 1) << 1 = -2,
    # then * 1/2 = -1
    assert fp.requantize([2**31 - 1], 2**30, 1, out_fmt="int16", method="double").tolist() == [-1]
    assert fp.requantize([2**31 - 1], 2**30, 1, out_fmt="int16", method="ruy").tolist() == [-1]
    # SRDHM(2^31 - 1, 2^31 - 1) = 2^31 - 2; + 5 wraps to -2^31 + 3 -> clamps to -32768
    assert fp.requantize([2**31 - 1], 2**31 - 1, 0, zero_point=5, out_fmt="int16").tolist() \
        == [-32768]


def test_per_channel_and_zero_point(rng):
    acc = rng.integers(-10**6, 10**6, (5, 3))
    reals = [0.001, 0.0007, 0.02]
    ms, ss = zip(*(fp.quantize_multiplier(r) for r in reals))
    for method in ("double", "single", "ruy"):
        got = fp.requantize(acc, np.array(ms), np.array(ss), zero_point=5, out_fmt="int8", method=method)
        for j in range(3):
            np.testing.assert_array_equal(
                got[:, j], fp.requantize(acc[:, j], ms[j], ss[j], zero_point=5, out_fmt="int8",
                                         method=method))
    for method in ("float", "float64"):
        got = fp.requantize(acc, np.array(reals), zero_point=5, out_fmt="int8", method=method)
        for j in range(3):
            np.testing.assert_array_equal(
                got[:, j], fp.requantize(acc[:, j], reals[j], zero_point=5, out_fmt="int8",
                                         method=method))


def test_zero_d_in_zero_d_out():
    for method, args in (("double", (2**30, -1)), ("float", (0.25,)), ("float64", (0.25,))):
        got = fp.requantize(np.int32(6), *args, out_fmt="int8", method=method)
        assert isinstance(got, np.ndarray) and got.shape == () and got.dtype == np.int8
        assert int(got) == 2


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize("xtype", ["int8", "uint8"])
def test_qlinear_float_against_ort_qlinearmatmul(xtype, rng):
    """ONNX Runtime 1.32's uint8 x int8 path adds pairs of products with 16-bit
    saturation (AVX2 vpmaddubsw, docs/semantics.md section 5), so for uint8 inputs
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
    got = fp.qlinear(x, w, (xtype, "int8"), x_zero_point=int(xz), w_zero_point=int(wz),
                     multiplier=scale, out_zero_point=int(yz), out_fmt=xtype, method="float")
    np.testing.assert_array_equal(got, want)


def test_matmulinteger_against_ort(rng):
    """ONNX Runtime's int8 x int8 MatMulInteger is exact (its uint8 x int8 path
    clips pairs of products to 16 bits, docs/semantics.md section 5: not compared)."""
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
    got = fp.matmul(x.astype(np.int16) + 7, w.astype(np.int16) - 4, "int10",
                    acc=fp.Accumulator(32, "wrap"))
    np.testing.assert_array_equal(got, want)


def test_qlinear_against_reference(rng):
    x = rng.integers(-128, 128, (4, 40)).astype(np.int8)
    w = rng.integers(-127, 128, (40, 6)).astype(np.int8)
    bias = rng.integers(-5000, 5000, 6)
    m, s = fp.quantize_multiplier(0.004)
    acc = (x.astype(np.int64) + 12) @ w.astype(np.int64) + bias
    for method in ("double", "single", "ruy"):
        got = fp.qlinear(x, w, "int8", bias_q=bias, x_zero_point=-12, multiplier=m, shift=s,
                         out_zero_point=3, out_fmt="int8", method=method)
        want = [[ref.requantize_value(int(v), method, m, s, 3, -128, 127) for v in row] for row in acc]
        np.testing.assert_array_equal(got, want)
    for method in ("float", "float64"):
        got = fp.qlinear(x, w, "int8", bias_q=bias, x_zero_point=-12, multiplier=0.004,
                         out_zero_point=3, out_fmt="int8", method=method)
        want = [[ref.requantize_value(int(v), method, 0.004, 0, 3, -128, 127) for v in row]
                for row in acc]
        np.testing.assert_array_equal(got, want)


def test_qlinear_bias_is_the_registers_initial_value():
    """Through a saturating 16-bit register the bias must come first.

    Products 127 * 127 = 16129, four of them, bias -32000 (worked by hand):
    bias first: -32000, -15871, 258, 16387, 32516 (never saturates); times
    2^30 / 2^31 = 0.5 -> 16258.  Bias last would be 16129, 32258, then 48387
    clamps to 32767 and stays, + -32000 = 767 -> 384 (383.5 rounded up)."""
    x = np.full((1, 4), 127, np.int8)
    w = np.full((4, 1), 127, np.int8)
    got = fp.qlinear(x, w, "int8", bias_q=[-32000], multiplier=2**30, out_fmt="int16",
                     acc=fp.Accumulator(16, "saturate"))
    assert got.tolist() == [[16258]]
    # and the slow reference agrees on random layers through narrow registers
    rng = np.random.default_rng(5)
    for _ in range(5):
        xs = rng.integers(-128, 128, (3, 30)).astype(np.int8)
        ws = rng.integers(-127, 128, (30, 4)).astype(np.int8)
        b = rng.integers(-2**14, 2**14, 4)
        got = fp.qlinear(xs, ws, "int8", bias_q=b, multiplier=2**30, out_fmt="int16",
                         acc=fp.Accumulator(16, "saturate"))
        for i, j in np.ndindex(3, 4):
            v = ref.accumulate([int(xs[i, k]) * int(ws[k, j]) for k in range(30)], 16, "saturate", 1,
                               init=int(b[j]))[0]
            assert got[i, j] == ref.requantize_value(v, "double", 2**30, 0, 0, -2**15, 2**15 - 1)


def test_qlinear_multiplies_plain_codes_without_widening(monkeypatch):
    """The caller's int8 codes go to matmul as int8, uncopied, with zero points 0
    and with nonzero ones folded into the initial value; only a saturating
    register that could clamp widens, to the narrowest signed format holding
    code - zp."""
    from fixedpoint import requant
    calls = []
    real_matmul = requant.matmul

    def spy(a, b, fmt, **kw):
        calls.append((a, b, fmt))
        return real_matmul(a, b, fmt, **kw)

    monkeypatch.setattr(requant, "matmul", spy)
    x = np.arange(-60, 60, dtype=np.int8).reshape(3, 40)
    w = (np.arange(80, dtype=np.int8) % 7 - 3).reshape(40, 2).astype(np.int8)
    int8, int9 = fp.formats.as_format("int8"), fp.formats.as_format("int9")
    for xz, wz in ((0, 0), (1, 0), (-1, [2, -3])):
        fp.qlinear(x, w, "int8", x_zero_point=xz, w_zero_point=wz, multiplier=2**30, out_fmt="int8")
        a, b, f = calls[-1]
        assert f == int8 and np.shares_memory(a, x) and np.shares_memory(b, w)
    narrow = fp.Accumulator(16, "saturate")    # 40 products of 128 * 127 can clamp it
    fp.qlinear(x, w, "int8", x_zero_point=1, multiplier=2**30, out_fmt="int8", acc=narrow)
    assert calls[-1][2] == int9                  # -128 - 1 needs 9 bits
    fp.qlinear(x, w, "int8", x_zero_point=-1, multiplier=2**30, out_fmt="int8", acc=narrow)
    assert calls[-1][2] == int9                  # 127 + 1 needs 9 bits
    fp.qlinear(x.astype(np.uint8) % 100, w, ("uint8", "int8"), multiplier=2**30, out_fmt="int8")
    assert calls[-1][2] == int9                  # uint8 and int8 share int9


@pytest.mark.parametrize("acc", [fp.Accumulator(32, "wrap"), fp.Accumulator(16, "wrap"),
                                 fp.Accumulator(32, "saturate"), fp.Accumulator(16, "saturate"),
                                 fp.Accumulator(18, "saturate", 4)])
def test_qlinear_zero_points_against_reference(acc, rng):
    """Zero points folded or widened: the register holds what a register fed with
    (x - xz)(w - wz) in K order from the bias holds, wrapping or clamping."""
    M, K, N = 3, 24, 4
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-127, 128, (K, N)).astype(np.int8)
    x[0] = 127                                   # large sums: the narrow registers overflow
    w[:, 0] = 127
    bias = rng.integers(-3000, 3000, N)
    for xz, wz in ((-9, 0), (5, np.array([0, 3, -2, 1]))):
        got = fp.qlinear(x, w, "int8", bias_q=bias, x_zero_point=xz, w_zero_point=wz,
                         multiplier=2**31 - 1, out_fmt="int16", acc=acc)
        want, _ = ref.matmul(x.astype(np.int64) - xz, w.astype(np.int64) - wz, acc.bits,
                             acc.overflow, acc.block, np.broadcast_to(bias, (M, N)))
        for i, j in np.ndindex(M, N):
            v = min(max(int(want[i, j]), ref.INT32_MIN), ref.INT32_MAX)
            assert got[i, j] == ref.requantize_value(v, "double", 2**31 - 1, 0, 0, -2**15, 2**15 - 1)


def test_qlinear_mixed_formats_against_reference(rng):
    x = rng.integers(0, 256, (5, 33)).astype(np.uint8)
    w = rng.integers(-128, 128, (33, 3)).astype(np.int8)
    m, s = fp.quantize_multiplier(0.0021)
    got = fp.qlinear(x, w, ("uint8", "int8"), bias_q=[7, -7, 100], x_zero_point=128, multiplier=m,
                     shift=s, out_zero_point=-2, out_fmt="int8")
    acc = (x.astype(np.int64) - 128) @ w.astype(np.int64) + np.array([7, -7, 100])
    want = [[ref.requantize_value(int(v), "double", m, s, -2, -128, 127) for v in row] for row in acc]
    np.testing.assert_array_equal(got, want)


def test_bad_arguments():
    with pytest.raises(ValueError, match="method: expected one of"):
        fp.requantize([1], 1, 0, out_fmt="int8", method="half_up")
    with pytest.raises(TypeError, match="out_fmt"):
        fp.requantize([1], 1, 0)
    with pytest.raises(ValueError, match="out_fmt: unknown format"):
        fp.requantize([1], 1, 0, out_fmt="int99")
    with pytest.raises(ValueError, match="shift: must lie in"):
        fp.requantize([1], 2**30, 31, out_fmt="int8")
    with pytest.raises(ValueError, match="multiplier: Q31 multipliers"):
        fp.requantize([1], 2**31, 0, out_fmt="int8")
    with pytest.raises(ValueError, match="acc: values must fit int32"):
        fp.requantize([2**31], 2**30, 0, out_fmt="int8")
    with pytest.raises(ValueError, match="zero_point: 200 is outside"):
        fp.requantize([1], 2**30, 0, zero_point=200, out_fmt="int8")
    with pytest.raises(TypeError, match="acc: expected integers"):
        fp.requantize([1.5], 2**30, 0, out_fmt="int8")
    for method in ("float", "float64"):
        with pytest.raises(ValueError, match=f"shift: must be 0 with method='{method}'"):
            fp.requantize([1], 0.5, 3, out_fmt="int8", method=method)
        with pytest.raises(ValueError, match="multiplier: expected finite, non-negative"):
            fp.requantize([1], -0.5, out_fmt="int8", method=method)
        with pytest.raises(TypeError, match="multiplier: expected real scales"):
            fp.requantize([1], "0.5", out_fmt="int8", method=method)
    with pytest.raises(ValueError, match="multiplier: expected finite"):
        fp.requantize([1], 1e300, out_fmt="int8", method="float")      # inf in float32
    x, w = np.zeros((2, 3), np.int8), np.zeros((3, 4), np.int8)
    with pytest.raises(TypeError, match="out_fmt"):
        fp.qlinear(x, w, "int8", multiplier=1)
    with pytest.raises(ValueError, match="fmt: expected one format or a pair"):
        fp.qlinear(x, w, ("int8", "int8", "int8"), multiplier=1, out_fmt="int8")
    with pytest.raises(ValueError, match="x_q: expected shape"):
        fp.qlinear(np.zeros((2, 5), np.int8), w, "int8", multiplier=1, out_fmt="int8")
    with pytest.raises(TypeError, match="acc: expected an Accumulator"):
        fp.qlinear(x, w, "int8", multiplier=1, out_fmt="int8", acc="saturate")
    with pytest.raises(ValueError, match="bias_q: outside the 16-bit"):
        fp.qlinear(x, w, "int8", bias_q=[2**20] * 4, multiplier=1, out_fmt="int8",
                   acc=fp.Accumulator(16, "saturate"))


@pytest.mark.parametrize("method", ["double", "single", "ruy", "float", "float64"])
def test_general_broadcasting_path_against_transcription(method, rng):
    """Per-row multipliers and per-column zero points take the per-element path;
    per-tensor and per-column multipliers the fused one: both equal the
    transcription, for 1 and 2 threads."""
    acc = np.concatenate([_edge_accs(), rng.integers(ref.INT32_MIN, ref.INT32_MAX, 105, endpoint=True)])
    acc = acc.reshape(8, 15)
    flt = method in ("float", "float64")
    if flt:
        m, s = 10.0 ** rng.uniform(-7, 0.6, (8, 1)), np.zeros((8, 1), np.int64)
        mc, sc = 10.0 ** rng.uniform(-7, 0.6, 15), np.zeros(15, np.int64)
    else:
        m, s = rng.integers(0, 2**31, (8, 1)), rng.integers(-31, 31, (8, 1))
        mc, sc = rng.integers(0, 2**31, 15), rng.integers(-31, 31, 15)
    zp = rng.integers(-5, 5, 15)
    got = fp.requantize(acc, m, s, zero_point=zp, out_fmt="int16", method=method)
    got_c = [fp.requantize(acc, mc, sc, zero_point=3, out_fmt="int16", method=method, num_threads=t)
             for t in (1, 2)]
    lo, hi = -2**15, 2**15 - 1
    conv = float if flt else int
    for i, j in np.ndindex(*acc.shape):
        a = int(acc[i, j])
        assert got[i, j] == ref.requantize_value(a, method, conv(m[i, 0]), int(s[i, 0]), int(zp[j]),
                                                 lo, hi)
        assert got_c[0][i, j] == got_c[1][i, j] == ref.requantize_value(
            a, method, conv(mc[j]), int(sc[j]), 3, lo, hi)
    # per column given as (1, C) on a 3-D accumulator (the layers' shapes): the same values
    got_3d = fp.requantize(acc.reshape(2, 4, 15), mc.reshape(1, 15), sc.reshape(1, 15), zero_point=3,
                           out_fmt="int16", method=method)
    assert np.array_equal(got_3d.reshape(8, 15), got_c[0])


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


@pytest.mark.parametrize("method", ["double", "single", "ruy", "float"])
@pytest.mark.parametrize("out_fmt, zp", [("int8", -7), ("int16", 5), ("int16", 0)])
def test_per_column_kernel_equals_the_per_tensor_one(method, out_fmt, zp, rng):
    """One multiplier per column runs its own loop (per-column shifts and
    nudges precomputed): every shift, the multipliers' corners and the
    accumulators' corners, each column equal to the per-tensor kernel on that
    column alone (which the transcription tests above check)."""
    accs = np.concatenate([_edge_accs(), rng.integers(ref.INT32_MIN, ref.INT32_MAX, 60, endpoint=True)])
    if method == "float":
        cols = [(r, 0) for r in list(10.0 ** rng.uniform(-9, np.log10(4), 40)) + [0.0, 0.5, 1.0, 2.0, 4.0]]
    else:
        mults = [0, 1, 2**30, 2**31 - 1, ref.INT32_MAX // 3, int(rng.integers(2**30, 2**31))]
        cols = list(itertools.product(mults, range(-31, 31)))
    m = np.array([c[0] for c in cols])
    s = np.array([c[1] for c in cols], np.int64)
    acc = np.repeat(accs[:, None], len(cols), axis=1)
    acc = np.ascontiguousarray(acc.reshape(-1, len(cols)))
    got = fp.requantize(acc, m, s, zero_point=zp, out_fmt=out_fmt, method=method, num_threads=2)
    for j, (mj, sj) in enumerate(cols):
        want = fp.requantize(acc[:, j], mj, sj, zero_point=zp, out_fmt=out_fmt, method=method)
        np.testing.assert_array_equal(got[:, j], want, err_msg=f"m={mj} s={sj}")


@pytest.mark.parametrize("method", ["double", "single", "ruy", "float", "float64"])
def test_requantize_with_values_against_transcription(method, rng):
    """Codes from the transcriptions, values from their definition (Python
    floats: (code - zp) * scale rounded once to float32), per tensor and per
    column, int8 (the fused loop), uint8 and per-element zero points (codes,
    then values)."""
    R, C = 5, 37
    accs = rng.choice(np.concatenate([_edge_accs(), rng.integers(-2**24, 2**24, 64)]), (R, C))
    real = rng.uniform(1e-6, 1e-2, C)
    real[:3] = (0.0, 1.0, 2.0**-20)
    for per_column, out_fmt, zp in ((True, "int8", -3), (False, "int8", 5), (True, "uint8", 128),
                                    (True, "int8", np.arange(C) % 7 - 3)):
        f = fp.formats.as_format(out_fmt, kind="int")
        r = real if per_column else real[4]
        if method in ("float", "float64"):
            m, s = r, 0
        else:
            m, s = fp.quantize_multiplier(r)
        scale = 0.0371
        codes, values = fp.requantize_with_values(accs, m, s, zero_point=zp, scale=scale,
                                                  out_fmt=out_fmt, method=method)
        assert codes.dtype == f.dtype and values.dtype == np.float32
        zps = np.broadcast_to(zp, (R, C))
        for i, j in itertools.product(range(R), range(C)):
            mj = np.asarray(m).reshape(-1)[j % np.size(m)]
            sj = np.asarray(s).reshape(-1)[j % np.size(s)] if np.size(s) > 1 else int(s)
            mj = float(mj) if method in ("float", "float64") else int(mj)
            want = ref.requantize_value(int(accs[i, j]), method, mj, int(sj), int(zps[i, j]), f.min, f.max)
            assert int(codes[i, j]) == want, (out_fmt, i, j)
            exact = (want - int(zps[i, j])) * float(np.float32(scale))
            assert values[i, j] == np.float32(exact), (out_fmt, i, j)


def test_requantize_with_values_checks_scale():
    with pytest.raises(TypeError, match="^scale: expected a float"):
        fp.requantize_with_values([1], 2**30, 0, scale="1")
    with pytest.raises(ValueError, match="^scale: expected a finite, non-negative float"):
        fp.requantize_with_values([1], 2**30, 0, scale=-1.0)
    codes, values = fp.requantize_with_values(np.zeros((0, 3), np.int32), 2**30, 0, scale=1.0)
    assert codes.shape == values.shape == (0, 3)
