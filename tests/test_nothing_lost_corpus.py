"""Issue 21 ("nothing lost", round 3), the corpus side: `embed` and `encode` on one output, on their own
input, on a changed input, after a failure, on a read-only folder or a full disk; BOMs, odd CSV rows,
column typos; ids kept with their type. Each test is a reproduction of what went wrong."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeembed import Encoder
from edgeembed.artifact import TargetBusyError
from edgeembed.cli import main
from edgeembed.corpus import EmbedConfig, Source, embed_corpus, encode_source, read_records
from edgeembed.corpus.writers import JsonlWriter, NpyWriter
from edgeembed.errors import InputError

N = 30


@pytest.fixture(scope="module")
def enc(tiny_artifact) -> Encoder:
    return Encoder.load(tiny_artifact)


def _lines(n: int, word: str = "alpha") -> list[str]:
    return [f"line {i:04d} {word}" for i in range(n)]


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{t}\n" for t in lines), encoding="utf-8")
    return path


def _one_line_failure(res, *needles: str) -> str:
    """rc 1, exactly one line on stderr, no traceback; returns that line."""
    err = res.stderr
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err.strip()


def _mount(path: Path, *options: str) -> None:
    path.mkdir(exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Path]:
    """A 256 KiB tmpfs: real ENOSPC without filling a real disk."""
    d = tmp_path / "full"
    _mount(d, "size=256k")
    yield d
    subprocess.run(["umount", str(d)], check=False)


@pytest.fixture
def read_only(tmp_path) -> Iterator[Path]:
    """A read-only tmpfs: chmod 0o555 does not stop root (CI runs as root), a read-only mount does."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    d = tmp_path / "ro"
    _mount(d, "size=64k", "ro")
    yield d
    subprocess.run(["umount", str(d)], check=False)


# ---------------------------------------------------------------------------------------- 1: the lock
_HOLDER = """
import sys, time
from pathlib import Path
from edgeembed import Encoder
from edgeembed.artifact import TargetBusyError
from edgeembed.corpus import EmbedConfig, Source, embed_corpus

ready, go = Path(sys.argv[4]), Path(sys.argv[5])

def progress(done, total):
    if done and not ready.exists():  # hold the job midway (bounded) until the test says go
        ready.touch()
        for _ in range(600):
            if go.exists():
                return
            time.sleep(0.05)

enc = Encoder.load(sys.argv[1])
res = embed_corpus(enc, Source.open(sys.argv[2]), Path(sys.argv[3]), EmbedConfig(shard_size=5), progress=progress)
print(res.rows)
"""


def test_second_embed_on_one_output_is_refused_naming_the_first(enc, tiny_artifact, tmp_path):
    corpus = _write_lines(tmp_path / "c.txt", _lines(60))
    out = tmp_path / "o.npy"
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    ready, go = tmp_path / "ready", tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, str(script), str(tiny_artifact), str(corpus), str(out), str(ready), str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        for _ in range(600):  # bounded: the first run is past its first shard, holding the lock
            if ready.exists() or first.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists(), (
            first.stderr.read().decode()[-2000:] if first.poll() is not None else "no start"
        )
        args = [
            "embed",
            str(tiny_artifact),
            str(corpus),
            "--out",
            str(out),
            "--shard-size",
            "5",
            "--no-progress",
        ]
        res = CliRunner().invoke(main, args)
        line = _one_line_failure(res, "being written by another embed", f"process {first.pid} on ")
        assert str(out) in line
        with pytest.raises(TargetBusyError, match=f"another embed \\(process {first.pid} on "):
            embed_corpus(enc, Source.open(corpus), out, EmbedConfig(shard_size=5))  # the lock itself
        go.touch()
        stdout, stderr = first.communicate(timeout=120)
    finally:
        go.touch()
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr.decode()[-2000:]
    assert stdout.decode().strip() == "60"
    np.testing.assert_allclose(np.load(out), enc.encode(_lines(60)), atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["c.txt", "o.npy", "o.npy.json", "holder.py", "ready", "go"]
    )


