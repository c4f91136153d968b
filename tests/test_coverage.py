"""bench/coverage.py's plumbing on a few cells (the full table is a run by hand: `python bench/coverage.py`):
a passing cell carries its minimum cosine, a refusal its one line and whether it came before any export
work, a traceback or a dead worker is a FAILED cell with its first line, and the generated block replaces
only what lies between its markers."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap

import pytest

from conftest import REPO


def _load():
    spec = importlib.util.spec_from_file_location("bench_coverage", REPO / "bench" / "coverage.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cov = _load()


def test_classify():
    Outcome = cov.Outcome
    assert cov.classify(Outcome(0, ("· exporting to onnx",))) is None
    refused = cov.classify(Outcome(1, ("· source: x", "error: no such thing")))
    assert refused == {"status": "refused", "message": "no such thing", "before_work": True}
    late = cov.classify(Outcome(1, ("· exporting to onnx (...)", "error: drift")))
    assert late["status"] == "failed" and "after export work: drift" in late["message"]
    crash = cov.classify(Outcome(1, (), ValueError("no layers\nmore lines")))
    assert crash == {"status": "failed", "message": "traceback: ValueError: no layers"}
    assert cov.classify(Outcome(2, ("Usage: ...", "Error: no such option")))["status"] == "failed"


def test_cells_through_the_cli(tmp_path, monkeypatch):
    """One real cell (a tiny BERT, fp32, CLS pooling) and one refused up front by the CLI itself."""
    monkeypatch.setitem(cov.VARIANTS, "weights-onnx", cov.Variant("weights", ("--quantize", "weights-int8")))
    inputs = cov.write_inputs(tmp_path)
    cells = cov.run_family("bert-cls", ["fp32", "weights-onnx"], tmp_path, inputs, tmp_path / "log.jsonl")
    ok, refused = cells
    assert ok["status"] == "pass" and ok["min_cosine"] >= cov.MIN_COSINE, ok
    assert ok["fusion"]["applied"] is True  # BERT fuses (the registry's ort_fusion)
    assert refused["status"] == "refused" and refused["before_work"] is True
    assert "--format openvino" in refused["message"] and "\n" not in refused["message"]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r.get("started", False) for r in log] == [True, False, True, False]
    assert not (tmp_path / "bert-cls" / "fp32").exists()  # each cell's artifact is removed after it


def test_a_dead_worker_fails_its_cell_and_the_rest_go_on(tmp_path):
    """A worker that dies inside a cell (here SIGKILL, as a segfault would) leaves that cell FAILED with
    the reason, and a fresh worker runs the cells after it."""
    fake = tmp_path / "worker.py"
    fake.write_text(
        textwrap.dedent(
            """
            import json, os, signal, sys
            args = sys.argv[1:]
            work = args[args.index("--work") + 1]
            name = args[args.index("--worker") + 1]
            variants = [a.split("=", 1)[1] for a in args if a.startswith("--variant=")]
            log = open(os.path.join(work, name + ".jsonl"), "a")
            for v in variants:
                log.write(json.dumps({"family": name, "variant": v, "started": True}) + "\\n"); log.flush()
                if v == "dynamic-int8":
                    print("about to crash", file=sys.stderr, flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)
                cell = {"family": name, "variant": v, "status": "pass", "min_cosine": 1.0, "seconds": 0}
                log.write(json.dumps(cell) + "\\n"); log.flush()
            """
        )
    )
    variants = ["fp32", "dynamic-int8", "static-int8"]
    cells = cov.collect("bert-cls", variants, tmp_path, {}, timeout=60, worker=[sys.executable, str(fake)])
    assert [c["variant"] for c in cells] == variants
    assert [c["status"] for c in cells] == ["pass", "failed", "pass"]
    assert cells[1]["message"] == "worker process died (signal 9): about to crash"


def _results(cells):
    return {
        "commit": "abc",
        "created": "now",
        "load_average": "1.0",
        "seconds": 60,
        "variants": ["fp32", "static-int8"],
        "cells": cells,
    }


def test_render_and_replace_block():
    cells = [
        {"family": "bert-mean", "variant": "fp32", "status": "pass", "min_cosine": 0.999991,
         "fusion": {"applied": True, "engine": "ort", "reason": None}},
        {"family": "bert-mean", "variant": "static-int8", "status": "below", "min_cosine": 0.98},
        {"family": "t5", "variant": "fp32", "status": "failed", "message": "traceback: KeyError: 'x'"},
        {"family": "t5", "variant": "static-int8", "status": "refused", "message": "why", "before_work": True},
    ]  # fmt: skip
    block = cov.render(_results(cells))
    assert block.startswith(cov.START) and block.rstrip().endswith(cov.END)
    assert "4 cells: 1 pass" in block and "1 below it, 1 refused up front, 1 FAILED" in block
    assert "| bert-mean (bert, mean, prompts) | 0.99999 | **0.98000** (< 0.99) |" in block
    assert "| t5 (t5, mean, Dense) | **FAILED** [1] | refused [2] |" in block
    assert "[1] t5, fp32: traceback: KeyError: 'x'" in block and "[2] t5, static int8: why" in block
    assert "- bert-mean: fused by ONNX Runtime's optimizer" in block
    text = "# Title\n\nbefore\n\n" + cov.render(_results(cells[:1])) + "\nafter\n"
    replaced = cov.replace_block(text, block)
    assert replaced.startswith("# Title\n\nbefore\n\n") and replaced.endswith(block + "after\n")
    assert cov.replace_block(replaced, block) == replaced
    assert cov.replace_block("no block\n", block) == "no block\n\n" + block


@pytest.mark.heavy
def test_full_table_has_no_failed_cell(tmp_path):
    """The whole table (about 15 minutes): every cell passes or is refused up front."""
    assert cov.main(["--work", str(tmp_path), "--dry-run"]) == 0
