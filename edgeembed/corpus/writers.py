"""Streaming writers. Nothing half-written ever carries the final name: every file is written to a temp
name beside its target and renamed into place when complete.

- NpyWriter: a .npy whose header is fixed up at the end (rows appended as they come).
- JsonlWriter: {"text", "embedding"} per line.
- stream_writer: the one of the two an output name asks for (`edgeembed encode`).
- write_npy_shard / write_parquet_shard: one complete shard file, atomically.
- merge_npy / merge_parquet: shards -> one file, streaming (one shard in memory at a time).

A temp name carries its writer's pid (`.NAME.tmp-PID`): a failed writer always removes its own (even when
closing it fails again, as on a full disk), and one left by a killed writer is removed by the next run
once that pid is gone (`clean_stale_temps`). An OSError (read-only folder, full disk) becomes one
OutputError line naming the output (`output_error`).
"""

from __future__ import annotations

import errno
import json
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgeembed._imports import require
from edgeembed.errors import EdgeEmbedError, InputError, OutputError

_NPY_MAGIC = b"\x93NUMPY\x01\x00"
_NPY_HEADER = 128  # total header bytes, fixed so it can be rewritten in place once the row count is known


def check_output(path: Path, suffixes: Sequence[str]) -> None:
    """Fail before any work if `path` cannot be written: wrong suffix, missing folder, not writable."""
    if path.suffix not in suffixes:
        raise InputError(f"output {path} must end in {' or '.join(suffixes)}")
    parent = path.expanduser().resolve().parent
    if not parent.is_dir():
        raise InputError(f"output folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output folder {parent} is not writable")
    if path.is_dir():
        raise InputError(f"output {path} is a folder; give a file name")


def side_files(out: Path) -> tuple[Path, Path]:
    """The files `embed` writes beside OUT: OUT.json (a .npy's metadata) and OUT.errors.jsonl; `index
    build` and `search` read them."""
    return out.parent / f"{out.name}.json", out.parent / f"{out.name}.errors.jsonl"


def temp_beside(path: Path) -> Path:
    return path.parent / f".{path.name}.tmp-{os.getpid()}"


