"""Supervised CGNI terms (eqs 3-4) vs pytorch-metric-learning's SupConLoss: values and speed.

pytorch-metric-learning is a benchmark-only dependency::

    .venv/bin/pip install --no-deps pytorch-metric-learning==2.9.0

Matching the reduction: ``SupConLoss`` averages the per-anchor losses over anchors whose loss
is non-zero (``AvgNonZeroReducer``), i.e. over the anchors that have a positive; that is
``supervised_contrastive_loss(..., reduction="mean")`` here. Both L2-normalise (cosine).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_losses.py``
Writes ``benchmarks/results/bench_losses.md``.
"""

import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sklearn_cgni.nn.losses import cgni_contrastive_loss, supervised_contrastive_loss  # noqa: E402

torch.set_num_threads(1)
TAU = 0.1
DIM = 100


def _timeit(fn, repeats, inner):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return float(np.median(times)), float(np.min(times))


def main():
    from pytorch_metric_learning.losses import SupConLoss

    pml_loss = SupConLoss(temperature=TAU)
    rows, value_rows = [], []
    g = torch.Generator().manual_seed(0)
    for b in (50, 512):
        z = torch.randn(b, DIM, generator=g, dtype=torch.float32)
        y_cases = {
            "binary 35/65": (torch.rand(b, generator=g) < 0.35).long(),
            "binary + 1 singleton class": torch.cat([(torch.rand(b - 1, generator=g) < 0.35).long(), torch.tensor([7])]),
            "10 classes": torch.randint(0, 10, (b,), generator=g),
        }
        for name, y in y_cases.items():
            for dtype in (torch.float32, torch.float64):
                zz = z.to(dtype)
                ours = supervised_contrastive_loss(zz, y, temperature=TAU).item()
                theirs = pml_loss(zz, y).item()
                value_rows.append((b, name, str(dtype).split(".")[-1], ours, theirs, abs(ours - theirs) / abs(theirs)))

        y = y_cases["binary 35/65"]
        inner = 200 if b == 50 else 20
        for label, fn in [
            ("ours L(v,v)", lambda: supervised_contrastive_loss(z, y, temperature=TAU)),
            ("pml SupConLoss", lambda: pml_loss(z, y)),
        ]:
            zg = z.clone().requires_grad_(True)

            def fwd(fn=fn):
                with torch.no_grad():
                    return fn()

            def fwd_bwd(label=label):
                zg.grad = None
                loss = (
                    supervised_contrastive_loss(zg, y, temperature=TAU)
                    if label.startswith("ours")
                    else pml_loss(zg, y)
                )
                loss.backward()

            f_med, _ = _timeit(fwd, 7, inner)
            fb_med, _ = _timeit(fwd_bwd, 7, inner)
            rows.append((b, label, f_med * 1e6, fb_med * 1e6))
        # the whole equation (5) with all four terms, for scale
        z_v, z_g = z.clone().requires_grad_(True), torch.randn(b, DIM, generator=g).requires_grad_(True)

        def full():
            z_v.grad = z_g.grad = None
            cgni_contrastive_loss(z_v, z_g, y, gamma_vv=0.2, temperature=TAU).backward()

        fb_med, _ = _timeit(full, 7, inner)
        rows.append((b, "ours eq.(5), 4 terms", float("nan"), fb_med * 1e6))

    import pytorch_metric_learning

    lines = [
        "# Supervised contrastive terms vs pytorch-metric-learning SupConLoss",
        "",
        f"torch {torch.__version__}, pytorch-metric-learning {pytorch_metric_learning.__version__}, "
        f"python {sys.version.split()[0]}, {platform.machine()}, 1 thread, tau={TAU}, d={DIM}. "
        "Machine shared with other jobs: compare ratios within this run only.",
        "",
        "## Values (reduction matched: mean over anchors with >= 1 positive)",
        "",
        "| batch | labels | dtype | ours | pml SupConLoss | rel. diff |",
        "|---:|---|---|---:|---:|---:|",
    ]
    lines += [f"| {b} | {n} | {dt} | {o:.8f} | {t:.8f} | {d:.1e} |" for b, n, dt, o, t, d in value_rows]
    lines += [
        "",
        "## Time per call (median of 7 repeats, microseconds)",
        "",
        "| batch | loss | forward | forward + backward |",
        "|---:|---|---:|---:|",
    ]
    lines += [
        f"| {b} | {n} | {'' if np.isnan(f) else f'{f:.0f}'} | {fb:.0f} |" for b, n, f, fb in rows
    ]
    by = {(b, n): (f, fb) for b, n, f, fb in rows}
    lines += ["", "Speed-up of ours over pml (pml time / ours time):", ""]
    for b in (50, 512):
        o, t = by[(b, "ours L(v,v)")], by[(b, "pml SupConLoss")]
        lines.append(f"- batch {b}: forward {t[0] / o[0]:.2f}x, forward+backward {t[1] / o[1]:.2f}x")
    text = "\n".join(lines) + "\n"
    print(text)
    max_rel = max(r[-1] for r in value_rows)
    out = Path(__file__).parent / "results" / "bench_losses.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    assert max_rel < 1e-5, f"values differ from SupConLoss: max rel diff {max_rel:.2e}"


if __name__ == "__main__":
    main()
