"""PyTorch modules whose forward pass is the target's arithmetic, for
quantization-aware training (QAT).  Needs the ``torch`` extra
(``pip install "fixedpoint[torch]"``); nothing else in the package imports it.

:class:`Linear` and :class:`Conv2d` are drop-in subclasses of ``torch.nn.Linear``
and ``torch.nn.Conv2d``; :func:`emulate` swaps them into a model in place and
:func:`calibrate` fixes their static scales with the profile's calibrators.

Forward
    Bit for bit what :class:`fixedpoint.layers.Linear` /
    :class:`fixedpoint.layers.Conv2d` compute for the profile on the same float
    inputs and weights: the module hands NumPy float32 copies of its input,
    weights and bias to a layer and returns the layer's result.  Nothing of the
    arithmetic is re-implemented here: quantizers, accumulator (overflow
    included), requantization and output rounding are the compiled kernels'.
    The result is float32 (float64 when the input is float64: the values are
    the same), on the input's device.

Backward: the straight-through estimator (STE)
    With ``Q(x)`` the dequantized input codes and ``Q(W)`` the dequantized
    weight codes the layer used, the gradients are those of the float layer
    ``y = Q(x) Q(W) + b`` with every quantizer taken as the identity where its
    input was in range and as a constant where it clipped::

        g_y' = g_y * m_y                      (INT8 outputs: 0 where requantization clipped)
        g_x  = (g_y' Q(W)^T) * m_x            (0 where the activation quantizer clipped x)
        g_W  = (Q(x)^T g_y') * m_W            (0 where the weight quantizer clipped W)
        g_b  = sum of g_y' over the rows

    ``x`` is clipped where ``x / s + z`` lies beyond ``[qmin - 1/2, qmax + 1/2]``
    (integer formats) or ``|x / s|`` beyond the format's largest value (float
    formats): the rule :attr:`fixedpoint.layers.LayerTrace.clipped_inputs`
    counts.  The same rule on ``acc * s_x * s_W / s_y + z_y`` decides ``m_y``.
    Block-scaled operands (MX, NVFP4) are clipped where the element is beyond
    the largest value its block can hold at the block's scale.  Rounding,
    accumulator overflow and float16/bfloat16 output rounding pass gradients
    straight through.  A convolution's gradients are the float convolution's
    at ``Q(x)``, ``Q(W)``; with per-token or block-scaled activations the layer
    quantizes im2col rows, and the input gradient gathers each row's masked
    gradient back onto the pixels it came from.

Learned scales (``learn_scales=True``): LSQ (Esser et al. 2020)
    The static per-tensor activation scale and the weight scales (of the
    profile's granularity) become parameters, initialised by calibration.
    For ``v = s * q(x / s)`` (``q`` the quantizer, codes minus zero point)::

        dv/ds = q(x / s) - x / s   where x is in range,
        dv/ds = q(x / s)           where it clipped (qmin - z or qmax - z),

    and the scale's gradient is ``sum(g_v * dv/ds) / sqrt(N * Qp)`` with ``Qp``
    the largest positive code (``max_value`` for float formats), ``N`` the
    number of weights sharing the scale (a channel's ``K``, a group's size, or
    all weights) or, for activations, the features of one sample
    (``x.numel() / x.shape[0]``).  The scales are rounded to the profile's
    ``scale_format`` before use (rounding passes the gradient straight
    through); a scale below the smallest normal value of that format is used
    as that value.  Zero points stay as calibrated.  Scales computed per call
    (per token, ``static = false``, MX and NVFP4 blocks) are not learned.

Examples
--------
>>> import torch, fixedpoint.torch as fpt
>>> from fixedpoint import layers
>>> torch.manual_seed(0) and None
>>> model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
>>> fpt.emulate(model, "edge-int4")[0]
Linear(in_features=16, out_features=8, bias=True, profile=edge-int4)
>>> x = torch.randn(32, 16)
>>> fpt.calibrate(model, [x]) is model
True
>>> y = model(x)
>>> y.sum().backward()                     # the straight-through estimator
>>> fc = layers.Linear("edge-int4", model[0].weight.detach().numpy().T, model[0].bias.detach().numpy())
>>> fc.set_input_quantization(*model[0].static_input())
>>> bool((model[0](x).detach().numpy() == fc.run(x.numpy())).all())
True
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .blockscaled import MXTensor, from_e8m0, mx_quantize, nvfp4_quantize
from .formats import E2M1, FloatFormat
from .fp8 import from_fp8
from .layers import Conv2d as LayerConv2d
from .layers import Linear as LayerLinear
from .layers import round_to_float_type
from .profiles import AcceleratorProfile, get
from .quantization import expand_param, quantize

__all__ = ["Linear", "Conv2d", "emulate", "calibrate", "EmulatedLayer"]

#: Smallest normal value of each scale format: learned scales are used as at least this.
_MIN_SCALE = {"float32": 2.0 ** -126, "float16": 2.0 ** -14, "bfloat16": 2.0 ** -126}
_WEIGHT_AXIS = {"tensor": None, "channel": 1, "group": 0}


def _as_profile(profile):
    if isinstance(profile, AcceleratorProfile):
        return profile
    if isinstance(profile, str):
        return get(profile)
    raise TypeError(f"profile: expected an AcceleratorProfile or a profile name, got "
                    f"{type(profile).__name__}")


def _bool(v, name):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {v!r}")
    return bool(v)


def _numpy32(t: torch.Tensor, name: str) -> np.ndarray:
    """A float32 NumPy copy of a float tensor (a copy: the backward pass keeps it,
    and the caller may change the tensor in place meanwhile)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a float tensor, got {t.dtype}")
    return t.detach().to("cpu", torch.float32, copy=True).numpy()


