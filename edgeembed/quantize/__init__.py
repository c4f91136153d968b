"""Graph optimization and int8 quantization settings: small frozen dataclasses with named presets.

This module is light (no onnx, no onnxruntime.quantization) so that the Encoder can use `check_isa`;
the work itself lives in `edgeembed.quantize.onnx`.

Instruction-set presets follow ONNX Runtime's CPU int8 kernels (and optimum's AutoQuantizationConfig,
which sentence-transformers uses):
- avx512_vnni: s8 weights, u8 activations; VNNI multiplies u8 x s8 without overflow.
- avx512 (no VNNI): s8 weights with reduce_range (7-bit), because vpmaddubsw can saturate on 8 bits.
- avx2: u8 weights, u8 activations.
- arm64: s8 weights (the sdot/udot kernels handle them).
"""

from __future__ import annotations

import platform
import warnings
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgeembed.calibration import CalibrationConfig, check_sources
from edgeembed.errors import EdgeEmbedError, InputError

ISAS = ("avx512_vnni", "avx512", "avx2", "arm64")
MODES = ("dynamic", "static")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
OPTIMIZE_LEVELS = ("none", "basic", "all")
DEFAULT_MIN_RETAINED = 0.99


# ---------------------------------------------------------------------------------------------- ISA
@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (Linux /proc/cpuinfo); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def detect_isa() -> str:
    """The best int8 configuration this CPU runs well: avx512_vnni, avx512, avx2 or arm64."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm64"
    flags = cpu_flags()
    if {"avx512_vnni", "avx512vnni"} & flags:
        return "avx512_vnni"
    if "avx512bw" in flags:
        return "avx512"
    return "avx2"  # u8 x u8 is the safe choice on any x86 CPU


def cpu_supports(isa: str) -> bool:
    """Whether this CPU has the instructions an ISA preset was tuned for."""
    machine = platform.machine().lower()
    if isa == "arm64":
        return machine in ("aarch64", "arm64")
    if machine in ("aarch64", "arm64"):
        return False
    flags = cpu_flags()
    if not flags:  # not Linux: we cannot tell; do not cry wolf
        return True
    need = {"avx512_vnni": {"avx512_vnni", "avx512bw"}, "avx512": {"avx512bw"}, "avx2": {"avx2"}}[isa]
    if isa == "avx512_vnni" and "avx512vnni" in flags:
        flags = flags | {"avx512_vnni"}
    return need <= flags


def check_isa(quantization: dict[str, Any] | None, where: Path | str = "") -> bool:
    """Warn when an artifact was quantized for an instruction set this CPU lacks; True when it is fine."""
    isa = (quantization or {}).get("isa")
    if not isa or isa not in ISAS or cpu_supports(isa):
        return True
    warnings.warn(
        f"{where or 'this artifact'} was quantized for {isa}, which this CPU ({detect_isa()}) lacks: "
        f"it will run slower or (avx512 s8 weights without VNNI) lose accuracy; re-export with --isa {detect_isa()}",
        RuntimeWarning,
        stacklevel=3,
    )
    return False


# ------------------------------------------------------------------------------------------ configs
@dataclass(frozen=True)
class OptimizeConfig:
    """Offline graph optimization.

    basic: ONNX Runtime's basic graph rewrites (constant folding, redundant nodes) saved to disk.
    all: the transformer fusions of onnxruntime.transformers.optimizer (EmbedLayerNormalization, Attention,
    SkipLayerNormalization, BiasGelu). Attention only fuses on a TorchScript-exported graph: the dynamo
    exporter's attention-mask subgraph matches none of ORT's patterns, so `all` exports with dynamo=False.
    """

    level: str = "all"

    def __post_init__(self) -> None:
        if self.level not in OPTIMIZE_LEVELS[1:]:
            raise InputError(
                f"unknown optimize level {self.level!r}; choose from {', '.join(OPTIMIZE_LEVELS)}"
            )

    @property
    def torchscript_export(self) -> bool:
        return self.level == "all"

    @property
    def file_name(self) -> str:
        """As optimum / sentence-transformers name optimized graphs (O1 basic, O2 with fusions)."""
        return "onnx/model_O1.onnx" if self.level == "basic" else "onnx/model_O2.onnx"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exporter": "torchscript" if self.torchscript_export else "dynamo"}


@dataclass(frozen=True)
class QuantizeConfig:
    """int8 quantization with ONNX Runtime.

    dynamic: int8 weights, activation scales computed per batch tensor at run time (no calibration).
    static: QDQ with activation scales fixed by calibration; batch invariant, needs `calibration`.
    `op_types` None means the mode's default (see `edgeembed.quantize.onnx`).
    """

    mode: str = "dynamic"
    isa: str = "avx512_vnni"
    weight_type: str = "qint8"
    activation_type: str = "quint8"
    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] | None = None
    method: str = "minmax"  # static only
    calibration_batch_size: int = 1  # static only: real lengths, no padding in the ranges
    # Static only, when op_types is None (weight MatMuls and embedding Gathers are quantized):
    attention_matmuls: bool = False  # also QK^T and softmax x V (activation x activation)
    ffn_down: bool = False  # also the FFN down-projection, whose post-GELU input has outliers

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown quantization mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.isa not in ISAS:
            raise InputError(f"unknown ISA {self.isa!r}; choose from {', '.join(ISAS)}")
        if self.weight_type not in ("qint8", "quint8") or self.activation_type not in ("qint8", "quint8"):
            raise InputError("weight_type and activation_type must be 'qint8' or 'quint8'")
        if self.method not in CALIBRATION_METHODS:
            raise InputError(
                f"unknown calibration method {self.method!r}; choose from {', '.join(CALIBRATION_METHODS)}"
            )

    @property
    def file_name(self) -> str:
        """sentence-transformers' names: onnx/model_qint8_avx512_vnni.onnx, onnx/model_quint8_avx2.onnx..."""
        if self.mode == "dynamic":
            return f"onnx/model_{self.weight_type}_{self.isa}.onnx"
        return f"onnx/model_{self.weight_type}_static_{self.isa}.onnx"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["op_types"] = list(self.op_types) if self.op_types is not None else None
        if self.mode == "dynamic":
            for key in ("method", "calibration_batch_size", "attention_matmuls", "ffn_down"):
                d.pop(key)
        return d


