"""``confounds`` stage: covariate-only baselines, covariate-adjusted and matched scores."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from .._protocol import CLASSICAL_MODELS, HV_PGS_LOGISTIC, PGS_LOGISTIC, TABLE1_CGNI, paper_models
from ._base import register
from ._common import _caught, _class_weight, _classical, _covariates, _model_configs, _rows_side_by_side

log = logging.getLogger("sklearn_cgni.cli")


def _brain_age_feature_model(n_img, class_weight, seed):
    """Logistic regression on the frozen brain-age CNN features h_v (no WM label ever reached the CNN)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("h_v", ColumnTransformer([("h_v", "passthrough", slice(0, n_img))])),
                     ("scale", StandardScaler()),
                     ("logistic", LogisticRegression(class_weight=class_weight, max_iter=2000, random_state=seed))])


def _imaging_cnn_confound_scores(run, folder, wm, y, cv, matched_ids):
    """Per-fold confound scores of the fine-tuned imaging CNN (Table 1's "Imaging CNN").

    raw and matched: the fold models of the finetune stages (their saved predictions), scored
    on each validation fold and on its matched participants; adjusted: the same CNN
    re-fine-tuned per fold on images whose voxels have the covariates regressed out, by the
    ``adjusted_cnn_f<k>`` stages. Fold 0's maps of what was removed are copied here.
    """
    import shutil

    from sklearn.metrics import balanced_accuracy_score

    from ...evaluation._incremental import _proba_logit

    adjusted = []
    for k in range(len(cv)):
        score = run.result(f"adjusted_cnn_f{k}")["score"]
        adjusted.append(np.nan if score is None else float(score))
    for effect in sorted(run.path("adjusted_cnn_f0").glob("covariate_effect_*.nii.gz")):
        shutil.copyfile(effect, folder / effect.name)
    rows, preds = [], []
    in_match = wm.index.isin(matched_ids) if matched_ids is not None else None
    for k, (tr, va) in enumerate(cv):
        proba = np.load(run.path(f"finetune_f{k}") / "cnn_proba.npy")
        pred = proba.argmax(1)  # the classes are 0 (low) and 1 (high) in every fold
        preds.append(pd.DataFrame({"model": "Imaging CNN", "fold": k, "participant": wm.index[va],
                                   "prediction": _proba_logit(proba[va, 1])}))
        evals = {"raw": va}
        if in_match is not None:
            evals["matched"] = va[in_match[va]]
        for ev, idx in evals.items():
            ok = len(idx) and len(np.unique(y[idx])) == 2
            rows.append({"model": "Imaging CNN", "kind": "model", "evaluation": ev, "fold": k,
                         "score": float(balanced_accuracy_score(y[idx], pred[idx])) if ok else np.nan,
                         "n_train": len(tr), "n_test": len(idx)})
        rows.append({"model": "Imaging CNN", "kind": "model", "evaluation": "adjusted", "fold": k,
                     "score": adjusted[k], "n_train": len(tr), "n_test": len(va)})
        log.info("fold %d imaging CNN: raw %.3f, adjusted %.3f", k, rows[-len(evals) - 1]["score"], rows[-1]["score"])
    return pd.DataFrame(rows), pd.concat(preds, ignore_index=True)


@register("confounds", config=("confounds", "contrastive", "classifier", "baselines", "data", "stage1", "protocol"),
          after=("data", "regions", "pgs", "brain_age", "finetune", "adjusted_cnn"),
          enabled=lambda run: run.cfg["confounds"]["enabled"], cost=8)
