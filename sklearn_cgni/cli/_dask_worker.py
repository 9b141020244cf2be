"""The Dask worker plugin of ``sklearn-cgni run --scheduler`` (imports :mod:`distributed`)."""

from __future__ import annotations

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["ThreadsPlugin"]


class ThreadsPlugin(WorkerPlugin):
    """Gives every task of a worker ``threads`` torch and BLAS/OpenMP threads (``run.threads``).

    The stage tasks set their threads themselves; this also covers the units they hand to the
    cluster (a stage's cross-fitting folds), which may run in a worker no stage task ran in.
    With ``threads = 0`` the worker keeps the libraries' defaults.
    """

    name = "sklearn-cgni-threads"

    def __init__(self, threads):
        self.threads = int(threads)

    def setup(self, worker):
        from ..utils import keep_freed_memory

        keep_freed_memory()  # as the serial run does (run_pipeline)
        if self.threads:
            import torch
            from threadpoolctl import threadpool_limits

            torch.set_num_threads(self.threads)
            self._limits = threadpool_limits(limits=self.threads)  # kept for the worker's lifetime
