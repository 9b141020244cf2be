"""keep_freed_memory: buffers freed by one step are reused by the next, without page faults."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")

_SCRIPT = r"""
import json, resource, sys
import numpy as np
from sklearn_cgni.utils import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else None
def step():  # a training step: buffers of a few MB allocated, written, then all freed
    bufs = [np.ones(3 * 512 * 1024) for _ in range(4)]  # 4 x 12 MB
    del bufs
for _ in range(3):  # warm up: the heap reaches its size
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(mode, **env):
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout)


def test_freed_buffers_are_reused_without_page_faults():
    default, tuned = _faults("default"), _faults("tuned")
    assert tuned["applied"] is True
    pages = 48 * 1024**2 // 4096  # one step's pages
    # glibc's defaults return part of them to the system every step, and the next step faults them in
    # again (40,720 faults in 20 steps on Debian 12's glibc 2.36)
    assert default["faults"] > 2 * pages
    assert tuned["faults"] < pages / 10  # kept in the heap: the steps reuse them (0 there)
    assert _faults("tuned", SKLEARN_CGNI_MALLOC="0")["applied"] is False  # the opt-out
