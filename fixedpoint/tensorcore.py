"""FP8 matrix multiplication as an NVIDIA Hopper tensor core computes it.

Public FP8 emulators accumulate in float32.  Hopper does not: the FP8
``wgmma`` path (cuBLASLt, ``torch._scaled_mm``) adds blocks of 32 products
after truncating every term to 13 fraction bits below the block's largest
exponent, and keeps 14 significant bits of each block result; by default
cuBLAS promotes the partial result into a real float32 accumulator every
128 K-elements.  :class:`TensorCoreAccumulator` describes such a datapath;
:func:`fp8_matmul` runs it.

The model is docs/semantics.md section 4, and reproduces every element of the
recorded H100/H200 ``torch._scaled_mm`` results in ``tests/data``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _tensorcore
from . import dask_arrays
from ._checks import check_choice, check_positive_int, matmul_operands, resolve_threads
from .formats import FloatFormat, as_float_format
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


@dataclass(frozen=True)
class TensorCoreAccumulator:
    """How a tensor core sums the products of one output element.

    The default is the NVIDIA Hopper FP8 datapath (H100/H200 ``wgmma``,
    cuBLASLt), verified bit for bit against recorded GPU results.

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

    Examples
    --------
    >>> TensorCoreAccumulator().promote_every
    128
    >>> TensorCoreAccumulator.exact().frac_bits is None
    True
    >>> TensorCoreAccumulator.hopper_fp8(fast_accum=True).promote_every is None
    True
    """

    block: int | None = 32
    frac_bits: int | None = 13
    product_exponent: str = "sum"
    final_rounding: str = "toward_zero"
    promote_every: int | None = 128
    result_frac_bits: int | None = None

    def __post_init__(self):
        if self.block is not None:
            object.__setattr__(self, "block", check_positive_int(self.block, "block"))
        if self.frac_bits is not None:
            if isinstance(self.frac_bits, bool) or not isinstance(self.frac_bits, (int, np.integer)):
                raise TypeError(f"frac_bits: expected an int or None, got {type(self.frac_bits).__name__}")
            if not 0 <= self.frac_bits <= 40:
                raise ValueError(f"frac_bits: expected 0..40 or None, got {self.frac_bits}")
            object.__setattr__(self, "frac_bits", int(self.frac_bits))
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

    # --- published models -------------------------------------------------
    @classmethod
    def hopper_fp8(cls, fast_accum: bool = False) -> "TensorCoreAccumulator":
        """NVIDIA H100/H200 FP8 (``wgmma``, cuBLASLt): blocks of 32, 13 fraction
        bits, truncation, promotion every 128 unless ``fast_accum``.

        Verified here against recorded GPU results (docs/semantics.md section 4)."""
        return cls(32, 13, "sum", "toward_zero", None if fast_accum else 128)

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

    def _fast_ok(self) -> bool:
        return (self.block is not None and self.frac_bits is not None
                and self.product_exponent == "sum"
                and (4 * self.block + 2) * 2 ** self.frac_bits <= 2 ** 24)


# ---------------------------------------------------------------------------

_OUT = {"float32": "float32", "f32": "float32", "float16": "float16", "f16": "float16",
        "bfloat16": "bfloat16", "bf16": "bfloat16"}
_DECODE_CACHE: dict = {}


def _decode_tables(f: FloatFormat):
    """Per code: float32 value, exponent (sentinel for zero and non-finite),
    signed integer significand, and NaN / Inf / zero flags."""
    if f in _DECODE_CACHE:
        return _DECODE_CACHE[f]
    n = 1 << f.nbits
    val = np.zeros(256, np.float32)
    exp = np.full(256, _tensorcore.ZERO_EXP, np.int32)
    sig = np.zeros(256, np.int32)
    nan = np.zeros(256, bool)
    inf = np.zeros(256, np.int8)
    for code in range(n):
        if f.is_nan_code(code):
            nan[code] = True
            continue
        if f.is_inf_code(code):
            inf[code] = -1 if code & f.sign_bit else 1
            continue
        mag = code & (f.sign_bit - 1)
        ef, mf = mag >> f.man_bits, mag & ((1 << f.man_bits) - 1)
        s = -1 if code & f.sign_bit else 1
        significand = mf if ef == 0 else (1 << f.man_bits) | mf
        if significand == 0:
            continue
        sig[code] = s * significand
        exp[code] = f.emin if ef == 0 else ef - f.bias
        val[code] = np.float32(s * significand * 2.0 ** (int(exp[code]) - f.man_bits))
    _DECODE_CACHE[f] = (val, exp, sig, nan, inf)
    return _DECODE_CACHE[f]


def _as_scale(s, name: str, length: int) -> np.ndarray:
    if s is None or isinstance(s, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a positive float or an array of them")
    arr = np.asarray(s)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a positive float or an array of them, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != length):
        raise ValueError(f"{name}: expected a scalar or a vector of length {length}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        bad = arr[~(np.isfinite(arr) & (arr > 0))].ravel()[0]
        raise ValueError(f"{name}: scales must be finite and positive, got {bad}")
    return arr


def _check_range(f: FloatFormat, name: str):
    if f.emin - f.man_bits < -60 or f.emax > 60:
        raise ValueError(f"{name}: fp8_matmul supports formats whose exponents lie within "
                         f"[-60, 60]; {f.name} spans [{f.emin - f.man_bits}, {f.emax}]")


def _matmul_2d(a, b, fa, fb, acc, nthreads):
    """float32 accumulator values of one (M x K) @ (K x N) product of codes,
    and whether any NaN/Inf code took part (those read as zero here)."""
    M, K = a.shape
    N = b.shape[1]
    unit = acc.block or acc.promote_every or 1
    kp = -(-K // unit) * unit if K else 0
    va, xa, sa, nan_a, inf_a = _decode_tables(fa)
    vb, xb, sb, nan_b, inf_b = _decode_tables(fb)
    out = np.empty((M, N), np.float32)
    params = acc.kernel_params(kp)
    # the fast kernel finds E on int8 lanes: exponent sums must stay well
    # inside (-88, 127) so that a zero operand's -128 never wins
    if acc._fast_ok() and fa.emin + fb.emin >= -80 and fa.emax + fb.emax <= 100:
        e8a = np.where(xa == _tensorcore.ZERO_EXP, -128, xa).astype(np.int8)
        e8b = np.where(xb == _tensorcore.ZERO_EXP, -128, xb).astype(np.int8)
        spa = (nan_a | (inf_a != 0)).astype(np.uint8)
        spb = (nan_b | (inf_b != 0)).astype(np.uint8)
        n = _tensorcore.matmul_fast(a, b, kp, va, e8a, spa, vb, e8b, spb, out, params, nthreads)
        if n is not None:
            return out, n > 0
    pad_a = np.zeros((M, kp), np.uint8)
    pad_b = np.zeros((kp, N), np.uint8)
    pad_a[:, :K] = a
    pad_b[:K, :] = b
    # zero codes pad K; NaN/Inf codes decode to zero here and are handled after
    _tensorcore.matmul_generic(sa[pad_a], xa[pad_a], fa.man_bits, fa.emin,
                               sb[pad_b], xb[pad_b], fb.man_bits, fb.emin, out, params, nthreads)
    special = bool(nan_a[a].any() or nan_b[b].any() or inf_a[a].any() or inf_b[b].any())
    return out, special


def _nonfinite(a, b, fa, fb):
    """IEEE results where NaN/Inf operands are present: NaN mask and +-1 for Inf."""
    _, _, sa, nan_a, inf_a = _decode_tables(fa)
    _, _, sb, nan_b, inf_b = _decode_tables(fb)
    na, nb = nan_a[a], nan_b[b]
    ia, ib = inf_a[a].astype(np.float64), inf_b[b].astype(np.float64)
    za = ((sa[a] == 0) & ~na & (ia == 0)).astype(np.float64)
    zb = ((sb[b] == 0) & ~nb & (ib == 0)).astype(np.float64)
    sign_a = np.where(sa[a] < 0, -1.0, 1.0) * (1 - za)
    sign_b = np.where(sb[b] < 0, -1.0, 1.0) * (1 - zb)
    sign_a = np.where(ia != 0, ia, sign_a)
    sign_b = np.where(ib != 0, ib, sign_b)
    # any NaN operand in the row/column, or Inf * 0, makes the element NaN
    nan = (na.any(axis=1)[:, None] | nb.any(axis=0)[None, :]
           | ((np.abs(ia) @ zb) > 0) | ((za @ np.abs(ib)) > 0))
    # products that are infinite: (Inf or finite nonzero) x Inf, with their sign
    inf_terms_a = np.abs(ia)          # a is Inf
    inf_terms_b = np.abs(ib)
    pos = ((inf_terms_a * (sign_a > 0)) @ (sign_b > 0) + (inf_terms_a * (sign_a < 0)) @ (sign_b < 0)
           + ((sign_a > 0) * (1 - inf_terms_a)) @ (inf_terms_b * (sign_b > 0))
           + ((sign_a < 0) * (1 - inf_terms_a)) @ (inf_terms_b * (sign_b < 0)))
    neg = ((inf_terms_a * (sign_a > 0)) @ (sign_b < 0) + (inf_terms_a * (sign_a < 0)) @ (sign_b > 0)
           + ((sign_a > 0) * (1 - inf_terms_a)) @ (inf_terms_b * (sign_b < 0))
           + ((sign_a < 0) * (1 - inf_terms_a)) @ (inf_terms_b * (sign_b > 0)))
    nan |= (pos > 0) & (neg > 0)
    inf = np.where(pos > 0, 1, np.where(neg > 0, -1, 0))
    return nan, inf


def _round_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even (NaN stays NaN)."""
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def _pair(fmt):
    """``(fmt_a, fmt_b)`` from None, one format, or a pair of them."""
    if isinstance(fmt, (tuple, list)):
        if len(fmt) != 2:
            raise ValueError(f"fmt: expected one format or a pair (fmt_a, fmt_b), got {len(fmt)} items")
        return fmt[0], fmt[1]
    return fmt, fmt


