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
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgeembed._imports import require
from edgeembed.artifact import artifact_digest, target_lock
from edgeembed.corpus.quantization import (
    DTYPES,
    calibrate_ranges,
    check_precision,
    needs_ranges,
    quantize_embeddings,
    stored_dim,
)
from edgeembed.corpus.readers import (
    IdSpec,
    Record,
    Source,
    batched,
    check_source,
    count_records,
    id_spec,
    read_records,
)
from edgeembed.corpus.writers import (
    STREAM_SUFFIXES,
    NpyWriter,
    check_output,
    clean_stale_temps,
    merge_npy,
    merge_parquet,
    output_error,
    side_files,
    stream_writer,
    write_json,
    write_jsonl,
    write_npy_shard,
    write_parquet_shard,
)
from edgeembed.encoder import Encoder
from edgeembed.errors import EdgeEmbedError, InputError, OutputError

OUTPUT_SUFFIXES = (".npy", ".parquet")
WORK_VERSION = 2


@dataclass(frozen=True)
class EmbedConfig:
    """How to embed: all of it but `on_error` is part of the job's identity (a resume must use the same
    settings); a shard written with skipped records is redone under on_error="stop", so it stops there."""

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
    """Embed every record of `source` into OUT (.npy or .parquet); resumes an interrupted job on OUT.

    One job at a time per OUT (the export lock on `.OUT.lock`: a second run is refused at once, naming
    the first). `overwrite` replaces an existing OUT and discards an unfinished job with other settings.
    """
    config = config or EmbedConfig()
    out = Path(out)
    _check_out(out, overwrite, source)
    if out.suffix == ".parquet" or config.keep_text or source.id_column:
        require("pyarrow", "corpus")
        if out.suffix == ".npy" and (config.keep_text or source.id_column):
            raise InputError(".npy output holds embeddings only; write .parquet to keep ids or texts")
    check_source(source)  # a wrong column fails here, before any work or state
    try:
        with target_lock(out, what="embed"):
            _check_out(out, overwrite, source)  # again, holding the lock: a run that just finished wrote it
            return _run(encoder, source, out, config, overwrite, progress)
    except OSError as exc:
        raise _os_error(exc, source, out) from None


def _os_error(exc: OSError, source: Source, out: Path) -> EdgeEmbedError:
    """One line for an OSError: reading the input, or (a read-only folder, a full disk) writing OUT."""
    if exc.filename is not None and source.path is not None and Path(exc.filename) == source.path:
        reason = exc.strerror or str(exc)
        return InputError(f"{reason[:1].lower()}{reason[1:]} reading {source.path}")
    return output_error(exc, out)


def _run(
    encoder: Encoder,
    source: Source,
    out: Path,
    config: EmbedConfig,
    overwrite: bool,
    progress: Callable[[int, int | None], None] | None,
) -> EmbedResult:
    work = _work_of(out)
    ext = ".npy" if out.suffix == ".npy" else ".parquet"
    clean_stale_temps(out.parent, f".{out.name}.tmp-")
    identity = _identity(encoder, source, config, out)
    ids = id_spec(source)
    sample = _calibration_texts(source, config) if needs_ranges(config.precision) else None
    derived = {"ids": None if ids is None else ids.type, "sample": _digest(sample)}
    state = _load_state(work, identity, overwrite, out)
    if state is not None and state.get("derived") != derived:
        state = None  # the input changed where it decides the id type or the int8 ranges: start over
    finished = False
    try:
        if state is None:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            ranges = None if sample is None else _ranges(encoder, sample, source, config)
            state = {
                "identity": identity,
                "derived": derived,
                "ranges": None if ranges is None else ranges.tolist(),
            }
            write_json(work / "job.json", state)
        else:
            clean_stale_temps(work, ".part-")
        ranges = None if state["ranges"] is None else np.asarray(state["ranges"], dtype=np.float32)
        result = _shards(encoder, source, out, work, ext, config, ranges, ids, progress)
        finished = True
        return result
    finally:
        if not finished and not any(work.glob("part-*")):
            shutil.rmtree(work, ignore_errors=True)  # nothing worth resuming: leave no trace


