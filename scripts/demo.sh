#!/usr/bin/env bash
# Install sklearn_cgni into ./.venv, then run the main job on the embedded default cohort:
#   sklearn-cgni run --output cgni_demo   (extra arguments are passed on, e.g. --preset paper)
# The report is cgni_demo/report.html. Running it again resumes (finished stages are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh all
exec .venv/bin/python examples/run_default_cohort.py "$@"
