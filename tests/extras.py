"""Optional extras in the tests: skip when missing, fail when CI says they must be there.

CI (``.ci/run``) installs every extra the tests use and sets
``FIXEDPOINT_REQUIRE_EXTRAS=1``; then a missing package fails the test instead
of skipping it, so a forgotten install step cannot turn into a green run that
tested nothing.
"""
import importlib
import os

import pytest

STRICT = os.environ.get("FIXEDPOINT_REQUIRE_EXTRAS") == "1"


def need(module: str, install: str):
    """Import ``module`` or skip (``install`` says how to get it)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if STRICT:
            raise
        pytest.skip(f"{module} is not installed ({install}); CI installs it",
                    allow_module_level=True)
