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
