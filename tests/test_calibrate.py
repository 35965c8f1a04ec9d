"""Calibration: min-max, percentile, MSE and entropy over batches (against
exact statistics and the bin-by-bin slow references), delayed scaling, and
the float32 scale rule."""
import numpy as np
import pytest

import fixedpoint as fp
from fixedpoint import _reference as ref
from fixedpoint.calibrate import _entropy_thresholds, _mse_thresholds, scale_from_range
from fixedpoint.formats import as_format


@pytest.mark.parametrize("kw,stack", [({}, 0), ({"axis": 0}, 1), ({"axis": 1}, 0),
                                      ({"axis": 1, "group_size": 8}, None)])
def test_minmax_over_batches_equals_one_batch(kw, stack, rng):
    batches = [rng.standard_normal((6, 32)) * (i + 1) for i in range(4)]
    cal = fp.Calibrator("minmax", **kw)
    for b in batches:
        cal.update(b)
    if stack is None:
        # groups: every batch has the same layout; the range is the elementwise
        # extreme over batches of each group's extreme
        lo, hi = cal.range()
        g = np.stack([b.reshape(6, 4, 8) for b in batches])
        np.testing.assert_array_equal(lo, g.min(axis=(0, 3)))
        np.testing.assert_array_equal(hi, g.max(axis=(0, 3)))
        return
    whole = np.concatenate(batches, axis=stack)
    lo, hi = cal.range()
    axes = None if not kw else tuple(i for i in range(2) if i != kw["axis"])
    np.testing.assert_array_equal(lo, whole.min(axis=axes))
    np.testing.assert_array_equal(hi, whole.max(axis=axes))
    # and quantize with the calibrator gives the scales of quantizing the whole at once
    np.testing.assert_array_equal(fp.quantize(whole, "int8", calibration=cal).scale,
                                  fp.quantize(whole, "int8", **kw).scale)


def test_percentile_one_implementation(rng):
    x = rng.standard_normal(200_000)
    cal = fp.Calibrator("percentile", percentile=99.0)
    for part in np.split(x, 4):
        cal.update(part)
    lo, hi = cal.range()
    exact = np.percentile(np.abs(x), 99.0)
    width = np.abs(x).max() / 1024
    assert abs(float(hi) - exact) <= 2 * width and float(lo) == -float(hi)
    # quantize(calibration="percentile") is the same code: the same scale
    one = fp.Calibrator("percentile", percentile=99.0)
    one.update(x)
    q = fp.quantize(x, "int8", calibration="percentile", percentile=99.0)
    assert q.scale == one.scale_zero_point("int8")[0]
    cal_a = fp.Calibrator("percentile", symmetric=False, percentile=99.0)
    cal_a.update(x)
    lo, hi = cal_a.range()
    assert abs(float(lo) - np.percentile(x, 1.0)) <= 2 * width
    assert abs(float(hi) - np.percentile(x, 99.0)) <= 2 * width
    qa = fp.quantize(x, "uint8", symmetric=False, calibration="percentile", percentile=99.0)
    assert qa.scale == cal_a.scale_zero_point("uint8")[0]


@pytest.mark.parametrize("fmt", ["int4", "int8", "e4m3"])
def test_mse_beats_minmax_on_heavy_tails(fmt, rng):
    x = rng.laplace(size=50_000).astype(np.float32)
    x[:5] *= 30                                      # a few outliers
    q_mse = fp.quantize(x, fmt, calibration="mse")
    q_mm = fp.quantize(x, fmt)
    assert q_mse.scale < q_mm.scale
    err = lambda q: fp.metrics.mse(x, q.dequantize())  # noqa: E731
    assert err(q_mse) < err(q_mm)


