"""Dask arrays in the kernels: lazy, block by block, with the in-memory bits.

The public kernels (:func:`~fixedpoint.to_fp8`, :func:`~fixedpoint.from_fp8`,
:func:`~fixedpoint.quantize`, :func:`~fixedpoint.requantize`,
:func:`~fixedpoint.mul`, :func:`~fixedpoint.add`, :func:`~fixedpoint.matmul`,
:func:`~fixedpoint.fp8_matmul`) accept ``dask.array`` inputs and return dask
arrays built with ``map_blocks``/``blockwise``: nothing runs until the caller
computes.  Every result is bit-identical to the in-memory call on the whole
array, whatever the chunking, because each block runs the in-memory kernel
itself and the module only chooses what a block sees:

* elementwise functions (conversions, ``requantize``, ``mul``, ``add``) run on
  each block with the matching slice of per-channel parameters;
* **stochastic rounding** draws its random numbers by global element index
  (C order of the whole array), so a block computes the indices it holds.  The
  FP8 encoder keys its counter-based stream by ``seed XOR index`` (see
  ``fp_rand32`` in ``src/fp_common.h``): a run of elements starting at global
  index ``g`` (``g`` a multiple of a power of two at least as long as the run)
  is encoded with ``seed ^ g``, so every run is split at such boundaries.
  Integer formats draw from NumPy's Philox in C order: a block advances the
  generator to its first index;
* **scales chosen from the data** (``quantize`` without ``scale``,
  ``calibration="minmax"``): the ranges are dask reductions, computed when
  ``quantize`` is called (one pass over the data); the codes stay lazy.
  Percentile, MSE and entropy calibration need the whole tensor: feed a
  :class:`~fixedpoint.Calibrator` block by block and pass it instead;
* **matrix products** split over M and N freely; over K only in the
  accumulator's order: K chunks are folded one after the other through the
  accumulator's initial value (``matmul``'s ``c=``), which is exact when every
  chunk boundary is a multiple of the accumulator's ``block`` (any boundary for
  ``"wrap"`` without overflow counts, whose result is the exact sum modulo
  ``2**bits``); ``fp8_matmul`` folds K chunks at multiples of
  ``promote_every`` (each promotion slice is one call, added into the float32
  accumulator in K order as the tensor core does; exact while no float32 sum
  can overflow, which holds for every format up to 8 bits), and takes the
  whole K per block for accumulators that never promote (``fast_accum``,
  ``exact()``).  K chunks that do not meet the rule are merged (rechunked).

How the format travels
    A dask array cannot carry an ndarray-subclass attribute through every
    operation, so :func:`to_fp8` on a dask array returns a dask array whose
    blocks are :class:`~fixedpoint.FloatCodes` and whose ``_meta`` (the
    zero-size prototype dask keeps per array) is a FloatCodes of the format.
    Slicing, transposing, rechunking and ``persist`` keep it; functions that
    read codes (``from_fp8``, ``fp8_matmul``) take the format from it
    (:func:`format_of`), and require ``fmt`` otherwise (plain uint8 dask
    arrays, or after operations that drop the prototype, such as
    ``da.concatenate``).  ``compute()`` concatenates blocks with NumPy and
    returns plain uint8 codes: wrap them with ``FloatCodes(codes, fmt)``.

:func:`~fixedpoint.quantize` on a dask array returns a :class:`QTensorArray`:
the scales and zero points (NumPy), the codes (dask), ``dequantize()`` (dask)
and ``compute()`` (a :class:`~fixedpoint.QTensor`).

This module imports no kernel module (they call it: each public kernel hands
itself over as ``kernel``) and imports dask only when a dask array is seen.
Values are checked as each block is computed: an out-of-range code raises
then, with an index inside its block.

Examples
--------
>>> import numpy as np, dask.array as da, fixedpoint as fp
>>> x = da.from_array(np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4), chunks=2)
>>> c = fp.to_fp8(x, "e4m3")
>>> format_of(c).name, c.chunks
('e4m3', ((2, 1), (2, 2)))
>>> np.array_equal(c.compute(), fp.to_fp8(x.compute(), "e4m3"))
True
"""
from __future__ import annotations

import sys

import numpy as np

from ._checks import check_axis, expand_param, float_source, positive_scales, seed_value
from .formats import FloatFormat, as_format

__all__ = ["is_dask", "format_of", "QTensorArray", "to_fp8", "from_fp8", "quantize", "requantize",
           "elementwise", "matmul", "fp8_matmul"]

# ml_dtypes minifloat dtypes and the format names that read them back
_ML_FORMATS = {"float8_e5m2": "e5m2", "float8_e4m3fn": "e4m3", "float8_e4m3fnuz": "e4m3fnuz",
               "float8_e5m2fnuz": "e5m2fnuz", "float6_e3m2fn": "e3m2", "float6_e2m3fn": "e2m3",
               "float4_e2m1fn": "e2m1"}


