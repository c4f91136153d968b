"""Typed artifact graphs and runtime capabilities (issue 19): the manifest lists its graphs (file, runtime,
input kind, precision, validation), runtimes declare what they can do in one dataclass, and the Encoder
and build.py pick graphs and runtimes without naming any. Version-2 manifests, written by the code before
this change (tests/data/legacy/), still load, read into typed graphs."""

from __future__ import annotations

import ast
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgeembed import Encoder
from edgeembed.artifact import (
    DIGEST_KEY,
    MANIFEST_NAME,
    ArtifactGraph,
    Manifest,
    manifest_digest,
    read_manifest,
)
from edgeembed.backends import REGISTRY as FORMATS
from edgeembed.errors import ArtifactError
from edgeembed.runtimes import REGISTRY as RUNTIMES
from edgeembed.runtimes import RuntimeCapabilities, capabilities_of, declared_capabilities

LEGACY = Path(__file__).parent / "data" / "legacy"
PACKAGE = Path(__file__).resolve().parents[1] / "edgeembed"
TEXTS = ["a man plays the guitar", "query: the cat sat", "", "zzz ###", "hello world " * 9]


def _resign(root: Path, data: dict) -> None:
    data.pop(DIGEST_KEY, None)
    data[DIGEST_KEY] = manifest_digest(data)
    (root / MANIFEST_NAME).write_text(json.dumps(data))


def _copy(src: Path, dst: Path) -> tuple[Path, dict]:
    shutil.copytree(src, dst)
    return dst, json.loads((dst / MANIFEST_NAME).read_text())


# ------------------------------------------------------------------------------------ capabilities
EXPECTED = {
    "onnxruntime": RuntimeCapabilities(thread_safe=True, named_outputs=True),
    "onnxruntime-e2e": RuntimeCapabilities(takes_text=True, thread_safe=True),
    "static": RuntimeCapabilities(mean_of_ids=True, thread_safe=True, blas_head=True),
    "torch": RuntimeCapabilities(thread_safe=True),
}


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_every_registered_runtime_declares_its_capabilities(name):
    if name.startswith("openvino"):
        pytest.importorskip("openvino")
    caps = declared_capabilities(name)
    assert isinstance(caps, RuntimeCapabilities)
    if name in EXPECTED:
        assert caps == EXPECTED[name]
    if name == "openvino":  # few shapes, streams, per-batch-size hint; it reads ONNX graphs too
        assert caps.bucket_rows and caps.pad_to_multiple_of and caps.streams and caps.batch_size_hint
        assert caps.opens == ("onnxruntime",)
    if name == "openvino-e2e":
        assert caps.takes_text and caps.thread_safe


class Recording:
    """A runtime whose capabilities are given, recording each batch's shape."""

    def __init__(self, inner, capabilities: RuntimeCapabilities | None = None, **attributes) -> None:
        self.inner = inner
        self.input_names = inner.input_names
        self.shapes: list[tuple[int, int]] = []
        if capabilities is not None:
            self.capabilities = capabilities
        for key, value in attributes.items():
            setattr(self, key, value)

    def run(self, inputs):
        self.shapes.append(inputs["input_ids"].shape)
        return self.inner.run(inputs)


def test_encoder_follows_declared_capabilities_and_never_probes_attributes(tiny_artifact):
    enc = Encoder.load(tiny_artifact)
    texts = [f"word {i} " * (i % 9) for i in range(37)]
    want = enc.encode(texts, batch_size=8, max_batch_tokens=60)
    declared = Recording(enc.runtime, RuntimeCapabilities(pad_to_multiple_of=8, bucket_rows=True))
    got = Encoder.from_parts(enc.path, declared, enc.head, enc.manifest, enc.tokenizer)
    np.testing.assert_allclose(got.encode(texts, batch_size=8, max_batch_tokens=60), want, atol=1e-6)
    assert all(seq % 8 == 0 or seq == enc.max_seq_length for _, seq in declared.shapes)
    assert {rows for rows, _ in declared.shapes} <= {1, 2, 4, 8}
    # The old optional attributes, undeclared: a plain token runtime (no padding multiple, no bucketing).
    undeclared = Recording(enc.runtime, pad_to_multiple_of=8, bucket_rows=True)
    plain = Encoder.from_parts(enc.path, undeclared, enc.head, enc.manifest, enc.tokenizer)
    assert plain.capabilities == RuntimeCapabilities() == capabilities_of(undeclared)
    np.testing.assert_allclose(plain.encode(texts, batch_size=8, max_batch_tokens=60), want, atol=1e-6)
    assert any(seq % 8 for _, seq in undeclared.shapes)  # lengths as they come


