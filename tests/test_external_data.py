"""ONNX artifacts keep their weights in `<graph>_data` (external data), aligned so ONNX Runtime maps them:
the same embeddings as the single-file graph, every file checksummed, the gate's check recorded, and the
step's own contract (alignment, what stays inline, refusal of a graph already external)."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from edgeembed.artifact import read_manifest
from edgeembed.cli import main
from edgeembed.encoder import Encoder
from edgeembed.errors import ArtifactError
from edgeembed.runtimes import RuntimeOptions, load_runtime
from edgeembed.steps import external_data
from edgeembed.steps.external_data import ALIGN, ALIGN_MIN_BYTES, EXTERNAL_MIN_BYTES, data_path, externalize

TEXTS = ["hello world", "the cat sat on the mat", "a man is playing a guitar on stage", ""]


def locations(graph) -> dict[str, dict[str, str]]:
    model = onnx.load(str(graph), load_external_data=False)
    return {
        t.name: {e.key: e.value for e in t.external_data}
        for t in model.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
    }


def test_artifact_graph_keeps_weights_in_data_file(tiny_artifact):
    m = read_manifest(tiny_artifact)
    graph = tiny_artifact / m.graph
    data = data_path(graph)
    assert data.name == graph.name + "_data" and data.is_file()
    record = m.build["external_data"]
    assert record["file"] == data.relative_to(tiny_artifact).as_posix()
    assert record["file"] in m.files  # checksummed like every other file
    assert record["max_abs_diff_vs_onnx"] <= m.build["policy"]["conversion_max_abs_diff"]
    # every weight big enough is outside the graph
    model = onnx.load(str(graph), load_external_data=False)
    inline = [t.name for t in model.graph.initializer if len(t.raw_data) >= EXTERNAL_MIN_BYTES]
    assert inline == []


def test_externalized_graph_gives_the_single_file_embeddings(tiny_artifact, tmp_path):
    m = read_manifest(tiny_artifact)
    graph = tiny_artifact / m.graph
    single = tmp_path / "single.onnx"
    onnx.save_model(onnx.load(str(graph)), str(single))  # loads the external data back in
    assert not locations(single)
    again = tmp_path / "again.onnx"
    externalize(single, again)
    enc = Encoder.load(tiny_artifact)
    for path in (single, again):
        runtime = load_runtime("onnxruntime", path, RuntimeOptions())
        other = Encoder.from_parts(tiny_artifact, runtime, m.head, graph=m.graphs[0])
        np.testing.assert_array_equal(enc.encode(TEXTS), other.encode(TEXTS))


def test_large_tensors_start_aligned(tmp_path):
    # a graph with tensors on both sides of the thresholds
    rng = np.random.default_rng(0)
    sizes = {"small": 8, "mid": 3000, "big": ALIGN_MIN_BYTES // 4 + 7, "big2": ALIGN_MIN_BYTES // 4 + 1}
    inits = [
        onnx.numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), k) for k, n in sizes.items()
    ]
    nodes = [onnx.helper.make_node("Identity", [k], [f"o_{k}"]) for k in sizes]
    outputs = [
        onnx.helper.make_tensor_value_info(f"o_{k}", onnx.TensorProto.FLOAT, [n]) for k, n in sizes.items()
    ]
    model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [], outputs, inits))
    src = tmp_path / "src.onnx"
    onnx.save_model(model, str(src))
    out = tmp_path / "model.onnx"
    data = externalize(src, out)
    loc = locations(out)
    assert "small" not in loc  # under EXTERNAL_MIN_BYTES: stays inline
    assert set(loc) == {"mid", "big", "big2"}
    assert all(v["location"] == data.name for v in loc.values())
    for name in ("big", "big2"):
        assert int(loc[name]["offset"]) % ALIGN == 0
    loaded = onnx.load(str(out))  # the bytes read back are the originals
    for t in loaded.graph.initializer:
        original = next(i for i in inits if i.name == t.name)
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(t), onnx.numpy_helper.to_array(original))
    with pytest.raises(ValueError, match="already keeps data outside"):
        externalize(out, tmp_path / "twice.onnx")
    assert external_data.data_path(out) == data


def test_missing_data_file_is_one_clear_error(tiny_artifact, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    m = read_manifest(art)
    data_path(art / m.graph).unlink()
    with pytest.raises(ArtifactError, match=r"_data"):
        Encoder.load(art)
    with pytest.raises(ArtifactError, match=r"onnxruntime cannot load .*model.*\.onnx") as info:
        Encoder.load(art, verify=False)  # the runtime's own error, one line
    assert "\n" not in str(info.value)


def test_info_names_a_missing_data_file(tiny_artifact, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    data = data_path(art / read_manifest(art).graph)
    data.unlink()
    result = CliRunner().invoke(main, ["info", str(art)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert f"MISSING or outside the artifact: {data.name}" in result.output
    assert "checksums: FAILED" in result.output