def is_dask(*arrays) -> bool:
    """True when any argument is a ``dask.array.Array`` (never imports dask).

    Examples
    --------
    >>> import numpy as np
    >>> is_dask(np.zeros(3), 1.0)
    False
    """
    mod = sys.modules.get("dask.array")
    if mod is None:
        return False
    return any(isinstance(x, mod.Array) for x in arrays)


def _da():
    try:
        import dask.array as da
    except ImportError:  # pragma: no cover - is_dask was true, so dask is there
        raise ImportError('dask arrays need dask: pip install "fixedpoint[dask]"') from None
    return da


def format_of(x):
    """The minifloat format that dask (or NumPy) codes carry, or None.

    A dask array made by :func:`~fixedpoint.to_fp8` carries it in its
    prototype; an ml_dtypes float8/6/4 dtype names it; a :class:`FloatCodes`
    holds it.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fixedpoint as fp
    >>> format_of(fp.to_fp8(da.zeros(4, chunks=2), "e5m2")).name
    'e5m2'
    >>> format_of(da.zeros(4, dtype=np.uint8)) is None
    True
    """
    proto = getattr(x, "_meta", x) if is_dask(x) else x
    f = getattr(proto, "fmt", None)
    if isinstance(f, FloatFormat):
        return f
    dt = getattr(x, "dtype", None)
    if dt is not None and (getattr(dt.type, "__module__", "") or "").startswith("ml_dtypes"):
        name = _ML_FORMATS.get(dt.name)
        return as_format(name) if name else None
    return None


def _no_out(out):
    if out is not None:
        raise ValueError("out: not supported for dask arrays (the result is a new lazy array)")


def _as_dask(x, like=None):
    da = _da()
    if is_dask(x):
        return x
    arr = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if like is not None and arr.ndim == like.ndim and arr.shape == like.shape:
        return da.from_array(arr, chunks=like.chunks)
    return da.from_array(arr, chunks=arr.shape if arr.ndim else ())


def _block_threads(num_threads):
    """Threads of each block's kernel: dask runs blocks in parallel already, so one
    unless the caller says otherwise (results never depend on it)."""
    return 1 if num_threads is None else num_threads


def _location(block_info):
    info = block_info[None]
    return [tuple(s) for s in info["array-location"]], tuple(info["shape"])


# ---------------------------------------------------------------------------
# Global element indices of a block (stochastic rounding)

