"""ONNX Runtime on the end-to-end graph: strings in, sentence embeddings out (no Python tokenizer).

The graph is the one `edgeembed.steps.e2e_onnx` builds (`onnx/model_e2e.onnx` beside `onnx/model.onnx`);
it needs onnxruntime-extensions' custom-op library, as an app using the file does.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeembed._imports import require
from edgeembed.errors import ArtifactError
from edgeembed.runtimes import RuntimeCapabilities, RuntimeOptions
from edgeembed.runtimes.onnxruntime import session

E2E_SUFFIX = "_e2e"
TEXT_INPUT = "text"
# Model metadata the builder writes: whether the graph already L2-normalizes its output.
NORMALIZE_KEY = "edgeembed.normalize"
MAX_CHARS = 60_000
# Strings in, sentence embeddings out; InferenceSession.run, and the tokenizer op keeps no state between
# calls. Whether the output is normalized is the graph's own metadata (set per instance).
CAPABILITIES = RuntimeCapabilities(takes_text=True, thread_safe=True)
_DROPPED = re.compile("[\x00\ud800-\udfff\ufffd]")


def e2e_path(graph: Path) -> Path:
    """Where the end-to-end graph of a token graph lives: onnx/model.onnx -> onnx/model_e2e.onnx."""
    graph = Path(graph)
    if graph.stem.endswith(E2E_SUFFIX):
        return graph
    return graph.with_name(f"{graph.stem}{E2E_SUFFIX}{graph.suffix}")


def clean_text(text: str) -> str:
    """What an app does before calling the graph: ONNX Runtime strings end at U+0000 and cannot hold lone
    surrogates, and openvino-tokenizers maps U+FFFD to [UNK]; BERT's clean-up drops all three anyway, so for
    WordPiece removing them leaves the token ids unchanged (for Unigram and BPE a text holding them embeds
    as if they were absent; the export's gate cleans both sides alike).
    Texts are also cut to MAX_CHARS: the extensions' BertTokenizer corrupts memory past 65,535 word pieces
    of one text (measured, 0.15.2), and a piece needs at least one character; the cut changes ids only
    when a text's first max_seq_length tokens reach past 60,000 characters."""
    return _DROPPED.sub("", text[:MAX_CHARS] if len(text) > MAX_CHARS else text)


class OnnxRuntimeE2E:
    """`takes_text`: the Encoder hands it {"text": 1-D object array} and gets (n, dim) embeddings back."""

    input_names = (TEXT_INPUT,)

    def __init__(self, graph: Path, options: RuntimeOptions) -> None:
        ortx = require("onnxruntime_extensions", "mobile")
        path = e2e_path(graph)
        if not path.is_file():
            raise ArtifactError(
                f"no end-to-end graph at {path}: export the artifact with --end-to-end (the 'mobile' extra)"
            )
        # Memory patterns off: with them on, ONNX Runtime 1.32 corrupts its heap when a text of more
        # than ~300 word pieces went through the extensions' BertTokenizer inside the graph's Loop, and
        # a later call segfaults (bench/ort_e2e_crash.py). An app must set the same option.
        self._session = session(path, options, ortx.get_library_path())
        meta = self._session.get_modelmeta().custom_metadata_map
        self.capabilities = replace(CAPABILITIES, normalized=meta.get(NORMALIZE_KEY) == "true")
        self.path = path

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        texts = np.array([clean_text(str(t)) for t in inputs[TEXT_INPUT]], dtype=object)
        return self._session.run(None, {TEXT_INPUT: texts})[0]


def load(graph: Path, options: RuntimeOptions) -> OnnxRuntimeE2E:
    return OnnxRuntimeE2E(graph, options)