def _shards(
    encoder: Encoder,
    source: Source,
    out: Path,
    work: Path,
    ext: str,
    config: EmbedConfig,
    ranges: np.ndarray | None,
    ids: IdSpec | None,
    progress: Callable[[int, int | None], None] | None,
) -> EmbedResult:
    """Shard i holds records i*shard_size+1 ... and is named by a digest of those records: a shard on disk
    is reused only when the input's records there are still the same (a same-length edit with its mtime
    restored included); any other is recomputed."""
    total = count_records(source)
    if progress is not None:
        progress(min(len(list(work.glob(f"part-*{ext}"))) * config.shard_size, total or 0), total)
    shards: list[Path] = []
    reused = 0
    try:
        for shard_no, chunk in enumerate(batched(read_records(source), config.shard_size)):
            path = work / f"part-{shard_no:05d}-{_chunk_digest(chunk)}{ext}"
            shards.append(path)
            if path.is_file() and (config.on_error == "skip" or not _errors_of(path).exists()):
                reused += 1
                continue
            for stale in work.glob(f"part-{shard_no:05d}-*"):
                stale.unlink()
            _write_shard(encoder, chunk, path, config, ranges, source, ids)
            if progress is not None:
                progress(shard_no * config.shard_size + len(chunk), total)
        if not shards:  # an empty input still gives a (0, dim) output
            shards.append(work / f"part-00000-{_chunk_digest([])}{ext}")
            _write_shard(encoder, [], shards[0], config, ranges, source, ids)
        keep = {p.name for p in shards} | {_errors_of(p).name for p in shards}
        for p in work.glob("part-*"):  # the input shrank: shards past its end, or replaced ones
            if p.name not in keep:
                p.unlink()
        return _finish(encoder, source, out, work, shards, config, ranges, ids, resumed=reused)
    except (EdgeEmbedError, OSError) as exc:
        error = _os_error(exc, source, out) if isinstance(exc, OSError) else exc
        kept = sum(1 for p in shards if p.is_file())
        if kept:  # say where the work is and how to go on: nobody should have to find a hidden folder
            shards_kept = f"{kept} complete shard{'s' if kept > 1 else ''}"
            note = (
                f" ({shards_kept} kept in {work}: rerun to resume once this is fixed, "
                "or add --overwrite to start over with other settings)"
            )
            error = (InputError if isinstance(error, InputError) else OutputError)(f"{error}{note}")
        raise error from None


def _errors_of(shard: Path) -> Path:
    return shard.with_suffix(".errors.jsonl")


def _work_of(out: Path) -> Path:
    return out.parent / f".{out.name}.parts"


_SIDE_KEYS = {"artifact_sha256", "dim", "precision", "rows", "skipped"}
_ERROR_KEYS = {"record", "where", "reason"}
# What the work folder may hold: job.json, shards, their error lists, the merge, and their temp files.
_WORK_ENTRY = re.compile(r"\.?(job\.json|part-\d+-[0-9a-f]+\.|merged)")


def own_side_file(path: Path) -> bool:
    """Whether `path` is a side file `embed` wrote (its JSON keys), not a user's file of that name:
    only such a file is ever replaced or removed."""
    try:
        if path.name.endswith(".errors.jsonl"):
            with path.open("rb") as fh:
                first = json.loads(fh.readline(1 << 20))
            return isinstance(first, dict) and set(first) == _ERROR_KEYS
        data = json.loads(path.read_bytes())
        return isinstance(data, dict) and set(data) >= _SIDE_KEYS
    except (OSError, ValueError):
        return False


def _own_work(work: Path) -> bool:
    return work.is_dir() and not work.is_symlink() and all(_WORK_ENTRY.match(p.name) for p in work.iterdir())


def _check_out(out: Path, overwrite: bool, source: Source) -> None:
    if out.suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"output {out} must end in .npy or .parquet")
    parent = out.expanduser().resolve().parent
    if not parent.is_dir():
        raise InputError(f"output folder {parent} does not exist; create it first")
    if source.path is None:
        raise InputError("embed reads a file (it may be resumed); for stdin use `edgeembed encode`")
    if out.is_dir():
        raise InputError(f"{out} is a folder; refusing to replace it")
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
    if out.exists() and os.path.samefile(out, source.path):
        raise InputError(f"{out} is the input {source.path}; write the embeddings to another file")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder {parent} is not writable; choose another --out")
    # edgeembed's own names beside OUT: never take over a user's file or folder that bears one
    work = _work_of(out)
    if (work.exists() or work.is_symlink()) and not _own_work(work):
        raise InputError(
            f"{work} is in the way: embed keeps {out.name}'s unfinished shards in a folder of that name, "
            "and this one holds what edgeembed did not write; move it away"
        )
    for side in side_files(out):
        if not (side.exists() or side.is_symlink()):
            continue
        if side.exists() and os.path.samefile(side, source.path):
            raise InputError(
                f"{side} is the input; embed writes {out.name}'s side file there: choose another --out"
            )
        if side.is_symlink() or not side.is_file() or not own_side_file(side):
            raise InputError(
                f"{side} is in the way: embed writes {out.name}'s side file there, and this one is not "
                "edgeembed's; move it away (--overwrite replaces only what edgeembed wrote)"
            )


