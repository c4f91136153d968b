"""STS Spearman as a metric a quantizer can optimise (nncf's accuracy control): sentence embeddings of
each pair from a bare `run(inputs) -> token embeddings`, through the artifact's own head."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgeembed.encoder import Encoder
from edgeembed.source import Head
from edgeembed.sts import StsData, spearman
from edgeembed.tokenization import TextTokenizer

StsPair = tuple[str, str, float]


@dataclass(frozen=True)
class _FunctionRuntime:
    """A Runtime over a plain function (e.g. an OpenVINO compiled model inside nncf)."""

    run: Callable[[dict[str, np.ndarray]], np.ndarray]
    input_names: tuple[str, ...]


def sts_pairs(data: StsData) -> list[StsPair]:
    return [(a, b, float(s)) for a, b, s in zip(data.s1, data.s2, data.scores)]


@dataclass(frozen=True)
class StsMetric:
    """(Spearman x100 of cosine vs gold, the cosine of each pair) for a run function; callable as
    edgeembed.quantize.openvino's `Validate`. Fewer than two pairs score 0 (nncf probes with one)."""

    tokenizer: TextTokenizer
    head: Head
    dense_layers: tuple[tuple[np.ndarray, np.ndarray | None], ...]
    input_names: tuple[str, ...]
    batch_size: int = 32

    def __call__(
        self, run: Callable[[dict[str, np.ndarray]], np.ndarray], items: Sequence[StsPair]
    ) -> tuple[float, list[float]]:
        encoder = Encoder(
            _FunctionRuntime(run, self.input_names), self.tokenizer, self.head, list(self.dense_layers)
        )
        n = len(items)
        emb = encoder.encode([p[0] for p in items] + [p[1] for p in items], self.batch_size, normalize=True)
        a, b = emb[:n], emb[n:]
        cos = (a.astype(np.float64) * b).sum(axis=1)
        score = 100.0 * spearman(cos, np.array([p[2] for p in items])) if n > 1 else 0.0
        return (score if np.isfinite(score) else 0.0), [float(c) for c in cos]
