"""Coverage-guided fuzzing (atheris) of the FP8 conversion entry points.

Each input picks a format, a source dtype and byte order, a shape, a view
(strided, reversed) and raw bytes for the values (every NaN payload and
subnormal reachable), then checks ``to_fp8`` against the slow reference
(``fixedpoint/_reference.py``) and ``from_fp8`` against the format's exact
decoding.  A few inputs are deliberately malformed: they must raise
``TypeError`` or ``ValueError``, nothing else.  Any other exception, a wrong
bit or a crash stops the fuzzer.

    python fuzz/fuzz_conversion.py -max_total_time=30      # CI: .ci/fuzz
"""
import sys

import atheris

with atheris.instrument_imports():
    import numpy as np
    import fixedpoint as fp
    from fixedpoint import _reference as ref
    from fixedpoint.formats import FLOAT_FORMATS

FORMATS = sorted(FLOAT_FORMATS)
DTYPES = ["<f2", "<f4", ">f4", "<f8", ">f8"]
ROUNDINGS = ["nearest_even", "toward_zero", "stochastic"]


def _bad_call(fdp):
    """Malformed arguments: only TypeError/ValueError may come out."""
    choice = fdp.ConsumeIntInRange(0, 7)
    args = [
        lambda: fp.to_fp8(["a", 1.0], "e4m3"),
        lambda: fp.to_fp8(np.ones(3, np.float32), fdp.ConsumeUnicodeNoSurrogates(6)),
        lambda: fp.to_fp8(np.ones(3, np.float32), "e4m3", rounding=fdp.ConsumeUnicodeNoSurrogates(6)),
        lambda: fp.from_fp8(np.arange(4, dtype=np.int64), "e5m2"),
        lambda: fp.to_fp8(np.ones(4, np.float32), "e5m2", out=np.empty(fdp.ConsumeIntInRange(0, 8), np.uint8)),
        lambda: fp.to_fp8(None, "e5m2"),
        lambda: fp.from_fp8(np.zeros(3, np.uint8), "e5m2", dtype=np.int32),
        lambda: fp.to_fp8(np.ones(2, np.float32), "e4m3", num_threads=fdp.ConsumeIntInRange(-3, 0)),
    ]
    try:
        args[choice]()
    except (TypeError, ValueError):
        return
    if choice not in (1, 2, 4):          # a fuzzed name or size may happen to be valid
        raise AssertionError(f"malformed call {choice} was accepted")


def TestOneInput(data: bytes):
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeIntInRange(0, 15) == 0:
        _bad_call(fdp)
        return
    f = FLOAT_FORMATS[FORMATS[fdp.ConsumeIntInRange(0, len(FORMATS) - 1)]]
    dtype = np.dtype(DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)])
    saturate = fdp.ConsumeBool() or (f.nan is None and not f.inf)
    overflow = "saturate" if saturate else "nonfinite"
    rounding = ROUNDINGS[fdp.ConsumeIntInRange(0, 2)]
    view = fdp.ConsumeIntInRange(0, 2)
    threads = fdp.ConsumeIntInRange(1, 3)
    n = fdp.ConsumeIntInRange(0, 48)
    raw = fdp.ConsumeBytes(n * dtype.itemsize)
    n = len(raw) // dtype.itemsize
    x = np.frombuffer(raw[:n * dtype.itemsize], dtype=dtype)
    if view == 1 and n > 1:
        x = x[::2]
    elif view == 2:
        x = x[::-1]
    if x.size % 2 == 0 and x.size and fdp.ConsumeBool():
        x = x.reshape(2, -1)
    if f.nan is None and not f.inf:
        try:               # no Inf or NaN: only "saturate" (NaN to +max, as PTX satfinite)
            fp.to_fp8(x, f, overflow="nonfinite", rounding=rounding)
        except ValueError:
            pass
        else:
            raise AssertionError("overflow='nonfinite' accepted for a format without Inf or NaN")
    got = fp.to_fp8(x, f, overflow=overflow, rounding=rounding, seed=7, num_threads=threads)
    assert got.shape == x.shape and got.dtype == np.uint8
    with np.errstate(invalid="ignore"):
        src = np.asarray(x, np.float64).ravel()
    if rounding == "stochastic":
        # one of the two neighbours that toward_zero and "away" would give
        for v, c in zip(src, got.ravel()):
            lo = ref.encode_minifloat(float(v), f.exp_bits, f.man_bits, f.bias, f.inf, f.nan,
                                      saturate, "toward_zero")
            if int(c) != lo:
                dv, dl = float(f.decode_exact(int(c))), float(f.decode_exact(lo))
                assert abs(dv) >= abs(dl) or np.isnan(dv), (v, c, lo)
    else:
        want = [ref.encode_minifloat(float(v), f.exp_bits, f.man_bits, f.bias, f.inf, f.nan, saturate,
                                     rounding) for v in src]
        assert got.ravel().tolist() == want, (x, got, want)
    back = fp.from_fp8(got, dtype=np.float64)
    for c, d in zip(got.ravel(), back.ravel()):
        v = float(f.decode_exact(int(c)))
        assert (np.isnan(v) and np.isnan(d)) or v == d


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
