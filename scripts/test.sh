#!/usr/bin/env bash
# Set up (if needed) and run the test suite: unit tests on a tiny model built in code, then integration
# tests on the real all-MiniLM-L6-v2. Offline. Extra pytest arguments are passed through (e.g. -m heavy).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
