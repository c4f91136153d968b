"""How much of the fp32 model a quantized graph keeps: per-sentence cosine vs the fp32 export on a fixed
sample, and STS Spearman retained when an STS file is given. Below `min_retained` the export fails."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed.encoder import Encoder
from edgeembed.errors import ValidationError
from edgeembed.sts import load_sts, sts_score
from edgeembed.validation import agreement

MIN_RETAINED = 0.99


@dataclass(frozen=True)
class Retention:
    """`retained` is STS Spearman quantized / fp32 when an STS file was given, else the mean cosine."""

    n: int
    mean_cosine: float
    min_cosine: float
    retained: float
    measure: str
    min_retained: float
    sts_path: str | None = None
    sts_fp32: float | None = None
    sts_quantized: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = f"cosine vs fp32 mean {self.mean_cosine:.5f} min {self.min_cosine:.5f}"
        if self.sts_fp32 is not None:
            text += f", STS Spearman {self.sts_quantized:.2f} vs fp32 {self.sts_fp32:.2f}"
        return f"{text}; retained {100 * self.retained:.2f}% (required {100 * self.min_retained:.1f}%)"


def measure_retention(
    reference: Encoder,
    candidate: Encoder,
    sentences: list[str],
    sts: str | Path | None = None,
    min_retained: float = MIN_RETAINED,
    batch_size: int = 32,
) -> Retention:
    """Embed the sample (plus the STS sentences, if any) with both encoders and compare."""
    data = load_sts(sts) if sts is not None else None
    texts = list(dict.fromkeys(sentences + (data.sentences if data else [])))
    ref = reference.encode(texts, batch_size=batch_size)
    cand = candidate.encode(texts, batch_size=batch_size)
    agr = agreement(ref, cand)
    sts_ref = sts_cand = None
    if data is not None:
        index = {t: i for i, t in enumerate(texts)}
        rows = [index[s] for s in data.sentences]
        sts_ref = sts_score(data, ref[rows])
        sts_cand = sts_score(data, cand[rows])
        retained = sts_cand / sts_ref if sts_ref > 0 else float("nan")
    else:
        retained = agr.mean_cosine
    return Retention(
        n=agr.n,
        mean_cosine=agr.mean_cosine,
        min_cosine=agr.min_cosine,
        retained=float(retained),
        measure="sts_spearman" if data is not None else "mean_cosine",
        min_retained=min_retained,
        sts_path=str(data.path) if data is not None else None,
        sts_fp32=sts_ref,
        sts_quantized=sts_cand,
    )


def require_retention(r: Retention, what: str) -> None:
    """Fail loudly, with the numbers, when quantization lost too much."""
    if not np.isfinite(r.retained) or r.retained < r.min_retained:
        raise ValidationError(f"{what} kept too little of the fp32 model: {r.summary()}; nothing was written")
