"""Stimulus and expected-result files for driving RTL testbenches.

:func:`write_vectors` writes ``$readmemh`` hex files for a signed multiplier
and a multiply-accumulate unit, with the expected outputs computed by
``fixedpoint``.  The Verilog of a reference multiplier (``mult8.v``), MAC
(``mac32.v``) and testbench (``tb_mac32.v``) ship with the package; see
:func:`verilog_sources`.
"""
from __future__ import annotations

import os
from importlib import resources

import numpy as np

from ._checks import as_format_array, as_integer_array, check_positive_int
from .formats import IntFormat
from .intops import mul_wide

__all__ = ["write_vectors", "verilog_sources"]


def _hex_lines(values: np.ndarray, bits: int) -> str:
    digits = (bits + 3) // 4
    u = values.astype(np.int64) & ((1 << bits) - 1)
    return "".join(f"{int(v):0{digits}x}\n" for v in u)


def write_vectors(directory, a, b, *, rst=None, bits: int = 8, acc_bits: int = 32):
    """Write MAC stimulus and expected results as ``$readmemh`` hex files.

    Per clock ``i`` the MAC computes ``accum <= rst[i] ? 0 : accum + a[i] * b[i]``
    with a ``acc_bits``-bit two's complement register that wraps.

    Parameters
    ----------
    directory : path
        Created if missing.  Files: ``a.hex``, ``b.hex`` (``bits``-bit two's
        complement), ``rst.hex`` (one bit), ``product.hex`` (``2*bits`` bits,
        the exact product), ``accum.hex`` (``acc_bits`` bits, the register
        after the clock edge).
    a, b : 1-D integer arrays
        Signed ``bits``-bit operands, one pair per clock.
    rst : 1-D array of 0/1, optional
        Synchronous clear per clock (default: none).
    bits : int
        Operand width (2 to 16).
    acc_bits : int
        Accumulator width (8 to 64).

    Returns
    -------
    dict with the file paths and ``n``, the number of vectors.

    Examples
    --------
    >>> import pathlib, tempfile, fixedpoint as fp
    >>> info = fp.rtl.write_vectors(tempfile.mkdtemp(), [42, -128], [38, -128])
    >>> pathlib.Path(info["accum"]).read_text().split()
    ['0000063c', '0000463c']
    """
    fmt = IntFormat(check_positive_int(bits, "bits"))
    acc_bits = check_positive_int(acc_bits, "acc_bits")
    if not 8 <= acc_bits <= 64:
        raise ValueError(f"acc_bits: must be between 8 and 64, got {acc_bits}")
    A = as_format_array(a, "a", fmt)
    B = as_format_array(b, "b", fmt)
    if A.ndim != 1 or A.shape != B.shape:
        raise ValueError(f"a and b: expected two 1-D arrays of one length, got {A.shape} and {B.shape}")
    n = A.shape[0]
    if rst is None:
        R = np.zeros(n, dtype=np.int64)
    else:
        R = as_integer_array(rst, "rst").astype(np.int64)
        if R.shape != A.shape or not np.isin(R, (0, 1)).all():
            raise ValueError("rst: expected a 1-D array of 0/1 as long as a")
    products = np.asarray(mul_wide(A, B, fmt), dtype=np.int64)
    contrib = np.where(R == 1, 0, products).astype(object)
    # Running register, wrapped modulo 2^acc_bits; a reset restarts the sum.
    accum = np.empty(n, dtype=object)
    modulus = 1 << acc_bits
    acc = 0
    for i in range(n):
        acc = 0 if R[i] else (acc + int(contrib[i])) % modulus
        accum[i] = acc
    os.makedirs(directory, exist_ok=True)
    paths = {k: os.path.join(directory, f"{k}.hex") for k in ("a", "b", "rst", "product", "accum")}
    with open(paths["a"], "w") as f:
        f.write(_hex_lines(A, fmt.bits))
    with open(paths["b"], "w") as f:
        f.write(_hex_lines(B, fmt.bits))
    with open(paths["rst"], "w") as f:
        f.write("".join(f"{int(v)}\n" for v in R))
    with open(paths["product"], "w") as f:
        f.write(_hex_lines(products, 2 * fmt.bits))
    digits = (acc_bits + 3) // 4
    with open(paths["accum"], "w") as f:
        f.write("".join(f"{int(v):0{digits}x}\n" for v in accum))
    paths["n"] = n
    return paths


def verilog_sources() -> dict:
    """Paths of the shipped Verilog files: ``mult8``, ``mac32`` and ``tb_mac32``."""
    base = resources.files("fixedpoint") / "data" / "rtl"
    return {name: str(base / f"{name}.v") for name in ("mult8", "mac32", "tb_mac32")}
