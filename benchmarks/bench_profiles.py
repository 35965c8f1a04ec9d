"""Accelerator profiles: one layer through profile.linear, and the whole design study."""
import numpy as np

import fixedpoint as fp
from fixedpoint import profiles, study

from .common import LARGE, THREADS, rng


class ProfileLinear:
    """A layer of batch x K x N through each built-in profile (weights quantized once)."""
    params = ([(256, 1024, 1024)] if LARGE else [(32, 256, 256)], list(profiles.BUILTIN_NAMES), THREADS)
    param_names = ["batch_k_n", "profile", "threads"]

    def setup(self, shape, name, threads):
        m, k, n = shape
        self.p = profiles.get(name)
        self.x = rng(1).standard_normal((m, k)).astype(np.float32)
        self.w = (rng(2).standard_normal((k, n)) * 0.05).astype(np.float32)
        self.b = rng(3).standard_normal(n).astype(np.float32)
        self.wq = self.p.quantize_weights(self.w)
        fp.set_num_threads(threads)

    def teardown(self, shape, name, threads):
        fp.set_num_threads(None)

    def time_linear(self, shape, name, threads):
        self.p.linear(self.x, self.w, self.b, weights=self.wq)

    def time_linear_with_weight_quantization(self, shape, name, threads):
        self.p.linear(self.x, self.w, self.b)

    def peakmem_linear(self, shape, name, threads):
        self.p.linear(self.x, self.w, self.b, weights=self.wq)


class Study:
    """The end-to-end design study on the shipped digits model (target: under 60 s)."""
    timeout = 120
    params = (["table", "report"],)
    param_names = ["output"]

    def setup(self, output):
        study.load_default()          # warm the file cache

    def time_study(self, output):
        res = study.run_study()
        if output == "report":
            import tempfile
            with tempfile.TemporaryDirectory() as d:
                study.write_report(res, d)

    def peakmem_study(self, output):
        study.run_study()
