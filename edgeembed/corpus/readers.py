"""Streaming readers: one Record per input record, numbered, so every output row can name its source.

Rows match records one to one: a .txt record is a line split on "\\n" only (one trailing "\\r" is
stripped; \\v, \\f, U+2028 and friends stay inside the text), a .jsonl record is a line, a .csv
record is a row (RFC 4180, read strictly: quoted fields may span lines, a stray quote is a bad record and
an unclosed one stops the read, since it would swallow every record after it), a .tsv record is a line
(IANA TSV: no quoting, a quote is a character like any other, as in STS-b), a Parquet record is a row.
A record that cannot give a text (not UTF-8, a lone surrogate, a missing column, a null) comes back as a
Record with `error` set, never dropped: the caller decides whether to stop or to set it aside. A UTF-8
byte order mark before the first record (Excel's "CSV UTF-8", Notepad) is dropped, as `utf-8-sig` would.

Ids keep their type: a CSV/TSV id is a string, a Parquet id keeps its Arrow type, a JSON id its JSON
value (`IdSpec` says how the output stores them).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from edgeembed._imports import require
from edgeembed.errors import InputError

FORMATS = ("txt", "jsonl", "csv", "tsv", "parquet")
_SUFFIXES = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
_SUFFIXES |= {".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
_BOM = b"\xef\xbb\xbf"
# The csv module's default field limit (131,072 characters) is below a long document; it is a
# process-wide setting, so it is only ever raised, to this bound (a larger field is a bad record).
CSV_FIELD_LIMIT = 1 << 27
_PREFLIGHT_RECORDS = 1_000  # jsonl: a column missing from all of these is a typo, not a bad record


def name_list(names: Iterable[Any], show: int = 8) -> str:
    """A few names and how many more, so that a 20,000-column header stays a readable line."""
    names = list(names)
    head = ", ".join(repr(n) for n in names[:show])
    return head + (f", … ({len(names) - show:,} more)" if len(names) > show else "")


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
        if p.is_dir():
            raise InputError(f"input {p} is a folder; give one file")
        if p.exists() and not p.is_file():
            raise InputError(
                f"input {p} is not a regular file (a pipe or a device); pipe texts into `edgeembed encode` "
                "with `-i -` (stdin) instead"
            )
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
    id: Any = None  # str, a JSON value (jsonl) or an Arrow value (Parquet): never its repr
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
        return _parquet_file(source).metadata.num_rows
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
    """Physical lines split on b"\\n" only, without the "\\n" and one trailing "\\r" (and without a
    byte order mark before the first)."""
    first = True
    for raw in fh:  # binary iteration splits on b"\n" and nothing else
        if first:
            first = False
            raw = raw.removeprefix(_BOM)
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


def _field(row: dict, key: str, kind: str) -> tuple[Any, str | None]:
    if key not in row:
        return None, f"no {kind} column {key!r} (has {name_list(sorted(row))})"
    value = row[key]
    if value is None:
        return None, f"{kind} column {key!r} is null"
    if kind == "id":
        return value, None
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
            if self.line == 1:
                raw = raw.removeprefix(_BOM)
            text, error = _decode(raw)
            if error is not None:
                raise InputError(f"{self.path} line {self.line}: {error}; convert the file to UTF-8")
            yield text  # type: ignore[misc]


_UNCLOSED = "unexpected end of data"  # csv's words (strict mode) for a quoted field still open at the end


def _csv_reason(exc: csv.Error) -> str:
    """csv's own wording, where it misleads, in the user's terms."""
    text = str(exc)
    if "expected after '\"'" in text:
        return (
            "a quote in the middle of a field, or text after a closing quote; inside a quoted field write a "
            'quote as two (""), or quote the whole field'
        )
    if "new-line character seen in unquoted field" in text:
        return "a carriage return (\\r) inside an unquoted field; quote the field or remove the \\r"
    if "field larger than field limit" in text:
        return f"a field longer than {csv.field_size_limit():,} characters"
    return text


def _next_row(reader: Iterator[list[str]], lines: _LineCounter) -> list[str] | str | None:
    """The next csv row, None at the end, or the reason a malformed row could not be read (the reader
    goes on with the next line)."""
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        return _csv_reason(exc)


def _csv_reader(fh: BinaryIO, source: Source) -> tuple[_LineCounter, Iterator[list[str]], list[str] | None]:
    """The line counter, the csv reader and the header row (None for an empty file), columns checked."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    lines = _LineCounter(fh, source.path)  # type: ignore[arg-type]
    if source.format == "tsv":
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
    else:
        reader = csv.reader(lines, delimiter=",", strict=True)
    header = _next_row(reader, lines)
    if isinstance(header, str):
        raise InputError(f"{source.path} line {lines.line} (the header): {header}")
    if header is not None:
        for key in filter(None, (source.column, source.id_column)):
            if key not in header:
                raise InputError(
                    f"{source.path} has no column {key!r}; its header has {len(header):,} columns: "
                    f"{name_list(header)}"
                )
            if header.count(key) > 1:
                raise InputError(
                    f"{source.path}: its header names the column {key!r} {header.count(key)} times; "
                    "rename the copies so that --column/--id-column name one column"
                )
    return lines, reader, header


