"""``scores`` stage: brain-genotype scores (cross-fitted), the IDP baseline, saliency and associations."""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import pandas as pd

from .._inputs import InputError
from ._base import register
from ._common import _caught, _cnn_kwargs, _covariates, _load_atlas, _read_phenotypes

log = logging.getLogger("sklearn_cgni.cli")


def _score_snp_choice(run, G_all, images, folds):
    """Which SNPs the brain-genotype scores are for: ``(G, select, source)`` for cross_fit_scores.

    ``scores.snps`` when given (the same SNPs in every fold). Otherwise a screen nested in the
    cross-fitting: in each fold, the ``scores.max_snps`` SNPs whose calls correlate most with
    regional gray-matter means (max |r| over atlas regions, from the regions stage) among that
    fold's training participants only, so the choice never sees the participants it scores.
    Nothing from CGNI (stage 2, occlusion) is used.
    """
    c = run.cfg["scores"]
    snps = list(G_all.columns)
    if c["snps"]:
        unknown = [s_ for s_ in c["snps"] if s_ not in set(snps)]
        if unknown:
            raise InputError(f"scores.snps lists SNP(s) not in the cohort after QC: {unknown[:10]}.")
        chosen = list(c["snps"])
        flat = [s_ for s_ in chosen if not all(np.nanstd(G_all[s_].to_numpy()[tr]) > 0 for tr, _ in folds)]
        if flat:
            raise InputError(f"scores.snps: SNP(s) {flat[:10]} do not vary within a cross-fitting training fold.")
        return G_all[chosen], None, "config"
    from ...imaging import screen_snps

    R, _ = run.regions(images.index)
    by_fold = {}
    for k, (tr, _) in enumerate(folds):
        by_fold[np.asarray(tr).tobytes()] = chosen = screen_snps(R[tr], G_all.iloc[tr], c["max_snps"])
        if not chosen:
            raise InputError(f"No SNP varies among the training participants of cross-fitting fold {k + 1}; "
                             "brain-genotype scores need polymorphic SNPs (or set scores.enabled = false).")
    return G_all, lambda tr: by_fold[np.asarray(tr).tobytes()], "screen"


def _held_out_accuracy(G, scores):
    """Per SNP and model: r of the held-out score with the observed genotype where both exist."""
    from ...imaging._genotype_scorer import per_snp_correlation

    snps = list(scores["CNN"].columns)
    obs = G[snps].to_numpy(dtype=float)
    per_model = {name: (per_snp_correlation(sc[snps].to_numpy(dtype=float), obs),
                        (np.isfinite(obs) & np.isfinite(sc[snps].to_numpy(dtype=float))).sum(axis=0))
                 for name, sc in scores.items()}
    return pd.DataFrame([{"snp": snp, "model": name, "r_held_out": float(r[j]), "n": int(n[j])}
                         for j, snp in enumerate(snps) for name, (r, n) in per_model.items()])


@register("scores", config=("scores", "stage1", "data"), inputs=True,
          after=("data", "regions", "image_cache", "brain_age"), enabled=lambda run: run.cfg["scores"]["enabled"],
          gpu=True, data_parallel=True, cost=12)
