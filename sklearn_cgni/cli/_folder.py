"""Output-folder safety: ``run`` writes only into a new folder or one of its own runs."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ._config import diff_configs
from ._stages import OutputFolderError

__all__ = ["check_output_folder"]

log = logging.getLogger("sklearn_cgni.cli")


def _check_writable(out):
    """The output folder (or the folder it will be made in) must be a writable folder."""
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"Output path {os.fspath(out)!r} is a file, not a folder; choose a folder with --output.")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputFolderError(f"Output folder {os.fspath(out)!r} cannot be made: {os.fspath(parent)!r} is a file.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputFolderError(f"Output folder {os.fspath(out)!r} cannot be written: {os.fspath(parent)!r} is not "
                                "writable (permissions); choose another folder with --output.")


def check_output_folder(out, fingerprint, config, inputs_fp, *, force):
    """Refuse a folder that is not ours or holds another configuration's run, unless ``force``."""
    out = Path(out)
    _check_writable(out)
    if not out.exists() or not any(out.iterdir()):
        return "new"
    run_json = out / "run.json"
    if not run_json.exists():
        if force:
            log.warning("%s is not an sklearn-cgni output folder; writing into it anyway (--force)", out)
            return "forced"
        raise OutputFolderError(
            f"Output folder {os.fspath(out)!r} is not empty and holds no run.json: it is not an sklearn-cgni output "
            "folder. Choose a new folder with --output, or pass --force to write into it (files of the same "
            "names would be overwritten)."
        )
    old = json.loads(run_json.read_text())
    if old.get("fingerprint") == fingerprint:
        return "resume"
    changes = diff_configs(old.get("config", {}), config)
    if old.get("inputs_fingerprint") != inputs_fp:
        changes.append("the input files (paths, sizes or modification times) changed")
    if force:
        log.warning("--force: %s holds a run with another configuration (%s); stages still valid are kept, "
                    "the others recomputed and overwritten", out, "; ".join(changes) or "other inputs")
        return "forced"
    raise OutputFolderError(
        f"Output folder {os.fspath(out)!r} holds a run with a different configuration or inputs:\n  - "
        + "\n  - ".join(changes or ["(unknown difference)"])
        + "\nNothing was changed. Use another --output, or --force to reuse the stages that are still valid "
          "and recompute (overwrite) the others."
    )