def _identity(encoder: Encoder, source: Source, config: EmbedConfig, out: Path) -> dict:
    """What makes two runs the same job: the artifact and the settings. The input itself is checked
    shard by shard (each shard is named by a digest of its records), not by path, size or mtime."""
    artifact = ""
    if encoder.path is not None and (encoder.path / "edgeembed.json").is_file():
        artifact = hashlib.sha256((encoder.path / "edgeembed.json").read_bytes()).hexdigest()
    settings = {k: v for k, v in asdict(config).items() if k != "on_error"}
    return {
        "version": WORK_VERSION,
        "format": source.format,
        "column": source.column,
        "id_column": source.id_column,
        "artifact": artifact,
        "output": out.suffix,
        **settings,
    }


_FLAGS = {
    "column": "--column",
    "id_column": "--id-column",
    "format": "--format",
    "artifact": "ARTIFACT",
    "output": "the output suffix",
    "precision": "--precision",
    "shard_size": "--shard-size",
    "batch_size": "--batch-size",
    "keep_text": "--keep-text",
    "calibration_size": "--calibration-size",
    "prompt_name": "--prompt-name",
}


def _load_state(work: Path, identity: dict, overwrite: bool, out: Path) -> dict | None:
    """The unfinished job in `work` to resume, or None to start a new one. One with other settings is
    discarded when it has no complete shard (nothing to lose) or with `overwrite`; else refused, naming
    the settings that differ and the flag to use."""
    path = work / "job.json"
    if not work.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("identity") == identity:
        return state if isinstance(state, dict) else None
    done = len(list(work.glob("part-*.npy")) + list(work.glob("part-*.parquet")))
    if overwrite or not done or not isinstance(state.get("identity"), dict):
        return None
    if state["identity"].get("version") != WORK_VERSION:  # an older edgeembed's shards: not reusable
        return None
    old = state["identity"]
    diffs = [
        f"{_FLAGS.get(k, k)} {old.get(k)!r} (now {identity.get(k)!r})"
        for k in sorted(set(old) | set(identity))
        if old.get(k) != identity.get(k)
    ]
    raise InputError(
        f"{out}: an unfinished job with {done} complete shards ran with {', '.join(diffs)}; rerun with "
        "those settings to resume it, or add --overwrite to discard it and start over"
    )


