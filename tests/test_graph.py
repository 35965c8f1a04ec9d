"""The ONNX graph runner: the float profile equals ONNX Runtime, overridden
nodes equal the profile's layers bit for bit, static scales come from the
calibration feeds, the vector type rounds the other operators, and bad
graphs and feeds are refused naming the node or input."""
import dataclasses

import numpy as np
import pytest

from extras import need

onnx = need("onnx", 'pip install "fixedpoint[models]"')
ort = need("onnxruntime", "pip install onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fixedpoint as fp  # noqa: E402
from fixedpoint import graph, layers, profiles  # noqa: E402

RNG = np.random.default_rng(12)
W1 = RNG.standard_normal((16, 32)).astype(np.float32) * 0.3
B1 = RNG.standard_normal(32).astype(np.float32)
W2 = RNG.standard_normal((10, 32)).astype(np.float32) * 0.3
B2 = RNG.standard_normal(10).astype(np.float32)


def _model(nodes, inputs, outputs, inits, opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _mlp():
    return _model(
        [helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
         helper.make_node("Add", ["h", "B1"], ["h2"], name="add1"),
         helper.make_node("Relu", ["h2"], ["h3"], name="relu"),
         helper.make_node("Gemm", ["h3", "W2", "B2"], ["y"], name="fc2", transB=1),
         helper.make_node("Softmax", ["y"], ["p"], name="softmax")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 10])],
        {"W1": W1, "B1": B1, "W2": W2, "B2": B2})


def _ort(model, feeds):
    return ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a, np.float32).view(np.uint32),
                                  np.asarray(b, np.float32).view(np.uint32))


def test_fp32_equals_onnxruntime():
    x = RNG.standard_normal((7, 16)).astype(np.float32)
    out, tr = graph.run(_mlp(), {"x": x}, "fp32")
    np.testing.assert_allclose(out["p"], _ort(_mlp(), {"x": x})[0], rtol=1e-5, atol=1e-6)
    assert list(tr.nodes) == ["fc1", "fc2"] and all(t.sqnr_db == np.inf for t in tr.nodes.values())


@pytest.mark.parametrize("name", profiles.BUILTIN_NAMES)
def test_one_gemm_equals_the_linear_layer(name):
    x = RNG.standard_normal((9, 32)).astype(np.float32)
    m = _model([helper.make_node("Gemm", ["x", "W2", "B2"], ["y"], name="fc", transB=1)],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [9, 32])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [9, 10])], {"W2": W2, "B2": B2})
    out, tr = graph.run(m, {"x": x}, name)
    fc = layers.Linear(name, W2.T, B2)
    _same(out["y"], fc.run(x))
    assert tr.nodes["fc"].kind == "linear"
    if not profiles.get(name).is_float:
        np.testing.assert_array_equal(tr.nodes["fc"].layer.x.codes, fc.trace.x.codes)


def test_static_scales_from_calibration_and_node_metrics():
    calib = [{"x": RNG.standard_normal((20, 16)).astype(np.float32)} for _ in range(3)]
    x = RNG.standard_normal((5, 16)).astype(np.float32) * 3        # beyond the calibrated range
    out, tr = graph.run(_mlp(), {"x": x}, "ane-int8", calibration=calib)
    allx = np.concatenate([c["x"] for c in calib])
    h = np.maximum(allx @ W1 + B1, 0)
    assert tr.nodes["fc1"].x_scale == np.float32(np.abs(allx).max()) / np.float32(127)
    assert tr.nodes["fc2"].x_scale == np.float32(np.abs(h).max()) / np.float32(127)
    assert tr.nodes["fc1"].clipped_inputs == int(np.count_nonzero(
        np.abs(x / np.float32(tr.nodes["fc1"].x_scale)) > 127.5))
    assert tr.nodes["fc1"].outlier_ratio > 1 and tr.nodes["fc1"].clipped_inputs > 0
    # SQNR per node against the float run of the same feeds
    ref = x @ W1
    assert tr.nodes["fc1"].sqnr_db == pytest.approx(fp.metrics.sqnr_db(ref, tr.nodes["fc1"].layer.output_codes
                                                                       * tr.nodes["fc1"].layer.output_scale))
    rows = tr.summary()
    assert [r["node"] for r in rows] == ["fc1", "fc2"] and rows[0]["depth"] == 0


