"""fixedpoint's integer layers against LiteRT itself, bit for bit, on its three x86 kernel paths.

LiteRT (``ai-edge-litert``) computes an INT8 layer three ways on x86, chosen by
the interpreter's op resolver (``litert_models.PATHS``): the default XNNPACK
delegate, the reference kernels and the optimized builtin kernels.  Each test
builds a one-operator ``.tflite`` model in memory (``litert_models``), runs it,
and compares every output code with fixedpoint's composition of the same layer:
the int32 accumulator (``qlinear``, ``matmul`` or an im2col in NumPy int64 for
convolutions: inputs minus their zero point times symmetric weights, the bias as
the register's initial value, wrapping in 32 bits as LiteRT's registers do),
then ``requantize`` with the path's method (``litert_models.engine_methods``)
and the multipliers the path derives from the float32 scales
(``litert_models.engine_multipliers``), the output zero point and the
activation's clamp.

Accumulators are placed on the rounding ties of every method (the doubling high
multiply's, the final shift's, single rounding's, and exact ties of the float
products for dyadic multipliers), next to and past +-2^31, for multipliers from
1e-7 to 4; each tie test also checks that every *other* method disagrees with
LiteRT somewhere on the same inputs, so the ties do tell the methods apart.

One behaviour is set aside (and checked to be one of its two possible values):
XNNPACK's AVX-512 GEMM kernels (FULLY_CONNECTED, CONV_2D) convert the float32
product to int32 (INT32_MIN below int32) and add a negative output zero point
with a wrapping int32 add, so a product at or below about -2^31 comes out at the
top of the range; its AVX2 kernels and its depthwise kernels add with 16-bit
saturation, and ONNX clamps in float first, as ``method="float"`` does: the
bottom of the range.
"""
import math
from collections import Counter

import numpy as np
import pytest

import fixedpoint as fp
from fixedpoint import _reference as ref
from extras import need

need("ai_edge_litert", "pip install ai-edge-litert")

import litert_models as L  # noqa: E402

WRAP = fp.Accumulator(32, "wrap")          # LiteRT's int32 accumulators wrap
METHODS = ("double", "single", "ruy", "float", "float64")
MATCHED = Counter()                        # (operator, path, method) -> elements compared


@pytest.fixture(scope="module", autouse=True)
def _summary():
    """Prints how many elements each path matched (visible with ``pytest -s``)."""
    yield
    for (op, path, method), n in sorted(MATCHED.items()):
        print(f"litert {op:16s} {path:9s} {method:7s} {n:7d} elements bit-exact")


def _wrap32(a):
    return (np.asarray(a, np.int64) + 2**31) % 2**32 - 2**31


def _params(rng, channels, per_channel=True, lo=-7.0, hi=np.log10(4.0)):
    """Scales giving real multipliers 10^U(lo, hi); nonzero zero points."""
    xs = np.float32(rng.uniform(0.005, 0.05))
    ys = np.float32(10 ** rng.uniform(-2, 0))
    reals = 10 ** rng.uniform(lo, hi, channels if per_channel else 1)
    ws = (reals * float(ys) / float(xs)).astype(np.float32)
    return dict(x_scale=xs, x_zero_point=int(rng.integers(-30, 30)), w_scales=ws, y_scale=ys,
                y_zero_point=int(rng.integers(-30, 30)))


def _multipliers(method, reals):
    if method in ("float", "float64"):
        return np.asarray(reals, np.float64), 0
    return fp.quantize_multiplier(np.asarray(reals, np.float64))


def requantize_as(acc, op, path, *, x_scale, w_scales, y_scale, y_zero_point, activation="none",
                  methods=None, **_):
    """fixedpoint's codes for int32 accumulators ``acc`` (..., C), the way ``path`` requantizes."""
    C = acc.shape[-1]
    reals = np.broadcast_to(L.engine_multipliers(x_scale, w_scales, y_scale, op=op, path=path), (C,))
    methods = L.engine_methods(op, path, C) if methods is None else methods
    out = np.empty(acc.shape, np.int8)
    for method in sorted(set(methods)):
        idx = [c for c in range(C) if methods[c] == method]
        m, s = _multipliers(method, reals[idx])
        out[..., idx] = fp.requantize(acc[..., idx], m, s, zero_point=y_zero_point, out_fmt="int8",
                                      method=method)
    lo, hi = L.activation_range(activation, y_scale, y_zero_point)
    return np.clip(out, lo, hi)


