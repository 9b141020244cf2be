"""The paper's Tables 1 and 2 on a simulated cohort (make_cohort), with the paper's protocol.

Protocol (Suresh et al., section II.G): 90 % train / 10 % holdout (stratified), 5-fold
stratified CV on the train part; every model is fitted on each fold's training part and
scored (balanced accuracy) on that training part, on the fold's validation part and on the
holdout; mean ± sd over the 5 folds.

Stage 1 is the real stage-1 CNN: a :class:`BrainAgeCNNTransformer` pre-trained on brain age
on a *separate* simulated cohort (the paper pre-trained on 39,755 other UK Biobank
participants), transferred (first 2 blocks) into an :class:`ImagingCNNClassifier`
fine-tuned on working memory inside each fold; ``h_v`` is that fine-tuned network's last
convolutional block (global average pooled). Every imaging-genetic model is one Pipeline
``features (CNN ⊕ SNPQualityFilter) -> model`` with ``memory=`` caching, so the CNN is
fine-tuned once per fold and reused by all 18 imaging-genetic rows.

Rows:
* Table 1: Imaging CNN (the fine-tuned CNN's own predictions), Sparse Genetic NN
  (SNPQualityFilter -> SparseGeneticNN), Imaging-Genetic SVM, Imaging-Genetic NN, and the
  proposed method (ContrastiveSNPEncoder with the paper's best terms 1+2+4, weights 0.7,
  0.3, 0.4 -> CGNIClassifier).
* Every classifier (CNN, SVM, NNs) weights the two WM groups equally
  (``class_weight="balanced"``): the groups are ~36/64 % and the metric is balanced accuracy;
  the paper does not say whether it weighted.
* Table 2: the 14 non-empty combinations of the four loss terms. Included terms take the
  paper's weights (lambda=0.7, sigma=0.3, theta=0.4; gamma, not reported, 0.4); no
  per-combination tuning (the paper tuned; the CPU budget here does not allow it).
* Classical rows (not in the paper; ``classical_models``, shared with ``sklearn-cgni run``):
  logistic regression (C by inner stratified CV) on the regional gray-matter means of the
  cohort's atlas (computed once per participant), on the QC'd SNPs, and both stacked on
  their out-of-fold probabilities; SNP QC is fitted inside each fold as for the Sparse
  Genetic NN.

CPU budget: reduced images (default 24x28x24 instead of 128x141x128), a reduced CNN
(channels 8-16-32-32-32, padding 1, 4 pools, global average pool: h_v has 32 values
instead of 512), a reduced cohort (default 1000 simulated participants, ~900 in a WM
group, 200 SNPs instead of 4995 / 1060) and few epochs. Everything is stated in the output.

Run (about 30-60 min on one busy shared CPU core; results are rewritten after every fold)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_table1.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_table1.py --quick   # smoke test

Writes ``benchmarks/results/table1_table2.{md,csv}`` (``--quick`` writes ``*_quick.*``).
"""

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from joblib import Memory  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.metrics import balanced_accuracy_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold, train_test_split  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402

from sklearn_cgni.classification import (  # noqa: E402
    CGNIClassifier,
    ImagingGeneticNN,
    ImagingGeneticSVM,
    SparseGeneticNN,
)
from sklearn_cgni.datasets import make_cohort  # noqa: E402
from sklearn_cgni.evaluation import covariate_baselines  # noqa: E402
from sklearn_cgni.genetics import ContrastiveSNPEncoder, SNPQualityFilter  # noqa: E402
from sklearn_cgni.cli._protocol import (  # noqa: E402,F401
    CLASSICAL_MODELS,
    COMBOS,
    PAPER_TABLE1,
    PAPER_TABLE2,
    classical_models,
    combo_params,
)
from sklearn_cgni.imaging import BrainAgeCNNTransformer, ImagingCNNClassifier, RegionalMeans  # noqa: E402

torch.set_num_threads(1)



