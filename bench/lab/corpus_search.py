"""Search bench: recall@10 vs exact fp32, index size and query latency per variant.

    python bench/lab/corpus_search.py EMB.npy ARTIFACT STS_TEST --queries 1000 --out bench/corpus_search

Ground truth: exact fp32 top-10 (numpy) of each query over all corpus embeddings. Variants: float32
exact (numpy), int8 exact (full scan of dequantized int8), and the index's two first passes (pq: faiss
PQ fast scan scored with the float query; binary: sign bits, Hamming) alone and with int8 (or fp32)
rescoring of k * rescore candidates, plus a mean-centred binary first pass (measured here only, not in
the library). Latency: one query at a time (median over `--latency-queries`), and per query in one
batch of all queries. faiss runs on `--faiss-threads` (default 1: OpenMP spins on a busy shared
machine). The load average is recorded next to every variant. Writes OUT.json and OUT.png.
"""

from __future__ import annotations

import argparse
import json
import os
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
    ap.add_argument("--query-cache", type=Path, default=None, help=".npy of the query embeddings")
    ap.add_argument("--latency-queries", type=int, default=30)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--faiss-threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench/corpus_search"))
    args = ap.parse_args()

    import faiss

    faiss.omp_set_num_threads(args.faiss_threads)
    if args.query_cache is not None and args.query_cache.is_file():
        queries = np.load(args.query_cache)[: args.queries]
    else:
        texts = load_sts(args.sts).sentences[: args.queries]
        queries = Encoder.load(args.artifact).encode(texts)
        if args.query_cache is not None:
            np.save(args.query_cache, queries)
    emb = Embeddings.open(args.embeddings)
    corpus_ram = np.ascontiguousarray(np.load(args.embeddings, mmap_mode="r"))  # fp32 baseline in memory
    k, n = args.k, emb.count
    results = []

    def add(name: str, fn, size: int, note: str = "") -> None:
        load_before = os.getloadavg()[0]
        rows, single, batched = timed(fn, queries, args.latency_queries)
        results.append(
            {
                "variant": name,
                "recall@10": recall(rows, truth),
                "size_mb": size / 1e6,
                "single_query_ms": single,
                "batched_ms_per_query": batched,
                "load_avg_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
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

    add("int8 exact (numpy, dequantized scan)", lambda q: exact_search(q, Dequantized(), k).rows, int8.nbytes)

    # mean-centred sign bits (measured only): bits of x - corpus mean, queries shifted alike
    mean = corpus_ram.mean(axis=0)
    centred = faiss.IndexBinaryFlat(emb.dim)
    centred.add(np.packbits(corpus_ram - mean > 0, axis=1))

    def centred_rescored(q: np.ndarray, r: int = 4) -> np.ndarray:
        cand = centred.search(np.packbits(q - mean > 0, axis=1), k * r)[1]
        vecs = dequantize(int8[cand.ravel()], "int8", ranges).reshape(*cand.shape, -1)
        top = np.argsort(-np.einsum("qd,qcd->qc", q, vecs), axis=1, kind="stable")[:, :k]
        return np.take_along_axis(cand, top, 1)

    with tempfile.TemporaryDirectory(dir=args.out.parent if args.out.parent.is_dir() else None) as tmp:
        for first_pass in ("pq", "binary"):
            t = time.perf_counter()
            idx = SearchIndex.build(emb, Path(tmp) / first_pass, "int8", first_pass=first_pass)
            print(f"built {first_pass} index in {time.perf_counter() - t:.0f} s", flush=True)
            size = idx.size_bytes()["first_pass"]
            store = f"+ {idx.size_bytes()['rescore_store'] / 1e6:.0f} MB int8 store, memory-mapped"
            add(f"{first_pass} only (faiss)", lambda q, i=idx: i.search(q, k, rescore=1).rows, size)
            for r in (2, 4, 8, 16) if first_pass == "binary" else (2, 4, 8):
                add(
                    f"{first_pass} + int8 rescore x{r} (faiss)",
                    lambda q, r=r, i=idx: i.search(q, k, rescore=r).rows,
                    size,
                    store,
                )
            del idx
        add("binary mean-centred + int8 rescore x4 (faiss)", centred_rescored, n * emb.dim // 8)
        idx = SearchIndex.build(emb, Path(tmp) / "pq-f32", "float32", first_pass="pq")
        add(
            "pq + float32 rescore x4 (faiss)",
            lambda q: idx.search(q, k, rescore=4).rows,
            idx.size_bytes()["first_pass"],
            f"+ {idx.size_bytes()['rescore_store'] / 1e6:.0f} MB fp32 store, memory-mapped",
        )
    report = {
        "corpus_rows": n,
        "dim": emb.dim,
        "queries": len(queries),
        "k": k,
        "faiss_threads": args.faiss_threads,
        "results": results,
    }
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    plot(results, args.out.with_suffix(".png"), n, len(queries))


def plot(results: list[dict], path: Path, rows: int, n_queries: int) -> None:
    """Recall vs latency (single query, and per query in a batch); the rescore series as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    series = {"pq + int8": "tab:blue", "binary + int8": "tab:orange"}
    for ax, key, label in (
        (axes[0], "single_query_ms", "single-query latency, ms (log)"),
        (axes[1], "batched_ms_per_query", "per query in a batch of all queries, ms (log)"),
    ):
        for prefix, color in series.items():
            pts = [r for r in results if r["variant"].startswith(prefix + " rescore")]
            ax.plot([r[key] for r in pts], [r["recall@10"] for r in pts], "o-", color=color, label=prefix)
            for r in pts:
                ax.annotate(
                    "x" + r["variant"].split(" x")[1].split()[0], (r[key], r["recall@10"]), fontsize=8
                )
        for r in results:
            if not any(r["variant"].startswith(p + " rescore") for p in series):
                ax.scatter(r[key], r["recall@10"], s=25, color="gray")
                ax.annotate(r["variant"].replace(" (faiss)", ""), (r[key], r["recall@10"]), fontsize=7)
        ax.axhline(0.95, color="red", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("recall@10 vs exact fp32")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"Search over {rows:,} MiniLM embeddings, {n_queries:,} STS-b test queries; first passes dim/8 bytes "
        "per vector (shared, busy 2-core machine)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
