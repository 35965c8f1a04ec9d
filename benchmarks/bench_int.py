"""Integer kernels: elementwise mul/add and matmul through accumulators."""
import fixedpoint as fp

from .common import LARGE, THREADS, int8_matrix


class ElementwiseMul:
    params = ([1 << 20, 1 << 24] if LARGE else [1 << 16, 1 << 20], ["saturate", "wrap"], THREADS)
    param_names = ["n", "overflow", "threads"]

    def setup(self, n, overflow, threads):
        self.a = int8_matrix(n, 1)
        self.b = int8_matrix(n, 2)

    def time_mul(self, n, overflow, threads):
        fp.mul(self.a, self.b, "int8", overflow, num_threads=threads)

    def time_add(self, n, overflow, threads):
        fp.add(self.a, self.b, "int8", overflow, num_threads=threads)

    def peakmem_mul(self, n, overflow, threads):
        fp.mul(self.a, self.b, "int8", overflow, num_threads=threads)


ACCS = {
    "wrap32": fp.Accumulator(32, "wrap"),
    "sat32_b32": fp.Accumulator(32, "saturate", 32),
    "sat24_b32": fp.Accumulator(24, "saturate", 32),
    "sat16_b1": fp.Accumulator(16, "saturate", 1),
}


class IntMatmul:
    params = ([256, 1024] if LARGE else [128, 256], list(ACCS), THREADS)
    param_names = ["size", "acc", "threads"]

    def setup(self, size, acc, threads):
        self.a = int8_matrix((size, size), 3)
        self.b = int8_matrix((size, size), 4)

    def time_matmul(self, size, acc, threads):
        fp.matmul(self.a, self.b, "int8", ACCS[acc], num_threads=threads)

    def peakmem_matmul(self, size, acc, threads):
        fp.matmul(self.a, self.b, "int8", ACCS[acc], num_threads=threads)
