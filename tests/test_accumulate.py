"""Integer matmul through accumulators: Hopper golden data and the slow reference."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import fixedpoint as fp
from fixedpoint import _reference as ref
from conftest import load_cases

HOPPER_INT8 = fp.Accumulator(32, "saturate", block=32)
WRAP32 = fp.Accumulator(32, "wrap")


def test_hopper_int_mm_every_element(data_dir):
    z = np.load(data_dir / "int_mm.npz")
    cases = load_cases(z)
    assert len(cases) == 6
    for case in cases:
        a, b, out = z[case["id"] + "_a"], z[case["id"] + "_b"], z[case["id"] + "_out"]
        got = fp.matmul(a, b, "int8", acc=HOPPER_INT8)
        np.testing.assert_array_equal(got, out, err_msg=case["id"])
        # the recorded flags say whether a wrapping accumulator would agree
        wrapped = fp.matmul(a, b, "int8", acc=fp.Accumulator(32, "wrap"))
        assert np.array_equal(wrapped, out) == case["eq_wrap"], case["id"]


def _order_case(case):
    K = case["K"]
    a = np.full(K, -128, np.int8)
    if case["order"] == "up_then_down":
        a[K // 2:] = 127
    elif case["order"] == "down_then_up":
        a[:K // 2] = 127
    else:
        a[1::2] = 127
    b = np.full(K, -128, np.int8)
    return a, b


def test_hopper_int_mm_order(data_dir):
    cases = load_cases(np.load(data_dir / "int_mm_order.npz"))
    assert len(cases) == 9
    for case in cases:
        a, b = _order_case(case)
        assert int(a.astype(np.int64) @ b.astype(np.int64)) == case["exact"]
        assert fp.dot(a, b, "int8", acc=HOPPER_INT8) == case["got"], case
        # a wrapping accumulator would give the exact sum modulo 2^32
        wrapped = (case["exact"] + 2**31) % 2**32 - 2**31
        assert (fp.dot(a, b, "int8", acc=WRAP32) == case["got"]) == (wrapped == case["got"])


def test_hopper_worked_case():
    # K = 278528 up_then_down: GPU -116391937 = 2^31 - 1 - 139264 * 16256
    a, b = _order_case({"K": 278528, "order": "up_then_down"})
    assert fp.dot(a, b, "int8", acc=HOPPER_INT8) == 2**31 - 1 - 139264 * 16256
    value, overflows = fp.dot(a, b, "int8", acc=HOPPER_INT8, return_overflow=True)
    assert overflows > 0


@pytest.mark.parametrize("mode", ["wrap", "sat"])
def test_mma_s8_tiles(data_dir, mode):
    z = np.load(data_dir / "mma_s8.npz")
    a, b, c, d = (z[f"{mode}_{k}"] for k in "abcd")
    acc = fp.Accumulator(32, "wrap") if mode == "wrap" else fp.Accumulator(32, "saturate", block=32)
    got = fp.matmul(a, b, "int8", acc=acc, c=c)
    np.testing.assert_array_equal(got, d)
    # half the tiles start at the int32 edge: the two modes must differ somewhere
    other = fp.Accumulator(32, "saturate", block=32) if mode == "wrap" else fp.Accumulator(32, "wrap")
    assert not np.array_equal(fp.matmul(a, b, "int8", acc=other, c=c), d)


FMTS = ["int8", "uint8", "int4", "uint4", "int2", "int16", "int12"]


@st.composite
def matmul_case(draw):
    name = draw(st.sampled_from(FMTS))
    from fixedpoint.formats import as_format
    fmt = as_format(name, kind="int")
    M = draw(st.integers(0, 5))
    K = draw(st.integers(0, 70))
    N = draw(st.integers(0, 19))
    extreme = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if extreme:   # only the corners: overflows as often as possible
        a = rng.choice([fmt.min, fmt.max], (M, K))
        b = rng.choice([fmt.min, fmt.max], (K, N))
    else:
        a = rng.integers(fmt.min, fmt.max + 1, (M, K))
        b = rng.integers(fmt.min, fmt.max + 1, (K, N))
    bits = draw(st.sampled_from([8, 12, 16, 24, 32, 40, 64]))
    overflow = draw(st.sampled_from(["wrap", "saturate"]))
    block = draw(st.sampled_from([1, 2, 3, 4, 7, 16, 32, 64]))
    acc = fp.Accumulator(bits, overflow, block)
    c = None
    if draw(st.booleans()):
        c = rng.integers(acc.min, acc.max, (M, N), endpoint=True)
    return fmt, a, b, acc, c


@given(matmul_case())
def test_matmul_matches_reference(case):
    fmt, a, b, acc, c = case
    got, counts = fp.matmul(a.astype(fmt.dtype), b.astype(fmt.dtype), fmt, acc=acc, c=c,
                            return_overflow=True)
    want, want_counts = ref.matmul(a, b, acc.bits, acc.overflow, acc.block, c)
    assert got.dtype == acc.dtype
    np.testing.assert_array_equal(got.astype(object), want)
    np.testing.assert_array_equal(counts.astype(object), want_counts)
    # without counts (the fast path for 8-bit operands) the values are the same
    np.testing.assert_array_equal(fp.matmul(a, b, fmt, acc=acc, c=c), got)


@pytest.mark.parametrize("fmt", ["int8", "uint8"])
@pytest.mark.parametrize("acc", [fp.Accumulator(32, "wrap"), fp.Accumulator(32, "saturate", 32),
                                 fp.Accumulator(32, "wrap", 32), fp.Accumulator(32, "saturate", 2)])
def test_fast_kernel_large_against_reference(fmt, acc, rng):
    from fixedpoint.formats import as_format
    f = as_format(fmt, kind="int")
    # corner values and K large enough to overflow 32 bits partway
    M, K, N = 7, 4101, 21
    a = rng.choice([f.min, f.max, 0, 1], (M, K)).astype(f.dtype)
    b = rng.choice([f.min, f.max], (K, N)).astype(f.dtype)
    c = rng.integers(-2**31, 2**31, (M, N))
    got, counts = fp.matmul(a, b, f, acc=acc, c=c, return_overflow=True)
    want, want_counts = ref.matmul(a, b, 32, acc.overflow, acc.block, c)
    np.testing.assert_array_equal(got.astype(object), want)
    np.testing.assert_array_equal(counts.astype(object), want_counts)


def test_wrap_equals_exact_sum_modulo(rng):
    a = rng.integers(-128, 128, (33, 517)).astype(np.int8)
    b = rng.integers(-128, 128, (517, 45)).astype(np.int8)
    c = rng.integers(-2**31, 2**31, (33, 45))
    exact = a.astype(np.int64) @ b.astype(np.int64) + c
    wrapped = ((exact + 2**31) % 2**32) - 2**31
    for block in (1, 8, 32, 517):
        np.testing.assert_array_equal(fp.matmul(a, b, "int8", acc=fp.Accumulator(32, "wrap", block), c=c),
                                      wrapped)


def test_threads_do_not_change_bits(rng):
    a = rng.choice([-128, 127, 3], (130, 700)).astype(np.int8)
    b = rng.choice([-128, 127, -5], (700, 90)).astype(np.int8)
    for acc in (fp.Accumulator(32, "saturate", 32), fp.Accumulator(32, "wrap"),
                fp.Accumulator(16, "saturate", 7)):
        r1 = fp.matmul(a, b, "int8", acc=acc, num_threads=1, return_overflow=True)
        r2 = fp.matmul(a, b, "int8", acc=acc, num_threads=2, return_overflow=True)
        r3 = fp.matmul(a, b, "int8", acc=acc, num_threads=3, return_overflow=True)
        for x, y, z in zip(r1, r2, r3):
            np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(x, z)


def test_batched_and_vectors(rng):
    a = rng.integers(-8, 8, (2, 1, 3, 6)).astype(np.int8)
    b = rng.integers(-8, 8, (4, 6, 5)).astype(np.int8)
    got = fp.matmul(a, b, "int4")
    assert got.shape == (2, 4, 3, 5)
    np.testing.assert_array_equal(got, np.matmul(a.astype(np.int64), b.astype(np.int64)))
    v = rng.integers(-8, 8, 6)
    assert fp.matmul(a[0, 0], v, "int4").shape == (3,)
    assert fp.matmul(v, b[0], "int4").shape == (5,)
    assert fp.dot(v, v, "int4") == int(v @ v)


def test_overflow_counts_16bit():
    a = np.full((1, 4), 127, np.int8)
    b = np.full((4, 1), 127, np.int8)
    value, n = fp.matmul(a, b, "int8", acc=fp.Accumulator(16, "saturate"), return_overflow=True)
    assert value[0, 0] == 32767 and n[0, 0] == 2     # 16129, 32258, clamp, clamp
    value, n = fp.matmul(a, b, "int8", acc=fp.Accumulator(16, "wrap"), return_overflow=True)
    assert value[0, 0] == 4 * 16129 - 65536 and n[0, 0] == 1


def test_empty_shapes():
    assert fp.matmul(np.zeros((0, 3), np.int8), np.zeros((3, 2), np.int8), "int8").shape == (0, 2)
    np.testing.assert_array_equal(fp.matmul(np.zeros((2, 0), np.int8), np.zeros((0, 3), np.int8), "int8"),
                                  np.zeros((2, 3)))
    np.testing.assert_array_equal(
        fp.matmul(np.zeros((2, 0), np.int8), np.zeros((0, 3), np.int8), "int8", c=[[1, 2, 3]]),
        [[1, 2, 3], [1, 2, 3]])


def test_bad_arguments():
    a = np.zeros((2, 3), np.int8)
    with pytest.raises(ValueError, match="inner dimensions differ"):
        fp.matmul(a, np.zeros((4, 2), np.int8), "int8")
    with pytest.raises(TypeError, match="acc: expected an Accumulator"):
        fp.matmul(a, a.T, "int8", acc="int32")
    with pytest.raises(ValueError, match="bits: accumulator width must be between 8 and 64"):
        fp.Accumulator(65)
    with pytest.raises(ValueError, match="overflow: expected one of"):
        fp.Accumulator(32, "clamp")
    with pytest.raises(ValueError, match="block: expected a positive int"):
        fp.Accumulator(32, "wrap", 0)
    with pytest.raises(ValueError, match="c: value 2147483648 .* outside the 32-bit accumulator"):
        fp.matmul(a, a.T, "int8", c=[[2**31]])
    with pytest.raises(TypeError, match="a: expected integers"):
        fp.matmul(a.astype(float), a.T, "int8")
    with pytest.raises(ValueError, match="b: value 200"):
        fp.matmul(a, np.full((3, 2), 200), "int8")
    with pytest.raises(ValueError, match="scalar"):
        fp.matmul(3, 4, "int8")


def test_no_overflow_shortcut_boundary():
    """Where max|c| + K * max|product| fits the register, every mode gives the
    exact sum and zero counts; one step past it the saturating kernel runs
    and must still match the reference."""
    K = 8
    a = np.full((1, K), -128, np.int8)
    b = np.full((K, 1), -128, np.int8)          # every product is 16384
    acc = fp.Accumulator(32, "saturate", block=2)
    edge = 2**31 - 1 - K * 16384
    for c0 in (edge, edge + 1, -edge, 2**31 - 1):
        got, n = fp.matmul(a, b, "int8", acc=acc, c=[[c0]], return_overflow=True)
        want, want_n = ref.matmul(a, b, 32, "saturate", 2, [[c0]])
        assert got[0, 0] == want[0, 0] and n[0, 0] == want_n[0, 0], c0
    assert fp.matmul(a, b, "int8", acc=acc, c=[[edge]])[0, 0] == 2**31 - 1
    assert fp.matmul(a, b, "int8", acc=acc, c=[[edge + 1]], return_overflow=True)[1][0, 0] == 1


@pytest.mark.parametrize("acc,fmt,value", [
    (fp.Accumulator(16, "saturate"), "int8", -128),        # products of 16384
    (fp.Accumulator(20, "wrap", 3), "uint8", 255),         # products of 65025
    (fp.Accumulator(12, "saturate", 2), "int4", -8),       # products of 64
    (fp.Accumulator(24, "wrap"), "int2", -2)], ids=str)    # products of 4
def test_can_overflow_is_the_bound_of_the_worst_operands(acc, fmt, value):
    """``can_overflow`` is False up to the longest product whose worst case (every
    product the largest positive one, the register starting at +c_max) stays in
    the register, and True one term later, where that worst case does overflow
    (the reference counts it)."""
    prod = value * value
    for c_max in (0, 5, prod - 1):
        lo, hi = 0, 1 << 23            # the largest k it accepts, by bisection
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if not acc.can_overflow(fmt, fmt, mid, c_max) else (lo, mid)
        k = lo
        assert not acc.can_overflow(fmt, fmt, k, c_max) and acc.can_overflow(fmt, fmt, k + 1, c_max)
        for kk, overflows in ((k, False), (k + 1, True)):
            a = np.full((1, kk), value, as_format_dtype(fmt))
            b = np.full((kk, 1), value, as_format_dtype(fmt))
            assert (c_max + kk * prod > acc.max) == overflows             # Python integers
            got, n = fp.matmul(a, b, fmt, acc=acc, c=[[c_max]], return_overflow=True)
            assert (n[0, 0] > 0) == overflows, (kk, c_max)
            if not overflows:
                assert int(got[0, 0]) == c_max + kk * prod


def as_format_dtype(fmt):
    return fp.formats.as_format(fmt).dtype


def test_can_overflow_checks_its_arguments():
    acc = fp.Accumulator(32)
    with pytest.raises(ValueError, match="^fmt_a: expected an integer format"):
        acc.can_overflow("e4m3", "int8", 4)
    with pytest.raises(ValueError, match="^k: expected a non-negative int"):
        acc.can_overflow("int8", "int8", -1)
    with pytest.raises(TypeError, match="^c_max: expected a non-negative int"):
        acc.can_overflow("int8", "int8", 4, c_max=1.5)


def test_hopper_int_mm_clamps_every_16_products(data_dir):
    """A recording designed to tell block sizes apart (this session, H200,
    torch 2.11 ``_int_mm``, M = N = 32, K = 135168): blocks of 16 reproduce
    every row; 8, 32, 64, 128 and 256 and the exact sum reproduce none.
    The earlier recordings (int_mm.npz, int_mm_order.npz) fit 16 and 32 alike."""
    z = np.load(data_dir / "int_mm_block_probe.npz")
    a, want = z["a"], z["out"]
    b = np.full((a.shape[1], want.shape[1]), -128, np.int8)
    assert fp.matmul(a, b, "int8", acc=fp.Accumulator(32, "saturate", block=16)).tolist() == want.tolist()
    for block in (8, 32, 64, 128, 256):
        got = fp.matmul(a, b, "int8", acc=fp.Accumulator(32, "saturate", block=block))
        assert not np.any(got[:, 0] == want[:, 0]), block
    exact = a.astype(np.int64) @ b[:, :1].astype(np.int64)
    assert not np.any(exact[:, 0] == want[:, 0])
    # and blocks of 16 also reproduce every earlier recording
    z2 = np.load(data_dir / "int_mm.npz")
    for case in load_cases(z2):
        i = case["id"]
        np.testing.assert_array_equal(
            fp.matmul(z2[i + "_a"], z2[i + "_b"], "int8", acc=fp.Accumulator(32, "saturate", 16)),
            z2[i + "_out"])
    for case in load_cases(np.load(data_dir / "int_mm_order.npz")):
        x, y = _order_case(case)
        assert fp.dot(x, y, "int8", acc=fp.Accumulator(32, "saturate", 16)) == case["got"]


def test_format_pairs_of_the_wrong_length_are_refused():
    a = np.zeros((2, 3), np.int8)
    b = np.zeros((3, 2), np.int8)
    with pytest.raises(ValueError, match=r"fmt: expected one format or a pair \(fmt_a, fmt_b\), got 3"):
        fp.matmul(a, b, ("int8", "int8", "int8"))
    with pytest.raises(ValueError, match=r"fmt: expected one format or a pair \(x_fmt, w_fmt\), got 1"):
        fp.qlinear(a, b, ("int8",), multiplier=1 << 30, out_fmt="int8")
    assert fp.matmul(a, b, ("int8", "int4")).shape == (2, 2)
