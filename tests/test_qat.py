"""Quantization-aware training: fixedpoint.torch's modules compute, bit for bit,
what the profile's layers compute; their gradients are the straight-through
estimator (and LSQ) derived here by hand; the study's QAT is deterministic,
reproduces PTQ with no training, and recovers what PTQ loses at 2 bits."""
import dataclasses
import doctest
import json
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from extras import need

torch = need("torch", 'pip install "fixedpoint[torch]"  (torch==2.13.0, a CPU build)')
ml_dtypes = need("ml_dtypes", "pip install ml_dtypes")

import fixedpoint.torch as fpt  # noqa: E402
from fixedpoint import layers, profiles, qat, study  # noqa: E402
from fixedpoint.formats import FloatFormat  # noqa: E402

BUILTIN = list(profiles.BUILTIN_NAMES)
QUANTIZED = [n for n in BUILTIN if not profiles.get(n).is_float]
BLOCK_SCALED = [n for n in QUANTIZED if profiles.get(n).activations.block_scaled]
SCALED = [n for n in QUANTIZED if n not in BLOCK_SCALED]       # one scale per tensor/channel/group
STATIC = [n for n in SCALED if profiles.get(n).activations.static]
DYNAMIC = [n for n in SCALED if not profiles.get(n).activations.static]   # scales from each call
CWD = tempfile.gettempdir()


def _narrow_accumulator(p):
    """The profile with an accumulator narrow enough to overflow on the test layers."""
    bits = 9 if p.weights.bits <= 2 else 12
    return dataclasses.replace(p, name=f"{p.name}-acc{bits}",
                               accumulator=dataclasses.replace(p.accumulator, bits=bits))


def _variants():
    out = []
    for n in BUILTIN:
        p = profiles.get(n)
        out.append(pytest.param(p, id=n))
        if not p.is_float and not isinstance(p.weights.format, FloatFormat):
            v = _narrow_accumulator(p)
            out.append(pytest.param(v, id=v.name))
    return out


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def _set(module, w, b=None):
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.asarray(w, np.float32)))
        if b is not None:
            module.bias.copy_(torch.from_numpy(np.asarray(b, np.float32)))


# ---------------------------------------------------------------------------
# Forward: bit for bit the layers

@pytest.mark.parametrize("p", _variants())
def test_linear_forward_is_the_layer(p, rng):
    K, N = 40, 12
    overflow_variant = "-acc" in p.name
    w = rng.standard_normal((N, K)).astype(np.float32)
    b = (rng.standard_normal(N) * 0.1).astype(np.float32)
    xc = rng.standard_normal((64, K)).astype(np.float32)
    xe = (3 * rng.standard_normal((5, 7, K))).astype(np.float32)        # beyond the calibrated range
    m = torch.nn.Sequential(torch.nn.Linear(K, N))
    _set(m[0], w, b)
    fpt.emulate(m, p)
    fpt.calibrate(m, [torch.from_numpy(xc[:32]), torch.from_numpy(xc[32:])])
    y = m(torch.from_numpy(xe))
    assert y.dtype == torch.float32 and y.shape == (5, 7, N)
    ref = layers.Linear(p, np.ascontiguousarray(w.T), b)
    ref.calibrate(xc[:32])
    ref.calibrate(xc[32:])
    want = ref.run(xe)
    assert np.array_equal(_bits(y.detach().numpy()), _bits(want))
    tr = ref.trace
    if not p.is_float and p.activations.static:        # static scales: the inputs beyond clip
        assert tr.clipped_inputs > 0
        if overflow_variant:
            assert tr.overflow_count > 0
    # uncalibrated: scales from each call, as the layer without calibration
    m2 = fpt.emulate(torch.nn.Sequential(torch.nn.Linear(K, N)), p)
    _set(m2[0], w, b)
    y2 = m2(torch.from_numpy(xe)).detach().numpy()
    assert np.array_equal(_bits(y2), _bits(layers.Linear(p, np.ascontiguousarray(w.T), b).run(xe)))


CONVS = [dict(stride=2, padding=1, groups=2), dict(stride=1, padding=2, dilation=2, groups=1),
         dict(stride=1, padding=1, groups=8)]          # depthwise (8 channels)


