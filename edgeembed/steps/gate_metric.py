"""The export gate as one number a quantizer can optimise (nncf's accuracy control).

nncf keeps a metric within a relative drop of the fp32 model's; the gate has three criteria (STS
Spearman retained >= min_retained, and min / mean cosine vs fp32 above the int8 floors on the STS and
validation sentences). `GateMetric` folds them into one value in "retained" units: 1.0 for the fp32
graph, >= min_retained exactly when every criterion holds, lower the further a criterion is missed.
So nncf, asked for a drop of at most 1 - min_retained, reverts quantizers until the gate would pass.
STS Spearman alone is not enough: a ranking over a few thousand pairs can hold while a whole kind of
text (one the calibration lacked) moves far from its fp32 embedding, which the cosine floors catch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgeembed.encoder import Encoder
from edgeembed.source import Head
from edgeembed.sts import StsData, spearman
from edgeembed.tokenization import TextTokenizer

# (text a, text b, gold score); NaN gold = a text checked for agreement only (a validation sentence).
Item = tuple[str, str, float]


@dataclass(frozen=True)
class _FunctionRuntime:
    """A Runtime over a plain function (e.g. an OpenVINO compiled model inside nncf)."""

    run: Callable[[dict[str, np.ndarray]], np.ndarray]
    input_names: tuple[str, ...]


def gate_items(data: StsData | None, sentences: Sequence[str]) -> list[Item]:
    """STS pairs with their scores, then each validation sentence as an agreement-only item."""
    pairs = [(a, b, float(s)) for a, b, s in zip(data.s1, data.s2, data.scores)] if data else []
    return [*pairs, *((s, s, float("nan")) for s in sentences)]


@dataclass(frozen=True, eq=False)
class GateMetric:
    """Callable as edgeembed.steps.nncf's `Validate`: (metric, per-item agreement) for a run
    function. Per item: the lower cosine of its two texts vs fp32, which picks the items nncf ranks on."""

    tokenizer: TextTokenizer
    head: Head
    dense_layers: tuple[tuple[np.ndarray, np.ndarray | None], ...]
    input_names: tuple[str, ...]
    reference: dict[str, np.ndarray]  # fp32 embeddings, normalized, of every text of the items
    sts_fp32: float  # fp32 Spearman x100 on all pairs: the scale of a Spearman loss
    min_retained: float
    min_cosine: float
    min_mean_cosine: float
    batch_size: int = 32

    @classmethod
    def from_encoder(
        cls,
        fp32: Encoder,
        items: Sequence[Item],
        min_retained: float,
        min_cosine: float,
        min_mean_cosine: float,
    ) -> GateMetric:
        texts = list(dict.fromkeys(t for a, b, _ in items for t in (a, b)))
        emb = fp32.encode(texts, batch_size=32, normalize=True)
        reference = dict(zip(texts, emb))
        metric = cls(
            fp32.tokenizer,
            fp32.head,
            fp32.dense_layers,
            tuple(fp32.runtime.input_names),
            reference,
            1.0,
            min_retained,
            min_cosine,
            min_mean_cosine,
        )
        return cls(**{**metric.__dict__, "sts_fp32": metric.spearman(reference, items)})

    @staticmethod
    def spearman(emb: dict[str, np.ndarray], items: Sequence[Item]) -> float:
        scored = [(a, b, s) for a, b, s in items if np.isfinite(s)]
        if len(scored) < 2:
            return float("nan")
        cos = [float(emb[a].astype(np.float64) @ emb[b]) for a, b, _ in scored]
        return 100.0 * spearman(np.array(cos), np.array([s for _, _, s in scored]))

    def _floor(self, value: float, floor: float) -> float:
        """1 when the floor holds, else below min_retained in proportion to the miss."""
        return 1.0 if value >= floor else self.min_retained * max(value, 0.0) / floor

    def __call__(
        self, run: Callable[[dict[str, np.ndarray]], np.ndarray], items: Sequence[Item]
    ) -> tuple[float, list[float]]:
        encoder = Encoder(
            _FunctionRuntime(run, self.input_names), self.tokenizer, self.head, list(self.dense_layers)
        )
        texts = list(dict.fromkeys(t for a, b, _ in items for t in (a, b)))
        emb = dict(zip(texts, encoder.encode(texts, self.batch_size, normalize=True)))
        agree = {t: float(emb[t].astype(np.float64) @ self.reference[t]) for t in texts}
        per_item = [min(agree[a], agree[b]) for a, b, _ in items]
        cos = np.array(list(agree.values()))
        # The Spearman lost on these items vs fp32 on the *same* items, in units of the full set's
        # fp32 Spearman (on the full set: score / fp32, the gate's retained). nncf ranks quantizers on
        # a subset (the items int8 changed most), whose own Spearman is far below the full set's:
        # divided by the full set's, it read as a 20-30 % STS loss that no revert could cure, and it,
        # not the cosine floors, decided which quantizers went back to float.
        score = self.spearman(emb, items)
        fp32 = self.spearman(self.reference, items)
        retained = 1.0 - (fp32 - score) / self.sts_fp32 if np.isfinite(score) and self.sts_fp32 else 1.0
        metric = min(
            retained,
            self._floor(float(cos.min()), self.min_cosine),
            self._floor(float(cos.mean()), self.min_mean_cosine),
        )
        return float(metric), per_item