# ------------------------------------------------------------------------------------ typed graphs
def test_export_lists_one_typed_graph_and_the_encoder_runs_it(tiny_artifact):
    m = read_manifest(tiny_artifact)
    (g,) = m.graphs
    assert (g.runtime, g.input, g.precision) == ("onnxruntime", "tokens", "fp32")
    assert (
        g.inputs == ("input_ids", "attention_mask", "token_type_ids") and g.validation["min_cosine"] >= 0.9999
    )
    assert (m.graph, m.runtime, m.validation) == (g.file, g.runtime, g.validation)  # the default graph's
    assert m.end_to_end is None and m.graph_for("onnxruntime-e2e") is None
    with pytest.raises(ArtifactError, match=r"no graph runtime 'onnxruntime-e2e' can run.*'onnxruntime'"):
        Encoder.load(tiny_artifact, runtime="onnxruntime-e2e")


def test_a_runtime_gets_its_own_graph_else_one_it_opens(tiny_artifact):
    pytest.importorskip("openvino")
    from edgeembed.encoder import select_graph

    m = read_manifest(tiny_artifact)
    tokens = m.graphs[0]
    text = ArtifactGraph("onnx/model_e2e.onnx", "onnxruntime-e2e", "text", "fp32", ("text",))
    two = Manifest(graphs=(tokens, text), head=m.head, source={})
    assert select_graph(tiny_artifact, two, "onnxruntime-e2e") is text
    assert select_graph(tiny_artifact, two, "openvino") is tokens  # OpenVINO opens the ONNX graph
    with pytest.raises(ArtifactError, match=r"'openvino-e2e'.*'onnxruntime', 'onnxruntime-e2e'"):
        select_graph(tiny_artifact, two, "openvino-e2e")
    ov = Encoder.load(tiny_artifact, runtime="openvino")
    np.testing.assert_allclose(ov.encode(TEXTS), Encoder.load(tiny_artifact).encode(TEXTS), atol=1e-4)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda g: g.update(input="pixels"), r"graphs\[0\]\.input 'pixels' is not one of tokens, text"),
        (lambda g: g.update(runtime="tensorrt"), r"graphs\[0\]\.runtime 'tensorrt' is not one of"),
        (lambda g: g.update(precision="fp8"), r"graphs\[0\]\.precision 'fp8'"),
        (lambda g: g.update(inputs=[]), r"graphs\[0\]\.inputs must be a non-empty list"),
        (lambda g: g.update(validation=[1]), r"graphs\[0\]\.validation must be an object"),
        (lambda g: g.update(shape=3), r"graphs\[0\] has unknown field 'shape'"),
        (lambda g: g.pop("file"), r"graphs\[0\]\.file must be a non-empty string"),
    ],
)
def test_schema_checks_every_graph_field(tiny_artifact, tmp_path, edit, message):
    root, data = _copy(tiny_artifact, tmp_path / "art")
    edit(data["graphs"][0])
    _resign(root, data)
    with pytest.raises(ArtifactError, match=message) as info:
        Encoder.load(root)
    assert "\n" not in str(info.value)


def test_a_text_graph_for_a_token_runtime_is_refused(tiny_artifact, tmp_path):
    root, data = _copy(tiny_artifact, tmp_path / "art")
    data["graphs"][0]["input"] = "text"
    _resign(root, data)
    with pytest.raises(ArtifactError, match=r"takes text, which runtime 'onnxruntime' does not"):
        Encoder.load(root)


def test_every_graph_file_must_be_checksummed(tiny_artifact, tmp_path):
    root, data = _copy(tiny_artifact, tmp_path / "art")
    (root / "onnx" / "extra.onnx").write_bytes(b"x")
    data["graphs"].append({**data["graphs"][0], "file": "onnx/extra.onnx"})
    _resign(root, data)
    with pytest.raises(
        ArtifactError, match=r"onnx/extra\.onnx is not among the artifact's checksummed files"
    ):
        Encoder.load(root)


