"""Training-step throughput of the stage-1 CNN on the CPU against the fp32 matmul floor.

One training step is what :class:`~sklearn_cgni.imaging.BrainAgeCNNTransformer` does per
batch: forward, MSE loss, backward, Adam step. Its cost is counted as 3 x the forward FLOPs
(forward, gradient w.r.t. activations, gradient w.r.t. weights; the first block needs no
input gradient, so the true count is slightly lower and the figure slightly flatters the step).
The floor is the time those FLOPs take at the fp32 matmul rate (2048 x 2048, best of 3)
measured right before and after each step in the same run:

    efficiency = (3 x forward GFLOP x batch / step seconds) / (matmul GFLOP/s around it)

so the ratio holds on a shared machine (other users' load moves both numbers). A second
efficiency uses process CPU time for both.

Variants (``--variants``):

- ``plain``: fp32, contiguous (NCDHW) tensors, what the estimators do by default;
- ``cl``: fp32, channels_last_3d module and input (oneDNN's blocked-friendly layout; same
  numbers up to summation order);
- ``bf16``: bfloat16 autocast (weights and optimizer in fp32), contiguous;
- ``bf16_cl``: both;
- ``compile``: ``torch.compile`` (inductor) of the training module, fp32 (slow warm-up).

``--profile VARIANT`` adds the operators that take the time in one step of that variant
(torch.profiler, self CPU time), which says what holds the step back.

Usage (the results file was written by these)::

    OMP_NUM_THREADS=2 python benchmarks/bench_cnn_training.py --preset paper --batch-sizes 2 \\
        --variants plain cl bf16 bf16_cl --profile plain --profile cl
    OMP_NUM_THREADS=2 python benchmarks/bench_cnn_training.py --preset cpu --batch-sizes 25 \\
        --variants plain cl bf16 bf16_cl --profile plain
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cnn_throughput import matmul_gflops  # noqa: E402  (same folder)

from sklearn_cgni.nn import PAPER_CHANNELS, BrainCNN, conv_forward_flops  # noqa: E402

#: The two CNNs the toolkit trains: the paper's at full size, and the cpu preset's.
PRESETS = {
    "paper": dict(shape=(128, 141, 128), channels=PAPER_CHANNELS, padding=0, pool_blocks=None, global_pool=None),
    "cpu": dict(shape=(24, 28, 24), channels=(8, 16, 32, 32), padding=1, pool_blocks=4, global_pool="avg"),
}


def build(preset, seed=0):
    p = PRESETS[preset]
    torch.manual_seed(seed)
    return BrainCNN.build(p["shape"], n_outputs=1, channels=p["channels"], padding=p["padding"],
                          pool_blocks=p["pool_blocks"], global_pool=p["global_pool"], squeeze=True)


def forward_flops(preset):
    p = PRESETS[preset]
    return conv_forward_flops(p["shape"], channels=p["channels"], padding=p["padding"],
                              pool_blocks=p["pool_blocks"])[0]


class Step:
    """One training step of a variant (its own copy of the module and optimizer)."""

    def __init__(self, variant, module, x, y):
        self.channels_last = variant in ("cl", "bf16_cl")
        self.bf16 = variant in ("bf16", "bf16_cl")
        self.module = copy.deepcopy(module).train()
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last_3d)
            x = x.to(memory_format=torch.channels_last_3d)
        self.x, self.y = x, y
        self.opt = torch.optim.Adam(self.module.parameters(), lr=1e-3)
        self.fn = torch.compile(self._step) if variant == "compile" else self._step

    def _step(self):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.module(self.x)
        loss = torch.nn.functional.mse_loss(out.float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def __call__(self):
        return self.fn()


def time_steps(step, reps, flops_per_step):
    t = time.perf_counter()
    step()
    warm = time.perf_counter() - t
    times, ratios, cpu_ratios, mms = [], [], [], []
    mm_prev, cmm_prev = matmul_gflops(reps=3), matmul_gflops(reps=3, cpu=True)
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        step()
        dt, dc = time.perf_counter() - t, time.process_time() - c
        mm_next, cmm_next = matmul_gflops(reps=3), matmul_gflops(reps=3, cpu=True)
        mm, cmm = (mm_prev + mm_next) / 2, (cmm_prev + cmm_next) / 2
        times.append(dt)
        mms.append(mm)
        ratios.append(flops_per_step / dt / 1e9 / mm)
        cpu_ratios.append(flops_per_step / dc / 1e9 * torch.get_num_threads() / cmm)
        mm_prev, cmm_prev = mm_next, cmm_next
    return dict(best=min(times), median=statistics.median(times), matmul=statistics.median(mms),
                eff=statistics.median(ratios), eff_best=max(ratios), eff_cpu=statistics.median(cpu_ratios),
                warm=warm)


def profile(step, top=12):
    """Operators by self CPU time in one step (after a warm-up)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    rows = ["| operator | calls | self CPU ms | share |", "|---|---|---|---|"]
    for e in events[:top]:
        rows.append(f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1e3:.1f} | "
                    f"{100 * e.self_cpu_time_total / total:.1f}% |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[2])
    ap.add_argument("--variants", nargs="+", default=["plain", "cl", "bf16", "bf16_cl"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--profile", action="append", default=[], metavar="VARIANT")
    ap.add_argument("--out", default=None, help="also append the markdown to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    f_img = forward_flops(args.preset)
    module = build(args.preset)
    lines = [f"### Training step, preset `{args.preset}` ({'x'.join(map(str, PRESETS[args.preset]['shape']))}), "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
             f"load average at start {os.getloadavg()[0]:.1f}",
             "", f"Forward: {f_img / 1e9:.3f} GFLOP per image (convolutions); a step counts 3x that.", "",
             "| variant | batch | s/step (best) | s/step (median) | images/s | step GFLOP/s (best) | "
             "matmul GFLOP/s (median) | efficiency vs floor (median) | (best rep) | (CPU time) | warm-up s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for batch in args.batch_sizes:
        shape = PRESETS[args.preset]["shape"]
        gen = torch.Generator().manual_seed(0)
        x, y = torch.rand(batch, 1, *shape, generator=gen), 40 + 30 * torch.rand(batch, generator=gen)
        flops_step = 3 * f_img * batch
        for variant in args.variants:
            r = time_steps(Step(variant, module, x, y), args.reps, flops_step)
            row = (f"| {variant} | {batch} | {r['best']:.3f} | {r['median']:.3f} | {batch / r['best']:.2f} | "
                   f"{flops_step / r['best'] / 1e9:.1f} | {r['matmul']:.1f} | {100 * r['eff']:.1f}% | "
                   f"{100 * r['eff_best']:.1f}% | {100 * r['eff_cpu']:.1f}% | {r['warm']:.1f} |")
            lines.append(row)
            print(row, flush=True)
        for variant in args.profile:
            table = profile(Step(variant, module, x, y))
            block = f"\nWhere one `{variant}` step (batch {batch}) spends its time:\n\n{table}\n"
            lines.append(block)
            print(block, flush=True)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
