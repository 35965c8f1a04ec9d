"""Every docstring example in the public modules runs and prints what it says,
and docs/reference.md is what scripts/api_reference.py writes from the code."""
import doctest
import importlib
import pathlib
import subprocess
import sys

import pytest

MODULES = ["fixedpoint.formats", "fixedpoint.intops", "fixedpoint.accumulate", "fixedpoint.fp8",
           "fixedpoint.tensorcore", "fixedpoint.rtl", "fixedpoint._checks", "fixedpoint.requant",
           "fixedpoint.quantization", "fixedpoint.metrics", "fixedpoint.calibrate", "fixedpoint.profiles",
           "fixedpoint.layers", "fixedpoint.study", "fixedpoint.models.mlp", "fixedpoint.blockscaled",
           "fixedpoint.graph", "fixedpoint.onnx_ops", "fixedpoint.sweep", "fixedpoint.scaleout"]
# also run: models.minilm/convnet (test_models), torch and qat (test_qat), dask_arrays
# (test_dask_arrays), each where its extra is installed


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


def test_api_reference_is_current():
    """docs/reference.md documents the modules of every extra: with one missing,
    the page cannot be rebuilt here (CI installs them all)."""
    from extras import need
    for module, install in (("onnx", 'pip install "fixedpoint[models]"'),
                            ("torch", 'pip install "fixedpoint[torch]"'),
                            ("dask.distributed", 'pip install "fixedpoint[dask]"')):
        need(module, install)
    root = pathlib.Path(__file__).resolve().parent.parent
    script = root / "scripts" / "api_reference.py"
    if not script.exists():
        pytest.skip("runs from a source checkout (scripts/ is not installed)")
    r = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
