"""Keep the memory a CPU training step frees for the next step (glibc's malloc).

A 3D CNN step on the CPU allocates and frees buffers of several MB (activations, im2col and
gradient buffers). With glibc's defaults, buffers above the mmap threshold are mapped and
unmapped on every step, and freed memory at the top of the heap is returned to the system once
it exceeds the trim threshold; the next step then touches fresh pages, each a page fault that
the kernel zeroes. At the cpu preset on a 41×48×39 grid that was 160,000 page faults a second
and a quarter of the run's CPU time in the kernel (``benchmarks/results/malloc.md``).
"""

import ctypes
import os
import sys

__all__ = ["keep_freed_memory"]

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

#: What :func:`keep_freed_memory` sets: buffers up to 32 MB (glibc's largest mmap threshold on
#: 64-bit systems) come from the heap, up to 1 GB of freed memory stays in the process, and the
#: heap grows 64 MB at a time.
SETTINGS = {"mmap_threshold": 32 * 1024**2, "trim_threshold": 1024**3, "top_pad": 64 * 1024**2}

_applied = None


def keep_freed_memory():
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the system.

    Sets :data:`SETTINGS` with ``mallopt`` (once per process). The numbers a CNN computes do
    not change, only where its buffers come from; the price is that the process keeps up to
    1 GB of freed memory (its peak resident memory grew by 100-190 MB in the measurement). The
    effect is on Linux with glibc only; elsewhere, or with ``SKLEARN_CGNI_MALLOC=0`` in the
    environment, nothing is done. ``sklearn-cgni run`` and its Dask workers call it at start;
    call it yourself before training the CNN estimators on a CPU in your own script.

    Returns
    -------
    applied : bool
        Whether the settings are in effect.

    Examples
    --------
    >>> from sklearn_cgni.utils import keep_freed_memory
    >>> keep_freed_memory() in (True, False)
    True
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or os.environ.get("SKLEARN_CGNI_MALLOC", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = [mallopt(_M_MMAP_THRESHOLD, SETTINGS["mmap_threshold"]),
            mallopt(_M_TRIM_THRESHOLD, SETTINGS["trim_threshold"]),
            mallopt(_M_TOP_PAD, SETTINGS["top_pad"])]
    _applied = all(r == 1 for r in done)
    return _applied
