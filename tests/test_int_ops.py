"""Elementwise integer operations against the slow reference, exhaustively."""
from fractions import Fraction

import numpy as np
import pytest

import fixedpoint as fp
from fixedpoint import _reference as ref

FORMATS = [(8, True), (4, True), (2, True), (8, False), (4, False), (2, False)]


def _all_pairs(bits, signed):
    lo, hi = ref.int_range(bits, signed)
    v = np.arange(lo, hi + 1)
    a, b = np.meshgrid(v, v, indexing="ij")
    return a.ravel(), b.ravel()


@pytest.mark.parametrize("bits,signed", FORMATS)
@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
@pytest.mark.parametrize("op", ["mul", "add"])
def test_exhaustive_pairs(bits, signed, overflow, op):
    fmt = fp.IntFormat(bits, signed=signed)
    a, b = _all_pairs(bits, signed)
    got = getattr(fp, op)(a, b, fmt, overflow=overflow)
    assert got.dtype == fmt.dtype
    func = getattr(ref, op)
    want = np.array([func(int(x), int(y), bits, signed, overflow) for x, y in zip(a, b)])
    np.testing.assert_array_equal(got.astype(np.int64), want)


@pytest.mark.parametrize("bits,signed", FORMATS + [(16, True), (16, False)])
def test_mul_wide_exhaustive(bits, signed):
    fmt = fp.IntFormat(bits, signed=signed)
    if bits == 16:   # all pairs would be 2^32: take the corners and a random sample
        lo, hi = fmt.min, fmt.max
        rng = np.random.default_rng(1)
        a = np.concatenate([[lo, lo, hi, hi, 0, -1 if signed else 1], rng.integers(lo, hi + 1, 20000)])
        b = np.concatenate([[lo, hi, lo, hi, lo, lo], rng.integers(lo, hi + 1, 20000)])
    else:
        a, b = _all_pairs(bits, signed)
    got = fp.mul_wide(a, b, fmt)
    want = np.array([int(x) * int(y) for x, y in zip(a, b)], dtype=object)
    assert got.dtype == fmt.wide_dtype
    assert np.iinfo(got.dtype).bits == 2 * bits or (bits < 4 and got.dtype.itemsize == 1)
    np.testing.assert_array_equal(got.astype(object), want)


def test_int16_formats_random(rng):
    for signed in (True, False):
        fmt = fp.IntFormat(16, signed=signed)
        a = rng.integers(fmt.min, fmt.max + 1, 5000)
        b = rng.integers(fmt.min, fmt.max + 1, 5000)
        for ov in ("saturate", "wrap"):
            got = fp.mul(a, b, fmt, overflow=ov).astype(np.int64)
            want = [ref.mul(int(x), int(y), 16, signed, ov) for x, y in zip(a, b)]
            np.testing.assert_array_equal(got, want)
            got = fp.add(a, b, fmt, overflow=ov).astype(np.int64)
            want = [ref.add(int(x), int(y), 16, signed, ov) for x, y in zip(a, b)]
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 7, 8, 12, 16])
def test_saturate_and_wrap(bits, rng):
    x = np.concatenate([rng.integers(-2**40, 2**40, 2000), [0, -1, 1, 2**bits, -2**bits,
                                                            np.iinfo(np.int64).min,
                                                            np.iinfo(np.int64).max]])
    for signed in (True, False):
        f = fp.IntFormat(bits, signed=signed)
        lo, hi = ref.int_range(bits, signed)
        np.testing.assert_array_equal(fp.saturate(x, f).astype(np.int64),
                                      [ref.saturate_int(int(v), lo, hi) for v in x])
        np.testing.assert_array_equal(fp.wrap(x, f).astype(np.int64),
                                      [ref.wrap_int(int(v), bits, signed) for v in x])
    big = np.array([2**64 - 1, 2**63, 5], dtype=np.uint64)
    np.testing.assert_array_equal(fp.saturate(big, "int8"), [127, 127, 5])
    np.testing.assert_array_equal(fp.wrap(big, "int8"), [-1, 0, 5])


def test_narrow_range():
    f = fp.IntFormat(8, narrow=True)
    assert (f.min, f.max) == (-127, 127)
    assert fp.saturate(-128, f) == -127
    assert fp.mul(-127, 127, f) == -127
    with pytest.raises(ValueError, match="a: value -128 .* outside the int8_narrow range"):
        fp.mul(-128, 1, f)
    with pytest.raises(ValueError, match="narrow"):
        fp.mul(1, 1, f, overflow="wrap")
    with pytest.raises(ValueError, match="narrow"):
        fp.wrap(5, f)


def test_design_notes_worked_example():
    # INT8 x INT8 -> INT16: 42 x 38 = 1596, as the seed's int8_multiplier
    p = fp.mul_wide(42, 38, "int8")
    assert p == 1596 and p.dtype == np.int16
    # dequantized with scales 1/2048 and 1/4096: exactly 1596 / 8388608
    value = Fraction(int(p)) * Fraction(1, 2048) * Fraction(1, 4096)
    assert value == Fraction(1596, 8388608)
    assert float(p) * (1 / 2048) * (1 / 4096) == 1596 / 8388608
    # brought back into INT8 it saturates, or wraps to 1596 - 6 * 256 = 60
    assert fp.mul(42, 38, "int8") == 127
    assert fp.mul(42, 38, "int8", overflow="wrap") == 60


