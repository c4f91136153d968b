"""Transformer -> ONNX with torch.onnx.export: dynamic batch and sequence axes, one self-contained file."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeembed._imports import require
from edgeembed.backends import EndToEnd, Options, PlannedStep
from edgeembed.context import BuildContext, Graph
from edgeembed.errors import EdgeEmbedError, InputError

OPSET = 18
RUNTIME = "onnxruntime"
OPTIMIZE = ("auto", "none", "basic", "all")
# The weights of the final .onnx graph go to `<graph>_data`, aligned so ONNX Runtime maps them.
HEAD_OUTPUT = True  # its token graphs carry the head as a second output (steps.sentence_output)
EXTERNAL_DATA = True
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
    # Token type 0 exists in every vocabulary of types (RoBERTa-style models have only that one).
    example = tuple(
        (torch.zeros if name == "token_type_ids" else torch.ones)((2, 16), dtype=torch.int64)
        for name in names
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
    return Graph(out_file, RUNTIME, names, {"exporter": config.exporter, "opset": config.opset})


def resolve_options(optimize: Any, quantize: Any, precision: str | None) -> Options:
    """ONNX's options: fusion level ("auto" fuses when supported and exact) and ONNX Runtime int8."""
    from edgeembed.steps import fusion, onnx_int8

    if precision == "bf16":
        raise InputError("--precision bf16 applies to OpenVINO artifacts (--format openvino)")
    quant = onnx_int8.quantize_config(quantize)
    if optimize is None:
        optimize = "none"
    if isinstance(optimize, str) and optimize not in OPTIMIZE:
        raise InputError(f"unknown optimize level {optimize!r}; choose from {', '.join(OPTIMIZE)}")
    if optimize in ("basic", "all"):
        optimize = fusion.Config(level=optimize)
    static = quant is not None and quant.mode == "static"
    if static and isinstance(optimize, fusion.Config) and optimize.level == "all":
        raise InputError(
            "static QDQ quantization needs the unfused graph (fused Attention/SkipLayerNormalization "
            "outputs get no activation scales): use --optimize none or basic with --quantize static"
        )
    return Options(optimize, quant, static)


def plan(settings: Any, spec: Any) -> list[PlannedStep]:
    """The fusion step: "auto" fuses when fusion supports the model type and the fused graph passes the
    gate (else the plain graph, said in one line); static int8 needs the unfused graph."""
    from edgeembed.steps import fusion

    model_type = fusion.model_dims(spec.transformer_dir)[0]
    if settings.optimize == "auto":
        static = settings.quantize is not None and settings.quantize.mode == "static"
        skip = None
        if static:
            skip = "static int8 quantizes the unfused graph"
        elif not fusion.supported(model_type):
            skip = fusion.unsupported_reason(model_type)
        config = fusion.for_model(fusion.Config(level="all"), model_type)
        return [PlannedStep(config, optional=True, skip=skip)]
    if isinstance(settings.optimize, fusion.Config):
        return [PlannedStep(fusion.for_model(settings.optimize, model_type))]
    return []


def backend_config(settings: Any, steps: tuple[PlannedStep, ...]) -> Config:
    """The exporter the fusion step needs (ORT's optimizer fuses TorchScript's attention), else dynamo."""
    exporter = next((p.config.exporter for p in steps if p.config.step == "fusion" and not p.skip), "dynamo")
    return Config(exporter=exporter)


def ort_target(step_config: Any) -> tuple[str | None, str]:
    """(isa, target platform) of the .ort conversion: an arm64 int8 graph goes to phones, so its .ort
    gets no x86-only layouts."""
    from edgeembed.steps.onnx_int8 import QuantizeConfig

    if isinstance(step_config, QuantizeConfig) and step_config.isa == "arm64":
        return "arm64", "arm"
    return None, "amd64"


def _e2e_build(graph: Path, tokenizer_file: Path, head: Any, dense: list, out: Path) -> None:
    from edgeembed.steps.e2e_onnx import build_e2e

    build_e2e(graph, tokenizer_file, head, dense, out)


def _e2e_compare(graph: Path, tokenizer_file: Path, head: Any, texts: list[str]) -> list:
    from edgeembed.steps.e2e_onnx import compare_token_ids

    return compare_token_ids(graph, tokenizer_file, head, texts)


def _e2e_details(graph: Path, tokenizer_file: Path) -> dict[str, Any]:
    from edgeembed.shippable import operator_set
    from edgeembed.steps.e2e_onnx import EMBEDDING_OUTPUT
    from edgeembed.steps.e2e_tokenizers import adapter_for

    return {
        "output": EMBEDDING_OUTPUT,
        "tokenizer_op": f"{adapter_for(tokenizer_file).onnx_op} (onnxruntime-extensions)",
        "operators": sorted(operator_set(graph)),
    }


END_TO_END = EndToEnd(
    runtime="onnxruntime-e2e",
    extra="onnxruntime_extensions",
    what="end-to-end graph",
    build=_e2e_build,
    compare=_e2e_compare,
    details=_e2e_details,
)
