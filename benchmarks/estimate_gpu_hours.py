"""Hours per stage of ``sklearn-cgni run --preset paper`` at 40,000 participants, on 1 and 8 GPUs: an estimate.

NOT YET MEASURED ON A GPU. Until ``benchmarks/bench_gpu.py`` has run on one, the rates below
are assumptions, stated as parameters, and the table says so:

- **compute rate**: the device's bfloat16 matmul rate (``--tflops``; an H100 SXM's dense bf16
  peak, 989 TFLOP/s, by default) times the share of it the 3D convolutions reach
  (``--efficiency``, 0.15 by default; on this machine's CPU the same network reached 40-89 %
  of the CPU's own bf16 matmul rate, ``benchmarks/results/cnn_training.md``, but a GPU's
  convolution kernels are another matter). A training pass of one image costs 3x the
  forward convolution FLOPs (:func:`sklearn_cgni.nn.conv_forward_flops`: 45.7 GFLOP at
  128x141x128), a forward pass 1x.
- **input rate**: images per second the float16 cache and the DataLoader deliver
  (``--loader-images-per-s``, 800 by default: 3.7 GB/s of 4.6 MB images).

A stage's time is the larger of the two (the GPU waits for the slower), summed over its
passes. With ``bench_gpu.py``'s measured training-step and loader images/s, pass them as
``--train-images-per-s`` and ``--loader-images-per-s`` and the table is measured-rate based.

Passes per stage follow the paper preset's budgets (``default_config.toml``): the epoch budgets
are upper bounds before growth (early stopping usually ends sooner; budget growth can double
them). 8 GPUs: the CNN stages data-parallel under torchrun (ideal 8x, no communication cost
counted), or the folds as Dask tasks on 8 single-GPU workers (5 folds: at best 5x).

Usage::

    python benchmarks/estimate_gpu_hours.py              # writes benchmarks/results/gpu_hours_estimate.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sklearn_cgni.nn import PAPER_CHANNELS, conv_forward_flops

RESULTS = Path(__file__).parent / "results"


def passes(n, n_wm, *, holdout=0.1, folds=5, validation=0.2, pretrain_epochs=20, finetune_epochs=20,
           score_cv=5, score_epochs=60, score_validation=0.1, occlusion_n=1000, n_regions=120,
           saliency_n=100):
    """Training and forward image passes per stage: ``{stage: (train, forward)}``."""
    fit = n - holdout * n_wm  # brain age: every participant with an image but the WM holdout
    fold_train = n_wm * (1 - holdout) * (folds - 1) / folds
    return {
        "brain_age": (fit * (1 - validation) * pretrain_epochs, fit * validation * pretrain_epochs + n),
        "finetune (all folds)": (folds * fold_train * (1 - validation) * finetune_epochs,
                                 folds * (fold_train * validation * finetune_epochs + n_wm)),
        "scores (all folds)": (score_cv * n * (score_cv - 1) / score_cv * (1 - score_validation) * score_epochs,
                               score_cv * (n * (score_cv - 1) / score_cv * score_validation * score_epochs + n / score_cv)
                               + saliency_n * 3),
        "confounds (adjusted CNNs)": (folds * fold_train * (1 - validation) * finetune_epochs,
                                      folds * (fold_train * validation * finetune_epochs + n_wm / folds)),
        "occlusion": (0, occlusion_n * (n_regions + 1)),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=40_000, help="participants with an image")
    p.add_argument("--n-wm", type=int, default=5_000, help="participants in a working-memory group")
    p.add_argument("--tflops", type=float, default=989.0, help="the device's bf16 matmul rate (TFLOP/s)")
    p.add_argument("--efficiency", type=float, default=0.15, help="share of it the convolutions reach")
    p.add_argument("--train-images-per-s", type=float, default=None, help="measured (bench_gpu.py): overrides "
                                                                          "the FLOP-based rate")
    p.add_argument("--loader-images-per-s", type=float, default=800.0)
    p.add_argument("--out", default=RESULTS / "gpu_hours_estimate.md")
    args = p.parse_args(argv)
    fwd = conv_forward_flops((128, 141, 128), PAPER_CHANNELS, padding=0, pool_blocks=5)[0]

    def table(efficiency):
        train_ips = args.train_images_per_s or args.tflops * 1e12 * efficiency / (3 * fwd)
        fwd_ips = 3 * train_ips
        rows = []
        for stage, (train, forward) in passes(args.n, args.n_wm).items():
            seconds = (train / min(train_ips, args.loader_images_per_s)
                       + forward / min(fwd_ips, args.loader_images_per_s))
            parallel = 5 if "folds" in stage or "confounds" in stage else 1
            rows.append((stage, train, forward, seconds / 3600, seconds / 3600 / 8, seconds / 3600 / parallel))
        return rows, [sum(r[i] for r in rows) for i in (3, 4, 5)], train_ips, fwd_ips

    rows, total, train_ips, fwd_ips = table(args.efficiency)
    low, high = table(0.05)[1][0], table(0.35)[1][0]
    source = (f"measured training step: {args.train_images_per_s:.0f} images/s" if args.train_images_per_s else
              f"assumed: {args.tflops:.0f} TFLOP/s bf16 x {args.efficiency:.0%} efficiency = "
              f"{train_ips:.0f} training images/s, {fwd_ips:.0f} forward images/s")
    lines = [
        f"# Hours per stage at {args.n:,} participants ({args.n_wm:,} in a WM group), `--preset paper`",
        "",
        "**Not yet measured on a GPU.** An estimate from `benchmarks/estimate_gpu_hours.py` "
        "(its docstring states every assumption); rerun it with `bench_gpu.py`'s measured rates.",
        "",
        f"- Forward pass: {fwd / 1e9:.1f} GFLOP per image (convolutions at 128×141×128); a training pass 3×.",
        f"- Compute: {source}.",
        f"- Input: {args.loader_images_per_s:.0f} images/s from the float16 cache (a stage runs at the slower "
        "of compute and input).",
        "- Epochs: the paper preset's budgets before growth (brain age 20, fine-tuning 20 per fold, genotype "
        "scorer 60 per fold); early stopping usually ends sooner, budget growth can double them.",
        "",
        "| stage | training image passes | forward image passes | 1 GPU (h) | 8 GPUs, DDP, ideal (h) "
        "| 8 single-GPU Dask workers (h) |",
        "|---|---|---|---|---|---|",
        *[f"| {s} | {t:,.0f} | {f:,.0f} | {h1:.1f} | {h8:.2f} | {hd:.1f} |" for s, t, f, h1, h8, hd in rows],
        f"| **total** | | | **{total[0]:.1f}** | **{total[1]:.2f}** | **{total[2]:.1f}** |",
        "",
        f"Sensitivity (1 GPU, total): {low:.1f} h at 5 % efficiency, {high:.1f} h at 35 %"
        + (" (unchanged: the measured rate is used)." if args.train_images_per_s else "."),
        "",
        "Dask workers: the 5 folds of a stage run side by side (at most 5×); the brain-age CNN and the "
        "occlusion run on one GPU. DDP: every CNN data-parallel over 8 GPUs, communication not counted; "
        "the input rate then has to grow 8× too.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
