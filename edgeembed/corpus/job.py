"""The embed job: a corpus file -> embeddings on disk, in bounded memory, resumable.

Records are cut into shards of `shard_size` consecutive records. Each shard is one window: its texts are
embedded by `Encoder.encode` (sorted by length inside the window), quantized, and written as one shard
file, atomically, into a work folder `.OUT.parts/` beside OUT. A shard file on disk is therefore a
complete shard; an interrupted job rerun with the same settings skips those records and continues. The
shards are merged into OUT at the end (one shard in memory at a time) and the work folder removed, so
an interrupted + resumed run gives byte-for-byte the output of an uninterrupted one.

Bad records (not UTF-8, lone surrogate, missing column, null) stop the job with their record number,
or with on_error="skip" are listed with the reason in OUT.errors.jsonl; they never become rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import numpy as np

from edgeembed.artifact import artifact_digest
from edgeembed.corpus.quantization import (
    DTYPES,
    calibrate_ranges,
    check_precision,
    needs_ranges,
    quantize_embeddings,
    stored_dim,
)
from edgeembed.corpus.readers import Record, Source, batched, count_records, read_records
from edgeembed.corpus.writers import (
    NpyWriter,
    merge_npy,
    merge_parquet,
    stream_writer,
    write_json,
    write_jsonl,
    write_npy_shard,
    write_parquet_shard,
)
from edgeembed.encoder import Encoder
from edgeembed.errors import InputError

OUTPUT_SUFFIXES = (".npy", ".parquet")
WORK_VERSION = 1


@dataclass(frozen=True)
class EmbedConfig:
    """How to embed: all of it is part of the job's identity (a resume must use the same settings)."""

    precision: str = "float32"
    shard_size: int = 10_000
    batch_size: int = 32
    keep_text: bool = False
    on_error: str = "stop"  # or "skip"
    calibration_size: int = 4_096
    prompt_name: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.on_error not in ("stop", "skip"):
            raise InputError(f"on_error must be 'stop' or 'skip', got {self.on_error!r}")
        for name in ("shard_size", "batch_size", "calibration_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class EmbedResult:
    out: Path
    rows: int
    skipped: int
    shards: int
    resumed_shards: int
    precision: str
    errors: Path | None
    metadata: dict


def embed_corpus(
    encoder: Encoder,
    source: Source,
    out: Path,
    config: EmbedConfig | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> EmbedResult:
    """Embed every record of `source` into OUT (.npy or .parquet); resumes an interrupted job on OUT."""
    config = config or EmbedConfig()
    out = Path(out)
    _check_out(out, overwrite, source)
    if out.suffix == ".parquet" or config.keep_text or source.id_column:
        from edgeembed._imports import require

        require("pyarrow", "corpus")
        if out.suffix == ".npy" and (config.keep_text or source.id_column):
            raise InputError(".npy output holds embeddings only; write .parquet to keep ids or texts")
    work = out.parent / f".{out.name}.parts"
    identity = _identity(encoder, source, config, out)
    state = _load_state(work, identity)
    if state is None:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        ranges = calibrate_source(encoder, source, config) if needs_ranges(config.precision) else None
        state = {"identity": identity, "ranges": None if ranges is None else ranges.tolist()}
        write_json(work / "job.json", state)
    ranges = None if state["ranges"] is None else np.asarray(state["ranges"], dtype=np.float32)
    ext = ".npy" if out.suffix == ".npy" else ".parquet"
    done = _complete_shards(work, ext)
    total = count_records(source)
    if progress is not None:
        progress(done * config.shard_size, total)
    records = read_records(source, skip=done * config.shard_size)
    for shard_no, chunk in enumerate(batched(records, config.shard_size), start=done):
        _write_shard(encoder, chunk, work / f"part-{shard_no:05d}{ext}", config, ranges, source)
        if progress is not None:
            progress(shard_no * config.shard_size + len(chunk), total)
    shards = sorted(work.glob(f"part-*{ext}"))
    if not shards:  # an empty input still gives a (0, dim) output
        _write_shard(encoder, [], work / f"part-00000{ext}", config, ranges, source)
        shards = sorted(work.glob(f"part-*{ext}"))
    return _finish(encoder, source, out, work, shards, config, ranges, resumed=done)


def _check_out(out: Path, overwrite: bool, source: Source) -> None:
    if out.suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"output {out} must end in .npy or .parquet")
    parent = out.expanduser().resolve().parent
    if not parent.is_dir():
        raise InputError(f"output folder {parent} does not exist; create it first")
    if source.path is None:
        raise InputError("embed reads a file (it may be resumed); for stdin use `edgeembed encode`")
    if out.exists():
        if not overwrite:
            raise InputError(f"{out} exists; pass --overwrite to replace it")
        if out.is_dir():
            raise InputError(f"{out} is a folder; refusing to replace it")
    for stale in parent.glob(f".{out.name}.tmp-*"):  # a merge killed midway: its process is gone
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _identity(encoder: Encoder, source: Source, config: EmbedConfig, out: Path) -> dict:
    """What makes two runs the same job: the input file as it is, the artifact, the settings."""
    stat = source.path.stat()  # type: ignore[union-attr]
    artifact = ""
    if encoder.path is not None and (encoder.path / "edgeembed.json").is_file():
        artifact = hashlib.sha256((encoder.path / "edgeembed.json").read_bytes()).hexdigest()
    return {
        "version": WORK_VERSION,
        "input": str(source.path.resolve()),  # type: ignore[union-attr]
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "format": source.format,
        "column": source.column,
        "id_column": source.id_column,
        "artifact": artifact,
        "output": out.suffix,
        "config": asdict(config),
    }


def _load_state(work: Path, identity: dict) -> dict | None:
    path = work / "job.json"
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if state.get("identity") != identity:
        raise InputError(
            f"{work} holds an unfinished job with other settings or another input/artifact; "
            "rerun with the same ones to resume, or delete that folder to start over"
        )
    return state


def _complete_shards(work: Path, ext: str) -> int:
    """Shards 0..n-1 present (each renamed into place only when complete)."""
    n = 0
    while (work / f"part-{n:05d}{ext}").is_file():
        n += 1
    return n


def calibrate_source(encoder: Encoder, source: Source, config: EmbedConfig) -> np.ndarray:
    """int8/uint8 ranges from a seeded sample of `config.calibration_size` records spread over the whole
    corpus (same seed, same sample, same bytes: a resumed or a Ray job quantizes identically)."""
    total = count_records(source) or 0
    rng = np.random.default_rng(config.seed)
    k = min(config.calibration_size, total)
    chosen = set(rng.choice(total, size=k, replace=False).tolist()) if k else set()
    texts = [r.text for r in read_records(source) if r.number - 1 in chosen and r.text is not None]
    if not texts:
        raise InputError(f"{source.name} has no readable records to calibrate {config.precision} ranges on")
    emb = encoder.encode(texts, batch_size=config.batch_size, prompt_name=config.prompt_name)
    return calibrate_ranges(emb)


def _write_shard(
    encoder: Encoder,
    chunk: list[Record],
    path: Path,
    config: EmbedConfig,
    ranges: np.ndarray | None,
    source: Source,
) -> None:
    bad = [r for r in chunk if r.error is not None]
    if bad and config.on_error == "stop":
        r = bad[0]
        raise InputError(
            f"{source.name} {r.where}: {r.error}; fix it, or pass --on-error skip to list bad records "
            "in a side file and go on"
        )
    good = [r for r in chunk if r.error is None]
    emb = encoder.encode([r.text for r in good], batch_size=config.batch_size, prompt_name=config.prompt_name)  # type: ignore[misc]
    block = quantize_embeddings(emb, config.precision, ranges)
    if bad:
        write_jsonl(
            path.with_suffix(".errors.jsonl"),
            ({"record": r.number, "where": r.where, "reason": r.error} for r in bad),
        )
    if path.suffix == ".npy":
        write_npy_shard(path, block)
        return
    from edgeembed.corpus.writers import embedding_table

    table = embedding_table(
        block,
        [r.number for r in good],
        [r.id for r in good] if source.id_column else None,
        [r.text for r in good] if config.keep_text else None,  # type: ignore[misc]
    )
    write_parquet_shard(path, table)


def _finish(
    encoder: Encoder,
    source: Source,
    out: Path,
    work: Path,
    shards: list[Path],
    config: EmbedConfig,
    ranges: np.ndarray | None,
    resumed: int,
) -> EmbedResult:
    errors = sorted(work.glob("part-*.errors.jsonl"))
    skipped = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in errors)
    metadata = {
        "artifact": str(encoder.path) if encoder.path else None,
        # what `index build` records and `search` checks, and what binds OUT.errors.jsonl to this run
        "artifact_sha256": _artifact_sha256(encoder),
        "errors_sha256": _sha256_of(errors) if errors else None,
        "input": source.name,
        "column": source.column,
        "dim": encoder.dim,
        "precision": config.precision,
        "ranges": None if ranges is None else ranges.tolist(),
        "prompt_name": config.prompt_name,
        "skipped": skipped,
    }
    if out.suffix == ".npy":
        rows = merge_npy(shards, out, stored_dim(config.precision, encoder.dim), DTYPES[config.precision])
        write_json(out.parent / f"{out.name}.json", {**metadata, "rows": rows})
    else:
        rows = merge_parquet(shards, out, metadata)
    err_path = out.parent / f"{out.name}.errors.jsonl"
    if errors:
        with err_path.open("w", encoding="utf-8") as fh:
            for p in errors:
                fh.write(p.read_text(encoding="utf-8"))
    else:
        err_path.unlink(missing_ok=True)
    shutil.rmtree(work)
    return EmbedResult(
        out, rows, skipped, len(shards), resumed, config.precision, err_path if errors else None, metadata
    )


