"""Calibration: choosing the clipping range from data seen over several batches.

:class:`Calibrator` accumulates statistics batch by batch (running min/max, or
a histogram that is re-binned when the range grows) and turns them into a
range per tensor, channel or group:

``"minmax"``      the smallest and largest values seen;
``"percentile"``  the given percentile of |x| (symmetric) or of x at both ends;
``"mse"``         the symmetric clipping threshold whose quantize-dequantize
                  error, estimated on the histogram, is least;
``"entropy"``     TensorRT's: the threshold whose quantized distribution has the
                  least KL divergence from the clipped reference distribution.

:class:`DelayedScaling` is Transformer Engine's FP8 recipe: the scale used
for a step comes from the amax history of earlier steps.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from ._checks import check_choice, check_positive_int
from .formats import FloatFormat
from .quantize import QTensor, _as_format, _blocks, _check_axis, _float_input, _scale_from_range, quantize

__all__ = ["Calibrator", "DelayedScaling", "METHODS"]

METHODS = {
    "minmax": "the smallest and largest values seen",
    "percentile": "a percentile of |x| (symmetric) or of x at both ends",
    "mse": "the symmetric threshold with the least quantize-dequantize squared error",
    "entropy": "the symmetric threshold with the least KL divergence (TensorRT)",
}


class Calibrator:
    """Accumulates range statistics over batches, per tensor, channel or group.

    Parameters
    ----------
    method : {"minmax", "percentile", "mse", "entropy"}
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
    >>> bool(cal.quantize(np.array([2.0, -2.0]), "int8").scale == np.float32(2 / 127))
    True
    """

    def __init__(self, method="minmax", *, symmetric=True, axis=None, group_size=None,
                 percentile=99.99, bins=2048):
        self.method = check_choice(method, "method", METHODS)
        if method in ("mse", "entropy") and not symmetric:
            raise ValueError(f"symmetric: the {method!r} method chooses a symmetric threshold")
        self.symmetric = bool(symmetric)
        self.axis = axis
        self.group_size = None if group_size is None else check_positive_int(group_size, "group_size")
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile: expected 0 < percentile <= 100, got {percentile}")
        self.percentile = float(percentile)
        self.bins = check_positive_int(bins, "bins")
        self._shape = None
        self._restore = None
        self._min = self._max = None
        self._hist = None           # (nblocks, bins) counts of x over [-A, A]
        self._A = None              # (nblocks,) half-width of each histogram

    # -- accumulation ---------------------------------------------------------
    def update(self, x) -> None:
        """Add one batch (same shape along every axis but the batch's own)."""
        X = _float_input(x)
        if X.size == 0:
            raise ValueError("x: empty batch")
        if not np.isfinite(X).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(X))[0])
            raise ValueError(f"x: non-finite value {X[bad]} at index {bad}")
        ax = _check_axis(self.axis, X.ndim)
        if self.group_size is not None:
            if ax is None:
                raise ValueError("group_size: needs axis")
            if X.shape[ax] % self.group_size:
                raise ValueError(f"group_size: {self.group_size} does not divide axis {ax} "
                                 f"of length {X.shape[ax]}")
        key = None if ax is None else (ax, X.shape[ax])
        if self._shape is None:
            self._shape = key
        elif self._shape != key:
            raise ValueError(f"x: batch does not match the earlier batches' {self.axis=} layout")
        blocks, self._restore = _blocks(X.astype(np.float64), ax, self.group_size)
        bmin, bmax = blocks.min(axis=1), blocks.max(axis=1)
        if self._min is None:
            self._min, self._max = bmin, bmax
        else:
            self._min, self._max = np.minimum(self._min, bmin), np.maximum(self._max, bmax)
        if self.method != "minmax":
            self._add_histogram(blocks)

    def _add_histogram(self, blocks):
        amax = np.abs(blocks).max(axis=1)
        if self._hist is None:
            self._A = np.where(amax > 0, amax, 1.0)
            self._hist = np.zeros((blocks.shape[0], self.bins))
        for b in range(blocks.shape[0]):
            if amax[b] > self._A[b]:            # widen: re-bin the old counts by their centers
                old_edges = np.linspace(-self._A[b], self._A[b], self.bins + 1)
                centers = (old_edges[:-1] + old_edges[1:]) / 2
                self._A[b] = amax[b]
                self._hist[b] = np.histogram(centers, self.bins, (-self._A[b], self._A[b]),
                                             weights=self._hist[b])[0]
            self._hist[b] += np.histogram(blocks[b], self.bins, (-self._A[b], self._A[b]))[0]

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
        if self.method == "minmax":
            return self._min, self._max
        if self.method == "percentile":
            return self._percentile_range()
        f = _as_format(fmt if fmt is not None else "int8")
        t = np.array([self._threshold(b, f) for b in range(self._hist.shape[0])])
        return -t, t

    def _centers(self, b):
        edges = np.linspace(-self._A[b], self._A[b], self.bins + 1)
        return (edges[:-1] + edges[1:]) / 2

    def _percentile_range(self):
        lo = np.empty(self._hist.shape[0])
        hi = np.empty(self._hist.shape[0])
        for b in range(self._hist.shape[0]):
            h, c = self._hist[b], self._centers(b)
            if self.symmetric:
                # fold onto |x|: bin i and its mirror hold the same |x|
                half = self.bins // 2
                mag = h[half:] + h[:self.bins - half][::-1]
                cum = np.cumsum(mag) / mag.sum()
                t = c[half:][min(np.searchsorted(cum, self.percentile / 100), half - 1)]
                t = min(max(t, 0.0), self._A[b])
                lo[b], hi[b] = -t, t
            else:
                cum = np.cumsum(h) / h.sum()
                lo[b] = c[min(np.searchsorted(cum, 1 - self.percentile / 100), self.bins - 1)]
                hi[b] = c[min(np.searchsorted(cum, self.percentile / 100), self.bins - 1)]
        return lo, hi

    def _magnitude_histogram(self, b):
        half = self.bins // 2
        h = self._hist[b]
        return h[half:] + h[:self.bins - half][::-1], self._A[b] / half   # counts of |x|, bin width

    def _threshold(self, b, f):
        mag, width = self._magnitude_histogram(b)
        if mag.sum() == 0:
            return 0.0
        if self.method == "mse":
            return _mse_threshold(mag, width, f)
        if isinstance(f, FloatFormat):
            raise ValueError("fmt: entropy calibration applies to integer formats")
        return _entropy_threshold(mag, width, f.max + 1)

    def scale_zero_point(self, fmt, *, float_zero_point=False, margin=0):
        """The scales and zero points :func:`quantize` would use for this data."""
        f = _as_format(fmt)
        lo, hi = self.block_range(f)
        scale, zp = _scale_from_range(lo, hi, f, self.symmetric and not float_zero_point,
                                      float_zero_point, margin)
        return self._restore(scale), self._restore(zp)

    def quantize(self, x, fmt, **kwargs) -> QTensor:
        """Quantize ``x`` with the calibrated scales (per the same granularity)."""
        f = _as_format(fmt)
        fzp = kwargs.pop("float_zero_point", False)
        scale, zp = self.scale_zero_point(f, float_zero_point=fzp, margin=kwargs.pop("margin", 0))
        if isinstance(f, FloatFormat):
            zp = None
        return quantize(x, f, scale=scale, zero_point=zp, axis=self.axis, group_size=self.group_size,
                        symmetric=self.symmetric and not fzp, float_zero_point=fzp, **kwargs)