def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-participants", type=int, default=1000)
    p.add_argument("--n-snps", type=int, default=200)
    p.add_argument("--shape", type=int, nargs=3, default=(24, 28, 24))
    p.add_argument("--n-pretrain", type=int, default=800, help="participants of the brain-age cohort")
    p.add_argument("--cnn-epochs", type=int, default=10)
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--epochs", type=int, default=30, help="epochs of the MLP models")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="cohort files and joblib cache (default: a temp dir)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--only-table1", action="store_true")
    p.add_argument("--diagnostics", action="store_true",
                   help="after a main run with the same --workdir: extra rows (h_v-only models) that "
                        "reuse the cached stage-1 features; written to *_diagnostics.*")
    return p.parse_args()


def main():
    args = parse_args()
    if args.quick:
        args.n_participants, args.n_snps, args.n_pretrain = 300, 60, 200
        args.cnn_epochs, args.pretrain_epochs, args.epochs, args.folds = 2, 2, 3, 2
    t_start = time.perf_counter()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cgni_table1_"))
    work.mkdir(parents=True, exist_ok=True)
    shape = tuple(args.shape)
    arch = dict(channels=(8, 16, 32, 32, 32), padding=1, pool_blocks=4, global_pool="avg")
    log = lambda msg: print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)  # noqa: E731

    # ---------------------------------------------------------------- stage 1 pre-training
    log(f"pre-training cohort: {args.n_pretrain} participants, images {shape}")
    pre = make_cohort(args.n_pretrain, n_snps=60, shape=shape, output_dir=work / "pretrain",
                      random_state=args.seed + 1000)
    pre_ids = [i for i in pre.participant_ids if i not in set(pre.ground_truth["bad_images"])]
    pre_paths = pd.Series(pre.images, index=pre.participant_ids)[pre_ids]
    age = pre.phenotypes.loc[pre_ids, "age"].to_numpy()
    p_tr, p_te = train_test_split(np.arange(len(pre_ids)), test_size=0.1, random_state=args.seed)
    weights_path = work / "brain_age_cnn.pt"
    if args.diagnostics and weights_path.exists():  # reuse the main run's stage-1 weights
        brain_age = BrainAgeCNNTransformer(weights=str(weights_path), frozen=True, device="cpu")
        brain_age.fit(pre_paths.iloc[p_tr].tolist())
    else:
        brain_age = BrainAgeCNNTransformer(**arch, max_epochs=args.pretrain_epochs, validation_fraction=0.0, early_stopping=False, lr_schedule="none",
                                           device="cpu", random_state=args.seed)
        brain_age.fit(pre_paths.iloc[p_tr].tolist(), age[p_tr])
        brain_age.save_weights(weights_path)
    mae = float(np.mean(np.abs(brain_age.predict(pre_paths.iloc[p_te].tolist()) - age[p_te])))
    mae_base = float(np.mean(np.abs(age[p_te] - age[p_tr].mean())))
    log(f"brain-age CNN: test MAE {mae:.2f} y (predicting the mean: {mae_base:.2f} y)")

    # ---------------------------------------------------------------- WM cohort
    log(f"WM cohort: {args.n_participants} participants, {args.n_snps} SNPs")
    cohort = make_cohort(args.n_participants, n_snps=args.n_snps, shape=shape,
                         output_dir=work / "cohort", random_state=args.seed)
    ph = cohort.phenotypes
    bad = set(cohort.ground_truth["bad_images"])
    try:  # the image QC of the toolkit (correlation with the mean image, 0.9)
        from sklearn_cgni.imaging import image_quality_control

        qc = image_quality_control(pd.Series(cohort.images, index=cohort.participant_ids))
        bad = set(qc.index[~qc["passed"]])
    except Exception as exc:  # pragma: no cover - fall back to the planted list
        warnings.warn(f"image QC unavailable ({exc}); excluding the planted bad images")
    keep = [i for i in cohort.participant_ids if i not in bad and np.isfinite(ph.loc[i, "wm_group"])]
    snp_cols = list(cohort.genotypes.columns)
    X = cohort.genotypes.loc[keep].copy()
    X.insert(0, "image", pd.Series(cohort.images, index=cohort.participant_ids)[keep])
    # regional gray-matter means over the cohort's atlas: a fixed transform, once per participant
    regional = RegionalMeans(cohort.atlas)
    gm = regional.fit_transform(X["image"].tolist())
    gm_cols = [f"GM: {r}" for r in regional.region_names_]
    X = pd.concat([X, pd.DataFrame(gm, index=X.index, columns=gm_cols)], axis=1)
    y = ph.loc[keep, "wm_group"].astype(int).to_numpy()
    log(f"{len(keep)} participants in a WM group after image QC ({len(bad)} images failed): "
        f"{int((y == 0).sum())} low, {int((y == 1).sum())} high")

    idx_train, idx_hold = train_test_split(np.arange(len(y)), test_size=0.1, stratify=y, random_state=args.seed)
    X_tr, y_tr, X_ho, y_ho = X.iloc[idx_train], y[idx_train], X.iloc[idx_hold], y[idx_hold]
    folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=args.seed).split(X_tr, y_tr))

    # ---------------------------------------------------------------- models
    k = arch["channels"][-1]  # width of h_v
    cnn = ImagingCNNClassifier(brain_age_model=str(weights_path), n_transfer_blocks=2,
                               max_epochs=args.cnn_epochs, validation_fraction=0.0, early_stopping=False, lr_schedule="none", class_weight="balanced",
                               device="cpu", random_state=args.seed)
    features = ColumnTransformer([("image", cnn, ["image"]), ("snp", SNPQualityFilter(), snp_cols)])
    memory = Memory(work / "cache", verbose=0)
    mlp = dict(max_epochs=args.epochs, device="cpu", random_state=args.seed)
    clf_kw = dict(mlp, class_weight="balanced")  # every classifier weights the WM groups alike

    def ig(model):
        return Pipeline([("features", features), ("model", model)], memory=memory)

    def cgni(**weights):
        return Pipeline(
            [
                ("features", features),
                ("contrastive", ContrastiveSNPEncoder(image_features=k, **weights, **mlp)),
                ("classifier", CGNIClassifier(**clf_kw)),
            ],
            memory=memory,
        )

    table1 = {
        "Imaging CNN": None,  # the fitted features step's CNN predicts directly
        "Sparse Genetic NN": Pipeline([("qc", ColumnTransformer([("snp", SNPQualityFilter(), snp_cols)])),
                                        ("model", SparseGeneticNN(**clf_kw))]),
        "Imaging-Genetic SVM (linear)": ig(ImagingGeneticSVM(image_features=k, random_state=args.seed, class_weight="balanced",
                                                             genetic_encoder=SparseGeneticNN(**clf_kw))),
        "Imaging-Genetic NN (non-linear)": ig(ImagingGeneticNN(image_features=k, genetic_encoder=SparseGeneticNN(**clf_kw),
                                                               **clf_kw)),
        "CGNI contrastive (terms 1+2+4)": cgni(lambda_vg=0.7, sigma_gv=0.3, gamma_vv=0.0, theta_gg=0.4),
    }
    # classical rows on [regional means ⊕ SNPs], SNP QC fitted on each fold's training part
    classical_input = ColumnTransformer([("gm", "passthrough", gm_cols), ("snp", SNPQualityFilter(), snp_cols)])
    for name, model in classical_models(len(gm_cols), class_weight="balanced", random_state=args.seed).items():
        table1[name] = Pipeline([("qc", classical_input), ("model", model)])
    table2 = {} if args.only_table1 else {c: cgni(**combo_params(c)) for c in COMBOS}
    if args.diagnostics:
        # Is h_v informative on its own? Same cached features step, then keep the h_v columns.
        def hv_only(model):
            keep_hv = ColumnTransformer([("h_v", "passthrough", list(range(k)))])
            return Pipeline([("features", features), ("h_v", keep_hv), ("model", model)], memory=memory)

        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC

        table1 = {"Imaging CNN": None}
        table2 = {
            "NN on h_v only (CGNIClassifier)": hv_only(CGNIClassifier(**clf_kw)),
            "linear SVM on h_v only": hv_only(Pipeline([("scale", StandardScaler()),
                                                        ("svm", LinearSVC(class_weight="balanced"))])),
            "CGNI 1+2+4, theta=0.1": cgni(lambda_vg=0.7, sigma_gv=0.3, gamma_vv=0.0, theta_gg=0.1),
            # stage 2 stopped on the contrastive loss of a held-out 10 % of the training fold
            "CGNI 1+2+4, encoder early stopping": cgni(lambda_vg=0.7, sigma_gv=0.3, gamma_vv=0.0, theta_gg=0.4,
                                                       early_stopping=True),
            "L4, encoder early stopping": cgni(**combo_params("L4"), early_stopping=True),
            "L1": cgni(**combo_params("L1")),
        }

    setup = dict(
        n_participants_simulated=args.n_participants, n_in_wm_groups=len(y), n_low=int((y == 0).sum()),
        n_high=int((y == 1).sum()), n_snps=args.n_snps, image_shape=list(shape), cnn=arch,
        h_v_width=k, pretrain_participants=args.n_pretrain, pretrain_epochs=args.pretrain_epochs,
        brain_age_test_mae=round(mae, 2), brain_age_mae_of_mean=round(mae_base, 2),
        cnn_finetune_epochs=args.cnn_epochs, mlp_epochs=args.epochs, folds=args.folds,
        holdout=len(idx_hold), seed=args.seed, torch=torch.__version__, python=sys.version.split()[0],
        machine=platform.machine(), atlas=cohort.atlas.name, n_regions=len(gm_cols),
    )
    records = []
    for f, (tr, va) in enumerate(folds):
        Xf, yf, Xv, yv = X_tr.iloc[tr], y_tr[tr], X_tr.iloc[va], y_tr[va]
        fitted_features = None
        for table, models in (("Table 1", table1), ("Table 2", table2)):
            for name, model in models.items():
                if model is None:
                    continue
                t0 = time.perf_counter()
                est = clone(model).fit(Xf, yf)
                if "features" in est.named_steps and fitted_features is None:
                    # the CNN fine-tuned in this fold (cached): the "Imaging CNN" row
                    fitted_features = est.named_steps["features"]
                    image_model = fitted_features.named_transformers_["image"]
                    for split, Xs, ys in (("train", Xf, yf), ("validation", Xv, yv), ("holdout", X_ho, y_ho)):
                        bacc = balanced_accuracy_score(ys, image_model.predict(Xs[["image"]]))
                        records.append(dict(table="Table 1", model="Imaging CNN", fold=f, split=split,
                                            balanced_accuracy=bacc))
                for split, Xs, ys in (("train", Xf, yf), ("validation", Xv, yv), ("holdout", X_ho, y_ho)):
                    records.append(dict(table=table, model=name, fold=f, split=split,
                                        balanced_accuracy=balanced_accuracy_score(ys, est.predict(Xs))))
                log(f"fold {f} {table} {name}: val {records[-2]['balanced_accuracy']:.3f} "
                    f"holdout {records[-1]['balanced_accuracy']:.3f} ({time.perf_counter() - t0:.1f}s)")
        # covariate-only rows (issue 8): logistic regression on age, sex, age + sex, same splits and metric
        covs = ph.loc[keep, ["age", "sex"]].astype(float)
        cov_tr, cov_ho = covs.iloc[idx_train], covs.iloc[idx_hold]
        for name, model in covariate_baselines(["age", "sex"], random_state=args.seed).items():
            est = clone(model).fit(cov_tr.iloc[tr], yf)
            for table in ("Table 1", "Table 2") if table2 and not args.diagnostics else ("Table 1",):
                for split, Cs, ys in (("train", cov_tr.iloc[tr], yf), ("validation", cov_tr.iloc[va], yv),
                                      ("holdout", cov_ho, y_ho)):
                    records.append(dict(table=table, model=name, fold=f, split=split,
                                        balanced_accuracy=balanced_accuracy_score(ys, est.predict(Cs))))
        setup["wall_time_s"] = round(time.perf_counter() - t_start)
        text = write_results(records, setup, args, folds_done=f + 1, with_table2=bool(table2))
    print(text)
    log("done")


