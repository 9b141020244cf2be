#!/usr/bin/env bash
# Install sklearn_cgni into ./.venv, then run the main job on the embedded default cohort.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh all
exec .venv/bin/python examples/run_default_cohort.py "$@"