def _mse_threshold(mag, width, f, candidates=128):
    """The clipping threshold (among `candidates` evenly spaced up to the top
    bin) whose quantize-dequantize squared error over the histogram is least."""
    centers = (np.arange(mag.size) + 0.5) * width
    top = centers[np.nonzero(mag)[0][-1]] + width / 2
    best_t, best_err = top, np.inf
    for t in np.linspace(top / candidates, top, candidates):
        if isinstance(f, FloatFormat):
            s = t / f.max_value
            from .fp8 import from_fp8, to_fp8
            deq = from_fp8(to_fp8((centers / s).astype(np.float32), f, saturate=True), f, np.float64) * s
        else:
            s = t / f.max
            deq = np.clip(np.rint(centers / s), -f.max, f.max) * s
        err = float(np.sum(mag * (centers - deq) ** 2))
        if err < best_err:
            best_t, best_err = t, err
    return best_t


def _entropy_threshold(mag, width, nlevels):
    """TensorRT's KL-divergence calibration on a histogram of |x|.

    For each candidate i >= nlevels: P = the first i bins with everything
    beyond folded into bin i - 1; Q = P merged into nlevels levels (runs of
    i // nlevels bins, the remainder joining the last level), each level's
    mass spread evenly over its nonzero bins of P.  The threshold is
    (i + 0.5) bin widths for the i with the least KL(P || Q).
    """
    nbins = mag.size
    best_i, best_kl = nbins, np.inf
    for i in range(nlevels, nbins + 1):
        p = mag[:i].astype(np.float64).copy()
        p[i - 1] += mag[i:].sum()
        nonzero = p > 0
        m = i // nlevels
        q = np.zeros(i)
        for lv in range(nlevels):
            a = lv * m
            b = (lv + 1) * m if lv < nlevels - 1 else i
            cnt = int(nonzero[a:b].sum())
            if cnt:
                q[a:b] = np.where(nonzero[a:b], p[a:b].sum() / cnt, 0.0)
        total_p, total_q = p.sum(), q.sum()
        if total_p == 0 or total_q == 0:
            continue
        p /= total_p
        q /= total_q
        kl = float(np.sum(p[nonzero] * np.log(p[nonzero] / q[nonzero])))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return (best_i + 0.5) * width


