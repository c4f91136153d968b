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
    # OpenVINO CPU_DENORMALS_OPTIMIZATION (None = on): flushing denormals to zero on the plugin's threads
    # spares it a cleaned copy of the weights; the OpenVINO export records False for a model whose outputs
    # it changes, and that artifact then runs without it.
    flush_denormals: bool | None = None


@dataclass(frozen=True)
class RuntimeCapabilities:
    """What a runtime can do, declared once by the runtime so the Encoder and the pool read it here
    instead of probing for optional attributes. Defaults: a plain token runtime (token ids in, token
    embeddings out, `run` only)."""

    # Strings in: `run({"text": 1-D object array})` returns sentence embeddings (n, dim) with pooling and
    # Dense applied inside the graph, so the Encoder skips its tokenizer and head.
    takes_text: bool = False
    # (takes_text) the output is already L2-normalized.
    normalized: bool = False
    # Pad each batch's length up to a multiple of this (never past max_seq_length): a runtime that keeps
    # memory per input shape (OpenVINO's CPU plugin) then sees few shapes. Masked padding: same numbers.
    pad_to_multiple_of: int | None = None
    # Batches of `batch_size` rows or a power of two below it (never padding rows), for the same reason:
    # the token budget and a stream's tail otherwise give a new row count almost every batch.
    bucket_rows: bool = False
    # `run_many(batches) -> Iterator[np.ndarray]`: one output per batch, in order; the Encoder hands it the
    # whole stream so it can keep several batches in flight (OpenVINO's throughput streams).
    streams: bool = False
    # `use_batch_size(batch_size)` is called before a run, so the runtime can set itself up for it
    # (OpenVINO: latency hint at small batches, throughput at larger ones, unless the user set one).
    batch_size_hint: bool = False
    # `mean_of_ids(ids) -> (n, hidden)`: each text's mean token vector from unpadded ids (a static table);
    # the Encoder uses it for a mean-pooled head without a prompt to exclude.
    mean_of_ids: bool = False
    # `run` (and the methods above) may be called from many threads at once on one instance, e.g. one
    # Encoder shared by a server's handler threads.
    thread_safe: bool = False
    # The runtime keeps no thread pool of its own (a numpy table), so the head's Dense matmuls may go to
    # BLAS (numpy's `@`, 3-6x faster than the einsum loop) without its threads spinning beside the
    # runtime's.
    blas_head: bool = False
    # `run(inputs, output=name)` returns the graph's output of that name instead of its first: an artifact
    # graph that also carries the head as `sentence_embedding` (manifest details "outputs") then gives the
    # Encoder sentence embeddings, pooled inside the graph.
    named_outputs: bool = False
    # Other runtimes whose graphs this one can also run (OpenVINO reads ONNX files): the Encoder may hand
    # it their graph when the artifact has none of its own.
    opens: tuple[str, ...] = ()


class Runtime(Protocol):
    """Runs an artifact graph: model inputs in, token embeddings (batch, seq, hidden) out (or, for a
    `takes_text` runtime, texts in, sentence embeddings out). What else it does, it declares in
    `capabilities`."""

    input_names: tuple[str, ...]
    capabilities: RuntimeCapabilities

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray: ...


def capabilities_of(runtime: object) -> RuntimeCapabilities:
    """A runtime's declared capabilities; one that declares none (e.g. a caller's own minimal runtime with
    `input_names` and `run`) is a plain token runtime."""
    caps = getattr(runtime, "capabilities", None)
    return caps if isinstance(caps, RuntimeCapabilities) else RuntimeCapabilities()


# name -> "module:function" taking (graph path, RuntimeOptions) and returning a Runtime; the module also
# declares CAPABILITIES (RuntimeCapabilities).
REGISTRY: dict[str, str] = {
    "onnxruntime": "edgeembed.runtimes.onnxruntime:load",
    "onnxruntime-e2e": "edgeembed.runtimes.onnxruntime_e2e:load",
    "openvino": "edgeembed.runtimes.openvino:load",
    "openvino-e2e": "edgeembed.runtimes.openvino_e2e:load",
    "torch": "edgeembed.runtimes.torch:load",
    "static": "edgeembed.runtimes.static:load",
}


def declared_capabilities(name: str) -> RuntimeCapabilities:
    """A registered runtime's capabilities without loading a graph (its module's CAPABILITIES), so the
    Encoder can pick the artifact graph it runs before opening anything. A runtime whose dependency is
    missing raises MissingExtraError naming the extra."""
    module, _ = _target(name).split(":")
    return importlib.import_module(module).CAPABILITIES


def _target(name: str) -> str:
    try:
        return REGISTRY[name]
    except KeyError:
        raise EdgeEmbedError(f"unknown runtime {name!r}; known: {sorted(REGISTRY)}") from None


def load_runtime(name: str, graph: Path, options: RuntimeOptions | None = None) -> Runtime:
    """Instantiate a registered runtime for a graph file (or, for torch, a model folder). A runtime whose
    dependency is missing raises MissingExtraError naming the extra."""
    module, func = _target(name).split(":")
    loader: Callable[[Path, RuntimeOptions], Runtime] = getattr(importlib.import_module(module), func)
    return loader(graph, options or RuntimeOptions())
