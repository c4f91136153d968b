"""Corpus jobs on the tiny model: readers (rows == records), the resumable embed job, streaming encode,
bad input as one line, embedding quantization."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgeembed import Encoder
from edgeembed.cli import main
from edgeembed.corpus import (
    EmbedConfig,
    Source,
    calibrate_ranges,
    dequantize,
    embed_corpus,
    encode_source,
    quantize_embeddings,
    read_records,
)
from edgeembed.errors import InputError, MissingExtraError

TEXTS = [
    "hello world",
    "the cat sat on the mat",
    "",
    "a man is playing a guitar on stage and the crowd sings along",
    "stock market fell",
    "embed quickly",
    "small fast quantized model",
    "the dog",
]
# Characters str.splitlines() would split on; a line is split on "\n" only.
ODD = "one\x0btwo\x0cthree\x1cfour\x85five\u2028six\u2029seven\rin"


@pytest.fixture(scope="module")
def enc(tiny_artifact) -> Encoder:
    return Encoder.load(tiny_artifact)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _corpus(n: int) -> list[str]:
    return [TEXTS[i % len(TEXTS)] + f" {i}" for i in range(n)]


def test_txt_lines_split_on_newline_only(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(f"{ODD}\nwindows\r\n\n last \n".encode())
    records = list(read_records(Source.open(path)))
    assert [r.text for r in records] == [ODD, "windows", "", " last "]
    assert [r.number for r in records] == [1, 2, 3, 4]


def test_every_format_gives_the_encoders_embeddings(enc, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    texts = [*TEXTS, ODD, 'quoted "comma, inside"', "two\nlines"]
    ids = [f"id{i}" for i in range(len(texts))]
    expected = enc.encode(texts)
    (tmp_path / "c.jsonl").write_text(
        "".join(json.dumps({"t": t, "k": k}) + "\n" for t, k in zip(texts, ids))
    )
    import csv

    with (tmp_path / "c.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["k", "t"])
        w.writerows(zip(ids, texts))
    # TSV has no quoting: a text cannot hold a line break there, and quotes are plain characters.
    tsv = [(i, t.replace("\n", " ").replace("\r", " ")) for i, t in zip(ids, texts)]
    (tmp_path / "c.tsv").write_text("k\tt\n" + "".join(f"{i}\t{t}\n" for i, t in tsv), encoding="utf-8")
    pq.write_table(pa.table({"t": texts, "k": ids}), tmp_path / "c.parquet", row_group_size=4)
    for name in ("c.jsonl", "c.csv", "c.tsv", "c.parquet"):
        src = Source.open(tmp_path / name, column="t", id_column="k")
        out = tmp_path / f"{name}.out.parquet"
        res = embed_corpus(enc, src, out, EmbedConfig(shard_size=4))
        table = pq.read_table(out)
        assert res.rows == len(texts) and table.column("id").to_pylist() == ids, name
        assert table.column("record").to_pylist() == list(range(1, len(texts) + 1))
        got = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
        want = enc.encode([t for _, t in tsv]) if name == "c.tsv" else expected
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=name)
    # txt (without the embedded newline, which would be two lines) to .npy
    plain = texts[:-1]
    (tmp_path / "c.txt").write_text("\n".join(plain) + "\n", encoding="utf-8")
    embed_corpus(enc, Source.open(tmp_path / "c.txt"), tmp_path / "c.npy", EmbedConfig(shard_size=3))
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), expected[:-1], atol=1e-6)


def test_bad_records_stop_with_their_number_or_go_to_a_side_file(enc, tmp_path):
    path = tmp_path / "bad.jsonl"
    rows = [{"t": "hello"}, {"t": None}, {"x": "no column"}, {"t": "\ud800 alone"}, {"t": "ok"}]
    body = "".join(json.dumps(r) + "\n" for r in rows).encode() + b'{"t": "\xff"}\n'
    path.write_bytes(body)
    src = Source.open(path, column="t")
    with pytest.raises(InputError, match=r"bad\.jsonl line 2: text column 't' is null"):
        embed_corpus(enc, src, tmp_path / "o.npy")
    assert not (tmp_path / "o.npy").exists()
    out = tmp_path / "o2.npy"
    res = embed_corpus(enc, src, out, EmbedConfig(on_error="skip", shard_size=2))
    assert res.rows == 2 and res.skipped == 4 and np.load(out).shape == (2, enc.dim)
    side = [json.loads(line) for line in res.errors.read_text().splitlines()]  # type: ignore[union-attr]
    assert [s["record"] for s in side] == [2, 3, 4, 6]
    assert "lone surrogate" in side[2]["reason"] and "UTF-8" in side[3]["reason"]
    np.testing.assert_allclose(np.load(out), enc.encode(["hello", "ok"]), atol=1e-6)


_KILLER = """
import os, signal, sys
from pathlib import Path
from edgeembed import Encoder
from edgeembed.corpus import EmbedConfig, Source, embed_corpus

