"""Brain-genotype scores on make_cohort: multi-task CNN vs the IDP baseline, against planted truth.

For each setting (SNP effect pattern x planted effect size), on one simulated cohort:

1. QC: images (correlation with the mean image) and SNPs (SNPQualityFilter selection; the
   raw calls are kept, missing ones are masked by the CNN / dropped per SNP by the IDP model).
2. Held-out scores by cross-fitting (K folds) for the CNN (BrainGenotypeScorer, dosage) and
   the IDP baseline (regional mean gray matter -> ridge per SNP).
3. Recovery: Pearson r of held-out score with the true genotype per SNP, by SNP class
   (causal: planted brain effect; LD proxy: same LD block as a causal SNP; direct: acts on
   cognition only; null: everything else), and the fraction significant (Bonferroni over SNPs);
   CNN vs IDP across the causal SNPs: mean difference of r and a paired Wilcoxon signed-rank
   test (two-sided).
4. Localisation (``--explain``): saliency of each causal SNP's CNN score (the fold-1 model,
   explained on its held-out fold) per AAL2 region; rank of the planted region(s) (region
   pattern only). For the IDP baseline the analogue is the ridge coefficient magnitude per
   region. Focal pattern: distance in mm from each causal score's saliency peak
   (``SaliencyExplainer.peaks_``, inside the atlas; the sub-voxel centroid peak and the peak
   voxel's centre; and the peak of the signed mean gradient smoothed by a Gaussian of the
   planted clusters' FWHM, ``--smoothing-fwhm``) to the nearest planted cluster center, and
   the fraction within 10 mm among the causal SNPs the CNN reads at held-out r >= 0.2.
5. Association: every score x (digit span, fluid intelligence, reaction time), OLS with age,
   sex and site; Bonferroni-significant tests per SNP class, from the OLS p-values and from
   Freedman-Lane permutation p-values (``--permutations``). The true genotypes go through the
   same analysis as a reference.

Run (the reduced comparison of issue 17: region vs focal effects, early-stopped CNN, a few
minutes per pattern on one core):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_brain_genotype_scores.py \
        --patterns region focal --effects 0.2 --n 500 --early-stopping --lr-schedule plateau --epochs 40
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_brain_genotype_scores.py \
        --effects 0.03 0.1 --epochs 15 --explain --association   # the earlier, full run
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_brain_genotype_scores.py --quick
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_brain_genotype_scores.py \
        --effects 0.1 --idp-permutations 50     # null calibration of held-out r (IDP only)
"""

import argparse
import json
import os
import time
import warnings

import numpy as np
import pandas as pd
import torch
from scipy import stats

from sklearn_cgni.datasets import make_cohort
from sklearn_cgni.explain import SaliencyExplainer, association_table
from sklearn_cgni.genetics import SNPQualityFilter
from sklearn_cgni.imaging import (
    BrainGenotypeScorer,
    cross_fit_scores,
    image_quality_control,
    make_idp_scorer,
)

MEASURES = ["digit_span", "fluid_intelligence", "reaction_time"]


def snp_classes(cohort, snps):
    gt = cohort.ground_truth
    info = cohort.snp_info.loc[snps]
    causal = set(gt["causal_snps"])
    causal_blocks = set(cohort.snp_info.loc[list(causal), "ld_block"])
    direct = set(gt["direct_genetic_effects"])
    out = {}
    for s in snps:
        if s in causal:
            out[s] = "causal"
        elif s in direct:
            out[s] = "direct"
        elif info.loc[s, "ld_block"] in causal_blocks:
            out[s] = "LD proxy"
        else:
            out[s] = "null"
    return pd.Series(out)


def recovery(scores, G, classes):
    rows = []
    for s in G.columns:
        ok = G[s].notna().to_numpy()
        r, p = stats.pearsonr(scores[s].to_numpy()[ok], G[s].to_numpy()[ok])
        rows.append({"snp": s, "class": classes[s], "r": r, "p": p})
    df = pd.DataFrame(rows)
    df["significant"] = df["p"] < 0.05 / len(df)
    return df


