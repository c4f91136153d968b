"""Search over corpus embeddings: an exact numpy reference, and a compact first pass that finds
`k * rescore` candidates, rescored by the float query against int8 (or fp32) corpus vectors, as in
sentence-transformers' embedding-quantization recipe.

Two first passes, both dim/8 bytes per vector (1/32 of fp32), held in memory:
- "pq" (the default): faiss product quantization with 4-bit fast scan after a random rotation
  (`RR{dim},PQ{dim/4}x4fs`, inner product), codebooks trained on a seeded sample of the corpus and
  stored with the index (plus the rotation: dim*dim floats). The float query is scored against the
  codes (asymmetric), which keeps the query's precision and so ranks neighbours far better than sign
  bits at the same memory.
- "binary": sentence-transformers' plain sign bits, Hamming distance (faiss IndexBinaryFlat, usearch
  exact Hamming, or numpy with no extra).

An index is a folder: index.json (dim, count, first pass, int8 ranges, the digest of the artifact that
embedded the corpus, and every file's size, sha256, shape and dtype, with a digest of itself as artifact
manifests have), pq.faiss or binary.npy (the first pass), rescore.npy (int8 or fp32 vectors,
memory-mapped: only the candidates are read) and records.npy (the input record number of every row, from
what the embed job recorded). It is written like an artifact (a temp folder renamed into place under the
target's lock) and checked on load, so a damaged or edited index fails with one line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed._imports import require
from edgeembed.artifact import (
    DIGEST_KEY,
    artifact_path,
    atomic_folder,
    clean_stale,
    manifest_digest,
    sha256_file,
    target_lock,
)
from edgeembed.corpus.quantization import calibrate_ranges, dequantize, quantize_embeddings
from edgeembed.corpus.writers import NpyWriter, read_parquet_metadata, side_files
from edgeembed.errors import ArtifactError, EdgeEmbedError, InputError

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
    """A float32 embeddings file opened for chunked reading (.npy memory-mapped, or .parquet), with the
    input record number of every row and the artifact that made it (None: not recorded)."""

    path: Path
    count: int
    dim: int
    records: np.ndarray
    metadata: dict

    @property
    def artifact_sha256(self) -> str | None:
        digest = self.metadata.get("artifact_sha256")
        return digest if _is_sha256(digest) else None

    @classmethod
    def open(cls, path: str | Path) -> Embeddings:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"embeddings file not found: {p}")
        if p.suffix == ".npy":
            try:
                arr = np.load(p, mmap_mode="r")
            except (ValueError, OSError, EOFError) as exc:
                raise InputError(f"{p} is not a readable .npy (truncated or damaged?): {exc}") from None
            if arr.ndim != 2:
                raise InputError(f"{p} holds an array of shape {arr.shape}; embeddings are (rows, dim)")
            side = side_files(p)[0]
            meta = _read_side_json(side) if side.is_file() else None
            _check_float(arr.dtype, meta or {}, p)
            records = _npy_records(p, arr.shape, meta)
            return cls(p, arr.shape[0], arr.shape[1], records, meta or {})
        if p.suffix == ".parquet":
            pq = require("pyarrow.parquet", "corpus")
            try:
                meta = read_parquet_metadata(p)
                pf = pq.ParquetFile(p)
                emb_type = pf.schema_arrow.field("embedding").type
                _check_float(np.dtype(emb_type.value_type.to_pandas_dtype()), meta, p)
                column = pq.read_table(p, columns=["record"]).column("record")
            except (KeyError, AttributeError, OSError, ValueError) as exc:
                if isinstance(exc, InputError):
                    raise
                raise InputError(
                    f"{p} is not an embeddings file from `edgeembed embed` (needs `record` and a "
                    f"fixed-size `embedding` column): {exc}"
                ) from None
            records = _checked_records(column, pf.metadata.num_rows, p)
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


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _read_side_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} (the embed job's record of its output) is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} (the embed job's record of its output) is not a JSON object")
    return data


def _check_float(dtype: np.dtype, meta: dict, path: Path) -> None:
    if dtype != np.float32 or meta.get("precision", "float32") != "float32":
        raise InputError(
            f"{path} holds {meta.get('precision', dtype)} embeddings; build an index from float32 ones "
            "(`edgeembed embed ... --precision float32`): the index derives its own binary and int8 forms"
        )


def _checked_records(column: Any, count: int, path: Path) -> np.ndarray:
    """A Parquet output's record column: written by the job itself, so it must be complete, positive
    and increasing (input order); anything else is not an output of `edgeembed embed`."""
    if column.null_count:
        raise InputError(f"{path}: the `record` column has missing values; re-run `edgeembed embed`")
    records = np.asarray(column.to_numpy(), dtype=np.int64)
    if len(records) != count or (count and (records[0] < 1 or np.any(np.diff(records) <= 0))):
        raise InputError(
            f"{path}: the `record` column is not increasing input record numbers; re-run `edgeembed embed`"
        )
    return records


def _npy_records(path: Path, shape: tuple[int, ...], meta: dict | None) -> np.ndarray:
    """Record numbers of a .npy's rows, from what the embed job recorded: OUT.json's `rows` and
    `skipped`, and OUT.errors.jsonl (the skipped records, bound to the run by its sha256). A side file
    that disagrees with the .npy is refused: a guessed numbering would make search return wrong records.
    A .npy with neither side file (from `edgeembed encode`, which stops at a bad record) is numbered 1..n."""
    count = shape[0]
    side, errors = side_files(path)
    if meta is None:
        if errors.exists():
            raise InputError(
                f"{errors} lists skipped records but {side.name} (the job's row count) is missing, so the "
                f"rows of {path.name} cannot be numbered; re-run `edgeembed embed`"
            )
        return np.arange(1, count + 1, dtype=np.int64)
    rows, skipped = meta.get("rows"), meta.get("skipped", 0)
    for name, value in (("rows", rows), ("skipped", skipped)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InputError(f"{side} has no valid {name!r} (got {value!r}); re-run `edgeembed embed`")
    if rows != count:
        raise InputError(
            f"{side} says {rows} rows but {path} holds {count}: they come from different runs; "
            "re-run `edgeembed embed`"
        )
    if meta.get("dim") is not None and meta.get("dim") != shape[1]:
        raise InputError(f"{side} says dim {meta.get('dim')} but {path} holds {shape[1]}-d rows")
    if skipped == 0:
        if errors.exists():
            raise InputError(
                f"{errors} lists skipped records but {side.name} says none were skipped: it is left from "
                "another run (remove it, or re-run `edgeembed embed`)"
            )
        return np.arange(1, count + 1, dtype=np.int64)
    if not errors.is_file():
        raise InputError(
            f"{errors} is missing: {side.name} says {skipped} records were skipped, so the rows of "
            f"{path.name} cannot be numbered without it (restore it, or re-run `edgeembed embed`)"
        )
    digest = meta.get("errors_sha256")
    if digest is not None and sha256_file(errors) != digest:
        raise InputError(
            f"{errors} is not the list {side.name} was written with (its sha256 differs): restore it, "
            "or re-run `edgeembed embed`"
        )
    try:
        numbers = [json.loads(line)["record"] for line in errors.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{errors} is unreadable: {exc!r}; re-run `edgeembed embed`") from None
    total = count + skipped
    valid = all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= total for n in numbers)
    if not valid or len(set(numbers)) != len(numbers) or len(numbers) != skipped:
        raise InputError(
            f"{errors} lists {len(numbers)} skipped records, {side.name} says {skipped} of {total}: "
            "they come from different runs; re-run `edgeembed embed`"
        )
    keep = np.ones(total + 1, dtype=bool)
    keep[0] = False
    keep[numbers] = False
    return np.flatnonzero(keep).astype(np.int64)


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


INDEX_FORMAT = "edgeembed-index"
INDEX_VERSION = 2
INDEX_MANIFEST = "index.json"
UNKNOWN_ARTIFACT = "unknown"
_INDEX_FILES = ("index.json", "pq.faiss", "binary.npy", "rescore.npy", "records.npy")


def _damaged(path: Path, what: str) -> ArtifactError:
    return ArtifactError(f"{path}: {what} (rebuild the index with `edgeembed index build`)")


def read_index_manifest(path: Path) -> dict[str, Any]:
    """index.json parsed and checked: format, its own digest (as artifact manifests carry), the values
    a search relies on (count, dim, ranges finite with lo <= hi, a known precision) and the file list."""
    path = Path(path)
    manifest = path / INDEX_MANIFEST
    if not manifest.is_file() or manifest.is_symlink():
        raise InputError(
            f"{path} is not a search index (no index.json); build one with `edgeembed index build`"
        )
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(manifest, f"unreadable index manifest: {exc}") from None
    if not isinstance(data, dict):
        raise _damaged(manifest, "the index manifest is not a JSON object")
    if data.get("format") != INDEX_FORMAT:
        if _legacy_index(data):
            raise _damaged(path, "built by an older edgeembed, without checksums")
        raise _damaged(manifest, f"not an edgeembed index manifest (format {data.get('format')!r})")
    if data.get("format_version") != INDEX_VERSION:
        raise _damaged(
            manifest,
            f"index format version {data.get('format_version')!r}; this edgeembed reads {INDEX_VERSION}",
        )
    try:
        digest = manifest_digest(data)
    except ValueError as exc:  # NaN/Infinity
        raise _damaged(manifest, f"invalid value in the index manifest: {exc}") from None
    if data.get(DIGEST_KEY) != digest:
        raise _damaged(manifest, "the index manifest does not match its digest: edited or damaged")
    _check_index_values(manifest, data)
    return data


def _legacy_index(data: dict) -> bool:
    return {"dim", "count", "rescore_precision"} <= data.keys()


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_index_values(manifest: Path, data: dict) -> None:
    def bad(what: str) -> ArtifactError:
        return _damaged(manifest, what)

    dim, count = data.get("dim"), data.get("count")
    if not _positive_int(dim) or not _positive_int(count):
        raise bad(f"dim and count must be positive integers, got {dim!r} and {count!r}")
    if data.get("first_pass") not in FIRST_PASSES:
        raise bad(f"first_pass must be one of {FIRST_PASSES}, got {data.get('first_pass')!r}")
    precision = data.get("rescore_precision")
    if precision not in RESCORE_PRECISIONS:
        raise bad(f"rescore_precision must be one of {RESCORE_PRECISIONS}, got {precision!r}")
    ranges = data.get("ranges")
    if (precision == "int8") != (ranges is not None):
        raise bad("int8 rescoring needs ranges, float32 rescoring has none")
    if ranges is not None:
        try:
            r = np.asarray(ranges, dtype=np.float64)
        except (TypeError, ValueError):
            raise bad("ranges must be a 2 x dim array of numbers") from None
        if r.shape != (2, dim) or not np.isfinite(r).all() or np.any(r[0] > r[1]):
            raise bad(f"ranges must be 2 x {dim} finite numbers with min <= max")
    artifact = data.get("artifact_sha256")
    if artifact != UNKNOWN_ARTIFACT and not _is_sha256(artifact):
        raise bad(f"artifact_sha256 must be a sha256 or {UNKNOWN_ARTIFACT!r}, got {artifact!r}")
    files = data.get("files")
    first = "pq.faiss" if data["first_pass"] == "pq" else "binary.npy"
    wanted = {first, "rescore.npy", "records.npy"}
    if not isinstance(files, dict) or set(files) != wanted:
        raise bad(f"files must list exactly {sorted(wanted)}")
    for name, entry in files.items():
        if (
            not isinstance(entry, dict)
            or not _is_sha256(entry.get("sha256"))
            or not isinstance(entry.get("bytes"), int)
        ):
            raise bad(f"files[{name!r}] needs a sha256 and a byte count")


def _index_files(dim: int, count: int, precision: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shape and dtype every .npy of an index must have."""
    return {
        "rescore.npy": ((count, dim), "int8" if precision == "int8" else "float32"),
        "records.npy": ((count,), "int64"),
        "binary.npy": ((count, (dim + 7) // 8), "uint8"),
    }


def _verify_files(path: Path, meta: dict, checksums: bool) -> None:
    """Each listed file inside the folder (no symlink), of its recorded size and (with `checksums`) sha256."""
    for name, entry in meta["files"].items():
        p = artifact_path(path, name, "index file")
        if not p.is_file():
            raise _damaged(path, f"{name} is missing")
        size = p.stat().st_size
        if size != entry["bytes"]:
            raise _damaged(p, f"{size} bytes, the index recorded {entry['bytes']} (truncated or replaced)")
        if checksums and sha256_file(p) != entry["sha256"]:
            raise _damaged(p, "checksum mismatch: the file was changed or corrupted after the build")


def _open_npy(path: Path, name: str, shape: tuple[int, ...], dtype: str, mmap: bool) -> np.ndarray:
    p = path / name
    try:
        arr = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise _damaged(p, f"unreadable: {exc}") from None
    if arr.shape != shape or arr.dtype != np.dtype(dtype):
        raise _damaged(p, f"holds {arr.dtype} {arr.shape}, the index needs {dtype} {shape}")
    return arr


class SearchIndex:
    """First pass (in memory) + rescoring store (memory-mapped); see the module docstring.

    Opening checks every file against index.json (shapes, dtypes, record numbers, the faiss index's
    size); `load` also checks the manifest's digest and the files' checksums, so a damaged index fails
    with one line instead of returning wrong records."""

    def __init__(self, path: Path, meta: dict, backend: str = "faiss") -> None:
        self.path, self.meta = path, meta
        if backend not in BACKENDS:
            raise InputError(f"unknown search backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.first_pass = meta["first_pass"]
        if self.first_pass == "pq" and backend != "faiss":
            raise InputError(
                f"{path} has a pq first pass, which runs on faiss; --backend {backend} applies to "
                "binary indexes (`edgeembed index build --first-pass binary`)"
            )
        self.backend = backend
        shapes = _index_files(self.dim, len(self), meta["rescore_precision"])
        self.store = _open_npy(path, "rescore.npy", *shapes["rescore.npy"], mmap=True)
        self.records = _open_npy(path, "records.npy", *shapes["records.npy"], mmap=False)
        if self.records[0] < 1 or np.any(np.diff(self.records) <= 0):
            raise _damaged(path / "records.npy", "record numbers are not increasing positive integers")
        self.ranges = np.asarray(meta["ranges"], dtype=np.float32) if meta.get("ranges") else None
        self.binary: np.ndarray | None = None
        if self.first_pass == "pq":
            faiss = require("faiss", "search")
            try:
                self._pq = faiss.read_index(str(path / "pq.faiss"))
            except RuntimeError:
                raise _damaged(path / "pq.faiss", "faiss cannot read it") from None
            if self._pq.ntotal != len(self) or self._pq.d != self.dim:
                raise _damaged(
                    path / "pq.faiss",
                    f"holds {self._pq.ntotal} x {self._pq.d}, the index {len(self)} x {self.dim}",
                )
        else:
            self.binary = _open_npy(path, "binary.npy", *shapes["binary.npy"], mmap=False)
            self._hamming = self._make_hamming()

    @property
    def artifact_sha256(self) -> str:
        """The digest of the artifact that embedded the corpus, or "unknown"."""
        return str(self.meta.get("artifact_sha256", UNKNOWN_ARTIFACT))

    def check_artifact(self, digest: str, allow_other: bool = False) -> str | None:
        """Whether queries embedded by the artifact with manifest digest `digest` belong with this index:
        None when it is the recorded one; a warning when the index records none, or with `allow_other`;
        otherwise InputError (another model's scores are meaningless against this corpus)."""
        recorded = self.artifact_sha256
        if recorded == digest:
            return None
        if recorded == UNKNOWN_ARTIFACT:
            return (
                f"{self.path} does not record which artifact embedded its corpus, so nothing checks that "
                "the query model is the same one; rebuild it with `edgeembed index build --artifact ...`"
            )
        what = (
            f"{self.path} was built from embeddings of artifact {recorded}, the queries' artifact is {digest}"
        )
        if allow_other:
            return f"{what}; searching anyway (--allow-other-model): scores may be meaningless"
        raise InputError(
            f"{what}: query with the artifact that embedded the corpus, or pass --allow-other-model"
        )

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
            if np.any(rows < 0):  # faiss pads with -1 when it holds fewer vectors than index.json says
                raise _damaged(self.path / "pq.faiss", "it returned fewer candidates than the index holds")
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
    def load(cls, path: str | Path, backend: str = "faiss", verify: bool = True) -> SearchIndex:
        """Open an index folder after checking index.json and (with `verify`) every file's sha256."""
        p = Path(path)
        if not p.is_dir():
            raise InputError(f"search index not found: {p}")
        meta = read_index_manifest(p)
        _verify_files(p, meta, checksums=verify)
        return cls(p, meta, backend)

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
        artifact_sha256: str | None = None,
    ) -> SearchIndex:
        """Streaming passes over float32 embeddings: int8 ranges (min/max of the whole corpus), pq
        codebooks (trained on `train_rows` rows sampled with `seed`), then the first-pass codes and the
        rescoring store, with index.json (checksums, shapes, the artifact's digest) last.

        Written as artifacts are (artifact.atomic_folder: a unique temp folder renamed into place, under
        the target's lock, so a second build of the same `out` is refused at once). `overwrite` replaces
        only an index folder (see check_index_target). `artifact_sha256` names the artifact when the
        embeddings do not record it; when neither does, the index records "unknown"."""
        if rescore_precision not in RESCORE_PRECISIONS:
            raise InputError(
                f"rescore precision must be one of {RESCORE_PRECISIONS}, got {rescore_precision!r}"
            )
        if first_pass not in FIRST_PASSES:
            raise InputError(f"first pass must be one of {FIRST_PASSES}, got {first_pass!r}")
        out = Path(out)
        identity = _build_identity(embeddings, artifact_sha256)
        check_index_target(out, embeddings.path, overwrite)
        if embeddings.count == 0:
            raise InputError(f"{embeddings.path} has no rows to index")
        if first_pass == "pq":
            require("faiss", "search")
            pq_factory(embeddings.dim)
            if embeddings.count < PQ_MIN_ROWS:
                raise InputError(
                    f"{embeddings.path} has {embeddings.count} rows; the pq first pass trains 16 centroids "
                    f"per subspace and needs at least {PQ_MIN_ROWS}: use --first-pass binary for so few"
                )
        try:
            with target_lock(out, "index build") as lock:
                clean_stale(lock)  # a killed build's temp folder, or its backup restored first
                check_index_target(out, embeddings.path, overwrite)  # again: we hold the lock now
                with atomic_folder(out, overwrite=True, lock=lock) as tmp:
                    meta = _write_index(tmp, embeddings, rescore_precision, first_pass, train_rows, seed)
                    meta["artifact_sha256"] = identity
                    _write_index_manifest(tmp, meta)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != out else ""
            raise EdgeEmbedError(f"cannot write the index {out}{where}: {exc.strerror or exc}") from None
        return cls.load(out, backend, verify=False)

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


def _build_identity(embeddings: Embeddings, named: str | None) -> str:
    """The artifact digest an index records: the one its embeddings carry, or the one the user names
    (they must agree when both are there), else "unknown"."""
    recorded = embeddings.artifact_sha256
    if named is not None and not _is_sha256(named):
        raise InputError(f"artifact digest must be a sha256 hex string, got {named!r}")
    if recorded and named and recorded != named:
        raise InputError(
            f"{embeddings.path} was embedded with artifact {recorded}, not the named one ({named}); "
            "name the artifact that made these embeddings"
        )
    return recorded or named or UNKNOWN_ARTIFACT


def check_index_target(out: Path, source: Path | None = None, overwrite: bool = False) -> None:
    """Refuse an output `index build` must not write or replace, before any work.

    --overwrite replaces only what edgeembed wrote: a folder with an index manifest (or an index of the
    older format) and nothing else in it; never the current folder or one above it, nor the folder
    holding the input. A missing or read-only parent folder is refused too."""
    out = Path(out)
    parent = out.expanduser().absolute().parent
    if not parent.is_dir():
        raise InputError(f"output folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output folder {parent} is not writable (read-only?); choose another --out")
    if out.is_symlink():
        raise InputError(f"{out} is a symbolic link; refusing to write an index through it")
    if not out.exists():
        return
    if not overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace the index in it")
    if not out.is_dir():
        raise InputError(f"{out} exists and is not an index folder; refusing to replace it")
    real = out.resolve()
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise InputError(f"--out {out} is the current folder or holds it; refusing to replace it")
    if source is not None and real in Path(source).resolve().parents:
        raise InputError(f"{out} holds the input {source}; refusing to replace it (choose another --out)")
    try:
        data = json.loads((out / INDEX_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict) or not (data.get("format") == INDEX_FORMAT or _legacy_index(data)):
        raise InputError(
            f"{out} is not an index edgeembed built (no index manifest); --overwrite replaces only "
            "those: remove it yourself or choose another --out"
        )
    others = sorted(p.name for p in out.iterdir() if p.name not in _INDEX_FILES or not p.is_file())
    if others:
        raise InputError(
            f"{out} holds {others[0]!r}, which is not part of an index; --overwrite replaces only what "
            "edgeembed wrote (move it away or choose another --out)"
        )


def _write_index(
    tmp: Path, embeddings: Embeddings, rescore_precision: str, first_pass: str, train_rows: int, seed: int
) -> dict[str, Any]:
    """The index's files in `tmp`; returns its manifest without the artifact identity and files."""
    n, dim = embeddings.count, embeddings.dim
    pq = None
    if first_pass == "pq":
        faiss = require("faiss", "search")
        factory = pq_factory(dim)
        pq = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    ranges = None
    lo = np.full(dim, np.inf, np.float32)
    hi = np.full(dim, -np.inf, np.float32)
    for chunk in embeddings.chunks():  # also proves every value finite before anything is trained
        if not np.isfinite(chunk).all():
            raise InputError(f"{embeddings.path} holds NaN or infinite values; re-run `edgeembed embed`")
        if rescore_precision == "int8":
            r = calibrate_ranges(chunk)
            lo, hi = np.minimum(lo, r[0]), np.maximum(hi, r[1])
    if rescore_precision == "int8":
        ranges = np.vstack([lo, hi])
    if pq is not None:
        pq.train(np.ascontiguousarray(sample_rows(embeddings, train_rows, seed)))
    # Plain appends, not a memory map: a full disk is then an OSError (one line), not a SIGBUS.
    bits = None if pq is not None else NpyWriter(tmp / "binary.npy", (dim + 7) // 8, np.uint8)
    store = NpyWriter(tmp / "rescore.npy", dim, np.int8 if ranges is not None else np.float32)
    try:
        for chunk in embeddings.chunks():
            if bits is None:
                pq.add(np.ascontiguousarray(chunk))
            else:
                bits.write(quantize_embeddings(chunk, "ubinary"))
            store.write(quantize_embeddings(chunk, rescore_precision, ranges))
        if bits is not None:
            bits.close()
        store.close()
    except BaseException:
        for writer in (bits, store):
            try:  # closing flushes, which fails again on a full disk; the temp folder goes anyway
                if writer is not None:
                    writer.abort()
            except OSError:
                pass
        raise
    if bits is None:
        try:
            faiss.write_index(pq, str(tmp / "pq.faiss"))
        except RuntimeError as exc:  # faiss reports a failed write (a full disk) as a RuntimeError
            reason = str(exc).strip().splitlines()[-1][-160:]
            raise EdgeEmbedError(f"cannot write {tmp / 'pq.faiss'} (disk full?): {reason}") from None
    np.save(tmp / "records.npy", np.asarray(embeddings.records, dtype=np.int64))
    return {
        "format": INDEX_FORMAT,
        "format_version": INDEX_VERSION,
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


def _write_index_manifest(tmp: Path, meta: dict[str, Any]) -> None:
    """index.json last: every file's size and sha256 (and a .npy's shape and dtype), then its digest."""
    files = {}
    for p in sorted(tmp.iterdir()):
        entry: dict[str, Any] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        if p.suffix == ".npy":
            arr = np.load(p, mmap_mode="r")
            entry.update(shape=list(arr.shape), dtype=str(arr.dtype))
            del arr
        files[p.name] = entry
    data = json.loads(json.dumps({**meta, "files": files}))
    data[DIGEST_KEY] = manifest_digest(data)
    (tmp / INDEX_MANIFEST).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
