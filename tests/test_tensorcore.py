"""FP8 tensor-core GEMM: every recorded Hopper element, slow references, every kernel path."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fixedpoint as fp
from fixedpoint import _reference as ref
from fixedpoint import tensorcore
from fixedpoint.formats import FloatFormat, as_format
from conftest import load_cases
from extras import need, skip_under_asan

ml_dtypes = need("ml_dtypes", 'pip install ml_dtypes')

TC = fp.TensorCoreAccumulator
OUT = {"f32": ("float32", np.int32), "f16": ("float16", np.int16), "bf16": ("bfloat16", np.int16)}
PATHS = ["generic", "avx2", "avx512"]


@pytest.fixture(params=[None] + PATHS)
def path(request, monkeypatch):
    """Run a test on the automatic choice and on each kernel forced."""
    monkeypatch.setattr(tensorcore, "_FORCE_PATH", request.param)
    return request.param


def _has_path(name):
    """Whether this CPU runs a SIMD path (matmul_fast answers None otherwise)."""
    if name == "generic" or name is None:
        return True
    t = tensorcore._table(as_format("e4m3", kind="float"), None)
    z = np.zeros((1, 1), np.uint8)
    out = np.empty((1, 1), np.float32)
    return tensorcore._tensorcore.matmul_fast(z, z, 32, None, t, t, None, out,
                                              TC.hopper_fp8().kernel_params(32), name, 1) is not None


# ---------------------------------------------------------------------------
# cuBLASLt (wgmma) recordings

@pytest.mark.parametrize("fname", ["scaled_mm.npz", "scaled_mm_scaled.npz"])
@pytest.mark.parametrize("path", [None] + [pytest.param(p, marks=pytest.mark.slow) for p in PATHS])
def test_every_recorded_element(data_dir, fname, path, monkeypatch):
    """Every element on the automatic path; each kernel forced in the slow run."""
    monkeypatch.setattr(tensorcore, "_FORCE_PATH", path)
    if not _has_path(path):
        pytest.skip(f"this CPU has no {path} kernel")
    z = np.load(data_dir / fname)
    cases = load_cases(z)
    seen = set()
    for c in cases:
        a, b, want = z[c["id"] + "_a"], z[c["id"] + "_b"], z[c["id"] + "_out"]
        out_dtype, bits = OUT[c["out"]]
        got = fp.fp8_matmul(a, b.T, (c["fa"], c["fb"]), scale_a=c.get("scale_a", 1.0),
                            scale_b=c.get("scale_b", 1.0), out_dtype=out_dtype,
                            acc=TC.hopper_fp8(fast_accum=c["fast"]))
        assert got.shape == want.shape
        np.testing.assert_array_equal(got.view(bits), want, err_msg=str(c))
        seen.add((c["fa"], c["fb"], c["out"], c["fast"]))
    # each file covers fast and split accumulation and more than one output type
    assert {s[3] for s in seen} == {True, False}
    assert len({s[2] for s in seen}) >= 2


def test_the_model_matters(data_dir):
    """A float32-accumulating emulator (the exact sum rounded once) disagrees
    with the hardware on most of these elements: the test can fail."""
    z = np.load(data_dir / "scaled_mm.npz")
    differ = total = 0
    for c in load_cases(z)[:60]:
        if c["out"] != "f32":
            continue
        a, b, want = z[c["id"] + "_a"], z[c["id"] + "_b"], z[c["id"] + "_out"]
        ideal = fp.fp8_matmul(a, b.T, (c["fa"], c["fb"]), acc=TC.exact())
        differ += (ideal.view(np.int32) != want).sum()
        total += want.size
    assert differ > total // 4


# ---------------------------------------------------------------------------
# mma.sync.m16n8k32 FP8 recordings (sm_90)

def _mma_tiles(path):
    z = np.load(path)
    for key in sorted({k.rsplit("_", 1)[0] for k in z.files}):
        fa, fb = key.split("_")[:2]
        yield key, fa, fb, *(z[f"{key}_{x}"] for x in "abcd")


@pytest.mark.parametrize("fname", ["mma_fp8.npz", "mma_probes_h200.npz"])
@pytest.mark.parametrize("operand_emin", [-14, None])
def test_mma_sync_every_recorded_tile(data_dir, fname, operand_emin):
    """D = A @ B + C, one instruction per tile: every element of every kind of
    both recordings, under both subnormal rules (the data do not separate them)."""
    acc = TC.hopper_mma_sync_fp8(operand_emin=operand_emin)
    kinds = set()
    total = 0
    for key, fa, fb, A, B, C, D in _mma_tiles(data_dir / fname):
        got = fp.fp8_matmul(A, B, (fa, fb), c=C, acc=acc)
        assert got.shape == D.shape == (A.shape[0], 16, 8)
        np.testing.assert_array_equal(got.view(np.int32), D.view(np.int32), err_msg=key)
        kinds.add(key.split("_", 2)[2])
        total += D.size
    if fname == "mma_fp8.npz":
        assert kinds == {"bits", "cancel", "lognormal", "normal"} and total == 589_824
    else:
        assert kinds == {"halves", "pair", "pair_c", "single_c", "wide", "wide_c"} and total == 294_912


def test_mma_sync_the_model_matters(data_dir):
    """Neighbouring models miss many recorded elements, so the tile test can fail:
    k split into contiguous halves instead of k mod 4, and MMA-Sim's one fused
    32-term sum with C (25 fraction bits)."""
    contiguous = TC(16, 25, "sum", "toward_zero", 32, 23, operand_emin=-14,
                    c_input="float32_accumulator")
    fused = TC(32, 25, "sum", "toward_zero", 32, 23, c_input="float32_accumulator")
    for acc in (contiguous, fused):
        differ = total = 0
        for key, fa, fb, A, B, C, D in _mma_tiles(data_dir / "mma_probes_h200.npz"):
            got = fp.fp8_matmul(A, B, (fa, fb), c=C, acc=acc)
            differ += int((got.view(np.int32) != D.view(np.int32)).sum())
            total += D.size
        assert differ > total // 50, (acc, differ)


def test_mma_sync_subnormal_probe():
    """The GPU probe that separates the two subnormal rules (docs/tensorcore.md),
    worked by hand: A[m, 0] = 2^-9 (E4M3 0x01), A[m, 1] = 2^-6, B[0, n] = 2^15
    (E5M2 0x78), B[1, n] = 2^-11: products 64 and 2^-17 in the first HMMA step.
    f16 rule: E = -9 + 15 = 6, spacing 2^-19 keeps 2^-17: 64 + 2^-17 = 0x42800001.
    E4M3 rule: E = -6 + 15 = 9, spacing 2^-16 drops it: 64 = 0x42800000."""
    A = np.zeros((16, 32), np.uint8)
    B = np.zeros((32, 8), np.uint8)
    A[:, 0], A[:, 1] = 0x01, 0x08
    B[0, :], B[1, :] = 0x78, 0x10
    f16 = fp.fp8_matmul(A, B, ("e4m3", "e5m2"), c=0.0, acc=TC.hopper_mma_sync_fp8())
    own = fp.fp8_matmul(A, B, ("e4m3", "e5m2"), c=0.0, acc=TC.hopper_mma_sync_fp8(operand_emin=None))
    assert (f16.view(np.uint32) == 0x42800001).all()
    assert (own.view(np.uint32) == 0x42800000).all()


def test_mma_sync_chains_over_k(rng):
    """K beyond 32 chains the instruction: D of one is C of the next."""
    acc = TC.hopper_mma_sync_fp8()
    a = _adversarial(rng, "wide", (5, 96), "e4m3")
    b = _adversarial(rng, "wide", (96, 7), "e5m2")
    c = rng.standard_normal((5, 7)).astype(np.float32)
    d = c
    for k0 in range(0, 96, 32):
        d = fp.fp8_matmul(a[:, k0:k0 + 32], b[k0:k0 + 32], c=d, acc=acc)
    np.testing.assert_array_equal(fp.fp8_matmul(a, b, c=c, acc=acc).view(np.int32), d.view(np.int32))
    # a K that is not a multiple of 32 is zero-padded: the same as padding by hand
    short = fp.fp8_matmul(a[:, :70], b[:70], c=c, acc=acc)
    pa, pb = np.zeros((5, 96), np.uint8), np.zeros((96, 7), np.uint8)
    pa[:, :70], pb[:70] = a[:, :70], b[:70]
    np.testing.assert_array_equal(short, fp.fp8_matmul(pa, pb, ("e4m3", "e5m2"), c=c, acc=acc))


# An independent transcription of the mma.sync rule (docs/tensorcore.md), with
# Fractions, one element at a time: the kernels' reference beyond the recordings.

def _floor_log2(x: Fraction) -> int:
    e = x.numerator.bit_length() - x.denominator.bit_length()
    return e - 1 if abs(x) < Fraction(2) ** e else e


def _toward_zero(x: Fraction, step: Fraction) -> Fraction:
    n = abs(x) // step
    return n * step if x >= 0 else -n * step


def _mma_dot(av, bv, c, operand_emin):
    """One element: av, bv lists of (Fraction value, format emin); c a float32."""
    def exponent(v, emin):
        e = _floor_log2(abs(v))
        return max(e, operand_emin) if operand_emin is not None else max(e, emin)
    K = len(av)
    d = np.float32(c)
    for k0 in range(0, -(-K // 32) * 32, 32):
        s = Fraction(0)
        for group in ((0, 1), (2, 3)):
            terms = [(av[k][0] * bv[k][0], exponent(av[k][0], av[k][1]) + exponent(bv[k][0], bv[k][1]))
                     for k in range(k0, min(k0 + 32, K)) if k % 4 in group
                     and av[k][0] != 0 and bv[k][0] != 0]
            exps = [e for _, e in terms] + ([_floor_log2(abs(s))] if s != 0 else [])
            if not exps:
                continue
            step = Fraction(2) ** (max(exps) - 25)
            total = sum((_toward_zero(p, step) for p, _ in terms), _toward_zero(s, step))
            s = _toward_zero(total, Fraction(2) ** (_floor_log2(abs(total)) - 23)) if total else Fraction(0)
        d = np.float32(d + np.float32(float(s)))            # IEEE float32 add, nearest even
    return d


def _ref_mma(a, b, fa, fb, c, operand_emin):
    fa, fb = as_format(fa, kind="float"), as_format(fb, kind="float")
    out = np.empty((a.shape[0], b.shape[1]), np.float32)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            av = [(fa.decode_exact(int(x)), fa.emin) for x in a[i]]
            bv = [(fb.decode_exact(int(x)), fb.emin) for x in b[:, j]]
            out[i, j] = _mma_dot(av, bv, c[i, j], operand_emin)
    return out


@pytest.mark.parametrize("kind", ["codes", "cancel", "subnormal", "wide"])
@pytest.mark.parametrize("operand_emin", [-14, None])
def test_mma_sync_matches_transcription(rng, kind, operand_emin):
    acc = TC.hopper_mma_sync_fp8(operand_emin=operand_emin)
    for fa, fb, K in (("e4m3", "e4m3", 77), ("e4m3", "e5m2", 40), ("e5m2", "e5m2", 5)):
        a = _adversarial(rng, kind, (3, K), fa)
        b = _adversarial(rng, kind, (K, 4), fb)
        c = (rng.standard_normal((3, 4)) * 2.0 ** rng.integers(-140, 20, (3, 4))).astype(np.float32)
        c[0, 0] = 0.0
        got = fp.fp8_matmul(a, b, c=c, acc=acc)
        np.testing.assert_array_equal(got.view(np.int32),
                                      _ref_mma(a, b, fa, fb, c, operand_emin).view(np.int32))


def test_c_input_rules(rng):
    mma = TC.hopper_mma_sync_fp8()
    a = _adversarial(rng, "wide", (2, 4, 32), "e4m3")
    b = _adversarial(rng, "wide", (32, 3), "e4m3")
    full = fp.fp8_matmul(a, b, c=np.zeros((2, 4, 3), np.float32), acc=mma)
    # broadcasting, scalars, exact float64/float16/bfloat16 inputs
    np.testing.assert_array_equal(fp.fp8_matmul(a, b, c=0.0, acc=mma), full)
    row = np.array([0.5, -1.0, 2.0], np.float32)
    np.testing.assert_array_equal(fp.fp8_matmul(a, b, c=row, acc=mma),
                                  fp.fp8_matmul(a, b, c=np.broadcast_to(row, (2, 4, 3)).copy(), acc=mma))
    np.testing.assert_array_equal(fp.fp8_matmul(a, b, c=row.astype(np.float64), acc=mma),
                                  fp.fp8_matmul(a, b, c=row, acc=mma))
    np.testing.assert_array_equal(fp.fp8_matmul(a, b, c=row.astype(ml_dtypes.bfloat16), acc=mma),
                                  fp.fp8_matmul(a, b, c=row, acc=mma))
    # 1-D operands: C takes the result's shape; two vectors give a 0-d array
    v = fp.fp8_matmul(a[0, 0], b, c=row, acc=mma)
    assert v.shape == (3,)
    np.testing.assert_array_equal(v, fp.fp8_matmul(a[0, :1], b, c=row[None], acc=mma)[0])
    s = fp.fp8_matmul(a[0, 0], b[:, 0], c=1.5, acc=mma)
    assert isinstance(s, np.ndarray) and s.shape == ()
    assert s == fp.fp8_matmul(a[0, :1], b[:, :1], c=[[1.5]], acc=mma)[0, 0]
    # C's non-finite values follow IEEE
    cn = np.array([[np.inf, -np.inf, np.nan]], np.float32)
    got = fp.fp8_matmul(a[0, :1], b, c=cn, acc=mma)
    assert got[0, 0] == np.inf and got[0, 1] == -np.inf and np.isnan(got[0, 2])
    with pytest.raises(ValueError, match="c: this accumulator does not model an input C"):
        fp.fp8_matmul(a, b, c=0.0)
    with pytest.raises(ValueError, match="c: an input C needs scale_a = scale_b = 1"):
        fp.fp8_matmul(a, b, c=0.0, scale_a=2.0, acc=mma)
    with pytest.raises(ValueError, match="c: shape"):
        fp.fp8_matmul(a, b, c=np.zeros(5, np.float32), acc=mma)
    with pytest.raises(TypeError, match="c: expected float32 values"):
        fp.fp8_matmul(a, b, c=np.zeros(3, np.int32), acc=mma)
    with pytest.raises(ValueError, match="c: 0.1 is not a float32 number"):
        fp.fp8_matmul(a, b, c=0.1, acc=mma)
    with pytest.raises(ValueError, match="c_input: 'float32_accumulator' needs promote_every"):
        TC(32, 13, promote_every=None, c_input="float32_accumulator")
    with pytest.raises(ValueError, match="c_input: expected one of"):
        TC(c_input="beta")


def test_c_with_dask_operands_is_refused():
    da = need("dask.array", 'pip install "fixedpoint[dask]"')
    a = da.from_array(np.full((4, 32), 0x38, np.uint8), chunks=(2, 32))
    with pytest.raises(TypeError, match="c: an input C is not supported with dask operands"):
        fp.fp8_matmul(a, a.T, "e4m3", c=0.0, acc=TC.hopper_mma_sync_fp8())


def test_inf_operands_meet_c():
    """An infinite product is added to C as IEEE does: Inf + -Inf is NaN."""
    mma = TC.hopper_mma_sync_fp8()
    one, inf = 0x3C, 0x7C
    a = np.array([[inf, one], [one, one]], np.uint8)
    b = np.array([[one], [one]], np.uint8)
    got = fp.fp8_matmul(a, b, "e5m2", c=np.array([[-np.inf], [-np.inf]], np.float32), acc=mma)
    assert np.isnan(got[0, 0]) and got[1, 0] == -np.inf
    got = fp.fp8_matmul(a, b, "e5m2", c=np.array([[1.0], [3.0]], np.float32), acc=mma)
    assert got[0, 0] == np.inf and got[1, 0] == 5.0


# ---------------------------------------------------------------------------
# The exact accumulator for wide formats (issue 17, bug 2)

WIDE = FloatFormat(6, 1, bias=31, inf=False, nan=None)        # exponents -30 .. 32


def test_exact_sum_of_wide_format_does_not_overflow(path):
    """K = 4 of the largest value 1.5 * 2^32: the exact sum 9 * 2^64 = 1.66e20
    (exact in float32).  The 128-bit accumulator used to return 1.84e19."""
    top = fp.FloatCodes(np.full((1, 4), WIDE.max_code, np.uint8), WIDE)
    got = fp.fp8_matmul(top, top.T, acc=TC.exact())
    assert got[0, 0] == np.float32(9 * 2.0**64)
    # spread over the whole range: tiny terms below the huge ones still count
    low = fp.FloatCodes(np.array([[WIDE.max_code, 1, 1]], np.uint8), WIDE)    # 1 = 2^-31
    got = fp.fp8_matmul(low, low.T, acc=TC.exact())[0, 0]
    assert got == np.float32(2.25 * 2.0**64)           # 2 * 2^-62 is far below float32's ulp
    neg = fp.FloatCodes(np.array([[WIDE.max_code, WIDE.max_code | WIDE.sign_bit, 1]], np.uint8),
                        WIDE)
    pos = fp.FloatCodes(np.array([[WIDE.max_code], [WIDE.max_code], [1]], np.uint8), WIDE)
    assert fp.fp8_matmul(neg, pos, acc=TC.exact())[0, 0] == np.float32(2.0**-62)   # cancellation


@pytest.mark.parametrize("acc", [TC.exact(), TC(None, None, "sum", "toward_zero", 8),
                                 TC.hopper_fp8(), TC(4, 40, "exact", "nearest_even", None)],
                         ids=["exact", "exact_promoted", "hopper", "wide_frac"])
@pytest.mark.parametrize("fmt", [WIDE, FloatFormat(5, 2, bias=3), FloatFormat(6, 1, bias=58, nan=None, inf=False)],
                         ids=["e6m1_b31", "e5m2_b3", "e6m1_b58"])
def test_wide_formats_match_slow_reference(acc, fmt, rng):
    codes = rng.integers(0, 256, (3, 37)).astype(np.uint8)
    bad = np.vectorize(lambda c: fmt.is_nan_code(int(c)) or fmt.is_inf_code(int(c)))(codes)
    codes[bad] = 0
    a = fp.FloatCodes(codes, fmt)
    b = fp.FloatCodes(np.ascontiguousarray(codes[::-1].T), fmt)
    got = fp.fp8_matmul(a, b, acc=acc)
    want = ref.fp8_matmul(a, b, fmt, fmt, acc)
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


def test_block_result_beyond_float32():
    """Exponents up to 60: 128 products of 2.25 * 2^120 exceed float32.  IEEE
    rounding: +-Inf to nearest, the largest value toward zero; an infinite
    running result stays infinite."""
    f = FloatFormat(6, 1, bias=3, inf=False, nan=None)          # largest 1.5 * 2^60
    top = fp.FloatCodes(np.full((2, 128), f.max_code, np.uint8), f)
    top[1] |= f.sign_bit
    col = fp.FloatCodes(np.full((128, 1), f.max_code, np.uint8), f)
    got = fp.fp8_matmul(top, col, acc=TC.exact())[:, 0]
    assert got[0] == np.inf and got[1] == -np.inf
    rz = fp.fp8_matmul(top, col, acc=TC(None, None, "sum", "toward_zero", None))[:, 0]
    assert rz[0] == np.finfo(np.float32).max and rz[1] == -np.finfo(np.float32).max
    blocks = fp.fp8_matmul(top, col, acc=TC(32, 13, "sum", "nearest_even", None))[:, 0]
    assert blocks[0] == np.inf and blocks[1] == -np.inf
    # 64 products: 1.8e38 still fits
    assert fp.fp8_matmul(top[:1, :64], col[:64], acc=TC.exact())[0, 0] == np.float32(2.25 * 2.0**126)


def test_formats_outside_the_range_are_refused():
    f = FloatFormat(6, 1, bias=63, inf=False, nan=None)         # exponents down to -62
    a = fp.FloatCodes(np.zeros((2, 2), np.uint8), f)
    with pytest.raises(ValueError, match=r"fmt \(a\): fp8_matmul supports formats whose exponents"):
        fp.fp8_matmul(a, a, acc=TC.exact())
    with pytest.raises(ValueError, match=r"acc: operand_emin=-14 is above fmt \(a\)"):
        fp.fp8_matmul(fp.FloatCodes(np.zeros((2, 2), np.uint8), WIDE), a.view(np.ndarray),
                      (WIDE, "e4m3"), acc=TC.hopper_mma_sync_fp8())


# ---------------------------------------------------------------------------
# Kernels against the slow reference, and against each other

ACCS = [TC.hopper_fp8(), TC.hopper_fp8(fast_accum=True), TC.exact(), TC.b200_fp8(), TC.hopper_fp16(),
        TC.a100_fp16(), TC(16, 10, "exact", "nearest_even", 64), TC(32, 13, "sum", "nearest_even", None),
        TC(8, 3, "sum", "toward_zero", 8), TC(None, None, "sum", "toward_zero", 32, 10),
        TC(16, 8, "sum", "nearest_even", 64, 5, interleave=4, operand_emin=-20)]


def _adversarial(rng, kind, shape, fmt):
    f = as_format(fmt, kind="float")
    if kind == "codes":          # uniform over finite codes
        codes = rng.integers(0, 256, shape).astype(np.uint8)
        bad = np.vectorize(lambda c: f.is_nan_code(int(c)) or f.is_inf_code(int(c)))(codes)
        codes[bad] = 0
        return fp.FloatCodes(codes, f)
    if kind == "cancel":         # one huge term per row among tiny ones, and its negative
        x = rng.standard_normal(shape) * 2.0 ** rng.integers(-12, -4, shape)
        x[..., 0] = 400 if f.max_value < 1000 else 50000
        x[..., -1] = -x[..., 0]
    elif kind == "huge":         # one huge term among small ones
        x = rng.standard_normal(shape) * 2.0 ** rng.integers(-10, 0, shape)
        x[..., shape[-1] // 2] = f.max_value
    elif kind == "subnormal":
        x = rng.standard_normal(shape) * f.min_normal
    elif kind == "zero_rows":
        x = rng.standard_normal(shape)
        x[::2] = 0
    else:
        x = rng.standard_normal(shape) * 2.0 ** rng.integers(-8, 8, shape)
    return fp.to_fp8(x.astype(np.float32), f)


@pytest.mark.parametrize("acc", ACCS, ids=lambda a: repr(a)[21:70])
@pytest.mark.parametrize("kind", ["codes", "cancel", "huge", "subnormal", "zero_rows", "wide"])
def test_kernels_match_slow_reference(acc, kind, rng, monkeypatch):
    """Every kernel path the CPU has against the Fraction reference."""
    for fa, fb, K in (("e4m3", "e4m3", 77), ("e5m2", "e4m3", 130), ("e5m2", "e5m2", 33)):
        a = _adversarial(rng, kind, (3, K), fa)
        b = _adversarial(rng, kind, (K, 5), fb).T.copy().T if kind != "zero_rows" else \
            _adversarial(rng, "wide", (K, 5), fb)
        if acc.interleave is None and acc.operand_emin is None:
            want = ref.fp8_matmul(a, b, fa, fb, acc)
        else:    # the reference knows neither: give it the permuted k and widened exponents
            want = _ref_permuted(a, b, fa, fb, acc)
        for path in [None] + PATHS:
            if not _has_path(path):
                continue
            monkeypatch.setattr(tensorcore, "_FORCE_PATH", path)
            got = fp.fp8_matmul(a, b.copy(order="C"), acc=acc)
            np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32), err_msg=str(path))


def _ref_permuted(a, b, fa, fb, acc):
    """ref.tensorcore_dot on the k order that ``interleave`` makes, with the
    exponents that ``operand_emin`` gives."""
    K = a.shape[1]
    kp = -(-K // acc.promote_every) * acc.promote_every
    km = tensorcore._kmap(acc, K, kp)
    fa, fb = as_format(fa, kind="float"), as_format(fb, kind="float")

    def dec(codes, f):
        vals = [f.decode_exact(int(x)) if s >= 0 else Fraction(0) for x, s in zip(codes, km)]
        exps = [(max(_floor_log2(abs(v)), acc.operand_emin) if acc.operand_emin is not None
                 else max(_floor_log2(abs(v)), f.emin)) if v else 0 for v in vals]
        return vals, exps
    out = np.zeros((a.shape[0], b.shape[1]), np.float32)
    ap = [np.where(km >= 0, row[np.maximum(km, 0)], 0) for row in np.asarray(a)]
    bp = [np.where(km >= 0, np.asarray(b)[np.maximum(km, 0), j], 0) for j in range(b.shape[1])]
    plain = TC(acc.block, acc.frac_bits, acc.product_exponent, acc.final_rounding,
               acc.promote_every, acc.result_frac_bits)
    for i in range(a.shape[0]):
        av, ae = dec(ap[i], fa)
        for j in range(b.shape[1]):
            bv, be = dec(bp[j], fb)
            out[i, j] = float(ref.tensorcore_dot(av, ae, bv, be, plain.block, plain.frac_bits,
                                                 plain.product_exponent, plain.final_rounding,
                                                 plain.promote_every, plain.result_frac_bits))
    return out


FAST_ACCS = [TC.hopper_fp8(), TC.hopper_fp8(fast_accum=True), TC(32, 13, "sum", "nearest_even", 128),
             TC(16, 10, "sum", "toward_zero", 64, 7), TC(8, 3, "sum", "nearest_even", None, 2),
             TC(32, 13, "sum", "toward_zero", 64, interleave=2, operand_emin=-14,
                c_input="float32_accumulator")]


@settings(deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 300), st.sampled_from(["e4m3", "e5m2"]),
       st.sampled_from(["e4m3", "e5m2"]), st.integers(0, len(FAST_ACCS) - 1),
       st.sampled_from(["wide", "codes", "cancel", "huge", "subnormal"]),
       st.sampled_from(["C", "F", "strided", "batch"]), st.booleans())
def test_fast_kernels_are_bit_identical(seed, K, fa, fb, acc_i, kind, layout, specials):
    """AVX-512 and AVX2 against the general (int128) kernel on adversarial
    inputs: cancellation, one huge term, subnormals, NaN/Inf, any K, batches,
    strides and layouts, C, 1 and 2 threads."""
    rng = np.random.default_rng(seed)
    acc = FAST_ACCS[acc_i]
    shape_a, shape_b = ((2, 7, K), (K, 35)) if layout == "batch" else ((7, K), (K, 35))
    a = _adversarial(rng, kind, shape_a, fa)
    b = _adversarial(rng, kind, shape_b, fb)
    if specials:
        f = as_format(fb, kind="float")
        nan = next(c for c in range(256) if f.is_nan_code(c))
        b[rng.integers(0, K), rng.integers(0, 35)] = nan
        if f.inf:
            b[rng.integers(0, K), rng.integers(0, 35)] = f.max_exp_field << f.man_bits
    if layout == "F":
        a, b = a.copy(order="F"), b.copy(order="F")
    elif layout == "strided":
        a = np.repeat(a, 2, axis=1)[:, ::2]
        b = b[::-1]
    kw = {}
    if acc.c_input:
        kw["c"] = (rng.standard_normal((a.shape[-2], 35)) * 100).astype(np.float32)
    results = []
    for forced, threads in (("generic", 1), ("avx2", 2), ("avx512", 1), ("avx512", 2), (None, 2)):
        if not _has_path(forced):
            continue
        tensorcore._FORCE_PATH = forced
        try:
            results.append(fp.fp8_matmul(a, b, acc=acc, num_threads=threads, **kw))
        finally:
            tensorcore._FORCE_PATH = None
    for r in results[1:]:
        np.testing.assert_array_equal(r.view(np.int32), results[0].view(np.int32))


def test_fast_paths_are_taken():
    """The exactness conditions admit the Hopper presets on the SIMD kernels
    (otherwise the path tests would compare the general kernel with itself)."""
    e4 = tensorcore._table(as_format("e4m3", kind="float"), None)
    e5 = tensorcore._table(as_format("e5m2", kind="float"), None)
    for acc in (TC.hopper_fp8(), TC.hopper_fp8(fast_accum=True)):
        assert tensorcore._fast_path(acc, e4, e4, 1024) == "auto"
        assert tensorcore._fast_path(acc, e5, e5, 1 << 20) == "auto"
    for acc in (TC.exact(), TC.hopper_mma_sync_fp8(), TC(16, 10, "exact")):
        assert tensorcore._fast_path(acc, e4, e4, 1024) is None
    # a block too long for int8 counts: AVX2 only; frac_bits too wide for AVX-512: AVX2
    assert tensorcore._fast_path(TC(128, 8, promote_every=None), e4, e4, 1024) == "avx2"
    assert tensorcore._fast_path(TC(32, 15, promote_every=None), e4, e4, 1024) == "avx2"


def test_scales_and_output_rounding(rng):
    a = _adversarial(rng, "wide", (9, 64), "e4m3")
    b = _adversarial(rng, "wide", (64, 7), "e4m3")
    acc = fp.fp8_matmul(a, b)
    sa, sb = np.float32(0.3), np.float32(1.7)
    got = fp.fp8_matmul(a, b, scale_a=0.3, scale_b=1.7)
    np.testing.assert_array_equal(got, acc * np.float32(sa * sb))
    row = rng.uniform(0.1, 3, 9).astype(np.float32)
    col = rng.uniform(0.1, 3, 7).astype(np.float32)
    got = fp.fp8_matmul(a, b, scale_a=row, scale_b=col)
    np.testing.assert_array_equal(got, acc * (row[:, None] * col[None, :]))
    f16 = fp.fp8_matmul(a, b, out_dtype="float16")
    np.testing.assert_array_equal(f16, acc.astype(np.float16))
    bf = fp.fp8_matmul(a, b, out_dtype=ml_dtypes.bfloat16)
    assert bf.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(bf, acc.astype(ml_dtypes.bfloat16))


def test_nan_and_inf_follow_ieee():
    e5 = as_format("e5m2", kind="float")
    one, inf, ninf, nan, zero = 0x3C, 0x7C, 0xFC, 0x7E, 0x00
    a = np.array([[one, one], [inf, one], [inf, ninf], [nan, one], [inf, zero], [one, one]], np.uint8)
    b = np.array([[one, one], [one, one]], np.uint8)
    b2 = b.copy()
    b2[1, 1] = zero
    got = fp.fp8_matmul(a, b, "e5m2")
    assert got[0, 0] == 2.0
    assert got[1, 0] == np.inf
    assert np.isnan(got[2, 0])          # +Inf + -Inf
    assert np.isnan(got[3, 0])          # NaN wins
    assert got[4, 0] == np.inf          # Inf * 1 + 0 * 1
    got2 = fp.fp8_matmul(a, b2, "e5m2")
    assert got2[4, 1] == np.inf         # Inf * 1 + 0 * 0
    b3 = np.array([[zero], [one]], np.uint8)
    assert np.isnan(fp.fp8_matmul(a, b3, "e5m2")[4, 0])   # Inf * 0 + 0 * 1
    assert np.isnan(fp.fp8_matmul(np.array([[inf]], np.uint8), np.array([[zero]], np.uint8),
                                  "e5m2")[0, 0])
    assert e5.is_inf_code(inf)
    e4nan = fp.fp8_matmul(np.array([[0x7F, 0x38]], np.uint8), np.array([[0x38], [0x38]], np.uint8),
                          "e4m3")
    assert np.isnan(e4nan[0, 0])


def test_shapes_threads_and_layouts(rng):
    a = _adversarial(rng, "wide", (2, 1, 5, 40), "e4m3")
    b = _adversarial(rng, "wide", (3, 40, 6), "e4m3")
    got = fp.fp8_matmul(a, b)
    assert got.shape == (2, 3, 5, 6)
    np.testing.assert_array_equal(got[1, 2], fp.fp8_matmul(a[1, 0], b[2]))
    v = b[0, :, 0]
    assert fp.fp8_matmul(a[0, 0], v).shape == (5,)
    dot = fp.fp8_matmul(a[0, 0, 0], v)
    assert isinstance(dot, np.ndarray) and dot.shape == ()         # 1-D x 1-D: a 0-d array
    big_a = _adversarial(rng, "wide", (70, 300), "e4m3")
    big_b = _adversarial(rng, "wide", (300, 90), "e4m3")
    r1 = fp.fp8_matmul(big_a, big_b, num_threads=1)
    np.testing.assert_array_equal(r1, fp.fp8_matmul(big_a, big_b, num_threads=2))
    np.testing.assert_array_equal(r1, fp.fp8_matmul(big_a.T.copy().T, big_b.copy(order="F")))
    np.testing.assert_array_equal(r1[::-1], fp.fp8_matmul(big_a[::-1], big_b))
    assert fp.fp8_matmul(np.zeros((0, 4), np.uint8), np.zeros((4, 3), np.uint8), "e4m3").shape == (0, 3)
    np.testing.assert_array_equal(fp.fp8_matmul(np.zeros((2, 0), np.uint8), np.zeros((0, 3), np.uint8),
                                                "e4m3"),
                                  np.zeros((2, 3), np.float32))
    mma = TC.hopper_mma_sync_fp8()
    np.testing.assert_array_equal(fp.fp8_matmul(np.zeros((2, 0), np.uint8), np.zeros((0, 3), np.uint8),
                                                "e4m3", c=2.0, acc=mma), np.full((2, 3), 2.0, np.float32))


def test_bad_input():
    a = np.zeros((2, 3), np.uint8)
    with pytest.raises(TypeError, match="a: expected uint8 minifloat codes"):
        fp.fp8_matmul(a.astype(np.int8), a.T, "e4m3")
    with pytest.raises(TypeError, match="a: plain uint8 codes carry no format"):
        fp.fp8_matmul(a, a.T)
    with pytest.raises(ValueError, match="inner dimensions differ"):
        fp.fp8_matmul(a, a, "e4m3")
    with pytest.raises(ValueError, match=r"fmt \(a\): unknown format 'e9m9'"):
        fp.fp8_matmul(a, a.T, "e9m9")
    with pytest.raises(ValueError, match="fmt: expected one format or a pair"):
        fp.fp8_matmul(a, a.T, ("e4m3", "e4m3", "e4m3"))
    with pytest.raises(ValueError, match="b: the codes are e4m3 codes, but fmt says e5m2"):
        fp.fp8_matmul(a, fp.FloatCodes(a.T, "e4m3"), ("e4m3", "e5m2"))
    with pytest.raises(ValueError, match="out_dtype: expected"):
        fp.fp8_matmul(a, a.T, "e4m3", out_dtype="int8")
    with pytest.raises(ValueError, match="scale_a: scales must be finite and positive"):
        fp.fp8_matmul(a, a.T, "e4m3", scale_a=0.0)
    with pytest.raises(ValueError, match="scale_b: scales must be finite and positive"):
        fp.fp8_matmul(a, a.T, "e4m3", scale_b=np.inf)
    with pytest.raises(ValueError, match="scale_a: expected a scalar or a vector of length 2"):
        fp.fp8_matmul(a, a.T, "e4m3", scale_a=[1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="acc: expected a TensorCoreAccumulator"):
        fp.fp8_matmul(a, a.T, "e4m3", acc=fp.Accumulator())
    with pytest.raises(ValueError, match="promote_every: must be a multiple of block"):
        TC(block=32, promote_every=100)
    with pytest.raises(ValueError, match="frac_bits"):
        TC(frac_bits=41)
    with pytest.raises(TypeError, match="fast_accum: expected a bool"):
        TC.hopper_fp8(fast_accum="yes")
    with pytest.raises(ValueError, match="interleave: must divide block=16"):
        TC(16, 25, promote_every=32, interleave=3)
    with pytest.raises(ValueError, match="interleave: needs block and promote_every"):
        TC(32, 13, promote_every=None, interleave=2)
    with pytest.raises(TypeError, match="operand_emin: expected an int"):
        TC(operand_emin=1.5)


# ---------------------------------------------------------------------------
# Memory: the output plus one packed copy of each operand; MemoryError, never garbage

_PEAK = r"""
import json, resource, sys
import numpy as np
import fixedpoint as fp

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

