"""FP8 conversion: every float32 input against the Hopper GPU and PyTorch, the
16-bit sources and decoding exhaustively, float64 ties, and every generic
minifloat against the slow reference."""
import json
from fractions import Fraction

import numpy as np
import pytest

import fixedpoint as fp
from fixedpoint import _reference as ref
from fixedpoint.formats import FLOAT_FORMATS, FloatFormat, as_format
from extras import need

ml_dtypes = need("ml_dtypes", 'pip install ml_dtypes')

OVF = {True: "saturate", False: "nonfinite"}

# (golden key, format, saturate)
MODES = [("torch_e5m2", "e5m2", False), ("torch_e4m3fn", "e4m3", False),
         ("ptx_e5m2_satfinite", "e5m2", True), ("ptx_e4m3_satfinite", "e4m3", True)]
CHUNK = 1 << 26


@pytest.fixture(scope="module")
def conv_runs(data_dir):
    return json.loads((data_dir / "conv_runs.json").read_text())


def _runs_of(codes: np.ndarray, first: int):
    """[(first_bits, code)] where the code changes inside one chunk."""
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = np.concatenate([[0], change])
    return [(first + int(i), int(codes[i])) for i in starts]


@pytest.mark.slow
def test_all_float32_inputs_against_gpu(conv_runs):
    """The complete function on all 2^32 float32 bit patterns, per mode."""
    got = {key: [] for key, _, _ in MODES}
    bits = np.arange(CHUNK, dtype=np.uint32)
    for start in range(0, 2**32, CHUNK):
        x = (bits + np.uint32(start)).view(np.float32)
        for key, fmt, sat in MODES:
            runs = _runs_of(fp.to_fp8(x, fmt, overflow=OVF[sat]), start)
            prev = got[key]
            if prev and prev[-1][1] == runs[0][1]:
                runs = runs[1:]                     # same code carries over the chunk edge
            prev.extend(runs)
    for key, _, _ in MODES:
        want = [tuple(r) for r in conv_runs[key]]
        assert got[key] == want, key


def _expand(runs, bits):
    firsts = np.array([r[0] for r in runs], dtype=np.int64)
    codes = np.array([r[1] for r in runs], dtype=np.uint8)
    return codes[np.searchsorted(firsts, bits.astype(np.int64), side="right") - 1]


def test_float32_edges_against_gpu(conv_runs):
    """Every run boundary (and its neighbours) of the GPU function: fast, and
    names the first failing input if something breaks."""
    for key, fmt, sat in MODES:
        firsts = np.array([r[0] for r in conv_runs[key]], dtype=np.int64)
        bits = np.unique(np.clip(np.concatenate([firsts - 1, firsts, firsts + 1]), 0, 2**32 - 1))
        got = fp.to_fp8(bits.astype(np.uint32).view(np.float32), fmt, overflow=OVF[sat])
        want = _expand(conv_runs[key], bits)
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, (key, hex(int(bits[bad[0]])), int(got[bad[0]]), int(want[bad[0]]))


@pytest.fixture(scope="module")
def small(data_dir):
    return np.load(data_dir / "small_exh.npz")


def test_float16_all_inputs(small):
    x = np.arange(65536, dtype=np.uint16).view(np.float16)
    neg_nan = np.isnan(x) & np.signbit(x)
    assert neg_nan.sum() == 1023
    for fmt, key in (("e5m2", "torch_f16_to_e5m2"), ("e4m3", "torch_f16_to_e4m3fn")):
        got, gpu = fp.to_fp8(x, fmt, overflow="nonfinite"), small[key]
        # Known, documented deviation: PyTorch's CUDA float16 cast turns every
        # negative NaN into 0x7F (its half -> float step makes NaN positive),
        # while its float32 cast (and OCP) keep the sign: we keep it (0xFF).
        np.testing.assert_array_equal(got[~neg_nan], gpu[~neg_nan])
        assert np.all(gpu[neg_nan] == 0x7F) and np.all(got[neg_nan] == 0xFF)
    np.testing.assert_array_equal(fp.to_fp8(x, "e5m2", overflow="saturate"), small["ptx_f16_to_e5m2_satfinite"])
    np.testing.assert_array_equal(fp.to_fp8(x, "e4m3", overflow="saturate"), small["ptx_f16_to_e4m3_satfinite"])


