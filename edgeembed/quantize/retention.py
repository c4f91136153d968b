"""Validation of a quantized graph against the fp32 one: per-sentence cosine (mean and min) on the fixed
validation sentences (plus the STS sentences when an STS file is given), STS Spearman retained, and batch
invariance (bs1 vs bs32). The dict it returns has the keys the ONNX int8 path records, so manifests of
both formats read the same; past a floor, or below `min_retained` of the STS Spearman, it raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed.encoder import Encoder
from edgeembed.errors import ValidationError
from edgeembed.quantize import DEFAULT_MIN_RETAINED
from edgeembed.sts import load_sts, sts_score
from edgeembed.validation import agreement

INVARIANCE_SAMPLE = 256


def batch_invariance(encoder: Encoder, texts: Sequence[str]) -> dict[str, float]:
    """Cosine of each text embedded alone vs inside length-sorted batches of 32."""
    alone = encoder.encode(list(texts), batch_size=1, normalize=True)
    batched = encoder.encode(list(texts), batch_size=32, normalize=True)
    cos = (alone * batched).sum(axis=1)
    return {"n": len(texts), "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}


def validate_variant(
    reference: Encoder,
    candidate: Encoder,
    sentences: list[str],
    what: str,
    reference_name: str,
    min_cosine: float,
    min_mean_cosine: float,
    sts: str | Path | None = None,
    min_retained: float = DEFAULT_MIN_RETAINED,
) -> dict[str, Any]:
    """Compare candidate with reference; raise ValidationError with the numbers past tolerance."""
    data = load_sts(sts) if sts is not None else None
    texts = list(dict.fromkeys([*sentences, *(data.sentences if data else [])]))
    ref = reference.encode(texts, batch_size=32, normalize=False)
    cand = candidate.encode(texts, batch_size=32, normalize=False)
    agr = agreement(ref, cand)
    out: dict[str, Any] = {
        "reference": reference_name,
        **agr.to_dict(),
        "min_cosine_required": min_cosine,
        "min_mean_cosine_required": min_mean_cosine,
    }
    problems = []
    if not np.isfinite(agr.min_cosine) or agr.min_cosine < min_cosine:
        problems.append(f"min cosine vs fp32 {agr.min_cosine:.5f} < {min_cosine}")
    if not agr.mean_cosine >= min_mean_cosine:
        problems.append(f"mean cosine vs fp32 {agr.mean_cosine:.5f} < {min_mean_cosine}")
    detail = ""
    if data is not None:
        fp32_sts = sts_score(data, dict(zip(texts, ref)))
        var_sts = sts_score(data, dict(zip(texts, cand)))
        retained = var_sts / fp32_sts
        out.update(sts_path=str(data.path), sts_fp32=fp32_sts, sts=var_sts, sts_retained=retained)
        out["min_retained"] = min_retained
        detail = f" (STS-b {var_sts:.2f} vs fp32 {fp32_sts:.2f})"
        if not retained >= min_retained:
            problems.append(f"STS Spearman retained {retained:.4f} < min_retained {min_retained}")
    if problems:
        raise ValidationError(
            f"{what} failed validation: {'; '.join(problems)}{detail}; "
            f"mean cosine {agr.mean_cosine:.5f} over {agr.n} texts; nothing was written"
        )
    sample = data.sentences[:INVARIANCE_SAMPLE] if data is not None else texts[:INVARIANCE_SAMPLE]
    out["batch_invariance"] = batch_invariance(candidate, sample)
    return out


def summary(v: dict[str, Any]) -> str:
    text = f"vs fp32: mean cosine {v['mean_cosine']:.5f}, min {v['min_cosine']:.5f}"
    if "sts" in v:
        text += f"; STS-b {v['sts']:.2f} vs {v['sts_fp32']:.2f} ({100 * v['sts_retained']:.2f}% retained)"
    inv = v.get("batch_invariance")
    if inv:
        text += f"; batch invariance (bs1 vs bs32) mean {inv['mean_cosine']:.5f} min {inv['min_cosine']:.5f}"
    return text
