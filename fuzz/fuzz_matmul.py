"""Coverage-guided fuzzing (atheris) of the matrix-product entry points.

Each input picks an integer format, an accumulator (8 to 64 bits, wrap or
saturate, a block size), shapes including 0 and 1, an initial value and the
operand bytes, and checks ``matmul`` (and its overflow counts) against
``fixedpoint/_reference.py``; or picks FP8 codes and a tensor-core model and
checks ``fp8_matmul`` against the slow model.  Malformed calls must raise
``TypeError``/``ValueError``.

    python fuzz/fuzz_matmul.py -max_total_time=30      # CI: .ci/fuzz
"""
import sys

import atheris

with atheris.instrument_imports():
    import numpy as np
    import fixedpoint as fp
    from fixedpoint import _reference as ref

INT_FORMATS = ["int8", "uint8", "int4", "uint4", "int2", "int16", "int8_narrow"]
TC = [fp.TensorCoreAccumulator.hopper_fp8(), fp.TensorCoreAccumulator.hopper_fp8(True),
      fp.TensorCoreAccumulator.exact(), fp.TensorCoreAccumulator(8, 3, "sum", "toward_zero", 8),
      fp.TensorCoreAccumulator.b200_fp8()]


def _ints(fdp, shape, f):
    n = int(np.prod(shape))
    raw = np.frombuffer(fdp.ConsumeBytes(2 * n).ljust(2 * n, b"\0"), dtype="<u2").astype(np.int64)
    return (f.min + raw % (f.max - f.min + 1)).reshape(shape).astype(f.dtype)


def _int_case(fdp):
    f = fp.formats.as_format(INT_FORMATS[fdp.ConsumeIntInRange(0, len(INT_FORMATS) - 1)])
    acc = fp.Accumulator(fdp.ConsumeIntInRange(8, 64), ["wrap", "saturate"][fdp.ConsumeBool()],
                         fdp.ConsumeIntInRange(1, 40))
    m, k, n = (fdp.ConsumeIntInRange(0, 5), fdp.ConsumeIntInRange(0, 70), fdp.ConsumeIntInRange(0, 5))
    a, b = _ints(fdp, (m, k), f), _ints(fdp, (k, n), f)
    if fdp.ConsumeBool() and k > 1:
        b = np.ascontiguousarray(b.T).T                    # a transposed view
    c = None
    if fdp.ConsumeBool():
        c = np.array(fdp.ConsumeIntInRange(acc.min, acc.max), dtype=np.int64)
    got, counts = fp.matmul(a, b, f, acc=acc, c=c, return_overflow=True,
                            num_threads=fdp.ConsumeIntInRange(1, 3))
    want, want_counts = ref.matmul(a, b, acc.bits, acc.overflow, acc.block,
                                   None if c is None else np.full((m, n), int(c)))
    assert got.tolist() == want.tolist(), (a, b, acc, c)
    assert counts.tolist() == want_counts.tolist()


def _fp8_case(fdp):
    fa = fp.formats.as_format(["e4m3", "e5m2"][fdp.ConsumeBool()])
    fb = fp.formats.as_format(["e4m3", "e5m2"][fdp.ConsumeBool()])
    acc = TC[fdp.ConsumeIntInRange(0, len(TC) - 1)]
    m, k, n = (fdp.ConsumeIntInRange(0, 3), fdp.ConsumeIntInRange(0, 80), fdp.ConsumeIntInRange(0, 3))

    def codes(shape, f):
        c = np.frombuffer(fdp.ConsumeBytes(int(np.prod(shape))).ljust(int(np.prod(shape)), b"\0"),
                          np.uint8).copy().reshape(shape)
        bad = np.vectorize(lambda v: f.is_nan_code(int(v)) or f.is_inf_code(int(v)), otypes=[bool])(c)
        c[bad] = 0
        return c
    a, b = codes((m, k), fa), codes((k, n), fb)
    got = fp.fp8_matmul(a, b, (fa, fb), acc=acc)
    want = ref.fp8_matmul(a, b, fa, fb, acc)
    assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist(), (a, b, acc)


def _bad_call(fdp):
    i = fdp.ConsumeIntInRange(0, 5)
    calls = [
        lambda: fp.matmul(np.ones((2, 3), np.int8), np.ones((4, 2), np.int8), "int8"),
        lambda: fp.matmul(np.full((1, 1), 200), np.ones((1, 1), np.int8), "int8"),
        lambda: fp.matmul([[1.5]], [[1]], "int8"),
        lambda: fp.Accumulator(fdp.ConsumeIntInRange(-5, 7)),
        lambda: fp.fp8_matmul(np.zeros((2, 2), np.int8), np.zeros((2, 2), np.uint8)),
        lambda: fp.fp8_matmul(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), scale_a=-1.0),
    ]
    try:
        calls[i]()
    except (TypeError, ValueError):
        return
    raise AssertionError(f"malformed call {i} was accepted")


def TestOneInput(data: bytes):
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.ConsumeIntInRange(0, 9)
    if kind == 0:
        _bad_call(fdp)
    elif kind < 4:
        _fp8_case(fdp)
    else:
        _int_case(fdp)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