def _runs(loc, shape):
    """The block at ``loc`` of an array of ``shape``, in C order, as runs of
    consecutive global flat indices: (run starts, run length)."""
    nd = len(shape)
    if nd == 0:
        return np.zeros(1, np.int64), 1
    j = nd - 1
    while j > 0 and loc[j] == (0, shape[j]):
        j -= 1
    inner = int(np.prod(shape[j + 1:], dtype=np.int64))
    run = (loc[j][1] - loc[j][0]) * inner
    strides = np.ones(nd, np.int64)
    for d in range(nd - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    base = int(sum(loc[d][0] * int(strides[d]) for d in range(nd)))
    lead = [np.arange(loc[d][1] - loc[d][0], dtype=np.int64) * strides[d] for d in range(j)]
    starts = np.zeros(1, np.int64)
    for v in lead:
        starts = (starts[:, None] + v[None, :]).reshape(-1)
    return starts + base, run


def _pieces(start: int, length: int):
    """Split [start, start + length) into pieces [p, p + n) with p a multiple of
    a power of two >= n, so that p + i == p ^ i for every i < n."""
    pos, end = start, start + length
    while pos < end:
        n = end - pos if pos == 0 else min(pos & -pos, end - pos)
        yield pos, n
        pos += n


def _by_index(fn, x, loc, shape, out_dtype):
    """Apply ``fn(piece, g)`` (``g``: global flat index of the piece's first
    element) to every aligned piece of block ``x``; the results in x's shape."""
    flat = np.ascontiguousarray(x).reshape(-1)
    res = np.empty(flat.size, out_dtype)
    starts, run = _runs(loc, shape)
    for r, s in enumerate(starts.tolist()):
        for g, n in _pieces(s, run):
            o = r * run + (g - s)
            res[o:o + n] = np.asarray(fn(flat[o:o + n], g)).reshape(-1)
    return res.reshape(np.shape(x))


# ---------------------------------------------------------------------------
# Conversions

def _tiny(x, fill=0):
    """A one-element array of x's dtype and number of dimensions."""
    return np.full((1,) * x.ndim, fill, dtype=x.dtype)


def to_fp8(kernel, x, fmt, *, overflow="saturate", rounding="nearest_even", seed=None, out=None,
           double_rounding=False, num_threads=None):
    """:func:`fixedpoint.to_fp8` of a dask array (``kernel``: the in-memory function).

    Returns a dask array of uint8 codes whose blocks are FloatCodes and whose
    prototype carries the format.  Stochastic rounding gives the bits of the
    in-memory call with the same seed (a fresh seed is drawn once, here, when
    ``seed`` is None).
    """
    num_threads = _block_threads(num_threads)
    da = _da()
    _no_out(out)
    kw = dict(overflow=overflow, rounding=rounding, double_rounding=double_rounding,
              num_threads=num_threads)
    proto = kernel(_tiny(x), fmt, seed=seed if rounding != "stochastic" else 0, **kw)  # validates
    f = proto.fmt
    meta = type(proto)(np.empty((0,) * x.ndim, np.uint8), f)
    if rounding != "stochastic":
        return da.map_blocks(lambda b: kernel(b, f, **kw), x, dtype=np.uint8, meta=meta)
    s0 = seed_value(seed)

    def block(b, block_info=None):
        loc, shape = _location(block_info)
        codes = _by_index(lambda piece, g: kernel(piece, f, seed=s0 ^ g, **kw), b, loc, shape,
                          np.uint8)
        return type(proto)(codes, f)

    return da.map_blocks(block, x, dtype=np.uint8, meta=meta)


def _codes_format(kernel_name, codes, fmt):
    own = format_of(codes)
    f = None if fmt is None else as_format(fmt, "fmt", "float")
    if own is not None and f is not None and own != f:
        raise ValueError(f"codes: the codes are {own.name} codes, but fmt says {f.name}")
    f = own if own is not None else f
    if f is None:
        raise TypeError(f"{kernel_name}: plain uint8 codes carry no format: give fmt, or pass "
                        f"the dask array that to_fp8 returns")
    return f


def from_fp8(kernel, codes, fmt=None, *, dtype=np.float32, out=None, num_threads=None):
    """:func:`fixedpoint.from_fp8` of dask codes; the format comes from the
    codes' prototype (:func:`format_of`) or ``fmt``."""
    num_threads = _block_threads(num_threads)
    da = _da()
    _no_out(out)
    f = _codes_format("codes", codes, fmt)
    proto = kernel(np.zeros((1,) * codes.ndim, np.uint8) if codes.dtype == np.uint8 else _tiny(codes),
                   None if codes.dtype != np.uint8 else f, dtype=dtype, num_threads=1)
    fm = f if codes.dtype == np.uint8 else None
    return da.map_blocks(lambda b: kernel(np.asarray(b), fm, dtype=dtype, num_threads=num_threads),
                         codes, dtype=proto.dtype, meta=np.empty((0,) * codes.ndim, proto.dtype))


def elementwise(kernel, *arrays, **kwargs):
    """``kernel(*blocks, **kwargs)`` block by block over broadcast operands
    (``mul``, ``add``, ``requantize``): per-channel parameter arrays are
    sliced with their blocks.  The result dtype is the kernel's on one element."""
    if "num_threads" in kwargs:
        kwargs["num_threads"] = _block_threads(kwargs["num_threads"])
    da = _da()
    nd = max(np.ndim(a) for a in arrays)
    proto = kernel(*[np.zeros((1,) * np.ndim(a), np.asarray(a).dtype if not is_dask(a) else a.dtype)
                     if np.ndim(a) else a for a in arrays], **kwargs)
    dt = np.asarray(proto).dtype
    pairs = []
    for a in arrays:
        if not is_dask(a) and np.ndim(a) > 0:
            a = _as_dask(a)
        pairs += [a, tuple(range(nd - a.ndim, nd))] if is_dask(a) else [a, None]
    # blockwise aligns the operands' chunks (and broadcasts length-1 dimensions)
    return da.blockwise(lambda *bs: np.asarray(kernel(*bs, **kwargs)), tuple(range(nd)), *pairs,
                        dtype=dt, meta=np.empty((0,) * nd, dt))


def requantize(kernel, acc, multiplier, shift=0, *, zero_point=0, out_fmt, method="double",
               num_threads=None):
    """:func:`fixedpoint.requantize` of dask accumulator values (per-column
    multipliers, shifts and zero points are sliced with the blocks)."""
    num_threads = _block_threads(num_threads)
    def block(a, m, s, z):
        return kernel(a, m, s, zero_point=z, out_fmt=out_fmt, method=method, num_threads=num_threads)

    if not is_dask(acc):
        acc = _as_dask(acc)
    params = [v if is_dask(v) else np.asarray(v) for v in (multiplier, shift, zero_point)]
    # the (small) parameters checked in memory once, before the graph is built
    m0, s0, z0 = [np.zeros((1,) * v.ndim, v.dtype) if is_dask(v) else v for v in params]
    kernel(np.zeros((1,) * acc.ndim, acc.dtype), m0, s0, zero_point=z0, out_fmt=out_fmt, method=method,
           num_threads=1)
    return elementwise(block, acc, *params)


# ---------------------------------------------------------------------------
# Quantization

def _param_shape(shape, ax, gs):
    if ax is None:
        return ()
    if gs is None:
        return (shape[ax],)
    return shape[:ax] + (shape[ax] // gs,) + shape[ax + 1:]


def _param_block(p, loc, ax, gs):
    """The slice of a scale/zero-point array that a block at ``loc`` uses."""
    p = np.asarray(p)
    if p.ndim == 0 or ax is None:
        return p
    if gs is None:
        return p[loc[ax][0]:loc[ax][1]]
    idx = tuple(slice(a // gs, b // gs) if d == ax else slice(a, b) for d, (a, b) in enumerate(loc))
    return p[idx]


def _aligned_chunks(chunks, unit):
    """Chunk sizes whose boundaries are the given ones rounded down to multiples
    of ``unit`` (chunks merged where needed)."""
    total = sum(chunks)
    bounds, pos = [], 0
    for c in chunks[:-1]:
        pos += c
        b = pos // unit * unit
        if b > (bounds[-1] if bounds else 0):
            bounds.append(b)
    edges = [0] + bounds + [total]
    return tuple(b - a for a, b in zip(edges[:-1], edges[1:]) if b > a) or (total,)


class QTensorArray:
    """What :func:`fixedpoint.quantize` returns for a dask array: NumPy scales and
    zero points (as :class:`~fixedpoint.QTensor`), dask codes.

    Attributes ``fmt``, ``scale``, ``zero_point``, ``axis``, ``group_size``,
    ``float_zero_point``, ``shape``, ``codes`` (a dask array);
    :meth:`dequantize` is lazy; :meth:`compute` gives the in-memory QTensor.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fixedpoint as fp
    >>> x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    >>> q = fp.quantize(da.from_array(x, chunks=(1, 2)), "int8", axis=1)
    >>> q.scale.tolist() == fp.quantize(x, "int8", axis=1).scale.tolist()
    True
    >>> q.compute().codes.tolist() == fp.quantize(x, "int8", axis=1).codes.tolist()
    True
    """

    def __init__(self, codes, fmt, scale, zero_point, axis, group_size, float_zero_point,
                 qtensor_type):
        self._codes, self._fmt, self._scale, self._zero_point = codes, fmt, scale, zero_point
        self._axis, self._group_size, self._fzp = axis, group_size, float_zero_point
        self._qt = qtensor_type

    codes = property(lambda self: self._codes, doc="The codes, a dask array (lazy).")
    fmt = property(lambda self: self._fmt, doc="The format (IntFormat or FloatFormat).")
    scale = property(lambda self: self._scale, doc="float32 scales (NumPy), the granularity's shape.")
    zero_point = property(lambda self: self._zero_point, doc="Zero points (NumPy).")
    axis = property(lambda self: self._axis, doc="Axis of the per-channel/group scales, or None.")
    group_size = property(lambda self: self._group_size, doc="Elements per group, or None.")
    float_zero_point = property(lambda self: self._fzp, doc="Whether the zero point is a real offset.")
    shape = property(lambda self: self._codes.shape, doc="Shape of the quantized tensor.")

    def __repr__(self) -> str:
        return (f"QTensorArray(shape={self.shape}, fmt={self.fmt.name}, axis={self.axis}, "
                f"group_size={self.group_size}, chunks={self.codes.chunks})")

    def _block_qtensor(self, codes, loc):
        return self._qt(codes, self._fmt, scale=_param_block(self._scale, loc, self._axis, self._group_size),
                        zero_point=_param_block(self._zero_point, loc, self._axis, self._group_size),
                        axis=self._axis, group_size=self._group_size, float_zero_point=self._fzp)

    def dequantize(self, dtype=np.float32):
        """Float values of the codes, lazily (the in-memory arithmetic per block)."""
        da = _da()
        dt = np.dtype(dtype)

        def block(c, block_info=None):
            loc, _ = _location(block_info)
            return self._block_qtensor(np.asarray(c), loc).dequantize(dt)

        return da.map_blocks(block, self._codes, dtype=dt, meta=np.empty((0,) * self._codes.ndim, dt))

    def compute(self, **kwargs):
        """The in-memory :class:`~fixedpoint.QTensor` (computes the codes)."""
        return self._qt(np.asarray(self._codes.compute(**kwargs)), self._fmt, scale=self._scale,
                        zero_point=self._zero_point, axis=self._axis, group_size=self._group_size,
                        float_zero_point=self._fzp)


def _check_scale(scale, want):
    sc = np.asarray(scale)
    if sc.dtype.kind not in "fiu" or sc.dtype == np.bool_:
        raise TypeError(f"scale: expected floats, got an array of dtype {sc.dtype}")
    sc = sc.astype(np.float32)
    if sc.shape != want:
        raise ValueError(f"scale: expected shape {want} for this granularity, got {sc.shape}")
    return sc


def _minmax(da, X, ax, gs, nan, f):
    """(rmin, rmax) per scale block of dask ``X``, as the in-memory minmax
    calibration finds them (non-finite values: an error, or read as 0 where
    NaN may pass to a float format)."""
    finite = da.isfinite(X)
    nbad = int(da.count_nonzero(~finite).compute()) if X.size else 0
    if nbad:
        passes = nan == "propagate" and isinstance(f, FloatFormat) and f.nan is not None
        if not passes:
            flat = int(da.argmax(~finite.ravel()).compute())
            where = tuple(int(i) for i in np.unravel_index(flat, X.shape))
            v = X[where].compute()
            raise ValueError(f"x: non-finite value {v} at index {where}"
                             + (" (nan='propagate' keeps NaN for float formats that have one)"
                                if isinstance(f, FloatFormat) else ""))
        X = da.where(finite, X, 0).astype(X.dtype)
    if ax is None:
        lo, hi = X.min(), X.max()
    elif gs is None:
        others = tuple(d for d in range(X.ndim) if d != ax)
        lo, hi = X.min(axis=others), X.max(axis=others)
    else:
        X = X.rechunk({ax: _aligned_chunks(X.chunks[ax], gs)})
        chunks = list(X.chunks)
        chunks[ax] = tuple(c // gs for c in chunks[ax])

        def red(op):
            def fn(b):
                s = b.shape
                return op(b.reshape(s[:ax] + (s[ax] // gs, gs) + s[ax + 1:]), axis=ax + 1)
            return X.map_blocks(fn, chunks=tuple(chunks), dtype=X.dtype)

        lo, hi = red(np.min), red(np.max)
    import dask
    lo, hi = dask.compute(lo, hi)
    return np.asarray(lo), np.asarray(hi)


def _range_probe(lo, hi, ax, gs):
    """A small tensor whose min-max calibration sees exactly (lo, hi) per block,
    with the (axis, group_size) that reads it so."""
    if ax is None:
        return np.array([lo, hi]), None, None
    if gs is None:
        return np.stack([lo, hi]), 1, None
    return (np.stack([lo, hi], axis=ax + 1).reshape(lo.shape[:ax] + (2 * lo.shape[ax],) + lo.shape[ax + 1:]),
            ax, 2)


def quantize(kernel, x, fmt, *, scale=None, zero_point=None, symmetric=True, axis=None,
             group_size=None, narrow_range=False, rounding="nearest_even", calibration="minmax",
             percentile=99.99, float_zero_point=False, margin=0, overflow="saturate", nan="raise",
             seed=None, num_threads=None) -> QTensorArray:
    """:func:`fixedpoint.quantize` of a dask array: a :class:`QTensorArray`.

    With ``scale``: lazy.  Without: ``calibration="minmax"`` computes the
    ranges now (dask reductions: one pass), then the scales exactly as in
    memory; a :class:`~fixedpoint.Calibrator` that has seen the data gives
    its scales; other methods need the whole tensor in memory (ValueError).
    """
    num_threads = _block_threads(num_threads)
    da = _da()
    if x.dtype.kind != "f" and not (getattr(x.dtype.type, "__module__", "") or "").startswith("ml_dtypes"):
        raise TypeError(f"x: expected float16, float32, float64 or bfloat16 values, got an array "
                        f"of dtype {x.dtype}")
    X = x.astype(np.float32) if x.dtype.itemsize <= 4 and x.dtype != np.float32 else x
    ax = check_axis(axis, X.ndim)
    common = dict(symmetric=symmetric, narrow_range=narrow_range, rounding=rounding,
                  float_zero_point=float_zero_point, overflow=overflow, nan=nan)
    if scale is None and not isinstance(calibration, str) and hasattr(calibration, "scale_zero_point") \
            and axis is None and group_size is None:
        cax = getattr(calibration, "axis", None)            # the calibrator's layout
        ax, group_size = check_axis(cax, X.ndim), getattr(calibration, "group_size", None)
    gs = group_size
    if gs is not None:
        if isinstance(gs, bool) or not isinstance(gs, (int, np.integer)):
            raise TypeError(f"group_size: expected a positive int, got {type(gs).__name__}")
        if gs < 1:
            raise ValueError(f"group_size: expected a positive int, got {gs}")
        if ax is None:
            raise ValueError("group_size: needs axis (the axis along which groups run)")
        if X.shape[ax] % gs:
            raise ValueError(f"group_size: {gs} does not divide axis {ax} of length {X.shape[ax]}")
        gs = int(gs)
    want = _param_shape(X.shape, ax, gs)
    if scale is None:
        if zero_point is not None:
            raise ValueError("zero_point: give it together with scale, or neither")
        if isinstance(calibration, str):
            if calibration != "minmax":
                raise ValueError(f"calibration: {calibration!r} needs the whole tensor in memory; on "
                                 f"a dask array use 'minmax', or a Calibrator fed block by block")
            # the format (narrow range applied) as quantize sees it, from a one-element call
            probe = kernel(np.zeros(1, np.float32), fmt, **common, margin=margin, seed=0, num_threads=1)
            if X.size == 0:
                raise ValueError("x: an empty tensor has no range to calibrate; give scale")
            lo, hi = _minmax(da, X, ax, gs, nan, probe.fmt)
            r, pax, pgs = _range_probe(lo, hi, ax, gs)
            q = kernel(r.astype(X.dtype), fmt, axis=pax, group_size=pgs, margin=margin,
                       calibration="minmax", **common, seed=0, num_threads=num_threads)
        elif hasattr(calibration, "scale_zero_point"):
            probe = kernel(np.zeros(1, np.float32), fmt, **common, margin=margin, seed=0, num_threads=1)
            sc, zp = calibration.scale_zero_point(probe.fmt, float_zero_point=float_zero_point,
                                                  margin=margin)
            q = None
            scale, zero_point = np.asarray(sc, np.float32), np.asarray(zp)
        else:
            raise ValueError("calibration: delayed scaling needs the tensor's amax in memory; on a "
                             "dask array give scale, 'minmax' or a fed Calibrator")
        if q is not None:
            scale, zero_point = q.scale, q.zero_point
    sc = _check_scale(scale, want)
    if not np.all(np.isfinite(sc)) or np.any(sc < 0):
        bad = sc[~(np.isfinite(sc) & (sc >= 0))].ravel()[0]
        raise ValueError(f"scale: must be finite and non-negative, got {bad}")
    zp = np.zeros(want, np.float32 if float_zero_point else np.int32) if zero_point is None \
        else np.asarray(zero_point)
    if zp.shape == () and want != ():
        zp = np.broadcast_to(zp, want)
    if zp.shape != want:
        raise ValueError(f"zero_point: expected shape {want} for this granularity, got {zp.shape}")
    # every other argument (and the zero points' range) checked by one in-memory call on the
    # parameters of a single channel/group
    one = tuple(1 if d != ax or gs is None else gs for d in range(X.ndim)) if ax is not None else (1,)
    sel = tuple(slice(0, 1) for _ in want)
    probe_x = np.zeros(one if ax is not None else (1,) * max(X.ndim, 1), X.dtype if X.dtype.kind == "f"
                       else np.float32)
    qt_probe = kernel(probe_x, fmt, scale=sc[sel], zero_point=np.asarray(zp[sel]), axis=ax,
                      group_size=gs, **common, seed=0, num_threads=1)
    f = qt_probe.fmt
    zp_checked = np.asarray(zp).astype(qt_probe.zero_point.dtype)
    if zp.size and not float_zero_point and not isinstance(f, FloatFormat) and \
            (int(zp.min()) < f.min or int(zp.max()) > f.max):
        bad = int(zp.min()) if int(zp.min()) < f.min else int(zp.max())
        raise ValueError(f"zero_point: {bad} is outside the {f.name} range [{f.min}, {f.max}]")
    if gs is not None:
        X = X.rechunk({ax: _aligned_chunks(X.chunks[ax], gs)})
    codes_dtype = qt_probe.codes.dtype
    meta = np.empty((0,) * X.ndim, codes_dtype)
    if isinstance(f, FloatFormat):
        meta = type(qt_probe.codes)(meta, f)
    kw = dict(axis=ax, group_size=gs, **common, num_threads=num_threads)
    stochastic = rounding == "stochastic"
    s0 = seed_value(seed) if stochastic else 0
    full_shape = X.shape

    def block(b, block_info=None):
        loc, shape = _location(block_info)
        s_b, z_b = _param_block(sc, loc, ax, gs), _param_block(zp_checked, loc, ax, gs)
        if not stochastic:
            return kernel(b, fmt, scale=s_b, zero_point=z_b, **kw, seed=0).codes
        if isinstance(f, FloatFormat):
            # per-element scales: each piece is its own per-channel (axis 0) call
            flat_s = np.ascontiguousarray(np.broadcast_to(expand_param(s_b, b.shape, ax, gs), b.shape)).reshape(-1)
            idx_of = {}
            starts, run = _runs(loc, shape)
            for r, st in enumerate(starts.tolist()):
                for g, n in _pieces(st, run):
                    idx_of[g] = r * run + (g - st)

            def enc(p, g):
                o = idx_of[g]
                return kernel(p, fmt, scale=flat_s[o:o + p.size], axis=0, overflow=overflow,
                              rounding="stochastic", nan=nan, seed=s0 ^ g,
                              num_threads=num_threads).codes
            return type(qt_probe.codes)(_by_index(enc, b, loc, shape, np.uint8), f)
        return _int_stochastic(b, f, s_b, z_b, ax, gs, bool(float_zero_point), s0, loc, full_shape)

    codes = da.map_blocks(block, X, dtype=codes_dtype, meta=meta)
    return QTensorArray(codes, f, sc, zp_checked, ax, gs, bool(float_zero_point), type(qt_probe))


def _int_stochastic(b, f, s_b, z_b, ax, gs, fzp, seed, loc, shape):
    """Integer codes with stochastic rounding: quantize's arithmetic, with the
    Philox stream advanced to each run's global index."""
    X = float_source(b, "x")
    if X.size and not np.isfinite(X).all():
        bad = np.argwhere(~np.isfinite(X))[0]
        where = tuple(int(i) + lo for i, (lo, _) in zip(bad, loc))
        raise ValueError(f"x: non-finite value {X[tuple(bad)]} at index {where}")
    s_full = expand_param(s_b, X.shape, ax, gs).astype(X.dtype)
    z_full = expand_param(z_b, X.shape, ax, gs)
    u = np.empty(X.size, np.float64)
    starts, run = _runs(loc, shape)
    for r, st in enumerate(starts.tolist()):
        bg = np.random.Philox(seed)
        bg.advance(st // 4)
        gen = np.random.Generator(bg)
        gen.random(st % 4)
        u[r * run:(r + 1) * run] = gen.random(run)
    u = u.reshape(X.shape)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if fzp:
            v = (X - z_full.astype(X.dtype)) / s_full
            fl = np.floor(v)
            v = fl + (u < (v - fl)) + f.min
            v = np.where(np.isnan(v), f.min, v)
        else:
            v = X / s_full
            fl = np.floor(v)
            v = fl + (u < (v - fl)) + z_full
            v = np.where(np.isnan(v), np.broadcast_to(z_full, v.shape), v)
        return np.clip(v, f.min, f.max).astype(f.dtype)


# ---------------------------------------------------------------------------
# Matrix products

def _k_chunks(a, b, unit):
    """Common K chunks of a (axis 1) and b (axis 0), merged so that every
    boundary is a multiple of ``unit`` (None: one chunk)."""
    K = a.shape[1]
    if unit is None or K == 0:
        return (K,) if K else (0,)
    bounds = set()
    for ch in (a.chunks[1], b.chunks[0]):
        pos = 0
        for c in ch[:-1]:
            pos += c
            bounds.add(pos)
    edges = sorted(bounds)
    sizes = np.diff([0] + edges + [K]).tolist()
    return _aligned_chunks(tuple(sizes), unit)


def _check_2d(a, b):
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"a and b: dask products take 2-D operands (M, K) @ (K, N), got shapes "
                         f"{a.shape} and {b.shape}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"a and b: shapes {a.shape} and {b.shape} do not match for a product "
                         f"(K = {a.shape[1]} vs {b.shape[0]})")


def matmul(kernel, a, b, fmt, *, acc=None, c=None, return_overflow=False, num_threads=None):
    """:func:`fixedpoint.matmul` of dask operands (2-D), bit-identical to the
    in-memory product: M and N split as the operands are chunked; K chunks
    are folded in order through ``c=`` at multiples of ``acc.block`` (any
    boundary for ``"wrap"`` without overflow counts).  With ``acc.pair_bits``
    the unit is a pair (two k), so that no pair straddles two chunks."""
    num_threads = _block_threads(num_threads)
    da = _da()
    a, b = _as_dask(a), _as_dask(b)
    _check_2d(a, b)
    probe = kernel(np.zeros((1, 1), a.dtype), np.zeros((1, 1), b.dtype), fmt, acc=acc,
                   return_overflow=bool(return_overflow), num_threads=1)   # validates fmt, acc, dtypes
    out_dtype = (probe[0] if return_overflow else probe).dtype
    pair = 1 if getattr(acc, "pair_bits", None) is None else 2
    block = getattr(acc, "block", 1)
    exact_sum = getattr(acc, "overflow", "saturate") == "wrap" and not return_overflow
    unit = pair if exact_sum else pair * block
    kch = _k_chunks(a, b, unit)
    a = a.rechunk((a.chunks[0], kch))
    b = b.rechunk((kch, b.chunks[1]))
    M, N = a.shape[0], b.shape[1]
    state = None
    if c is not None:
        C = c if is_dask(c) else np.asarray(c)
        if C.dtype.kind not in "iu":
            raise TypeError(f"c: expected integers, got an array of dtype {C.dtype}")
        try:
            np.broadcast_shapes(C.shape, (M, N))
        except ValueError:
            raise ValueError(f"c: shape {C.shape} does not broadcast to the output shape {(M, N)}") from None
        C = da.broadcast_to(_as_dask(C), (M, N)).rechunk((a.chunks[0], b.chunks[1]))
        state = C.astype(np.int64)
    rec = np.dtype([("v", np.int64), ("n", np.int64)])
    ro = bool(return_overflow)

    def step(ab, bb, st=None):
        if ro:
            v, n = kernel(ab, bb, fmt, acc=acc, c=None if st is None else st["v"] if st.dtype == rec else st,
                          return_overflow=True, num_threads=num_threads)
            out = np.empty(v.shape, rec)
            out["v"] = v
            out["n"] = n + (st["n"] if st is not None and st.dtype == rec else 0)
            return out
        return kernel(ab, bb, fmt, acc=acc, c=st, num_threads=num_threads)

    dt = rec if ro else out_dtype
    k0 = 0
    for kc in kch:
        ak = a[:, k0:k0 + kc]
        bk = b[k0:k0 + kc, :]
        k0 += kc
        args = [ak, "ik", bk, "kj"] + ([] if state is None else [state, "ij"])
        state = da.blockwise(step, "ij", *args, dtype=dt, concatenate=True,
                             meta=np.empty((0, 0), dt))
    if not ro:
        return state.astype(out_dtype) if state.dtype != out_dtype else state
    return state["v"].astype(out_dtype), state["n"]


def _bf16_bits(x):
    """float32 -> bfloat16 bits, nearest even, NaN kept quiet (as fp8_matmul)."""
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def fp8_matmul(kernel, a, b, fmt=None, *, scale_a=1.0, scale_b=1.0, out_dtype="float32", acc=None,
               num_threads=None):
    """:func:`fixedpoint.fp8_matmul` of dask codes (2-D), bit-identical to the
    in-memory product: M and N split freely; K chunks (at multiples of
    ``acc.promote_every``) fold each promotion slice into the float32
    accumulator in K order; accumulators that never promote take the whole K."""
    num_threads = _block_threads(num_threads)
    da = _da()
    fa_in, fb_in = fmt if isinstance(fmt, (tuple, list)) and len(fmt) == 2 else (fmt, fmt)
    fa = _codes_format("a", a, fa_in) if a.dtype == np.uint8 else format_of(a)
    fb = _codes_format("b", b, fb_in) if b.dtype == np.uint8 else format_of(b)
    a, b = _as_dask(a), _as_dask(b)
    _check_2d(a, b)
    pa = np.zeros((1, 1), a.dtype)
    pb = np.zeros((1, 1), b.dtype)
    fm = (fa if a.dtype == np.uint8 else None, fb if b.dtype == np.uint8 else None)
    probe = kernel(pa, pb, fm, out_dtype=out_dtype, acc=acc, num_threads=1)   # validates the rest
    M, K, N = a.shape[0], a.shape[1], b.shape[1]
    sa = positive_scales(scale_a, "scale_a", M)
    sb = positive_scales(scale_b, "scale_b", N)
    pe = getattr(acc, "promote_every", 128) if acc is not None else 128
    # the float32 accumulator cannot overflow when |sum| < max_a * max_b * K < 2^127
    fold = pe is not None and fa is not None and fb is not None and \
        fa.max_value * fb.max_value * max(K, 1) < 2.0 ** 127
    kch = _k_chunks(a, b, pe if fold else None)
    a = a.rechunk((a.chunks[0], kch))
    b = b.rechunk((kch, b.chunks[1]))
    odt = probe.dtype
    # per-row / per-column scales travel with the blocks of M and N
    sa_arg = [sa, None] if sa.ndim == 0 else [da.from_array(sa, chunks=(a.chunks[0],)), "i"]
    sb_arg = [sb, None] if sb.ndim == 0 else [da.from_array(sb, chunks=(b.chunks[1],)), "j"]
    if len(kch) == 1:
        def whole(ab, bb, s_a, s_b):
            return kernel(ab, bb, fm, scale_a=s_a, scale_b=s_b, out_dtype=out_dtype, acc=acc,
                          num_threads=num_threads)
        return da.blockwise(whole, "ij", a, "ik", b, "kj", *sa_arg, *sb_arg, dtype=odt,
                            concatenate=True, meta=np.empty((0, 0), odt))

    def step(ab, bb, st=None):
        for s in range(0, ab.shape[1], pe):
            r = kernel(ab[:, s:s + pe], bb[s:s + pe, :], fm, out_dtype="float32", acc=acc,
                       num_threads=num_threads)
            if st is None:
                st = r
            else:
                with np.errstate(over="ignore", invalid="ignore"):
                    st = (st + r).astype(np.float32)      # the float32 accumulator, in K order
                # Inf + -Inf gives the CPU's default NaN (sign bit set); the in-memory
                # product writes NaN as +NaN wherever an operand or Inf * 0 makes one
                st[np.isnan(st)] = np.float32(np.nan)
        return st

    state, k0 = None, 0
    for kc in kch:
        ak, bk = a[:, k0:k0 + kc], b[k0:k0 + kc, :]
        k0 += kc
        args = [ak, "ik", bk, "kj"] + ([] if state is None else [state, "ij"])
        state = da.blockwise(step, "ij", *args, dtype=np.float32, concatenate=True,
                             meta=np.empty((0, 0), np.float32))
    kind = odt.name if odt.name in ("float32", "float16") else "bfloat16"

    def finish(st, s_a, s_b):
        scale = (s_a.reshape(-1, 1) if s_a.ndim else s_a) * (s_b.reshape(1, -1) if s_b.ndim else s_b)
        scale = np.float32(scale) if np.ndim(scale) == 0 else scale.astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            res = (st * scale).astype(np.float32)
            if kind == "float16":
                return res.astype(np.float16)
        if kind == "bfloat16":
            return _bf16_bits(res).view(odt)
        return res

    return da.blockwise(finish, "ij", state, "ij", *sa_arg, *sb_arg, dtype=odt,
                        meta=np.empty((0, 0), odt))