class DelayedScaling:
    """Transformer Engine's delayed scaling for FP8: each step quantizes with a
    scale computed from the amax history of *earlier* steps, then records its own
    amax (the first step, with no history, uses its own amax).

    ``scale = amax_history_reduced / fmt.max_value * 2**margin`` (Transformer
    Engine keeps the reciprocal, which multiplies).

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> ds = fp.DelayedScaling("e4m3", history_len=2)
    >>> _ = ds.quantize(np.array([448.0])); _ = ds.quantize(np.array([4.48]))
    >>> float(ds.scale)          # max of the history: 448 / 448
    1.0
    """

    def __init__(self, fmt="e4m3", *, history_len=1024, algo="max", margin=0, saturate=True):
        f = _as_format(fmt)
        if not isinstance(f, FloatFormat):
            raise ValueError("fmt: delayed scaling is for FP8 formats")
        self.fmt = f
        self.history = deque(maxlen=check_positive_int(history_len, "history_len"))
        self.algo = check_choice(algo, "algo", ("max", "most_recent"))
        self.margin = int(margin)
        self.saturate = bool(saturate)

    @property
    def amax(self) -> float:
        if not self.history:
            raise ValueError("DelayedScaling: empty amax history")
        return max(self.history) if self.algo == "max" else self.history[-1]

    @property
    def scale(self) -> np.float32:
        a = self.amax
        return np.float32(a / self.fmt.max_value * 2.0 ** self.margin) if a > 0 else np.float32(1.0)

    def update(self, amax: float) -> None:
        amax = float(amax)
        if not np.isfinite(amax) or amax < 0:
            raise ValueError(f"amax: expected a finite, non-negative value, got {amax}")
        self.history.append(amax)

    def quantize(self, x) -> QTensor:
        X = _float_input(x)
        amax = float(np.abs(X).max()) if X.size else 0.0
        first = not self.history
        if first:                       # nothing earlier to go by: this step's own amax
            self.update(amax)
        q = quantize(X, self.fmt, scale=self.scale, saturate=self.saturate)
        if not first:
            self.update(amax)
        return q