@pytest.mark.parametrize("cfg", CONVS, ids=["grouped-strided", "dilated", "depthwise"])
@pytest.mark.parametrize("p", _variants())
def test_conv2d_forward_is_the_layer(p, cfg, rng):
    C = O = 8
    g = cfg["groups"]
    overflow_variant = "-acc" in p.name
    w = rng.standard_normal((O, C // g, 3, 3)).astype(np.float32)
    b = (rng.standard_normal(O) * (1e-3 if overflow_variant else 0.3)).astype(np.float32)
    xc = rng.standard_normal((4, C, 9, 9)).astype(np.float32)
    xe = (3 * rng.standard_normal((2, C, 9, 9))).astype(np.float32)
    conv = torch.nn.Conv2d(C, O, 3, **cfg)
    _set(conv, w, b)
    m = fpt.emulate(torch.nn.Sequential(conv), p)
    fpt.calibrate(m, [torch.from_numpy(xc)])
    x = torch.from_numpy(xe).requires_grad_()
    y = m(x)
    y.sum().backward()                           # runs; values are checked by the STE tests
    pad = cfg["padding"]
    ref = layers.Conv2d(p, w, b, stride=cfg["stride"], padding=pad, dilation=cfg.get("dilation", 1), groups=g)
    ref.calibrate(xc)
    want = ref.run(xe)
    assert y.shape == want.shape
    assert np.array_equal(_bits(y.detach().numpy()), _bits(want))
    if not p.is_float and p.activations.static:
        assert ref.trace.clipped_inputs > 0
        if overflow_variant:
            assert ref.trace.overflow_count > 0


def _token_profile(out="bfloat16"):
    base = profiles.get("h100-int8")
    return dataclasses.replace(
        base, name=f"token-{out}",
        activations=dataclasses.replace(base.activations, granularity="token", static=False),
        output=profiles.OutputSpec("int8", "double") if out == "int8" else base.output)


@pytest.mark.parametrize("out", ["bfloat16", "int8"])
def test_per_token_activations(out, rng):
    p = _token_profile(out)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    x = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)
    conv = fpt.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, profile=p)
    _set(conv, w, b)
    y = conv(torch.from_numpy(x)).detach().numpy()
    assert np.array_equal(_bits(y), _bits(layers.Conv2d(p, w, b, stride=2, padding=1, groups=2).run(x)))
    fc = fpt.Linear(16, 5, profile=p)
    wl = rng.standard_normal((5, 16)).astype(np.float32)
    _set(fc, wl, b[:5])
    xl = rng.standard_normal((3, 16)).astype(np.float32)
    assert np.array_equal(_bits(fc(torch.from_numpy(xl)).detach().numpy()),
                          _bits(layers.Linear(p, np.ascontiguousarray(wl.T), b[:5]).run(xl)))
    with pytest.raises(ValueError, match="^scale: token-"):
        fc.set_input_quantization(0.1)


@pytest.mark.parametrize("name", QUANTIZED)
def test_learned_scales_start_at_the_profiles_quantization(name, rng):
    """With LSQ, the scales are parameters initialised by calibration: before any
    step the forward is the same bits as without."""
    w = rng.standard_normal((10, 48)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32) * 0.1
    xc = rng.standard_normal((32, 48)).astype(np.float32)
    xe = (2 * rng.standard_normal((16, 48))).astype(np.float32)
    outs = []
    for learn in (False, True):
        m = fpt.emulate(torch.nn.Sequential(torch.nn.Linear(48, 10)), name, learn_scales=learn)
        _set(m[0], w, b)
        fpt.calibrate(m, [torch.from_numpy(xc)])
        outs.append(m(torch.from_numpy(xe)).detach().numpy())
        if learn and name in BLOCK_SCALED:                 # MX/NVFP4 scales follow each block
            assert m[0].weight_scale is None and not isinstance(m[0].input_scale, torch.nn.Parameter)
        elif learn:
            assert isinstance(m[0].weight_scale, torch.nn.Parameter)
    assert np.array_equal(_bits(outs[0]), _bits(outs[1]))


def test_float64_input_and_state_dict(rng):
    w = rng.standard_normal((4, 8)).astype(np.float32)
    xc = rng.standard_normal((16, 8)).astype(np.float32)
    m = fpt.emulate(torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()), "ane-int8")
    _set(m[0], w)
    fpt.calibrate(m, [torch.from_numpy(xc)])
    y32 = m(torch.from_numpy(xc))
    y64 = m(torch.from_numpy(xc).double())
    assert y64.dtype == torch.float64 and torch.equal(y64.float(), y32)
    sd = m.state_dict()
    assert float(sd["0.input_scale"]) == float(m[0].static_input()[0])
    fresh = fpt.emulate(torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()), "ane-int8")
    fresh.load_state_dict(sd)
    assert torch.equal(fresh(torch.from_numpy(xc)), y32)


# ---------------------------------------------------------------------------
# Backward: the straight-through estimator, derived by hand

def _fp8_dtype(f):
    return {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}[f.name]


def _quantize_by_hand(x, s, z, f):
    """Dequantized values, in-range mask and codes of ``x`` (float64) at scale ``s``
    (broadcastable) and zero point ``z``, from the format's definition."""
    u = x / s
    if isinstance(f, FloatFormat):
        v = np.clip(u, -f.max_value, f.max_value).astype(np.float32).astype(_fp8_dtype(f))
        q = v.astype(np.float64)
        return q * s, ~(np.abs(u) > f.max_value), q
    codes = np.clip(np.rint(u) + z, f.min, f.max)
    v = u + z
    return (codes - z) * s, (v >= f.min - 0.5) & (v <= f.max + 0.5), codes


def _qmax(f):
    return f.max_value if isinstance(f, FloatFormat) else f.max


def _dyadic_weights(p, rng, K, N, e=4):
    """K x N weights whose every scale block has its largest magnitude at the
    format's largest code times 2^-e: the profile's scales are exactly 2^-e and
    the weights quantize to themselves."""
    spec = p.weights
    f = spec.element_format
    qw = _qmax(f)
    if isinstance(f, FloatFormat):
        vals = np.array([0, 1, 1.5, 2, 3, 4, 6, 8, 12, 16], np.float64)
        codes = rng.choice(vals, (K, N)) * rng.choice([-1, 1], (K, N))
    else:
        codes = rng.integers(-qw, qw + 1, (K, N)).astype(np.float64)
    gs = {"tensor": K * N, "channel": K, "group": spec.group_size}[spec.granularity]
    if spec.granularity == "tensor":
        codes[0, 0] = qw
    else:
        for n in range(N):
            for k0 in range(0, K, gs):
                codes[k0 + rng.integers(0, min(gs, K - k0)), n] = qw * rng.choice([-1, 1])
    return codes * 2.0 ** -e


