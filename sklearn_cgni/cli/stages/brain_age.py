"""``brain_age`` stage (stage 1 of CGNI): the 3D CNN pre-trained on brain age (training participants)."""

from __future__ import annotations

import logging

import numpy as np

from ._base import register
from ._common import _arch, _stage1_kwargs, _training_summary

log = logging.getLogger("sklearn_cgni.cli")


@register("brain_age", config=("stage1",), after=("data",), gpu=True, data_parallel=True, cost=11)
def _stage_brain_age(run, folder):
    from ...imaging import BrainAgeCNNTransformer

    parts, _, _ = run.data()
    s = run.cfg["stage1"]
    ok = parts["image_qc_passed"] & parts["age"].notna()
    fit_ids = parts.index[ok & (parts["split"] != "holdout")]
    test_ids = parts.index[ok & (parts["split"] == "holdout")]
    model = BrainAgeCNNTransformer(**_arch(run.cfg), **_stage1_kwargs(run, s["pretrain_max_epochs"], "brain-age CNN"))
    model.fit(parts.loc[fit_ids, "image"], parts.loc[fit_ids, "age"].to_numpy())
    model.save_weights(folder / "brain_age.pt")
    pred = model.predict(parts.loc[test_ids, "image"])
    age_test = parts.loc[test_ids, "age"].to_numpy()
    mae = float(np.mean(np.abs(pred - age_test)))
    mae_mean = float(np.mean(np.abs(age_test - parts.loc[fit_ids, "age"].mean())))
    wm, _, _, _ = run.wm()
    np.save(folder / "hv_wm.npy", model.transform(wm["image"]))
    log.info("brain-age CNN: holdout MAE %.2f years (predicting the training mean: %.2f); %d epochs, best %d",
             mae, mae_mean, model.n_epochs_, model.best_epoch_)
    return {"mae_holdout": mae, "mae_of_mean_predictor": mae_mean, "n_fit": len(fit_ids), "n_test": len(test_ids),
            "h_v_width": int(model.n_features_out_), "arch": {k: (list(v) if isinstance(v, tuple) else v)
                                                                for k, v in model.arch_.items()},
            **_training_summary(model)}
