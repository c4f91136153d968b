#!/usr/bin/env bash
# Set up .venv with everything the README, the tests and the benchmarks need. Safe to re-run.
# torch==2.13.0 goes first: a CPU wheel of it lies on this kind of machine, and asking for a plain `torch`
# (directly or through an extra) would pull a multi-GB CUDA build. See DEVELOPERS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.edgeembed-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[export,openvino,bench,dev,mobile,corpus,search,ray,serve]"
echo "$want" > "$stamp"
echo "setup done: .venv ($(.venv/bin/python -c 'import edgeembed, torch; print("edgeembed", edgeembed.__version__, "torch", torch.__version__)'))"
