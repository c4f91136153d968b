"""Fault and abuse: concurrent and killed exports, tampered artifacts, manifests that lie about their
graph, threads sharing one Encoder, and open-ended inputs (hypothesis)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeembed import Encoder
from edgeembed.artifact import (
    DIGEST_KEY,
    MANIFEST_NAME,
    TargetBusyError,
    artifact_path,
    lock_file,
    probe_lock,
    read_manifest,
    stale_siblings,
    target_lock,
    write_manifest,
)
from edgeembed.build import export
from edgeembed.cli import main
from edgeembed.errors import ArtifactError

REPO = Path(__file__).resolve().parents[1]


def _debris(out: Path) -> list[str]:
    """Anything an export of `out` may leave beside it besides the target itself."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


# ------------------------------------------------------------------------------- concurrent exports
def test_second_export_fails_at_once_naming_folder_and_holder(tiny_model, tmp_path):
    out = tmp_path / "art"
    with target_lock(out):
        assert lock_file(out).read_text().split()[:2] == ["export", str(os.getpid())]  # "KIND PID on HOST"
        # Refused before any model work: a copy without its weights would fail to load, with another error.
        weightless = tmp_path / "weightless"
        shutil.copytree(tiny_model, weightless)
        (weightless / "model.safetensors").unlink()
        with pytest.raises(TargetBusyError, match=rf"{out}.*another export \(process {os.getpid()} on "):
            export(weightless, out)
    assert not out.exists() and _debris(out) == []  # the lock file goes with its holder
    export(tiny_model, out)
    assert (out / MANIFEST_NAME).is_file() and _debris(out) == []


def test_a_refused_run_names_the_kind_of_run_holding_the_lock(tmp_path):
    """embed, encode, index build and export share one lock: the refusal names the holder's kind."""
    out = tmp_path / "emb.npy"
    with target_lock(out, "index build"):
        with pytest.raises(TargetBusyError, match=rf"another index build \(process {os.getpid()} on "):
            probe_lock(out, "embed")
        with (
            pytest.raises(TargetBusyError, match=r"another index build \(process"),
            target_lock(out, "embed"),
        ):
            pass