def _xnnpack_wrap_corner(acc, op, path, p):
    """Elements where XNNPACK's AVX-512 GEMM wraps (see the module notes)."""
    if path != "xnnpack" or op == "depthwise_conv2d" or p["y_zero_point"] >= 0:
        return np.zeros(acc.shape, bool)
    C = acc.shape[-1]
    scale = np.broadcast_to(L.engine_multipliers(p["x_scale"], p["w_scales"], p["y_scale"], op=op,
                                                 path=path), (C,))
    # the int32 value (INT32_MIN when the product is below int32) plus zp < -2^31
    v = np.rint(acc.astype(np.float32) * scale).astype(np.float64)
    return v < -2.0**31 - p["y_zero_point"]


def _compare(got, acc, op, path, p, activation="none"):
    want = requantize_as(acc, op, path, activation=activation, **p)
    corner = _xnnpack_wrap_corner(acc, op, path, p)
    if corner.any():
        lo, hi = L.activation_range(activation, p["y_scale"], p["y_zero_point"])
        assert set(np.unique(got[corner])) <= {lo, hi}      # saturated (AVX2) or wrapped (AVX-512)
    keep = ~corner
    bad = np.argwhere((got != want) & keep)
    assert bad.size == 0, (f"{op} {path}: {len(bad)} of {got.size} differ, first at {tuple(bad[0])}: "
                           f"acc {acc[tuple(bad[0])]}, LiteRT {got[tuple(bad[0])]}, "
                           f"fixedpoint {want[tuple(bad[0])]}")
    methods = L.engine_methods(op, path, acc.shape[-1])
    for c, m in enumerate(methods):
        MATCHED[(op, path, m)] += int(keep[..., c].sum())
    return want


# ---------------------------------------------------------------------------
# Layers on random data

@pytest.mark.parametrize("path", L.PATHS)
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("batch,activation", [(1, "none"), (7, "relu"), (9, "none")])
def test_fully_connected(path, per_channel, batch, activation, rng):
    N, K = 37, 70
    p = _params(rng, N, per_channel, lo=-4.5, hi=-1.0)
    x = rng.integers(-128, 128, (batch, K)).astype(np.int8)
    w = rng.integers(-127, 128, (N, K)).astype(np.int8)
    b = rng.integers(-2**16, 2**16, N).astype(np.int32)
    got = L.fully_connected(x, w, b, path=path, activation=activation, **p)
    # qlinear is the whole layer in one call (LiteRT's register: 32 bits, wrapping)
    reals = np.broadcast_to(L.engine_multipliers(p["x_scale"], p["w_scales"], p["y_scale"],
                                                 op="fully_connected", path=path), (N,))
    [method] = set(L.engine_methods("fully_connected", path, N))
    m, s = _multipliers(method, reals)
    y = fp.qlinear(x, w.T, "int8", bias_q=b, x_zero_point=p["x_zero_point"], multiplier=m, shift=s,
                   out_zero_point=p["y_zero_point"], out_fmt="int8", acc=WRAP, method=method)
    lo, hi = L.activation_range(activation, p["y_scale"], p["y_zero_point"])
    np.testing.assert_array_equal(got, np.clip(y, lo, hi))
    # and the same through matmul + requantize_as
    acc = fp.matmul(x.astype(np.int16) - p["x_zero_point"], w.T.astype(np.int16), "int9", acc=WRAP,
                    c=b)
    _compare(got, acc, "fully_connected", path, p, activation)


