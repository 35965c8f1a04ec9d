"""Compiled tensor-core accumulation kernels (private): fixedpoint.tensorcore validates."""
import numpy as np

ZERO_EXP: int
LIMBS: int
PATHS: dict[str, int]

def matmul_generic(a: np.ndarray, b: np.ndarray, Kp: int, kmap: np.ndarray | None, ta: dict,
                   tb: dict, c0: np.ndarray | None, out: np.ndarray, params: dict,
                   nthreads: int) -> int: ...
def matmul_fast(a: np.ndarray, b: np.ndarray, Kp: int, kmap: np.ndarray | None, ta: dict,
                tb: dict, c0: np.ndarray | None, out: np.ndarray, params: dict, path: str,
                nthreads: int) -> int | None: ...
