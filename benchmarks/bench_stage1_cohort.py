"""Stage 1 on a simulated cohort: brain-age MAE vs the mean-age baseline, then transfer to WM.

Prints a markdown report: held-out brain-age MAE of ``BrainAgeCNNTransformer`` against
predicting the training mean age (and a ridge regression on voxels as a simple reference),
then held-out balanced accuracy of ``ImagingCNNClassifier`` on the working-memory groups with
the first two blocks transferred from the brain-age model, against the same network trained
from scratch and a logistic regression on voxels.

Usage::

    python benchmarks/bench_stage1_cohort.py --n 600 --shape 24 28 24 --age-effect 0.004
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import train_test_split

from sklearn_cgni.datasets import make_cohort
from sklearn_cgni.imaging import BrainAgeCNNTransformer, ImagingCNNClassifier


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--shape", type=int, nargs=3, default=[24, 28, 24])
    p.add_argument("--age-effect", type=float, default=0.004)
    p.add_argument("--channels", type=int, nargs=5, default=[8, 8, 16, 16, 16])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = tuple(args.shape)
    arch = dict(channels=tuple(args.channels), padding=1, pool_blocks=4, device="cpu")
    c = make_cohort(n_participants=args.n, n_snps=60, shape=shape, age_effect=args.age_effect,
                    n_bad_images=0, random_state=args.seed)
    X, age = c.images, c.phenotypes["age"].to_numpy()
    idx_tr, idx_te = train_test_split(np.arange(len(age)), test_size=0.2, random_state=args.seed)
    print(f"## Stage 1 on make_cohort(n_participants={args.n}, shape={shape}, "
          f"age_effect={args.age_effect}, random_state={args.seed})\n")
    print(f"CNN channels {arch['channels']}, padding=1, pool_blocks=4, Adam, batch 25, "
          f"{args.epochs} epochs, {args.threads} torch thread(s); 80/20 holdout.\n")
    print("| brain age (held-out) | MAE (years) | fit s |\n|---|---|---|")
    mae_mean = np.abs(age[idx_tr].mean() - age[idx_te]).mean()
    print(f"| predict training mean age | {mae_mean:.2f} | |")
    t = time.perf_counter()
    ridge = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(X[idx_tr].reshape(len(idx_tr), -1), age[idx_tr])
    mae_ridge = np.abs(ridge.predict(X[idx_te].reshape(len(idx_te), -1)) - age[idx_te]).mean()
    print(f"| ridge on voxels (reference) | {mae_ridge:.2f} | {time.perf_counter() - t:.0f} |")
    t = time.perf_counter()
    cnn = BrainAgeCNNTransformer(**arch, max_epochs=args.epochs, lr=3e-4, weight_decay=1e-4,
                                 validation_fraction=0, early_stopping=False, lr_schedule="none", random_state=args.seed)
    cnn.fit(X[idx_tr], age[idx_tr])
    mae_cnn = np.abs(cnn.predict(X[idx_te]) - age[idx_te]).mean()
    print(f"| BrainAgeCNNTransformer | {mae_cnn:.2f} | {time.perf_counter() - t:.0f} |")

    wm = c.phenotypes["wm_group"].to_numpy()
    keep = ~np.isnan(wm)
    tr = np.intersect1d(idx_tr, np.flatnonzero(keep))
    te = np.intersect1d(idx_te, np.flatnonzero(keep))
    y = wm.astype(float)
    print(f"\n| WM group (held-out, {len(te)} participants, {int(y[te].sum())} high) | "
          f"balanced accuracy | fit s |\n|---|---|---|")
    t = time.perf_counter()
    lr = LogisticRegressionCV(Cs=8, class_weight="balanced", max_iter=2000,
                              scoring="balanced_accuracy")
    with warnings.catch_warnings():  # scikit-learn 1.9 announces LogisticRegressionCV changes
        warnings.simplefilter("ignore", FutureWarning)
        lr.fit(X[tr].reshape(len(tr), -1), y[tr])
    b = balanced_accuracy_score(y[te], lr.predict(X[te].reshape(len(te), -1)))
    print(f"| logistic regression on voxels (reference) | {b:.3f} | {time.perf_counter() - t:.0f} |")
    for name, kw in [("ImagingCNNClassifier, 2 blocks transferred (paper)",
                      dict(brain_age_model=cnn, n_transfer_blocks=2)),
                     ("same, 2 blocks transferred and frozen",
                      dict(brain_age_model=cnn, n_transfer_blocks=2, freeze_transferred=True)),
                     ("same network from scratch",
                      dict(n_transfer_blocks=0, channels=arch["channels"], padding=1,
                           pool_blocks=4))]:
        t = time.perf_counter()
        clf = ImagingCNNClassifier(**kw, max_epochs=args.epochs, lr=3e-4, weight_decay=1e-4,
                                   class_weight="balanced", validation_fraction=0, early_stopping=False, lr_schedule="none",
                                   device="cpu", random_state=args.seed)
        clf.fit(X[tr], y[tr].astype(int))
        print(f"| {name} | {clf.score(X[te], y[te].astype(int)):.3f} | "
              f"{time.perf_counter() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
