"""edgeembed: sentence embeddings made small and fast for CPUs and edge devices.

The runtime path (Encoder) needs numpy, tokenizers and onnxruntime only; export needs the `export` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeembed.encoder import Encoder
from edgeembed.errors import (
    ArtifactError,
    DriftError,
    EdgeEmbedError,
    InputError,
    MissingExtraError,
    RetentionError,
    SourceError,
    ValidationError,
    WorkerError,
)
from edgeembed.pool import EncoderPool
from edgeembed.source import ModelSpec, load_source

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "DriftError",
    "EdgeEmbedError",
    "Encoder",
    "EncoderPool",
    "InputError",
    "MissingExtraError",
    "ModelSpec",
    "RetentionError",
    "SourceError",
    "ValidationError",
    "WorkerError",
    "__version__",
    "export",
    "load_source",
]

if TYPE_CHECKING:
    from edgeembed.build import ExportResult


def export(*args: Any, **kwargs: Any) -> ExportResult:
    """Export a model to a validated artifact; see edgeembed.build.export (imported lazily: torch)."""
    from edgeembed.build import export as _export

    return _export(*args, **kwargs)
