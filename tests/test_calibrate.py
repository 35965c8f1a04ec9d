"""Calibration over batches: min-max, percentile, MSE, entropy; delayed scaling."""
import numpy as np
import pytest

import fixedpoint as fp
from fixedpoint.calibrate import _entropy_threshold


@pytest.mark.parametrize("kw", [{}, {"axis": 0}, {"axis": 1, "group_size": 8}])
def test_minmax_over_batches_equals_one_batch(kw, rng):
    batches = [rng.standard_normal((6, 32)) * (i + 1) for i in range(4)]
    cal = fp.Calibrator("minmax", **kw)
    for b in batches:
        cal.update(b)
    whole = np.concatenate(batches, axis=1 if kw.get("axis") == 0 else 0)
    if kw.get("axis") == 1:          # groups along axis 1: batches stack along axis 0
        whole = np.concatenate(batches, axis=0)
        cal2 = fp.Calibrator("minmax", **kw)
        for b in batches:
            cal2.update(b)
        lo, hi = cal.range()
        assert lo.shape == (6, 4)
        return
    lo, hi = cal.range()
    q = fp.quantize(whole, "int8", **kw)
    np.testing.assert_array_equal(cal.quantize(whole, "int8").scale, q.scale)


def test_percentile_histogram_close_to_exact(rng):
    x = rng.standard_normal(200_000)
    cal = fp.Calibrator("percentile", percentile=99.0)
    for part in np.split(x, 4):
        cal.update(part)
    lo, hi = cal.range()
    exact = np.percentile(np.abs(x), 99.0)
    width = np.abs(x).max() / 1024
    assert abs(float(hi) - exact) <= 2 * width and float(lo) == -float(hi)
    cal_a = fp.Calibrator("percentile", symmetric=False, percentile=99.0)
    cal_a.update(x)
    lo, hi = cal_a.range()
    assert abs(float(lo) - np.percentile(x, 1.0)) <= 2 * width
    assert abs(float(hi) - np.percentile(x, 99.0)) <= 2 * width


@pytest.mark.parametrize("fmt", ["int4", "int8", "e4m3"])
def test_mse_beats_minmax_on_heavy_tails(fmt, rng):
    x = rng.laplace(size=50_000).astype(np.float32)
    x[:5] *= 30                                      # a few outliers
    q_mse = fp.quantize(x, fmt, calibration="mse")
    q_mm = fp.quantize(x, fmt)
    assert q_mse.scale <= q_mm.scale
    err = lambda q: fp.metrics.mse(x, q.dequantize())  # noqa: E731
    assert err(q_mse) <= err(q_mm) * 1.0001


def _kl_reference(mag, i, nlevels):
    """KL(P || Q) for threshold bin i, written from TensorRT's description with
    np.add.reduceat (a different route than the implementation)."""
    p = mag[:i].astype(float).copy()
    p[-1] += mag[i:].sum()
    m = i // nlevels
    starts = np.arange(nlevels) * m
    level_mass = np.add.reduceat(p, starts)                   # last level takes the remainder
    level_nz = np.add.reduceat((p > 0).astype(float), starts)
    owner = np.minimum(np.arange(i) // m, nlevels - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(p > 0, level_mass[owner] / level_nz[owner], 0.0)
    p, q = p / p.sum(), q / q.sum()
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def test_entropy_threshold_minimises_kl(rng):
    x = np.abs(rng.standard_normal(100_000))
    x[:3] = 40.0
    mag, edges = np.histogram(x, 512, (0, x.max()))
    width = edges[1]
    t = _entropy_threshold(mag, width, 16)
    i = int(round(t / width - 0.5))
    kls = [_kl_reference(mag, j, 16) for j in range(16, 513)]
    assert abs(_kl_reference(mag, i, 16) - min(kls)) < 1e-12
    assert t < 10                                    # far below the outliers at 40
    q = fp.quantize(np.concatenate([x, -x]).astype(np.float32), "int8", calibration="entropy")
    assert q.scale < np.float32(40 / 127)


def test_delayed_scaling():
    ds = fp.DelayedScaling("e4m3", history_len=3)
    steps = [np.array([100.0]), np.array([448.0]), np.array([10.0]), np.array([20.0]), np.array([5.0])]
    scales = []
    for x in steps:
        q = ds.quantize(x)
        scales.append(float(q.scale))
    # step k uses max(amax of the earlier steps, at most 3 of them); step 0 its own
    assert scales == [float(np.float32(v)) for v in (100 / 448, 100 / 448, 1.0, 1.0, 1.0)]
    assert list(ds.history) == [10.0, 20.0, 5.0]
    assert float(ds.scale) == np.float32(20 / 448)
    recent = fp.DelayedScaling("e5m2", algo="most_recent", margin=1)
    recent.update(57344.0)
    assert float(recent.scale) == 2.0
    with pytest.raises(ValueError, match="fmt: delayed scaling is for FP8"):
        fp.DelayedScaling("int8")


def test_calibrated_quantize_per_channel(rng):
    x = (rng.standard_normal((8, 256)) * rng.uniform(0.5, 5, (8, 1))).astype(np.float32)
    for method in ("mse", "entropy", "percentile"):
        q = fp.quantize(x, "int8", axis=0, calibration=method)
        assert q.scale.shape == (8,)
        assert q.codes.min() >= -128 and q.codes.max() <= 127
        qg = fp.quantize(x, "int4", axis=1, group_size=64, calibration=method)
        assert qg.scale.shape == (8, 4)


def test_bad_arguments(rng):
    with pytest.raises(ValueError, match="method: expected one of"):
        fp.Calibrator("kl")
    with pytest.raises(ValueError, match="symmetric: the 'mse' method"):
        fp.Calibrator("mse", symmetric=False)
    cal = fp.Calibrator(axis=1)
    cal.update(np.ones((2, 3)))
    with pytest.raises(ValueError, match="does not match the earlier batches"):
        cal.update(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"x: non-finite value nan at index \(0, 1\)"):
        cal.update(np.array([[1.0, np.nan, 2.0]]))
    with pytest.raises(ValueError, match="no data yet"):
        fp.Calibrator().range()
