"""Root test configuration, shared by ``tests/`` and the package's doctests.

Keep torch on one thread so that two xdist workers share 2 cores.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

try:  # torch is a core dependency; keep the import guarded so collection errors are clear
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None
