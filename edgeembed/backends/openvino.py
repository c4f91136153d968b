"""Transformer -> OpenVINO IR with `openvino.convert_model`, straight from the torch module.

Why the torch module and not our ONNX export: both convert to the same graph numerically, but tracing
the module is several times quicker than a dynamo ONNX export, keeps attention as one
ScaledDotProductAttention op, and does not depend on the ONNX exporter.

Weights stay fp32, except for an artifact that runs bf16 inference: the CPU plugin converts its weights
to bf16 anyway, so the IR stores them fp16 (`Config(weights="fp16")`, chosen by build when precision is
bf16): half the file and less memory, at no cost in accuracy since bf16 holds fewer mantissa bits than
fp16 (bench/PROFILE.md has the sizes).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeembed._imports import require
from edgeembed.context import BuildContext, Graph
from edgeembed.errors import EdgeEmbedError

# optimum-intel (sentence-transformers' backend="openvino") reads `last_hidden_state`, as our ONNX graph
# names it; `token_embeddings` (sentence-transformers' own word) is kept as an alias.
OUTPUT_NAMES = ("last_hidden_state", "token_embeddings")
FILE_NAME = "openvino/openvino_model.xml"  # the fp32 IR's place in an artifact (+ .bin beside it)


WEIGHTS = ("fp32", "fp16")


@dataclass(frozen=True)
class Config:
    """How the IR stores float weights: "fp32" (exact), or "fp16" for bf16 inference. OpenVINO fuses the
    graph itself when it compiles."""

    weights: str = "fp32"

    def __post_init__(self) -> None:
        if self.weights not in WEIGHTS:
            raise EdgeEmbedError(f"OpenVINO IR weights must be one of {WEIGHTS}, got {self.weights!r}")


def save_ir(ov_model: Any, xml: Path, fp16: bool = False) -> Path:
    """Write `xml` and its `.bin` beside it, float weights as they are or (fp16) compressed to fp16."""
    ov = require("openvino", "openvino")
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, str(xml), compress_to_fp16=fp16)
    return xml


def export(ctx: BuildContext, config: Config) -> Graph:
    """An IR with dynamic (batch, sequence) int64 inputs, named as the torch module names them."""
    ov = require("openvino", "openvino")
    torch = require("torch", "export")
    model = ctx.reference
    names = tuple(model.input_names)
    # Token type 0 exists in every vocabulary of types (RoBERTa-style models have only that one).
    example = {
        name: (torch.zeros if name == "token_type_ids" else torch.ones)((2, 16), dtype=torch.int64)
        for name in names
    }
    shapes = [(name, ov.PartialShape([-1, -1]), ov.Type.i64) for name in names]
    try:
        # Tracing warns that transformers' mask code branches on a shape; for an encoder (no KV cache)
        # that branch is constant, and the gate checks 1..max_seq_length tokens.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ov_model = ov.convert_model(model, example_input=example, input=shapes)
    except Exception as exc:
        raise EdgeEmbedError(
            f"openvino.convert_model failed for {type(model.model).__name__}: {exc}"
        ) from exc
    ov_model.outputs[0].get_tensor().set_names(set(OUTPUT_NAMES))
    xml = save_ir(ov_model, ctx.work_dir / "openvino" / "openvino_model.xml", fp16=config.weights == "fp16")
    return Graph(xml, "openvino", names, {"converter": "openvino.convert_model", "weights": config.weights})
