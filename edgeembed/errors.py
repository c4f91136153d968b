"""Exceptions that reach users. Each carries one clear sentence; the CLI prints it without a traceback."""

from __future__ import annotations


class EdgeEmbedError(Exception):
    """Base class: a user-facing problem with input, source, artifact or environment."""


class SourceError(EdgeEmbedError):
    """The model folder cannot be read or uses something edgeembed does not support."""


class ArtifactError(EdgeEmbedError):
    """An artifact is missing, corrupt, tampered with, or of an unknown format version."""


class ValidationError(EdgeEmbedError):
    """A graph failed its gate; nothing was written. Subclasses say which kind of check failed."""


class DriftError(ValidationError):
    """Embeddings moved past a cosine tolerance vs the reference (torch, or the fp32 graph)."""


class RetentionError(ValidationError):
    """A quantized graph kept less of the reference's STS Spearman than `min_retained`."""


class UnsupportedError(EdgeEmbedError):
    """A step cannot apply to this model (e.g. fusion for an unknown model type)."""


class MissingExtraError(EdgeEmbedError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class OutputError(EdgeEmbedError):
    """An output cannot be written: a read-only folder, a full disk (the message names the path)."""


class InputError(EdgeEmbedError, ValueError):
    """A bad argument to a public call (unknown prompt name, batch size < 1, ...)."""


class WorkerError(EdgeEmbedError):
    """A worker process of an EncoderPool died or could not start; the pool starts it again."""
