"""Compiled integer kernels (private): the callers in intops/accumulate validate."""
import numpy as np

GEMM_PATHS: dict[str, int]
GEMM_COMPILED: tuple[str, ...]

def binop(op: str, a: np.ndarray, b: np.ndarray, out: np.ndarray, saturate: bool,
          lo: int, hi: int, bits: int, nthreads: int) -> None: ...
def matmul_generic(a: np.ndarray, b: np.ndarray, c0: np.ndarray | None, out: np.ndarray,
                   counts: np.ndarray | None, block: int, bits: int, saturate: bool,
                   pair_mode: bool, plo: int, phi: int, nthreads: int) -> None: ...
def gemm_available(path: int) -> bool: ...
def gemm_i16(a: np.ndarray, b: np.ndarray, c0: np.ndarray | None, out: np.ndarray,
             counts: np.ndarray | None, path: int, merge: bool, saturate: bool, bits: int,
             pair_mode: bool, block: int, plo: int, phi: int, maxblk: int,
             nthreads: int) -> None: ...
def has_openmp() -> bool: ...
