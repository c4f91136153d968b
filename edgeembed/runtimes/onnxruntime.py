"""ONNX Runtime on CPU: the default runtime, the only one the core install needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgeembed.errors import ArtifactError
from edgeembed.runtimes import RuntimeCapabilities, RuntimeOptions

# InferenceSession.run may be called concurrently (ONNX Runtime documents it so); it computes only what
# the asked output needs, so a graph's second output costs nothing when the first is asked for.
CAPABILITIES = RuntimeCapabilities(thread_safe=True, named_outputs=True)

# ORT would fuse residual Add + LayerNormalization into SkipLayerNormalization at load, whose CPU kernel
# (ORT 1.32) is 4-5x slower than the two ops it replaces (steps/fusion.py splits it for the same reason).
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def session(
    graph: Path, options: RuntimeOptions, custom_ops_library: str | None = None
) -> ort.InferenceSession:
    """A CPU session as every edgeembed ONNX runtime opens one: all graph optimizations, sequential
    execution, `options.threads` intra-op threads, no memory patterns; a load failure is one ArtifactError
    line."""
    so = ort.SessionOptions()
    if custom_ops_library is not None:
        so.register_custom_ops_library(custom_ops_library)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    # Memory patterns are planned per input shape, and every batch has its own length: they only add
    # to the peak, and buy no speed here. The arena itself stays: freeing and re-allocating each batch's
    # buffers costs throughput (numbers: bench/NOTES.md). The end-to-end graph needs memory patterns off in
    # any case: with them, the extensions' tokenizer Loop corrupts ORT's heap after a long text (reproducer:
    # bench/lab/ort_e2e_crash.py).
    so.enable_mem_pattern = False
    if options.threads:
        so.intra_op_num_threads = options.threads
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(
            str(graph), so, providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED_OPTIMIZERS
        )
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise ArtifactError(f"onnxruntime cannot load {graph}: {exc}") from None


class OnnxRuntime:
    capabilities = CAPABILITIES

    def __init__(self, graph: Path, options: RuntimeOptions) -> None:
        self._session = session(graph, options)
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.output_names = tuple(o.name for o in self._session.get_outputs())

    def run(self, inputs: dict[str, np.ndarray], output: str | None = None) -> np.ndarray:
        """The graph's first output (token embeddings), or the one named `output`."""
        name = output or self.output_names[0]
        return self._session.run([name], {k: inputs[k] for k in self.input_names})[0]


def load(graph: Path, options: RuntimeOptions) -> OnnxRuntime:
    return OnnxRuntime(graph, options)
