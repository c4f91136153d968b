"""The sweep: every variant edgeembed can export, defined in one place, exported then benchmarked.

Adding a variant is one line in SWEEP. A variant whose export options this install does not have
(an older edgeembed, a missing extra) is skipped with a note instead of failing the whole sweep.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeembed.errors import EdgeEmbedError

# Placeholder in settings for the user's --calibration source.
CALIBRATION = "<calibration>"


@dataclass(frozen=True)
class SweepVariant:
    """A name and the keyword arguments for edgeembed.pipeline.export that produce it."""

    name: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def needs_calibration(self) -> bool:
        return CALIBRATION in self.settings.values()


# Setting names follow edgeembed.pipeline.export (quantize presets: edgeembed.quantize, OpenVINO presets:
# edgeembed.quantize.openvino). One line per variant.
SWEEP: tuple[SweepVariant, ...] = (
    SweepVariant("onnx-fp32"),
    SweepVariant("onnx-fused", {"optimize": "all"}),
    SweepVariant("onnx-int8-dynamic", {"quantize": "dynamic_avx512_vnni"}),
    SweepVariant("onnx-fused-int8-dynamic", {"optimize": "all", "quantize": "dynamic_avx512_vnni"}),
    SweepVariant("onnx-int8-static", {"quantize": "static_avx512_vnni", "calibration": CALIBRATION}),
    SweepVariant("openvino-fp32", {"format": "openvino"}),
    SweepVariant("openvino-fp32-bf16", {"format": "openvino", "precision": "bf16"}),
    SweepVariant("openvino-int8", {"format": "openvino", "quantize": "static", "calibration": CALIBRATION}),
    SweepVariant("openvino-int8-weights", {"format": "openvino", "quantize": "weights-int8"}),
)


def unavailable(variant: SweepVariant, calibration: Any | None) -> str | None:
    """Why this install cannot export `variant` (None: it can): missing calibration data or extra."""
    if variant.needs_calibration and calibration is None:
        return "needs calibration data (--calibration)"
    if variant.settings.get("format") == "openvino" and importlib.util.find_spec("openvino") is None:
        return 'needs the openvino extra: pip install "edgeembed[openvino]"'
    return None


def calibration_arg(calibration: Any | None) -> Any | None:
    """A path becomes a CalibrationConfig, which both quantizers accept."""
    if not isinstance(calibration, (str, Path)):
        return calibration
    from edgeembed.calibration import CalibrationConfig

    return CalibrationConfig(source=str(calibration))


def export_sweep(
    model: str | Path | None,
    out: str | Path,
    calibration: Any | None = None,
    variants: tuple[SweepVariant, ...] = SWEEP,
    overwrite: bool = False,
    threads: int | None = None,
    on_step: Callable[[str], None] | None = None,
) -> tuple[list[Path], list[str]]:
    """Export each variant to out/<name>; returns the artifact folders and notes on skipped variants."""
    from edgeembed import pipeline

    step = on_step or (lambda _msg: None)
    calibration = calibration_arg(calibration)
    out = Path(out).expanduser()
    paths: list[Path] = []
    notes: list[str] = []
    for v in variants:
        why = unavailable(v, calibration)
        if why:
            notes.append(f"{v.name} skipped: {why}")
            step(notes[-1])
            continue
        kwargs = {k: (calibration if val == CALIBRATION else val) for k, val in v.settings.items()}
        target = out / v.name
        step(f"exporting {v.name}")
        try:
            result = pipeline.export(model, target, overwrite=overwrite, threads=threads, **kwargs)
        except EdgeEmbedError as exc:  # a validation failure or a refused setting: note it, go on
            notes.append(f"{v.name} skipped: export failed: {exc}")
            step(notes[-1])
            continue
        except Exception as exc:  # a batch job: one broken variant must not sink the others
            notes.append(f"{v.name} skipped: export failed: {type(exc).__name__}: {exc}")
            step(notes[-1])
            continue
        paths.append(result.path)
    return paths, notes
