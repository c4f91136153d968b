#!/usr/bin/env bash
# The main job: set up (if needed), export the default model (all-MiniLM-L6-v2) to ONNX, then a short bench.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
STS=${STS:-../shared/data/stsbenchmark/sts-test.csv}
.venv/bin/edgeembed export --out artifacts/minilm-fp32 --overwrite
.venv/bin/edgeembed info artifacts/minilm-fp32
