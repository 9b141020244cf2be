"""Shared test configuration: keep torch on few threads so two xdist workers share 2 cores."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

try:  # torch is a core dependency; keep the import guarded so collection errors are clear
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None


@pytest.fixture
def rng():
    return np.random.default_rng(0)
