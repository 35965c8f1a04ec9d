"""fixedpoint.onnx_ops: the array erf against math.erf (the oracle the stock
onnx.reference Erf calls element by element), and the operator override in a
ReferenceEvaluator."""
import doctest
import importlib
import math

import numpy as np
import pytest

from extras import need
from fixedpoint.onnx_ops import erf, reference_ops

SPECIAL = [0.0, -0.0, 1e-45, -1e-38, 1e-30, 0.49999997, 0.5, -0.5, 0.50000006, 1.0, 2.0,
           5.9999995, 6.0, -6.0, 6.0000005, 10.0, 3.4e38, -3.4e38, np.inf, -np.inf]


def _math_erf(x, dtype):
    return np.array([math.erf(float(v)) for v in np.ravel(x)], dtype=np.float64).astype(dtype)


def test_float32_equals_math_erf_rounded(rng):
    x = np.concatenate([rng.standard_normal(60_000) * s for s in (1e-3, 0.2, 0.7, 1.5, 3.0)]
                       + [SPECIAL]).astype(np.float32)
    got = erf(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_array_equal(got, _math_erf(x, np.float32))
    assert np.signbit(erf(np.float32(-0.0)))


def test_float64_relative_error(rng):
    x = np.concatenate([rng.standard_normal(40_000) * s for s in (1e-6, 0.3, 1.0, 2.5)] + [SPECIAL])
    want = _math_erf(x, np.float64)
    got = erf(x)
    nz = want != 0
    assert np.max(np.abs(got[nz] - want[nz]) / np.abs(want[nz])) < 1e-14
    np.testing.assert_array_equal(got[~nz], want[~nz])


def test_nan_shapes_and_layouts(rng):
    assert np.isnan(erf(np.array([np.nan, -np.nan], np.float32))).all()
    assert erf(np.float32(0.5)).shape == () and erf(np.zeros((0, 3), np.float32)).shape == (0, 3)
    x = rng.standard_normal((7, 9, 5)).astype(np.float32)
    want = _math_erf(x, np.float32).reshape(x.shape)
    np.testing.assert_array_equal(erf(x), want)
    np.testing.assert_array_equal(erf(np.asfortranarray(x)), want)
    np.testing.assert_array_equal(erf(x[:, ::-2]), want[:, ::-2])
    np.testing.assert_array_equal(erf(x.astype(">f4")), want)
    big = rng.standard_normal(200_003).astype(np.float16)       # several chunks, float16 out
    assert erf(big).dtype == np.float16
    np.testing.assert_array_equal(erf(big), _math_erf(big, np.float16))
    assert erf([1, 2]).dtype == np.float64
    x_copy = x.copy()
    erf(x)
    np.testing.assert_array_equal(x, x_copy)                     # input untouched


@pytest.mark.parametrize("bad", [np.array([True]), np.array(["a"]), np.array([1 + 2j])])
def test_bad_input(bad):
    with pytest.raises(TypeError, match=r"^x: "):
        erf(bad)


def test_reference_evaluator_override_gives_the_same_values(rng):
    need("onnx", 'pip install "fixedpoint[models]"')
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
    g = helper.make_graph([helper.make_node("Erf", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = (rng.standard_normal((64, 300)) * 2).astype(np.float32)
    fast = ReferenceEvaluator(m, new_ops=reference_ops()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(fast, ReferenceEvaluator(m).run(None, {"x": x})[0])
    assert [c.__name__ for c in reference_ops()] == ["Erf"]


def test_docstring_examples():
    need("onnx", 'pip install "fixedpoint[models]"')
    result = doctest.testmod(importlib.import_module("fixedpoint.onnx_ops"),
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