def _stage_scores(run, folder):
    from sklearn.model_selection import KFold

    from ...explain import SaliencyExplainer, association_table
    from ...imaging import BrainGenotypeScorer, cross_fit_scores, make_idp_scorer
    from ...utils._skorch import EpochProgressBar

    c = run.cfg["scores"]
    parts, snps, _ = run.data()
    raw = np.load(run.path("data") / "genotypes_raw.npy", mmap_mode="r")  # only the rows that passed image QC are read
    ok = parts["image_qc_passed"].to_numpy()
    ids = parts.index[ok]
    cv = KFold(c["cv"], shuffle=True, random_state=run.seed)
    folds = list(cv.split(np.zeros(len(ids))))
    images = parts.loc[ids, "image"]
    G_all = pd.DataFrame(raw[ok], index=ids, columns=snps)
    if not c["snps"]:  # a SNP constant here has nothing to score (listed ones are checked per fold below)
        G_all = G_all.loc[:, (G_all.max() > G_all.min()).to_numpy()]
    G, select, source = _score_snp_choice(run, G_all, images, folds)
    watch = c["early_stopping"] or c["lr_schedule"] != "none"
    scorer = BrainGenotypeScorer(
        task=c["task"], brain_age_model=os.fspath(run.path("brain_age") / "brain_age.pt"),
        n_transfer_blocks=c["n_transfer_blocks"],
        # the transferred blocks read what the brain-age CNN read: its (stage 1's) input standardisation
        standardize_voxels=run.cfg["stage1"]["standardize_voxels"],
        **{**_cnn_kwargs(run), "validation_fraction": c["validation_fraction"] if watch else 0.0},
        max_epochs=c["max_epochs"], early_stopping=c["early_stopping"], lr_schedule=c["lr_schedule"],
        n_iter_no_change=c["n_iter_no_change"],
        callbacks=[EpochProgressBar("genotype-score CNN", c["max_epochs"], run.progress)])
    log.info("brain-genotype scores: %s, %d-fold cross-fitting on %d participants",
             f"{len(G.columns)} SNPs from scores.snps" if select is None else
             f"the {c['max_snps']} SNPs per fold most associated with regional gray matter in its training part",
             c["cv"], len(ids))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        cnn_scores, estimators = cross_fit_scores(scorer, run.images(images), G, cv=folds, select=select,
                                                  return_estimators=True)
        affine = np.load(run.path("data") / "affine.npy")
        idp_scores = cross_fit_scores(make_idp_scorer(_load_atlas(run), affine=affine, alpha=c["idp_alpha"]),
                                      run.images(images), G, cv=folds, select=select)
    _caught(caught)
    cnn_scores.index, idp_scores.index = ids, ids
    cnn_scores.to_csv(folder / "scores_cnn.csv")
    idp_scores.to_csv(folder / "scores_idp.csv")
    chosen = list(cnn_scores.columns)
    acc = _held_out_accuracy(G, {"CNN": cnn_scores, "IDP": idp_scores})
    per_fold = [{str(x) for x in est.snp_names_} for est in estimators]
    acc["folds_scored"] = [sum(snp in f for f in per_fold) for snp in acc["snp"]]
    acc.to_csv(folder / "score_accuracy.csv", index=False)
    complete = [s_ for s_ in chosen if cnn_scores[s_].notna().all()]  # scored in every fold
    pheno = _read_phenotypes(run)
    measures = [m for m in run.cfg["data"]["measures"] if m in pheno.columns]
    pheno = pheno.reindex(ids)
    cov_frame, categorical = _covariates(run, pheno)
    covs = list(cov_frame.columns)
    keep = pheno[covs].notna().all(axis=1).to_numpy()
    pheno[covs] = cov_frame
    assoc = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        for name, sc in (("CNN", cnn_scores), ("IDP", idp_scores)):
            if measures and complete:
                t = association_table(sc.loc[keep, complete], pheno[keep], measures, covariates=covs,
                                      categorical=categorical, n_permutations=c["n_permutations"],
                                      genotypes=G_all.loc[ids[keep], complete], random_state=run.seed)
                t.insert(0, "model", name)
                assoc.append(t)
    _caught(caught)
    if assoc:
        pd.concat(assoc).to_csv(folder / "associations.csv", index=False)
    # saliency of fold 0's scorer on its own held-out participants
    test0 = folds[0][1][: c["saliency_participants"]]
    fwhm = c["saliency_fwhm"] or None  # signed maps smoothed by a matched filter, or magnitude maps as they are
    sal = SaliencyExplainer(estimators[0], atlas=_load_atlas(run), top_k=5, absolute=fwhm is None,
                            smoothing_fwhm=fwhm)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        sal.fit(images.iloc[test0].tolist())
    _caught(caught)
    if sal.top_regions_ is not None:
        sal.top_regions_.to_csv(folder / "saliency_top_regions.csv", index=False)
    summary = acc.groupby("model")["r_held_out"].mean().to_dict()
    log.info("brain-genotype scores: mean held-out r with the genotype: %s", {k: round(v, 3) for k, v in summary.items()})
    return {"snps": chosen, "n_participants": len(ids), "mean_r": summary, "measures": measures, "covariates": covs,
            "source_of_snps": source, "snps_per_fold": [list(est.snp_names_) for est in estimators],
            "snps_in_every_fold": complete,
            "epochs": [{"epochs_run": int(est.n_epochs_), "best_epoch": int(est.best_epoch_), "budget": int(est.budget_),
                        "stop_reason": est.stop_reason_, "restarts": int(est.n_restarts_)} for est in estimators]}
