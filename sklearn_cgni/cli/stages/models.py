"""``models`` stage: CGNI stages 2-3, the baselines and the classical rows on one fold (Tables 1 and 2)."""

from __future__ import annotations

import logging
import time

import numpy as np

from .._protocol import TABLE1_CGNI, paper_models, score_model
from .._stages import progress_bar
from ._base import register
from ._common import _class_weight, _classical, _covariates, _model_configs

log = logging.getLogger("sklearn_cgni.cli")


def _covariate_records(run, wm, y, tr, va, hold, k):
    """Covariate-only logistic regressions (each covariate, then all) on the fold's splits, for Tables 1 and 2."""
    from ...evaluation import covariate_baselines

    covs, categorical = _covariates(run, wm)
    tables = ("Table 1", "Table 2") if run.cfg["protocol"]["table2"] else ("Table 1",)
    splits = {"train": (covs.iloc[tr], y[tr]), "validation": (covs.iloc[va], y[va]),
              "holdout": (covs.iloc[hold], y[hold])}
    records = []
    for name, model in covariate_baselines(list(covs.columns), categorical=categorical,
                                           class_weight=_class_weight(run.cfg), random_state=run.seed).items():
        est = model.fit(covs.iloc[tr], y[tr])
        for table in tables:
            records += score_model(est.predict, splits, table=table, model=name, fold=k)
    return records


def _fit_and_score(model, splits, *, table, name, k):
    """Fit ``model`` on ``splits["train"]`` and score it on every split: ``(fitted, records)``, timed and logged."""
    t0 = time.perf_counter()
    est = model.fit(*splits["train"])
    recs = score_model(est.predict, splits, table=table, model=name, fold=k)
    for r in recs:
        r["seconds"] = time.perf_counter() - t0
    log.info("fold %d %s %s: validation %.3f, holdout %.3f (%.1f s)", k, table, name,
             recs[1]["balanced_accuracy"], recs[2]["balanced_accuracy"], time.perf_counter() - t0)
    return est, recs


def _classical_records(run, X, n_regions, y, tr, va, hold, k):
    """Table 1's classical rows (``X`` = [regional means ⊕ SNPs]) fitted on the fold's training rows and scored."""
    splits = {"train": (X[tr], y[tr]), "validation": (X[va], y[va]), "holdout": (X[hold], y[hold])}
    return [r for name, model in _classical(run, n_regions).items()
            for r in _fit_and_score(model, splits, table="Table 1", name=name, k=k)[1]]


@register("models", config=("contrastive", "classifier", "baselines", "protocol", "data"),
          after=("data", "regions", "finetune"), per_fold=True)
def _stage_models(run, folder, k):
    from sklearn.base import clone

    wm, y, G, snps = run.wm()
    train, hold, cv = run.splits()
    tr, va = cv[k]
    hv = np.load(run.path(f"finetune_f{k}") / "hv.npy")
    X = np.hstack([hv, G]).astype(np.float32)
    n_img = hv.shape[1]
    contrastive, classifier, baselines = _model_configs(run)
    # a term switched off here (gamma_vv = 0, as in the paper) takes the paper's weight in the combinations with it
    weights = {n: contrastive[n] for n in ("lambda_vg", "sigma_gv", "gamma_vv", "theta_gg")}
    models = paper_models(n_img, contrastive=contrastive, classifier=classifier, baselines=baselines,
                          class_weight=_class_weight(run.cfg), device=run.device, random_state=run.seed,
                          table2=run.cfg["protocol"]["table2"], term_weights=weights,
                          cross_fit=run.cfg["classifier"]["cross_fit"])
    splits = {"train": (X[tr], y[tr]), "validation": (X[va], y[va]), "holdout": (X[hold], y[hold])}
    records = []
    bar = progress_bar(list(models.items()), enabled=run.progress, desc=f"models fold {k}", leave=False,
                       position=1, unit="model")
    for (table, name), model in bar:
        bar.set_postfix_str(name[:30])
        est, recs = _fit_and_score(clone(model), splits, table=table, name=name, k=k)
        records += recs
        if k == 0 and table == "Table 1" and name == TABLE1_CGNI:
            enc = est.named_steps["contrastive"]
            enc = getattr(enc, "transformer_", enc)  # cross-fitted: the encoder refitted on all training rows
            enc.save_weights(folder / "encoder.pt")
            np.save(folder / "z_v.npy", enc.transform_image(X))
            np.save(folder / "z_g.npy", enc.transform_genetic(X))
    R, _ = run.regions()
    records += _classical_records(run, np.hstack([R, G]), R.shape[1], y, tr, va, hold, k)
    records += _covariate_records(run, wm, y, tr, va, hold, k)
    return {"records": records}
