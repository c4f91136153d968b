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
    quantize_static,
    quantize_with_accuracy_control,
    quantizer_count,
    resolve,
)
from edgeembed.quantize.retention import DEFAULT_MIN_RETAINED, summary, validate_variant
from edgeembed.runtimes import RuntimeOptions, load_runtime
from edgeembed.source import ModelSpec
from edgeembed.tokenization import TextTokenizer
from edgeembed.validation import agreement, require_agreement, validation_sentences

if TYPE_CHECKING:
    from edgeembed.calibration import CalibrationConfig

ov = require("openvino", "openvino")

OV_GRAPH = "openvino/openvino_model.xml"
# optimum-intel (sentence-transformers' backend="openvino") reads `last_hidden_state`, as our ONNX graph
# names it; `token_embeddings` (sentence-transformers' own word) is kept as an alias.
OUTPUT_NAMES = ("last_hidden_state", "token_embeddings")
# Floors vs the fp32 IR that catch a broken graph whatever --min-retained says (the ONNX int8 path uses
# the same int8 floors). MiniLM, validation + STS-b test sentences: static int8 mean 0.997 / min 0.94,
# weights-int8 0.9994 / 0.996, weights-int4 0.950 / 0.84 while keeping STS-b (82.30 vs 82.03): int4
# moves embeddings more without hurting ranking, so its floors are lower and --sts is the real judge.
FLOORS = {8: (0.90, 0.97), 4: (0.75, 0.90)}  # bits -> (min cosine, min mean cosine)


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


def check_request(
    quantize: str | QuantizeSpec | None,
    calibration: str | Path | CalibrationConfig | None,
    sts: str | Path | None = None,
    min_retained: float = DEFAULT_MIN_RETAINED,
) -> tuple[QuantizeSpec | None, CalibrationConfig | None]:
    """Settings -> (config, calibration), failing before any expensive work: unknown preset, static
    without calibration data, calibration without static, missing files, min_retained out of range."""
    from edgeembed.calibration import CalibrationConfig, check_sources

    config = resolve(quantize) if quantize is not None and quantize != "none" else None
    if isinstance(calibration, (str, Path)):
        calibration = CalibrationConfig(str(calibration))
    if isinstance(config, OpenVinoStaticConfig) and calibration is None:
        raise InputError(
            "static quantization needs calibration texts: pass --calibration FILE (a .txt with one text "
            "per line, a .csv/.tsv/.jsonl with --calibration-column, or an STS tsv)"
        )
    if calibration is not None and not isinstance(config, OpenVinoStaticConfig):
        raise InputError("calibration data is used only with --quantize static")
    check_sources(calibration, sts)
    if not 0.0 < min_retained <= 1.0:
        raise InputError(f"min_retained must be in (0, 1], got {min_retained}")
    return config, calibration


def _accuracy_controlled(
    ov_model: Any,
    config: OpenVinoStaticConfig,
    inputs: list,
    sts: str | Path,
    min_retained: float,
    fp32_encoder: Any,
    sentences: list[str],
    step: Callable[[str], None],
) -> tuple[Any, dict[str, Any]]:
    """Static int8 that passes the gate: nncf reverts the quantizers that hurt the gate's criteria most
    (STS retained, min / mean cosine vs fp32) to float until they hold; the gate then checks as usual."""
    from edgeembed.quantize.sts_metric import GateMetric, gate_items
    from edgeembed.sts import load_sts

    items = gate_items(load_sts(sts), sentences)
    min_cos, min_mean = FLOORS[8]
    metric = GateMetric.from_encoder(fp32_encoder, items, min_retained, min_cos, min_mean)
    max_drop = round(1.0 - min_retained, 6)
    step(
        f"static int8 with nncf.quantize_with_accuracy_control ({config.preset}, {len(inputs)} calibration "
        f"batches; gate on {len(items)} items: STS retained >= {min_retained}, cosine vs fp32 >= {min_cos})"
    )
    q_model = quantize_with_accuracy_control(ov_model, config, inputs, items, metric, max_drop)
    return q_model, {
        "metric": "gate (sts retained, cosine floors)",
        "items": len(items),
        "max_relative_drop": max_drop,
    }


