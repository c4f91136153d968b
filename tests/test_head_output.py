"""The head as a second output of the ONNX token graph (steps.sentence_output): recorded, gated, and used
by the Encoder only where it gives the numbers the numpy head gives."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest

from edgeembed.artifact import read_manifest
from edgeembed.encoder import Encoder
from edgeembed.head import SENTENCE_OUTPUT
from edgeembed.runtimes import RuntimeOptions, load_runtime
from edgeembed.steps.sentence_output import add_sentence_output

TEXTS = ["a man plays the guitar", "query: the cat sat", "", "zzz ###", "hello world " * 9, "a"]
TOL = 1e-6  # float rounding of the same pooling and Dense, in another order


def _token_path(root, manifest, head=None) -> Encoder:
    """The artifact's own graph with the pooling in numpy (no graph entry: the token output only)."""
    (g,) = manifest.graphs
    runtime = load_runtime(g.runtime, root / g.file, RuntimeOptions())
    return Encoder.from_parts(root, runtime, head or manifest.head)


def test_the_export_records_and_gates_the_head_output(tiny_artifact):
    m = read_manifest(tiny_artifact)
    (g,) = m.graphs
    assert g.details["outputs"][1] == SENTENCE_OUTPUT
    assert g.details["normalized"] is m.head.normalize is True
    record = g.validation["head_output"]
    assert record["max_abs_diff_sentence_embedding"] <= record["max_abs_diff_allowed"]
    assert record["texts"] >= 100
    names = [o.name for o in onnx.load(str(tiny_artifact / g.file), load_external_data=False).graph.output]
    assert names == g.details["outputs"]


@pytest.mark.parametrize("normalize", [None, True, False])
def test_the_graph_pools_as_the_numpy_head_does(tiny_artifact, normalize):
    m = read_manifest(tiny_artifact)
    enc = Encoder.load(tiny_artifact)
    assert enc.sentence_output == SENTENCE_OUTPUT
    want = _token_path(tiny_artifact, m).encode(TEXTS, normalize=normalize)
    got = enc.encode(TEXTS, normalize=normalize)
    np.testing.assert_allclose(got, want, atol=TOL)
    if normalize is False:  # the graph normalizes, so the Encoder pooled this one itself: the same path
        np.testing.assert_array_equal(got, want)
    one = enc.encode(TEXTS[0], normalize=normalize)  # batch 1, the path this output is for
    np.testing.assert_allclose(one, want[0], atol=TOL)


def test_a_prompt_the_head_excludes_is_pooled_in_numpy(tiny_artifact):
    """A head that pools without its prompt cannot use the graph's output (it pools every token): with a
    prompt the Encoder must take the token output, or the prompt's tokens would be averaged in."""
    m = read_manifest(tiny_artifact)
    head = replace(m.head, include_prompt=False)
    enc = Encoder.from_parts(
        tiny_artifact, load_runtime("onnxruntime", tiny_artifact / m.graph), head, graph=m.graphs[0]
    )
    want = _token_path(tiny_artifact, m, head).encode(TEXTS, prompt_name="query")
    np.testing.assert_array_equal(enc.encode(TEXTS, prompt_name="query"), want)
    with_prompt_pooled = _token_path(tiny_artifact, m).encode(TEXTS, prompt_name="query")
    assert np.abs(want - with_prompt_pooled).max() > 1e-3  # the test can tell the two apart
    # Without a prompt nothing is excluded: the graph's output serves.
    np.testing.assert_allclose(enc.encode(TEXTS), _token_path(tiny_artifact, m, head).encode(TEXTS), atol=TOL)


def test_openvino_opening_the_onnx_graph_reads_its_token_output(tiny_artifact):
    pytest.importorskip("openvino")
    m = read_manifest(tiny_artifact)
    ov = Encoder.load(tiny_artifact, runtime="openvino")
    assert ov.sentence_output is None  # OpenVINO returns the first output: the tokens
    np.testing.assert_allclose(ov.encode(TEXTS), _token_path(tiny_artifact, m).encode(TEXTS), atol=1e-5)


def test_a_graph_without_an_attention_mask_cannot_carry_the_head(tiny_artifact, tmp_path):
    m = read_manifest(tiny_artifact)
    model = onnx.load(str(tiny_artifact / m.graph))
    mask = next(i for i in model.graph.input if i.name == "attention_mask")
    model.graph.input.remove(mask)  # e.g. a graph exported with input_ids alone
    src = tmp_path / "nomask.onnx"
    onnx.save_model(model, str(src))
    with pytest.raises(ValueError, match="attention_mask"):
        add_sentence_output(src, tmp_path / "out.onnx", m.head, [])
    assert not (tmp_path / "out.onnx").exists()


def test_a_graph_that_already_has_the_output_is_refused(tiny_artifact, tmp_path):
    m = read_manifest(tiny_artifact)
    src = tmp_path / "single.onnx"
    onnx.save_model(onnx.load(str(tiny_artifact / m.graph)), str(src))
    with pytest.raises(ValueError, match=SENTENCE_OUTPUT):
        add_sentence_output(src, tmp_path / "out.onnx", m.head, [])
