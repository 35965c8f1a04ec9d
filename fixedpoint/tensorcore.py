"""FP8 matrix multiplication as NVIDIA tensor cores compute it.

Public FP8 emulators accumulate in float32.  Hopper does not: the FP8
``wgmma`` path (cuBLASLt, ``torch._scaled_mm``) adds blocks of 32 products
after truncating every term to 13 fraction bits below the block's largest
exponent, and keeps 14 significant bits of each block result; by default
cuBLAS promotes the partial result into a real float32 accumulator every
128 K-elements.  The warp-level ``mma.sync`` FP8 instruction is different
again: on sm_90 it runs as two chained f16 ``HMMA`` steps over interleaved k
and a float32 add of C.  :class:`TensorCoreAccumulator` describes such a
datapath (its class methods are the verified ones); :func:`fp8_matmul` runs
it.  docs/tensorcore.md has the models, their sources and how they were
found.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _tensorcore
from . import dask_arrays
from ._checks import (check_choice, check_positive_int, matmul_operands, ml_dtypes_name, positive_scales,
                      resolve_threads)
from .formats import FloatFormat
from .fp8 import codes_and_format

__all__ = ["TensorCoreAccumulator", "fp8_matmul"]

_PRODUCT_EXPONENT = {
    "sum": "the product's exponent is ea + eb (significands in [1, 4), not normalised)",
    "exact": "the product's exponent is floor(log2|a*b|) (normalised products)",
}
_FINAL_ROUNDING = {
    "toward_zero": "each block result is truncated to result_frac_bits fraction bits",
    "nearest_even": "each block result is rounded to nearest, ties to even",
}
_C_INPUT = {
    "float32_accumulator": "C is the initial value of the IEEE float32 accumulator that the "
                           "block results are added into (D = C + ..., as mma.sync does)",
}

# Kernel selection for tests: None picks the fastest exact path the CPU has;
# "generic", "avx2" or "avx512" force one (a SIMD path whose exactness
# conditions do not hold for the call still falls back to the general kernel).
_FORCE_PATH: str | None = None


def _check_int(v, name: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an int or None, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise ValueError(f"{name}: expected {lo}..{hi} or None, got {v}")
    return int(v)


@dataclass(frozen=True)
class TensorCoreAccumulator:
    """How a tensor core sums the products of one output element.

    The default is the NVIDIA Hopper FP8 datapath (H100/H200 ``wgmma``,
    cuBLASLt), verified bit for bit against recorded GPU results.  The class
    methods are the named datapaths (docs/tensorcore.md gives their sources).

    Parameters
    ----------
    block : int or None
        Products summed together in one step (K is zero-padded to a multiple).
        None: one block per promotion slice (or the whole K).
    frac_bits : int or None
        Each term (products and the running result) is truncated toward zero
        to a multiple of ``2**(E - frac_bits)``, E being the block's largest
        exponent.  None: no alignment loss (exact block sums).
    product_exponent : {"sum", "exact"}
        How a product's exponent is counted when finding E.
    final_rounding : {"toward_zero", "nearest_even"}
        Rounding of each block result to ``result_frac_bits`` fraction bits.
    promote_every : int or None
        Every this many K-elements the block result is added into an IEEE
        float32 accumulator (round to nearest even) and restarts from zero.
        None: never (``use_fast_accum=True`` on Hopper).  A multiple of ``block``.
    result_frac_bits : int or None
        Fraction bits kept in a block result (at most 23); default
        ``min(frac_bits, 23)``, or 23 when ``frac_bits`` is None.
    interleave : int or None
        None: block i takes k in ``[i * block, (i + 1) * block)``.  An int g:
        inside each promotion slice, runs of g consecutive k are dealt in
        turn to the slice's blocks (``mma.sync`` FP8 on sm_90, g = 2: the
        first HMMA step takes ``k mod 4`` in {0, 1}, the second {2, 3}).
    operand_emin : int or None
        None: an operand's exponent is its format's (subnormals count at the
        format's minimum exponent).  An int: the operands are first widened
        exactly to a float whose minimum exponent is this (f16: -14), so an
        operand's exponent is ``max(floor(log2|x|), operand_emin)``.
    c_input : {None, "float32_accumulator"}
        Whether and how :func:`fp8_matmul`'s ``c=`` enters.  None: C is not
        modelled and ``c=`` is refused.

    Examples
    --------
    >>> TensorCoreAccumulator().promote_every
    128
    >>> TensorCoreAccumulator.exact().frac_bits is None
    True
    >>> TensorCoreAccumulator.hopper_fp8(fast_accum=True).promote_every is None
    True
    >>> TensorCoreAccumulator.hopper_mma_sync_fp8().interleave
    2
    """

    block: int | None = 32
    frac_bits: int | None = 13
    product_exponent: str = "sum"
    final_rounding: str = "toward_zero"
    promote_every: int | None = 128
    result_frac_bits: int | None = None
    interleave: int | None = None
    operand_emin: int | None = None
    c_input: str | None = None

    def __post_init__(self):
        if self.block is not None:
            object.__setattr__(self, "block", check_positive_int(self.block, "block"))
        if self.frac_bits is not None:
            object.__setattr__(self, "frac_bits", _check_int(self.frac_bits, "frac_bits", 0, 40))
        check_choice(self.product_exponent, "product_exponent", _PRODUCT_EXPONENT)
        check_choice(self.final_rounding, "final_rounding", _FINAL_ROUNDING)
        if self.promote_every is not None:
            pe = check_positive_int(self.promote_every, "promote_every")
            if self.block is not None and pe % self.block:
                raise ValueError(f"promote_every: must be a multiple of block={self.block}, got {pe}")
            object.__setattr__(self, "promote_every", pe)
        if self.frac_bits is None and self.block is not None:
            raise ValueError("block: exact block sums (frac_bits=None) need block=None "
                             "(one block per promotion slice)")
        rf = self.result_frac_bits
        if rf is None:
            rf = 23 if self.frac_bits is None else min(self.frac_bits, 23)
        if isinstance(rf, bool) or not isinstance(rf, (int, np.integer)) or not 0 <= rf <= 23:
            raise ValueError(f"result_frac_bits: expected 0..23, got {rf!r}")
        object.__setattr__(self, "result_frac_bits", int(rf))
        if self.interleave is not None:
            g = check_positive_int(self.interleave, "interleave")
            if self.block is None or self.promote_every is None:
                raise ValueError("interleave: needs block and promote_every (it deals k to the "
                                 "blocks of each promotion slice)")
            if self.block % g:
                raise ValueError(f"interleave: must divide block={self.block}, got {g}")
            object.__setattr__(self, "interleave", g)
        if self.operand_emin is not None:
            object.__setattr__(self, "operand_emin",
                               _check_int(self.operand_emin, "operand_emin", -126, 127))
        if self.c_input is not None:
            check_choice(self.c_input, "c_input", _C_INPUT)
            if self.promote_every is None:
                raise ValueError("c_input: 'float32_accumulator' needs promote_every (the "
                                 "float32 accumulator C starts)")

    # --- published models -------------------------------------------------
    @classmethod
    def hopper_fp8(cls, fast_accum: bool = False) -> "TensorCoreAccumulator":
        """NVIDIA H100/H200 FP8 (``wgmma``, cuBLASLt, ``torch._scaled_mm``):
        blocks of 32, 13 fraction bits, truncation, promotion every 128 unless
        ``fast_accum`` (``use_fast_accum=True``).

        Verified against every recorded ``torch._scaled_mm`` element
        (docs/tensorcore.md).  C (cuBLASLt's ``beta * C``) is not modelled.

        Examples
        --------
        >>> TensorCoreAccumulator.hopper_fp8().block
        32
        """
        if not isinstance(fast_accum, (bool, np.bool_)):
            raise TypeError(f"fast_accum: expected a bool, got {type(fast_accum).__name__}")
        return cls(32, 13, "sum", "toward_zero", None if fast_accum else 128)

    @classmethod
    def hopper_mma_sync_fp8(cls, operand_emin: int | None = -14) -> "TensorCoreAccumulator":
        """NVIDIA sm_90 (H100/H200) warp-level ``mma.sync.m16n8k32`` FP8, as CUDA 13
        compiles it: FP8 operands unpacked to f16, two chained ``HMMA.16816.F32``
        steps (k mod 4 in {0, 1}, then {2, 3}, the second starting from the
        first's result), each truncating its 16 products and incoming sum to 25
        fraction bits below the largest exponent and its result to float32
        toward zero; then one IEEE float32 add of C.  A K longer than 32 chains
        the instruction (D of one step is C of the next).

        Verified against all 884,736 recorded elements (tests/data/mma_fp8.npz,
        tests/data/mma_probes_h200.npz).  ``operand_emin=-14`` (the f16 rule,
        what the compiled code does) and ``None`` (E4M3's own -6 for subnormal
        E4M3 operands) both fit every recording; docs/tensorcore.md gives the
        GPU probe that would separate them.

        Examples
        --------
        >>> acc = TensorCoreAccumulator.hopper_mma_sync_fp8()
        >>> acc.block, acc.frac_bits, acc.promote_every, acc.c_input
        (16, 25, 32, 'float32_accumulator')
        """
        return cls(16, 25, "sum", "toward_zero", 32, 23, interleave=2, operand_emin=operand_emin,
                   c_input="float32_accumulator")

    @classmethod
    def hopper_fp16(cls) -> "TensorCoreAccumulator":
        """H100 fp16/bf16 inputs as modelled in the literature (Khattak & Mikaitis,
        arXiv 2512.07004): blocks of 16, 2 alignment bits beyond float32's 23
        (frac_bits=25), truncation, float32 result.  Not verified here; usable
        on FP8 inputs as a what-if."""
        return cls(16, 25, "sum", "toward_zero", None, 23)

    @classmethod
    def a100_fp16(cls) -> "TensorCoreAccumulator":
        """A100 fp16 inputs as modelled in the literature (Khattak & Mikaitis;
        Fasi et al.): blocks of 8, one alignment bit beyond float32 (frac_bits=24),
        truncation.  Not verified here."""
        return cls(8, 24, "sum", "toward_zero", None, 23)

    @classmethod
    def b200_fp8(cls) -> "TensorCoreAccumulator":
        """B200 FP8 as modelled in the literature (Khattak & Mikaitis): blocks of
        32 with the full float32 width plus 2 alignment bits (frac_bits=25),
        truncation, no promotion.  Not verified here."""
        return cls(32, 25, "sum", "toward_zero", None, 23)

    @classmethod
    def exact(cls) -> "TensorCoreAccumulator":
        """The ideal: the exact sum of all products, rounded once to float32
        (nearest even).  What "float32 and hope" emulators approximate."""
        return cls(None, None, "sum", "nearest_even", None, 23)

    def kernel_params(self, kpad: int) -> dict:
        block = self.block if self.block is not None else (self.promote_every or max(kpad, 1))
        return {
            "block": block, "frac_bits": -1 if self.frac_bits is None else self.frac_bits,
            "res_frac": self.result_frac_bits, "exact_exp": int(self.product_exponent == "exact"),
            "rne": int(self.final_rounding == "nearest_even"),
            "promote": self.promote_every or 0,
        }

    def _unit(self) -> int | None:
        """K is zero-padded to a multiple of this (None: no padding)."""
        if self.interleave is not None:
            return self.promote_every
        return self.block or self.promote_every


# ---------------------------------------------------------------------------
# Per-format tables for the kernels

_OUT = {"float32": "float32", "f32": "float32", "float16": "float16", "f16": "float16",
        "bfloat16": "bfloat16", "bf16": "bfloat16"}
_TABLE_CACHE: dict = {}


def _table(f: FloatFormat, operand_emin: int | None) -> dict:
    """The kernels' view of every code of ``f`` (src/fp_tc.h, fp_tc_table), and
    the extremes the wrapper checks: exponent range, lowest-bit range."""
    key = (f, operand_emin)
    if key in _TABLE_CACHE:
        return _TABLE_CACHE[key]
    m = f.man_bits
    t = {"sig": np.zeros(256, np.int32), "exp": np.zeros(256, np.int32),
         "val": np.zeros(256, np.float32), "e8": np.full(256, -128, np.int8),
         "l8": np.full(256, 127, np.int8), "neg": np.zeros(256, np.uint8),
         "special": np.zeros(256, np.uint8), "inf": np.zeros(256, np.int8), "man": m}
    exps, lsbs, weights = [], [], []
    for code in range(1 << f.nbits):
        if f.is_nan_code(code) or f.is_inf_code(code):
            t["special"][code] = 1
            if f.is_inf_code(code):
                t["inf"][code] = -1 if code & f.sign_bit else 1
            continue
        mag = code & (f.sign_bit - 1)
        ef, mf = mag >> m, mag & ((1 << m) - 1)
        sig = mf if ef == 0 else (1 << m) | mf
        if sig == 0:
            continue
        e = f.emin if ef == 0 else ef - f.bias
        lsb = e - m + ((sig & -sig).bit_length() - 1)
        if operand_emin is not None:
            # widened exactly to a float with minimum exponent operand_emin
            e2 = max(e + sig.bit_length() - 1 - m, operand_emin)
            sig <<= e - e2               # e2 <= e: the wrapper checks operand_emin <= f.emin
            e = e2
        neg = bool(code & f.sign_bit)
        t["sig"][code] = -sig if neg else sig
        t["exp"][code] = e
        t["val"][code] = np.float32(math.ldexp(-sig if neg else sig, e - m))
        t["e8"][code] = e
        t["l8"][code] = lsb
        t["neg"][code] = neg
        exps.append(e)
        lsbs.append(lsb)
        weights.append(e - m)
    t["l8neg"] = np.where(t["neg"] == 1, t["l8"], 127).astype(np.int8)
    t["l8pos"] = np.where((t["neg"] == 0) & (t["sig"] != 0), t["l8"], 127).astype(np.int8)
    t["lo"] = min(weights) if weights else 0
    t["emin"] = min(exps) if exps else 0
    t["emax"] = max(exps) if exps else 0
    t["lsb_min"] = min(lsbs) if lsbs else 0
    _TABLE_CACHE[key] = t
    return t


def _check_formats(fa: FloatFormat, fb: FloatFormat, acc: TensorCoreAccumulator):
    for f, name in ((fa, "fmt (a)"), (fb, "fmt (b)")):
        if f.emin - f.man_bits < -60 or f.emax > 60:
            raise ValueError(f"{name}: fp8_matmul supports formats whose exponents lie within "
                             f"[-60, 60]; {f.name} spans [{f.emin - f.man_bits}, {f.emax}]")
        if acc.operand_emin is not None and acc.operand_emin > f.emin:
            raise ValueError(f"acc: operand_emin={acc.operand_emin} is above {name} {f.name}'s "
                             f"minimum exponent {f.emin}: its subnormals would not widen exactly")


def _kmap(acc: TensorCoreAccumulator, K: int, kp: int) -> np.ndarray | None:
    """Source k of each padded position (-1: a zero pad), or None for the identity."""
    if acc.interleave is None:
        return None
    g, P, nsteps = acc.interleave, acc.promote_every, acc.promote_every // acc.block
    order = [r * g + o for s in range(nsteps) for r in range(P // g) if r % nsteps == s
             for o in range(g)]
    km = (np.arange(0, kp, P)[:, None] + np.asarray(order, np.int64)[None, :]).reshape(-1)
    km[km >= K] = -1
    return km


def _fast_path(acc: TensorCoreAccumulator, ta: dict, tb: dict, kp: int) -> str | None:
    """The fastest SIMD kernel that is exact for this call, or None.

    Both keep block sums in float32/int32 and exponents in int8 lanes:
    exponent sums of nonzero products at least -64 (zero operands carry -128,
    so a zero's sum stays below every product's); the running result below
    2^(emax_a + emax_b + 2) * Kp, which must stay below 2^100.  AVX-512
    also needs (4 * block + 2) * 2^frac_bits <= 2^22 (the biased accumulator
    keeps one binade), block <= 127 (int8 counts) and E - frac_bits <= 127
    + the smallest lowest-bit exponent of b (a zero a must never count).
    AVX2 needs (4 * block + 2) * 2^frac_bits <= 2^24.
    """
    if (acc.block is None or acc.frac_bits is None or acc.product_exponent != "sum"
            or _FORCE_PATH == "generic"):
        return None
    e_top = ta["emax"] + tb["emax"] + 2 + math.ceil(math.log2(kp + 1))
    if ta["emin"] + tb["emin"] < -64 or e_top > 100:
        return None
    span = (4 * acc.block + 2) << acc.frac_bits
    avx512 = (span <= 1 << 22 and acc.block <= 127
              and e_top - acc.frac_bits <= 127 + tb["lsb_min"])
    avx2 = span <= 1 << 24
    if _FORCE_PATH == "avx2":
        return "avx2" if avx2 else None
    if _FORCE_PATH == "avx512":
        return "avx512" if avx512 else None
    if avx512:
        return "auto"           # AVX-512 where the CPU has it, else AVX2 (avx2 holds too)
    return "avx2" if avx2 else None


def _check_exact_width(acc: TensorCoreAccumulator, ta: dict, tb: dict, kp: int):
    """The exact accumulator (FP_TC_LIMBS radix-2^32 limbs) holds every sum."""
    if acc.frac_bits is not None:
        return
    n = acc.promote_every or kp
    bits = ((ta["emax"] + 1 - ta["lo"]) + (tb["emax"] + 1 - tb["lo"])
            + math.ceil(math.log2(n + 1)) + 1)
    if bits > 32 * (_tensorcore.LIMBS - 1) - 1:
        raise ValueError(f"a and b: an exact sum of {n} products of these formats needs {bits} "
                         f"bits, more than the exact accumulator's {32 * (_tensorcore.LIMBS - 1) - 1}")


def _matmul_2d(a, b, ta, tb, acc, kp, kmap, c0, out, nthreads):
    """Fill ``out`` (M x N float32, C-contiguous) with the accumulator values of
    a (M x K codes, any strides) @ b (K x N).  Returns whether any NaN/Inf code
    took part (those read as zero here)."""
    params = acc.kernel_params(kp)
    path = _fast_path(acc, ta, tb, kp)
    if path is not None:
        n = _tensorcore.matmul_fast(a, b, kp, kmap, ta, tb, c0, out, params, path, nthreads)
        if n is not None:
            return n > 0
    return _tensorcore.matmul_generic(a, b, kp, kmap, ta, tb, c0, out, params, nthreads) > 0


def _nonfinite(a, b, ta, tb):
    """IEEE results where NaN/Inf operands are present: NaN mask and +-1 for Inf."""
    inf_a, inf_b = ta["inf"][a].astype(np.float64), tb["inf"][b].astype(np.float64)
    na = (ta["special"][a] == 1) & (inf_a == 0)
    nb = (tb["special"][b] == 1) & (inf_b == 0)
    za = ((ta["sig"][a] == 0) & (ta["special"][a] == 0)).astype(np.float64)
    zb = ((tb["sig"][b] == 0) & (tb["special"][b] == 0)).astype(np.float64)
    sign_a = np.where(ta["sig"][a] < 0, -1.0, 1.0) * (1 - za)
    sign_b = np.where(tb["sig"][b] < 0, -1.0, 1.0) * (1 - zb)
    sign_a = np.where(inf_a != 0, inf_a, sign_a)
    sign_b = np.where(inf_b != 0, inf_b, sign_b)
    # any NaN operand in the row/column, or Inf * 0, makes the element NaN
    nan = (na.any(axis=1)[:, None] | nb.any(axis=0)[None, :]
           | ((np.abs(inf_a) @ zb) > 0) | ((za @ np.abs(inf_b)) > 0))
    # products that are infinite: (Inf or finite nonzero) x Inf, with their sign
    ia, ib = np.abs(inf_a), np.abs(inf_b)
    pos = ((ia * (sign_a > 0)) @ (sign_b > 0) + (ia * (sign_a < 0)) @ (sign_b < 0)
           + ((sign_a > 0) * (1 - ia)) @ (ib * (sign_b > 0))
           + ((sign_a < 0) * (1 - ia)) @ (ib * (sign_b < 0)))
    neg = ((ia * (sign_a > 0)) @ (sign_b < 0) + (ia * (sign_a < 0)) @ (sign_b > 0)
           + ((sign_a > 0) * (1 - ia)) @ (ib * (sign_b < 0))
           + ((sign_a < 0) * (1 - ia)) @ (ib * (sign_b > 0)))
    nan |= (pos > 0) & (neg > 0)
    inf = np.where(pos > 0, 1, np.where(neg > 0, -1, 0))
    return nan, inf


def _round_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even (NaN stays NaN)."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    # no carry out of 32 bits for any non-NaN pattern (the largest is -Inf, 0xFF800000)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
               >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((bits[nan] >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16)
    return rounded


def _pair(fmt):
    """``(fmt_a, fmt_b)`` from None, one format, or a pair of them."""
    if isinstance(fmt, (tuple, list)):
        if len(fmt) != 2:
            raise ValueError(f"fmt: expected one format or a pair (fmt_a, fmt_b), got {len(fmt)} items")
        return fmt[0], fmt[1]
    return fmt, fmt


def _as_c(c, shape) -> np.ndarray:
    """``c`` as float32, broadcast (read-only view) to ``shape``."""
    arr = np.asarray(c)
    if arr.dtype.kind != "f" and ml_dtypes_name(arr.dtype) != "bfloat16":
        raise TypeError(f"c: expected float32 values (float16, bfloat16 and float64 holding "
                        f"float32 numbers are accepted), got dtype {arr.dtype}")
    c32 = arr.astype(np.float32)
    if arr.dtype.itemsize > 4:
        same = (c32.astype(arr.dtype) == arr) | (np.isnan(arr) & np.isnan(c32))
        if not np.all(same):
            bad = arr[~same].ravel()[0]
            raise ValueError(f"c: {float(bad)!r} is not a float32 number; the accumulator input is float32")
    try:
        return np.broadcast_to(c32, shape)
    except ValueError:
        raise ValueError(f"c: shape {arr.shape} does not broadcast to the result's shape "
                         f"{tuple(shape)}") from None


def fp8_matmul(a, b, fmt=None, *, c=None, scale_a=1.0, scale_b=1.0, out_dtype="float32", acc=None,
               num_threads=None):
    """FP8 matrix product as a tensor core computes it.

    Parameters
    ----------
    a : FloatCodes (or uint8 codes with ``fmt``), shape (..., M, K)
    b : FloatCodes (or uint8 codes with ``fmt``), shape (..., K, N)
        Leading dimensions broadcast like ``numpy.matmul``; any strides.
    fmt : str, FloatFormat or a pair of them, optional
        The operands' formats (one for both, or ``(fmt_a, fmt_b)``): taken
        from codes that carry them (a format given as well must agree);
        required for plain uint8 codes.
    c : array_like of float32, optional
        The accumulator input C, broadcast to the result's shape:
        ``D = A @ B + C`` as the accumulator's ``c_input`` says (only
        accumulators that model C accept it, e.g.
        :meth:`TensorCoreAccumulator.hopper_mma_sync_fp8`; cuBLASLt's
        ``beta * C`` is not modelled).  Needs ``scale_a = scale_b = 1``.
    scale_a : float or array of shape (M,)
        Per-tensor or per-row scale of ``a`` (float32).
    scale_b : float or array of shape (N,)
        Per-tensor or per-column scale of ``b``.
    out_dtype : {"float32", "float16", "bfloat16"}
        bfloat16 results are ml_dtypes ``bfloat16`` arrays (needs ml_dtypes).
    acc : TensorCoreAccumulator, optional
        How the products are summed; default :meth:`TensorCoreAccumulator.hopper_fp8`
        (cuBLAS's split accumulation; ``hopper_fp8(fast_accum=True)`` for
        ``use_fast_accum=True``).
    num_threads : int, optional

    Returns
    -------
    ndarray of ``out_dtype``: ``round(acc * float32(scale_a * scale_b))``, each
    step in float32 rounding to nearest even, then to ``out_dtype``.  Two 1-D
    operands give a 0-d array.

    Notes
    -----
    NaN and Inf operands (E5M2 has Inf; E4M3 only NaN) follow IEEE: a NaN
    anywhere in the row of ``a`` or column of ``b`` gives NaN, Inf * 0 gives
    NaN, Infs of both signs give NaN, otherwise the Inf's sign wins (and is
    added to C).  A block result beyond float32's range becomes +-Inf when
    rounding to nearest, the largest value of its precision when truncating.

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> a = fp.to_fp8(np.array([[1.0, 2.0]], np.float32), "e4m3")
    >>> b = fp.to_fp8(np.array([[3.0], [0.5]], np.float32), "e4m3")
    >>> fp.fp8_matmul(a, b)
    array([[4.]], dtype=float32)
    >>> mma = fp.TensorCoreAccumulator.hopper_mma_sync_fp8()
    >>> fp.fp8_matmul(a, b, c=np.float32(0.25), acc=mma)
    array([[4.25]], dtype=float32)
    """
    if dask_arrays.is_dask(a, b):
        if c is not None:
            raise TypeError("c: an input C is not supported with dask operands; add it to the "
                            "result, or compute in memory")
        return dask_arrays.fp8_matmul(fp8_matmul, a, b, fmt, scale_a=scale_a, scale_b=scale_b,
                                      out_dtype=out_dtype, acc=acc, num_threads=num_threads)
    fmt_a, fmt_b = _pair(fmt)
    a_codes, fa = codes_and_format(a, fmt_a, "a")
    b_codes, fb = codes_and_format(b, fmt_b, "b")
    accumulator = TensorCoreAccumulator.hopper_fp8() if acc is None else acc
    if not isinstance(accumulator, TensorCoreAccumulator):
        raise TypeError(f"acc: expected a TensorCoreAccumulator, got {type(accumulator).__name__}")
    _check_formats(fa, fb, accumulator)
    if not isinstance(out_dtype, str):
        try:
            out_dtype = np.dtype(out_dtype).name
        except TypeError:
            raise TypeError(f"out_dtype: expected a dtype or a name, got {out_dtype!r}") from None
    if out_dtype not in _OUT:
        raise ValueError(f"out_dtype: expected 'float32', 'float16' or 'bfloat16', got {out_dtype!r}")
    out_kind = _OUT[out_dtype]
    if out_kind == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:  # pragma: no cover - ml_dtypes is a test dependency
            raise ImportError("out_dtype='bfloat16' returns an ml_dtypes array: install ml_dtypes") from None
    nthreads = resolve_threads(num_threads)
    A, B, batch, M, K, N, finish = matmul_operands(a_codes, b_codes)
    sa = positive_scales(scale_a, "scale_a", M)
    sb = positive_scales(scale_b, "scale_b", N)
    C = None
    if c is not None:
        if accumulator.c_input is None:
            raise ValueError("c: this accumulator does not model an input C (c_input=None; "
                             "cuBLASLt's beta * C is not modelled): add C to the result, or use an "
                             "accumulator with c_input, e.g. TensorCoreAccumulator.hopper_mma_sync_fp8()")
        if np.any(sa != 1) or np.any(sb != 1):
            raise ValueError("c: an input C needs scale_a = scale_b = 1 (the instruction that "
                             "adds C has no scales)")
        res_shape = finish(np.empty(batch + (M, N), np.bool_)).shape
        C = _as_c(c, res_shape)
        if a_codes.ndim == 1:            # back to batch + (M, N)
            C = C[..., None, :] if b_codes.ndim != 1 else C[..., None, None]
        elif b_codes.ndim == 1:
            C = C[..., None]
    ta = _table(fa, accumulator.operand_emin)
    tb = _table(fb, accumulator.operand_emin)
    unit = accumulator._unit()
    kp = -(-K // unit) * unit if (unit and K) else K
    _check_exact_width(accumulator, ta, tb, kp)
    kmap = _kmap(accumulator, K, kp)
    res = np.empty(batch + (M, N), np.float32)
    for idx in np.ndindex(*batch):
        Ai, Bi, out2 = A[idx], B[idx], res[idx]
        c0 = None if C is None else np.ascontiguousarray(C[idx], np.float32)
        if _matmul_2d(Ai, Bi, ta, tb, accumulator, kp, kmap, c0, out2, nthreads):
            nan, inf = _nonfinite(np.asarray(Ai), np.asarray(Bi), ta, tb)
            with np.errstate(invalid="ignore"):
                inf_val = np.where(inf > 0, np.float32(np.inf), np.float32(-np.inf))
                if c0 is not None:
                    inf_val = (inf_val + c0).astype(np.float32)     # IEEE: Inf + C
                out2[...] = np.where(inf != 0, inf_val, out2)
            out2[nan] = np.nan
    if sa.ndim or sb.ndim or sa != 1 or sb != 1:
        with np.errstate(over="ignore", invalid="ignore"):
            if sa.ndim == 0 and sb.ndim == 0:
                res *= np.float32(sa * sb)
            else:
                # float32(scale_a[i] * scale_b[j]) a block of rows at a time (no M x N copy)
                rows = max(1, (1 << 16) // max(N, 1))
                for i0 in range(0, M, rows):
                    s_i = sa[i0:i0 + rows, None] if sa.ndim else sa
                    s_j = sb[None, :] if sb.ndim else sb
                    res[..., i0:i0 + rows, :] *= (s_i * s_j).astype(np.float32)
    if out_kind == "float16":
        with np.errstate(over="ignore"):
            res = res.astype(np.float16)
    elif out_kind == "bfloat16":
        res = _round_to_bf16(res).view(ml_dtypes.bfloat16)
    return finish(res)
