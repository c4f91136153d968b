"""The reference runtime: the transformer in torch (eager), for validation and benchmarks.

Needs the `export` extra; never used by an artifact loaded for production.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeembed._imports import require
from edgeembed.runtimes import RuntimeCapabilities, RuntimeOptions

# A forward pass under inference_mode keeps no state between calls.
CAPABILITIES = RuntimeCapabilities(thread_safe=True)


class TorchRuntime:
    """Runs a loaded TokenEmbeddings module (edgeembed.torch_model), e.g. the build's reference."""

    capabilities = CAPABILITIES

    def __init__(self, model: Any, options: RuntimeOptions | None = None) -> None:
        self._torch = require("torch", "export")
        self._model = model
        self.input_names = tuple(model.input_names)
        if options is not None and options.threads:
            # torch's thread pool is process-wide; set only when the caller asks for a count.
            self._torch.set_num_threads(options.threads)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            args = [torch.from_numpy(inputs[name]) for name in self.input_names]
            return self._model(*args).float().numpy()


def load(model_dir: Path, options: RuntimeOptions) -> TorchRuntime:
    """The registry's entry: a transformer folder (not a graph file)."""
    from edgeembed.torch_model import load_transformer

    return TorchRuntime(load_transformer(model_dir), options)
