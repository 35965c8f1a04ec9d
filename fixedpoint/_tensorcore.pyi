"""Compiled tensor-core accumulation kernels (private): fixedpoint.tensorcore validates."""
import numpy as np

ZERO_EXP: int

def matmul_generic(sa: np.ndarray, xa: np.ndarray, ma: int, emin_a: int, sb: np.ndarray,
                   xb: np.ndarray, mb: int, emin_b: int, out: np.ndarray, params: dict,
                   nthreads: int) -> None: ...
def matmul_fast(a: np.ndarray, b: np.ndarray, Kp: int, lva: np.ndarray, lea: np.ndarray,
                lsa: np.ndarray, lvb: np.ndarray, leb: np.ndarray, lsb: np.ndarray,
                out: np.ndarray, params: dict, nthreads: int) -> int | None: ...