def _isa_preset(mode: str, isa: str) -> QuantizeConfig:
    weight = "quint8" if isa == "avx2" else "qint8"
    return QuantizeConfig(mode=mode, isa=isa, weight_type=weight, reduce_range=isa == "avx512")


PRESETS: dict[str, QuantizeConfig] = {
    **{f"dynamic_{isa}": _isa_preset("dynamic", isa) for isa in ISAS},
    **{f"static_{isa}": _isa_preset("static", isa) for isa in ISAS},
}
PRESETS["static_qdq"] = PRESETS["static_avx512_vnni"]


def quantize_config(
    quantize: str | QuantizeConfig | None, isa: str | None = None, method: str | None = None
) -> QuantizeConfig | None:
    """A config from a preset name, a mode ('dynamic'/'static', ISA detected unless given) or a config."""
    if quantize is None or quantize == "none":
        return None
    isa = None if isa == "auto" else isa
    if isinstance(quantize, QuantizeConfig):
        cfg = quantize
    elif quantize in MODES:
        cfg = _isa_preset(quantize, isa or detect_isa())
        isa = None
    elif quantize in PRESETS:
        cfg = PRESETS[quantize]
    else:
        raise InputError(
            f"unknown quantization {quantize!r}; choose none, dynamic, static or a preset: {', '.join(PRESETS)}"
        )
    if isa is not None:
        cfg = replace(_isa_preset(cfg.mode, isa), op_types=cfg.op_types, method=cfg.method)
    if method is not None:
        cfg = replace(cfg, method=method)
    return cfg


def optimize_config(optimize: str | OptimizeConfig | None) -> OptimizeConfig | None:
    if optimize is None or optimize == "none":
        return None
    if isinstance(optimize, OptimizeConfig):
        return optimize
    return OptimizeConfig(level=optimize)


@dataclass(frozen=True)
class ExportPlan:
    """What export() does after the fp32 graph: optimize, quantize, validate against fp32."""

    optimize: OptimizeConfig | None = None
    quantize: QuantizeConfig | None = None
    calibration: CalibrationConfig | None = None
    sts: str | None = None
    min_retained: float = DEFAULT_MIN_RETAINED

    @property
    def active(self) -> bool:
        return self.optimize is not None or self.quantize is not None

    @property
    def torchscript_export(self) -> bool:
        return self.optimize is not None and self.optimize.torchscript_export


def make_plan(
    optimize: str | OptimizeConfig | None = None,
    quantize: str | QuantizeConfig | None = None,
    calibration: str | Path | CalibrationConfig | None = None,
    sts: str | Path | None = None,
    min_retained: float = DEFAULT_MIN_RETAINED,
) -> ExportPlan:
    """Check the settings before any expensive work; errors name the missing or wrong piece."""
    q = quantize_config(quantize)
    if isinstance(calibration, (str, Path)):
        calibration = CalibrationConfig(str(calibration))
    if q is not None and q.mode == "static" and calibration is None:
        raise EdgeEmbedError(
            "static quantization needs calibration texts: pass --calibration FILE "
            "(a .txt with one text per line, a .csv/.tsv/.jsonl with --calibration-column, or an STS tsv); "
            "nothing is fetched from a hub"
        )
    check_sources(calibration, sts)
    opt = optimize_config(optimize)
    if q is not None and q.mode == "static" and opt is not None and opt.level == "all":
        raise EdgeEmbedError(
            "static QDQ quantization needs the unfused graph (fused Attention/SkipLayerNormalization "
            "outputs get no activation scales): use --optimize none or basic with --quantize static"
        )
    if not 0.0 < min_retained <= 1.0:
        raise InputError(f"min_retained must be in (0, 1], got {min_retained}")
    return ExportPlan(opt, q, calibration, str(sts) if sts else None, min_retained)
