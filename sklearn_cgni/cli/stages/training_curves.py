"""``training_curves`` stage: figure and table of the stage-1 CNNs' training."""

from __future__ import annotations

import pandas as pd

from ._base import register
from ._common import _figure, _savefig


@register("training_curves", config=("protocol", "stage1"), after=("brain_age", "finetune"))
def _stage_training_curves(run, folder):
    """Figure and table of the stage-1 CNNs' training: loss and validation metric per epoch."""
    from ...explain import plot_training_curves

    folds = run.cfg["protocol"]["folds"]
    runs = {"brain-age CNN": run.result("brain_age")}
    for k in range(folds):
        runs[f"WM CNN fold {k}"] = run.result(f"finetune_f{k}")
    rows = [{"model": name, "epochs_run": r["epochs_run"], "best_epoch": r["best_epoch"],
             "budget": r["budget"], "stop_reason": r["stop_reason"], "restarts": r["restarts"],
             **{f"best_{key}": r["history"][r["best_epoch"] - 1][key] for key in ("valid_mae", "valid_loss", "valid_bacc")
                if r["history"] and key in r["history"][r["best_epoch"] - 1]}}
            for name, r in runs.items()]
    pd.DataFrame(rows).to_csv(folder / "training.csv", index=False)
    figures = []
    if any(r["history"] for r in runs.values()):
        _savefig(plot_training_curves({name: r["history"] for name, r in runs.items()},
                                      best_epochs={name: r["best_epoch"] for name, r in runs.items()}),
                 folder / "training_curves.png")
        figures.append(_figure(folder, "training_curves.png", "Stage-1 training curves",
                               "Training and validation loss per epoch (left axis) and a validation metric (right "
                               "axis; brain age: MAE in years, WM folds: balanced accuracy), per CNN; the dotted "
                               "vertical line marks the epoch kept (best validation MAE for brain age, best "
                               "stage1.finetune_scoring for the WM folds)."))
    return {"rows": rows, "figures": figures}
