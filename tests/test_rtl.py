"""Hardware cross-check: a Verilog MAC simulated with Icarus Verilog, bit for bit."""
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

import fixedpoint as fp

IVERILOG = shutil.which("iverilog")
# CI installs Icarus Verilog (.ci/run); there a missing simulator is a failure.
pytestmark = pytest.mark.skipif(IVERILOG is None and not os.environ.get("CI"),
                                reason="iverilog not installed (CI installs it)")


def _simulate(tmp_path, info):
    src = fp.rtl.verilog_sources()
    sim = tmp_path / "sim"
    subprocess.run([IVERILOG or "iverilog", "-g2005", "-o", str(sim), src["tb_mac32"],
                    src["mac32"], src["mult8"]], check=True, capture_output=True)
    subprocess.run(["vvp", "-n", str(sim), f"+DIR={tmp_path}", f"+N={info['n']}"],
                   check=True, capture_output=True, timeout=600)
    lines = (tmp_path / "sim_out.hex").read_text().split("\n")
    rows = [ln.split() for ln in lines if ln.strip()]
    product = np.array([int(r[0], 16) for r in rows], dtype=np.int64)
    accum = np.array([int(r[1], 16) for r in rows], dtype=np.int64)
    return product, accum


def test_mac_against_icarus(tmp_path):
    rng = np.random.default_rng(7)
    n_random = 100_000
    a = rng.integers(-128, 128, n_random)
    b = rng.integers(-128, 128, n_random)
    # Corner products, then a long run of -128 * -128 = 16384 that wraps the
    # 32-bit register (2^31 / 16384 = 131072 clocks), then one of
    # -128 * 127 that wraps it back downwards.
    corners = np.array([-128, -128, 127, 127, 0, -1, 1])
    cb = np.array([-128, 127, -128, 127, -128, -1, -1])
    run_up = np.full(140_000, -128)
    run_down_a = np.full(140_000, -128)
    run_down_b = np.full(140_000, 127)
    A = np.concatenate([a, corners, run_up, run_down_a])
    B = np.concatenate([b, cb, run_up, run_down_b])
    rst = np.zeros(A.size, dtype=np.int64)
    rst[0] = 1
    rst[n_random] = 1                     # start the corner section from 0
    rst[n_random + corners.size] = 1      # and the long runs
    info = fp.rtl.write_vectors(tmp_path, A, B, rst=rst)
    product, accum = _simulate(tmp_path, info)
    assert product.size == A.size

    # products: the simulator against fixedpoint.mul_wide
    want_p = fp.mul_wide(A, B, "int8").astype(np.int64) & 0xFFFF
    np.testing.assert_array_equal(product, want_p)
    # the register after every clock against the expected file
    expected = np.array([int(x, 16) for x in pathlib.Path(info["accum"]).read_text().split()])
    np.testing.assert_array_equal(accum, expected)
    # and each segment's final value against fixedpoint's wrapping accumulator
    bounds = [0, n_random, n_random + corners.size, A.size]
    for s, e in zip(bounds[:-1], bounds[1:]):
        terms_a, terms_b = A[s + 1:e], B[s + 1:e]   # the reset clock adds nothing
        got = fp.dot(terms_a, terms_b, "int8", acc=fp.Accumulator(32, "wrap"))
        assert int(got) & 0xFFFFFFFF == accum[e - 1]
    # the long run really wrapped the register (went past 2^31 and came back)
    run = accum[bounds[2]:].astype(np.int64)
    signed = np.where(run >= 2**31, run - 2**32, run)
    assert signed.min() < 0 and signed.max() > 2**30
    # the saturating accumulator would not have agreed
    sat = fp.dot(A[bounds[2] + 1:], B[bounds[2] + 1:], "int8", acc=fp.Accumulator(32, "saturate"))
    assert int(sat) & 0xFFFFFFFF != accum[-1]


def test_write_vectors_format(tmp_path):
    info = fp.rtl.write_vectors(tmp_path, [42, -128, 5], [38, -128, 1], rst=[0, 0, 1])
    assert pathlib.Path(info["a"]).read_text().split() == ["2a", "80", "05"]
    assert pathlib.Path(info["product"]).read_text().split() == ["063c", "4000", "0005"]
    assert pathlib.Path(info["accum"]).read_text().split() == ["0000063c", "0000463c", "00000000"]
    with pytest.raises(ValueError, match="rst: expected a 1-D array of 0/1"):
        fp.rtl.write_vectors(tmp_path, [1], [1], rst=[2])
    with pytest.raises(ValueError, match="a: value 300"):
        fp.rtl.write_vectors(tmp_path, [300], [1])
