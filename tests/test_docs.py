"""Every docstring example in the public modules runs and prints what it says."""
import doctest
import importlib

import pytest

MODULES = ["fixedpoint.formats", "fixedpoint.intops", "fixedpoint.accumulate", "fixedpoint.fp8",
           "fixedpoint.tensorcore", "fixedpoint.rtl", "fixedpoint._checks", "fixedpoint.requant",
           "fixedpoint.quantization", "fixedpoint.metrics", "fixedpoint.calibrate", "fixedpoint.profiles",
           "fixedpoint.layers", "fixedpoint.study", "fixedpoint.models.mlp", "fixedpoint.blockscaled",
           "fixedpoint.graph", "fixedpoint.onnx_ops"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
