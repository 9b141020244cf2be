"""Data-parallel CNN training under torchrun (DistributedDataParallel, CPU, gloo).

Two processes at ``batch_size=b`` must train the same network as one process at ``2b``: the
same epoch order split between the processes (:class:`GeneratorDistributedSampler`), gradients
averaged by DDP, BatchNorm over the global batch, early stopping on rank 0's score. The
command line under ``torchrun --nproc_per_node 2`` writes one complete output folder, from rank 0.

The tests with processes take ~30-90 s on a busy 2-core machine (each process imports torch).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- the sampler alone
def test_sampler_splits_the_single_process_batches_between_the_ranks():
    """Rank r's k-th batch of b, over the ranks, is the k-th batch of 2b of one process (same generator)."""
    from torch.utils.data import DataLoader

    from sklearn_cgni.utils._distributed import GeneratorDistributedSampler

    data = torch.arange(24)
    single = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3))
    ranks = [DataLoader(data, batch_size=4, generator=(g := torch.Generator().manual_seed(3)),
                        sampler=GeneratorDistributedSampler(data, generator=g, num_replicas=2, rank=r))
             for r in range(2)]
    for _ in range(3):  # epochs: the generator advances alike
        batches = list(single)
        parts = [list(loader) for loader in ranks]
        assert len(parts[0]) == len(parts[1]) == len(batches) == 3
        for k, batch in enumerate(batches):
            assert sorted(batch.tolist()) == sorted(parts[0][k].tolist() + parts[1][k].tolist())
    # a size that does not divide: every rank gets as many images (the first are repeated)
    odd = GeneratorDistributedSampler(torch.arange(5), generator=torch.Generator().manual_seed(0),
                                      num_replicas=2, rank=1)
    assert len(odd) == len(list(odd)) == 3


def test_without_torchrun_nothing_is_distributed(monkeypatch):
    from sklearn_cgni.utils._distributed import data_parallel, init_distributed, rank_seed, world_size

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed() == (0, 1)
    assert world_size() == 1 and not data_parallel() and rank_seed(7) == 7
    # WORLD_SIZE without the rest of torchrun's environment: an error that says what is missing
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2 is set but RANK, MASTER_ADDR, MASTER_PORT are not"):
        init_distributed()


# ---------------------------------------------------------------------------- two processes vs one
_FITS = {
    # no validation split: plain training
    "plain": dict(n=16, params=dict(validation_fraction=0.0, early_stopping=False, lr_schedule="none",
                                    max_epochs=3)),
    # a validation split: ConvergenceControl (early stopping, plateau schedule) and BatchNorm recalibration
    "early_stopping": dict(n=20, params=dict(validation_fraction=0.2, early_stopping=True, lr_schedule="plateau",
                                             n_iter_no_change=2, max_epochs=4, recalibrate_bn=True)),
    # the multi-task genotype scorer (learning-rate warm-up)
    "scorer": dict(n=16, scorer=True, params=dict(validation_fraction=0.0, max_epochs=2, warmup_epochs=1)),
}