def _qmax(fmt) -> float:
    """The largest positive code value (LSQ's Qp)."""
    return float(fmt.max_value) if isinstance(fmt, FloatFormat) else float(fmt.max)


def _inside(x: np.ndarray, q) -> np.ndarray:
    """True where ``x`` was in range for the quantization ``q`` (a QTensor of
    ``x``'s shape): the rule of ``LayerTrace.clipped_inputs``."""
    s = expand_param(q.scale, q.shape, q.axis, q.group_size).astype(np.float32)
    f = q.fmt
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        v = x.astype(np.float32, copy=False) / s
        if isinstance(f, FloatFormat):
            return ~(np.abs(v) > f.max_value)
        v = v + expand_param(q.zero_point, q.shape, q.axis, q.group_size).astype(np.float32)
        return ~((v > f.max + 0.5) | (v < f.min - 0.5))


def _block_inside(x: np.ndarray, t) -> np.ndarray:
    """True where ``x`` was within the largest magnitude its block can hold in the
    MX or NVFP4 tensor ``t`` of ``x``'s shape (the rule of the layers' clipped
    count: beyond it, the element was clamped)."""
    f = t.elem if isinstance(t, MXTensor) else E2M1
    top = f.max_value if isinstance(f, FloatFormat) else max(-f.min, f.max) / 64
    if isinstance(t, MXTensor):
        sc = from_e8m0(t.scales, dtype=np.float64)
    else:
        sc = from_fp8(t.scales, dtype=np.float64) * float(t.tensor_scale)
    sc = np.repeat(np.moveaxis(sc, t.axis, -1), t.block, axis=-1)[..., :t.shape[t.axis]]
    with np.errstate(invalid="ignore", over="ignore"):
        beyond = np.abs(np.moveaxis(x.astype(np.float64), t.axis, -1)) > top * sc
    return np.moveaxis(~beyond, -1, t.axis)


def _block_quantize(spec, x: np.ndarray, axis: int):
    """MX or NVFP4 quantization of ``x`` along ``axis`` as the profile's spec says
    (the quantization the layers apply to block-scaled operands)."""
    if spec.scale_format == "e8m0":
        return mx_quantize(x, spec.format, block=spec.group_size, axis=axis, scale_rule=spec.scale_rule,
                           rounding=spec.rounding)
    return nvfp4_quantize(x, axis=axis, arithmetic=spec.scale_rule)


def _effective_scale(s: torch.Tensor, scale_format: str) -> np.ndarray:
    """A learned scale as the target stores it (float32 values)."""
    v = np.maximum(s.detach().to("cpu", torch.float64).numpy(), _MIN_SCALE[scale_format])
    return round_to_float_type(v.astype(np.float32), scale_format, "saturate").astype(np.float32)


class _Saved:
    """What the backward pass needs from one forward (NumPy float32, the
    layer's layouts: rows x K and K x N for a linear layer; NCHW, or im2col
    rows for per-token and block-scaled activations, and K x N for a
    convolution)."""

    __slots__ = ("x", "xq", "mx", "w", "wq", "mw", "my", "x_scale", "wqt", "xshape")


class _STE(torch.autograd.Function):
    """The layer's forward (NumPy, compiled kernels) and the straight-through
    backward of :class:`EmulatedLayer`."""

    @staticmethod
    def forward(ctx, x, weight, bias, s_in, s_w, module):
        y, saved = module._emulate(x)
        ctx.module, ctx.saved = module, saved
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.devices = (x.device, weight.device)
        ctx.nfeat = x.numel() // x.shape[0] if x.ndim > 1 and x.shape[0] else max(x.numel(), 1)
        return y

    @staticmethod
    def backward(ctx, gy):
        return ctx.module._backward(ctx, gy) + (None,)