def fp8_matmul(a, b, fmt=None, *, scale_a=1.0, scale_b=1.0, out_dtype="float32", acc=None,
               num_threads=None):
    """FP8 matrix product as a Hopper tensor core (cuBLASLt) computes it.

    Parameters
    ----------
    a : FloatCodes (or uint8 codes with ``fmt``), shape (..., M, K)
    b : FloatCodes (or uint8 codes with ``fmt``), shape (..., K, N)
        Leading dimensions broadcast like ``numpy.matmul``.
    fmt : str, FloatFormat or a pair of them, optional
        The operands' formats (one for both, or ``(fmt_a, fmt_b)``): taken
        from codes that carry them (a format given as well must agree);
        required for plain uint8 codes.
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
    step in float32 rounding to nearest even, then to ``out_dtype``.

    Notes
    -----
    NaN and Inf operands (E5M2 has Inf; E4M3 only NaN) follow IEEE: a NaN
    anywhere in the row of ``a`` or column of ``b`` gives NaN, Inf * 0 gives
    NaN, Infs of both signs give NaN, otherwise the Inf's sign wins.

    Examples
    --------
    >>> import numpy as np, fixedpoint as fp
    >>> a = fp.to_fp8(np.array([[1.0, 2.0]], np.float32), "e4m3")
    >>> b = fp.to_fp8(np.array([[3.0], [0.5]], np.float32), "e4m3")
    >>> fp.fp8_matmul(a, b)
    array([[4.]], dtype=float32)
    """
    if dask_arrays.is_dask(a, b):
        return dask_arrays.fp8_matmul(fp8_matmul, a, b, fmt, scale_a=scale_a, scale_b=scale_b, out_dtype=out_dtype, acc=acc, num_threads=num_threads)
    fmt_a, fmt_b = _pair(fmt)
    a_codes, fa = codes_and_format(a, fmt_a, "a")
    b_codes, fb = codes_and_format(b, fmt_b, "b")
    _check_range(fa, "fmt (a)")
    _check_range(fb, "fmt (b)")
    accumulator = TensorCoreAccumulator.hopper_fp8() if acc is None else acc
    if not isinstance(accumulator, TensorCoreAccumulator):
        raise TypeError(f"acc: expected a TensorCoreAccumulator, got {type(accumulator).__name__}")
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
    sa = _as_scale(scale_a, "scale_a", M)
    sb = _as_scale(scale_b, "scale_b", N)
    scale = (sa.reshape(-1, 1) if sa.ndim else sa) * (sb.reshape(1, -1) if sb.ndim else sb)
    scale = np.float32(scale) if np.ndim(scale) == 0 else scale.astype(np.float32)
    res_acc = np.empty(batch + (M, N), np.float32)
    for idx in np.ndindex(*batch):
        Ai, Bi = np.ascontiguousarray(A[idx]), np.ascontiguousarray(B[idx])
        r, special = _matmul_2d(Ai, Bi, fa, fb, accumulator, nthreads)
        if special:
            nan, inf = _nonfinite(Ai, Bi, fa, fb)
            r = np.where(inf > 0, np.float32(np.inf), np.where(inf < 0, np.float32(-np.inf), r))
            r = r.astype(np.float32)
            r[nan] = np.nan
        res_acc[idx] = r
    with np.errstate(over="ignore", invalid="ignore"):
        res = (res_acc * scale).astype(np.float32)
        if out_kind == "float16":
            res = res.astype(np.float16)
    if out_kind == "bfloat16":
        res = _round_to_bf16(res).view(ml_dtypes.bfloat16)
    return finish(res)