def test_bfloat16_all_inputs(small):
    x = np.arange(65536, dtype=np.uint16).view(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(fp.to_fp8(x, "e5m2", overflow="nonfinite"), small["torch_bf16_to_e5m2"])
    np.testing.assert_array_equal(fp.to_fp8(x, "e4m3", overflow="nonfinite"), small["torch_bf16_to_e4m3fn"])


@pytest.mark.parametrize("fmt,key,f16key", [("e5m2", "torch_e5m2_to_f32", "ptx_e5m2_to_f16"),
                                            ("e4m3", "torch_e4m3fn_to_f32", "ptx_e4m3_to_f16")])
def test_decode_all_codes(small, fmt, key, f16key):
    codes = np.arange(256, dtype=np.uint8)
    want32 = small[key].view(np.float32)
    got32 = fp.from_fp8(codes, fmt, dtype=np.float32)
    nan = np.isnan(want32)
    # NaN payloads differ between implementations (PyTorch: 0x7FFFFFFF for
    # E5M2, 0x7FF00000 for E4M3, PTX: 0x7FFF): we give the default quiet NaN
    # with the code's sign and compare NaN-ness and sign only.
    np.testing.assert_array_equal(np.isnan(got32), nan)
    np.testing.assert_array_equal(np.signbit(got32[nan]), np.signbit(want32[nan]))
    np.testing.assert_array_equal(got32[~nan].view(np.uint32), want32[~nan].view(np.uint32))
    want16 = small[f16key].view(np.float16)
    got16 = fp.from_fp8(codes, fmt, dtype=np.float16)
    n16 = np.isnan(want16)
    np.testing.assert_array_equal(np.isnan(got16), n16)
    np.testing.assert_array_equal(got16[~n16].view(np.uint16), want16[~n16].view(np.uint16))
    got64 = fp.from_fp8(codes, fmt, dtype=np.float64)
    np.testing.assert_array_equal(got64[~nan], want32[~nan].astype(np.float64))
    # and against ml_dtypes' decoding
    ml = fp.as_ml_dtypes(codes, fmt).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(ml), nan)
    np.testing.assert_array_equal(ml[~nan], got32[~nan])


def test_float64_single_and_double_rounding(data_dir):
    z = np.load(data_dir / "dbl_round.npz")
    x = z["x_f64"]
    for fmt, key in (("e5m2", "e5m2"), ("e4m3", "e4m3fn")):
        # PyTorch rounds through float32: reproduced by the compatibility option
        np.testing.assert_array_equal(fp.to_fp8(x, fmt, overflow="nonfinite", double_rounding=True),
                                      z[f"torch_f64_to_{key}_cuda"])
        np.testing.assert_array_equal(z[f"torch_f64_to_{key}_cpu"], z[f"torch_f64_f32_to_{key}"])
        # the default rounds once: against the exact-rational reference
        f = as_format(fmt)
        want = [ref.encode_minifloat(float(v), f.exp_bits, f.man_bits, f.bias, f.inf, f.nan, False)
                for v in x]
        got = fp.to_fp8(x, fmt, overflow="nonfinite")
        np.testing.assert_array_equal(got, want)
        # and the two differ on a good share of these near-tie inputs
        assert (got != z[f"torch_f64_to_{key}_cuda"]).mean() > 0.2


def _midpoint_inputs(f: FloatFormat):
    """Every code's value, every midpoint and values a hair either side, both signs."""
    grid = [v for v, _ in ref.minifloat_grid(f.exp_bits, f.man_bits, f.bias, f.nan)]
    ulp = grid[-1] - grid[-2]
    grid = grid + [grid[-1] + ulp, grid[-1] + 2 * ulp]
    pts = set()
    for a, b in zip(grid[:-1], grid[1:]):
        mid = (a + b) / 2
        for v in (a, mid, b):
            pts.add(float(v))
            pts.add(float(np.nextafter(np.float32(v), np.float32(np.inf))))
            pts.add(float(np.nextafter(np.float32(v), np.float32(0))))
    pts |= {0.0, float(np.float32(1e-45)), 3e38, float("inf")}
    vals = np.array(sorted(pts), dtype=np.float32)
    return np.concatenate([vals, -vals, [np.nan, -np.nan]]).astype(np.float32)


GENERIC = [FLOAT_FORMATS[k] for k in ("e5m2", "e4m3", "e4m3fnuz", "e5m2fnuz", "e3m2", "e2m3", "e2m1")] + [
    FloatFormat(4, 3, bias=11, inf=False, nan="all_ones"),
    FloatFormat(3, 4, inf=True, nan="ieee"),
    FloatFormat(5, 2, inf=False, nan=None),
    FloatFormat(1, 6, inf=False, nan=None),
    FloatFormat(7, 0, inf=False, nan="all_ones"),
    FloatFormat(6, 1, bias=40, inf=True, nan="ieee"),
]


