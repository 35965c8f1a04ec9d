"""Quantization, calibration and requantization."""
import numpy as np

import fixedpoint as fp

from .common import LARGE, THREADS, rng

GRAN = {"tensor": {}, "channel": {"axis": 0}, "group": {"axis": 1, "group_size": 32}}


class Quantize:
    params = ([1 << 24] if LARGE else [1 << 18], ["int8", "int4", "int2", "e4m3"],
              list(GRAN), ["given", "minmax"], THREADS)
    param_names = ["n", "fmt", "granularity", "scale", "threads"]

    def setup(self, n, fmt, gran, scale, threads):
        self.x = rng(8).standard_normal((256, n // 256)).astype(np.float32)
        self.kw = dict(GRAN[gran])
        if scale == "given":
            self.kw["scale"] = fp.quantize(self.x, fmt, **GRAN[gran]).scale

    def time_quantize(self, n, fmt, gran, scale, threads):
        fp.quantize(self.x, fmt, num_threads=threads, **self.kw)

    def peakmem_quantize(self, n, fmt, gran, scale, threads):
        fp.quantize(self.x, fmt, num_threads=threads, **self.kw)


class QuantizePack:
    params = ([1 << 24] if LARGE else [1 << 18], ["int4", "int2"])
    param_names = ["n", "fmt"]

    def setup(self, n, fmt):
        self.x = rng(9).standard_normal(n).astype(np.float32)

    def time_quantize_pack(self, n, fmt):
        fp.quantize(self.x, fmt, scale=0.5).pack()


class Calibration:
    """Histogram calibration per tensor and per channel (vectorised over candidates
    and channels)."""
    params = (["percentile", "mse", "entropy"], ["tensor", "channel"])
    param_names = ["method", "granularity"]

    def setup(self, method, gran):
        self.x = rng(10).standard_normal((64, 1 << 10)).astype(np.float32)
        self.kw = {} if gran == "tensor" else {"axis": 0}

    def time_calibrate(self, method, gran):
        fp.quantize(self.x, "int8", calibration=method, **self.kw)

    def peakmem_calibrate(self, method, gran):
        fp.quantize(self.x, "int8", calibration=method, **self.kw)


class Requantize:
    params = ([1 << 24] if LARGE else [1 << 20], ["double", "single", "ruy", "float", "float64"],
              ["tensor", "channel"], THREADS)
    param_names = ["n", "method", "granularity", "threads"]

    def setup(self, n, method, gran, threads):
        self.acc = rng(11).integers(-2**24, 2**24, (n // 256, 256)).astype(np.int32)
        real = 0.0007 if gran == "tensor" else rng(12).uniform(1e-4, 1e-3, 256)
        m, s = fp.quantize_multiplier(real)
        # the float methods take the real scale, the fixed-point ones (m, shift)
        self.args = (real, 0) if method in ("float", "float64") else (m, s)

    def time_requantize(self, n, method, gran, threads):
        fp.requantize(self.acc, *self.args, out_fmt="int8", method=method, num_threads=threads)

    def peakmem_requantize(self, n, method, gran, threads):
        fp.requantize(self.acc, *self.args, out_fmt="int8", method=method, num_threads=threads)
