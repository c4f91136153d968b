"""Transformer -> OpenVINO IR with `openvino.convert_model`, straight from the torch module.

Measured on all-MiniLM-L6-v2 (openvino 2026.4): converting the torch module and converting our ONNX
export give the same accuracy (cosine vs torch 0.9999999999, max abs diff 1.7e-6) and the same speed
(interleaved, within noise); the torch route takes ~2 s instead of a ~20 s dynamo ONNX export, keeps
attention as one ScaledDotProductAttention op, and does not depend on the ONNX exporter. The IR sits where
sentence-transformers looks for it (`openvino/openvino_model.xml` + `.bin`), weights stay fp32.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeembed._imports import require
from edgeembed.artifact import Manifest
from edgeembed.encoder import TOKENIZER_FILE
from edgeembed.errors import EdgeEmbedError, InputError
from edgeembed.exporters.torch_model import TokenEmbeddings, torch
from edgeembed.quantize.openvino import (
    OpenVinoStaticConfig,
    QuantizeSpec,
    compress_weights,
    graph_name,
    quantize_static,
    resolve,
)
from edgeembed.quantize.retention import MIN_RETAINED, measure_retention, require_retention
from edgeembed.runtimes import RuntimeOptions, load_runtime
from edgeembed.source import ModelSpec
from edgeembed.tokenization import TextTokenizer
from edgeembed.validation import agreement, require_agreement, validation_sentences

if TYPE_CHECKING:
    from edgeembed.calibration import CalibrationConfig

ov = require("openvino", "openvino")

OV_GRAPH = "openvino/openvino_model.xml"
# optimum-intel (sentence-transformers' backend="openvino") reads `last_hidden_state`; our ONNX graph calls
# the same tensor `token_embeddings`. A tensor may carry several names, so it answers to both.
OUTPUT_NAMES = ("last_hidden_state", "token_embeddings")


def convert_torch(model: TokenEmbeddings) -> Any:
    """An ov.Model with dynamic (batch, sequence) int64 inputs, named as the torch module names them."""
    names = model.input_names
    example = {name: torch.ones((2, 16), dtype=torch.int64) for name in names}
    shapes = [(name, ov.PartialShape([-1, -1]), ov.Type.i64) for name in names]
    try:
        # Tracing warns that transformers' mask code branches on a shape; for an encoder (no KV cache)
        # that branch is constant, and validation on 1..max_seq_length tokens checks the result.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ov_model = ov.convert_model(model, example_input=example, input=shapes)
    except Exception as exc:
        raise EdgeEmbedError(
            f"openvino.convert_model failed for {type(model.model).__name__}: {exc}"
        ) from exc
    ov_model.outputs[0].get_tensor().set_names(set(OUTPUT_NAMES))
    return ov_model


def save_ir(ov_model: Any, xml: Path) -> Path:
    """Write `xml` and its `.bin` beside it, weights as they are (no fp16 compression)."""
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, str(xml), compress_to_fp16=False)
    return xml


def check_request(quantize: str | QuantizeSpec | None, calibration: CalibrationConfig | None) -> None:
    """Settings errors before any expensive work: unknown preset, static without calibration data."""
    config = resolve(quantize) if quantize is not None else None
    if isinstance(config, OpenVinoStaticConfig) and calibration is None:
        raise InputError("static quantization needs calibration data (--calibration FILE)")
    if calibration is not None and not isinstance(config, OpenVinoStaticConfig):
        raise InputError("calibration data is used only with --quantize static")


def build_openvino(
    spec: ModelSpec,
    torch_model: TokenEmbeddings,
    root: Path,
    quantize: str | QuantizeSpec | None = None,
    calibration: CalibrationConfig | None = None,
    sts: str | Path | None = None,
    min_retained: float = MIN_RETAINED,
    threads: int | None = None,
    step: Callable[[str], None] = lambda _msg: None,
) -> Manifest:
    """Fill `root` (an artifact's temporary folder): IR, validated against torch; then, if asked,
    quantized with NNCF and validated against the fp32 IR. Raises before anything is kept."""
    from edgeembed import pipeline as pl  # lazily: pipeline imports this module lazily too

    check_request(quantize, calibration)
    config = resolve(quantize) if quantize is not None else None
    pl.write_st_layout(spec, root)
    step("converting the transformer to OpenVINO IR (openvino.convert_model)")
    ov_model = convert_torch(torch_model)
    # The fp32 IR is kept only for an fp32 artifact; a quantized one gets it in a scratch folder.
    scratch = root / ".fp32" if config is not None else root
    fp32_xml = save_ir(ov_model, scratch / OV_GRAPH)
    step("validating against torch")
    sentences = validation_sentences(spec.head.max_seq_length)
    opts = RuntimeOptions(threads=threads)
    ref_rt = load_runtime("torch", spec.transformer_dir, opts)
    ref = pl.reference_embeddings(pl._encoder_for(root, ref_rt, spec), sentences)
    fp32_rt = load_runtime("openvino", fp32_xml, opts)
    fp32_encoder = pl._encoder_for(root, fp32_rt, spec)
    agr = agreement(ref, pl.reference_embeddings(fp32_encoder, sentences))
    require_agreement(agr, pl.FP32_MIN_COSINE, f"OpenVINO export of {spec.path.name}")
    step(f"validation: min cosine {agr.min_cosine:.7f}, max abs diff {agr.max_abs_diff:.2e}")
    validation = {"reference": "torch fp32", "min_cosine_required": pl.FP32_MIN_COSINE, **agr.to_dict()}
    graph, precision, quantization = OV_GRAPH, "fp32", None

    if config is not None:
        if isinstance(config, OpenVinoStaticConfig):
            assert calibration is not None
            from edgeembed.calibration import calibration_inputs

            tok = TextTokenizer.from_file(
                root / TOKENIZER_FILE, spec.head.max_seq_length, spec.head.do_lower_case
            )
            inputs = calibration_inputs(calibration, tok, fp32_rt.input_names, batch_size=1)
            step(f"static int8 with nncf.quantize ({config.preset}, {len(inputs)} calibration texts)")
            q_model = quantize_static(ov_model, config, inputs)
            precision = "int8"
        else:
            step(f"weight compression with nncf.compress_weights ({config.mode})")
            q_model = compress_weights(ov_model, config)
            precision = f"{config.mode.split('_')[0]}-weights"
        graph = graph_name(config)
        save_ir(q_model, root / graph)
        step("validating against the fp32 IR" + (f" and STS ({sts})" if sts else ""))
        q_encoder = pl._encoder_for(root, load_runtime("openvino", root / graph, opts), spec)
        retention = measure_retention(fp32_encoder, q_encoder, sentences, sts, min_retained)
        require_retention(retention, f"OpenVINO {precision} export of {spec.path.name}")
        step(f"retention: {retention.summary()}")
        quantization = {
            **config.to_dict(),
            "calibration": calibration.to_dict() if calibration is not None else None,
            "validation": {"reference": "openvino fp32", **retention.to_dict()},
        }
        del fp32_rt, fp32_encoder
        shutil.rmtree(scratch)

    return Manifest(
        runtime="openvino",
        precision=precision,
        graph=graph,
        inputs=tuple(ov_model.input(i).get_any_name() for i in range(len(ov_model.inputs))),
        head=spec.head,
        source={"path": str(spec.path), "weights_sha256": pl._weights_sha256(spec)},
        validation=validation,
        quantization=quantization,
        versions=pl.library_versions(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