def test_broadcasting_and_inputs_untouched(rng):
    a = rng.integers(-128, 128, (3, 1, 5)).astype(np.int8)
    b = rng.integers(-128, 128, (4, 5)).astype(np.int8)
    a0, b0 = a.copy(), b.copy()
    got = fp.mul(a, b, "int8")
    assert got.shape == (3, 4, 5)
    want = np.clip(a.astype(np.int64) * b, -128, 127)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)
    # non-contiguous and reversed views give the same as contiguous copies
    x = rng.integers(-128, 128, 1001).astype(np.int8)
    np.testing.assert_array_equal(fp.mul(x[::-3], x[::3], "int8"), fp.mul(x[::-3].copy(), x[::3].copy(), "int8"))
    # big-endian int16 input
    y = np.arange(-8, 8, dtype=">i2")
    np.testing.assert_array_equal(fp.mul(y, y, "int4"), np.clip(np.arange(-8, 8) ** 2, -8, 7))


def test_threads_do_not_change_bits(rng):
    a = rng.integers(-128, 128, 300_001).astype(np.int8)
    b = rng.integers(-128, 128, 300_001).astype(np.int8)
    for ov in ("saturate", "wrap"):
        np.testing.assert_array_equal(fp.mul(a, b, "int8", overflow=ov, num_threads=1),
                                      fp.mul(a, b, "int8", overflow=ov, num_threads=2))


def test_empty_and_scalar():
    assert fp.mul(np.zeros(0, np.int8), np.zeros(0, np.int8), "int8").shape == (0,)
    r = fp.add(3, 4, "int4")
    assert r == 7 and type(r) is np.ndarray and r.shape == ()       # 0-d in, 0-d array out
    for v in (fp.mul(3, 4, "int8"), fp.mul_wide(3, 4, "int8"), fp.saturate(300, "int8"),
              fp.wrap(300, "int8"), fp.add(np.int8(3), np.int8(4), "int8")):
        assert type(v) is np.ndarray and v.shape == ()


@pytest.mark.parametrize("bad,exc,msg", [
    (1.5, TypeError, "a: expected integers"),
    (np.array([1.0]), TypeError, "a: expected integers"),
    (np.array([True]), TypeError, "a: expected integers"),
    (None, TypeError, "a: expected an integer array"),
    (np.array(["x"]), TypeError, "a: expected integers"),
    ([200], ValueError, r"a: value 200 at index \(0,\) is outside the int8 range \[-128, 127\]"),
])
def test_bad_operands(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        fp.mul(bad, 1, "int8")


def test_bad_modes_and_formats():
    with pytest.raises(ValueError, match="overflow: expected one of"):
        fp.mul(1, 1, "int8", overflow="clip")
    with pytest.raises(ValueError, match="fmt: unknown format 'int1'"):
        fp.mul(1, 1, "int1")
    with pytest.raises(TypeError, match="fmt: expected a format name or an IntFormat"):
        fp.mul(1, 1, 8)
    with pytest.raises(ValueError, match="fmt: expected an integer format"):
        fp.mul(1, 1, "e4m3")
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'fmt'"):
        fp.mul(1, 1)
    with pytest.raises(TypeError, match="takes 3 positional arguments"):
        fp.mul(1, 1, "int8", "wrap")
    with pytest.raises(ValueError, match="bits must be between 2 and 16"):
        fp.IntFormat(17)
    with pytest.raises(ValueError, match="do not broadcast"):
        fp.mul([1, 2], [1, 2, 3], "int8")
    with pytest.raises(ValueError, match="num_threads"):
        fp.mul(1, 1, "int8", num_threads=0)


def test_binop_kernel_checks_before_touching_memory():
    """The compiled entry point refuses what would read or write out of bounds
    (its Python-level signature stays binop(op, a, b, out, saturate, lo, hi,
    bits, nthreads))."""
    from fixedpoint import _int
    a = np.zeros(8, np.int8)
    out = np.empty(8, np.int8)
    args = (True, -128, 127, 8, 1)
    with pytest.raises(TypeError, match="^a: expected a native int8"):
        _int.binop("mul", a.astype(np.int32), a.astype(np.int32), out, *args)
    with pytest.raises(TypeError, match="^b: expected dtype int8"):
        _int.binop("mul", a, a.astype(np.uint8), out, *args)
    with pytest.raises(ValueError, match="^a: expected a C-contiguous"):
        _int.binop("mul", np.zeros(16, np.int8)[::2], a, out, *args)
    with pytest.raises(ValueError, match="^a, b and out: sizes differ"):
        _int.binop("add", a, a, np.empty(4, np.int8), *args)
    with pytest.raises(ValueError, match="^a, b and out: sizes differ"):
        _int.binop("add", a, np.zeros(4, np.int8), out, *args)
    with pytest.raises(TypeError, match="^out: expected dtype int16"):
        _int.binop("mul_wide", a, a, out, *args)
    with pytest.raises(ValueError, match="^out: expected a writeable"):
        ro = np.empty(8, np.int8)
        ro.flags.writeable = False
        _int.binop("mul", a, a, ro, *args)
    with pytest.raises(ValueError, match="^op: expected one of"):
        _int.binop("div", a, a, out, *args)
    with pytest.raises(ValueError, match="^bits: expected 1 to 16"):
        _int.binop("mul", a, a, out, True, -128, 127, 40, 1)
    with pytest.raises(TypeError, match="^a: expected a native int8"):
        _int.binop("mul", a.astype(">i2"), a.astype(">i2"), np.empty(8, ">i2"), *args)
    # and what it accepts still works
    _int.binop("mul", np.full(8, 100, np.int8), np.full(8, 2, np.int8), out, *args)
    assert out.tolist() == [127] * 8
