"""Forward throughput of the stage-1 CNN at 128x141x128 against the fp32 matmul peak.

For each variant the script times the forward pass (feature extraction, eval mode) and, right
before and after it, an fp32 matrix multiply of the same thread count; the figure reported is

    efficiency = (45.7 GFLOP x images/s) / (matmul GFLOP/s around that variant)

so that the ratio is measured within one run even on a shared machine (the load of other
users moves both numbers together). Because wall-clock time of a 2-thread matmul suffers
more from time-sharing than a long forward pass, a second efficiency uses process CPU time
for both (GFLOP per CPU-second of this process, times the thread count): it does not count
time when other users hold the cores, but does count OpenMP spin-waiting as ours. FLOPs are counted from the layer shapes
(``sklearn_cgni.nn.conv_forward_flops``: 2 per multiply-add, convolutions only).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_cnn_throughput.py --threads 2 --batch-sizes 1 2 4
    python benchmarks/bench_cnn_throughput.py --shape 64 70 64 --variants plain cl   # quick look

Variants (``--variants``): plain, cl (channels_last_3d), fold (BatchNorm folded into the
convolution), fold_cl, jit (torch.jit.trace + freeze + optimize_for_inference), mkldnn
(oneDNN blocked tensors via torch.utils.mkldnn), compile (torch.compile, inductor),
bf16_cl (bfloat16 autocast + channels_last_3d; accuracy reported as max relative error of
h_v against fp32), ipex-style thread pinning is not available here.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from sklearn_cgni.nn import BrainCNN, conv_forward_flops


def matmul_gflops(n=2048, reps=10, cpu=False):
    """fp32 matmul GFLOP/s: best wall-clock rep, or (cpu=True) per CPU-second of this process."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    clock = time.process_time if cpu else time.perf_counter
    for _ in range(reps):
        t = clock()
        torch.mm(a, b)
        best = min(best, clock() - t)
    gf = 2 * n**3 / best / 1e9
    return gf * (torch.get_num_threads() if cpu else 1)


def fold_bn(backbone):
    """Copy of the backbone blocks with each BatchNorm folded into its convolution."""
    blocks = []
    for block in backbone.blocks:
        conv, bn, *rest = list(block)
        blocks.append(nn.Sequential(fuse_conv_bn_eval(conv, bn), *rest))
    return nn.Sequential(*blocks, nn.Flatten(1)).eval()


class MkldnnBlocks(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        from torch.utils import mkldnn

        self.body = mkldnn.to_mkldnn(fold_bn(backbone)[:-1])

    def forward(self, x):
        return torch.flatten(self.body(x.to_mkldnn()).to_dense(), 1)


def build_variant(name, cnn, shape, batch):
    backbone = cnn.backbone.eval()
    x = torch.rand(batch, 1, *shape)
    if name == "plain":
        return backbone, x
    if name == "cl":
        return copy.deepcopy(backbone).to(memory_format=torch.channels_last_3d), \
            x.to(memory_format=torch.channels_last_3d)
    if name == "fold":
        return fold_bn(backbone), x
    if name == "fold_cl":
        return fold_bn(backbone).to(memory_format=torch.channels_last_3d), \
            x.to(memory_format=torch.channels_last_3d)
    if name == "jit":
        with torch.no_grad():
            traced = torch.jit.trace(copy.deepcopy(backbone), x)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced)), x
    if name == "jit_cl":
        xc = x.to(memory_format=torch.channels_last_3d)
        m = copy.deepcopy(backbone).to(memory_format=torch.channels_last_3d)
        with torch.no_grad():
            traced = torch.jit.trace(m, xc)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced)), xc
    if name == "mkldnn":
        return MkldnnBlocks(backbone), x
    if name == "compile":
        return torch.compile(fold_bn(backbone)), x
    if name == "compile_cl":
        return torch.compile(fold_bn(backbone).to(memory_format=torch.channels_last_3d)), \
            x.to(memory_format=torch.channels_last_3d)
    if name == "bf16_cl":
        m = fold_bn(backbone).to(memory_format=torch.channels_last_3d)

        class BF16(nn.Module):
            def __init__(self):
                super().__init__()
                self.m = m

            def forward(self, x):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return self.m(x).float()

        return BF16(), x.to(memory_format=torch.channels_last_3d)
    raise ValueError(f"unknown variant {name!r}")


