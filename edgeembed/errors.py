"""Exceptions that reach users. Each carries one clear sentence; the CLI prints it without a traceback."""

from __future__ import annotations


class EdgeEmbedError(Exception):
    """Base class: a user-facing problem with input, source, artifact or environment."""


class SourceError(EdgeEmbedError):
    """The model folder cannot be read or uses something edgeembed does not support."""


class ArtifactError(EdgeEmbedError):
    """An artifact is missing, corrupt, tampered with, or of an unknown format version."""


class ValidationError(EdgeEmbedError):
    """An export drifted past its tolerance; nothing was written."""


class MissingExtraError(EdgeEmbedError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class InputError(EdgeEmbedError, ValueError):
    """A bad argument to a public call (unknown prompt name, batch size < 1, ...)."""
