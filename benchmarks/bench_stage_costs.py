"""What each stage of ``sklearn-cgni run`` costs, and how that cost grows with the cohort.

Runs ``sklearn-cgni run --preset cpu`` on the embedded simulated cohort at two sizes and reads
each stage's wall and CPU seconds from ``run.json`` (``stage_seconds``, ``stage_cpu_seconds``:
CPU time of the process, all its threads, so other users' load counts less than in wall time).

Early stopping makes the number of epochs depend on the data, which would mix "more epochs" with
"more participants per epoch". To see the cost per unit of work, the CNNs here train for fixed
budgets (``--epochs``; early stopping and the LR schedule off; everything else as the preset):
the ratio of a stage's cost at the two sizes is then what its code does per participant. A
stage whose ratio exceeds the size ratio by more than the tolerance is flagged as growing
faster than linearly. Occlusion and saliency use a fixed number of participants by
configuration (``occlusion.n_participants``, ``scores.saliency_participants``), so their cost
should stay flat.

Usage (the results file was written by this; it takes ~30 min on 2 cores)::

    python benchmarks/bench_stage_costs.py --sizes 200 400 --threads 1 --repeats 2

Writes ``benchmarks/results/stage_costs.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from sklearn_cgni.cli import main as cli_main

RESULTS = Path(__file__).parent / "results"


def run_once(n, epochs, folder, threads):
    args = ["run", "--preset", "cpu", "--no-progress", "--quiet", "-o", os.fspath(folder), "--threads", str(threads),
            "--set", f"cohort.n_participants={n}",
            "--set", f"stage1.pretrain_max_epochs={epochs}", "--set", f"stage1.finetune_max_epochs={epochs}",
            "--set", "stage1.early_stopping=false", "--set", "stage1.lr_schedule=\"none\"",
            "--set", f"scores.max_epochs={epochs}", "--set", "scores.early_stopping=false",
            "--set", "scores.lr_schedule=\"none\""]
    t = time.perf_counter()
    rc = cli_main(args)
    if rc != 0:
        raise SystemExit(f"sklearn-cgni run failed at n={n} (exit {rc}); see {folder}/run.log")
    meta = json.loads((Path(folder) / "run.json").read_text())
    return meta, time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[300, 600])
    ap.add_argument("--epochs", type=int, default=5, help="fixed epoch budget of every CNN")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads: 1 makes CPU seconds the work done (no OpenMP spin-waiting under load)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per size; each stage's minimum is kept")
    ap.add_argument("--tolerance", type=float, default=0.15,
                    help="flag a stage whose cost ratio exceeds the size ratio by more than this fraction")
    ap.add_argument("--out", default=os.fspath(RESULTS / "stage_costs"))
    args = ap.parse_args(argv)
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for n in args.sizes:  # sizes interleaved, so that a change of load hits both
                meta, wall = run_once(n, args.epochs, Path(tmp) / f"n{n}_r{rep}", args.threads)
                print(f"n={n} repeat {rep}: {wall:.0f} s", flush=True)
                for stage, sec in meta["stage_seconds"].items():
                    rows.append({"participants": n, "repeat": rep, "stage": stage, "seconds": sec,
                                 "cpu_seconds": meta.get("stage_cpu_seconds", {}).get(stage, float("nan"))})
    load1 = os.getloadavg()
    df = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(Path(args.out).with_suffix(".csv"), index=False)
    df = df.groupby(["participants", "stage"], sort=False)[["seconds", "cpu_seconds"]].min().reset_index()
    n1, n2 = args.sizes
    size_ratio = n2 / n1
    wide = df.pivot_table(index="stage", columns="participants", values=["seconds", "cpu_seconds"], sort=False)
    lines = [f"# Stage costs of `sklearn-cgni run --preset cpu` at {n1} and {n2} participants "
             f"({time.strftime('%Y-%m-%d')})", "",
             f"`python benchmarks/bench_stage_costs.py --sizes {n1} {n2} --epochs {args.epochs} --threads "
             f"{args.threads} --repeats {args.repeats}`: the embedded "
             f"cohort, CNNs trained for a fixed {args.epochs} epochs (early stopping off) so that cost per "
             f"participant is comparable; {args.threads} torch thread(s); each figure is the minimum over "
             f"{args.repeats} runs per size (sizes interleaved; per-run figures in the CSV). {platform.machine()}, {os.cpu_count()} cores; load average "
             f"{load0[0]:.1f} at the start and {load1[0]:.1f} at the end (other sessions were running; CPU "
             "seconds are the figure to read, wall seconds include waiting for the cores).", "",
             f"Size ratio {size_ratio:.2f}. `growth` = CPU-second ratio of the stage between the two sizes; "
             f"flagged when above {size_ratio * (1 + args.tolerance):.2f} (the size ratio + {args.tolerance:.0%}).",
             "", f"| stage | wall s ({n1}) | wall s ({n2}) | CPU s ({n1}) | CPU s ({n2}) | growth | faster than linear? |",
             "|---|---|---|---|---|---|---|"]
    flagged = []
    for stage in wide.index:
        w1, w2 = wide.loc[stage, ("seconds", n1)], wide.loc[stage, ("seconds", n2)]
        c1, c2 = wide.loc[stage, ("cpu_seconds", n1)], wide.loc[stage, ("cpu_seconds", n2)]
        growth = c2 / c1 if c1 > 0 else float("nan")
        flag = growth > size_ratio * (1 + args.tolerance) and c2 > 1.0  # sub-second stages are noise
        if flag:
            flagged.append(stage)
        lines.append(f"| {stage} | {w1:.1f} | {w2:.1f} | {c1:.1f} | {c2:.1f} | {growth:.2f} | "
                     f"{'**yes**' if flag else 'no'} |")
    tot = df.groupby("participants")[["seconds", "cpu_seconds"]].sum()
    lines.append(f"| **all stages** | {tot.loc[n1, 'seconds']:.0f} | {tot.loc[n2, 'seconds']:.0f} | "
                 f"{tot.loc[n1, 'cpu_seconds']:.0f} | {tot.loc[n2, 'cpu_seconds']:.0f} | "
                 f"{tot.loc[n2, 'cpu_seconds'] / tot.loc[n1, 'cpu_seconds']:.2f} | |")
    lines += ["", "Stages growing faster than linearly: " + (", ".join(flagged) if flagged else "none") + "."]
    Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