def _digest(values: Any) -> str | None:
    if values is None:
        return None
    return hashlib.sha256(repr(values).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _chunk_digest(chunk: list[Record]) -> str:
    """A digest of everything a shard's output depends on in its records (numbers, lines, texts, ids, errors)."""
    return _digest([(r.number, r.line, r.text, r.id, r.error) for r in chunk])  # type: ignore[return-value]


def _calibration_texts(source: Source, config: EmbedConfig) -> list[str]:
    """The seeded sample of `config.calibration_size` records spread over the whole corpus (same seed,
    same sample: a resumed or a Ray job quantizes identically)."""
    total = count_records(source) or 0
    rng = np.random.default_rng(config.seed)
    k = min(config.calibration_size, total)
    chosen = set(rng.choice(total, size=k, replace=False).tolist()) if k else set()
    return [r.text for r in read_records(source) if r.number - 1 in chosen and r.text is not None]


def _ranges(encoder: Encoder, texts: list[str], source: Source, config: EmbedConfig) -> np.ndarray:
    if not texts:
        raise InputError(f"{source.name} has no readable records to calibrate {config.precision} ranges on")
    emb = encoder.encode(texts, batch_size=config.batch_size, prompt_name=config.prompt_name)
    return calibrate_ranges(emb)


def calibrate_source(encoder: Encoder, source: Source, config: EmbedConfig) -> np.ndarray:
    """int8/uint8 ranges from a seeded sample of `config.calibration_size` records spread over the whole
    corpus (same seed, same sample, same bytes: a resumed or a Ray job quantizes identically)."""
    return _ranges(encoder, _calibration_texts(source, config), source, config)


def _write_shard(
    encoder: Encoder,
    chunk: list[Record],
    path: Path,
    config: EmbedConfig,
    ranges: np.ndarray | None,
    source: Source,
    ids: IdSpec | None,
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
            _errors_of(path),
            ({"record": r.number, "where": r.where, "reason": r.error} for r in bad),
        )
    if path.suffix == ".npy":
        write_npy_shard(path, block)
        return
    from edgeembed.corpus.writers import embedding_table

    table = embedding_table(
        block,
        [r.number for r in good],
        ids.values(r.id for r in good) if ids is not None else None,
        [r.text for r in good] if config.keep_text else None,  # type: ignore[misc]
        id_type=None if ids is None else ids.arrow_type(),
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
    ids: IdSpec | None,
    resumed: int,
) -> EmbedResult:
    errors = [e for e in map(_errors_of, shards) if e.is_file()]
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
    if ids is not None:  # "json": each id is its JSON text (json.loads gives the input's value back)
        metadata["id_type"] = ids.type
    # Everything is staged inside the work folder first (the space it needs is taken there), then renamed
    # into place, OUT last: a failure (a full disk) leaves neither a half-written OUT nor side files of a
    # run that did not finish beside an older OUT.
    staged = {
        "out": work / f"merged{out.suffix}",
        "json": work / "merged.json",
        "errors": work / "merged.errors",
    }
    side_json, err_path = side_files(out)
    try:
        if out.suffix == ".npy":
            cols = stored_dim(config.precision, encoder.dim)
            rows = merge_npy(shards, staged["out"], cols, DTYPES[config.precision])
            write_json(staged["json"], {**metadata, "rows": rows})
        else:
            rows = merge_parquet(shards, staged["out"], metadata)
        if errors:
            with staged["errors"].open("w", encoding="utf-8") as fh:
                for p in errors:
                    fh.write(p.read_text(encoding="utf-8"))
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise
    if errors:
        os.replace(staged["errors"], err_path)
    else:
        err_path.unlink(missing_ok=True)
    if out.suffix == ".npy":
        os.replace(staged["json"], side_json)
    os.replace(staged["out"], out)
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
                raise InputError(
                    f"{source_name} {r.where}: {r.error}; fix it (or use `edgeembed embed --on-error skip`, "
                    "which lists bad records in a side file and goes on)"
                )
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
    overwrite: bool = False,
) -> int:
    """Every record of `source` embedded window by window (encode_stream) into `output` (.npy float32
    matrix, .jsonl {text, embedding} lines; None: jsonl on `stream`); returns the rows written. A file
    appears under its name only when complete: on any error or interrupt the partial one is removed.
    An existing `output` is replaced only with `overwrite` (a file, never a folder, never the input).
    `progress(done, total)` gets absolute counts (total None for stdin)."""
    if output is None:
        return _encode(encoder, source, None, stream, batch_size, prompt_name, progress)
    output = Path(output)
    check_stream_output(output, source, overwrite)
    try:
        with target_lock(output, what="encode"):
            check_stream_output(output, source, overwrite)
            clean_stale_temps(output.parent, f".{output.name}.tmp-")
            rows = _encode(encoder, source, output, stream, batch_size, prompt_name, progress)
            for side in side_files(output):  # an embed run's metadata describes the file just replaced
                if side.is_file() and not side.is_symlink() and own_side_file(side):
                    side.unlink()
            return rows
    except OSError as exc:
        raise _os_error(exc, source, output) from None


def check_stream_output(output: Path, source: Source, overwrite: bool) -> None:
    """Refuse, before any work, an output `encode` must not write: a wrong suffix, a missing or read-only
    folder, a folder, the input itself (also through a link), an existing file without `overwrite`."""
    check_output(output, STREAM_SUFFIXES)
    if not output.exists():
        return
    if source.path is not None and os.path.samefile(output, source.path):
        raise InputError(f"{output} is the input {source.path}; write the embeddings to another file")
    if not overwrite:
        raise InputError(f"{output} exists; pass --overwrite to replace it")


def _encode(
    encoder: Encoder,
    source: Source,
    output: Path | None,
    stream: IO[str] | None,
    batch_size: int,
    prompt_name: str | None,
    progress: Callable[[int, int | None], None] | None,
) -> int:
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
    """Records/s and ETA on stderr (tqdm), fed with absolute counts. The bar appears with the first count,
    so a run refused up front prints its one error line and nothing else."""

    def __init__(self, desc: str, enabled: bool = True) -> None:
        self._desc, self._enabled, self._bar = desc, enabled, None

    def __call__(self, done: int, total: int | None) -> None:
        if not self._enabled:
            return
        if self._bar is None:  # records already done by an earlier run do not count toward the rate
            from tqdm.auto import tqdm

            self._bar = tqdm(
                unit="rec", desc=self._desc, file=sys.stderr, smoothing=0.1, dynamic_ncols=True, total=total
            )
            self._bar.n = self._bar.last_print_n = done
            self._bar.refresh()
            return
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
