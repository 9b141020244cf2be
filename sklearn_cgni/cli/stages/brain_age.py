"""``brain_age`` stage (stage 1 of CGNI): the 3D CNN pre-trained on brain age (training participants)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ._base import register
from ._common import _arch, _stage1_kwargs, _training_summary

log = logging.getLogger("sklearn_cgni.cli")


@register("brain_age", config=("stage1",), after=("data", "image_cache"), gpu=True, data_parallel=True, cost=11)
def _stage_brain_age(run, folder):
    from ...imaging import BrainAgeCNNTransformer

    parts, _, _ = run.data()
    s = run.cfg["stage1"]
    fit_ids, test_ids = _brain_age_participants(parts)
    model = BrainAgeCNNTransformer(**_arch(run.cfg), **_stage1_kwargs(run, s["pretrain_max_epochs"], "brain-age CNN"))
    model.fit(run.images(parts.loc[fit_ids, "image"]), parts.loc[fit_ids, "age"].to_numpy())
    model.save_weights(folder / "brain_age.pt")
    pred = model.predict(run.images(parts.loc[test_ids, "image"]))
    age_test = parts.loc[test_ids, "age"].to_numpy()
    err, err_mean = np.abs(pred - age_test), np.abs(age_test - parts.loc[fit_ids, "age"].mean())
    mae, mae_mean = float(err.mean()), float(err_mean.mean())
    uncertainty = _mae_uncertainty(err, err_mean, run.seed)
    pd.DataFrame({"participant_id": test_ids, "age": age_test, "predicted_age": pred}).to_csv(
        folder / "holdout_predictions.csv", index=False)
    wm, _, _, _ = run.wm(genotypes=False)
    np.save(folder / "hv_wm.npy", model.transform(run.images(wm["image"])))
    log.info("brain-age CNN: holdout MAE %.2f years [95 %% CI %.2f, %.2f] (predicting the training mean: %.2f); "
             "%d epochs, best %d", mae, uncertainty["mae_ci_low"], uncertainty["mae_ci_high"], mae_mean,
             model.n_epochs_, model.best_epoch_)
    return {"mae_holdout": mae, **uncertainty, "mae_of_mean_predictor": mae_mean, "n_fit": len(fit_ids),
            "n_test": len(test_ids),
            "h_v_width": int(model.n_features_out_), "arch": {k: (list(v) if isinstance(v, tuple) else v)
                                                                for k, v in model.arch_.items()},
            **_training_summary(model)}


@register("brain_age_classical", after=("data", "regions", "brain_age"), cost=0.1)
def _stage_brain_age_classical(run, folder):
    """The brain-age model a reviewer would try first, on the CNN's own training and holdout participants:
    regional gray-matter means -> ridge (``utils._linear.ridge_cv``), its holdout MAE with a bootstrap interval,
    and the CNN's gain over it, paired over the same test participants (ridge error minus CNN error: positive
    when the CNN is better), with its interval and permutation p.

    A stage of its own, so that recomputing the regional means (another atlas) does not retrain the CNN.
    """
    from ...utils._linear import ridge_cv

    parts, _, _ = run.data()
    fit_ids, _ = _brain_age_participants(parts)
    cnn = pd.read_csv(run.path("brain_age") / "holdout_predictions.csv", dtype={"participant_id": str})
    test_ids = pd.Index(cnn["participant_id"])
    ridge = ridge_cv().fit(run.regions(fit_ids)[0], parts.loc[fit_ids, "age"].to_numpy())
    age_test = cnn["age"].to_numpy()
    err = np.abs(cnn["predicted_age"].to_numpy() - age_test)
    err_ridge = np.abs(ridge.predict(run.regions(test_ids)[0]) - age_test) if len(test_ids) else np.array([])
    (low, high), gain = _mae_interval(err_ridge, run.seed), _paired_gain(err_ridge, err, run.seed)
    out = {"ridge_mae_holdout": float(err_ridge.mean()) if err_ridge.size else float("nan"),
           "ridge_mae_ci_low": low, "ridge_mae_ci_high": high, "mae_gain_over_ridge": gain["difference"],
           "mae_gain_over_ridge_ci_low": gain["ci_low"], "mae_gain_over_ridge_ci_high": gain["ci_high"],
           "mae_gain_over_ridge_pvalue": gain["pvalue"], "ridge_alpha": float(ridge[-1].alpha_),
           "n_fit": len(fit_ids), "n_test": len(test_ids)}
    if np.isfinite(gain["pvalue"]):
        log.info("classical brain age (regional means -> ridge): holdout MAE %.2f years; the CNN's MAE is lower by "
                 "%.2f years [95 %% CI %.2f, %.2f], paired p = %.3g", out["ridge_mae_holdout"], gain["difference"],
                 gain["ci_low"], gain["ci_high"], gain["pvalue"])
    return out


def _brain_age_participants(parts):
    """The brain-age CNN's training and holdout participants: image QC passed, age known, by the WM split."""
    ok = parts["image_qc_passed"] & parts["age"].notna()
    return parts.index[ok & (parts["split"] != "holdout")], parts.index[ok & (parts["split"] == "holdout")]


def _mae_interval(err, seed):
    """95 % percentile bootstrap interval of the mean absolute error over the test participants (NaN with < 2)."""
    from scipy.stats import bootstrap

    if err.size < 2:
        return float("nan"), float("nan")
    ci = bootstrap((err,), np.mean, confidence_level=0.95, n_resamples=2000, method="percentile",
                   random_state=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def _paired_gain(err_baseline, err, seed):
    """How much lower ``err`` is than a baseline's errors on the same participants: the mean paired difference with
    its bootstrap interval and sign-flip permutation p (:func:`~sklearn_cgni.evaluation.paired_mean_difference`;
    NaN with fewer than 2 participants)."""
    from ...evaluation import paired_mean_difference

    if err.size < 2:
        return dict.fromkeys(("difference", "ci_low", "ci_high", "pvalue"), float("nan"))
    gain = paired_mean_difference(err_baseline, err, n_resamples=2000, random_state=seed)
    return {"difference": gain.difference, "ci_low": gain.ci_low, "ci_high": gain.ci_high, "pvalue": gain.pvalue}


def _mae_uncertainty(err, err_mean, seed):
    """How precisely the holdout pins the MAE down: a percentile bootstrap interval over the test
    participants, and the gain over predicting the training mean (paired: same participants) with
    its interval and sign-flip permutation p. NaN with fewer than 2 test participants."""
    (low, high), gain = _mae_interval(err, seed), _paired_gain(err_mean, err, seed)
    return {"mae_ci_low": low, "mae_ci_high": high, "mae_gain_over_mean": gain["difference"],
            "mae_gain_ci_low": gain["ci_low"], "mae_gain_ci_high": gain["ci_high"], "mae_gain_pvalue": gain["pvalue"]}
