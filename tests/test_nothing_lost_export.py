"""Issue 21 (nothing lost, round 3), export's share: --overwrite never deletes a source or a user's folder,
tampered manifests and broken sources fail in one line, `info` never reads through a symlink, and
Encoder.encode refuses ill-typed arguments naming them. Every bad input is also run through the CLI:
one line on stderr, exit 1, no traceback, nothing left behind."""

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
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgeembed.bench
from edgeembed.artifact import DIGEST_KEY, MANIFEST_NAME, manifest_digest, read_manifest
from edgeembed.build import export
from edgeembed.cli import main
from edgeembed.encoder import Encoder
from edgeembed.errors import ArtifactError, EdgeEmbedError, SourceError
from edgeembed.shippable import shippable_files
from edgeembed.source import load_source

REPO = Path(__file__).resolve().parents[1]
STS = REPO.parent / "shared" / "data" / "stsbenchmark" / "sts-test.csv"


def _tree(root: Path) -> dict[str, bytes]:
    """Every file below root with its bytes: what must not change when a command is refused."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _tampered(artifact: Path, dst: Path, field: str, value: object) -> Path:
    """A copy of `artifact` with one manifest field changed and the digest recomputed (as an attacker or a
    careless hand edit would)."""
    _copy(artifact, dst)
    data = json.loads((dst / MANIFEST_NAME).read_text(encoding="utf-8"))
    node = data
    keys = field.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[keys[-1]] = value
    data[DIGEST_KEY] = manifest_digest(data)
    (dst / MANIFEST_NAME).write_text(json.dumps(data), encoding="utf-8")
    return dst


def _one_line_failure(result, what: str = "") -> str:
    """The CLI refused: exit 1, exactly one line on stderr, no exception escaped click (a traceback)."""
    assert result.exit_code == 1, (result.output, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert what in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


# ------------------------------------------------------------------ item 3: --overwrite deletes nothing else
def test_export_onto_its_own_source_is_refused_and_the_source_is_intact(tiny_model, tmp_path):
    src = _copy(tiny_model, tmp_path / "model")
    before = _tree(src)
    with pytest.raises(EdgeEmbedError, match="is the input"):
        export(src, src, overwrite=True)
    assert _tree(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no lock file, no temp folder


def test_overwrite_refuses_a_folder_of_user_files(tiny_model, tmp_path):
    user = tmp_path / "docs"
    user.mkdir()
    (user / "notes.txt").write_text("precious")
    with pytest.raises(EdgeEmbedError, match=f"replaces only an edgeembed artifact.*{MANIFEST_NAME}"):
        export(tiny_model, user, overwrite=True)
    assert (user / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]


def test_overwrite_refuses_a_folder_holding_the_source(tiny_model, tmp_path):
    holder = tmp_path / "work"
    src = _copy(tiny_model, holder / "model")
    before = _tree(holder)
    with pytest.raises(EdgeEmbedError, match="holds the input"):
        export(src, holder, overwrite=True)
    assert _tree(holder) == before


def test_the_current_directory_is_never_replaced(tiny_artifact, tiny_model, tmp_path, monkeypatch):
    art = _copy(tiny_artifact, tmp_path / "art")  # an artifact, so only the cwd rule can refuse it
    before = _tree(art)
    monkeypatch.chdir(art / "onnx")
    with pytest.raises(EdgeEmbedError, match="current directory"):
        export(tiny_model, art, overwrite=True)
    assert _tree(art) == before


def test_overwrite_still_replaces_an_artifact(tiny_model, tiny_artifact, tmp_path):
    art = _copy(tiny_artifact, tmp_path / "art")
    result = export(tiny_model, art, overwrite=True, optimize="none")
    assert result.path == art and read_manifest(art).dim == 16


def test_overwrite_keeps_a_users_files_inside_an_artifact(tiny_model, tiny_artifact, tmp_path):
    """--overwrite used to delete everything in an artifact folder: a user's notes, an `encode -o` output
    saved inside it. Only the files the manifest lists are edgeembed's."""
    art = _copy(tiny_artifact, tmp_path / "art")
    (art / "notes.txt").write_text("mine")
    (art / "runs" / "a").mkdir(parents=True)
    (art / "runs" / "a" / "emb.npy").write_bytes(b"data")
    before = _tree(art)
    with pytest.raises(
        EdgeEmbedError, match=r"holds 2 file\(s\) edgeembed did not write \(notes\.txt, runs/\)"
    ):
        export(tiny_model, art, overwrite=True, optimize="none")
    assert _tree(art) == before


