"""Integer kernels: elementwise mul/add and matmul through accumulators.

The GEMM suites cover the issue-13 workloads: INT8 wrap and the Hopper
saturating blocks (random data, where no overflow is possible, and c at the
int32 edge, where the block-saturating kernel runs), the x86 u8 x s8 pair
model, each instruction path forced in turn, and NumPy's float32 sgemm on the
same shapes as the reference the speed targets are stated against.
"""
import os

import numpy as np

import fixedpoint as fp
from fixedpoint import _int
from fixedpoint.accumulate import PATH_ENV

from .common import LARGE, THREADS, int8_matrix


class ElementwiseMul:
    params = ([1 << 20, 1 << 24] if LARGE else [1 << 16, 1 << 20], ["saturate", "wrap"], THREADS)
    param_names = ["n", "overflow", "threads"]

    def setup(self, n, overflow, threads):
        self.a = int8_matrix(n, 1)
        self.b = int8_matrix(n, 2)

    def time_mul(self, n, overflow, threads):
        fp.mul(self.a, self.b, "int8", overflow=overflow, num_threads=threads)

    def time_add(self, n, overflow, threads):
        fp.add(self.a, self.b, "int8", overflow=overflow, num_threads=threads)

    def peakmem_mul(self, n, overflow, threads):
        fp.mul(self.a, self.b, "int8", overflow=overflow, num_threads=threads)


ACCS = {
    "wrap32": fp.Accumulator(32, "wrap"),
    "hopper_b16": fp.Accumulator(32, "saturate", 16),
    "sat32_b32": fp.Accumulator(32, "saturate", 32),
    "sat24_b32": fp.Accumulator(24, "saturate", 32),
    "sat16_b1": fp.Accumulator(16, "saturate", 1),
    "u8s8_pairs": fp.Accumulator(32, "wrap", 2, pair_bits=16),
}
SIZES = [256, 1024] if LARGE else [128, 256]


def _operands(size, acc):
    a = int8_matrix((size, size), 3)
    b = int8_matrix((size, size), 4)
    if acc == "u8s8_pairs":
        return (a.astype(np.int16) + 128).astype(np.uint8), b, ("uint8", "int8")
    return a, b, "int8"


def _c_edge(size):
    """Registers 2^20 from the int32 limits: overflow is possible, so the
    block-saturating kernel runs (no exact shortcut)."""
    row = np.where(np.arange(size) % 2, 2**31 - 2**20, -(2**31) + 2**20)
    return np.repeat(row[None, :], size, 0).astype(np.int32)


class IntMatmul:
    params = (SIZES, list(ACCS), THREADS)
    param_names = ["size", "acc", "threads"]

    def setup(self, size, acc, threads):
        self.a, self.b, self.fmt = _operands(size, acc)

    def time_matmul(self, size, acc, threads):
        fp.matmul(self.a, self.b, self.fmt, acc=ACCS[acc], num_threads=threads)

    def peakmem_matmul(self, size, acc, threads):
        fp.matmul(self.a, self.b, self.fmt, acc=ACCS[acc], num_threads=threads)


class IntMatmulEdge:
    """Saturating accumulators with the registers near their limits."""
    params = (SIZES, ["hopper_b16", "sat32_b32", "sat16_b1"], THREADS)
    param_names = ["size", "acc", "threads"]

    def setup(self, size, acc, threads):
        self.a, self.b, self.fmt = _operands(size, acc)
        self.c = _c_edge(size)
        if ACCS[acc].bits < 32:
            self.c = np.clip(self.c, ACCS[acc].min, ACCS[acc].max)

    def time_matmul(self, size, acc, threads):
        fp.matmul(self.a, self.b, self.fmt, acc=ACCS[acc], c=self.c, num_threads=threads)

    def time_matmul_counts(self, size, acc, threads):
        fp.matmul(self.a, self.b, self.fmt, acc=ACCS[acc], c=self.c, return_overflow=True,
                  num_threads=threads)

    def peakmem_matmul_counts(self, size, acc, threads):
        fp.matmul(self.a, self.b, self.fmt, acc=ACCS[acc], c=self.c, return_overflow=True,
                  num_threads=threads)


PATHS = [p for p in ("vnni512", "vnni256", "avx2", "portable")
         if _int.gemm_available(_int.GEMM_PATHS[p])]


class GemmPaths:
    """Each compiled instruction path this CPU runs, forced (FIXEDPOINT_GEMM_PATH)."""
    params = (PATHS, ["wrap32", "hopper_b16_edge"], [1024 if LARGE else 256])
    param_names = ["path", "workload", "size"]

    def setup(self, path, workload, size):
        self.old = os.environ.get(PATH_ENV)
        os.environ[PATH_ENV] = path
        self.a, self.b, _ = _operands(size, "wrap32")
        self.c = _c_edge(size) if workload.endswith("_edge") else None
        self.acc = ACCS[workload.replace("_edge", "")]

    def teardown(self, path, workload, size):
        if self.old is None:
            os.environ.pop(PATH_ENV, None)
        else:
            os.environ[PATH_ENV] = self.old

    def time_matmul(self, path, workload, size):
        fp.matmul(self.a, self.b, "int8", acc=self.acc, c=self.c, num_threads=2)


class Sgemm:
    """NumPy float32 matmul of the same operands: the reference of the INT8 targets."""
    params = (SIZES, THREADS)
    param_names = ["size", "threads"]

    def setup(self, size, threads):
        self.a = int8_matrix((size, size), 3).astype(np.float32)
        self.b = int8_matrix((size, size), 4).astype(np.float32)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            raise NotImplementedError("threadpoolctl is needed to limit NumPy's threads")
        self.limit = threadpool_limits(threads)

    def teardown(self, size, threads):
        self.limit.restore_original_limits()

    def time_sgemm(self, size, threads):
        self.a @ self.b
