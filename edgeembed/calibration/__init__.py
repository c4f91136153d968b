"""Calibration data: a local text source -> a seeded sample of texts -> model inputs at their real lengths.

Shared by the ONNX Runtime and OpenVINO quantizers. Pure functions of (source, config): nothing is fetched
from a hub, nothing is padded to a fixed length (sentence-transformers pads calibration batches to 384,
which calibrates activation ranges on padding the model never sees at run time).

Sources, chosen by file suffix:
- `.txt`: one text per line;
- `.csv` / `.tsv` / `.jsonl`: one text per row, from `column`;
- an STS-style tsv (STS benchmark layout, or `s1<TAB>s2<TAB>score`): detected when no column is given,
  both sentences of each pair are used.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed._progress import progress_bar
from edgeembed.errors import InputError
from edgeembed.tokenization import TextTokenizer

MIN_TEXTS = 8  # below this a calibration is noise, not statistics
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
PROGRESS_MIN = 500  # texts before a progress bar is worth showing


class CalibrationError(InputError):
    """The calibration source is missing, unreadable, empty, too small, or lacks the named column."""


@dataclass(frozen=True)
class CalibrationConfig:
    """Where calibration texts come from and how many are sampled (seeded, so exports are reproducible)."""

    source: str
    column: str | None = None
    size: int = 300
    seed: int = 0
    # Share of extra texts, joined from the sampled ones, that fill the token-length strata up to
    # max_seq_length the sample misses (edgeembed.calibration.lengths); 0 = the sample as it is.
    length_coverage: float = 0.25

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise CalibrationError(f"calibration source not found: {path}")
    if not path.is_file():
        raise CalibrationError(f"calibration source is not a file: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CalibrationError(f"calibration source {path} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration source {path}: {exc}") from None


def _looks_like_sts(first_line: str) -> bool:
    """STS benchmark rows: 7+ tab fields with a numeric 5th; or exactly `s1<TAB>s2<TAB>score`."""
    fields = first_line.split("\t")
    idx = 4 if len(fields) >= 7 else 2 if len(fields) == 3 else None
    if idx is None:
        return False
    try:
        float(fields[idx])
    except ValueError:
        return False
    return True


def _sts_texts(path: Path) -> list[str]:
    from edgeembed.sts import load_sts

    data = load_sts(path)
    return [t for pair in zip(data.s1, data.s2) for t in pair]


def _table_texts(path: Path, text: str, column: str) -> list[str]:
    if path.suffix == ".jsonl":
        out = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CalibrationError(f"{path}:{lineno}: not a JSON object: {exc}") from None
            if not isinstance(row, dict):
                raise CalibrationError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            if column not in row:
                raise CalibrationError(f"{path}:{lineno}: no column {column!r} (this row has {sorted(row)})")
            out.append(row[column] if isinstance(row[column], str) else str(row[column]))
        return out
    delimiter = "\t" if path.suffix == ".tsv" else ","
    first = text.split("\n", 1)[0]
    if path.suffix == ".csv" and "\t" in first and "," not in first:
        delimiter = "\t"  # a tab-separated file named .csv (the STS benchmark does this)
    # Tab-separated files are read without quoting, as edgeembed's corpus reader reads them (IANA TSV).
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter, quoting=quoting)
    header = reader.fieldnames or []
    if column not in header:
        raise CalibrationError(f"{path} has no column {column!r}; its header has {header}")
    return [row.get(column) or "" for row in reader]


def _raw_texts(config: CalibrationConfig) -> list[str]:
    path = Path(config.source).expanduser()
    text = _read_text(path)
    if not text.strip():
        raise CalibrationError(f"calibration source {path} is empty")
    suffix = path.suffix.lower()
    if config.column is not None:
        if suffix not in TABLE_SUFFIXES:
            raise CalibrationError(
                f"--calibration-column needs a {'/'.join(TABLE_SUFFIXES)} file, got {path}"
            )
        return _table_texts(path, text, config.column)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if suffix in (".csv", ".tsv") and _looks_like_sts(first):
        return _sts_texts(path)
    if suffix in TABLE_SUFFIXES:
        raise CalibrationError(
            f"{path} is a table; name the text column (--calibration-column / CalibrationConfig.column)"
        )
    return text.splitlines()


def _dedup(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))


def load_calibration_texts(config: CalibrationConfig) -> list[str]:
    """The seeded sample of unique, non-empty texts; errors name the file and what is wrong."""
    if config.size < MIN_TEXTS:
        raise CalibrationError(f"calibration size must be >= {MIN_TEXTS}, got {config.size}")
    if not 0.0 <= config.length_coverage <= 1.0:
        raise CalibrationError(f"length_coverage must be in [0, 1], got {config.length_coverage}")
    texts = _dedup(_raw_texts(config))
    if len(texts) < MIN_TEXTS:
        raise CalibrationError(
            f"calibration source {config.source} has {len(texts)} unique non-empty texts; "
            f"need at least {MIN_TEXTS}"
        )
    if len(texts) <= config.size:
        return texts
    rng = np.random.default_rng(config.seed)
    picked = rng.choice(len(texts), size=config.size, replace=False)
    return [texts[i] for i in picked]


def calibration_inputs(
    config: CalibrationConfig,
    tokenizer: TextTokenizer,
    input_names: Sequence[str],
    batch_size: int = 1,
) -> list[dict[str, np.ndarray]]:
    """Model input dicts for the sampled texts (plus, with `config.length_coverage`, texts joined from
    them that reach the lengths up to max_seq_length the sample lacks): truncated to max_seq_length,
    each batch padded only to its own longest text (batches are length-sorted, as the Encoder runs them)."""
    from edgeembed.calibration.lengths import cover_lengths

    if batch_size < 1:
        raise CalibrationError(f"calibration batch size must be >= 1, got {batch_size}")
    texts, _ = cover_lengths(load_calibration_texts(config), tokenizer, config.length_coverage, config.seed)
    encodings = tokenizer.encode(texts)
    order = list(range(len(encodings)))
    if batch_size > 1:
        order.sort(key=lambda i: -len(encodings[i].ids))
    starts = range(0, len(order), batch_size)
    progress = progress_bar(len(starts), len(texts) >= PROGRESS_MIN, unit="batch", desc="calibration inputs")
    out = []
    for start in starts:
        batch = tokenizer.pad([encodings[i] for i in order[start : start + batch_size]])
        out.append(batch.as_inputs(input_names))
        if progress is not None:
            progress.update(1)
    if progress is not None:
        progress.close()
    return out


def check_sources(calibration: CalibrationConfig | None, sts: str | Path | None) -> None:
    """Read calibration and STS files once up front, so an empty, malformed or missing file fails before
    the model is loaded and exported rather than after minutes of work."""
    if calibration is not None:
        load_calibration_texts(calibration)
    if sts is not None:
        from edgeembed.sts import load_sts

        load_sts(sts)
