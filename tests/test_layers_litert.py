"""The three LiteRT profiles against LiteRT itself: fixedpoint's Linear and
Conv2d layers (regular and depthwise) on ``litert-xnnpack-int8``,
``litert-reference-int8`` and ``litert-optimized-int8`` give the output codes
of ai-edge-litert's XNNPACK, reference and optimized kernel paths, bit for bit,
with the layer's own quantization (scales, zero points, bias codes) written
into the LiteRT model."""
import numpy as np
import pytest

from extras import need

need("ai_edge_litert", "pip install ai-edge-litert")

import litert_models as lm  # noqa: E402

from fixedpoint import layers  # noqa: E402

PATHS = {"xnnpack": "litert-xnnpack-int8", "reference": "litert-reference-int8",
         "optimized": "litert-optimized-int8"}


def _bias_codes(tr, bias):
    s = (np.float32(tr.x.scale) * tr.w.scale).astype(np.float32)
    return np.rint(bias.astype(np.float64) / s.astype(np.float64)).astype(np.int32)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_equals_litert(path, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((37, 96)) + 0.4).astype(np.float32)
    w = (rng.standard_normal((96, 24)) * rng.uniform(0.01, 1, 24)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    fc = layers.Linear(PATHS[path], w, b)
    fc.calibrate(x)
    fc.run(x)
    tr = fc.trace
    want = lm.fully_connected(tr.x.codes, tr.w.codes.T, _bias_codes(tr, b), path=path,
                              x_scale=float(tr.x.scale), x_zero_point=int(tr.x.zero_point),
                              w_scales=tr.w.scale, y_scale=float(tr.output_scale),
                              y_zero_point=int(tr.output_zero_point))
    np.testing.assert_array_equal(tr.output_codes, want)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("cfg", [dict(stride=1, dilation=1, padding="VALID"),
                                 dict(stride=2, dilation=1, padding="SAME"),
                                 dict(stride=1, dilation=2, padding="SAME")])
@pytest.mark.parametrize("depthwise", [False, True])
def test_conv_equals_litert(path, cfg, depthwise):
    rng = np.random.default_rng(5)
    C = 13 if depthwise else 6                     # 13 = 8 + a tail of 5 for the depthwise rule
    O = C if depthwise else 10
    x = (rng.standard_normal((2, C, 9, 8)) + 0.2).astype(np.float32)
    w = (rng.standard_normal((O, 1 if depthwise else C, 3, 3)) * rng.uniform(0.05, 1, (O, 1, 1, 1))
         ).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    s, d = cfg["stride"], cfg["dilation"]
    pads = (0, 0, 0, 0)
    if cfg["padding"] == "SAME":
        (_, ph), (_, pw) = lm.conv_output_size(9, 3, s, d, "SAME"), lm.conv_output_size(8, 3, s, d, "SAME")
        eff = 2 * d + 1
        th = max(((9 + s - 1) // s - 1) * s + eff - 9, 0)
        tw = max(((8 + s - 1) // s - 1) * s + eff - 8, 0)
        pads = (ph, pw, th - ph, tw - pw)
    conv = layers.Conv2d(PATHS[path], w, b, stride=s, dilation=d, padding=pads,
                         groups=C if depthwise else 1)
    conv.calibrate(x)
    y = conv.run(x)
    tr = conv.trace
    xq = tr.x.codes if tr.x.codes.ndim == 4 else None
    params = dict(x_scale=float(tr.x.scale), x_zero_point=int(tr.x.zero_point), w_scales=tr.w.scale,
                  y_scale=float(tr.output_scale), y_zero_point=int(tr.output_zero_point),
                  stride=(s, s), dilation=(d, d), padding=cfg["padding"])
    x_nhwc = np.ascontiguousarray(np.transpose(xq, (0, 2, 3, 1)))
    wk = tr.w.codes.T.reshape(w.shape)                            # (O, C/g, kh, kw)
    if depthwise:
        want = lm.depthwise_conv2d(x_nhwc, np.transpose(wk, (1, 2, 3, 0)), _bias_codes(tr, b),
                                   path=path, **params)
    else:
        want = lm.conv2d(x_nhwc, np.transpose(wk, (0, 2, 3, 1)), _bias_codes(tr, b), path=path,
                         **params)
    N, _, OH, OW = y.shape
    np.testing.assert_array_equal(tr.output_codes.reshape(N, OH, OW, O), want)


@pytest.mark.parametrize("path,rule", [("xnnpack", "half_even"), ("reference", "half_away"),
                                       ("optimized", "half_up")])
def test_linear_ties_tell_the_paths_apart(path, rule):
    """Scales that are powers of two and an output scale twice x_scale * w_scale:
    the real multiplier is exactly 0.5, every odd accumulator is a tie, and the
    three paths round ties three different ways (checked by hand and against LiteRT)."""
    rng = np.random.default_rng(9)
    K, N = 8, 16
    w = (rng.integers(-5, 6, (K, N)) * 2.0**-5).astype(np.float32)
    w[0] = 127 * 2.0**-5                        # every column's scale: exactly 2^-5
    x = (rng.integers(-5, 6, (64, K)) / 8).astype(np.float32)
    x[:, 0] = 0
    calib = np.array([[-16.0] * K, [15.875] * K], np.float32)   # scale 2^-3, zero point 0
    fc = layers.Linear(PATHS[path], w)
    fc.calibrate(calib)
    fc.set_output_quantization(2.0**-7, 0)
    fc.run(x)
    tr = fc.trace
    assert tr.x.scale == 2.0**-3 and int(tr.x.zero_point) == 0 and np.all(tr.w.scale == 2.0**-5)
    acc = tr.accumulator.astype(np.int64)
    assert np.count_nonzero(acc % 2) > 300 and np.count_nonzero((acc % 2 == 1) & (acc < 0)) > 100
    half = acc / 2
    want = {"half_even": np.rint(half),
            "half_away": np.sign(half) * np.floor(np.abs(half) + 0.5),
            "half_up": np.floor(half + 0.5)}[rule]
    np.testing.assert_array_equal(tr.output_codes, np.clip(want, -128, 127))
    got = lm.fully_connected(tr.x.codes, tr.w.codes.T, None, path=path, x_scale=0.125, x_zero_point=0,
                             w_scales=tr.w.scale, y_scale=2.0**-7, y_zero_point=0)
    np.testing.assert_array_equal(tr.output_codes, got)
