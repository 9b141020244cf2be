"""Shared test fixtures (torch's thread count is set in the root ``conftest.py``)."""

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)
