"""How much of the planted genetic effect do the stage-1 CNN's features carry, layer by layer?

Issue 14's recovery target fails with the CNN's ``h_v`` as stage 2's image input and is met
(at n = 5,000) with regional gray-matter means (``results/ground_truth_recovery_findings.md``).
This asks where the CNN loses the planted signal. For the stage-1 CNNs that
``bench_ground_truth_recovery.py --cache-dir D`` trained and cached (the brain-age CNN, and
with ``--representation wm-cnn`` that CNN transferred to the working-memory groups), it
measures :func:`bench_ground_truth_recovery.planted_signal_r` (mean over the affected regions
of the holdout r of a ridge, fitted on train, from the features to the region's planted
genetic part) of:

- ``h_v``: the last block globally average-pooled (the cpu preset's ``global_pool="avg"``);
- the last block's output *before* that pooling, flattened (the layout the paper's network
  keeps: "the flattened outputs of the final convolutional block");
- the output of the block before it (:meth:`transform_blocks` ``(X, 1)``);
- the regional gray-matter means of the images, for reference.

Same cohort, splits and QC as ``bench_ground_truth_recovery.py`` (imported from it); nothing
is retrained here. Run after the recovery runs:
``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_hv_planted_signal.py --cache-dir D --seed 0``.
Writes ``results/hv_planted_signal[_seedS].md``.
"""

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_ground_truth_recovery as gtr  # noqa: E402


def _cache(cache_dir, cfg, seed, wm):
    keys = ("n_participants", "n_snps", "shape", "cnn_channels", "cnn_epochs") + (("finetune_epochs",) if wm else ())
    key = json.dumps({k: cfg[k] for k in keys}, default=list) + f"-seed{seed}" + ("-wm" if wm else "")
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return Path(cache_dir) / (f"stage1-wm-{digest}.joblib" if wm else f"stage1-{digest}.joblib")


def _layers(cnn, images):
    """h_v, the last block before global pooling (flattened), and the block before it."""
    return {"h_v (global average pool)": cnn.transform(images),
            "last block, not pooled": gtr._apply(gtr.UnpooledFeatures(cnn), images),
            "block before the last (transform_blocks)": cnn.transform_blocks(images, 1)}
    # (the recovery bench's --hv previous-block is UnpooledFeatures(cnn, 1), the same activations)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(gtr.PRESETS), default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", required=True, help="where bench_ground_truth_recovery cached stage 1")
    args = parser.parse_args()
    import joblib
    import torch
    from sklearn.model_selection import train_test_split

    from sklearn_cgni.datasets import make_cohort

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    cfg = dict(gtr.PRESETS[args.preset])
    t0 = time.perf_counter()
    cohort = make_cohort(n_participants=cfg["n_participants"], n_snps=cfg["n_snps"], shape=tuple(cfg["shape"]),
                         random_state=args.seed, n_jobs=1)
    gt = cohort.ground_truth
    ids = np.asarray(cohort.participant_ids)
    pheno = cohort.phenotypes.loc[ids]
    keep = pheno["wm_group"].notna().to_numpy() & ~np.isin(ids, gt["bad_images"])
    idx = np.flatnonzero(keep)
    y = pheno["wm_group"].to_numpy()[idx].astype(int)
    tr, rest = train_test_split(idx, test_size=0.4, stratify=y, random_state=args.seed)  # as the recovery bench
    images = cohort.images
    y_rest = pheno["wm_group"].to_numpy()[rest].astype(int)
    _, ho = train_test_split(rest, test_size=0.5, stratify=y_rest, random_state=args.seed)

    rows = []
    regional = gtr._apply(gtr.RegionMeans(cohort.atlas), images)
    rows.append(("regional gray-matter means", "-", regional.shape[1], gtr.planted_signal_r(regional, cohort, tr, ho)))
    for wm, name in ((False, "brain-age CNN"), (True, "brain-age CNN transferred to WM")):
        path = _cache(args.cache_dir, cfg, args.seed, wm)
        if not path.exists():
            print(f"no cached {name} at {path}; run bench_ground_truth_recovery.py with --cache-dir first")
            continue
        cnn, _ = joblib.load(path)
        for layer, feats in _layers(cnn, images).items():
            r = gtr.planted_signal_r(feats, cohort, tr, ho)
            rows.append((name, layer, feats.shape[1], r))
            print(f"{name:32s} {layer:42s} {feats.shape[1]:6d} features: planted r {r:.3f}", flush=True)
    elapsed = time.perf_counter() - t0
    out = Path(__file__).parent / "results" / f"hv_planted_signal{'_seed' + str(args.seed) if args.seed else ''}.md"
    lines = [
        "# Planted genetic signal in the stage-1 CNN's layers (make_cohort, "
        f"`--preset {args.preset}`, seed {args.seed})",
        "",
        f"python {platform.python_version()}, {os.cpu_count()} cores; {elapsed:.0f} s. Command: "
        f"`OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '2')} .venv/bin/python benchmarks/"
        f"bench_hv_planted_signal.py --preset {args.preset} --seed {args.seed} --cache-dir D` "
        "(D: where `bench_ground_truth_recovery.py --cache-dir D` cached the CNNs).",
        "",
        "planted r: mean over the affected regions of the holdout correlation of a ridge (fitted on the "
        f"{len(tr)} training participants) from the features to the region's planted genetic part "
        f"({len(ho)} holdout participants).",
        "",
        "| network | layer | features | planted r |",
        "|---|---|---:|---:|",
        *[f"| {a} | {b} | {n} | {r:.3f} |" for a, b, n, r in rows],
        "",
    ]
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
