"""STS-style evaluation: sentence pairs with a gold score; Spearman of cosine vs gold, in numpy.

Reads the STS benchmark tsv layout (genre, file, year, id, score, s1, s2[, extra...]) and a simple
`s1<TAB>s2<TAB>score` layout, detected per row; a first line whose score is not a number is a header.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeembed.errors import EdgeEmbedError


@dataclass(frozen=True)
class StsData:
    """Parallel lists of sentence pairs and gold scores; `path` for messages and reports."""

    path: Path
    s1: tuple[str, ...]
    s2: tuple[str, ...]
    scores: np.ndarray

    @property
    def sentences(self) -> list[str]:
        """Unique sentences, in first-seen order."""
        return list(dict.fromkeys(self.s1 + self.s2))


class _NotANumber(ValueError):
    pass


def _parse_row(row: list[str], path: Path, lineno: int) -> tuple[str, str, float]:
    def num(x: str) -> float:
        try:
            value = float(x)
        except ValueError:
            raise _NotANumber(f"{path}:{lineno}: score {x!r} is not a number") from None
        if not math.isfinite(value):
            raise EdgeEmbedError(f"{path}:{lineno}: score {x!r} is not a finite number")
        return value

    if len(row) >= 7:  # STS benchmark layout; extra columns (sources) are ignored
        return row[5], row[6], num(row[4])
    if len(row) == 3:
        return row[0], row[1], num(row[2])
    raise EdgeEmbedError(
        f"{path}:{lineno}: expected 7+ tab-separated columns (STS benchmark) or 3 (s1, s2, score), got {len(row)}"
    )


def load_sts(path: str | Path) -> StsData:
    """Read an STS-style file; a missing, empty or malformed file is an error naming file and line."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "sts-test.csv"
    if not p.is_file():
        raise EdgeEmbedError(f"STS file not found: {p}")
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    header = ""
    try:
        with p.open(encoding="utf-8", newline="") as f:
            for lineno, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
                if not row or not "".join(row).strip():
                    continue
                try:
                    a, b, s = _parse_row(row, p, lineno)
                except _NotANumber as exc:
                    if lineno == 1:  # a header row (e.g. sentence1, sentence2, score)
                        header = f" (line 1 was read as a header: {exc})"
                        continue
                    raise EdgeEmbedError(str(exc)) from None
                s1.append(a)
                s2.append(b)
                scores.append(s)
    except UnicodeDecodeError as exc:
        raise EdgeEmbedError(f"STS file {p} is not UTF-8 text: {exc}") from None
    if len(scores) < 2:
        raise EdgeEmbedError(f"STS file {p} has {len(scores)} scored pairs; need at least 2{header}")
    if len(set(scores)) < 2:
        raise EdgeEmbedError(
            f"STS file {p}: every pair has the score {scores[0]}; a rank correlation needs different scores"
        )
    return StsData(p, tuple(s1), tuple(s2), np.asarray(scores, dtype=np.float64))


def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties get their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    boundaries = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1], True])
    for start, end in itertools.pairwise(boundaries):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation: Pearson correlation of the ranks."""
    ra, rb = _rank(np.asarray(a, dtype=np.float64)), _rank(np.asarray(b, dtype=np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom else float("nan")


def sts_score(data: StsData, embeddings: dict[str, np.ndarray] | np.ndarray) -> float:
    """Spearman x100 of cosine similarity vs gold. `embeddings` maps sentence -> vector, or is
    aligned with `data.sentences`."""
    if isinstance(embeddings, np.ndarray):
        embeddings = dict(zip(data.sentences, embeddings))
    a = np.stack([embeddings[s] for s in data.s1]).astype(np.float64)
    b = np.stack([embeddings[s] for s in data.s2]).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return 100.0 * spearman(cos, data.scores)
