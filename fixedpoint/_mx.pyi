"""Compiled block-scaled tensor-core kernels (private): fixedpoint.blockscaled validates."""
import numpy as np

def mma_f8(fa: np.ndarray, ea: np.ndarray, fb: np.ndarray, eb: np.ndarray,
           sa: np.ndarray | None, sb: np.ndarray | None, san: np.ndarray | None,
           sbn: np.ndarray | None, c: np.ndarray | None, out: np.ndarray,
           nthreads: int) -> None: ...
def mma_f4(a: np.ndarray, b: np.ndarray, ma: np.ndarray, xa: np.ndarray, mb: np.ndarray,
           xb: np.ndarray, nan_a: np.ndarray, nan_b: np.ndarray, c: np.ndarray | None,
           out: np.ndarray, nthreads: int) -> None: ...
