"""Agreement between two sets of embeddings, and the fixed sentences every export is checked on."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgeembed.errors import ValidationError

_BASE = [
    "",
    "a",
    "Hello!",
    "The cat sat on the mat.",
    "A man is playing a guitar on stage while the crowd sings along.",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates again.",
    "¿Dónde está la biblioteca? Das Wetter ist schön. 東京は大きな都市です。",
    "Numbers 3.14159, e-mail someone@example.com, URL https://example.org/path?q=1 and #hashtags.",
    "   leading and trailing whitespace   ",
    "UPPER CASE TEXT SHOUTING ABOUT EMBEDDINGS",
]


def validation_sentences(max_seq_length: int) -> list[str]:
    """Texts from one token to past max_seq_length, so truncation and padding are both exercised."""
    long_unit = "Edge devices embed text quickly when the model is small and well quantized. "
    medium = long_unit * 3
    past_max = long_unit * (max_seq_length // 8 + 2)
    return [*_BASE, medium, past_max]


@dataclass(frozen=True)
class Agreement:
    """How closely candidate embeddings follow the reference, per sentence."""

    n: int
    min_cosine: float
    mean_cosine: float
    max_abs_diff: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    if reference.shape != candidate.shape:
        raise ValidationError(f"shape mismatch: reference {reference.shape} vs candidate {candidate.shape}")
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    denom = np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1), 1e-12)
    cos = (ref * cand).sum(axis=1) / denom
    return Agreement(
        n=int(ref.shape[0]),
        min_cosine=float(cos.min()),
        mean_cosine=float(cos.mean()),
        max_abs_diff=float(np.abs(ref - cand).max()),
    )


def require_agreement(agr: Agreement, min_cosine: float, what: str) -> None:
    """Fail loudly, with the numbers, when an export drifted past its tolerance."""
    if not np.isfinite(agr.min_cosine) or agr.min_cosine < min_cosine:
        raise ValidationError(
            f"{what} drifted from its reference: min cosine {agr.min_cosine:.6f} < {min_cosine} "
            f"(mean {agr.mean_cosine:.6f}, max abs diff {agr.max_abs_diff:.3g} over {agr.n} sentences); "
            "nothing was written"
        )
