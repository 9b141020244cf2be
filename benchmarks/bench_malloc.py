"""CPU training with glibc's default malloc against :func:`sklearn_cgni.utils.keep_freed_memory`.

Each run is a fresh process (the allocator's settings are per process) training the cpu preset's
brain-age CNN (``sklearn-cgni run --preset cpu``'s architecture and recipe, built by
``bench_ground_truth_recovery.preset_cnn_kwargs``) for two epochs, no validation split, on the
first 400 participants of a cohort simulated at ``--shape`` (default 41×48×39: issue 30's
800-participant timing grid). Reported per run: wall seconds of the fit (the images are read
inside it), user and system CPU seconds, minor page faults, peak RSS, and the training losses,
which must be identical with and without the setting (it changes where buffers come from, not
what is computed).

Usage (the results file was written by this; ~4 min on 2 idle cores)::

    python benchmarks/bench_malloc.py --threads 1 2 --repeats 2

Writes ``benchmarks/results/malloc.md``.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {bench!r})
import numpy as np, pandas as pd, torch
import bench_ground_truth_recovery as g
from sklearn_cgni.imaging import BrainAgeCNNTransformer
from sklearn_cgni.utils import keep_freed_memory
threads, mode, cohort = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.set_num_threads(threads)
applied = keep_freed_memory() if mode == "keep_freed_memory" else False
_, kw = g.preset_cnn_kwargs("cpu", 0, "pretrain_max_epochs")
kw.update(max_epochs=2, min_epochs=0, early_stopping=False, lr_schedule="none", warmup_epochs=0, max_restarts=0,
          validation_fraction=0.0, callbacks=None)
ph = pd.read_csv(f"{{cohort}}/phenotypes.csv", dtype={{"participant_id": str}}).set_index("participant_id").iloc[:400]
images = [f"{{cohort}}/images/{{i}}.nii.gz" for i in ph.index]
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
model = BrainAgeCNNTransformer(**kw).fit(images, ph["age"].to_numpy())
seconds, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
# VmHWM: this process image's peak (ru_maxrss keeps the forking parent's peak across exec on Linux)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"threads": threads, "mode": mode, "applied": applied, "seconds": seconds,
                  "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
                  "minor_faults": r1.ru_minflt - r0.ru_minflt, "peak_rss_mb": hwm / 1024,
                  "losses": [h["train_loss"] for h in model.history_]}}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--shape", type=int, nargs=3, default=[41, 48, 39])
    ap.add_argument("--out", default=os.fspath(RESULTS / "malloc.md"))
    args = ap.parse_args()
    from sklearn_cgni.datasets import make_cohort

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cohort = Path(tmp) / "cohort"
        make_cohort(400, 50, shape=tuple(args.shape), output_dir=cohort, random_state=0)
        code = _CHILD.format(bench=os.fspath(Path(__file__).parent))
        load = os.getloadavg()[0]
        for rep in range(args.repeats):
            for threads in args.threads:
                for mode in ("glibc default", "keep_freed_memory"):  # alternated: drifts in load hit both
                    out = subprocess.run([sys.executable, "-c", code, str(threads), mode, os.fspath(cohort)],
                                         capture_output=True, text=True, check=True)
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                    row["repeat"] = rep
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    lines = ["# glibc's malloc during CPU training: defaults against `keep_freed_memory`", "",
             f"`python benchmarks/bench_malloc.py --threads {' '.join(map(str, args.threads))} --repeats "
             f"{args.repeats}`; {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, load "
             f"{load:.1f} at the start. Two epochs of the cpu preset's brain-age CNN on 400 participants at "
             f"{'×'.join(map(str, args.shape))} (images read inside the fit), each run a fresh process.", "",
             "| threads | malloc | repeat | seconds | user s | sys s | minor faults | peak RSS MB | losses equal |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ref = next(x for x in rows if x["threads"] == r["threads"] and x["repeat"] == r["repeat"]
                   and x["mode"] == "glibc default")
        lines.append(f"| {r['threads']} | {r['mode']} | {r['repeat']} | {r['seconds']:.1f} | {r['user']:.1f} | "
                     f"{r['sys']:.1f} | {r['minor_faults']:,} | {r['peak_rss_mb']:.0f} | "
                     f"{'yes' if r['losses'] == ref['losses'] else 'NO'} |")
    lines += ["", "Ratio of wall seconds, default / keep_freed_memory (same threads and repeat):", ""]
    for threads in args.threads:
        ratios = []
        for rep in range(args.repeats):
            pair = {r["mode"]: r["seconds"] for r in rows if r["threads"] == threads and r["repeat"] == rep}
            ratios.append(pair["glibc default"] / pair["keep_freed_memory"])
        lines.append(f"- {threads} thread(s): " + ", ".join(f"{x:.2f}×" for x in ratios))
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
