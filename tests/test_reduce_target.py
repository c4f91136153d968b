"""`reduce --overwrite` replaces only a folder `edgeembed reduce` wrote (its reduce.json is the marker, as
edgeembed.json is export's), never a user's folder nor the teacher; each refusal is one line, up front."""

from __future__ import annotations

import json

from click.testing import CliRunner

from edgeembed.cli import main
from edgeembed.reduce.folder import REDUCE_JSON, is_reduced

from conftest import WORDS


def _reduce(teacher, out, corpus, cache, *extra):
    args = ["reduce", str(teacher), "--dim", "8", "--corpus", str(corpus), "--out", str(out)]
    return CliRunner().invoke(main, [*args, "--cache-dir", str(cache), *extra])


def _one_error(res) -> str:
    assert res.exit_code == 1 and (res.exception is None or isinstance(res.exception, SystemExit)), res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    return errors[0]


def test_overwrite_replaces_only_what_reduce_wrote(tiny_model, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[i : i + 6]) for i in range(len(WORDS) - 6)) * 4 + "\n")
    cache = tmp_path / "cache"
    out = tmp_path / "small"
    assert _reduce(tiny_model, out, corpus, cache).exit_code == 0
    assert is_reduced(out)

    (out / "left-over.txt").write_text("from the earlier run")
    res = _reduce(tiny_model, out, corpus, cache)
    assert "not empty" in _one_error(res)  # without --overwrite: refused
    res = _reduce(tiny_model, out, corpus, cache, "--overwrite")
    assert res.exit_code == 0, res.output
    assert is_reduced(out) and not (out / "left-over.txt").exists()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    line = _one_error(_reduce(tiny_model, mine, corpus, cache, "--overwrite"))
    assert REDUCE_JSON in line and str(mine) in line
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in mine.iterdir()) == [
        "notes.txt"
    ]

    # A folder with a reduce.json that is not reduce's record (no teacher) is not one either.
    (mine / REDUCE_JSON).write_text(json.dumps({"note": "mine"}))
    assert not is_reduced(mine)
    _one_error(_reduce(tiny_model, mine, corpus, cache, "--overwrite"))
    assert (mine / "notes.txt").is_file()


def test_the_teacher_is_never_the_output(tiny_model, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a text\n")
    line = _one_error(_reduce(tiny_model, tiny_model, corpus, tmp_path / "cache", "--overwrite"))
    assert "input" in line
    assert (tiny_model / "modules.json").is_file() and (tiny_model / "model.safetensors").is_file()
