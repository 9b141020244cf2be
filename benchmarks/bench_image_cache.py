"""What the run's float16 image cache (``stage1.image_cache``) saves: a stage-1 CNN epoch from gzip NIfTI files
against the same epoch from the cache.

For each cohort folder given (``sklearn-cgni simulate`` output), it trains the cpu preset's brain-age CNN
(``sklearn-cgni run --preset cpu``'s architecture and recipe, as the brain_age stage builds it) for ``--epochs``
epochs with no early stopping, once reading the NIfTI files and once reading the float16 memory map the
``image_cache`` stage builds (the map is built before the clock starts), alternating the two ``--repeats`` times.
It records wall and CPU seconds per epoch, the time to decode one image, the time to build the cache, and
whether the two arms' training losses agree (float16 inputs: they differ in the 3rd-4th digit).

Usage::

    python benchmarks/bench_image_cache.py --cohorts /tmp/demo_cohort /tmp/cohort_41x48x39 --threads 2

Writes ``benchmarks/results/image_cache.md`` (``--out``). Timings need an otherwise idle machine: run it alone
and read the load average it records.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _images_and_ages(cohort, n):
    pheno = pd.read_csv(Path(cohort) / "phenotypes.csv", dtype={"participant_id": str}).set_index("participant_id")
    paths = pd.Series({pid: str(Path(cohort) / "images" / f"{pid}.nii.gz") for pid in pheno.index})
    paths = paths[[os.path.exists(p) for p in paths]].iloc[:n]
    return paths, pheno.loc[paths.index, "age"].to_numpy(dtype=float)


def _model(epochs, seed):
    from bench_ground_truth_recovery import preset_cnn_kwargs  # same folder: the run's brain-age CNN settings

    from sklearn_cgni.imaging import BrainAgeCNNTransformer

    _, kw = preset_cnn_kwargs("cpu", seed, "pretrain_max_epochs")
    kw.update(device="cpu", early_stopping=False, lr_schedule="none", min_epochs=1, max_restarts=0,
              budget_growth=1.0, callbacks=None, max_epochs=epochs)
    return BrainAgeCNNTransformer(**kw)


def measure(cohort, n, epochs, repeats, scratch):
    from sklearn_cgni.io import check_images
    from sklearn_cgni.io._cache import build_float16_cache
    from sklearn_cgni.io._images import load_image

    paths, age = _images_and_ages(cohort, n)
    source = check_images(paths)
    t0 = time.perf_counter()
    for p in paths.iloc[:100]:
        load_image(p)
    decode_ms = (time.perf_counter() - t0) / min(100, len(paths)) * 1000
    t0, c0 = time.perf_counter(), time.process_time()
    cache = build_float16_cache(source.paths, scratch, source.participant_ids, expected_shape=source.shape,
                                n_threads=1)
    build = (time.perf_counter() - t0, time.process_time() - c0)
    cached = source.backed_by(cache)
    for X in (paths, cached):  # warm-up (first-call costs: allocator, kernels, headers), not timed
        _model(1, seed=0).fit(X, age)
    rows = []
    for rep in range(repeats):
        for arm, X in (("NIfTI files", paths), ("float16 cache", cached)):
            model = _model(epochs, seed=0)
            t0, c0 = time.perf_counter(), time.process_time()
            model.fit(X, age)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            loss = [float(h["train_loss"]) for h in model.history_] if isinstance(model.history_, list) else []
            rows.append({"cohort": Path(cohort).name, "grid": "×".join(map(str, source.shape)), "images": len(paths),
                         "repeat": rep, "arm": arm, "wall_s_per_epoch": wall / epochs,
                         "cpu_s_per_epoch": cpu / epochs, "last_train_loss": loss[-1] if loss else np.nan})
            print(rows[-1], flush=True)
    return pd.DataFrame(rows), decode_ms, build, len(paths), source.shape


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cohorts", nargs="+", required=True, help="sklearn-cgni simulate output folders")
    parser.add_argument("--n-images", type=int, default=400, help="training images per cohort (the first ones)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "image_cache.md"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    frames, facts = [], []
    for cohort in args.cohorts:
        with tempfile.TemporaryDirectory() as scratch:
            df, decode_ms, build, n, shape = measure(cohort, args.n_images, args.epochs, args.repeats, scratch)
        frames.append(df)
        facts.append(f"- `{cohort}`: {n} images of {'×'.join(map(str, shape))}; decoding one gzip NIfTI image: "
                     f"{decode_ms:.1f} ms; building the cache (one thread): {build[0]:.1f} s wall, {build[1]:.1f} s CPU.")
    df = pd.concat(frames, ignore_index=True)
    summary = df.groupby(["cohort", "grid", "images", "arm"], sort=False)[
        ["wall_s_per_epoch", "cpu_s_per_epoch", "last_train_loss"]].median().reset_index()
    ratios = []
    for (cohort, grid), g in summary.groupby(["cohort", "grid"], sort=False):
        f, c = g.set_index("arm").loc["NIfTI files"], g.set_index("arm").loc["float16 cache"]
        ratios.append({"cohort": cohort, "grid": grid, "wall speed-up": f["wall_s_per_epoch"] / c["wall_s_per_epoch"],
                       "CPU speed-up": f["cpu_s_per_epoch"] / c["cpu_s_per_epoch"],
                       "last training loss, files vs cache": f"{f['last_train_loss']:.4f} vs {c['last_train_loss']:.4f}"})
    cmd = ("python benchmarks/bench_image_cache.py --cohorts " + " ".join(args.cohorts)
           + f" --n-images {args.n_images} --epochs {args.epochs} --repeats {args.repeats} --threads {args.threads}")
    lines = [
        "# The float16 image cache against decoding the NIfTI files at every epoch",
        "",
        f"`{cmd}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
        f"{os.cpu_count()} cores, {args.threads} torch thread(s); load average (1 min) {load0:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after.",
        "",
        "The cpu preset's brain-age CNN (its architecture and recipe), trained for "
        f"{args.epochs} epochs without early stopping on the first {args.n_images} images, alternately from the "
        "gzip NIfTI files and from the float16 memory map of the `image_cache` stage (built before the clock "
        f"starts), after one untimed epoch of each; the median of {args.repeats} repeats per arm.",
        "",
        *facts,
        "",
        summary.to_markdown(index=False, floatfmt=".3f"),
        "",
        pd.DataFrame(ratios).to_markdown(index=False, floatfmt=".2f"),
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
