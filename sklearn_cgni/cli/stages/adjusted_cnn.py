"""``adjusted_cnn_f<k>`` stage: the imaging CNN fine-tuned on covariate-adjusted images of fold k (confound table)."""

from __future__ import annotations

import logging
from urllib.parse import quote

import numpy as np
import pandas as pd

from ._base import register
from ._common import _covariates, _training_summary, _wm_cnn

log = logging.getLogger("sklearn_cgni.cli")


def _enabled(run):
    c = run.cfg["confounds"]
    return bool(c["enabled"]) and "Imaging CNN" in c["models"]


@register("adjusted_cnn", config=("confounds", "data", "stage1", "protocol"), after=("data", "image_cache", "brain_age"),
          per_fold=True, enabled=_enabled, gpu=True, data_parallel=True, cost=9)
def _stage_adjusted_cnn(run, folder, k):
    """The "adjusted" score of Table 1's "Imaging CNN" in the confound table, on fold ``k``.

    The covariates are regressed out of every voxel on the fold's training participants
    (:class:`~sklearn_cgni.evaluation.ImageCovariateRegressor`), the WM CNN is fine-tuned from
    the brain-age CNN on those adjusted images, and it is scored on the validation fold adjusted
    with the training coefficients (:func:`~sklearn_cgni.evaluation.adjusted_image_scores`).
    The images are read from the run's image cache, as the other CNNs read them, and each is
    adjusted when the CNN reads it (``lazy``): no adjusted copy is held or written (at 128×141×128
    such a copy takes 9.2 MB an image).
    One stage per fold, so that the folds train side by side under ``--scheduler``; the
    ``confounds`` stage collects them. The maps of what was removed are written as
    ``covariate_effect_<name>.nii.gz``.
    """
    import nibabel as nib

    from ...evaluation import adjusted_image_scores

    wm, y, _, _ = run.wm(genotypes=False)
    train, _, cv = run.splits()
    covs, categorical = _covariates(run, wm.iloc[train])  # a one-level covariate is left out, as in `confounds`
    covariates = list(covs.columns)
    frame = pd.concat([wm[["image"]], _covariates(run, wm)[0][covariates]], axis=1)
    # no restarts here: on covariate-adjusted images a validation loss at the class priors' level can be the
    # answer (no WM signal left), not a stalled run; restarting doubled the confound stage's time in the demo
    scores, adjusters, cnns = adjusted_image_scores(
        lambda _: _wm_cnn(run, f"adjusted WM CNN fold {k}").set_params(max_restarts=0), frame, y,
        covariates=covariates, categorical=categorical, cv=[cv[k]], image_column="image",
        images=run.images(wm["image"]), lazy=True, return_adjusters=True, return_models=True)
    affine = np.load(run.path("data") / "affine.npy")  # the data stage's, as the scores stage reads it
    for name, coef in zip(adjusters[0].design_names_, adjusters[0].coef_):
        # design names hold level names (any text): escaped before they name a file
        nib.save(nib.Nifti1Image(coef, affine), folder / f"covariate_effect_{quote(str(name), safe='=-_.')}.nii.gz")
    log.info("fold %d imaging CNN on covariate-adjusted images: %.3f; %d epochs, best %d", k, scores[0],
             cnns[0].n_epochs_, cnns[0].best_epoch_)
    return {"score": float(scores[0]) if np.isfinite(scores[0]) else None, "covariates": covariates,
            **_training_summary(cnns[0])}
