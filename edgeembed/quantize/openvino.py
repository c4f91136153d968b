"""NNCF on an OpenVINO IR: static int8 (`nncf.quantize`) and weight-only compression
(`nncf.compress_weights`). Settings are frozen dataclasses with named presets; their dict goes into the
manifest. Calibration inputs come from `edgeembed.calibration` at real sentence lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeembed._imports import require
from edgeembed.errors import InputError


@dataclass(frozen=True)
class OpenVinoStaticConfig:
    """Static int8 (weights and activations) with nncf.quantize, model_type TRANSFORMER.

    preset: "mixed" (symmetric weights, asymmetric activations: GELU/softmax outputs are not centred) or
    "performance" (all symmetric). smooth_quant_alpha: SmoothQuant strength on MatMuls (nncf's default for
    transformers is 0.95), None = nncf's choice, a negative value disables it.
    """

    preset: str = "mixed"
    subset_size: int = 300
    fast_bias_correction: bool = True
    smooth_quant_alpha: float | None = None
    method: str = "static"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": "nncf", **asdict(self)}


@dataclass(frozen=True)
class OpenVinoWeightsConfig:
    """Weight-only compression: weights stored as int8/int4 and decompressed on the fly; activations
    stay float. No calibration data needed. group_size -1 = per output channel; ratio = share of layers
    in the `mode` precision (the rest, and embeddings, in the int8 backup precision)."""

    mode: str = "int8_asym"
    group_size: int = -1
    ratio: float = 1.0
    method: str = "weights"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": "nncf", **asdict(self)}


QuantizeSpec = OpenVinoStaticConfig | OpenVinoWeightsConfig

PRESETS: dict[str, QuantizeSpec] = {
    "static": OpenVinoStaticConfig(),
    "weights-int8": OpenVinoWeightsConfig(mode="int8_asym"),
    # 384/1536-wide MiniLM matrices split evenly into groups of 128.
    "weights-int4": OpenVinoWeightsConfig(mode="int4_sym", group_size=128, ratio=1.0),
}

# Graph file names: the static one is what sentence-transformers' export_static_quantized_openvino_model
# writes, so it can load ours with model_kwargs={"file_name": ...}.
GRAPH_NAMES = {
    "static": "openvino/openvino_model_qint8_quantized.xml",
    "int8_asym": "openvino/openvino_model_int8_weights.xml",
    "int8_sym": "openvino/openvino_model_int8_weights.xml",
    "int4_sym": "openvino/openvino_model_int4_weights.xml",
    "int4_asym": "openvino/openvino_model_int4_weights.xml",
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


def graph_name(config: QuantizeSpec) -> str:
    if isinstance(config, OpenVinoStaticConfig):
        return GRAPH_NAMES["static"]
    if config.mode not in GRAPH_NAMES:
        raise InputError(f"unsupported weight compression mode {config.mode!r}; choose from int8_*, int4_*")
    return GRAPH_NAMES[config.mode]


def quantize_static(model: Any, config: OpenVinoStaticConfig, inputs: Sequence[dict[str, np.ndarray]]) -> Any:
    """int8 IR calibrated on `inputs` (model input dicts, one text each at its real length)."""
    nncf = require("nncf", "openvino")
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    try:
        preset = nncf.QuantizationPreset(config.preset)
    except ValueError:
        raise InputError(f"unknown nncf preset {config.preset!r}; choose from performance, mixed") from None
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
    try:
        mode = nncf.CompressWeightsMode(config.mode)
    except ValueError:
        raise InputError(f"unknown weight compression mode {config.mode!r}") from None
    if mode in (nncf.CompressWeightsMode.INT8_ASYM, nncf.CompressWeightsMode.INT8_SYM):
        # int8 is per channel only; nncf refuses group_size/ratio for it.
        return nncf.compress_weights(model, mode=mode)
    return nncf.compress_weights(model, mode=mode, group_size=config.group_size, ratio=config.ratio)
