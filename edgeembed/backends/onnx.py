"""Transformer -> ONNX with torch.onnx.export: dynamic batch and sequence axes, one self-contained file."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from edgeembed._imports import require
from edgeembed.context import BuildContext, Graph
from edgeembed.errors import EdgeEmbedError, InputError

OPSET = 18
FILE_NAME = "onnx/model.onnx"  # the fp32 graph's place in an artifact, where sentence-transformers looks
OUTPUT_NAME = "last_hidden_state"  # the name optimum and sentence-transformers look for
EXPORTERS = ("dynamo", "torchscript")


@dataclass(frozen=True)
class Config:
    """exporter: "dynamo" (torch.export, the future-proof path) or "torchscript", whose attention
    subgraph is the one ONNX Runtime's transformer optimizer fuses into Attention."""

    exporter: str = "dynamo"
    opset: int = OPSET

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise InputError(f"unknown ONNX exporter {self.exporter!r}; choose from {', '.join(EXPORTERS)}")


def export(ctx: BuildContext, config: Config) -> Graph:
    """Write ctx.reference to work_dir/model.onnx (weights inside, < 2 GB)."""
    torch = require("torch", "export")
    model = ctx.reference
    names = tuple(model.input_names)
    out_file = ctx.work_dir / f"model-{config.exporter}.onnx"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    # token type 0: XLM-R and RoBERTa have a single token type (type_vocab_size 1)
    example = tuple(
        (torch.zeros if n == "token_type_ids" else torch.ones)((2, 16), dtype=torch.int64) for n in names
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if config.exporter == "torchscript":
                axes = {name: {0: "batch", 1: "sequence"} for name in [*names, OUTPUT_NAME]}
                torch.onnx.export(
                    model,
                    example,
                    str(out_file),
                    dynamo=False,
                    input_names=list(names),
                    output_names=[OUTPUT_NAME],
                    dynamic_axes=axes,
                    opset_version=min(config.opset, 17),
                    do_constant_folding=True,
                )
            else:
                batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
                program = torch.onnx.export(
                    model,
                    example,
                    dynamo=True,
                    input_names=list(names),
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes={name: {0: batch, 1: seq} for name in names},
                    opset_version=config.opset,
                    optimize=True,
                    verbose=False,
                )
                program.save(str(out_file), external_data=False)
        except Exception as exc:
            raise EdgeEmbedError(
                f"torch.onnx.export ({config.exporter}) failed for {type(model.model).__name__}: {exc}"
            ) from exc
    return Graph(out_file, "onnxruntime", names, {"exporter": config.exporter, "opset": config.opset})
