"""Brain-age CNN of the cpu preset across fit seeds and early-stopping patience (the demo's cohort).

The demo (``bash scripts/demo.sh``) once ended brain-age pre-training after 17 epochs at a holdout
MAE of 5.17 years, where earlier runs reached 2.29. This refits that CNN alone, with the cpu
preset's settings (``stage1`` of ``preset_cpu.toml``: early stopping on 20 % of the training
participants, LR halved on plateaus) on the demo's own participants (the embedded cohort, seed
0, the run's split), for several ``random_state`` values and patiences, and reports the holdout
MAE, the epochs run and the best epoch kept.

Usage (each fit takes 1.5-5 min on 2 cores, longer under load)::

    python benchmarks/bench_brain_age_seeds.py --patience 10 25 --seeds 0 1 2 3 4

Writes ``benchmarks/results/brain_age_seeds.jsonl`` (one line per fit, appended as it goes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sklearn_cgni.cli._config import load_config
from sklearn_cgni.cli._inputs import resolve_inputs
from sklearn_cgni.cli._run import run_pipeline
from sklearn_cgni.imaging import BrainAgeCNNTransformer

RESULTS = Path(__file__).parent / "results"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patience", type=int, nargs="+", default=[10])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", default=str(RESULTS / "brain_age_seeds.jsonl"))
    args = ap.parse_args(argv)
    cfg = load_config(None, preset="cpu", overrides=[])
    s = cfg["stage1"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        run_pipeline(out, cfg, resolve_inputs(), progress=False, preset="cpu", only="data")
        parts = pd.read_csv(out / "stages" / "data" / "participants.csv", index_col=0)
        ok = parts["image_qc_passed"] & parts["age"].notna()
        fit, test = parts[ok & (parts["split"] != "holdout")], parts[ok & (parts["split"] == "holdout")]
        base = float(np.abs(test["age"] - fit["age"].mean()).mean())
        print(f"{len(fit)} training, {len(test)} holdout participants; predicting the mean: MAE {base:.2f}", flush=True)
        for patience in args.patience:
            for seed in args.seeds:
                t = time.time()
                m = BrainAgeCNNTransformer(
                    channels=tuple(s["channels"]), padding=s["padding"], pool_blocks=s["pool_blocks"],
                    global_pool=s["global_pool"], max_epochs=s["pretrain_max_epochs"], early_stopping=True,
                    n_iter_no_change=patience, lr_schedule=s["lr_schedule"],
                    validation_fraction=s["validation_fraction"], standardize_voxels=s["standardize_voxels"],
                    augment_shift=s["augment_shift"], random_state=seed, lr=s["lr"], batch_size=s["batch_size"],
                    dropout=s["dropout"], weight_decay=s["weight_decay"])
                m.fit(fit["image"], fit["age"].to_numpy())
                mae = float(np.abs(m.predict(test["image"]) - test["age"].to_numpy()).mean())
                row = dict(patience=patience, seed=seed, mae=round(mae, 3), epochs=m.n_epochs_, best=m.best_epoch_,
                           sec=round(time.time() - t))
                print(json.dumps(row), flush=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