def _csv(fh: BinaryIO, source: Source, skip: int) -> Iterator[Record]:
    lines, reader, header = _csv_reader(fh, source)
    if header is None:
        return
    number = 0
    while True:
        start = lines.line + 1
        values = _next_row(reader, lines)
        if values is None:
            return
        number += 1
        if number <= skip:
            continue
        if values == _UNCLOSED:
            raise InputError(
                f"{source.path} record {number} (line {start}): a quoted field opened there is never closed, "
                "so every line after it would be one field; close the quote, or write a quote inside a "
                'quoted field as two ("")'
            )
        if isinstance(values, str):
            yield Record(number, start, None, None, values)
            continue
        if len(values) != len(header):
            yield Record(number, start, None, None, f"{len(values)} fields, the header has {len(header)}")
            continue
        yield _from_row(number, start, dict(zip(header, values)), source)


def _unreadable(source: Source, exc: Exception) -> InputError:
    return InputError(f"{source.path} is not a readable Parquet file (truncated or damaged?): {exc}")


def _parquet_file(source: Source) -> Any:
    pq = require("pyarrow.parquet", "corpus")
    try:
        return pq.ParquetFile(source.path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise _unreadable(source, exc) from None


def _parquet(source: Source, skip: int) -> Iterator[Record]:
    pf = _parquet_file(source)
    names = pf.schema_arrow.names
    columns = [c for c in (source.column, source.id_column) if c]
    for key in columns:
        if key not in names:
            raise InputError(
                f"{source.path} has no column {key!r}; it has {len(names):,} columns: {name_list(names)}"
            )
    number = 0
    batches = pf.iter_batches(batch_size=8192, columns=columns)
    while True:
        try:
            batch = next(batches, None)
        except (OSError, ValueError) as exc:  # a damaged page further in
            raise _unreadable(source, exc) from None
        if batch is None:
            return
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


def check_source(source: Source) -> None:
    """Refuse a missing text/id column before any work: the CSV/TSV header, the Parquet schema, the first
    jsonl records (a column none of them has is a typo, not a bad record to skip)."""
    if source.path is None or source.format == "txt":
        return
    if source.format == "parquet":
        next(iter(_parquet(source, skip=0)), None)  # checks the schema
        return
    with source.path.open("rb") as fh:
        if source.format in ("csv", "tsv"):
            _csv_reader(fh, source)
            return
        seen: dict[str, bool] = {}
        first: list[str] | None = None
        n = 0
        for n, raw in enumerate(_lines(fh), start=1):
            if n > _PREFLIGHT_RECORDS:
                break
            try:
                row = json.loads(raw)
            except ValueError:  # not JSON, not UTF-8: a bad record of its own, reported when read
                continue
            if isinstance(row, dict):
                first = sorted(row) if first is None else first
                for key in filter(None, (source.column, source.id_column)):
                    seen[key] = seen.get(key, False) or key in row
    for key, found in seen.items():
        if not found:
            within = "its records" if n <= _PREFLIGHT_RECORDS else f"its first {_PREFLIGHT_RECORDS:,} records"
            raise InputError(
                f"{source.path}: none of {within} has a column {key!r} (the first has {name_list(first or [])}); "
                "check --column/--id-column"
            )


@dataclass(frozen=True)
class IdSpec:
    """How the output stores ids: an Arrow type (by name; `arrow` is the type itself for a Parquet
    input's column), or "json": each id as its JSON text, lossless for ids of mixed or nested JSON types."""

    type: str
    arrow: Any = field(default=None, compare=False)

    @property
    def json(self) -> bool:
        return self.type == "json"

    def arrow_type(self) -> Any:
        pa = require("pyarrow", "corpus")
        if self.json:
            return pa.string()
        if self.arrow is not None:
            return self.arrow
        return {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_()}[self.type]

    def values(self, ids: Iterable[Any]) -> list[Any]:
        if self.json:
            return [json.dumps(i, ensure_ascii=False, separators=(",", ":")) for i in ids]
        return list(ids)


def id_spec(source: Source, parquet_type: Any = None) -> IdSpec | None:
    """The id column's type in the output: CSV/TSV ids are strings, a Parquet id keeps its Arrow type,
    jsonl ids keep theirs when every id has one (all strings, all integers in int64 or all booleans),
    else every id is stored as its JSON text. Reads the ids once for jsonl (cheap next to embedding)."""
    if source.id_column is None or source.path is None:
        return None
    if source.format in ("csv", "tsv"):
        return IdSpec("string")
    if source.format == "parquet":
        schema = _parquet_file(source).schema_arrow
        arrow = schema.field(source.id_column).type
        return IdSpec(str(arrow), arrow)
    kinds = set()
    for r in read_records(source):
        if r.error is None:
            kinds.add(_json_kind(r.id))
            if len(kinds) > 1:
                return IdSpec("json")
    return IdSpec(kinds.pop() if kinds and None not in kinds else "json" if kinds else "string")


def _json_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return "int64"
    return None
