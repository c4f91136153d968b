"""ONNX Runtime graph optimization (transformer fusions) and int8 quantization (dynamic, static QDQ),
each variant validated against the fp32 export before it may replace it in the artifact.

Needs `onnx` (the export extra); everything here runs at export time only.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed._imports import require
from edgeembed.artifact import Manifest
from edgeembed.calibration import calibration_inputs
from edgeembed.encoder import TOKENIZER_FILE, Encoder, _load_dense
from edgeembed.errors import EdgeEmbedError
from edgeembed.quantize import ExportPlan, OptimizeConfig, QuantizeConfig
from edgeembed.quantize.retention import summary, validate_variant
from edgeembed.runtimes import RuntimeOptions, load_runtime
from edgeembed.source import ModelSpec
from edgeembed.tokenization import TextTokenizer
from edgeembed.validation import validation_sentences

onnx = require("onnx", "export")
ortq = require("onnxruntime.quantization", "core")

log = logging.getLogger(__name__)

FUSED_MIN_COSINE = 0.9999  # fusions only reorder float math
# Floors for every int8 graph, with or without --sts (a good MiniLM int8 graph: mean 0.989, min 0.96 on
# the validation sentences; a broken scope, STS-b 80.0: mean 0.90, min 0.79). `min_retained` gates the
# STS Spearman retained, the measure users care about, when an STS file is given.
INT8_MIN_COSINE = 0.90
INT8_MIN_MEAN_COSINE = 0.97
# Static QDQ default scope, measured on MiniLM (bench/quant_knobs.py, STS-b test, fp32 82.03):
# every MatMul 79.6; all ORT QDQ ops 75.0; weight MatMuls + embedding Gathers 80.0; the same without
# the FFN down-projections 81.6 (their post-GELU inputs have outliers one int8 range cannot hold).
STATIC_OPS = ("MatMul", "Gather")
_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
_TYPES = {"qint8": "QInt8", "quint8": "QUInt8"}
_FLOAT = 1  # onnx.TensorProto.FLOAT: fused contrib ops lack shape inference; tell the quantizer their type

Step = Callable[[str], None]


class OrtCalibrationReader(ortq.CalibrationDataReader):
    """ORT's CalibrationDataReader over a list of model input dicts (from `calibration_inputs`)."""

    def __init__(self, inputs: Sequence[dict[str, np.ndarray]]) -> None:
        self._inputs = list(inputs)
        self._pos = 0
        self._end = len(self._inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= self._end:
            return None
        self._pos += 1
        return self._inputs[self._pos - 1]

    def rewind(self) -> None:
        self._pos = 0
        self._end = len(self._inputs)

    def set_range(self, start_index: int, end_index: int) -> None:
        """ORT's strided calibration (CalibStridedMinMax) reads the inputs one slice at a time."""
        self._pos = start_index
        self._end = min(end_index, len(self._inputs))

    def __len__(self) -> int:
        return len(self._inputs)


def model_dims(transformer_dir: Path) -> tuple[int, int]:
    """(num_heads, hidden_size) from config.json, which the fusions need to match attention."""
    cfg = json.loads((transformer_dir / "config.json").read_text(encoding="utf-8"))
    heads = cfg.get("num_attention_heads") or cfg.get("n_heads") or 0
    hidden = cfg.get("hidden_size") or cfg.get("dim") or 0
    return int(heads), int(hidden)


def op_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def optimize_graph(
    src: Path, dst: Path, cfg: OptimizeConfig, num_heads: int, hidden_size: int
) -> dict[str, int]:
    """Write the optimized graph; returns the fused operators and their counts (zeros dropped)."""
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cfg.level == "basic":
            model = optimize_model(str(src), opt_level=1, only_onnxruntime=True, use_gpu=False)
            stats: dict[str, int] = {}
        else:
            model = optimize_model(
                str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
            )
            stats = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    dst.parent.mkdir(parents=True, exist_ok=True)
    model.save_model_to_file(str(dst))
    return stats


def static_nodes(path: Path, cfg: QuantizeConfig) -> list[str]:
    """Nodes static QDQ quantizes by default: MatMuls with a constant weight (optionally also the
    attention products) and Gathers from a constant table; FFN down-projections (weight wider in than
    out) only when cfg.ffn_down."""
    graph = onnx.load(str(path)).graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    shapes.update(
        {n.output[0]: tuple(a.t.dims) for n in graph.node if n.op_type == "Constant" for a in n.attribute}
    )
    nodes = []
    for n in graph.node:
        if n.op_type == "Gather" and n.input[0] in shapes:
            nodes.append(n.name)
        elif n.op_type == "MatMul":
            w = shapes.get(n.input[1])
            if w is None:
                if cfg.attention_matmuls:
                    nodes.append(n.name)
            elif cfg.ffn_down or len(w) != 2 or w[0] <= w[1]:
                nodes.append(n.name)
    return nodes


def quantize_graph(
    src: Path, dst: Path, cfg: QuantizeConfig, calibration: Sequence[dict[str, np.ndarray]] | None = None
) -> None:
    """int8 graph from `src`: dynamic (MatMulInteger / DynamicQuantizeLinear) or static QDQ."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = {
        "per_channel": cfg.per_channel,
        "reduce_range": cfg.reduce_range,
        "weight_type": getattr(ortq.QuantType, _TYPES[cfg.weight_type]),
    }
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # ORT logs "consider pre-processing" on the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if cfg.mode == "dynamic":
                ortq.quantize_dynamic(
                    str(src),
                    str(dst),
                    op_types_to_quantize=list(cfg.op_types) if cfg.op_types is not None else None,
                    extra_options={"DefaultTensorType": _FLOAT},
                    **common,
                )
                return
            if not calibration:
                raise EdgeEmbedError("static quantization needs calibration inputs")
            ortq.quantize_static(
                str(src),
                str(dst),
                OrtCalibrationReader(calibration),
                quant_format=ortq.QuantFormat.QDQ,
                op_types_to_quantize=list(cfg.op_types if cfg.op_types is not None else STATIC_OPS),
                nodes_to_quantize=static_nodes(src, cfg) if cfg.op_types is None else None,
                activation_type=getattr(ortq.QuantType, _TYPES[cfg.activation_type]),
                calibrate_method=getattr(ortq.CalibrationMethod, _METHODS[cfg.method]),
                # One input per collection step: histograms (percentile, entropy) cannot stack texts
                # of different lengths, and memory stays flat however many texts calibrate.
                extra_options={
                    "DefaultTensorType": _FLOAT,
                    "CalibMovingAverage": False,
                    "CalibStridedMinMax": 1,
                },
                **common,
            )
    finally:
        quiet.setLevel(level)


def _encoder(root: Path, graph: Path, spec: ModelSpec, threads: int | None) -> Encoder:
    tok = TextTokenizer.from_file(root / TOKENIZER_FILE, spec.head.max_seq_length, spec.head.do_lower_case)
    rt = load_runtime("onnxruntime", graph, RuntimeOptions(threads=threads))
    return Encoder(rt, tok, spec.head, _load_dense(root, spec.head))


def apply_plan(
    plan: ExportPlan,
    root: Path,
    spec: ModelSpec,
    manifest: Manifest,
    threads: int | None = None,
    on_step: Step | None = None,
) -> Manifest:
    """Turn the validated fp32 graph in `root` into the planned variant, validated against it.

    The variant replaces the fp32 graph, so the artifact holds one graph only. On failure it raises
    (the caller's atomic save then leaves nothing behind).
    """
    step = on_step or (lambda _msg: None)
    fp32 = root / manifest.graph
    optimization: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="edgeembed-variant-") as work_dir:
        work = Path(work_dir)
        current = fp32
        if plan.optimize is not None:
            heads, hidden = model_dims(spec.transformer_dir)
            step(f"optimizing the graph ({plan.optimize.level}: onnxruntime.transformers.optimizer)")
            current = work / "optimized.onnx"
            fused = optimize_graph(fp32, current, plan.optimize, heads, hidden)
            optimization = {**plan.optimize.to_dict(), "fused": fused}
            step("fused: " + (", ".join(f"{k} x{v}" for k, v in fused.items()) or "nothing"))
        if plan.quantize is not None:
            q = plan.quantize
            calib = None
            quantization = q.to_dict()
            if q.mode == "static":
                assert plan.calibration is not None
                step(f"calibration inputs from {plan.calibration.source}")
                probe = _encoder(root, current, spec, threads)
                calib = calibration_inputs(
                    plan.calibration, probe.tokenizer, probe.runtime.input_names, q.calibration_batch_size
                )
                quantization["calibration"] = {**plan.calibration.to_dict(), "batches": len(calib)}
            step(f"quantizing ({q.mode} int8, {q.isa}: {q.weight_type} weights, per-channel {q.per_channel})")
            quantized = work / "quantized.onnx"
            quantize_graph(current, quantized, q, calib)
            current = quantized
        target = plan.quantize.file_name if plan.quantize else plan.optimize.file_name  # type: ignore[union-attr]
        validation = _validate(plan, root, spec, fp32, current, threads, step)
        validation["reference_validation"] = manifest.validation
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(current), root / target)
    if (root / target) != fp32:
        fp32.unlink()
    step(f"graph: {target} ({(root / target).stat().st_size / 1e6:.1f} MB)")
    return replace(
        manifest,
        graph=target,
        precision="int8" if plan.quantize else "fp32",
        optimization=optimization,
        quantization=quantization,
        validation=validation,
    )


def _validate(
    plan: ExportPlan, root: Path, spec: ModelSpec, fp32: Path, variant: Path, threads: int | None, step: Step
) -> dict[str, Any]:
    """Agreement with the fp32 export, STS retained (when given), batch invariance; raises past tolerance."""
    int8 = plan.quantize is not None
    floor = INT8_MIN_COSINE if int8 else FUSED_MIN_COSINE
    step("validating against the fp32 export" + (f" and on {plan.sts}" if plan.sts else ""))
    out = validate_variant(
        _encoder(root, fp32, spec, threads),
        _encoder(root, variant, spec, threads),
        validation_sentences(spec.head.max_seq_length),
        what=f"{'int8' if int8 else 'optimized'} graph of {spec.path.name}",
        reference_name="onnx fp32 export",
        min_cosine=floor,
        min_mean_cosine=INT8_MIN_MEAN_COSINE if int8 else floor,
        sts=plan.sts,
        min_retained=plan.min_retained,
    )
    step(summary(out))
    return out
