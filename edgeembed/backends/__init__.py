"""Format back-ends: plain functions `export(context, config) -> Graph`, one module per format.

A back-end writes a graph file from `context.reference` into `context.work_dir` and returns it; it does
not validate and writes no manifest (the orchestrator, `edgeembed.build`, does both). Adding a format is
one module with `Config` (a frozen dataclass) and `export`, plus one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgeembed.errors import InputError

# format name -> module with `Config` and `export(context, config) -> Graph`
REGISTRY: dict[str, str] = {
    "onnx": "edgeembed.backends.onnx",
    "openvino": "edgeembed.backends.openvino",
}


def backend(name: str) -> ModuleType:
    try:
        return importlib.import_module(REGISTRY[name])
    except KeyError:
        raise InputError(f"unknown format {name!r}; choose from {', '.join(REGISTRY)}") from None