def test_matmul_between_activations_and_conv():
    w = RNG.standard_normal((4, 1, 3, 3)).astype(np.float32)
    m = _model(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="dw", group=4, strides=[2, 2], auto_pad="SAME_UPPER"),
         helper.make_node("Reshape", ["c", "shape"], ["r"], name="reshape"),
         helper.make_node("Transpose", ["r"], ["rt"], name="t", perm=[0, 2, 1]),
         helper.make_node("MatMul", ["r", "rt"], ["y"], name="scores")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 7, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 4])],
        {"w": w, "shape": np.array([2, 4, 16], np.int64)})
    x = RNG.standard_normal((2, 4, 7, 7)).astype(np.float32)
    np.testing.assert_allclose(graph.run(m, {"x": x}, "fp32")[0]["y"], _ort(m, {"x": x})[0], rtol=1e-5,
                               atol=1e-5)
    for name in ("ane-int8", "h100-fp8", "int2-research"):
        out, tr = graph.run(m, {"x": x}, name)
        conv = layers.Conv2d(name, w, stride=2, padding=(1, 1, 1, 1), groups=4)   # SAME_UPPER, 7 -> 4
        c = conv.run(x)
        _same(tr.nodes["dw"].layer.accumulator, conv.trace.accumulator)
        r = c.reshape(2, 4, 16)
        v = profiles.get(name).vector
        r = layers.round_to_float_type(r, v)               # reshape/transpose run on the vector units
        mm = layers.MatMul(name)
        _same(out["y"], mm.run(r, np.swapaxes(r, 1, 2)))
        assert [t.kind for t in tr.nodes.values()] == ["conv", "matmul"]


def test_vector_type_rounds_the_other_operators():
    p = dataclasses.replace(profiles.get("h100-int8"), name="h100-int8-f16", vector="float16")
    x = RNG.standard_normal((5, 16)).astype(np.float32)
    out, _ = graph.run(_mlp(), {"x": x}, p)
    p32, _ = graph.run(_mlp(), {"x": x}, "h100-int8")
    assert np.all(out["p"] == out["p"].astype(np.float16).astype(np.float32))
    assert not np.array_equal(out["p"], p32["p"])


def test_bad_graphs_and_feeds(tmp_path):
    m = _mlp()
    s = graph.Session(m, "ane-int8")
    with pytest.raises(ValueError, match="feeds: 'y' is not an input of the graph"):
        s.run({"y": np.zeros((1, 16), np.float32)})
    with pytest.raises(ValueError, match="feeds: missing input 'x'"):
        s.run({})
    with pytest.raises(TypeError, match="feeds: 'x' must be float32, got int64"):
        s.run({"x": np.zeros((1, 16), np.int64)})
    with pytest.raises(ValueError, match="feeds: 'x' must have size 16 on axis 1"):
        s.run({"x": np.zeros((1, 15), np.float32)})
    with pytest.raises(ValueError, match="feeds: 'x' must have 2 dimensions"):
        s.run({"x": np.zeros(16, np.float32)})
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="is not an ONNX model"):
        graph.Session(bad, "ane-int8")
    with pytest.raises(ValueError, match="model: no such file"):
        graph.Session(tmp_path / "none.onnx", "ane-int8")
    gemm2 = _model([helper.make_node("Gemm", ["x", "W2"], ["y"], name="scaled", transB=1, alpha=2.0)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 32])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])], {"W2": W2})
    with pytest.raises(ValueError, match="node 'scaled' \\(Gemm\\) is not supported by the override"):
        graph.Session(gemm2, "ane-int8")
    conv1d = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="c1")],
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 9])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 7])],
                    {"w": np.ones((3, 2, 3), np.float32)})
    with pytest.raises(ValueError, match="node 'c1' \\(Conv\\) is not supported by the override"):
        graph.Session(conv1d, "ane-int8")
    with pytest.raises(TypeError, match="calibration: expected a list"):
        graph.run(m, {"x": np.zeros((1, 16), np.float32)}, "ane-int8", calibration={"x": 1})
