"""Search over corpus embeddings: an exact numpy reference, and a compact first pass that finds
`k * rescore` candidates, rescored by the float query against int8 (or fp32) corpus vectors, as in
sentence-transformers' embedding-quantization recipe.

Two first passes, both dim/8 bytes per vector (1/32 of fp32), held in memory:
- "pq" (the default): faiss product quantization with 4-bit fast scan after a random rotation
  (`RR{dim},PQ{dim/4}x4fs`, inner product), codebooks trained on a seeded sample of the corpus and
  stored with the index (plus the rotation: dim*dim floats). The float query is scored against the
  codes (asymmetric), which ranks neighbours far better than sign bits: with MiniLM it is what comes
  near recall@10 0.95 at rescore 4 (bench/CORPUS.md).
- "binary": sentence-transformers' plain sign bits, Hamming distance (faiss IndexBinaryFlat, usearch
  exact Hamming, or numpy with no extra).

An index is a folder: index.json (dim, count, first pass, int8 ranges, ...), pq.faiss or binary.npy (the
first pass), rescore.npy (int8 or fp32 vectors, memory-mapped: only the candidates are read) and
records.npy (the input record number of every row).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeembed._imports import require
from edgeembed.corpus.quantization import calibrate_ranges, dequantize, quantize_embeddings
from edgeembed.corpus.writers import read_parquet_metadata, write_json
from edgeembed.errors import InputError

BACKENDS = ("faiss", "usearch", "numpy")
FIRST_PASSES = ("pq", "binary")
RESCORE_PRECISIONS = ("int8", "float32")
PQ_TRAIN_ROWS = 65_536
PQ_MIN_ROWS = 16
_CHUNK = 32_768


@dataclass(frozen=True)
class Hits:
    """Top-k per query, best first: scores (float32), rows of the index, input record numbers."""

    scores: np.ndarray
    rows: np.ndarray
    records: np.ndarray


@dataclass(frozen=True)
class Embeddings:
    """A float32 embeddings file opened for chunked reading (.npy memory-mapped, or .parquet)."""

    path: Path
    count: int
    dim: int
    records: np.ndarray
    metadata: dict

    @classmethod
    def open(cls, path: str | Path) -> Embeddings:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"embeddings file not found: {p}")
        if p.suffix == ".npy":
            arr = np.load(p, mmap_mode="r")
            side = p.parent / f"{p.name}.json"
            meta = json.loads(side.read_text()) if side.is_file() else {}
            records = _npy_records(p, len(arr))
            _check_float(arr.dtype, meta, p)
            return cls(p, arr.shape[0], arr.shape[1], records, meta)
        if p.suffix == ".parquet":
            pq = require("pyarrow.parquet", "corpus")
            meta = read_parquet_metadata(p)
            pf = pq.ParquetFile(p)
            emb_type = pf.schema_arrow.field("embedding").type
            _check_float(np.dtype(emb_type.value_type.to_pandas_dtype()), meta, p)
            records = pq.read_table(p, columns=["record"]).column("record").to_numpy()
            return cls(p, pf.metadata.num_rows, emb_type.list_size, records, meta)
        raise InputError(f"embeddings must be a .npy or .parquet written by `edgeembed embed`, got {p}")

    def chunks(self, size: int = _CHUNK) -> Iterator[np.ndarray]:
        if self.path.suffix == ".npy":
            arr = np.load(self.path, mmap_mode="r")
            for start in range(0, self.count, size):
                yield np.asarray(arr[start : start + size], dtype=np.float32)
            return
        pq = require("pyarrow.parquet", "corpus")
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=size, columns=["embedding"]):
            col = batch.column(0)
            yield col.values.to_numpy(zero_copy_only=False).reshape(len(col), self.dim).astype(np.float32)

    def load(self) -> np.ndarray:
        return np.concatenate(list(self.chunks())) if self.count else np.zeros((0, self.dim), np.float32)


def _check_float(dtype: np.dtype, meta: dict, path: Path) -> None:
    if dtype != np.float32 or meta.get("precision", "float32") != "float32":
        raise InputError(
            f"{path} holds {meta.get('precision', dtype)} embeddings; build an index from float32 ones "
            "(`edgeembed embed ... --precision float32`): the index derives its own binary and int8 forms"
        )


def _npy_records(path: Path, count: int) -> np.ndarray:
    """Record numbers of a .npy's rows: 1..n, minus the records its job listed as skipped."""
    errors = path.parent / f"{path.name}.errors.jsonl"
    if not errors.is_file():
        return np.arange(1, count + 1, dtype=np.int64)
    skipped = {json.loads(line)["record"] for line in errors.read_text(encoding="utf-8").splitlines()}
    numbers = (n for n in range(1, count + len(skipped) + 1) if n not in skipped)
    return np.fromiter(numbers, dtype=np.int64, count=count)