# ------------------------------------------------------------------------------ version-2 manifests
def test_version_2_manifest_with_end_to_end_graph_reads_into_typed_graphs():
    """edgeembed.json written by the code before typed graphs (tiny BERT, --end-to-end)."""
    old = json.loads((LEGACY / "v2_onnx_e2e" / MANIFEST_NAME).read_text())
    assert old["format_version"] == 2 and "graphs" not in old
    m = read_manifest(LEGACY / "v2_onnx_e2e")  # digest, schema, then typed graphs
    tokens, text = m.graphs
    assert (tokens.file, tokens.runtime, tokens.input) == (old["graph"], old["runtime"], "tokens")
    assert tokens.precision == old["precision"] and list(tokens.inputs) == old["inputs"]
    assert tokens.validation == old["validation"]
    assert (text.file, text.runtime, text.input, text.inputs) == (
        old["end_to_end"]["graph"],
        "onnxruntime-e2e",
        "text",
        ("text",),
    )
    assert text.validation["token_id_mismatches"] == [] and "tokenizer_op" in text.details
    assert m.end_to_end == old["end_to_end"]  # nothing lost: the old record, rebuilt from the typed graph


def test_version_2_static_manifest_reads_its_onnx_graph():
    old = json.loads((LEGACY / "v2_static" / MANIFEST_NAME).read_text())
    m = read_manifest(LEGACY / "v2_static")
    table, onnx_graph = m.graphs
    assert (table.runtime, table.file) == ("static", old["graph"])
    assert (onnx_graph.runtime, onnx_graph.file) == ("onnxruntime", old["onnx_graph"]["graph"])
    assert onnx_graph.details["outputs"] == old["onnx_graph"]["outputs"]
    assert onnx_graph.precision == old["onnx_graph"]["table"]["precision"]
    assert "max_abs_diff_sentence_embedding" in onnx_graph.validation


def test_version_2_static_artifact_runs_with_both_of_its_runtimes(tmp_path):
    """A whole static artifact written by the code before typed graphs: its table (numpy) by default, its
    ONNX graph for onnxruntime, the same embeddings."""
    root = shutil.copytree(LEGACY / "v2_static", tmp_path / "v2_static")
    table, graph = Encoder.load(root), Encoder.load(root, runtime="onnxruntime")
    assert type(graph.runtime).__name__ == "OnnxRuntime" and table.manifest.format_version == 2
    np.testing.assert_allclose(graph.encode(TEXTS), table.encode(TEXTS), atol=1e-6)


def test_version_2_artifact_loads_and_encodes_like_version_3(tiny_artifact, tmp_path):
    """The current tiny artifact with its manifest rewritten in the version-2 shape (the fields the
    fixtures above hold): same graph, same embeddings. Version 2 kept no graph details, so it pools the
    token output in numpy where the current artifact asks its graph for the sentence output."""
    root, data = _copy(tiny_artifact, tmp_path / "v2")
    (g,) = data.pop("graphs")
    data.update(
        format_version=2,
        graph=g["file"],
        runtime=g["runtime"],
        precision=g["precision"],
        inputs=g["inputs"],
        validation=g["validation"],
    )
    _resign(root, data)
    old = Encoder.load(root)
    (now,) = read_manifest(tiny_artifact).graphs
    assert old.manifest.format_version == 2 and old.manifest.graphs == (replace(now, details={}),)
    current = Encoder.load(tiny_artifact)
    assert old.sentence_output is None and current.sentence_output == "sentence_embedding"
    np.testing.assert_allclose(old.encode(TEXTS), current.encode(TEXTS), atol=1e-6)


# ------------------------------------------------------------------------------ no names in logic
def _compared_names(path: Path) -> list[str]:
    """String constants that a module compares with (==, !=, in) or passes to load_runtime."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        parts: list[ast.AST] = []
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_runtime" and node.args:
            parts = [node.args[0]]
        for part in parts:
            for leaf in ast.walk(part):
                if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                    found.append(leaf.value)
    return found


@pytest.mark.parametrize("module", ["encoder.py", "build.py"])
def test_encoder_and_build_decide_by_no_format_or_runtime_name(module):
    # "static" is also a model kind (spec.kind): a static model has a back-end of its own.
    names = {*FORMATS, *RUNTIMES, "ort", "e2e", ".onnx", "arm64"} - {"static"}
    assert not names & set(_compared_names(PACKAGE / module))