def progress(done, total):
    if done >= {kill_after}:
        os.kill(os.getpid(), signal.SIGKILL)

enc = Encoder.load(sys.argv[1])
embed_corpus(enc, Source.open(sys.argv[2]), Path(sys.argv[3]), EmbedConfig(**{config}), progress=progress)
"""


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_killed_job_resumes_to_identical_bytes(enc, tiny_artifact, tmp_path, precision):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_corpus(70)) + "\n")
    config = {"shard_size": 16, "precision": precision, "calibration_size": 20}
    ext = ".parquet" if precision == "int8" and _has_pyarrow() else ".npy"
    out = tmp_path / f"out{ext}"
    script = tmp_path / "killer.py"
    script.write_text(_KILLER.format(kill_after=32, config=config))
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny_artifact), str(corpus), str(out)],
        capture_output=True,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    work = tmp_path / f".{out.name}.parts"
    parts = sorted(work.glob("part-*"))  # part-NNNNN-<digest of its records>EXT
    assert not out.exists() and [p.name[:10] for p in parts] == ["part-00000", "part-00001"]
    assert all(p.suffix == ext for p in parts)
    res = embed_corpus(enc, Source.open(corpus), out, EmbedConfig(**config))
    assert res.resumed_shards == 2 and res.rows == 70 and not work.exists()
    fresh = tmp_path / f"fresh{ext}"
    embed_corpus(enc, Source.open(corpus), fresh, EmbedConfig(**config))
    assert out.read_bytes() == fresh.read_bytes()


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def test_resume_refuses_other_settings_and_existing_output(enc, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"a\nb\n\xff\n")
    out = tmp_path / "o.npy"
    with pytest.raises(InputError, match=r"line 3: not valid UTF-8.*2 complete shards kept in"):
        embed_corpus(enc, Source.open(corpus), out, EmbedConfig(shard_size=1))
    with pytest.raises(InputError, match=r"2 complete shards ran with --shard-size 1 \(now 2\).*--overwrite"):
        embed_corpus(enc, Source.open(corpus), out, EmbedConfig(shard_size=2, on_error="skip"))
    corpus.write_text("a\nb\nc\n")
    res = embed_corpus(enc, Source.open(corpus), out, EmbedConfig(shard_size=1))
    assert res.resumed_shards == 2 and res.rows == 3 and not (tmp_path / ".o.npy.parts").exists()
    with pytest.raises(InputError, match="--overwrite"):
        embed_corpus(enc, Source.open(corpus), out)


def test_quantization_matches_sentence_transformers(rng):
    st_q = pytest.importorskip("sentence_transformers.quantization")
    emb = rng.normal(size=(200, 24)).astype(np.float32)
    ranges = calibrate_ranges(emb)
    for precision in ("float32", "int8", "uint8", "binary", "ubinary"):
        ours = quantize_embeddings(emb, precision, ranges)
        theirs = st_q.quantize_embeddings(emb, precision, ranges=ranges)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, precision
        np.testing.assert_array_equal(ours, theirs, err_msg=precision)
    assert quantize_embeddings(emb, "ubinary").shape == (200, 3)


def test_quantization_round_trips_within_a_bucket(rng):
    emb = rng.normal(size=(100, 16)).astype(np.float32)
    ranges = calibrate_ranges(emb[:50])
    step = (ranges[1] - ranges[0]) / 255
    for precision in ("int8", "uint8"):
        back = dequantize(quantize_embeddings(emb, precision, ranges), precision, ranges)
        inside = np.clip(emb, ranges[0], ranges[1])  # outside the calibrated range: clipped
        assert np.all(np.abs(back - inside) <= step * 1.001), precision
    bits = dequantize(quantize_embeddings(emb, "binary"), "binary")
    np.testing.assert_array_equal(bits, np.where(emb > 0, 1.0, -1.0))
    with pytest.raises(InputError, match="ranges"):
        quantize_embeddings(emb, "int8")


def test_embed_stores_ranges_and_quantizes_like_the_api(enc, tmp_path):
    corpus = tmp_path / "c.txt"
    texts = _corpus(40)
    corpus.write_text("\n".join(texts) + "\n")
    out = tmp_path / "q.npy"
    embed_corpus(enc, Source.open(corpus), out, EmbedConfig(precision="int8", calibration_size=1000))
    meta = json.loads((tmp_path / "q.npy.json").read_text())
    ranges = np.asarray(meta["ranges"], dtype=np.float32)
    np.testing.assert_array_equal(ranges, calibrate_ranges(enc.encode(texts)))
    np.testing.assert_array_equal(np.load(out), quantize_embeddings(enc.encode(texts), "int8", ranges))


def test_lone_surrogate_in_the_api_names_the_index(enc):
    with pytest.raises(InputError, match=r"texts\[2\] holds a lone surrogate '\\ud800' at character 3"):
        enc.encode(["ok", "fine", "abc\ud800def"])
    with pytest.raises(InputError, match=r"character 0"):
        enc.encode("\udfff", prompt_name="query")


def test_encode_cli_rows_match_lines_and_streams_npy(runner, tiny_artifact, enc, tmp_path):
    src = tmp_path / "in.txt"
    lines = [ODD, "windows", "", "x"]
    src.write_bytes((ODD + "\nwindows\r\n\nx").encode())
    out = tmp_path / "e.npy"
    res = runner.invoke(main, ["encode", str(tiny_artifact), "-i", str(src), "-o", str(out)])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(np.load(out), enc.encode(lines), atol=1e-6)
    res = runner.invoke(main, ["encode", str(tiny_artifact)], input=ODD + "\n")
    assert res.exit_code == 0 and len(res.output.splitlines()) == 1
    assert json.loads(res.output)["text"] == ODD


def test_encode_cli_bad_input_is_one_line(runner, tiny_artifact, tmp_path):
    res = runner.invoke(main, ["encode", str(tiny_artifact)], input=b"ok\n\xff\n")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "stdin line 2: not valid UTF-8" in res.output
    # UTF-8-encoded surrogate: not UTF-8 either, named the same way
    res = runner.invoke(main, ["encode", str(tiny_artifact)], input=b"ok\nfine\n\xed\xa0\x80\n")
    assert res.exit_code == 1 and "stdin line 3: not valid UTF-8" in res.output
    # the output location is checked before the artifact is even opened
    res = runner.invoke(main, ["encode", "/nonexistent/art", "-o", str(tmp_path / "missing" / "e.npy")])
    assert res.exit_code == 1 and "does not exist" in res.output and "artifact" not in res.output
    # a failure midway leaves no output file behind
    out = tmp_path / "e.npy"
    src = tmp_path / "in.txt"
    src.write_bytes(b"good\n" * 5 + b"\xfe\n")
    res = runner.invoke(main, ["encode", str(tiny_artifact), "-i", str(src), "-o", str(out)])
    assert res.exit_code == 1 and "line 6" in res.output
    assert list(tmp_path.glob("*e.npy*")) == []


def test_encode_source_streams_jsonl_with_progress(enc, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a cat\nthe dog\n\n")
    out = tmp_path / "e.jsonl"
    seen: list[tuple[int, int | None]] = []
    rows = encode_source(enc, Source.open(str(src)), out, progress=lambda d, t: seen.append((d, t)))
    assert rows == 3 and seen == [(0, 3), (3, 3)]
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["text"] for g in got] == ["a cat", "the dog", ""]
    np.testing.assert_allclose([g["embedding"] for g in got], enc.encode(["a cat", "the dog", ""]), atol=1e-6)
    with pytest.raises(InputError, match=r"must end in \.npy or \.jsonl"):
        encode_source(enc, Source.open(str(src)), tmp_path / "e.csv")


def test_embed_cli(runner, tiny_artifact, tmp_path):
    src = tmp_path / "c.txt"
    src.write_text("\n".join(_corpus(30)) + "\n")
    out = tmp_path / "e.npy"
    args = ["embed", str(tiny_artifact), str(src), "--out", str(out), "--shard-size", "7", "--no-progress"]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "wrote 30 rows (float32)" in res.output and np.load(out).shape == (30, 16)
    res = runner.invoke(main, args)
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = runner.invoke(main, ["embed", str(tiny_artifact), str(tmp_path / "c.csv"), "--out", str(out)])
    assert res.exit_code == 1 and "input file not found" in res.output
    (tmp_path / "c.csv").write_text("a,b\n1,2\n")
    res = runner.invoke(main, ["embed", str(tiny_artifact), str(tmp_path / "c.csv"), "--out", str(out)])
    assert res.exit_code == 1 and "--column" in res.output


def test_missing_pyarrow_names_the_extra(monkeypatch, enc, tmp_path):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "c.txt").write_text("a\n")
    with pytest.raises(MissingExtraError, match=r"edgeembed\[corpus\]"):
        embed_corpus(enc, Source.open(tmp_path / "c.txt"), tmp_path / "o.parquet")
    (tmp_path / "c.parquet").write_bytes(b"PAR1")
    with pytest.raises(MissingExtraError, match=r"edgeembed\[corpus\]"):
        list(read_records(Source.open(tmp_path / "c.parquet", column="t")))


def test_readers_name_problems_up_front(tmp_path):
    with pytest.raises(InputError, match="cannot tell the format"):
        Source.open(_touch(tmp_path / "x.bin"))
    with pytest.raises(InputError, match="do not apply"):
        Source.open(_touch(tmp_path / "x.txt"), column="t")
    (tmp_path / "h.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=r"no column 't'; its header has 2 columns: 'a', 'b'"):
        list(read_records(Source.open(tmp_path / "h.csv", column="t")))


def _touch(path):
    path.write_text("")
    return path