# --------------------------------------------------------------------------- 4: encode -i X -o X, -o
def test_encode_refuses_its_input_and_an_existing_file(tiny_artifact, enc, tmp_path):
    runner = CliRunner()
    src = _write_lines(tmp_path / "x.jsonl", ["a", "b"])
    before = src.read_bytes()
    os.link(src, tmp_path / "hard.jsonl")
    (tmp_path / "sym.jsonl").symlink_to(src)
    for target in ("x.jsonl", "hard.jsonl", "sym.jsonl"):
        for extra in ([], ["--overwrite"]):
            res = runner.invoke(
                main, ["encode", str(tiny_artifact), "-i", str(src), "-o", str(tmp_path / target), *extra]
            )
            _one_line_failure(res, "is the input")
    assert src.read_bytes() == before
    user = tmp_path / "user.npy"
    user.write_bytes(b"user data")
    res = runner.invoke(main, ["encode", str(tiny_artifact), "-i", str(src), "-o", str(user)])
    _one_line_failure(res, "exists; pass --overwrite")
    assert user.read_bytes() == b"user data"
    res = runner.invoke(main, ["encode", str(tiny_artifact), "-i", str(src), "-o", str(user), "--overwrite"])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(np.load(user), enc.encode(["a", "b"]), atol=1e-6)
    folder = tmp_path / "folder.npy"
    folder.mkdir()
    (folder / "keep").write_text("x")
    res = runner.invoke(
        main, ["encode", str(tiny_artifact), "-i", str(src), "-o", str(folder), "--overwrite"]
    )
    _one_line_failure(res, "is a folder")
    assert (folder / "keep").read_text() == "x"
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        encode_source(enc, Source.open(src, format="txt"), user)


# ------------------------------------------------------------------------ 6: resume by content
def test_resume_redoes_a_same_length_edit_with_its_mtime_restored(enc, tmp_path):
    path = _write_lines(tmp_path / "c.txt", _lines(N))
    out = tmp_path / "o.npy"

    def stop_after_two_shards(done, total):
        if done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_corpus(enc, Source.open(path), out, EmbedConfig(shard_size=5), progress=stop_after_two_shards)
    assert len(list((tmp_path / ".o.npy.parts").glob("part-*.npy"))) == 2
    st = path.stat()
    edited = _lines(N)
    edited[1] = edited[1].replace("alpha", "omega")  # same length, inside the first (complete) shard
    _write_lines(path, edited)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as cp -p / rsync -t leave it
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    res = embed_corpus(enc, Source.open(path), out, EmbedConfig(shard_size=5))
    assert res.resumed_shards == 1  # shard 1 unchanged: kept; shard 0 changed: recomputed
    np.testing.assert_allclose(np.load(out), enc.encode(edited), atol=1e-6)


def test_int8_resume_starts_over_when_the_calibration_sample_changed(enc, tmp_path):
    path = _write_lines(tmp_path / "c.txt", _lines(N))
    out, fresh = tmp_path / "o.npy", tmp_path / "fresh.npy"
    config = EmbedConfig(shard_size=5, precision="int8", calibration_size=N)  # every record is in the sample

    def stop(done, total):
        if done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_corpus(enc, Source.open(path), out, config, progress=stop)
    edited = _lines(N)
    edited[-1] = "a much longer last line that moves the int8 ranges of the whole corpus"
    _write_lines(path, edited)
    res = embed_corpus(enc, Source.open(path), out, config)
    assert res.resumed_shards == 0  # the ranges changed: no old shard may be kept
    embed_corpus(enc, Source.open(path), fresh, config)
    assert out.read_bytes() == fresh.read_bytes()


def test_resume_follows_an_input_that_shrank_or_grew(enc, tmp_path):
    path = _write_lines(tmp_path / "c.txt", _lines(N))
    out = tmp_path / "o.npy"

    def stop(done, total):
        if done >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_corpus(enc, Source.open(path), out, EmbedConfig(shard_size=5), progress=stop)
    _write_lines(path, _lines(12))
    res = embed_corpus(enc, Source.open(path), out, EmbedConfig(shard_size=5))
    assert res.rows == 12 and res.resumed_shards == 2
    np.testing.assert_allclose(np.load(out), enc.encode(_lines(12)), atol=1e-6)


