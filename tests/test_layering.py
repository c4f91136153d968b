"""The package's import graph follows the layering declared in DEVELOPERS.md: no module imports one
above it (lazy imports inside functions included), and no private name crosses modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "edgeembed"


def declared_layers() -> dict[str, int]:
    """`L<n>: name name ...` lines of the ```layers block in DEVELOPERS.md -> {module prefix: n}."""
    text = (REPO / "DEVELOPERS.md").read_text(encoding="utf-8")
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "DEVELOPERS.md has no ```layers block"
    out = {}
    for line in block.group(1).splitlines():
        m = re.match(r"L(\d+):\s*(.+)", line.strip())
        if m:
            for name in m.group(2).split("#")[0].split():
                out[name] = int(m.group(1))
    return out


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def layer_of(name: str, layers: dict[str, int]) -> int | None:
    """Longest declared prefix: `steps.fusion` -> `steps`."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        key = ".".join(parts[:i])
        if key in layers:
            return layers[key]
    return None


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported edgeembed module, names imported from it, line) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgeembed"):
            out.append(
                (node.module.removeprefix("edgeembed").lstrip("."), [a.name for a in node.names], node.lineno)
            )
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("edgeembed."):
                    out.append((a.name.removeprefix("edgeembed."), [], node.lineno))
    return out


def test_every_module_has_a_declared_layer():
    layers = declared_layers()
    missing = [
        module_name(p)
        for p in PKG.rglob("*.py")
        if module_name(p) and layer_of(module_name(p), layers) is None
    ]
    assert not missing, f"modules without a layer in DEVELOPERS.md: {missing}"


def test_no_module_imports_one_above_it():
    layers = declared_layers()
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        me = module_name(path)
        mine = layer_of(me, layers) if me else max(layers.values()) + 1  # the package root is the top
        for target, _names, line in imports(path):
            theirs = layer_of(target, layers) if target else max(layers.values()) + 1
            if theirs is not None and mine is not None and theirs > mine:
                bad.append(
                    f"{path.relative_to(REPO)}:{line} ({me or 'edgeembed'}, L{mine}) imports {target} (L{theirs})"
                )
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_private_name_crosses_modules():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        me = module_name(path)
        for target, names, line in imports(path):
            if target == me:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {private} from {target}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_the_checker_catches_an_upward_import(tmp_path):
    """The walk would see an upward import (a test that could fail)."""
    layers = declared_layers()
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from edgeembed.build import export\n")
    ((target, _names, _line),) = imports(f)
    assert layer_of(target, layers) > layer_of("encoder", layers)
