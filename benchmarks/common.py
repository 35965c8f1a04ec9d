"""Shared benchmark helpers: seeded data and the size grid.

The default grid is small so that ``asv run --quick`` stays quick; set
``FIXEDPOINT_BENCH_LARGE=1`` for the sizes the speed targets are stated at.
"""
import os

import numpy as np

LARGE = bool(os.environ.get("FIXEDPOINT_BENCH_LARGE"))
THREADS = [1, 2]


def rng(seed=0):
    return np.random.default_rng(seed)


def int8_matrix(shape, seed=0):
    return rng(seed).integers(-128, 128, shape).astype(np.int8)