def _alive(pid: int) -> bool:
    """Whether `pid` runs on this host (temp names carry the pid of the process writing them)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_temps(folder: Path, prefix: str) -> list[Path]:
    """Remove `prefix*.tmp-PID` files in `folder` whose writer is dead (a SIGKILLed run); a live
    writer's file is never touched. Returns what was removed."""
    removed = []
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(prefix) and ".tmp-" in p.name]
    except OSError:
        return []
    for p in candidates:
        pid = p.name.rsplit(".tmp-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def output_error(exc: OSError, out: Path) -> EdgeEmbedError:
    """One line for an OSError met while writing `out`: what went wrong and where
    ("no space left on device writing /data/emb.npy")."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno is None and _full(out.parent):  # numpy's tofile: "8000 requested and 7136 written"
        reason = os.strerror(errno.ENOSPC)
    return OutputError(f"{reason[:1].lower()}{reason[1:]} writing {out}")


def _full(folder: Path) -> bool:
    try:
        return os.statvfs(folder).f_bavail == 0
    except (OSError, AttributeError):
        return False


def _close_quietly(fh: IO[Any] | None) -> None:
    """Close after a failure: a second error (ENOSPC again while flushing) must not stop the clean-up."""
    if fh is None:
        return
    try:
        fh.close()
    except OSError:
        pass


def _npy_header(dtype: np.dtype, rows: int, cols: int) -> bytes:
    d = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": (rows, cols),
    }
    body = repr(d).encode("latin1")
    pad = _NPY_HEADER - len(_NPY_MAGIC) - 2 - len(body) - 1
    if pad < 0:
        raise ValueError("npy header too long")
    return _NPY_MAGIC + struct.pack("<H", _NPY_HEADER - 10) + body + b" " * pad + b"\n"


class NpyWriter:
    """Appends (n, cols) blocks to a temp file; `close()` writes the true shape and renames into place."""

    def __init__(self, path: Path, cols: int, dtype: Any = np.float32) -> None:
        self.path, self.cols, self.dtype, self.rows = path, cols, np.dtype(dtype), 0
        self._tmp = temp_beside(path)
        self._fh: IO[bytes] | None = self._tmp.open("wb")
        self._fh.write(_npy_header(self.dtype, 0, cols))

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.ndim != 2 or block.shape[1] != self.cols:
            raise ValueError(f"expected (n, {self.cols}) rows, got {block.shape}")
        assert self._fh is not None
        self._fh.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> None:
        assert self._fh is not None
        self._fh.seek(0)
        self._fh.write(_npy_header(self.dtype, self.rows, self.cols))
        self._fh.close()
        self._fh = None
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        fh, self._fh = self._fh, None
        try:
            _close_quietly(fh)
        finally:
            self._tmp.unlink(missing_ok=True)


class JsonlWriter:
    """One {"text", "embedding"} object per line, to a file (temp, renamed at close) or a stream."""

    def __init__(self, path: Path | None, stream: IO[str] | None = None) -> None:
        self.path = path
        self._tmp = temp_beside(path) if path is not None else None
        self._fh = self._tmp.open("w", encoding="utf-8") if self._tmp is not None else stream
        self.rows = 0

    def write(self, texts: Sequence[str], block: np.ndarray) -> None:
        assert self._fh is not None
        for text, vec in zip(texts, block):
            self._fh.write(json.dumps({"text": text, "embedding": [round(float(x), 7) for x in vec]}) + "\n")
        self.rows += len(block)

    def close(self) -> None:
        if self._tmp is not None and self._fh is not None:
            self._fh.close()
            os.replace(self._tmp, self.path)  # type: ignore[arg-type]
        elif self._fh is not None:
            self._fh.flush()
        self._fh = None

    def abort(self) -> None:
        fh, self._fh = self._fh, None
        if self._tmp is None:
            return
        try:
            _close_quietly(fh)
        finally:
            self._tmp.unlink(missing_ok=True)


STREAM_SUFFIXES = (".npy", ".jsonl")


def stream_writer(output: Path | None, cols: int, stream: IO[str] | None = None) -> NpyWriter | JsonlWriter:
    """FILE.npy: a float32 matrix; FILE.jsonl: one {text, embedding} per line; None: jsonl on `stream`."""
    if output is None:
        return JsonlWriter(None, stream)
    check_output(output, STREAM_SUFFIXES)
    return NpyWriter(output, cols) if output.suffix == ".npy" else JsonlWriter(output)


def _atomic(path: Path, write: Any) -> None:
    tmp = temp_beside(path)
    try:
        write(tmp)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_npy_shard(path: Path, block: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:  # np.save would use tofile, whose errors carry no errno
            block2 = np.ascontiguousarray(block)
            fh.write(_npy_header(block2.dtype, *block2.shape))
            fh.write(block2.tobytes())

    _atomic(path, write)


def write_json(path: Path, data: dict) -> None:
    _atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n"))


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    _atomic(path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"))


def embedding_table(
    block: np.ndarray,
    records: Sequence[int],
    ids: Sequence[Any] | None = None,
    texts: Sequence[str] | None = None,
    id_type: Any = None,
) -> Any:
    """A pyarrow Table: record (int64), [id], [text], embedding (fixed-size list of the block's dtype).
    Ids keep their type (`id_type`, else inferred): never a Python repr."""
    pa = require("pyarrow", "corpus")
    flat = pa.array(np.ascontiguousarray(block).reshape(-1))
    columns = {"record": pa.array(records, type=pa.int64())}
    if ids is not None:
        columns["id"] = pa.array(ids, type=id_type)
    if texts is not None:
        columns["text"] = pa.array(texts, type=pa.string())
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, block.shape[1])
    return pa.table(columns)


def write_parquet_shard(path: Path, table: Any) -> None:
    pq = require("pyarrow.parquet", "corpus")
    _atomic(path, lambda tmp: pq.write_table(table, tmp))


def merge_npy(shards: Sequence[Path], out: Path, cols: int, dtype: Any) -> int:
    """Concatenate .npy shards into `out` (atomically), one shard in memory at a time; returns rows."""
    writer = NpyWriter(out, cols, dtype)
    try:
        for shard in shards:
            writer.write(np.load(shard, mmap_mode="r"))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return writer.rows


def merge_parquet(shards: Sequence[Path], out: Path, metadata: dict) -> int:
    """Parquet shards -> one file with one row group per shard and `metadata` under b"edgeembed"."""
    pq = require("pyarrow.parquet", "corpus")
    tmp = temp_beside(out)
    rows = 0
    try:
        writer = None
        for shard in shards:
            table = pq.read_table(shard)
            if writer is None:
                schema = table.schema.with_metadata({b"edgeembed": json.dumps(metadata, sort_keys=True)})
                writer = pq.ParquetWriter(tmp, schema)
            writer.write_table(table.replace_schema_metadata(writer.schema.metadata))
            rows += table.num_rows
        if writer is None:
            raise InputError("no rows to write")
        writer.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def read_parquet_metadata(path: Path) -> dict:
    pq = require("pyarrow.parquet", "corpus")
    meta = pq.ParquetFile(path).schema_arrow.metadata or {}
    raw = meta.get(b"edgeembed")
    return json.loads(raw) if raw else {}
