"""The design study: what a model loses, and what it saves, on each target.

A *workload* is a model with its evaluation and calibration data and its
metric.  :func:`run_study` evaluates a workload on the float reference and on
every chosen :class:`~fixedpoint.profiles.AcceleratorProfile`, one profile at
a time (:func:`evaluate_profile`, which sweeps and scale-out reuse), and
:func:`write_report` writes ``report.md``, ``results.json`` and PNG figures.
``fixedpoint study`` on the command line does both.

Workloads:

* the default: a 64-128-64-10 ReLU MLP on 450 held-out 8x8 digits
  (:func:`mlp_workload`; NumPy only).  Activation scales are static,
  calibrated on training images; layers followed by a ReLU requantize
  straight to the next layer's input scale (a fused ReLU);
* ``convnet``: a small conv net on the same digits, an ONNX graph
  (:func:`convnet_workload`);
* ``minilm``: all-MiniLM-L6-v2 sentence embeddings on the shipped English
  sentences (:func:`minilm_workload`): cosine to the float embeddings,
  top-10 retrieval agreement, Spearman correlation of pairwise similarities;
* any ONNX graph with a ``.npz`` of inputs by name (:func:`graph_workload`):
  with ``labels``, accuracy; without, agreement with the float run.

Every profile reports, per overridden layer (ONNX node), the SQNR of its
output against the float run over the evaluation set (earlier errors
included; MLP layers after their ReLU, which an INT8 output fuses), accumulator overflows, inputs clipped by the activation quantizer,
the activation scale and the largest ``|x|`` relative to it (outliers); and per
inference the weight memory, an energy estimate and a roofline time from the
profile's cost model.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._version import __version__
from .layers import Linear
from .models.mlp import DATA_DIR, MLP, load_default, load_digits
from .profiles import BUILTIN_NAMES, AcceleratorProfile, get

__all__ = ["Workload", "mlp_workload", "graph_workload", "convnet_workload", "minilm_workload",
           "run_study", "evaluate_profile", "write_report", "format_table", "DESIGN_NOTES_CLAIMS",
           "Progress"]

#: The accuracy drops the design notes expect, in percentage points, and the
#: profiles each claim is checked against.
DESIGN_NOTES_CLAIMS = [
    ("INT8", (0.5, 1.0), ("ane-int8", "h100-int8")),
    ("INT4", (2.0, 5.0), ("edge-int4",)),
    ("INT2", (10.0, None), ("int2-research",)),
]


# ---------------------------------------------------------------------------
# Per-node statistics gathered over the evaluation batches

@dataclass
class _NodeStats:
    name: str
    kind: str
    op: str
    depth: int
    signal: float = 0.0
    noise: float = 0.0
    overflows: int = 0
    clipped: int = 0
    x_scale: float = 0.0
    x_absmax: float = 0.0
    outlier: float = 0.0
    rows: float = 0.0             # weight layers: rows of the product over the evaluation set
    k: int = 0
    n: int = 0
    act_cost: dict = field(default_factory=dict)   # products of two activations: summed costs

    def add(self, p, tr, signal, noise):
        self.signal += signal
        self.noise += noise
        self.overflows += tr.overflow_count
        self.clipped += tr.clipped_inputs
        if tr.x_scale is not None:
            self.x_scale = max(self.x_scale, float(np.max(tr.x_scale)))
        self.x_absmax = max(self.x_absmax, tr.x_absmax)
        self.outlier = max(self.outlier, tr.outlier_ratio)
        b, m, k, n = tr.dims
        self.k, self.n = k, n
        if self.kind in ("linear", "conv"):
            self.rows += b * m
            return
        c = p.layer_cost(m, k, n, weights=False)    # every product reads both operands
        for key, v in (("energy", c["energy_pj"]["total"]), ("compute", c["roofline_s"]["compute_s"]),
                       ("memory", c["roofline_s"]["memory_s"])):
            self.act_cost[key] = self.act_cost.get(key, 0.0) + b * v

    @property
    def sqnr_db(self):
        if self.noise == 0:
            return float("inf")
        return float(10 * np.log10(self.signal / self.noise)) if self.signal > 0 else float("-inf")

    def summary(self):
        return {"node": self.name, "kind": self.kind, "op": self.op, "depth": self.depth,
                "sqnr_db": _finite(self.sqnr_db), "overflows": self.overflows,
                "clipped_inputs": self.clipped, "x_scale": _finite(self.x_scale) if self.x_scale else None,
                "x_absmax": self.x_absmax, "outlier_ratio": _finite(self.outlier) if self.x_scale else None,
                "k": self.k, "n": self.n}


def _finite(v):
    return None if v is None or not np.isfinite(v) else float(v)


# ---------------------------------------------------------------------------
# Workloads

@dataclass
class Workload:
    """A model, its data and its metric, evaluated per profile by :func:`evaluate_profile`.

    ``kind``: ``"classification"`` (``labels`` given: accuracy and drop),
    ``"agreement"`` (top-1 agreement and output SQNR against the float run) or
    ``"embedding"`` (cosine, top-10 retrieval and Spearman against the float
    embeddings).  ``runner(profile)`` returns an object with ``calibrate()``
    and ``batches()``, the latter yielding ``(outputs, {node: (LayerTrace,
    signal, noise, kind, op, depth)})`` per evaluation batch.

    ``training`` (optional, for quantization-aware training, :mod:`fixedpoint.qat`):
    ``model`` (an :class:`~fixedpoint.models.mlp.MLP` or an ONNX model),
    ``x`` and ``y`` (the labelled training split), ``calibration`` (the input
    batches the runner calibrates on) and ``eval`` (the evaluation input
    batches, as the runner batches them).
    """

    name: str
    data_name: str
    kind: str
    n_samples: int
    n_calib: int
    runner: object
    labels: np.ndarray | None = None
    layers: list = field(default_factory=list)      # (k, n) of the weight layers, for the report
    training: dict | None = None


class _MLPRunner:
    def __init__(self, model: MLP, x, x_calib, profile, batch):
        self.model, self.x, self.xc, self.p, self.batch = model, x, x_calib, profile, batch
        self.layers = [Linear(profile, w, b, name=f"layer{i}") for i, (w, b) in enumerate(model.layers)]

    def calibrate(self):
        if self.p.is_float:
            return
        h = self.xc
        n = len(self.layers)
        for i, (fc, (w, b)) in enumerate(zip(self.layers, self.model.layers)):
            fc.calibrate(h)
            z = (h @ w + b).astype(np.float32)
            h = np.maximum(z, 0) if i < n - 1 else z
        if self.p.output.type == "int8":
            # a layer followed by ReLU requantizes to the next layer's input scale
            for i in range(n - 1):
                s, z = self.layers[i + 1].static_input()
                self.layers[i].set_output_quantization(s, int(z))

    def batches(self):
        n = len(self.layers)
        for b0 in range(0, len(self.x), self.batch):
            x = self.x[b0:b0 + self.batch]
            ref = self.model.forward(x)
            h, nodes = x, {}
            for i, fc in enumerate(self.layers):
                z = fc.run(h)
                h = np.maximum(z, 0) if i < n - 1 else z
                # compared after the ReLU: an INT8 output requantized to the next layer's
                # input scale clamps negative values there (the ReLU fused into the layer)
                r = ref[i].astype(np.float64)
                r = np.maximum(r, 0) if i < n - 1 else r
                nodes[fc.name] = (fc.trace, float(np.sum(r ** 2)),
                                  float(np.sum((r - h.astype(np.float64)) ** 2)), "linear", "MatMul", i)
            yield h, nodes


class _ReferenceCache:
    """The float run's per-node outputs of each evaluation batch, kept (up to a
    memory budget) so that every profile after the first compares against them
    without running the float graph again."""

    def __init__(self, budget_bytes=1 << 30):
        self.budget, self.used, self.runs = budget_bytes, 0, {}

    def get(self, i, session, feeds):
        if i in self.runs:
            return self.runs[i]
        ref = session.reference_outputs(feeds)[1]
        size = sum(v[0].nbytes for v in ref.values())
        if self.used + size <= self.budget:
            self.runs[i] = ref
            self.used += size
        return ref

    def __getstate__(self):              # shipped to workers empty: each process fills its own
        return {"budget": self.budget, "used": 0, "runs": {}}


class _GraphRunner:
    def __init__(self, model, profile, eval_feeds, calib_feeds, output, cache):
        from .graph import Session
        self.s = Session(model, profile)
        self.eval, self.calib, self.output, self.cache = eval_feeds, calib_feeds, output, cache

    def calibrate(self):
        if self.s.profile.is_float:
            return
        for f in self.calib:
            self.s.calibrate(f)

    def batches(self):
        for i, f in enumerate(self.eval):
            outs, tr = self.s.run(f, reference=self.cache.get(i, self.s, f))
            nodes = {k: (t.layer, t.signal, t.noise, t.kind, t.op_type, t.depth) for k, t in tr.nodes.items()}
            yield np.asarray(outs[self.output]), nodes


def mlp_workload(model: MLP | None = None, data: dict | None = None, *, seed: int = 0,
                 n_calib: int = 256, limit: int | None = None) -> Workload:
    """The digits MLP (default) or a user's MLP and ``.npz`` data (with
    ``x_train`` and ``y_train``, a training split for QAT; the default has
    the 1347 training images)."""
    if model is None and data is None:
        model, data = load_default()
        xd, yd, tr, _ = load_digits()
        data = dict(data, x_train=xd[tr], y_train=yd[tr])
    elif model is None or data is None:
        raise ValueError("model and data: give both, or neither for the default")
    x, y = data["x"], data["y"]
    k_in = model.layers[0][0].shape[0]
    if x.ndim != 2 or x.shape[1] != k_in:
        raise ValueError(f"data: x has shape {x.shape}, the model takes {k_in} features")
    x, y = _limit(x, limit), _limit(y, limit)
    xc = data["x_calib"]
    xc = xc[np.sort(np.random.default_rng(seed).choice(len(xc), size=min(n_calib, len(xc)), replace=False))]
    training = None
    if "x_train" in data and "y_train" in data:
        xt, yt = np.asarray(data["x_train"], np.float32), np.asarray(data["y_train"])
        if xt.ndim != 2 or xt.shape[1] != k_in or yt.shape != (len(xt),) or yt.dtype.kind not in "iu":
            raise ValueError(f"data: x_train {xt.shape} and y_train {yt.shape} {yt.dtype} must be "
                             f"(n, {k_in}) floats and n integer labels")
        training = {"model": model, "x": xt, "y": yt.astype(np.int64), "calibration": [xc],
                    "eval": [x[i:i + 4096] for i in range(0, len(x), 4096)]}
    return Workload(model.name, data.get("name", "user data"), "classification", len(y), len(xc),
                    lambda p: _MLPRunner(model, x, xc, p, 4096), labels=y, layers=list(model.shapes),
                    training=training)


def _limit(a, limit):
    if limit is None:
        return a
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit: expected a positive int, got {limit!r}")
    return a[:limit]


def _batched(feeds: dict, n: int, batch: int) -> list:
    return [{k: v[i:i + batch] for k, v in feeds.items()} for i in range(0, n, batch)]


def graph_workload(model, data, *, seed: int = 0, limit: int | None = None, batch: int = 64,
                   n_calib: int = 128, name: str | None = None) -> Workload:
    """Any ONNX graph (path or ModelProto) with a ``.npz`` (path or dict) holding one
    array per graph input (batch axis first), optionally ``labels`` (integers:
    accuracy on the first output's argmax) and ``calib_<input>`` arrays for
    calibration (default: a seeded choice of the evaluation samples).  A
    one-input graph with ``labels``, ``train_<input>`` and ``train_labels``
    has a training split for QAT."""
    from .graph import Session, load_model
    m = load_model(model)
    if isinstance(data, (str, Path)):
        try:
            z = np.load(Path(data))
        except (OSError, ValueError) as e:
            raise ValueError(f"data: cannot read {str(data)!r} as .npz: {e}") from None
        d = {k: z[k] for k in z.files}
        dname = Path(data).stem
    elif isinstance(data, dict):
        d, dname = dict(data), "user data"
    else:
        raise TypeError(f"data: expected a .npz path or a dict of arrays, got {type(data).__name__}")
    s = Session(m, "fp32")
    names = [i.name for i in s.inputs]
    missing = [k for k in names if k not in d]
    if missing:
        raise ValueError(f"data: has no array for the graph input(s) {missing}; it has {sorted(d)}")
    n = len(d[names[0]])
    for k in names:
        if len(d[k]) != n:
            raise ValueError(f"data: {k!r} has {len(d[k])} samples, {names[0]!r} has {n}")
    feeds = s.check_feeds({k: _limit(d[k], limit) for k in names})
    n = len(feeds[names[0]])
    labels = None
    if "labels" in d:
        labels = np.asarray(d["labels"])
        if labels.dtype.kind not in "iu" or labels.shape[0] < n:
            raise ValueError(f"data: labels must be integers, one per sample, got {labels.shape} {labels.dtype}")
        labels = _limit(labels, limit)
    if all(f"calib_{k}" in d for k in names):
        calib = {k: d[f"calib_{k}"] for k in names}
    else:
        idx = np.sort(np.random.default_rng(seed).choice(len(d[names[0]]), size=min(n_calib, len(d[names[0]])),
                                                         replace=False))
        calib = {k: d[k][idx] for k in names}
    s.check_feeds({k: v[:1] for k, v in calib.items()})
    nc = len(calib[names[0]])
    out = s.output_names[0]
    ev, cb = _batched(feeds, n, batch), _batched(calib, nc, batch)
    kind = "classification" if labels is not None else "agreement"
    cache = _ReferenceCache()
    training = None
    if labels is not None and len(names) == 1 and f"train_{names[0]}" in d and "train_labels" in d:
        k = names[0]
        xt, yt = np.asarray(d[f"train_{k}"]), np.asarray(d["train_labels"])
        s.check_feeds({k: xt[:1]})
        if yt.shape != (len(xt),) or yt.dtype.kind not in "iu":
            raise ValueError(f"data: train_labels must be one integer per train_{k} sample, got "
                             f"{yt.shape} {yt.dtype}")
        training = {"model": m, "x": xt, "y": yt.astype(np.int64), "calibration": [c[k] for c in cb],
                    "eval": [e[k] for e in ev]}
    return Workload(name or (Path(model).stem if isinstance(model, (str, Path)) else m.graph.name or "graph"),
                    dname, kind, n, nc, lambda p: _GraphRunner(m, p, ev, cb, out, cache), labels=labels,
                    training=training)


def convnet_workload(*, seed: int = 0, limit: int | None = None, n_calib: int = 256) -> Workload:
    """The shipped digits conv net (ONNX, ``fixedpoint/data/digits_convnet.onnx``) on
    the 450 held-out digits (the MLP's split)."""
    x, y, tr, te = load_digits()
    img = x.reshape(-1, 1, 8, 8)
    rng = np.random.default_rng(seed)
    ci = np.sort(rng.choice(tr, size=min(n_calib, len(tr)), replace=False))
    data = {"image": img[te], "labels": y[te], "calib_image": img[ci], "train_image": img[tr],
            "train_labels": y[tr]}
    w = graph_workload(DATA_DIR / "digits_convnet.onnx", data, seed=seed, limit=limit, batch=256,
                       name="digits-convnet")
    w.data_name = f"digits ({w.n_samples} held-out images of 1797, UCI optdigits)"
    return w


def minilm_workload(*, seed: int = 0, limit: int | None = None, batch: int = 16,
                    n_calib: int = 32) -> Workload:
    """all-MiniLM-L6-v2 on the shipped English sentences: the evaluation set is the
    first ``limit`` sentences, calibration a seeded choice of the others."""
    from .models import minilm as mm
    model = mm.minilm()
    sents = mm.sentences()
    rng = np.random.default_rng(seed)
    n_eval = len(sents) - n_calib if limit is None else min(limit, len(sents) - n_calib)
    if n_eval < 2:
        raise ValueError(f"limit: the retrieval metrics need at least 2 sentences, got {n_eval}")
    ev = sents[:n_eval]
    rest = sents[n_eval:]
    cal = [rest[i] for i in sorted(rng.choice(len(rest), size=min(n_calib, len(rest)), replace=False))]
    evb = [model.tokenize(ev[i:i + batch]) for i in range(0, len(ev), batch)]
    cbb = [model.tokenize(cal[i:i + batch]) for i in range(0, len(cal), batch)]
    cache = _ReferenceCache()
    return Workload("all-MiniLM-L6-v2", f"{len(ev)} English sentences (CPython docstrings)", "embedding",
                    len(ev), len(cal), lambda p: _GraphRunner(model.graph, p, evb, cbb, "embeddings", cache))


# ---------------------------------------------------------------------------
# Metrics

def _spearman(a, b):
    ra = np.empty(len(a))
    rb = np.empty(len(b))
    ra[np.argsort(a, kind="stable")] = np.arange(len(a))
    rb[np.argsort(b, kind="stable")] = np.arange(len(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def embedding_metrics(ref, emb, k: int = 10) -> dict:
    """Cosine of each embedding to its float counterpart (mean, worst); top-``k``
    retrieval agreement (each sentence as a query over the others: the share of
    the float top-k found again); Spearman correlation of all pairwise cosine
    similarities.

    Examples
    --------
    >>> import numpy as np
    >>> e = np.eye(4)[:, :3] + 0.1
    >>> m = embedding_metrics(e, e, k=2)
    >>> m["cosine_mean"], m["top10_agreement"], m["spearman"]
    (1.0, 1.0, 1.0)
    """
    r = np.asarray(ref, np.float64)
    e = np.asarray(emb, np.float64)
    rn = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-30)
    en = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-30)
    cos = np.sum(rn * en, axis=1)
    n = len(r)
    sr, se = rn @ rn.T, en @ en.T
    np.fill_diagonal(sr, -np.inf)
    np.fill_diagonal(se, -np.inf)
    kk = min(k, n - 1)
    tr = np.argsort(-sr, axis=1, kind="stable")[:, :kk]
    te = np.argsort(-se, axis=1, kind="stable")[:, :kk]
    agree = np.mean([len(set(a) & set(b)) / kk for a, b in zip(tr, te)])
    iu = np.triu_indices(n, 1)
    return {"cosine_mean": float(cos.mean()), "cosine_worst": float(cos.min()),
            "top10_agreement": float(agree), "spearman": _spearman(sr[iu], se[iu])}


# ---------------------------------------------------------------------------
# Running

class Progress:
    """A one-line progress bar (or plain lines when not on a terminal)."""

    def __init__(self, total, stream, enabled, label=""):
        self.total, self.done, self.stream, self.enabled = total, 0, stream, enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.t0 = time.perf_counter()
        self.label = label

    def show(self, label, sub=""):
        if not self.enabled:
            return
        width = 28
        fill = int(width * self.done / max(self.total, 1))
        el = time.perf_counter() - self.t0
        eta = el / self.done * (self.total - self.done) if self.done else float("nan")
        line = (f"[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} {label:<16s} {sub:<14s}"
                f" {el:6.1f} s" + (f", ~{eta:.0f} s left" if self.done and self.done < self.total else ""))
        if self.tty:
            self.stream.write("\r" + line.ljust(100) + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def step(self, label, sub=""):
        self.done += 1
        self.show(label, sub)


def evaluate_profile(workload: Workload, profile, *, reference=None, progress=None) -> dict:
    """One profile on one workload: its outputs and every per-profile figure.

    ``reference``: the fp32 profile's result (for drops and agreement; None
    when this is the reference).  Returns a JSON-ready dict (plus ``_outputs``
    and ``_nodes`` for the report)."""
    p = profile if isinstance(profile, AcceleratorProfile) else get(profile)
    t0 = time.perf_counter()
    runner = workload.runner(p)
    runner.calibrate()
    outs, stats = [], {}
    nb = 0
    for out, nodes in runner.batches():
        outs.append(out)
        for name, (tr, sig, noise, kind, op, depth) in nodes.items():
            if name not in stats:
                stats[name] = _NodeStats(name, kind, op, depth)
            stats[name].add(p, tr, sig, noise)
        nb += 1
        if progress is not None:
            progress.show(p.name, f"batch {nb}")
    y = np.concatenate(outs)
    res = {"description": p.description}
    res.update(_metrics(workload, y, reference))
    nodes = sorted(stats.values(), key=lambda s: s.depth)
    res["sqnr_db"] = [_finite(s.sqnr_db) for s in nodes]
    res["overflows"] = [s.overflows for s in nodes]
    res["clipped_inputs"] = [s.clipped for s in nodes]
    res["nodes"] = [s.summary() for s in nodes]
    res.update(_costs(p, nodes, workload.n_samples))
    res["seconds"] = time.perf_counter() - t0
    res["_outputs"] = y
    if isinstance(runner, _MLPRunner) and not p.is_float:
        res["_weights"] = [fc.wq for fc in runner.layers]       # for the quantization-grid figure
    return res


def _metrics(w: Workload, y, reference) -> dict:
    if w.kind == "classification":
        acc = float(np.mean(np.argmax(y, axis=-1) == w.labels))
        out = {"accuracy": acc}
        out["drop_pp"] = 0.0 if reference is None else round((reference["accuracy"] - acc) * 100, 6)
        return out
    ref = y if reference is None else reference["_outputs"]
    if w.kind == "embedding":
        return embedding_metrics(ref, y)
    from .metrics import cosine_similarity, sqnr_db
    return {"agreement": float(np.mean(np.argmax(y, -1) == np.argmax(ref, -1))) if y.ndim > 1 else None,
            "output_sqnr_db": _finite(sqnr_db(ref, y)), "output_cosine": cosine_similarity(ref, y)}


def _costs(p, nodes, n_samples) -> dict:
    """Per inference: weight bytes (each weight layer read once), energy and roofline
    time, from :meth:`AcceleratorProfile.layer_cost` with each layer's rows per
    inference (a products of two activations: its costs summed over the products)."""
    wbytes, energy, t_c, t_m = 0, 0.0, 0.0, 0.0
    for s in nodes:
        if s.kind in ("linear", "conv"):
            c = p.layer_cost(s.rows / n_samples, s.k, s.n, weights=True)
            wbytes += c["weight_bytes"]
            energy += c["energy_pj"]["total"]
            t_c += c["roofline_s"]["compute_s"]
            t_m += c["roofline_s"]["memory_s"]
        else:
            energy += s.act_cost.get("energy", 0.0) / n_samples
            t_c += s.act_cost.get("compute", 0.0) / n_samples
            t_m += s.act_cost.get("memory", 0.0) / n_samples
    return {"weight_bytes": int(wbytes), "energy_nj_per_inference": energy / 1e3,
            "time_ns_per_inference": max(t_c, t_m) * 1e9, "bound": "compute" if t_c >= t_m else "memory"}


def run_study(profiles=None, workload: Workload | None = None, *, progress: bool = False, stream=None,
              scheduler=None) -> dict:
    """Run the float reference and each profile on ``workload``; return the results.

    Parameters
    ----------
    profiles : list of names, file paths or AcceleratorProfile, optional
        Default: every built-in profile.  ``fp32`` is always run (the reference).
    workload : Workload, optional
        Default: :func:`mlp_workload`.
    progress : bool
        Draw a progress bar (per profile and batch) on ``stream`` (default stderr).
    scheduler : optional
        Where the profiles run: None (here, one after the other), ``"local:N"``
        or a Dask scheduler address (see :mod:`fixedpoint.scaleout`).

    Returns
    -------
    dict (JSON-serializable once the ``_`` keys are dropped): ``profiles[name]``
    holds the metric (``accuracy`` and ``drop_pp``; or ``agreement``; or the
    embedding metrics), ``sqnr_db``, ``overflows`` and ``clipped_inputs`` per
    layer, ``nodes`` (per layer/node figures), ``weight_bytes``,
    ``energy_nj_per_inference``, ``time_ns_per_inference`` and its bound.

    Examples
    --------
    >>> from fixedpoint import study
    >>> res = study.run_study(["ane-int8"], study.mlp_workload(limit=100))
    >>> list(res["profiles"]), res["profiles"]["ane-int8"]["weight_bytes"]
    (['fp32', 'ane-int8'], 18640)
    >>> print(study.format_table(res).splitlines()[0])
    profile   accuracy %  drop pp  SQNR dB per layer  overflows  clipped  weights B  energy nJ  time ns
    """
    w = workload if workload is not None else mlp_workload()
    chosen = list(BUILTIN_NAMES) if profiles is None else list(profiles)
    if not chosen:
        raise ValueError("profiles: expected at least one profile")
    plist = [get(p) for p in chosen]
    if "fp32" not in [p.name for p in plist]:
        plist.insert(0, get("fp32"))
    else:
        plist.sort(key=lambda p: p.name != "fp32")
    seen = set()
    for p in plist:
        if p.name in seen:
            raise ValueError(f"profiles: {p.name!r} is listed twice")
        seen.add(p.name)
    bar = Progress(len(plist), stream or sys.stderr, progress)
    t0 = time.perf_counter()
    results = {}
    ref = _evaluate_named(w, plist[0], None, bar)
    results[plist[0].name] = ref
    bar.step(plist[0].name, "done")
    if scheduler is None:
        for p in plist[1:]:
            results[p.name] = _evaluate_named(w, p, ref, bar)
            bar.step(p.name, "done")
    else:
        from .scaleout import map_profiles
        for p, r in map_profiles(w, plist[1:], ref, scheduler, bar, evaluate=_evaluate_task):
            results[p.name] = r
    return {
        "fixedpoint": __version__,
        "model": {"name": w.name, "layers": [list(s) for s in w.layers], "kind": w.kind},
        "data": {"name": w.data_name, "samples": int(w.n_samples), "calibration_samples": int(w.n_calib)},
        "seconds": time.perf_counter() - t0,
        "profiles": results,
        "claims": _claims(results) if w.kind == "classification" else [],
    }


def _evaluate_task(w, p, ref):
    """One profile on a Dask worker (no progress bar there)."""
    return _evaluate_named(w, p, ref, None)


def _evaluate_named(w, p, ref, bar):
    try:
        return evaluate_profile(w, p, reference=ref, progress=bar)
    except ValueError as e:
        raise ValueError(f"profile {p.name!r} cannot run this model: {e}") from None


def _claims(results):
    out = []
    for label, (lo, hi), names in DESIGN_NOTES_CLAIMS:
        for n in names:
            if n not in results:
                continue
            d = results[n]["drop_pp"]
            verdict = "smaller" if d < lo else ("larger" if hi is not None and d > hi else "within")
            claim = f"{lo:g}-{hi:g} pp" if hi is not None else f">= {lo:g} pp"
            out.append({"class": label, "profile": n, "claimed": claim, "measured_pp": d,
                        "verdict": verdict})
    return out


# ---------------------------------------------------------------------------
# Output

def _sqnr_cell(r):
    v = [x for x in r["sqnr_db"]]
    if len(v) <= 4:
        return "/".join("inf" if x is None else f"{x:.1f}" for x in v)
    fin = [x for x in v if x is not None]
    if not fin:
        return "inf"
    return f"{min(fin):.1f}/{float(np.median(fin)):.1f}"


def _qat_cell(key, fmt):
    def cell(r):
        q = r.get("qat")
        return "-" if q is None else fmt.format(q[key] * (100 if key == "accuracy" else 1))
    return cell


def _columns(kind, nlayers, qat=False):
    sq = "SQNR dB per layer" if nlayers <= 4 else "SQNR dB min/median"
    tail = [("overflows", lambda r: f"{sum(r['overflows'])}"), ("clipped", lambda r: f"{sum(r['clipped_inputs'])}")]
    cost = [("weights B", lambda r: f"{r['weight_bytes']}"),
            ("energy nJ", lambda r: f"{r['energy_nj_per_inference']:.1f}"),
            ("time ns", lambda r: f"{r['time_ns_per_inference']:.2f}")]
    if kind == "classification" and qat:         # quantization-aware training (fixedpoint.qat)
        head = [("PTQ acc %", lambda r: f"{r['accuracy'] * 100:.2f}"),
                ("PTQ drop", lambda r: f"{r['drop_pp']:+.2f}"),
                ("QAT acc %", _qat_cell("accuracy", "{:.2f}")),
                ("QAT drop", _qat_cell("drop_pp", "{:+.2f}"))]
    elif kind == "classification":
        head = [("accuracy %", lambda r: f"{r['accuracy'] * 100:.2f}"),
                ("drop pp", lambda r: f"{r['drop_pp']:+.2f}")]
    elif kind == "embedding":
        head = [("cos mean", lambda r: f"{r['cosine_mean']:.5f}"),
                ("cos worst", lambda r: f"{r['cosine_worst']:.4f}"),
                ("top-10 %", lambda r: f"{r['top10_agreement'] * 100:.1f}"),
                ("spearman", lambda r: f"{r['spearman']:.4f}")]
        tail.append(("max |x|/range", lambda r: f"{max([n['outlier_ratio'] or 0 for n in r['nodes']] or [0]):.1f}"))
    else:
        head = [("top-1 agree %", lambda r: f"{(r['agreement'] or 0) * 100:.2f}"),
                ("output SQNR", lambda r: "inf" if r["output_sqnr_db"] is None else f"{r['output_sqnr_db']:.1f}")]
    return head + [(sq, _sqnr_cell)] + tail + cost


def format_table(results: dict, markdown: bool = False) -> str:
    """The results as an aligned text table (or a Markdown table); with QAT
    figures (:func:`fixedpoint.qat.run_qat`), PTQ and QAT accuracy and drop."""
    kind = results["model"].get("kind", "classification")
    nl = max(len(r["sqnr_db"]) for r in results["profiles"].values())
    cols = _columns(kind, nl, "qat" in results)
    rows = [["profile"] + [c for c, _ in cols]]
    rows += [[n] + [f(r) for _, f in cols] for n, r in results["profiles"].items()]
    if markdown:
        out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows[1:]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def json_ready(results):
    """The results without the arrays kept for the figures."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if not str(k).startswith("_")}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    return clean(results)


def write_report(results: dict, out, *, figures: bool = True) -> list:
    """Write ``report.md``, ``results.json`` and (``figures``) PNG figures into
    ``out``; without matplotlib (the ``figures`` extra) the figures are skipped
    with a note on stderr.  Returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    j = out / "results.json"
    j.write_text(json.dumps(json_ready(results), indent=2) + "\n", encoding="utf-8")
    paths.append(j)
    figs = []
    if figures:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print('fixedpoint study: figures skipped: they need matplotlib (pip install '
                  '"fixedpoint[figures]")', file=sys.stderr)
        else:
            figs = _figures(results, out)
    paths += figs
    md = out / "report.md"
    md.write_text(_markdown(results, [f.name for f in figs]), encoding="utf-8")
    paths.append(md)
    return paths


def _markdown(results, figs):
    m, d = results["model"], results["data"]
    shapes = f" (layers {', '.join('x'.join(map(str, s)) for s in m['layers'])})" if m["layers"] else ""
    lines = [
        "# fixedpoint design study", "",
        f"fixedpoint {results['fixedpoint']}; model {m['name']}{shapes}; data: {d['name']}, "
        f"{d['samples']} samples evaluated; static activation scales from {d['calibration_samples']} "
        f"calibration samples; {results['seconds']:.1f} s.", "",
        format_table(results, markdown=True), "",
        {"classification": "Accuracy drop in percentage points against the fp32 profile.",
         "embedding": "Cosine of each embedding to the float one; top-10: the share of each sentence's "
                      "ten nearest neighbours (by cosine, among the evaluated sentences) that the profile "
                      "finds again; Spearman: rank correlation of all pairwise similarities.",
         "agreement": "Agreement of the first output's argmax with the float run, and its SQNR."}[m["kind"]],
        "SQNR: each layer's output against the float model's, over the evaluation set (the errors of "
        "earlier layers included; MLP hidden layers after their ReLU). Overflows: accumulator adds that wrapped or clamped; clipped: inputs "
        "beyond the activation format at the scale used; |x|/range: the largest input over the largest "
        "value the activation format holds at its scale (above 1: outliers were clipped). Weights: codes, "
        "scales, zero points and biases in bytes. Energy and time per inference are estimates from each "
        "profile's cost figures: see `fixedpoint profiles NAME` for their sources and assumptions.", "",
    ]
    if results["claims"]:
        lines += ["## Against the design notes", "",
                  "| class | profile | claimed drop | measured drop (pp) | verdict |", "|---|---|---|---|---|"]
        for c in results["claims"]:
            lines.append(f"| {c['class']} | {c['profile']} | {c['claimed']} | {c['measured_pp']:+.2f} | "
                         f"{c['verdict']} |")
        lines += ["", f"One sample is {100 / d['samples']:.2f} pp of accuracy here.", ""]
    if "qat" in results:
        lines += _qat_markdown(results, "qat.png" in figs)
    nodes = next(iter(results["profiles"].values()))["nodes"]
    if len(nodes) > 4:
        lines += ["## Per node", "", "SQNR (dB) of every overridden node per profile, in graph order.", "",
                  "| node | kind | " + " | ".join(results["profiles"]) + " |",
                  "|---|---|" + "---|" * len(results["profiles"])]
        for i, nd in enumerate(nodes):
            vals = []
            for r in results["profiles"].values():
                v = r["nodes"][i]["sqnr_db"]
                vals.append("inf" if v is None else f"{v:.1f}")
            lines.append(f"| {nd['node']} | {nd['kind']} | " + " | ".join(vals) + " |")
        lines.append("")
    for f in figs:
        lines += [f"![{f}]({f})", ""]
    return "\n".join(lines)


def _figures(results, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    prof = results["profiles"]
    names = list(prof)
    kind = results["model"]["kind"]
    paths = []
    metric, label = {"classification": ("accuracy", "accuracy (%)"),
                     "embedding": ("cosine_mean", "mean cosine to float"),
                     "agreement": ("agreement", "top-1 agreement (%)")}[kind]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    vals = [(prof[n][metric] or 0) * (100 if kind != "embedding" else 1) for n in names]
    ax.bar(range(len(names)), vals, color=["#777777" if n == "fp32" else "#3b6ea8" for n in names])
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    lo = min(vals)
    ax.set_ylim(max(0.0, lo - (5 if kind != "embedding" else (1 - lo) * 0.5)),
                100 if kind != "embedding" else 1.0005)
    ax.set_ylabel(label)
    for i, a in enumerate(vals):
        ax.text(i, a, f"{a:.2f}" if kind != "embedding" else f"{a:.4f}", ha="center", va="bottom", fontsize=7)
    ax.set_title(f"{label.split(' (')[0].capitalize()} per profile")
    fig.tight_layout()
    paths.append(_save(fig, out / "accuracy.png", plt))

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for n in names:
        if n == "fp32":
            continue
        nodes = prof[n]["nodes"]
        depth = [nd["depth"] for nd in nodes]
        axes[0].plot(depth, [nd["sqnr_db"] if nd["sqnr_db"] is not None else np.nan for nd in nodes],
                     marker=".", label=n)
        axes[1].plot(depth, [nd["outlier_ratio"] or np.nan for nd in nodes], marker=".", label=n)
    nodes = prof[names[-1]]["nodes"]
    kinds = sorted({nd["kind"] for nd in nodes})
    for ax, title in ((axes[0], "SQNR of each layer's output (dB)"),
                      (axes[1], "largest |input| / activation range")):
        ax.set_xlabel("layer (graph order)" + (f"; kinds: {', '.join(kinds)}" if len(kinds) > 1 else ""))
        ax.set_title(title)
    axes[1].axhline(1.0, color="k", lw=0.8, ls="--")
    axes[1].set_yscale("log")
    from matplotlib.ticker import MaxNLocator
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, out / "layers.png", plt))
    if len(nodes) > 4:
        fig, ax = plt.subplots(figsize=(8, 3.6))
        for i, k in enumerate(kinds):
            for n in names[1:]:
                v = [nd["sqnr_db"] for nd in prof[n]["nodes"] if nd["kind"] == k and nd["sqnr_db"] is not None]
                if v:
                    ax.scatter([i + 0.8 * (names.index(n) - 1) / max(len(names) - 1, 1)] * len(v), v, s=8,
                               label=n if i == 0 else None)
        ax.set_xticks(range(len(kinds)), kinds)
        ax.set_ylabel("SQNR (dB)")
        ax.set_title("SQNR by node type")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(_save(fig, out / "nodes.png", plt))
    if "qat" in results:
        paths.append(_qat_figure(prof, names, out, plt))
    # one scale per tensor/channel/group (QTensor); MX and NVFP4 blocks have no single grid to draw
    shown = [n for n in names if "_weights" in prof[n] and hasattr(prof[n]["_weights"][0], "scale")]
    if shown:
        paths.append(_weights_figure(prof, shown, out, plt))
    return paths


def _weights_figure(prof, shown, out, plt):
    """One weight column and the values each profile's format can hold there."""
    q0 = prof[shown[0]]["_weights"]
    li = min(1, len(q0) - 1)
    from .fp8 import from_fp8
    from .formats import FloatFormat
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 1.3 * len(shown) + 1), sharex=True, squeeze=False)
    col = prof[shown[0]]["_weights"][li].dequantize()[:, 0]
    for ax, n in zip(axes[:, 0], shown):
        q = prof[n]["_weights"][li]
        w = q.dequantize()[:, 0]
        ax.hist(w, bins=60, color="#aaaaaa")
        sc = np.asarray(q.scale, np.float64)
        zp = np.asarray(q.zero_point)
        s = float(sc.reshape(-1)[0]) if sc.ndim else float(sc)
        z = int(zp.reshape(-1)[0]) if zp.ndim else int(zp)
        if isinstance(q.fmt, FloatFormat):
            v = from_fp8(np.arange(1 << q.fmt.nbits, dtype=np.uint8), q.fmt).astype(np.float64)
            grid = np.unique(v[np.isfinite(v)] * s)
        else:
            grid = (np.arange(q.fmt.min, q.fmt.max + 1) - z) * s
        span = max(col.max() - col.min(), 1e-12)
        grid = grid[(grid >= col.min() - 0.1 * span) & (grid <= col.max() + 0.1 * span)]
        for g in grid:
            ax.axvline(g, color="#c0392b", lw=0.5, alpha=0.7)
        ax.set_ylabel(n, rotation=0, ha="right", fontsize=8)
        ax.set_yticks([])
    axes[-1, 0].set_xlabel(f"weights of layer {li}, output channel 0 (its first group for per-group "
                           f"scales), as each profile stores them; red: the values the format can hold")
    fig.suptitle("Weights and each profile's quantization grid")
    fig.tight_layout()
    return _save(fig, out / "weights.png", plt)