def time_forward(model, x, reps, flops):
    """Interleave matmul and forward timings; per rep, efficiency against adjacent matmuls."""
    with torch.inference_mode():
        t = time.perf_counter()
        model(x)  # warm-up (oneDNN primitive creation, compilation)
        warm = time.perf_counter() - t
        times, mms, ratios, cpu_ratios = [], [], [], []
        mm_prev, cmm_prev = matmul_gflops(reps=3), matmul_gflops(reps=3, cpu=True)
        for _ in range(reps):
            t, c = time.perf_counter(), time.process_time()
            model(x)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            mm_next, cmm_next = matmul_gflops(reps=3), matmul_gflops(reps=3, cpu=True)
            mm = (mm_prev + mm_next) / 2
            times.append(dt)
            mms.append(mm)
            ratios.append(x.shape[0] * flops / dt / 1e9 / mm)
            # CPU-time based: GFLOP per CPU-second, scaled to all threads, over the matmul's
            cpu_gf = x.shape[0] * flops / dc / 1e9 * torch.get_num_threads()
            cpu_ratios.append(cpu_gf / ((cmm_prev + cmm_next) / 2))
            mm_prev, cmm_prev = mm_next, cmm_next
    return times, mms, ratios, cpu_ratios, warm


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", type=int, nargs=3, default=[128, 141, 128])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--variants", nargs="+",
                   default=["plain", "cl", "fold", "fold_cl", "jit", "jit_cl", "mkldnn",
                            "bf16_cl"])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = tuple(args.shape)
    cnn = BrainCNN.build(shape).eval()
    # non-trivial BatchNorm statistics so that folding is really exercised
    for m in cnn.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    flops, per_block = conv_forward_flops(shape)
    print(f"# CNN forward throughput, shape {shape}, torch {torch.__version__}, "
          f"{args.threads} threads, {platform.processor() or platform.machine()}")
    print(f"# forward cost {flops / 1e9:.2f} GFLOP/image "
          f"(blocks: {', '.join(f'{f / 1e9:.2f}' for f in per_block)})")
    with torch.inference_mode():
        ref = cnn.backbone(torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(1)))
    print("| variant | batch | s/batch (best) | s/batch (median) | images/s (best) | GFLOP/s (best) "
          "| matmul GFLOP/s (median) | efficiency (median of reps) | efficiency (best rep) "
          "| efficiency, CPU time (median) | warm-up s | max rel. err of h_v vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.variants:
        for batch in args.batch_sizes:
            try:
                model, x = build_variant(name, cnn, shape, batch)
                times, mms, ratios, cpu_ratios, warm = time_forward(model, x, args.reps, flops)
                x1 = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(1))
                if name.endswith("cl"):
                    x1 = x1.to(memory_format=torch.channels_last_3d)
                with torch.inference_mode():
                    err = float((model(x1) - ref).abs().max() / ref.abs().max()) \
                        if name not in ("jit", "jit_cl", "compile", "compile_cl") or batch == 1 \
                        else float("nan")
            except Exception as exc:  # record what failed and go on
                print(f"| {name} | {batch} | failed: {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:80]} | | | | | | | | | |", flush=True)
                continue
            best = min(times)
            ips = batch / best
            gf = ips * flops / 1e9
            print(f"| {name} | {batch} | {best:.3f} | {statistics.median(times):.3f} | {ips:.3f} "
                  f"| {gf:.1f} | {statistics.median(mms):.1f} | {statistics.median(ratios):.1%} "
                  f"| {max(ratios):.1%} | {statistics.median(cpu_ratios):.1%} | {warm:.1f} | {err:.1e} |",
                  flush=True)
            del model, x


if __name__ == "__main__":
    main()
