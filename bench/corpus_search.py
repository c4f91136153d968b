"""Search bench: recall@10 vs exact fp32, index size and query latency per precision.

    python bench/corpus_search.py EMB.npy ARTIFACT STS_TEST --queries 1000 --out bench/corpus_search

Ground truth: exact fp32 top-10 (numpy) of each query over all corpus embeddings. Variants:
float32 exact (numpy), int8 exact (full scan of dequantized int8), binary Hamming only, binary + int8
rescoring, binary + fp32 rescoring (rescore 4 unless given). Latency: one query at a time (median over
`--latency-queries`), and per query in one batch of all queries. Writes OUT.json and OUT.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeembed import Encoder
from edgeembed.corpus.quantization import calibrate_ranges, dequantize, quantize_embeddings
from edgeembed.corpus.search import Embeddings, SearchIndex, exact_search
from edgeembed.sts import load_sts


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth)]))


def timed(fn, queries: np.ndarray, n_single: int) -> tuple[np.ndarray, float, float]:
    """(rows of the batched call, median single-query ms, batched ms per query)."""
    fn(queries[:1])
    singles = []
    for q in queries[:n_single]:
        t = time.perf_counter()
        fn(q[None])
        singles.append(time.perf_counter() - t)
    t = time.perf_counter()
    rows = fn(queries)
    batched = (time.perf_counter() - t) / len(queries)
    return rows, 1e3 * statistics.median(singles), 1e3 * batched


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("embeddings", type=Path)
    ap.add_argument("artifact")
    ap.add_argument("sts", type=Path)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--latency-queries", type=int, default=50)
    ap.add_argument("--rescore", type=int, default=4)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("bench/corpus_search"))
    args = ap.parse_args()

    texts = load_sts(args.sts).sentences[: args.queries]
    queries = Encoder.load(args.artifact).encode(texts)
    emb = Embeddings.open(args.embeddings)
    corpus = np.load(args.embeddings, mmap_mode="r")
    corpus_ram = np.ascontiguousarray(corpus)  # the fp32 baseline gets its matrix in memory
    k, n = args.k, emb.count
    results = []

    def add(name: str, fn, size: int, note: str = "") -> None:
        rows, single, batched = timed(fn, queries, args.latency_queries)
        results.append(
            {
                "variant": name,
                "recall@10": recall(rows, truth),
                "size_mb": size / 1e6,
                "single_query_ms": single,
                "batched_ms_per_query": batched,
                "note": note,
            }
        )
        print(json.dumps(results[-1]), flush=True)

    truth = exact_search(queries, corpus_ram, k).rows
    add("float32 exact (numpy)", lambda q: exact_search(q, corpus_ram, k).rows, corpus_ram.nbytes)

    ranges = calibrate_ranges(corpus_ram)
    int8 = quantize_embeddings(corpus_ram, "int8", ranges)

    class Dequantized:  # exact_search reads the corpus in slices; dequantize each slice as it comes
        def __len__(self) -> int:
            return n

        def __getitem__(self, s: slice) -> np.ndarray:
            return dequantize(int8[s], "int8", ranges)

    def int8_exact(q: np.ndarray) -> np.ndarray:
        return exact_search(q, Dequantized(), k).rows  # type: ignore[arg-type]

    add("int8 exact (numpy, dequantized scan)", int8_exact, int8.nbytes)

    with tempfile.TemporaryDirectory() as tmp:
        for rescore_precision in ("int8", "float32"):
            idx = SearchIndex.build(emb, Path(tmp) / rescore_precision, rescore_precision, backend="faiss")
            sizes = idx.size_bytes()
            store = f"+ {sizes['rescore_store'] / 1e6:.0f} MB {rescore_precision} store, memory-mapped"
            if rescore_precision == "int8":
                add(
                    "binary only (faiss)",
                    lambda q, i=idx: i.search(q, k, rescore=1).rows,
                    sizes["binary_index"],
                )
                for backend in ("usearch", "numpy"):
                    other = SearchIndex.load(Path(tmp) / rescore_precision, backend=backend)
                    add(
                        f"binary + int8 rescore x{args.rescore} ({backend})",
                        lambda q, o=other: o.search(q, k, rescore=args.rescore).rows,
                        sizes["binary_index"],
                        store,
                    )
            add(
                f"binary + {rescore_precision} rescore x{args.rescore} (faiss)",
                lambda q, i=idx: i.search(q, k, rescore=args.rescore).rows,
                sizes["binary_index"],
                store,
            )
            if rescore_precision == "int8":
                for r in (2, 8, 16):
                    add(
                        f"binary + int8 rescore x{r} (faiss)",
                        lambda q, r=r, i=idx: i.search(q, k, rescore=r).rows,
                        sizes["binary_index"],
                        store,
                    )
    report = {"corpus_rows": n, "dim": emb.dim, "queries": len(queries), "k": k, "results": results}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    plot(results, args.out.with_suffix(".png"), n, len(queries))


def plot(results: list[dict], path: Path, rows: int, n_queries: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in results:
        a.scatter(r["single_query_ms"], r["recall@10"], s=30)
        a.annotate(r["variant"], (r["single_query_ms"], r["recall@10"]), fontsize=7)
        b.scatter(r["size_mb"], r["recall@10"], s=30)
        b.annotate(r["variant"], (r["size_mb"], r["recall@10"]), fontsize=7)
    a.set_xscale("log")
    b.set_xscale("log")
    a.set_xlabel("single-query latency, ms (log)")
    b.set_xlabel("in-memory index size, MB (log)")
    for ax in (a, b):
        ax.set_ylabel("recall@10 vs exact fp32")
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"Search over {rows:,} MiniLM embeddings, {n_queries:,} STS-b test queries (shared, busy 2-core machine)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
