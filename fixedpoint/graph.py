"""Run any ONNX graph on an accelerator profile.

The graph is executed by ``onnx.reference.ReferenceEvaluator`` (we do not
write a graph interpreter); only the operators an accelerator runs in its
low-precision datapath are overridden with :mod:`fixedpoint.layers`:

* ``MatMul`` or ``Gemm`` with one constant operand (an initializer): a
  :class:`~fixedpoint.layers.Linear` (a ``Gemm`` bias ``C`` that is a constant
  vector is the layer's bias);
* ``MatMul`` between two activations (attention scores and context): a
  :class:`~fixedpoint.layers.MatMul`;
* ``Conv`` (2-D, any groups, strides, pads, dilations, ``auto_pad``; depthwise
  included) with constant weights: a :class:`~fixedpoint.layers.Conv2d`.

Every other operator runs as the reference runs it, in float32; with a
profile whose ``vector`` type is float16 or bfloat16, their float outputs are
rounded to it (the Neural Engine's float16 vector units, for instance).

Activation scales are static when calibration feeds are given (the float
graph is run on them and every overridden node records its inputs and
output), and computed per call otherwise.  :func:`run` is the one-call form;
a :class:`Session` keeps the quantized weights and calibrated scales for
many runs.  ``onnx`` is an optional dependency (``pip install
"fixedpoint[models]"``).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .layers import Conv2d, LayerTrace, Linear, MatMul, round_to_float_type
from .metrics import sqnr_db
from .onnx_ops import reference_ops
from .profiles import AcceleratorProfile, get

try:
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun
    from onnx.reference.ops import load_op
except ImportError:  # pragma: no cover - exercised by the CLI message test
    onnx = None

__all__ = ["run", "Session", "NodeTrace", "GraphTrace", "OVERRIDDEN", "load_model"]

#: The operators run by the profile's layers.
OVERRIDDEN = ("MatMul", "Gemm", "Conv")

_NP_OF_ONNX = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64,
               9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


def _need_onnx():
    if onnx is None:
        raise ImportError('the graph runner needs onnx: pip install "fixedpoint[models]"')


def load_model(model):
    """An ``onnx.ModelProto`` from a path, bytes or a ModelProto; ValueError if it
    does not parse or is not a valid model."""
    _need_onnx()
    if isinstance(model, onnx.ModelProto):
        m = model
    elif isinstance(model, (str, Path)):
        try:
            m = onnx.load(str(model))
        except FileNotFoundError:
            raise ValueError(f"model: no such file {str(model)!r}") from None
        except Exception as e:     # protobuf's DecodeError and friends
            raise ValueError(f"model: {str(model)!r} is not an ONNX model ({type(e).__name__}: {e})") from None
    elif isinstance(model, bytes):
        try:
            m = onnx.load_model_from_string(model)
        except Exception as e:
            raise ValueError(f"model: the bytes are not an ONNX model ({type(e).__name__})") from None
    else:
        raise TypeError(f"model: expected an ONNX file path or onnx.ModelProto, got {type(model).__name__}")
    try:
        onnx.checker.check_model(m)
    except onnx.checker.ValidationError as e:
        raise ValueError(f"model: not a valid ONNX model: {str(e).splitlines()[0]}") from None
    return m


@dataclass
class NodeTrace:
    """One overridden node in one run: its layer trace and how far its output
    is from the float run's (the errors of earlier nodes included)."""

    name: str
    op_type: str
    kind: str                        # "linear", "matmul" or "conv"
    layer: LayerTrace
    sqnr_db: float
    depth: int                       # position among the overridden nodes, in graph order
    signal: float = 0.0              # sum of the float output's squares (for totals over batches)
    noise: float = 0.0               # sum of the squared differences

    @property
    def overflows(self) -> int:
        return self.layer.overflow_count

    @property
    def clipped_inputs(self) -> int:
        return self.layer.clipped_inputs

    @property
    def x_scale(self) -> float:
        return float(np.max(self.layer.x_scale)) if self.layer.x_scale is not None else float("nan")

    @property
    def x_absmax(self) -> float:
        return self.layer.x_absmax

    @property
    def outlier_ratio(self) -> float:
        return self.layer.outlier_ratio


