"""The integer GEMM on every instruction path, against a slow reference.

Every compiled path this CPU runs (AVX-512 VNNI on 512- and 256-bit vectors,
AVX2, portable C, and the generic int64 loop) is forced in turn through
``FIXEDPOINT_GEMM_PATH`` and compared element by element with a reference
written from the definition (Python integers, one term at a time): overflowing
blocks, odd blocks, K not a multiple of the block or of the tile, M and N of
0 and 1, mixed operand formats, pairs saturated to ``pair_bits``, strided,
Fortran-ordered and byte-swapped operands, 1 to 3 threads.  The x86 u8 x s8
pair model is proved against ONNX Runtime run on an emulated AVX2 CPU.
"""
import contextlib
import os
import pathlib
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import pytest
from hypothesis import given, strategies as st

import fixedpoint as fp
from fixedpoint import _int
from fixedpoint import _reference as ref
from fixedpoint.accumulate import PATH_ENV, gemm_path
from fixedpoint.formats import as_format

from extras import need, qemu_haswell, skip_under_asan

ALL_PATHS = ("vnni512", "vnni256", "avx2", "portable", "generic")
PATHS = [p for p in ALL_PATHS if p == "generic" or _int.gemm_available(_int.GEMM_PATHS[p])]
A = fp.Accumulator


@contextlib.contextmanager
def forced(path):
    old = os.environ.get(PATH_ENV)
    os.environ[PATH_ENV] = path
    try:
        yield
    finally:
        if old is None:
            del os.environ[PATH_ENV]
        else:
            os.environ[PATH_ENV] = old


