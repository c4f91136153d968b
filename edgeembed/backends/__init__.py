"""Format back-ends: one module per format, asked by the orchestrator instead of branching on names.

A back-end module declares what build.py needs to know about its format:
- `RUNTIME`: the runtime its token graphs run with; `FILE_NAME`: the fp32 graph's place in an artifact;
- `Config` (a frozen dataclass) and `export(context, config) -> Graph`: writes a graph file from
  `context.reference` into `context.work_dir` (no validation, no manifest: build.py does both);
- `resolve_options(optimize, quantize, precision) -> Options`: the format's option checks and step
  configs, before any model loads; `plan(settings, model_type) -> [PlannedStep]`: its graph steps;
  `backend_config(settings, steps) -> Config`;
- `END_TO_END`: how it builds its strings-in graph (an `EndToEnd`), or None when it has none;
- `HEAD_OUTPUT`: whether its final token graph gets the head as a second output (`sentence_embedding`,
  steps.sentence_output; its runtime must declare `named_outputs`);
- `EXTERNAL_DATA`: whether its final graph's weights go to an external-data file;
  `ort_target(step_config) -> (isa, platform) | None`: .ort conversion target, None if not convertible.
Adding a format is one such module plus one line in REGISTRY.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from edgeembed.errors import InputError

# format name -> module
REGISTRY: dict[str, str] = {
    "onnx": "edgeembed.backends.onnx",
    "openvino": "edgeembed.backends.openvino",
}
# Formats that are another format plus a packaging step: name -> (format, packaging flag).
ALIASES: dict[str, tuple[str, str]] = {"ort": ("onnx", "ort")}
DEFAULT = "onnx"


@dataclass(frozen=True)
class Options:
    """A format's resolved export options: the optimize setting, the quantization step config (or None),
    and whether that step is static (needs calibration texts)."""

    optimize: Any
    quantize: Any
    static: bool


@dataclass(frozen=True)
class PlannedStep:
    config: Any
    optional: bool = False  # fall back to the previous graph when it cannot apply or fails the gate
    skip: str | None = None  # known before any work: why an optional step will not run (recorded)
    # Slower configs to try in order when `config` fails the gate or falls short of its preferred floor
    # (GatePolicy.short_of_preferred); the last one needs only the floors.
    fallbacks: tuple[Any, ...] = ()


@dataclass(frozen=True)
class EndToEnd:
    """A format's strings-in graph: tokenizer + model + head in one file, run by `runtime`.

    `build(graph, tokenizer_file, head, dense, out)` writes it; `compare(out, tokenizer_file, head, texts)`
    lists the texts whose token ids differ from `tokenizers`'; `details(out, tokenizer_file)` is what the
    manifest records about it (tokenizer op, operators). `extra` is the module it needs (the `mobile`
    extra); `exact_token_ids`: its tokenizer matches `tokenizers` on every text, so the gate allows no
    mismatch; `options_precision`: it runs with the artifact's inference precision."""

    runtime: str
    extra: str
    what: str
    build: Callable[..., Any]
    compare: Callable[..., list]
    details: Callable[[Path, Path], dict[str, Any]]
    exact_token_ids: bool = False
    options_precision: bool = False


def resolve_format(name: str) -> tuple[str, str | None]:
    """(format, packaging step or None) for a format name the user gives ("ort" is ONNX + .ort)."""
    if name in ALIASES:
        return ALIASES[name]
    if name not in REGISTRY:
        raise InputError(f"unknown format {name!r}; choose from {', '.join([*REGISTRY, *ALIASES])}")
    return name, None


def backend(name: str) -> ModuleType:
    try:
        return importlib.import_module(REGISTRY[name])
    except KeyError:
        raise InputError(f"unknown format {name!r}; choose from {', '.join(REGISTRY)}") from None
