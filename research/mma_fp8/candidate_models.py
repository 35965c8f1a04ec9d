"""Candidate models for the warp-level FP8 ``mma.sync.m16n8k32`` (not solved yet).

Usage: python research/mma_fp8/candidate_models.py   (needs fixedpoint installed)

The tiles in ``mma_probes_h200.npz`` were recorded on an H200 (PyTorch 2.11,
CUDA 13, 2026-11-28) with a hand-written kernel whose fragment layout was
first checked bit for bit against the project's earlier mma_fp8 recordings.
Kinds, 128 tiles each, for e4m3 x e4m3, e5m2 x e5m2 and e4m3 x e5m2:
``pair`` (two nonzero products per output, C = 0), ``pair_c`` (the same with
C of any size), ``single_c`` (one product and C), ``halves`` (wide random
codes in one half of K only), ``wide`` (wide random codes, C = 0) and
``wide_c`` (wide codes and C).  Keys: ``{fa}_{fb}_{kind}_{a,b,c,d}``, with
a: T x 16 x 32 codes, b: T x 32 x 8 codes (row k, column n), c, d: T x 16 x 8
float32; D = A @ B + C per tile.

Best candidate so far: the 32 products, exponent ea + eb, truncated to 25
fraction bits below the largest, summed exactly, truncated to 24 significant
bits, then added to C in IEEE float32 (nearest even).  It reproduces every
``pair``, ``pair_c`` and ``single_c`` element (so two-term sums and the way C
enters are right) but only 70-87% of the many-term kinds, where the hardware
usually comes out one ulp smaller in magnitude: how many-term sums lose bits
is the open question.
"""
import itertools
import pathlib

import numpy as np

from fixedpoint.formats import as_float_format

DATA = pathlib.Path(__file__).with_name("mma_probes_h200.npz")


def decode(codes, fmt):
    f = as_float_format(fmt)
    val = np.zeros(256)
    exp = np.zeros(256, np.int64)
    for c in range(256):
        if f.is_nan_code(c) or f.is_inf_code(c):
            val[c] = np.nan
            continue
        val[c] = float(f.decode_exact(c))
        e = (c & (f.sign_bit - 1)) >> f.man_bits
        exp[c] = f.emin if e == 0 else e - f.bias
    return val[codes], exp[codes]


def floor_log2(x):
    return np.frexp(x)[1] - 1


def round_significant(x, bits, mode):
    out = np.zeros_like(x)
    nz = x != 0
    step = np.ldexp(1.0, floor_log2(np.abs(x[nz])) - (bits - 1))
    q = x[nz] / step
    out[nz] = (np.trunc(q) if mode == "rz" else np.rint(q)) * step
    return out


def model(A, B, C, fa, fb, frac_bits=25, product_exponent="sum", mode="rz"):
    av, ae = decode(A, fa)
    bv, be = decode(B, fb)
    p = av[:, :, :, None] * bv[:, None, :, :]                      # T, 16, 32, 8 (exact)
    if product_exponent == "sum":
        pe = ae[:, :, :, None] + be[:, None, :, :]
    else:
        with np.errstate(divide="ignore"):
            pe = floor_log2(np.abs(p))
    pe = np.where(p == 0, -10**6, pe)
    E = pe.max(axis=2)
    E = np.where(E < -10**5, 0, E)
    step = np.ldexp(1.0, (E - frac_bits).astype(int))
    S = np.trunc(p / step[:, :, None, :]).sum(axis=2) * step       # exact in float64 here
    s = round_significant(S, 24, mode)
    return (C.astype(np.float32) + s.astype(np.float32)).astype(np.float32)


def main():
    z = np.load(DATA)
    keys = sorted({k.rsplit("_", 1)[0] for k in z.files})
    for frac_bits, pexp, mode in itertools.product([24, 25, 26], ["sum", "exact"], ["rz", "rne"]):
        parts = []
        for k in keys:
            fa, fb = k.split("_")[:2]
            A, B, C, D = (z[f"{k}_{x}"] for x in "abcd")
            with np.errstate(all="ignore"):
                got = model(A, B, C, fa, fb, frac_bits, pexp, mode)
            fin = np.isfinite(D)
            parts.append(f"{k} {np.mean(got.view(np.uint32)[fin] == D.view(np.uint32)[fin]):.3f}")
        print(f"frac_bits={frac_bits} exponent={pexp} rounding={mode}:\n   " + " | ".join(parts))


if __name__ == "__main__":
    main()
