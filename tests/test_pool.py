"""EncoderPool: the one-process Encoder's results from worker processes; dead workers, signals, CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeembed.cli import main as cli
from edgeembed.encoder import Encoder
from edgeembed.errors import ArtifactError, InputError, WorkerError
from edgeembed.pool import EncoderPool, default_split

from conftest import WORDS

REPO = Path(__file__).resolve().parents[1]


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 30)))) for _ in range(n)]


@pytest.fixture(scope="module")
def pool(tiny_artifact):
    with EncoderPool(tiny_artifact, workers=2, threads=1) as p:
        yield p


def test_same_bytes_as_one_process_in_input_order(pool, tiny_artifact):
    enc = Encoder.load(tiny_artifact)
    texts = corpus(3000)
    for kwargs in ({}, {"batch_size": 7}, {"prompt_name": "query"}, {"normalize": False}):
        assert np.array_equal(pool.encode(texts, **kwargs), enc.encode(texts, **kwargs)), kwargs
    assert np.array_equal(pool.encode("hello world"), enc.encode("hello world"))
    assert pool.encode([]).shape == (0, enc.dim) and pool.dim == enc.dim


@pytest.mark.parametrize("quantize", ["static", "dynamic"])
def test_same_bytes_on_int8_artifacts(tiny_model, tmp_path, quantize):
    """Static int8 is deterministic per batch; dynamic int8's activation ranges are per batch, and the
    pool cuts the same batches, so both give the one-process bytes."""
    from edgeembed.build import export
    from edgeembed.calibration import CalibrationConfig
    from edgeembed.gate import GatePolicy

    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(corpus(40, seed=3)) + "\n")
    art = export(
        tiny_model,
        tmp_path / "int8",
        quantize=quantize,
        calibration=CalibrationConfig(str(calib), size=12) if quantize == "static" else None,
        policy=GatePolicy(int8_min_cosine=0.5, int8_min_mean_cosine=0.8),
    ).path
    texts = corpus(1500, seed=4)
    with EncoderPool(art, workers=2, threads=1) as p:
        assert np.array_equal(p.encode(texts), Encoder.load(art).encode(texts))


def test_bad_input_raises_the_encoders_errors_and_the_pool_goes_on(pool):
    with pytest.raises(InputError, match="prompt_name"):
        pool.encode(["a"], prompt_name="nope")
    with pytest.raises(InputError, match=r"texts\[1\] holds a lone surrogate"):
        pool.encode(["fine", "bad \ud800"])
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        pool.encode([3])  # type: ignore[list-item]
    with pytest.raises(InputError, match="batch_size"):
        pool.encode(["a"], batch_size=0)
    assert pool.encode(["still working"]).shape == (1, pool.dim)


def test_concurrent_callers_share_the_workers(pool, tiny_artifact):
    enc = Encoder.load(tiny_artifact)
    jobs = [corpus(200, seed=i) for i in range(6)]
    got: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        got[i] = pool.encode(jobs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i, texts in enumerate(jobs):
        assert np.array_equal(got[i], enc.encode(texts))


def test_a_dead_worker_is_a_clear_error_then_replaced(tiny_artifact):
    """Both workers stopped (SIGSTOP) so the call must wait on them; one is killed: the call raises
    WorkerError naming it (no hang), and the next call runs on a new worker with the same results."""
    enc = Encoder.load(tiny_artifact)
    texts = corpus(400)
    with EncoderPool(tiny_artifact, workers=2, threads=1) as p:
        victim, other = p.pids
        for pid in p.pids:
            os.kill(pid, signal.SIGSTOP)
        box: dict = {}

        def call() -> None:
            try:
                box["result"] = p.encode(texts, batch_size=16)
            except BaseException as exc:
                box["error"] = exc

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        os.kill(other, signal.SIGCONT)
        t.join(timeout=60)
        assert not t.is_alive()
        assert isinstance(box.get("error"), WorkerError), box
        assert f"pid {victim}" in str(box["error"]) and "SIGKILL" in str(box["error"])
        assert np.array_equal(p.encode(texts), enc.encode(texts))
        assert victim not in p.pids and len(p.pids) == 2
        pids = p.pids
    for pid in pids:  # closed: nothing left running
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_worker_restarted_by_a_short_lived_thread_outlives_it(tiny_artifact):
    """A replacement started from a caller's thread must not die when that thread ends (the kernel's
    parent-death signal follows the starting thread)."""
    with EncoderPool(tiny_artifact, workers=1, threads=1) as p:
        (first,) = p.pids
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10  # dead (a zombie until the pool reaps it), so it is restarted
        while time.monotonic() < deadline and not gone(first):
            time.sleep(0.05)

        def call_until_restarted() -> None:
            # The kill may not be seen yet: then this call fails (WorkerError) and the next one, still on
            # this short-lived thread, starts the replacement.
            for _ in range(2):
                try:
                    p.encode(["restart me"])
                    return
                except WorkerError:
                    continue

        t = threading.Thread(target=call_until_restarted)
        t.start()
        t.join(timeout=60)
        (second,) = p.pids
        assert second != first
        time.sleep(0.5)
        assert p.encode(["still the same worker"]).shape == (1, p.dim)
        assert p.pids == [second]


def test_a_worker_that_cannot_load_fails_the_pool_in_one_line(tmp_path):
    (tmp_path / "edgeembed.json").write_text("{}")
    with pytest.raises(ArtifactError):
        EncoderPool(tmp_path, workers=1)


def test_default_split_is_one_single_thread_worker_per_core():
    assert default_split(16) == (16, 1)
    assert default_split(1) == (1, 1)


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


# SIGINT takes the same path as SIGTERM: with -m heavy (suite time).
@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.heavy)])
def test_signals_stop_every_worker(tiny_artifact, tmp_path, sig):
    """`embed --workers 2` on a corpus large enough to be running: SIGTERM or SIGINT ends the command with
    its one line, and none of its workers is left."""
    src = tmp_path / "big.txt"
    src.write_text("\n".join(corpus(200_000)) + "\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeembed", "embed", str(tiny_artifact), str(src), "--out",
         str(tmp_path / "out.npy"), "--workers", "2", "--threads", "1", "--no-progress"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    workers: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(workers) < 2 and proc.poll() is None:
        workers = children_of(proc.pid)
        time.sleep(0.2)
    assert len(workers) == 2
    time.sleep(1.0)  # loaded and embedding
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (130, 143), err
    assert "stopped and cleaned up" in err and "Traceback" not in err
    assert "rerun the same command to resume" in err  # embed keeps its complete shards
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{w}").exists() for w in workers)
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_embed_workers_gives_the_same_bytes_and_resumes(tiny_artifact, tmp_path, precision):
    src = tmp_path / "c.txt"
    src.write_text("\n".join(corpus(2500)) + "\n")
    run = CliRunner().invoke
    common = ["--shard-size", "1000", "--precision", precision, "--no-progress"]
    one = run(cli, ["embed", str(tiny_artifact), str(src), "--out", str(tmp_path / "one.npy"), *common])
    assert one.exit_code == 0, one.output
    two = run(
        cli,
        [
            "embed",
            str(tiny_artifact),
            str(src),
            "--out",
            str(tmp_path / "two.npy"),
            "--workers",
            "2",
            *common,
        ],
    )
    assert two.exit_code == 0, two.output
    assert (tmp_path / "one.npy").read_bytes() == (tmp_path / "two.npy").read_bytes()
    # a job interrupted after its first shard (one process) resumes on the pool: the same bytes again
    from edgeembed.corpus import EmbedConfig, Source, embed_corpus

    config = EmbedConfig(precision=precision, shard_size=1000)
    out = tmp_path / "three.npy"

    def stop_after_first_shard(done: int, total: int | None) -> None:
        if done >= 1000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_corpus(
            Encoder.load(tiny_artifact), Source.open(str(src)), out, config, progress=stop_after_first_shard
        )
    assert list((tmp_path / ".three.npy.parts").glob("part-00000-*.npy")) and not out.exists()
    with EncoderPool(tiny_artifact, workers=2, threads=1) as p:
        res = embed_corpus(p, Source.open(str(src)), out, config)
    assert res.resumed_shards == 1
    assert out.read_bytes() == (tmp_path / "one.npy").read_bytes()


def test_encode_workers_same_output(tiny_artifact, tmp_path):
    src = tmp_path / "c.txt"
    src.write_text("\n".join(corpus(500)) + "\n")
    run = CliRunner().invoke
    a = run(cli, ["encode", str(tiny_artifact), "-i", str(src), "-o", str(tmp_path / "a.npy")])
    b = run(
        cli, ["encode", str(tiny_artifact), "-i", str(src), "-o", str(tmp_path / "b.npy"), "--workers", "2"]
    )
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
