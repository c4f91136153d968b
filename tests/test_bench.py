"""The bench harness end to end on the tiny artifact (one run, tiny STS file), its STS reader and
Spearman, the report files, the sweep's variant table. No timing assertions: only presence and sanity."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeembed.bench import BenchConfig, BenchError, SweepVariant, VariantResult, export_sweep
from edgeembed.bench.harness import WORKER, latency_indices
from edgeembed.bench.report import pareto_front
from edgeembed.cli import main
from edgeembed.errors import EdgeEmbedError
from edgeembed.sts import load_sts, spearman, sts_score

PAIRS = [
    ("the cat sat on the mat", "a cat sat on a mat", 4.8),
    ("the dog sat on the mat", "the cat sat on the mat", 3.1),
    ("a man is playing the guitar", "a man is playing guitar on stage", 4.2),
    ("the crowd sings along", "a man is playing the guitar", 1.0),
    ("the stock market fell again", "bank rates fell", 2.2),
    ("hello world", "hello edge device", 0.8),
    ("small fast quantized model", "a small and fast model", 3.9),
    ("embed the text quickly", "sentence embeddings of text", 2.9),
    ("search query", "search passage", 2.5),
    ("upper case shouting", "leading and trailing whitespace", 0.2),
    ("the cat", "the dog", 1.5),
    ("numbers and e mail", "url and hash tags", 1.1),
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_sts(tmp_path_factory) -> Path:
    """The simple layout, with a header row."""
    path = tmp_path_factory.mktemp("sts") / "tiny-sts.tsv"
    lines = ["sentence1\tsentence2\tscore"] + [f"{a}\t{b}\t{s}" for a, b, s in PAIRS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def two_artifacts(tiny_artifact, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny fp32 artifact under two names: the first is the reference of the second."""
    import shutil

    root = tmp_path_factory.mktemp("variants")
    a, b = root / "tiny-a", root / "tiny-b"
    shutil.copytree(tiny_artifact, a)
    shutil.copytree(tiny_artifact, b)
    return a, b


