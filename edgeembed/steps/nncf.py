"""NNCF on an OpenVINO IR: static int8 (`nncf.quantize`) and weight-only compression
(`nncf.compress_weights`). Settings are frozen dataclasses with named presets; their dict goes into the
manifest. Calibration inputs come from `edgeembed.calibration` at real sentence lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from edgeembed._imports import require
from edgeembed.calibration import calibration_inputs
from edgeembed.context import BuildContext, Graph
from edgeembed.errors import InputError


@dataclass(frozen=True)
class OpenVinoStaticConfig:
    """Static int8 (weights and activations) with nncf.quantize, model_type TRANSFORMER.

    preset: "mixed" (symmetric weights, asymmetric activations: GELU/softmax outputs are not centred) or
    "performance" (all symmetric). smooth_quant_alpha: SmoothQuant strength on MatMuls (nncf's default for
    transformers is 0.95), None = nncf's choice, a negative value disables it. Calibration runs one text
    per batch, at its real length.
    """

    step: ClassVar[str] = "nncf"
    gate: ClassVar[str] = "int8"
    precision: ClassVar[str] = "int8"

    mode: str = "static"
    preset: str = "mixed"
    subset_size: int = 300
    fast_bias_correction: bool = True
    smooth_quant_alpha: float | None = None
    calibration_batch_size: int = 1

    def __post_init__(self) -> None:
        if self.mode != "static":
            raise InputError(f"OpenVinoStaticConfig.mode is 'static', got {self.mode!r}")
        if self.preset not in ("mixed", "performance"):
            raise InputError(f"unknown nncf preset {self.preset!r}; choose from mixed, performance")

    @property
    def file_name(self) -> str:
        """What sentence-transformers' export_static_quantized_openvino_model writes."""
        return "openvino/openvino_model_qint8_quantized.xml"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": "nncf", **asdict(self)}


@dataclass(frozen=True)
class OpenVinoWeightsConfig:
    """Weight-only compression: weights stored as int8/int4 and decompressed on the fly (OpenVINO's CPU
    plugin may also quantize activations dynamically for such layers); no calibration data needed.
    group_size -1 = per output channel; ratio = share of layers in `weight_type` (the rest, and the
    embeddings, in int8)."""

    step: ClassVar[str] = "nncf"

    mode: str = "weights"
    weight_type: str = "int8_asym"
    group_size: int = -1
    ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.mode != "weights":
            raise InputError(f"OpenVinoWeightsConfig.mode is 'weights', got {self.mode!r}")
        if self.weight_type not in WEIGHT_TYPES:
            raise InputError(
                f"unknown weight type {self.weight_type!r}; choose from {', '.join(WEIGHT_TYPES)}"
            )

    @property
    def bits(self) -> int:
        return 4 if self.weight_type.startswith("int4") else 8

    @property
    def gate(self) -> str:
        return f"int{self.bits}"

    @property
    def precision(self) -> str:
        return f"int{self.bits}"

    @property
    def file_name(self) -> str:
        return f"openvino/openvino_model_int{self.bits}_weights.xml"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": "nncf", **asdict(self)}


WEIGHT_TYPES = ("int8_asym", "int8_sym", "int4_sym", "int4_asym")


QuantizeSpec = OpenVinoStaticConfig | OpenVinoWeightsConfig

PRESETS: dict[str, QuantizeSpec] = {
    "static": OpenVinoStaticConfig(),
    "weights-int8": OpenVinoWeightsConfig(weight_type="int8_asym"),
    # 384/1536-wide MiniLM matrices split evenly into groups of 128.
    "weights-int4": OpenVinoWeightsConfig(weight_type="int4_sym", group_size=128, ratio=1.0),
}


def resolve(quantize: str | QuantizeSpec) -> QuantizeSpec:
    """A preset name or a config object -> a config object."""
    if isinstance(quantize, (OpenVinoStaticConfig, OpenVinoWeightsConfig)):
        return quantize
    try:
        return PRESETS[quantize]
    except KeyError:
        raise InputError(
            f"unknown OpenVINO quantization {quantize!r}; choose from {', '.join(PRESETS)}"
        ) from None


def quantize_static(model: Any, config: OpenVinoStaticConfig, inputs: Sequence[dict[str, np.ndarray]]) -> Any:
    """int8 IR calibrated on `inputs` (model input dicts, one text each at its real length)."""
    nncf = require("nncf", "openvino")
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    preset = nncf.QuantizationPreset(config.preset)
    advanced = None
    if config.smooth_quant_alpha is not None:
        advanced = AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=config.smooth_quant_alpha)
        )
    return nncf.quantize(
        model,
        nncf.Dataset(list(inputs)),
        preset=preset,
        subset_size=min(config.subset_size, len(inputs)),
        fast_bias_correction=config.fast_bias_correction,
        model_type=nncf.ModelType.TRANSFORMER,
        advanced_parameters=advanced,
    )


def compress_weights(model: Any, config: OpenVinoWeightsConfig) -> Any:
    """Weight-only int8/int4 IR (data-free)."""
    nncf = require("nncf", "openvino")
    mode = nncf.CompressWeightsMode(config.weight_type)
    if mode in (nncf.CompressWeightsMode.INT8_ASYM, nncf.CompressWeightsMode.INT8_SYM):
        # int8 is per channel only; nncf refuses group_size/ratio for it.
        return nncf.compress_weights(model, mode=mode)
    return nncf.compress_weights(model, mode=mode, group_size=config.group_size, ratio=config.ratio)


def apply(graph: Graph, ctx: BuildContext, config: QuantizeSpec) -> Graph:
    """The IR quantized (static, calibrated on ctx.calibration) or weight-compressed."""
    ov = require("openvino", "openvino")
    model = ov.Core().read_model(str(graph.path))
    record = config.to_dict()
    if isinstance(config, OpenVinoStaticConfig):
        if ctx.calibration is None:
            raise InputError("static quantization needs calibration texts (--calibration FILE)")
        ctx.progress(f"calibration inputs from {ctx.calibration.source}")
        inputs = calibration_inputs(
            ctx.calibration, ctx.tokenizer, graph.input_names, config.calibration_batch_size
        )
        record["calibration"] = {**ctx.calibration.to_dict(), "batches": len(inputs)}
        ctx.progress(f"static int8 with nncf.quantize ({config.preset}, {len(inputs)} calibration batches)")
        out_model = quantize_static(model, config, inputs)
    else:
        ctx.progress(f"weight compression with nncf.compress_weights ({config.weight_type})")
        out_model = compress_weights(model, config)
    xml = ctx.work_dir / f"nncf-{config.mode}" / "openvino_model.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(out_model, str(xml), compress_to_fp16=False)
    return Graph(xml, graph.runtime, graph.input_names, record)
