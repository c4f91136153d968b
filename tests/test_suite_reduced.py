"""bench/suite.py --reduced: reduced folders exported fresh (fp32 + fused dynamic int8; static: its own
artifact) and shown in the results table, the reduced section and the plot, beside the others."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from test_bench import PAIRS
from test_static_export import build_static_folder

from edgeembed.bench import BenchConfig, Variant, run_bench
from edgeembed.sts import load_sts

SUITE = Path(__file__).resolve().parents[1] / "bench" / "suite.py"


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("bench_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reduced_folders(tiny_model, tmp_path_factory) -> list[Path]:
    """A tiny transformer standing in for a distilled student (with its reduce.json) and a tiny static
    model."""
    root = tmp_path_factory.mktemp("reduced")
    student = root / "l1"
    shutil.copytree(tiny_model, student)
    record = {
        "teacher": {"layers": 2},
        "plan": {"layers": 1, "dim": None, "static": False},
        "layers": {"kept": [1]},
    }
    (student / "reduce.json").write_text(json.dumps(record))
    static = build_static_folder(root / "static")
    (static / "reduce.json").write_text(json.dumps({"plan": {"static": True, "dim": 8}}))
    return [student, static]


def test_reduced_variants_exported_and_reported(suite, reduced_folders, tiny_artifact, tmp_path):
    variants, failures = suite.export_reduced(
        [*reduced_folders, tmp_path / "missing"], tmp_path / "out", threads=1, on_step=lambda _m: None
    )
    assert [v.name for v in variants] == ["l1-fp32", "l1-fused-int8-dynamic", "static-static"]
    # Without calibration data the static int8 OpenVINO variant is shown as not run, never dropped.
    assert [(f.name, f.stage) for f in failures] == [("l1-openvino-int8", "not run"), ("missing", "export")]
    assert all(v.source == suite.SOURCE and not v.reference for v in variants)
    assert "reduced: layers [1] of 2" in variants[0].description
    assert "int8" in json.dumps(json.loads((variants[1].path / "edgeembed.json").read_text())["quantization"])
    assert "reduced: static table, PCA 8" in variants[2].description

    # The original model's fp32 (here the tiny artifact) is the quality reference, as st-torch is.
    full = dataclasses.replace(
        Variant.from_artifact(tiny_artifact, name="onnx-fp32"), source=suite.SOURCE, reference=True
    )
    sts = tmp_path / "sts.tsv"
    sts.write_text("\n".join(f"{a}\t{b}\t{s}" for a, b, s in PAIRS) + "\n", encoding="utf-8")
    report = run_bench(
        [full, *variants],
        load_sts(sts),
        BenchConfig(runs=1, threads=1, latency_sentences=3),
        failures=failures,
    )
    fp32, static = report.result("l1-fp32"), report.result("static-static")
    assert fp32.reference == "onnx-fp32" and fp32.sts_retained_pct == pytest.approx(100.0, abs=0.01)
    # A smaller dimension has a retained score but no cosine to the reference.
    assert static.sts_retained_pct is not None and static.cosine_to_reference_mean is None

    md = suite.results_md(report, "bench/run_suite.sh --reduced l1 --reduced static")
    section = md[md.index("## Reduced models") :]
    assert "| l1-fp32 |" in section and "x (onnx-fp32)" in section and "| static-static |" in section
    assert "**FAILED at export**" in md  # the unreadable folder is shown, not dropped
    pytest.importorskip("matplotlib")
    suite.plot(report, tmp_path / "results.png")
    assert (tmp_path / "results.png").stat().st_size > 0


def test_no_reduced_folders_adds_nothing_and_names_must_differ(suite, tmp_path):
    assert suite.export_reduced([], tmp_path, None) == ([], [])
    with pytest.raises(SystemExit, match="distinct names"):
        suite.export_reduced([tmp_path / "a" / "l3", tmp_path / "b" / "l3"], tmp_path, None)
