"""Quantization-aware training (QAT) for the design study.

For each profile, the float model is fine-tuned under the profile with
:mod:`fixedpoint.torch` (forward: the target's arithmetic, bit for bit;
backward: the straight-through estimator, optionally with LSQ scales) for a
short, fixed, seeded schedule on the workload's training split, then
evaluated with the same emulated forward.  :func:`run_qat` adds the QAT
figures to a :func:`fixedpoint.study.run_study` result; ``fixedpoint study
--qat`` does both.  Needs the ``torch`` extra.

The models are rebuilt in PyTorch from the study's recipes: the digits MLP
(:class:`MLPModule`, with the study's fused ReLU requantization on INT8
outputs) and ONNX graphs (:class:`GraphModule`: ``Conv``, ``Gemm``,
``MatMul`` with a constant weight, ``Relu``, pooling, ``Flatten``,
``Reshape``, elementwise arithmetic, ``Softmax``), run as the graph runner
runs them: the profile's layers for ``Conv``/``Gemm``/``MatMul``, every other
operator in float32 rounded to the profile's vector type.

Determinism: the batches come from a seeded ``torch.Generator``; training
runs with one PyTorch thread and ``torch.use_deterministic_algorithms``; the
forward pass is NumPy and the compiled kernels (whose bits never depend on
threads).  The same seed gives the same weights and the same numbers.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import get_num_threads, set_num_threads
from .layers import round_to_float_type
from .models.mlp import MLP
from .profiles import AcceleratorProfile, get
from .study import Progress, Workload
from .torch import EmulatedLayer, calibrate, emulate

__all__ = ["Schedule", "MLPModule", "GraphModule", "fine_tune", "predict", "run_qat", "model_of"]


@dataclass(frozen=True)
class Schedule:
    """The fine-tuning schedule: Adam on shuffled mini-batches of the training
    split, cross-entropy loss, the learning rate decaying linearly from ``lr``
    to 0 over the run.  Learned scales (LSQ) take ``lr`` times their
    calibrated mean magnitude (relative steps).

    ``epochs`` passes over the training split (0: calibration only, which is
    post-training quantization through PyTorch); ``learn_scales``: LSQ.
    """

    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    learn_scales: bool = False

    def __post_init__(self):
        for key, lo in (("epochs", 0), ("batch_size", 1)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{key}: expected an int >= {lo}, got {v!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < np.inf:
            raise ValueError(f"lr: expected a positive finite number, got {self.lr!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {self.seed!r}")
        if not isinstance(self.learn_scales, bool):
            raise TypeError(f"learn_scales: expected a bool, got {self.learn_scales!r}")


# ---------------------------------------------------------------------------
# Models

class MLPModule(nn.Module):
    """The study's ReLU MLP (:class:`fixedpoint.models.mlp.MLP`) in PyTorch.

    Once emulated on a profile with INT8 outputs and calibrated, a layer
    followed by a ReLU requantizes straight to the next layer's input scale
    (the study's fused ReLU), as :func:`fixedpoint.study.mlp_workload` does.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from fixedpoint.models.mlp import load_default
    >>> from fixedpoint.qat import MLPModule
    >>> model, data = load_default()
    >>> net = MLPModule(model)
    >>> logits = net(torch.from_numpy(data["x"][:4])).detach().numpy()    # float, PyTorch
    >>> bool(np.allclose(logits, model.forward(data["x"][:4])[-1], rtol=1e-5, atol=1e-5))
    True
    """

    def __init__(self, mlp: MLP):
        super().__init__()
        if not isinstance(mlp, MLP):
            raise TypeError(f"mlp: expected a fixedpoint.models.mlp.MLP, got {type(mlp).__name__}")
        self.layers = nn.ModuleList()
        for w, b in mlp.layers:
            fc = nn.Linear(w.shape[0], w.shape[1], device="meta")
            fc.weight = nn.Parameter(torch.from_numpy(np.array(w.T, np.float32)))
            fc.bias = nn.Parameter(torch.from_numpy(np.array(b, np.float32)))
            self.layers.append(fc)

    def forward(self, x):
        n = len(self.layers)
        for i, fc in enumerate(self.layers):
            if i < n - 1:
                self._fuse(fc, self.layers[i + 1])
            x = fc(x)
            if i < n - 1:
                x = torch.relu(x)
        return x

    @staticmethod
    def _fuse(a, b):
        if isinstance(a, EmulatedLayer) and isinstance(b, EmulatedLayer) \
                and a.profile.output.type == "int8":
            st = b.static_input()
            if st is not None:
                a.set_output_quantization(float(st[0]), int(st[1]))

    def to_mlp(self, name: str = "qat") -> MLP:
        """The (fine-tuned) weights as an :class:`~fixedpoint.models.mlp.MLP`."""
        return MLP(name, tuple((fc.weight.detach().cpu().numpy().T.astype(np.float32),
                                fc.bias.detach().cpu().numpy().astype(np.float32))
                               for fc in self.layers))


class _VectorRound(torch.autograd.Function):
    """float32 values rounded to the vector type; the gradient passes straight."""

    @staticmethod
    def forward(ctx, x, ftype):
        y = round_to_float_type(x.detach().cpu().numpy(), ftype)
        return torch.from_numpy(np.ascontiguousarray(y, np.float32)).to(x.device)

    @staticmethod
    def backward(ctx, g):
        return g, None


def _attr(node, name, default):
    import onnx
    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _sym_pads(node, name):
    pads = list(_attr(node, "pads", [0, 0, 0, 0]))
    auto = _attr(node, "auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        raise ValueError(f"model: node {name!r} uses auto_pad={auto}; the torch model needs explicit pads")
    if auto == "VALID":
        return (0, 0)
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
        raise ValueError(f"model: node {name!r} has pads {pads}; the torch model needs symmetric pads")
    return (int(pads[0]), int(pads[1]))


class GraphModule(nn.Module):
    """An ONNX graph as a PyTorch module, node for node, for QAT.

    ``Conv`` (constant weights, symmetric pads), ``Gemm`` (constant ``B``,
    alpha = beta = 1, no ``transA``) and ``MatMul`` with a constant 2-D
    weight become ``torch.nn.Conv2d`` / ``torch.nn.Linear`` modules (in
    ``layers``, by node name) that :func:`fixedpoint.torch.emulate` swaps;
    ``Relu``, ``Sigmoid``, ``Tanh``, ``MaxPool``, ``AveragePool``,
    ``GlobalAveragePool``, ``Flatten``, ``Reshape`` (constant shape),
    ``Add``/``Sub``/``Mul``/``Div``, ``Softmax``/``LogSoftmax``, ``Identity``,
    ``Dropout`` (inference) and ``Constant`` run in float32.  With ``vector``
    set to ``"float16"`` or ``"bfloat16"`` (the profile's vector type), the
    outputs of those other operators are rounded to it, as the graph runner
    does (gradients pass straight through the rounding).

    ``forward`` takes the graph's inputs in order and returns its first output.
    """

    _ELEMENTWISE = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}
    _UNARY = {"Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh}

    def __init__(self, model):
        super().__init__()
        from .graph import load_model
        from onnx import numpy_helper
        m = load_model(model)
        g = m.graph
        consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.input_names = [i.name for i in g.input if i.name not in consts]
        self.output_names = [o.name for o in g.output]
        self.layers = nn.ModuleDict()
        self.vector = "float32"
        self._consts = {}
        self._plan = []
        for i, n in enumerate(g.node):
            name = n.name or f"{n.op_type}_{i}"
            if n.domain not in ("", "ai.onnx"):
                raise ValueError(f"model: node {name!r} is in domain {n.domain!r}; the torch model "
                                 f"takes standard ONNX operators")
            op = n.op_type
            if op == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        consts[n.output[0]] = numpy_helper.to_array(a.t)
                continue
            key = self._key(name)
            ins = [s for s in n.input]
            if op in ("Conv", "Gemm", "MatMul"):
                self.layers[key] = self._layer(n, name, consts)
                self._plan.append(("layer", key, ins[:1], n.output[0], None))
                continue
            if op in self._UNARY or op in ("Identity", "Dropout"):
                self._plan.append((op, key, ins[:1], n.output[0], None))
            elif op in self._ELEMENTWISE:
                self._plan.append((op, key, ins[:2], n.output[0], None))
            elif op == "Flatten":
                self._plan.append((op, key, ins[:1], n.output[0], int(_attr(n, "axis", 1))))
            elif op == "Reshape":
                if ins[1] not in consts:
                    raise ValueError(f"model: node {name!r} (Reshape) needs a constant shape")
                if _attr(n, "allowzero", 0):
                    raise ValueError(f"model: node {name!r} (Reshape) with allowzero=1 is not supported")
                self._plan.append((op, key, ins[:1], n.output[0], [int(v) for v in consts[ins[1]]]))
            elif op in ("MaxPool", "AveragePool"):
                k = tuple(_attr(n, "kernel_shape", None))
                if len(k) != 2:
                    raise ValueError(f"model: node {name!r} ({op}) is not 2-D")
                cfg = dict(kernel_size=k, stride=tuple(_attr(n, "strides", [1, 1])),
                           padding=_sym_pads(n, name), ceil_mode=bool(_attr(n, "ceil_mode", 0)))
                if op == "MaxPool":
                    if _attr(n, "storage_order", 0) or len(n.output) > 1:
                        raise ValueError(f"model: node {name!r} (MaxPool) with indices is not supported")
                    cfg["dilation"] = tuple(_attr(n, "dilations", [1, 1]))
                else:
                    cfg["count_include_pad"] = bool(_attr(n, "count_include_pad", 0))
                self._plan.append((op, key, ins[:1], n.output[0], cfg))
            elif op == "GlobalAveragePool":
                self._plan.append((op, key, ins[:1], n.output[0], None))
            elif op in ("Softmax", "LogSoftmax"):
                self._plan.append((op, key, ins[:1], n.output[0], int(_attr(n, "axis", -1))))
            else:
                raise ValueError(f"model: node {name!r}: the torch model does not support {op}")
        used = {s for step in self._plan for s in step[2]}
        for k in used & set(consts):
            self._consts[k] = torch.from_numpy(np.array(consts[k]))

    @staticmethod
    def _key(name):
        return name.replace(".", "_")

    @staticmethod
    def _layer(n, name, consts):
        ins = list(n.input)
        if n.op_type == "Conv":
            w = consts.get(ins[1])
            b = consts.get(ins[2]) if len(ins) > 2 and ins[2] else None
            if w is None or w.ndim != 4 or (len(ins) > 2 and ins[2] and b is None):
                raise ValueError(f"model: node {name!r} (Conv) needs a constant 2-D kernel and bias")
            O, Cg, kh, kw = w.shape
            groups = int(_attr(n, "group", 1))
            conv = nn.Conv2d(Cg * groups, O, (kh, kw), tuple(_attr(n, "strides", [1, 1])),
                             _sym_pads(n, name), tuple(_attr(n, "dilations", [1, 1])), groups,
                             b is not None, device="meta")
            conv.weight = nn.Parameter(torch.from_numpy(np.array(w, np.float32)))
            if b is not None:
                conv.bias = nn.Parameter(torch.from_numpy(np.array(b, np.float32)))
            return conv
        if n.op_type == "MatMul":
            w = consts.get(ins[1])
            if w is None or w.ndim != 2 or ins[0] in consts:
                raise ValueError(f"model: node {name!r} (MatMul): the torch model needs an activation "
                                 f"times a constant 2-D weight")
            b = None
        else:
            if _attr(n, "alpha", 1.0) != 1.0 or _attr(n, "beta", 1.0) != 1.0 or _attr(n, "transA", 0) \
                    or ins[1] not in consts:
                raise ValueError(f"model: node {name!r} (Gemm) needs a constant B, alpha = beta = 1 "
                                 f"and transA = 0")
            w = consts[ins[1]]
            w = w.T if _attr(n, "transB", 0) else w
            b = None
            if len(ins) > 2 and ins[2]:
                if ins[2] not in consts:
                    raise ValueError(f"model: node {name!r} (Gemm) needs a constant bias")
                b = np.asarray(consts[ins[2]], np.float32)
                b = np.full(w.shape[1], float(b.reshape(())), np.float32) if b.size == 1 else b.reshape(-1)
        K, N = w.shape
        fc = nn.Linear(K, N, b is not None, device="meta")
        fc.weight = nn.Parameter(torch.from_numpy(np.array(w.T, np.float32)))
        if b is not None:
            fc.bias = nn.Parameter(torch.from_numpy(np.array(b, np.float32)))
        return fc

    def _value(self, env, name):
        return env[name] if name in env else self._consts[name]

    def forward(self, *inputs):
        if len(inputs) != len(self.input_names):
            raise ValueError(f"inputs: the graph takes {self.input_names}, got {len(inputs)} tensors")
        env = dict(zip(self.input_names, inputs))
        for op, key, ins, out, cfg in self._plan:
            args = [self._value(env, s) for s in ins if s]
            x = args[0]
            if op == "layer":
                env[out] = self.layers[key](x)
                continue
            if op in self._UNARY:
                y = self._UNARY[op](x)
            elif op in ("Identity", "Dropout"):
                y = x
            elif op in self._ELEMENTWISE:
                y = self._ELEMENTWISE[op](x, args[1])
            elif op == "Flatten":
                y = x.reshape(int(np.prod(x.shape[:cfg])), -1)
            elif op == "Reshape":
                shape = [x.shape[i] if v == 0 else v for i, v in enumerate(cfg)]
                y = x.reshape(shape)
            elif op == "MaxPool":
                y = F.max_pool2d(x, **cfg)
            elif op == "AveragePool":
                y = F.avg_pool2d(x, **cfg)
            elif op == "GlobalAveragePool":
                y = x.mean(dim=(2, 3), keepdim=True)
            elif op == "Softmax":
                y = torch.softmax(x, cfg)
            else:
                y = torch.log_softmax(x, cfg)
            if self.vector != "float32" and y.dtype == torch.float32:
                y = _VectorRound.apply(y, self.vector)
            env[out] = y
        return env[self.output_names[0]]


def model_of(workload: Workload) -> nn.Module:
    """A fresh float PyTorch model of ``workload`` (its ``training`` recipe)."""
    tr = _training(workload)
    return MLPModule(tr["model"]) if isinstance(tr["model"], MLP) else GraphModule(tr["model"])


def _training(workload):
    tr = getattr(workload, "training", None)
    if not tr:
        raise ValueError(f"workload: {workload.name} has no labelled training split for QAT (the "
                         f"default MLP and the conv net have one; a graph's .npz can give "
                         f"train_<input> and train_labels)")
    return tr


# ---------------------------------------------------------------------------
# Training

@contextlib.contextmanager
def _deterministic():
    """One PyTorch thread and its deterministic algorithms; one thread for the
    compiled kernels too (their bits never depend on it, but the products of
    a training step are small, and threads only cost time there)."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    kernel_threads = get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    set_num_threads(1)
    try:
        yield
    finally:
        set_num_threads(kernel_threads)
        torch.use_deterministic_algorithms(det)
        torch.set_num_threads(threads)


def _as_tensor(a, name):
    if isinstance(a, torch.Tensor):
        return a
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def fine_tune(model: nn.Module, profile, x, y, calibration, *, schedule: Schedule = Schedule(),
              progress=None) -> dict:
    """Emulate ``model`` on ``profile``, calibrate it and fine-tune it in place.

    Parameters
    ----------
    model : torch.nn.Module
        A float model (its ``Linear``/``Conv2d`` layers are swapped by
        :func:`fixedpoint.torch.emulate`); its ``forward`` takes one batch.
    profile : AcceleratorProfile or str
    x, y : arrays or tensors
        The training split: inputs (float32) and integer labels.
    calibration : iterable of input batches
        Fixes the static scales with the profile's calibrators, before training.
    schedule : Schedule
    progress : callable, optional
        ``progress(epoch, loss)`` after each epoch.

    Returns
    -------
    dict: ``loss`` (mean training loss per epoch) and ``seconds``.

    Examples
    --------
    >>> import torch
    >>> from fixedpoint.qat import Schedule, fine_tune
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
    >>> out = fine_tune(net, "int2-research", x, y, [x], schedule=Schedule(epochs=2, batch_size=16))
    >>> len(out["loss"]), type(net[0]).__name__
    (2, 'Linear')
    """
    p = profile if isinstance(profile, AcceleratorProfile) else get(profile)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule: expected a Schedule, got {type(schedule).__name__}")
    X, Y = _as_tensor(x, "x").float(), _as_tensor(y, "y")
    if Y.dtype.is_floating_point or Y.ndim != 1 or len(Y) != len(X):
        raise ValueError(f"y: expected {len(X)} integer labels, got shape {tuple(Y.shape)} {Y.dtype}")
    t0 = time.perf_counter()
    losses = []
    with _deterministic():
        emulate(model, p, learn_scales=schedule.learn_scales)
        calibrate(model, [_as_tensor(c, "calibration").float() for c in calibration])
        if isinstance(model, GraphModule):
            model.vector = p.vector
        if schedule.epochs:
            gen = torch.Generator().manual_seed(int(schedule.seed))
            opt = torch.optim.Adam(_param_groups(model, schedule.lr), lr=schedule.lr)
            steps = schedule.epochs * -(-len(X) // schedule.batch_size)
            decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - t / steps)
            model.train()
            for epoch in range(schedule.epochs):
                perm = torch.randperm(len(X), generator=gen)
                total = 0.0
                for i in range(0, len(X), schedule.batch_size):
                    idx = perm[i:i + schedule.batch_size]
                    opt.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(model(X[idx]), Y[idx].long())
                    loss.backward()
                    opt.step()
                    decay.step()
                    total += float(loss.detach()) * len(idx)
                losses.append(total / len(X))
                if progress is not None:
                    progress(epoch + 1, losses[-1])
        model.eval()
    return {"loss": losses, "seconds": time.perf_counter() - t0}


def _param_groups(model, lr):
    """Weights and biases at ``lr``; each learned scale (LSQ) at ``lr`` times its
    calibrated mean magnitude: Adam's steps do not grow with the gradient, so
    without this a scale of 1e-5 (E5M2 activations) would move by 100 times
    its value in one step."""
    scales = {id(m.input_scale) for m in model.modules() if isinstance(m, EmulatedLayer)}
    scales |= {id(m.weight_scale) for m in model.modules()
               if isinstance(m, EmulatedLayer) and m.weight_scale is not None}
    plain, groups = [], []
    for q in model.parameters():
        if not q.requires_grad:
            continue
        if id(q) in scales:
            groups.append({"params": [q], "lr": lr * float(q.detach().abs().mean())})
        else:
            plain.append(q)
    return [{"params": plain}] + groups


def predict(model: nn.Module, batches) -> np.ndarray:
    """The model's outputs (the emulated forward) over the batches, concatenated."""
    with torch.no_grad():
        return np.concatenate([model(_as_tensor(b, "batches").float()).cpu().numpy() for b in batches])


# ---------------------------------------------------------------------------
# The study's QAT columns

def run_qat(results: dict, workload: Workload, profiles=None, *, schedule: Schedule = Schedule(),
            progress: bool = False, stream=None) -> dict:
    """Fine-tune the workload's float model under every profile of ``results``
    (from :func:`fixedpoint.study.run_study` on the same workload) and add
    each profile's QAT figures: ``results["profiles"][name]["qat"]`` holds
    ``accuracy``, ``drop_pp`` (against the float model before fine-tuning),
    ``recovered_pp`` (PTQ drop minus QAT drop), ``loss`` per epoch and
    ``seconds``; ``results["qat"]`` the schedule.  The ``fp32`` row is the
    same schedule in float (a control: what fine-tuning alone changes).
    Returns ``results``.

    Parameters
    ----------
    results : dict
        :func:`fixedpoint.study.run_study`'s result on ``workload``.
    workload : Workload
        With a labelled training split (``workload.training``).
    profiles : list, optional
        The profiles as given to ``run_study`` (names, files or
        AcceleratorProfile); default: the names in ``results`` (registered
        profiles).
    schedule : Schedule
    progress : bool
        A progress line per profile and epoch on ``stream`` (default stderr).

    Examples
    --------
    >>> from fixedpoint import study
    >>> from fixedpoint.qat import Schedule, run_qat
    >>> w = study.mlp_workload(limit=100)
    >>> res = run_qat(study.run_study(["int2-research"], w), w, schedule=Schedule(epochs=0))
    >>> r = res["profiles"]["int2-research"]
    >>> r["qat"]["accuracy"] == r["accuracy"]        # no training: PTQ, through PyTorch
    True
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule: expected a Schedule, got {type(schedule).__name__}")
    if not isinstance(workload, Workload):
        raise TypeError(f"workload: expected a fixedpoint.study.Workload, got {type(workload).__name__}")
    if workload.kind != "classification":
        raise ValueError(f"workload: QAT needs labels (a classification workload); {workload.name} is "
                         f"{workload.kind!r}")
    tr = _training(workload)
    given = {}
    for q in profiles or []:
        pq = q if isinstance(q, AcceleratorProfile) else get(q)
        given[pq.name] = pq
    names = list(results["profiles"])
    ref_acc = results["profiles"]["fp32"]["accuracy"] if "fp32" in results["profiles"] else None
    bar = Progress(len(names), stream or sys.stderr, progress)
    t0 = time.perf_counter()
    for name in names:
        p = given.get(name) or get(name)
        model = model_of(workload)

        def tick(epoch, loss, _n=name):
            bar.show(_n, f"QAT epoch {epoch}/{schedule.epochs}")
        out = fine_tune(model, p, tr["x"], tr["y"], tr["calibration"], schedule=schedule, progress=tick)
        with _deterministic():
            y = predict(model, tr["eval"])
        acc = float(np.mean(np.argmax(y, axis=-1) == workload.labels))
        ptq = results["profiles"][name]
        drop = 0.0 if ref_acc is None else round((ref_acc - acc) * 100, 6)
        ptq["qat"] = {"accuracy": acc, "drop_pp": drop,
                      "recovered_pp": round(ptq.get("drop_pp", 0.0) - drop, 6),
                      "loss": out["loss"], "seconds": out["seconds"]}
        bar.step(name, "QAT done")
    results["qat"] = dict(asdict(schedule), optimizer="Adam", lr_schedule="linear decay to 0",
                          loss="cross-entropy",
                          train_samples=int(len(tr["y"])), seconds=time.perf_counter() - t0)
    return results
