"""Agreement with the teacher: how closely a variant's embeddings follow a reference's where users use them.

Two numbers, both against the reference model (the fp32 teacher, or the fp32 graph of the same model):
- mean cosine of each text's embedding to the reference's (held-out corpus texts); only when both live
  in the same space (a PCA head changes the dimension);
- neighbour recall@k: for each query, the share of the reference's exact top-k (cosine) among the corpus
  that the variant's exact top-k finds. It works across dimensions, and it shows what search loses where
  cosine means hide it (a dynamic int8 MiniLM keeps mean cosine 0.99 and moves 12 % of the top-10).

The default texts are fixed: 1,000 STS-b test sentences (a seeded sample of its unique sentences) as
queries over 50,000 corpus sentences, lines 50,001-100,000 of the shared corpus. Training must never see
them (`edgeembed.reduce` excludes them). Numpy only: exact search on 50k x 384 is a few matrix products.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed.errors import InputError
from edgeembed.head import normalize as l2_normalize
from edgeembed.sts import load_sts

K = 10
CORPUS_LINES = (50_000, 100_000)  # 0-based [start, stop): lines 50,001-100,000 of the file
QUERIES = 1_000
SEED = 0
Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class YardstickTexts:
    """Queries and the corpus searched, with where they came from (recorded beside the numbers)."""

    queries: tuple[str, ...]
    corpus: tuple[str, ...]
    source: dict[str, Any]

    @property
    def all(self) -> list[str]:
        return [*self.queries, *self.corpus]


@dataclass(frozen=True)
class Yardstick:
    """The numbers: `mean_cosine` None when the variant's dimension differs from the reference's."""

    recall_at_k: float
    k: int
    mean_cosine: float | None
    queries: int
    corpus: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_lines(path: str | Path, start: int, stop: int) -> list[str]:
    """Non-empty stripped lines with 0-based line numbers in [start, stop) of a UTF-8 text file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"yardstick corpus not found: {p}")
    out = []
    with p.open(encoding="utf-8", errors="strict") as f:
        for i, line in enumerate(f):
            if i >= stop:
                break
            if i >= start and line.strip():
                out.append(line.strip())
    return out


def load_texts(
    corpus: str | Path,
    queries: str | Path | Sequence[str],
    *,
    lines: tuple[int, int] = CORPUS_LINES,
    corpus_size: int | None = None,
    n_queries: int = QUERIES,
    seed: int = SEED,
) -> YardstickTexts:
    """Queries (an STS file's unique sentences, or texts given) and corpus lines [start, stop) of `corpus`,
    each sampled with `seed` when a smaller size is asked (cheap checks: the export's record)."""
    docs = read_lines(corpus, *lines)
    if not docs:
        raise InputError(f"yardstick corpus {corpus} has no text in lines {lines[0] + 1}-{lines[1]}")
    if isinstance(queries, str | Path):
        q_all = load_sts(queries).sentences
        q_from = str(Path(queries).expanduser().resolve())
    else:
        q_all, q_from = list(queries), "given"
    rng = np.random.default_rng(seed)
    q = [q_all[i] for i in sorted(rng.permutation(len(q_all))[:n_queries])]
    if corpus_size is not None and corpus_size < len(docs):
        docs = [docs[i] for i in sorted(rng.permutation(len(docs))[:corpus_size])]
    digest = hashlib.sha256("\n".join([*q, "\0", *docs]).encode()).hexdigest()
    source = {
        "corpus": str(Path(corpus).expanduser().resolve()),
        "lines": [lines[0] + 1, lines[1]],
        "queries_from": q_from,
        "seed": seed,
        "sha256": digest,
    }
    return YardstickTexts(tuple(q), tuple(docs), source)


def _unit(x: np.ndarray) -> np.ndarray:
    return l2_normalize(np.asarray(x, dtype=np.float32))


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int = K, block: int = 256) -> np.ndarray:
    """Indices of each query's k nearest corpus rows by cosine, best first (exact; ties by index)."""
    q, c = _unit(queries), _unit(corpus)
    k = min(k, len(c))
    out = np.empty((len(q), k), dtype=np.int64)
    for s in range(0, len(q), block):
        sims = q[s : s + block] @ c.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.lexsort((part, -np.take_along_axis(sims, part, 1)), axis=1)
        out[s : s + block] = np.take_along_axis(part, order, 1)
    return out


def neighbour_recall(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over queries of |reference top-k ∩ candidate top-k| / k (two index arrays of equal shape)."""
    if reference.shape != candidate.shape:
        raise InputError(f"top-k shapes differ: {reference.shape} vs {candidate.shape}")
    hits = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(reference, candidate)]
    return float(np.mean(hits) / reference.shape[1]) if len(hits) else float("nan")


def mean_cosine(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Mean per-text cosine; None when the spaces differ (not comparable row by row)."""
    if reference.shape != candidate.shape:
        return None
    return float((_unit(reference) * _unit(candidate)).sum(axis=1).mean())


def compare(
    ref_queries: np.ndarray,
    ref_corpus: np.ndarray,
    cand_queries: np.ndarray,
    cand_corpus: np.ndarray,
    k: int = K,
) -> Yardstick:
    """The yardstick from embeddings already computed (mean cosine over the corpus texts)."""
    recall = neighbour_recall(top_k(ref_queries, ref_corpus, k), top_k(cand_queries, cand_corpus, k))
    return Yardstick(
        recall_at_k=round(recall, 5),
        k=min(k, len(ref_corpus)),
        mean_cosine=None if (c := mean_cosine(ref_corpus, cand_corpus)) is None else round(c, 5),
        queries=len(ref_queries),
        corpus=len(ref_corpus),
    )


def within(
    reference: np.ndarray, candidate: np.ndarray, n_queries: int, k: int = K, seed: int = SEED
) -> Yardstick:
    """The yardstick inside one set of texts: `n_queries` seeded rows as queries over all the others
    (a query is never its own neighbour). For checks that already hold embeddings of a few thousand texts
    (the export gate), so that no text is embedded twice."""
    n = len(reference)
    qi = np.sort(np.random.default_rng(seed).permutation(n)[: min(n_queries, n)])
    k = min(k, n - 1)

    def search(emb: np.ndarray) -> np.ndarray:
        e = _unit(emb)
        sims = e[qi] @ e.T
        sims[np.arange(len(qi)), qi] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        return part

    return Yardstick(
        recall_at_k=round(neighbour_recall(search(reference), search(candidate)), 5),
        k=k,
        mean_cosine=None if (c := mean_cosine(reference, candidate)) is None else round(c, 5),
        queries=len(qi),
        corpus=n - 1,
    )


def measure(
    reference: Embed | tuple[np.ndarray, np.ndarray], candidate: Embed, texts: YardstickTexts
) -> Yardstick:
    """Embed `texts` with the candidate (and the reference, unless its (queries, corpus) embeddings are
    given: the teacher's are reused across variants) and compare."""
    if callable(reference):
        ref = np.asarray(reference(texts.all), dtype=np.float32)
        ref_q, ref_c = ref[: len(texts.queries)], ref[len(texts.queries) :]
    else:
        ref_q, ref_c = reference
    cand = np.asarray(candidate(texts.all), dtype=np.float32)
    return compare(ref_q, ref_c, cand[: len(texts.queries)], cand[len(texts.queries) :])
