"""Artifacts stay loadable by sentence-transformers itself. That needs the peer's venv (sentence-transformers
5.7 + optimum, transformers 4.x), which bench/ builds; heavy, and skipped where that venv is absent."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeembed import Encoder

from conftest import REPO

pytestmark = pytest.mark.heavy

PEER_PYTHON = Path(
    os.environ.get("EDGEEMBED_PEER_PYTHON", REPO / "bench" / ".work" / "peer-venv" / "bin" / "python")
)
TEXTS = ["A man is playing a guitar.", "hello", "edge " * 300]


def peer_encode(artifact: Path, backend: str, file_name: str | None, out: Path) -> np.ndarray:
    if not PEER_PYTHON.is_file():
        pytest.skip(f"peer venv not found at {PEER_PYTHON} (built by bench/run_suite.sh)")
    kwargs = {"file_name": file_name} if file_name else {}
    code = (
        "import json, sys, numpy as np\n"
        "from sentence_transformers import SentenceTransformer\n"
        f"m = SentenceTransformer({str(artifact)!r}, backend={backend!r}, device='cpu', model_kwargs={kwargs!r})\n"
        f"np.save({str(out)!r}, np.stack([m.encode(t) for t in {json.dumps(TEXTS)}]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([str(PEER_PYTHON), "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return np.load(out)


def test_fp32_onnx_loads_in_sentence_transformers(minilm_artifact, tmp_path):
    graph = Encoder.load(minilm_artifact).manifest.graph  # the fused graph by default (onnx/model_O2.onnx)
    theirs = peer_encode(minilm_artifact, "onnx", graph, tmp_path / "st.npy")
    ours = Encoder.load(minilm_artifact).encode(TEXTS)
    assert (ours * theirs).sum(axis=1).min() >= 0.9999


@pytest.mark.parametrize("quantize", ["dynamic", "static"])
def test_int8_onnx_loads_in_sentence_transformers(tmp_path, quantize):
    """Our int8 files under sentence-transformers' names load with backend="onnx" and model_kwargs
    file_name; one text per call on both sides (dynamic int8 depends on the batch)."""
    from edgeembed.build import export

    from conftest import STS_DIR

    calibration = STS_DIR / "sts-train.csv" if quantize == "static" else None
    artifact = export(None, tmp_path / quantize, quantize=quantize, calibration=calibration).path
    graph = Encoder.load(artifact).manifest.graph
    theirs = peer_encode(artifact, "onnx", graph, tmp_path / "st.npy")
    enc = Encoder.load(artifact)
    ours = np.stack([enc.encode(t) for t in TEXTS])
    assert (ours * theirs).sum(axis=1).min() >= 0.999


@pytest.fixture(scope="module")
def minilm_openvino_int8(tmp_path_factory) -> Path:
    from edgeembed.build import export

    from conftest import STS_DIR

    calibration = STS_DIR / "sts-train.csv"
    out = tmp_path_factory.mktemp("peer-ov") / "int8"
    return export(None, out, format="openvino", quantize="static", calibration=calibration).path


@pytest.mark.parametrize("fp32", [True, False], ids=["fp32", "static-int8"])
def test_openvino_ir_loads_in_sentence_transformers(minilm_openvino_int8, tmp_path, fp32):
    from edgeembed.build import export

    if fp32:
        artifact = export(None, tmp_path / "ov", format="openvino").path
        file_name = None
    else:
        artifact = minilm_openvino_int8
        file_name = Encoder.load(artifact).manifest.graph
    theirs = peer_encode(artifact, "openvino", file_name, tmp_path / "st.npy")
    ours = Encoder.load(artifact).encode(TEXTS)
    # optimum-intel compiles with OpenVINO's CPU default, bf16 on CPUs that have it; we pin f32. On the
    # int8 IR the bf16 float ops move a short text most (measured: "hello" 0.9989, the others >= 0.9997).
    assert (ours * theirs).sum(axis=1).min() >= (0.9999 if fp32 else 0.998)