# ------------------------------------------------------------------ item 10: broken sources, one SourceError
def test_a_mount_point_or_a_link_as_out_is_one_line_before_any_work(tiny_model, tmp_path):
    """An empty mounted volume as --out (a container's) failed with a traceback after the whole export,
    at the rename; a link to an artifact was called "not a folder"."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(EdgeEmbedError, match="is a symbolic link"):
        export(tiny_model, link, overwrite=True, optimize="none")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")
    try:
        with pytest.raises(EdgeEmbedError, match="it is a mount point"):
            export(tiny_model, mnt, optimize="none")
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_folder_that_is_no_model_is_one_line(tmp_path):
    """It printed a Python warning with its source line, then `missing file: .../config.json`."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "readme.txt").write_text("hi")
    res = CliRunner().invoke(main, ["export", str(folder), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1, res.output
    assert "is not a model folder: it has neither modules.json" in res.output


def test_a_source_of_links_exports(tiny_model, tmp_path):
    """The hub cache keeps a model's files as links into blobs/: the export read them all, then failed
    with a traceback hashing the weights through a link."""
    src = tmp_path / "linked"
    src.mkdir()
    for item in Path(tiny_model).iterdir():
        (src / item.name).symlink_to(item.resolve())
    result = export(src, tmp_path / "out", optimize="none")
    assert result.manifest.source["weights_sha256"] is not None
    assert not any(p.is_symlink() for p in (tmp_path / "out").rglob("*"))


def test_a_source_without_its_vocabulary_is_refused(tiny_model, tmp_path):
    """Without tokenizer.json and vocab.txt, transformers builds a tokenizer of special tokens only from
    tokenizer_config.json: every text became [UNK]s, the same embedding, and the gate passed."""
    src = _copy(tiny_model, tmp_path / "model")
    (src / "tokenizer.json").unlink()
    (src / "vocab.txt").unlink()
    with pytest.raises(SourceError, match="maps every word to its unknown token"):
        export(src, tmp_path / "out", optimize="none")
    assert not (tmp_path / "out").exists()


def test_unknown_model_type_is_one_source_error_naming_it_and_the_folder(tiny_model, tmp_path):
    src = _copy(tiny_model, tmp_path / "model")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "model_type": "frobnicator"}))
    with pytest.raises(SourceError, match=r"model_type 'frobnicator' in " + re.escape(str(src))):
        load_source(src)


def test_truncated_safetensors_is_one_source_error_naming_the_file(tiny_model, tmp_path):
    src = _copy(tiny_model, tmp_path / "model")
    weights = src / "model.safetensors"
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(SourceError, match=f"cannot read the weights {weights}"):
        load_source(src)


# ------------------------------------------------------------------ item 10: manifest schema on load
TAMPERED = [
    ("head.pooling", [], "head.pooling"),
    ("head.pooling", ["median"], "head.pooling"),
    ("head.prompts", {"q": 5}, "head.prompts"),
    ("quantization", "x", "'quantization'"),
    ("max_seq_length", 1e20, "max_seq_length"),
    ("head.max_seq_length", 10**20, "head.max_seq_length"),
    ("head.max_seq_length", 1e20, "head.max_seq_length"),
    ("head.normalize", "no", "head.normalize"),
    ("head.default_prompt_name", 3, "head.default_prompt_name"),
    ("head.similarity_fn", "xx", "head.similarity_fn"),
    ("head.dense.0.activation", "foo", "activation"),
    ("head.dense.0.out_features", 0, "out_features"),
    ("head.hidden_size", 64, "takes 32 inputs"),
    ("head.extra", 1, "unknown field 'extra'"),
    ("precision", "int3", "unknown field 'precision'"),
    ("runtime", "nope", "unknown field 'runtime'"),
    ("graphs.0.precision", "int3", "graphs[0].precision"),
    ("graphs.0.runtime", "nope", "graphs[0].runtime"),
    ("graphs.0.input", "bytes", "graphs[0].input"),
    ("graphs.0.inputs", [], "graphs[0].inputs"),
    ("graphs", [], "'graphs'"),
    ("dim", 17, "dim"),
    ("optimization", 5, "'optimization'"),
]