def _im2col_conv(x, w, b, x_zp, *, stride, padding, dilation, depthwise=False, depth_multiplier=1):
    """The exact int32 (wrapped) accumulators of CONV_2D / DEPTHWISE_CONV_2D, NHWC."""
    N, H, W, C = x.shape
    KH, KW = w.shape[1], w.shape[2]
    OH, pt = L.conv_output_size(H, KH, stride[0], dilation[0], padding)
    OW, pl = L.conv_output_size(W, KW, stride[1], dilation[1], padding)
    Hp = max(pt + H, (OH - 1) * stride[0] + (KH - 1) * dilation[0] + 1)
    Wp = max(pl + W, (OW - 1) * stride[1] + (KW - 1) * dilation[1] + 1)
    xp = np.zeros((N, Hp, Wp, C), np.int64)                       # padding: x - zp = 0
    xp[:, pt:pt + H, pl:pl + W, :] = x.astype(np.int64) - x_zp
    oh = np.arange(OH)[:, None] * stride[0] + np.arange(KH)[None, :] * dilation[0]   # OH x KH
    ow = np.arange(OW)[:, None] * stride[1] + np.arange(KW)[None, :] * dilation[1]   # OW x KW
    cols = xp[:, oh[:, None, :, None], ow[None, :, None, :], :]   # N, OH, OW, KH, KW, C
    if depthwise:
        wk = w[0].astype(np.int64).reshape(KH, KW, C, depth_multiplier)
        acc = np.einsum("nhwijc,ijcm->nhwcm", cols, wk).reshape(N, OH, OW, C * depth_multiplier)
    else:
        acc = np.einsum("nhwijc,oijc->nhwo", cols, w.astype(np.int64))
    return _wrap32(acc + b.astype(np.int64))


CONV_CASES = [  # kernel, stride, padding, dilation
    ((3, 3), (1, 1), "SAME", (1, 1)),
    ((3, 3), (2, 2), "SAME", (1, 1)),
    ((3, 2), (2, 1), "VALID", (1, 1)),
    ((3, 3), (1, 1), "VALID", (2, 2)),
    ((1, 1), (1, 1), "VALID", (1, 1)),
]


@pytest.mark.parametrize("path", L.PATHS)
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv2d(path, case, rng):
    (KH, KW), stride, padding, dilation = CONV_CASES[case]
    per_channel = case != 2
    O, C = 11, 6
    p = _params(rng, O, per_channel, lo=-4.0, hi=-1.0)
    x = rng.integers(-128, 128, (2, 13, 11, C)).astype(np.int8)
    w = rng.integers(-127, 128, (O, KH, KW, C)).astype(np.int8)
    b = rng.integers(-2**15, 2**15, O).astype(np.int32)
    conv = dict(stride=stride, padding=padding, dilation=dilation)
    got = L.conv2d(x, w, b, path=path, **conv, **p)
    acc = _im2col_conv(x, w, b, p["x_zero_point"], **conv)
    assert got.shape == acc.shape
    _compare(got, acc, "conv2d", path, p)


@pytest.mark.parametrize("path", L.PATHS)
@pytest.mark.parametrize("case,depth_multiplier,channels", [(0, 1, 8), (1, 2, 5), (3, 1, 13),
                                                            (2, 3, 7), (4, 1, 21)])
def test_depthwise_conv2d(path, case, depth_multiplier, channels, rng):
    """Channel counts not multiples of 8: the optimized path's two requantizers."""
    (KH, KW), stride, padding, dilation = CONV_CASES[case]
    OC = channels * depth_multiplier
    p = _params(rng, OC, case != 2, lo=-3.5, hi=-1.0)
    x = rng.integers(-128, 128, (2, 13, 11, channels)).astype(np.int8)
    w = rng.integers(-127, 128, (1, KH, KW, OC)).astype(np.int8)
    b = rng.integers(-2**15, 2**15, OC).astype(np.int32)
    conv = dict(stride=stride, padding=padding, dilation=dilation)
    got = L.depthwise_conv2d(x, w, b, path=path, depth_multiplier=depth_multiplier, **conv, **p)
    acc = _im2col_conv(x, w, b, p["x_zero_point"], depthwise=True,
                       depth_multiplier=depth_multiplier, **conv)
    assert got.shape == acc.shape
    _compare(got, acc, "depthwise_conv2d", path, p)


# ---------------------------------------------------------------------------
# Ties, extremes and wrapping

