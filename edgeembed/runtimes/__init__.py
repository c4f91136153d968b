"""Runtimes: one small interface, a plain dict registry, optional dependencies imported only on use."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edgeembed.errors import EdgeEmbedError


@dataclass(frozen=True)
class RuntimeOptions:
    """Settings a runtime may honour; None means the runtime's own default."""

    threads: int | None = None
    # OpenVINO PERFORMANCE_HINT: "latency" or "throughput"; None follows the batch size (hint_for)
    hint: str | None = None
    streams: int | None = None
    # OpenVINO INFERENCE_PRECISION_HINT for float ops: "f32" (default, exact) or "bf16" (faster on CPUs
    # with avx512_bf16/AMX; OpenVINO's own default there, and so sentence-transformers').
    precision: str | None = None
    # OpenVINO: a folder where the CPU plugin may store compiled models (its CACHE_DIR) and load them on the
    # next start instead of compiling again; opt-in, never inside the (read-only, checksummed) artifact.
    cache_dir: str | None = None


class Runtime(Protocol):
    """Runs the exported transformer: model inputs in, token embeddings (batch, seq, hidden) out."""

    input_names: tuple[str, ...]
    # Whether `run` (and `run_many`, `use_batch_size`) may be called from many threads at once on one
    # instance, e.g. one Encoder shared by a server's handler threads. Every registered runtime is.
    thread_safe: bool

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray: ...


# Optional, duck-typed: a runtime may also define
#     run_many(batches: Iterable[dict[str, np.ndarray]]) -> Iterator[np.ndarray]
# yielding one output per input batch, in input order. The Encoder hands it the whole stream of batches
# so the runtime can keep several in flight (OpenVINO's throughput streams); `run` stays the one method
# every runtime needs.
#     mean_of_ids(ids: Sequence[Sequence[int]]) -> np.ndarray
# (a static table) gives each text's mean token vector (n, hidden) from unpadded token ids; the Encoder
# uses it for a mean-pooled head without a prompt to exclude, and skips padding and masks.
#     pad_to_multiple_of: int | None
# asks the Encoder to pad each batch's length up to a multiple of it (never past max_seq_length): a runtime
# that keeps memory per input shape (OpenVINO's CPU plugin) then sees few shapes.
#     bucket_rows: bool
# asks the Encoder for batches of `batch_size` rows or a power of two below it (never padding rows), for the
# same reason: the budget and a stream's tail otherwise give a new row count almost every batch.
#     use_batch_size(batch_size: int) -> None
# is called by Encoder.encode before it runs, so a runtime can set itself up for that batch size
# (OpenVINO: latency hint below 8, throughput from 8, unless the user set a hint).
#     takes_text: bool = True, normalized: bool
# marks a strings-in runtime (the end-to-end graph): `run({"text": 1-D object array})` returns sentence
# embeddings (n, dim) with pooling and Dense applied (`normalized`: L2 normalization too), so the Encoder
# skips its tokenizer and head.


# name -> "module:function" taking (graph path, RuntimeOptions) and returning a Runtime.
REGISTRY: dict[str, str] = {
    "onnxruntime": "edgeembed.runtimes.onnxruntime:load",
    "onnxruntime-e2e": "edgeembed.runtimes.onnxruntime_e2e:load",
    "openvino": "edgeembed.runtimes.openvino:load",
    "openvino-e2e": "edgeembed.runtimes.openvino_e2e:load",
    "torch": "edgeembed.runtimes.torch:load",
    "static": "edgeembed.runtimes.static:load",
}


def load_runtime(name: str, graph: Path, options: RuntimeOptions | None = None) -> Runtime:
    """Instantiate a registered runtime for a graph file (or, for torch, a model folder). A runtime whose
    dependency is missing raises MissingExtraError naming the extra."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise EdgeEmbedError(f"unknown runtime {name!r}; known: {sorted(REGISTRY)}") from None
    module, func = target.split(":")
    loader: Callable[[Path, RuntimeOptions], Runtime] = getattr(importlib.import_module(module), func)
    return loader(graph, options or RuntimeOptions())
