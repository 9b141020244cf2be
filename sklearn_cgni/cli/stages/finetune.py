"""``finetune`` stage (stage 1 of CGNI): the CNN transferred to working memory and fine-tuned on one fold; its h_v."""

from __future__ import annotations

import logging

import numpy as np

from .._protocol import score_model
from ._base import register
from ._common import _training_summary, _wm_cnn

log = logging.getLogger("sklearn_cgni.cli")


@register("finetune", config=("stage1",), after=("data", "image_cache", "brain_age"), per_fold=True, gpu=True,
          data_parallel=True, cost=7)
def _stage_finetune(run, folder, k):
    wm, y, _, _ = run.wm(genotypes=False)
    train, hold, cv = run.splits()
    tr, va = cv[k]
    images = wm["image"]  # indexed by participant ID: errors name the participant
    cnn = _wm_cnn(run, f"WM CNN fold {k}")
    cnn.fit(run.images(images.iloc[tr]), y[tr])
    cnn.save_weights(folder / "cnn.pt")
    images = run.images(images)
    proba = cnn.predict_proba(images)
    np.save(folder / "cnn_proba.npy", proba)
    np.save(folder / "hv.npy", cnn.transform(images))
    pred = cnn.classes_[proba.argmax(1)]
    idx = {"train": tr, "validation": va, "holdout": hold}
    records = score_model(lambda ix: pred[ix], {n: (ix, y[ix]) for n, ix in idx.items()},
                          table="Table 1", model="Imaging CNN", fold=k)
    log.info("fold %d imaging CNN: validation %.3f, holdout %.3f; %d epochs, best %d", k,
             records[1]["balanced_accuracy"], records[2]["balanced_accuracy"], cnn.n_epochs_, cnn.best_epoch_)
    return {"records": records, **_training_summary(cnn)}
