"""The sweep: every variant edgeembed can export, defined in one place, exported then benchmarked.

Adding a variant is one line in SWEEP. A variant this install cannot make (no calibration data given,
a missing extra) is listed as not run, with the reason; a variant whose export raises is recorded as
failed, with its error, and the bench then exits non-zero: nothing is dropped silently.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeembed.bench.harness import VariantFailure

# Placeholder in settings for the user's --calibration source.
CALIBRATION = "<calibration>"


@dataclass(frozen=True)
class SweepVariant:
    """A name and the keyword arguments for edgeembed.export that produce it."""

    name: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def needs_calibration(self) -> bool:
        return CALIBRATION in self.settings.values()


# Setting names follow edgeembed.export (ONNX int8 presets: edgeembed.steps.onnx_int8, OpenVINO presets:
# edgeembed.steps.nncf). One line per variant.
SWEEP: tuple[SweepVariant, ...] = (
    SweepVariant("onnx-fp32", {"optimize": "none"}),
    SweepVariant("onnx-fused", {"optimize": "all"}),
    SweepVariant("onnx-int8-dynamic", {"optimize": "none", "quantize": "dynamic_avx512_vnni"}),
    SweepVariant("onnx-fused-int8-dynamic", {"optimize": "all", "quantize": "dynamic_avx512_vnni"}),
    SweepVariant("onnx-fused-int8-row", {"optimize": "all", "quantize": "dynamic_row_avx512_vnni"}),
    SweepVariant("onnx-int8-static", {"quantize": "static_avx512_vnni", "calibration": CALIBRATION}),
    SweepVariant("openvino-fp32", {"format": "openvino"}),
    SweepVariant("openvino-bf16", {"format": "openvino", "precision": "bf16"}),
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
) -> tuple[list[Path], list[VariantFailure]]:
    """Export each variant to out/<name>: the artifact folders, and the variants not run or failed."""
    from edgeembed.build import export

    step = on_step or (lambda _msg: None)
    calibration = calibration_arg(calibration)
    out = Path(out).expanduser()
    paths: list[Path] = []
    failures: list[VariantFailure] = []
    for v in variants:
        why = unavailable(v, calibration)
        if why:
            failures.append(VariantFailure(v.name, "not run", why))
            step(f"{v.name} not run: {why}")
            continue
        kwargs = {k: (calibration if val == CALIBRATION else val) for k, val in v.settings.items()}
        step(f"exporting {v.name}")
        try:
            result = export(model, out / v.name, overwrite=overwrite, threads=threads, **kwargs)
        except Exception as exc:  # recorded as failed, shown in the report, and the bench exits non-zero
            failures.append(VariantFailure(v.name, "export", f"{type(exc).__name__}: {exc}"))
            step(f"{v.name} FAILED to export: {failures[-1].error}")
            continue
        paths.append(result.path)
    return paths, failures
