"""Transformer -> OpenVINO IR with `openvino.convert_model`, straight from the torch module.

Why from the torch module rather than from our ONNX export: the IR is as accurate and as fast either way,
and the torch route is much quicker than a dynamo ONNX export, keeps attention as one
ScaledDotProductAttention op, and does not depend on the ONNX exporter (numbers: bench/NOTES.md).

Weights stay fp32, except for an artifact that runs bf16 inference: the CPU plugin converts its weights
to bf16 anyway, so the IR stores them fp16 (`Config(weights="fp16")`, chosen by the backend when
precision is bf16): half the file and less memory, for the same accuracy (bench/NOTES.md).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed._imports import require
from edgeembed.backends import EndToEnd, Options, PlannedStep
from edgeembed.context import BuildContext, Graph
from edgeembed.errors import EdgeEmbedError, InputError

# optimum-intel (sentence-transformers' backend="openvino") reads `last_hidden_state`, as our ONNX graph
# names it; `token_embeddings` (sentence-transformers' own word) is kept as an alias.
OUTPUT_NAMES = ("last_hidden_state", "token_embeddings")
FILE_NAME = "openvino/openvino_model.xml"  # the fp32 IR's place in an artifact (+ .bin beside it)
RUNTIME = "openvino"
HEAD_OUTPUT = False  # the IR keeps the token output alone (OpenVINO returns its first output)
EXTERNAL_DATA = False  # the IR's weights are in their own .bin already


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
    record: dict[str, Any] = {"converter": "openvino.convert_model", "weights": config.weights}
    if denormals_matter(xml, ctx, names):
        ctx.progress(
            "OpenVINO: flushing denormals changes this model's outputs; the artifact runs without it"
        )
        record["runtime_options"] = {"flush_denormals": False}
    return Graph(xml, RUNTIME, names, record)


# Cosine below which two compilations of one fp32 IR count as different (they are bit-identical when
# denormals play no part).
DENORMALS_MIN_COSINE = 0.999999


def denormals_matter(xml: Path, ctx: BuildContext, names: tuple[str, ...]) -> bool:
    """Whether flushing denormals to zero (the runtime's default, CPU_DENORMALS_OPTIMIZATION) changes the
    IR's token embeddings on varied texts. The flag takes effect on the plugin's stream threads, so each
    compilation runs its batches as asynchronous requests there (a synchronous call may run on the
    caller's thread, which keeps its own float state). A tiny random T5 is such a model (bench/NOTES.md)."""
    from edgeembed.gate import invariance_texts
    from edgeembed.runtimes import RuntimeOptions
    from edgeembed.runtimes.openvino import compile_apart, compile_config

    ov = require("openvino", "openvino")
    encodings = ctx.tokenizer.encode(invariance_texts(64))
    batches = [ctx.tokenizer.pad(encodings[i : i + 16], 16) for i in range(0, len(encodings), 16)]
    pooled = []
    for flush in (True, False):
        options = RuntimeOptions(hint="throughput", flush_denormals=flush, threads=ctx.threads)
        compiled = compile_apart(ov.Core(), str(xml), compile_config(options))
        requests = [compiled.create_infer_request() for _ in batches]
        for request, batch in zip(requests, batches):
            request.start_async(batch.as_inputs(names))
        rows = []
        for request, batch in zip(requests, batches):
            request.wait()
            mask = batch.attention_mask[..., None].astype(np.float32)
            rows.append((request.get_output_tensor(0).data * mask).sum(axis=1) / mask.sum(axis=1))
        pooled.append(np.concatenate(rows))
    a, b = pooled
    cos = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return bool(cos.min() < DENORMALS_MIN_COSINE)


def resolve_options(optimize: Any, quantize: Any, precision: str | None) -> Options:
    """OpenVINO's options: no fusion setting (OpenVINO fuses when it compiles), NNCF quantization."""
    from edgeembed.steps import nncf

    if optimize not in (None, "none", "auto"):
        raise InputError("--optimize applies to ONNX; OpenVINO fuses the graph itself at compile time")
    quant = nncf.resolve(quantize) if quantize not in (None, "none") else None
    return Options("none", quant, isinstance(quant, nncf.OpenVinoStaticConfig))


def plan(settings: Any, spec: Any) -> list[PlannedStep]:
    """No graph steps of its own (quantization is planned by the orchestrator for every format)."""
    return []


def backend_config(settings: Any, steps: tuple[PlannedStep, ...]) -> Config:
    """fp16 weights when the artifact runs bf16 inference on the export's own graph: the CPU plugin
    converts the weights to bf16 anyway."""
    if settings.precision == "bf16" and not steps:
        return Config(weights="fp16")
    return Config()


def ort_target(step_config: Any) -> tuple[str | None, str] | None:
    """An IR has no .ort conversion."""
    return None


def _e2e_build(graph: Path, tokenizer_file: Path, head: Any, dense: list, out: Path) -> None:
    from edgeembed.steps.e2e_openvino import build_e2e_openvino

    build_e2e_openvino(graph, tokenizer_file, head, dense, out)


def _e2e_compare(graph: Path, tokenizer_file: Path, head: Any, texts: list[str]) -> list:
    from edgeembed.steps.e2e_openvino import compare_token_ids_openvino

    return compare_token_ids_openvino(tokenizer_file, head, texts)


def _e2e_details(graph: Path, tokenizer_file: Path) -> dict[str, Any]:
    from edgeembed.steps.e2e_onnx import EMBEDDING_OUTPUT

    return {"output": EMBEDDING_OUTPUT, "tokenizer_op": "openvino-tokenizers"}


# openvino-tokenizers is exact: its token ids must match `tokenizers` on every gate text.
END_TO_END = EndToEnd(
    runtime="openvino-e2e",
    extra="openvino_tokenizers",
    what="end-to-end IR",
    build=_e2e_build,
    compare=_e2e_compare,
    details=_e2e_details,
    exact_token_ids=True,
    options_precision=True,
)