def _qat_markdown(results, fig):
    q = results["qat"]
    lines = ["## PTQ vs QAT", "",
             f"Quantization-aware training: each profile's model fine-tuned from the float weights for "
             f"{q['epochs']} epochs on the {q['train_samples']} training samples ({q['optimizer']}, learning "
             f"rate {q['lr']:g}, {q.get('lr_schedule', 'constant')}, batches of {q['batch_size']}, "
             f"seed {q['seed']}"
             + (", learned scales (LSQ)" if q["learn_scales"] else ", static scales calibrated before "
                "training") + f"; {q['seconds']:.1f} s), its forward pass the profile's arithmetic bit "
             "for bit and its backward pass the straight-through estimator; then evaluated with the same "
             "forward. Drops against the float model before fine-tuning; the fp32 row is the same "
             "fine-tuning in float (what the extra training alone changes).", "",
             "| profile | PTQ accuracy % | PTQ drop (pp) | QAT accuracy % | QAT drop (pp) | recovered (pp) |",
             "|---|---|---|---|---|---|"]
    for n, r in results["profiles"].items():
        t = r.get("qat")
        if t is None:
            continue
        lines.append(f"| {n} | {r['accuracy'] * 100:.2f} | {r['drop_pp']:+.2f} | {t['accuracy'] * 100:.2f} | "
                     f"{t['drop_pp']:+.2f} | {t['recovered_pp']:+.2f} |")
    lines.append("")
    if fig:
        lines += ["![qat.png](qat.png)", ""]
    return lines


def _qat_figure(prof, names, out, plt):
    """PTQ and QAT accuracy drop per profile."""
    shown = [n for n in names if "qat" in prof[n]]
    x = np.arange(len(shown))
    ptq = [prof[n]["drop_pp"] for n in shown]
    qat = [prof[n]["qat"]["drop_pp"] for n in shown]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar(x - 0.2, ptq, 0.4, label="PTQ", color="#c0392b")
    ax.bar(x + 0.2, qat, 0.4, label="QAT", color="#3b6ea8")
    for i, (a, b) in enumerate(zip(ptq, qat)):
        ax.text(i - 0.2, a, f"{a:.1f}", ha="center", va="bottom" if a >= 0 else "top", fontsize=7)
        ax.text(i + 0.2, b, f"{b:.1f}", ha="center", va="bottom" if b >= 0 else "top", fontsize=7)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, shown, rotation=30, ha="right")
    ax.set_ylabel("accuracy drop (pp)")
    ax.set_title("Accuracy drop against float: post-training quantization vs quantization-aware training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out / "qat.png", plt)


def _save(fig, path, plt):
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
