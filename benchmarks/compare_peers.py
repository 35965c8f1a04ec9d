"""Side-by-side speed and bit-identity of fixedpoint and the peer libraries.

Same workload, same inputs, one process: fixedpoint and every installed peer
that can do the job (ml_dtypes, ONNX Runtime, PyTorch CPU, APyTypes, fxpmath
at a reduced size, NumPy expressions), with 1 and 2 threads, median of repeated runs.  For each peer
the script also says whether its output is bit-identical to fixedpoint's and,
where not, why.  Peers are optional (``pip install ".[peers]"``); a missing
one is reported as missing.

    python benchmarks/compare_peers.py            # the sizes of the speed targets
    python benchmarks/compare_peers.py --quick    # small sizes, a smoke test
    python benchmarks/compare_peers.py --targets-only --nosimd-build DIR
        # only the speed-target ratios (issue 13); DIR holds a copy of the source
        # tree built with `FIXEDPOINT_NO_SIMD=1 python setup.py build_ext --inplace`

Output: a Markdown table on stdout (and ``--out FILE``).
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

import fixedpoint as fp
from fixedpoint.accumulate import PATH_ENV, gemm_path


def _optional(name):
    try:
        return importlib.import_module(name)
    except Exception:   # noqa: BLE001 - any import failure means "missing"
        return None


warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")   # PyTorch deprecation notice

ml_dtypes = _optional("ml_dtypes")
ort = _optional("onnxruntime")
onnx = _optional("onnx")
torch = _optional("torch")
apy = _optional("apytypes")
fxpmath = _optional("fxpmath")
threadpoolctl = _optional("threadpoolctl")
PEERS = {"ml_dtypes": ml_dtypes, "onnxruntime": ort, "onnx (to build ORT models)": onnx,
         "torch": torch, "apytypes": apy, "fxpmath": fxpmath,
         "threadpoolctl (NumPy threads)": threadpoolctl}
FXP_N = 1 << 16          # fxpmath works on Python objects: a reduced size


def median_time(fn, repeat):
    fn()                                  # warm up (allocations, lazy init)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class numpy_threads:
    """Limit NumPy's BLAS threads (needs threadpoolctl)."""

    def __init__(self, n):
        self.ctx = threadpoolctl.threadpool_limits(n) if threadpoolctl else None

    def __enter__(self):
        if self.ctx:
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx:
            self.ctx.__exit__(*exc)


