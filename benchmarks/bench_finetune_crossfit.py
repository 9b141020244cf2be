"""Why CGNI with the last CNN block fine-tuned loses to h_v alone (issue 14, item 4): a diagnosis.

Reads one outer fold of a ``bench_paper_size.py`` run folder (its B copy, which holds the fold's
fine-tuned CNN, ``h_v``, QC'd genotypes and splits) and refits stage 2 with row B's settings and
the values fold 0's nested search chose for the fine-tuned row, then compares on the fold's
validation part:

1. whether fine-tuning loses working-memory information: ``h_v`` -> logistic regression vs the
   fine-tuned ``h_v`` -> logistic regression, and the held-out cross-modal matching with and
   without fine-tuning;
2. whether cross-fitting is the problem: stage 3 trained on the refit encoder's transforms of
   the training rows vs on the out-of-fold transforms (3 folds, as row B), and how well the
   out-of-fold ``z_g`` agree with the refit's (mean cosine, before and after an orthogonal
   Procrustes rotation fitted on the fold encoder's training rows), with ``h_v`` fixed.

Usage (results quoted in ``results/paper_size_finetune_n1000.md``)::

    OMP_NUM_THREADS=1 python benchmarks/bench_finetune_crossfit.py \\
        /tmp/sklearn_cgni_paper_size/n1000_independent_region_B --fold 0
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
import pandas as pd


def main(argv=None):
    import torch
    from scipy.linalg import orthogonal_procrustes
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sklearn_cgni.classification import CGNIClassifier
    from sklearn_cgni.genetics import ContrastiveSNPEncoder
    from sklearn_cgni.imaging import ImagingCNNClassifier

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_folder")
    ap.add_argument("--fold", type=int, default=0)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    st = f"{args.run_folder}/stages"
    parts = pd.read_csv(f"{st}/data/participants.csv", dtype={"participant_id": str}).set_index("participant_id")
    mask = parts["wm_group"].notna().to_numpy() & parts["image_qc_passed"].to_numpy()
    wm, G = parts[mask], np.load(f"{st}/data/genotypes_qc.npy")[mask]
    y = wm["wm_group"].astype(int).to_numpy()
    tr, va = map(np.asarray, json.loads(open(f"{st}/data/splits.json").read())["folds"][args.fold])
    hv = np.load(f"{st}/finetune_f{args.fold}/hv.npy")
    cnn = ImagingCNNClassifier.from_weights(f"{st}/finetune_f{args.fold}/cnn.pt", wm["image"].iloc[:2], device="cpu")
    A = cnn.transform_blocks(wm["image"], 1)
    chosen = {r["model"]: r["best_params"] for r in
              json.loads(open(f"{st}/models_f{args.fold}/_done.json").read())["result"]["search"]}
    nz = 32
    base = dict(standardize=True, n_components=nz, image_hidden=(), max_epochs=200, early_stopping=True,
                scoring="matching", n_iter_no_change=15, snp_dropout=0.2, device="cpu", random_state=0)

    def logit(F, Fv):
        m = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=5, class_weight="balanced", max_iter=3000))
        return 100 * balanced_accuracy_score(y[va], m.fit(F, y[tr]).predict(Fv))

    def stage3(F, Fv):
        m = CGNIClassifier(hidden_layer_sizes=(64, 32), max_epochs=15, class_weight="balanced", device="cpu",
                           random_state=0)
        return 100 * balanced_accuracy_score(y[va], m.fit(F, y[tr]).predict(Fv))

    def crossfit(enc, X):
        """Refit on the training rows; out-of-fold transforms, raw and Procrustes-aligned on z_g."""
        full = clone(enc).fit(X[tr], y[tr])
        Z = full.transform(X[tr])
        oof, aligned, cos = np.empty_like(Z), np.empty_like(Z), []
        for a, b in StratifiedKFold(3, shuffle=True, random_state=0).split(X[tr], y[tr]):
            e = clone(enc).fit(X[tr][a], y[tr][a])
            part = e.transform(X[tr][b])
            R, _ = orthogonal_procrustes(e.transform(X[tr][a])[:, :nz], Z[a, :nz])
            oof[b], aligned[b] = part, part
            aligned[b, :nz] = part[:, :nz] @ R
            cos.append(((part[:, :nz] * Z[b, :nz]).sum(1).mean(), (aligned[b, :nz] * Z[b, :nz]).sum(1).mean()))
        return full, Z, full.transform(X[va]), oof, aligned, np.mean(cos, axis=0)

    print(f"fold {args.fold}: {len(tr)} training, {len(va)} validation participants")
    print(f"h_v -> logistic: {logit(hv[tr], hv[va]):.1f}")
    fixed = ContrastiveSNPEncoder(image_features=hv.shape[1], **base,
                                  **{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in chosen["CGNI contrastive (terms 1+2+4)"].items()})
    XH = np.hstack([hv, G]).astype(np.float32)
    full, Z, Zv, oof, aligned, (c_raw, c_al) = crossfit(fixed, XH)
    print(f"h_v fixed ({chosen['CGNI contrastive (terms 1+2+4)']}): matching train {full.score(XH[tr]):.3f}, "
          f"validation {full.score(XH[va]):.3f}; out-of-fold z_g vs refit's, mean cosine {c_raw:.2f} "
          f"(Procrustes-aligned {c_al:.2f}); stage 3 on refit's transforms {stage3(Z, Zv):.1f}, on out-of-fold "
          f"{stage3(oof, Zv):.1f}, on aligned out-of-fold {stage3(aligned, Zv):.1f}")
    p = {k: tuple(v) if isinstance(v, list) else v for k, v in chosen["CGNI fine-tuning the last CNN blocks"].items()}
    tuned = ContrastiveSNPEncoder(image_features=A.shape[1], image_tail=cnn.last_blocks(1), **base, **p)
    XA = np.hstack([A, G]).astype(np.float32)
    full, Z, Zv, oof, aligned, (c_raw, c_al) = crossfit(tuned, XA)
    print(f"last block fine-tuned ({chosen['CGNI fine-tuning the last CNN blocks']}): matching train "
          f"{full.score(XA[tr]):.3f}, validation {full.score(XA[va]):.3f}; fine-tuned h_v -> logistic "
          f"{logit(Z[:, nz:], Zv[:, nz:]):.1f} (trained on the refit's h_v), {logit(oof[:, nz:], Zv[:, nz:]):.1f} "
          f"(on the out-of-fold h_v); stage 3 on refit's transforms {stage3(Z, Zv):.1f}, on out-of-fold "
          f"{stage3(oof, Zv):.1f}")


if __name__ == "__main__":
    main()