def _dyadic_activations(p, rng, shape):
    """A calibration batch whose range gives the scale 2^-3 (and zero point 0),
    and inputs on a dyadic grid reaching beyond it (clipped) with ties."""
    a = p.activations
    f = a.element_format
    qa = _qmax(f)
    if isinstance(f, FloatFormat):
        calib = rng.integers(-8, 9, shape).astype(np.float64)
        calib.flat[0], calib.flat[1] = qa / 8, -qa / 8
        x = rng.integers(-int(1.3 * qa), int(1.3 * qa) + 1, shape) / 8.0
    else:
        calib = rng.integers(-100, 101, shape) / 8.0
        calib.flat[0] = f.max / 8
        calib.flat[1] = (f.min if not a.symmetric else -f.max) / 8
        x = rng.integers(-2 * 160, 2 * 160 + 1, shape) / 16.0       # x / s = halves up to +-160
    return calib.astype(np.float32), x.astype(np.float32)


def _out_mask_by_hand(y, so, zo):
    real = y / so + zo
    return ~((real > 127.5) | (real < -128.5))


@pytest.mark.parametrize("name", STATIC)
def test_linear_gradients_are_the_ste_by_hand(name, rng):
    p = profiles.get(name)
    K, N, M = 32, 8, 6
    W = _dyadic_weights(p, rng, K, N)
    calib, x = _dyadic_activations(p, rng, (M, K))
    fc = fpt.Linear(K, N, profile=p)
    _set(fc, W.T, np.zeros(N))
    fpt.calibrate(torch.nn.Sequential(fc), [torch.from_numpy(calib)])
    s, z = fc.static_input()
    assert float(s) == 2.0 ** -3 and z == 0                      # exact arithmetic below
    if p.output.type == "int8":
        fc.set_output_quantization(0.25, 5)                      # many outputs clip
    xt = torch.from_numpy(x).requires_grad_()
    y = fc(xt)
    G = (rng.integers(-8, 9, (M, N)) / 8.0)
    y.backward(torch.from_numpy(G.astype(np.float32)))

    f = p.activations.element_format
    xq, mx, _ = _quantize_by_hand(x.astype(np.float64), 2.0 ** -3, 0, f)
    assert 0 < mx.sum() < mx.size                                 # some inputs clipped
    Wq = W                                                        # weights quantize to themselves
    Gp = G
    if p.output.type == "int8":
        my = _out_mask_by_hand(xq @ Wq, 0.25, 5)
        assert 0 < my.sum() < my.size
        Gp = G * my
    gx = (Gp @ Wq.T) * mx
    gw = ((xq.T @ Gp) * np.ones_like(W)).T
    assert np.array_equal(xt.grad.numpy(), gx.astype(np.float32))
    assert np.array_equal(fc.weight.grad.numpy(), gw.astype(np.float32))
    assert np.array_equal(fc.bias.grad.numpy(), Gp.sum(axis=0).astype(np.float32))


@pytest.mark.parametrize("name", DYNAMIC)
def test_linear_gradients_with_per_call_scales_by_hand(name, rng):
    """Activation scales from each call's range (x86-avx2-u8s8): nothing is
    clipped, so the STE passes every input gradient.  x spans [-100, 155] / 16,
    whose uint8 scale is 255/16 / 255 = 2^-4 with zero point 100: x is its own
    quantized value and the arithmetic below is exact."""
    p = profiles.get(name)
    assert p.activations.granularity == "tensor" and not p.activations.symmetric
    K, N, M = 32, 8, 6
    W = _dyadic_weights(p, rng, K, N)
    x = rng.integers(-100, 156, (M, K)).astype(np.float64)
    x.flat[0], x.flat[1] = -100, 155
    x /= 16
    fc = fpt.Linear(K, N, profile=p)
    _set(fc, W.T, np.zeros(N))
    assert fc.static_input() is None
    xt = torch.from_numpy(x.astype(np.float32)).requires_grad_()
    y = fc(xt)
    layer = layers.Linear(p, W.astype(np.float32), np.zeros(N, np.float32))
    assert np.array_equal(_bits(y.detach().numpy()), _bits(layer.run(x.astype(np.float32))))
    assert float(layer.trace.x_scale) == 2.0 ** -4 and layer.trace.clipped_inputs == 0
    G = (rng.integers(-8, 9, (M, N)) / 8.0)
    y.backward(torch.from_numpy(G.astype(np.float32)))
    assert np.array_equal(xt.grad.numpy(), (G @ W.T).astype(np.float32))
    assert np.array_equal(fc.weight.grad.numpy(), (x.T @ G).T.astype(np.float32))
    assert np.array_equal(fc.bias.grad.numpy(), G.sum(axis=0).astype(np.float32))


_E2M1_GRID = np.array([0, 0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6])            # 2.5 and 5: ties
_E4M3_GRID = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 20, 24, 288])


def _block_case(p, rng, rows, K):
    """``rows`` x K values, blocks of the profile's size along K, each block with a
    known power-of-two scale (its largest magnitude at the element format's
    largest value times it; NVFP4: a tensor scale of 1 and block scales 448 or
    powers of two), elements on and between the grid; MXFP4's floor rule leaves
    a 7 in some blocks (clipped to 6).  Returns x, the per-element scale."""
    spec = p.activations
    f, bs = spec.format, spec.group_size
    top = f.max_value
    grid = _E2M1_GRID if f.nbits == 4 else _E4M3_GRID
    x = rng.choice(grid, (rows, K)) * rng.choice([-1, 1], (rows, K))
    scale = np.empty((rows, K))
    for r in range(rows):
        for b0 in range(0, K, bs):
            blk = slice(b0, b0 + bs)
            if spec.scale_format == "e4m3":                   # NVFP4
                sb = 448.0 if (r, b0) == (0, 0) else 2.0 ** rng.integers(-3, 4)
            else:
                sb = 2.0 ** rng.integers(-4, 3)
            x[r, b0 + rng.integers(0, bs)] = top * rng.choice([-1, 1])
            if spec.scale_rule == "floor" and rng.integers(0, 2):
                x[r, b0 + rng.integers(0, bs)] = 7.0                     # beyond 6 at this scale
            x[r, blk] *= sb
            scale[r, blk] = sb
    return x.astype(np.float32), scale


