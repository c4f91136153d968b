"""Length coverage for calibration: activation ranges must be measured at the lengths the model will run.

Short calibration texts (captions, queries: STS-b train averages 7 words) leave long inputs uncalibrated:
attention and the residual stream of a 256-token input reach values no 10-token input produces, and a
static int8 graph clips them (MiniLM, OpenVINO static int8 calibrated on 2,000 STS-b captions: min
cosine 0.85 vs fp32 on the long validation texts). The cure keeps to the user's own data: texts
concatenated from the calibration texts themselves, seeded, to fill each missing length stratum up to
max_seq_length (and one past it, so truncation is calibrated too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeembed.tokenization import TextTokenizer

STRATA = (1 / 8, 1 / 4, 1 / 2, 1.0)  # shares of max_seq_length each needing calibration texts
SHORT_WORDS = (0, 1, 2)  # and texts of this many words (0: the empty text, special tokens only)


@dataclass(frozen=True)
class LengthCoverage:
    """Which token-length strata the real texts reach, and how many texts were added for the others."""

    targets: tuple[int, ...]
    added: dict[str, int]  # stratum ("≥64 tokens", "1 words", ...) -> texts added for it

    def to_dict(self) -> dict[str, object]:
        return {"targets": list(self.targets), "added": dict(self.added)}


def stratum_targets(max_seq_length: int) -> tuple[int, ...]:
    """Token lengths to cover: 1/8, 1/4, 1/2 of max_seq_length and max_seq_length itself (at least 4)."""
    return tuple(sorted({max(4, math.ceil(max_seq_length * s)) for s in STRATA}))


def cover_lengths(
    texts: Sequence[str], tokenizer: TextTokenizer, share: float = 0.25, seed: int = 0
) -> tuple[list[str], LengthCoverage]:
    """`texts` plus texts joined from them so that every length stratum up to max_seq_length has about
    `share * len(texts) / strata` members; strata the real texts already fill get nothing. The result is
    shuffled (seeded), so a quantizer that reads only a prefix of it still sees every length."""
    targets = stratum_targets(tokenizer.max_seq_length)
    if share <= 0 or not texts:
        return list(texts), LengthCoverage(targets, {})
    lengths = np.array([len(e.ids) for e in tokenizer.encode(list(texts))])
    specials = len(tokenizer.encode([""])[0].ids)
    content = np.maximum(lengths - specials, 1)
    per_stratum = max(1, math.ceil(share * len(texts) / len(targets)))
    rng = np.random.default_rng(seed)
    added: dict[str, int] = {}
    extra: list[str] = []
    bounds = (0, *targets)
    for low, target in zip(bounds, targets):
        have = int(((lengths > low) & (lengths >= target * 0.75)).sum())
        need = per_stratum - have
        if need <= 0:
            continue
        # The longest stratum goes one text past max_seq_length, so truncation is calibrated as well.
        goal = target + (content.max() if target == targets[-1] else 0) - specials
        for _ in range(need):
            picked, total = [], 0
            while total < goal:
                i = int(rng.integers(len(texts)))
                picked.append(texts[i])
                total += int(content[i])
            extra.append(" ".join(picked))
        added[f">={target} tokens"] = need
    # The short end too: one- and two-word texts and the empty text (just the special tokens), which
    # real inputs contain and captions do not; MiniLM's worst int8 cosines were there (0.85 on "").
    for words in SHORT_WORDS:
        have = int((content <= words).sum())
        need = per_stratum - have
        if need <= 0:
            continue
        for _ in range(need):
            split = texts[int(rng.integers(len(texts)))].split()
            extra.append(" ".join(split[:words]))
        added[f"{words} words"] = need
    out = [*texts, *extra]
    order = rng.permutation(len(out))
    return [out[i] for i in order], LengthCoverage(targets, added)
