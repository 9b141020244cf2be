"""Image loading vs network consumption, and peak memory of ``transform``, at 128x141x128.

Measured in one run (the machine may be shared: compare the ratios, not absolute numbers):

1. decoding ``.nii.gz`` gray-matter images (simulated with ``make_cohort`` on the MNI152
   template, gzip as users store them) in the main process, and through the package's
   DataLoader with 0/1/2 workers;
2. reading the float16 memory-map cache (``build_float16_cache``) through the DataLoader;
3. the network's consumption rate: images/s of the CNN forward used by ``transform``
   (BN-folded oneDNN, and eager) and of one training step (forward + backward + Adam);
4. peak RSS of ``BrainAgeCNNTransformer.transform`` over paths at two dataset sizes (each
   in a fresh subprocess, peak RSS from ``VmHWM`` in /proc/self/status).

Usage::

    python benchmarks/bench_image_loader.py --n-images 12 --rss-sizes 4 12 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from sklearn_cgni.imaging._dataset import (
    ImageDataset,
    build_float16_cache,
    make_loader,
)
from sklearn_cgni.io import load_image


def rate(n, seconds):
    return n / seconds if seconds > 0 else float("inf")


def loader_rate(dataset, num_workers, batch_size=2):
    loader = make_loader(dataset, batch_size, num_workers=num_workers)
    t = time.perf_counter()
    n = 0
    for xb, _ in loader:
        n += len(xb)
    return rate(n, time.perf_counter() - t)


RSS_SCRIPT = r"""
import json, sys, time, torch

def hwm_mb():  # this process's peak RSS (VmHWM); ru_maxrss would include the parent's peak
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

torch.set_num_threads(int(sys.argv[3]))
from sklearn_cgni.imaging import BrainAgeCNNTransformer
paths = json.loads(open(sys.argv[1]).read())[: int(sys.argv[2])]
est = BrainAgeCNNTransformer.from_weights(sys.argv[4], device="cpu", transform_batch_size=2)
est.fit(paths[:1])
base = hwm_mb()
t = time.perf_counter()
h = est.transform(paths)
dt = time.perf_counter() - t
print(json.dumps({"n": len(paths), "shape": list(h.shape), "seconds": dt,
                  "rss_before_mb": base, "peak_rss_mb": hwm_mb()}))
"""


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--n-images", type=int, default=12)
    p.add_argument("--rss-sizes", type=int, nargs=2, default=[4, 12])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--shape", type=int, nargs=3, default=[128, 141, 128])
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = tuple(args.shape)
    work = args.workdir or tempfile.mkdtemp(prefix="bench_loader_")
    n = max(args.n_images, max(args.rss_sizes))

    from sklearn_cgni.datasets import make_cohort

    t = time.perf_counter()
    cohort = make_cohort(n_participants=n, n_snps=60, shape=shape, n_bad_images=0,
                         output_dir=os.path.join(work, "cohort"), random_state=0)
    paths = list(cohort.images)
    print(f"# {n} images {shape} written in {time.perf_counter() - t:.1f} s; "
          f"mean file size {np.mean([os.path.getsize(q) for q in paths]) / 1e6:.2f} MB (.nii.gz); "
          f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs")

    rows = []
    t = time.perf_counter()
    for q in paths[: args.n_images]:
        load_image(q)
    rows.append(("decode .nii.gz, main process", rate(args.n_images, time.perf_counter() - t)))
    ds = ImageDataset(paths[: args.n_images], expected_shape=shape)
    for w in (0, 1, 2):
        rows.append((f"DataLoader over .nii.gz, {w} workers", loader_rate(ds, w)))
    t = time.perf_counter()
    cache = build_float16_cache(paths[: args.n_images], os.path.join(work, "cache"))
    rows.append(("build float16 cache (once, 2 threads)", rate(args.n_images, time.perf_counter() - t)))
    cds = ImageDataset(cache, expected_shape=shape)
    for w in (0, 2):
        rows.append((f"DataLoader over float16 memmap, {w} workers", loader_rate(cds, w)))

    from sklearn_cgni.nn import BrainCNN, FoldedInferenceCNN

    torch.manual_seed(0)
    cnn = BrainCNN.build(shape, squeeze=True).eval()
    x = torch.from_numpy(np.stack([load_image(q) for q in paths[:2]]))
    fast = FoldedInferenceCNN(cnn, "mkldnn")
    with torch.inference_mode():
        fast.features(x)
        t = time.perf_counter()
        fast.features(x)
        rows.append(("network: transform forward (oneDNN, batch 2)", rate(2, time.perf_counter() - t)))
        cnn.features(x)
        t = time.perf_counter()
        cnn.features(x)
        rows.append(("network: eager forward (batch 2)", rate(2, time.perf_counter() - t)))
    cnn.train()
    opt = torch.optim.Adam(cnn.parameters(), 1e-3)
    y = torch.zeros(2)
    for i in range(2):
        t = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.mse_loss(cnn(x), y).backward()
        opt.step()
        dt = time.perf_counter() - t
    rows.append(("network: training step (batch 2)", rate(2, dt)))

    print("| stage | images/s |")
    print("|---|---|")
    for name, r in rows:
        print(f"| {name} | {r:.2f} |")

    weights = os.path.join(work, "w.pt")
    from sklearn_cgni.imaging import BrainAgeCNNTransformer

    est = BrainAgeCNNTransformer(max_epochs=0, device="cpu", validation_fraction=0, early_stopping=False, lr_schedule="none",
                                 random_state=0).fit(paths[:2], [50.0, 60.0])
    est.save_weights(weights)
    list_file = os.path.join(work, "paths.json")
    with open(list_file, "w") as f:
        json.dump(paths, f)
    print("\n| transform over n paths | seconds | peak RSS MB | RSS after fit(1 image) MB |")
    print("|---|---|---|---|")
    for size in args.rss_sizes:
        out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, list_file, str(size),
                              str(args.threads), weights], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['n']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['rss_before_mb']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
