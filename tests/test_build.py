"""The build pipeline: the best artifact by default (fusion when supported and exact, else the plain graph,
said and recorded), each fusion/quantization knob exported and loaded, and source shapes nothing checked
before (plain transformers folder, no tokenizer.json, Dense weights as .bin, lower-casing), rollback."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from edgeembed.artifact import read_manifest
from edgeembed.build import export
from edgeembed.calibration import CalibrationConfig
from edgeembed.cli import main
from edgeembed.encoder import Encoder
from edgeembed.errors import DriftError, InputError, UnsupportedError
from edgeembed.gate import GatePolicy
from edgeembed.steps import fusion

TEXTS = [
    "hello world",
    "the cat sat on the mat",
    "a man is playing a guitar on stage",
    "stock market fell",
    "",
]
CALIB = [
    f"the {w} model is small and fast when it is quantized {i}" for i, w in enumerate("abcdefghijklmnopqrst")
]


def ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(1)


@pytest.fixture(scope="module")
def tiny_mpnet(tiny_model_factory) -> Path:
    """The tiny model's layout with an MPNet transformer: a model type fusion does not support."""
    from transformers import MPNetConfig, MPNetModel

    path = tiny_model_factory()
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").unlink()
    (path / "model.safetensors").unlink()
    config = MPNetConfig(
        vocab_size=cfg["vocab_size"],
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,
    )
    MPNetModel(config).eval().save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def calib_txt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text("\n".join(CALIB) + "\n")
    return path


def test_default_export_is_the_fused_graph(tiny_model, tiny_artifact, tmp_path):
    r = export(tiny_model, tmp_path / "a")
    m = r.manifest
    assert m.graph == "onnx/model_O2.onnx" and m.precision == "fp32"
    assert m.optimization["level"] == "auto" and m.optimization["applied"] is True
    # SkipLayerNormalization is split back into Add + LayerNormalization (faster on ORT's CPU kernels).
    assert "Attention" in ops(r.path / m.graph) and "SkipLayerNormalization" not in ops(r.path / m.graph)
    assert "LayerNormalization" in ops(r.path / m.graph)
    assert m.optimization["validation"]["min_cosine"] >= 0.9999
    assert m.build["steps"] == ["fusion"] and m.build["format"] == "onnx"
    plain = Encoder.load(tiny_artifact).encode(TEXTS)
    assert cosines(Encoder.load(r.path).encode(TEXTS), plain).min() > 0.9999


def test_auto_falls_back_on_an_unsupported_model_type(tiny_mpnet, tmp_path):
    said: list[str] = []
    r = export(tiny_mpnet, tmp_path / "a", on_step=said.append)
    m = r.manifest
    assert m.graph == "onnx/model.onnx" and m.inputs == ("input_ids", "attention_mask")
    assert m.optimization["level"] == "auto" and m.optimization["applied"] is False
    assert m.optimization["reason"].startswith("fusion does not support model type 'mpnet': ")
    assert any("keeping the plain graph" in line and "mpnet" in line for line in said)
    assert Encoder.load(r.path).encode(TEXTS).shape == (len(TEXTS), 32)
    with pytest.raises(UnsupportedError, match="mpnet"):
        export(tiny_mpnet, tmp_path / "b", optimize="all")
    assert not (tmp_path / "b").exists()


def test_auto_falls_back_when_the_fused_graph_fails_the_gate(tiny_model, tmp_path):
    said: list[str] = []
    policy = GatePolicy(float_min_cosine=1.01)  # no float rewrite can pass this
    r = export(tiny_model, tmp_path / "a", policy=policy, on_step=said.append)
    assert r.manifest.graph == "onnx/model.onnx"
    assert r.manifest.optimization["applied"] is False and "DriftError" in r.manifest.optimization["reason"]
    assert any(line.startswith("fusion skipped") for line in said)
    with pytest.raises(DriftError):
        export(tiny_model, tmp_path / "b", optimize="all", policy=policy)


def test_onnxscript_fusion_engine_on_the_dynamo_graph(tiny_model, tiny_artifact, tmp_path):
    r = export(tiny_model, tmp_path / "a", optimize=fusion.Config(engine="onnxscript"))
    m = r.manifest
    assert m.optimization["engine"] == "onnxscript" and m.optimization["exporter"] == "dynamo"
    assert "Attention" in ops(r.path / m.graph)
    plain = Encoder.load(tiny_artifact).encode(TEXTS)
    assert cosines(Encoder.load(r.path).encode(TEXTS), plain).min() > 0.9999


