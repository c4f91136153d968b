"""The reference runtime: the source transformer in torch (eager), for validation and benchmarks.

Needs the `export` extra; never used by an artifact loaded for production.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeembed._imports import require
from edgeembed.runtimes import RuntimeOptions


class TorchRuntime:
    def __init__(self, model_dir: Path, options: RuntimeOptions) -> None:
        from edgeembed.exporters.torch_model import load_transformer

        self._torch = require("torch", "export")
        self._model = load_transformer(model_dir)
        self.input_names = self._model.input_names
        if options.threads:
            # torch's thread pool is process-wide; set only when the caller asks for a count.
            self._torch.set_num_threads(options.threads)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            args = [torch.from_numpy(inputs[name]) for name in self.input_names]
            return self._model(*args).float().numpy()


def load(model_dir: Path, options: RuntimeOptions) -> TorchRuntime:
    return TorchRuntime(model_dir, options)