def build_openvino(
    spec: ModelSpec,
    torch_model: TokenEmbeddings,
    root: Path,
    quantize: str | QuantizeSpec | None = None,
    calibration: str | Path | CalibrationConfig | None = None,
    sts: str | Path | None = None,
    min_retained: float = DEFAULT_MIN_RETAINED,
    threads: int | None = None,
    step: Callable[[str], None] = lambda _msg: None,
    inference_precision: str | None = None,
) -> Manifest:
    """Fill `root` (an artifact's temporary folder): IR, validated against torch; then, if asked,
    quantized with NNCF and validated against the fp32 IR. Raises before anything is kept."""
    from edgeembed import pipeline as pl  # lazily: pipeline imports this module lazily too

    config, calib = check_request(quantize, calibration, sts, min_retained)
    pl.write_st_layout(spec, root)
    step("converting the transformer to OpenVINO IR (openvino.convert_model)")
    ov_model = convert_torch(torch_model)
    # The fp32 IR is kept only for an fp32 artifact; a quantized one gets it in a scratch folder.
    scratch = root / ".fp32" if config is not None else root
    fp32_xml = save_ir(ov_model, scratch / OV_GRAPH)
    step("validating against torch" + (f" ({inference_precision} inference)" if inference_precision else ""))
    sentences = validation_sentences(spec.head.max_seq_length)
    # Validated with the inference precision the artifact will run with (bf16 opt-in, recorded below).
    opts = RuntimeOptions(threads=threads, precision=inference_precision)
    ref_rt = load_runtime("torch", spec.transformer_dir, RuntimeOptions(threads=threads))
    ref = pl.reference_embeddings(pl._encoder_for(root, ref_rt, spec), sentences)
    fp32_rt = load_runtime("openvino", fp32_xml, opts)
    fp32_encoder = pl._encoder_for(root, fp32_rt, spec)
    agr = agreement(ref, pl.reference_embeddings(fp32_encoder, sentences))
    require_agreement(agr, pl.FP32_MIN_COSINE, f"OpenVINO export of {spec.path.name}")
    step(f"validation: min cosine {agr.min_cosine:.7f}, max abs diff {agr.max_abs_diff:.2e}")
    validation = {"reference": "torch fp32", "min_cosine_required": pl.FP32_MIN_COSINE, **agr.to_dict()}
    graph, precision, quantization = OV_GRAPH, "fp32", None

    if config is not None:
        quantization = config.to_dict()
        if isinstance(config, OpenVinoStaticConfig):
            assert calib is not None
            from edgeembed.calibration import calibration_inputs

            tok = TextTokenizer.from_file(
                root / TOKENIZER_FILE, spec.head.max_seq_length, spec.head.do_lower_case
            )
            step(f"calibration inputs from {calib.source}")
            inputs = calibration_inputs(calib, tok, fp32_rt.input_names, config.calibration_batch_size)
            quantization["calibration"] = {**calib.to_dict(), "batches": len(inputs)}
            if sts is None or not config.accuracy_control:
                step(f"static int8 with nncf.quantize ({config.preset}, {len(inputs)} calibration batches)")
                q_model = quantize_static(ov_model, config, inputs)
            else:
                q_model, quantization["accuracy_aware"] = _accuracy_controlled(
                    ov_model, config, inputs, sts, min_retained, fp32_encoder, sentences, step
                )
            quantization["quantizers"] = quantizer_count(q_model)
            precision, bits = "int8", 8
        else:
            step(f"weight compression with nncf.compress_weights ({config.weight_type})")
            q_model = compress_weights(ov_model, config)
            precision, bits = f"int{config.bits}-weights", config.bits
        graph = config.file_name
        save_ir(q_model, root / graph)
        step(f"validating against the fp32 IR{f' and STS ({sts})' if sts else ''}")
        q_encoder = pl._encoder_for(root, load_runtime("openvino", root / graph, opts), spec)
        min_cos, min_mean = FLOORS[bits]
        what = f"OpenVINO {precision} graph of {spec.path.name}"
        variant = validate_variant(
            fp32_encoder,
            q_encoder,
            sentences,
            what,
            "openvino fp32 export",
            min_cos,
            min_mean,
            sts,
            min_retained,
        )
        step(summary(variant))
        validation = {**variant, "reference_validation": validation}
        del fp32_rt, fp32_encoder, q_encoder
        shutil.rmtree(scratch)
        step(
            f"graph: {graph} ({sum(f.stat().st_size for f in (root / graph).parent.iterdir()) / 1e6:.1f} MB)"
        )

    return Manifest(
        runtime="openvino",
        precision=precision,
        graph=graph,
        inputs=tuple(ov_model.input(i).get_any_name() for i in range(len(ov_model.inputs))),
        head=spec.head,
        source={"path": str(spec.path), "weights_sha256": pl._weights_sha256(spec)},
        validation=validation,
        quantization=quantization,
        runtime_options={"precision": inference_precision} if inference_precision else {},
        versions=pl.library_versions(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
