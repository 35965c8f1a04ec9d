"""Layers on every built-in profile, and the whole design study."""
import numpy as np

import fixedpoint as fp
from fixedpoint import layers, profiles, study

from .common import LARGE, THREADS, rng


class LinearLayer:
    """A fully connected layer of batch x K x N per profile (weights quantized once,
    in setup), and the layer built from float weights."""
    params = ([(256, 1024, 1024)] if LARGE else [(32, 256, 256)], list(profiles.BUILTIN_NAMES), THREADS)
    param_names = ["batch_k_n", "profile", "threads"]

    def setup(self, shape, name, threads):
        m, k, n = shape
        self.x = rng(1).standard_normal((m, k)).astype(np.float32)
        self.w = (rng(2).standard_normal((k, n)) * 0.05).astype(np.float32)
        self.b = rng(3).standard_normal(n).astype(np.float32)
        self.layer = layers.Linear(name, self.w, self.b)
        self.name = name
        fp.set_num_threads(threads)

    def teardown(self, shape, name, threads):
        fp.set_num_threads(None)

    def time_run(self, shape, name, threads):
        self.layer.run(self.x)

    def time_build_and_run(self, shape, name, threads):
        layers.Linear(self.name, self.w, self.b).run(self.x)

    def peakmem_run(self, shape, name, threads):
        self.layer.run(self.x)


class ConvLayer:
    """A 3x3 convolution (and a depthwise one) on 16 x 32 x 32 x 32 per profile."""
    params = (["ane-int8", "h100-fp8", "edge-int4", "fp32"], [1, 32])
    param_names = ["profile", "groups"]

    def setup(self, name, groups):
        self.x = rng(4).standard_normal((16 if LARGE else 4, 32, 32, 32)).astype(np.float32)
        w = rng(5).standard_normal((32, 32 // groups, 3, 3)).astype(np.float32) * 0.1
        self.layer = layers.Conv2d(name, w, padding=1, groups=groups)

    def time_run(self, name, groups):
        self.layer.run(self.x)


class Study:
    """The end-to-end design study on the shipped digits model (target: under 60 s)."""
    timeout = 120
    params = (["table", "report"],)
    param_names = ["output"]

    def setup(self, output):
        study.mlp_workload()          # warm the file cache

    def time_study(self, output):
        res = study.run_study(None, study.mlp_workload())
        if output == "report":
            import tempfile
            with tempfile.TemporaryDirectory() as d:
                study.write_report(res, d)

    def peakmem_study(self, output):
        study.run_study(None, study.mlp_workload())