@pytest.mark.parametrize("f", GENERIC, ids=lambda f: f.name)
@pytest.mark.parametrize("saturate", [False, True])
@pytest.mark.parametrize("rounding", ["nearest_even", "toward_zero"])
def test_generic_formats_against_reference(f, saturate, rounding, rng):
    x = _midpoint_inputs(f)
    rand = (rng.standard_normal(3000) * rng.choice([1e-3, 1, 10, 1e4], 3000)).astype(np.float32)
    x = np.concatenate([x, rand])
    if f.nan is None and not f.inf and not saturate:
        with pytest.raises(ValueError, match="overflow: .* has neither Inf nor NaN"):
            fp.to_fp8(x, f, overflow="nonfinite")
        return
    for src in (x, x.astype(np.float64)):
        got = fp.to_fp8(src, f, overflow=OVF[saturate], rounding=rounding)
        want = [ref.encode_minifloat(float(v), f.exp_bits, f.man_bits, f.bias, f.inf, f.nan,
                                     saturate, rounding) for v in src]
        bad = np.flatnonzero(got != np.array(want))
        assert bad.size == 0, (f.name, float(src[bad[0]]), int(got[bad[0]]), want[bad[0]])
    # decoding is exact: every finite code decodes to its rational value
    codes = np.arange(1 << f.nbits, dtype=np.uint8)
    dec = fp.from_fp8(codes, f, dtype=np.float64)
    for c in codes:
        v = f.decode_exact(int(c))
        if isinstance(v, float):
            assert np.isnan(dec[c]) if np.isnan(v) else dec[c] == v
        else:
            assert Fraction(float(dec[c])) == v
    # and a finite round trip: decode(encode(decode(c))) == c (except -0 in FNUZ)
    finite = np.isfinite(dec)
    back = fp.to_fp8(dec[finite].astype(np.float32), f, overflow=OVF[saturate])
    np.testing.assert_array_equal(back, codes[finite])


@pytest.mark.parametrize("name", ["e5m2", "e4m3", "e4m3fnuz", "e5m2fnuz", "e3m2", "e2m3", "e2m1"])
def test_against_ml_dtypes(name, rng):
    """ml_dtypes is an independent oracle for the non-saturating conversions
    (except its E5M2 NaN code 0x7E, and its rounding of float64 through float32)."""
    f = as_format(name)
    mlname = {"e5m2": "float8_e5m2", "e4m3": "float8_e4m3fn", "e4m3fnuz": "float8_e4m3fnuz",
              "e5m2fnuz": "float8_e5m2fnuz", "e3m2": "float6_e3m2fn", "e2m3": "float6_e2m3fn",
              "e2m1": "float4_e2m1fn"}[name]
    x = np.concatenate([_midpoint_inputs(f), rng.standard_normal(20000).astype(np.float32) * 8])
    x = x[~np.isnan(x)]
    if f.nan is None or name == "e4m3":   # ml_dtypes saturates these formats' overflow / Inf
        x = x[np.abs(x) <= f.max_value]
    want = x.astype(getattr(ml_dtypes, mlname)).view(np.uint8)
    got = fp.to_fp8(x, f, overflow="saturate" if f.nan is None else "nonfinite")
    np.testing.assert_array_equal(got, want)


