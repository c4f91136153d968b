"""The files an app ships from an artifact, with their sizes and operator sets (what `info` shows).

Why: a mobile developer picks one graph file and, for a reduced ONNX Runtime build, needs its operators.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from edgeembed._imports import require

CONFIG_NAME = "required_operators.config"
GRAPH_SUFFIXES = (".onnx", ".ort", ".xml")
SIDE_FILES = ("tokenizer.json", CONFIG_NAME)


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
    try:
        return operator_set(path), ""
    except ImportError as exc:  # reading .onnx needs the onnx package (export extra)
        return {}, f"operators need {exc.name or 'onnx'}"


def external_files(graph: Path) -> list[str]:
    """Files an .onnx graph's initializers read as external data, relative to the graph's folder."""
    onnx = require("onnx", "export")
    model = onnx.load(str(graph), load_external_data=False)
    found = {
        entry.value
        for t in model.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        for entry in t.external_data
        if entry.key == "location"
    }
    return sorted(found)


def _inside(root: Path, path: Path) -> Path:
    """`path` if it resolves inside `root`, else a path that does not exist (never stat outside)."""
    resolved = path.resolve()
    return resolved if resolved.is_relative_to(root.resolve()) else root / ".outside-the-artifact"


def _external(root: Path, graph: Path, external: list[str]) -> tuple[int, str]:
    """Bytes of a graph's external-data files inside the artifact, and the note naming them (and any
    missing or outside the folder)."""
    paths = {f: _inside(root, graph.parent / f) for f in external}
    missing = [f for f, p in paths.items() if not p.is_file()]
    note = f"weights in {', '.join(external)} (external data): ship it too"
    if missing:
        note += f"; MISSING or outside the artifact: {', '.join(missing)}"
    return sum(p.stat().st_size for f, p in paths.items() if f not in missing), note


LINK_NOTE = "a symbolic link, not read: an artifact holds regular files only"


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def shippable_files(root: Path) -> list[ShippableFile]:
    """Graphs (.onnx, .ort, OpenVINO .xml + .bin) and their side files, sorted by path.

    Like Encoder.load, it never opens anything through a symbolic link (which may point out of the
    folder): a linked graph or side file is listed with a note, unread; linked folders are not entered."""
    root = Path(root)
    out = []
    for p in sorted(_walk(root)):
        if p.suffix not in GRAPH_SUFFIXES and p.name not in SIDE_FILES:
            continue
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out.append(ShippableFile(rel, 0, {}, LINK_NOTE))
        elif not p.is_file():
            continue
        elif p.suffix in GRAPH_SUFFIXES:
            size = p.stat().st_size
            note = ""
            if p.suffix == ".xml":
                weights = p.with_suffix(".bin")
                if _regular(weights):
                    size += weights.stat().st_size
                elif weights.is_symlink():
                    note = f"{weights.name} is {LINK_NOTE}"
            ops, ops_note = _operators(p)
            note = "; ".join(n for n in (note, ops_note) if n)
            external = external_files(p) if p.suffix == ".onnx" and not ops_note else []
            if external:  # the graph's weights file, or a static model's table in model.safetensors
                extra, note = _external(root, p, external)
                size += extra
            out.append(ShippableFile(rel, size, ops, note))
        else:
            out.append(ShippableFile(rel, p.stat().st_size))
    return out


def _walk(root: Path) -> list[Path]:
    """Every entry below root (files and links), without following a linked folder."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        found.extend(here / n for n in filenames)
        found.extend(here / n for n in dirnames if (here / n).is_symlink())
    return found


def operator_set(graph: Path) -> dict[str, list[str]]:
    """{domain: sorted op types} of an .onnx or .ort graph, what `info` shows and a reduced build needs."""
    graph = Path(graph)
    if graph.suffix == ".ort":
        return _ort_operators(graph)
    onnx = require("onnx", "export")
    model = onnx.load(str(graph), load_external_data=False)
    ops: dict[str, set[str]] = {}

    def walk(g: object) -> None:
        for node in g.node:  # type: ignore[attr-defined]
            ops.setdefault(node.domain or "ai.onnx", set()).add(node.op_type)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(model.graph)
    return {domain: sorted(names) for domain, names in sorted(ops.items())}


def _ort_operators(graph: Path) -> dict[str, list[str]]:
    from onnxruntime.tools.ort_format_model import create_config_from_models

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / CONFIG_NAME
        with contextlib.redirect_stdout(io.StringIO()):
            create_config_from_models([graph], config, False)
        return parse_config(config)


def parse_config(config: Path) -> dict[str, list[str]]:
    """Read a required_operators.config: lines `domain;opset;Op1,Op2` (comments start with #)."""
    ops: dict[str, set[str]] = {}
    for line in Path(config).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        domain, _opset, names = line.split(";", 2)
        ops.setdefault(domain, set()).update(n for n in names.split(",") if n)
    return {domain: sorted(names) for domain, names in sorted(ops.items())}