@pytest.fixture(scope="module")
def bench_run(two_artifacts, tiny_sts, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out") / "report"
    args = ["bench", *map(str, two_artifacts), "--sts", str(tiny_sts), "--runs", "1", "--threads", "1"]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result, out


def test_bench_writes_every_report_file(bench_run):
    result, out = bench_run
    for name in ("report.json", "report.csv", "report.md", "report.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "| tiny-a |" in result.stdout and "| tiny-b |" in result.stdout
    md = (out / "report.md").read_text()
    assert "| tiny-a |" in md and "![speed vs quality](report.png)" in md


def test_bench_png_is_a_valid_image(bench_run):
    from matplotlib.image import imread

    _, out = bench_run
    assert (out / "report.png").read_bytes()[:8] == PNG_SIGNATURE
    image = imread(out / "report.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_bench_json_has_every_field_and_sane_values(bench_run, tiny_sts):
    _, out = bench_run
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["runs"] == 1 and report["config"]["threads"] == 1
    machine = report["machine"]
    for key in (
        "date",
        "cpu",
        "isa",
        "logical_cpus",
        "physical_cores",
        "threads",
        "python",
        "load_average_start",
    ):
        assert key in machine, key
    assert report["sts"]["pairs"] == len(PAIRS)
    assert report["sts"]["unique_sentences"] == len(load_sts(tiny_sts).sentences)
    expected = {f.name for f in fields(VariantResult)}
    by_name = {r["name"]: r for r in report["results"]}
    assert set(by_name) == {"tiny-a", "tiny-b"}
    for r in report["results"]:
        assert set(r) == expected
        assert r["runs"] == 1 and r["kind"] == "edgeembed" and not r["peer"]
        assert r["throughput"] > 0 and r["throughput_min"] <= r["throughput"] <= r["throughput_max"]
        assert 0 < r["latency_p50_ms"] <= r["latency_p95_ms"]
        assert 0 < r["cold_start_s"] < 600 and r["cold_start_min_s"] <= r["cold_start_s"]
        assert 10 < r["rss_at_first_embedding_mb"] <= r["peak_rss_mb"] < 100_000
        assert r["size_mb"] > 0.1
        assert -100 <= r["sts_spearman"] <= 100
        assert r["description"] == "onnxruntime fp32"
        assert r["torch_loaded"] is False  # the runtime path never imports torch
        assert r["versions"]["onnxruntime"] and r["versions"]["numpy"]
    # Same source and fp32 both: the first is the reference; identical weights give identical quality.
    a, b = by_name["tiny-a"], by_name["tiny-b"]
    assert a["reference"] == b["reference"] == "tiny-a"
    assert a["sts_retained_pct"] == pytest.approx(100.0)
    assert b["sts_retained_pct"] == pytest.approx(100.0, abs=1e-6)
    assert b["cosine_to_reference_min"] == pytest.approx(1.0, abs=1e-5)
    assert b["sts_spearman"] == pytest.approx(a["sts_spearman"], abs=1e-6)


def test_bench_spearman_is_the_one_of_the_embeddings(bench_run, tiny_artifact, tiny_sts):
    from edgeembed.encoder import Encoder

    _, out = bench_run
    report = json.loads((out / "report.json").read_text())
    sts = load_sts(tiny_sts)
    expected = sts_score(sts, Encoder.load(tiny_artifact).encode(sts.sentences))
    assert report["results"][0]["sts_spearman"] == pytest.approx(expected, abs=1e-4)


def test_bench_csv_has_one_row_per_variant(bench_run):
    _, out = bench_run
    with (out / "report.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["tiny-a", "tiny-b"]
    assert float(rows[0]["throughput"]) > 0 and json.loads(rows[0]["versions"])["numpy"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_matches_scipy(seed):
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, 300).astype(float)  # many ties
    b = a + rng.normal(0, 2, 300)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    c = rng.normal(size=50)
    assert spearman(c, -c) == pytest.approx(-1.0)


def test_sts_score_matches_scipy(tiny_sts, rng):
    from scipy.stats import spearmanr

    sts = load_sts(tiny_sts)
    emb = rng.normal(size=(len(sts.sentences), 8))
    vec = dict(zip(sts.sentences, emb))
    a = np.stack([vec[s] for s in sts.s1])
    b = np.stack([vec[s] for s in sts.s2])
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert sts_score(sts, emb) == pytest.approx(100 * spearmanr(cos, sts.scores).statistic, abs=1e-9)


def test_load_sts_reads_the_stsb_layout(tmp_path):
    row = "main-captions\tMSRvid\t2012test\t0001\t{score}\t{a}\t{b}"
    rows = [
        row.format(score=5.0, a="A man.", b="A man!"),
        row.format(score=1.5, a="x", b="y") + "\textra\tcols",
    ]
    path = tmp_path / "sts-test.csv"
    path.write_text("\n".join(rows) + "\n")
    sts = load_sts(path)
    assert sts.s1 == ("A man.", "x") and sts.s2 == ("A man!", "y")
    assert sts.scores.tolist() == [5.0, 1.5]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("only\ttwo\n", "expected 7+ tab-separated columns"),
        ("a\tb\t1.0\nc\td\tnot-a-score\n", ":2: score 'not-a-score' is not a number"),
        ("a\tb\t1.0\n", "need at least 2"),
        ("", "need at least 2"),
        ("a\tb\tnan\nc\td\t1\n", ":1: score 'nan' is not a finite number"),
        ("a\tb\tabc\n", "(line 1 was read as a header: "),
        ("a\tb\t3\nc\td\t3\n", "every pair has the score 3.0"),
    ],
)
def test_malformed_sts_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(EdgeEmbedError, match=re.escape(message)) as info:
        load_sts(path)
    assert str(path) in str(info.value)


def test_bench_cli_missing_sts_file_is_one_line(tiny_artifact, tmp_path):
    result = CliRunner().invoke(main, ["bench", str(tiny_artifact), "--sts", str(tmp_path / "nope.tsv")])
    assert result.exit_code == 1
    assert "STS file not found" in result.output and "Traceback" not in result.output


def test_bench_cli_malformed_sts_file_is_one_line(tiny_artifact, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n")
    result = CliRunner().invoke(main, ["bench", str(tiny_artifact), "--sts", str(bad)])
    assert result.exit_code == 1 and f"{bad}:1" in result.output and "Traceback" not in result.output


def test_bench_cli_needs_an_artifact(tiny_sts):
    result = CliRunner().invoke(main, ["bench", "--sts", str(tiny_sts)])
    assert result.exit_code == 1 and "at least one ARTIFACT" in result.output


def test_bench_cli_missing_artifact_names_it(tiny_sts, tmp_path):
    result = CliRunner().invoke(main, ["bench", str(tmp_path / "ghost"), "--sts", str(tiny_sts)])
    assert result.exit_code == 1 and "ghost" in result.output and "Traceback" not in result.output


def test_pareto_front():
    points = [(100, 99.0), (200, 98.0), (150, 97.0), (50, 100.0), (200, 90.0)]
    assert pareto_front(points) == [3, 0, 1]


def test_latency_indices_are_spread_and_bounded():
    idx = latency_indices(1000, 200)
    assert len(idx) == 200 and idx[0] == 0 and idx[-1] == 999
    assert latency_indices(5, 200) == [0, 1, 2, 3, 4]


def test_worker_is_self_contained():
    """It must start under an interpreter where edgeembed is not importable (the peer's venv)."""
    proc = subprocess.run([sys.executable, "-I", str(WORKER)], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_sweep_records_failed_variants_with_their_error(tiny_model, tmp_path):
    """A variant that raises is recorded as failed (never dropped); one that needs missing inputs is
    listed as not run, with the reason."""
    variants = (
        SweepVariant("bogus-option", {"no_such_option": True}),
        SweepVariant("bogus-format", {"format": "no-such-format"}),
        SweepVariant("needs-calibration", {"calibration": "<calibration>"}),
    )
    paths, failures = export_sweep(tiny_model, tmp_path / "sweep", variants=variants)
    assert paths == []
    assert [(f.name, f.stage, f.failed) for f in failures] == [
        ("bogus-option", "export", True),
        ("bogus-format", "export", True),
        ("needs-calibration", "not run", False),
    ]
    assert "TypeError" in failures[0].error and "no_such_option" in failures[0].error
    assert "no-such-format" in failures[1].error and "--calibration" in failures[2].error
    assert not (tmp_path / "sweep").exists() or not any((tmp_path / "sweep").iterdir())


def test_bench_shows_a_failed_variant_and_exits_non_zero(tiny_model, tiny_artifact, tiny_sts, tmp_path):
    """A worker that fails marks its variant FAILED in the table and the command exits 1."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_artifact, broken)
    # A damaged file (the manifest itself is intact, so the variant is accepted): its worker fails at load.
    with (broken / "tokenizer.json").open("a") as f:
        f.write(" ")
    out = tmp_path / "report"
    args = ["bench", str(tiny_artifact), str(broken), "--sts", str(tiny_sts), "--runs", "1", "--threads", "1"]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code == 1
    assert "1 variant(s) failed: broken (measure)" in result.output
    report = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in report["results"]] == ["artifact"]
    assert report["failures"][0]["name"] == "broken" and "checksum mismatch" in report["failures"][0]["error"]
    assert "FAILED at measure" in (out / "report.md").read_text()


# Exports and benches every variant this install makes (over a minute): with -m heavy.
@pytest.mark.heavy
def test_bench_cli_sweep_exports_then_benches(tiny_model, tiny_sts, tmp_path):
    out = tmp_path / "sweep"
    args = ["bench", "--sweep", str(tiny_model), "--sts", str(tiny_sts), "--runs", "1", "--threads", "1"]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    names = [r["name"] for r in report["results"]]
    assert "onnx-fp32" in names and (out / "artifacts" / "onnx-fp32" / "edgeembed.json").is_file()
    ref = next(r for r in report["results"] if r["name"] == "onnx-fp32")
    assert ref["sts_retained_pct"] == pytest.approx(100.0)
    assert {f["stage"] for f in report["failures"]} <= {"not run"}


def test_peer_kind_runs_through_the_same_worker(tiny_model, tiny_artifact, tiny_sts):
    """A sentence-transformers variant (torch backend, in this venv) measured next to our export of the
    same model: quality is compared across kinds, and our export matches the original."""
    import dataclasses

    pytest.importorskip("sentence_transformers")
    from edgeembed.bench import BenchConfig, Variant, run_bench

    peer = Variant(
        name="st-torch",
        path=tiny_model,
        kind="sentence-transformers",
        backend="torch",
        peer=True,
        source="tiny",
        reference=True,
    )
    ours = dataclasses.replace(
        Variant.from_artifact(tiny_artifact, name="ours"), source="tiny", reference=False
    )
    report = run_bench([ours, peer], load_sts(tiny_sts), BenchConfig(runs=1, threads=1, latency_sentences=5))
    o, p = report.result("ours"), report.result("st-torch")
    assert o.reference == p.reference == "st-torch"
    assert o.cosine_to_reference_min > 0.9999 and o.sts_retained_pct == pytest.approx(100.0, abs=0.01)
    assert p.torch_loaded and not o.torch_loaded and p.peer and not o.peer
    assert p.versions["sentence-transformers"] and p.size_mb > 0


def test_report_json_reads_back(bench_run):
    from edgeembed.bench import Report, markdown

    _, out = bench_run
    data = json.loads((out / "report.json").read_text())
    report = Report.from_dict(data)
    assert report.to_dict() == data
    assert markdown(report) == (out / "report.md").read_text()


def test_worker_peak_rss_is_its_own_not_its_parents():
    """ru_maxrss survives execve on Linux; the worker must report its own peak, not the parent's."""
    big = np.ones(600 * 2**20 // 8)  # ~600 MB resident in this (parent) process
    code = f"import runpy; print(runpy.run_path({str(WORKER)!r})['peak_rss_mb']())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert big.sum() > 0
    assert 1 < float(proc.stdout) < 300


def test_worker_passes_encode_options_to_every_call(tiny_artifact):
    """bench/memory.py's `max_batch_tokens` setting reaches Encoder.encode (a budget of 0 is refused
    there, so the refusal proves it arrives); a valid budget gives the same embeddings."""
    import runpy

    load = runpy.run_path(str(WORKER))["load_edgeembed"]
    texts = ["a short text", "a somewhat longer text than the first one", "x"]
    plain = load({"path": str(tiny_artifact), "threads": 1})(texts, 3)
    budget = load({"path": str(tiny_artifact), "threads": 1, "encode_options": {"max_batch_tokens": 4}})
    np.testing.assert_allclose(budget(texts, 3), plain, atol=1e-6)
    refused = load({"path": str(tiny_artifact), "threads": 1, "encode_options": {"max_batch_tokens": 0}})
    with pytest.raises(EdgeEmbedError, match="max_batch_tokens"):
        refused(texts, 3)


def test_bench_cli_names_same_named_folders_apart(tmp_path):
    from edgeembed.bench.cli import _names

    paths = [tmp_path / "a" / "model", tmp_path / "b" / "model", tmp_path / "other"]
    assert _names(paths) == ["a/model", "b/model", "other"]


def test_bench_recall_column_vs_the_reference(two_artifacts, tiny_sts, tmp_path):
    corpus = tmp_path / "corpus.txt"
    words = ["model", "guitar", "market", "cat", "search", "text", "fast", "crowd", "bank", "device"]
    rng = np.random.default_rng(0)
    corpus.write_text("\n".join(" ".join(rng.choice(words, 5)) for _ in range(120)) + "\n", encoding="utf-8")
    out = tmp_path / "report"
    args = ["bench", *map(str, two_artifacts), "--sts", str(tiny_sts), "--runs", "1", "--threads", "1"]
    args += ["--recall-corpus", str(corpus), "--out", str(out)]
    # The default lines (50,001-100,000) are past this file's end: nothing to search is one line.
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "texts in the lines asked" in result.output
    from edgeembed.bench import BenchConfig, Variant, run_bench

    variants = [Variant.from_artifact(p) for p in two_artifacts]
    config = BenchConfig(
        runs=1, threads=1, latency_sentences=3, recall_corpus=str(corpus), recall_lines=(0, 100)
    )
    report = run_bench(variants, load_sts(tiny_sts), config)
    a, b = report.results
    assert a.recall_at_10 == b.recall_at_10 == 1.0 and b.recall_reference == "tiny-a"
    from edgeembed.bench.report import markdown

    md = markdown(report, image=None)
    assert "recall@10" in md and "| 1.000 |" in md and "lines 1-100" in md


def test_variants_that_differ_only_in_torch_threads_share_the_recall_pass(two_artifacts, tiny_sts, tmp_path):
    """A twin (same model and settings) is measured for speed but takes its twin's recall corpus pass; a
    torch back-end with another thread count, another back-end or another file is no twin."""
    import dataclasses

    from edgeembed.bench import BenchConfig, Variant, run_bench
    from edgeembed.bench.harness import same_output

    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(f"text number {i} about a cat" for i in range(60)) + "\n")
    a, b = (Variant.from_artifact(p) for p in two_artifacts)
    twin = dataclasses.replace(b, name="tiny-b-twin", torch_threads=1)
    assert same_output(b, twin) and not same_output(a, b)
    peer = Variant("p", b.path, kind="sentence-transformers", backend="onnx", model_kwargs={"file_name": "x"})
    assert same_output(peer, dataclasses.replace(peer, name="p-t1", torch_threads=1))
    assert not same_output(peer, dataclasses.replace(peer, model_kwargs={"file_name": "y"}))
    torch_peer = dataclasses.replace(peer, backend="torch", model_kwargs={})
    assert not same_output(torch_peer, dataclasses.replace(torch_peer, torch_threads=1))
    config = BenchConfig(
        runs=1, threads=1, latency_sentences=3, recall_corpus=str(corpus), recall_lines=(0, 60)
    )
    got = {r.name: r for r in run_bench([a, b, twin], load_sts(tiny_sts), config).results}
    assert got["tiny-b-twin"].recall_at_10 == got[b.name].recall_at_10 is not None
    assert got["tiny-b-twin"].throughput > 0


@pytest.mark.parametrize("docs", [-5, 0, 10])
def test_recall_docs_too_few_is_refused(docs):
    """A sample of <= 10 docs (or a negative one, which would slice) is refused up front."""
    with pytest.raises(BenchError, match="recall_docs must be > 10"):
        BenchConfig(recall_docs=docs)


def test_versions_lines_keep_each_peer_environment_apart():
    from types import SimpleNamespace

    from edgeembed.bench.report import versions_lines

    def result(peer: bool, **versions: str) -> SimpleNamespace:
        return SimpleNamespace(peer=peer, versions={k.replace("_", "-"): v for k, v in versions.items()})

    report = SimpleNamespace(
        results=[
            result(False, onnxruntime="1.32.0"),
            result(True, sentence_transformers="5.7.0", optimum="1.27.0"),
            result(True, sentence_transformers="6.3.0", optimum_intel="2.2.0"),
        ]
    )
    lines = versions_lines(report)
    assert len(lines) == 3
    five = next(line for line in lines if "sentence-transformers 5.7.0)" in line)
    six = next(line for line in lines if "sentence-transformers 6.3.0)" in line)
    assert "optimum 1.27.0" in five and "optimum-intel" not in five
    assert "optimum-intel 2.2.0" in six and "optimum 1.27.0" not in six


@pytest.mark.parametrize(
    "flags, ceiling",
    [({"avx2"}, "AVX2 (no VNNI)"), ({"avx2", "avx512_vnni"}, "AVX-512 VNNI"), (set(), "no int8 ceiling")],
)
def test_roofline_names_a_ceiling_for_every_x86_cpu(flags, ceiling):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        from roofline import Cpu, Roofline
    finally:
        sys.path.pop(0)
    cpu = Cpu(cores=2, mhz=2000.0, flags=frozenset(flags), vendor="amd")
    peaks = cpu.int8_peaks_gmacs()
    line = Roofline(14.4, 0.154, {isa: g / 0.154 for isa, g in peaks.items()}).line(100.0)
    assert ceiling in line
    assert ("avx2" in peaks) == (flags == {"avx2"})  # AVX2 only where there is nothing better
