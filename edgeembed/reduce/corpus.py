"""Distillation texts: a local one-text-per-line file, read once, hashed, and sampled with a seed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeembed.errors import InputError


class CorpusError(InputError):
    """The corpus is missing, not UTF-8, empty or too small for what was asked."""


@dataclass(frozen=True)
class Corpus:
    """Non-empty lines of a text file, in a seeded order (the first `n` of `order` are the sample of size n)."""

    path: Path
    sha256: str
    texts: tuple[str, ...]
    seed: int
    excluded: int = 0  # lines left out because evaluation holds them (never trained on)
    exclusion: str = ""  # digest of what was left out: part of the teacher-embedding cache key

    @property
    def key(self) -> str:
        """File digest, plus the exclusion when there was one (the sample differs with it)."""
        if not self.exclusion:
            return self.sha256
        return hashlib.sha256(f"{self.sha256}:{self.exclusion}".encode()).hexdigest()

    def sample(self, start: int, stop: int) -> list[str]:
        """Texts at positions [start, stop) of the seeded permutation."""
        order = np.random.default_rng(self.seed).permutation(len(self.texts))
        return [self.texts[i] for i in order[start:stop]]

    def __len__(self) -> int:
        return len(self.texts)

    def require(self, needed: int, what: str) -> None:
        if len(self.texts) < needed:
            raise CorpusError(
                f"corpus {self.path} has {len(self.texts)} texts; {what} needs at least {needed} "
                "(give a larger corpus or ask for fewer steps)"
            )


def read_corpus(
    path: str | Path,
    seed: int = 0,
    exclude_lines: tuple[int, int] | None = None,
    exclude_texts: Iterable[str] = (),
) -> Corpus:
    """Read a .txt corpus (one text per line; blank lines skipped). Errors name the file and the fix.

    Lines [start, stop) of `exclude_lines` (0-based), and every line equal to one of them or to one of
    `exclude_texts`, are left out: evaluation texts (the yardstick's corpus and queries) are never
    trained on, wherever else a duplicate sits in the file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CorpusError(f"corpus not found: {p}")
    if not p.is_file():
        raise CorpusError(f"corpus is not a file: {p}")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CorpusError(f"corpus {p} is not UTF-8 text (line {line}): re-encode it as UTF-8") from None
    lines = [line.strip() for line in text.splitlines()]
    held: set[str] = {t.strip() for t in exclude_texts}
    if exclude_lines is not None:
        held.update(lines[exclude_lines[0] : exclude_lines[1]])
    held.discard("")
    texts = tuple(t for t in lines if t and t not in held)
    excluded = sum(1 for t in lines if t) - len(texts)
    exclusion = ""
    if held:
        exclusion = hashlib.sha256("\n".join(sorted(held)).encode()).hexdigest()
    if not texts:
        raise CorpusError(
            f"corpus {p} has no non-empty lines left to train on: one text per line is expected"
        )
    return Corpus(p.resolve(), hashlib.sha256(data).hexdigest(), texts, seed, excluded, exclusion)
