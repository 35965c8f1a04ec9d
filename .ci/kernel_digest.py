"""Print a SHA-256 of every compiled kernel's output on fixed inputs.

Run against two builds (OpenMP on and off: .ci/openmp) the lines must be
identical; within one run, 1 and 2 threads must give the same digest (checked
here).  Sizes exceed the kernels' 65536-element chunks, so OpenMP really splits.
"""
import hashlib

import numpy as np

import fixedpoint as fp
from fixedpoint import layers, onnx_ops

rng = np.random.default_rng(2026)
x = (rng.standard_normal(1 << 20) * 10.0 ** rng.integers(-6, 6, 1 << 20)).astype(np.float32)
a8 = rng.integers(-128, 128, 1 << 20).astype(np.int8)
b8 = rng.integers(-128, 128, 1 << 20).astype(np.int8)
A, B = rng.integers(-128, 128, (300, 700)).astype(np.int8), rng.integers(-128, 128, (700, 300)).astype(np.int8)
F8A = fp.to_fp8(rng.standard_normal((200, 256)).astype(np.float32), "e4m3")
F8B = fp.to_fp8(rng.standard_normal((256, 200)).astype(np.float32), "e4m3")
X2 = x[:256 * 1024].reshape(256, 1024)
W256 = np.clip(x[-256 * 64:].reshape(256, 64), -50, 50) * np.float32(0.01)

with np.errstate(over="ignore"):
    X_HUGE = x * np.float32(1e30)            # overflows to Inf too


def _round(v, ftype, t, overflow="nonfinite"):
    fp.set_num_threads(t)
    try:
        return layers.round_to_float_type(v, ftype, overflow)
    finally:
        fp.set_num_threads(None)


def _erf(v, t):
    fp.set_num_threads(t)
    try:
        return onnx_ops.erf(v)
    finally:
        fp.set_num_threads(None)


KERNELS = {
    "mul_sat": lambda t: fp.mul(a8, b8, "int8", num_threads=t),
    "mul_wrap": lambda t: fp.mul(a8, b8, "int8", overflow="wrap", num_threads=t),
    "add_sat": lambda t: fp.add(a8, b8, "int8", num_threads=t),
    "matmul_wrap": lambda t: fp.matmul(A, B, "int8", acc=fp.Accumulator(32, "wrap"), num_threads=t),
    "matmul_sat32": lambda t: fp.matmul(A, B, "int8", acc=fp.Accumulator(32, "saturate", 32),
                                        c=np.full((300, 300), 2**31 - 2**22), num_threads=t),
    "matmul_u8s8_pairs": lambda t: fp.matmul(A.view(np.uint8), B, ("uint8", "int8"),
                                             acc=fp.Accumulator(32, "wrap", 2, pair_bits=16), num_threads=t),
    "matmul_acc16": lambda t: fp.matmul(A, B, "int8", acc=fp.Accumulator(16, "wrap", 3), return_overflow=True,
                                        num_threads=t),
    "round_f16": lambda t: _round(x, "float16", t),
    "round_bf16_sat": lambda t: _round(X_HUGE, "bfloat16", t, "saturate"),
    "erf": lambda t: _erf(x / np.float32(1e3), t),
    "to_e5m2": lambda t: fp.to_fp8(x, "e5m2", num_threads=t),
    "to_e4m3_sat": lambda t: fp.to_fp8(x, "e4m3", num_threads=t),
    "to_e4m3_sr": lambda t: fp.to_fp8(x, "e4m3", rounding="stochastic", seed=5, num_threads=t),
    "to_e2m1_rtz": lambda t: fp.to_fp8(x, "e2m1", rounding="toward_zero", num_threads=t),
    "from_e4m3": lambda t: fp.from_fp8(a8.view(np.uint8) & np.uint8(0x7E), "e4m3", num_threads=t),
    "fp8_matmul": lambda t: fp.fp8_matmul(F8A, F8B, num_threads=t),
    "fp8_matmul_fast": lambda t: fp.fp8_matmul(F8A, F8B, acc=fp.TensorCoreAccumulator.hopper_fp8(True), num_threads=t),
    "fp8_matmul_exact": lambda t: fp.fp8_matmul(F8A, F8B, acc=fp.TensorCoreAccumulator.exact(),
                                                num_threads=t),
    "quantize_int8": lambda t: fp.quantize(x, "int8", scale=0.01, num_threads=t).codes,
    "quantize_int8_minmax": lambda t: fp.quantize(x, "int8", num_threads=t).codes,
    "quantize_int4_group": lambda t: fp.quantize(X2, "int4", axis=1, group_size=32, num_threads=t).pack(),
    "quantize_uint8_channel": lambda t: fp.quantize(X2, "uint8", axis=0, symmetric=False,
                                                    num_threads=t).codes,
    "quantize_e4m3": lambda t: fp.quantize(x, "e4m3", num_threads=t).codes,
}
from fixedpoint import blockscaled as bs  # noqa: E402
MXA = bs.mx_quantize(X2[:64, :256], "e4m3", axis=1, scale_rule="rceil")
MXB = bs.mx_quantize(W256, "e4m3", axis=0)
F4A, F4B = bs.mx_quantize(X2[:64, :256], "e2m1", axis=1), bs.mx_quantize(W256, "e2m1", axis=0)
NVA, NVB = bs.nvfp4_quantize(X2[:64, :256], axis=1), bs.nvfp4_quantize(W256, axis=0)
KERNELS["mx_quantize"] = lambda t: bs.mx_quantize(X2, "e2m1", axis=1).codes
KERNELS["mxf8f6f4"] = lambda t: bs.blockscaled_matmul(MXA, MXB, kind="mxf8f6f4", num_threads=t)
KERNELS["mxf4"] = lambda t: bs.blockscaled_matmul(F4A, F4B, kind="mxf4", num_threads=t)
KERNELS["mxf4nvf4"] = lambda t: bs.blockscaled_matmul(NVA, NVB, kind="mxf4nvf4", num_threads=t)
for name in fp.profiles.BUILTIN_NAMES:
    KERNELS[f"linear_{name}"] = (lambda n: lambda t: _with_threads(t, lambda: fp.layers.Linear(
        n, W256, x[:64]).run(X2[:32, :256])))(name)
    KERNELS[f"conv_{name}"] = (lambda n: lambda t: _with_threads(t, lambda: fp.layers.Conv2d(
        n, W256[:144].T.reshape(64, 16, 3, 3)[:8], groups=2, padding=1, stride=2).run(
        X2[:2, :1024].reshape(2, 32, 4, 8))))(name)


def _with_threads(t, fn):
    fp.set_num_threads(t)
    try:
        return fn()
    finally:
        fp.set_num_threads(None)


def digest(v):
    h = hashlib.sha256()
    for arr in (v if isinstance(v, tuple) else (v,)):
        arr = np.ascontiguousarray(arr)
        h.update(str(arr.dtype).encode() + str(arr.shape).encode() + arr.tobytes())
    return h.hexdigest()[:32]


for name, fn in KERNELS.items():
    d1, d2 = digest(fn(1)), digest(fn(2))
    if d1 != d2:
        raise SystemExit(f"{name}: 1 and 2 threads differ ({d1} != {d2})")
    print(f"{name:28s} {d1}")
