"""Search: the exact numpy reference, binary first pass + rescoring, the index folder, the CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgeembed.cli import main
from edgeembed.corpus.search import Embeddings, SearchIndex, exact_search, hamming_search
from edgeembed.errors import InputError


def _unit(rng, n, dim=32):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_is_brute_force(rng):
    corpus, queries = _unit(rng, 1000), _unit(rng, 7)
    hits = exact_search(queries, corpus, k=5, chunk=97)  # chunks that do not divide the corpus
    full = queries @ corpus.T
    expected = np.argsort(-full, axis=1)[:, :5]
    np.testing.assert_array_equal(hits.rows, expected)
    np.testing.assert_allclose(hits.scores, np.take_along_axis(full, expected, 1), rtol=1e-6)
    np.testing.assert_array_equal(hits.records, expected + 1)


@pytest.mark.parametrize("backend", ["numpy", "faiss", "usearch"])
def test_hamming_backends_agree_with_brute_force(rng, backend):
    if backend != "numpy":
        pytest.importorskip(backend)
    corpus = rng.integers(0, 256, (2000, 8), dtype=np.uint8)
    queries = rng.integers(0, 256, (4, 8), dtype=np.uint8)
    dist = np.bitwise_count(corpus[None] ^ queries[:, None]).sum(-1)
    rows = hamming_search(queries, corpus, 10, backend)
    np.testing.assert_array_equal(np.take_along_axis(dist, rows, 1), np.sort(dist, axis=1)[:, :10])


@pytest.mark.parametrize("rescore_precision", ["int8", "float32"])
def test_rescored_search_finds_the_exact_neighbours(rng, tmp_path, rescore_precision):
    corpus = _unit(rng, 400)
    targets = np.array([5, 123, 399, 200])
    queries = corpus[targets] + 0.05 * _unit(rng, len(targets))  # exact top-1: the target row
    np.save(tmp_path / "emb.npy", corpus)
    idx = SearchIndex.build(
        Embeddings.open(tmp_path / "emb.npy"), tmp_path / "idx", rescore_precision, "numpy"
    )
    assert idx.binary.nbytes * 32 == corpus.nbytes
    np.testing.assert_array_equal(idx.search(queries, k=10, rescore=4).rows[:, 0], targets)
    # every row a candidate: rescoring alone decides, so fp32 is exact and int8 nearly so
    exact = exact_search(queries, corpus, k=10)
    hits = idx.search(queries, k=10, rescore=40)
    if rescore_precision == "float32":
        np.testing.assert_array_equal(hits.rows, exact.rows)
        np.testing.assert_allclose(hits.scores, exact.scores, rtol=1e-5)
    else:
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hits.rows, exact.rows)])
        assert recall >= 0.9
    reloaded = SearchIndex.load(tmp_path / "idx", backend="numpy")
    np.testing.assert_array_equal(reloaded.search(queries, k=10, rescore=40).rows, hits.rows)


def test_index_refuses_quantized_embeddings(rng, tmp_path):
    np.save(tmp_path / "q.npy", rng.integers(-128, 127, (10, 8), dtype=np.int8))
    with pytest.raises(InputError, match="float32"):
        Embeddings.open(tmp_path / "q.npy")


def test_index_and_search_cli(tiny_artifact, tmp_path):
    runner = CliRunner()
    words = ["hello world", "the cat sat on the mat", "stock market fell", "a man is playing a guitar"]
    corpus = [f"{w} {i}" for i in range(30) for w in words]
    src = tmp_path / "c.txt"
    src.write_text("\n".join(corpus) + "\n")
    emb, idx = tmp_path / "e.npy", tmp_path / "idx"
    assert (
        runner.invoke(
            main, ["embed", str(tiny_artifact), str(src), "--out", str(emb), "--no-progress"]
        ).exit_code
        == 0
    )
    res = runner.invoke(main, ["index", "build", str(emb), "--out", str(idx)])
    assert res.exit_code == 0, res.output
    query = corpus[17]
    args = ["search", str(idx), str(tiny_artifact), query, "-k", "3", "--backend", "numpy"]
    res = runner.invoke(main, [*args, "--texts", str(src), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["hits"][0]["record"] == 18 and out["hits"][0]["text"] == query
    res = runner.invoke(main, ["search", str(tmp_path), str(tiny_artifact), "x"])
    assert res.exit_code == 1 and "not a search index" in res.output


def test_missing_extras_name_them(monkeypatch, rng, tmp_path, tiny_artifact):
    from edgeembed.corpus import Source
    from edgeembed.corpus.ray_job import embed_with_ray
    from edgeembed.errors import MissingExtraError

    np.save(tmp_path / "emb.npy", _unit(rng, 50))
    SearchIndex.build(Embeddings.open(tmp_path / "emb.npy"), tmp_path / "idx", backend="numpy")
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingExtraError, match=r"edgeembed\[search\]"):
        SearchIndex.load(tmp_path / "idx", backend="faiss")
    monkeypatch.setitem(sys.modules, "ray", None)
    (tmp_path / "c.txt").write_text("a\n")
    with pytest.raises(MissingExtraError, match=r"edgeembed\[ray\]"):
        embed_with_ray(tiny_artifact, Source.open(tmp_path / "c.txt"), tmp_path / "out")
