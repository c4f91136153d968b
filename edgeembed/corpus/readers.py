"""Streaming readers: one Record per input record, numbered, so every output row can name its source.

Rows match records one to one: a .txt record is a line split on "\\n" only (one trailing "\\r" is
stripped; \\v, \\f, U+2028 and friends stay inside the text), a .jsonl record is a line, a .csv/.tsv
record is a row (quoted fields may span lines), a Parquet record is a row. A record that cannot give a
text (not UTF-8, a lone surrogate, a missing column, a null) comes back as a Record with `error` set,
never dropped: the caller decides whether to stop or to set it aside.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edgeembed._imports import require
from edgeembed.errors import InputError

FORMATS = ("txt", "jsonl", "csv", "tsv", "parquet")
_SUFFIXES = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
_SUFFIXES |= {".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class Source:
    """Where texts come from: a file (or stdin for .txt) and, for tables, which columns to use."""

    path: Path | None  # None = stdin (txt only)
    format: str
    column: str | None = None
    id_column: str | None = None

    @classmethod
    def open(
        cls,
        path: str | Path,
        column: str | None = None,
        id_column: str | None = None,
        format: str | None = None,
    ) -> Source:
        """Check the path, the format (from the suffix unless given) and the column options up front."""
        if str(path) == "-":
            fmt = format or "txt"
            if fmt != "txt":
                raise InputError("stdin is read as text, one record per line; use a file for other formats")
            return cls(None, "txt", None, None)
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(f"input file not found: {p}")
        fmt = format or _SUFFIXES.get(p.suffix.lower())
        if fmt not in FORMATS:
            raise InputError(
                f"cannot tell the format of {p} from its suffix; use one of "
                f"{', '.join(sorted(_SUFFIXES))} or pass the format ({', '.join(FORMATS)})"
            )
        if fmt == "txt" and (column or id_column):
            raise InputError(f"{p} is plain text (one record per line): --column/--id-column do not apply")
        if fmt != "txt" and not column:
            raise InputError(f"{p} is {fmt}: name the text column with --column")
        return cls(p, fmt, column, id_column)

    @property
    def name(self) -> str:
        return "stdin" if self.path is None else str(self.path)


@dataclass(frozen=True)
class Record:
    """One input record. `number` counts records from 1; `line` is where it starts (None for Parquet)."""

    number: int
    line: int | None
    text: str | None
    id: str | None = None
    error: str | None = None

    @property
    def where(self) -> str:
        if self.line is None:
            return f"row {self.number}"
        if self.line == self.number:
            return f"line {self.line}"
        return f"record {self.number} (line {self.line})"


def read_records(source: Source, skip: int = 0) -> Iterator[Record]:
    """Records in input order, starting after the first `skip` records (for resuming a job)."""
    if source.format == "parquet":
        yield from _parquet(source, skip)
        return
    if source.path is None:
        yield from _txt(sys.stdin.buffer, skip)
        return
    with source.path.open("rb") as fh:
        if source.format == "txt":
            yield from _txt(fh, skip)
        elif source.format == "jsonl":
            yield from _jsonl(fh, source, skip)
        else:
            yield from _csv(fh, source, skip)


def count_records(source: Source) -> int | None:
    """How many records there are (for progress and ETA); None for stdin. csv/tsv count lines, an
    upper bound when quoted fields span lines."""
    if source.path is None:
        return None
    if source.format == "parquet":
        pq = require("pyarrow.parquet", "corpus")
        return pq.ParquetFile(source.path).metadata.num_rows
    lines, last = 0, b"\n"
    with source.path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    lines += last != b"\n"
    return lines - 1 if source.format in ("csv", "tsv") else lines


def surrogate_error(text: str) -> str | None:
    """The reason a str cannot be UTF-8 encoded (a lone surrogate), or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"lone surrogate {text[exc.start]!r} at character {exc.start} (not valid Unicode text)"
    return None


def _decode(raw: bytes) -> tuple[str | None, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start} of the line)"


def _lines(fh: BinaryIO) -> Iterator[bytes]:
    """Physical lines split on b"\\n" only, without the "\\n" and one trailing "\\r"."""
    for raw in fh:  # binary iteration splits on b"\n" and nothing else
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        yield raw


