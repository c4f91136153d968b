"""OpenVINO on CPU: an IR compiled once with dynamic batch and sequence axes.

`hint` maps to PERFORMANCE_HINT: "latency" (default; one stream uses every thread, best at batch 1) or
"throughput" (several streams, one request in flight per stream). `run_many` keeps every stream busy
while returning outputs in input order, which is what the Encoder needs for a long list of batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from edgeembed._imports import require
from edgeembed.errors import ArtifactError, InputError
from edgeembed.runtimes import RuntimeOptions

ov = require("openvino", "openvino")

HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
DEVICE = "CPU"


PRECISIONS = ("f32", "bf16")  # inference precision of float ops


def compile_config(options: RuntimeOptions) -> dict[str, str]:
    """OpenVINO properties for the options. Inference precision defaults to f32: on CPUs with
    avx512_bf16 or AMX OpenVINO otherwise runs float ops in bf16 (cosine ~0.99996 vs torch on MiniLM),
    and an artifact should give what its validation measured unless the caller opts in. Integer kernels
    of an int8 IR are used either way."""
    hint = (options.hint or "latency").lower()
    if hint not in HINTS:
        raise InputError(f"unknown OpenVINO hint {options.hint!r}; choose from {', '.join(HINTS)}")
    precision = options.precision or "f32"
    if precision not in PRECISIONS:
        raise InputError(f"unknown OpenVINO precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    config = {"PERFORMANCE_HINT": HINTS[hint], "INFERENCE_PRECISION_HINT": precision}
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = str(options.threads)
    if options.streams:
        config["NUM_STREAMS"] = str(options.streams)
    return config


class OpenVinoRuntime:
    def __init__(self, graph: Path, options: RuntimeOptions) -> None:
        core = ov.Core()
        if not Path(graph).is_file():
            raise ArtifactError(f"OpenVINO IR not found: {graph}")
        try:
            model = core.read_model(str(graph))
            # Compiled once; the IR keeps batch and sequence dynamic, so no shape ever recompiles.
            self._compiled = core.compile_model(model, DEVICE, compile_config(options))
        except RuntimeError as exc:
            raise ArtifactError(f"OpenVINO cannot load {graph}: {exc}") from None
        self.input_names = tuple(i.get_any_name() for i in self._compiled.inputs)
        n = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._requests = [self._compiled.create_infer_request() for _ in range(max(1, n))]

    @property
    def parallel_requests(self) -> int:
        """How many requests run_many keeps in flight (the compiled streams)."""
        return len(self._requests)

    def _feed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: inputs[k] for k in self.input_names}

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        request = self._requests[0]
        request.infer(self._feed(inputs))
        return request.get_output_tensor(0).data.copy()

    def run_many(self, batches: Iterable[dict[str, np.ndarray]]) -> Iterator[np.ndarray]:
        """Token embeddings for each batch, in input order, with up to `parallel_requests` in flight.

        Requests are reused round-robin: the oldest is awaited (and its output yielded) before it takes
        the next batch, so order is kept and at most that many batches are held in memory.
        """
        if len(self._requests) == 1:
            for inputs in batches:
                yield self.run(inputs)
            return
        free = list(reversed(self._requests))
        pending: deque = deque()
        try:
            for inputs in batches:
                if not free:
                    request = pending.popleft()
                    request.wait()
                    yield request.get_output_tensor(0).data.copy()
                    free.append(request)
                request = free.pop()
                request.start_async(self._feed(inputs))  # inputs are copied (share_inputs=False)
                pending.append(request)
            while pending:
                request = pending.popleft()
                request.wait()
                yield request.get_output_tensor(0).data.copy()
        finally:
            for request in pending:  # a consumer that stopped early leaves no request running
                request.wait()


def load(graph: Path, options: RuntimeOptions) -> OpenVinoRuntime:
    return OpenVinoRuntime(graph, options)
