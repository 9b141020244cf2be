"""The first thing to run on a GPU: stage-1 CNN throughput against the device's own matmul rate.

One command, a few minutes on any CUDA device::

    python benchmarks/bench_gpu.py                      # writes benchmarks/results/gpu.md

On a machine without CUDA the same code runs on the CPU at the cpu preset's size (24x28x24,
the preset's small CNN) in seconds, which is how CI keeps it working::

    python benchmarks/bench_gpu.py --out /tmp/gpu.md

What it measures, each in the same run as the matmul rates it is compared with:

1. **Matmul rates** of the device: fp32 (TF32 off), TF32 (CUDA only) and bfloat16, on square
   matrices (8192 on CUDA, 2048 on CPU), best of several.
2. **Forward** (``eval``, ``inference_mode``) and **training step** (forward, MSE, backward,
   Adam step) of the paper's stage-1 CNN at 128x141x128 (``--shape``), for fp32 contiguous,
   fp32 channels_last_3d and bfloat16 autocast + channels_last_3d, with ``cudnn.benchmark``
   on. A forward counts the convolution FLOPs of the layer shapes
   (:func:`sklearn_cgni.nn.conv_forward_flops`), a step 3x that; efficiency is against the
   matmul rate of the same precision (fp32 rows against fp32 and TF32, bf16 rows against bf16).
3. **Input pipeline**: images decoded once into the float16 cache
   (:func:`sklearn_cgni.imaging.build_float16_cache`), then read by a DataLoader with
   ``--workers`` worker processes; images/s of the loader alone, to compare with the
   training step's images/s (the GPU starves if the loader is slower).
4. **End to end**: one epoch of :class:`~sklearn_cgni.imaging.BrainAgeCNNTransformer` at the
   ``--preset paper`` settings (paper CNN, batch 25, Adam 1e-3) on a simulated cohort of
   ``--n-images`` NIfTI files through the float16 cache and the workers, in fp32 and in
   bfloat16 (``precision="bfloat16"``, ``memory_format="channels_last"``).

It writes a markdown report (``--out``) with the device, versions and the command line.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sklearn_cgni.nn import PAPER_CHANNELS, BrainCNN, conv_forward_flops

RESULTS = Path(__file__).parent / "results"
#: Full size on a GPU; the cpu preset's network and shape on a CPU (seconds, for CI).
CONFIGS = {
    "cuda": dict(shape=(128, 141, 128), channels=PAPER_CHANNELS, padding=0, pool_blocks=None, global_pool=None,
                 batch=8, matmul_n=8192, reps=10, n_images=100),
    "cpu": dict(shape=(24, 28, 24), channels=(8, 16, 32, 32), padding=1, pool_blocks=4, global_pool="avg",
                batch=8, matmul_n=1024, reps=3, n_images=16),
}
VARIANTS = {  # name: (channels_last, bfloat16 autocast)
    "fp32": (False, False),
    "fp32 channels_last": (True, False),
    "bf16 channels_last": (True, True),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timeit(fn, device, reps):
    """Best and median seconds of ``fn`` over ``reps`` calls after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def matmul_rates(device, n, reps):
    """TFLOP/s of square matmuls: fp32 (TF32 off), tf32 (CUDA), bf16."""
    rates = {}
    kinds = [("fp32", torch.float32, False), ("bf16", torch.bfloat16, False)]
    if device.type == "cuda":
        kinds.insert(1, ("tf32", torch.float32, True))
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, dtype, tf32 in kinds:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            best, _ = _timeit(lambda: torch.mm(a, b), device, reps)
            rates[name] = 2 * n ** 3 / best / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return rates


def build_cnn(cfg, device, channels_last):
    torch.manual_seed(0)
    m = BrainCNN.build(cfg["shape"], n_outputs=1, channels=cfg["channels"], padding=cfg["padding"],
                       pool_blocks=cfg["pool_blocks"], global_pool=cfg["global_pool"], squeeze=True).to(device)
    return m.to(memory_format=torch.channels_last_3d) if channels_last else m