def test_stochastic_rounding_properties(rng):
    x = np.full(200_000, 1.1, dtype=np.float32)       # between E5M2 1.0 and 1.25
    codes = fp.to_fp8(x, "e5m2", rounding="stochastic", seed=3)
    assert set(np.unique(codes)) == {60, 61}
    mean = fp.from_fp8(codes, "e5m2", dtype=np.float64).mean()
    assert abs(mean - float(np.float32(1.1))) < 0.002       # unbiased; sd of the mean ~ 3e-4
    # reproducible, independent of threads and of chunking
    np.testing.assert_array_equal(codes, fp.to_fp8(x, "e5m2", rounding="stochastic", seed=3,
                                                   num_threads=1))
    assert not np.array_equal(codes, fp.to_fp8(x, "e5m2", rounding="stochastic", seed=4))
    # representable values never move; tiny values below the subnormals average right
    exact = fp.from_fp8(np.arange(0, 0x7C, dtype=np.uint8), "e5m2")
    np.testing.assert_array_equal(fp.to_fp8(exact, "e5m2", rounding="stochastic", seed=9),
                                  np.arange(0, 0x7C))
    tiny = np.full(400_000, 2.0**-18, dtype=np.float64)   # a quarter of the smallest subnormal
    m = fp.from_fp8(fp.to_fp8(tiny, "e5m2", rounding="stochastic", seed=5), "e5m2", dtype=np.float64).mean()
    assert abs(m / 2.0**-18 - 1) < 0.02
    for src in (tiny.astype(np.float32), rng.uniform(-3, 3, 50_000).astype(np.float32)):
        c = fp.to_fp8(src, "e4m3", rounding="stochastic", seed=1)
        lo = fp.to_fp8(src, "e4m3", rounding="toward_zero")
        dec, declo = fp.from_fp8(c, "e4m3", dtype=np.float64), fp.from_fp8(lo, "e4m3", dtype=np.float64)
        # each result is the truncated value or the next one away from zero
        assert np.all((c == lo) | (np.abs(dec) > np.abs(declo)))


def test_layouts_and_out(rng):
    x = rng.standard_normal((64, 33)).astype(np.float32) * 100
    want = fp.to_fp8(x, "e4m3")
    np.testing.assert_array_equal(fp.to_fp8(x.T, "e4m3"), want.T)
    np.testing.assert_array_equal(fp.to_fp8(x[::-1, ::2], "e4m3"), want[::-1, ::2])
    np.testing.assert_array_equal(fp.to_fp8(x.astype(">f4"), "e4m3"), want)
    np.testing.assert_array_equal(fp.to_fp8(x.astype(">f8"), "e4m3"), want)
    out = np.zeros_like(want)
    assert fp.to_fp8(x, "e4m3", out=out) is out
    np.testing.assert_array_equal(out, want)
    assert fp.to_fp8(np.zeros(0, np.float32), "e5m2").shape == (0,)
    x0 = x.copy()
    fp.to_fp8(x, "e4m3", rounding="stochastic", seed=1)
    np.testing.assert_array_equal(x, x0)
    big = rng.standard_normal(300_007).astype(np.float32)
    np.testing.assert_array_equal(fp.to_fp8(big, "e5m2", num_threads=1), fp.to_fp8(big, "e5m2", num_threads=2))
    np.testing.assert_array_equal(fp.to_fp8(big, "e5m2", rounding="stochastic", seed=2, num_threads=1),
                                  fp.to_fp8(big, "e5m2", rounding="stochastic", seed=2, num_threads=2))


def test_bad_input():
    x2 = np.ones(2, np.float32)
    with pytest.raises(TypeError, match="x: expected float16, float32, float64 or bfloat16"):
        fp.to_fp8(np.arange(3), "e5m2")
    with pytest.raises(TypeError, match="x: expected float16"):
        fp.to_fp8(np.array([object()]), "e5m2")
    with pytest.raises(TypeError, match="x: expected a float array, got None"):
        fp.to_fp8(None, "e5m2")
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'fmt'"):
        fp.to_fp8(x2)
    with pytest.raises(TypeError, match="fmt: a format is required"):
        fp.to_fp8(x2, None)
    with pytest.raises(ValueError, match="fmt: unknown format 'e6m3'"):
        fp.to_fp8(x2, "e6m3")
    with pytest.raises(ValueError, match="fmt: expected a float format"):
        fp.to_fp8(x2, "int8")
    with pytest.raises(ValueError, match="rounding: expected one of"):
        fp.to_fp8(x2, "e5m2", rounding="up")
    with pytest.raises(ValueError, match="overflow: expected one of"):
        fp.to_fp8(x2, "e5m2", overflow="wrap")
    with pytest.raises(ValueError, match="must fit in 8 bits"):
        FloatFormat(5, 3)
    with pytest.raises(TypeError, match="out: expected dtype uint8"):
        fp.to_fp8(x2, "e5m2", out=np.zeros(2, np.int8))
    with pytest.raises(ValueError, match="out: expected shape"):
        fp.to_fp8(x2, "e5m2", out=np.zeros(3, np.uint8))
    with pytest.raises(TypeError, match="codes: expected uint8 minifloat codes"):
        fp.from_fp8(np.arange(3), "e5m2")
    with pytest.raises(TypeError, match="codes: plain uint8 codes carry no format"):
        fp.from_fp8(np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="codes: value 16 does not fit the 4-bit format e2m1"):
        fp.from_fp8(np.array([16], np.uint8), "e2m1")
    with pytest.raises(ValueError, match="dtype: expected float16, float32 or float64"):
        fp.from_fp8(np.zeros(2, np.uint8), "e5m2", dtype=np.int32)
    with pytest.raises(ValueError, match="codes: the codes are e4m3 codes, but fmt says e5m2"):
        fp.from_fp8(np.zeros(2, np.uint8).view(ml_dtypes.float8_e4m3fn), "e5m2")
    with pytest.raises(ValueError, match="codes: the codes are e4m3 codes, but fmt says e5m2"):
        fp.from_fp8(fp.to_fp8(x2, "e4m3"), "e5m2")
    with pytest.raises(ValueError, match="seed: expected 0 <= seed"):
        fp.to_fp8(x2, "e5m2", rounding="stochastic", seed=-1)


