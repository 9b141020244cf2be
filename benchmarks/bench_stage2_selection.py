"""Stage 2 of CGNI: does model selection on a held-out cross-modal objective stop the memorising?

On a simulated cohort with planted gene -> brain effects (``make_cohort``), stage 1 is trained
once (brain-age CNN with early stopping, every non-holdout participant, ``h_v`` cached), then
each row trains the contrastive encoder on the training participants of the working-memory
groups and reports, on participants it never saw:

* ``matching`` on validation and holdout: :func:`sklearn_cgni.genetics.matching_score` of
  ``z_v`` and ``z_g`` (0.5 = chance): are the two modalities of one participant matched?
* ``SCCA r1``: the first canonical correlation of (``z_v``, ``z_g``) by
  :class:`~sklearn_cgni.explain.SparseCCA` fitted on the training participants, on the
  holdout (issue 14's target: >= 0.3);
* ``z_g -> gene score``: holdout correlation of a ridge (fitted on train) from ``z_g`` to the
  planted genetic score of the brain (sum over causal SNPs of dosage x planted effect size,
  from ``ground_truth``): how much of the causal genetic signal z_g keeps; the oracle row
  gives the same ridge the SNPs themselves;
* ``CGNI`` holdout balanced accuracy of stage 3 (``CGNIClassifier`` on ``[z_g, image
  features]``, the encoder cross-fitted over 5 folds as in the cpu preset), beside the
  classical rows on the same participants: image features alone -> logistic regression,
  SNPs alone -> logistic regression, age + sex -> logistic regression.

Rows: the paper's fixed 50 epochs; early stopping on the held-out loss; early stopping on held-out
matching; the same with the regularisers (dropout, SNP input dropout, weight decay); and the
last one with regional gray-matter means (AAL2) as the image input instead of ``h_v`` (issue 14,
item 4: which representation carries the genetic signal).

Usage (the results file was written by this)::

    OMP_NUM_THREADS=2 python benchmarks/bench_stage2_selection.py --n 1000 --snps 300

Writes ``benchmarks/results/stage2_selection.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_cgni.classification import CGNIClassifier
from sklearn_cgni.datasets import make_cohort
from sklearn_cgni.evaluation import CrossFitTransformer
from sklearn_cgni.explain import SparseCCA
from sklearn_cgni.genetics import ContrastiveSNPEncoder, SNPQualityFilter, matching_score
from sklearn_cgni.imaging import BrainAgeCNNTransformer, RegionalMeans, image_quality_control

RESULTS = Path(__file__).parent / "results"
CNN = dict(channels=(8, 16, 32, 32), padding=1, pool_blocks=4, global_pool="avg")
SMALL = dict(n_components=32, image_hidden=(64, 64), genetic_hidden=(128, 64), batch_size=50)
REG = dict(dropout=0.2, snp_dropout=0.2, weight_decay=1e-4)
ROWS = {
    "paper": ("fixed 50 epochs (the paper)", "h_v", dict(max_epochs=50)),
    "es_loss": ("early stopping on held-out loss (budget 200)", "h_v",
                dict(max_epochs=200, early_stopping=True, scoring="loss", n_iter_no_change=15)),
    "es_matching": ("early stopping on held-out matching (budget 200)", "h_v",
                    dict(max_epochs=200, early_stopping=True, scoring="matching", n_iter_no_change=15)),
    "es_matching_reg": ("as es_matching + dropout 0.2, SNP dropout 0.2, weight decay 1e-4", "h_v",
                        dict(max_epochs=200, early_stopping=True, scoring="matching", n_iter_no_change=15, **REG)),
    "regions_es_matching_reg": ("as es_matching_reg, image input = regional GM means instead of h_v", "regions",
                                dict(max_epochs=200, early_stopping=True, scoring="matching", n_iter_no_change=15,
                                     **REG)),
}


def logistic():
    return make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=8, cv=5, class_weight="balanced",
                                                                scoring="balanced_accuracy", max_iter=2000))


def stage1(args, X, age, fit_rows):
    key = hashlib.sha1(json.dumps([vars(args)[k] for k in ("n", "snps", "shape", "seed")]).encode()).hexdigest()[:12]
    cache = Path(args.cache) / f"stage2_selection_hv_{key}.npz"
    if cache.exists():
        d = np.load(cache)
        return d["hv"], float(d["mae"]), 0.0
    t = time.perf_counter()
    cnn = BrainAgeCNNTransformer(**CNN, max_epochs=100, early_stopping=True, validation_fraction=0.2,
                                 n_iter_no_change=10, device="cpu", random_state=args.seed)
    cnn.fit(X[fit_rows], age[fit_rows])
    hv = cnn.transform(X)
    rest = np.setdiff1d(np.arange(len(X)), fit_rows)
    mae = float(np.mean(np.abs(cnn.predict(X[rest]) - age[rest])))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, hv=hv, mae=mae)
    return hv, mae, time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--snps", type=int, default=300)
    ap.add_argument("--shape", type=int, nargs=3, default=[24, 28, 24])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", nargs="+", default=list(ROWS))
    ap.add_argument("--cache", default="/tmp/sklearn_cgni_bench_cache")
    ap.add_argument("--out", default=os.fspath(RESULTS / "stage2_selection.md"))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    c = make_cohort(args.n, args.snps, shape=tuple(args.shape), random_state=args.seed)
    X = np.asarray(c.images, dtype=np.float32)
    ph = c.phenotypes
    ok = image_quality_control(X)["passed"].to_numpy().astype(bool)
    wm = ok & ph["wm_group"].notna().to_numpy()
    idx = np.flatnonzero(wm)
    y_all = ph["wm_group"].to_numpy()
    train, rest = train_test_split(idx, test_size=0.4, stratify=y_all[idx], random_state=args.seed)
    valid, hold = train_test_split(rest, test_size=0.5, stratify=y_all[rest], random_state=args.seed)
    qc = SNPQualityFilter(info_r2=c.snp_info["info_r2"])
    G = qc.fit(c.genotypes.iloc[train]).transform(c.genotypes)
    # stage 1: brain age on every QC-passed participant outside the holdout
    fit_rows = np.setdiff1d(np.flatnonzero(ok), hold)
    hv, mae, t_cnn = stage1(args, X, ph["age"].to_numpy(float), fit_rows)
    R = RegionalMeans(c.atlas).fit_transform(X)
    # planted genetic score of the brain: sum of dosage x effect over the causal SNPs' region effects
    eff = {}
    for e in c.ground_truth["snp_region_effects"]:
        eff[e["snp"]] = eff.get(e["snp"], 0.0) + abs(e["effect"])
    raw = c.genotypes.fillna(c.genotypes.mean())
    gene_score = sum(raw[s].to_numpy() * w for s, w in eff.items())
    y = y_all.astype(float)
    print(f"cohort: {ok.sum()} images after QC, {len(idx)} in WM groups, train/valid/holdout "
          f"{len(train)}/{len(valid)}/{len(hold)}, {G.shape[1]} SNPs; brain-age MAE {mae:.2f} y "
          f"({t_cnn:.0f} s)", flush=True)

    lines = []
    res = []

    def ba(model, F):
        model.fit(F[train], y[train])
        return 100 * balanced_accuracy_score(y[hold], model.predict(F[hold]))

    def ridge_r(Z):
        m = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(Z[train], gene_score[train])
        return float(np.corrcoef(m.predict(Z[hold]), gene_score[hold])[0, 1])

    classical = {"h_v -> logistic": ba(logistic(), hv), "regional GM -> logistic": ba(logistic(), R),
                 "SNPs -> logistic": ba(logistic(), G),
                 "age + sex -> logistic": ba(logistic(), ph[["age", "sex"]].to_numpy(float))}
    oracle = ridge_r(G)
    # how much of the planted genetic score the image features carry at all (the ceiling of any
    # cross-modal match): the same ridge from h_v and from the regional means
    ceiling = {"h_v": ridge_r(hv), "regional GM means": ridge_r(R)}
    for row in args.rows:
        desc, image, kw = ROWS[row]
        img = hv if image == "h_v" else R
        F = np.hstack([img, G])
        n_img = img.shape[1]
        t = time.perf_counter()
        enc = ContrastiveSNPEncoder(image_features=n_img, **SMALL, **kw, device="cpu", random_state=args.seed)
        enc.fit(F[train], y[train])
        z_v, z_g = enc.transform_image(F), enc.transform_genetic(F)
        scca = SparseCCA(n_components=[1, 2, 3], cv=3, random_state=args.seed).fit(z_v[train], z_g[train])
        u, v = scca.transform(z_v[hold], z_g[hold])
        r1 = float(np.corrcoef(u[:, 0], v[:, 0])[0, 1])
        cgni = Pipeline([("contrastive", CrossFitTransformer(
                             ContrastiveSNPEncoder(image_features=n_img, **SMALL, **kw, device="cpu",
                                                   random_state=args.seed),
                             cv=StratifiedKFold(5, shuffle=True, random_state=args.seed))),
                         ("classifier", CGNIClassifier(hidden_layer_sizes=(64, 32), max_epochs=15,
                                                       class_weight="balanced", device="cpu",
                                                       random_state=args.seed))])
        r = dict(row=row, change=desc, image=image, epochs=f"{enc.n_iter_}/{enc.best_epoch_}",
                 matching_train=matching_score(z_v[train], z_g[train]),
                 matching_valid=matching_score(z_v[valid], z_g[valid]),
                 matching_holdout=matching_score(z_v[hold], z_g[hold]), scca_r1_holdout=r1,
                 zg_gene_score_r=ridge_r(z_g), cgni_holdout=ba(cgni, F), seconds=time.perf_counter() - t)
        res.append(r)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
    df = pd.DataFrame(res)
    lines = [f"# Stage 2 model selection on a simulated cohort ({time.strftime('%Y-%m-%d')})", "",
             f"`python benchmarks/bench_stage2_selection.py --n {args.n} --snps {args.snps} --shape "
             f"{' '.join(map(str, args.shape))} --seed {args.seed}`; `make_cohort({args.n}, {args.snps}, "
             f"shape={tuple(args.shape)}, random_state={args.seed})` (region effects, reference demographics). "
             f"{len(idx)} WM participants, train/validation/holdout {len(train)}/{len(valid)}/{len(hold)} "
             f"(stratified); {G.shape[1]} SNPs after QC. Stage 1: brain-age CNN {CNN}, early stopping, "
             f"MAE {mae:.2f} y on the participants it did not train on. Encoders {SMALL}. "
             f"{platform.machine()}, {os.cpu_count()} cores, load average {load0:.1f} at the start "
             f"(shared machine); wall time {time.perf_counter() - t0:.0f} s.", "",
             "Held-out means: the holdout (never seen by any fit) unless the column says validation. "
             "`matching`: 0.5 = chance. `z_g -> gene score r`: holdout r of a ridge from z_g to the planted "
             f"genetic score of the brain; the same ridge on the SNPs themselves (oracle): **{oracle:.3f}**. "
             "How much of that score the image features carry (holdout r of the same ridge from them, the "
             "ceiling of any cross-modal match): " + ", ".join(f"{k} **{v:.3f}**" for k, v in ceiling.items())
             + ".", "",
             "| row | change | image input | epochs run/kept | matching train | matching validation | "
             "matching holdout | SCCA r1 holdout | z_g -> gene score r | CGNI holdout BA % | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res:
        lines.append(f"| {r['row']} | {r['change']} | {r['image']} | {r['epochs']} | {r['matching_train']:.3f} | "
                     f"{r['matching_valid']:.3f} | {r['matching_holdout']:.3f} | {r['scca_r1_holdout']:.3f} | "
                     f"{r['zg_gene_score_r']:.3f} | {r['cgni_holdout']:.1f} | {r['seconds']:.0f} |")
    lines += ["", "Classical rows on the same holdout (balanced accuracy %): "
              + "; ".join(f"{k} {v:.1f}" for k, v in classical.items()) + "."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return df


if __name__ == "__main__":
    main()