def _fit(batch_size, n, params, scorer=False):
    from sklearn_cgni.imaging import BrainAgeCNNTransformer, BrainGenotypeScorer

    rng = np.random.RandomState(0)
    X = rng.normal(size=(n, 12, 14, 12)).astype(np.float32)
    y = rng.randint(0, 3, size=(n, 5)) if scorer else rng.uniform(40, 70, size=n)
    # no dropout, no random shifts: those draw per process, so only the batch split is compared
    est = (BrainGenotypeScorer if scorer else BrainAgeCNNTransformer)(
        channels=(4, 8), padding=1, pool_blocks="auto", dropout=0.0, augment_shift=0, batch_size=batch_size,
        lr=1e-2, device="cpu", random_state=0, inference_backend="eager", **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    return {"state": {k: v.detach().clone() for k, v in est.module_.state_dict().items()},
            "transform": est.transform(X), "n_epochs": est.n_epochs_, "best_epoch": est.best_epoch_,
            "valid_loss": [h.get("valid_loss") for h in est.history_]}


def _worker(rank, port, out):
    """One torchrun-like process: the environment torchrun sets, then the same fits."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import sklearn_cgni
    from sklearn_cgni.utils._distributed import data_parallel, init_distributed, shutdown_distributed

    assert init_distributed() == (rank, 2) and data_parallel()
    result = {name: _fit(4, **spec) for name, spec in _FITS.items()}
    result["package"] = sklearn_cgni.__file__
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    shutdown_distributed()  # as `sklearn-cgni run` ends: a barrier, then the groups destroyed


def _conv_bias_before_batchnorm(key, state):
    """A convolution's bias followed by BatchNorm: BatchNorm removes it, its gradient is 0 up to rounding,
    and Adam turns that rounding into steps of +-lr; neither it nor the running mean it shifts matter."""
    if key.endswith(".0.bias") and key.replace(".0.bias", ".1.running_mean") in state:
        return True
    return key.endswith(".1.running_mean") and key.replace(".1.running_mean", ".0.bias") in state


@pytest.mark.slow
def test_two_processes_at_batch_b_train_as_one_process_at_2b(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert Path(ranks[0]["package"]).parent == Path(__import__("sklearn_cgni").__file__).parent
    for name, spec in _FITS.items():
        single = _fit(8, **spec)
        r0, r1 = ranks[0][name], ranks[1][name]
        for key, ref in single["state"].items():
            # the processes hold the same network, bit for bit
            torch.testing.assert_close(r0["state"][key], r1["state"][key], rtol=0, atol=0, msg=f"{name}: {key}")
            if ref.is_floating_point() and not _conv_bias_before_batchnorm(key, single["state"]):
                torch.testing.assert_close(r0["state"][key], ref, rtol=1e-4, atol=1e-5, msg=f"{name}: {key}")
        np.testing.assert_allclose(r0["transform"], single["transform"], rtol=1e-4, atol=1e-4)
        assert r0["n_epochs"] == r1["n_epochs"] == single["n_epochs"]
        assert r0["best_epoch"] == r1["best_epoch"] == single["best_epoch"]
        if name == "early_stopping":
            np.testing.assert_allclose(r0["valid_loss"], single["valid_loss"], rtol=1e-4)


# ---------------------------------------------------------------------------- the stage store
def _stage_worker(rank, port, root):
    """Three stages under two processes: rank 0's alone, a data-parallel one, one failing on rank 0."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    from sklearn_cgni.cli._stages import StageStore
    from sklearn_cgni.utils._distributed import data_parallel, init_distributed, shutdown_distributed

    init_distributed(device="cpu")
    store = StageStore(Path(root) / "stages")
    seen = {}

    def alone(folder):
        (folder / "a.txt").write_text(f"rank {rank}")
        return {"rank": rank, "data_parallel": data_parallel()}

    def everyone(folder):
        (folder / "b.txt").write_text(f"rank {rank}")
        seen["folder"] = str(folder)
        return {"rank": rank, "data_parallel": data_parallel()}

    def failing(folder):
        raise ValueError("bad input")

    out = {"alone": store.run("alone", alone), "everyone": store.run("everyone", everyone, data_parallel=True)}
    out["folder"] = seen["folder"]
    try:
        store.run("failing", failing, after=("alone",))
    except (ValueError, RuntimeError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["fingerprints"] = dict(store.fingerprints)
    (Path(root) / f"rank{rank}.json").write_text(json.dumps(out))
    shutdown_distributed()


@pytest.mark.slow
def test_stage_store_under_two_processes(tmp_path):
    """Rank 0 alone writes; the others compute data-parallel stages in scratch, wait in the rest,
    agree on every fingerprint, and fail (instead of hanging) when rank 0's stage fails."""
    import torch.multiprocessing as mp

    mp.spawn(_stage_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["alone"] == r1["alone"] == {"rank": 0, "data_parallel": False}  # rank 0's result, for everyone
    assert r0["everyone"] == r1["everyone"] == {"rank": 0, "data_parallel": True}
    assert (tmp_path / "stages" / "alone" / "a.txt").read_text() == "rank 0"
    assert (tmp_path / "stages" / "everyone" / "b.txt").read_text() == "rank 0"
    assert r0["folder"] == str(tmp_path / "stages" / "everyone") and not Path(r1["folder"]).exists()
    assert r0["fingerprints"] == r1["fingerprints"]
    assert r0["error"] == "ValueError: bad input"
    assert r1["error"].startswith("RuntimeError: stage 'failing' failed on rank 0 (ValueError: bad input)")
    assert not (tmp_path / "stages" / "failing" / "_done.json").exists()


# ---------------------------------------------------------------------------- the command line
@pytest.mark.slow
def test_torchrun_tiny_run_writes_one_complete_output_folder(tmp_path):
    """``torchrun --nproc_per_node 2 -m sklearn_cgni.cli run --preset tiny``: one folder, written by rank 0.

    Rank 1 computes the CNN stages into scratch folders (under TMPDIR) that it removes, and
    waits for rank 0 in the other stages; a second run resumes every stage.
    """
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    out, scratch = tmp_path / "out", tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env.pop("WORLD_SIZE", None)
    cmd = [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "sklearn_cgni.cli", "run", "--preset", "tiny", "-o", str(out), "--no-progress",
           "--device", "cpu", "--threads", "1"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Report:") == 1  # rank 0 speaks for the run
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and meta["processes"] == 2
    assert (out / "report.html").stat().st_size > 0 and (out / "results.json").exists()
    stages = sorted(p.name for p in (out / "stages").iterdir())
    assert stages == sorted(meta["stage_status"]) and {"brain_age", "finetune_f0", "scores", "confounds"} <= set(stages)
    for name in stages:
        assert (out / "stages" / name / "_done.json").exists(), name
    log = (out / "run.log").read_text()
    assert log.count("sklearn-cgni run ->") == 1 and log.count("stage brain_age      running") == 1
    assert not [p for p in scratch.iterdir() if p.name.startswith("sklearn-cgni-")]  # rank 1's scratch is gone
    assert sorted(os.listdir(tmp_path)) == ["out", "tmp"]  # nothing written next to the folder

    # resuming under torchrun: rank 0 decides that every stage is up to date, the others follow
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["state"] == "resume" and set(meta["stage_status"].values()) == {"reused"}
