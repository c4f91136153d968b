"""int8 and fused graphs on the tiny model: integer ops present, manifest records, validation gates,
atomicity; presets and ISA handling; the MiniLM STS-b check (integration)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from edgeembed.artifact import read_manifest
from edgeembed.build import export, settings
from edgeembed.calibration import CalibrationConfig
from edgeembed.cli import main
from edgeembed.encoder import Encoder
from edgeembed.errors import EdgeEmbedError, RetentionError
from edgeembed.isa import ISAS, check_isa, cpu_supports, detect_isa
from edgeembed.steps.onnx_int8 import PRESETS, QuantizeConfig, quantize_config

CALIB = [
    f"the {w} model is small and fast when it is quantized {i}" for i, w in enumerate("abcdefghijklmnopqrst")
]
TEXTS = ["hello world", "the cat sat on the mat", "a man is playing a guitar on stage", "stock market fell"]


def ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def onnx_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.onnx"))


@pytest.fixture(scope="session")
def calib_txt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text("\n".join(CALIB) + "\n")
    return path


@pytest.fixture(scope="session")
def dynamic_artifact(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-int8") / "art"
    return export(tiny_model, out, quantize="dynamic_avx512_vnni").path


@pytest.fixture(scope="session")
def static_artifact(tiny_model, calib_txt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-static") / "art"
    cal = CalibrationConfig(str(calib_txt), size=16)
    return export(tiny_model, out, quantize="static_qdq", calibration=cal).path


def test_dynamic_graph_is_integer_and_alone(dynamic_artifact, tiny_artifact):
    m = read_manifest(dynamic_artifact)
    assert m.graph == "onnx/model_qint8_avx512_vnni.onnx" and m.precision == "int8"
    assert onnx_files(dynamic_artifact) == [m.graph]  # the fp32 graph is not shipped alongside
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops(dynamic_artifact / m.graph)
    assert m.quantization["mode"] == "dynamic" and m.quantization["weight_type"] == "qint8"
    assert m.quantization["per_channel"] is True
    assert m.validation["reference"] == "fp32 graph"
    assert m.validation["reference_validation"]["reference"] == "torch fp32"
    assert 0.5 < m.validation["batch_invariance"]["mean_cosine"] <= 1.0 + 1e-6
    fp32 = Encoder.load(tiny_artifact).encode(TEXTS)
    int8 = Encoder.load(dynamic_artifact).encode(TEXTS)
    assert (fp32 * int8).sum(1).min() > 0.9
    assert (dynamic_artifact / m.graph).stat().st_size < 0.8 * (
        tiny_artifact / "onnx/model.onnx"
    ).stat().st_size


def test_static_qdq(static_artifact):
    m = read_manifest(static_artifact)
    assert m.graph == "onnx/model_qint8_static_avx512_vnni.onnx"
    assert onnx_files(static_artifact) == [m.graph]
    graph_ops = ops(static_artifact / m.graph)
    assert {"QuantizeLinear", "DequantizeLinear"} <= graph_ops
    assert "DynamicQuantizeLinear" not in graph_ops
    assert not (m.optimization or {}).get("applied")  # static int8 quantizes the unfused graph
    # The 16 sampled texts plus texts joined from them for the lengths they lack (calibration.lengths).
    assert m.quantization["calibration"]["size"] == 16 and m.quantization["calibration"]["batches"] > 16
    assert m.quantization["method"] == "minmax"
    # Fixed activation scales: a text's embedding does not depend on its batch neighbours.
    assert m.validation["batch_invariance"]["min_cosine"] > 0.99999
    emb = Encoder.load(static_artifact).encode(TEXTS)
    assert emb.shape == (4, 16) and np.isfinite(emb).all()


def test_optimize_only_keeps_fp32(tiny_model, tmp_path):
    r = export(tiny_model, tmp_path / "o", optimize="all")
    m = r.manifest
    assert m.graph == "onnx/model_O2.onnx" and m.precision == "fp32" and m.quantization is None
    assert onnx_files(r.path) == ["onnx/model_O2.onnx"]
    # SkipLayerNormalization is split back into Add + LayerNormalization (faster on ORT's CPU kernels).
    assert "Attention" in ops(r.path / m.graph) and "SkipLayerNormalization" not in ops(r.path / m.graph)
    assert "LayerNormalization" in ops(r.path / m.graph)
    assert m.validation["min_cosine"] > 0.9999


def test_failing_retention_leaves_no_artifact(tiny_model, tiny_artifact, tmp_path):
    # Gold scores = the fp32 model's own cosines: fp32 Spearman is 100, any int8 rank swap loses some.
    words = ["the cat", "a dog", "stock market", "hello world", "edge device", "small model", "fast text"]
    pairs = [(f"{a} {i}", f"{b} sat on the mat") for i, a in enumerate(words) for b in words]
    emb = Encoder.load(tiny_artifact)
    gold = (emb.encode([p[0] for p in pairs]) * emb.encode([p[1] for p in pairs])).sum(1)
    sts = tmp_path / "self.tsv"
    sts.write_text("".join(f"{a}\t{b}\t{g:.7f}\n" for (a, b), g in zip(pairs, gold)))
    out = tmp_path / "never"
    with pytest.raises(
        RetentionError,
        # auto: the per-row try fails too, and the error names the per-tensor one before it.
        match=r"STS Spearman retained 0\.\d+ < min_retained 1.0 \(STS .*nothing was written "
        r"\(tried before it: activations=tensor: .*STS Spearman retained",
    ):
        export(tiny_model, out, quantize="dynamic", sts=sts, min_retained=1.0)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


def test_static_without_calibration_fails_before_work(tmp_path):
    with pytest.raises(EdgeEmbedError, match="needs calibration texts"):
        export(None, tmp_path / "x", quantize="static")
    with pytest.raises(EdgeEmbedError, match="calibration source not found"):
        export(None, tmp_path / "x", quantize="static", calibration=tmp_path / "missing.txt")
    with pytest.raises(EdgeEmbedError, match="needs the unfused graph"):
        export(
            None, tmp_path / "x", optimize="all", quantize="static", calibration=CalibrationConfig(__file__)
        )
    assert not (tmp_path / "x").exists()


def test_cli_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(main, ["export", "--out", str(tmp_path / "x"), "--quantize", "static"])
    assert res.exit_code == 1
    assert res.output.strip().startswith("error: static quantization needs calibration texts")
    assert "Traceback" not in res.output


def test_cli_bad_calibration_file(tiny_model, tmp_path):
    bad = tmp_path / "few.txt"
    bad.write_text("one\ntwo\n")
    args = ["export", str(tiny_model), "--out", str(tmp_path / "x"), "--quantize", "static"]
    res = CliRunner().invoke(main, [*args, "--calibration", str(bad)])
    assert res.exit_code == 1 and "few.txt" in res.output and "need at least" in res.output
    assert not (tmp_path / "x").exists()


def test_presets_follow_the_isa():
    assert PRESETS["dynamic_avx512_vnni"].file_name == "onnx/model_qint8_avx512_vnni.onnx"
    assert PRESETS["dynamic_avx2"].file_name == "onnx/model_quint8_avx2.onnx"
    assert PRESETS["dynamic_avx512"].reduce_range and not PRESETS["dynamic_avx512_vnni"].reduce_range
    assert PRESETS["dynamic_arm64"].weight_type == "qint8"
    # Plain "dynamic" is the ISA's preset with activation scales "auto": per-tensor first.
    assert quantize_config("dynamic", isa="avx2").alternatives()[0] == PRESETS["dynamic_avx2"]
    assert quantize_config("dynamic").isa == detect_isa() in ISAS
    assert quantize_config("static", isa="avx2", method="entropy").method == "entropy"
    assert quantize_config("none") is None and quantize_config(None) is None
    cfg = QuantizeConfig(isa="arm64")
    assert quantize_config(cfg) is cfg
    json.dumps(PRESETS["static_qdq"].to_dict())
    with pytest.raises(EdgeEmbedError, match="unknown quantization 'int4'"):
        quantize_config("int4")
    with pytest.raises(EdgeEmbedError, match="unknown ISA"):
        QuantizeConfig(isa="sse2")
    with pytest.raises(EdgeEmbedError, match="min_retained"):
        settings(quantize="dynamic", min_retained=1.5)


def test_isa_warning_for_a_cpu_that_lacks_it(dynamic_artifact):
    foreign = next(isa for isa in ("arm64", "avx512_vnni") if not cpu_supports(isa))
    with pytest.warns(RuntimeWarning, match=f"quantized for {foreign}"):
        assert check_isa({"isa": foreign}, "x") is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_isa({"isa": detect_isa()}) is True
        Encoder.load(dynamic_artifact) if cpu_supports("avx512_vnni") else None


@pytest.mark.integration
def test_minilm_dynamic_int8_sts(tmp_path_factory, sts_test_path):
    from edgeembed.sts import load_sts, sts_score

    out = tmp_path_factory.mktemp("minilm-int8") / "art"
    # What `--quantize dynamic` gives (activation scales auto), with the ISA pinned so that every machine
    # builds the same graph; no other flag: fused by default.
    r = export(None, out, quantize=quantize_config("dynamic", isa="avx512_vnni"))
    assert (r.path / r.manifest.graph).stat().st_size <= 25e6
    # MiniLM keeps the fast per-tensor scales: its mean cosine to fp32 clears the preferred floor.
    assert r.manifest.quantization["activations"] == "tensor" and "rejected" not in r.manifest.quantization
    assert r.manifest.graph == PRESETS["dynamic_avx512_vnni"].file_name
    assert r.manifest.optimization["applied"] is True and r.manifest.optimization["fused"]["Attention"] == 6
    assert "QAttention" in ops(r.path / r.manifest.graph)
    data = load_sts(sts_test_path)
    score = sts_score(data, Encoder.load(r.path).encode(data.sentences, batch_size=32))
    assert score >= 81.4, score
