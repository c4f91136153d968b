"""One calibration file of short captions (the first 2,000 sentences of STS-b train, a .txt) gives a
valid static int8 artifact for ONNX Runtime and OpenVINO, gated on STS-b test (forum and news sentences,
longer than any caption), with and without accuracy control. Minutes on MiniLM: heavy."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeembed.build import export
from edgeembed.calibration import CalibrationConfig
from edgeembed.encoder import Encoder
from edgeembed.sts import load_sts, sts_score


@pytest.fixture(scope="module")
def captions(sts_test_path, tmp_path_factory) -> Path:
    texts = load_sts(sts_test_path.with_name("sts-train.csv")).sentences[:2000]
    path = tmp_path_factory.mktemp("captions") / "captions.txt"
    path.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    return path


@pytest.mark.heavy
@pytest.mark.parametrize(
    ("fmt", "accuracy_control", "with_sts"),
    [
        ("onnx", False, True),
        ("onnx", False, False),
        ("openvino", True, True),  # nncf.quantize_with_accuracy_control on the gate metric
        ("openvino", False, True),  # plain nncf.quantize, the gate alone decides
        ("openvino", False, False),
    ],
)
def test_caption_calibration_passes_the_gate(
    fmt, accuracy_control, with_sts, captions, sts_test_path, tmp_path
):
    q: object = "static"
    if fmt == "openvino":
        pytest.importorskip("nncf")
        from edgeembed.steps.nncf import OpenVinoStaticConfig

        q = OpenVinoStaticConfig(accuracy_control=accuracy_control)
    res = export(
        None,
        tmp_path / "int8",
        format=fmt,
        quantize=q,
        calibration=CalibrationConfig(str(captions), size=2000),
        sts=sts_test_path if with_sts else None,
        threads=2,
    )
    v = res.manifest.validation  # the step's gate vs the fp32 graph
    assert v["min_cosine"] >= 0.90 and v["mean_cosine"] >= 0.97, v
    if with_sts:
        assert v["sts_retained"] >= 0.99, v
    else:  # checked here all the same: the texts the gate did not see
        data = load_sts(sts_test_path)
        enc = Encoder.load(res.path, threads=2)
        fp32 = Encoder.load(export(None, tmp_path / "fp32", format=fmt).path, threads=2)
        assert sts_score(data, enc.encode(data.sentences)) >= 0.99 * sts_score(
            data, fp32.encode(data.sentences)
        )
