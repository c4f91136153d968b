"""edgeembed.yardstick: neighbour recall@10 and mean cosine on planted data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from edgeembed.errors import InputError
from edgeembed.yardstick import compare, load_texts, neighbour_recall, read_lines, top_k, within


def fan(angles: np.ndarray) -> np.ndarray:
    """Unit vectors in the plane at these angles (cosine to (1, 0) falls with the angle)."""
    return np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


def test_top_k_is_exact_and_ordered():
    docs = fan(np.linspace(0, 1.5, 100))[::-1].copy()  # nearest to (1, 0) is the last row
    top = top_k(fan(np.array([0.0])), docs, k=10)
    assert top.tolist() == [list(range(99, 89, -1))]


def test_recall_counts_the_share_of_the_reference_top_k_found():
    angles = np.linspace(0, 1.0, 100)
    ref = fan(angles)
    moved = angles.copy()
    moved[[7, 8, 9]] = np.pi / 2  # three of the reference's top-10 go far away
    q = fan(np.array([0.0]))
    y = compare(q, ref, q, fan(moved))
    assert y.recall_at_k == pytest.approx(0.7)
    assert y.k == 10 and y.queries == 1 and y.corpus == 100
    assert y.mean_cosine == pytest.approx(
        float(np.cos(np.pi / 2 - angles[[7, 8, 9]]).sum() + 97) / 100, abs=1e-5
    )


def test_recall_across_dimensions_has_no_cosine():
    rng = np.random.default_rng(0)
    docs, queries = rng.normal(size=(300, 8)), rng.normal(size=(20, 8))
    rotation = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    pad = np.zeros((300, 4))  # same geometry in 12 dims: same neighbours
    y = compare(
        queries, docs, np.hstack([queries @ rotation, np.zeros((20, 4))]), np.hstack([docs @ rotation, pad])
    )
    assert y.recall_at_k == pytest.approx(1.0) and y.mean_cosine is None


def test_recall_of_an_unrelated_space_is_low():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2000, 16)), rng.normal(size=(2000, 16))
    y = compare(a[:50], a[50:], b[:50], b[50:])
    assert y.recall_at_k < 0.1  # chance: 10 / 1950


def test_neighbour_recall_needs_equal_shapes():
    with pytest.raises(InputError, match="shapes differ"):
        neighbour_recall(np.zeros((2, 10), int), np.zeros((2, 5), int))


def test_within_never_counts_a_query_as_its_own_neighbour():
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(400, 8)).astype(np.float32)
    y = within(emb, emb, n_queries=100)
    assert (
        y.recall_at_k == 1.0 and y.queries == 100 and y.corpus == 399 and y.mean_cosine == pytest.approx(1.0)
    )
    noisy = emb + rng.normal(scale=0.5, size=emb.shape).astype(np.float32)
    assert 0 < within(emb, noisy, n_queries=100).recall_at_k < 1


def test_load_texts_reads_the_lines_and_samples_with_the_seed(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"line {i}\n" for i in range(1, 41)), encoding="utf-8")
    assert read_lines(corpus, 10, 20) == [f"line {i}" for i in range(11, 21)]
    queries = [f"q{i}" for i in range(50)]
    a = load_texts(corpus, queries, lines=(10, 20), n_queries=5, corpus_size=4, seed=3)
    b = load_texts(corpus, queries, lines=(10, 20), n_queries=5, corpus_size=4, seed=3)
    assert a == b and len(a.queries) == 5 and len(a.corpus) == 4
    assert set(a.corpus) <= {f"line {i}" for i in range(11, 21)} and set(a.queries) <= set(queries)
    assert a.source["lines"] == [11, 20] and a.all == [*a.queries, *a.corpus]
    with pytest.raises(InputError, match="no text in lines"):
        load_texts(corpus, queries, lines=(100, 200))
    with pytest.raises(InputError, match="not found"):
        load_texts(tmp_path / "nope.txt", queries)


def test_the_gate_records_neighbour_recall_with_enough_texts(tiny_artifact, tmp_path):
    from edgeembed.encoder import Encoder
    from edgeembed.gate import YARDSTICK_MIN_TEXTS, GatePolicy, check_step, invariance_texts
    from edgeembed.sts import load_sts

    texts = list(dict.fromkeys(invariance_texts(2 * YARDSTICK_MIN_TEXTS, seed=5)))
    pairs = [f"{a}\t{b}\t{i % 5}" for i, (a, b) in enumerate(zip(texts[::2], texts[1::2]))]
    (tmp_path / "sts.tsv").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    enc = Encoder.load(tiny_artifact)
    out = check_step(enc, enc, GatePolicy(), "float", "same graph", sts=load_sts(tmp_path / "sts.tsv"))
    assert out["neighbour_recall"]["recall_at_k"] == 1.0 and out["neighbour_recall"]["k"] == 10
    few = check_step(enc, enc, GatePolicy(), "float", "same graph", sts=None)
    assert "neighbour_recall" not in few  # a dozen texts: no top-10 worth recording


def test_an_sts_set_the_reference_cannot_rank_is_refused(tiny_artifact, tmp_path):
    """Identical sentences in every pair: the reference's Spearman is undefined (it was a
    ZeroDivisionError traceback when it came out 0)."""
    from edgeembed.encoder import Encoder
    from edgeembed.errors import InputError
    from edgeembed.gate import GatePolicy, check_step
    from edgeembed.sts import load_sts

    pairs = [f"text {w}\ttext {w}\t{i % 5}" for i, w in enumerate(["a", "b", "c", "d", "e", "f"])]
    (tmp_path / "same.tsv").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    enc = Encoder.load(tiny_artifact)
    with pytest.raises(InputError, match="cannot measure what a variant retains"):
        check_step(enc, enc, GatePolicy(), "float", "same graph", sts=load_sts(tmp_path / "same.tsv"))
