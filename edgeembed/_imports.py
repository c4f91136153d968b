"""Optional dependencies, checked once per use site with a message naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgeembed.errors import MissingExtraError


def require(module: str, extra: str) -> ModuleType:
    """Import `module` or fail with the pip command that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module} is not installed; it comes with the '{extra}' extra: pip install \"edgeembed[{extra}]\""
        ) from exc
