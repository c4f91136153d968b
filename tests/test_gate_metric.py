"""The gate as nncf's accuracy-control metric (edgeembed.steps.gate_metric): 1.0 for the fp32 graph on
any subset of items (nncf ranks quantizers on the items int8 changed most), below min_retained exactly
when a gate criterion is missed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeembed.encoder import Encoder
from edgeembed.steps.gate_metric import GateMetric, gate_items
from edgeembed.sts import StsData, spearman

from conftest import WORDS


@pytest.fixture(scope="module")
def fp32(tiny_artifact) -> Encoder:
    return Encoder.load(tiny_artifact)


@pytest.fixture(scope="module")
def items(fp32):
    """STS pairs whose gold scores follow the fp32 cosine with noise (full-set Spearman high, small
    subsets' lower), then agreement-only sentences."""
    rng = np.random.default_rng(0)
    s1 = [" ".join(rng.choice(WORDS, size=rng.integers(1, 10))) for _ in range(60)]
    s2 = [" ".join(rng.choice(WORDS, size=rng.integers(1, 10))) for _ in range(60)]
    e1, e2 = fp32.encode(s1, normalize=True), fp32.encode(s2, normalize=True)
    cos = (e1 * e2).sum(1)
    gold = cos + rng.normal(0, 0.5 * cos.std(), size=60)
    data = StsData(Path("sts.tsv"), tuple(s1), tuple(s2), gold)
    return gate_items(data, ["", "a", "the cat sat on the mat"])


def _metric(fp32: Encoder, items) -> GateMetric:
    return GateMetric.from_encoder(fp32, items, 0.99, 0.90, 0.97)


def test_fp32_scores_one_on_every_subset(fp32, items):
    metric = _metric(fp32, items)
    run = fp32.runtime.run
    full, per_item = metric(run, items)
    assert full == pytest.approx(1.0) and len(per_item) == len(items)
    assert min(per_item) == pytest.approx(1.0, abs=1e-6)

    # A ranking subset: its own fp32 Spearman is far from the full set's. Compared with the full set's,
    # the unchanged fp32 graph looked like a large STS loss (the bug: ranking followed that noise).
    def sub_fp32(subset) -> float:
        cos = [float(metric.reference[a] @ metric.reference[b]) for a, b, _ in subset]
        return 100 * spearman(np.array(cos), np.array([s for *_, s in subset]))

    subset = min((items[i : i + 8] for i in range(0, 56, 4)), key=sub_fp32)
    assert sub_fp32(subset) / metric.sts_fp32 < 0.97  # the case the old formula got wrong
    value, _ = metric(run, subset)
    assert value == pytest.approx(1.0)


def test_a_graph_that_misses_a_floor_scores_below_min_retained(fp32, items):
    metric = _metric(fp32, items)
    base = fp32.runtime.run
    rng = np.random.default_rng(1)

    def noisy(feed):
        out = base(feed)
        return out + rng.normal(0, 3 * float(np.abs(out).mean()), size=out.shape).astype(out.dtype)

    value, per_item = metric(noisy, items)
    assert value < 0.99
    assert min(per_item) < 0.90
    # On the full set the STS term is the gate's retained share: score / fp32.
    texts = list(dict.fromkeys(t for a, b, _ in items for t in (a, b)))
    emb = dict(zip(texts, fp32.encode(texts, normalize=True)))
    assert metric.spearman(emb, items) == pytest.approx(metric.sts_fp32)


class _Fixed:
    """A stand-in encoder: a fixed row per text (zeros for the empty text)."""

    def encode(self, texts, batch_size=1, normalize=True):
        return np.array([[0.0, 0.0] if t == "" else [1.0, 0.0] for t in texts], dtype=np.float32)


def test_end_to_end_check_counts_two_zero_embeddings_as_agreeing():
    """A tokenizer with no special tokens (Qwen3's) gives the empty text no token; both the graph and the
    Encoder pool that to zeros, which must not read as cosine 0 (the strings-in export was refused)."""
    from edgeembed.gate import GatePolicy, check_end_to_end

    out = check_end_to_end(_Fixed(), _Fixed(), ["", "a text"], {}, GatePolicy(), "graph", sts=None)
    assert out["min_cosine_vs_encoder"] == 1.0
