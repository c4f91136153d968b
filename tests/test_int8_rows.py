"""Per-row (batch-invariant) dynamic int8 on the tiny model: a text's embedding does not depend on its
batch neighbours, on the fused and the unfused graph; the fused Attention split for it is exact; the gate
holds a graph that claims invariance to GatePolicy.invariance_min_cosine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from edgeembed.artifact import read_manifest
from edgeembed.build import export
from edgeembed.cli import main
from edgeembed.encoder import Encoder
from edgeembed.errors import DriftError, InputError
from edgeembed.gate import GatePolicy, batch_invariance
from edgeembed.isa import detect_isa
from edgeembed.steps.onnx_int8 import (
    DEFAULT_ACTIVATIONS,
    QuantizeConfig,
    per_row_matmuls,
    quantize_config,
    row_weight_bits,
    split_attention,
)

ROW = QuantizeConfig(activations="row")
BLOCKS = QuantizeConfig(activations="row", block_size=64)
SHORT = ["job great", "a", "hello world"]
# Long neighbours: their activations set a per-tensor scale far from a short text's own.
LONG = [
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates again. " * 3,
    "UPPER CASE TEXT SHOUTING ABOUT EMBEDDINGS 3.14159 someone@example.com " * 4,
]


def ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def alone_vs_batched(enc: Encoder) -> np.ndarray:
    """Cosine of each short text embedded alone vs inside one batch with the long neighbours."""
    alone = enc.encode(SHORT, batch_size=1)
    batched = enc.encode([*LONG, *SHORT], batch_size=len(LONG) + len(SHORT))[len(LONG) :]
    return (alone * batched).sum(axis=1)


@pytest.fixture(scope="module")
def row_fused(tiny_model, tmp_path_factory) -> Path:
    return export(tiny_model, tmp_path_factory.mktemp("rows") / "fused", quantize=ROW).path


@pytest.fixture(scope="module")
def row_plain(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rows") / "plain"
    return export(tiny_model, out, optimize="none", quantize=ROW).path


@pytest.fixture(scope="module")
def blocks_fused(tiny_model, tmp_path_factory) -> Path:
    return export(tiny_model, tmp_path_factory.mktemp("rows") / "blocks", quantize=BLOCKS).path


def test_fused_row_int8_is_batch_invariant(row_fused, tiny_artifact):
    m = read_manifest(row_fused)
    assert m.graph == "onnx/model_qint8_row_avx512_vnni.onnx" and m.precision == "int8"
    assert m.optimization["applied"] is True
    graph_ops = ops(row_fused / m.graph)
    # the fused attention's projection split out and quantized per row; no per-tensor activation scale
    assert {"MatMulIntegerToFloat", "MultiHeadAttention"} <= graph_ops
    assert not {"Attention", "QAttention", "DynamicQuantizeLinear", "MatMulNBits"} & graph_ops
    assert m.quantization["activations"] == "row" and m.quantization["batch_invariant"] is True
    inv = m.validation["batch_invariance"]
    assert inv["min_cosine_required"] == GatePolicy().invariance_min_cosine
    assert inv["min_cosine"] >= 0.9999
    enc = Encoder.load(row_fused)
    assert alone_vs_batched(enc).min() >= 0.9999
    # parity with fp32: int8 moves embeddings a little, never far (the int8 gate's own floor is 0.90)
    fp32 = Encoder.load(tiny_artifact).encode([*SHORT, *LONG])
    assert (fp32 * enc.encode([*SHORT, *LONG])).sum(axis=1).min() >= 0.95


def test_unfused_row_int8_is_batch_invariant(row_plain):
    m = read_manifest(row_plain)
    assert not (m.optimization or {}).get("applied")
    graph_ops = ops(row_plain / m.graph)
    assert "MatMulIntegerToFloat" in graph_ops and "DynamicQuantizeLinear" not in graph_ops
    assert m.validation["batch_invariance"]["min_cosine"] >= 0.9999
    assert alone_vs_batched(Encoder.load(row_plain)).min() >= 0.9999


def test_block_row_int8_is_batch_invariant(blocks_fused, tiny_artifact):
    """Scales per block of K (MatMulNBits) instead of per row: the other kernel, invariant too."""
    m = read_manifest(blocks_fused)
    assert m.quantization["block_size"] == 64 and "weight_bits" not in m.quantization
    graph_ops = ops(blocks_fused / m.graph)
    assert "MatMulNBits" in graph_ops and not {"MatMulIntegerToFloat", "DynamicQuantizeLinear"} & graph_ops
    assert m.validation["batch_invariance"]["min_cosine"] >= 0.9999
    enc = Encoder.load(blocks_fused)
    assert alone_vs_batched(enc).min() >= 0.9999
    fp32 = Encoder.load(tiny_artifact).encode([*SHORT, *LONG])
    assert (fp32 * enc.encode([*SHORT, *LONG])).sum(axis=1).min() >= 0.95


@pytest.mark.parametrize("opset", [14, 18])
def test_per_row_matmul_rewrite(opset):
    """One MatMul rewritten: close to the float product, each row independent of the others (an outlier
    row changes nothing in its neighbours), an all-zero row gives zeros, 7-bit weights where u8 x s8
    pairs would saturate int16."""
    rng = np.random.default_rng(0)
    k, n = 48, 20
    weight = rng.standard_normal((k, n)).astype(np.float32)
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", "s", k])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["b", "s", n])],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    # The bits the host's ISA gets: 8-bit weights saturate u8 x s8 pairs without VNNI (row_weight_bits).
    assert per_row_matmuls(model, row_weight_bits(detect_isa())) == 1
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((2, 3, k)).astype(np.float32)
    x[0, 1] = 0.0
    y = sess.run(None, {"x": x})[0]
    ref = x @ weight
    assert np.abs(y - ref).max() < 0.05 * np.abs(ref).max()
    assert not y[0, 1].any()
    loud = x.copy()
    loud[1, 2] *= 1000.0  # per tensor, this row would coarsen every other row's scale
    y_loud = sess.run(None, {"x": loud})[0]
    assert np.array_equal(np.delete(y_loud.reshape(6, n), 5, 0), np.delete(y.reshape(6, n), 5, 0))
    assert row_weight_bits("avx512_vnni") == row_weight_bits("arm64") == 8
    assert row_weight_bits("avx2") == row_weight_bits("avx512") == 7


def test_split_attention_is_exact(tiny_model, tmp_path):
    fused = export(tiny_model, tmp_path / "o2", optimize="all").path
    src = fused / read_manifest(fused).graph
    model = onnx.load(str(src))
    assert split_attention(model) == 2  # one per layer of the tiny model
    split = tmp_path / "split.onnx"
    onnx.save(model, str(split))
    assert "Attention" not in ops(split) and "MultiHeadAttention" in ops(split)
    enc = Encoder.load(fused)
    # a padded batch: the mask must reach MultiHeadAttention as it reached Attention
    feeds = enc.tokenizer([*SHORT, *LONG]).as_inputs(tuple(i.name for i in model.graph.input))
    before = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    after = ort.InferenceSession(str(split), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    mask = feeds["attention_mask"].astype(bool)
    assert np.abs(before - after)[mask].max() < 1e-4


class BatchDependent:
    """An encoder whose output moves with its batch, as per-tensor activation scales make it."""

    def encode(self, texts, batch_size=32, normalize=True):
        base = np.tile(np.eye(4, dtype=np.float32)[0], (len(texts), 1))
        base[:, 1] = 0.02 * (batch_size > 1)
        return base / np.linalg.norm(base, axis=1, keepdims=True)


def test_gate_fails_a_graph_that_claims_invariance_and_lacks_it():
    policy = GatePolicy(invariance_texts=40, invariance_batch=8)
    record = batch_invariance(BatchDependent(), policy, sts=None)  # measured only: passes
    assert record["min_cosine"] < policy.invariance_min_cosine and "min_cosine_required" not in record
    with pytest.raises(DriftError, match=r"not batch invariant: .* cosine 0\.99\d+ < 0\.9999 .*nothing was"):
        batch_invariance(BatchDependent(), policy, sts=None, required=True)


def test_row_config():
    assert ROW.batch_invariant and QuantizeConfig(mode="static").batch_invariant
    assert not QuantizeConfig().batch_invariant
    d = ROW.to_dict()
    assert d["block_size"] is None and d["weight_bits"] == 8 and "per_channel" not in d
    assert d["batch_invariant"] is True and BLOCKS.to_dict()["block_size"] == 64
    assert "block_size" not in QuantizeConfig().to_dict()
    with pytest.raises(InputError, match="activation scales 'row' apply to dynamic"):
        QuantizeConfig(mode="static", activations="row")
    with pytest.raises(InputError, match="activation scales 'auto' apply to dynamic"):
        QuantizeConfig(mode="static", activations="auto")
    with pytest.raises(InputError, match=r"block_size must be None \(per row\) or a power of two"):
        QuantizeConfig(activations="row", block_size=100)
    with pytest.raises(InputError, match="unknown activation scales"):
        QuantizeConfig(activations="channel")


def test_activations_choice():
    assert quantize_config("dynamic").activations == DEFAULT_ACTIVATIONS == "auto"
    tensor, row = quantize_config("dynamic").alternatives()  # fastest first
    assert (tensor.activations, row.activations) == ("tensor", "row") and tensor.isa == row.isa
    assert ROW.alternatives() == (ROW,) and QuantizeConfig().alternatives() == (QuantizeConfig(),)
    assert not quantize_config("dynamic").batch_invariant  # unresolved: claims nothing
    assert quantize_config("dynamic", activations="row").activations == "row"
    assert quantize_config("dynamic_row_avx2", isa="arm64").activations == "row"
    assert quantize_config("dynamic_row_avx512_vnni", activations="tensor").activations == "tensor"
    with pytest.raises(InputError, match="applies to --quantize dynamic"):
        quantize_config("static", activations="row")
    res = CliRunner().invoke(main, ["export", "--out", "x", "--quantize", "static", "--activations", "row"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().startswith("error: --activations row applies to --quantize dynamic")


def test_auto_falls_back_to_rows_below_the_preferred_floor(tiny_model, tmp_path):
    """--quantize dynamic (auto): per-tensor scales are kept when they reach the preferred mean cosine,
    else the build tries per-row scales and records why per-tensor was refused."""
    kept = export(
        tiny_model, tmp_path / "kept", quantize="dynamic", policy=GatePolicy(int8_preferred_mean_cosine=0.0)
    )
    q = read_manifest(kept.path).quantization
    assert q["activations"] == "tensor" and "rejected" not in q
    # A bar no per-tensor graph reaches: the build moves on to per-row scales.
    moved = export(
        tiny_model, tmp_path / "moved", quantize="dynamic", policy=GatePolicy(int8_preferred_mean_cosine=1.01)
    )
    m = read_manifest(moved.path)
    assert (
        m.quantization["activations"] == "row"
        and m.graphs[0].file == quantize_config("dynamic").alternatives()[1].file_name
    )
    (rej,) = m.quantization["rejected"]
    assert rej["config"]["activations"] == "tensor" and "< preferred 1.01" in rej["reason"]
    assert rej["tried"] == "activations=tensor"
    assert m.graphs[0].validation["batch_invariance"]["min_cosine"] >= 0.9999
    assert not any(p.name.startswith("model_qint8_avx") for p in (moved.path / "onnx").iterdir())
    # An explicit choice is never replaced.
    explicit = export(
        tiny_model,
        tmp_path / "explicit",
        quantize=quantize_config("dynamic", activations="tensor"),
        policy=GatePolicy(int8_preferred_mean_cosine=1.01),
    )
    assert read_manifest(explicit.path).quantization["activations"] == "tensor"


def test_short_of_preferred():
    policy = GatePolicy()
    assert policy.short_of_preferred({"kind": "int8", "mean_cosine": 0.99}) is None
    assert "0.97300 < preferred 0.985" in policy.short_of_preferred({"kind": "int8", "mean_cosine": 0.973})
    assert policy.short_of_preferred({"kind": "float", "mean_cosine": 0.5}) is None  # float: floors only
