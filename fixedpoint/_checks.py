"""Argument checking shared by the public wrappers.

Every public function funnels its arguments through these helpers, so bad
input always raises ``TypeError`` (wrong kind of thing) or ``ValueError``
(right kind, wrong value) with a message naming the argument.
"""
from __future__ import annotations

import os

import numpy as np

_num_threads = None


def set_num_threads(n: int | None) -> None:
    """Set the default number of threads of the compiled kernels.

    ``None`` restores the default: the number of CPUs this process may use.
    Results never depend on the number of threads.

    Examples
    --------
    >>> import fixedpoint
    >>> fixedpoint.set_num_threads(1)
    >>> fixedpoint.get_num_threads()
    1
    >>> fixedpoint.set_num_threads(None)
    """
    global _num_threads
    if n is not None:
        n = check_positive_int(n, "n")
    _num_threads = n


def get_num_threads() -> int:
    """The default number of threads of the compiled kernels: :func:`set_num_threads`'s
    value, else ``OMP_NUM_THREADS`` when it is a positive integer (Dask workers set it
    to 1), else the number of CPUs this process may use."""
    if _num_threads is not None:
        return _num_threads
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(num_threads) -> int:
    if num_threads is None:
        return get_num_threads()
    return check_positive_int(num_threads, "num_threads")


