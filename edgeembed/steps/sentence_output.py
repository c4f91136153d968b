"""The head as a second output of a token graph: `sentence_embedding` beside the token embeddings.

Why: at batch 1 the numpy pooling after `session.run` costs ~60-80 us (its inputs are cold: the run has
just streamed the weights through the caches), about a tenth of the whole call. Inside the graph the
runtime pools while the tokens are still in cache (bench/PROFILE.md section 13: 1.12 -> 1.01 ms for
MiniLM int8). The token output stays first and unchanged, so everything that reads it (the gate's token
checks, the end-to-end graph, OpenVINO opening the .onnx, sentence-transformers) sees the graph it saw;
a runtime asked only for the tokens skips the head's nodes (measured: no cost).

The head is the artifact's own (pooling over every token, the Dense modules, Normalize when the model
has it): no prompt input, so a model that pools without its prompt uses the token output for prompts.
Needs the `onnx` package (export extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed._imports import require
from edgeembed.head import HeadModel
from edgeembed.head import onnx as onnx_head
from edgeembed.source import Head
from edgeembed.steps import onnx_opset

OUTPUT = onnx_head.OUTPUT  # "sentence_embedding", the name the static ONNX graph and the e2e graph use
PREFIX = "sentence_head/"


def details(head: Head, token_output: str) -> dict[str, Any]:
    """What the manifest records about such a graph: its outputs in order, and whether the sentence
    output is L2-normalized (the Encoder uses it only when the caller asks for that normalization)."""
    return {"outputs": [token_output, OUTPUT], "normalized": head.normalize}


def add_sentence_output(
    graph: Path, out: Path, head: Head, dense: Sequence[tuple[np.ndarray, np.ndarray | None]]
) -> str:
    """Write `graph` (a single-file token graph, `attention_mask` among its inputs) with the head appended
    as the output `sentence_embedding` to `out`. Returns the token output's name. Raises ValueError when
    the graph cannot carry it (no attention_mask input, an opset below the head's, a name taken)."""
    onnx = require("onnx", "export")
    helper = onnx.helper
    model = onnx.load(str(graph), load_external_data=False)
    g = model.graph
    inputs = {i.name for i in g.input}
    if onnx_head.MASK_INPUT not in inputs:
        raise ValueError(f"{graph.name} has no {onnx_head.MASK_INPUT} input to pool with")
    if any(o.name == OUTPUT for o in g.output) or any(OUTPUT in n.output for n in g.node):
        raise ValueError(f"{graph.name} already has a tensor named {OUTPUT}")
    token_output = g.output[0].name
    b = onnx_head.OnnxBuilder(onnx_opset(model, 17), PREFIX)
    x = onnx_head.emit(b, HeadModel.from_head(head, list(dense)), token_output, onnx_head.MASK_INPUT)
    b.nodes.append(helper.make_node("Identity", [x], [OUTPUT], name=f"{PREFIX}output"))
    g.node.extend(b.nodes)
    g.initializer.extend(b.initializers)
    g.output.append(helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, ["batch", head.dim]))
    onnx.save_model(model, str(out))
    return token_output
