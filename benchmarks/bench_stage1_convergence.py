"""Stage 1 trained to convergence: what a small-n 3D CNN needs to learn the regional WM signal.

On the cohort of ``sklearn-cgni run --preset cpu`` (``make_cohort(400, 200, shape=(24, 28, 24),
demographics="reference", random_state=0)``, image QC, WM groups, the CLI's stratified 90/10
holdout and 3 folds), each row changes one thing of stage 1 and reports

* brain-age pre-training (all non-holdout participants): holdout MAE against predicting the
  training mean age, epochs trained and the epoch kept;
* WM fine-tuning of the transferred CNN in each fold: balanced accuracy on the fold's
  training part, its validation part and the holdout (mean over folds), epochs trained/kept;

beside the classical rows a reviewer would try first, on the same folds: regional gray-matter
means (AAL2) -> logistic regression (C by inner 5-fold CV) and age + sex -> logistic regression.

Run alone (it trains ~30 CNNs; about 15-25 min on 2 idle cores)::

    .venv/bin/python benchmarks/bench_stage1_convergence.py
    .venv/bin/python benchmarks/bench_stage1_convergence.py --variants es std --n 800

Writes ``benchmarks/results/stage1_convergence.{md,csv}`` (``--tag`` adds a suffix).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_cgni.cli._protocol import paper_splits
from sklearn_cgni.datasets import make_cohort
from sklearn_cgni.imaging import BrainAgeCNNTransformer, ImagingCNNClassifier, RegionalMeans, \
    image_quality_control
from sklearn_cgni.io import working_memory_groups

RESULTS = Path(__file__).parent / "results"
ARCH = dict(channels=(8, 16, 32, 32), padding=1, pool_blocks=4, global_pool="avg")

# each variant: (description, brain-age kwargs, WM CNN kwargs); later rows build on earlier ones
OLD = dict(early_stopping=False, lr_schedule="none", standardize_voxels=False, validation_fraction=0.0)
ES = dict(early_stopping=True, lr_schedule="plateau", standardize_voxels=False, validation_fraction=0.2,
          n_iter_no_change=10)
STD = {**ES, "standardize_voxels": True}
# what the WM CNN's early stopping watches, unless a row says otherwise (the estimator's default is "loss")
BACC = {"scoring": "balanced_accuracy"}
VARIANTS = {
    "fixed": ("cpu preset before: 4 pre-training / 3 fine-tuning epochs, raw voxels",
              {**OLD, "max_epochs": 4}, {**OLD, "max_epochs": 3}),
    "es": ("early stopping (20 % validation, patience 10, best epoch kept; brain age on MAE, WM on balanced "
           "accuracy) + LR halved on plateau, budget 80",
           {**ES, "max_epochs": 80}, {**ES, "max_epochs": 80}),
    "es_constlr": ("as `es` without the LR schedule (constant 1e-3)",
                   {**ES, "max_epochs": 80, "lr_schedule": "none"}, {**ES, "max_epochs": 80, "lr_schedule": "none"}),
    "es_loss": ("as `es`, WM CNN selected on validation loss instead of balanced accuracy",
                {**ES, "max_epochs": 80}, {**ES, "max_epochs": 80, "scoring": "loss"}),
    "es_loss_contig": ("as `es_loss`, trained on contiguous (NCDHW) tensors instead of channels_last_3d",
                       {**ES, "max_epochs": 80, "memory_format": "contiguous"},
                       {**ES, "max_epochs": 80, "scoring": "loss", "memory_format": "contiguous"}),
    "es_loss_bf16": ("as `es_loss`, trained under bfloat16 autocast",
                     {**ES, "max_epochs": 80, "precision": "bfloat16"},
                     {**ES, "max_epochs": 80, "scoring": "loss", "precision": "bfloat16"}),
    "es_p20": ("as `es`, patience 20 epochs, budget 120", {**ES, "max_epochs": 120, "n_iter_no_change": 20},
               {**ES, "max_epochs": 120, "n_iter_no_change": 20}),
    "es_lr": ("as `es`, learning rate 3e-4 (instead of 1e-3)", {**ES, "max_epochs": 80, "lr": 3e-4},
              {**ES, "max_epochs": 80, "lr": 3e-4}),
    "es_wd": ("as `es` + weight decay 1e-3", {**ES, "max_epochs": 80, "weight_decay": 1e-3},
              {**ES, "max_epochs": 80, "weight_decay": 1e-3}),
    "es_shift": ("as `es` + random shifts of up to 1 voxel (training only)",
                 {**ES, "max_epochs": 80, "augment_shift": 1}, {**ES, "max_epochs": 80, "augment_shift": 1}),
    "std": ("as `es` + voxel-wise standardisation of the input", {**STD, "max_epochs": 80},
            {**STD, "max_epochs": 80}),
    "std_loss": ("as `std`, WM CNN selected on validation loss", {**STD, "max_epochs": 80},
                 {**STD, "max_epochs": 80, "scoring": "loss"}),
    "scratch": ("as `es`, no transfer (WM CNN from scratch)", {**ES, "max_epochs": 80},
                {**ES, "max_epochs": 80, "_scratch": True}),
    "frozen": ("as `es`, the 2 transferred blocks frozen", {**ES, "max_epochs": 80},
               {**ES, "max_epochs": 80, "freeze_transferred": True}),
}


def load_cohort(n, n_snps, shape, demographics, seed):
    c = make_cohort(n, n_snps, shape=shape, demographics=demographics, random_state=seed)
    X = np.asarray(c.images, dtype=np.float32)
    ph = c.phenotypes.reset_index(drop=True)
    qc = image_quality_control(X)
    ok = qc["passed"].to_numpy().astype(bool)
    return X[ok], ph[ok].reset_index(drop=True), c.atlas


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--snps", type=int, default=200)
    p.add_argument("--shape", type=int, nargs=3, default=[24, 28, 24])
    p.add_argument("--demographics", default="reference")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS))
    p.add_argument("--tag", default="")
    p.add_argument("--append", action="store_true",
                   help="keep the rows of other variants from the CSV of an earlier run with the same cohort "
                        "arguments, and add these variants")
    p.add_argument("--render-only", action="store_true",
                   help="rewrite the markdown from the CSV of an earlier run with the same arguments")
    args = p.parse_args(argv)
    if args.render_only:
        stem = RESULTS / f"stage1_convergence{args.tag}"
        write(pd.read_csv(stem.with_suffix(".csv")).to_dict("records"), args, None)
        return
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    t0 = time.perf_counter()
    X, ph, atlas = load_cohort(args.n, args.snps, tuple(args.shape), args.demographics, args.seed)
    groups = working_memory_groups(ph["digit_span"])
    in_wm = groups.reindex(ph.index).notna().to_numpy()
    wm_idx = np.flatnonzero(in_wm)
    y = groups.reindex(ph.index).to_numpy()[in_wm].astype(int)
    train, hold, cv = paper_splits(y, holdout=0.1, folds=args.folds, random_state=args.seed)
    age = ph["age"].to_numpy(float)
    hold_all = wm_idx[hold]
    fit_ba = np.setdiff1d(np.arange(len(ph)), hold_all)  # brain age: every non-holdout participant
    print(f"cohort: {len(ph)} images after QC, {len(y)} in WM groups ({np.bincount(y).tolist()}), "
          f"train {len(train)}, holdout {len(hold)}; {time.perf_counter() - t0:.0f} s", flush=True)

    rows = []
    stem = RESULTS / f"stage1_convergence{args.tag}"
    if args.append and stem.with_suffix(".csv").exists():
        old = pd.read_csv(stem.with_suffix(".csv"))
        rows = old[~old.variant.isin(["classical", *args.variants])].to_dict("records")

    def record(variant, model, fold, split, value, **extra):
        rows.append(dict(variant=variant, model=model, fold=fold, split=split, value=value, **extra))

    # classical rows on the same folds
    R = RegionalMeans(atlas).fit_transform(X)
    Xw, Rw = X[wm_idx], R[wm_idx]
    C = ph[["age", "sex"]].to_numpy(float)[wm_idx]
    inner = StratifiedKFold(5, shuffle=True, random_state=args.seed)
    for k, (tr, va) in enumerate(cv):
        for name, F, model in [
            ("Regional GM -> logistic", Rw, make_pipeline(StandardScaler(), LogisticRegressionCV(
                Cs=np.logspace(-4, 2, 13), cv=inner, scoring="balanced_accuracy", class_weight="balanced",
                max_iter=5000))),
            ("age + sex -> logistic", C, make_pipeline(StandardScaler(), LogisticRegression(
                class_weight="balanced")))]:
            model.fit(F[tr], y[tr])
            for split, ix in (("train", tr), ("validation", va), ("holdout", hold)):
                record("classical", name, k, split, balanced_accuracy_score(y[ix], model.predict(F[ix])))
    mae_mean = float(np.mean(np.abs(age[hold_all] - age[fit_ba].mean())))
    record("classical", "brain age: training mean", -1, "holdout", mae_mean)

    brain_age = {}  # variants with the same pre-training settings share one brain-age CNN
    for v in args.variants:
        desc, ba_kw, wm_kw = VARIANTS[v]
        wm_kw = {**BACC, **wm_kw} if wm_kw.get("early_stopping") else dict(wm_kw)
        scratch = wm_kw.pop("_scratch", False)
        t = time.perf_counter()
        key = json.dumps(ba_kw, sort_keys=True)
        if key not in brain_age:
            ba = BrainAgeCNNTransformer(**ARCH, **ba_kw, device="cpu", random_state=args.seed)
            brain_age[key] = (ba.fit(X[fit_ba], age[fit_ba]), time.perf_counter() - t)
        ba, ba_seconds = brain_age[key]
        mae = float(np.mean(np.abs(ba.predict(X[hold_all]) - age[hold_all])))
        record(v, "brain-age CNN", -1, "holdout", mae, epochs=ba.n_epochs_, best_epoch=ba.best_epoch_,
               seconds=ba_seconds, curve=json.dumps(ba.history_))
        print(f"[{v}] brain age MAE {mae:.2f} (mean {mae_mean:.2f}), epochs {ba.n_epochs_}/{ba.best_epoch_} "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        for k, (tr, va) in enumerate(cv):
            t = time.perf_counter()
            cnn = ImagingCNNClassifier(None if scratch else ba, **ARCH, **wm_kw, class_weight="balanced",
                                       device="cpu", random_state=args.seed).fit(Xw[tr], y[tr])
            pred = cnn.predict(Xw)
            for split, ix in (("train", tr), ("validation", va), ("holdout", hold)):
                record(v, "WM CNN", k, split, balanced_accuracy_score(y[ix], pred[ix]), epochs=cnn.n_epochs_,
                       best_epoch=cnn.best_epoch_, seconds=time.perf_counter() - t,
                       curve=json.dumps(cnn.history_) if split == "train" else None)
            print(f"[{v}] fold {k}: val {rows[-2]['value']:.3f} holdout {rows[-1]['value']:.3f} "
                  f"epochs {cnn.n_epochs_}/{cnn.best_epoch_} {time.perf_counter() - t:.0f} s", flush=True)
        write(rows, args, t0)
    write(rows, args, t0)


def write(rows, args, t0):
    df = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"stage1_convergence{args.tag}"
    df.to_csv(stem.with_suffix(".csv"), index=False)
    lines = [f"# Stage 1 trained to convergence ({time.strftime('%Y-%m-%d')})", "",
             f"`make_cohort({args.n}, {args.snps}, shape={tuple(args.shape)}, demographics={args.demographics!r}, "
             f"random_state={args.seed})`, image QC, WM groups, 90/10 holdout, {args.folds} folds "
             f"(the cohort and splits of `sklearn-cgni run --preset cpu`). CNN {ARCH}, Adam, batch 25, "
             f"class-balanced loss, 2 blocks transferred. {args.threads} torch threads; "
             f"{platform.machine()}, {os.cpu_count()} cores."
             + (f" Wall time {time.perf_counter() - t0:.0f} s." if t0 is not None else ""), "",
             "Reproduce: `.venv/bin/python benchmarks/bench_stage1_convergence.py "
             + " ".join(f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                        for k, v in {**vars(args), "variants": [v for v in dict.fromkeys(df.variant)
                                                                if v != "classical"]}.items()
                        if k not in ("tag", "render_only", "append")) + "`", "",
             "Balanced accuracy in %, mean ± sd over the folds (validation: the fold's held-out part, never seen by "
             "early stopping, which holds out 20 % of the fold's training part; holdout: the 10 % of WM participants shared by "
             "all folds). `s`: seconds of training on a shared machine (0-5 other processes), for orientation "
             "only; rows that share a brain-age CNN repeat its time. One seed: differences of 2-3 points are "
             "within the fold-to-fold spread.", "",
             "| row | change | brain-age MAE (y) | BA epochs run/kept | WM train | WM validation | WM holdout "
             "| WM epochs run/kept | s |", "|---|---|---|---|---|---|---|---|---|"]
    mean_mae = df[(df.model == "brain age: training mean")]["value"].iloc[0]
    for name in ("Regional GM -> logistic", "age + sex -> logistic"):
        d = df[df.model == name].groupby("split")["value"].agg(["mean", "std"]) * 100
        lines.append(f"| classical | {name} | | | {d.loc['train', 'mean']:.1f} | "
                     f"{d.loc['validation', 'mean']:.1f} ± {d.loc['validation', 'std']:.1f} | "
                     f"{d.loc['holdout', 'mean']:.1f} ± {d.loc['holdout', 'std']:.1f} | | |")
    lines.append(f"| classical | predict the training mean age | {mean_mae:.2f} | | | | | | |")
    for v in dict.fromkeys(df.variant):
        if v == "classical":
            continue
        ba = df[(df.variant == v) & (df.model == "brain-age CNN")].iloc[0]
        w = df[(df.variant == v) & (df.model == "WM CNN")]
        d = w.groupby("split")["value"].agg(["mean", "std"]) * 100
        if "holdout" not in d.index:
            continue
        ep = w[w.split == "train"]
        lines.append(
            f"| {v} | {VARIANTS[v][0]} | {ba['value']:.2f} | {int(ba['epochs'])}/{int(ba['best_epoch'])} | "
            f"{d.loc['train', 'mean']:.1f} | {d.loc['validation', 'mean']:.1f} ± {d.loc['validation', 'std']:.1f} | "
            f"{d.loc['holdout', 'mean']:.1f} ± {d.loc['holdout', 'std']:.1f} | "
            f"{ep['epochs'].mean():.0f}/{ep['best_epoch'].mean():.0f} | "
            f"{ba['seconds'] + ep['seconds'].sum():.0f} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