class EmulatedLayer:
    """The base of :class:`Linear` and :class:`Conv2d`: the profile, the static
    scales, calibration and the straight-through backward.

    Buffers: ``input_scale`` / ``input_zero_point`` (NaN scale: computed per
    call), ``output_scale`` / ``output_zero_point`` (INT8 outputs; NaN: per
    call).  With ``learn_scales``: parameters ``input_scale`` (static
    per-tensor activations) and ``weight_scale`` (the profile's weight
    granularity, K x N convention: ``()``, ``(N,)`` or ``(groups, N)``; not
    for block-scaled MX/NVFP4 weights, whose scales follow from each block),
    and the buffer ``weight_zero_point``.
    """

    profile: AcceleratorProfile
    learn_scales: bool

    # -- set-up -------------------------------------------------------------------
    def _setup(self, profile, learn_scales, k, n):
        p = _as_profile(profile)
        self.profile = p
        self.learn_scales = _bool(learn_scales, "learn_scales")
        self._calibrating = None
        self._last_calibration_input = None
        a, w = p.activations, p.weights
        nan = torch.tensor(float("nan"))
        if self.learn_scales and a is not None and a.static and a.granularity == "tensor":
            self.input_scale = nn.Parameter(nan.clone())
        else:
            self.register_buffer("input_scale", nan.clone())
        self.register_buffer("input_zero_point", torch.zeros((), dtype=torch.int32))
        self.register_buffer("output_scale", nan.clone())
        self.register_buffer("output_zero_point", torch.zeros((), dtype=torch.int32))
        if self.learn_scales and w is not None and not w.block_scaled:
            if w.granularity == "tensor":
                shape = ()
            elif w.granularity == "channel":
                shape = (n,)
            else:
                shape = (-(-k // w.group_size), n)
            self.weight_scale = nn.Parameter(torch.full(shape, float("nan")))
            self.register_buffer("weight_zero_point", torch.zeros(shape, dtype=torch.int32))
        else:
            self.weight_scale = None
            self.weight_zero_point = None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", profile={self.profile.name}" + (
            ", learn_scales=True" if self.learn_scales else "")

    # -- static scales ---------------------------------------------------------------
    @property
    def calibrated(self) -> bool:
        """Whether the input scale is static (set by :func:`calibrate` or by hand)."""
        return not bool(torch.isnan(self.input_scale).item())

    def static_input(self):
        """The static input ``(scale, zero_point)`` as the target uses it (a
        learned scale rounded to the scale format), or None when the scales
        are computed per call."""
        if not self.calibrated:
            return None
        if isinstance(self.input_scale, nn.Parameter):
            s = _effective_scale(self.input_scale, self.profile.activations.scale_format)
        else:
            s = np.float32(self.input_scale.item())
        return np.float32(s), int(self.input_zero_point.item())

    def set_input_quantization(self, scale, zero_point=0) -> None:
        """Fix the per-tensor input scale and zero point (as
        :meth:`fixedpoint.layers.Linear.set_input_quantization`)."""
        a = self.profile.activations
        if a is None or a.granularity != "tensor" or not a.static:
            raise ValueError(f"scale: {self.profile.name} has no static per-tensor activation scales")
        s = float(scale)
        if not math.isfinite(s) or s < 0:
            raise ValueError(f"scale: expected a finite, non-negative float, got {scale!r}")
        if isinstance(zero_point, bool) or not isinstance(zero_point, (int, np.integer)):
            raise TypeError(f"zero_point: expected an int, got {zero_point!r}")
        with torch.no_grad():
            self.input_scale.fill_(float(np.float32(s)))
            self.input_zero_point.fill_(int(zero_point))

    def set_output_quantization(self, scale, zero_point=0) -> None:
        """Fix the INT8 output scale and zero point (for example the next
        layer's input quantization, for a fused ReLU)."""
        if self.profile.output.type != "int8":
            raise ValueError(f"scale: {self.profile.name} does not output INT8")
        s = float(scale)
        if not math.isfinite(s) or s < 0:
            raise ValueError(f"scale: expected a finite, non-negative float, got {scale!r}")
        if isinstance(zero_point, bool) or not isinstance(zero_point, (int, np.integer)) \
                or not -128 <= zero_point <= 127:
            raise ValueError(f"zero_point: expected an int in [-128, 127], got {zero_point!r}")
        with torch.no_grad():
            self.output_scale.fill_(float(np.float32(s)))
            self.output_zero_point.fill_(int(zero_point))

    # -- calibration -----------------------------------------------------------------
    def begin_calibration(self) -> None:
        """From now on, forward calls return the float result and record their
        inputs (and float outputs) with the profile's calibrators, through a
        :mod:`fixedpoint.layers` layer's ``calibrate``; :meth:`end_calibration`
        fixes the scales.  :func:`calibrate` does both for a whole model."""
        w, b = self._float_params()
        self._calibrating = self._layer(w, b, None)
        self._last_calibration_input = None

    def end_calibration(self) -> None:
        """Fix the static scales the layer calibrated: the input scale (when the
        profile's are static per tensor), the INT8 output scale, and with
        ``learn_scales`` the weight scales (as the profile quantizes the
        weights).  A layer that saw no data keeps per-call scales."""
        layer, self._calibrating = self._calibrating, None
        X, self._last_calibration_input = self._last_calibration_input, None
        if layer is None:
            raise ValueError("end_calibration: begin_calibration was not called")
        if self.profile.is_float or X is None:
            return
        st = layer.static_input()
        with torch.no_grad():
            if st is not None:
                self.input_scale.fill_(float(st[0]))
                self.input_zero_point.fill_(int(st[1]))
            if self.profile.output.type == "int8":
                # the calibrated output scale is the one a run uses: read it from the
                # trace of a run on the last calibration batch
                layer.run(X)
                self.output_scale.fill_(float(layer.trace.output_scale))
                self.output_zero_point.fill_(int(layer.trace.output_zero_point))
            if self.weight_scale is not None:
                wq = layer.wq
                self.weight_scale.copy_(torch.from_numpy(
                    np.asarray(wq.scale, np.float32).reshape(self.weight_scale.shape)))
                self.weight_zero_point.copy_(torch.from_numpy(
                    np.asarray(wq.zero_point).astype(np.int32).reshape(self.weight_zero_point.shape)))

    # -- forward ---------------------------------------------------------------------
    def forward(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if self._calibrating is not None:
            X = _numpy32(x, "x")
            self._check_input(X)
            self._calibrating.calibrate(X)
            self._last_calibration_input = X
            y = torch.from_numpy(np.ascontiguousarray(self._calibrating.reference(X), np.float32))
            return (y.double() if x.dtype == torch.float64 else y).to(x.device)
        if self.weight_scale is not None and bool(torch.isnan(self.weight_scale).any()):
            raise ValueError(f"{type(self).__name__}: learn_scales needs calibrated scales; run "
                             f"fixedpoint.torch.calibrate(model, data) first")
        s_in = self.input_scale if isinstance(self.input_scale, nn.Parameter) else None
        return _STE.apply(x, self.weight, self.bias, s_in, self.weight_scale, self)

    def _float_params(self):
        w = _numpy32(self.weight, "weight")
        return w, None if self.bias is None else _numpy32(self.bias, "bias")

    def _weights_with_scale(self, W):
        """The K x N weights quantized at the learned scales (the profile's spec)."""
        spec = self.profile.weights
        gs = spec.group_size if spec.granularity == "group" else None
        K, N = W.shape
        if gs is not None and K % gs:
            W = np.concatenate([W, np.zeros((gs - K % gs, N), W.dtype)])
        sc = _effective_scale(self.weight_scale, spec.scale_format)
        zp = None if spec.symmetric else self.weight_zero_point.cpu().numpy()
        return quantize(W, spec.format, scale=sc, zero_point=zp, axis=_WEIGHT_AXIS[spec.granularity],
                        group_size=gs, narrow_range=spec.narrow_range, rounding=spec.rounding,
                        overflow=spec.overflow)

    def _emulate(self, x):
        """The layer's result on ``x`` and what the backward pass needs."""
        p = self.profile
        X = _numpy32(x, "x")
        self._check_input(X)
        w, b = self._float_params()
        W = self._weight_kn(w)
        wq = None if self.weight_scale is None else self._weights_with_scale(W)
        layer = self._layer(w, b, wq)
        st = self.static_input()
        if st is not None:
            layer.set_input_quantization(*st)
        if p.output.type == "int8" and not bool(torch.isnan(self.output_scale).item()):
            layer.set_output_quantization(float(self.output_scale.item()),
                                          int(self.output_zero_point.item()))
        y = layer.run(X)
        out = torch.from_numpy(np.ascontiguousarray(y, np.float32))
        if x.dtype == torch.float64:
            out = out.double()
        return out.to(x.device), self._saved(layer.trace, X, W)

    def _saved(self, tr, X, W):
        s = _Saved()
        s.xshape = X.shape
        s.x, s.w = self._x_rows(X), W
        s.my = s.mx = s.mw = s.x_scale = None
        if self.profile.is_float:
            s.xq, s.wq = s.x, W
            s.wqt = None
            return s
        K = W.shape[0]
        if self.profile.activations.block_scaled:      # MX / NVFP4: per block, per call
            s.xq, s.mx = self._block_rows(s.x, tr)
            s.wq = np.ascontiguousarray(tr.w.dequantize())
            s.mw = _block_inside(W, tr.w)
            s.wqt = None
            return s
        s.xq = tr.x.dequantize()
        s.mx = _inside(s.x, tr.x)
        Wp = W if tr.w.shape[0] == K else np.concatenate(
            [W, np.zeros((tr.w.shape[0] - K, W.shape[1]), W.dtype)])
        s.wq = np.ascontiguousarray(tr.w.dequantize()[:K])
        s.mw = _inside(Wp, tr.w)[:K]
        s.wqt = tr.w
        s.x_scale = np.asarray(tr.x_scale, np.float32)
        if tr.output_codes is not None:
            s.my = self._output_mask(tr)
        return s

    def _output_mask(self, tr):
        """False where the INT8 requantization clipped (rows x N)."""
        codes = tr.output_codes
        so, zo = float(tr.output_scale), int(tr.output_zero_point)
        if so == 0:                   # a constant output: nothing flows back
            return np.zeros(codes.shape, bool)
        sw = np.asarray(tr.w.scale, np.float32)
        sw = sw.reshape(1, -1) if sw.ndim else sw
        s = (self._x_scale_rows(tr, codes.shape) * sw).astype(np.float32).astype(np.float64)
        real = tr.accumulator.astype(np.float64) * s / so + zo
        return ~(((codes == 127) & (real > 127.5)) | ((codes == -128) & (real < -128.5)))

    # -- backward --------------------------------------------------------------------
    def _backward(self, ctx, gy):
        s = ctx.saved
        need_x, need_w, need_b, need_si, need_sw = ctx.needs_input_grad[:5]
        G = self._grad_rows(gy.detach().to("cpu", torch.float32))
        if s.my is not None:
            G = G * torch.from_numpy(s.my)
        gx_q, gw_q = self._float_grads(s, G, need_x or need_si, need_w or need_sw)
        gx = gw = gb = gsi = gsw = None
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        if need_x:
            g = gx_q if s.mx is None else gx_q * torch.from_numpy(s.mx)
            gx = self._grad_input(g, s).to(ctx.devices[0], x_dtype)
        if need_w:
            g = gw_q if s.mw is None else gw_q * torch.from_numpy(s.mw)
            gw = self._weight_from_kn(g).to(ctx.devices[1], w_dtype)
        if need_b:
            gb = G.sum(dim=0).to(ctx.devices[1], b_dtype)
        if need_si:
            gsi = self._lsq_input_grad(s, gx_q, ctx.nfeat).to(self.input_scale.device,
                                                              self.input_scale.dtype)
        if need_sw:
            gsw = self._lsq_weight_grad(s, gw_q).to(self.weight_scale.device, self.weight_scale.dtype)
        return gx, gw, gb, gsi, gsw

    def _lsq_input_grad(self, s, gx_q, nfeat):
        """LSQ: sum(g * dv/ds) / sqrt(N_features * Qp) for the per-tensor input scale."""
        sc = float(s.x_scale)
        if sc == 0:
            return torch.zeros(())
        x = torch.from_numpy(s.x).double()
        xq = torch.from_numpy(s.xq).double()
        dv = (xq - torch.from_numpy(s.mx).double() * x) / sc
        qp = _qmax(self.profile.activations.element_format)
        return (gx_q.double() * dv).sum() / math.sqrt(nfeat * qp)

    def _lsq_weight_grad(self, s, gw_q):
        """LSQ: per scale, sum(g * dv/ds) / sqrt(N * Qp), N the weights sharing it."""
        spec = self.profile.weights
        q = s.wqt
        K, N = s.w.shape
        Kp = q.shape[0]
        sfull = np.broadcast_to(expand_param(q.scale, q.shape, q.axis, q.group_size),
                                q.shape)[:K].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            dv = np.where(sfull > 0, (s.wq.astype(np.float64) - s.mw * s.w.astype(np.float64)) / sfull,
                          0.0)
        prod = gw_q.double() * torch.from_numpy(dv)
        qp = _qmax(spec.element_format)
        if spec.granularity == "tensor":
            return prod.sum() / math.sqrt(K * N * qp)
        if spec.granularity == "channel":
            return prod.sum(dim=0) / math.sqrt(K * qp)
        gs = spec.group_size
        full = torch.zeros((Kp, N), dtype=torch.float64)
        full[:K] = prod
        return full.reshape(Kp // gs, gs, N).sum(dim=1) / math.sqrt(gs * qp)


# ---------------------------------------------------------------------------

class Linear(EmulatedLayer, nn.Linear):
    """``torch.nn.Linear`` computed as ``profile``'s target computes it.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    profile : AcceleratorProfile or str, keyword-only
    learn_scales : bool, keyword-only
        LSQ: the static activation scale and the weight scales become
        parameters (initialised by :func:`calibrate`).
    device, dtype : as ``torch.nn.Linear``

    The forward pass is :meth:`fixedpoint.layers.Linear.run` with the module's
    weight (transposed to K x N), bias and static scales, on inputs of shape
    ``(..., in_features)``.  The module documentation gives the backward.

    Examples
    --------
    >>> import torch, fixedpoint.torch as fpt
    >>> fc = fpt.Linear(2, 1, bias=False, profile="ane-int8")
    >>> with torch.no_grad():
    ...     _ = fc.weight.copy_(torch.tensor([[1.0, -0.5]]))
    >>> x = torch.tensor([[0.25, 1.0]], requires_grad=True)
    >>> y = fc(x)     # codes [32, 127] . [127, -64] = -4064, requantized to INT8 at this call's range
    >>> float(y.detach()), float((x @ fc.weight.T).detach())
    (-0.25196850299835205, -0.25)
    >>> y.backward(); x.grad.tolist()          # Q(W): the dequantized weights
    [[1.0, -0.5039370059967041]]
    """

    def __init__(self, in_features, out_features, bias=True, *, profile, learn_scales=False,
                 device=None, dtype=None):
        nn.Linear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        self._setup(profile, learn_scales, in_features, out_features)
        if device is not None and torch.device(device).type != "meta":
            self.to(device)

    @classmethod
    def from_float(cls, module: nn.Linear, profile, *, learn_scales=False) -> "Linear":
        """The emulated layer of ``module``, sharing its weight and bias parameters."""
        if not isinstance(module, nn.Linear):
            raise TypeError(f"module: expected a torch.nn.Linear, got {type(module).__name__}")
        m = cls(module.in_features, module.out_features, module.bias is not None, profile=profile,
                learn_scales=learn_scales, device="meta")
        m.weight = module.weight
        m.bias = module.bias
        return m.to(module.weight.device)

    def _check_input(self, X):
        if X.ndim < 1 or X.shape[-1] != self.in_features:
            raise ValueError(f"x: expected shape (..., {self.in_features}), got {tuple(X.shape)}")

    def _weight_kn(self, w):
        return np.ascontiguousarray(w.T)

    def _weight_from_kn(self, g):
        return g.T.contiguous()

    def _layer(self, w, b, wq):
        return LayerLinear(self.profile, np.ascontiguousarray(w.T), b, weights=wq)

    def _x_rows(self, X):
        return X.reshape(-1, self.in_features)

    def _x_scale_rows(self, tr, shape):
        sx = np.asarray(tr.x_scale, np.float32)
        return sx.reshape(-1, 1) if sx.ndim else sx

    def _block_rows(self, rows, tr):
        return tr.x.dequantize(), _block_inside(rows, tr.x)

    def _grad_rows(self, g):
        return g.reshape(-1, self.out_features)

    def _float_grads(self, s, G, need_x, need_w):
        gx = G @ torch.from_numpy(s.wq).T if need_x else None
        gw = torch.from_numpy(s.xq).T @ G if need_w else None
        return gx, gw

    def _grad_input(self, g, s):
        return g.reshape(s.xshape)


def _conv_pads(padding, kernel_size, dilation):
    """torch's ``padding`` as (top, left, bottom, right)."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        tot = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        return (tot[0] // 2, tot[1] // 2, tot[0] - tot[0] // 2, tot[1] - tot[1] // 2)
    ph, pw = padding
    return (ph, pw, ph, pw)


class Conv2d(EmulatedLayer, nn.Conv2d):
    """``torch.nn.Conv2d`` computed as ``profile``'s target computes it.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias :
        as ``torch.nn.Conv2d`` (``padding_mode`` must be ``"zeros"``).
    profile : AcceleratorProfile or str, keyword-only
    learn_scales : bool, keyword-only
        LSQ (see :class:`Linear`).
    device, dtype : as ``torch.nn.Conv2d``

    The forward pass is :meth:`fixedpoint.layers.Conv2d.run` (NCHW, im2col)
    with the module's weight, bias, stride, padding, dilation and groups.

    Examples
    --------
    >>> import torch, fixedpoint.torch as fpt
    >>> conv = fpt.Conv2d(1, 1, 2, bias=False, profile="h100-int8")
    >>> with torch.no_grad():
    ...     _ = conv.weight.fill_(0.5)
    >>> x = torch.arange(9.0).reshape(1, 1, 3, 3)
    >>> y = conv(x)      # x codes round(x * 127/8), weight codes 127; bfloat16 output
    >>> y.tolist()       # (0 + 16 + 48 + 64) * 127 * 8/127 * 0.5/127 = 4.0315 -> 4.03125
    [[[[4.03125, 6.03125], [10.0, 12.0]]]]
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", *, profile, learn_scales=False,
                 device=None, dtype=None):
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode: the emulated convolution pads with zeros, got "
                             f"{padding_mode!r}")
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                           groups, bias, padding_mode, device=device, dtype=dtype)
        kh, kw = self.kernel_size
        self._setup(profile, learn_scales, in_channels // groups * kh * kw, out_channels)
        if device is not None and torch.device(device).type != "meta":
            self.to(device)

    @classmethod
    def from_float(cls, module: nn.Conv2d, profile, *, learn_scales=False) -> "Conv2d":
        """The emulated layer of ``module``, sharing its weight and bias parameters."""
        if not isinstance(module, nn.Conv2d):
            raise TypeError(f"module: expected a torch.nn.Conv2d, got {type(module).__name__}")
        m = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                module.padding, module.dilation, module.groups, module.bias is not None,
                module.padding_mode, profile=profile, learn_scales=learn_scales, device="meta")
        m.weight = module.weight
        m.bias = module.bias
        return m.to(module.weight.device)

    @property
    def pads(self):
        """The zero padding as (top, left, bottom, right)."""
        return _conv_pads(self.padding, self.kernel_size, self.dilation)

    def _check_input(self, X):
        if X.ndim != 4 or X.shape[1] != self.in_channels:
            raise ValueError(f"x: expected shape (N, {self.in_channels}, H, W), got {tuple(X.shape)}")

    def _weight_kn(self, w):
        return np.ascontiguousarray(w.reshape(self.out_channels, -1).T)

    def _weight_from_kn(self, g):
        return g.T.reshape(self.weight.shape).contiguous()

    def _layer(self, w, b, wq):
        layer = LayerConv2d(self.profile, w, b, stride=self.stride, padding=self.pads,
                            dilation=self.dilation, groups=self.groups)
        if wq is not None:
            layer.wq = wq           # weights quantized at the learned scales
        return layer

    @property
    def _per_token(self):
        """The layer quantizes im2col rows (per-token or block-scaled activations)."""
        a = self.profile.activations
        return a is not None and (a.granularity == "token" or a.block_scaled)

    def _block_rows(self, rows, tr):
        """Each convolution group's im2col rows quantized as the layer quantizes them
        (one MX/NVFP4 tensor per group; the trace keeps the last group's only)."""
        G = self.groups
        r3 = rows.reshape(-1, G, rows.shape[-1])
        xq, mx = np.empty_like(r3), np.empty(r3.shape, bool)
        for g in range(G):
            rg = np.ascontiguousarray(r3[:, g])
            t = tr.x if g == G - 1 else _block_quantize(self.profile.activations, rg, 1)
            xq[:, g], mx[:, g] = t.dequantize(), _block_inside(rg, t)
        return xq.reshape(rows.shape), mx.reshape(rows.shape)

    def _x_rows(self, X):
        if not self._per_token:
            return X
        # the im2col rows the layer quantizes per token: (N*OH*OW*groups, C/groups*kh*kw)
        t, l, b, r = self.pads
        cols = F.unfold(F.pad(torch.from_numpy(X), (l, r, t, b)), self.kernel_size,
                        dilation=self.dilation, stride=self.stride)          # (N, C*kh*kw, L)
        return np.ascontiguousarray(cols.transpose(1, 2).numpy()).reshape(-1, cols.shape[1] // self.groups)

    def _x_scale_rows(self, tr, shape):
        sx = np.asarray(tr.x_scale, np.float32)
        if sx.ndim == 3:          # per token: (rows, groups, 1)
            return np.repeat(sx[:, :, 0], self.out_channels // self.groups, axis=1)
        return sx

    def _grad_rows(self, g):
        return g.permute(0, 2, 3, 1).reshape(-1, self.out_channels)

    def _float_grads(self, s, G, need_x, need_w):
        t, l, b, r = self.pads
        O = self.out_channels
        if not self._per_token:
            N, _, H, W = s.xshape
            OH, OW = self._out_hw(H, W)
            Gn = G.reshape(N, OH, OW, O).permute(0, 3, 1, 2)
            xd = torch.from_numpy(s.xq).clone().requires_grad_(need_x)
            wd = torch.from_numpy(np.ascontiguousarray(s.wq.T)).reshape(self.weight.shape).clone() \
                .requires_grad_(need_w)
            with torch.enable_grad():
                y = F.conv2d(F.pad(xd, (l, r, t, b)), wd, None, self.stride, 0, self.dilation, self.groups)
                wanted = [v for v, n in ((xd, need_x), (wd, need_w)) if n]
                grads = list(torch.autograd.grad(y, wanted, Gn))
            gx = grads.pop(0) if need_x else None
            gw = grads.pop(0).reshape(O, -1).T.contiguous() if need_w else None
            return gx, gw
        # per token: the product of the dequantized im2col rows, one group at a time
        Gr, Og = self.groups, O // self.groups
        cols = torch.from_numpy(s.xq).reshape(-1, Gr, s.xq.shape[-1])
        Wq = torch.from_numpy(s.wq)
        gx = torch.empty_like(cols) if need_x else None
        gw = torch.empty_like(Wq) if need_w else None
        for g in range(Gr):
            Gg = G[:, g * Og:(g + 1) * Og]
            if need_x:
                gx[:, g] = Gg @ Wq[:, g * Og:(g + 1) * Og].T
            if need_w:
                gw[:, g * Og:(g + 1) * Og] = cols[:, g].T @ Gg
        return (None if gx is None else gx.reshape(s.xq.shape)), gw

    def _out_hw(self, H, W):
        t, l, b, r = self.pads
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        return ((H + t + b - (kh - 1) * dh - 1) // sh + 1, (W + l + r - (kw - 1) * dw - 1) // sw + 1)

    def _grad_input(self, g, s):
        if not self._per_token:
            return g
        N, C, H, W = s.xshape
        t, l, b, r = self.pads
        cols = g.reshape(N, -1, C * self.kernel_size[0] * self.kernel_size[1]).transpose(1, 2)
        full = F.fold(cols, (H + t + b, W + l + r), self.kernel_size, dilation=self.dilation,
                      stride=self.stride)
        return full[:, :, t:t + H, l:l + W]


# ---------------------------------------------------------------------------

def emulate(model: nn.Module, profile, *, learn_scales: bool = False) -> nn.Module:
    """Swap every ``torch.nn.Linear`` and ``torch.nn.Conv2d`` of ``model`` (in
    place, recursively) for :class:`Linear` / :class:`Conv2d` on ``profile``,
    sharing their parameters; returns ``model``.  Layers already emulated are
    converted to the new profile (their static scales are dropped).

    Examples
    --------
    >>> import torch, fixedpoint.torch as fpt
    >>> m = fpt.emulate(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(),
    ...                                     torch.nn.LazyLinear(3)), "h100-fp8")
    Traceback (most recent call last):
    ...
    ValueError: model: layer '2' is a lazy module; run the model once before emulate
    >>> m = fpt.emulate(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()), "h100-fp8")
    >>> type(m[0]).__name__, m[0].profile.name
    ('Conv2d', 'h100-fp8')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    p = _as_profile(profile)
    _bool(learn_scales, "learn_scales")
    if isinstance(model, (nn.Linear, nn.Conv2d)):
        raise ValueError("model: a single layer cannot be swapped in place; use "
                         "fixedpoint.torch.Linear.from_float / Conv2d.from_float")
    _swap(model, p, learn_scales, "")
    return model


def _swap(module, p, learn_scales, prefix):
    for name, child in list(module.named_children()):
        path = prefix + name
        if isinstance(child, nn.modules.lazy.LazyModuleMixin) and child.has_uninitialized_params():
            raise ValueError(f"model: layer {path!r} is a lazy module; run the model once before emulate")
        if isinstance(child, nn.Linear):
            setattr(module, name, Linear.from_float(child, p, learn_scales=learn_scales))
        elif isinstance(child, nn.Conv2d):
            if child.padding_mode != "zeros":
                raise ValueError(f"model: layer {path!r} pads with {child.padding_mode!r}; the "
                                 f"emulated convolution pads with zeros")
            setattr(module, name, Conv2d.from_float(child, p, learn_scales=learn_scales))
        else:
            _swap(child, p, learn_scales, path + ".")


def calibrate(model: nn.Module, data, *, forward=None) -> nn.Module:
    """Fix the static scales of every emulated layer of ``model`` with the
    profile's calibrators: run the model on each batch of ``data`` (in float:
    every emulated layer returns its float result and records its inputs),
    then fix the scales (:meth:`EmulatedLayer.end_calibration`).  Returns
    ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        With layers from :func:`emulate`.
    data : iterable
        Batches: tensors, or whatever ``forward`` takes.
    forward : callable, optional
        ``forward(model, batch)``; default ``model(batch)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if forward is not None and not callable(forward):
        raise TypeError(f"forward: expected a callable, got {type(forward).__name__}")
    layers = [m for m in model.modules() if isinstance(m, EmulatedLayer)]
    if not layers:
        raise ValueError("model: has no emulated layers; call fixedpoint.torch.emulate(model, profile) "
                         "first")
    for m in layers:
        m.begin_calibration()
    try:
        n = 0
        with torch.no_grad():
            for batch in data:
                model(batch) if forward is None else forward(model, batch)
                n += 1
        if n == 0:
            raise ValueError("data: no calibration batches")
        for m in layers:
            m.end_calibration()
    finally:
        for m in layers:
            m._calibrating = None
            m._last_calibration_input = None
    return model
