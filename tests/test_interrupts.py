"""Interrupts (issue 31): Ctrl-C and SIGTERM never leave a half-trained network or a stage marked done.

skorch's ``fit`` swallows a KeyboardInterrupt and returns; the package's nets re-raise it
(``InterruptibleNetMixin``) and the estimators are left unfitted. ``sklearn-cgni run`` exits
130 (SIGINT) or 143 (SIGTERM) with one line, leaves the interrupted stage without
``_done.json``, records the interruption in run.json and run.log, and a rerun resumes and gives
the same results as an uninterrupted run.

The interrupts are injected at the end of a network's first epoch (or at the start of a
stage), either raised directly (Ctrl-C) or as a real SIGTERM sent to this process; one test
sends a real SIGINT to a command running in a subprocess.
"""

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from sklearn_cgni.cli import main
from sklearn_cgni.cli._stages import StageStore
from sklearn_cgni.utils._skorch import InterruptibleNetMixin

from _tiny_config import TINY_CONFIG  # tests/ is on sys.path

LAST = "models_f0"  # the runs here stop after fold 0's models: brain age, fine-tuning, model fits
MAIN_THREAD = threading.current_thread() is threading.main_thread()


def _interrupt_after_first_epoch(monkeypatch, action, when=lambda: True):
    """Every net of the package calls ``action()`` at the end of its first epoch while ``when()``."""
    from skorch import NeuralNet

    def on_epoch_end(self, net, **kwargs):
        NeuralNet.on_epoch_end(self, net, **kwargs)
        if len(net.history) == 1 and when():
            action()

    monkeypatch.setattr(InterruptibleNetMixin, "on_epoch_end", on_epoch_end, raising=False)


def _ctrl_c():
    raise KeyboardInterrupt


def _sigterm():
    os.kill(os.getpid(), signal.SIGTERM)  # the command's handler raises in this (the main) thread


