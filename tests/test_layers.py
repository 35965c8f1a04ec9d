"""Layers: every profile's Linear, MatMul and Conv2d equal, bit for bit, the
documented composition of the public primitives (ONNX Runtime cross-checks:
test_layers_onnxruntime.py)."""
import dataclasses

import ml_dtypes
import numpy as np
import pytest

import fixedpoint as fp
from fixedpoint import layers, profiles
from fixedpoint import _reference as ref


def _layer(seed, m=7, k=96, n=24, dead=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[0, 0] = 9.0                       # an outlier that sets the per-tensor scale
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    if dead:
        w[:, 3] = 1e-12                 # a dead channel: its bias alone decides the output
    return x, w, b


def _bf16(y):
    return np.asarray(y, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def _same(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def _run(name, x, w, b=None):
    fc = layers.Linear(name, w, b)
    return fc.run(x), fc.trace


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["h100-fp8", "h100-fp8-fast", "h100-fp8-e5m2"])
def test_fp8_linear_composes(name, seed):
    p = profiles.get(name)
    x, w, b = _layer(seed, k=256)
    y, tr = _run(name, x, w, b)
    xq = fp.quantize(x, p.activations.format)
    wq = fp.quantize(w, p.weights.format)
    acc = fp.fp8_matmul(xq.codes, wq.codes, scale_a=xq.scale, scale_b=wq.scale, acc=p.accumulator)
    _same(y, _bf16(acc + b))
    _same(tr.accumulator, acc)
    np.testing.assert_array_equal(tr.x.codes, xq.codes)
    np.testing.assert_array_equal(tr.w.codes, wq.codes)


def test_fp8_static_scale_counts_clipping():
    x, w, b = _layer(3)
    fc = layers.Linear("h100-fp8", w, b)
    fc.calibrate(x / 100)                  # a static scale far too small for x
    fc.run(x)
    s = fc.trace.x_scale
    assert s == np.float32(np.abs(x / 100).max()) / np.float32(448)
    assert fc.trace.clipped_inputs == int(np.count_nonzero(np.abs(x.astype(np.float32) / s) > 448))
    assert fc.trace.outlier_ratio > 1
    np.testing.assert_array_equal(fc.trace.x.codes, fp.quantize(x, "e4m3", scale=s).codes)


def _ane_composition(x, w, b, *, xs=None, xz=0, so=None, zo=0, method="double", sym=True):
    """ane-int8 from the primitives: per-tensor activations, per-channel narrow
    weights (a channel's scale raised until its bias fits 2^30), the bias in the
    register, requantize to INT8."""
    xq = fp.quantize(x, "int8") if xs is None else fp.quantize(x, "int8", scale=xs, zero_point=xz)
    wq = fp.quantize(w, "int8", axis=1, narrow_range=True)
    need = np.abs(b.astype(np.float64)) / (np.float64(xq.scale) * 2.0**30)
    sw = np.maximum(wq.scale.astype(np.float64), need).astype(np.float32)
    wq = fp.quantize(w, "int8", scale=sw, axis=1, narrow_range=True)
    s = (np.float32(xq.scale) * wq.scale).astype(np.float32)
    bq = np.rint(b.astype(np.float64) / s).astype(np.int64)
    xc = xq.codes.astype(np.int16) - np.int16(xq.zero_point)
    acc = fp.matmul(xc, wq.codes.astype(np.int16), "int16", acc=fp.Accumulator(32, "wrap"), c=bq)
    if so is None:
        oq = fp.quantize(acc * s.astype(np.float64), "int8", symmetric=sym)
        so, zo = oq.scale, int(oq.zero_point)
    m, sh = fp.quantize_multiplier(s.astype(np.float64) / np.float64(so))
    codes = fp.requantize(acc, m, sh, zero_point=zo, out_fmt="int8", method=method)
    return codes, acc, np.float32(so), zo, wq, sw


@pytest.mark.parametrize("seed", [0, 1])
def test_ane_int8_linear_composes(seed):
    x, w, b = _layer(seed, dead=True)
    y, tr = _run("ane-int8", x, w, b)
    codes, acc, so, zo, wq, sw = _ane_composition(x, w, b)
    assert sw[3] > fp.quantize(w, "int8", axis=1, narrow_range=True).scale[3]   # the dead channel
    np.testing.assert_array_equal(tr.output_codes, codes)
    np.testing.assert_array_equal(tr.accumulator, acc)
    _same(y, codes.astype(np.float32) * so)
    assert abs(y[1, 3] - b[3]) <= so          # the dead channel keeps its bias


def test_ane_int8_against_transcribed_requantization():
    """The requantized codes against the slow TFLite transcription, element by element."""
    x, w, b = _layer(4)
    _, tr = _run("ane-int8", x, w, b)
    s = (np.float32(tr.x.scale) * tr.w.scale).astype(np.float32)
    m, sh = fp.quantize_multiplier(s.astype(np.float64) / np.float64(tr.output_scale))
    for (i, j), a in np.ndenumerate(tr.accumulator):
        want = ref.tflite_multiply_by_quantized_multiplier(int(a), int(m[j]), int(sh[j]))
        assert tr.output_codes[i, j] == min(max(want, -128), 127)


def test_static_scales_asymmetric_activations_single_rounding():
    base = profiles.get("ane-int8")
    p = dataclasses.replace(base, name="ane-asym",
                            activations=dataclasses.replace(base.activations, symmetric=False),
                            output=fp.OutputSpec("int8", "single"))
    x, w, b = _layer(5)
    x = np.abs(x)
    fc = layers.Linear(p, w, b)
    fc.calibrate(x)
    y = fc.run(x)
    tr = fc.trace
    xq = fp.quantize(x, "int8", symmetric=False)               # calibrated on the same data
    assert tr.x_scale == xq.scale and int(tr.x.zero_point) == int(xq.zero_point) == -128
    yf = x @ w + b
    oq = fp.quantize(yf, "int8", symmetric=False)               # the output calibrated on float
    codes, acc, so, zo, _, _ = _ane_composition(x, w, b, xs=xq.scale, xz=xq.zero_point,
                                                so=oq.scale, zo=int(oq.zero_point), method="single")
    np.testing.assert_array_equal(tr.output_codes, codes)
    _same(y, (codes.astype(np.float32) - np.float32(zo)) * so)


@pytest.mark.parametrize("seed", [0, 1])
def test_h100_int8_linear_composes(seed):
    x, w, b = _layer(seed)
    y, tr = _run("h100-int8", x, w, b)
    xq = fp.quantize(x, "int8")
    wq = fp.quantize(w, "int8", axis=1, narrow_range=True)
    acc, ov = fp.matmul(xq.codes, wq.codes, "int8", acc=fp.Accumulator(32, "saturate", block=16),
                        return_overflow=True)
    s = (np.float32(xq.scale) * wq.scale).astype(np.float32)
    _same(y, _bf16(acc.astype(np.float32) * s + b))
    np.testing.assert_array_equal(tr.overflow, ov)


def test_narrow_accumulator_overflows_are_counted():
    p = dataclasses.replace(profiles.get("h100-int8"), name="acc16",
                            accumulator=fp.Accumulator(16, "saturate"))
    rng = np.random.default_rng(9)
    x = np.abs(rng.standard_normal((4, 512))).astype(np.float32)
    w = np.abs(rng.standard_normal((512, 8))).astype(np.float32)
    y, tr = _run(p, x, w)
    xq, wq = fp.quantize(x, "int8"), fp.quantize(w, "int8", axis=1, narrow_range=True)
    acc, ov = fp.matmul(xq.codes, wq.codes, "int8", acc=fp.Accumulator(16, "saturate"),
                        return_overflow=True)
    assert tr.overflow_count == int(ov.sum()) > 0
    assert np.all(tr.accumulator == 32767)


@pytest.mark.parametrize("name,k", [("edge-int4", 128), ("int2-research", 128), ("edge-int4", 80)])
def test_grouped_linear_composes(name, k):
    """Per-group weights with float16 scales (rounded here by ml_dtypes-free
    NumPy float16), K padded with zeros to whole groups (k = 80: 3 groups of 32)."""
    p = profiles.get(name)
    x, w, b = _layer(4, k=k)
    y, tr = _run(name, x, w, b)
    g = p.weights.group_size
    G = -(-k // g)
    wp = np.concatenate([w, np.zeros((G * g - k, w.shape[1]), np.float32)])
    xp = np.concatenate([x, np.zeros((x.shape[0], G * g - k), np.float32)], axis=1)
    xq = fp.quantize(x, "int8")
    w32 = fp.quantize(wp, p.weights.format, axis=0, group_size=g, narrow_range=p.weights.narrow_range)
    s16 = w32.scale.astype(np.float16).astype(np.float32)          # float16 scales
    wq = fp.quantize(wp, p.weights.format, scale=s16, axis=0, group_size=g,
                     narrow_range=p.weights.narrow_range)
    xcodes = fp.quantize(xp, "int8", scale=xq.scale).codes
    total = None
    for j in range(G):
        a = fp.matmul(xcodes[:, j * g:(j + 1) * g], wq.codes[j * g:(j + 1) * g], "int8")
        part = a.astype(np.float32) * (np.float32(xq.scale) * wq.scale[j]).astype(np.float32)
        total = part if total is None else total + part
    want = total + b
    if p.output.type == "float16":
        want = want.astype(np.float16).astype(np.float32)
    _same(y, want)
    np.testing.assert_array_equal(tr.w.scale, s16)
    assert tr.overflow_count == 0
    if name == "int2-research":
        assert set(np.unique(tr.w.codes)) <= {-1, 0, 1}


def test_grouped_with_a_narrow_accumulator_counts_overflows():
    p = dataclasses.replace(profiles.get("edge-int4"), name="edge-acc8",
                            accumulator=fp.Accumulator(8, "saturate"))
    rng = np.random.default_rng(12)
    x = np.abs(rng.standard_normal((5, 64))).astype(np.float32)
    w = np.abs(rng.standard_normal((64, 7))).astype(np.float32)
    y, tr = _run(p, x, w)
    xq = fp.quantize(x, "int8")
    w32 = fp.quantize(w, "int4", axis=0, group_size=32)
    wq = fp.quantize(w, "int4", axis=0, group_size=32, scale=w32.scale.astype(np.float16))
    total, counts = None, 0
    for j in range(2):
        a, n = fp.matmul(xq.codes[:, 32 * j:32 * (j + 1)], wq.codes[32 * j:32 * (j + 1)], "int8",
                         acc=fp.Accumulator(8, "saturate"), return_overflow=True)
        part = a.astype(np.float32) * (np.float32(xq.scale) * wq.scale[j]).astype(np.float32)
        total = part if total is None else total + part
        counts = counts + n
    _same(y, total.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(tr.overflow, counts)
    assert tr.overflow_count > 0 and np.all(np.abs(tr.accumulator) <= 127)


def test_fp32_is_numpy_and_batches_flatten():
    x, w, b = _layer(0)
    y, tr = _run("fp32", x, w, b)
    _same(y, x @ w + b)
    assert tr.overflow_count == 0 and tr.x is None
    fc = layers.Linear("edge-int4", w[:64])
    x3 = np.random.default_rng(1).standard_normal((2, 3, 64)).astype(np.float32)
    _same(fc.run(x3), fc.run(x3.reshape(6, 64)).reshape(2, 3, 24))


def test_per_token_activations():
    """One scale per row, computed per call (LLM.int8()-style vector-wise)."""
    base = profiles.get("h100-int8")
    p = dataclasses.replace(base, name="tok", activations=fp.QuantSpec("int8", "token", static=False))
    x, w, b = _layer(6)
    x[3] *= 50                                   # a row of outliers only hurts its own row
    y, tr = _run(p, x, w, b)
    xq = fp.quantize(x, "int8", axis=0)
    wq = fp.quantize(w, "int8", axis=1, narrow_range=True)
    acc = fp.matmul(xq.codes, wq.codes, "int8", acc=fp.Accumulator(32, "saturate", block=16))
    s = (xq.scale[:, None] * wq.scale[None, :]).astype(np.float32)
    _same(y, _bf16(acc.astype(np.float32) * s + b))
    yt, _ = _run(base, x, w, b)
    err = lambda v: np.abs(v - (x @ w + b))[[0, 1, 2, 4, 5, 6]].max()   # noqa: E731
    assert err(y) < err(yt) / 10


def test_prequantized_weights_must_match_the_profile():
    x, w, b = _layer(0)
    p = profiles.get("ane-int8")
    wq = fp.quantize(w, "int8", axis=1, narrow_range=True)
    _same(layers.Linear(p, w, b, weights=wq).run(x), layers.Linear(p, w, b).run(x))
    with pytest.raises(ValueError, match="weights: quantized as int8 axis=1 group_size=None, but "
                                         "ane-int8 stores int8_narrow per channel"):
        layers.Linear(p, w, b, weights=fp.quantize(w, "int8", axis=1))
    with pytest.raises(ValueError, match="but edge-int4 stores int4 per group of 32"):
        layers.Linear("edge-int4", w, b, weights=wq)
    with pytest.raises(ValueError, match="weights: expected shape"):
        layers.Linear(p, w[:50], b, weights=wq)
    with pytest.raises(TypeError, match="weights: expected a QTensor"):
        layers.Linear(p, w, b, weights=wq.codes)


def test_layer_bad_input():
    x, w, b = _layer(0)
    fc = layers.Linear("ane-int8", w, b)
    with pytest.raises(ValueError, match="x: expected shape"):
        fc.run(x[:, :5])
    with pytest.raises(TypeError, match="x: expected floats"):
        fc.run(x.astype(np.int32))
    with pytest.raises(ValueError, match="bias: expected 24 floats"):
        layers.Linear("ane-int8", w, b[:3])
    with pytest.raises(ValueError, match="weight: expected a K x N matrix"):
        layers.Linear("ane-int8", w[0])
    with pytest.raises(ValueError, match="x: non-finite value nan"):
        fc.run(np.full_like(x, np.nan))
    with pytest.raises(ValueError, match="unknown profile"):
        layers.Linear("no-such-npu", w)
    with pytest.raises(ValueError, match="a and b: inner dimensions differ"):
        layers.MatMul("ane-int8").run(x, x)
    with pytest.raises(ValueError, match="groups: 3 does not divide"):
        layers.Conv2d("ane-int8", np.ones((4, 1, 3, 3), np.float32), groups=3)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 2, H, W\)"):
        layers.Conv2d("ane-int8", np.ones((4, 1, 3, 3), np.float32), groups=2).run(np.ones((1, 3, 5, 5)))
    with pytest.raises(ValueError, match="scale: h100-int8 does not output INT8"):
        layers.Linear("h100-int8", w).set_output_quantization(0.1)


# -- MatMul -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ane-int8", "h100-int8", "h100-fp8", "edge-int4"])
def test_matmul_of_activations_composes(name):
    p = profiles.get(name)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 3, 5, 16)).astype(np.float32)
    bm = rng.standard_normal((2, 3, 16, 4)).astype(np.float32)
    mm = layers.MatMul(name)
    y = mm.run(a, bm)
    f = p.activations.format
    aq, bq = fp.quantize(a, f), fp.quantize(bm, f)
    if isinstance(f, fp.FloatFormat):
        acc = np.stack([np.stack([fp.fp8_matmul(aq.codes[i, j], bq.codes[i, j], scale_a=aq.scale,
                                                scale_b=bq.scale, acc=p.accumulator)
                                  for j in range(3)]) for i in range(2)])
        _same(y, _bf16(acc))
        return
    acc = fp.matmul(aq.codes, bq.codes, "int8", acc=p.accumulator)
    s = np.float32(aq.scale) * np.float32(bq.scale)
    if p.output.type == "int8":
        oq = fp.quantize(acc * np.float64(s), "int8")
        m, sh = fp.quantize_multiplier(np.float64(s) / np.float64(oq.scale))
        codes = fp.requantize(acc, m, sh, out_fmt="int8", method=p.output.method)
        _same(y, codes.astype(np.float32) * oq.scale)
    else:
        want = acc.astype(np.float32) * s
        _same(y, _bf16(want) if p.output.type == "bfloat16" else want.astype(np.float16).astype(np.float32))


# -- Conv2d -------------------------------------------------------------------

def _im2col_reference(x, kh, kw, stride, pads, dilation):
    """Loops, for the test: (N*OH*OW, C*kh*kw) patches in (c, i, j) order."""
    N, C, H, W = x.shape
    t, l, bo, r = pads
    xp = np.zeros((N, C, H + t + bo, W + l + r), x.dtype)
    xp[:, :, t:t + H, l:l + W] = x
    OH = (H + t + bo - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    OW = (W + l + r - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    rows = []
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                rows.append([xp[n, c, oh * stride[0] + i * dilation[0], ow * stride[1] + j * dilation[1]]
                             for c in range(C) for i in range(kh) for j in range(kw)])
    return np.array(rows, x.dtype), OH, OW


@pytest.mark.parametrize("name", ["ane-int8", "h100-int8", "h100-fp8", "edge-int4", "fp32"])
@pytest.mark.parametrize("cfg", [dict(stride=1, padding=1, dilation=1, groups=1),
                                 dict(stride=2, padding=(0, 1, 1, 2), dilation=1, groups=3),
                                 dict(stride=1, padding=2, dilation=2, groups=6)])
def test_conv2d_equals_linear_on_im2col(name, cfg):
    """A convolution is Linear on the im2col matrix (built by loops here), per
    conv group, with the weights quantized once as a (C/g*kh*kw) x O matrix and
    the input and output quantized as whole tensors."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, 7, 6)).astype(np.float32)
    w = rng.standard_normal((6, 6 // cfg["groups"], 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    conv = layers.Conv2d(name, w, b, **cfg)
    y = conv.run(x)
    tr = conv.trace
    pads = cfg["padding"] if isinstance(cfg["padding"], tuple) else (cfg["padding"],) * 4
    s, d, g = (cfg["stride"],) * 2, (cfg["dilation"],) * 2, cfg["groups"]
    Cg = Og = 6 // g
    p = profiles.get(name)
    w_kn = w.reshape(6, -1).T
    outs = []
    for gi in range(g):
        cols, OH, OW = _im2col_reference(x[:, gi * Cg:(gi + 1) * Cg], 3, 3, s, pads, d)
        lo, hi = gi * Og, (gi + 1) * Og
        fc = layers.Linear(p, w_kn[:, lo:hi], b[lo:hi],
                           weights=None if p.is_float else _slice_weights(conv.wq, lo, hi))
        if not p.is_float:
            fc.set_input_quantization(tr.x.scale, tr.x.zero_point)
            if p.output.type == "int8":
                fc.set_output_quantization(tr.output_scale, int(tr.output_zero_point))
        outs.append(fc.run(cols).reshape(2, OH, OW, Og))
    want = np.concatenate(outs, axis=-1).transpose(0, 3, 1, 2)
    if p.is_float:          # BLAS: the sum order follows the shapes, not a model
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    else:
        _same(y, want)


def _slice_weights(wq, lo, hi):
    sc = wq.scale if np.ndim(wq.scale) == 0 else wq.scale[..., lo:hi]
    zp = wq.zero_point if np.ndim(wq.zero_point) == 0 else np.asarray(wq.zero_point)[..., lo:hi]
    return fp.QTensor(wq.codes[:, lo:hi], wq.fmt, scale=sc, zero_point=zp, axis=wq.axis,
                      group_size=wq.group_size)


# -- Blackwell block-scaled profiles ----------------------------------------------

def test_b200_fp8_equals_the_tensor_core_preset():
    """b200-fp8 runs Blackwell's f8f6f4 product; the same bits come out of fp8_matmul
    with the TensorCoreAccumulator.b200_fp8() preset (25 fraction bits, no promotion)."""
    x, w, b = _layer(3, k=200)
    y, tr = _run("b200-fp8", x, w, b)
    xq, wq = fp.quantize(x, "e4m3"), fp.quantize(w, "e4m3")
    acc = fp.fp8_matmul(xq.codes, wq.codes, scale_a=xq.scale, scale_b=wq.scale,
                        acc=fp.TensorCoreAccumulator.b200_fp8())
    _same(y, _bf16(acc + b))


@pytest.mark.parametrize("name,elem,kw", [
    ("b200-mxfp8", "e4m3", dict(scale_rule="rceil")),
    ("b200-mxfp4", "e2m1", dict(scale_rule="floor")),
    ("b200-nvfp4", None, {})])
def test_b200_block_scaled_linear_composes(name, elem, kw):
    from fixedpoint import blockscaled as bs
    x, w, b = _layer(4, k=160)                     # K = 160: a ragged last block for the MX kinds
    y, tr = _run(name, x, w, b)
    if elem is None:
        xq, wq = bs.nvfp4_quantize(x, axis=1), bs.nvfp4_quantize(w, axis=0)
        kind = "mxf4nvf4"
    else:
        xq, wq = bs.mx_quantize(x, elem, axis=1, **kw), bs.mx_quantize(w, elem, axis=0, **kw)
        kind = "mxf8f6f4" if elem == "e4m3" else "mxf4"
    acc = bs.blockscaled_matmul(xq, wq, kind=kind)
    _same(y, _bf16(acc + b))
    np.testing.assert_array_equal(tr.x.codes, xq.codes)
    assert tr.clipped_inputs >= 0 and tr.dims == (1, 7, 160, 24)


def test_b200_profiles_refuse_inconsistent_block_scales():
    import dataclasses
    p = profiles.get("b200-mxfp4")
    with pytest.raises(ValueError, match="'mxf4' takes E2M1 elements"):
        dataclasses.replace(p, weights=fp.QuantSpec("e4m3", "group", 32, scale_format="e8m0"),
                            activations=fp.QuantSpec("e4m3", "group", 32, scale_format="e8m0", static=False))
    with pytest.raises(ValueError, match="both block-scaled or neither"):
        dataclasses.replace(p, activations=fp.QuantSpec("e2m1"))
    with pytest.raises(ValueError, match="NVFP4 .* is E2M1 elements in groups of 16"):
        fp.QuantSpec("e2m1", "group", 32, scale_format="e4m3")
    with pytest.raises(ValueError, match="scale_rule"):
        fp.QuantSpec("e4m3", "group", 32, scale_format="e8m0", scale_rule="magic")
    with pytest.raises(ValueError, match="per-group scales are computed per call"):
        dataclasses.replace(p, activations=dataclasses.replace(p.activations, static=True))


def _ort_dynamic_quantize_ref(x):
    """ONNX Runtime's DynamicQuantizeLinear, from its operator spec: uint8,
    scale = (max(x, 0) - min(x, 0)) / 255, zero point = round(-min / scale),
    codes = saturate(round(x / scale) + zero point), ties to even."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    s = np.float32((np.float32(hi) - np.float32(lo)) / np.float32(255))
    zp = int(np.clip(np.rint(-np.float32(lo) / s), 0, 255))
    return np.clip(np.rint(x / s) + zp, 0, 255).astype(np.int64), s, zp


def test_u8s8_linear_against_a_vpmaddubsw_reference():
    """Linear under x86-avx2-u8s8 against a slow reference written from the
    instruction descriptions: uint8 x int8 products of k = 2p and 2p + 1 summed
    and saturated to int16 (vpmaddubsw), pairs added in wrapping int32
    (vpmaddwd with ones, vpaddd), then the zero-point terms of the row and
    column sums off in int32, float32(acc) * float32(sx * sw) + bias."""
    p = profiles.get("x86-avx2-u8s8")
    rng = np.random.default_rng(86)
    for m, k, n in ((3, 9, 5), (4, 32, 7)):
        x = (rng.random((m, k)) * 6 - 1).astype(np.float32)       # zero point about 43
        x[0, :4] = 5.0                                            # codes 255: pairs clamp
        w = rng.standard_normal((k, n)).astype(np.float32)
        w[:4, 0] = 2 * np.abs(w).max()                            # codes 127
        b = rng.standard_normal(n).astype(np.float32)
        xc, sx, zx = _ort_dynamic_quantize_ref(x)
        sw = np.float32(np.abs(w).max() / np.float32(127))
        wc = np.clip(np.rint(w / sw), -127, 127).astype(np.int64)
        want = np.empty((m, n), np.float32)
        clamped = 0
        for i in range(m):
            for j in range(n):
                acc = 0
                for q in range(0, k, 2):
                    pair = sum(int(xc[i, t]) * int(wc[t, j]) for t in (q, q + 1) if t < k)
                    clamped += not -32768 <= pair <= 32767
                    acc = ref.wrap_int(acc + ref.saturate_int(pair, -32768, 32767), 32)
                acc = ref.wrap_int(acc - zx * int(wc[:, j].sum()), 32)
                want[i, j] = np.float32(acc) * np.float32(sx * sw) + b[j]
        got = layers.Linear(p, w, b).run(x)
        assert clamped > 0
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_u8s8_product_of_activations_runs_in_float32_or_exact():
    """x86-avx2-u8s8 leaves a product of two activations in float32 (as
    quantize_dynamic does); quantized anyway, uint8 x uint8 takes no pair clamp."""
    rng = np.random.default_rng(3)
    a = (rng.random((2, 5, 33)) * 4).astype(np.float32)
    bm = (rng.random((2, 33, 6)) * 4).astype(np.float32)
    p = profiles.get("x86-avx2-u8s8")
    np.testing.assert_array_equal(layers.MatMul(p).run(a, bm), np.matmul(a, bm))
    q = dataclasses.replace(p, activation_matmul="quantized")
    plain = dataclasses.replace(q, accumulator=fp.Accumulator(32, "wrap"))
    mm, mp = layers.MatMul(q), layers.MatMul(plain)
    np.testing.assert_array_equal(mm.run(a, bm), mp.run(a, bm))
    np.testing.assert_array_equal(mm.trace.accumulator, mp.trace.accumulator)
    assert mm.trace.overflow_count == 0
