"""Calibration: choosing the range of a tensor (and so its scale) from data.

:class:`Calibrator` accumulates statistics batch by batch (running min/max, or
a histogram that is re-binned when the range grows) and turns them into a
range per tensor, channel or group:

``"minmax"``      the smallest and largest values seen;
``"percentile"``  the given percentile of |x| (symmetric) or of x at both ends,
                  read off the histogram;
``"mse"``         the symmetric clipping threshold whose quantize-dequantize
                  error, estimated on the histogram, is least;
``"entropy"``     TensorRT's: the threshold whose quantized distribution has the
                  least KL divergence from the clipped reference distribution.

:class:`DelayedScaling` is Transformer Engine's FP8 recipe: the scale used
for a step comes from the amax history of earlier steps.

Both are handed to :func:`fixedpoint.quantize` as ``calibration=``; a method
name there runs a one-batch :class:`Calibrator` (the same code, so the same
scales).  :func:`scale_from_range` is the one rule that turns a range into a
scale and zero point:

* the scale is computed in float32 (``amax / qmax``: the float32 division
  that ONNX Runtime and Core ML perform);
* a block whose float32 scale is 0 (an all-zero block, or one whose largest
  magnitude is at most ``qmax / 2 * 2**-149``, e.g. ``63 * 2**-149`` for
  INT8) keeps the scale 0, as Core ML does: quantizing divides by zero as
  IEEE says (nonzero values saturate, zeros give the zero point) and every
  code dequantizes to 0.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from ._checks import check_axis, check_choice, check_positive_int, float_source
from .formats import FloatFormat, as_format
from .fp8 import from_fp8, to_fp8

__all__ = ["Calibrator", "DelayedScaling", "CALIBRATION", "scale_from_range", "block_view"]

#: How a range is found from data: one line each.
CALIBRATION = {
    "minmax": "the smallest and largest values (per tensor, channel or group)",
    "percentile": "a percentile of |x| (symmetric) or of x at both ends, from a histogram",
    "mse": "the symmetric threshold with the least quantize-dequantize squared error (histogram)",
    "entropy": "the symmetric threshold with the least KL divergence, as TensorRT (histogram)",
}


def block_view(x: np.ndarray, axis, group_size):
    """``(blocks, restore)``: the values that share a scale as the rows of a 2-D
    array (a view when the layout allows), and a function mapping one value per
    row back to the scale's layout (``()`` per tensor, ``(C,)`` per channel
    along ``axis``, the shape with ``axis`` divided by ``group_size`` per group)."""
    if axis is None:
        return x.reshape(1, -1), lambda v: np.asarray(v).reshape(())
    if group_size is None:
        C = x.shape[axis]
        return np.moveaxis(x, axis, 0).reshape(C, -1), lambda v: np.asarray(v).reshape(C)
    xm = np.moveaxis(x, axis, -1)
    other = xm.shape[:-1]
    G = x.shape[axis] // group_size

    def restore(v):
        return np.moveaxis(np.asarray(v).reshape(other + (G,)), -1, axis)
    return xm.reshape(-1, group_size), restore


def scale_from_range(rmin, rmax, fmt, *, symmetric=True, float_zero_point=False, margin=0):
    """Scale and zero point for the ranges ``[rmin, rmax]`` (arrays of one shape).

    Integer formats: symmetric ``scale = amax / qmax``; asymmetric with an
    integer zero point (ONNX, TFLite) widens the range to include 0 and takes
    ``scale = (hi - lo) / (qmax - qmin)``, ``zero_point = round(qmin - lo /
    scale)`` (half to even, saturated); ``float_zero_point`` keeps ``rmin`` as a
    real offset.  Float formats: ``scale = amax / max_value * 2**margin``.
    Every step is float32 arithmetic.  A zero scale stays zero (see the module
    docstring); its zero point is the code nearest to 0.

    Examples
    --------
    >>> s, z = scale_from_range(np.array(-0.5), np.array(0.25), "int8")
    >>> bool(s == np.float32(0.5) / np.float32(127)), int(z)
    (True, 0)
    >>> s, z = scale_from_range(np.array(-1.0), np.array(3.0), "uint8", symmetric=False)
    >>> bool(s == np.float32(4) / np.float32(255)), int(z)
    (True, 64)
    >>> scale_from_range(np.array(0.0), np.array(5e-44), "int8_narrow")[0]
    array(0., dtype=float32)
    """
    f = as_format(fmt)
    lo32 = np.asarray(rmin, np.float32)
    hi32 = np.asarray(rmax, np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        if isinstance(f, FloatFormat):
            amax = np.maximum(np.abs(lo32), np.abs(hi32))
            scale = amax / np.float32(f.max_value) * np.float32(2.0 ** margin)
            return np.asarray(scale, np.float32), np.zeros(np.shape(scale), np.int32)
        if symmetric:
            if not f.signed:
                raise ValueError(f"symmetric: {f.name} is unsigned; use symmetric=False")
            amax = np.maximum(np.abs(lo32), np.abs(hi32))
            scale = np.asarray(amax / np.float32(f.max), np.float32)
            return scale, np.zeros(scale.shape, np.int32)
        qmin, qmax = np.float32(f.min), np.float32(f.max)
        if float_zero_point:
            scale = np.asarray((hi32 - lo32) / (qmax - qmin), np.float32)
            return scale, lo32.copy()
        lo, hi = np.minimum(lo32, np.float32(0)), np.maximum(hi32, np.float32(0))
        scale = np.asarray((hi - lo) / (qmax - qmin), np.float32)
        zp = np.rint(qmin - lo / np.where(scale > 0, scale, np.float32(1)))
        zp = np.where(scale > 0, zp, np.float32(0))
        zp = np.asarray(np.clip(zp, qmin, qmax), np.int32)
    return scale, zp


# ---------------------------------------------------------------------------
# Thresholds from histograms of |x|, vectorised over blocks

def _percentile_ranges(hist, A, percentile, symmetric):
    """(lo, hi) per block from signed histograms ``hist`` (nb x bins over [-A, A])."""
    nb, bins = hist.shape
    edges = np.linspace(-1.0, 1.0, bins + 1)
    unit = (edges[:-1] + edges[1:]) / 2                         # centers for A = 1
    centers = unit[None, :] * A[:, None]
    q = percentile / 100
    if symmetric:
        half = bins // 2
        mag = hist[:, half:] + hist[:, :bins - half][:, ::-1]
        cum = np.cumsum(mag, axis=1) / mag.sum(axis=1, keepdims=True)
        k = np.minimum(np.argmax(cum >= q, axis=1), half - 1)
        t = np.clip(centers[:, half:][np.arange(nb), k], 0.0, A)
        return -t, t
    cum = np.cumsum(hist, axis=1) / hist.sum(axis=1, keepdims=True)
    klo = np.minimum(np.argmax(cum >= 1 - q, axis=1), bins - 1)
    khi = np.minimum(np.argmax(cum >= q, axis=1), bins - 1)
    rows = np.arange(nb)
    return centers[rows, klo], centers[rows, khi]


def _mse_thresholds(mag, width, f, candidates=128):
    """Per block, the clipping threshold (among ``candidates`` evenly spaced up to
    the top nonzero bin) whose quantize-dequantize squared error over the
    magnitude histogram ``mag`` (nb x nbins, bin width ``width``) is least."""
    nb, nbins = mag.shape
    out = np.zeros(nb)
    centers = (np.arange(nbins) + 0.5)
    for b in range(nb):
        nz = np.nonzero(mag[b])[0]
        if nz.size == 0:
            continue
        c = centers * width[b]
        top = c[nz[-1]] + width[b] / 2
        t = (top * np.arange(1, candidates + 1) / candidates)[:, None]       # (cand, 1)
        if isinstance(f, FloatFormat):
            s = t / f.max_value
            v = (c[None, :] / s).astype(np.float32)
            deq = from_fp8(to_fp8(v, f), dtype=np.float64) * s
        else:
            s = t / f.max
            deq = np.clip(np.rint(c[None, :] / s), -f.max, f.max) * s
        err = ((c[None, :] - deq) ** 2) @ mag[b]
        out[b] = t[int(np.argmin(err)), 0]
    return out


def _entropy_thresholds(mag, width, nlevels, chunk=32):
    """TensorRT's KL-divergence calibration on magnitude histograms, all
    candidates and blocks at once.

    For each candidate i >= nlevels: P = the first i bins with everything
    beyond folded into bin i - 1; Q = P merged into nlevels levels (runs of
    i // nlevels bins, the remainder joining the last level), each level's
    mass spread evenly over its nonzero bins of P.  The threshold is
    (i + 0.5) bin widths for the first i with the least KL(P || Q).

    Both P and Q sum to T (the total count), so
    ``KL = (sum_j P_j log P_j - sum_L S_L log(S_L / n_L)) / T`` with S_L, n_L
    the mass and the number of nonzero bins of level L: prefix sums give
    every candidate in O(nlevels).  ``fixedpoint._reference.entropy_threshold``
    is the bin-by-bin loop this is tested against.
    """
    nb, nbins = mag.shape
    out = np.zeros(nb)
    if nbins < nlevels:
        return out
    cand = np.arange(nlevels, nbins + 1)
    m = cand // nlevels
    starts = m[:, None] * np.arange(nlevels)[None, :]
    ends = np.concatenate([starts[:, 1:], cand[:, None]], axis=1)
    for b0 in range(0, nb, chunk):
        h = mag[b0:b0 + chunk].astype(np.float64)
        n = h.shape[0]
        T = h.sum(axis=1)
        zero = np.zeros((n, 1))
        cum = np.concatenate([zero, np.cumsum(h, axis=1)], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            hlogh = np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0)
        C = np.concatenate([zero, np.cumsum(hlogh, axis=1)], axis=1)
        nzc = np.concatenate([zero, np.cumsum(h > 0, axis=1)], axis=1)
        tail = T[:, None] - cum[:, cand]
        last = h[:, cand - 1]
        P_last = last + tail
        A_ = C[:, cand - 1] + np.where(P_last > 0, P_last * np.log(np.where(P_last > 0, P_last, 1.0)), 0.0)
        S = cum[:, ends] - cum[:, starts]
        S[:, :, -1] += tail
        cnt = nzc[:, ends] - nzc[:, starts]
        cnt[:, :, -1] += (P_last > 0).astype(np.float64) - (last > 0).astype(np.float64)
        ok = (S > 0) & (cnt > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            B_ = np.where(ok, S * np.log(np.where(ok, S / np.where(cnt > 0, cnt, 1.0), 1.0)), 0.0).sum(axis=2)
            kl = (A_ - B_) / np.where(T > 0, T, 1.0)[:, None]
        best = np.argmin(kl, axis=1)
        out[b0:b0 + n] = np.where(T > 0, (cand[best] + 0.5) * width[b0:b0 + n], 0.0)
    return out


class Calibrator:
    """Accumulates range statistics over batches, per tensor, channel or group.

    Parameters
    ----------
    calibration : {"minmax", "percentile", "mse", "entropy"}
        See ``CALIBRATION``.
    symmetric : bool
        ``"mse"`` and ``"entropy"`` are symmetric.
    axis, group_size : as in :func:`fixedpoint.quantize`
    percentile : float
    bins : int
        Histogram bins per block (histogram methods).

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> cal = fp.Calibrator("minmax")
    >>> cal.update(np.array([0.5, -1.0])); cal.update(np.array([2.0]))
    >>> cal.range()
    (array(-1.), array(2.))
    >>> q = fp.quantize(np.array([2.0, -2.0]), "int8", calibration=cal)
    >>> bool(q.scale == np.float32(2) / np.float32(127))
    True
    """

    def __init__(self, calibration="minmax", *, symmetric=True, axis=None, group_size=None,
                 percentile=99.99, bins=2048):
        self.calibration = check_choice(calibration, "calibration", CALIBRATION)
        if not isinstance(symmetric, (bool, np.bool_)):
            raise TypeError(f"symmetric: expected a bool, got {type(symmetric).__name__}")
        if calibration in ("mse", "entropy") and not symmetric:
            raise ValueError(f"symmetric: the {calibration!r} method chooses a symmetric threshold")
        self.symmetric = bool(symmetric)
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, (int, np.integer))):
            raise TypeError(f"axis: expected an int or None, got {type(axis).__name__}")
        self.axis = axis
        self.group_size = None if group_size is None else check_positive_int(group_size, "group_size")
        if self.group_size is not None and axis is None:
            raise ValueError("group_size: needs axis (the axis along which groups run)")
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.integer, np.floating)):
            raise TypeError(f"percentile: expected a number, got {type(percentile).__name__}")
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile: expected 0 < percentile <= 100, got {percentile}")
        self.percentile = float(percentile)
        self.bins = check_positive_int(bins, "bins")
        if self.bins < 2:
            raise ValueError(f"bins: expected at least 2, got {self.bins}")
        self._key = None
        self._restore = None
        self._min = self._max = None
        self._hist = None           # (nblocks, bins) counts of x over [-A, A]
        self._A = None              # (nblocks,) half-width of each histogram

    # -- accumulation ---------------------------------------------------------
    def update(self, x) -> None:
        """Add one batch (same layout along ``axis`` as the earlier batches)."""
        X = float_source(x, "x")
        if X.size == 0:
            raise ValueError("x: empty batch")
        if not np.isfinite(X).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(X))[0])
            raise ValueError(f"x: non-finite value {X[bad]} at index {bad}")
        ax = check_axis(self.axis, X.ndim)
        if self.group_size is not None and X.shape[ax] % self.group_size:
            raise ValueError(f"group_size: {self.group_size} does not divide axis {ax} "
                             f"of length {X.shape[ax]}")
        if ax is None:
            key = None
        elif self.group_size is None:
            key = (ax, X.shape[ax])          # one block per channel: other axes may differ
        else:
            key = (ax, X.shape)              # one block per group of every row
        if self._key is None:
            self._key = key
        elif self._key != key:
            raise ValueError(f"x: a batch of shape {X.shape} does not match the earlier batches' "
                             f"layout along axis={self.axis}")
        blocks, self._restore = block_view(X.astype(np.float64), ax, self.group_size)
        bmin, bmax = blocks.min(axis=1), blocks.max(axis=1)
        if self._min is None:
            self._min, self._max = bmin, bmax
        else:
            self._min, self._max = np.minimum(self._min, bmin), np.maximum(self._max, bmax)
        if self.calibration != "minmax":
            self._add_histogram(blocks)

    def _add_histogram(self, blocks):
        nb, bins = blocks.shape[0], self.bins
        amax = np.abs(blocks).max(axis=1)
        if self._hist is None:
            self._A = np.where(amax > 0, amax, 1.0)
            self._hist = np.zeros((nb, bins))
        for b in np.nonzero(amax > self._A)[0]:    # widen: re-bin the old counts by their centers
            old = np.linspace(-self._A[b], self._A[b], bins + 1)
            self._A[b] = amax[b]
            self._hist[b] = np.histogram((old[:-1] + old[1:]) / 2, bins, (-self._A[b], self._A[b]),
                                         weights=self._hist[b])[0]
        # every block's values into its own bins at once
        idx = np.floor((blocks + self._A[:, None]) / (2 * self._A[:, None]) * bins)
        idx = np.clip(idx, 0, bins - 1).astype(np.int64) + np.arange(nb)[:, None] * bins
        self._hist += np.bincount(idx.ravel(), minlength=nb * bins).reshape(nb, bins)

    # -- results --------------------------------------------------------------
    def range(self, fmt=None):
        """(rmin, rmax) per block, shaped like the scales of :func:`quantize`.
        ``fmt`` matters for "mse" and "entropy" (default int8)."""
        lo, hi = self.block_range(fmt)
        return self._restore(lo), self._restore(hi)

    def block_range(self, fmt=None):
        """(rmin, rmax) as flat arrays, one value per block in block order."""
        if self._min is None:
            raise ValueError("Calibrator: no data yet (call update first)")
        if self.calibration == "minmax":
            return self._min, self._max
        if self.calibration == "percentile":
            return _percentile_ranges(self._hist, self._A, self.percentile, self.symmetric)
        f = as_format(fmt if fmt is not None else "int8")
        half = self.bins // 2
        mag = self._hist[:, half:] + self._hist[:, :self.bins - half][:, ::-1]
        width = self._A / half
        if self.calibration == "mse":
            t = _mse_thresholds(mag, width, f)
        else:
            if isinstance(f, FloatFormat):
                raise ValueError("fmt: entropy calibration applies to integer formats")
            t = _entropy_thresholds(mag, width, f.max + 1)
        return -t, t

    def scale_zero_point(self, fmt, *, float_zero_point=False, margin=0):
        """The scales and zero points :func:`quantize` uses for this data."""
        f = as_format(fmt)
        lo, hi = self.block_range(f)
        sym = (self.symmetric and not float_zero_point) or isinstance(f, FloatFormat)
        scale, zp = scale_from_range(lo, hi, f, symmetric=sym, float_zero_point=float_zero_point,
                                     margin=margin)
        return self._restore(scale), self._restore(zp)


class DelayedScaling:
    """Transformer Engine's delayed scaling for FP8: each step quantizes with a
    scale computed from the amax history of *earlier* steps, then records its own
    amax (the first step, with no history, uses its own amax).

    ``scale = amax_history_reduced / fmt.max_value * 2**margin`` (Transformer
    Engine keeps the reciprocal, which multiplies); an amax of 0 gives scale 1,
    as Transformer Engine keeps its initial scale.  Use it as
    ``fixedpoint.quantize(x, fmt, calibration=ds)``, once per step.

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> ds = fp.DelayedScaling("e4m3", history_len=2)
    >>> _ = fp.quantize(np.array([448.0]), "e4m3", calibration=ds)
    >>> q = fp.quantize(np.array([4.48]), "e4m3", calibration=ds)
    >>> float(q.scale), float(ds.scale)     # this step used 448's scale, then recorded 4.48
    (1.0, 1.0)
    """

    def __init__(self, fmt, *, history_len=1024, algo="max", margin=0):
        f = as_format(fmt)
        if not isinstance(f, FloatFormat):
            raise ValueError(f"fmt: delayed scaling is for float formats, got {f.name}")
        self.fmt = f
        self.history = deque(maxlen=check_positive_int(history_len, "history_len"))
        self.algo = check_choice(algo, "algo", ("max", "most_recent"))
        if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)):
            raise TypeError(f"margin: expected an int, got {type(margin).__name__}")
        self.margin = int(margin)

    @property
    def amax(self) -> float:
        if not self.history:
            raise ValueError("DelayedScaling: empty amax history")
        return max(self.history) if self.algo == "max" else self.history[-1]

    @property
    def scale(self) -> np.float32:
        a = self.amax
        if a <= 0:
            return np.float32(1.0)
        return np.float32(np.float32(a) / np.float32(self.fmt.max_value) * np.float32(2.0 ** self.margin))

    def update(self, amax: float) -> None:
        amax = float(amax)
        if not np.isfinite(amax) or amax < 0:
            raise ValueError(f"amax: expected a finite, non-negative value, got {amax}")
        self.history.append(amax)

    def step_scale(self, x: np.ndarray) -> np.float32:
        """The scale for this step's ``x``, and record its amax (what
        :func:`fixedpoint.quantize` calls)."""
        amax = float(np.abs(x).max()) if x.size else 0.0
        if not self.history:            # nothing earlier to go by: this step's own amax
            self.update(amax)
            return self.scale
        s = self.scale
        self.update(amax)
        return s