# ------------------------------------------------------------------ 7: a failed embed blocks nothing
@pytest.mark.parametrize("rerun", [[], ["--on-error", "skip"], ["--overwrite"]])
def test_a_failed_embed_does_not_block_its_output(tiny_artifact, enc, tmp_path, rerun):
    runner = CliRunner()
    path = tmp_path / "d.jsonl"
    path.write_text('{"t": "a"}\n{"t": null}\n{"t": "c"}\n')
    out = tmp_path / "o.npy"
    args = ["embed", str(tiny_artifact), str(path), "--column", "t", "--out", str(out), "--no-progress"]
    _one_line_failure(runner.invoke(main, args), "line 2", "--on-error skip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]  # nothing to hunt for
    path.write_text('{"t": "a"}\n{"t": "b"}\n{"t": "c"}\n')
    res = runner.invoke(main, [*args, *rerun])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(np.load(out), enc.encode(["a", "b", "c"]), atol=1e-6)
    # a wrong column fails before any state is written; the right one then just works
    out.unlink()
    _one_line_failure(runner.invoke(main, [*args[:3], "--column", "text", *args[5:]]), "'text'", "--column")
    assert not (tmp_path / ".o.npy.parts").exists()
    assert runner.invoke(main, args).exit_code == 0


def test_kept_shards_are_named_and_other_settings_name_the_flag(tiny_artifact, enc, tmp_path):
    runner = CliRunner()
    path = tmp_path / "d.txt"
    path.write_bytes(b"".join(f"{t}\n".encode() for t in _lines(7)) + b"\xff\n" + b"last\n")
    out = tmp_path / "o.npy"
    args = ["embed", str(tiny_artifact), str(path), "--out", str(out), "--shard-size", "3", "--no-progress"]
    line = _one_line_failure(runner.invoke(main, args), "line 8", "2 complete shards kept in", ".o.npy.parts")
    assert "--overwrite" in line
    line = _one_line_failure(runner.invoke(main, [*args, "--precision", "binary"]), "--precision 'float32'")
    assert "now 'binary'" in line and "--overwrite" in line
    # stop -> skip goes on from the kept shards; the bad record is listed, never a row
    res = runner.invoke(main, [*args, "--on-error", "skip"])
    assert res.exit_code == 0 and "resumed after 2 complete shards" in res.stderr, res.output
    np.testing.assert_allclose(np.load(out), enc.encode([*_lines(7), "last"]), atol=1e-6)
    out.unlink()

    # skip -> stop: a kept shard that skipped a record is redone, so the stop happens again
    def interrupt(done, total):
        if done >= 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_corpus(
            enc, Source.open(path), out, EmbedConfig(shard_size=3, on_error="skip"), progress=interrupt
        )
    assert len(list((tmp_path / ".o.npy.parts").glob("part-*.errors.jsonl"))) == 1
    with pytest.raises(InputError, match="line 8"):
        embed_corpus(enc, Source.open(path), out, EmbedConfig(shard_size=3))
    res = runner.invoke(main, [*args, "--precision", "binary", "--overwrite"])
    assert res.exit_code == 1 and "line 8" in res.stderr  # --overwrite discarded the other job, then stopped
    assert "--precision" not in res.stderr


# ------------------------------------------------------------- 10, 11: read-only folder, full disk
def test_read_only_folder_is_one_line(tiny_artifact, tmp_path, read_only):
    corpus = _write_lines(tmp_path / "c.txt", _lines(5))
    runner = CliRunner()
    res = runner.invoke(main, ["embed", str(tiny_artifact), str(corpus), "--out", str(read_only / "o.npy")])
    _one_line_failure(res, "not writable", str(read_only))
    res = runner.invoke(
        main, ["encode", str(tiny_artifact), "-i", str(corpus), "-o", str(read_only / "e.npy")]
    )
    _one_line_failure(res, "not writable", str(read_only))
    assert list(read_only.iterdir()) == []


@pytest.mark.parametrize("name", ["e.jsonl", "e.npy"])
def test_encode_on_a_full_disk_is_one_line_and_leaves_nothing(tiny_artifact, tmp_path, full_disk, name):
    corpus = _write_lines(tmp_path / "c.txt", _lines(6000))  # 6000 x 16 float32 > 256 KiB
    res = CliRunner().invoke(
        main, ["encode", str(tiny_artifact), "-i", str(corpus), "-o", str(full_disk / name), "--no-progress"]
    )
    _one_line_failure(res, f"no space left on device writing {full_disk / name}")
    assert list(full_disk.iterdir()) == []


def test_embed_on_a_full_disk_is_one_line_and_names_what_it_keeps(tiny_artifact, tmp_path, full_disk):
    corpus = _write_lines(tmp_path / "c.txt", _lines(6000))
    out = full_disk / "o.npy"
    args = ["embed", str(tiny_artifact), str(corpus), "--out", str(out), "--no-progress"]
    _one_line_failure(CliRunner().invoke(main, args), f"no space left on device writing {out}")
    assert list(full_disk.iterdir()) == []  # the one shard did not fit: nothing is kept
    # shards that fitted are kept for a resume, and the line says where
    res = CliRunner().invoke(main, [*args, "--shard-size", "1000"])
    _one_line_failure(res, "no space left on device", f"kept in {full_disk / '.o.npy.parts'}")
    assert [p.name for p in full_disk.iterdir()] == [".o.npy.parts"]


def test_abort_unlinks_even_when_closing_fails_again(tmp_path):
    class Full:
        def write(self, data):
            raise OSError(28, "No space left on device")

        def close(self):
            raise OSError(28, "No space left on device")

    for writer in (JsonlWriter(tmp_path / "e.jsonl"), NpyWriter(tmp_path / "e.npy", 4)):
        writer._fh.close()
        writer._fh = Full()
        writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_a_killed_encode_leaves_a_temp_file_the_next_run_removes(tiny_artifact, tmp_path):
    out = tmp_path / "e.npy"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeembed", "encode", str(tiny_artifact), "-o", str(out), "--no-progress"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    temp = tmp_path / f".e.npy.tmp-{proc.pid}"
    try:
        proc.stdin.write(b"hello\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        for _ in range(600):  # bounded: the writer has opened its temp file and waits for more stdin
            if temp.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert temp.exists(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no temp"  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert temp.exists()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    live_temp = tmp_path / f".e.npy.tmp-{live.pid}"
    live_temp.write_bytes(b"another run's")
    try:
        src = _write_lines(tmp_path / "in.txt", ["a", "b"])
        res = CliRunner().invoke(main, ["encode", str(tiny_artifact), "-i", str(src), "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert not temp.exists() and live_temp.read_bytes() == b"another run's"
    finally:
        live.kill()
        live.wait()


# ------------------------------------------------------------------------------- 13: input handling
BOM = "\ufeff"


def test_a_bom_is_dropped_in_every_text_format(tmp_path):
    (tmp_path / "b.txt").write_text(BOM + "first\nsecond\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(BOM + '{"t": "first"}\n{"t": "second"}\n', encoding="utf-8")
    (tmp_path / "b.csv").write_text(BOM + "id,t\n1,first\n2,second\n", encoding="utf-8")
    (tmp_path / "b.tsv").write_text(BOM + "id\tt\n1\tfirst\n2\tsecond\n", encoding="utf-8")
    for name in ("b.txt", "b.jsonl", "b.csv", "b.tsv"):
        column = None if name.endswith(".txt") else "t"
        id_column = "id" if name.endswith(("csv", "tsv")) else None
        records = list(read_records(Source.open(tmp_path / name, column=column, id_column=id_column)))
        assert [(r.text, r.error) for r in records] == [("first", None), ("second", None)], name
        if id_column:
            assert [r.id for r in records] == ["1", "2"]


def _odd_csv(path: Path) -> None:
    long = "x" * 200_000
    path.write_bytes(f'id,t\n1,ok\n2,"{long}"\n3,lone\rcr\n4,fine\n'.encode())


def test_long_fields_and_a_lone_cr_in_csv(enc, tmp_path):
    path = tmp_path / "odd.csv"
    _odd_csv(path)
    records = list(read_records(Source.open(path, column="t")))
    assert [r.number for r in records] == [1, 2, 3, 4]
    assert len(records[1].text) == 200_000  # over csv's default 131,072 limit: read, not an error
    assert records[2].error is not None and "carriage return" in records[2].error
    assert "universal-newline" not in records[2].error
    res = embed_corpus(enc, Source.open(path, column="t"), tmp_path / "o.npy", EmbedConfig(on_error="skip"))
    side = [json.loads(line) for line in res.errors.read_text().splitlines()]  # type: ignore[union-attr]
    assert res.rows == 3 and [s["record"] for s in side] == [3] and side[0]["where"] == "record 3 (line 4)"
    with pytest.raises(InputError, match=r"odd\.csv record 3 \(line 4\): a carriage return"):
        embed_corpus(enc, Source.open(path, column="t"), tmp_path / "o2.npy")


def test_a_jsonl_column_typo_fails_even_with_skip(enc, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n')
    for on_error in ("stop", "skip"):
        with pytest.raises(
            InputError, match=r"none of its records has a column 'txt' \(the first has 'text'\)"
        ):
            embed_corpus(
                enc, Source.open(path, column="txt"), tmp_path / "o.npy", EmbedConfig(on_error=on_error)
            )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]
    # a record without the column among ones that have it stays a bad record (skip lists it)
    path.write_text('{"other": 1}\n{"text": "b"}\n')
    res = embed_corpus(
        enc, Source.open(path, column="text"), tmp_path / "o.npy", EmbedConfig(on_error="skip")
    )
    assert res.rows == 1 and res.skipped == 1


def test_a_wide_csv_gives_a_short_error_line(tmp_path):
    path = tmp_path / "wide.csv"
    names = [f"column_{i}" for i in range(20_000)]
    path.write_text(",".join(names) + "\n" + ",".join("v" for _ in names) + "\n")
    with pytest.raises(InputError) as info:
        list(read_records(Source.open(path, column="text")))
    message = str(info.value)
    assert len(message) < 500 and "20,000 columns" in message and "(19,992 more)" in message


def test_embed_never_takes_over_a_users_files_beside_its_output(enc, tmp_path):
    """`embed --out o.npy` used to replace a user's o.npy.json, delete their o.npy.errors.jsonl (even when
    it was the input) and remove a user's folder .o.npy.parts with everything in it."""
    src = _write_lines(tmp_path / "in.txt", _lines(N))
    out = tmp_path / "o.npy"
    side_json, side_errors = tmp_path / "o.npy.json", tmp_path / "o.npy.errors.jsonl"
    work = tmp_path / ".o.npy.parts"
    for user_file in (side_json, side_errors):
        user_file.write_text("my notes\n")
        for overwrite in (False, True):
            with pytest.raises(InputError, match=rf"{user_file.name} is in the way.*not edgeembed's"):
                embed_corpus(enc, Source.open(src), out, overwrite=overwrite)
        assert user_file.read_text() == "my notes\n" and not out.exists()
        user_file.unlink()
    work.mkdir()
    (work / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match=r"\.o\.npy\.parts is in the way"):
        embed_corpus(enc, Source.open(src), out, overwrite=True)
    assert (work / "mine.txt").read_text() == "keep"
    (work / "mine.txt").unlink()
    work.rmdir()
    # the input named like the errors file
    bad = tmp_path / "o.npy.errors.jsonl"
    bad.write_text('{"t": "a"}\n{"x": 1}\n')
    with pytest.raises(InputError, match="is the input"):
        embed_corpus(enc, Source.open(bad, column="t"), out, EmbedConfig(on_error="skip"))
    assert bad.read_text() == '{"t": "a"}\n{"x": 1}\n'
    bad.unlink()
    # edgeembed's own side files are replaced, and `encode --overwrite` removes the ones it makes stale
    src_bad = tmp_path / "b.jsonl"
    src_bad.write_text('{"t": "a"}\n{"x": 1}\n{"t": "c"}\n')
    embed_corpus(enc, Source.open(src_bad, column="t"), out, EmbedConfig(on_error="skip"))
    assert json.loads(side_json.read_text())["rows"] == 2 and side_errors.is_file()
    embed_corpus(enc, Source.open(src), out, overwrite=True)
    assert json.loads(side_json.read_text())["rows"] == N and not side_errors.exists()
    five = _write_lines(tmp_path / "c.txt", _lines(5))
    encode_source(enc, Source.open(five), out, overwrite=True)
    assert not side_json.exists() and np.load(out).shape[0] == 5


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_stdout_that_fails_is_one_line_and_a_closed_pipe_is_quiet(tiny_artifact, tmp_path):
    src = _write_lines(tmp_path / "in.txt", _lines(400))
    cmd = [sys.executable, "-m", "edgeembed", "encode", str(tiny_artifact), "-i", str(src), "--no-progress"]
    with open("/dev/full", "w") as full:
        res = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip() == "error: writing to standard output failed: No space left on device"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()  # `| head -c 10`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err


def test_quotes_never_merge_records(enc, tmp_path):
    """A stray quote once made the csv module read the following lines into one field: 4 TSV records
    gave 2 rows, silently. TSV has no quoting; CSV is read strictly."""
    tsv = tmp_path / "q.tsv"
    tsv.write_text('id\ttext\n1\t"Hello," he said\n2\t"Hi there\n3\tnormal\n4\tlast\n', encoding="utf-8")
    records = list(read_records(Source.open(tsv, column="text", id_column="id")))
    assert [(r.id, r.text) for r in records] == [
        ("1", '"Hello," he said'),
        ("2", '"Hi there'),
        ("3", "normal"),
        ("4", "last"),
    ]
    stray = tmp_path / "s.csv"
    stray.write_text('id,text\n1,"Hello," he said\n2,ok\n3,"two\nlines"\n4,"a ""quote"""\n')
    records = list(read_records(Source.open(stray, column="text")))
    assert [r.number for r in records] == [1, 2, 3, 4]
    assert records[0].error is not None and 'as two ("")' in records[0].error
    assert [r.text for r in records[1:]] == ["ok", "two\nlines", 'a "quote"']
    unclosed = tmp_path / "u.csv"
    unclosed.write_text('id,text\n1,a\n2,"unclosed\n3,x\n4,y\n')
    for on_error in ("stop", "skip"):  # skipping it would lose every record after it, uncounted
        with pytest.raises(InputError, match=r"u\.csv record 2 \(line 3\): a quoted field opened there"):
            embed_corpus(
                enc, Source.open(unclosed, column="text"), tmp_path / "u.npy", EmbedConfig(on_error=on_error)
            )
    dup = tmp_path / "d.csv"
    dup.write_text("id,text,text\n1,a,b\n")
    with pytest.raises(InputError, match="names the column 'text' 2 times"):
        list(read_records(Source.open(dup, column="text")))


# ----------------------------------------------------------------------------------- 14: id types
def test_ids_keep_their_type(enc, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    def ids_of(path: Path) -> tuple[object, list]:
        table = pq.read_table(path)
        return table.schema.field("id").type, table.column("id").to_pylist()

    src = tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": pa.array([b"x", b"\xff"], pa.binary()), "t": ["a", "b"]}), src)
    embed_corpus(enc, Source.open(src, column="t", id_column="id"), tmp_path / "b.out.parquet")
    assert ids_of(tmp_path / "b.out.parquet") == (pa.binary(), [b"x", b"\xff"])

    src = tmp_path / "s.parquet"
    pq.write_table(pa.table({"id": pa.array([{"a": 1}, {"a": 2}]), "t": ["a", "b"]}), src)
    embed_corpus(enc, Source.open(src, column="t", id_column="id"), tmp_path / "s.out.parquet")
    assert ids_of(tmp_path / "s.out.parquet")[1] == [{"a": 1}, {"a": 2}]

    cases = {
        "ints": ([7, -3], pa.int64(), [7, -3]),
        "strings": (["7", "x"], pa.string(), ["7", "x"]),
        "bools": ([True, False], pa.bool_(), [True, False]),
        "mixed": ([{"a": 1}, True, 7, "7", [1, "x"], 1.5], pa.string(), None),
    }
    for name, (values, arrow, expected) in cases.items():
        src = tmp_path / f"{name}.jsonl"
        src.write_text("".join(json.dumps({"id": v, "t": f"text {i}"}) + "\n" for i, v in enumerate(values)))
        out = tmp_path / f"{name}.out.parquet"
        res = embed_corpus(enc, Source.open(src, column="t", id_column="id"), out)
        kind, got = ids_of(out)
        assert kind == arrow, name
        if expected is not None:
            assert got == expected and res.metadata["id_type"] != "json"
        else:  # mixed JSON types: each id's JSON text, and json.loads gives every value back
            assert res.metadata["id_type"] == "json"
            assert [json.loads(g) for g in got] == values
            assert "True" not in got and "{'a': 1}" not in got

    src = tmp_path / "c.csv"
    with src.open("w", newline="") as fh:
        csv.writer(fh).writerows([["id", "t"], ["007", "a"], ["True", "b"]])
    embed_corpus(enc, Source.open(src, column="t", id_column="id"), tmp_path / "c.out.parquet")
    assert ids_of(tmp_path / "c.out.parquet") == (pa.string(), ["007", "True"])


# ------------------------------------------------- the CLI on bad inputs: one line, exit 1, no debris
def _bad_embed_inputs(tmp: Path) -> dict[str, list[str]]:
    (tmp / "bad.jsonl").write_bytes(b'{"t": "a"}\n{"t": "\xff"}\n')
    (tmp / "ok.jsonl").write_text('{"t": "a"}\n')
    (tmp / "null.jsonl").write_text('{"t": null}\n{"t": null}\n')
    (tmp / "h.csv").write_text("a,b\n1,2\n")
    _odd_csv(tmp / "odd.csv")
    (tmp / "wide.csv").write_text(",".join(f"c{i}" for i in range(20_000)) + "\n")
    (tmp / "exists.npy").write_bytes(b"user data")
    (tmp / "dir.npy").mkdir()
    (tmp / "c.txt").write_text("a\nb\n")
    (tmp / "t.npy").write_text("text that looks like an output\n")
    (tmp / "junk.parquet").write_bytes(b"PAR1 not really")
    (tmp / "quote.csv").write_text('t\n"open\nb\n')
    return {
        "bad record": ["bad.jsonl", "--column", "t"],
        "jsonl column typo, skip": ["ok.jsonl", "--column", "txt", "--on-error", "skip"],
        "nothing to calibrate int8 on": [
            "null.jsonl",
            "--column",
            "t",
            "--on-error",
            "skip",
            "--precision",
            "int8",
        ],
        "csv column typo": ["h.csv", "--column", "t"],
        "csv lone cr": ["odd.csv", "--column", "t"],
        "wide csv typo": ["wide.csv", "--column", "t"],
        "missing input": ["nope.txt"],
        "existing output": ["c.txt", "--out", "exists.npy"],
        "output is a folder": ["c.txt", "--out", "dir.npy", "--overwrite"],
        "output is the input": ["t.npy", "--out", "t.npy", "--format", "txt", "--overwrite"],
        "bad suffix": ["c.txt", "--out", "o.csv"],
        "damaged parquet": ["junk.parquet", "--column", "t"],
        "unclosed csv quote": ["quote.csv", "--column", "t", "--on-error", "skip"],
        "folder as input": ["dir.npy", "--format", "txt"],
    }


EMBED_CASES = [
    "bad record",
    "jsonl column typo, skip",
    "nothing to calibrate int8 on",
    "csv column typo",
    "csv lone cr",
    "wide csv typo",
    "missing input",
    "existing output",
    "output is a folder",
    "output is the input",
    "bad suffix",
    "damaged parquet",
    "unclosed csv quote",
    "folder as input",
]


@pytest.mark.parametrize("name", EMBED_CASES)
def test_embed_cli_bad_inputs_are_one_line_without_debris(tiny_artifact, tmp_path, name):
    extra = _bad_embed_inputs(tmp_path)[name]
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["embed", str(tiny_artifact), str(tmp_path / extra[0]), *extra[1:], "--no-progress"]
    if "--out" not in extra:
        args += ["--out", str(tmp_path / "o.npy")]
    else:
        i = args.index("--out")
        args[i + 1] = str(tmp_path / args[i + 1])
    line = _one_line_failure(CliRunner().invoke(main, args))
    assert len(line) < 1000, name
    assert sorted(p.name for p in tmp_path.iterdir()) == before, name
    assert (tmp_path / "exists.npy").read_bytes() == b"user data"


def test_encode_cli_bad_inputs_are_one_line_without_debris(tiny_artifact, tmp_path):
    (tmp_path / "in.txt").write_bytes(b"a\n\xff\n")
    (tmp_path / "ok.txt").write_text("a\n")
    (tmp_path / "exists.npy").write_bytes(b"user data")
    (tmp_path / "dir.npy").mkdir()
    cases = {
        "bad line": ["-i", "in.txt", "-o", "e.npy"],
        "bad line, jsonl": ["-i", "in.txt", "-o", "e.jsonl"],
        "same file": ["-i", "ok.txt", "-o", "ok.txt", "--overwrite"],
        "existing output": ["-i", "ok.txt", "-o", "exists.npy"],
        "folder output": ["-i", "ok.txt", "-o", "dir.npy", "--overwrite"],
        "missing input": ["-i", "nope.txt", "-o", "e.npy"],
        "bad suffix": ["-i", "ok.txt", "-o", "e.csv"],
    }
    before = sorted(p.name for p in tmp_path.iterdir())
    for name, args in cases.items():
        args = [str(tmp_path / a) if not a.startswith("-") else a for a in args]
        _one_line_failure(CliRunner().invoke(main, ["encode", str(tiny_artifact), *args, "--no-progress"]))
        assert sorted(p.name for p in tmp_path.iterdir()) == before, name
    assert (tmp_path / "exists.npy").read_bytes() == b"user data"
