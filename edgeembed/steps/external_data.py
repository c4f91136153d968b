"""An .onnx graph's weights moved to a side file, `<graph>_data` (ONNX external data), aligned for mmap.

Why: from a single-file graph ONNX Runtime parses the whole protobuf and copies every initializer out of it,
so while a session is created the weights are in memory twice (peak memory and cold start figures:
bench/PROFILE.md). From an external-data file whose large tensors start on
allocation-granularity boundaries (4 KB pages on Linux, 64 KB on Windows: onnxruntime's
`ModelSavingOptions`) it maps them instead. onnx's `save_model(save_as_external_data=True)` writes tensors
back to back, so the offsets are set here. The `_data` suffix is torch.onnx's and Optimum's
(`model.onnx_data`), so sentence-transformers and Optimum load the graph as they load a Hub export.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeembed._imports import require

ALIGN = 1 << 16  # Windows' allocation granularity, a multiple of every page size
ALIGN_MIN_BYTES = 1 << 20  # tensors from this size start aligned (onnxruntime's align_threshold)
EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay in the graph (onnx's own size_threshold)


def data_path(graph: Path) -> Path:
    """Where `graph`'s external data lives: `<graph name>_data` beside it."""
    graph = Path(graph)
    return graph.with_name(graph.name + "_data")


def externalize(source: Path, graph: Path) -> Path:
    """Write `source` (a single-file .onnx) as `graph` plus `data_path(graph)` holding every top-level
    initializer of at least EXTERNAL_MIN_BYTES, large ones at ALIGN-aligned offsets. Returns the data path.
    The numbers are the same bytes: the caller checks the embeddings anyway."""
    onnx = require("onnx", "export")
    from onnx.external_data_helper import set_external_data

    graph, data = Path(graph), data_path(graph)
    model = onnx.load(str(source), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ValueError(f"{source} already keeps data outside the graph")
    with open(data, "wb") as f:
        for tensor in model.graph.initializer:
            size = len(tensor.raw_data)
            if size < EXTERNAL_MIN_BYTES:
                continue
            offset = f.tell()
            if size >= ALIGN_MIN_BYTES and offset % ALIGN:
                offset += ALIGN - offset % ALIGN
                f.seek(offset)
            f.write(tensor.raw_data)
            set_external_data(tensor, data.name, offset, size)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            tensor.ClearField("raw_data")
        f.flush()
        os.fsync(f.fileno())
    onnx.save_model(model, str(graph))
    return data