@dataclass
class GraphTrace:
    """Per overridden node (by ONNX name), in graph order."""

    nodes: dict = field(default_factory=dict)

    def summary(self) -> list[dict]:
        """One JSON-ready row per node."""
        return [{"node": t.name, "op": t.op_type, "kind": t.kind, "depth": t.depth,
                 "sqnr_db": None if not np.isfinite(t.sqnr_db) else t.sqnr_db,
                 "overflows": t.overflows, "clipped_inputs": t.clipped_inputs,
                 "x_scale": None if not np.isfinite(t.x_scale) else t.x_scale,
                 "x_absmax": t.x_absmax,
                 "outlier_ratio": None if not np.isfinite(t.outlier_ratio) else t.outlier_ratio}
                for t in self.nodes.values()]


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _round_result(r, ftype, args):
    """An operator's float32 result rounded to the vector type: in place when the
    result is a fresh array (not a view of an input, which may be a weight)."""
    if not (isinstance(r, np.ndarray) and r.dtype == np.float32):
        return r
    fresh = (r.flags.c_contiguous and r.flags.writeable and r.flags.owndata
             and not any(isinstance(a, np.ndarray) and np.may_share_memory(r, a) for a in args))
    return round_to_float_type(r, ftype, out=r if fresh else None)


class Session:
    """An ONNX graph prepared for one profile: weights quantized once, static
    scales after :meth:`calibrate`, then :meth:`run` as often as needed.

    Parameters
    ----------
    model : path, bytes or onnx.ModelProto
    profile : AcceleratorProfile or str

    Examples
    --------
    >>> import numpy as np, onnx
    >>> from onnx import helper, TensorProto, numpy_helper
    >>> w = numpy_helper.from_array(np.full((4, 2), 0.5, np.float32), "w")
    >>> g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "g",
    ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
    ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])], [w])
    >>> s = Session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), "ane-int8")
    >>> out, tr = s.run({"x": np.ones((1, 4), np.float32)})
    >>> out["y"].tolist(), list(tr.nodes)
    ([[2.0, 2.0]], ['fc'])
    """

    def __init__(self, model, profile):
        _need_onnx()
        self.model = load_model(model)
        self.profile = profile if isinstance(profile, AcceleratorProfile) else get(profile)
        g = self.model.graph
        self._inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for n in g.node:                  # Constant nodes are constants too
            if n.op_type == "Constant" and len(n.output) == 1:
                for a in n.attribute:
                    if a.name == "value":
                        self._inits[n.output[0]] = numpy_helper.to_array(a.t)
        self.inputs = [i for i in g.input if i.name not in self._inits]
        self.output_names = [o.name for o in g.output]
        self._names = {}
        self._layers = {}
        order = 0
        for i, n in enumerate(g.node):
            if n.op_type not in OVERRIDDEN or n.domain not in ("", "ai.onnx"):
                continue
            name = n.name or f"{n.op_type}_{i}"
            self._names[n.output[0]] = name
            self._layers[name] = (self._plan(n, name), order)
            order += 1
        self._mode = "quant"
        self._record = None
        opset = {d.domain: d.version for d in self.model.opset_import}.get("", 17)
        new_ops = [self._override(t) for t in OVERRIDDEN]
        faster = {cls.__name__: cls for cls in reference_ops()}      # same values, whole arrays
        if self.profile.vector != "float32":
            seen = {n.op_type for n in g.node if n.domain in ("", "ai.onnx")} - set(OVERRIDDEN)
            for t in sorted(seen - {"Constant"}):
                if t in faster:
                    base = faster.pop(t)
                else:
                    try:
                        base = load_op("", t, opset)
                    except Exception:        # an op the reference lacks: it fails at run time anyway
                        continue
                new_ops.append(self._vector_op(t, base))
        new_ops += list(faster.values())
        try:
            self._ev = ReferenceEvaluator(self.model, new_ops=new_ops)
        except Exception as e:
            raise ValueError(f"model: the ONNX reference cannot run it: {type(e).__name__}: {e}") from None
        
    # -- planning: which layer each overridden node becomes -------------------
    def _const(self, name):
        return self._inits.get(name)

    def _plan(self, node, name):
        p = self.profile
        ins = list(node.input)
        if node.op_type == "MatMul":
            a, b = self._const(ins[0]), self._const(ins[1])
            if a is None and b is None:
                return ("matmul", MatMul(p, name=name))
            if b is not None and a is None and b.ndim == 2:
                return ("linear", Linear(p, b.astype(np.float32), name=name))
            if a is not None and b is None and a.ndim == 2:     # W @ x = (x^T W^T)^T
                return ("linear_t", Linear(p, a.T.astype(np.float32), name=name))
            raise ValueError(f"model: node {name!r} ({node.op_type}) multiplies constants of shapes "
                             f"{None if a is None else a.shape} and {None if b is None else b.shape}; the "
                             f"override needs one 2-D constant weight or two activations")
        if node.op_type == "Gemm":
            alpha, beta = _attr(node, "alpha", 1.0), _attr(node, "beta", 1.0)
            ta, tb = _attr(node, "transA", 0), _attr(node, "transB", 0)
            b = self._const(ins[1])
            c = self._const(ins[2]) if len(ins) > 2 and ins[2] else None
            if b is None or alpha != 1.0 or (c is not None and beta != 1.0) or ta:
                raise ValueError(f"model: node {name!r} (Gemm) is not supported by the override: it "
                                 f"needs a constant B, alpha = 1, beta = 1 and transA = 0")
            if len(ins) > 2 and ins[2] and c is None:
                raise ValueError(f"model: node {name!r} (Gemm) has a computed C; the override needs a "
                                 f"constant bias")
            w = (b.T if tb else b).astype(np.float32)
            if c is not None:
                c = np.asarray(c, np.float32)
                if c.size == 1:
                    c = np.full(w.shape[1], float(c.reshape(())), np.float32)
                elif c.shape not in ((w.shape[1],), (1, w.shape[1])):
                    raise ValueError(f"model: node {name!r} (Gemm) has a bias of shape {c.shape}; the "
                                     f"override takes one value per output column")
                c = c.reshape(-1)
            return ("linear", Linear(p, w, c, name=name))
        # Conv
        w = self._const(ins[1])
        bias = self._const(ins[2]) if len(ins) > 2 and ins[2] else None
        if w is None or w.ndim != 4 or (len(ins) > 2 and ins[2] and bias is None):
            raise ValueError(f"model: node {name!r} (Conv) is not supported by the override: it needs "
                             f"a constant 2-D kernel (O, C/groups, kh, kw) and a constant bias")
        strides = list(_attr(node, "strides", [1, 1]))
        dil = list(_attr(node, "dilations", [1, 1]))
        pads = list(_attr(node, "pads", [0, 0, 0, 0]))
        auto = _attr(node, "auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        layer = Conv2d(p, w.astype(np.float32), None if bias is None else bias.astype(np.float32),
                       stride=tuple(strides), padding=(pads[0], pads[1], pads[2], pads[3]),
                       dilation=tuple(dil), groups=int(_attr(node, "group", 1)), name=name)
        return ("conv", layer, auto)

    def _conv_pads(self, layer, auto, x):
        """ONNX auto_pad SAME_UPPER / SAME_LOWER: the pads for this input size."""
        if auto in ("NOTSET", "VALID"):
            if auto == "VALID":
                layer.pads = (0, 0, 0, 0)
            return
        pads = []
        for size, k, s, d in zip(x.shape[2:], (layer.kh, layer.kw), layer.stride, layer.dilation):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if auto == "SAME_UPPER" else (big, small))
        layer.pads = (pads[0][0], pads[1][0], pads[0][1], pads[1][1])

    # -- the overriding operators ---------------------------------------------
    def _override(self, op_type):
        session = self

        def _run(self, *inputs, **attrs):
            return (session._dispatch(self.onnx_node, inputs),)
        return type(op_type, (OpRun,), {"op_domain": "", "_run": _run})

    def _vector_op(self, op_type, base):
        session = self
        # the attributes the base implementation takes (the subclass is given the newest
        # schema of its op, whose extra attributes the base may not accept)
        params = inspect.signature(base._run).parameters
        takes_all = any(p.kind == p.VAR_KEYWORD for p in params.values())

        def _run(self, *args, **kwargs):
            if not takes_all:
                kwargs = {k: v for k, v in kwargs.items() if k in params}
            res = base._run(self, *args, **kwargs)
            if session._mode != "quant":
                return res
            t = session.profile.vector
            return tuple(_round_result(r, t, args) for r in res)
        return type(op_type, (base,), {"op_domain": "", "_run": _run})

    def _dispatch(self, node, inputs):
        name = self._names[node.output[0]]
        plan, order = self._layers[name]
        kind, layer = plan[0], plan[1]
        args = [np.asarray(v) for v in inputs if v is not None]
        for i, v in enumerate(args[:2]):
            if v.dtype.kind != "f":
                raise ValueError(f"model: node {name!r} ({node.op_type}) has a {v.dtype} input; the "
                                 f"override takes float tensors")
        if kind == "conv":
            self._conv_pads(layer, plan[2], args[0])
        if kind == "matmul":
            ops = (args[0], args[1])
        elif kind == "linear":
            ops = (args[0],)
        elif kind == "linear_t":
            ops = (np.swapaxes(args[1], -1, -2),)
        else:
            ops = (args[0],)
        if kind in ("linear", "linear_t") and ops[0].ndim < 1:
            raise ValueError(f"model: node {name!r} ({node.op_type}) has a scalar input")
        if self._mode == "float":
            y = self._float(layer, kind, ops)
        elif self._mode == "calibrate":
            layer.calibrate(*ops)
            y = self._float(layer, kind, ops)
        else:
            y = layer.run(*ops)
        if kind == "linear_t":
            y = np.swapaxes(y, -1, -2)
        if self._record is not None:
            self._record[name] = (y, None if self._mode != "quant" else layer.trace, order, node.op_type,
                                  kind)
        return np.asarray(y, np.float32)

    @staticmethod
    def _float(layer, kind, ops):
        return layer.reference(*ops)

    # -- running ----------------------------------------------------------------
    def check_feeds(self, feeds) -> dict:
        """The feeds checked against the graph's inputs (names, dtypes, ranks and
        fixed dimensions)."""
        if not isinstance(feeds, dict):
            raise TypeError(f"feeds: expected a dict of input arrays, got {type(feeds).__name__}")
        want = {i.name: i for i in self.inputs}
        for k in feeds:
            if k not in want:
                raise ValueError(f"feeds: {k!r} is not an input of the graph; inputs: {list(want)}")
        out = {}
        for name, info in want.items():
            if name not in feeds:
                raise ValueError(f"feeds: missing input {name!r}; inputs: {list(want)}")
            arr = np.asarray(feeds[name])
            tt = info.type.tensor_type
            dt = _NP_OF_ONNX.get(tt.elem_type)
            if dt is not None and arr.dtype != dt:
                if arr.dtype.kind == np.dtype(dt).kind and np.can_cast(arr.dtype, dt):
                    arr = arr.astype(dt)
                else:
                    raise TypeError(f"feeds: {name!r} must be {np.dtype(dt).name}, got {arr.dtype}")
            if tt.HasField("shape"):
                dims = tt.shape.dim
                if arr.ndim != len(dims):
                    raise ValueError(f"feeds: {name!r} must have {len(dims)} dimensions, got shape {arr.shape}")
                for ax, d in enumerate(dims):
                    if d.HasField("dim_value") and d.dim_value != arr.shape[ax]:
                        raise ValueError(f"feeds: {name!r} must have size {d.dim_value} on axis {ax}, "
                                         f"got shape {arr.shape}")
            out[name] = arr
        return out

    def _evaluate(self, feeds, mode, record):
        self._mode = mode
        self._record = {} if record else None
        try:
            res = self._ev.run(None, feeds)
        except ValueError:
            raise
        except Exception as e:
            raise ValueError(f"model: the graph failed to run: {type(e).__name__}: {e}") from None
        finally:
            self._mode = "quant"
        rec, self._record = self._record, None
        return dict(zip(self.output_names, res)), rec

    def calibrate(self, feeds) -> None:
        """Run the float graph on one batch of feeds and record every overridden
        node's inputs and output for static scales."""
        self._evaluate(self.check_feeds(feeds), "calibrate", False)

    def run_float(self, feeds) -> dict:
        """The float32 graph (the overridden nodes in NumPy float32)."""
        return self._evaluate(self.check_feeds(feeds), "float", False)[0]

    def run(self, feeds, *, reference=None):
        """Outputs as the profile's target computes them, and a :class:`GraphTrace`.

        ``reference``: the float run's per-node outputs from an earlier
        ``run`` of the same feeds (the trace needs them for SQNR); computed
        when None."""
        f = self.check_feeds(feeds)
        if reference is None:
            _, reference = self._evaluate(f, "float", True)
        outs, rec = self._evaluate(f, "quant", True)
        trace = GraphTrace()
        for name, (y, tr, order, op_type, kind) in sorted(rec.items(), key=lambda kv: kv[1][2]):
            ref = np.asarray(reference[name][0], np.float64)
            signal = float(np.sum(ref ** 2))
            noise = float(np.sum((ref - np.asarray(y, np.float64)) ** 2))
            q = sqnr_db(ref, y) if ref.size else float("inf")
            trace.nodes[name] = NodeTrace(name, op_type, kind.replace("_t", ""), tr, q, order, signal, noise)
        return outs, trace

    def outputs(self, feeds) -> dict:
        """The outputs as the profile's target computes them, without the float
        run and the trace that :meth:`run` adds (half the work when only the
        outputs matter)."""
        return self._evaluate(self.check_feeds(feeds), "quant", False)[0]

    def reference_outputs(self, feeds):
        """The float run's outputs and per-node records (to share across profiles)."""
        return self._evaluate(self.check_feeds(feeds), "float", True)


def run(model, feeds, profile, *, calibration=None):
    """Run an ONNX graph on a profile: ``(outputs, trace)``.

    Parameters
    ----------
    model : path, bytes or onnx.ModelProto
    feeds : dict of input arrays (by input name)
    profile : AcceleratorProfile or name
    calibration : iterable of feed dicts, optional
        Run once through the float graph to fix static activation scales
        (``profile.activations.calibration``); without it, scales are taken
        from each call's data.

    Returns
    -------
    outputs : dict of arrays by output name
    trace : GraphTrace
        For every overridden node: SQNR against the float run, accumulator
        overflows, clipped inputs, the activation scale and the largest
        ``|x|`` relative to it.
    """
    s = Session(model, profile)
    if calibration is not None:
        if isinstance(calibration, dict):
            raise TypeError("calibration: expected a list (or iterable) of feed dicts, got one dict")
        n = 0
        for cf in calibration:
            s.calibrate(cf)
            n += 1
        if n == 0:
            raise ValueError("calibration: no feeds")
    return s.run(feeds)