def test_regression_fortran_ordered_float16():
    """Issue 17 bug 1: F-ordered float16 input was converted in memory order."""
    x = np.asfortranarray(np.arange(6, dtype=np.float16).reshape(2, 3))
    np.testing.assert_array_equal(fp.from_fp8(fp.to_fp8(x, "e4m3")), x.astype(np.float32))
    for dt in (np.float16, np.float32, np.float64, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn):
        y = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)).astype(dt, order="F")
        assert not y.flags.c_contiguous
        want = fp.to_fp8(np.ascontiguousarray(y), "e5m2")
        np.testing.assert_array_equal(fp.to_fp8(y, "e5m2"), want)
        np.testing.assert_array_equal(fp.to_fp8(y.T, "e5m2"), want.T)


def test_codes_carry_their_format():
    """Issue 17 bug 3: E5M2 codes multiplied as E4M3 gave 5.75 for [[1, 2]] @ [[3], [.5]]."""
    a = fp.to_fp8(np.array([[1.0, 2.0]], np.float32), "e5m2")
    b = fp.to_fp8(np.array([[3.0], [0.5]], np.float32), "e5m2")
    assert isinstance(a, fp.FloatCodes) and a.fmt == as_format("e5m2")
    np.testing.assert_array_equal(fp.fp8_matmul(a, b), [[4.0]])
    np.testing.assert_array_equal(fp.from_fp8(a), [[1.0, 2.0]])
    # slices, reshapes, copies and pickles keep the format; arithmetic does not
    import pickle
    for v in (a[:, :1], a.reshape(-1), a.copy(), a.T, pickle.loads(pickle.dumps(a))):
        assert v.fmt == as_format("e5m2")
    assert type(a + 1) is np.ndarray and type(a == 0) is np.ndarray
    # plain uint8 codes need a format; ml_dtypes arrays carry theirs
    with pytest.raises(TypeError, match="a: plain uint8 codes carry no format"):
        fp.fp8_matmul(a.view(np.ndarray), b)
    np.testing.assert_array_equal(fp.fp8_matmul(a.view(np.ndarray), b, ("e5m2", "e5m2")), [[4.0]])
    np.testing.assert_array_equal(fp.from_fp8(fp.as_ml_dtypes(a)), [[1.0, 2.0]])
    # formats compare by fields: a FloatFormat built by hand is E4M3
    hand = FloatFormat(4, 3, inf=False, nan="all_ones")
    assert hand == as_format("e4m3") and hash(hand) == hash(as_format("e4m3"))
    assert fp.as_ml_dtypes(fp.to_fp8(np.ones(2), hand)).dtype == ml_dtypes.float8_e4m3fn
    # 0-d in, 0-d out, with its format
    c0 = fp.to_fp8(2.0, "e4m3")
    assert isinstance(c0, fp.FloatCodes) and c0.shape == () and int(c0) == 0x40


def test_fp6_fp4_satfinite_nan_inf():
    """PTX cvt.rn.satfinite to FP6/FP4: overflow and +-Inf to +-max, NaN to +max,
    -0 kept; the non-saturating mode has nothing to overflow to."""
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, 1e9, -1e9, -0.0, 0.0], np.float32)
    for name in ("e2m1", "e3m2", "e2m3"):
        f = as_format(name)
        mx, sb = f.max_code, f.sign_bit
        np.testing.assert_array_equal(fp.to_fp8(x, name), [mx, mx, mx, mx | sb, mx, mx | sb, sb, 0])
        with pytest.raises(ValueError, match="overflow"):
            fp.to_fp8(x, name, overflow="nonfinite")
