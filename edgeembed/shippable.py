"""The files an app ships from an artifact, with their sizes and operator sets (what `info` shows).

Why: a mobile developer picks one graph file and, for a reduced ONNX Runtime build, needs its operators.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

GRAPH_SUFFIXES = (".onnx", ".ort", ".xml")
SIDE_FILES = ("tokenizer.json", "required_operators.config")


@dataclass(frozen=True)
class ShippableFile:
    """One file an app may ship: path relative to the artifact, size in bytes (an IR counts its .bin),
    operators by domain (empty when they cannot be read without an optional package)."""

    path: str
    size: int
    operators: dict[str, list[str]] = field(default_factory=dict)
    note: str = ""


def _operators(path: Path) -> tuple[dict[str, list[str]], str]:
    if path.suffix == ".xml":
        types: dict[str, set[str]] = {}
        for layer in ET.parse(path).getroot().iter("layer"):
            types.setdefault(layer.get("version", "?"), set()).add(layer.get("type", "?"))
        return {k: sorted(v) for k, v in sorted(types.items())}, ""
    from edgeembed.steps.ort_format import operator_set

    try:
        return operator_set(path), ""
    except ImportError as exc:  # reading .onnx needs the onnx package (export extra)
        return {}, f"operators need {exc.name or 'onnx'}"


def shippable_files(root: Path) -> list[ShippableFile]:
    """Graphs (.onnx, .ort, OpenVINO .xml + .bin) and their side files, sorted by path."""
    root = Path(root)
    out = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if p.suffix in GRAPH_SUFFIXES:
            size = p.stat().st_size + (p.with_suffix(".bin").stat().st_size if p.suffix == ".xml" else 0)
            ops, note = _operators(p)
            out.append(ShippableFile(rel, size, ops, note))
        elif p.name in SIDE_FILES:
            out.append(ShippableFile(rel, p.stat().st_size))
    return out
