"""Transformer -> ONNX with torch.onnx.export (dynamo): dynamic batch and sequence axes, one file."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from edgeembed.errors import EdgeEmbedError
from edgeembed.exporters.torch_model import TokenEmbeddings, torch

log = logging.getLogger(__name__)

OPSET = 18
OUTPUT_NAME = "last_hidden_state"  # the name optimum and sentence-transformers look for


def export_onnx(model: TokenEmbeddings, out_file: Path, opset: int = OPSET) -> Path:
    """Write `model` to `out_file` as a single self-contained ONNX file (weights inside, < 2 GB)."""
    names = model.input_names
    example = tuple(torch.ones((2, 16), dtype=torch.int64) for _ in names)
    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("sequence")
    dynamic = {name: {0: batch, 1: seq} for name in names}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model,
                example,
                dynamo=True,
                input_names=list(names),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic,
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
        except Exception as exc:
            raise EdgeEmbedError(f"torch.onnx.export failed for {type(model.model).__name__}: {exc}") from exc
    program.save(str(out_file), external_data=False)
    return out_file
