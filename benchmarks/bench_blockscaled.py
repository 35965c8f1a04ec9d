"""Block-scaled formats: MX and NVFP4 quantization and the Blackwell block-scaled GEMM
(the Hopper FP8 model on the same sizes is the reference in bench_fp8)."""
import numpy as np

from fixedpoint import blockscaled as bs

from .common import LARGE, THREADS, rng

_SIZES = [(2000, 384, 1536)] if LARGE else [(256, 384, 256)]


class MXQuantize:
    params = ([1 << 22] if LARGE else [1 << 18], ["e4m3", "e2m1", "int8"], ["floor", "rceil"])
    param_names = ["n", "elem", "scale_rule"]

    def setup(self, n, elem, scale_rule):
        self.x = rng(11).standard_normal((n // 1024, 1024)).astype(np.float32)

    def time_mx_quantize(self, n, elem, scale_rule):
        bs.mx_quantize(self.x, elem, scale_rule=scale_rule)

    def peakmem_mx_quantize(self, n, elem, scale_rule):
        bs.mx_quantize(self.x, elem, scale_rule=scale_rule)


class NVFP4Quantize:
    params = ([1 << 22] if LARGE else [1 << 18], sorted(bs.NVFP4_ARITHMETIC))
    param_names = ["n", "arithmetic"]

    def setup(self, n, arithmetic):
        self.x = rng(12).standard_normal((n // 1024, 1024)).astype(np.float32)

    def time_nvfp4_quantize(self, n, arithmetic):
        bs.nvfp4_quantize(self.x, arithmetic=arithmetic)


class BlockscaledMatmul:
    params = (_SIZES, ["mxf8f6f4", "mxf4", "mxf4nvf4"], THREADS)
    param_names = ["mkn", "kind", "threads"]

    def setup(self, mkn, kind, threads):
        m, k, n = mkn
        g = rng(13)
        x = g.standard_normal((m, k)).astype(np.float32)
        w = g.standard_normal((k, n)).astype(np.float32)
        if kind == "mxf4nvf4":
            self.a, self.b = bs.nvfp4_quantize(x), bs.nvfp4_quantize(w, axis=0)
        else:
            elem = "e4m3" if kind == "mxf8f6f4" else "e2m1"
            self.a, self.b = bs.mx_quantize(x, elem), bs.mx_quantize(w, elem, axis=0)

    def time_blockscaled_matmul(self, mkn, kind, threads):
        bs.blockscaled_matmul(self.a, self.b, kind=kind, num_threads=threads)

    def peakmem_blockscaled_matmul(self, mkn, kind, threads):
        bs.blockscaled_matmul(self.a, self.b, kind=kind, num_threads=threads)