def _cli_export(model: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "edgeembed", "export", str(model), "--out", str(out), *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_concurrent_cli_exports_one_wins_cleanly(tiny_model, tmp_path):
    out = tmp_path / "art"
    # The first one quantizes too, so that it still holds the lock when the second has started up
    # (a plain tiny export can finish first on a loaded machine, and then the second rightly succeeds).
    first = _cli_export(tiny_model, out, "--quantize", "dynamic")
    deadline = time.monotonic() + 120
    while not lock_file(out).exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = _cli_export(tiny_model, out, "--overwrite")
    err2 = second.communicate(timeout=120)[1]
    err1 = first.communicate(timeout=120)[1]
    assert first.returncode == 0, err1
    assert second.returncode == 1
    last = err2.strip().splitlines()[-1]
    assert last.startswith("error:") and str(out) in last and f"process {first.pid}" in last
    assert "Traceback" not in err2
    Encoder.load(out)  # the winner's artifact, intact
    assert _debris(out) == []


# ---------------------------------------------------------------------------------- killed exports
@pytest.mark.parametrize(
    "sig,after",
    [
        (signal.SIGTERM, "exporting the transformer"),
        (signal.SIGKILL, "validating against torch"),
        # The other two pairings repeat these paths (suite time): with -m heavy.
        pytest.param(signal.SIGTERM, "validating against torch", marks=pytest.mark.heavy),
        pytest.param(signal.SIGKILL, "exporting the transformer", marks=pytest.mark.heavy),
    ],
)
def test_killed_export_leaves_no_target_and_the_next_one_cleans_up(tiny_model, tmp_path, sig, after):
    out = tmp_path / "art"
    proc = _cli_export(tiny_model, out)
    assert proc.stderr is not None
    for line in proc.stderr:  # a random point: a random delay after this progress line
        if after in line:
            break
    time.sleep(random.uniform(0, 0.4))
    proc.send_signal(sig)
    err = proc.stderr.read()
    proc.wait(timeout=60)
    if proc.returncode == 0:  # the export finished before the signal landed: a valid artifact
        Encoder.load(out)
        return
    assert not out.exists()
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err
        assert err.strip().splitlines()[-1].startswith("error: terminated (SIGTERM)")
        assert "Traceback" not in err
        assert _debris(out) == []  # cleaned up on the way out
    else:
        assert any(".tmp-" in name for name in _debris(out))  # SIGKILL: nothing could clean up
    export(tiny_model, out)  # removes what a SIGKILL left (its lock died with it)
    assert _debris(out) == []
    Encoder.load(out)


def test_stale_temp_folders_removed_and_interrupted_overwrite_restored(tiny_model, tiny_artifact, tmp_path):
    out = tmp_path / "art"
    stale = tmp_path / ".art.tmp-deadbeef"
    (stale / "onnx").mkdir(parents=True)
    (stale / "onnx" / "model.onnx").write_bytes(b"x" * 1000)
    # A previous overwrite killed between its two renames: target gone, the old artifact in a backup.
    shutil.copytree(tiny_artifact, tmp_path / ".art.old-99999")
    assert len(stale_siblings(out)) == 2
    with pytest.raises(Exception, match="not empty"):
        export(tiny_model, out)  # the backup is restored first, so the target is not silently replaced
    assert (out / MANIFEST_NAME).is_file() and _debris(out) == []


# ------------------------------------------------------------------------------- tampered artifacts
@pytest.fixture
def art(tiny_artifact, tmp_path):
    return Path(shutil.copytree(tiny_artifact, tmp_path / "inside" / "art"))


def _rewrite(root: Path, **changes) -> None:
    """Edit the manifest and re-sign it, as a careless tool (or a careful attacker) would."""
    m = read_manifest(root)
    write_manifest(root, replace(m, **changes))


class _Opens:
    """Paths opened while it is active (CPython audit hook 'open'; nothing is patched)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.active = False
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if self.active and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            self.paths.append(os.fsdecode(args[0]))

    def during(self, fn, *a, **kw):
        self.paths.clear()
        self.active = True
        try:
            return fn(*a, **kw)
        finally:
            self.active = False


_OPENS = _Opens()


@pytest.fixture
def secret(tmp_path) -> Path:
    p = tmp_path / "outside" / "secret.txt"
    p.parent.mkdir()
    p.write_text("not for you")
    return p


def _refused(root: Path, match: str, secret: Path, verify: bool = True) -> None:
    with pytest.raises(ArtifactError, match=match) as info:
        _OPENS.during(Encoder.load, root, verify=verify)
    assert "\n" not in str(info.value)
    opened = [p for p in _OPENS.paths if "outside" in p]
    assert opened == [], f"opened outside the artifact: {opened}"
    assert not any(os.path.realpath(p) == str(secret) for p in _OPENS.paths)


def test_byte_flip_and_truncated_graph_refused(art, secret):
    graph = art / "onnx" / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    _refused(art, r"checksum mismatch for .*model\.onnx", secret)
    graph.write_bytes(bytes(data[: len(data) // 3]))
    _refused(art, r"checksum mismatch for .*model\.onnx", secret)
    _refused(art, r"model\.onnx", secret, verify=False)  # the runtime's error, one line, file named


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_path_escape_refused_before_opening(art, secret, kind):
    rel = "../../outside/secret.txt" if kind == "dotdot" else str(secret)
    digest = __import__("hashlib").sha256(secret.read_bytes()).hexdigest()  # a matching checksum
    m = read_manifest(art)
    _rewrite(art, files={**m.files, rel: digest})
    _refused(art, r"secret\.txt.* not a relative path inside the artifact", secret)
    shutil.copy(secret, art / "stolen.onnx")
    _rewrite(art, graphs=(replace(m.graphs[0], file=rel),), files={**m.files, rel: digest})
    _refused(art, r"secret\.txt.* not a relative path inside the artifact", secret, verify=False)


def test_symlinked_file_and_folder_refused(art, secret, tmp_path):
    tok = art / "tokenizer.json"
    real = tmp_path / "outside" / "tokenizer.json"
    shutil.move(tok, real)
    tok.symlink_to(real)
    _refused(art, r"tokenizer\.json is a symbolic link", secret)
    _refused(art, r"tokenizer\.json is a symbolic link", secret, verify=False)
    tok.unlink()
    shutil.move(real, tok)
    dense = art / "2_Dense"
    shutil.move(dense, tmp_path / "outside" / "2_Dense")
    dense.symlink_to(tmp_path / "outside" / "2_Dense", target_is_directory=True)
    _refused(art, r"2_Dense is a symbolic link", secret)
    _refused(art, r"2_Dense is a symbolic link", secret, verify=False)


def test_edited_manifest_refused(art, secret):
    path = art / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["head"]["max_seq_length"] = 20
    path.write_text(json.dumps(data))
    _refused(art, r"edgeembed\.json does not match its digest", secret)
    del data[DIGEST_KEY]
    path.write_text(json.dumps(data))
    _refused(art, r"edgeembed\.json has no digest", secret)


def test_version_1_manifest_still_loads_with_containment(art, secret, tiny_artifact):
    path = art / MANIFEST_NAME
    data = json.loads(path.read_text())
    for key in (DIGEST_KEY, "max_positions"):
        del data[key]
    data["format_version"] = 1
    path.write_text(json.dumps(data))
    np.testing.assert_allclose(
        Encoder.load(art).encode(["a cat"]), Encoder.load(tiny_artifact).encode(["a cat"])
    )
    data["files"]["../../outside/secret.txt"] = "0" * 64
    path.write_text(json.dumps(data))
    _refused(art, r"not a relative path inside", secret)


@pytest.mark.parametrize(
    "change,match",
    [
        (
            {"hidden_size": 128},
            r"head\.hidden_size is 128 but the graph .*model\.onnx gives .* shape \(1, \d+, 32\)",
        ),
        ({"max_seq_length": 1000}, r"max_seq_length 1000 exceeds the model's 64 position embeddings"),
    ],
)
@pytest.mark.parametrize("positions_recorded", [False, True])
def test_manifest_checked_against_the_graph(art, change, match, positions_recorded):
    m = read_manifest(art)
    head = replace(m.head, **change)
    if "hidden_size" in change:
        head = replace(head, dense=(replace(head.dense[0], in_features=128),))
    _rewrite(art, head=head, **({} if positions_recorded else {"max_positions": None}))
    with pytest.raises(ArtifactError, match=match):
        Encoder.load(art)
    result = CliRunner().invoke(main, ["encode", str(art)], input="hello\n")
    assert (result.exit_code == 1 and result.exception is None) or isinstance(result.exception, SystemExit)
    assert result.output.strip().startswith("error:") and "Traceback" not in result.output


def test_info_and_encode_on_tampered_artifact_exit_1_in_one_line(art, secret):
    m = read_manifest(art)
    _rewrite(art, files={**m.files, str(secret): "0" * 64})
    runner = CliRunner()
    info = runner.invoke(main, ["info", str(art)])
    assert info.exit_code == 1 and "checksums: FAILED" in info.output and "not a relative path" in info.output
    assert info.output.strip().splitlines()[-1].startswith("error:")  # a script sees the damage too
    as_json = runner.invoke(main, ["info", str(art), "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["checksums_status"].startswith("FAILED")
    enc = runner.invoke(main, ["encode", str(art)], input="hello\n")
    assert enc.exit_code == 1 and len(enc.output.strip().splitlines()) == 1
    (art / MANIFEST_NAME).write_text('{"format_version": 2, "files": []}')
    for args in (["info", str(art)], ["encode", str(art)]):
        r = runner.invoke(main, args, input="x\n")
        assert r.exit_code == 1 and r.output.startswith("error:") and len(r.output.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------- threads
def test_eight_threads_sharing_one_encoder_match_serial(tiny_artifact):
    enc = Encoder.load(tiny_artifact)
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "playing", "guitar", "stage", "world", "edge"]
    jobs = [[" ".join(rng.choice(words, size=rng.integers(1, 30))) for _ in range(40)] for _ in range(8)]
    serial = [enc.encode(texts, batch_size=7) for texts in jobs]
    results: list[np.ndarray | None] = [None] * 8
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        barrier.wait()
        for _ in range(3):
            results[i] = enc.encode(jobs[i], batch_size=7)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------- property-based
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rel=st.one_of(st.text(max_size=40), st.text(alphabet="./a-\\:~", max_size=12)))
def test_artifact_path_never_leaves_the_folder(tiny_artifact, rel):
    root = tiny_artifact.resolve()
    try:
        p = artifact_path(root, rel)
    except ArtifactError:
        return
    assert os.path.commonpath([root, os.path.abspath(p)]) == str(root)
    assert p != root


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80), min_size=1, max_size=12
    ),
    batch_size=st.integers(1, 5),
)
def test_encode_rows_match_inputs_and_are_finite_unit_vectors(tiny_encoder, texts, batch_size):
    emb = tiny_encoder.encode(texts, batch_size=batch_size)
    assert emb.shape == (len(texts), tiny_encoder.dim) and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    alone = tiny_encoder.encode(texts[-1])
    np.testing.assert_allclose(alone, emb[-1], atol=1e-5)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(["graphs", "files", "head", "format_version", "max_positions", "graph", "runtime"]),
    value=st.recursive(
        # no NaN/Infinity: the re-signing below cannot digest them (read_manifest's own branch does)
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=6,
    ),
)
def test_any_manifest_value_gives_an_artifact_or_one_artifact_error(
    tiny_artifact, tmp_path_factory, key, value
):
    root = tmp_path_factory.mktemp("fuzz") / "art"
    shutil.copytree(tiny_artifact, root)
    data = json.loads((root / MANIFEST_NAME).read_text())
    data[key] = value
    data.pop(DIGEST_KEY)
    from edgeembed.artifact import manifest_digest

    data[DIGEST_KEY] = manifest_digest(data)  # re-signed: only the value's sense is judged
    (root / MANIFEST_NAME).write_text(json.dumps(data))
    try:
        Encoder.load(root)
    except ArtifactError as exc:
        assert "\n" not in str(exc)
    finally:
        shutil.rmtree(root.parent)


@pytest.mark.parametrize("constant", ["Infinity", "-Infinity", "NaN"])
def test_manifest_with_a_non_json_number_is_one_artifact_error(art, constant):
    text = (art / MANIFEST_NAME).read_text()
    (art / MANIFEST_NAME).write_text(text.replace('"file": "', f'"file": {constant}, "x": "', 1))
    with pytest.raises(ArtifactError, match="corrupt manifest") as info:
        Encoder.load(art)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def tiny_encoder(tiny_artifact) -> Encoder:
    return Encoder.load(tiny_artifact)


def test_external_data_escaping_the_folder_refused(art, secret):
    """A graph whose weights file points out of the folder (manifest re-signed with matching checksums):
    ONNX Runtime refuses the path; the load fails in one line naming the graph."""
    import hashlib

    import onnx

    m = read_manifest(art)
    graph = art / m.graph
    model = onnx.load(str(graph), load_external_data=False)
    tensor = next(t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    for entry in tensor.external_data:
        if entry.key == "location":
            entry.value = "../../outside/secret.txt"
    onnx.save_model(model, str(graph))
    _rewrite(art, files={**m.files, m.graph: hashlib.sha256(graph.read_bytes()).hexdigest()})
    for verify in (True, False):
        _refused(art, r"model\.onnx", secret, verify=verify)
