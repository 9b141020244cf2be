"""``models`` stage: CGNI stages 2-3, the baselines and the classical rows on one fold (Tables 1 and 2)."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pandas as pd

from .._protocol import (
    CLASSICAL_MODELS,
    FINETUNED_CGNI,
    HV_LOGISTIC,
    HV_PGS_LOGISTIC,
    HV_PGS_STACKED,
    PGS_CGNI,
    PGS_LOGISTIC,
    REGIONAL_CGNI,
    TABLE1_CGNI,
    paper_models,
    score_model,
    tuned,
)
from .._stages import progress_bar
from ._base import register
from ._common import _class_weight, _classical, _covariates, _model_configs, _rows_side_by_side

log = logging.getLogger("sklearn_cgni.cli")


def _covariate_records(run, wm, y, tr, va, hold, k, predictions=None):
    """Covariate-only logistic regressions (each covariate, then all) on the fold's splits, for Tables 1 and 2.

    ``predictions``: a list that receives Table 1's predicted labels on the validation part and the holdout.
    """
    from ...evaluation import covariate_baselines

    covs, categorical = _covariates(run, wm)
    tables = ("Table 1", "Table 2") if run.cfg["protocol"]["table2"] else ("Table 1",)
    splits = {"train": (covs.iloc[tr], y[tr]), "validation": (covs.iloc[va], y[va]),
              "holdout": (covs.iloc[hold], y[hold])}
    records = []
    for name, model in covariate_baselines(list(covs.columns), categorical=categorical,
                                           class_weight=_class_weight(run.cfg), random_state=run.seed).items():
        est = model.fit(covs.iloc[tr], y[tr])
        predicted = {split: est.predict(X) for split, (X, _) in splits.items()}
        for table in tables:
            records += score_model(lambda split: predicted[split], {s: (s, t) for s, (_, t) in splits.items()},
                                   table=table, model=name, fold=k)
        if predictions is not None:
            predictions += [dict(table="Table 1", model=name, split=split, predicted=predicted[split].astype(int))
                            for split in ("validation", "holdout")]
    return records


def _fit_and_score(model, splits, *, table, name, k, predictions=None):
    """Fit ``model`` on ``splits["train"]`` and score it on every split: ``(fitted, records)``, timed and logged.

    ``predictions``: a list that receives each split's predicted labels (one record per split).
    """
    t0 = time.perf_counter()
    est = model.fit(*splits["train"])
    predicted = {split: est.predict(X) for split, (X, _) in splits.items()}  # each split predicted once
    recs = score_model(lambda split: predicted[split], {split: (split, y) for split, (_, y) in splits.items()},
                       table=table, model=name, fold=k)
    for r in recs:
        r["seconds"] = time.perf_counter() - t0
    if predictions is not None:
        predictions += [dict(table=table, model=name, split=split, predicted=p.astype(int))
                        for split, p in predicted.items() if split != "train"]
    log.info("fold %d %s %s: validation %.3f, holdout %.3f (%.1f s)", k, table, name,
             recs[1]["balanced_accuracy"], recs[2]["balanced_accuracy"], time.perf_counter() - t0)
    return est, recs


def _search_record(est, *, table, name, k):
    """What the inner search of a tuned row chose, for the report."""
    res = est.cv_results_
    return dict(table=table, model=name, fold=k, best_params={p.rsplit("__", 1)[-1]: v for p, v in
                                                               est.best_params_.items()},
                inner_score=float(est.best_score_), n_candidates=len(res["params"]),
                seconds=float(sum(res["mean_fit_time"]) * est.n_splits_ + est.refit_time_))


def _classical_records(run, splits, n_regions, k, predictions=None):
    """Table 1's classical rows (``splits``: the fold's ``{split: ([regional means ⊕ SNPs], y)}``) fitted on
    its training rows and scored."""
    return [r for name, model in _classical(run, n_regions).items()
            for r in _fit_and_score(model, splits, table="Table 1", name=name, k=k, predictions=predictions)[1]]


def _cgni_with_pgs(cgni, n_stage2):
    """A CGNI pipeline whose stage 3 also sees the standardised polygenic scores (columns after ``n_stage2``)."""
    from sklearn.base import clone
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    features = ColumnTransformer([("contrastive", clone(cgni.named_steps["contrastive"]), slice(0, n_stage2)),
                                  ("pgs", StandardScaler(), slice(n_stage2, None))])
    return Pipeline([("features", features), ("classifier", clone(cgni.named_steps["classifier"]))])


def _split_builder(y, tr, va, hold):
    """``build(*blocks, dtype=None)``: the fold's ``{split: (X, y)}`` with ``X`` the blocks' rows side by side.

    Each split's rows are read from the blocks (in-memory arrays or memory maps of the WM rows) when the job that
    needs them runs, so the stage never holds a whole ``[h_v ⊕ SNPs]`` matrix beside its splits, nor one job's data
    while another job runs: at 45,000 WM participants those copies were ~1.5 GB of the stage's 2.6-GB peak
    (``benchmarks/results/scale.md``). The values are those of ``np.hstack(blocks)[rows]`` (same promotion, then
    ``dtype``).
    """

    def build(*blocks, dtype=None):
        return {split: (_rows_side_by_side(blocks, idx, dtype), y[idx])
                for split, idx in (("train", tr), ("validation", va), ("holdout", hold))}

    return build


@register("models", config=("contrastive", "classifier", "baselines", "protocol", "data", "search"),
          after=("data", "regions", "pgs", "image_cache", "finetune"), per_fold=True, gpu=True, cost=1)
def _stage_models(run, folder, k):
    from sklearn.base import clone

    wm, y, G, snps = run.wm(genotypes="lazy")  # each job reads the rows of its splits
    train, hold, cv = run.splits()
    tr, va = cv[k]
    hv = np.load(run.path(f"finetune_f{k}") / "hv.npy")
    n_img = hv.shape[1]
    contrastive, classifier, baselines = _model_configs(run)
    # a term switched off here (gamma_vv = 0, as in the paper) takes the paper's weight in the combinations with it
    weights = {n: contrastive[n] for n in ("lambda_vg", "sigma_gv", "gamma_vv", "theta_gg")}
    models = paper_models(n_img, contrastive=contrastive, classifier=classifier, baselines=baselines,
                          class_weight=_class_weight(run.cfg), device=run.device, random_state=run.seed,
                          table2=run.cfg["protocol"]["table2"], term_weights=weights,
                          cross_fit=run.cfg["classifier"]["cross_fit"])
    fold_splits = _split_builder(y, tr, va, hold)

    def cgni_on(image_input, **encoder):
        """Table 1's CGNI on ``[image_input ⊕ SNPs]`` (item 4 of issue 14), with its fold splits (built when run)."""
        model = paper_models(image_input.shape[1], contrastive={**contrastive, **encoder}, classifier=classifier,
                             baselines=baselines, class_weight=_class_weight(run.cfg), device=run.device,
                             random_state=run.seed, cross_fit=run.cfg["classifier"]["cross_fit"])
        return model[("Table 1", TABLE1_CGNI)], lambda: fold_splits(image_input, G, dtype=np.float32)

    R, _ = run.regions(wm.index)
    c, search = run.cfg["contrastive"], run.cfg["search"]
    jobs = [(table, name, model, lambda: fold_splits(hv, G, dtype=np.float32)) for (table, name), model in models.items()]
    if c["regional_row"]:  # the same CGNI with regional GM means as its image input
        jobs.append(("Table 1", REGIONAL_CGNI, *cgni_on(R)))
    if c["finetune_blocks"]:  # item 4 of issue 14: the contrastive loss also fine-tunes the CNN's last blocks
        from ...imaging import ImagingCNNClassifier

        images = run.images(wm["image"])
        cnn = ImagingCNNClassifier.from_weights(os.fspath(run.path(f"finetune_f{k}") / "cnn.pt"),
                                                images[:2], device=run.device)
        A = cnn.transform_blocks(images, c["finetune_blocks"])  # the activations entering those blocks
        jobs.append(("Table 1", FINETUNED_CGNI, *cgni_on(A, image_tail=cnn.last_blocks(c["finetune_blocks"]))))
    P = run.pgs(wm.index)  # polygenic scores (data.pgs), WM rows
    if P is not None:  # CGNI with the scores beside z_g: stage 2 on [h_v, SNPs], the scaled scores passed to stage 3
        jobs.append(("Table 1", PGS_CGNI, _cgni_with_pgs(models[("Table 1", TABLE1_CGNI)], n_img + G.shape[1]),
                     lambda: fold_splits(hv, G, P, dtype=np.float32)))
    records, searched, predictions = [], [], []
    bar = progress_bar(jobs, enabled=run.progress, desc=f"models fold {k}", leave=False, position=1, unit="model")
    for table, name, model, make_data in bar:
        bar.set_postfix_str(name[:30])
        is_cgni = name in (TABLE1_CGNI, REGIONAL_CGNI, FINETUNED_CGNI) or table == "Table 2"
        if search["grid"] and is_cgni and (table == "Table 1" or search["table2"]):
            model = tuned(model, search["grid"], inner_cv=search["inner_cv"],
                          validation_fraction=search["validation_fraction"],
                          combo=name if table == "Table 2" else None, random_state=run.seed)
        est, recs = _fit_and_score(clone(model), make_data(), table=table, name=name, k=k, predictions=predictions)
        records += recs
        if hasattr(est, "best_params_"):
            searched.append(_search_record(est, table=table, name=name, k=k))
            est = est.best_estimator_
        if k == 0 and table == "Table 1" and name == TABLE1_CGNI:
            enc = est.named_steps["contrastive"]
            enc = getattr(enc, "transformer_", enc)  # cross-fitted: the encoder refitted on all training rows
            enc.save_weights(folder / "encoder.pt")
            X = np.hstack([hv, G[slice(None)]]).astype(np.float32)  # every WM row, for stage 5's SCCA
            np.save(folder / "z_v.npy", enc.transform_image(X))
            np.save(folder / "z_g.npy", enc.transform_genetic(X))
            del X
    # the CNN features alone through the classical row's logistic regression (same inner folds, C grid, weights)
    records += _fit_and_score(_classical(run, hv.shape[1])[CLASSICAL_MODELS[0]], fold_splits(hv), table="Table 1",
                              name=HV_LOGISTIC, k=k, predictions=predictions)[1]
    records += _classical_records(run, fold_splits(R, G), R.shape[1], k, predictions)
    if P is not None:  # the scores alone, and beside h_v, through the same logistic regression; and stacked
        for name, blocks in ((PGS_LOGISTIC, (P,)), (HV_PGS_LOGISTIC, (hv, P))):
            records += _fit_and_score(_classical(run, sum(b.shape[1] for b in blocks))[CLASSICAL_MODELS[0]],
                                      fold_splits(*blocks), table="Table 1", name=name, k=k, predictions=predictions)[1]
        # the classical stacked row with h_v in place of the regional means and the scores in place of the SNPs
        records += _fit_and_score(_classical(run, hv.shape[1])[CLASSICAL_MODELS[2]], fold_splits(hv, P),
                                  table="Table 1", name=HV_PGS_STACKED, k=k, predictions=predictions)[1]
    records += _covariate_records(run, wm, y, tr, va, hold, k, predictions)
    ids = {"validation": wm.index[va], "holdout": wm.index[hold]}
    pd.concat([pd.DataFrame({"participant_id": ids[p["split"]], "table": p["table"], "model": p["model"],
                             "split": p["split"], "predicted": p["predicted"]}) for p in predictions]
              ).to_csv(folder / "predictions.csv.gz", index=False,
                       compression={"method": "gzip", "mtime": 0})  # no timestamp: same run, same bytes
    return {"records": records, "search": searched}
