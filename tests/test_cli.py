"""The CLI: thin, helpful, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeembed.cli import main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_export_and_info(runner, tiny_model, tmp_path):
    out = tmp_path / "art"
    res = runner.invoke(main, ["export", str(tiny_model), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"artifact: {out}" in res.output and "min cosine" in res.output
    res = runner.invoke(main, ["info", str(out)])
    assert res.exit_code == 0 and "checksums: ok" in res.output and "fp32" in res.output
    assert "sentence_embedding (normalized)" in res.output  # the head inside the graph, for an app
    res = runner.invoke(main, ["info", str(out), "--json"])
    assert json.loads(res.output)["dim"] == 16


def test_encode_npy_and_jsonl(runner, tiny_artifact, tmp_path):
    src = tmp_path / "texts.txt"
    src.write_text("hello world\nthe cat sat\n\n")
    res = runner.invoke(main, ["encode", str(tiny_artifact), "-i", str(src), "-o", str(tmp_path / "e.npy")])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "e.npy").shape == (3, 16)
    res = runner.invoke(main, ["encode", str(tiny_artifact)], input="hello world\n")
    assert res.exit_code == 0
    row = json.loads(res.output.splitlines()[0])
    assert row["text"] == "hello world" and len(row["embedding"]) == 16


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["encode", "/nonexistent/art"], "artifact folder not found"),
        (["encode", "{art}", "-i", "/nonexistent.txt"], "input file not found"),
        (["encode", "{art}", "-o", "out.csv"], "must end in .npy or .jsonl"),
        (["export", "/nonexistent/model", "--out", "x"], "model folder not found"),
        (["info", "/nonexistent/art"], "artifact folder not found"),
    ],
)
def test_user_errors_are_one_line(runner, tiny_artifact, args, message):
    args = [a.replace("{art}", str(tiny_artifact)) for a in args]
    res = runner.invoke(main, args, input="x\n")
    assert res.exit_code == 1
    assert message in res.output
    assert "Traceback" not in res.output
