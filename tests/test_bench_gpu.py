"""``benchmarks/bench_gpu.py`` is the first thing a GPU user runs: CI keeps it working on the CPU."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_gpu_runs_on_cpu_and_writes_its_table(tmp_path):
    bench = _load()
    out = tmp_path / "gpu.md"
    rows = bench.main(["--device", "cpu", "--reps", "1", "--n-images", "10", "--workers", "0", "--batch-size", "3",
                       "--out", str(out)])
    # every variant's forward and training step, the loader, and one estimator epoch per precision
    passes = [(r["pass"], r["variant"]) for r in rows]
    for variant in bench.VARIANTS:
        assert ("forward", variant) in passes and ("training step", variant) in passes
    assert sum(p == "one training epoch (estimator)" for p, _ in passes) == 2
    assert all(r["images/s"] > 0 for r in rows)
    loader = next(r for r in rows if r["pass"].startswith("input pipeline"))
    assert loader["images"] == 10
    text = out.read_text()
    assert "Matmul rates" in text and "| training step | bf16 channels_last |" in text
