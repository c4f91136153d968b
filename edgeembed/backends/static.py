"""Back-end for static-embedding models (a StaticEmbedding folder): the artifact files, no validation.

`write_static(spec, root)` writes what the numpy `static` runtime and sentence-transformers both load:
the table at the root (`model.safetensors`, `embedding.weight`, float16 by default: half the size,
cosine > 0.9999 to float32), `tokenizer.json`, `modules.json` (StaticEmbedding at "", Normalize),
configs. `write_static_onnx(spec, path)` writes the same model as an ONNX graph (Gather + masked mean),
for runtimes that only take ONNX (mobile).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeembed.errors import SourceError
from edgeembed.runtimes.static import TABLE_KEY, load_table
from edgeembed.source import ModelSpec

TABLE_FILE = "model.safetensors"
INPUTS = ("input_ids", "attention_mask")
DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class StaticGraph:
    """What the orchestrator needs to write the manifest: the table (or graph) and its inputs/output."""

    path: Path
    input_names: tuple[str, ...]
    output_name: str
    precision: str


def _check(spec: ModelSpec) -> Path:
    if spec.kind != "static":
        raise SourceError(f"{spec.path} is not a static-embedding model (no StaticEmbedding module)")
    return spec.path / spec.transformer_path


def write_static(spec: ModelSpec, root: Path, dtype: str = "float16") -> StaticGraph:
    """Table, tokenizer and sentence-transformers configs into `root` (an artifact's temporary folder)."""
    from safetensors.numpy import save_file

    folder = _check(spec)
    if dtype not in DTYPES:
        raise SourceError(f"unknown static table dtype {dtype!r}; choose from {sorted(DTYPES)}")
    table = load_table(folder / TABLE_FILE).astype(DTYPES[dtype])
    root.mkdir(parents=True, exist_ok=True)
    save_file({TABLE_KEY: np.ascontiguousarray(table)}, str(root / TABLE_FILE))
    (root / TABLE_FILE).chmod(0o644)  # safetensors writes 0600; an artifact is meant to be shared
    shutil.copy2(folder / "tokenizer.json", root / "tokenizer.json")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.StaticEmbedding"}]
    for i, d in enumerate(spec.head.dense, start=1):
        shutil.copytree(spec.path / d.path, root / f"{i}_Dense")
        modules.append(
            {"idx": i, "name": str(i), "path": f"{i}_Dense", "type": "sentence_transformers.models.Dense"}
        )
    if spec.head.normalize:
        n = len(modules)
        modules.append(
            {
                "idx": n,
                "name": str(n),
                "path": f"{n}_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    (root / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    st_cfg = {"similarity_fn_name": spec.head.similarity_fn}
    (root / "config_sentence_transformers.json").write_text(
        json.dumps(st_cfg, indent=2) + "\n", encoding="utf-8"
    )
    precision = "fp16" if dtype == "float16" else "fp32"
    return StaticGraph(root / TABLE_FILE, INPUTS, "token_embeddings", precision)


def write_static_onnx(spec: ModelSpec, path: Path, dtype: str = "float16") -> StaticGraph:
    """ONNX graph: Gather(table, input_ids) -> masked mean over the sequence -> `sentence_embedding`
    (batch, dim), not normalized (the head's Normalize stays outside, as for transformer graphs)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = _check(spec)
    table = load_table(folder / TABLE_FILE).astype(DTYPES[dtype])
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["gathered"], axis=0),
        helper.make_node("Cast", ["gathered"], ["tokens"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axis_last"], ["mask3"]),
        helper.make_node("Mul", ["tokens", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis_seq"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis_seq"], ["count"], keepdims=0),
        helper.make_node("Max", ["count", "eps"], ["count_safe"]),
        helper.make_node("Div", ["summed", "count_safe"], ["sentence_embedding"]),
    ]
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis_last"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_seq"),
        numpy_helper.from_array(np.array(1e-9, dtype=np.float32), "eps"),
    ]
    graph = helper.make_graph(
        nodes,
        "static_embedding",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in INPUTS],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", table.shape[1]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="edgeembed")
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return StaticGraph(path, INPUTS, "sentence_embedding", "fp16" if dtype == "float16" else "fp32")
