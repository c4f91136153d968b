"""Back-end for static-embedding models (a StaticEmbedding folder): the artifact files, no validation.

`write_static(spec, root)` writes what the numpy `static` runtime and sentence-transformers both load:
the table at the root (`model.safetensors`, `embedding.weight`, float16 by default: half the size,
cosine > 0.9999 to float32), `tokenizer.json`, `modules.json` (StaticEmbedding at "", Normalize),
configs. `write_static_onnx(...)` writes the same model as a small ONNX graph (Gather + masked mean + head)
that refers to that table rather than copying it, for runtimes that only take ONNX (mobile).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeembed.errors import SourceError
from edgeembed.head import HeadModel
from edgeembed.head import onnx as onnx_head
from edgeembed.runtimes.static import TABLE_KEY, load_table
from edgeembed.source import ModelSpec
from edgeembed.st_layout import module_entry

TABLE_FILE = "model.safetensors"
RUNTIME = "static"  # the table's runtime (numpy)
ONNX_RUNTIME = "onnxruntime"  # the runtime the static ONNX graph is validated with
INPUTS = ("input_ids", "attention_mask")
DTYPES = {"float32": np.float32, "float16": np.float16}
# opset 18: ReduceSum/ReduceL2 take their axes as an input; IR 8 loads in onnxruntime >= 1.14.
_OPSET = 18
ONNX_FILE = "model.onnx"  # beside model.safetensors: external data may not point outside its folder
ONNX_OUTPUTS = ("token_embeddings", "sentence_embedding")


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
    modules = [module_entry(0, "", "StaticEmbedding")]
    for i, d in enumerate(spec.head.dense, start=1):
        shutil.copytree(spec.path / d.path, root / f"{i}_Dense")
        modules.append(module_entry(i, f"{i}_Dense", "Dense"))
    if spec.head.normalize:
        modules.append(module_entry(len(modules), f"{len(modules)}_Normalize", "Normalize"))
    (root / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    st_cfg = {"similarity_fn_name": spec.head.similarity_fn}
    (root / "config_sentence_transformers.json").write_text(
        json.dumps(st_cfg, indent=2) + "\n", encoding="utf-8"
    )
    precision = "fp16" if dtype == "float16" else "fp32"
    return StaticGraph(root / TABLE_FILE, INPUTS, "token_embeddings", precision)


def _table_location(table_file: Path) -> tuple[int, int, np.dtype, tuple[int, ...]]:
    """Byte offset, length, dtype and shape of `embedding.weight` inside a safetensors file (8-byte
    header length, JSON header, then raw little-endian data): where an ONNX external-data reference
    can point."""
    with table_file.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    entry = header[TABLE_KEY]
    dtype = {"F16": np.float16, "F32": np.float32}[entry["dtype"]]
    begin, end = entry["data_offsets"]
    return 8 + header_len + begin, end - begin, np.dtype(dtype), tuple(entry["shape"])


def write_static_onnx(
    spec: ModelSpec, table_file: Path, path: Path, dense: list[tuple[np.ndarray, np.ndarray | None]]
) -> StaticGraph:
    """The static model as one small ONNX graph, for runtimes that take only ONNX (mobile):
    `input_ids`, `attention_mask` (int64, batch x seq; tokenized without special tokens) ->
    `token_embeddings` (Gather, float32; what the Encoder's onnxruntime runtime pools) and
    `sentence_embedding` (masked mean -> Dense modules -> L2 normalize when the head has Normalize;
    what an app uses). The table is not copied: the graph refers to `table_file` (the artifact's
    model.safetensors, in the same folder: ONNX refuses external data outside it) through ONNX
    external data at the table's byte offset, in its stored dtype (float16 in an artifact), so the
    artifact does not carry it twice."""
    import onnx
    from onnx import TensorProto, helper

    offset, length, dtype, shape = _table_location(table_file)
    table = TensorProto(name="table", data_type=helper.np_dtype_to_tensor_dtype(dtype), dims=shape)
    table.data_location = TensorProto.EXTERNAL
    location = Path(os.path.relpath(table_file, path.parent)).as_posix()
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = table.external_data.add()
        entry.key, entry.value = key, value
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["gathered"], axis=0),
        helper.make_node("Cast", ["gathered"], ["token_embeddings"], to=TensorProto.FLOAT),
    ]
    # The head (mean pooling, the Dense modules, Normalize) from the one ONNX head emitter.
    b = onnx_head.OnnxBuilder(_OPSET)
    x = onnx_head.emit(b, HeadModel.from_head(spec.head, dense), "token_embeddings", "attention_mask")
    nodes += b.nodes
    inits = [table, *b.initializers]
    nodes.append(helper.make_node("Identity", [x], ["sentence_embedding"]))
    graph = helper.make_graph(
        nodes,
        "static_embedding",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in INPUTS],
        [
            helper.make_tensor_value_info(
                "token_embeddings", TensorProto.FLOAT, ["batch", "sequence", shape[1]]
            ),
            helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", spec.head.dim]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="edgeembed", ir_version=8
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path))  # by path: the external reference is resolved and checked too
    precision = "fp16" if dtype == np.float16 else "fp32"
    return StaticGraph(path, INPUTS, "sentence_embedding", precision)
