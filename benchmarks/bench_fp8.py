"""FP8 conversion (encode and decode) and the FP8 tensor-core GEMM."""
import numpy as np

import fixedpoint as fp

from .common import LARGE, THREADS, rng


class ToFP8:
    params = ([1 << 24] if LARGE else [1 << 20], ["e5m2", "e4m3", "e4m3fnuz", "e2m1"], [False, True],
              ["nearest_even", "toward_zero", "stochastic"], THREADS)
    param_names = ["n", "fmt", "saturate", "rounding", "threads"]

    def setup(self, n, fmt, saturate, rounding, threads):
        if not saturate and fmt == "e2m1":
            raise NotImplementedError("E2M1 has no Inf or NaN: only overflow='saturate'")
        self.x = (rng(5).standard_normal(n) * 100).astype(np.float32)

    def time_to_fp8(self, n, fmt, saturate, rounding, threads):
        fp.to_fp8(self.x, fmt, overflow="saturate" if saturate else "nonfinite", rounding=rounding, seed=1, num_threads=threads)

    def peakmem_to_fp8(self, n, fmt, saturate, rounding, threads):
        fp.to_fp8(self.x, fmt, overflow="saturate" if saturate else "nonfinite", rounding=rounding, seed=1, num_threads=threads)


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


_ACCS = {
    "hopper": fp.TensorCoreAccumulator.hopper_fp8(),
    "hopper_fast": fp.TensorCoreAccumulator.hopper_fp8(fast_accum=True),
    "exact": fp.TensorCoreAccumulator.exact(),
}


def _fp8_operands(size, seed=7):
    g = rng(seed)
    a = fp.to_fp8(g.standard_normal((size, size)).astype(np.float32), "e4m3")
    b = fp.to_fp8(g.standard_normal((size, size)).astype(np.float32), "e4m3")
    return a, b


class FP8Matmul:
    """E4M3 x E4M3 GEMM through the tensor-core models (the Hopper ones run on
    the SIMD kernels, the exact sum on the general one)."""
    params = ([256, 1024] if LARGE else [128, 256], list(_ACCS), THREADS)
    param_names = ["size", "acc", "threads"]

    def setup(self, size, acc, threads):
        self.a, self.b = _fp8_operands(size)

    def time_fp8_matmul(self, size, acc, threads):
        fp.fp8_matmul(self.a, self.b, acc=_ACCS[acc], num_threads=threads)

    def peakmem_fp8_matmul(self, size, acc, threads):
        fp.fp8_matmul(self.a, self.b, acc=_ACCS[acc], num_threads=threads)


class MMASyncFP8:
    """The warp-level mma.sync model (general kernel) with an input C."""
    params = ([64, 256], THREADS)
    param_names = ["size", "threads"]

    def setup(self, size, threads):
        self.a, self.b = _fp8_operands(size, 8)
        self.c = rng(9).standard_normal((size, size)).astype(np.float32)
        self.acc = fp.TensorCoreAccumulator.hopper_mma_sync_fp8()

    def time_mma_sync(self, size, threads):
        fp.fp8_matmul(self.a, self.b, c=self.c, acc=self.acc, num_threads=threads)


class FP8MatmulVsSgemm:
    """Issue 13's target as a tracked ratio: Hopper-exact FP8 GEMM time over
    NumPy's float32 sgemm time on the decoded values, both with the same
    threads, measured alternately in one process (min of the repetitions)."""
    params = ([1024], ["hopper", "hopper_fast"], [2])
    param_names = ["size", "acc", "threads"]
    unit = "x sgemm time"
    timeout = 300

    def setup(self, size, acc, threads):
        try:
            import threadpoolctl  # noqa: F401  (sets NumPy's BLAS threads)
        except ImportError:
            raise NotImplementedError("needs threadpoolctl") from None   # asv: skip
        self.a, self.b = _fp8_operands(size)
        self.af, self.bf = fp.from_fp8(self.a), fp.from_fp8(self.b)

    def track_ratio(self, size, acc, threads):
        import time
        from threadpoolctl import threadpool_limits
        best = {"fp8": float("inf"), "sgemm": float("inf")}
        with threadpool_limits(threads):
            for _ in range(5):
                for name, f in (("sgemm", lambda: self.af @ self.bf),
                                ("fp8", lambda: fp.fp8_matmul(self.a, self.b, acc=_ACCS[acc],
                                                              num_threads=threads))):
                    t0 = time.perf_counter()
                    f()
                    best[name] = min(best[name], time.perf_counter() - t0)
        return best["fp8"] / best["sgemm"]