def _stage_confounds(run, folder):
    from ...evaluation import evaluate_confounds, match_groups, summarize_confounds

    c = run.cfg["confounds"]
    wm, y, G, snps = run.wm(genotypes="lazy")  # the training rows are read when each input is built
    train, _, cv = run.splits()
    hv = np.load(run.path("brain_age") / "hv_wm.npy", mmap_mode="r")
    n_img = hv.shape[1]
    pos = {p: i for i, p in enumerate(train)}
    folds = [(np.array([pos[i] for i in tr]), np.array([pos[i] for i in va])) for tr, va in cv]

    def training_rows(blocks, columns):
        """One model group's input: the training rows of ``blocks`` side by side (the values of
        ``np.hstack(blocks)[train]``), built when that group is evaluated and dropped after it, so the stage
        never holds two groups' inputs, nor every WM row's, at once."""
        return pd.DataFrame(_rows_side_by_side(blocks, train), index=wm.index[train], columns=columns, copy=False)

    covs, categorical = _covariates(run, wm.iloc[train])
    covariates = list(covs.columns)  # a one-level categorical covariate is left out (with a warning)
    match = None
    if c["match"]:
        match = match_groups(covs, y[train], random_state=run.seed, **(c["match"] if isinstance(c["match"], dict)
                                                                        else {}))
    contrastive, classifier, baselines = _model_configs(run)
    all_models = paper_models(n_img, contrastive=contrastive, classifier=classifier, baselines=baselines,
                              class_weight=_class_weight(run.cfg), device=run.device, random_state=run.seed,
                              cross_fit=run.cfg["classifier"]["cross_fit"])
    names = {"CGNI": TABLE1_CGNI, "Imaging-Genetic NN": "Imaging-Genetic NN (non-linear)",
             "Imaging-Genetic SVM": "Imaging-Genetic SVM (linear)", "Sparse Genetic NN": "Sparse Genetic NN"}
    models = {}
    for m in c["models"]:
        if m == "Brain-age CNN features":
            models[m] = _brain_age_feature_model(n_img, _class_weight(run.cfg), run.seed)
        elif m in names:
            models[m] = all_models[("Table 1", names[m])]
    R, regions = run.regions()
    classical = {m: est for m, est in _classical(run, R.shape[1]).items() if m in c["models"]}
    log.info("confound evaluation of %s on the training part (%d participants, %d folds)", list(c["models"]),
             len(train), len(folds))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        kw = dict(cv=folds, adjust="first", categorical=categorical, match=match if c["match"] else False,
                  n_permutations=c["n_permutations"], alternative="greater", random_state=run.seed)
        X = training_rows((hv, G), [f"h_v{i}" for i in range(n_img)] + list(snps))
        res = evaluate_confounds(models, X, y[train], covs, **kw)
        del X
        scores, predictions = res.scores, res.predictions
        if classical:  # their own input, [regional means ⊕ SNPs]; the covariate-only rows are already there
            X_classical = training_rows((R, G), [f"GM: {r}" for r in regions] + list(snps))
            res = evaluate_confounds(classical, X_classical, y[train], covs, **kw)
            del X_classical
            scores = pd.concat([scores, res.scores[res.scores["model"].isin(list(classical))]], ignore_index=True)
            predictions = pd.concat([predictions, res.predictions[res.predictions["model"].isin(list(classical))]],
                                    ignore_index=True)
        P = run.pgs(wm.index)
        if P is not None:  # data.pgs: the scores alone, and beside the brain-age h_v, into the classical logistic
            n_pgs = P.shape[1]
            X_pgs = training_rows((P, hv), [f"PGS{i}" for i in range(n_pgs)] + [f"h_v{i}" for i in range(n_img)])
            pgs_models = {PGS_LOGISTIC: _classical(run, n_pgs)[CLASSICAL_MODELS[0]],
                          HV_PGS_LOGISTIC: _classical(run, n_pgs + n_img)[CLASSICAL_MODELS[0]]}
            res = evaluate_confounds(pgs_models, X_pgs, y[train], covs, **kw)
            keep = res.scores["model"].isin(list(pgs_models))
            scores = pd.concat([scores, res.scores[keep]], ignore_index=True)
            predictions = pd.concat([predictions, res.predictions[res.predictions["model"].isin(list(pgs_models))]],
                                    ignore_index=True)
        if "Imaging CNN" in c["models"]:
            cnn, cnn_pred = _imaging_cnn_confound_scores(run, folder, wm, y, cv, None if match is None else match.ids)
            scores = pd.concat([scores, cnn], ignore_index=True)
            predictions = pd.concat([predictions, cnn_pred], ignore_index=True)
    _caught(caught)
    rank = {m: i for i, m in enumerate([*c["models"], PGS_LOGISTIC, HV_PGS_LOGISTIC])}  # rows in the configuration's order, baselines last
    scores = scores.iloc[np.argsort([rank.get(m, len(rank)) for m in scores["model"]], kind="stable")]
    summary = summarize_confounds(scores, predictions=predictions, y=y[train], covariates=covs,
                                  categorical=categorical, baseline="covariates: " + " + ".join(covariates),
                                  alternative="greater",
                                  n_permutations=c["n_permutations"], random_state=run.seed)
    summary.to_csv(folder / "confounds.csv", index=False)
    scores.to_csv(folder / "confound_scores.csv", index=False)
    predictions.to_csv(folder / "confound_predictions.csv", index=False)
    if match is not None and match.get("balance") is not None:
        pd.DataFrame(match.balance).to_csv(folder / "matching_balance.csv")
    features = {
        "Imaging CNN": "the fine-tuned stage-1 CNN of each fold on the images (adjusted: covariates regressed out of "
                       "every voxel inside the fold, then the CNN fine-tuned again)",
        "Brain-age CNN features": "logistic regression on h_v of the frozen brain-age CNN (never saw WM labels)",
        CLASSICAL_MODELS[0]: "logistic regression (C by inner CV) on the atlas's regional gray-matter means "
                             "(adjusted: covariates regressed out of each region's mean)",
        CLASSICAL_MODELS[1]: "logistic regression (C by inner CV) on the QC'd SNPs (adjusted: covariates regressed "
                             "out of each SNP)",
        CLASSICAL_MODELS[2]: "logistic regression on the out-of-fold probabilities of the two classical logistic "
                             "regressions (adjusted: both fitted on adjusted inputs; their probabilities are a "
                             "non-linear function of these)",
        PGS_LOGISTIC: "logistic regression (C by inner CV) on the polygenic scores of data.pgs (adjusted: covariates "
                      "regressed out of each score)",
        HV_PGS_LOGISTIC: "logistic regression (C by inner CV) on h_v of the frozen brain-age CNN and the polygenic "
                         "scores (here h_v is the brain-age CNN's, not the fine-tuned one of Table 1)",
    }
    shown = [*c["models"], *([PGS_LOGISTIC, HV_PGS_LOGISTIC] if run.pgs(wm.index) is not None else [])]
    return {"models": shown,
            "features": "brain-age CNN h_v (frozen, no WM labels) + QC'd SNPs, with covariates regressed out of "
                        "these columns for 'adjusted'",
            "model_features": {m: features[m] for m in shown if m in features},
            # models linear in their input features, for which the adjusted score is age-free
            "linear_models": [m for m in shown if m in ("Brain-age CNN features", *CLASSICAL_MODELS[:2], PGS_LOGISTIC,
                                                        HV_PGS_LOGISTIC)],
            "n_matched": len(match.ids) if match is not None else None}
