"""edgeembed.reduce: a smaller Sentence-Transformers model from a teacher — fewer layers (distilled),
fewer dimensions (PCA head), or static embeddings. The output is a model folder (plus reduce.json) that
`edgeembed export` takes like any model. Needs the `export` extra (torch, transformers)."""

from __future__ import annotations

from typing import Any

from edgeembed.reduce.config import (
    DISTILL_PRESETS,
    STATIC_PRESETS,
    DistillConfig,
    ReducePlan,
    ReduceResult,
    StaticConfig,
)

__all__ = [
    "DISTILL_PRESETS",
    "STATIC_PRESETS",
    "DistillConfig",
    "ReducePlan",
    "ReduceResult",
    "StaticConfig",
    "reduce",
]


def reduce(*args: Any, **kwargs: Any) -> ReduceResult:
    """See edgeembed.reduce.run.reduce (imported on use: it needs torch from the `export` extra)."""
    from edgeembed._imports import require

    require("torch", "export")
    require("transformers", "export")
    from edgeembed.reduce.run import reduce as _reduce

    return _reduce(*args, **kwargs)