def region_ranks(region_values, planted):
    """Rank (1 = largest) of each planted region in a Series of region values."""
    order = region_values.sort_values(ascending=False).index.tolist()
    return [order.index(r) + 1 if r in order else np.nan for r in planted]


def idp_permutation_check(X, G, atlas, classes, folds, n_perm, log):
    """Null calibration of held-out r: permute genotype rows, redo the IDP cross-fitting."""
    rng = np.random.default_rng(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        obs = recovery(cross_fit_scores(make_idp_scorer(atlas, "dosage", alpha=10.0), X, G,
                                        cv=folds), G, classes)
        null_r = []
        for _ in range(n_perm):
            Gp = G.iloc[rng.permutation(len(G))].set_axis(G.index)
            sc = cross_fit_scores(make_idp_scorer(atlas, "dosage", alpha=10.0), X, Gp, cv=folds)
            null_r.append(recovery(sc, Gp, classes)["r"].to_numpy())
    null_r = np.abs(np.concatenate(null_r))
    obs["p_perm"] = [(1 + (null_r >= abs(r)).sum()) / (1 + len(null_r)) for r in obs["r"]]
    obs["significant_perm"] = obs["p_perm"] < 0.05 / len(obs)
    log(f"  IDP permutation null ({n_perm} permutations, {len(null_r)} null r): RMS of null r "
        f"{np.sqrt((null_r ** 2).mean()):.4f} vs 1/sqrt(n) {1 / np.sqrt(len(G)):.4f}; "
        f"significant (nominal Pearson p) by class: "
        f"{obs.groupby('class')['significant'].sum().to_dict()}; with permutation p: "
        f"{obs.groupby('class')['significant_perm'].sum().to_dict()} (smallest attainable "
        f"permutation p {1 / (1 + len(null_r)):.1e}, Bonferroni level {0.05 / len(obs):.1e})")
    return obs


def paired_comparison(rec, log):
    """CNN vs IDP held-out r over the causal SNPs: mean difference and a paired Wilcoxon test."""
    a = rec["CNN"].set_index("snp")
    b = rec["IDP"].set_index("snp")
    causal = a.index[a["class"] == "causal"]
    diff = a.loc[causal, "r"] - b.loc[causal, "r"]
    res = stats.wilcoxon(a.loc[causal, "r"], b.loc[causal, "r"]) if len(causal) > 1 else None
    out = {"n_causal": len(causal), "mean_r_cnn": float(a.loc[causal, "r"].mean()),
           "mean_r_idp": float(b.loc[causal, "r"].mean()), "mean_diff": float(diff.mean()),
           "cnn_wins": int((diff > 0).sum()), "wilcoxon_p": float(res.pvalue) if res else float("nan")}
    log(f"  causal SNPs, CNN - IDP held-out r: mean {out['mean_diff']:+.3f} (CNN {out['mean_r_cnn']:.3f}, "
        f"IDP {out['mean_r_idp']:.3f}); CNN higher for {out['cnn_wins']} of {len(causal)}; paired Wilcoxon "
        f"p = {out['wilcoxon_p']:.3g}")
    return out


def run_setting(args, snp_effect, log, pattern="region"):
    t0 = time.time()
    cohort = make_cohort(n_participants=args.n, n_snps=args.snps, shape=tuple(args.shape),
                         n_causal_snps=args.causal, snp_effect=snp_effect, effect_pattern=pattern,
                         focal_radius=args.focal_radius,
                         ld_block_size=tuple(args.ld_block),
                         random_state=args.seed, n_jobs=1)
    qc = image_quality_control(cohort.images, cohort.participant_ids)
    keep = qc["passed"].to_numpy()
    X = cohort.images[keep]
    ids = np.asarray(cohort.participant_ids)[keep]
    snp_filter = SNPQualityFilter().fit(cohort.genotypes.loc[ids])
    snps = list(snp_filter.get_feature_names_out())
    G = cohort.genotypes.loc[ids, snps]
    ph = cohort.phenotypes.loc[ids]
    classes = snp_classes(cohort, snps)
    log(f"  cohort: {len(ids)} participants after image QC ({(~keep).sum()} dropped), "
        f"{len(snps)} SNPs after QC ({args.snps - len(snps)} dropped): "
        f"{classes.value_counts().to_dict()}; {G.isna().to_numpy().sum()} missing calls masked "
        f"[{time.time() - t0:.0f} s]")

    results = {}
    if args.idp_permutations:
        idp_permutation_check(X, G, cohort.atlas, classes, args.folds, args.idp_permutations, log)
        return None
    cnn = BrainGenotypeScorer(
        "dosage", channels=tuple(args.channels), padding=1, pool_blocks=args.pool_blocks,
        max_epochs=args.epochs, batch_size=16, lr=2e-3, weight_decay=args.weight_decay,
        validation_fraction=args.validation_fraction, early_stopping=args.early_stopping,
        n_iter_no_change=args.patience, lr_schedule=args.lr_schedule, standardize_voxels=not args.raw_voxels,
        device="cpu", random_state=0)
    t = time.time()
    cnn_scores, cnn_models = cross_fit_scores(cnn, X, G, cv=args.folds, return_estimators=True)
    results["cnn_time"] = time.time() - t
    results["cnn_epochs"] = [(int(m.n_epochs_), int(m.best_epoch_)) for m in cnn_models]
    log(f"  CNN cross-fitting ({args.folds} folds, budget {args.epochs} epochs, early stopping "
        f"{args.early_stopping}, LR schedule {args.lr_schedule}; (epochs run, kept) per fold "
        f"{results['cnn_epochs']}): {results['cnn_time']:.0f} s")
    idp = make_idp_scorer(cohort.atlas, "dosage", alpha=10.0)
    t = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        idp_scores, idp_models = cross_fit_scores(idp, X, G, cv=args.folds, return_estimators=True)
    results["idp_time"] = time.time() - t
    log(f"  IDP cross-fitting: {results['idp_time']:.1f} s")

    # 3. recovery
    rec = {"CNN": recovery(cnn_scores, G, classes), "IDP": recovery(idp_scores, G, classes)}
    summary = []
    for name, df in rec.items():
        for cls, d in df.groupby("class"):
            summary.append({"model": name, "class": cls, "n_snps": len(d),
                            "mean_r": d["r"].mean(), "median_r": d["r"].median(),
                            "n_significant": int(d["significant"].sum())})
    results["recovery"] = pd.DataFrame(summary)
    results["paired"] = paired_comparison(rec, log)
    results["per_snp"] = pd.concat([df.assign(model=name) for name, df in rec.items()], ignore_index=True)
    results["cohort"] = {"n": int(len(ids)), "n_snps": len(snps), "classes": classes.value_counts().to_dict()}
    if not args.explain:
        return results

    # 4. localisation: causal SNPs' planted regions
    planted = {}
    for e in cohort.ground_truth["snp_region_effects"]:
        planted.setdefault(e["snp"], []).append(e["region"])
    causal = [s for s in snps if classes[s] == "causal"]
    from sklearn.model_selection import KFold

    _, test0 = next(iter(KFold(args.folds, shuffle=True, random_state=0).split(X)))
    t = time.time()
    loc_rows = []
    sal = SaliencyExplainer(cnn_models[0], method="saliency", snps=causal, atlas=cohort.atlas,
                            batch_size=8).fit(X[test0[: args.saliency_n]], affine=cohort.affine)
    n_regions = len(sal.region_attributions_)
    ig = SaliencyExplainer(cnn_models[0], method="integrated_gradients", snps=causal,
                           atlas=cohort.atlas, n_steps=16, batch_size=4
                           ).fit(X[test0[: args.ig_n]], affine=cohort.affine)
    coef = pd.DataFrame(
        np.abs(np.stack([m.coef_ for m in idp_models[0].named_steps["model"].estimators_])).T,
        index=idp_models[0].named_steps["idp"].region_names_, columns=snps)
    for s in (s for s in causal if s in planted):
        for method, vals in [("CNN saliency", sal.region_attributions_[s]),
                             ("CNN integrated gradients", ig.region_attributions_[s]),
                             ("IDP |ridge coef|", coef[s])]:
            for region, rank in zip(planted[s], region_ranks(vals, planted[s])):
                loc_rows.append({"method": method, "snp": s, "region": region, "rank": rank})
    # focal clusters: distance from each causal score's saliency peak to the nearest planted center
    centers = {}
    for e in cohort.ground_truth.get("focal_effects", []):
        centers.setdefault(e["snp"], []).append(e["center_mni"])
    if centers:
        r_cnn = rec["CNN"].set_index("snp")["r"]
        def voxel_peak_distances(ex):  # the peak voxel's centre (SaliencyExplainer(peak="voxel"))
            rows = []
            for _, p in ex.peaks_.iterrows():
                if p["score"] in centers:
                    xyz = (cohort.affine @ np.r_[p[["i", "j", "k"]].to_numpy(float), 1.0])[:3]
                    rows.append({"score": p["score"], "distance_mm": float(np.min(np.linalg.norm(
                        np.asarray(centers[p["score"]], float) - xyz, axis=1)))})
            return pd.DataFrame(rows)

        # the signed mean gradient smoothed by a matched filter: a Gaussian of the planted clusters' own
        # FWHM (2 x focal_radius, the radius at half maximum) unless --smoothing-fwhm says otherwise
        fwhm = args.smoothing_fwhm or 2 * args.focal_radius
        smooth = SaliencyExplainer(cnn_models[0], method="saliency", snps=causal, atlas=cohort.atlas, batch_size=8,
                                   absolute=False, smoothing_fwhm=fwhm).fit(X[test0[: args.saliency_n]],
                                                                            affine=cohort.affine)
        dist = pd.concat([f(ex).assign(method=name + suffix)
                          for name, ex in (("CNN saliency", sal), ("CNN integrated gradients", ig),
                                           (f"CNN saliency, signed, smoothed {fwhm:g} mm", smooth))
                          for suffix, f in ((" (centroid peak)", lambda e: e.peak_distances(centers)),
                                            (" (voxel peak)", voxel_peak_distances))])
        dist["r_held_out"] = dist["score"].map(r_cnn)
        results["peak_distances"] = dist
        readable = dist[dist["r_held_out"] >= 0.2]
        results["peak_summary"] = pd.DataFrame([
            {"method": m, "causal SNPs (focal)": int((dist.method == m).sum()),
             "with CNN r >= 0.2": int((d_.method == m).sum()),
             "median distance mm": d_.loc[d_.method == m, "distance_mm"].median(),
             "within 10 mm": (d_.loc[d_.method == m, "distance_mm"] <= 10).mean(),
             "within 10 mm (all causal)": (dist.loc[dist.method == m, "distance_mm"] <= 10).mean()}
            for m, d_ in ((m, readable) for m in dist["method"].unique())])
    results["saliency_time"] = time.time() - t
    loc = pd.DataFrame(loc_rows, columns=["method", "snp", "region", "rank"])
    loc_summary = loc.groupby("method")["rank"].agg(
        median_rank="median", top1=lambda r: (r <= 1).mean(), top3=lambda r: (r <= 3).mean(),
        top10=lambda r: (r <= 10).mean(), n="count").reset_index()
    loc_summary["n_regions"] = n_regions
    results["localisation"] = loc_summary
    results["localisation_detail"] = loc
    log(f"  saliency + IG: {results['saliency_time']:.0f} s")

    # 5. association
    covs = ["age", "sex", "site"]
    assoc_rows = []
    tables = {}
    G_ref = G.fillna(G.mean())  # reference: true genotypes (mean-imputed missing calls)
    for name, sc in [("CNN", cnn_scores), ("IDP", idp_scores), ("true genotype", G_ref)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            tab = association_table(sc, ph, MEASURES, covariates=covs, categorical=["site"],
                                    n_permutations=args.permutations, random_state=0)
        tab["class"] = tab["score"].map(classes)
        tables[name] = tab
        for cls, d in tab.groupby("class"):
            per_snp = d.groupby("score")["significant_bonferroni"].any()
            row = {"scores": name, "class": cls, "n_snps": d["score"].nunique(),
                   "snps_with_bonferroni_hit": int(per_snp.sum()),
                   "tests_bonferroni": int(d["significant_bonferroni"].sum()),
                   "tests": len(d), "tests_p<0.05": int((d["p"] < 0.05).sum()),
                   "median_abs_beta": d["beta"].abs().median()}
            if args.permutations:
                row.update({"tests_perm_bonferroni": int(d["significant_perm_bonferroni"].sum()),
                            "tests_p_perm<0.05": int((d["p_perm"] < 0.05).sum())})
            assoc_rows.append(row)
    results["association"] = pd.DataFrame(assoc_rows)
    results["association_tables"] = tables
    results["cohort"]["n_regions"] = n_regions
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=700)
    p.add_argument("--snps", type=int, default=100)
    p.add_argument("--ld-block", type=int, nargs=2, default=(2, 6),
                   help="LD block size range (small, so that null blocks remain)")
    p.add_argument("--causal", type=int, default=10)
    p.add_argument("--shape", type=int, nargs=3, default=(24, 28, 24))
    p.add_argument("--effects", type=float, nargs="+", default=(0.2,))
    p.add_argument("--patterns", nargs="+", default=("region", "focal"), choices=("region", "focal", "mixed"),
                   help="make_cohort(effect_pattern=...)")
    p.add_argument("--focal-radius", type=float, default=12.0, help="make_cohort(focal_radius=...), mm")
    p.add_argument("--smoothing-fwhm", type=float, default=None,
                   help="FWHM (mm) of the signed saliency maps' smoothing; default 2 x focal radius (matched filter)")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=40, help="epoch budget (max_epochs)")
    p.add_argument("--early-stopping", action="store_true", help="stop on valid_r, keep the best epoch")
    p.add_argument("--lr-schedule", default="none", choices=("none", "plateau"))
    p.add_argument("--validation-fraction", type=float, default=0.1,
                   help="held out of each fold's training part for valid_r (0: none; needed by the two above)")
    p.add_argument("--patience", type=int, default=10, help="n_iter_no_change")
    p.add_argument("--explain", action="store_true", help="also saliency localisation and associations")
    p.add_argument("--permutations", type=int, default=10000,
                   help="Freedman-Lane permutations of the association tests (calibrated p-values; 0: none)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--channels", type=int, nargs="+", default=(8, 16, 16))
    p.add_argument("--pool-blocks", type=int, default=3)
    p.add_argument("--saliency-n", type=int, default=100)
    p.add_argument("--ig-n", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw-voxels", action="store_true",
                   help="BrainGenotypeScorer(standardize_voxels=False): better scores, less precise saliency")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--idp-permutations", type=int, default=0,
                   help="only run the IDP permutation-null check with this many permutations")
    p.add_argument("--json", default=None, help="write all summary tables (and every association test) to this JSON file")
    args = p.parse_args()
    if args.quick:
        args.n, args.snps, args.effects, args.epochs = 150, 40, (0.2,), 2
        args.saliency_n, args.ig_n = 10, 4
    torch.set_num_threads(1)

    def log(msg):
        print(msg, flush=True)

    log(f"settings: {vars(args)}; torch threads {torch.get_num_threads()}; load average at start "
        f"{os.getloadavg()} on {os.cpu_count()} cores")
    out = {}
    for pattern in args.patterns:
        for eff in args.effects:
            log(f"\n## effect_pattern = {pattern}, snp_effect = {eff}")
            t0 = time.time()
            res = run_setting(args, eff, log, pattern)
            if res is None:
                continue
            for key in ("recovery", "localisation", "peak_summary", "association"):
                if key in res:
                    log(f"\n### {key}\n" + res[key].to_markdown(index=False, floatfmt=".3f"))
            log(f"  setting wall time {time.time() - t0:.0f} s; load average {os.getloadavg()}")
            out[f"{pattern} {eff}"] = {k: (v.to_dict(orient="records") if isinstance(v, pd.DataFrame) else v)
                                       for k, v in res.items() if k != "association_tables"}
            out[f"{pattern} {eff}"]["association_tables"] = {  # every test, to read which scores passed
                name: tab.to_dict(orient="records") for name, tab in res.get("association_tables", {}).items()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    main()