def network_rows(cfg, device, rates, batch, reps):
    flops = conv_forward_flops(cfg["shape"], cfg["channels"], cfg["padding"], cfg["pool_blocks"])[0]
    rows = []
    for name, (cl, bf16) in VARIANTS.items():
        model = build_cnn(cfg, device, cl)
        fmt = torch.channels_last_3d if cl else torch.contiguous_format
        x = torch.rand(batch, 1, *cfg["shape"], device=device).contiguous(memory_format=fmt)
        y = 40 + 30 * torch.rand(batch, device=device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)

        def forward():
            with torch.inference_mode(), torch.autocast(**autocast):
                model(x)

        def step():
            with torch.autocast(**autocast):
                out = model(x)
            loss = torch.nn.functional.mse_loss(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        model.eval()
        fwd, fwd_med = _timeit(forward, device, reps)
        model.train()
        trn, trn_med = _timeit(step, device, reps)
        ref = ["bf16"] if bf16 else [k for k in ("fp32", "tf32") if k in rates]
        for what, best, med, f in (("forward", fwd, fwd_med, flops), ("training step", trn, trn_med, 3 * flops)):
            tflops = batch * f / best / 1e12
            rows.append({"pass": what, "variant": name, "batch": batch, "s/batch (best)": best,
                         "s/batch (median)": med, "images/s": batch / best, "TFLOP/s": tflops,
                         **{f"vs {k} matmul": tflops / rates[k] for k in ref}})
        del model, opt, x
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows, flops


def write_images(cfg, folder, n):
    """``n`` simulated gray-matter images (make_cohort, written as .nii files) and their ages."""
    from sklearn_cgni.datasets import make_cohort

    c = make_cohort(n, 40, shape=cfg["shape"], random_state=0, output_dir=folder, compress=False,
                    n_jobs=min(8, os.cpu_count() or 1))
    return list(c.images), c.phenotypes["age"].to_numpy(float)


def loader_rate(paths, cache_dir, workers, batch):
    from sklearn_cgni.imaging._dataset import ImageDataset, build_float16_cache, make_loader

    t = time.perf_counter()
    cache = build_float16_cache(paths, cache_dir, n_threads=max(1, workers))
    decode = time.perf_counter() - t
    loader = make_loader(ImageDataset(cache), batch, shuffle=True, num_workers=workers, seed=0,
                         pin_memory=torch.cuda.is_available())
    t = time.perf_counter()
    n = sum(len(xb) for xb, _ in loader)
    return decode, n / (time.perf_counter() - t)


def epoch_rows(cfg, device, paths, ages, cache_dir, workers, batch):
    from sklearn_cgni.imaging import BrainAgeCNNTransformer

    rows = []
    for name, kw in (("fp32", dict(precision="float32", memory_format="contiguous")),
                     ("bf16 channels_last", dict(precision="bfloat16", memory_format="channels_last"))):
        est = BrainAgeCNNTransformer(
            channels=cfg["channels"], padding=cfg["padding"], pool_blocks=cfg["pool_blocks"],
            global_pool=cfg["global_pool"] or "none", max_epochs=1, batch_size=batch, early_stopping=False,
            lr_schedule="none", validation_fraction=0.0, recalibrate_bn=False, cache_dir=cache_dir,
            num_workers=workers, device=device.type, random_state=0, **kw)
        t = time.perf_counter()
        est.fit(paths, ages)
        _sync(device)
        rows.append({"pass": "one training epoch (estimator)", "variant": name, "batch": batch,
                     "images": len(paths), "seconds": time.perf_counter() - t,
                     "images/s": len(paths) / (time.perf_counter() - t)})
    return rows


def table(rows):
    cols = list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if isinstance(v, float):
                v = f"{100 * v:.1f}%" if c.startswith("vs ") else (f"{v:.4g}")
            cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--shape", type=int, nargs=3, default=None, help="image shape (default: by device)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--n-images", type=int, default=None, help="images of the loader and epoch rows")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: min(8, cores - 1))")
    ap.add_argument("--skip-epoch", action="store_true", help="skip the input pipeline and end-to-end rows")
    ap.add_argument("--out", default=None, help="markdown report (default: benchmarks/results/gpu.md on CUDA, "
                                                "printed only on CPU)")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = dict(CONFIGS["cuda" if device.type == "cuda" else "cpu"])
    if args.shape:
        cfg["shape"] = tuple(args.shape)
    batch = args.batch_size or cfg["batch"]
    reps = args.reps or cfg["reps"]
    workers = args.workers if args.workers is not None else max(0, min(8, (os.cpu_count() or 1) - 1))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    t0 = time.perf_counter()
    rates = matmul_rates(device, cfg["matmul_n"], reps)
    rows, flops = network_rows(cfg, device, rates, batch, reps)
    extra = []
    if not args.skip_epoch:
        with tempfile.TemporaryDirectory() as tmp:
            paths, ages = write_images(cfg, Path(tmp) / "cohort", args.n_images or cfg["n_images"])
            decode, rate = loader_rate(paths, Path(tmp) / "cache", workers, batch)
            extra.append({"pass": "input pipeline (float16 cache, DataLoader)", "variant": f"{workers} workers",
                          "batch": batch, "images": len(paths), "seconds": decode, "images/s": rate})
            extra += epoch_rows(cfg, device, paths, ages, os.fspath(Path(tmp) / "cache"), workers, batch)
    lines = [f"# Stage-1 CNN on {name} ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"`python {' '.join([os.path.relpath(__file__)] + list(argv if argv is not None else sys.argv[1:]))}`; "
             f"torch {torch.__version__}"
             + (f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}" if device.type == "cuda" else "")
             + f"; image shape {'x'.join(map(str, cfg['shape']))}, channels {tuple(cfg['channels'])}; "
               f"{flops / 1e9:.3f} GFLOP per forward (convolutions), a training step counted as 3x; "
               f"wall time {time.perf_counter() - t0:.0f} s.", "",
             "Matmul rates (TFLOP/s, best of the reps): "
             + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()) + ".", "", table(rows), ""]
    if extra:
        lines += ["Input pipeline (seconds: decoding into the float16 cache) and one epoch of "
                  "`BrainAgeCNNTransformer` through it (seconds include building the network and the "
                  "cudnn autotuning of the first batches):", "", table(extra), ""]
    text = "\n".join(lines)
    print(text)
    out = args.out or (RESULTS / "gpu.md" if device.type == "cuda" else None)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return rows + extra


if __name__ == "__main__":
    main()
