"""What every stage of a build gets: a frozen BuildContext in, a Graph (a file on disk) out.

Back-ends (`edgeembed.backends.*`) turn the reference model in the context into a Graph; steps
(`edgeembed.steps.*`) turn a Graph into another Graph. Neither validates nor writes a manifest: the
orchestrator (`edgeembed.build`) does both, through `edgeembed.gate`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeembed.calibration import CalibrationConfig, calibration_inputs
from edgeembed.errors import InputError
from edgeembed.source import ModelSpec
from edgeembed.sts import StsData
from edgeembed.tokenization import TextTokenizer

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    """The default progress callback: say nothing."""


@dataclass(frozen=True)
class BuildContext:
    """Everything a back-end or step may read. Replaced (dataclasses.replace), never mutated.

    `reference` is the torch module the graphs are exported from and validated against: after model
    transforms (fewer layers, a new head) it is the transformed model, not the folder's original.
    `root` is the artifact's temporary folder (sentence-transformers layout already written there);
    `work_dir`, inside it, holds intermediate graphs and is removed before the artifact is sealed.
    """

    spec: ModelSpec
    reference: Any
    tokenizer: TextTokenizer
    root: Path
    work_dir: Path
    threads: int | None = None
    calibration: CalibrationConfig | None = None
    progress: Progress = _quiet
    # The gate policy (edgeembed.gate.GatePolicy), for a step that quantizes against the gate's own
    # criteria (nncf accuracy control); steps never validate their output themselves.
    policy: Any = None
    # policy.sts parsed once per build (None without an STS file): what a step reads, never the file
    sts: StsData | None = None


@dataclass(frozen=True)
class Graph:
    """A graph file and how to run it. `record` is what the stage that made it wants in the manifest
    (its settings and findings, e.g. which operators fused)."""

    path: Path
    runtime: str
    input_names: tuple[str, ...]
    record: Mapping[str, Any] = field(default_factory=dict)


def calibration_batches(
    ctx: BuildContext, input_names: tuple[str, ...], batch_size: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The static quantizers' shared first move: model inputs from ctx.calibration (real lengths), and
    the record of them for the manifest."""
    if ctx.calibration is None:
        raise InputError("static quantization needs calibration texts (--calibration FILE)")
    ctx.progress(f"calibration inputs from {ctx.calibration.source}")
    inputs = calibration_inputs(ctx.calibration, ctx.tokenizer, input_names, batch_size)
    return inputs, {**ctx.calibration.to_dict(), "batches": len(inputs)}
