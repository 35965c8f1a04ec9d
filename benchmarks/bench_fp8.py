"""FP8 conversion (encode and decode) and the FP8 tensor-core GEMM."""
import numpy as np

import fixedpoint as fp

from .common import LARGE, THREADS, rng


class ToFP8:
    params = ([1 << 24] if LARGE else [1 << 20], ["e5m2", "e4m3", "e4m3fnuz", "e2m1"], [False, True],
              ["nearest_even", "toward_zero", "stochastic"], THREADS)
    param_names = ["n", "fmt", "saturate", "rounding", "threads"]

    def setup(self, n, fmt, saturate, rounding, threads):
        self.x = (rng(5).standard_normal(n) * 100).astype(np.float32)

    def time_to_fp8(self, n, fmt, saturate, rounding, threads):
        fp.to_fp8(self.x, fmt, saturate=saturate, rounding=rounding, seed=1, num_threads=threads)

    def peakmem_to_fp8(self, n, fmt, saturate, rounding, threads):
        fp.to_fp8(self.x, fmt, saturate=saturate, rounding=rounding, seed=1, num_threads=threads)


class FromFP8:
    params = ([1 << 24] if LARGE else [1 << 20], ["e5m2", "e4m3"], THREADS)
    param_names = ["n", "fmt", "threads"]

    def setup(self, n, fmt, threads):
        self.codes = rng(6).integers(0, 256, n).astype(np.uint8)
        self.out = np.empty(n, np.float32)

    def time_from_fp8(self, n, fmt, threads):
        fp.from_fp8(self.codes, fmt, num_threads=threads)

    def time_from_fp8_out(self, n, fmt, threads):
        fp.from_fp8(self.codes, fmt, out=self.out, num_threads=threads)

    def peakmem_from_fp8(self, n, fmt, threads):
        fp.from_fp8(self.codes, fmt, num_threads=threads)


class FP8Matmul:
    params = ([256, 1024] if LARGE else [128, 256], [False, True], THREADS)
    param_names = ["size", "fast_accum", "threads"]

    def setup(self, size, fast_accum, threads):
        g = rng(7)
        self.a = fp.to_fp8(g.standard_normal((size, size)).astype(np.float32), "e4m3", saturate=True)
        self.b = fp.to_fp8(g.standard_normal((size, size)).astype(np.float32), "e4m3", saturate=True)

    def time_fp8_matmul(self, size, fast_accum, threads):
        fp.fp8_matmul(self.a, self.b, fast_accum=fast_accum, num_threads=threads)

    def peakmem_fp8_matmul(self, size, fast_accum, threads):
        fp.fp8_matmul(self.a, self.b, fast_accum=fast_accum, num_threads=threads)
