"""Issue 21 (nothing lost, round 3), `index build` and `search`: --overwrite replaces only an index,
record numbers come from what the embed job recorded, the index is checked on load (manifest, checksums,
shapes), its artifact identity is checked by `search`, concurrent and read-only builds fail with one line;
and every bad input gives one line on stderr, exit 1, no traceback and no debris."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
from click.testing import CliRunner

from edgeembed.artifact import artifact_digest, manifest_digest, target_lock
from edgeembed.cli import main
from edgeembed.corpus import EmbedConfig, Source, embed_corpus
from edgeembed.corpus.search import Embeddings, SearchIndex
from edgeembed.encoder import Encoder
from edgeembed.errors import ArtifactError, InputError

REPO = Path(__file__).resolve().parents[1]
WORDS = ["red", "blue", "green", "cat", "dog", "bird", "river", "stone", "music", "guitar", "market"]
BAD = 5  # the record embed skips


pytestmark = pytest.mark.usefixtures("faiss_one_thread")


def _texts(n: int = 80) -> list[str]:
    rng = np.random.default_rng(7)
    return [f"{' '.join(rng.choice(WORDS, 5))} {i}" for i in range(n)]


@pytest.fixture(scope="module")
def corpus(tiny_artifact, tmp_path_factory) -> Path:
    """A jsonl corpus whose record BAD has no text column, embedded with --on-error skip."""
    root = tmp_path_factory.mktemp("corpus")
    rows = [json.dumps({"text": t}) for t in _texts()]
    rows[BAD - 1] = json.dumps({"body": "no text here"})
    (root / "docs.jsonl").write_text("\n".join(rows) + "\n")
    enc = Encoder.load(tiny_artifact)
    config = EmbedConfig(on_error="skip", shard_size=16)
    embed_corpus(enc, Source.open(root / "docs.jsonl", column="text"), root / "emb.npy", config)
    return root


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory) -> Path:
    """A binary + fp32 index (exact with rescore=count) of the corpus; tests copy it before tampering."""
    out = tmp_path_factory.mktemp("index") / "idx"
    SearchIndex.build(Embeddings.open(corpus / "emb.npy"), out, "float32", "numpy", first_pass="binary")
    return out


@pytest.fixture(scope="module")
def built_pq(corpus, tmp_path_factory) -> Path:
    pytest.importorskip("faiss")
    out = tmp_path_factory.mktemp("index") / "pq"
    SearchIndex.build(Embeddings.open(corpus / "emb.npy"), out)
    return out


def _copy_embeddings(corpus: Path, dest: Path, side: tuple[str, ...] = (".json", ".errors.jsonl")) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(corpus / "emb.npy", dest / "emb.npy")
    for suffix in side:
        shutil.copy(corpus / f"emb.npy{suffix}", dest / f"emb.npy{suffix}")
    return dest / "emb.npy"


def _debris(folder: Path) -> list[str]:
    """What a failed or refused run must not leave: temp folders, backups, lock files."""
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name or p.name.endswith(".lock"))
    )


def _one_line_failure(res) -> str:
    """A refused CLI call: exit 1 through sys.exit (not an escaped exception), one `error:` line on stderr."""
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    return lines[0]


# ------------------------------------------------------------------ item 5: record numbers
def test_records_skip_what_the_job_skipped_and_search_returns_the_right_record(corpus, built):
    emb = Embeddings.open(corpus / "emb.npy")
    texts = _texts()
    assert emb.count == len(texts) - 1
    np.testing.assert_array_equal(emb.records, [n for n in range(1, len(texts) + 1) if n != BAD])
    idx = SearchIndex.load(built, backend="numpy")
    enc = Encoder.load(Path(emb.metadata["artifact"]))
    wanted = [BAD + 1, BAD + 2, len(texts)]  # after the skipped record: shifted by one if numbered by row
    hits = idx.search(enc.encode([texts[n - 1] for n in wanted]), k=1, rescore=len(idx))
    assert hits.records[:, 0].tolist() == wanted


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("errors missing", "emb.npy.errors.jsonl is missing"),
        ("errors stale", "its sha256 differs"),
        ("errors stale, no hash", "lists 2 skipped records"),
        ("errors without json", "emb.npy.json (the job's row count) is missing"),
        ("json rows", "says 3 rows but"),
        ("json says none skipped", "says none were skipped"),
        ("json unreadable", "is unreadable"),
    ],
)
def test_side_files_that_disagree_with_the_npy_are_refused(corpus, tmp_path, case, message):
    npy = _copy_embeddings(corpus, tmp_path)
    side, errors = tmp_path / "emb.npy.json", tmp_path / "emb.npy.errors.jsonl"
    meta = json.loads(side.read_text())
    stale = json.dumps({"record": 40, "where": "line 40", "reason": "x"}) + "\n"
    if case == "errors missing":
        errors.unlink()
    elif case == "errors stale":
        errors.write_text(stale)
    elif case == "errors stale, no hash":  # an older job's OUT.json: no sha256, the count still checks
        del meta["errors_sha256"]
        side.write_text(json.dumps(meta))
        errors.write_text(errors.read_text() + stale)
    elif case == "errors without json":
        side.unlink()
    elif case == "json rows":
        side.write_text(json.dumps({**meta, "rows": 3}))
    elif case == "json says none skipped":
        side.write_text(json.dumps({**meta, "skipped": 0, "errors_sha256": None}))
    elif case == "json unreadable":
        side.write_text("{")
    with pytest.raises(InputError, match=re.escape(message)) as info:
        Embeddings.open(npy)
    assert "\n" not in str(info.value)


def test_a_bare_npy_is_numbered_by_row_and_records_no_artifact(corpus, tmp_path):
    npy = _copy_embeddings(corpus, tmp_path, side=())
    emb = Embeddings.open(npy)
    np.testing.assert_array_equal(emb.records, np.arange(1, emb.count + 1))
    assert emb.artifact_sha256 is None


# ------------------------------------------------------------------ item 8: the index is checked
def _redigest(data: dict) -> dict:
    data["manifest_sha256"] = manifest_digest(data)
    return data


def _edit_manifest(idx: Path, change, redigest: bool = True) -> None:
    data = json.loads((idx / "index.json").read_text())
    change(data)
    (idx / "index.json").write_text(json.dumps(_redigest(data) if redigest else data))


def _flip(path: Path, offset: int = -64) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


TAMPERING = {
    "count edited": lambda i: _edit_manifest(i, lambda d: d.update(count=d["count"] * 2), redigest=False),
    "count edited, digest recomputed": lambda i: _edit_manifest(i, lambda d: d.update(count=d["count"] + 40)),
    "fewer count, digest recomputed": lambda i: _edit_manifest(i, lambda d: d.update(count=10)),
    "ranges infinite": lambda i: _edit_manifest(
        i,
        lambda d: d.update(rescore_precision="int8", ranges=[[1e400] * d["dim"], [1.0] * d["dim"]]),
        redigest=False,  # no digest of Infinity exists: the manifest cannot be made to match
    ),
    "ranges lo > hi": lambda i: _edit_manifest(
        i, lambda d: d.update(rescore_precision="int8", ranges=[[1.0] * d["dim"], [0.0] * d["dim"]])
    ),
    "precision unknown": lambda i: _edit_manifest(i, lambda d: d.update(rescore_precision="int4")),
    "precision int8 over fp32 file": lambda i: _edit_manifest(
        i, lambda d: d.update(rescore_precision="int8", ranges=[[0.0] * d["dim"], [1.0] * d["dim"]])
    ),
    "index.json not JSON": lambda i: (i / "index.json").write_text("{"),
    "index.json a list": lambda i: (i / "index.json").write_text("[]"),
    "older format": lambda i: (i / "index.json").write_text(
        json.dumps({"dim": 16, "count": 79, "rescore_precision": "float32"})
    ),
    "rescore.npy flipped": lambda i: _flip(i / "rescore.npy"),
    "rescore.npy truncated": lambda i: _truncate(i / "rescore.npy"),
    "records.npy flipped": lambda i: _flip(i / "records.npy"),
    "records.npy missing": lambda i: (i / "records.npy").unlink(),
    "binary.npy flipped": lambda i: _flip(i / "binary.npy"),
    "a symlinked file": lambda i: (
        (i / "records.npy").rename(i.parent / "elsewhere.npy"),
        (i / "records.npy").symlink_to(i.parent / "elsewhere.npy"),
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_a_damaged_or_edited_index_fails_to_load_with_one_line(built, tmp_path, case):
    idx = tmp_path / "idx"
    shutil.copytree(built, idx)
    TAMPERING[case](idx)
    with pytest.raises((ArtifactError, InputError)) as info:
        SearchIndex.load(idx, backend="numpy")
    assert "\n" not in str(info.value) and str(idx) in str(info.value)


@pytest.mark.parametrize("case", ["pq.faiss flipped", "pq.faiss truncated", "count, digest recomputed"])
def test_a_damaged_pq_index_fails_with_one_line_never_minus_one_labels(built_pq, tmp_path, case):
    idx = tmp_path / "pq"
    shutil.copytree(built_pq, idx)
    if case == "pq.faiss flipped":
        _flip(idx / "pq.faiss", offset=-200)
    elif case == "pq.faiss truncated":
        _truncate(idx / "pq.faiss")
    else:
        _edit_manifest(idx, lambda d: d.update(count=d["count"] + 100))
    with pytest.raises(ArtifactError) as info:
        SearchIndex.load(idx)
    assert "\n" not in str(info.value)


def test_the_manifest_records_files_shapes_and_the_artifact(built, corpus, tiny_artifact):
    data = json.loads((built / "index.json").read_text())
    assert data["format"] == "edgeembed-index" and data["count"] == 79
    assert set(data["files"]) == {"binary.npy", "rescore.npy", "records.npy"}
    assert data["files"]["rescore.npy"]["shape"] == [79, 16]
    assert data["files"]["records.npy"]["dtype"] == "int64"
    assert data["artifact_sha256"] == artifact_digest(tiny_artifact)
    assert data["manifest_sha256"] == manifest_digest(data)
    assert sorted(p.name for p in built.iterdir()) == [
        "binary.npy",
        "index.json",
        "records.npy",
        "rescore.npy",
    ]


# ------------------------------------------------------------------ item 9: the artifact identity
@pytest.fixture(scope="module")
def other_artifact(tiny_artifact, tmp_path_factory) -> Path:
    """The same graph with `normalize: false` (a different model of the same dimension), its manifest
    digest recomputed so it loads."""
    out = tmp_path_factory.mktemp("other") / "art"
    shutil.copytree(tiny_artifact, out)
    data = json.loads((out / "edgeembed.json").read_text())
    data["head"]["normalize"] = False
    (out / "edgeembed.json").write_text(json.dumps(_redigest(data)))
    return out


def test_search_refuses_another_artifact_unless_allowed(built, tiny_artifact, other_artifact):
    runner = CliRunner()
    args = ["search", str(built), str(other_artifact), "red cat", "--backend", "numpy"]
    line = _one_line_failure(runner.invoke(main, args))
    assert artifact_digest(tiny_artifact) in line and artifact_digest(other_artifact) in line
    assert "--allow-other-model" in line
    res = runner.invoke(main, [*args, "--allow-other-model"])
    assert res.exit_code == 0 and "warning:" in res.stderr and "record" in res.stdout
    res = runner.invoke(main, ["search", str(built), str(tiny_artifact), "red cat", "--backend", "numpy"])
    assert res.exit_code == 0 and res.stderr == ""


def test_unknown_artifact_warns_at_build_and_search_and_can_be_named(
    corpus, tmp_path, tiny_artifact, other_artifact
):
    npy = _copy_embeddings(corpus, tmp_path, side=())  # no side file: nothing records the artifact
    runner = CliRunner()
    build = ["index", "build", str(npy), "--first-pass", "binary"]
    res = runner.invoke(main, [*build, "--out", str(tmp_path / "a")])
    assert res.exit_code == 0 and "does not record the artifact" in res.stderr
    res = runner.invoke(main, ["search", str(tmp_path / "a"), str(tiny_artifact), "x", "--backend", "numpy"])
    assert res.exit_code == 0 and "warning:" in res.stderr and "--artifact" in res.stderr
    res = runner.invoke(main, [*build, "--out", str(tmp_path / "b"), "--artifact", str(tiny_artifact)])
    assert res.exit_code == 0 and res.stderr.count("\n") == 1  # the summary line only
    res = runner.invoke(main, ["search", str(tmp_path / "b"), str(other_artifact), "x", "--backend", "numpy"])
    _one_line_failure(res)
    # embeddings that record their artifact refuse a different named one
    build = ["index", "build", str(corpus / "emb.npy"), "--out", str(tmp_path / "c")]
    res = runner.invoke(main, [*build, "--first-pass", "binary", "--artifact", str(other_artifact)])
    assert "not the named one" in _one_line_failure(res) and not (tmp_path / "c").exists()
    # a named artifact of another dimension is refused at build, not first at search
    np.save(tmp_path / "odd.npy", np.ones((4, 3), np.float32))
    build = [
        "index",
        "build",
        str(tmp_path / "odd.npy"),
        "--out",
        str(tmp_path / "d"),
        "--first-pass",
        "binary",
    ]
    res = runner.invoke(main, [*build, "--artifact", str(tiny_artifact)])
    assert "3-d ones" in _one_line_failure(res) and not (tmp_path / "d").exists()


# ------------------------------------------------------------------ item 2: --overwrite
def _make_target(kind: str, tmp_path: Path, corpus: Path, built: Path) -> tuple[list[str], Path]:
    """(CLI args after EMBEDDINGS, the folder that must survive intact)."""
    npy = _copy_embeddings(corpus, tmp_path / "in")
    if kind == "user folder":
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("precious")
        return [str(npy), "--out", str(tmp_path / "mine")], tmp_path / "mine"
    if kind == "the input's folder":
        return [str(npy), "--out", str(npy.parent)], npy.parent
    if kind == "an index with a user file":
        shutil.copytree(built, tmp_path / "idx")
        (tmp_path / "idx" / "notes.txt").write_text("precious")
        return [str(npy), "--out", str(tmp_path / "idx")], tmp_path / "idx"
    if kind == "a file":
        (tmp_path / "f.txt").write_text("precious")
        return [str(npy), "--out", str(tmp_path / "f.txt")], tmp_path / "f.txt"
    raise AssertionError(kind)


def _snapshot(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", ["user folder", "the input's folder", "an index with a user file", "a file"])
def test_overwrite_refuses_what_edgeembed_did_not_write(corpus, built, tmp_path, kind):
    args, keep = _make_target(kind, tmp_path, corpus, built)
    before = _snapshot(keep)
    res = CliRunner().invoke(main, ["index", "build", *args, "--overwrite", "--first-pass", "binary"])
    _one_line_failure(res)
    assert _snapshot(keep) == before and _debris(keep.parent) == []


@pytest.mark.parametrize("out", [".", ".."])
def test_overwrite_refuses_the_current_folder_and_its_parents(corpus, tmp_path, monkeypatch, out):
    npy = _copy_embeddings(corpus, tmp_path / "work" / "here")
    (npy.parent / "mine.txt").write_text("precious")
    monkeypatch.chdir(npy.parent)
    before = _snapshot(tmp_path / "work")
    res = CliRunner().invoke(main, ["index", "build", "emb.npy", "--out", out, "--overwrite"])
    assert "current folder" in _one_line_failure(res)
    assert _snapshot(tmp_path / "work") == before


def test_overwrite_replaces_an_index(corpus, built, tmp_path):
    shutil.copytree(built, tmp_path / "idx")
    npy = _copy_embeddings(corpus, tmp_path / "in")
    res = CliRunner().invoke(
        main,
        ["index", "build", str(npy), "--out", str(tmp_path / "idx"), "--overwrite", "--first-pass", "binary"],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["rescore_precision"] == "int8"
    assert _debris(tmp_path) == []


# ------------------------------------------------------------------ item 10: locks, read-only
def test_a_second_build_is_refused_at_once_naming_the_first(corpus, tmp_path):
    out = tmp_path / "idx"
    with target_lock(out):  # what a running build holds
        res = CliRunner().invoke(main, ["index", "build", str(corpus / "emb.npy"), "--out", str(out)])
        line = _one_line_failure(res)
        assert f"process {os.getpid()}" in line and "being written" in line
    assert not out.exists() and _debris(tmp_path) == []


def _build_cmd(npy: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgeembed",
        "index",
        "build",
        str(npy),
        "--out",
        str(out),
        "--first-pass",
        "binary",
        *extra,
    ]


def test_concurrent_builds_never_both_claim_the_output(tmp_path, rng):
    """Two builds of different corpora to one output, started together (bounded: 3 rounds): each exits
    0 or refuses with one line, and the index on disk is the one a successful run built."""
    sizes = {"a": 120_000, "b": 90_000}  # large enough that the builds overlap
    for name, n in sizes.items():
        np.save(tmp_path / f"{name}.npy", rng.normal(size=(n, 32)).astype(np.float32))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "idx"
    for _ in range(3):
        shutil.rmtree(out, ignore_errors=True)
        procs = {
            name: subprocess.Popen(
                _build_cmd(tmp_path / f"{name}.npy", out, "--overwrite"),
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in sizes
        }
        results = {name: (p.wait(timeout=120), p.stderr.read()) for name, p in procs.items()}
        for rc, err in results.values():
            assert rc in (0, 1) and "Traceback" not in err
            if rc == 1:
                assert len(err.strip().splitlines()) == 1 and "being written" in err
        ok = [name for name, (rc, _) in results.items() if rc == 0]
        assert ok, results
        count = json.loads((out / "index.json").read_text())["count"]
        assert count in {sizes[name] for name in ok}
        if len(ok) == 1:
            assert count == sizes[ok[0]]
        SearchIndex.load(out, backend="numpy")
        assert _debris(tmp_path) == []


def _mount_tmpfs(where: Path, options: str) -> None:
    """Root ignores chmod, so a read-only (or full) folder is a tmpfs mount; skipped where mount fails."""
    where.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
        )
    except OSError as exc:
        pytest.skip(f"no mount here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}): {done.stderr.decode().strip()}")


def _unmount(where: Path) -> None:
    if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)  # busy: detach it all the same


@pytest.fixture
def read_only_dir(tmp_path):
    ro = tmp_path / "ro"
    _mount_tmpfs(ro, "size=1m,ro")
    yield ro
    _unmount(ro)


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=128k")
    yield disk
    _unmount(disk)


def test_build_into_a_read_only_folder_is_one_line(corpus, read_only_dir):
    res = CliRunner().invoke(
        main, ["index", "build", str(corpus / "emb.npy"), "--out", str(read_only_dir / "idx")]
    )
    assert "not writable" in _one_line_failure(res)


def test_build_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, small_disk, rng):
    np.save(tmp_path / "big.npy", rng.normal(size=(20_000, 32)).astype(np.float32))  # 1 MB of int8 rows
    res = CliRunner().invoke(
        main,
        [
            "index",
            "build",
            str(tmp_path / "big.npy"),
            "--out",
            str(small_disk / "idx"),
            "--first-pass",
            "binary",
        ],
    )
    assert "No space left" in _one_line_failure(res)
    assert list(small_disk.iterdir()) == []


def test_a_killed_builds_debris_is_cleaned_by_the_next_build(corpus, tmp_path):
    out = tmp_path / "idx"
    (tmp_path / ".idx.tmp-index").mkdir()  # the fixed temp name of older builds
    (tmp_path / ".idx.tmp-x1y2" / "sub").mkdir(parents=True)  # a SIGKILLed build's temp folder
    (tmp_path / ".idx.lock").write_text("12345\n")  # its lock file (the flock died with it)
    res = CliRunner().invoke(
        main, ["index", "build", str(corpus / "emb.npy"), "--out", str(out), "--first-pass", "binary"]
    )
    assert res.exit_code == 0, res.output
    assert _debris(tmp_path) == [] and (out / "index.json").is_file()


# ------------------------------------------------------------------ items 13, 17
def test_search_texts_from_jsonl_with_column(corpus, built, tiny_artifact):
    texts = _texts()
    runner = CliRunner()
    base = ["search", str(built), str(tiny_artifact), texts[BAD], "--backend", "numpy", "-k", "1"]
    res = runner.invoke(
        main, [*base, "--rescore", "79", "--texts", str(corpus / "docs.jsonl"), "--column", "text", "--json"]
    )
    assert res.exit_code == 0, res.output
    hit = json.loads(res.stdout)["hits"][0]
    assert hit == {"record": BAD + 1, "score": hit["score"], "text": texts[BAD]}
    assert "--column" in _one_line_failure(
        runner.invoke(main, [*base, "--texts", str(corpus / "docs.jsonl")])
    )


def test_the_search_extra_installs_usearch():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("usearch") for req in extras["search"])


# ------------------------------------------------------------------ every bad input: one line, no debris
BAD_SEARCHES = [
    "count edited",
    "rescore.npy flipped",
    "rescore.npy truncated",
    "index.json not JSON",
    "older format",
]


@pytest.mark.parametrize("case", [*BAD_SEARCHES, "other artifact", "no index", "texts too short"])
def test_search_with_bad_inputs_is_one_line(built, tiny_artifact, other_artifact, tmp_path, case):
    idx = tmp_path / "idx"
    shutil.copytree(built, idx)
    art, extra = tiny_artifact, []
    if case in TAMPERING:
        TAMPERING[case](idx)
    elif case == "other artifact":
        art = other_artifact
    elif case == "no index":
        idx = tmp_path
    elif case == "texts too short":
        (tmp_path / "short.txt").write_text("one\n")
        extra = ["--texts", str(tmp_path / "short.txt")]
    before = _snapshot(tmp_path)
    res = CliRunner().invoke(main, ["search", str(idx), str(art), "red cat", "--backend", "numpy", *extra])
    _one_line_failure(res)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "case",
    ["missing input", "truncated npy", "errors missing", "out exists", "no parent", "odd dim pq", "nan rows"],
)
def test_index_build_with_bad_inputs_is_one_line(corpus, tmp_path, case):
    npy = _copy_embeddings(corpus, tmp_path / "in")
    out = tmp_path / "idx"
    extra = ["--first-pass", "binary"]
    if case == "missing input":
        npy = tmp_path / "none.npy"
    elif case == "truncated npy":
        _truncate(npy)
    elif case == "errors missing":
        (npy.parent / "emb.npy.errors.jsonl").unlink()
    elif case == "out exists":
        out.mkdir()
        (out / "x").write_text("x")
    elif case == "no parent":
        out = tmp_path / "nowhere" / "idx"
    elif case == "odd dim pq":
        np.save(npy, np.ones((40, 12), np.float32))
        (npy.parent / "emb.npy.json").unlink()
        (npy.parent / "emb.npy.errors.jsonl").unlink()
        extra = ["--first-pass", "pq"]
    elif case == "nan rows":
        arr = np.load(npy)
        arr[3, 2] = np.nan
        np.save(npy, arr)
    before = _snapshot(tmp_path)
    _one_line_failure(CliRunner().invoke(main, ["index", "build", str(npy), "--out", str(out), *extra]))
    assert _snapshot(tmp_path) == before and _debris(tmp_path) == [] and _debris(tmp_path / "in") == []
