"""Search: the exact numpy reference, binary first pass + rescoring, the index folder, the CLI."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgeembed.cli import main
from edgeembed.corpus.search import Embeddings, SearchIndex, exact_search, hamming_search
from edgeembed.errors import InputError

pytestmark = pytest.mark.usefixtures("faiss_one_thread")


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


@pytest.mark.parametrize(
    ("first_pass", "rescore_precision"),
    [("pq", "int8"), ("pq", "float32"), ("binary", "int8"), ("binary", "float32")],
)
def test_rescored_search_finds_the_exact_neighbours(rng, tmp_path, first_pass, rescore_precision):
    if first_pass == "pq":
        pytest.importorskip("faiss")
    corpus = _unit(rng, 1000)
    targets = np.array([5, 123, 999, 200])
    queries = corpus[targets] + 0.05 * _unit(rng, len(targets))  # exact top-1: the target row
    np.save(tmp_path / "emb.npy", corpus)
    backend = "faiss" if first_pass == "pq" else "numpy"
    idx = SearchIndex.build(
        Embeddings.open(tmp_path / "emb.npy"),
        tmp_path / "idx",
        rescore_precision,
        backend,
        first_pass=first_pass,
    )
    assert idx.bytes_per_vector * 8 == corpus.shape[1]  # 1/32 of fp32 for both first passes
    np.testing.assert_array_equal(idx.search(queries, k=10, rescore=4).rows[:, 0], targets)
    # every row a candidate: rescoring alone decides, so fp32 is exact and int8 nearly so
    exact = exact_search(queries, corpus, k=10)
    hits = idx.search(queries, k=10, rescore=100)
    if rescore_precision == "float32":
        np.testing.assert_array_equal(hits.rows, exact.rows)
        np.testing.assert_allclose(hits.scores, exact.scores, rtol=1e-5)
    else:
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hits.rows, exact.rows)])
        assert recall >= 0.9
    reloaded = SearchIndex.load(tmp_path / "idx", backend=backend)
    assert reloaded.first_pass == first_pass
    np.testing.assert_array_equal(
        reloaded.search(queries, k=10, rescore=4).rows, idx.search(queries, k=10, rescore=4).rows
    )
    np.testing.assert_array_equal(reloaded.search(queries, k=10, rescore=100).rows, hits.rows)


def test_pq_first_pass_scores_the_float_query_against_the_stored_codebooks(rng, tmp_path):
    pytest.importorskip("faiss")
    corpus = _unit(rng, 2000)
    queries = _unit(rng, 20)
    np.save(tmp_path / "emb.npy", corpus)
    built = SearchIndex.build(
        Embeddings.open(tmp_path / "emb.npy"), tmp_path / "idx", train_rows=1500, seed=3
    )
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["first_pass"] == "pq" and meta["pq"] == {
        "faiss": "RR32,PQ8x4fs",
        "train_rows": 1500,
        "seed": 3,
    }
    idx = SearchIndex.load(tmp_path / "idx")  # the codebooks come from disk
    decoded = idx.decode(np.arange(len(corpus)))
    np.testing.assert_array_equal(decoded, built.decode(np.arange(len(corpus))))
    # the codebooks were fitted to this corpus: 16 centroids per 4 dims of isotropic unit vectors leave
    # about half of the energy as error (a codebook that knew nothing would leave all of it)
    assert np.mean(np.sum((decoded - corpus) ** 2, axis=1)) < 0.7
    # brute force over the reconstructions (asymmetric distance) is what the first pass ranks by; faiss's
    # fast scan rounds its lookup tables to 8 bits, so scores agree to ~1e-2 and the top-k nearly always
    adc = queries @ decoded.T
    hits = idx.search(queries, k=10, rescore=1)
    np.testing.assert_allclose(hits.scores, np.take_along_axis(adc, hits.rows, 1), atol=2e-2)
    brute = np.argsort(-adc, axis=1)[:, :10]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hits.rows, brute)]) >= 0.9
    # a different seed trains different codebooks: the calibration is the index's, not a constant
    other = SearchIndex.build(
        Embeddings.open(tmp_path / "emb.npy"), tmp_path / "idx2", train_rows=1500, seed=4
    )
    assert not np.array_equal(other.decode(np.arange(10)), decoded[:10])


def test_pq_index_refuses_other_backends_and_odd_dims(rng, tmp_path):
    pytest.importorskip("faiss")
    np.save(tmp_path / "emb.npy", _unit(rng, 300))
    SearchIndex.build(Embeddings.open(tmp_path / "emb.npy"), tmp_path / "idx")
    with pytest.raises(InputError, match="--first-pass binary"):
        SearchIndex.load(tmp_path / "idx", backend="numpy")
    np.save(tmp_path / "few.npy", _unit(rng, 10))
    with pytest.raises(InputError, match="at least 16"):
        SearchIndex.build(Embeddings.open(tmp_path / "few.npy"), tmp_path / "few")
    assert not (tmp_path / "few").exists()
    np.save(tmp_path / "odd.npy", _unit(rng, 300, dim=12))
    with pytest.raises(InputError, match="divisible by 8"):
        SearchIndex.build(Embeddings.open(tmp_path / "odd.npy"), tmp_path / "odd")
    assert not (tmp_path / "odd").exists()


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
    query = corpus[17]
    for first_pass, backend in (("binary", "numpy"), ("pq", "faiss")):
        if backend == "faiss" and importlib.util.find_spec("faiss") is None:
            continue
        build = ["index", "build", str(emb), "--out", str(idx), "--first-pass", first_pass, "--overwrite"]
        build += ["--threads", "1"]
        res = runner.invoke(main, build)
        assert res.exit_code == 0, res.output
        assert f"{first_pass} first pass" in res.output
        # the tiny model maps "<words> 1" .. "<words> 29" almost onto one point, so the pq first pass
        # cannot order those 30 near-duplicates: rescore every row to check the plumbing
        args = ["search", str(idx), str(tiny_artifact), query, "-k", "3", "--backend", backend]
        args += ["--rescore", "40"] if first_pass == "pq" else []
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
    SearchIndex.build(
        Embeddings.open(tmp_path / "emb.npy"), tmp_path / "idx", backend="numpy", first_pass="binary"
    )
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingExtraError, match=r"edgeembed\[search\]"):
        SearchIndex.build(Embeddings.open(tmp_path / "emb.npy"), tmp_path / "pq")  # pq needs faiss
    assert not (tmp_path / "pq").exists()
    with pytest.raises(MissingExtraError, match=r"edgeembed\[search\]"):
        SearchIndex.load(tmp_path / "idx", backend="faiss")
    monkeypatch.setitem(sys.modules, "ray", None)
    (tmp_path / "c.txt").write_text("a\n")
    with pytest.raises(MissingExtraError, match=r"edgeembed\[ray\]"):
        embed_with_ray(tiny_artifact, Source.open(tmp_path / "c.txt"), tmp_path / "out")