def test_skip_layer_norm_kept_when_asked(tiny_model, tmp_path):
    r = export(tiny_model, tmp_path / "a", optimize=fusion.Config(skip_layer_norm=True))
    assert "SkipLayerNormalization" in ops(r.path / r.manifest.graph)
    assert "skip_layer_norm_split" not in r.manifest.optimization


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("beta", [True, False])
def test_split_skip_layer_norm_matches_the_fused_op(tmp_path, bias, beta):
    """Every output SkipLayerNormalization can give (Y, mean, inverse std dev, and the residual sum that
    pre-norm models read) is the same after the split, with or without its optional bias and beta."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    hidden = 24
    inits = [numpy_helper.from_array(rng.normal(size=hidden).astype(np.float32), n) for n in "gbc"]
    ins = ["x", "skip", "g", "b" if beta else "", "c" if bias else ""]
    while not ins[-1]:
        ins.pop()
    node = helper.make_node(
        "SkipLayerNormalization", ins, ["y", "mean", "inv", "sum"], domain="com.microsoft", epsilon=1e-5
    )
    # A consumer of the sum, as in a pre-norm block, so the split must keep that name alive.
    after = helper.make_node("Mul", ["sum", "y"], ["z"])
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [node, after],
        "sln",
        [helper.make_tensor_value_info(n, f, [2, None, hidden]) for n in ("x", "skip")],
        [helper.make_tensor_value_info(n, f, None) for n in ("y", "mean", "inv", "z")],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    feeds = {n: rng.normal(size=(2, 5, hidden)).astype(np.float32) * 3 for n in ("x", "skip")}

    def run() -> list[np.ndarray]:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)

    before = run()
    assert fusion.split_skip_layer_norm(path) == 1
    assert "SkipLayerNormalization" not in ops(path)
    after_split = run()
    for a, b in zip(before, after_split, strict=True):
        np.testing.assert_allclose(b.reshape(a.shape), a, rtol=1e-5, atol=1e-5)
    assert fusion.split_skip_layer_norm(path) == 0


def test_split_skip_layer_norm_refuses_an_opset_without_layer_norm(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("SkipLayerNormalization", ["x", "s", "g"], ["y"], domain="com.microsoft")
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "old",
        [helper.make_tensor_value_info(n, f, [1, 2, 4]) for n in ("x", "s")]
        + [helper.make_tensor_value_info("g", f, [4])],
        [helper.make_tensor_value_info("y", f, None)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 16), helper.make_opsetid("com.microsoft", 1)]
    )
    path = tmp_path / "old.onnx"
    onnx.save(model, str(path))
    before = path.read_bytes()
    with pytest.raises(UnsupportedError, match=r"old\.onnx: opset 16 has no LayerNormalization"):
        fusion.split_skip_layer_norm(path)
    assert path.read_bytes() == before  # refused before anything is rewritten


def test_optimize_basic(tiny_model, tmp_path):
    r = export(tiny_model, tmp_path / "a", optimize="basic")
    assert r.manifest.graph == "onnx/model_O1.onnx" and r.manifest.optimization["level"] == "basic"
    assert r.manifest.validation["min_cosine"] >= 0.9999


# entropy takes ORT's other histogram path at twice the time: with -m heavy.
@pytest.mark.parametrize("method", ["percentile", pytest.param("entropy", marks=pytest.mark.heavy)])
def test_static_calibration_methods(tiny_model, calib_txt, tmp_path, method):
    r = export(
        tiny_model,
        tmp_path / "a",
        quantize="static",
        calibration=CalibrationConfig(str(calib_txt), size=12),
        policy=GatePolicy(int8_min_cosine=0.5, int8_min_mean_cosine=0.8),
    )
    # "static" alone uses minmax; the method comes with the config (CLI: --calibration-method).
    assert r.manifest.quantization["method"] == "minmax"
    from edgeembed.steps.onnx_int8 import quantize_config

    cfg = quantize_config("static", method=method)
    r = export(
        tiny_model,
        tmp_path / "b",
        quantize=cfg,
        calibration=CalibrationConfig(str(calib_txt), size=12),
        policy=GatePolicy(int8_min_cosine=0.5, int8_min_mean_cosine=0.8),
    )
    m = r.manifest
    assert m.quantization["method"] == method and m.optimization["applied"] is False
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(r.path / m.graph)
    assert np.isfinite(Encoder.load(r.path).encode(TEXTS)).all()


@pytest.mark.parametrize("isa", ["avx2", "avx512", "arm64"])
def test_isa_presets_export_and_load(tiny_model, tmp_path, isa):
    r = export(tiny_model, tmp_path / "a", quantize=f"dynamic_{isa}")
    m = r.manifest
    weight = "quint8" if isa == "avx2" else "qint8"
    assert m.graph == f"onnx/model_{weight}_{isa}.onnx" and m.quantization["isa"] == isa
    assert m.quantization["reduce_range"] is (isa == "avx512")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a foreign ISA warns; it still runs here
        emb = Encoder.load(r.path).encode(TEXTS)
    assert np.isfinite(emb).all() and emb.shape == (len(TEXTS), 16)


def test_cli_isa_calibration_method_and_column(tiny_model, tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        main,
        ["export", str(tiny_model), "--out", str(tmp_path / "d"), "--quantize", "dynamic", "--isa", "avx2"],
    )
    assert res.exit_code == 0, res.output
    assert read_manifest(tmp_path / "d").quantization["isa"] == "avx2"
    table = tmp_path / "calib.csv"
    table.write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(CALIB)))
    args = [
        "export",
        str(tiny_model),
        "--out",
        str(tmp_path / "s"),
        "--quantize",
        "static",
        "--calibration",
        str(table),
    ]
    res = runner.invoke(
        main,
        [
            *args,
            "--calibration-column",
            "text",
            "--calibration-method",
            "percentile",
            "--calibration-size",
            "10",
        ],
    )
    assert res.exit_code == 0, res.output
    q = read_manifest(tmp_path / "s").quantization
    assert (
        q["method"] == "percentile"
        and q["calibration"]["column"] == "text"
        and q["calibration"]["size"] == 10
        and q["calibration"]["batches"] > 10  # the sample plus texts covering the lengths it lacks
    )
    res = runner.invoke(main, [*args, "--calibration-column", "nope"])
    assert res.exit_code == 1 and "no column 'nope'" in res.output and not (tmp_path / "s2").exists()


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--isa", "arm64"], "--isa tunes an int8 graph"),
        (["--min-retained", "0.5"], "--min-retained is checked against an STS set"),
        (["--calibration-size", "5"], "--calibration-size applies to --calibration"),
        (["--quantize", "dynamic", "--calibration-method", "entropy"], "--calibration-method is ONNX static"),
    ],
)
def test_an_option_the_export_would_ignore_is_refused(tmp_path, extra, says):
    res = CliRunner().invoke(main, ["export", "--out", str(tmp_path / "x"), *extra])
    assert res.exit_code == 1 and says in res.output and not (tmp_path / "x").exists(), res.output


def test_settings_fail_before_any_model_work(tmp_path):
    with pytest.raises(InputError, match="calibration data is used only with --quantize static"):
        export(None, tmp_path / "x", quantize="dynamic", calibration=__file__)
    with pytest.raises(InputError, match="unknown optimize level"):
        export(None, tmp_path / "x", optimize="max")
    with pytest.raises(InputError, match="unknown format"):
        export(None, tmp_path / "x", format="tflite")
    res = CliRunner().invoke(main, ["export", "--out", str(tmp_path / "x"), "--quantize", "weights-int8"])
    assert res.exit_code == 1 and "add --format openvino" in res.output
    assert not (tmp_path / "x").exists()


def test_do_lower_case_matches_sentence_transformers(tiny_model_factory, tmp_path):
    """A cased tokenizer with do_lower_case=True: texts are lower-cased before tokenizing, as ST does."""
    st = pytest.importorskip("sentence_transformers")
    from tokenizers import Tokenizer, normalizers

    src = tiny_model_factory()
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.save(str(src / "tokenizer.json"))
    cfg = json.loads((src / "sentence_bert_config.json").read_text())
    (src / "sentence_bert_config.json").write_text(json.dumps({**cfg, "do_lower_case": True}))
    r = export(src, tmp_path / "a")
    assert r.manifest.head.do_lower_case is True
    enc = Encoder.load(r.path)
    mixed = ["HELLO World", "The CAT sat"]
    np.testing.assert_allclose(enc.encode(mixed), enc.encode([t.lower() for t in mixed]), atol=1e-6)
    theirs = st.SentenceTransformer(str(src), device="cpu").encode(mixed)
    assert cosines(enc.encode(mixed), theirs).min() > 0.9999


@pytest.mark.parametrize("fn", ["dot", "euclidean", "manhattan", "cosine"])
def test_similarity_functions_match_sentence_transformers(tiny_artifact, fn):
    from dataclasses import replace

    util = pytest.importorskip("sentence_transformers.util")
    from edgeembed.runtimes import load_runtime

    m = read_manifest(tiny_artifact)
    enc = Encoder.from_parts(
        tiny_artifact, load_runtime("onnxruntime", tiny_artifact / m.graph), replace(m.head, similarity_fn=fn)
    )
    a, b = enc.encode(TEXTS[:3], normalize=False), enc.encode(TEXTS[1:], normalize=False)
    theirs = {
        "dot": util.dot_score,
        "euclidean": util.euclidean_sim,
        "manhattan": util.manhattan_sim,
        "cosine": util.cos_sim,
    }[fn]
    np.testing.assert_allclose(enc.similarity(a, b), theirs(a, b).numpy(), rtol=1e-5, atol=1e-5)


def test_plain_transformers_folder(tiny_model_factory, tmp_path):
    with pytest.warns(UserWarning, match="no modules.json"):
        r = export(tiny_model_factory(modules_json=False), tmp_path / "a")
    assert r.manifest.head.pooling[0].value == "mean" and r.manifest.dim == 32
    assert json.loads((r.path / "modules.json").read_text())[1]["type"].endswith("Pooling")
    assert Encoder.load(r.path).encode(TEXTS).shape == (len(TEXTS), 32)


def test_source_without_tokenizer_json(tiny_model, tiny_artifact, tmp_path):
    """transformers builds the fast tokenizer from vocab.txt; the artifact gets a tokenizer.json."""
    src = tmp_path / "src"
    shutil.copytree(tiny_model, src)
    (src / "tokenizer.json").unlink()
    r = export(src, tmp_path / "a", optimize="none")
    assert (r.path / "tokenizer.json").is_file()
    ours = Encoder.load(r.path).encode(TEXTS)
    assert cosines(ours, Encoder.load(tiny_artifact).encode(TEXTS)).min() > 0.9999


def test_dense_weights_stored_as_bin(tiny_model, tiny_artifact, tmp_path):
    import torch
    from safetensors.torch import load_file

    src = tmp_path / "src"
    shutil.copytree(tiny_model, src)
    dense = next(src.glob("*_Dense"))
    torch.save(load_file(str(dense / "model.safetensors")), dense / "pytorch_model.bin")
    (dense / "model.safetensors").unlink()
    r = export(src, tmp_path / "a", optimize="none")
    assert (r.path / dense.name / "model.safetensors").is_file()
    np.testing.assert_allclose(
        Encoder.load(r.path).encode(TEXTS), Encoder.load(tiny_artifact).encode(TEXTS), atol=1e-5
    )


def test_failed_overwrite_rolls_back_to_the_old_artifact(tiny_model, tiny_artifact, tmp_path):
    out = tmp_path / "art"
    shutil.copytree(tiny_artifact, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(DriftError):
        export(tiny_model, out, overwrite=True, policy=GatePolicy(export_min_cosine=1.01))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temporary folder left beside it


def test_openvino_runs_an_onnx_artifact(tiny_artifact):
    """Encoder.load(runtime=) overrides the manifest's runtime: OpenVINO reads ONNX graphs directly."""
    pytest.importorskip("openvino")
    ours = Encoder.load(tiny_artifact).encode(TEXTS)
    ov = Encoder.load(tiny_artifact, runtime="openvino").encode(TEXTS)
    assert cosines(ov, ours).min() > 0.9999


