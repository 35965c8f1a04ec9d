import os
import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

DATA = pathlib.Path(__file__).parent / "data"

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def data_dir():
    return DATA


def load_cases(npz):
    import json
    return json.loads(bytes(npz["cases_json"]))


@pytest.fixture
def rng():
    return np.random.default_rng(20261128)
