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


def export_onnx(model: TokenEmbeddings, out_file: Path, opset: int = OPSET, dynamo: bool = True) -> Path:
    """Write `model` to `out_file` as a single self-contained ONNX file (weights inside, < 2 GB).

    dynamo=False uses the TorchScript exporter: its attention subgraph is the one ONNX Runtime's
    transformer optimizer fuses into Attention (the dynamo graph's mask handling matches no pattern).
    """
    names = model.input_names
    example = tuple(torch.ones((2, 16), dtype=torch.int64) for _ in names)
    if not dynamo:
        return _export_torchscript(model, out_file, example, opset)
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


def _export_torchscript(model: TokenEmbeddings, out_file: Path, example: tuple, opset: int) -> Path:
    names = list(model.input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, OUTPUT_NAME]}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                example,
                str(out_file),
                dynamo=False,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                opset_version=min(opset, 17),
                do_constant_folding=True,
            )
        except Exception as exc:
            raise EdgeEmbedError(
                f"torch.onnx.export (TorchScript) failed for {type(model.model).__name__}: {exc}"
            ) from exc
    return out_file