def _histograms(rng, n, nbins):
    """Magnitude histograms with gaps, spikes, outliers and an empty one."""
    out = []
    for k in range(n):
        v = np.abs(rng.standard_normal(20_000) * rng.uniform(0.5, 3))
        v[: rng.integers(0, 5)] *= 40
        h = np.histogram(v, nbins, (0, v.max()))[0].astype(float)
        if k % 3 == 1:
            h[rng.integers(0, nbins, nbins // 4)] = 0          # gaps
        out.append(h)
    out.append(np.zeros(nbins))
    return np.array(out)


def test_mse_vectorised_equals_reference(rng):
    mags = _histograms(rng, 5, 256)
    width = rng.uniform(0.01, 0.1, len(mags))
    for fmt in ("int8", "int4"):
        f = as_format(fmt)
        got = _mse_thresholds(mags, width, f)
        for b in range(len(mags)):
            assert got[b] == ref.mse_threshold(list(mags[b]), width[b], f.max), (fmt, b)


def test_entropy_vectorised_equals_reference(rng):
    mags = _histograms(rng, 6, 300)
    width = rng.uniform(0.01, 0.1, len(mags))
    for nlevels in (8, 16):
        got = _entropy_thresholds(mags, width, nlevels)
        for b in range(len(mags)):
            want = ref.entropy_threshold(list(mags[b]), width[b], nlevels)
            assert got[b] == want, (nlevels, b, got[b], want)


def test_entropy_threshold_minimises_kl(rng):
    """Against a third route to the KL divergence (np.add.reduceat)."""
    x = np.abs(rng.standard_normal(100_000))
    x[:3] = 40.0
    mag, edges = np.histogram(x, 512, (0, x.max()))
    width = edges[1]

    def kl(i, nlevels=16):
        p = mag[:i].astype(float).copy()
        p[-1] += mag[i:].sum()
        m = i // nlevels
        starts = np.arange(nlevels) * m
        level_mass = np.add.reduceat(p, starts)
        level_nz = np.add.reduceat((p > 0).astype(float), starts)
        owner = np.minimum(np.arange(i) // m, nlevels - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            q = np.where(p > 0, level_mass[owner] / level_nz[owner], 0.0)
        p, q = p / p.sum(), q / q.sum()
        nz = p > 0
        return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))
    t = _entropy_thresholds(mag[None, :].astype(float), np.array([width]), 16)[0]
    i = int(round(t / width - 0.5))
    assert abs(kl(i) - min(kl(j) for j in range(16, 513))) < 1e-12
    assert t < 10                                    # far below the outliers at 40
    q = fp.quantize(np.concatenate([x, -x]).astype(np.float32), "int8", calibration="entropy")
    assert q.scale < np.float32(40 / 127)


def test_delayed_scaling():
    ds = fp.DelayedScaling("e4m3", history_len=3)
    scales = [float(fp.quantize(np.array([v]), "e4m3", calibration=ds).scale)
              for v in (100.0, 448.0, 10.0, 20.0, 5.0)]
    # step k uses max(amax of the earlier steps, at most 3 of them); step 0 its own
    want = [np.float32(100) / np.float32(448), np.float32(100) / np.float32(448), 1.0, 1.0, 1.0]
    assert scales == [float(v) for v in want]
    assert list(ds.history) == [10.0, 20.0, 5.0]
    assert float(ds.scale) == np.float32(20) / np.float32(448)
    recent = fp.DelayedScaling("e5m2", algo="most_recent", margin=1)
    recent.update(57344.0)
    assert float(recent.scale) == 2.0
    with pytest.raises(ValueError, match="fmt: delayed scaling is for float formats"):
        fp.DelayedScaling("int8")
    with pytest.raises(ValueError, match="calibration: this DelayedScaling is for e4m3"):
        fp.quantize(np.ones(3), "e5m2", calibration=fp.DelayedScaling("e4m3"))


@pytest.mark.parametrize("method", ["mse", "entropy", "percentile"])
def test_calibrated_quantize_per_channel_and_group(method, rng):
    x = (rng.standard_normal((8, 256)) * rng.uniform(0.5, 5, (8, 1))).astype(np.float32)
    q = fp.quantize(x, "int8", axis=0, calibration=method)
    assert q.scale.shape == (8,)
    # per channel equals calibrating each channel alone
    for c in (0, 5):
        alone = fp.quantize(x[c], "int8", calibration=method)
        assert q.scale[c] == alone.scale
    qg = fp.quantize(x, "int4", axis=1, group_size=64, calibration=method)
    assert qg.scale.shape == (8, 4)
    assert qg.scale[2, 1] == fp.quantize(x[2, 64:128], "int4", calibration=method).scale


def test_scale_rule_float32_and_zero_scales(rng):
    """Scales are float32 divisions; a scale that underflows (or an all-zero
    block) is 0 on every path, and 0 / 0 gives the zero point, never -127
    (issue 17 bug 4: the AVX2 kernel turned NaN into the clamp's lower bound)."""
    amax = rng.uniform(1e-3, 1e3, 1000).astype(np.float32)
    s, _ = scale_from_range(-amax, amax, "int8")
    np.testing.assert_array_equal(s, amax / np.float32(127))
    for n in (64, 65, 7, 1000):                       # AVX2 runs and the scalar tail
        x = np.zeros(n, np.float32)
        x[0] = 5e-44                                   # 36 * 2^-149: amax / 127 underflows
        for src in (x, x.astype(np.float64), x.astype(np.float16).astype(np.float32)):
            q = fp.quantize(src, "int8", narrow_range=True)
            assert q.scale == 0
            want = np.zeros(n, np.int8)
            want[0] = 127 if src[0] != 0 else 0          # x / 0 = +inf saturates
            np.testing.assert_array_equal(q.codes, want)
            np.testing.assert_array_equal(q.dequantize(), np.zeros(n, np.float32))
        # the largest amax that underflows, and the smallest that does not
        assert fp.quantize(np.array([63 * 2.0**-149], np.float32), "int8").scale == 0
        assert fp.quantize(np.array([64 * 2.0**-149], np.float32), "int8").scale > 0
    # all-zero blocks: scale 0, codes the zero point; per channel and group too
    z = np.zeros((4, 64), np.float32)
    z[1] = rng.standard_normal(64)
    for kw in ({"axis": 0}, {"axis": 1, "group_size": 32}):
        q = fp.quantize(z, "int4", **kw)
        assert np.count_nonzero(q.scale == 0) == (3 if "group_size" not in kw else 6)
        np.testing.assert_array_equal(q.codes[[0, 2, 3]], 0)
    qa = fp.quantize(np.zeros(40, np.float32), "uint8", symmetric=False)
    assert qa.scale == 0 and int(qa.zero_point) == 0 and not qa.codes.any()
    qf = fp.quantize(np.array([0.0, -0.0, 1e-45], np.float32), "e4m3")
    assert qf.scale == 0 and qf.codes.tolist() == [0x00, 0x80, 0x7E]


def test_bad_arguments(rng):
    with pytest.raises(ValueError, match="calibration: expected one of"):
        fp.Calibrator("kl")
    with pytest.raises(ValueError, match="symmetric: the 'mse' method"):
        fp.Calibrator("mse", symmetric=False)
    with pytest.raises(ValueError, match="group_size: needs axis"):
        fp.Calibrator(group_size=4)
    with pytest.raises(ValueError, match="percentile: expected 0 < percentile <= 100"):
        fp.Calibrator("percentile", percentile=0)
    cal = fp.Calibrator(axis=1)
    cal.update(np.ones((2, 3)))
    with pytest.raises(ValueError, match="does not match the earlier batches"):
        cal.update(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"x: non-finite value nan at index \(0, 1\)"):
        cal.update(np.array([[1.0, np.nan, 2.0]]))
    with pytest.raises(ValueError, match="no data yet"):
        fp.Calibrator().range()
    with pytest.raises(ValueError, match="calibration: the Calibrator has axis=1"):
        fp.quantize(np.ones((2, 3)), "int8", axis=0, calibration=cal)
    with pytest.raises(TypeError, match="calibration: expected one of"):
        fp.quantize(np.ones(3), "int8", calibration=3)
