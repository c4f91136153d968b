"""OpenVINO on the end-to-end IR: strings in, sentence embeddings out (openvino-tokenizers inside).

The IR is the one `edgeembed.steps.e2e_openvino` builds (`openvino/openvino_model_e2e.xml` beside the
token IR); reading it needs the openvino-tokenizers extension, as an app using the file does.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeembed._imports import require
from edgeembed.errors import ArtifactError
from edgeembed.runtimes import RuntimeCapabilities, RuntimeOptions
from edgeembed.runtimes.onnxruntime_e2e import TEXT_INPUT, clean_text, e2e_path

# rt_info key the builder writes: whether the IR already L2-normalizes its output.
NORMALIZE_KEY = "edgeembed_normalize"
# Strings in, sentence embeddings out; a request per concurrent caller (openvino.Requests). Whether the
# output is normalized is the IR's own rt_info (set per instance).
CAPABILITIES = RuntimeCapabilities(takes_text=True, thread_safe=True)


class OpenVinoE2E:
    """`takes_text`: the Encoder hands it {"text": 1-D object array} and gets (n, dim) embeddings back."""

    input_names = (TEXT_INPUT,)

    def __init__(self, graph: Path, options: RuntimeOptions) -> None:
        ov = require("openvino", "openvino")
        require("openvino_tokenizers", "mobile")  # registers the tokenizer ops with OpenVINO
        from edgeembed.runtimes.openvino import Requests, compile_apart, compile_config, load_error

        path = e2e_path(graph)
        if not path.is_file():
            raise ArtifactError(
                f"no end-to-end IR at {path}: export the artifact with --format openvino --end-to-end"
            )
        try:
            model = ov.Core().read_model(str(path))
            normalized = model.has_rt_info(NORMALIZE_KEY) and str(model.get_rt_info(NORMALIZE_KEY)) == "true"
            self.capabilities = replace(CAPABILITIES, normalized=normalized)
            self._compiled = compile_apart(ov.Core(), model, compile_config(options))
        except RuntimeError as exc:
            raise load_error(path, exc) from None
        self._requests = Requests(self._compiled)
        self.path = path

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        texts = [clean_text(str(t)) for t in inputs[TEXT_INPUT]]
        request = self._requests.take()
        try:
            request.infer([np.array(texts, dtype=str)])
            return request.get_output_tensor(0).data.copy()
        finally:
            self._requests.give(request)


def load(graph: Path, options: RuntimeOptions) -> OpenVinoE2E:
    return OpenVinoE2E(graph, options)
