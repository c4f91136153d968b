"""Graph steps: plain functions `apply(graph, context, config) -> Graph`, one module per kind of step.

A step reads a graph file and writes a new one into `context.work_dir`; it neither validates nor writes
a manifest (the orchestrator, `edgeembed.build`, runs the gate on every step's output). A step's config
is a frozen dataclass whose `step` names its module here, `gate` the tolerance kind it is checked with
("float", "int8", "int4"), and `file_name` where its graph lands in the artifact. Adding a step is one
module plus one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from edgeembed.errors import InputError

# step name -> module with `apply(graph, context, config) -> Graph`
REGISTRY: dict[str, str] = {
    "fusion": "edgeembed.steps.fusion",
    "onnx_int8": "edgeembed.steps.onnx_int8",
    "nncf": "edgeembed.steps.nncf",
}


def onnx_opset(model: Any, default: int) -> int:
    """The default-domain opset an ONNX ModelProto imports (`default` when it names none): ops whose
    signature changed between opsets (ReduceMax's axes, LayerNormalization's arrival) are written to it."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default)


def step_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(REGISTRY[name])
    except KeyError:
        raise InputError(f"unknown graph step {name!r}; known: {', '.join(REGISTRY)}") from None