def test_missing_extra_names_a_real_extra():
    """Every extra named in the code exists in pyproject.toml, the one list."""
    import re

    import tomllib

    from conftest import REPO

    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = set()
    for path in (REPO / "edgeembed").rglob("*.py"):
        named |= set(re.findall(r"""require\(\s*["'][\w.]+["']\s*,\s*["']([\w-]+)["']""", path.read_text()))
    assert named and named <= extras | {"core"}, named - extras
    from edgeembed._imports import extras as meta_extras

    assert set(meta_extras()) == extras  # the installed metadata is pyproject's list


def test_gate_reads_the_sts_parsed_once_per_build(tiny_artifact, tmp_path):
    from edgeembed.build import settings
    from edgeembed.gate import batch_invariance, check_step, gate_texts

    sts = tmp_path / "pairs.tsv"
    pairs = [(a, b) for a in TEXTS[:4] for b in TEXTS[:4] if a != b]
    sts.write_text("".join(f"{a}\t{b}\t{i % 5}\n" for i, (a, b) in enumerate(pairs)))
    s = settings(quantize="dynamic", sts=sts)
    assert s.policy.sts == str(sts) and s.sts is not None and len(s.sts.sentences) == 4
    sts.unlink()  # the checks use the parsed object: none of them opens the file again
    enc = Encoder.load(tiny_artifact)
    check = check_step(enc, enc, s.policy, "int8", "the same graph", sts=s.sts)
    assert check["sts_retained"] == pytest.approx(1.0) and check["sts_path"] == str(sts)
    assert batch_invariance(enc, s.policy, sts=s.sts)["n"] == 4
    assert set(s.sts.sentences) <= set(gate_texts(enc.max_seq_length, s.sts))