def slow_matmul(a, b, acc, c=None):
    """A @ B (+ C) from the definition: terms (products, or pairs clamped to
    pair_bits) in K order, summed ``block`` at a time into the register by
    ``_reference.accumulate``.  Returns (values, counts) as object arrays."""
    (M, K), N = np.shape(a), np.shape(b)[1]
    a = [[int(v) for v in row] for row in np.asarray(a)]
    b = [[int(v) for v in row] for row in np.asarray(b)]
    out = np.zeros((M, N), dtype=object)
    cnt = np.zeros((M, N), dtype=object)
    for i in range(M):
        for j in range(N):
            prods = [a[i][k] * b[k][j] for k in range(K)]
            if acc.pair_bits is not None:
                lo, hi = ref.int_range(acc.pair_bits)
                terms = [ref.saturate_int(sum(prods[2 * p:2 * p + 2]), lo, hi)
                         for p in range((K + 1) // 2)]
            else:
                terms = prods
            init = 0 if c is None else int(np.asarray(c)[i, j])
            out[i, j], cnt[i, j] = ref.accumulate(terms, acc.bits, acc.overflow, acc.block, init)
    return out, cnt


def _operands(rng, fa, fb, M, K, N, corner=0.7):
    """Values concentrated on the corners of each format (overflow as often as possible)."""
    def draw(f, shape):
        corners = np.array(sorted({f.min, f.max, 0, 1, f.min + 1, f.max - 1}))
        x = rng.choice(corners, shape)
        mix = rng.random(shape) > corner
        x[mix] = rng.integers(f.min, f.max + 1, shape)[mix]
        return x.astype(f.dtype)
    return draw(fa, (M, K)), draw(fb, (K, N))


def _c_near_edges(rng, acc, M, N):
    span = 1 << 20
    lo = rng.integers(acc.min, min(acc.min + span, acc.max), (M, N), endpoint=True)
    hi = rng.integers(max(acc.max - span, acc.min), acc.max, (M, N), endpoint=True)
    return np.where(rng.random((M, N)) < 0.5, lo, hi)


def _check_all_paths(a, b, fmt, acc, c=None):
    want, want_n = slow_matmul(a, b, acc, c)
    for path in PATHS:
        with forced(path):
            got, n = fp.matmul(a, b, fmt, acc=acc, c=c, return_overflow=True, num_threads=2)
            assert got.dtype == acc.dtype
            np.testing.assert_array_equal(got.astype(object), want, err_msg=f"{path} {acc}")
            np.testing.assert_array_equal(n.astype(object), want_n, err_msg=f"{path} {acc} counts")
            # without counts: the single-sum kernels where they apply
            got2 = fp.matmul(a, b, fmt, acc=acc, c=c, num_threads=1)
            np.testing.assert_array_equal(got2.astype(object), want, err_msg=f"{path} {acc} no counts")


ACCS = [A(32, "saturate", 16), A(32, "saturate", 32), A(32, "wrap"), A(32, "wrap", 32),
        A(32, "saturate", 1), A(32, "saturate", 3), A(24, "saturate", 5), A(16, "wrap", 7),
        A(16, "saturate", 2), A(12, "saturate", 4), A(8, "wrap", 2), A(40, "saturate", 16),
        A(64, "wrap", 1), A(32, "wrap", 2, pair_bits=16), A(32, "saturate", 2, pair_bits=16),
        A(20, "saturate", 3, pair_bits=12), A(32, "wrap", 1, pair_bits=8),
        A(16, "saturate", 1, pair_bits=16)]
SHAPES = [(0, 5, 3), (3, 0, 4), (1, 1, 1), (1, 37, 1), (5, 2, 33), (13, 73, 35), (7, 130, 17)]
FMT_PAIRS = [("int8", "int8"), ("uint8", "int8"), ("int8", "uint8"), ("uint8", "uint8"),
             ("int4", "uint4"), ("int16", "int8"), ("uint16", "int4"), ("int12", "int12"),
             ("int2", "int8")]


@pytest.mark.parametrize("acc", ACCS, ids=str)
def test_every_path_adversarial(acc):
    rng = np.random.default_rng(zlib.crc32(str(acc).encode()))
    for s, (M, K, N) in enumerate(SHAPES):
        names = FMT_PAIRS[(s + ACCS.index(acc)) % len(FMT_PAIRS)]
        fa, fb = as_format(names[0], kind="int"), as_format(names[1], kind="int")
        a, b = _operands(rng, fa, fb, M, K, N)
        _check_all_paths(a, b, names, acc)
        _check_all_paths(a, b, names, acc, c=_c_near_edges(rng, acc, M, N))


# The VNNI paths multiply int8/uint8 x int8 operands four bytes at a time
# (vpdpbusd, int8 shifted to uint8 and corrected by 128 x B's column sums)
# wherever the sum is taken modulo 2^32 without counts: every K modulo 4,
# both A storage types, a bias row or a full initial register, registers
# narrower than 32 bits, and rows and columns past the tiles.
@pytest.mark.parametrize("names", [("int8", "int8"), ("uint8", "int8"), ("int4", "int8"),
                                   ("int8", "int2"), ("int8", "uint8")], ids="x".join)
def test_byte_operands_every_k_modulo_4(names):
    rng = np.random.default_rng(zlib.crc32("x".join(names).encode()))
    fa, fb = as_format(names[0], kind="int"), as_format(names[1], kind="int")
    for M, K, N in [(1, 1, 1), (13, 2, 33), (25, 3, 65), (12, 4, 32), (5, 129, 7), (14, 1030, 40)]:
        a, b = _operands(rng, fa, fb, M, K, N, corner=0.9)
        for acc in (A(32, "wrap"), A(20, "wrap"), A(32, "saturate")):
            c_full = _c_near_edges(rng, acc, M, N) if acc.overflow == "wrap" else None
            c_row = rng.integers(-1000, 1000, (1, N))
            for c in (None, c_full, c_row):
                want, _ = slow_matmul(a, b, acc, None if c is None else np.broadcast_to(c, (M, N)))
                for path in PATHS:
                    with forced(path):
                        got = fp.matmul(a, b, names, acc=acc, c=c, num_threads=2)
                    np.testing.assert_array_equal(got.astype(object), want, err_msg=f"{path} {acc} {M, K, N}")


def test_byte_operands_wrap_modulo_2_32():
    """Sums far past int32 wrap exactly (NumPy's int64 product as the oracle):
    int8 -128 x -128 over K = 140001 terms, and -128 x 127 mixed with them."""
    K = 140001
    a = np.full((3, K), -128, np.int8)
    a[1, ::3] = 127
    a[2] = np.arange(K) % 256 - 128
    b = np.full((K, 5), -128, np.int8)
    b[::2, 1] = 127
    b[:, 2] = (np.arange(K) * 7) % 256 - 128
    exact = a.astype(np.int64) @ b.astype(np.int64)
    want = ((exact + 2**31) % 2**32 - 2**31).astype(np.int32)
    assert np.any(want != exact)                      # the case does wrap
    for path in PATHS:
        with forced(path):
            got = fp.matmul(a, b, "int8", acc=A(32, "wrap"), num_threads=2)
        np.testing.assert_array_equal(got, want, err_msg=path)


@pytest.mark.parametrize("acc", [A(32, "saturate", 16), A(32, "saturate", 1), A(32, "wrap", 1),
                                 A(32, "wrap", 2, pair_bits=16), A(24, "saturate", 16)], ids=str)
def test_every_path_long_k(acc):
    """K long enough to cross several K chunks of the kernels, near the edges."""
    rng = np.random.default_rng(7)
    a, b = _operands(rng, as_format("int8", kind="int"), as_format("int8", kind="int"), 7, 1001, 21, corner=0.9)
    _check_all_paths(a, b, "int8", acc, c=_c_near_edges(rng, acc, 7, 21))


@pytest.mark.parametrize("acc", [A(32, "saturate", 16), A(32, "wrap", 16), A(24, "saturate", 4),
                                 A(32, "saturate", 3), A(32, "saturate", 2, pair_bits=16),
                                 A(20, "wrap", 5)], ids=str)
def test_runs_of_blocks_near_the_limits(acc):
    """The kernels sum runs of blocks in one pass while no register of a tile
    can reach a limit (|register| + n * max|block sum| <= max), and merge block
    by block once one can: registers start a few blocks below the limits and
    climb (or fall) into them, so runs, the switch to single blocks, the
    clamps and the counts all happen inside one product."""
    K, N = 700, 37
    rng = np.random.default_rng(acc.bits * 100 + acc.block)
    maxterm = 16384 if acc.pair_bits is None else min(2 * 16384, 1 << (acc.pair_bits - 1))
    maxblk = acc.block * maxterm
    rows = [np.full(K, 127), np.full(K, -128), rng.integers(-128, 128, K),
            np.where(rng.random(K) < 0.7, 127, -128), np.where(np.arange(K) < K // 2, 127, -127)]
    a = np.array(rows * 3, dtype=np.int8)
    b = np.where(rng.random((K, N)) < 0.8, 127, rng.integers(-128, 128, (K, N))).astype(np.int8)
    M = a.shape[0]
    for m in (0, 1, 2, 3, 5, 10, 40, 200):     # whole blocks of room below the limits
        room = m * maxblk + rng.integers(0, maxblk, (M, N))
        c = np.where(np.arange(N) % 2, acc.max - room, acc.min + room)
        c = np.clip(c, acc.min, acc.max)
        _check_all_paths(a, b, "int8", acc, c=c)


@st.composite
def _case(draw):
    fa = as_format(draw(st.sampled_from(["int8", "uint8", "int4", "int2", "int16", "uint12"])), kind="int")
    fb = as_format(draw(st.sampled_from(["int8", "uint8", "int4", "uint4", "int12"])), kind="int")
    M, K, N = draw(st.integers(0, 14)), draw(st.integers(0, 70)), draw(st.integers(0, 37))
    bits = draw(st.sampled_from([8, 12, 16, 24, 31, 32, 33, 64]))
    pair_bits = draw(st.sampled_from([None, None, 8, 16, 17]))
    acc = A(bits, draw(st.sampled_from(["wrap", "saturate"])),
            draw(st.sampled_from([1, 2, 3, 4, 7, 16, 32, 64])), pair_bits)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a, b = _operands(rng, fa, fb, M, K, N, corner=draw(st.sampled_from([0.0, 0.8, 1.0])))
    c = _c_near_edges(rng, acc, M, N) if draw(st.booleans()) else None
    return a, b, (fa, fb), acc, c, draw(st.sampled_from(PATHS)), draw(st.sampled_from([1, 2]))


@given(_case())
def test_paths_match_reference(case):
    a, b, fmt, acc, c, path, threads = case
    want, want_n = slow_matmul(a, b, acc, c)
    with forced(path):
        got, n = fp.matmul(a, b, fmt, acc=acc, c=c, return_overflow=True, num_threads=threads)
        plain = fp.matmul(a, b, fmt, acc=acc, c=c, num_threads=threads)
    np.testing.assert_array_equal(got.astype(object), want)
    np.testing.assert_array_equal(n.astype(object), want_n)
    np.testing.assert_array_equal(plain, got)


@pytest.mark.parametrize("path", PATHS)
def test_layout_and_threads_do_not_change_bits(path):
    rng = np.random.default_rng(3)
    a8, b8 = _operands(rng, as_format("int8", kind="int"), as_format("int8", kind="int"), 61, 301, 45, corner=0.9)
    a16, b16 = _operands(rng, as_format("int12", kind="int"), as_format("int12", kind="int"), 29, 77, 35)
    c = _c_near_edges(rng, A(32), 61, 45)
    with forced(path):
        for acc in (A(32, "saturate", 16), A(32, "wrap"), A(32, "wrap", 2, pair_bits=16)):
            base = fp.matmul(a8, b8, "int8", acc=acc, c=c, return_overflow=True, num_threads=1)
            for t in (2, 3):
                r = fp.matmul(a8, b8, "int8", acc=acc, c=c, return_overflow=True, num_threads=t)
                np.testing.assert_array_equal(r[0], base[0])
                np.testing.assert_array_equal(r[1], base[1])
            layouts = [(np.asfortranarray(a8), np.asfortranarray(b8)),
                       (np.repeat(a8, 2, axis=1)[:, ::2], np.repeat(b8, 3, axis=0)[::3]),
                       (a8[::-1][::-1], np.ascontiguousarray(b8[:, ::-1])[:, ::-1])]
            for x, y in layouts:
                r = fp.matmul(x, y, "int8", acc=acc, c=np.asfortranarray(c), return_overflow=True)
                np.testing.assert_array_equal(r[0], base[0])
                np.testing.assert_array_equal(r[1], base[1])
            # a batch computes each item as the same 2-D product
            batched = fp.matmul(np.stack([a8, a8[::-1]]), b8, "int8", acc=acc)
            np.testing.assert_array_equal(batched[0], fp.matmul(a8, b8, "int8", acc=acc))
            np.testing.assert_array_equal(batched[1], fp.matmul(a8[::-1], b8, "int8", acc=acc))
        swapped_a = a16.astype(">i2")
        swapped_b = np.asfortranarray(b16.astype(">i2"))
        acc = A(24, "saturate", 3)
        np.testing.assert_array_equal(fp.matmul(swapped_a, swapped_b, "int12", acc=acc),
                                      fp.matmul(a16, b16, "int12", acc=acc))


def test_pairs_clip_like_vpmaddubsw():
    """255 * 127 + 255 * 127 = 64770 clamps to 32767 in each pair; the exact
    sum would be 2 * 64770 per four products."""
    a = np.full((2, 5), 255, np.uint8)
    b = np.full((5, 3), 127, np.int8)
    u8s8 = A(32, "wrap", 2, pair_bits=16)
    for path in PATHS:
        with forced(path):
            got = fp.matmul(a, b, ("uint8", "int8"), acc=u8s8)
            # pairs (0, 1), (2, 3) clamp; k = 4 is paired with 0: 32385
            assert got.tolist() == [[2 * 32767 + 32385] * 3] * 2, path
            neg = fp.matmul(a, -b - 1, ("uint8", "int8"), acc=u8s8)   # 255 * -128 = -32640
            assert neg.tolist() == [[2 * -32768 - 32640] * 3] * 2, path
            assert fp.dot([255, 255], [127, 127], ("uint8", "int8")) == 64770


def test_pairs_with_dask_operands_any_k_chunks():
    """A pair (k = 2p, 2p + 1) never straddles two K chunks of dask operands."""
    da = need("dask.array", "pip install dask")
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (6, 101)).astype(np.uint8)
    b = rng.integers(-128, 128, (101, 5)).astype(np.int8)
    c = np.full((6, 5), 2**31 - 2**17)
    for acc in (A(32, "wrap", 2, pair_bits=16), A(32, "saturate", 3, pair_bits=16)):
        want, want_n = fp.matmul(a, b, ("uint8", "int8"), acc=acc, c=c, return_overflow=True)
        for ch in (5, 4, 33):
            got, n = fp.matmul(da.from_array(a, chunks=(2, ch)), da.from_array(b, chunks=(ch, 3)),
                               ("uint8", "int8"), acc=acc, c=c, return_overflow=True)
            np.testing.assert_array_equal(got.compute(), want)
            np.testing.assert_array_equal(n.compute(), want_n)
            # without counts a wrapping register may be split at any even k
            got = fp.matmul(da.from_array(a, chunks=(2, ch)), da.from_array(b, chunks=(ch, 3)),
                            ("uint8", "int8"), acc=acc, c=c)
            np.testing.assert_array_equal(got.compute(), want)


def test_mixed_formats_checked_separately():
    with pytest.raises(ValueError, match=r"^a: value 200 .* int8"):
        fp.matmul([[200]], [[1]], ("int8", "uint8"))
    with pytest.raises(ValueError, match=r"^b: value -1 .* uint8"):
        fp.matmul([[1]], [[-1]], ("int8", "uint8"))
    with pytest.raises(ValueError, match=r"^fmt: expected one format or a pair"):
        fp.matmul([[1]], [[1]], ("int8", "int8", "int8"))
    with pytest.raises(ValueError, match=r"^fmt: unknown .*format"):
        fp.matmul([[1]], [[1]], ("int8", "int99"))
    with pytest.raises(TypeError):
        fp.matmul([[1]], [[1]], "int8", A(32))      # acc is keyword-only
    with pytest.raises(TypeError):
        fp.matmul([[1]], [[1]])                      # fmt is required
    with pytest.raises(TypeError, match=r"^pair_bits: expected None or an int"):
        A(32, "wrap", 1, pair_bits=16.0)
    with pytest.raises(ValueError, match=r"^pair_bits: expected None or 2 to 64"):
        A(32, "wrap", 1, pair_bits=1)


def test_zero_d_results_are_arrays():
    for path in PATHS:
        with forced(path):
            d = fp.dot([3, 4], [5, 6], "int8")
            assert isinstance(d, np.ndarray) and d.shape == () and d.dtype == np.int32
            assert d == 39
            v, n = fp.dot([127] * 4, [127] * 4, "int8", acc=A(16, "saturate"), return_overflow=True)
            assert isinstance(n, np.ndarray) and n.shape == () and int(n) == 2
            m = fp.matmul(np.array([1, 2]), np.array([3, 4]), "int4")
            assert isinstance(m, np.ndarray) and m.shape == () and m == 11


def test_default_accumulator_saturates():
    a = np.full((1, 3), 127, np.int8)
    b = np.full((3, 1), 127, np.int8)
    assert fp.Accumulator() == A(32, "saturate", 1)
    assert fp.matmul(a, b, "int8", c=[[2**31 - 100]])[0, 0] == 2**31 - 1


def test_path_override():
    assert gemm_path() in ALL_PATHS
    with forced("nonsense"):
        with pytest.raises(ValueError, match=rf"^{PATH_ENV}: expected one of"):
            fp.matmul([[1]], [[1]], "int8")
    for name in ("vnni512", "vnni256", "avx2", "portable"):
        if not _int.gemm_available(_int.GEMM_PATHS[name]):
            with forced(name):
                with pytest.raises(ValueError, match=rf"^{PATH_ENV}: the '{name}' path is not"):
                    fp.matmul([[1]], [[1]], "int8")


def _cpu_flags():
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_compiled_paths_run_where_the_cpu_allows():
    """A compiled path that this CPU supports must be used, not silently dropped."""
    flags = _cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags here")
    need_flags = {"avx2": {"avx2", "fma"},
                  "vnni256": {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"},
                  "vnni512": {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}}
    for name in _int.GEMM_COMPILED:
        if name in need_flags and need_flags[name] <= flags:
            assert _int.gemm_available(_int.GEMM_PATHS[name]), name
    assert _int.gemm_available(_int.GEMM_PATHS["portable"])


# ---------------------------------------------------------------------------
# Kernel entry points: what keeps memory safe

def test_kernel_wrappers_check_their_arguments():
    a = np.zeros((2, 3), np.int8)
    b = np.zeros((3, 4), np.int8)
    out = np.empty((2, 4), np.int32)
    p = _int.GEMM_PATHS["portable"]

    def gemm(a=a, b=b, c0=None, out=out, path=p):
        _int.gemm_i16(a, b, c0, out, None, path, False, False, 32, False, 1, 0, 0, 0, 1)

    with pytest.raises(TypeError, match="^a: expected a native int8"):
        gemm(a=a.astype(np.int32))
    with pytest.raises(ValueError, match="^b: expected a C-contiguous"):
        gemm(b=np.asfortranarray(np.zeros((3, 4), np.int8)))
    with pytest.raises(ValueError, match="^b: expected 3 rows"):
        gemm(b=b[:2])
    with pytest.raises(ValueError, match="^out: expected shape"):
        gemm(out=out[:1])
    with pytest.raises(ValueError, match="^c0: expected shape"):
        gemm(c0=np.zeros((3, 4), np.int32))
    with pytest.raises(ValueError, match="^path: instruction path 9"):
        gemm(path=9)
    with pytest.raises(TypeError, match="^out: expected dtype int32"):
        _int.matmul_generic(a.astype(np.int32), b.astype(np.int32), None,
                            np.empty((2, 4), np.int16), None, 1, 32, True, False, 0, 0, 1)
    with pytest.raises(TypeError, match="^out: a register wider than 32 bits"):
        _int.matmul_generic(a.astype(np.int32), b.astype(np.int32), None,
                            np.empty((2, 4), np.int32), None, 1, 40, True, False, 0, 0, 1)


# ---------------------------------------------------------------------------
# Peak memory: output + one packed copy of each operand

_PEAK_SCRIPT = r"""
import sys
import numpy as np
import fixedpoint as fp

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

n, case = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
a = rng.integers(-128, 128, (n, n)).astype(np.int8)
b = rng.integers(-128, 128, (n, n)).astype(np.int8)
c = np.full((n, n), 2**31 - 2**20, np.int32)
acc, cc, counts = {"wrap": (fp.Accumulator(32, "wrap"), None, False),
                   "sat16": (fp.Accumulator(32, "saturate", 16), c, False),
                   "sat16_counts": (fp.Accumulator(32, "saturate", 16), c, True),
                   "pairs": (fp.Accumulator(32, "wrap", 2, pair_bits=16), None, False)}[case]
fp.matmul(a[:8, :8], b[:8, :8], "int8", num_threads=2)      # warm up (small)
with open("/proc/self/clear_refs", "w") as f:                # VmHWM := VmRSS
    f.write("5")
base = hwm()
r = fp.matmul(a, b, "int8", acc=acc, c=cc, return_overflow=counts, num_threads=2)
print(hwm() - base)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
@pytest.mark.parametrize("path", PATHS)
def test_peak_memory(path):
    """Peak resident memory of one 1024^3 product (each case in a fresh
    process): the output (and the int64 counts) plus one packed copy of each
    operand (int16 pairs padded to whole tiles; the generic loop: int32 copies
    and an int64 copy of c) and a little slack.  Measured here: 8.0 MiB for
    every case of the SIMD and portable paths (4 MiB out + 2 + 2 MiB packed),
    16.0 MiB with counts."""
    skip_under_asan()
    n = 1024
    # a fixed mmap threshold: every large block is fresh memory and is given back
    # when freed (no reuse of pages that an earlier allocation touched)
    env = dict(os.environ, **{PATH_ENV: path, "MALLOC_MMAP_THRESHOLD_": "131072"})
    out = n * n * 4
    if path == "generic":
        packed, c_copy = 2 * n * n * 4, n * n * 8
    else:
        packed, c_copy = 2 * (n + 32) * (n + 2) * 2, 0
    slack = 1 << 20                               # tile buffers, Python objects
    for case, extra in (("wrap", 0), ("sat16", c_copy), ("sat16_counts", c_copy + n * n * 8),
                        ("pairs", 0)):
        res = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(n), case], env=env, cwd=tempfile.gettempdir(),
                             check=True, capture_output=True, text=True, timeout=120)
        peak = int(res.stdout)
        assert peak <= out + extra + packed + slack, (case, peak)


_OOM_SCRIPT = r"""
import resource, sys
import numpy as np
import fixedpoint as fp
generic = sys.argv[1] == "generic"
if generic:   # the int64 loop's scratch rows (2 N int64) cannot be allocated
    a, b = np.ones((1, 1), np.int8), np.ones((1, 1 << 21), np.int8)
    acc, room = fp.Accumulator(40, "saturate"), 30 << 20
else:         # the packed copy of A (32 MiB as bytes, 64 MiB as int16 pairs) cannot be allocated
    a, b = np.ones((4096, 8192), np.int8), np.ones((8192, 8), np.int8)
    acc, room = fp.Accumulator(32, "saturate"), 16 << 20
fp.matmul(a[:1, :1], b[:1, :4], "int8", acc=acc)          # warm up
vm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize")][0]
resource.setrlimit(resource.RLIMIT_AS, (vm + room, resource.RLIM_INFINITY))
try:
    fp.matmul(a, b, "int8", acc=acc, num_threads=2)
except MemoryError as e:
    print("MemoryError:", e)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
@pytest.mark.parametrize("path", PATHS)
def test_out_of_memory_is_a_memory_error(path):
    """A kernel that cannot allocate its packed operands or scratch rows raises
    MemoryError before any thread starts (nothing half-written is returned)."""
    skip_under_asan()
    env = dict(os.environ, **{PATH_ENV: path})
    res = subprocess.run([sys.executable, "-c", _OOM_SCRIPT, path], env=env,
                         cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=120)
    want = "scratch rows" if path == "generic" else "packed operands"
    assert res.stdout.startswith("MemoryError: matmul: out of memory") and want in res.stdout, \
        (res.stdout, res.stderr[-2000:])


# ---------------------------------------------------------------------------
# The u8 x s8 pair model against ONNX Runtime on an emulated AVX2 CPU

_ORT_SCRIPT = r"""
import sys
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

def session(M, K, N, zero_points, b_type):
    inputs = [helper.make_tensor_value_info("a", TensorProto.UINT8, [M, K]),
              helper.make_tensor_value_info("b", b_type, [K, N])]
    names = ["a", "b"]
    if zero_points:
        inputs += [helper.make_tensor_value_info("za", TensorProto.UINT8, []),
                   helper.make_tensor_value_info("zb", b_type, [])]
        names += ["za", "zb"]
    g = helper.make_graph([helper.make_node("MatMulInteger", names, ["y"])], "g", inputs,
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [M, N])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

z = np.load(sys.argv[1])
out = {}
for key in sorted(k for k in z.files if k.endswith("_a")):
    case = key[:-2]
    a, b = z[case + "_a"], z[case + "_b"]
    feeds = {"a": a, "b": b}
    zp = case + "_za" in z.files
    if zp:
        feeds["za"], feeds["zb"] = z[case + "_za"], z[case + "_zb"]
    b_type = TensorProto.UINT8 if b.dtype == np.uint8 else TensorProto.INT8
    out[case] = session(a.shape[0], a.shape[1], b.shape[1], zp, b_type).run(None, feeds)[0]
np.savez(sys.argv[2], **out)
"""


def _ort_cases():
    rng = np.random.default_rng(16)
    cases = {}
    # clipping on purpose: 255 * 127 + 255 * 127 and 255 * -128 + 255 * -128
    cases["clip"] = (np.full((3, 8), 255, np.uint8), np.where(np.arange(8)[:, None] % 4 < 2, 127,
                                                              -128).astype(np.int8).repeat(5, 1))
    for i, (M, K, N) in enumerate([(1, 7, 5), (1, 64, 33), (2, 3, 1), (4, 5, 17), (5, 129, 19),
                                   (17, 258, 40), (33, 31, 64)]):
        a = rng.choice(np.array([0, 1, 128, 200, 254, 255], np.uint8), (M, K))
        b = rng.choice(np.array([-128, -127, -1, 0, 1, 100, 127], np.int8), (K, N))
        mixed = rng.random((M, K)) < 0.3
        a[mixed] = rng.integers(0, 256, mixed.sum())
        cases[f"r{i}"] = (a, b)
    a = rng.integers(0, 256, (6, 45)).astype(np.uint8)
    b = rng.integers(-128, 128, (45, 7)).astype(np.int8)
    cases["zp"] = (a, b, np.uint8(131), np.int8(-7))
    # u8 x u8 (MLAS widens both to 16 bits and adds pairs exactly): no clamp
    a = np.full((3, 40), 255, np.uint8)
    a[1] = rng.integers(0, 256, 40)
    b = np.full((40, 5), 255, np.uint8)
    b[:, 1] = rng.integers(0, 256, 40)
    cases["u8u8"] = (a, b)
    cases["u8u8zp"] = (a, b, np.uint8(3), np.uint8(250))
    return cases


@pytest.mark.slow
def test_u8s8_pairs_match_onnxruntime_on_emulated_avx2(tmp_path):
    """ONNX Runtime's MLAS u8 x s8 kernels, run by QEMU user mode on a Haswell
    CPU model (AVX2, no AVX-512, no VNNI), give exactly
    matmul(a, b, ("uint8", "int8"), acc=Accumulator(32, "wrap", 2, pair_bits=16)),
    zero points subtracted afterwards from row and column sums, including
    where pairs clip; uint8 x uint8 (the product of two activations) is exact."""
    need("onnxruntime", "pip install onnxruntime")
    need("onnx", "pip install onnx")
    qemu = qemu_haswell()
    cases = _ort_cases()
    arrays = {}
    for name, case in cases.items():
        arrays[name + "_a"], arrays[name + "_b"] = case[0], case[1]
        if len(case) == 4:
            arrays[name + "_za"], arrays[name + "_zb"] = case[2], case[3]
    np.savez(tmp_path / "in.npz", **arrays)
    script = tmp_path / "run_ort.py"
    script.write_text(_ORT_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([qemu, "-cpu", "Haswell", sys.executable, str(script),
                    str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                   check=True, capture_output=True, env=env, timeout=600)
    got = np.load(tmp_path / "out.npz")
    u8s8 = A(32, "wrap", 2, pair_bits=16)
    for name, case in cases.items():
        a, b = case[0], case[1]
        if b.dtype == np.uint8:          # no pairs clamp: the wrapped exact product
            model = fp.matmul(a, b, "uint8", acc=A(32, "wrap")).astype(np.int64)
        else:
            model = fp.matmul(a, b, ("uint8", "int8"), acc=u8s8).astype(np.int64)
        if len(case) == 4:
            za, zb = int(case[2]), int(case[3])
            K = a.shape[1]
            model = (model - zb * a.astype(np.int64).sum(1, keepdims=True)
                     - za * b.astype(np.int64).sum(0, keepdims=True) + K * za * zb)
        model = (model + 2**31) % 2**32 - 2**31
        np.testing.assert_array_equal(got[name], model, err_msg=name)
    exact = cases["clip"][0].astype(np.int64) @ cases["clip"][1].astype(np.int64)
    assert not np.array_equal(got["clip"], exact), "ONNX Runtime did not take its AVX2 path"
