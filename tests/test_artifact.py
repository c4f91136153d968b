"""Artifact writing is atomic; loading checks version, files and checksums."""

from __future__ import annotations

import json
import shutil

import pytest

from edgeembed import Encoder
from edgeembed.artifact import MANIFEST_NAME, read_manifest
from edgeembed.build import export
from edgeembed.errors import ArtifactError, EdgeEmbedError, ValidationError
from edgeembed.gate import GatePolicy


def test_manifest_records_what_the_issue_asks(tiny_artifact):
    m = json.loads((tiny_artifact / MANIFEST_NAME).read_text())
    for key in (
        "format_version",
        "source",
        "graphs",
        "head",
        "dim",
        "max_seq_length",
        "files",
        "versions",
    ):
        assert key in m, key
    (graph,) = m["graphs"]  # one typed graph: what it is, what runs it, what it takes, how it passed
    assert graph["file"] in m["files"] and graph["runtime"] == "onnxruntime"
    assert graph["input"] == "tokens" and graph["precision"] == "fp32"
    assert graph["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert graph["validation"]["min_cosine"] >= 0.9999
    assert m["head"]["pooling"] == ["mean"] and m["head"]["normalize"] is True
    assert m["source"]["weights_sha256"] and len(m["source"]["weights_sha256"]) == 64
    assert "onnx/model.onnx" in m["files"] and "tokenizer.json" in m["files"]


def test_sentence_transformers_layout(tiny_artifact):
    modules = json.loads((tiny_artifact / "modules.json").read_text())
    assert [m["path"] for m in modules][:3] == ["", "1_Pooling", "2_Dense"]
    assert (tiny_artifact / "onnx" / "model.onnx").is_file()
    assert (tiny_artifact / "2_Dense" / "model.safetensors").is_file()
    assert json.loads((tiny_artifact / "sentence_bert_config.json").read_text())["max_seq_length"] == 24
    assert not (tiny_artifact / "model.safetensors").exists()  # torch weights are not shipped


def test_failed_validation_leaves_nothing(tiny_model, tmp_path):
    out = tmp_path / "art"
    with pytest.raises(ValidationError, match="min cosine"):
        export(tiny_model, out, policy=GatePolicy(export_min_cosine=1.01))  # unreachable tolerance
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind either


def test_non_empty_target_refused_and_only_an_artifact_overwritten(tiny_model, tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(EdgeEmbedError, match="not empty"):
        export(tiny_model, out)
    assert (out / "keep.txt").read_text() == "user data"
    # --overwrite replaces an artifact only (issue 21): a folder of user files is never deleted
    with pytest.raises(EdgeEmbedError, match="replaces only an edgeembed artifact"):
        export(tiny_model, out, overwrite=True)
    assert (out / "keep.txt").read_text() == "user data"
    (out / "keep.txt").unlink()
    export(tiny_model, out)  # an empty folder is fine
    (out / "keep.txt").write_text("left in the artifact")  # a file edgeembed did not write: kept too
    with pytest.raises(EdgeEmbedError, match=r"did not write \(keep\.txt\)"):
        export(tiny_model, out, overwrite=True)
    assert (out / "keep.txt").read_text() == "left in the artifact"
    (out / "keep.txt").unlink()
    export(tiny_model, out, overwrite=True)
    assert (out / MANIFEST_NAME).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


@pytest.fixture
def art_copy(tiny_artifact, tmp_path):
    return shutil.copytree(tiny_artifact, tmp_path / "copy")


def test_checksum_mismatch_refused(art_copy):
    with (art_copy / "tokenizer.json").open("a") as f:
        f.write(" ")
    with pytest.raises(ArtifactError, match=r"checksum mismatch for .*tokenizer.json"):
        Encoder.load(art_copy)


def test_missing_file_named(art_copy):
    (art_copy / "onnx" / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"missing: .*model.onnx"):
        Encoder.load(art_copy)


def test_corrupt_graph_named_when_unverified(art_copy):
    (art_copy / "onnx" / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match=r"model.onnx"):
        Encoder.load(art_copy, verify=False)


def test_unknown_format_version_names_versions(art_copy):
    m = json.loads((art_copy / MANIFEST_NAME).read_text())
    m["format_version"] = 99
    (art_copy / MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=r"format version 99.*reads versions 1"):
        read_manifest(art_copy)


def test_corrupt_manifest_and_missing_manifest(art_copy, tmp_path):
    (art_copy / MANIFEST_NAME).write_text("{")
    with pytest.raises(ArtifactError, match=r"corrupt manifest .*edgeembed.json"):
        Encoder.load(art_copy)
    with pytest.raises(ArtifactError, match="not an edgeembed artifact"):
        Encoder.load(tmp_path)
