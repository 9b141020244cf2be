"""Resumable stages: each stage's outputs live in ``<output>/stages/<name>/`` with a fingerprint.

A stage is done when its folder holds ``_done.json`` whose fingerprint equals the hash of
(the stage's code version, the config sections it reads, its inputs' fingerprint, the
fingerprints of the stages it reads from). ``_done.json`` is written last (atomically), so an
interrupted stage has none and is recomputed from scratch; a stage whose fingerprint changed
is recomputed and every stage downstream of it follows, since their fingerprints chain.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from ._config import config_fingerprint

__all__ = ["StageStore", "OutputFolderError", "epoch_bar_callback", "progress_bar", "json_default"]

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


def progress_bar(iterable=None, *, enabled=True, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **kwargs)


def epoch_bar_callback(desc, total, enabled=True):
    """A skorch callback drawing one tqdm bar per training run, advanced once per epoch."""
    from skorch.callbacks import Callback

    class EpochBar(Callback):
        def __init__(self, desc="", total=0, enabled=True):
            self.desc = desc
            self.total = total
            self.enabled = enabled

        def on_train_begin(self, net, **kwargs):
            self.bar_ = progress_bar(total=self.total, desc=self.desc, unit="epoch", leave=False,
                                     enabled=self.enabled, position=1)

        def on_epoch_end(self, net, **kwargs):
            loss = net.history[-1].get("train_loss")
            if loss is not None:
                self.bar_.set_postfix(loss=f"{loss:.4g}")
            self.bar_.update(1)

        def on_train_end(self, net, **kwargs):
            self.bar_.close()

        def __getstate__(self):
            state = dict(self.__dict__)
            state.pop("bar_", None)
            return state

    return EpochBar(desc=desc, total=total, enabled=enabled)


class StageStore:
    """Runs named stages in ``root``, skipping those whose outputs are valid."""

    def __init__(self, root):
        self.root = Path(root)
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

    def run(self, name, func, *, config=None, inputs=None, after=()):
        """Run ``func(stage_dir) -> dict`` unless its valid outputs are already there.

        Returns the stage's result dict (from ``_done.json`` when skipped).
        """
        fp = self.fingerprint(name, config=config, inputs=inputs, after=after)
        info = self.done_info(name)
        folder = self.root / name
        if info is not None and info.get("fingerprint") == fp:
            log.info("stage %-14s up to date (computed in %.1f s), skipped", name, info.get("seconds", 0))
            # downstream fingerprints chain on this computation's token: recomputing a stage
            # (even with the same configuration) invalidates the stages that read its outputs
            self.fingerprints[name] = f"{fp}:{info.get('token', '')}"
            self.timings[name] = info.get("seconds", 0.0)
            self.cpu_timings[name] = info.get("cpu_seconds", 0.0)
            self.status[name] = "reused"
            return info["result"]
        if folder.exists():
            why = "its inputs or configuration changed" if info is not None else "it was interrupted"
            log.info("stage %-14s recomputed: %s", name, why)
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        t0, c0 = time.perf_counter(), time.process_time()
        log.info("stage %-14s running", name)
        self.current = name
        result = func(folder) or {}
        self.current = None  # cleared only on success: after an error it names the stage that failed
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        token = uuid.uuid4().hex[:12]
        write_json(folder / "_done.json", {"stage": name, "fingerprint": fp, "token": token, "seconds": seconds,
                                           "cpu_seconds": cpu_seconds,
                                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                           "result": _clean(result)})
        log.info("stage %-14s done in %.1f s", name, seconds)
        self.fingerprints[name] = f"{fp}:{token}"
        self.timings[name] = seconds
        self.cpu_timings[name] = cpu_seconds
        self.status[name] = "computed"
        return json.loads((folder / "_done.json").read_text())["result"]
