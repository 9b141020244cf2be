#!/usr/bin/env bash
# Install what the tests need into ./.venv, check the import contracts, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh dev
.venv/bin/lint-imports --no-cache  # imports point one way (the contracts in pyproject.toml)
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