# ------------------------------------------------------------------------------ estimators
def _tabular(n=48, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = np.hstack([rng.normal(size=(n, 6)) + y[:, None], rng.integers(0, 3, size=(n, 10))]).astype(float)
    return X, y


def _estimators():
    from sklearn_cgni.classification import CGNIClassifier, SparseGeneticNN
    from sklearn_cgni.genetics import ContrastiveSNPEncoder

    return [
        CGNIClassifier(hidden_layer_sizes=(8,), max_epochs=3, batch_size=16, early_stopping=False, random_state=0),
        CGNIClassifier(hidden_layer_sizes=(8,), max_epochs=3, batch_size=16, random_state=0),  # early stopping
        SparseGeneticNN(max_epochs=3, batch_size=16, random_state=0),
        ContrastiveSNPEncoder(image_features=6, n_components=4, image_hidden=(8,), genetic_hidden=(8,),
                              max_epochs=3, batch_size=16, random_state=0),
    ]


@pytest.mark.parametrize("estimator", _estimators(), ids=lambda e: type(e).__name__)
def test_estimator_reraises_an_interrupt_and_stays_unfitted(estimator, monkeypatch):
    X, y = _tabular()
    _interrupt_after_first_epoch(monkeypatch, _ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        estimator.fit(X, y)
    with pytest.raises(NotFittedError):
        check_is_fitted(estimator)
    assert not hasattr(estimator, "net_")
    monkeypatch.undo()  # uninterrupted, the same estimator fits all its epochs
    assert estimator.fit(X, y).n_iter_ >= 1


def test_image_cnn_reraises_an_interrupt_and_a_refit_clears_nothing_stale(monkeypatch):
    from sklearn_cgni.datasets import make_cohort
    from sklearn_cgni.imaging import BrainAgeCNNTransformer

    cohort = make_cohort(n_participants=12, n_snps=40, shape=(24, 28, 24), n_bad_images=0, random_state=0)
    X, age = cohort.images, cohort.phenotypes["age"].to_numpy()
    model = BrainAgeCNNTransformer(channels=(2, 4), padding=1, pool_blocks=2, global_pool="avg", max_epochs=2,
                                   budget_growth=1.0, batch_size=6, device="cpu", random_state=0)
    model.fit(X, age)
    assert model.n_epochs_ == 2
    _interrupt_after_first_epoch(monkeypatch, _ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, age)
    # the previous fit's state is gone too: nothing half-trained can be mistaken for a fitted model
    with pytest.raises(NotFittedError):
        model.transform(X)


# ------------------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny cohort, its config and an uninterrupted run up to fold 0's models."""
    from sklearn_cgni.cli import _run
    from sklearn_cgni.datasets import make_cohort

    root = tmp_path_factory.mktemp("interrupts")
    make_cohort(48, 30, shape=(24, 28, 24), output_dir=root / "cohort", random_state=0, n_jobs=1)
    (root / "tiny.toml").write_text(TINY_CONFIG)
    mp = pytest.MonkeyPatch()
    mp.setattr(_run, "run_pipeline", functools.partial(_run.run_pipeline, only=LAST))
    try:
        assert main(_args(root, root / "reference")) == 0
    finally:
        mp.undo()
    return root


def _args(root, out):
    return ["run", "--cohort", str(root / "cohort"), "--config", str(root / "tiny.toml"), "--preset", "cpu",
            "-o", str(out), "--no-progress", "--device", "cpu", "-q"]


def _results(out):
    """Every stage's result (timings left out), by stage."""
    res = {}
    for done in sorted(Path(out, "stages").glob("*/_done.json")):
        info = json.loads(done.read_text())
        res[done.parent.name] = json.dumps(info["result"], sort_keys=True)
    return {k: json.loads(v) for k, v in res.items()}


def _strip_seconds(obj):
    if isinstance(obj, dict):
        return {k: _strip_seconds(v) for k, v in obj.items() if "seconds" not in k and k != "wall_time_s"}
    if isinstance(obj, list):
        return [_strip_seconds(v) for v in obj]
    return obj


def _snapshot(folder):
    return sorted((os.fspath(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in Path(folder).rglob("*"))


# stage, how, where: "epoch" = end of a network's first epoch in that stage, "start" = before it starts
POINTS = [
    ("brain_age", "SIGINT", "epoch"),     # brain-age pre-training
    ("finetune_f0", "SIGTERM", "epoch"),  # working-memory fine-tuning
    ("models_f0", "SIGINT", "epoch"),     # a model fit (the contrastive encoder, the first net of the stage)
    ("models_f0", "SIGTERM", "epoch"),
    ("finetune_f0", "SIGTERM", "start"),  # between stages: brain_age done, finetune_f0 not started
    ("models_f0", "SIGINT", "start"),     # between stages: finetune_f0 done, models_f0 not started
]


@pytest.mark.parametrize("stage, how, where", POINTS, ids=["-".join(p) for p in POINTS])
def test_run_interrupted_then_resumed_gives_the_same_results(tiny, tmp_path, monkeypatch, capsys, stage, how,
                                                             where):
    from sklearn_cgni.cli import _main, _run

    if how == "SIGTERM" and not MAIN_THREAD:  # pragma: no cover - a signal handler needs the main thread
        pytest.skip("SIGTERM handlers can only be installed in the main thread")
    reference = _results(tiny / "reference")
    out = tmp_path / "out"
    shutil.copytree(tiny / "reference", out)
    # recompute from the interrupted stage on: its folder and those after it are removed
    names = list(reference)
    order = ["data", "regions", "brain_age", "finetune_f0", "models_f0"]
    for name in order[order.index(stage):]:
        shutil.rmtree(out / "stages" / name)
    inputs_before = _snapshot(tiny / "cohort")

    monkeypatch.setattr(_run, "run_pipeline", functools.partial(_run.run_pipeline, only=LAST))
    current = {"stage": None}
    original_run = StageStore.run

    def run(self, name, func, **kwargs):
        current["stage"] = name
        if where == "start" and name == stage:
            (_ctrl_c if how == "SIGINT" else _sigterm)()
        return original_run(self, name, func, **kwargs)

    monkeypatch.setattr(StageStore, "run", run)
    if where == "epoch":
        _interrupt_after_first_epoch(monkeypatch, _ctrl_c if how == "SIGINT" else _sigterm,
                                     when=lambda: current["stage"] == stage)
    code = main(_args(tiny, out))
    err = capsys.readouterr().err
    assert code == (130 if how == "SIGINT" else 143), err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"interrupted by {how} during stage {stage!r}" in lines[0], err
    assert "Run the same command again to resume" in lines[0]
    assert not (out / "stages" / stage / "_done.json").exists()  # never marked done
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["error"]["stage"] == stage, meta.get("error")
    assert f"run interrupted in stage {stage}: interrupted by {how}" in (out / "run.log").read_text()
    assert signal.getsignal(signal.SIGTERM) is not _main._raise_terminated  # the previous handler is back

    monkeypatch.setattr(StageStore, "run", original_run)
    monkeypatch.delattr(InterruptibleNetMixin, "on_epoch_end", raising=False)
    assert main(_args(tiny, out)) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and meta["error"] is None
    assert meta["stage_status"][stage] == "computed"
    resumed = _results(out)
    assert list(resumed) == names
    assert _strip_seconds(resumed) == _strip_seconds(reference)
    assert _snapshot(tiny / "cohort") == inputs_before  # no input file changed


def test_real_sigint_to_a_running_command(tiny, tmp_path):
    """Ctrl-C as a terminal sends it: SIGINT to the command running in its own process."""
    out = tmp_path / "out"
    shutil.copytree(tiny / "reference", out)
    shutil.rmtree(out / "stages" / "brain_age")
    (out / "run.log").unlink()  # the log is appended to: wait for this run's line
    cfg = tmp_path / "slow.toml"  # a budget long enough to be interrupted in the middle
    cfg.write_text(TINY_CONFIG.replace("pretrain_max_epochs = 2", "pretrain_max_epochs = 200"))
    args = _args(tiny, out)
    args[args.index(str(tiny / "tiny.toml"))] = str(cfg)
    args.remove("-q")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    # SIGINT as a terminal's command has it: a test runner started in the background (`cmd &` in a script)
    # ignores SIGINT, its children inherit that, and Python then installs no handler of its own
    proc = subprocess.Popen([sys.executable, "-m", "sklearn_cgni.cli", *args, "--force"], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd=os.getcwd(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = out / "run.log"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and any(line.split()[-3:-1] == ["stage", "brain_age"] and line.endswith("running")
                                    for line in log.read_text().splitlines() if len(line.split()) > 3):
                break
            time.sleep(0.2)
        time.sleep(1.0)  # into the training loop
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted by SIGINT during stage 'brain_age'" in err
    assert not (out / "stages" / "brain_age" / "_done.json").exists()
    assert json.loads((out / "run.json").read_text())["error"]["stage"] == "brain_age"


@pytest.mark.parametrize("error, code", [(RuntimeError("something unforeseen\non two lines"), 1),
                                         (ValueError("Phenotype file 'p.csv', column 'age': bad"), 2)])
def test_a_failed_run_records_its_error_and_stage(tiny, tmp_path, monkeypatch, capsys, error, code):
    import dataclasses

    from sklearn_cgni.cli import _run
    from sklearn_cgni.cli.stages import REGISTRY

    out = tmp_path / "out"
    shutil.copytree(tiny / "reference", out)
    shutil.rmtree(out / "stages" / "models_f0")
    monkeypatch.setattr(_run, "run_pipeline", functools.partial(_run.run_pipeline, only=LAST))

    def failing(run, folder, k):
        raise error

    monkeypatch.setitem(REGISTRY, "models", dataclasses.replace(REGISTRY["models"], func=failing))
    assert main(_args(tiny, out)) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([line for line in err.splitlines() if line.strip()]) == 1, err
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "failed"
    assert meta["error"] == {"stage": "models_f0", "type": type(error).__name__,
                             "message": f"{type(error).__name__}: {' '.join(str(error).split())}"}
    log = (out / "run.log").read_text()
    assert f"ERROR run failed in stage models_f0: {type(error).__name__}: " in log
    assert "DEBUG traceback:" in log and 'raise error' in log  # the traceback, at debug level
    if code == 1:
        assert "error in stage 'models_f0': RuntimeError: something unforeseen on two lines" in err
        assert "run.log" in err


def test_early_stopping_still_ends_training_normally():
    """skorch's EarlyStopping raises KeyboardInterrupt itself to stop: that is not an interrupt."""
    from sklearn_cgni.classification import CGNIClassifier

    X, y = _tabular(n=60)
    clf = CGNIClassifier(hidden_layer_sizes=(8,), max_epochs=200, batch_size=16, lr=0.05, early_stopping=True,
                         n_iter_no_change=2, random_state=0)
    try:
        clf.fit(X, y)
    except KeyboardInterrupt:  # a real interrupt would stop pytest itself: fail this test instead
        pytest.fail("EarlyStopping's KeyboardInterrupt was taken for Ctrl-C")
    assert clf.n_iter_ < 200 and clf.best_epoch_ <= clf.n_iter_  # stopped early, fitted
    check_is_fitted(clf)
