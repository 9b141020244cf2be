"""Resumable stages: each stage's outputs live in ``<output>/stages/<name>/`` with a fingerprint.

A stage is done when its folder holds ``_done.json`` whose fingerprint equals the hash of
(the stage's code version, the config sections it reads, its inputs' fingerprint, the
fingerprints of the stages it reads from). ``_done.json`` is written last (atomically), so an
interrupted stage has none and is recomputed from scratch; a stage whose fingerprint changed
is recomputed and every stage downstream of it follows, since their fingerprints chain.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from ..utils._progress import progress_bar
from ._config import config_fingerprint

__all__ = ["StageStore", "OutputFolderError", "progress_bar", "json_default"]

# 2: the regions stage covers every participant with a QC-passed image
# 3: models_f0 saves its encoder with ContrastiveSNPEncoder.save_weights (encoder.pt)
# 4: participants sorted by ID, variants in the canonical order; typed phenotype columns
STAGE_CODE_VERSION = 4
log = logging.getLogger("sklearn_cgni.cli")


class OutputFolderError(RuntimeError):
    """The output folder cannot be used without ``--force`` (foreign or from another config)."""


def json_default(obj):
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return os.fspath(obj)
    return str(obj)


def write_json(path, obj):
    """Write JSON atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=json_default, allow_nan=False)
                   if _finite(obj) else json.dumps(_clean(obj), indent=2, default=json_default))
    os.replace(tmp, path)


def _finite(obj):
    try:
        json.dumps(obj, default=json_default, allow_nan=False)
        return True
    except ValueError:
        return False


def _clean(obj):
    """NaN/inf -> None, recursively (JSON has no NaN)."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    try:
        import numpy as np

        if isinstance(obj, np.floating):
            return float(obj) if np.isfinite(obj) else None
        if isinstance(obj, np.ndarray):
            return _clean(obj.tolist())
    except ImportError:  # pragma: no cover
        pass
    return obj


class StageStore:
    """Runs named stages in ``root``, skipping those whose outputs are valid.

    Under ``torchrun`` (more than one process) every process walks the same plan; rank 0 alone
    decides whether a stage is up to date and writes the stage folders and ``_done.json``. A
    stage registered ``data_parallel`` (it trains an image CNN) is computed by every process,
    the others into a scratch folder that is removed afterwards; any other stage is computed by
    rank 0 alone (its CNN fits, if any, on rank 0 alone) while the others wait for its outcome.
    Then every process reads rank 0's ``_done.json``.
    """

    def __init__(self, root):
        from ..utils._distributed import is_main_process

        self.root = Path(root)
        self.main = is_main_process()
        if self.main:
            self.root.mkdir(parents=True, exist_ok=True)
        self.fingerprints = {}
        self.timings = {}
        self.cpu_timings = {}  # CPU seconds of this process (all its threads), for the cost benchmark
        self.status = {}
        self.current = None  # the stage being computed now (None between stages)

    def path(self, name):
        return self.root / name

    def done_info(self, name):
        done = self.root / name / "_done.json"
        if not done.exists():
            return None
        try:
            return json.loads(done.read_text())
        except (OSError, ValueError):
            return None

    def fingerprint(self, name, *, config=None, inputs=None, after=()):
        missing = [a for a in after if a not in self.fingerprints]
        if missing:
            raise RuntimeError(f"stage {name!r} needs stage(s) {missing} to run first")
        return config_fingerprint({
            "stage": name, "version": STAGE_CODE_VERSION, "config": config, "inputs": inputs,
            "after": {a: self.fingerprints[a] for a in after},
        })

    def _record(self, name, info, status):
        # downstream fingerprints chain on this computation's token: recomputing a stage
        # (even with the same configuration) invalidates the stages that read its outputs
        self.fingerprints[name] = f"{info['fingerprint']}:{info.get('token', '')}"
        self.timings[name] = info.get("seconds", 0.0)
        self.cpu_timings[name] = info.get("cpu_seconds", 0.0)
        self.status[name] = status
        return info["result"]

    def run(self, name, func, *, config=None, inputs=None, after=(), data_parallel=False):
        """Run ``func(stage_dir) -> dict`` unless its valid outputs are already there.

        Returns the stage's result dict (from ``_done.json`` when skipped). ``data_parallel``:
        under torchrun every process runs ``func`` (see the class).
        """
        from ..utils._distributed import broadcast_object, world_size

        fp = self.fingerprint(name, config=config, inputs=inputs, after=after)
        info = self.done_info(name) if self.main else None
        folder = self.root / name
        if broadcast_object(info is not None and info.get("fingerprint") == fp):
            log.info("stage %-14s up to date (computed in %.1f s), skipped", name, info.get("seconds", 0) if info else 0)
            return self._record(name, self.done_info(name), "reused")
        if self.main:
            if folder.exists():
                why = "its inputs or configuration changed" if info is not None else "it was interrupted"
                log.info("stage %-14s recomputed: %s", name, why)
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            log.info("stage %-14s running", name)
        distributed = world_size() > 1
        if self.main or data_parallel:
            self._compute(name, func, folder, fp, data_parallel, distributed)
        outcome = broadcast_object("done") if distributed else "done"  # rank 0 has written _done.json
        if outcome != "done":
            raise RuntimeError(f"stage {name!r} failed on rank 0 ({outcome}); see rank 0's run.log")
        return self._record(name, self.done_info(name), "computed")

    def _compute(self, name, func, folder, fp, data_parallel, distributed):
        import tempfile

        from ..utils._distributed import broadcast_object, local_training

        work = folder if self.main else Path(tempfile.mkdtemp(prefix=f"sklearn-cgni-{name}-"))
        t0, c0 = time.perf_counter(), time.process_time()
        self.current = name
        try:  # a stage of rank 0 alone trains its CNNs (if any) on rank 0 alone
            with (contextlib.nullcontext() if data_parallel else local_training()):
                result = func(work) or {}
        except BaseException as exc:
            if distributed and not data_parallel:  # the others wait for this stage's outcome: tell them
                broadcast_object(f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            if not self.main:
                shutil.rmtree(work, ignore_errors=True)
        self.current = None  # cleared only on success: after an error it names the stage that failed
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        if self.main:
            token = uuid.uuid4().hex[:12]
            write_json(folder / "_done.json", {"stage": name, "fingerprint": fp, "token": token, "seconds": seconds,
                                               "cpu_seconds": cpu_seconds,
                                               "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                               "result": _clean(result)})
            log.info("stage %-14s done in %.1f s", name, seconds)
