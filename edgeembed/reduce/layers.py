"""Which layers the student keeps: given, or chosen by agreement with the teacher on a sample.

Dropping layers without training is a poor guess at what a subset can learn, but a good ranking: on
MiniLM the subsets that agree best with the teacher untrained are also the best after distillation, and
a fixed pattern (every other layer) is not among them (STS-b test untrained: [1,3,5] 69.8, [0,2,4,5] 80.7).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeembed.errors import InputError
from edgeembed.head import normalize as l2_normalize
from edgeembed.reduce.student import SentenceModel, encode, keep_layers, required_layers
from edgeembed.tokenization import TextTokenizer

MAX_EXHAUSTIVE = 64  # subsets scored exhaustively up to this many; beyond, greedy removal


@dataclass(frozen=True)
class LayerChoice:
    """The kept layers and how each scored subset agreed with the teacher (mean cosine)."""

    keep: tuple[int, ...]
    scores: tuple[tuple[tuple[int, ...], float], ...] = ()


def parse_keep(keep: str | Sequence[int], total: int) -> tuple[int, ...] | None:
    """'auto' -> None; '0,2,4' or [0, 2, 4] -> sorted tuple, checked against the teacher's layer count."""
    if isinstance(keep, str):
        if keep.strip().lower() == "auto":
            return None
        try:
            items = [int(x) for x in keep.replace(" ", "").split(",") if x != ""]
        except ValueError:
            raise InputError(f"--keep must be 'auto' or layer numbers like 0,2,4; got {keep!r}") from None
    else:
        items = [int(x) for x in keep]
    if not items:
        raise InputError("--keep names no layers; give layer numbers like 0,2,4 or 'auto'")
    bad = [i for i in items if not 0 <= i < total]
    if bad:
        raise InputError(f"--keep {bad} out of range: the teacher has layers 0..{total - 1}")
    dup = sorted({i for i in items if items.count(i) > 1})
    if dup:
        raise InputError(f"--keep lists layer(s) {dup} more than once")
    return tuple(sorted(items))


def agreement_score(
    teacher: SentenceModel,
    keep: Sequence[int],
    tokenizer: TextTokenizer,
    texts: list[str],
    target: np.ndarray,
) -> float:
    """Mean cosine between the untrained student's embeddings and the teacher's (normalized)."""
    student = SentenceModel(keep_layers(teacher.transformer, keep), teacher.spec, teacher.dense)
    emb = encode(student, tokenizer, texts, normalize=True)
    return float((emb * target).sum(1).mean())


def choose_layers(
    teacher: SentenceModel,
    n_layers: int,
    total: int,
    tokenizer: TextTokenizer,
    texts: list[str],
    target: np.ndarray,
) -> LayerChoice:
    """The subset of n_layers that best agrees with the teacher on `texts` (target: teacher, normalized)."""
    if not 1 <= n_layers < total:
        raise InputError(f"--layers must be between 1 and {total - 1} (the teacher has {total} layers)")
    target = l2_normalize(target)
    scores: dict[tuple[int, ...], float] = {}

    def score(keep: tuple[int, ...]) -> float:
        if keep not in scores:
            scores[keep] = agreement_score(teacher, keep, tokenizer, texts, target)
        return scores[keep]

    fixed = set(required_layers(teacher.transformer))
    candidates = [c for c in itertools.combinations(range(total), n_layers) if fixed <= set(c)]
    if len(candidates) <= MAX_EXHAUSTIVE:
        best = max(candidates, key=score)
    else:  # greedy: drop the layer whose removal hurts least, until n_layers remain
        best = tuple(range(total))
        while len(best) > n_layers:
            best = max((tuple(x for x in best if x != drop) for drop in best if drop not in fixed), key=score)
    ranked = tuple(sorted(scores.items(), key=lambda kv: -kv[1]))
    return LayerChoice(best, ranked)