def _artifact_sha256(encoder: Encoder) -> str | None:
    if encoder.path is None or not (encoder.path / "edgeembed.json").is_file():
        return None
    return artifact_digest(encoder.path)


def _sha256_of(parts: list[Path]) -> str:
    """sha256 of the files' bytes in order: what _finish writes to OUT.errors.jsonl."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.read_bytes())
    return h.hexdigest()


def encode_stream(
    encoder: Encoder,
    records: Iterable[Record],
    source_name: str,
    window: int = 10_000,
    batch_size: int = 32,
    prompt_name: str | None = None,
) -> Iterator[tuple[list[str], np.ndarray]]:
    """(texts, float32 embeddings) per window of records, in input order; a bad record stops with its
    line number. Memory holds one window, whatever the input size."""
    for chunk in batched(records, window):
        for r in chunk:
            if r.error is not None:
                raise InputError(f"{source_name} {r.where}: {r.error}")
        texts = [r.text for r in chunk]
        yield texts, encoder.encode(texts, batch_size=batch_size, prompt_name=prompt_name)  # type: ignore[arg-type]


def encode_source(
    encoder: Encoder,
    source: Source,
    output: Path | None,
    stream: IO[str] | None = None,
    batch_size: int = 32,
    prompt_name: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> int:
    """Every record of `source` embedded window by window (encode_stream) into `output` (.npy float32
    matrix, .jsonl {text, embedding} lines; None: jsonl on `stream`); returns the rows written. A file
    appears under its name only when complete: on any error or interrupt the partial one is removed.
    `progress(done, total)` gets absolute counts (total None for stdin)."""
    writer = stream_writer(output, encoder.dim, stream)
    try:
        total = count_records(source)
        if progress is not None:
            progress(0, total)
        for texts, emb in encode_stream(
            encoder, read_records(source), source.name, batch_size=batch_size, prompt_name=prompt_name
        ):
            if isinstance(writer, NpyWriter):
                writer.write(emb)
            else:
                writer.write(texts, emb)
            if progress is not None:
                progress(writer.rows, total)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return writer.rows


class RateProgress:
    """Records/s and ETA on stderr (tqdm), fed with absolute counts."""

    def __init__(self, desc: str, enabled: bool = True) -> None:
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(unit="rec", desc=desc, file=sys.stderr, smoothing=0.1, dynamic_ncols=True)
        self._first = True

    def __call__(self, done: int, total: int | None) -> None:
        if self._bar is None:
            return
        if total is not None and self._bar.total != total:
            self._bar.total = total
        if self._first:  # records already done by an earlier run do not count toward the rate
            self._first = False
            self._bar.n = self._bar.last_print_n = done
            self._bar.refresh()
            return
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