def ort_session(model, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


class Table:
    def __init__(self):
        self.rows = []

    def add(self, workload, impl, threads, seconds, work, unit, identical, note=""):
        self.rows.append(dict(workload=workload, impl=impl, threads=threads, seconds=seconds,
                              rate=None if seconds is None else work / seconds, unit=unit,
                              identical=identical, note=note))

    def markdown(self):
        out = ["| workload | implementation | threads | time | throughput | vs best peer | "
               "bit-identical to fixedpoint | note |", "|---|---|---|---|---|---|---|---|"]
        for w in dict.fromkeys(r["workload"] for r in self.rows):
            rows = [r for r in self.rows if r["workload"] == w]
            peers = [r["rate"] for r in rows if not r["impl"].startswith("fixedpoint") and r["rate"]
                     and not r["impl"].startswith("(")]
            best = max(peers) if peers else None
            for r in rows:
                if r["seconds"] is None:
                    out.append(f"| {w} | {r['impl']} | | missing | | | | {r['note']} |")
                    continue
                ratio = f"{r['rate'] / best:.2f}x" if best else ""
                ident = {True: "yes", False: "no", None: "n/a"}[r["identical"]]
                out.append(f"| {w} | {r['impl']} | {r['threads']} | {r['seconds'] * 1e3:.2f} ms | "
                           f"{r['rate']:.3g} {r['unit']} | {ratio} | {ident} | {r['note']} |")
        return "\n".join(out)


# ---------------------------------------------------------------------------
def int8_matmul(tab, size, repeat, threads):
    M = K = N = size
    g = np.random.default_rng(1)
    a = g.integers(-128, 128, (M, K)).astype(np.int8)
    b = g.integers(-128, 128, (K, N)).astype(np.int8)
    ops = 2 * M * N * K
    w = f"INT8 matmul {M}x{K}x{N}"
    ref_wrap = ref_sat = None
    for t in threads:
        for name, acc in (("wrap", fp.Accumulator(32, "wrap")),
                          ("saturate, block=32", fp.Accumulator(32, "saturate", 32))):
            r = fp.matmul(a, b, "int8", acc=acc, num_threads=t)
            if name == "wrap":
                ref_wrap = r
            else:
                ref_sat = r
            tab.add(w, f"fixedpoint ({name})", t,
                    median_time(lambda: fp.matmul(a, b, "int8", acc=acc, num_threads=t), repeat),
                    ops / 1e9, "GOPS", None, f"path {gemm_path()}")
        # with the register starting near its limit overflow is possible, so the
        # block-saturating kernel itself runs (no exact shortcut)
        c_edge = np.where(np.arange(N) % 2, 2**31 - 2**20, -(2**31) + 2**20)[None, :].repeat(M, 0)
        sat = fp.Accumulator(32, "saturate", 32)
        tab.add(w, "fixedpoint (saturate, block=32, c near the int32 edge)", t,
                median_time(lambda: fp.matmul(a, b, "int8", acc=sat, c=c_edge, num_threads=t), repeat),
                ops / 1e9, "GOPS", None,
                f"overflow possible: the block-saturating kernel runs (path {gemm_path()})")
        a32, b32 = a.astype(np.int32), b.astype(np.int32)
        if size <= 512 or t == threads[0]:
            with numpy_threads(t):
                r = a32 @ b32
                tab.add(w, "NumPy int32 matmul", t, median_time(lambda: a32 @ b32, max(1, repeat // 3)),
                        ops / 1e9, "GOPS", np.array_equal(r, ref_wrap), "wraps mod 2^32 like 'wrap'")
        af, bf = a.astype(np.float32), b.astype(np.float32)
        with numpy_threads(t):
            r = af @ bf
            tab.add(w, "NumPy float32 sgemm", t, median_time(lambda: af @ bf, repeat), ops / 1e9, "GOPS",
                    np.array_equal(r.astype(np.int64), ref_wrap.astype(np.int64)),
                    "exact only while partial sums stay below 2^24")
        if ort and onnx:
            from onnx import TensorProto, helper
            g_ = helper.make_graph(
                [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "g",
                [helper.make_tensor_value_info("a", TensorProto.INT8, [M, K]),
                 helper.make_tensor_value_info("b", TensorProto.INT8, [K, N])],
                [helper.make_tensor_value_info("y", TensorProto.INT32, [M, N])])
            s = ort_session(helper.make_model(g_, opset_imports=[helper.make_opsetid("", 13)]), t)
            r = s.run(None, {"a": a, "b": b})[0]
            tab.add(w, "ONNX Runtime MatMulInteger s8 x s8", t,
                    median_time(lambda: s.run(None, {"a": a, "b": b}), repeat), ops / 1e9, "GOPS",
                    np.array_equal(r, ref_wrap), "wraps mod 2^32 like 'wrap'")
        if torch is not None:
            torch.set_num_threads(t)
            ta, tb = torch.from_numpy(a).to(torch.int32), torch.from_numpy(b).to(torch.int32)
            r = (ta @ tb).numpy()
            tab.add(w, "PyTorch CPU int32 matmul", t, median_time(lambda: ta @ tb, max(1, repeat // 3)),
                    ops / 1e9, "GOPS", np.array_equal(r, ref_wrap), "wraps mod 2^32 like 'wrap'")
    if apy is not None and size >= 256:
        n = 256
        A = apy.APyFixedArray.from_float(a[:n, :n].astype(np.float64), int_bits=8, frac_bits=0)
        B = apy.APyFixedArray.from_float(b[:n, :n].astype(np.float64), int_bits=8, frac_bits=0)
        sec = median_time(lambda: A @ B, 1)
        r = np.asarray((A @ B).to_numpy()).astype(np.int64)
        tab.add(w, f"APyTypes APyFixedArray (at {n}^3)", 1, sec, 2 * n ** 3 / 1e9, "GOPS",
                np.array_equal(r, fp.matmul(a[:n, :n], b[:n, :n], "int8",
                                            acc=fp.Accumulator(32, "wrap")).astype(np.int64)),
                "exact (grows the word), equal to 'wrap' while no overflow")
    return ref_sat


def elementwise_mul(tab, n, repeat, threads):
    g = np.random.default_rng(2)
    a = g.integers(-128, 128, n).astype(np.int8)
    b = g.integers(-128, 128, n).astype(np.int8)
    w = f"INT8 saturating mul, {n >> 20}M pairs"
    ref = fp.mul(a, b, "int8")
    for t in threads:
        tab.add(w, "fixedpoint", t, median_time(lambda: fp.mul(a, b, "int8", num_threads=t), repeat), n / 1e9,
                "G/s", None)

    def npy():
        return np.clip(a.astype(np.int16) * b, -128, 127).astype(np.int8)
    tab.add(w, "NumPy expression", 1, median_time(npy, repeat), n / 1e9, "G/s", np.array_equal(npy(), ref))
    if fxpmath is not None:
        m = min(n, FXP_N)
        A = fxpmath.Fxp(a[:m], True, 8, 0, overflow="saturate", op_sizing="same")
        B = fxpmath.Fxp(b[:m], True, 8, 0, overflow="saturate", op_sizing="same")
        tab.add(w, f"fxpmath Fxp (at {m >> 10}K)", 1, median_time(lambda: A * B, 1), m / 1e9, "G/s",
                np.array_equal((A * B).val.astype(np.int64), ref[:m].astype(np.int64)))
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)

        def tmul():
            return torch.clamp(ta.to(torch.int16) * tb, -128, 127).to(torch.int8)
        for t in threads:
            torch.set_num_threads(t)
            tab.add(w, "PyTorch CPU expression", t, median_time(tmul, repeat), n / 1e9, "G/s",
                    np.array_equal(tmul().numpy(), ref))


def _ort_quantize_fp8(n, sat, t):
    from onnx import TensorProto, helper
    ty = TensorProto.FLOAT8E5M2
    g_ = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], saturate=int(sat))], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", ty, [n])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [1.0]), helper.make_tensor("z", ty, [], [0.0])])
    s = ort_session(helper.make_model(g_, opset_imports=[helper.make_opsetid("", 21)]), t)

    def run(x):
        bnd = s.io_binding()
        bnd.bind_cpu_input("x", x)
        bnd.bind_output("y", "cpu")
        s.run_with_iobinding(bnd)
        return bnd.get_outputs()[0]

    def codes(x):
        o = run(x)
        return np.frombuffer((ctypes.c_uint8 * n).from_address(o.data_ptr()), np.uint8).copy()
    return run, codes


def to_fp8(tab, n, repeat, threads):
    g = np.random.default_rng(3)
    x = (g.standard_normal(n) * 100).astype(np.float32)
    w = f"float32 -> E5M2 (nearest even), {n >> 20}M"
    ref = fp.to_fp8(x, "e5m2")
    for t in threads:
        tab.add(w, "fixedpoint", t, median_time(lambda: fp.to_fp8(x, "e5m2", num_threads=t), repeat),
                n / 1e9, "G/s", None)
    tab.add(w, "(NumPy float32 -> uint8 cast, not a peer)", 1, median_time(lambda: x.astype(np.uint8), repeat),
            n / 1e9, "G/s", None, "memory-bound reference")
    if ml_dtypes is not None:
        def mld():
            return x.astype(ml_dtypes.float8_e5m2)
        tab.add(w, "ml_dtypes astype", 1, median_time(mld, max(1, repeat // 3)), n / 1e9, "G/s",
                np.array_equal(mld().view(np.uint8), ref), "")
    if ort and onnx:
        for t in threads:
            run, codes = _ort_quantize_fp8(n, False, t)
            c = codes(x)
            tab.add(w, "ONNX Runtime QuantizeLinear (saturate=0)", t, median_time(lambda: run(x), repeat),
                    n / 1e9, "G/s", np.array_equal(c, ref),
                    "" if np.array_equal(c, ref) else
                    "ORT gives NaN for |x| in [61440, 65536) where OCP says Inf")
    if torch is not None:
        tx = torch.from_numpy(x)
        for t in threads:
            torch.set_num_threads(t)
            r = tx.to(torch.float8_e5m2).view(torch.uint8).numpy()
            tab.add(w, "PyTorch CPU .to(float8_e5m2)", t,
                    median_time(lambda: tx.to(torch.float8_e5m2), repeat), n / 1e9, "G/s",
                    np.array_equal(r, ref))
    if apy is not None:
        m = min(n, 1 << 18)
        xs = x[:m].astype(np.float64)
        sec = median_time(lambda: apy.APyFloatArray.from_float(xs, exp_bits=5, man_bits=2), 1)
        tab.add(w, f"APyTypes APyFloatArray.from_float (at {m >> 10}K)", 1, sec, m / 1e9, "G/s", None,
                "IEEE-like E5M2; bits not compared")


def from_fp8(tab, n, repeat, threads):
    g = np.random.default_rng(4)
    codes = g.integers(0, 256, n).astype(np.uint8)
    w = f"E5M2 -> float32 decode, {n >> 20}M"
    ref = fp.from_fp8(codes, "e5m2")

    def same(r):
        nan = np.isnan(ref)
        return bool(np.array_equal(np.isnan(r), nan) and np.array_equal(r[~nan].view(np.uint32),
                                                                         ref[~nan].view(np.uint32)))
    buf = np.empty(n, np.float32)
    for t in threads:
        tab.add(w, "fixedpoint", t, median_time(lambda: fp.from_fp8(codes, "e5m2", num_threads=t), repeat),
                n / 1e9, "G/s", None, "fresh output array (first-touch page faults included)")
        tab.add(w, "fixedpoint (out=)", t,
                median_time(lambda: fp.from_fp8(codes, "e5m2", out=buf, num_threads=t), repeat),
                n / 1e9, "G/s", None, "output array reused")
    if ml_dtypes is not None:
        v = codes.view(ml_dtypes.float8_e5m2)
        tab.add(w, "ml_dtypes astype", 1, median_time(lambda: v.astype(np.float32), repeat), n / 1e9, "G/s",
                same(v.astype(np.float32)), "values equal; NaN compared as NaN")
    if torch is not None:
        tc = torch.from_numpy(codes).view(torch.float8_e5m2)
        for t in threads:
            torch.set_num_threads(t)
            tab.add(w, "PyTorch CPU .float()", t, median_time(lambda: tc.float(), repeat), n / 1e9, "G/s",
                    same(tc.float().numpy()), "values equal; NaN compared as NaN")
    if ort and onnx:
        from onnx import TensorProto, helper
        for t in threads:
            init = helper.make_tensor("c", TensorProto.FLOAT8E5M2, [n], codes.tobytes(), raw=True)
            g_ = helper.make_graph(
                [helper.make_node("DequantizeLinear", ["c", "s"], ["y"])], "g", [],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
                [init, helper.make_tensor("s", TensorProto.FLOAT, [], [1.0])])
            so = ort.SessionOptions()
            so.intra_op_num_threads = t
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            s = ort.InferenceSession(helper.make_model(g_, opset_imports=[helper.make_opsetid("", 21)])
                                     .SerializeToString(), so, providers=["CPUExecutionProvider"])
            tab.add(w, "ONNX Runtime DequantizeLinear", t, median_time(lambda: s.run(None, {}), repeat),
                    n / 1e9, "G/s", same(s.run(None, {})[0]), "values equal; NaN compared as NaN")


def quantize_int(tab, n, repeat, threads):
    g = np.random.default_rng(6)
    x = g.standard_normal(n).astype(np.float32)
    scale = np.float32(0.05)
    for fmt in ("int8", "int4"):
        w = f"float32 -> {fmt.upper()} quantize{' + pack' if fmt == 'int4' else ''} (given scale), {n >> 20}M"
        ref = fp.quantize(x, fmt, scale=scale)
        ref_bytes = ref.pack()
        for t in threads:
            if fmt == "int8":
                fn = lambda: fp.quantize(x, fmt, scale=scale, num_threads=t)  # noqa: E731
            else:
                fn = lambda: fp.quantize(x, fmt, scale=scale, num_threads=t).pack()  # noqa: E731
            tab.add(w, "fixedpoint", t, median_time(fn, repeat), n / 1e9, "G/s", None)
        if fmt == "int8":
            def npy():
                return np.clip(np.rint(x / scale), -128, 127).astype(np.int8)
            tab.add(w, "NumPy expression", 1, median_time(npy, max(1, repeat // 2)), n / 1e9, "G/s",
                    np.array_equal(npy(), ref.codes))
            if torch is not None:
                tx = torch.from_numpy(x)
                for t in threads:
                    torch.set_num_threads(t)
                    r = torch.quantize_per_tensor(tx, float(scale), 0, torch.qint8).int_repr().numpy()
                    tab.add(w, "PyTorch quantize_per_tensor", t,
                            median_time(lambda: torch.quantize_per_tensor(tx, float(scale), 0, torch.qint8),
                                        repeat), n / 1e9, "G/s", np.array_equal(r, ref.codes),
                            "" if np.array_equal(r, ref.codes) else "rounds x * (1/scale), not x / scale")
        if ort and onnx:
            from onnx import TensorProto, helper
            ty = TensorProto.INT8 if fmt == "int8" else TensorProto.INT4
            for t in threads:
                g_ = helper.make_graph(
                    [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])], "g",
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                    [helper.make_tensor_value_info("y", ty, [n])],
                    [helper.make_tensor("s", TensorProto.FLOAT, [], [float(scale)]),
                     helper.make_tensor("z", ty, [], [0])])
                s = ort_session(helper.make_model(g_, opset_imports=[helper.make_opsetid("", 21)]), t)

                def run():
                    bnd = s.io_binding()
                    bnd.bind_cpu_input("x", x)
                    bnd.bind_output("y", "cpu")
                    s.run_with_iobinding(bnd)
                    return bnd.get_outputs()[0]
                o = run()
                got = np.frombuffer((ctypes.c_uint8 * ref_bytes.size).from_address(o.data_ptr()), np.uint8)
                tab.add(w, "ONNX Runtime QuantizeLinear", t, median_time(run, repeat), n / 1e9, "G/s",
                        np.array_equal(got, ref_bytes), "packed bytes compared" if fmt == "int4" else "")
    if fxpmath is not None:
        m = min(n, FXP_N)
        w = f"float32 -> INT8 quantize, scale 2^-4 (a fixed-point format), {n >> 20}M"
        x4 = x * np.float32(8)
        ref4 = fp.quantize(x4, "int8", scale=np.float32(1 / 16))
        for t in threads:
            tab.add(w, "fixedpoint", t, median_time(lambda: fp.quantize(x4, "int8", scale=np.float32(1 / 16),
                                                                        num_threads=t), repeat), n / 1e9, "G/s", None)
        q = fxpmath.Fxp(x4[:m], True, 8, 4, overflow="saturate", rounding="around")
        tab.add(w, f"fxpmath Fxp(..., 8, 4, rounding='around') (at {m >> 10}K)", 1,
                median_time(lambda: fxpmath.Fxp(x4[:m], True, 8, 4, overflow="saturate", rounding="around"), 1),
                m / 1e9, "G/s", np.array_equal(q.val.astype(np.int64), ref4.codes[:m].astype(np.int64)),
                "round half to even (NumPy around), saturate")
    w = f"float32 -> INT8 quantize with min-max calibration, {n >> 20}M"
    for t in threads:
        tab.add(w, "fixedpoint", t, median_time(lambda: fp.quantize(x, "int8", num_threads=t), repeat),
                n / 1e9, "G/s", None)

    def npy_cal():
        s_ = np.float32(np.abs(x).max() / 127)
        return np.clip(np.rint(x / s_), -128, 127).astype(np.int8)
    tab.add(w, "NumPy expression", 1, median_time(npy_cal, max(1, repeat // 2)), n / 1e9, "G/s",
            np.array_equal(npy_cal(), fp.quantize(x, "int8").codes))


def fp8_matmul(tab, size, repeat, threads):
    M = K = N = size
    g = np.random.default_rng(5)
    a = fp.to_fp8(g.standard_normal((M, K)).astype(np.float32), "e4m3")
    b = fp.to_fp8(g.standard_normal((K, N)).astype(np.float32), "e4m3")
    af, bf = fp.from_fp8(a), fp.from_fp8(b)
    ops = 2 * M * N * K
    w = f"FP8 E4M3 GEMM {M}x{K}x{N} (Hopper model)"
    for t in threads:
        ref = None
        for fast in (False, True):
            acc = fp.TensorCoreAccumulator.hopper_fp8(fast_accum=fast)
            r = fp.fp8_matmul(a, b, acc=acc, num_threads=t)
            ref = r if not fast else ref
            tab.add(w, f"fixedpoint (fast_accum={fast})", t,
                    median_time(lambda: fp.fp8_matmul(a, b, acc=acc, num_threads=t), repeat),
                    ops / 1e9, "GOPS", None)
        with numpy_threads(t):
            r = af @ bf
            tab.add(w, "NumPy float32 matmul of the decoded values", t, median_time(lambda: af @ bf, repeat),
                    ops / 1e9, "GOPS", np.array_equal(r.view(np.uint32), ref.view(np.uint32)),
                    "float32 accumulation, not the tensor core's 14-bit truncating sums")
        if torch is not None:
            torch.set_num_threads(t)
            ta, tb = torch.from_numpy(af), torch.from_numpy(bf)
            tab.add(w, "PyTorch CPU float32 matmul", t, median_time(lambda: ta @ tb, repeat), ops / 1e9, "GOPS",
                    np.array_equal((ta @ tb).numpy().view(np.uint32), ref.view(np.uint32)),
                    "float32 accumulation")


def requantize(tab, n, repeat, threads):
    g = np.random.default_rng(7)
    acc = g.integers(-2**24, 2**24, n).astype(np.int32)
    real = 0.0007
    m, s = fp.quantize_multiplier(real)
    w = f"int32 -> INT8 requantize (TFLite double rounding), {n >> 20}M"
    ref = fp.requantize(acc, m, s, out_fmt="int8")
    for t in threads:
        tab.add(w, "fixedpoint", t, median_time(lambda: fp.requantize(acc, m, s, out_fmt="int8", num_threads=t), repeat),
                n / 1e9, "G/s", None)

    def npy_float():
        return np.clip(np.rint(acc.astype(np.float32) * np.float32(real)), -128, 127).astype(np.int8)
    r = npy_float()
    tab.add(w, "NumPy float32 expression", 1, median_time(npy_float, repeat), n / 1e9, "G/s",
            np.array_equal(r, ref), f"float rescale, not the fixed-point multiply: {np.count_nonzero(r != ref)} "
                                    f"of {n} differ by 1")
    if torch is not None:
        ta = torch.from_numpy(acc)
        for t in threads:
            torch.set_num_threads(t)

            def tq():
                return torch.quantize_per_tensor(ta.to(torch.float32), 1 / real, 0, torch.qint8)
            rt = tq().int_repr().numpy()
            tab.add(w, "PyTorch quantize_per_tensor(acc, 1/scale)", t, median_time(tq, repeat), n / 1e9,
                    "G/s", np.array_equal(rt, ref), "float rescale")


def _layer_case(m, k, n):
    g = np.random.default_rng(8)
    x = g.standard_normal((m, k)).astype(np.float32)
    wt = (g.standard_normal((k, n)) * 0.05).astype(np.float32)
    bias = g.standard_normal(n).astype(np.float32)
    return x, wt, bias


def _fbgemm_linear(x, wt, bias, fc):
    """PyTorch's quantized Linear (fbgemm) with the weight codes, scales and
    input/output quantization of the calibrated ``ane-int8`` layer ``fc``;
    returns (run, codes)."""
    k, n = wt.shape
    tr = fc.trace
    lin = torch.ao.nn.quantized.Linear(k, n, dtype=torch.qint8)
    qw = torch._make_per_channel_quantized_tensor(
        torch.from_numpy(np.ascontiguousarray(tr.w.codes.T)),
        torch.from_numpy(np.asarray(tr.w.scale, np.float64).reshape(-1)), torch.zeros(n, dtype=torch.int64), 0)
    lin.set_weight_bias(qw, torch.from_numpy(bias))
    lin.scale, lin.zero_point = float(tr.output_scale), int(tr.output_zero_point) + 128
    tx = torch.from_numpy(x)
    # fbgemm takes uint8 activations: the same codes shifted by a zero point of 128
    sx, zx = float(tr.x_scale), int(tr.x.zero_point) + 128

    def run():
        return lin(torch.quantize_per_tensor(tx, sx, zx, torch.quint8))
    codes = run().int_repr().numpy().astype(np.int16) - 128
    return run, codes


def linear(tab, m, k, n, repeat, threads):
    """One fully connected layer through the profiles (weights quantized once,
    static scales), and PyTorch's fbgemm quantized Linear on the same codes."""
    x, wt, bias = _layer_case(m, k, n)
    macs = 2 * m * k * n
    for name in ("ane-int8", "h100-fp8", "edge-int4"):
        fc = _calibrated_linear(name, x, wt, bias)
        w = f"layers.Linear {name}, {m}x{k}x{n} (weights quantized once, static scales)"
        for t in threads:
            fp.set_num_threads(t)
            tab.add(w, "fixedpoint", t, median_time(lambda: fc.run(x), repeat), macs / 1e9, "GOPS", None)
        fp.set_num_threads(None)
        if name == "ane-int8" and torch is not None:
            for t in threads:
                torch.set_num_threads(t)
                run, codes = _fbgemm_linear(x, wt, bias, fc)
                same = np.array_equal(codes, fc.trace.output_codes)
                tab.add(w, "PyTorch ao quantized Linear (fbgemm, uint8 activations)", t,
                        median_time(run, repeat), macs / 1e9, "GOPS", same,
                        "" if same else f"float requantization: {np.count_nonzero(codes != fc.trace.output_codes)} "
                                        f"of {codes.size} codes differ")


def _calibrated_linear(name, x, wt, bias):
    import dataclasses
    from fixedpoint import layers, profiles
    p = profiles.get(name)
    if not p.is_float and not p.activations.block_scaled:
        p = dataclasses.replace(p, activations=dataclasses.replace(p.activations, static=True))
    fc = layers.Linear(p, wt, bias)
    fc.calibrate(x)
    fc.run(x)
    return fc


def _layer_kernels(fc, x):
    """The bare kernels of the layer's computation with its operands prepared:
    the activation quantization and the product kernel (what the layer adds on
    top, in Python and NumPy, is the rest of its time)."""
    tr = fc.trace
    p = fc.profile
    sx = tr.x_scale
    wq = tr.w
    if isinstance(wq.fmt, fp.FloatFormat):
        wc = wq.codes
        sw = np.asarray(wq.scale, np.float32)
        sw = sw.reshape(-1) if sw.size > 1 else sw.reshape(())

        def run():
            xc_ = fp.quantize(x, tr.x.fmt, scale=sx).codes
            return fp.fp8_matmul(xc_, wc, acc=p.accumulator, scale_a=np.float32(sx), scale_b=sw)
        return run
    groups = p.weights.group_size if p.weights.granularity == "group" else None
    wc = wq.codes
    zx = tr.x.zero_point

    def run():
        xq = fp.quantize(x, tr.x.fmt, scale=sx, zero_point=zx)
        xc_ = xq.codes
        if groups is None:
            return fp.matmul(xc_, wc, (tr.x.fmt, wq.fmt), acc=p.accumulator)
        G = wc.shape[0] // groups
        xg = np.ascontiguousarray(np.moveaxis(xc_.reshape(-1, G, groups), 1, 0))
        return fp.matmul(xg, wc.reshape(G, groups, -1), (tr.x.fmt, wq.fmt), acc=p.accumulator)
    return run


def layer_targets(m, k, n, repeat, threads):
    """The issue-13 layer ratios: ane-int8 against fbgemm, h100-fp8 and edge-int4
    against their own kernels, all in one interleaved series."""
    x, wt, bias = _layer_case(m, k, n)
    fcs = {name: _calibrated_linear(name, x, wt, bias) for name in ("ane-int8", "h100-fp8", "edge-int4")}
    fns = {}
    for name, fc in fcs.items():
        fns[name] = (lambda fc=fc: fc.run(x))
        fns[name + " kernels"] = _layer_kernels(fc, x)
    fp.set_num_threads(threads)
    lines = []
    if torch is not None:
        torch.set_num_threads(threads)
        run, codes = _fbgemm_linear(x, wt, bias, fcs["ane-int8"])
        fns["fbgemm"] = run
        same = np.array_equal(codes, fcs["ane-int8"].trace.output_codes)
        lines.append(f"fbgemm's codes {'equal' if same else 'differ from'} the ane-int8 layer's "
                     f"({np.count_nonzero(codes != fcs['ane-int8'].trace.output_codes)} of {codes.size} differ: "
                     "float requantization against the double-rounding fixed-point multiply).")
    res = interleaved(fns, repeat)
    fp.set_num_threads(None)

    def ms(v):
        return f"{v[0] * 1e3:.2f} / {v[1] * 1e3:.2f} ms"
    out = [f"Layer targets, fully connected {m}x{k}x{n}, {threads} threads, static scales, "
           f"{repeat} interleaved runs (min / median):", "",
           "| layer | fixedpoint | reference | reference time | ratio (min / median) | target |",
           "|---|---|---|---|---|---|"]
    if "fbgemm" in res:
        r, f = res["ane-int8"], res["fbgemm"]
        out.append(f"| ane-int8 Linear | {ms(r)} | PyTorch fbgemm quantized Linear | {ms(f)} | "
                   f"{r[0] / f[0]:.2f} / {r[1] / f[1]:.2f}x its time | <= 2x (goal parity) |")
    for name in ("ane-int8", "h100-fp8", "edge-int4"):
        r, kk = res[name], res[name + " kernels"]
        out.append(f"| {name} Linear | {ms(r)} | its kernels alone (quantize + product) | {ms(kk)} | "
                   f"{r[0] / kk[0]:.2f} / {r[1] / kk[1]:.2f}x their time | "
                   f"{'<= 2x' if name != 'ane-int8' else ''} |")
    return "\n".join(out + [""] + lines) + "\n"


def minilm_targets(n_texts, threads, profiles_=None):
    """all-MiniLM-L6-v2 on ``n_texts`` sentences on every profile, against ONNX
    Runtime running the same float graph with the same threads (warm sessions;
    the median of 3 ORT runs; per profile one timed run after a warm-up, the
    best of 3 for ane-int8, whose ratio is a target)."""
    try:
        from fixedpoint.models import minilm as minilm_mod
        m = minilm_mod.minilm()
    except (ImportError, ModuleNotFoundError) as e:
        return f"MiniLM: not measured ({e})\n"
    if ort is None:
        return "MiniLM: not measured (onnxruntime missing)\n"
    texts = minilm_mod.sentences()[:n_texts]
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(m.graph.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}

    def ort_run():
        return m.map_batches(texts, lambda f: sess.run(["embeddings"], {k: v for k, v in f.items()
                                                                          if k in names})[0],
                             max_length=m.max_seq_length)
    ort_run()
    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        e_ort = ort_run()
        ts.append(time.perf_counter() - t0)
    t_ort = statistics.median(ts)
    # ONNX Runtime's worker threads spin after each run and would take the cores
    # from what runs next: the session goes before fixedpoint's runs start
    del sess
    import gc
    gc.collect()
    time.sleep(1.0)
    fp.set_num_threads(threads)
    lines = [f"all-MiniLM-L6-v2, {n_texts} sentences, {threads} threads: ONNX Runtime float32 "
             f"{t_ort:.3f} s (median of 3).", "",
             "| profile | time | x ONNX Runtime's time | mean cosine to ORT's embeddings | target |",
             "|---|---|---|---|---|"]
    for name in profiles_ or fp.profiles.names():
        m.embed(texts[:2], name)                 # builds the session (weights quantized once)
        runs = []
        for _ in range(3 if name == "ane-int8" else 1):
            t0 = time.perf_counter()
            e = m.embed(texts, name)
            runs.append(time.perf_counter() - t0)
        dt = min(runs)
        cos = float((e * e_ort).sum(1).mean())
        lines.append(f"| {name} | {dt:.2f} s | {dt / t_ort:.1f}x | {cos:.4f} | "
                     f"{'<= 4x (goal 2x)' if name == 'ane-int8' else ''} |")
    fp.set_num_threads(None)
    return "\n".join(lines) + "\n"


def design_study(tab, repeat):
    """The end-to-end `fixedpoint study` on the shipped model (target: under 60 s)."""
    import tempfile
    from fixedpoint import study

    def run(figures):
        res = study.run_study()
        if figures:
            with tempfile.TemporaryDirectory() as d:
                study.write_report(res, d)
    w = f"fixedpoint study (MLP, {len(fp.profiles.names())} profiles, 450 images)"
    tab.add(w, "fixedpoint (table and JSON)", 1, median_time(lambda: run(False), repeat), 1, "runs/s", None)
    tab.add(w, "fixedpoint (with the Markdown report and 3 PNG figures)", 1,
            median_time(lambda: run(True), max(1, repeat // 3)), 1, "runs/s", None,
            "matplotlib drawing is most of it")


# ---------------------------------------------------------------------------
# Speed targets (issue 13): ratios measured in this run, the kernels and NumPy's
# float32 sgemm in turns so that both see the same machine noise.

class forced_path:
    """Force the integer GEMM's instruction path (FIXEDPOINT_GEMM_PATH)."""

    def __init__(self, path):
        self.path, self.old = path, None

    def __enter__(self):
        self.old = os.environ.get(PATH_ENV)
        os.environ[PATH_ENV] = self.path

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop(PATH_ENV, None)
        else:
            os.environ[PATH_ENV] = self.old


def interleaved(fns, repeat, pause=0.15):
    """(min, median) seconds of each function, run in turns.

    Each timed call follows ``pause`` seconds of sleep and one untimed call of
    the same function: OpenBLAS's and OpenMP's worker threads keep spinning
    for a while after a call (and would take a core from whichever library
    runs next), and sleep once they stop (and would then be woken up inside
    the timed call); so every library is timed with its own threads awake."""
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            time.sleep(pause)
            f()
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def _fp8_gemm_fn(a, b, fast, t):
    """fp8_matmul E4M3 x E4M3 with or without fast accumulation (split
    accumulation is cuBLAS's default)."""
    acc = fp.TensorCoreAccumulator.hopper_fp8(fast_accum=fast)
    return lambda: fp.fp8_matmul(a, b, acc=acc, num_threads=t)


def _e4m3_codes(x):
    return fp.to_fp8(x, "e4m3", overflow="saturate")


_NOSIMD_SCRIPT = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import fixedpoint as fp
from fixedpoint import _int
n, repeat, threads = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
g = np.random.default_rng(1)
a = g.integers(-128, 128, (n, n)).astype(np.int8)
b = g.integers(-128, 128, (n, n)).astype(np.int8)
c_edge = np.where(np.arange(n) % 2, 2**31 - 2**20, -(2**31) + 2**20)[None, :].repeat(n, 0).astype(np.int32)
fns = {"wrap": lambda: fp.matmul(a, b, "int8", acc=fp.Accumulator(32, "wrap"), num_threads=threads),
       "hopper_edge": lambda: fp.matmul(a, b, "int8", acc=fp.Accumulator(32, "saturate", 16),
                                        c=c_edge, num_threads=threads)}
res = {}
for k, f in fns.items():
    f()
    ts = []
    for _ in range(repeat):
        time.sleep(0.15)
        f()
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    res[k] = [min(ts), statistics.median(ts)]
res["compiled"] = list(_int.GEMM_COMPILED)
res["path"] = fp.accumulate.gemm_path()
res["file"] = fp.__file__
print(json.dumps(res))
"""


def _on_path(path, f):
    """f, run with the integer GEMM forced onto ``path``."""
    def run():
        with forced_path(path):
            return f()
    return run


def speed_targets(size, repeat, nosimd_build=None, threads=2):
    """The issue-13 ratios as Markdown lines.  Every workload, NumPy's sgemm
    and the forced instruction paths run in one interleaved series, so that
    all of them see the same machine noise."""
    n = size
    g = np.random.default_rng(1)
    a = g.integers(-128, 128, (n, n)).astype(np.int8)
    b = g.integers(-128, 128, (n, n)).astype(np.int8)
    au = (a.astype(np.int16) + 128).astype(np.uint8)
    af, bf = a.astype(np.float32), b.astype(np.float32)
    c_edge = np.where(np.arange(n) % 2, 2**31 - 2**20, -(2**31) + 2**20)[None, :].repeat(n, 0)
    c_edge = c_edge.astype(np.int32)
    W, H = fp.Accumulator(32, "wrap"), fp.Accumulator(32, "saturate", 16)
    U8S8 = fp.Accumulator(32, "wrap", 2, pair_bits=16)
    t = threads
    auto = gemm_path()

    def wrap():
        return fp.matmul(a, b, "int8", acc=W, num_threads=t)

    def hopper_edge():
        return fp.matmul(a, b, "int8", acc=H, c=c_edge, num_threads=t)

    fns = {"sgemm": lambda: af @ bf,
           "wrap": wrap,
           "hopper": lambda: fp.matmul(a, b, "int8", acc=H, num_threads=t),
           "hopper_edge": hopper_edge,
           "u8s8": lambda: fp.matmul(au, b, ("uint8", "int8"), acc=U8S8, num_threads=t)}
    others = [p for p in ("vnni512", "vnni256", "avx2", "portable")
              if p != auto and fp._int.gemm_available(fp._int.GEMM_PATHS[p])]
    for p in others:
        fns[p + " wrap"] = _on_path(p, wrap)
        fns[p + " hopper_edge"] = _on_path(p, hopper_edge)
    fa = _e4m3_codes(g.standard_normal((n, n)).astype(np.float32))
    fb = _e4m3_codes(g.standard_normal((n, n)).astype(np.float32))
    fns["fp8 split"] = _fp8_gemm_fn(fa, fb, False, t)
    fns["fp8 fast"] = _fp8_gemm_fn(fa, fb, True, t)
    with numpy_threads(t):
        res = interleaved(fns, repeat)
    ref = res["sgemm"]

    def ms(x):
        return f"{x[0] * 1e3:.2f} / {x[1] * 1e3:.2f} ms"

    lines = [f"Speed targets, {n}^3, {t} threads, {repeat} interleaved runs of every row and NumPy "
             f"float32 sgemm (min / median; ratios of mins, then of medians). Auto path: {auto}.",
             f"NumPy sgemm in the same series: {ms(ref)}.", "",
             "| workload | fixedpoint path | fixedpoint | ratio | target |", "|---|---|---|---|---|"]

    def row(workload, path, r, target, speed=True):
        q = (ref[0] / r[0], ref[1] / r[1]) if speed else (r[0] / ref[0], r[1] / ref[1])
        kind = "x sgemm's speed" if speed else "x sgemm's time"
        lines.append(f"| {workload} | {path} | {ms(r)} | {q[0]:.2f} / {q[1]:.2f} {kind} | {target} |")

    row("INT8 GEMM, Accumulator(32, 'wrap')", auto, res["wrap"], ">= 1.2x (goal 1.5x)")
    row("INT8 GEMM, Hopper Accumulator(32, 'saturate', block=16), random data (no overflow "
        "possible: exact single-sum kernel)", auto, res["hopper"], ">= 1.2x (goal 1.5x)")
    row("INT8 GEMM, Hopper Accumulator(32, 'saturate', block=16), c at 2^31 - 2^20 (the "
        "block-saturating kernel runs)", auto, res["hopper_edge"], ">= 1.2x (goal 1.5x)")
    row("u8 x s8 GEMM, Accumulator(32, 'wrap', 2, pair_bits=16) (x86 vpmaddubsw model)", auto,
        res["u8s8"], "")
    for p in others:
        row("INT8 GEMM, wrap", p, res[p + " wrap"], "")
        row("INT8 GEMM, Hopper saturate, c at the edge", p, res[p + " hopper_edge"], "")
    row("FP8 GEMM E4M3 x E4M3, Hopper model, split accumulation (fast_accum=False)", "",
        res["fp8 split"], "<= 2.5x", speed=False)
    row("FP8 GEMM E4M3 x E4M3, Hopper model, fast accumulation (fast_accum=True)", "",
        res["fp8 fast"], "<= 2.5x", speed=False)
    lines.append("")
    avx2 = {k: res[k if auto == "avx2" else "avx2 " + k] for k in ("wrap", "hopper_edge")} \
        if (auto == "avx2" or "avx2" in others) else None
    port = {k: res[k if auto == "portable" else "portable " + k] for k in ("wrap", "hopper_edge")} \
        if (auto == "portable" or "portable" in others) else None
    if avx2 and port:
        lines.append(f"Portable C path of this build (compiled with function clones): wrap "
                     f"{port['wrap'][0] / avx2['wrap'][0]:.2f}x, Hopper at the edge "
                     f"{port['hopper_edge'][0] / avx2['hopper_edge'][0]:.2f}x the AVX2 path's time "
                     f"(mins).")
    if nosimd_build and avx2:
        lines.append(_nosimd_ratio(nosimd_build, n, repeat, t, wrap, hopper_edge))
    return "\n".join(lines) + "\n"


def _nosimd_ratio(build, n, repeat, t, wrap, hopper_edge, rounds=3):
    """The FIXEDPOINT_NO_SIMD build (in a subprocess) against the AVX2 path (in
    this process), in alternating rounds; the best time of each."""
    best = {"wrap": [np.inf, np.inf], "hopper_edge": [np.inf, np.inf]}   # [avx2, nosimd]
    env = {k: v for k, v in os.environ.items() if k != PATH_ENV}
    for _ in range(rounds):
        mine = interleaved({"wrap": _on_path("avx2", wrap),
                            "hopper_edge": _on_path("avx2", hopper_edge)}, repeat)
        proc = subprocess.run([sys.executable, "-c", _NOSIMD_SCRIPT, build, str(n), str(repeat),
                               str(t)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode
            return f"FIXEDPOINT_NO_SIMD build at {build}: not importable ({last})"
        ns = json.loads(proc.stdout)
        if any(p in ns["compiled"] for p in ("avx2", "vnni256", "vnni512")):
            return f"{build} is not a FIXEDPOINT_NO_SIMD=1 build (compiled paths {ns['compiled']})"
        for k in best:
            best[k][0] = min(best[k][0], mine[k][0])
            best[k][1] = min(best[k][1], ns[k][0])
    w, h = best["wrap"], best["hopper_edge"]
    return (f"FIXEDPOINT_NO_SIMD=1 build (every x86 intrinsic and clone compiled out; {ns['file']}): "
            f"wrap {w[1] * 1e3:.2f} ms = {w[1] / w[0]:.2f}x, Hopper at the edge {h[1] * 1e3:.2f} ms = "
            f"{h[1] / h[0]:.2f}x the AVX2 path's time ({w[0] * 1e3:.2f} and {h[0] * 1e3:.2f} ms; best "
            f"of {rounds} alternating rounds of {repeat} runs; target <= 3x).")


def bandwidth_probe(n, repeat):
    """What the memory system allows: NumPy streaming 4 bytes in and 1 byte out per
    element (the traffic of to_fp8 and quantize) from 1 and 2 Python threads."""
    import threading
    x = np.random.default_rng(9).standard_normal(n).astype(np.float32)
    y = np.empty(n, np.bool_)

    def run(t):
        th = [threading.Thread(target=np.less, args=(x[i * n // t:(i + 1) * n // t], 0.0),
                               kwargs={"out": y[i * n // t:(i + 1) * n // t]}) for i in range(t)]
        for a in th:
            a.start()
        for a in th:
            a.join()
    return {t: median_time(lambda: run(t), repeat) for t in (1, 2)}


def scaling_table(tab, probe):
    out = ["| workload | implementation | 1 thread | 2 threads | speedup |", "|---|---|---|---|---|"]
    for w in dict.fromkeys(r["workload"] for r in tab.rows):
        for impl in dict.fromkeys(r["impl"] for r in tab.rows if r["workload"] == w):
            if not impl.startswith("fixedpoint"):
                continue
            t = {r["threads"]: r["seconds"] for r in tab.rows if r["workload"] == w and r["impl"] == impl}
            if 1 in t and 2 in t and t[1] and t[2]:
                out.append(f"| {w} | {impl} | {t[1] * 1e3:.2f} ms | {t[2] * 1e3:.2f} ms | {t[1] / t[2]:.2f}x |")
    out.append(f"| (memory-bound probe: NumPy reads float32, writes 1 byte per element) | NumPy, Python threads | "
               f"{probe[1] * 1e3:.2f} ms | {probe[2] * 1e3:.2f} ms | {probe[1] / probe[2]:.2f}x |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", help="also write the Markdown here")
    ap.add_argument("--targets-only", action="store_true",
                    help="only the speed-target ratios (INT8 and FP8 GEMM against sgemm)")
    ap.add_argument("--threads", type=int, default=2, help="threads of the speed-target rows")
    ap.add_argument("--nosimd-build", metavar="DIR",
                    help="a FIXEDPOINT_NO_SIMD=1 build of the package (a directory holding "
                         "fixedpoint/) for the portable/AVX2 ratio, run in a subprocess")
    ap.add_argument("--no-models", action="store_true", help="leave out the MiniLM rows")
    args = ap.parse_args(argv)
    threads = [1, 2]
    big, mat = (1 << 20, 256) if args.quick else (1 << 24, 1024)
    repeat = 3 if args.quick else args.repeat
    targets = speed_targets(mat, max(repeat, 5), args.nosimd_build, args.threads)
    lm = (32, 256, 256) if args.quick else (256, 1024, 1024)
    targets += "\n" + layer_targets(*lm, max(repeat, 5), args.threads)
    if not args.no_models:
        targets += "\n" + minilm_targets(8 if args.quick else 64, args.threads)
    if args.targets_only:
        print(targets)
        if args.out:
            with open(args.out, "w") as f:
                f.write(targets)
        return 0
    tab = Table()
    int8_matmul(tab, mat, repeat, threads)
    elementwise_mul(tab, big, repeat, threads)
    to_fp8(tab, big, repeat, threads)
    from_fp8(tab, big, repeat, threads)
    quantize_int(tab, big, repeat, threads)
    fp8_matmul(tab, mat, max(3, repeat // 2), threads)
    requantize(tab, big, repeat, threads)
    linear(tab, *((32, 256, 256) if args.quick else (256, 1024, 1024)), repeat, threads)
    design_study(tab, 1 if args.quick else 3)
    head = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, NumPy {np.__version__}, fixedpoint {fp.__version__}"
            f" (OpenMP: {fp._int.has_openmp()})",
            "Peers: " + ", ".join(f"{k} {'missing' if v is None else getattr(v, '__version__', 'present')}"
                                  for k, v in PEERS.items()),
            "", "Median of repeated runs; 'vs best peer' divides by the fastest peer of the same workload.", ""]
    probe = bandwidth_probe(big, repeat)
    text = ("\n".join(head) + tab.markdown() + "\n\nThread scaling of fixedpoint's kernels (same run):\n\n"
            + scaling_table(tab, probe) + "\n\n" + targets)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
