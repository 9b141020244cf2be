"""Every script in examples/ runs to the end at its tiny size (SKLEARN_CGNI_EXAMPLE_SIZE=tiny).

Each example runs in a fresh interpreter in a temporary folder (it may write files), one
torch thread, no display. Examples that need an optional package are skipped without it.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
NEEDS = {"multi_gpu_accelerate.py": "accelerate"}
TIMEOUT = 600


def _scripts():
    return sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def _env():
    env = dict(os.environ)
    env.update(SKLEARN_CGNI_EXAMPLE_SIZE="tiny", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    root = str(EXAMPLES.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def test_examples_folder_has_the_documented_scripts():
    expected = {"pipeline_gridsearch.py", "baselines.py", "explainers.py", "multi_gpu_accelerate.py"}
    assert expected <= set(_scripts())


@pytest.mark.slow
@pytest.mark.parametrize("script", _scripts())
def test_example_runs(script, tmp_path):
    needed = NEEDS.get(script)
    if needed and importlib.util.find_spec(needed) is None:
        pytest.skip(f"{script} needs the optional package {needed!r}")
    # run_default_cohort.py runs the whole command; at this size with its "tiny" preset,
    # writing into tmp_path/cgni_demo
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    if script == "run_default_cohort.py":
        assert (tmp_path / "cgni_demo" / "report.html").is_file()