def _solve(a, r, mod):
    """Solutions x of a*x = r (mod mod) as (x0, step), or None."""
    g = math.gcd(a, mod)
    if r % g:
        return None
    m = mod // g
    return ((r // g) * pow(a // g, -1, m)) % m if m > 1 else 0, m


def _near(center, sol, count):
    if sol is None:
        return []
    x0, step = sol
    k = (center - x0) // step
    return [x0 + (k + j) * step for j in range(-(count // 2), count - count // 2)]


def _final_shift_ties(q, s, center, count):
    """Accumulators whose high multiply lands on a tie of the final right shift
    (``v = 2^(r-1) mod 2^r``), next to ``center``."""
    from fractions import Fraction
    left, right = max(s, 0), max(-s, 0)
    out = []
    if not right or not q:
        return out
    v0 = ref.gemmlowp_srdhm(int(_wrap32(center << left)), q)
    for k in range(-(count // 2), count - count // 2):
        target = ((v0 >> right) + k << right) + (1 << (right - 1))
        x = int(Fraction(target * 2**31, q * 2**left))
        for xx in range(x - 3, x + 4):
            if ref.gemmlowp_srdhm(int(_wrap32(xx << left)), q) == target:
                out.append(xx)
                break
    return out


def _tie_accs(real, center, count=4):
    """Accumulators next to ``center`` that put some method on a rounding tie.

    Found from the definitions with Python integers (``ref``'s transcriptions
    of TFLite's QuantizeMultiplier and gemmlowp's high multiply), not from the
    code under test."""
    from fractions import Fraction
    q, s = ref.tflite_quantize_multiplier(float(real))
    left = max(s, 0)
    out = []
    if q:
        out += _near(center, _solve(q << left, 1 << 30, 1 << 31), count)     # high multiply
        t = 31 - s
        out += _near(center, _solve(q, 1 << (t - 1), 1 << t), count)         # single rounding
        out += _final_shift_ties(q, s, center, count)
    fr = Fraction(float(real))                                                # exact float ties
    if fr.denominator > 1:
        out += _near(center, _solve(fr.numerator % fr.denominator, fr.denominator // 2,
                                    fr.denominator), count)
    return [v for v in out if -2**31 <= v < 2**31]


_WINDOW = 120 * 127 + 120               # what two int8 inputs (weights 1, 127) can add


def _tie_targets(reals, rng, per_channel=12):
    """Per channel: accumulator targets (exact sums, may pass +-2^31) within _WINDOW.

    Channel c uses multiplier reals[c]; each multiplier gets channels at the
    ties next to 0, next to +-2^31 (inside), and across +-2^31 (the int32 sum
    wraps)."""
    chans = []
    for c, r in enumerate(reals):
        for center in (int(rng.integers(-2**20, 2**20)), 2**31 - 2**22, -2**31 + 2**22,
                       2**31 - 1, -2**31):
            if abs(center) >= 2**31 - 1:            # the extremes, and past them (wrap)
                step = int(rng.integers(1, 200))
                t = [center + k * step for k in range(-per_channel // 2, per_channel // 2)]
            else:
                ties = sorted(set(_tie_accs(r, center)))
                if not ties:
                    ties = [center]
                anchor = ties[int(rng.integers(len(ties)))]
                t = [v for v in ties if abs(v - anchor) <= _WINDOW // 2]
                t += [anchor + d for d in (-2, -1, 1, 2)]
                t = (t * per_channel)[:per_channel]
            chans.append((c, t))
    return chans


def _realize(chans, x_zp):
    """Inputs and per-channel bias such that the exact sums are the targets, with a
    (channels, 2 * channels) one-hot weight matrix (1 and 127 per channel)."""
    T = np.array([t for _, t in chans], np.int64)                 # C x P, exact sums
    bias = np.clip((T.max(1) + T.min(1)) // 2, -2**31, 2**31 - 1)
    d = T - bias[:, None]
    hi = np.round(d / 127).astype(np.int64)
    lo = d - 127 * hi
    assert np.abs(hi).max() <= 120 and np.abs(lo).max() <= 120
    return T, bias.astype(np.int32), (lo + x_zp).T, (hi + x_zp).T  # P x C each


def _tie_params(rng, n_random=10):
    """Multipliers 1e-7..4: log-uniform ones and dyadic ones (exact float ties)."""
    reals = list(10 ** rng.uniform(-7, np.log10(4), n_random))
    reals += [3 * 2.0**-5, 5 * 2.0**-9, 2.0**-1, 1.0, 2.0, 3.0, 7 * 2.0**-20, 2.0**-22, 255 * 2.0**-30]
    xs, ys = np.float32(3 * 2.0**-7), np.float32(2.0**-4)     # dyadic: the products stay exact
    ws = (np.asarray(reals) * float(ys) / float(xs)).astype(np.float32)
    return xs, ws, ys


def _check_ties(got, acc, op, path, p):
    """LiteRT equals the path's composition, and every other method differs somewhere."""
    _compare(got, acc, op, path, p)
    keep = ~_xnnpack_wrap_corner(acc, op, path, p)
    own = set(L.engine_methods(op, path, acc.shape[-1]))
    for other in METHODS:
        if other in own:
            continue
        alt = requantize_as(acc, op, path, methods=[other] * acc.shape[-1], **p)
        assert np.any((alt != got) & keep), f"{op} {path}: the ties do not separate {other!r}"


@pytest.mark.parametrize("path", L.PATHS)
@pytest.mark.parametrize("y_zero_point", [-3, 4])
def test_fully_connected_ties_and_extremes(path, y_zero_point, rng):
    xs, ws, ys = _tie_params(rng, 16)
    x_zp = 5
    chans = _tie_targets(L.engine_multipliers(xs, ws, ys, op="fully_connected", path=path), rng,
                         per_channel=16)
    T, bias, lo, hi = _realize(chans, x_zp)
    C, P = T.shape
    x = np.empty((P, 2 * C), np.int8)
    x[:, 0::2], x[:, 1::2] = lo, hi
    w = np.zeros((C, 2 * C), np.int8)
    w[np.arange(C), 2 * np.arange(C)], w[np.arange(C), 2 * np.arange(C) + 1] = 1, 127
    wsc = ws[[c for c, _ in chans]]
    p = dict(x_scale=xs, x_zero_point=x_zp, w_scales=wsc, y_scale=ys, y_zero_point=y_zero_point)
    got = L.fully_connected(x, w, bias, path=path, **p)
    acc = fp.matmul(x.astype(np.int16) - x_zp, w.T.astype(np.int16), "int9", acc=WRAP, c=bias)
    np.testing.assert_array_equal(acc, _wrap32(T.T))               # the targets, wrapped
    _check_ties(got, acc, "fully_connected", path, p)


@pytest.mark.parametrize("path", L.PATHS)
def test_conv2d_ties_and_extremes(path, rng):
    """A 1x1 convolution with one-hot weights: each output channel its own ties."""
    xs, ws, ys = _tie_params(rng, 6)
    x_zp = -7
    chans = _tie_targets(L.engine_multipliers(xs, ws, ys, op="conv2d", path=path), rng,
                         per_channel=10)
    T, bias, lo, hi = _realize(chans, x_zp)
    C, P = T.shape
    x = np.empty((1, 2, P // 2, 2 * C), np.int8)
    x[..., 0::2], x[..., 1::2] = lo.reshape(2, P // 2, C), hi.reshape(2, P // 2, C)
    w = np.zeros((C, 1, 1, 2 * C), np.int8)
    w[np.arange(C), 0, 0, 2 * np.arange(C)], w[np.arange(C), 0, 0, 2 * np.arange(C) + 1] = 1, 127
    p = dict(x_scale=xs, x_zero_point=x_zp, w_scales=ws[[c for c, _ in chans]], y_scale=ys,
             y_zero_point=-3)
    got = L.conv2d(x, w, bias, path=path, **p)
    acc = _im2col_conv(x, w, bias, x_zp, stride=(1, 1), padding="VALID", dilation=(1, 1))
    np.testing.assert_array_equal(acc.reshape(P, C), _wrap32(T.T))
    _check_ties(got, acc, "conv2d", path, p)


@pytest.mark.parametrize("path", L.PATHS)
def test_depthwise_conv2d_ties_and_extremes(path, rng):
    """A 1x2 depthwise kernel with stride 2 (weights 1 and 127): each output
    pixel sums its own two inputs; the channel count is not a multiple of 8."""
    xs, ws, ys = _tie_params(rng, 4)
    x_zp = 3
    reals = L.engine_multipliers(xs, ws, ys, op="depthwise_conv2d", path=path)
    chans = _tie_targets(reals, rng, per_channel=10)
    # 8k + 5 channels; the last 5 (requantized one at a time on the optimized path)
    # on ties of the final shift below zero with unsaturated outputs (about -60),
    # where "ruy" (toward +inf) and "double" (away from zero) differ
    chans = chans[:(len(chans) - 5) // 8 * 8]
    small = [c for c in range(len(reals)) if reals[c] < 0.25]
    for c in small[:5]:
        q, sh = ref.tflite_quantize_multiplier(float(reals[c]))
        ties = _final_shift_ties(q, sh, int(-60 / reals[c]), 6)
        anchor = ties[len(ties) // 2]
        t = [anchor] + [v for v in ties if 0 < abs(v - anchor) <= _WINDOW // 2]
        t += [anchor + d for d in (-2, -1, 1, 2)]
        chans.append((c, (t * 10)[:10]))
    assert len(chans) % 8 == 5
    T, bias, lo, hi = _realize(chans, x_zp)
    C, P = T.shape
    x = np.empty((1, 1, 2 * P, C), np.int8)
    x[0, 0, 0::2], x[0, 0, 1::2] = lo, hi
    w = np.zeros((1, 1, 2, C), np.int8)
    w[0, 0, 0], w[0, 0, 1] = 1, 127
    p = dict(x_scale=xs, x_zero_point=x_zp, w_scales=ws[[c for c, _ in chans]], y_scale=ys,
             y_zero_point=-3)
    got = L.depthwise_conv2d(x, w, bias, path=path, stride=(1, 2), **p)
    acc = _im2col_conv(x, w, bias, x_zp, stride=(1, 2), padding="VALID", dilation=(1, 1),
                       depthwise=True)
    np.testing.assert_array_equal(acc[0, 0], _wrap32(T.T))
    _check_ties(got, acc, "depthwise_conv2d", path, p)


def test_harness_refuses_a_silent_fallback():
    """A layer XNNPACK rejects (requantization scale >= 256) runs on the builtin
    kernels: the harness must say so rather than return another path's codes."""
    w = np.ones((2, 3), np.int8)
    p = dict(x_scale=1.0, x_zero_point=0, w_scales=np.float32(300.0), y_scale=1.0, y_zero_point=0)
    with pytest.raises(RuntimeError, match="XNNPACK"):
        L.fully_connected(np.zeros((1, 3), np.int8), w, None, path="xnnpack", **p)


def _search_scales(want, rng, real, spread=0.5, tries=5000):
    """Float32 (x_scale, w_scale, y_scale) near the real multiplier ``real`` that satisfy ``want``."""
    for _ in range(tries):
        xs = np.float32(rng.uniform(0.01, 0.05))
        ys = np.float32(rng.uniform(0.01, 0.05))
        w0 = np.float32(float(ys) / float(xs) * real * rng.uniform(1.0 - spread, 1.0))
        for ws in (w0, np.nextafter(w0, np.float32(0)), np.nextafter(w0, np.float32(1e9))):
            if want(xs, ws, ys):
                return xs, ws, ys
    raise AssertionError("no float32 scales found")


def _fc_on_targets(groups, x_zp, w_scale, per_channel=False, **p):
    """A FULLY_CONNECTED whose channel c takes the sums groups[c] (one weight scale,
    stored per tensor or repeated per channel)."""
    T, bias, lo, hi = _realize([(0, list(g)) for g in groups], x_zp)
    C = T.shape[0]
    x = np.empty((T.shape[1], 2 * C), np.int8)
    x[:, 0::2], x[:, 1::2] = lo, hi
    w = np.zeros((C, 2 * C), np.int8)
    w[np.arange(C), 2 * np.arange(C)], w[np.arange(C), 2 * np.arange(C) + 1] = 1, 127
    ws = np.full(C, w_scale, np.float32) if per_channel else np.float32(w_scale)
    return x, w, bias, dict(x_zero_point=x_zp, w_scales=ws, **p)


@pytest.mark.parametrize("path,zp", [("optimized", 4), ("optimized", -3), ("reference", 4)])
def test_zero_point_add_wraps_like_litert(path, zp, rng):
    """Q31 multiplier 2^31 - 1 (a real multiplier just below 1): the doubling high
    multiply of 2^31 - 1 is 2^31 - 2, of -2^31 is -2^31 + 1, and the zero point
    is then added in int32, wrapping to the other end of the range.  (Per-channel
    weight scales: the per-tensor FULLY_CONNECTED rounds the scale product to
    float32 first, and a ratio of two float32 values is never within 2^-31 of 1.)"""
    op = "fully_connected" if path == "optimized" else "conv2d"

    def q_is_max(xs, ws, ys):                   # the multiplier this path derives
        real = float(L.engine_multipliers(xs, [ws, ws], ys, op=op, path=path)[0])
        return ref.tflite_quantize_multiplier(real) == (2**31 - 1, 0)
    xs, ws, ys = _search_scales(q_is_max, rng, real=1 - 2.0**-31, spread=0.0)
    groups = [[2**31 - 1 - k for k in range(8)], [-2**31 + k for k in range(8)]]
    x, w, b, p = _fc_on_targets(groups, 0, ws, per_channel=True, x_scale=xs, y_scale=ys,
                                y_zero_point=zp)
    if op == "fully_connected":
        got = L.fully_connected(x, w, b, path=path, **p)
        acc = fp.matmul(x.astype(np.int16), w.T.astype(np.int16), "int9", acc=WRAP, c=b)
    else:                                       # the reference CONV_2D ("double"), 1x1
        x4, w4 = x.reshape(1, 1, -1, 4), w.reshape(2, 1, 1, 4)
        got = L.conv2d(x4, w4, b, path=path, **p).reshape(-1, 2)
        acc = _im2col_conv(x4, w4, b, 0, stride=(1, 1), padding="VALID", dilation=(1, 1))
        acc = acc.reshape(-1, 2)
    _compare(got, acc, op, path, p)
    # worked by hand: 2^31 - 1 - k gives 2^31 - 2 - k, + 4 wraps for k <= 2;
    # -2^31 + k gives -2^31 + 1 + k, - 3 wraps for k <= 1
    if zp > 0:
        assert got[:, 0].tolist() == [-128] * 3 + [127] * 5
    else:
        assert got[:, 1].tolist() == [127] * 2 + [-128] * 6


def test_fully_connected_per_tensor_multiplier_of_each_path(rng):
    """Per-tensor FULLY_CONNECTED: the optimized path rounds input_scale *
    filter_scale to float32 before dividing in double (GetQuantizedConvolutionMultipler),
    per-channel weights and the reference path multiply in double.  Multipliers
    near 5e-8 (outputs stay unsaturated for accumulators near 2^31), scales where
    the two Q31 multipliers differ, and accumulators on the final shift's ties
    of the float32-product multiplier, where the difference shows."""
    def q_of(xs, ws, ys, f32):
        prod = np.float64(xs * ws) if f32 else np.float64(xs) * np.float64(ws)
        return ref.tflite_quantize_multiplier(float(prod / np.float64(ys)))

    for _ in range(50):
        xs, ws, ys = _search_scales(lambda a, b, c: q_of(a, b, c, True) != q_of(a, b, c, False), rng,
                                    real=5e-8)
        (qa, sa), (qb, sb) = q_of(xs, ws, ys, True), q_of(xs, ws, ys, False)
        real_a = float(np.float64(xs * ws) / np.float64(ys))
        ties = [t for t in _tie_accs(real_a, 2**31 - 2**22, count=40) if 2**30 < t < 2**31 - 2**21]
        differ = [t for t in ties if ref.requantize_value(t, "ruy", qa, sa, 0, -128, 127)
                  != ref.requantize_value(t, "ruy", qb, sb, 0, -128, 127)]
        if differ:
            break
    else:
        raise AssertionError("no accumulator separates the two multipliers")
    group = [t for t in ties if abs(t - differ[0]) <= _WINDOW // 2][:12]
    x, w, b, p = _fc_on_targets([group], 0, ws, x_scale=xs, y_scale=ys, y_zero_point=0)
    acc = fp.matmul(x.astype(np.int16), w.T.astype(np.int16), "int9", acc=WRAP, c=b)
    got = L.fully_connected(x, w, b, path="optimized", **p)
    _compare(got, acc, "fully_connected", "optimized", p)
    # the double-product multiplier (the per-channel rule) gives other codes here
    other = fp.requantize(acc, qb, sb, out_fmt="int8", method="ruy")
    assert np.any(other != got)