n = int(sys.argv[1])
g = np.random.default_rng(0)
# random finite E4M3 codes, made without temporaries larger than the operands
a = g.integers(0, 0x7F, (n, n), dtype=np.uint8)
a |= g.integers(0, 2, (n, n), dtype=np.uint8) << 7
a = fp.FloatCodes(a, "e4m3")
b = fp.FloatCodes(g.integers(0, 0x7F, (n, n), dtype=np.uint8), "e4m3")
fp.fp8_matmul(a[:64, :64], b[:64, :64], num_threads=2)      # load everything once
base = peak_mb()
out = fp.fp8_matmul(a, b, num_threads=2)
print(json.dumps({"extra_mb": peak_mb() - base, "finite": bool(np.isfinite(out).all())}))
"""


def test_peak_memory_is_output_plus_packed_operands():
    skip_under_asan()
    import json
    import subprocess
    import sys
    import tempfile
    n = 1024
    r = subprocess.run([sys.executable, "-c", _PEAK, str(n)], capture_output=True, text=True,
                       timeout=300, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    out_mb = 4 * n * n / 2**20
    packed_mb = 2 * 7 * n * n / 2**20            # AVX-512 packing: 7 bytes per element
    assert res["finite"] and res["extra_mb"] < out_mb + packed_mb + 8, res


_OOM = r"""
import resource, sys
import numpy as np
import fixedpoint as fp

a = fp.FloatCodes(np.full((64, 1 << 21), 0x38, np.uint8), "e4m3")     # 128 MB each
b = fp.FloatCodes(np.full((1 << 21, 8), 0x38, np.uint8), "e4m3")
fp.fp8_matmul(a[:4, :64], b[:64], num_threads=2)
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
with open("/proc/self/statm") as f:
    used = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + (400 << 20), hard))    # packing needs ~1.3 GB
try:
    fp.fp8_matmul(a, b, num_threads=2)
except MemoryError as e:
    print("MemoryError", e)
else:
    print("no error")
"""


def test_out_of_memory_is_a_memory_error():
    """The SIMD kernels pack the operands before any thread starts: when that
    allocation fails the call raises MemoryError (the general kernel allocates
    nothing)."""
    skip_under_asan()
    if not (_has_path("avx2") or _has_path("avx512")):
        pytest.skip("no SIMD kernel in this build: nothing is allocated")
    import subprocess
    import sys
    import tempfile
    r = subprocess.run([sys.executable, "-c", _OOM], capture_output=True, text=True, timeout=300,
                       cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("MemoryError fp8_matmul: out of memory"), r.stdout
