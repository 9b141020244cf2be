"""How well a linear model reads age from the cpu preset's simulated images: the brain-age CNN's classical yardstick.

For each ``--cohort-seeds`` (``make_cohort`` with the cpu preset's cohort settings; seed 0 is the demo's cohort),
the images planted as failed registrations are left out, and the 5-fold cross-validated MAE of age is computed for

- regional gray-matter means (AAL2 on the image grid) -> standardised -> ridge (``utils._linear.ridge_cv``), the
  model of the ``brain_age_classical`` stage;
- every in-brain voxel -> standardised -> ridge (the same penalty grid);
- predicting the training folds' mean age.

Every participant is predicted once (out of fold), so the MAE is over ~400 participants rather than the run's
36-participant holdout. Writes ``benchmarks/results/brain_age_floor.md``. Usage::

    python benchmarks/bench_brain_age_floor.py --cohort-seeds 0 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def floor(cohort_seed):
    from sklearn.model_selection import KFold, cross_val_predict

    from sklearn_cgni.cli._config import load_config
    from sklearn_cgni.datasets import make_cohort
    from sklearn_cgni.imaging import RegionalMeans
    from sklearn_cgni.utils._linear import ridge_cv

    c = load_config(None, preset="cpu")["cohort"]
    coh = make_cohort(c["n_participants"], c["n_snps"], shape=tuple(c["shape"]), demographics=c["demographics"],
                      effect_pattern=c["effect_pattern"], random_state=cohort_seed)
    bad = set(coh.ground_truth["bad_images"])
    keep = np.array([p not in bad for p in coh.participant_ids])
    images = np.asarray(coh.images, dtype=np.float64)[keep]
    age = coh.phenotypes["age"].to_numpy()[keep]
    voxels = images.reshape(len(images), -1)
    voxels = voxels[:, voxels.std(axis=0) > 1e-6]
    regions = RegionalMeans(affine=coh.affine).fit_transform(images)
    cv = KFold(5, shuffle=True, random_state=0)
    row = {"cohort_seed": cohort_seed, "n": int(keep.sum()), "n_voxels": voxels.shape[1], "n_regions": regions.shape[1]}
    for name, X in (("regional means -> ridge", regions), ("voxels -> ridge", voxels)):
        row[name] = float(np.mean(np.abs(cross_val_predict(ridge_cv(), X, age, cv=cv) - age)))
    mean_pred = np.empty_like(age)
    for tr, te in cv.split(age):
        mean_pred[te] = age[tr].mean()
    row["training mean"] = float(np.mean(np.abs(mean_pred - age)))
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cohort-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", default=str(RESULTS / "brain_age_floor.md"))
    args = ap.parse_args(argv)
    rows = [floor(s) for s in args.cohort_seeds]
    lines = ["# Brain age from the cpu preset's simulated images: 5-fold cross-validated MAE of linear models",
             "", "Written by `python benchmarks/bench_brain_age_floor.py --cohort-seeds "
             + " ".join(map(str, args.cohort_seeds)) + "` (see its docstring).", "",
             "| cohort seed | participants | regional means -> ridge | voxels -> ridge | training mean |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['cohort_seed']} | {r['n']} | {r['regional means -> ridge']:.2f} | {r['voxels -> ridge']:.2f} "
              f"({r['n_voxels']} voxels) | {r['training mean']:.2f} |" for r in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
