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
    params = (["percentile", "mse", "entropy"],)
    param_names = ["method"]

    def setup(self, method):
        self.x = rng(10).standard_normal(1 << 16).astype(np.float32)

    def time_calibrate(self, method):
        fp.quantize(self.x, "int8", calibration=method)

    def peakmem_calibrate(self, method):
        fp.quantize(self.x, "int8", calibration=method)


class Requantize:
    params = ([1 << 24] if LARGE else [1 << 20], ["double", "single", "float"], ["tensor", "channel"],
              THREADS)
    param_names = ["n", "rounding", "granularity", "threads"]

    def setup(self, n, rounding, gran, threads):
        self.acc = rng(11).integers(-2**24, 2**24, (n // 256, 256)).astype(np.int32)
        real = 0.0007 if gran == "tensor" else rng(12).uniform(1e-4, 1e-3, 256)
        self.m, self.s = fp.quantize_multiplier(real)
        self.real = real

    def time_requantize(self, n, rounding, gran, threads):
        if rounding == "float":       # NumPy float32 arithmetic: no threads
            fp.requantize(self.acc, self.real, rounding="float")
        else:
            fp.requantize(self.acc, self.m, self.s, rounding=rounding, num_threads=threads)

    def peakmem_requantize(self, n, rounding, gran, threads):
        if rounding == "float":
            fp.requantize(self.acc, self.real, rounding="float")
        else:
            fp.requantize(self.acc, self.m, self.s, rounding=rounding, num_threads=threads)