def exact_search(queries: np.ndarray, corpus: np.ndarray, k: int = 10, chunk: int = _CHUNK) -> Hits:
    """Brute-force dot-product top-k (the reference), in corpus chunks so a memory-mapped corpus of any
    size is fine. Rows are corpus row indices; records are rows + 1."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    n = len(corpus)
    k = min(k, n)
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    for start in range(0, n, chunk):
        block = np.asarray(corpus[start : start + chunk], dtype=np.float32)
        s = q @ block.T
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + start], axis=1)
        if best_s.shape[1] > k:
            keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    order = np.lexsort((best_i, -best_s), axis=1) if best_s.size else np.zeros_like(best_i)
    rows = np.take_along_axis(best_i, order, 1)
    return Hits(np.take_along_axis(best_s, order, 1), rows, rows + 1)


def hamming_search(
    query_bits: np.ndarray, corpus_bits: np.ndarray, k: int, backend: str = "faiss"
) -> np.ndarray:
    """Rows of the k nearest packed-bit vectors by Hamming distance (exact), shape (q, k)."""
    q = np.ascontiguousarray(np.atleast_2d(query_bits), dtype=np.uint8)
    k = min(k, len(corpus_bits))
    if backend == "faiss":
        faiss = require("faiss", "search")
        index = faiss.IndexBinaryFlat(corpus_bits.shape[1] * 8)
        index.add(np.ascontiguousarray(corpus_bits, dtype=np.uint8))
        return index.search(q, k)[1].astype(np.int64)
    if backend == "usearch":
        ui = require("usearch.index", "search")
        matches = ui.search(
            np.ascontiguousarray(corpus_bits, dtype=np.uint8), q, k, ui.MetricKind.Hamming, exact=True
        )
        return np.atleast_2d(matches.keys).astype(np.int64)
    if backend == "numpy":
        out = np.empty((len(q), k), dtype=np.int64)
        for i, row in enumerate(q):
            dist = np.bitwise_count(np.bitwise_xor(corpus_bits, row)).sum(axis=1, dtype=np.int32)
            part = np.argpartition(dist, k - 1)[:k]
            out[i] = part[np.lexsort((part, dist[part]))]
        return out
    raise InputError(f"unknown search backend {backend!r}; use one of {', '.join(BACKENDS)}")


def pq_factory(dim: int) -> str:
    """The faiss index of the "pq" first pass: a random rotation (seeded by faiss, spreads the variance
    evenly over the subspaces: +0.004 recall@10 at 260k rows, nearly what a trained OPQ rotation gives at
    1/70 of its training time), then 4-dim subspaces with 16 centroids each, i.e. dim/8 bytes per vector,
    the size of the sign bits."""
    if dim % 8:
        raise InputError(
            f"the pq first pass needs a dimension divisible by 8, got {dim}; use --first-pass binary"
        )
    return f"RR{dim},PQ{dim // 4}x4fs"


def sample_rows(embeddings: Embeddings, size: int, seed: int = 0) -> np.ndarray:
    """A seeded uniform sample of `size` rows (all rows if fewer), read chunk by chunk."""
    n = embeddings.count
    wanted = np.sort(np.random.default_rng(seed).choice(n, min(n, size), replace=False))
    out, start = [], 0
    for chunk in embeddings.chunks():
        lo, hi = np.searchsorted(wanted, [start, start + len(chunk)])
        out.append(chunk[wanted[lo:hi] - start])
        start += len(chunk)
    return np.concatenate(out)


class SearchIndex:
    """First pass (in memory) + rescoring store (memory-mapped); see the module docstring."""

    def __init__(self, path: Path, meta: dict, backend: str = "faiss") -> None:
        self.path, self.meta = path, meta
        if backend not in BACKENDS:
            raise InputError(f"unknown search backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.first_pass = meta.get("first_pass", "binary")  # indexes from before "pq" are binary
        if self.first_pass == "pq" and backend != "faiss":
            raise InputError(
                f"{path} has a pq first pass, which runs on faiss; --backend {backend} applies to "
                "binary indexes (`edgeembed index build --first-pass binary`)"
            )
        self.backend = backend
        self.store = np.load(path / "rescore.npy", mmap_mode="r")
        self.records = np.load(path / "records.npy")
        self.ranges = np.asarray(meta["ranges"], dtype=np.float32) if meta.get("ranges") else None
        self.binary: np.ndarray | None = None
        if self.first_pass == "pq":
            faiss = require("faiss", "search")
            self._pq = faiss.read_index(str(path / "pq.faiss"))
        else:
            self.binary = np.load(path / "binary.npy")
            self._hamming = self._make_hamming()

    def _make_hamming(self):  # type: ignore[no-untyped-def]
        """Build the backend's structure once (faiss copies the bits; usearch/numpy search them as is)."""
        assert self.binary is not None
        if self.backend == "faiss":
            faiss = require("faiss", "search")
            index = faiss.IndexBinaryFlat(self.binary.shape[1] * 8)
            index.add(np.ascontiguousarray(self.binary))
            return lambda bits, k: index.search(bits, k)[1].astype(np.int64)
        bits_ = self.binary
        return lambda bits, k: hamming_search(bits, bits_, k, self.backend)

    def _candidates(self, q: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(first-pass scores, rows), best first, shape (queries, n): the approximate inner product
        for pq, minus the Hamming distance for binary."""
        if self.first_pass == "pq":
            scores, rows = self._pq.search(np.ascontiguousarray(q), n)
            return scores.astype(np.float32), rows.astype(np.int64)
        assert self.binary is not None
        bits = quantize_embeddings(q, "ubinary")
        rows = self._hamming(bits, n)
        dist = np.bitwise_count(np.bitwise_xor(self.binary[rows], bits[:, None])).sum(-1, dtype=np.int32)
        return -dist.astype(np.float32), rows

    def decode(self, rows: np.ndarray) -> np.ndarray:
        """The vectors the first pass scores the query against, float32 (len(rows), dim): the pq
        reconstructions from the stored codebooks, or the ±1 sign vectors of a binary index."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if self.first_pass == "pq":
            return np.stack([self._pq.reconstruct(int(r)) for r in rows]).astype(np.float32)
        assert self.binary is not None
        return dequantize(self.binary[rows], "ubinary")[:, : self.dim]

    @property
    def bytes_per_vector(self) -> int:
        """First-pass bytes per corpus vector (dim/8 for both first passes)."""
        if self.first_pass == "pq":
            return int(self._pq.sa_code_size())
        assert self.binary is not None
        return int(self.binary.shape[1])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def __len__(self) -> int:
        return int(self.meta["count"])

    @classmethod
    def load(cls, path: str | Path, backend: str = "faiss") -> SearchIndex:
        p = Path(path)
        meta_path = p / "index.json"
        if not meta_path.is_file():
            raise InputError(
                f"{p} is not a search index (no index.json); build one with `edgeembed index build`"
            )
        return cls(p, json.loads(meta_path.read_text()), backend)

    @classmethod
    def build(
        cls,
        embeddings: Embeddings,
        out: str | Path,
        rescore_precision: str = "int8",
        backend: str = "faiss",
        overwrite: bool = False,
        first_pass: str = "pq",
        train_rows: int = PQ_TRAIN_ROWS,
        seed: int = 0,
    ) -> SearchIndex:
        """Streaming passes over float32 embeddings: int8 ranges (min/max of the whole corpus), pq
        codebooks (trained on `train_rows` rows sampled with `seed`), then the first-pass codes and the
        rescoring store. Written to a temp folder, renamed into place when complete."""
        if rescore_precision not in RESCORE_PRECISIONS:
            raise InputError(
                f"rescore precision must be one of {RESCORE_PRECISIONS}, got {rescore_precision!r}"
            )
        if first_pass not in FIRST_PASSES:
            raise InputError(f"first pass must be one of {FIRST_PASSES}, got {first_pass!r}")
        out = Path(out)
        if out.exists() and not overwrite:
            raise InputError(f"{out} exists; pass --overwrite to replace it")
        if not out.expanduser().resolve().parent.is_dir():
            raise InputError(f"output folder {out.parent} does not exist; create it first")
        if embeddings.count == 0:
            raise InputError(f"{embeddings.path} has no rows to index")
        n, dim = embeddings.count, embeddings.dim
        pq = None
        if first_pass == "pq":
            faiss = require("faiss", "search")
            factory = pq_factory(dim)
            if n < PQ_MIN_ROWS:
                raise InputError(
                    f"{embeddings.path} has {n} rows; the pq first pass trains 16 centroids per subspace "
                    f"and needs at least {PQ_MIN_ROWS}: use --first-pass binary for so few"
                )
            pq = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
            pq.train(np.ascontiguousarray(sample_rows(embeddings, train_rows, seed)))
        ranges = None
        if rescore_precision == "int8":
            lo = np.full(dim, np.inf, np.float32)
            hi = np.full(dim, -np.inf, np.float32)
            for chunk in embeddings.chunks():
                r = calibrate_ranges(chunk)
                lo, hi = np.minimum(lo, r[0]), np.maximum(hi, r[1])
            ranges = np.vstack([lo, hi])
        import shutil

        tmp = out.parent / f".{out.name}.tmp-index"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        bits = None
        if pq is None:
            bits = np.lib.format.open_memmap(tmp / "binary.npy", "w+", np.uint8, (n, (dim + 7) // 8))
        store = np.lib.format.open_memmap(
            tmp / "rescore.npy", "w+", np.int8 if ranges is not None else np.float32, (n, dim)
        )
        start = 0
        for chunk in embeddings.chunks():
            if pq is not None:
                pq.add(np.ascontiguousarray(chunk))
            else:
                bits[start : start + len(chunk)] = quantize_embeddings(chunk, "ubinary")
            store[start : start + len(chunk)] = quantize_embeddings(chunk, rescore_precision, ranges)
            start += len(chunk)
        if pq is not None:
            faiss.write_index(pq, str(tmp / "pq.faiss"))
        else:
            bits.flush()
        store.flush()
        del bits, store
        np.save(tmp / "records.npy", embeddings.records)
        meta = {
            "dim": dim,
            "count": n,
            "first_pass": first_pass,
            "pq": None if pq is None else {"faiss": factory, "train_rows": min(n, train_rows), "seed": seed},
            "rescore_precision": rescore_precision,
            "ranges": None if ranges is None else ranges.tolist(),
            "embeddings": str(embeddings.path),
            "artifact": embeddings.metadata.get("artifact"),
            "prompt_name": embeddings.metadata.get("prompt_name"),
        }
        write_json(tmp / "index.json", meta)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return cls(out, meta, backend)

    def search(self, queries: np.ndarray, k: int = 10, rescore: int = 8) -> Hits:
        """First-pass top `k * rescore`, then the float query's dot product with the (dequantized) int8
        or fp32 vectors of those candidates; rescore=1 keeps the first pass's order and scores."""
        if k < 1 or rescore < 1:
            raise InputError(f"k and rescore must be >= 1, got k={k}, rescore={rescore}")
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if q.shape[1] != self.dim:
            raise InputError(f"queries have dim {q.shape[1]}, the index {self.dim}")
        k = min(k, len(self))
        first_scores, cand = self._candidates(q, min(k * rescore, len(self)))
        if rescore == 1:
            return Hits(first_scores, cand, self.records[cand])
        flat = cand.ravel()
        order = np.argsort(flat, kind="stable")  # read the memory-mapped store in file order
        vecs = np.empty((len(flat), self.dim), dtype=np.float32)
        vecs[order] = dequantize(self.store[flat[order]], self.meta["rescore_precision"], self.ranges)
        scores = np.einsum("qd,qcd->qc", q, vecs.reshape(len(q), -1, self.dim))
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        rows = np.take_along_axis(cand, top, 1)
        return Hits(np.take_along_axis(scores, top, 1).astype(np.float32), rows, self.records[rows])

    def size_bytes(self) -> dict[str, int]:
        """In memory (the first pass, as stored) and on disk (the memory-mapped rescoring store)."""
        name = "pq.faiss" if self.first_pass == "pq" else "binary.npy"
        return {
            "first_pass": (self.path / name).stat().st_size,
            "rescore_store": (self.path / "rescore.npy").stat().st_size,
        }