def _txt(fh: BinaryIO, skip: int) -> Iterator[Record]:
    for number, raw in enumerate(_lines(fh), start=1):
        if number <= skip:
            continue
        text, error = _decode(raw)
        yield Record(number, number, text, None, error)


def _field(row: dict, key: str, kind: str) -> tuple[str | None, str | None]:
    if key not in row:
        return None, f"no {kind} column {key!r} (has {sorted(row)[:10]})"
    value = row[key]
    if value is None:
        return None, f"{kind} column {key!r} is null"
    if kind == "id":
        return str(value), None
    if not isinstance(value, str):
        return None, f"text column {key!r} is {type(value).__name__}, not a string"
    return value, surrogate_error(value)


def _from_row(number: int, line: int | None, row: dict, source: Source) -> Record:
    text, error = _field(row, source.column or "", "text")
    rid = None
    if error is None and source.id_column:
        rid, error = _field(row, source.id_column, "id")
    return Record(number, line, text if error is None else None, rid, error)


def _jsonl(fh: BinaryIO, source: Source, skip: int) -> Iterator[Record]:
    for number, raw in enumerate(_lines(fh), start=1):
        if number <= skip:
            continue
        line, error = _decode(raw)
        if error is not None:
            yield Record(number, number, None, None, error)
            continue
        try:
            row = json.loads(line)  # type: ignore[arg-type]
        except json.JSONDecodeError as exc:
            yield Record(number, number, None, None, f"not JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(row, dict):
            yield Record(number, number, None, None, f"a JSON {type(row).__name__}, not an object")
            continue
        yield _from_row(number, number, row, source)


class _LineCounter:
    """Decodes lines for the csv module and remembers where each physical line was; an undecodable
    line cannot be skipped inside a CSV (it may sit in a quoted field), so it stops the read."""

    def __init__(self, fh: BinaryIO, path: Path) -> None:
        self.fh, self.path, self.line = fh, path, 0

    def __iter__(self) -> Iterator[str]:
        for raw in self.fh:
            self.line += 1
            text, error = _decode(raw)
            if error is not None:
                raise InputError(f"{self.path} line {self.line}: {error}; convert the file to UTF-8")
            yield text  # type: ignore[misc]


def _next_row(reader: Iterator[list[str]], lines: _LineCounter, path: Path | None) -> list[str] | None:
    """The next csv row, None at the end; a malformed row is an InputError naming its line."""
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        raise InputError(f"{path} line {lines.line}: {exc}") from None


def _csv(fh: BinaryIO, source: Source, skip: int) -> Iterator[Record]:
    lines = _LineCounter(fh, source.path)  # type: ignore[arg-type]
    reader = csv.reader(lines, delimiter="\t" if source.format == "tsv" else ",")
    header = _next_row(reader, lines, source.path)
    if header is None:
        return
    for key in filter(None, (source.column, source.id_column)):
        if key not in header:
            raise InputError(f"{source.path} has no column {key!r}; its header is {header}")
    number = 0
    while True:
        start = lines.line + 1
        values = _next_row(reader, lines, source.path)
        if values is None:
            return
        number += 1
        if number <= skip:
            continue
        if len(values) != len(header):
            yield Record(number, start, None, None, f"{len(values)} fields, the header has {len(header)}")
            continue
        yield _from_row(number, start, dict(zip(header, values)), source)


def _parquet(source: Source, skip: int) -> Iterator[Record]:
    pq = require("pyarrow.parquet", "corpus")
    pf = pq.ParquetFile(source.path)
    names = pf.schema_arrow.names
    columns = [c for c in (source.column, source.id_column) if c]
    for key in columns:
        if key not in names:
            raise InputError(f"{source.path} has no column {key!r}; its columns are {names}")
    number = 0
    for batch in pf.iter_batches(batch_size=8192, columns=columns):
        data = batch.to_pydict()
        n = batch.num_rows
        if number + n <= skip:
            number += n
            continue
        for i in range(n):
            number += 1
            if number > skip:
                yield _from_row(number, None, {k: data[k][i] for k in columns}, source)


def batched(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    """Consecutive lists of `size` records (the last may be shorter)."""
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