@pytest.mark.parametrize("name", BLOCK_SCALED)
def test_block_scaled_gradients_are_the_ste_by_hand(name, rng):
    """MX and NVFP4: per-block scales from each call; x is clipped where it is
    beyond its block's largest value, as the layer counts it."""
    p = profiles.get(name)
    M, K, N = 3, 64, 4
    x, sx = _block_case(p, rng, M, K)
    wt, sw = _block_case(p, rng, N, K)                  # blocks of each output channel along K
    fc = fpt.Linear(K, N, bias=False, profile=p)
    _set(fc, wt)
    xt = torch.from_numpy(x).requires_grad_()
    y = fc(xt)
    G = rng.integers(-8, 9, (M, N)) / 8.0
    y.backward(torch.from_numpy(G.astype(np.float32)))
    f = p.activations.format
    dt = ml_dtypes.float4_e2m1fn if f.nbits == 4 else ml_dtypes.float8_e4m3fn

    def q(v, s):
        u = v / s
        return np.clip(u, -f.max_value, f.max_value).astype(np.float32).astype(dt).astype(np.float64) * s, \
            ~(np.abs(u) > f.max_value)
    xq, mx = q(x.astype(np.float64), sx)
    wq, mw = q(wt.astype(np.float64), sw)
    if p.activations.scale_rule == "floor":
        assert 0 < mx.sum() < mx.size and 0 < mw.sum() < mw.size
    assert np.array_equal(xt.grad.numpy(), ((G @ wq) * mx).astype(np.float32))
    assert np.array_equal(fc.weight.grad.numpy(), ((xq.T @ G).T * mw).astype(np.float32))