def _check_int_from(v, name: str, lo: int, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected a {what} int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{name}: expected a {what} int, got {v}")
    return int(v)


def check_positive_int(v, name: str) -> int:
    return _check_int_from(v, name, 1, "positive")


def check_nonneg_int(v, name: str) -> int:
    return _check_int_from(v, name, 0, "non-negative")


def check_choice(value, name: str, choices) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected one of {list(choices)}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return value


def as_integer_array(x, name: str) -> np.ndarray:
    """``x`` as a NumPy integer array; floats, bools, objects: TypeError."""
    if x is None:
        raise TypeError(f"{name}: expected an integer array, got None")
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integers, got an array of dtype {arr.dtype}")
    return arr


def check_int_range(arr: np.ndarray, name: str, lo: int, hi: int, what: str) -> None:
    """ValueError unless every element of integer ``arr`` is in [lo, hi]."""
    if arr.size == 0:
        return
    info = np.iinfo(arr.dtype)
    if info.min >= lo and info.max <= hi:
        return
    amin, amax = int(arr.min()), int(arr.max())
    if amin < lo or amax > hi:
        bad = amin if amin < lo else amax
        idx = np.unravel_index(int(np.argmax(arr == bad)), arr.shape) if arr.ndim else ()
        where = f" at index {tuple(int(i) for i in idx)}" if arr.ndim else ""
        raise ValueError(f"{name}: value {bad}{where} is outside {what} range [{lo}, {hi}]")


def as_format_array(x, name: str, fmt) -> np.ndarray:
    """Integer array checked against ``fmt`` and converted to its storage dtype."""
    arr = as_integer_array(x, name)
    check_int_range(arr, name, fmt.min, fmt.max, f"the {fmt.name}")
    return arr.astype(fmt.dtype, copy=False)


def matmul_operands(A: np.ndarray, B: np.ndarray):
    """numpy.matmul's shape rules for two validated operands.

    Returns (A3, B3, batch, M, K, N, finish) where A3/B3 are broadcast to
    ``batch + (M, K)`` / ``batch + (K, N)`` and ``finish(out)`` removes the
    dimensions that 1-D operands added (two 1-D operands give a 0-d array).
    """
    if A.ndim == 0 or B.ndim == 0:
        raise ValueError("a and b: matmul needs at least 1-D operands, got a scalar")
    squeeze_m, squeeze_n = A.ndim == 1, B.ndim == 1
    if squeeze_m:
        A = A[None, :]
    if squeeze_n:
        B = B[:, None]
    if A.shape[-1] != B.shape[-2]:
        raise ValueError(f"a and b: inner dimensions differ: a has K={A.shape[-1]}, "
                         f"b has K={B.shape[-2]}")
    try:
        batch = np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    except ValueError:
        raise ValueError(f"a and b: batch dimensions {A.shape[:-2]} and {B.shape[:-2]} "
                         f"do not broadcast") from None
    M, K, N = A.shape[-2], A.shape[-1], B.shape[-1]
    A = np.broadcast_to(A, batch + (M, K))
    B = np.broadcast_to(B, batch + (K, N))

    def finish(out):
        if out is None:
            return None
        if squeeze_n:
            out = out[..., 0]
        if squeeze_m:
            out = out[..., 0] if squeeze_n else out[..., 0, :]
        return out

    return A, B, batch, M, K, N, finish


def ml_dtypes_name(dtype: np.dtype) -> str | None:
    """The ml_dtypes name of ``dtype`` (``"bfloat16"``, ``"float8_e4m3fn"``, ...), or None."""
    mod = getattr(dtype.type, "__module__", "") or ""
    return dtype.name if mod.startswith("ml_dtypes") else None


def float_source(x, name: str = "x", *, double_rounding: bool = False) -> np.ndarray:
    """``x`` as a C-contiguous, native-order float32 or float64 array holding the
    exact source values: the one converter of float inputs for the kernels.

    float16, bfloat16 and ml_dtypes minifloats widen exactly to float32;
    float32 and float64 keep their precision (float64 rounds to float32 first
    only with ``double_rounding``).  Any order, strides or byte order in; C
    order out, so that a kernel walking memory linearly sees the elements in
    the order of the result (a Fortran-ordered input is copied, never read in
    its memory order); 0-d stays 0-d (``np.ascontiguousarray`` would make it 1-d).
    """
    if x is None:
        raise TypeError(f"{name}: expected a float array, got None")
    arr = np.asarray(x)
    dt = arr.dtype
    ml = ml_dtypes_name(dt)
    if ml == "bfloat16":
        bits = np.asarray(arr, order="C").view(np.uint16).astype(np.uint32) << np.uint32(16)
        return bits.view(np.float32)
    if ml is not None and ml.startswith(("float8", "float6", "float4")):
        return np.asarray(arr, dtype=np.float32, order="C")           # exact widening
    if dt.kind != "f":
        raise TypeError(f"{name}: expected float16, float32, float64 or bfloat16 values, "
                        f"got an array of dtype {dt}")
    if dt.itemsize in (2, 4):
        return np.asarray(arr, dtype=np.float32, order="C")           # float16: exact
    if dt.itemsize == 8:
        a64 = np.asarray(arr, dtype=np.float64, order="C")
        if not double_rounding:
            return a64
        with np.errstate(over="ignore"):         # overflow to Inf is the intended result
            return a64.astype(np.float32)
    raise TypeError(f"{name}: {dt} is not supported (one rounding from it cannot be "
                    f"guaranteed); convert to float64 first")


def check_out(out, shape, dtype: np.dtype) -> np.ndarray:
    """A new output array, or the caller's ``out`` after checking it fits."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a numpy array, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out: expected dtype {dtype}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"out: expected shape {tuple(shape)}, got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out: must be C-contiguous and writeable")
    return out


def seed_value(seed) -> int:
    """The 64-bit seed of stochastic rounding (a fresh one for None)."""
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int or None, got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed: expected 0 <= seed < 2**64, got {seed}")
    return int(seed)


def check_axis(axis, ndim: int, name: str = "axis", *, optional: bool = True):
    """``axis`` as a non-negative int checked against ``ndim`` (None passes
    through when ``optional``)."""
    if axis is None and optional:
        return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name}: expected an int{' or None' if optional else ''}, got "
                        f"{type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: {axis} is out of range for a {ndim}-d tensor")
    return int(axis) % ndim


def expand_param(param, shape, axis, group_size):
    """Broadcast a scale or zero-point array of the QTensor convention to ``shape``."""
    p = np.asarray(param)
    if p.ndim == 0 or axis is None:
        return p
    if group_size is None:
        view = [1] * len(shape)
        view[axis] = shape[axis]
        return p.reshape(view)
    return np.repeat(p, group_size, axis=axis)


def positive_scales(s, name: str, length: int) -> np.ndarray:
    """A float32 scalar or vector of ``length`` finite, positive scales."""
    if s is None or isinstance(s, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a positive float or an array of them")
    arr = np.asarray(s)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a positive float or an array of them, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != length):
        raise ValueError(f"{name}: expected a scalar or a vector of length {length}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        bad = arr[~(np.isfinite(arr) & (arr > 0))].ravel()[0]
        raise ValueError(f"{name}: scales must be finite and positive, got {bad}")
    return arr


def parse_toml(text: str, source: str) -> dict:
    """TOML text as a dict; malformed text is a ValueError naming ``source``
    (tomllib, or tomli on Python 3.10)."""
    import sys
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{source}: not valid TOML: {e}") from None
