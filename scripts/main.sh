#!/usr/bin/env bash
# The main job: set up .venv (if needed), export the default model (all-MiniLM-L6-v2) as fused dynamic int8
# ONNX, checked against fp32 on STS-b, and as the fp32 reference; then a short bench table of both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
STS=${STS:-../shared/data/stsbenchmark/sts-test.csv}
ee=.venv/bin/edgeembed
$ee export --out artifacts/minilm-int8 --quantize dynamic --sts "$STS" --overwrite   # fused + int8 (optimize auto)
$ee export --out artifacts/minilm-fp32 --optimize none --overwrite
$ee bench artifacts/minilm-fp32 artifacts/minilm-int8 --sts "$STS" --runs 3 --out artifacts/bench
echo "report: artifacts/bench/report.md (and .json, .csv, .png)"
