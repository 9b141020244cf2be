#!/usr/bin/env bash
# Create (or reuse) ./.venv and install sklearn_cgni with the extras given as arguments.
#
#   bash scripts/setup_env.sh dev        # what the test suite needs
#   bash scripts/setup_env.sh all        # everything a user runs
#
# PyTorch: if the environment has no torch yet, a machine without an NVIDIA GPU gets the
# CPU build pinned in TORCH_CPU_SPEC (default torch==2.13.0, whose CPU wheel is what pip finds
# first on our machines; elsewhere point pip at https://download.pytorch.org/whl/cpu); a machine
# with `nvidia-smi` gets a plain `torch` (CUDA build). Set TORCH_SPEC to force either.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
# some pip configurations list local index folders that do not exist; pip warns once per package.
# With pipefail, a failing pip still fails this script (the filter itself always succeeds).
PIP_NOISE="is ignored: it is neither a file nor a directory"
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    if [ -n "${TORCH_SPEC:-}" ]; then
        spec="$TORCH_SPEC"
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        spec="torch"
    else
        spec="${TORCH_CPU_SPEC:-torch==2.13.0}"
    fi
    echo "[setup_env] installing $spec"
    "$VPY" -m pip install --quiet "$spec" 2>&1 | { grep -v "$PIP_NOISE" || true; }
fi
stamp=".venv/.sklearn_cgni-$extras-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    echo "[setup_env] installing sklearn_cgni[$extras]"
    "$VPY" -m pip install --quiet -e ".[$extras]" 2>&1 | { grep -v "$PIP_NOISE" || true; }
    "$VPY" -c "import sklearn_cgni, torch; print('[setup_env] sklearn_cgni', sklearn_cgni.__version__, '| torch', torch.__version__)"
    touch "$stamp"
fi
