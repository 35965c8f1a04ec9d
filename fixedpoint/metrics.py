"""Error metrics between a float reference and its quantized approximation.

All are computed in float64 over the whole arrays (which must have one shape).
"""
from __future__ import annotations

import numpy as np

__all__ = ["mse", "sqnr_db", "max_abs_error", "cosine_similarity"]


def _pair(reference, approx):
    r = np.asarray(reference, dtype=np.float64)
    a = np.asarray(approx, dtype=np.float64)
    if r.shape != a.shape:
        raise ValueError(f"reference and approx: shapes {r.shape} and {a.shape} differ")
    if r.size == 0:
        raise ValueError("reference: empty arrays have no error")
    return r, a


def mse(reference, approx) -> float:
    """Mean squared error.

    Examples
    --------
    >>> mse([1.0, 2.0], [1.0, 2.5])
    0.125
    """
    r, a = _pair(reference, approx)
    return float(np.mean((r - a) ** 2))


def sqnr_db(reference, approx) -> float:
    """Signal to quantization noise ratio, ``10 log10(sum r^2 / sum (r - a)^2)`` in dB
    (``inf`` when the approximation is exact).

    Examples
    --------
    >>> round(sqnr_db([1.0, -1.0], [1.1, -0.9]), 3)
    20.0
    """
    r, a = _pair(reference, approx)
    noise = float(np.sum((r - a) ** 2))
    signal = float(np.sum(r ** 2))
    if noise == 0:
        return float("inf")
    return float(10.0 * np.log10(signal / noise)) if signal > 0 else float("-inf")


def max_abs_error(reference, approx) -> float:
    """Largest absolute difference.

    Examples
    --------
    >>> max_abs_error([1.0, 2.0], [1.5, 1.0])
    1.0
    """
    r, a = _pair(reference, approx)
    return float(np.max(np.abs(r - a)))


def cosine_similarity(reference, approx) -> float:
    """Cosine of the angle between the two arrays as flat vectors (1.0 if both are zero).

    Examples
    --------
    >>> cosine_similarity([1.0, 0.0], [1.0, 1.0])
    0.7071067811865475
    """
    r, a = _pair(reference, approx)
    nr, na = np.linalg.norm(r), np.linalg.norm(a)
    if nr == 0 and na == 0:
        return 1.0
    if nr == 0 or na == 0:
        return 0.0
    return float(np.dot(r.ravel(), a.ravel()) / (nr * na))
