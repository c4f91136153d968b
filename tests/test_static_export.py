"""A static-embedding model through `export`: the table artifact, its ONNX graph (gated against the numpy
static runtime, recorded in the manifest, runnable by the Encoder with onnxruntime) and the fast path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeembed.errors import ArtifactError, DriftError

from conftest import build_tokenizer, static_reference

TEXTS = [
    "the cat sat on the mat",
    "",
    "hello world hello",
    "a man is playing a guitar on stage while the crowd sings along",
    "zzz ###",
]


def build_static_folder(path: Path, dim: int = 8, dense: str | None = None, normalize: bool = True) -> Path:
    """A sentence-transformers StaticEmbedding folder written by the reduce step's own writer: tiny
    tokenizer, random table, optionally one Dense module (6 wide) with the named activation, optionally
    Normalize."""
    from edgeembed.reduce.folder import write_static_folder

    path.mkdir(parents=True)
    build_tokenizer(path)
    tokenizer_json = (path / "tokenizer.json").read_text()
    rng = np.random.default_rng(0)
    table = rng.normal(size=(len(json.loads(tokenizer_json)["model"]["vocab"]), dim))
    heads = [(rng.normal(size=(6, dim)) * 0.3, rng.normal(size=6) * 0.1, dense)] if dense else []
    write_static_folder(path, table, tokenizer_json, normalize, dense=heads)
    return path


@pytest.fixture(scope="module")
def static_artifact(tmp_path_factory) -> Path:
    from edgeembed.build import export

    root = tmp_path_factory.mktemp("static-export")
    folder = build_static_folder(root / "model")
    return export(folder, root / "art").path


def _session_output(art: Path, texts: list[str]) -> np.ndarray:
    import onnxruntime as ort

    from edgeembed.encoder import Encoder

    enc = Encoder.load(art)
    graph = enc.manifest.graph_for("onnxruntime")
    sess = ort.InferenceSession(str(art / graph.file), providers=["CPUExecutionProvider"])
    batch = enc.tokenizer(texts)
    return sess.run(["sentence_embedding"], batch.as_inputs(graph.inputs))[0]


def test_export_writes_gated_onnx_graph_in_manifest(static_artifact):
    manifest = json.loads((static_artifact / "edgeembed.json").read_text())
    table, rec = manifest["graphs"]
    assert table["runtime"] == "static" and table["file"] == "model.safetensors"  # numpy stays the default
    assert rec["file"] == "model.onnx" and rec["runtime"] == "onnxruntime" and rec["input"] == "tokens"
    assert rec["inputs"] == ["input_ids", "attention_mask"] and rec["precision"] == "fp16"
    details, check = rec["details"], rec["validation"]
    assert details["outputs"] == ["token_embeddings", "sentence_embedding"]
    assert details["table"] == {"external_data": "model.safetensors", "precision": "fp16"}
    assert check["max_abs_diff_sentence_embedding"] <= check["max_abs_diff_allowed"]
    assert "Gather" in details["operators"]["ai.onnx"]
    assert "model.onnx" in manifest["files"]  # checksummed like every file
    # The table is referenced, not copied: the graph stays tiny.
    assert (static_artifact / "model.onnx").stat().st_size < 4096


def test_onnx_graph_matches_numpy_runtime_and_reference(static_artifact, tmp_path):
    from edgeembed.encoder import Encoder

    numpy_enc = Encoder.load(static_artifact)
    onnx_enc = Encoder.load(static_artifact, runtime="onnxruntime")
    assert type(onnx_enc.runtime).__name__ == "OnnxRuntime"
    a, b = numpy_enc.encode(TEXTS, batch_size=2), onnx_enc.encode(TEXTS, batch_size=2)
    np.testing.assert_allclose(a, b, atol=1e-6)
    sentence = _session_output(static_artifact, TEXTS)
    np.testing.assert_allclose(sentence, a, atol=1e-6)
    assert np.all(sentence[1] == 0)  # empty text: zeros, not NaN
    ref = static_reference(static_artifact, TEXTS)  # the artifact's float16 table, widened
    np.testing.assert_allclose(a, ref, atol=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_onnx_graph_applies_dense_head(tmp_path, activation):
    from edgeembed.build import export
    from edgeembed.encoder import Encoder

    folder = build_static_folder(tmp_path / "m", dense=activation)
    art = export(folder, tmp_path / "art").path
    want = Encoder.load(art).encode(TEXTS)
    assert want.shape == (len(TEXTS), 6)
    np.testing.assert_allclose(_session_output(art, TEXTS), want, atol=1e-5)
    np.testing.assert_allclose(Encoder.load(art, runtime="onnxruntime").encode(TEXTS), want, atol=1e-5)


def test_unnormalized_float32_table(tmp_path):
    from edgeembed.build import export
    from edgeembed.encoder import Encoder

    folder = build_static_folder(tmp_path / "m", normalize=False)
    art = export(folder, tmp_path / "art").path
    want = static_reference(art, TEXTS, normalize=False)
    got = _session_output(art, TEXTS)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(np.linalg.norm(got[0]), 1.0)
    np.testing.assert_allclose(Encoder.load(art).encode(TEXTS), want, atol=1e-5)


def test_artifact_without_onnx_graph_says_reexport(static_artifact, tmp_path):
    from edgeembed.artifact import ArtifactGraph, Manifest, save_artifact
    from edgeembed.backends.static import write_static
    from edgeembed.encoder import Encoder
    from edgeembed.source import load_source

    spec = load_source(Encoder.load(static_artifact).manifest.source["path"])

    def build(tmp: Path) -> Manifest:
        g = write_static(spec, tmp)
        graph = ArtifactGraph(g.path.name, "static", "tokens", g.precision, g.input_names)
        return Manifest((graph,), spec.head, {})

    old = tmp_path / "old"
    save_artifact(old, build)
    with pytest.raises(ArtifactError, match=r"no graph runtime 'onnxruntime' can run.*'static'.*re-export"):
        Encoder.load(old, runtime="onnxruntime")
    with pytest.raises(ArtifactError, match=r"no graph runtime 'onnxruntime-e2e' can run"):
        Encoder.load(static_artifact, runtime="onnxruntime-e2e")


def test_sentence_graph_gate_rejects_drift(static_artifact):
    from edgeembed.encoder import Encoder
    from edgeembed.gate import GatePolicy, check_sentence_graph

    enc = Encoder.load(static_artifact)
    onnx_enc = Encoder.load(static_artifact, runtime="onnxruntime")
    good = check_sentence_graph(enc, onnx_enc, enc.encode, TEXTS, GatePolicy(), "x")
    assert good["max_abs_diff_sentence_embedding"] == 0.0
    with pytest.raises(DriftError, match="sentence_embedding"):
        check_sentence_graph(enc, onnx_enc, lambda t: enc.encode(t) + 1e-3, TEXTS, GatePolicy(), "x")


class _RunOnly:
    """The static runtime without its fast path: padded batches through `run`, pooled by the Encoder."""

    def __init__(self, runtime) -> None:
        self.input_names = runtime.input_names
        self.run = runtime.run


def test_fast_path_equals_padded_path(static_artifact):
    from edgeembed.encoder import Encoder

    enc = Encoder.load(static_artifact)
    slow = Encoder.from_parts(static_artifact, _RunOnly(enc.runtime), enc.head)
    texts = [*TEXTS, *(f"word {i} " * (i % 7) for i in range(40))]
    for batch_size in (1, 3, 32):
        np.testing.assert_array_equal(enc.encode(texts, batch_size=batch_size), slow.encode(texts))
    np.testing.assert_array_equal(enc.encode(texts, normalize=False), slow.encode(texts, normalize=False))
    assert np.all(enc.runtime.mean_of_ids([[]]) == 0)
    with pytest.raises(ArtifactError, match="out of range"):
        enc.runtime.mean_of_ids([[0, 10**6]])


def test_shippable_files_name_the_shared_table(static_artifact):
    from edgeembed.shippable import shippable_files

    files = {f.path: f for f in shippable_files(static_artifact)}
    graph = files["model.onnx"]
    assert "model.safetensors" in graph.note
    assert graph.size > (static_artifact / "model.safetensors").stat().st_size
