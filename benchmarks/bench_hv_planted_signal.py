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
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_ground_truth_recovery as gtr  # noqa: E402


def _layers(cnn, h_v, images):
    """h_v (as cached), the last block before global pooling (flattened), and the block before it.

    The last of these is what the recovery bench's ``--hv previous-block`` feeds stage 2.
    """
    return {"h_v (global average pool)": h_v,
            "last block, not pooled": gtr._apply(gtr.UnpooledFeatures(cnn), images),
            "block before the last (transform_blocks)": cnn.transform_blocks(images, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(gtr.PRESETS), default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", required=True, help="where bench_ground_truth_recovery cached stage 1")
    args = parser.parse_args()
    import joblib
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    cfg = dict(gtr.PRESETS[args.preset])
    t0 = time.perf_counter()
    cohort, _, _, (tr, _, ho) = gtr.cohort_and_splits(cfg, args.seed)
    images = cohort.images

    rows = []
    regional = gtr._apply(gtr.RegionMeans(cohort.atlas), images)
    rows.append(("regional gray-matter means", "-", regional.shape[1], gtr.planted_signal_r(regional, cohort, tr, ho)))
    for wm, name in ((False, "brain-age CNN"), (True, "brain-age CNN transferred to WM")):
        path = gtr.stage1_cache(args.cache_dir, cfg, args.seed, wm=wm)
        if not path.exists():
            print(f"no cached {name} at {path}; run bench_ground_truth_recovery.py with --cache-dir first")
            continue
        cnn, h_v = joblib.load(path)
        for layer, feats in _layers(cnn, h_v, images).items():
            r = gtr.planted_signal_r(feats, cohort, tr, ho)
            rows.append((name, layer, feats.shape[1], r))
            print(f"{name:32s} {layer:42s} {feats.shape[1]:6d} features: planted r {r:.3f}", flush=True)
    elapsed = time.perf_counter() - t0
    if args.preset == "quick":  # a smoke test: nothing written
        return
    out = Path(__file__).parent / "results" / (f"hv_planted_signal{'_seed' + str(args.seed) if args.seed else ''}"
                                               f"{'' if args.preset == 'cpu' else '_' + args.preset}.md")
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
