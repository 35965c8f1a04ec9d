"""Layers against ONNX Runtime where it computes the same arithmetic:
QLinearMatMul (Linear with the float rescale), QLinearConv (Conv2d) and the
float Conv (the fp32 profile)."""
import dataclasses

import numpy as np
import pytest

import fixedpoint as fp
from fixedpoint import layers, profiles
from extras import need
from test_layers import _layer

ort = need("onnxruntime", 'pip install "fixedpoint[test]"')
onnx = need("onnx", 'pip install "fixedpoint[models]"')
from onnx import TensorProto, helper  # noqa: E402


def _ort(graph_nodes, inputs, outputs, inits, feeds):
    g = helper.make_graph(graph_nodes, "g", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _float_method_profile():
    base = profiles.get("ane-int8")
    return dataclasses.replace(base, name="ane-float", output=fp.OutputSpec("int8", "float"),
                               activations=dataclasses.replace(base.activations, symmetric=False))


def test_linear_against_onnxruntime_qlinearmatmul():
    """int8 x int8 -> int8 with the float rescale: ONNX Runtime's QLinearMatMul
    with the layer's own scales and zero points (no bias: QLinearMatMul has none)."""
    p = _float_method_profile()
    for seed in range(3):
        x, w, _ = _layer(seed, m=33, k=200, n=40)
        x = x + 0.5                                   # asymmetric activations: zero point != 0
        fc = layers.Linear(p, w)
        fc.set_output_quantization(0.05, -7)
        fc.run(x)
        tr = fc.trace
        xs, xz = np.float32(tr.x.scale), np.int8(tr.x.zero_point)
        inits = [helper.make_tensor("xs", TensorProto.FLOAT, [], [float(xs)]),
                 helper.make_tensor("xz", TensorProto.INT8, [], [int(xz)]),
                 helper.make_tensor("w", TensorProto.INT8, list(tr.w.codes.shape),
                                    tr.w.codes.tobytes(), raw=True),
                 helper.make_tensor("ws", TensorProto.FLOAT, [tr.w.codes.shape[1]],
                                    tr.w.scale.tolist()),
                 helper.make_tensor("wz", TensorProto.INT8, [tr.w.codes.shape[1]], [0] * tr.w.codes.shape[1]),
                 helper.make_tensor("ys", TensorProto.FLOAT, [], [0.05]),
                 helper.make_tensor("yz", TensorProto.INT8, [], [-7])]
        node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
        want = _ort([node], [helper.make_tensor_value_info("x", TensorProto.INT8, list(x.shape))],
                    [helper.make_tensor_value_info("y", TensorProto.INT8, [x.shape[0], w.shape[1]])],
                    inits, {"x": tr.x.codes})
        np.testing.assert_array_equal(tr.output_codes, want)


@pytest.mark.parametrize("cfg", [dict(stride=1, padding=1, dilation=1, groups=1),
                                 dict(stride=2, padding=(0, 1, 1, 2), dilation=1, groups=2),
                                 dict(stride=1, padding=2, dilation=2, groups=4)])
def test_conv2d_against_onnxruntime_qlinearconv(cfg):
    """Conv2d with per-channel int8 weights, asymmetric int8 activations, the bias
    in the register and the float rescale: ONNX Runtime's QLinearConv."""
    p = _float_method_profile()
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((2, 4, 9, 8)) + 0.3).astype(np.float32)
    w = rng.standard_normal((8, 4 // cfg["groups"], 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    conv = layers.Conv2d(p, w, b, **cfg)
    conv.set_output_quantization(0.04, 5)
    conv.run(x)
    tr = conv.trace
    pads = cfg["padding"] if isinstance(cfg["padding"], tuple) else (cfg["padding"],) * 4
    xq = fp.quantize(x, "int8", scale=tr.x.scale, zero_point=tr.x.zero_point)
    wcodes = tr.w.codes.T.reshape(w.shape)                 # back to (O, C/g, kh, kw)
    s = (np.float32(tr.x.scale) * tr.w.scale).astype(np.float32)
    bq = np.rint(b.astype(np.float64) / s).astype(np.int32)
    inits = [helper.make_tensor("xs", TensorProto.FLOAT, [], [float(tr.x.scale)]),
             helper.make_tensor("xz", TensorProto.INT8, [], [int(tr.x.zero_point)]),
             helper.make_tensor("w", TensorProto.INT8, list(w.shape), wcodes.tobytes(), raw=True),
             helper.make_tensor("ws", TensorProto.FLOAT, [8], tr.w.scale.tolist()),
             helper.make_tensor("wz", TensorProto.INT8, [8], [0] * 8),
             helper.make_tensor("ys", TensorProto.FLOAT, [], [0.04]),
             helper.make_tensor("yz", TensorProto.INT8, [], [5]),
             helper.make_tensor("b", TensorProto.INT32, [8], bq.tolist())]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            strides=[cfg["stride"]] * 2, pads=[pads[0], pads[1], pads[2], pads[3]],
                            dilations=[cfg["dilation"]] * 2, group=cfg["groups"], kernel_shape=[3, 3])
    N, O, OH, OW = conv.run(x).shape
    want = _ort([node], [helper.make_tensor_value_info("x", TensorProto.INT8, list(x.shape))],
                [helper.make_tensor_value_info("y", TensorProto.INT8, [N, O, OH, OW])],
                inits, {"x": np.asarray(xq.codes)})
    got = tr.output_codes.reshape(N, OH, OW, O).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(got, want)


def test_fp32_conv_against_onnxruntime():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 6, 10, 9)).astype(np.float32)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    y = layers.Conv2d("fp32", w, b, stride=2, padding=(1, 0, 1, 1), groups=6).run(x)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 0, 1, 1], group=6)
    want = _ort([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                [helper.make_tensor("w", TensorProto.FLOAT, list(w.shape), w.ravel().tolist()),
                 helper.make_tensor("b", TensorProto.FLOAT, [6], b.tolist())], {"x": x})
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# x86-avx2-u8s8 against ONNX Runtime's quantize_dynamic on an emulated AVX2 CPU

_ORT_RUN = r"""
import sys
import numpy as np
import onnxruntime as ort
so = ort.SessionOptions()
so.intra_op_num_threads = 1
sess = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
feeds = np.load(sys.argv[2])
out = {}
for k in feeds.files:
    h, s = sess.run(["h", "s"], {"x": feeds[k]})
    out[k + "_h"], out[k + "_s"] = h, s
np.savez(sys.argv[3], **out)
"""


@pytest.mark.slow
def test_x86_avx2_u8s8_matches_quantize_dynamic_on_emulated_avx2(tmp_path):
    """A fully connected layer and an attention-style product of two
    activations, quantized by onnxruntime.quantization.quantize_dynamic and run
    by ONNX Runtime on a Haswell CPU model (QEMU user mode: AVX2, no VNNI):
    the fully connected output equals Linear under x86-avx2-u8s8 bit for bit,
    clamped vpmaddubsw pairs included, through graph.run as well; the product
    of two activations stays float32 (to float tolerance: BLAS sum orders)."""
    import subprocess
    import sys
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from extras import qemu_haswell
    from fixedpoint import graph
    qemu = qemu_haswell()
    rng = np.random.default_rng(6004)
    K, N = 96, 40
    w = rng.standard_normal((K, N)).astype(np.float32)
    w[:, :8] = np.abs(w[:, :8])          # columns of one sign, large first rows, and large
    w[:16, :8] += 2.0                    # first inputs: pairs of large products clamp
    b = rng.standard_normal(N).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["t"], name="fc"),
             helper.make_node("Add", ["t", "b"], ["h"]),
             helper.make_node("Transpose", ["h"], ["ht"], perm=[1, 0]),
             helper.make_node("MatMul", ["h", "ht"], ["s"], name="att")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", K])],
                          [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["M", N]),
                           helper.make_tensor_value_info("s", TensorProto.FLOAT, ["M", "M"])],
                          [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "f.onnx")
    quantize_dynamic(tmp_path / "f.onnx", tmp_path / "q.onnx", weight_type=QuantType.QInt8)
    ops = [n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node]
    assert "MatMulInteger" in ops and ops.count("MatMul") == 1, ops     # att stays float
    feeds = {}
    for i in range(24):
        x = rng.standard_normal((7, K)) * rng.uniform(0.1, 10) + rng.uniform(-2, 2)
        x = np.abs(x) if i % 3 == 0 else x
        x[:, :16] = np.abs(x[:, :16]) * 2
        feeds[f"c{i}"] = x.astype(np.float32)
    np.savez(tmp_path / "x.npz", **feeds)
    (tmp_path / "run.py").write_text(_ORT_RUN)
    subprocess.run([qemu, "-cpu", "Haswell", sys.executable, str(tmp_path / "run.py"),
                    str(tmp_path / "q.onnx"), str(tmp_path / "x.npz"), str(tmp_path / "out.npz")],
                   check=True, capture_output=True, timeout=600)
    got = np.load(tmp_path / "out.npz")
    p = profiles.get("x86-avx2-u8s8")
    fc = layers.Linear(p, w, b)
    exact = layers.Linear(dataclasses.replace(p, accumulator=fp.Accumulator(32, "wrap")), w, b)
    clamped = 0
    for k, x in feeds.items():
        h = fc.run(x)
        np.testing.assert_array_equal(h.view(np.uint32), got[k + "_h"].view(np.uint32), err_msg=k)
        clamped += fc.trace.overflow_count
        # pairs summed exactly (a VNNI CPU) give other bits exactly where pairs clamp
        hx = exact.run(x)
        np.testing.assert_array_equal(hx != h, fc.trace.overflow > 0, err_msg=k)
        outs, trace = graph.run(tmp_path / "f.onnx", {"x": x}, p)
        np.testing.assert_array_equal(outs["h"].view(np.uint32), got[k + "_h"].view(np.uint32))
        np.testing.assert_allclose(outs["s"], got[k + "_s"], rtol=1e-5, atol=1e-4)
        assert trace.nodes["att"].layer.x is None           # not quantized
    assert clamped >= 100, f"{clamped} outputs clamp a pair: the data hardly tests the AVX2 path"