def write_results(records, setup, args, folds_done, with_table2):
    """Write the summary CSV, the per-fold CSV and the markdown; return the markdown."""
    df = pd.DataFrame(records)
    summary = (
        df.groupby(["table", "model", "split"], sort=False)["balanced_accuracy"]
        .agg(["mean", "std"]).mul(100).reset_index()
    )
    suffix = "_quick" if args.quick else "_diagnostics" if args.diagnostics else (
        "_table1_only" if args.only_table1 else "")
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    summary.to_csv(out_dir / f"table1_table2{suffix}.csv", index=False, float_format="%.2f")
    df.to_csv(out_dir / f"table1_table2{suffix}_per_fold.csv", index=False, float_format="%.4f")

    def fmt(model, table, split):
        r = summary[(summary.model == model) & (summary.table == table) & (summary.split == split)]
        return f"{r['mean'].iloc[0]:.2f} ± {r['std'].iloc[0]:.2f}" if len(r) else "n/a"

    status = "" if folds_done == args.folds else f" **PARTIAL: {folds_done} of {args.folds} folds done.**"
    lines = [
        "# Tables 1 and 2 of the CGNI paper on a simulated cohort",
        "",
        "Balanced accuracy (%), mean ± sd over the folds: each fold's model is scored on its training "
        "part, its validation part and the common 10 % holdout. Paper values in brackets. The covariate-only rows "
        "(logistic regression on age and/or sex, class-balanced; not in the paper) use the same splits: the "
        "simulated groups differ in age as in the reference study (make_cohort's default demographics). So do the "
        "classical rows (not in the paper): logistic regression, C chosen by inner stratified CV, on the atlas's "
        "regional gray-matter means, on the QC'd SNPs, and both stacked on their out-of-fold probabilities."
        + status,
        "",
        f"Setup (reduced for a CPU): `{json.dumps(setup)}`",
        "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_table1.py {' '.join(sys.argv[1:])}`",
        "",
        "What the numbers mean: `table1_table2_findings.md` (written by hand, not by this script).",
        "",
        "## Table 1",
        "",
        "| model | train | validation | holdout |",
        "|---|---|---|---|",
    ]
    covariate_rows = list(dict.fromkeys(m for m in df["model"] if m.startswith("covariates: ")))
    classical_rows = [m for m in CLASSICAL_MODELS if m in set(df["model"])]
    for name, paper in list(PAPER_TABLE1.items()) + [(m, ("-", "-", "-")) for m in classical_rows + covariate_rows]:
        ours = [fmt(name, "Table 1", s) for s in ("train", "validation", "holdout")]
        lines.append(f"| {name} | " + " | ".join(f"{o} [{p}]" for o, p in zip(ours, paper)) + " |")
    if with_table2:
        title = (
            "## Diagnostics (same stage-1 CNN per fold, from the cache or a seeded refit)" if args.diagnostics else
            "## Table 2 (loss-term combinations; included terms weighted lambda=.7, sigma=.3, "
            "gamma=.4, theta=.4)"
        )
        lines += [
            "",
            title,
            "",
            "| terms | train | validation | holdout |",
            "|---|---|---|---|",
        ]
        names = list(PAPER_TABLE2) if not args.diagnostics else list(dict.fromkeys(
            df.loc[df.table == "Table 2", "model"]))
        for combo in names + (covariate_rows if not args.diagnostics else []):
            paper = PAPER_TABLE2.get(combo, ("-", "-", "-"))
            ours = [fmt(combo, "Table 2", s) for s in ("train", "validation", "holdout")]
            lines.append(f"| {combo} | " + " | ".join(f"{o} [{p}]" for o, p in zip(ours, paper)) + " |")
    text = "\n".join(lines) + "\n"
    (out_dir / f"table1_table2{suffix}.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