@pytest.mark.parametrize(("field", "value", "named"), TAMPERED, ids=[f"{f}={v!r}" for f, v, _ in TAMPERED])
def test_tampered_manifest_with_recomputed_digest_fails_naming_the_field(
    tiny_artifact, tmp_path, field, value, named
):
    art = _tampered(tiny_artifact, tmp_path / "art", field, value)
    with pytest.raises(ArtifactError, match="corrupt manifest") as info:
        read_manifest(art)
    assert named in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ArtifactError):
        Encoder.load(art)


def test_the_untampered_manifest_loads(tiny_artifact):
    assert read_manifest(tiny_artifact).head.pooling  # the schema accepts what export writes


# ------------------------------------------------------------------ item 12: info and symlinks
def test_info_never_reads_a_graph_through_a_symlink(runner, tiny_artifact, tmp_path):
    art = _copy(tiny_artifact, tmp_path / "art")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.onnx").write_bytes(b"not a graph: parsing it would fail")
    graph = next((tiny_artifact / "onnx").glob("*.onnx"))
    shutil.copy(graph, outside / "other.onnx")
    (art / "onnx" / "evil.onnx").symlink_to(outside / "evil.onnx")
    (art / "onnx" / "other.onnx").symlink_to(outside / "other.onnx")
    (art / "linked").symlink_to(outside, target_is_directory=True)
    listed = {f.path: f for f in shippable_files(art)}
    for name in ("onnx/evil.onnx", "onnx/other.onnx"):
        assert listed[name].operators == {} and listed[name].size == 0
        assert "symbolic link" in listed[name].note
    assert not any(p.startswith("linked/") for p in listed)
    assert listed[f"onnx/{graph.name}"].operators  # the artifact's own graph is still read
    res = runner.invoke(main, ["info", str(art)])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "checksums: FAILED" in res.output and "symbolic link" in res.output
    with pytest.raises(ArtifactError, match="symbolic link"):
        Encoder.load(art)  # the same folder Encoder.load refuses


# ------------------------------------------------------------------ item 15: Encoder.encode's arguments
@pytest.fixture(scope="module")
def encoder(tiny_artifact) -> Encoder:
    return Encoder.load(tiny_artifact)


BAD_ARGUMENTS = [
    ({"texts": {"a", "b"}}, TypeError, "texts"),
    ({"texts": frozenset({"a"})}, TypeError, "texts"),
    ({"texts": {"a": 1}.keys()}, TypeError, "texts"),
    ({"texts": {"a": 1}.items()}, TypeError, "texts"),
    ({"texts": {"a": 1}}, TypeError, "texts"),
    ({"normalize": "false"}, TypeError, "normalize"),
    ({"normalize": 0}, TypeError, "normalize"),
    ({"batch_size": 2.5}, TypeError, "batch_size"),
    ({"batch_size": "4"}, TypeError, "batch_size"),
    ({"batch_size": True}, TypeError, "batch_size"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"prompt": 5}, TypeError, "prompt"),
    ({"prompt_name": 5}, TypeError, "prompt_name"),
    ({"max_batch_tokens": 2.5}, TypeError, "max_batch_tokens"),
]


@pytest.mark.parametrize(
    ("kwargs", "error", "named"), BAD_ARGUMENTS, ids=[repr(k) for k, _, _ in BAD_ARGUMENTS]
)
def test_encode_refuses_bad_arguments_naming_them(encoder, kwargs, error, named):
    kwargs = {"texts": ["a cat"], **kwargs}
    with pytest.raises(error, match=rf"^{named}\b"):
        encoder.encode(**kwargs)


def test_encode_accepts_ordered_inputs_in_their_order(encoder):
    texts = ["the cat sat", "hello world", "a dog"]
    want = encoder.encode(texts)
    np.testing.assert_array_equal(encoder.encode(tuple(texts)), want)
    np.testing.assert_array_equal(encoder.encode(np.array(texts)), want)
    np.testing.assert_array_equal(encoder.encode(t for t in texts), want)
    np.testing.assert_array_equal(
        encoder.encode(texts, batch_size=np.int64(2), normalize=np.bool_(True)), want
    )
    raw = encoder.encode(texts, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)  # False really turns normalization off


ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 70),
    st.floats(allow_nan=True),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=4),
    st.lists(st.integers(), max_size=2),
    st.sets(st.text(max_size=2), max_size=2),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["batch_size", "normalize", "prompt", "max_batch_tokens"]), value=ANYTHING)
