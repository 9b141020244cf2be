"""The demo serially and on a local Dask cluster: wall time, per-stage seconds, serial share, same tables.

Runs the README's demo (``sklearn-cgni run`` on the embedded default cohort, the ``cpu`` preset
on a machine without a GPU) twice, each in a fresh process and a fresh output folder:

- serially with one torch/BLAS thread (``--threads 1``);
- with ``--scheduler local:N --threads 1`` (N single-threaded worker processes).

It records each run's wall time, per-stage seconds, the share of the Dask run during which at
most one stage ran (``run.json``'s ``parallel.serial_share``), the load average before and
after, and whether every table (timing columns left out) is the same in both runs.

Usage (about 25 min on 2 idle cores; run it alone, other work on the machine changes the ratio)::

    python benchmarks/bench_scheduler.py --workers 2

Writes ``benchmarks/results/scheduler.md`` and ``scheduler.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"


def _load():
    return os.getloadavg()


def run_demo(out, extra):
    cmd = [sys.executable, "-m", "sklearn_cgni.cli", "run", "--output", str(out), "--no-progress", "-q",
           "--threads", "1", *extra]
    load0 = _load()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    meta = json.loads((Path(out) / "run.json").read_text())
    return {"command": " ".join(["sklearn-cgni", *cmd[3:]]), "out": str(out), "wall_s": wall, "load_before": load0,
            "load_after": _load(), "stage_seconds": meta["stage_seconds"], "parallel": meta.get("parallel")}


def _one(load):
    return "not recorded" if not load else f"{load[0]:.1f}"


def tables(out):
    found = {}
    for path in sorted((Path(out) / "tables").glob("*.csv")):
        df = pd.read_csv(path)
        found[path.name] = df.drop(columns=[c for c in df.columns if "seconds" in c])
    return found


def same_tables(a, b):
    ta, tb = tables(a), tables(b)
    if ta.keys() != tb.keys():
        return False, sorted(set(ta) ^ set(tb))
    differ = [name for name in ta if not ta[name].equals(tb[name])]
    return not differ, differ


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--preset", default=None, help="e.g. tiny for a quick check (default: the demo's)")
    p.add_argument("--reuse-serial", default=None, metavar="JSON",
                   help="take the serial run from this JSON (run_demo's record) instead of running it again")
    p.add_argument("--scratch", default=None, help="folder for the two output folders (default: a temporary one)")
    args = p.parse_args(argv)
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="bench_scheduler_"))
    preset = ["--preset", args.preset] if args.preset else []
    if args.reuse_serial:  # a serial run of the same code path measured earlier (idle machine), read back
        serial = json.loads(Path(args.reuse_serial).read_text())
    else:
        serial = run_demo(scratch / "serial", preset)
    print(f"serial: {serial['wall_s']:.0f} s", flush=True)
    dask = run_demo(scratch / "dask", [*preset, "--scheduler", f"local:{args.workers}"])
    print(f"local:{args.workers}: {dask['wall_s']:.0f} s", flush=True)
    same, differ = same_tables(Path(serial.get("out", scratch / "serial")), scratch / "dask")
    result = {"serial": serial, "dask": dask, "speedup": serial["wall_s"] / dask["wall_s"], "same_tables": same,
              "tables_that_differ": differ, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d %H:%M %Z"), "workers": args.workers}
    if args.preset:  # a quick check: no results file
        print(json.dumps(result, indent=1, default=str))
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scheduler.json").write_text(json.dumps(result, indent=2))
    stages = pd.DataFrame({"serial (s)": serial["stage_seconds"], f"local:{args.workers} (s)": dask["stage_seconds"]})
    par = dask["parallel"]
    lines = [
        "# The demo serially and on a local Dask cluster",
        "",
        f"`python benchmarks/bench_scheduler.py --workers {args.workers}`, {result['date']}, {result['machine']}.",
        "",
        "| run | command | wall time | load average before → after (1 min) |",
        "|---|---|---|---|",
        f"| serial | `{serial['command']}` | {serial['wall_s']:.0f} s | "
        f"{_one(serial['load_before'])} → {_one(serial['load_after'])} |",
        f"| Dask | `{dask['command']}` | {dask['wall_s']:.0f} s | "
        f"{_one(dask['load_before'])} → {_one(dask['load_after'])} |",
        "",
        f"- Speed-up: **{result['speedup']:.2f}×** (serial wall time / Dask wall time).",
        f"- Share of the Dask run with at most one stage running (`parallel.serial_share`): "
        f"**{par['serial_share']:.0%}**.",
        f"- Same tables (every `tables/*.csv`, timing columns left out): **{'yes' if same else 'no: ' + str(differ)}**.",
        "",
        "Per-stage wall seconds (on the cluster, two stages share the 2 cores most of the time):",
        "",
        stages.round(1).to_markdown(),
        "",
    ]
    (RESULTS / "scheduler.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
