"""Optional dependencies, imported on use with a message naming the extra that provides them.

The extras themselves are listed once, in pyproject.toml; `extras()` reads them back from the installed
package's metadata (as model2vec does), so an error can never name an extra that does not exist.
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache
from importlib import metadata
from types import ModuleType

from edgeembed.errors import MissingExtraError

CORE = "core"  # what `pip install edgeembed` gives; not an extra


@lru_cache(maxsize=1)
def extras() -> dict[str, tuple[str, ...]]:
    """Extra name -> its requirement names, from the installed package metadata ({} when not installed)."""
    try:
        meta = metadata.metadata("edgeembed")
    except metadata.PackageNotFoundError:
        return {}
    out: dict[str, list[str]] = {name: [] for name in meta.get_all("Provides-Extra") or []}
    for req in meta.get_all("Requires-Dist") or []:
        m = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        if m and m.group(1) in out:
            out[m.group(1)].append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
    return {k: tuple(v) for k, v in out.items()}


def install_hint(extra: str) -> str:
    if extra == CORE:
        return "pip install edgeembed (a core dependency is missing: reinstall)"
    return f'pip install "edgeembed[{extra}]"'


def require(module: str, extra: str) -> ModuleType:
    """Import `module` or fail with the pip command of the extra (or core install) that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        where = "the core install" if extra == CORE else f"the '{extra}' extra"
        raise MissingExtraError(
            f"{module} is not installed; it comes with {where}: {install_hint(extra)}"
        ) from exc