def _conv_by_hand(xq, wq, stride, pad, dil, groups):
    N, C, H, W_ = xq.shape
    O, Cg, kh, kw = wq.shape
    OH = (H + 2 * pad - dil * (kh - 1) - 1) // stride + 1
    OW = (W_ + 2 * pad - dil * (kw - 1) - 1) // stride + 1
    Og = O // groups
    taps = []                                 # (n, o, oh, ow, cin, h, w, c, i, j)
    for n in range(N):
        for o in range(O):
            for oh in range(OH):
                for ow in range(OW):
                    for c in range(Cg):
                        for i in range(kh):
                            for j in range(kw):
                                h, w = oh * stride - pad + i * dil, ow * stride - pad + j * dil
                                if 0 <= h < H and 0 <= w < W_:
                                    taps.append((n, o, oh, ow, (o // Og) * Cg + c, h, w, c, i, j))
    y = np.zeros((N, O, OH, OW))
    for n, o, oh, ow, cin, h, w, c, i, j in taps:
        y[n, o, oh, ow] += xq[n, cin, h, w] * wq[o, c, i, j]
    return y, taps


@pytest.mark.parametrize("name", ["ane-int8", "h100-fp8-e5m2", "edge-int4", "int2-research",
                                  "litert-optimized-int8"])
def test_conv_gradients_are_the_ste_by_hand(name, rng):
    p = profiles.get(name)
    C, O, groups, stride, pad, dil = 4, 4, 2, 2, 1, 1
    Cg = C // groups
    Wkn = _dyadic_weights(p, rng, Cg * 9, O)
    wt = Wkn.T.reshape(O, Cg, 3, 3)
    calib, x = _dyadic_activations(p, rng, (2, C, 6, 6))
    conv = fpt.Conv2d(C, O, 3, stride, pad, dil, groups, profile=p)
    _set(conv, wt, np.zeros(O))
    fpt.calibrate(torch.nn.Sequential(conv), [torch.from_numpy(calib)])
    assert float(conv.static_input()[0]) == 2.0 ** -3
    if p.output.type == "int8":
        conv.set_output_quantization(0.5, -3)
    xt = torch.from_numpy(x).requires_grad_()
    y = conv(xt)
    G = rng.integers(-8, 9, y.shape) / 8.0
    y.backward(torch.from_numpy(G.astype(np.float32)))

    xq, mx, _ = _quantize_by_hand(x.astype(np.float64), 2.0 ** -3, 0, p.activations.element_format)
    yq, taps = _conv_by_hand(xq, wt, stride, pad, dil, groups)
    if p.output.type == "int8":
        my = _out_mask_by_hand(yq, 0.5, -3)
        assert 0 < my.sum() < my.size
        G = G * my
    gx, gw = np.zeros_like(xq), np.zeros_like(wt)
    for n, o, oh, ow, cin, h, w, c, i, j in taps:
        gx[n, cin, h, w] += G[n, o, oh, ow] * wt[o, c, i, j]
        gw[o, c, i, j] += G[n, o, oh, ow] * xq[n, cin, h, w]
    assert 0 < mx.sum() < mx.size
    assert np.array_equal(xt.grad.numpy(), (gx * mx).astype(np.float32))
    assert np.array_equal(conv.weight.grad.numpy(), gw.astype(np.float32))
    assert np.array_equal(conv.bias.grad.numpy(), G.sum(axis=(0, 2, 3)).astype(np.float32))


def _rows_by_token(p, rows):
    s = (np.abs(rows).max(axis=1, keepdims=True).astype(np.float32) / np.float32(127)).astype(np.float64)
    return np.clip(np.rint(rows / s), -128, 127) * s, np.ones(rows.shape, bool)


def _rows_by_block(p, rows):
    """The rows of one convolution group quantized along K with the primitive, and
    the in-range mask from the block scales' definition."""
    from fixedpoint.blockscaled import from_e8m0, mx_quantize, nvfp4_quantize
    from fixedpoint.fp8 import from_fp8
    a = p.activations
    r32 = rows.astype(np.float32)
    if a.scale_format == "e8m0":
        t = mx_quantize(r32, a.format, block=a.group_size, axis=1, scale_rule=a.scale_rule)
        sb = from_e8m0(t.scales, dtype=np.float64)
    else:
        t = nvfp4_quantize(r32, axis=1, arithmetic=a.scale_rule)
        sb = from_fp8(t.scales, dtype=np.float64) * float(t.tensor_scale)
    s = np.repeat(sb, t.block, axis=1)[:, :rows.shape[1]]
    return t.dequantize().astype(np.float64), ~(np.abs(r32.astype(np.float64)) > a.format.max_value * s)


@pytest.mark.parametrize("name", ["token", "b200-mxfp4", "b200-nvfp4", "b200-mxfp8"])
def test_row_quantized_conv_gradients_by_hand(name, rng):
    """Per-token and block-scaled activations quantize the im2col rows (per
    convolution group): the input gradient gathers each row's masked gradient
    back onto the pixels it came from."""
    p = _token_profile() if name == "token" else profiles.get(name)
    quant = _rows_by_token if name == "token" else _rows_by_block
    Cg, G, O = 8, 2, 4
    w = rng.standard_normal((O, Cg, 3, 3)).astype(np.float32)
    x = rng.standard_normal((1, Cg * G, 5, 5)) * np.exp(rng.standard_normal((1, Cg * G, 1, 1)))
    x = x.astype(np.float32)                     # channels of different ranges
    conv = fpt.Conv2d(Cg * G, O, 3, 1, 1, 1, G, bias=False, profile=p)
    _set(conv, w)
    xt = torch.from_numpy(x).requires_grad_()
    y = conv(xt)
    Gy = rng.standard_normal(y.shape)
    y.backward(torch.from_numpy(Gy.astype(np.float32)))
    if name == "token":              # per-channel INT8 weights: their scale holds every weight
        wq, mw = layers.Conv2d(p, w, groups=G, padding=1).wq.dequantize().astype(np.float64), 1.0
    else:                            # (Cg*9, O): blocks along K, as the activation rows
        wq, mw = (a.T for a in _rows_by_block(p, w.reshape(O, -1).astype(np.float64)))
    Og = O // G
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    gx = np.zeros(xp.shape)
    gw = np.zeros(wq.shape)
    clipped = 0
    for g in range(G):
        rows = np.array([xp[0, g * Cg:(g + 1) * Cg, oh:oh + 3, ow:ow + 3].reshape(-1)
                         for oh in range(5) for ow in range(5)])
        rq, inside = quant(p, rows)
        clipped += (~inside).sum()
        for i, (oh, ow) in enumerate((oh, ow) for oh in range(5) for ow in range(5)):
            go = Gy[0, g * Og:(g + 1) * Og, oh, ow]
            grow = (wq[:, g * Og:(g + 1) * Og] @ go) * inside[i]
            gx[0, g * Cg:(g + 1) * Cg, oh:oh + 3, ow:ow + 3] += grow.reshape(Cg, 3, 3)
            gw[:, g * Og:(g + 1) * Og] += np.outer(rq[i], go)
    if p.activations.scale_rule == "floor":          # MX's floor rule clips some block maxima
        assert clipped > 0 and not np.all(mw)
    np.testing.assert_allclose(xt.grad.numpy(), gx[:, :, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(conv.weight.grad.numpy(), (gw * mw).T.reshape(w.shape), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_fp32_gradients_pass_gradcheck(kind, rng):
    """Without quantization the module is the float layer: finite differences agree."""
    if kind == "linear":
        m = fpt.Linear(6, 3, profile="fp32")
        x = torch.from_numpy(rng.standard_normal((4, 6))).requires_grad_()
    else:
        m = fpt.Conv2d(2, 3, 3, stride=2, padding=1, profile="fp32")
        x = torch.from_numpy(rng.standard_normal((2, 2, 5, 5))).requires_grad_()
    w = m.weight.detach().double().requires_grad_()
    b = m.bias.detach().double().requires_grad_()

    def f(x, w, b):
        return torch.func.functional_call(m, {"weight": w, "bias": b}, (x,))
    assert torch.autograd.gradcheck(f, (x, w, b), eps=1e-3, atol=2e-3, rtol=1e-3)


LSQ_CASES = ["ane-int8", "h100-fp8", "edge-int4", "int2-research", "litert-xnnpack-int8"]


@pytest.mark.parametrize("name", LSQ_CASES)
def test_lsq_gradients_by_hand(name, rng):
    """LSQ (Esser et al. 2020): dv/ds = q - x/s in range, q at the clip; summed
    over the elements sharing the scale and scaled by 1/sqrt(N * Qp)."""
    p = profiles.get(name)
    K, N, M = 32, 4, 5
    W = _dyadic_weights(p, rng, K, N)
    calib, x = _dyadic_activations(p, rng, (M, K))
    fc = fpt.Linear(K, N, profile=p, learn_scales=True)
    _set(fc, W.T, np.zeros(N))
    fpt.calibrate(torch.nn.Sequential(fc), [torch.from_numpy(calib)])
    assert fc.input_scale.item() == 2.0 ** -3
    with torch.no_grad():                       # smaller scales than calibrated: values clip
        fc.input_scale.fill_(2.0 ** -5)
        fc.weight_scale.mul_(0.5)
    if p.output.type == "int8":
        fc.set_output_quantization(1.0)
    xt = torch.from_numpy(x).requires_grad_()
    y = fc(xt)
    G = rng.integers(-8, 9, (M, N)) / 8.0
    y.backward(torch.from_numpy(G.astype(np.float32)))

    fa, fw = p.activations.element_format, p.weights.element_format
    sx = 2.0 ** -5
    xq, mx, _ = _quantize_by_hand(x.astype(np.float64), sx, 0, fa)
    assert 0 < mx.sum() < mx.size
    spec = p.weights
    nblock = {"tensor": K * N, "channel": K, "group": spec.group_size}[spec.granularity]
    sw_full = np.full((K, N), 2.0 ** -5)
    wq, mw, _ = _quantize_by_hand(W, sw_full, 0, fw)
    assert 0 < mw.sum() < mw.size
    Gp = G * _out_mask_by_hand(xq @ wq, 1.0, 0) if p.output.type == "int8" else G
    gxq = Gp @ wq.T
    gwq = xq.T @ Gp
    assert np.array_equal(xt.grad.numpy(), (gxq * mx).astype(np.float32))
    assert np.array_equal(fc.weight.grad.numpy(), (gwq * mw).T.astype(np.float32))
    gs_x = np.sum(gxq * (xq - mx * x) / sx) / np.sqrt(K * _qmax(fa))
    assert np.array_equal(fc.input_scale.grad.numpy(), np.float32(gs_x))
    per = gwq * (wq - mw * W) / sw_full
    if spec.granularity == "tensor":
        gs_w = per.sum()
    elif spec.granularity == "channel":
        gs_w = per.sum(axis=0)
    else:
        gs_w = per.reshape(K // spec.group_size, spec.group_size, N).sum(axis=1)
    gs_w = gs_w / np.sqrt(nblock * _qmax(fw))
    assert np.array_equal(fc.weight_scale.grad.numpy(), np.asarray(gs_w, np.float32))


def test_no_gradient_through_a_constant_output():
    """An all-zero INT8 output range: the output does not depend on anything."""
    fc = fpt.Linear(3, 2, profile="ane-int8")
    fc.set_output_quantization(0.0)
    x = torch.ones(2, 3, requires_grad=True)
    fc(x).sum().backward()
    assert not x.grad.any() and not fc.weight.grad.any()


# ---------------------------------------------------------------------------
# emulate / calibrate

def test_emulate_swaps_in_place_and_shares_parameters():
    torch.manual_seed(0)
    inner = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
    model = torch.nn.ModuleDict({"body": inner, "head": torch.nn.Linear(8, 3),
                                 "other": torch.nn.Conv1d(1, 1, 1)})
    params = {n: q for n, q in model.named_parameters()}
    state = torch.get_rng_state()
    assert fpt.emulate(model, "edge-int4") is model
    assert torch.equal(state, torch.get_rng_state())            # no random initialisation
    assert type(model["body"][0]) is fpt.Conv2d and type(model["head"]) is fpt.Linear
    assert type(model["other"]) is torch.nn.Conv1d
    for n, q in model.named_parameters():
        assert q is params[n]
    fpt.emulate(model, "h100-fp8")                              # again, on another profile
    assert model["head"].profile.name == "h100-fp8" and model["head"].weight is params["head.weight"]
    assert "profile=h100-fp8" in repr(model["head"])


def test_bad_input():
    with pytest.raises(TypeError, match="^model: "):
        fpt.emulate("net", "ane-int8")
    with pytest.raises(ValueError, match="^profile|^name"):
        fpt.emulate(torch.nn.Sequential(torch.nn.Linear(2, 2)), "no-such-profile")
    with pytest.raises(TypeError, match="^profile: "):
        fpt.Linear(2, 2, profile=3)
    with pytest.raises(ValueError, match="^model: a single layer"):
        fpt.emulate(torch.nn.Linear(2, 2), "ane-int8")
    with pytest.raises(ValueError, match="^model: layer '0' pads with 'reflect'"):
        fpt.emulate(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")),
                    "ane-int8")
    with pytest.raises(ValueError, match="^model: layer '1' is a lazy module"):
        fpt.emulate(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.LazyLinear(3)), "ane-int8")
    with pytest.raises(ValueError, match="^model: has no emulated layers"):
        fpt.calibrate(torch.nn.Sequential(torch.nn.ReLU()), [torch.ones(1)])
    m = fpt.emulate(torch.nn.Sequential(torch.nn.Linear(4, 2)), "ane-int8", learn_scales=True)
    with pytest.raises(ValueError, match="^data: no calibration batches"):
        fpt.calibrate(m, [])
    with pytest.raises(ValueError, match="learn_scales needs calibrated scales"):
        m(torch.ones(1, 4))
    fc = fpt.Linear(4, 2, profile="ane-int8")
    with pytest.raises(ValueError, match=r"^x: expected shape \(\.\.\., 4\)"):
        fc(torch.ones(3, 5))
    with pytest.raises(TypeError, match="^x: expected a float tensor"):
        fc(torch.ones(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="^x: non-finite"):
        fc(torch.tensor([[1.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"^x: expected shape \(N, 3, H, W\)"):
        fpt.Conv2d(3, 2, 3, profile="ane-int8")(torch.ones(1, 2, 5, 5))
    with pytest.raises(ValueError, match="^scale: h100-int8 does not output INT8"):
        fpt.Linear(4, 2, profile="h100-int8").set_output_quantization(0.1)
    with pytest.raises(ValueError, match="^zero_point: "):
        fc.set_output_quantization(0.1, 300)
    with pytest.raises(TypeError, match="^learn_scales: "):
        fpt.Linear(4, 2, profile="ane-int8", learn_scales="yes")
    with pytest.raises(ValueError, match="^padding_mode: "):
        fpt.Conv2d(1, 1, 3, padding_mode="circular", profile="ane-int8")


# ---------------------------------------------------------------------------
# The study's models and QAT

@pytest.mark.parametrize("name", BUILTIN)
def test_mlp_module_without_training_is_the_studys_ptq(name):
    """Calibrated and not trained, the PyTorch MLP gives the study's logits bit for
    bit (fused ReLU requantization included)."""
    w = study.mlp_workload(limit=120)
    ptq = study.evaluate_profile(w, name)["_outputs"]
    model = qat.model_of(w)
    qat.fine_tune(model, name, w.training["x"][:8], w.training["y"][:8], w.training["calibration"],
                  schedule=qat.Schedule(epochs=0))
    y = qat.predict(model, w.training["eval"])
    assert np.array_equal(_bits(y), _bits(ptq))


def _c_ordered_gemm(model):
    """The same graph with every Gemm's transB folded into its weight.

    fixedpoint.layers.Linear keeps the memory order of the weight it is given,
    and NumPy's float32 matmul (its ``reference``, from which INT8 output
    scales are calibrated) can differ in the last bit between C- and F-ordered
    weights; the graph runner hands ``B.T`` (F-ordered) for ``transB=1``.  The
    PyTorch module always gives C order, so the comparison uses that layout."""
    from onnx import numpy_helper
    m = type(model)()
    m.CopyFrom(model)
    inits = {t.name: i for i, t in enumerate(m.graph.initializer)}
    for n in m.graph.node:
        if n.op_type == "Gemm" and any(a.name == "transB" and a.i for a in n.attribute):
            for a in [a for a in n.attribute if a.name == "transB"]:
                n.attribute.remove(a)
            t = m.graph.initializer[inits[n.input[1]]]
            t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(t).T), t.name))
    return m


@pytest.mark.slow
def test_convnet_module_without_training_is_the_graph_runners_ptq():
    """The shipped conv net rebuilt in PyTorch, calibrated and not trained, gives the
    graph runner's logits bit for bit on every profile."""
    need("onnx", 'pip install "fixedpoint[models]"')
    from fixedpoint import graph
    w = study.convnet_workload(limit=64, n_calib=64)
    tr = w.training
    g = _c_ordered_gemm(tr["model"])
    for name in BUILTIN:
        s = graph.Session(g, name)
        for c in tr["calibration"]:
            s.calibrate({"image": c})
        ptq = np.concatenate([s.run({"image": e})[0]["logits"] for e in tr["eval"]])
        model = qat.model_of(w)
        qat.fine_tune(model, name, tr["x"][:4], tr["y"][:4], tr["calibration"],
                      schedule=qat.Schedule(epochs=0))
        y = qat.predict(model, tr["eval"])
        assert np.array_equal(_bits(y), _bits(ptq)), name


def _small_graph():
    need("onnx", 'pip install "fixedpoint[models]"')
    from onnx import TensorProto, helper, numpy_helper
    r = np.random.default_rng(5)
    inits = [numpy_helper.from_array(r.standard_normal((4, 1, 3, 3)).astype(np.float32), "cw"),
             numpy_helper.from_array(r.standard_normal(4).astype(np.float32), "cb"),
             numpy_helper.from_array(r.standard_normal((3, 36)).astype(np.float32), "fw"),
             numpy_helper.from_array(r.standard_normal(3).astype(np.float32), "fb"),
             numpy_helper.from_array(r.standard_normal((36, 5)).astype(np.float32), "mw"),
             numpy_helper.from_array(np.float32(0.5).reshape(()), "half"),
             numpy_helper.from_array(np.array([-1, 36], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Mul", ["p", "half"], ["h"], name="mul"),
             helper.make_node("Reshape", ["h", "shape"], ["f"], name="reshape"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], name="fc", transB=1),
             helper.make_node("MatMul", ["f", "mw"], ["m"], name="mm"),
             helper.make_node("Add", ["logits", "logits"], ["twice"], name="add")]
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 6, 6])],
                          [helper.make_tensor_value_info("twice", TensorProto.FLOAT, [None, 3]),
                           helper.make_tensor_value_info("m", TensorProto.FLOAT, [None, 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("name", ["fp32", "ane-int8", "edge-int4", "h100-fp8"])
def test_graph_module_is_the_graph_runner(name, rng):
    """Node for node: float ops in float32 rounded to the vector type (float16 on
    ane-int8), layers through the profile, as graph.Session runs them."""
    need("onnx", 'pip install "fixedpoint[models]"')
    from fixedpoint import graph
    model = _small_graph()
    xc = rng.standard_normal((16, 1, 6, 6)).astype(np.float32)
    x = (2 * rng.standard_normal((8, 1, 6, 6))).astype(np.float32)
    s = graph.Session(model, name)
    s.calibrate({"x": xc})
    want = s.run({"x": x})[0]["twice"]
    gm = qat.GraphModule(model)
    fpt.emulate(gm, name)
    fpt.calibrate(gm, [torch.from_numpy(xc)])
    gm.vector = profiles.get(name).vector
    assert sorted(gm.layers) == ["conv", "fc", "mm"]
    assert np.array_equal(_bits(gm(torch.from_numpy(x)).detach().numpy()), _bits(want))


def test_graph_module_refuses_what_it_cannot_build():
    need("onnx", 'pip install "fixedpoint[models]"')
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Erf", ["x"], ["y"], name="erf")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(ValueError, match="^model: node 'erf': the torch model does not support Erf"):
        qat.GraphModule(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def _train_int2(seed, epochs=1):
    w = study.mlp_workload(limit=50)
    model = qat.model_of(w)
    out = qat.fine_tune(model, "int2-research", w.training["x"], w.training["y"], w.training["calibration"],
                        schedule=qat.Schedule(epochs=epochs, seed=seed))
    return model, out, qat.predict(model, w.training["eval"])


def test_qat_is_deterministic():
    threads = torch.get_num_threads()
    m1, o1, y1 = _train_int2(0)
    m2, o2, y2 = _train_int2(0)
    m3, _, _ = _train_int2(1)
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1 if k.endswith(("weight", "bias", "input_scale")))
    assert all(torch.isnan(s1[k]).all() for k in s1 if k.endswith("output_scale"))   # float outputs
    assert o1["loss"] == o2["loss"] and np.array_equal(_bits(y1), _bits(y2))
    assert not torch.equal(s1["layers.0.weight"], s3["layers.0.weight"])       # the seed matters
    assert not torch.equal(s1["layers.0.weight"], qat.model_of(study.mlp_workload(limit=5))
                           .state_dict()["layers.0.weight"])                      # and it trained


def test_qat_recovers_what_int2_ptq_loses():
    w = study.mlp_workload()
    res = study.run_study(["int2-research"], w)
    qat.run_qat(res, w)
    r = res["profiles"]["int2-research"]
    assert r["drop_pp"] > 10                       # what PTQ loses (20 points on the shipped MLP)
    assert r["qat"]["recovered_pp"] > 10, r["qat"]
    assert res["qat"]["epochs"] == qat.Schedule().epochs and res["qat"]["train_samples"] == 1347
    assert len(r["qat"]["loss"]) == res["qat"]["epochs"]
    text = study.format_table(res)
    assert "PTQ acc %" in text and "QAT drop" in text


def test_qat_needs_a_training_split():
    model, data = study.mlp_workload.__globals__["load_default"]()
    w = study.mlp_workload(model, data)
    assert w.training is None
    with pytest.raises(ValueError, match="^workload: .* has no labelled training split"):
        qat.run_qat(study.run_study(["ane-int8"], w), w)
    with pytest.raises(ValueError, match="^epochs: "):
        qat.Schedule(epochs=-1)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fixedpoint", *args], cwd=CWD, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_study_command_with_qat(tmp_path):
    out = tmp_path / "rep"
    r = _cli("study", "--qat", "--epochs", "1", "--limit", "90", "--profiles", "int2-research,ane-int8",
             "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    head = next(i for i, l in enumerate(lines) if l.startswith("profile"))
    assert lines[head].split()[1:7] == ["PTQ", "acc", "%", "PTQ", "drop", "QAT"]
    res = json.loads((out / "results.json").read_text())
    for row in lines[head + 2:head + 5]:
        cells = row.split()
        p = res["profiles"][cells[0]]
        assert float(cells[1]) == pytest.approx(p["accuracy"] * 100, abs=0.005)
        assert float(cells[3]) == pytest.approx(p["qat"]["accuracy"] * 100, abs=0.005)
        assert float(cells[4]) == pytest.approx(p["qat"]["drop_pp"], abs=0.005)
    assert res["qat"]["epochs"] == 1
    md = (out / "report.md").read_text()
    assert "## PTQ vs QAT" in md and "| int2-research |" in md and "![qat.png](qat.png)" in md
    assert (out / "qat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = _cli("study", "--epochs", "2")
    assert r.returncode == 2 and r.stderr.strip() == "fixedpoint study: error: --epochs: only with --qat"


def test_the_package_and_the_study_do_not_need_torch(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "import fixedpoint, fixedpoint.study, fixedpoint.cli, fixedpoint.graph\n"
            "from fixedpoint.cli import main\n"
            f"rc = main(['study', '--limit', '40', '--profiles', 'ane-int8', '--no-figures', '--quiet', "
            f"'--out', {str(tmp_path)!r}])\n"
            "assert rc == 0, rc\n"
            "rc = main(['study', '--qat', '--limit', '40', '--quiet', '--out', "
            f"{str(tmp_path)!r}])\n"
            "assert rc == 2, rc\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=CWD, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'fixedpoint study: error: --qat: quantization-aware training needs PyTorch: pip install ' \
           '"fixedpoint[torch]"' in r.stderr
    r = subprocess.run([sys.executable, "-c", "import sys, fixedpoint, fixedpoint.study, fixedpoint.cli; "
                        "print('torch' in sys.modules)"], cwd=CWD, capture_output=True, text=True)
    assert r.stdout.strip() == "False"


@pytest.mark.parametrize("module", [fpt, qat])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
