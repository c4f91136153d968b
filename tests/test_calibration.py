"""Calibration sources: every format, seeded sampling, real lengths, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeembed.calibration import (
    CalibrationConfig,
    CalibrationError,
    calibration_inputs,
    load_calibration_texts,
)
from edgeembed.tokenization import TextTokenizer

TEXTS = [f"sentence number {i} about the cat and the dog" + " again" * (i % 7) for i in range(40)]


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_txt_dedups_drops_blank_and_samples_with_seed(tmp_path):
    src = _write(tmp_path / "c.txt", "\n".join([*TEXTS, "", "   ", TEXTS[0], TEXTS[1]]) + "\n")
    everything = load_calibration_texts(CalibrationConfig(src, size=1000))
    assert everything == TEXTS
    a = load_calibration_texts(CalibrationConfig(src, size=10, seed=1))
    b = load_calibration_texts(CalibrationConfig(src, size=10, seed=1))
    c = load_calibration_texts(CalibrationConfig(src, size=10, seed=2))
    assert a == b and len(a) == 10 and len(set(a)) == 10 and set(a) <= set(TEXTS)
    assert a != c


def test_csv_tsv_jsonl_columns(tmp_path):
    csv_src = _write(
        tmp_path / "c.csv", "id,text\n" + "".join(f'{i},"{t}, with comma"\n' for i, t in enumerate(TEXTS))
    )
    tsv_src = _write(tmp_path / "c.tsv", "id\tbody\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(TEXTS)))
    jsonl_src = _write(tmp_path / "c.jsonl", "".join(json.dumps({"text": t, "n": 1}) + "\n" for t in TEXTS))
    assert load_calibration_texts(CalibrationConfig(csv_src, column="text", size=100)) == [
        f"{t}, with comma" for t in TEXTS
    ]
    assert load_calibration_texts(CalibrationConfig(tsv_src, column="body", size=100)) == TEXTS
    assert load_calibration_texts(CalibrationConfig(jsonl_src, column="text", size=100)) == TEXTS


def test_sts_file_uses_both_sentences(tmp_path):
    rows = [f"g\tf\t2012\t{i:04d}\t{i % 5}.0\tleft {t}\tright {t}" for i, t in enumerate(TEXTS[:10])]
    src = _write(tmp_path / "sts-like.csv", "\n".join(rows) + "\n")
    texts = load_calibration_texts(CalibrationConfig(src, size=100))
    assert len(texts) == 20
    assert texts[0] == f"left {TEXTS[0]}" and texts[1] == f"right {TEXTS[0]}"


def test_real_sts_benchmark_is_detected(sts_test_path):
    texts = load_calibration_texts(CalibrationConfig(str(sts_test_path), size=300))
    assert len(texts) == 300 and len(set(texts)) == 300


@pytest.mark.parametrize(
    ("name", "content", "column", "message"),
    [
        ("missing.txt", None, None, "not found"),
        ("empty.txt", "\n  \n", None, "is empty"),
        ("few.txt", "one\ntwo\nthree\n", None, "need at least"),
        ("binary.txt", b"\xff\xfe\x00bad", None, "not UTF-8"),
        ("table.csv", "id,text\n1,a\n", None, "name the text column"),
        ("t.csv", "id,text\n" + "".join(f"{i},x{i}\n" for i in range(20)), "body", "no column 'body'"),
        ("t.jsonl", '{"text": "a"}\n[1, 2]\n', "text", "expected a JSON object"),
        ("t.jsonl", '{"text": "a"}\n{"other": "b"}\n', "text", "no column 'text'"),
        ("t.txt", "\n".join(TEXTS), "text", "needs a .csv/.tsv/.jsonl"),
    ],
)
def test_bad_sources_name_file_and_problem(tmp_path, name, content, column, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(CalibrationError, match=message) as info:
        load_calibration_texts(CalibrationConfig(str(path), column=column))
    assert name in str(info.value)


def test_size_too_small_is_refused(tmp_path):
    src = _write(tmp_path / "c.txt", "\n".join(TEXTS))
    with pytest.raises(CalibrationError, match="size must be"):
        load_calibration_texts(CalibrationConfig(src, size=2))


def test_inputs_keep_real_lengths(tmp_path, tiny_artifact):
    src = _write(tmp_path / "c.txt", "\n".join(TEXTS))
    tok = TextTokenizer.from_file(tiny_artifact / "tokenizer.json", max_seq_length=24)
    cfg = CalibrationConfig(src, size=20, length_coverage=0)
    singles = calibration_inputs(cfg, tok, ("input_ids", "attention_mask"))
    assert len(singles) == 20
    assert all(set(d) == {"input_ids", "attention_mask"} for d in singles)
    assert all(d["input_ids"].dtype == np.int64 and d["attention_mask"].all() for d in singles)
    lengths = {d["input_ids"].shape[1] for d in singles}
    assert len(lengths) > 1 and max(lengths) <= 24  # real lengths, truncated, never a fixed pad
    batched = calibration_inputs(cfg, tok, ("input_ids", "attention_mask", "token_type_ids"), batch_size=8)
    assert [d["input_ids"].shape[0] for d in batched] == [8, 8, 4]
    # Length-sorted: each batch is padded to its own longest text, so the first batch is the longest.
    assert batched[0]["input_ids"].shape[1] == max(lengths)
    assert batched[-1]["input_ids"].shape[1] <= batched[0]["input_ids"].shape[1]
    assert sum(int(d["attention_mask"].sum()) for d in batched) == sum(
        int(d["attention_mask"].sum()) for d in singles
    )
