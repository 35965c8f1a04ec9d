"""Slow reference implementations, written from the specifications.

Everything here works on Python integers (and ``fractions.Fraction`` for
floating point), one element at a time, so that it is obviously right and
independent of the compiled kernels it checks.  It is far too slow for real
work; the tests compare the fast kernels against it.
"""
from __future__ import annotations

from fractions import Fraction
import math

import numpy as np

# ---------------------------------------------------------------------------
# Integers (SEMANTICS.md sections 1-2)


def int_range(bits: int, signed: bool = True, narrow: bool = False):
    """(min, max) of a two's complement or unsigned integer of ``bits`` bits."""
    if signed:
        return -(2 ** (bits - 1)) + (1 if narrow else 0), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def saturate_int(v: int, lo: int, hi: int) -> int:
    """Clamp v to [lo, hi]."""
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


def wrap_int(v: int, bits: int, signed: bool = True) -> int:
    """v modulo 2**bits, read back as two's complement when signed."""
    r = v % (2 ** bits)            # Python's % is non-negative for a positive modulus
    if signed and r >= 2 ** (bits - 1):
        r -= 2 ** bits
    return r


def mul(a: int, b: int, bits: int, signed: bool, overflow: str, narrow: bool = False) -> int:
    lo, hi = int_range(bits, signed, narrow)
    p = a * b
    return saturate_int(p, lo, hi) if overflow == "saturate" else wrap_int(p, bits, signed)


def add(a: int, b: int, bits: int, signed: bool, overflow: str, narrow: bool = False) -> int:
    lo, hi = int_range(bits, signed, narrow)
    s = a + b
    return saturate_int(s, lo, hi) if overflow == "saturate" else wrap_int(s, bits, signed)


def accumulate(products, bits: int, overflow: str, block: int, init: int = 0):
    """Sum ``products`` in K order through a ``bits``-bit signed register.

    ``block`` products are summed exactly, then added into the register,
    which wraps or clamps.  Returns (value, number of adds that overflowed).
    """
    lo, hi = int_range(bits, True)
    acc, overflows = init, 0
    products = list(products)
    for start in range(0, len(products), block):
        exact = acc + sum(products[start:start + block])
        if exact < lo or exact > hi:
            overflows += 1
            acc = saturate_int(exact, lo, hi) if overflow == "saturate" else wrap_int(exact, bits)
        else:
            acc = exact
    return acc, overflows


def matmul(a, b, bits: int = 32, overflow: str = "wrap", block: int = 1, c=None):
    """A (M x K) @ B (K x N) element by element; returns (values, overflow counts)."""
    M, K = np.shape(a)
    N = np.shape(b)[1]
    a = [[int(v) for v in row] for row in np.asarray(a)]
    b = [[int(v) for v in row] for row in np.asarray(b)]
    out = np.zeros((M, N), dtype=object)
    cnt = np.zeros((M, N), dtype=object)
    for i in range(M):
        for j in range(N):
            init = 0 if c is None else int(np.asarray(c)[i, j])
            out[i, j], cnt[i, j] = accumulate((a[i][k] * b[k][j] for k in range(K)),
                                              bits, overflow, block, init)
    return out, cnt