def test_encode_with_any_argument_value_works_or_names_the_argument(encoder, name, value):
    valid = {
        "batch_size": lambda v: type(v) is int and v >= 1,
        "normalize": lambda v: v is None or isinstance(v, bool),
        "prompt": lambda v: v is None or isinstance(v, str),
        "max_batch_tokens": lambda v: v is None or (type(v) is int and v >= 1),
    }[name]
    if valid(value):
        assert encoder.encode(["a cat", "the dog sat"], **{name: value}).shape == (2, encoder.dim)
        return
    with pytest.raises((TypeError, ValueError)) as info:
        encoder.encode(["a cat"], **{name: value})
    assert str(info.value).startswith(name), str(info.value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.one_of(
        st.sets(st.text(max_size=5)),
        st.frozensets(st.text(max_size=5)),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    )
)
def test_encode_refuses_every_unordered_collection(encoder, texts):
    with pytest.raises(TypeError, match=r"^texts"):
        encoder.encode(texts)


# ------------------------------------------------------------------ the CLI: one line, exit 1, no debris
def _broken_sources(tiny_model: Path, root: Path) -> dict[str, Path]:
    unknown = _copy(tiny_model, root / "unknown-type")
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "model_type": "frobnicator"}))
    truncated = _copy(tiny_model, root / "truncated")
    with (truncated / "model.safetensors").open("r+b") as f:
        f.truncate(1000)
    return {"unknown": unknown, "truncated": truncated}


def test_cli_bad_inputs_fail_in_one_line_and_leave_nothing(
    runner, tiny_model, tiny_artifact, tmp_path, monkeypatch
):
    work = tmp_path / "work"
    work.mkdir()
    src = _copy(tiny_model, work / "model")
    broken = _broken_sources(tiny_model, work)
    user = work / "docs"
    user.mkdir()
    (user / "notes.txt").write_text("precious")
    report = work / "report.txt"
    report.write_text("not a folder")
    tampered = {
        field: _tampered(tiny_artifact, work / f"tampered-{i}", field, value)
        for i, (field, value) in enumerate(
            [
                ("head.pooling", []),
                ("head.prompts", {"q": 5}),
                ("quantization", "x"),
                ("max_seq_length", 1e20),
            ]
        )
    }
    monkeypatch.chdir(work)
    before = _tree(work)
    cases = [
        (["export", str(src), "--out", str(src), "--overwrite"], "is the input"),
        (["export", str(src), "--out", str(user), "--overwrite"], "replaces only an edgeembed artifact"),
        (["export", str(src), "--out", str(work), "--overwrite"], "current directory"),
        (["export", str(src), "--out", ".", "--overwrite"], "current directory"),
        (["export", str(broken["unknown"]), "--out", "out-unknown"], "frobnicator"),
        (["export", str(broken["truncated"]), "--out", "out-truncated"], "model.safetensors"),
        (["bench", str(tiny_artifact), "--sts", str(STS), "--out", str(report)], "not a folder"),
        (["bench", str(tiny_artifact), "--sts", str(STS), "--out", str(report / "sub")], "not a folder"),
    ]
    for field, art in tampered.items():
        cases.append((["info", str(art)], field))
        cases.append((["encode", str(art), "-o", "emb.npy"], field))
    ran = []

    def no_benchmark(*args, **kwargs):
        ran.append(args)
        raise AssertionError("the benchmark ran before --out was checked")

    monkeypatch.setattr(edgeembed.bench, "run_bench", no_benchmark)
    for args, what in cases:
        _one_line_failure(runner.invoke(main, args, input="hello\n"), what)
    assert not ran
    assert _tree(work) == before  # nothing written, nothing deleted, no lock or temp file left
    assert sorted(p.name for p in work.iterdir()) == sorted(
        ["model", "unknown-type", "truncated", "docs", "report.txt", *(p.name for p in tampered.values())]
    )


def test_cli_in_a_real_process_prints_no_traceback(tiny_model, tmp_path):
    """The same refusal through `python -m edgeembed` (a real process: stderr as a user sees it)."""
    src = _copy(tiny_model, tmp_path / "model")
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    res = subprocess.run(
        [sys.executable, "-m", "edgeembed", "export", str(src), "--out", str(src), "--overwrite"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "is the input" in res.stderr
    assert (src / "model.safetensors").is_file()
