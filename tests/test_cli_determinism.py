"""Two whole runs of ``sklearn-cgni run`` with the same seed write the same numbers.

The first run is the shared tiny run of test_cli.py (session fixture ``finished_run``, run in
this process); the second runs the same command into another folder in a fresh Python
process with another ``PYTHONHASHSEED``, so that neither state left in the process (caches,
torch's global generator) nor set/dict ordering can make the two agree by accident. Both
run with ``run.threads = 1`` (the tiny config): the seed fixes every random draw, but the
number of torch CPU threads changes how float sums are split, so a run at 1 thread and one
at 2 threads differ (measured on this tiny run: brain-age holdout MAE 6.97773 vs 6.97917 years,
and 5 of the 66 per-fold balanced accuracies of tables/per_fold_scores.csv by 0.024-0.095, since a 2-epoch model's
predictions flip on small changes); two runs at the same thread count, 1 or 2, were identical
on CPU (docs/user_guide.rst, "Reproducibility of a run"). A GPU run has not been checked.

Compared exactly (floats included): every value of ``results.json`` except the volatile keys
below, every CSV under ``tables/`` except the volatile columns, and every file a stage wrote
under ``stages/`` (arrays, images, tables) byte for byte except ``_done.json``; the torch files
(``*.pt``: weights and parameters) by their loaded content, tensors exactly, because their
bytes may differ with equal content: pickle writes a string once and refers back to it when it
meets the same object again, so ``device="cpu"`` read from the command line (the subprocess)
and the interned ``"cpu"`` of a Python literal (the in-process run) give different bytes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import sklearn_cgni
from test_cli import _base_args, finished_run, tiny_cohort  # noqa: F401  (shared session fixtures)

# Keys of results.json that are not results, and why they may differ between two runs:
VOLATILE_METADATA = {
    "started": "wall-clock timestamp of the run",
    "finished": "wall-clock timestamp of the run",
    "wall_time_s": "timing of the run",
    "stage_seconds": "timing of each stage",
    "argv": "holds the output folder, which differs (checked separately below)",
}
# "seconds", at any depth: the fit time of each model (stages.models_f*.records[*].seconds and the
# same rows in tables.per_fold_scores and tables/per_fold_scores.csv).
VOLATILE_ANYWHERE = {"seconds": "fit time of a model"}
# _done.json of each stage holds its timing (seconds, cpu_seconds, finished) and a random token
# (uuid4) that chains the downstream fingerprints for resuming.
VOLATILE_FILES = {"_done.json"}


def _differences(a, b, path="results.json"):
    """Paths at which two JSON values differ, skipping the volatile keys; exact equality."""
    if type(a) is not type(b):
        return [f"{path}: {a!r} vs {b!r}"]
    if isinstance(a, dict):
        skip = set(VOLATILE_ANYWHERE) | (set(VOLATILE_METADATA) if path == "results.json/metadata" else set())
        out = [f"{path}: keys {sorted(set(a) ^ set(b))}"] if set(a) != set(b) else []
        for key in sorted(set(a) & set(b) - skip):
            out += _differences(a[key], b[key], f"{path}/{key}")
        return out
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    if a != b and not (a != a and b != b):  # NaN (null in JSON is None) equals NaN
        return [f"{path}: {a!r} vs {b!r}"]
    return []


def _same_content(a, b):
    """Exact equality of two loaded torch files (nested dicts/lists of tensors, arrays, values)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same_content(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_content(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


def test_two_runs_with_the_same_seed_write_identical_results(finished_run, tmp_path):  # noqa: F811
    cohort, cfg, first = finished_run
    second = tmp_path / "second"
    args = _base_args(cohort, cfg, second)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "12345", "MPLBACKEND": "Agg",
           # the sklearn_cgni imported here (a worktree may differ from the installed one)
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(sklearn_cgni.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}
    res = subprocess.run([sys.executable, "-m", "sklearn_cgni.cli", *args, "--quiet"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]

    a = json.loads((first / "results.json").read_text())
    b = json.loads((second / "results.json").read_text())
    assert a["metadata"]["threads"] == b["metadata"]["threads"] == 1
    assert set(b["metadata"]["stage_status"].values()) == {"computed"}  # nothing was reused
    diffs = _differences(a, b)
    assert not diffs, "\n".join(diffs[:40])
    # the recorded command is the one given, and differs only in the output folder
    argv_a, argv_b = a["metadata"]["argv"], b["metadata"]["argv"]
    assert argv_b == ["sklearn-cgni", *args, "--quiet"]
    assert [x for x in argv_a if x != str(first)] == [x for x in argv_b if x not in (str(second), "--quiet")]

    csvs = sorted(p.relative_to(first) for p in (first / "tables").glob("*.csv"))
    assert csvs == sorted(p.relative_to(second) for p in (second / "tables").glob("*.csv")) and csvs
    for rel in csvs:
        ta, tb = pd.read_csv(first / rel), pd.read_csv(second / rel)
        volatile = [c for c in VOLATILE_ANYWHERE if c in ta.columns]
        pd.testing.assert_frame_equal(ta.drop(columns=volatile), tb.drop(columns=volatile), check_exact=True,
                                      obj=str(rel))

    files_a = sorted(p.relative_to(first) for p in (first / "stages").rglob("*")
                     if p.is_file() and p.name not in VOLATILE_FILES)
    files_b = sorted(p.relative_to(second) for p in (second / "stages").rglob("*")
                     if p.is_file() and p.name not in VOLATILE_FILES)
    assert files_a == files_b and files_a
    assert any(rel.suffix == ".pt" for rel in files_a)
    differ = [str(rel) for rel in files_a if rel.suffix != ".pt"
              and (first / rel).read_bytes() != (second / rel).read_bytes()]
    differ += [str(rel) for rel in files_a if rel.suffix == ".pt" and not _same_content(
        torch.load(first / rel, weights_only=True), torch.load(second / rel, weights_only=True))]
    assert not differ, f"stage outputs that differ between the two runs: {differ}"
