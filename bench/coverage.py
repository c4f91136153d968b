"""The coverage table: every model family x every way of running it, against sentence-transformers.

    python bench/coverage.py                               # everything; writes bench/COVERAGE.md,
                                                           # bench/coverage.json and README.md's table
    python bench/coverage.py --family qwen3 --variant static-int8 --variant fp32   # a few cells, printed

Each family is a tiny random model built in code by tests/family_models.py (its usual pooling, prompts and
Dense; a real-format tokenizer trained with `tokenizers`; XLM-R also with the real multilingual-e5-small
tokenizer). Each cell runs the `edgeembed` CLI as a user would (`export ...`, or `reduce ...` then
`export`), loads the artifact with the Encoder (the strings-in runtime for the strings-in cells) and
compares it with sentence-transformers on the folder it came from, on varied multilingual texts, plain and
with each of the model's prompts. A cell is the minimum cosine, or the one-line refusal (and whether it
came before any export work), or FAILED with the first line of the error: never dropped.

It lives in bench/ beside the other scripts that write a generated report (mobile.py, suite.py): it is a
measurement run by hand, not a test, and nothing in the package imports it. Each family runs in its own
worker process, so a crash (a segfault in a native library) fails that cell only; the rest go on.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for _p in (REPO, REPO / "tests", HERE):  # the checkout's edgeembed; the test helpers that build families
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from common import git_commit  # noqa: E402

from family_models import E5_REAL, FAMILIES, TEXTS, TRAIN_TEXTS, Family  # noqa: E402

CORPUS = REPO.parent / "shared" / "data" / "corpus" / "sentences.txt"
MIN_COSINE = 0.99
START, END = "<!-- coverage.py: generated from bench/coverage.json -->", "<!-- coverage.py: end -->"
# Progress lines (`· ...` on stderr) that mean the command has started real work: a refusal after one of
# them came too late (the issue asks for refusals before any export work).
WORK_MARKERS = (
    "· exporting to",
    "· teacher embeddings",
    "· choosing",
    "· distilling",
    "· student embeddings",
    "· PCA to",
)
# Beyond family_models.TEXTS: a text longer than every max_seq_length (truncation), mixed scripts.
EXTRA_TEXTS = (
    " ".join(TRAIN_TEXTS[:6]),
    "Mixed: the cat 猫 кошка قطة बिल्ली 🐈 chat",
)


@dataclass(frozen=True)
class Variant:
    """One column: CLI arguments after the model folder ({calib}, {corpus}, {cache} filled in), the runtime
    the Encoder compares with (None: the artifact's own), and whether the command is `reduce` (its output
    folder is then exported in fp32 and compared with sentence-transformers on that folder)."""

    label: str
    args: tuple[str, ...] = ()
    runtime: str | None = None
    reduce: bool = False


REDUCE_TINY = ("--steps", "2", "--batch-size", "8", "--eval-every", "1", "--cache-dir", "{cache}")
VARIANTS: dict[str, Variant] = {
    "fp32": Variant("fp32"),
    "dynamic-int8": Variant("dynamic int8", ("--quantize", "dynamic")),
    "static-int8": Variant("static int8", ("--quantize", "static", "--calibration", "{calib}")),
    "openvino-fp32": Variant("OpenVINO fp32", ("--format", "openvino")),
    "openvino-static-int8": Variant(
        "OpenVINO static int8", ("--format", "openvino", "--quantize", "static", "--calibration", "{calib}")
    ),
    "strings-in-onnx": Variant("strings-in ONNX", ("--end-to-end",), runtime="onnxruntime-e2e"),
    "strings-in-openvino": Variant(
        "strings-in OpenVINO", ("--format", "openvino", "--end-to-end"), runtime="openvino-e2e"
    ),
    "reduce-layers": Variant(
        "reduce --layers 1", ("--layers", "1", "--corpus", "{corpus}", *REDUCE_TINY), reduce=True
    ),
    "reduce-dim": Variant(
        "reduce --dim 8", ("--dim", "8", "--corpus", "{corpus}", *REDUCE_TINY), reduce=True
    ),
}
ALL_FAMILIES: dict[str, Family] = {**FAMILIES, E5_REAL.name: E5_REAL}


# ----------------------------------------------------------------------------------------- one cell
@dataclass(frozen=True)
class Outcome:
    """What one CLI call did: its exit code, its stderr lines, the exception it raised (not SystemExit)."""

    exit_code: int
    stderr: tuple[str, ...]
    exception: BaseException | None = None


def run_cli(args: list[str]) -> Outcome:
    """`edgeembed ARGS` in this process, as a user's shell would run it (stderr kept apart)."""
    from click.testing import CliRunner

    from edgeembed.cli import main

    res = CliRunner().invoke(main, args, catch_exceptions=True)
    exc = None if res.exception is None or isinstance(res.exception, SystemExit) else res.exception
    return Outcome(res.exit_code, tuple(res.stderr.splitlines()), exc)


def classify(outcome: Outcome) -> dict[str, Any] | None:
    """None when the command succeeded; else the cell: refused (one `error:` line before any work
    marker) or failed (a traceback, several lines, or a refusal after work had started)."""
    if outcome.exception is not None:
        exc = outcome.exception
        first = (str(exc).strip().splitlines() or [""])[0]
        return {"status": "failed", "message": f"traceback: {type(exc).__name__}: {first}"}
    if outcome.exit_code == 0:
        return None
    errors = [i for i, line in enumerate(outcome.stderr) if line.startswith("error:")]
    if len(errors) != 1:
        tail = outcome.stderr[-1] if outcome.stderr else ""
        return {"status": "failed", "message": f"exit {outcome.exit_code}, not one error line: {tail}"}
    message = outcome.stderr[errors[0]].removeprefix("error:").strip()
    worked = any(line.startswith(WORK_MARKERS) for line in outcome.stderr[: errors[0]])
    if worked:
        return {"status": "failed", "message": f"refused after export work: {message}", "before_work": False}
    return {"status": "refused", "message": message, "before_work": True}


class References:
    """sentence-transformers' embeddings of a folder, per prompt; a folder's model is loaded once."""

    def __init__(self) -> None:
        self._models: dict[Path, Any] = {}

    def embed(self, folder: Path, prompt_name: str | None) -> Any:
        from sentence_transformers import SentenceTransformer

        if folder not in self._models:
            self._models[folder] = SentenceTransformer(str(folder), device="cpu")
        return self._models[folder].encode(
            eval_texts(), prompt_name=prompt_name, batch_size=8, convert_to_numpy=True
        )


def eval_texts() -> list[str]:
    return [*TEXTS, *EXTRA_TEXTS]


def min_cosine(a: Any, b: Any) -> float:
    import numpy as np

    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def compare(artifact: Path, folder: Path, family: Family, runtime: str | None, refs: References) -> float:
    """The artifact's minimum cosine to sentence-transformers over the texts, plain and with each prompt."""
    from edgeembed import Encoder

    enc = Encoder.load(artifact, runtime=runtime)
    worst = 1.0
    for name in (None, *family.prompts):
        got = enc.encode(eval_texts(), prompt_name=name)
        ref = refs.embed(folder, name)
        if got.shape != ref.shape:
            raise ValueError(f"shape {got.shape} vs sentence-transformers' {ref.shape}")
        worst = min(worst, min_cosine(got, ref))
    return worst


def run_cell(family: Family, folder: Path, name: str, work: Path, inputs: dict[str, str], refs: References):
    """One family x variant: the CLI as a user runs it, then the comparison. Never raises."""
    variant = VARIANTS[name]
    args = [a.format(**inputs) for a in variant.args]
    out = work / name
    started = time.perf_counter()
    cell: dict[str, Any] = {"family": family.name, "variant": name}
    try:
        source, reference = folder, folder
        if variant.reduce:
            reduced = out / "model"
            bad = classify(run_cli(["reduce", str(folder), "--out", str(reduced), *args]))
            if bad is not None:
                return {**cell, **bad, "seconds": round(time.perf_counter() - started, 1)}
            source, reference, args = reduced, reduced, []
        art = out / "artifact"
        bad = classify(run_cli(["export", str(source), "--out", str(art), *args]))
        if bad is not None:
            return {**cell, **bad, "seconds": round(time.perf_counter() - started, 1)}
        from edgeembed.artifact import read_manifest

        if name == "fp32":  # the fusion notes under the table
            fusion = read_manifest(art).optimization or {}
            cell["fusion"] = {k: fusion.get(k) for k in ("applied", "engine", "reason")}
        cos = compare(art, reference, family, variant.runtime, refs)
        cell.update(min_cosine=round(cos, 6), status="pass" if cos >= MIN_COSINE else "below")
    except Exception as exc:  # the comparison itself failed: a FAILED cell, never a dropped one
        first = (str(exc).strip().splitlines() or [""])[0]
        cell.update(status="failed", message=f"traceback: {type(exc).__name__}: {first}")
    finally:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    cell["seconds"] = round(time.perf_counter() - started, 1)
    return cell


def write_inputs(work: Path) -> dict[str, str]:
    """Calibration texts (not the evaluation texts) and a reduce corpus of 700 lines (reduce keeps 512 out
    of training): the training lines of the tiny tokenizers plus corpus sentences."""
    corpus_lines = []
    if CORPUS.is_file():
        with CORPUS.open(encoding="utf-8") as f:
            corpus_lines = [next(f).strip() for _ in range(800)]
    calib = work / "calibration.txt"
    calib.write_text("\n".join([*TRAIN_TEXTS, *corpus_lines[:100]]) + "\n", encoding="utf-8")
    corpus = work / "corpus.txt"
    lines = [*TRAIN_TEXTS, *corpus_lines[100:]]
    while len(lines) < 700:  # no shared corpus here: repeat the training lines
        lines += TRAIN_TEXTS
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (work / "cache").mkdir(exist_ok=True)
    return {"calib": str(calib), "corpus": str(corpus), "cache": str(work / "cache")}


def run_family(name: str, variants: list[str], work: Path, inputs: dict[str, str], log: Path | None = None):
    """Every asked variant of one family, in this process; each cell is appended to `log` (a JSON line
    announcing it first, so a parent can tell which cell a crash hit) and returned."""
    from family_models import build_family

    family = ALL_FAMILIES[name]
    folder = build_family(family, work / name / "model")
    refs = References()
    commit = git_commit()  # per cell: a --merge run replaces some cells of an earlier table
    cells = []
    for v in variants:
        if log is not None:
            _append(log, {"family": name, "variant": v, "started": True})
        cell = {**run_cell(family, folder, v, work / name, inputs, refs), "commit": commit}
        cells.append(cell)
        if log is not None:
            _append(log, cell)
        print(f"{name:26} {v:22} {_cell_text(cell)} ({cell['seconds']} s)", flush=True)
    return cells


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


# ------------------------------------------------------------------------------ workers (one per family)
def collect(
    name: str,
    variants: list[str],
    work: Path,
    inputs: dict[str, str],
    timeout: float,
    worker: list[str] | None = None,
) -> list[dict]:
    """Run a family's cells in worker processes (`worker`: the command, default this script): a cell that
    kills its worker (or runs past `timeout` seconds) is FAILED with that reason, and a fresh worker takes
    the cells after it."""
    log = work / f"{name}.jsonl"
    done: dict[str, dict] = {}
    todo = list(variants)
    while todo:
        log.unlink(missing_ok=True)
        cmd = [
            *(worker or [sys.executable, str(Path(__file__).resolve())]),
            "--worker",
            name,
            "--work",
            str(work),
        ]
        cmd += [f"--variant={v}" for v in todo]
        cmd += ["--inputs", json.dumps(inputs)]
        try:
            proc = subprocess.run(cmd, timeout=timeout, stderr=subprocess.PIPE, text=True)
            why = None if proc.returncode == 0 else _death(proc.returncode, proc.stderr)
        except subprocess.TimeoutExpired:
            why = f"timed out after {timeout:.0f} s"
        started = None
        for rec in _read_log(log):
            if rec.get("started"):
                started = rec["variant"]
            else:
                done[rec["variant"]] = rec
                started = None
        if why is None and not any(v in done for v in todo):
            why = "the worker ended without a result"
        if why is not None:
            victim = started or next((v for v in todo if v not in done), None)
            if victim is not None and victim not in done:
                done[victim] = {"family": name, "variant": victim, "status": "failed", "message": why}
        todo = [v for v in todo if v not in done]
    return [done[v] for v in variants]


def _death(code: int, stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    how = f"signal {-code}" if code < 0 else f"exit {code}"
    return f"worker process died ({how}): {lines[-1] if lines else 'no message'}"


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut short by the crash
            pass
    return out


# ------------------------------------------------------------------------------------------ the table
def _cell_text(cell: dict[str, Any], note: int | None = None) -> str:
    ref = f" [{note}]" if note is not None else ""
    status = cell["status"]
    if status == "pass":
        return f"{cell['min_cosine']:.5f}"
    if status == "below":
        return f"**{cell['min_cosine']:.5f}** (< {MIN_COSINE})"
    if status == "refused":
        return f"refused{ref}"
    return f"**FAILED**{ref}"


def summary(cells: list[dict[str, Any]]) -> dict[str, int]:
    out = {"pass": 0, "below": 0, "refused": 0, "failed": 0}
    for c in cells:
        out[c["status"]] += 1
    return out


def fusion_notes(cells: list[dict[str, Any]]) -> list[str]:
    """Per family: whether the fp32 cell's graph was fused, and where not, the registry's reason."""
    from edgeembed.arch import REGISTRY

    lines = []
    for c in cells:
        if c["variant"] != "fp32" or c["family"] == E5_REAL.name:
            continue
        arch = REGISTRY[ALL_FAMILIES[c["family"]].model_type]
        fusion = c.get("fusion")
        note = f" ({arch.fusion_note})" if arch.fusion_note else ""
        if fusion is None:
            lines.append(f"- {c['family']}: not known (the fp32 cell did not pass)")
        elif fusion.get("applied"):
            engine = {"ort": "ONNX Runtime's optimizer", "onnxscript": "onnxscript's rewriter"}
            lines.append(
                f"- {c['family']}: fused by {engine.get(fusion.get('engine'), fusion.get('engine'))}{note}"
            )
        else:
            lines.append(f"- {c['family']}: plain graph: {fusion.get('reason') or arch.fusion_note}")
    return lines


def render(results: dict[str, Any]) -> str:
    """The generated block (between START and END) of COVERAGE.md and README.md."""
    cells = results["cells"]
    variants = results["variants"]
    counts = summary(cells)
    runs = results.get("runs", [_run_note(results)])
    made = "; ".join(
        f"{r['cells']} cells at commit {r['commit']}, {r['created']}, {r['seconds'] / 60:.1f} min, "
        f"load average {r['load_average']}"
        for r in runs
    )
    lines = [
        START,
        f"Generated by `python bench/coverage.py` ({made}). "
        f"{len(cells)} cells: {counts['pass']} pass (min cosine >= {MIN_COSINE} vs sentence-transformers), "
        f"{counts['below']} below it, {counts['refused']} refused up front, {counts['failed']} FAILED.",
        "",
        "| family (model_type, pooling) | " + " | ".join(VARIANTS[v].label for v in variants) + " |",
        "|---|" + "---:|" * len(variants),
    ]
    notes: list[str] = []
    by_family: dict[str, dict[str, dict]] = {}
    for c in cells:
        by_family.setdefault(c["family"], {})[c["variant"]] = c
    for fam, row in by_family.items():
        family = ALL_FAMILIES[fam]
        extras = (
            [family.pooling] + (["prompts"] if family.prompts else []) + (["Dense"] if family.dense else [])
        )
        texts = []
        for v in variants:
            c = row.get(v, {"status": "failed", "message": "not run"})
            note = None
            if c["status"] in ("refused", "failed"):
                notes.append(f"{fam}, {VARIANTS[v].label}: {c['message']}")
                note = len(notes)
            texts.append(_cell_text(c, note))
        lines.append(f"| {fam} ({family.model_type}, {', '.join(extras)}) | " + " | ".join(texts) + " |")
    lines += ["", *(f"[{i}] {n}" + "  " for i, n in enumerate(notes, 1))] if notes else []
    fusion = fusion_notes(cells)
    if fusion:
        lines += ["", "Fusion (the fp32 cell's graph):", "", *fusion]
    lines.append(END)
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str) -> str:
    """`text` with its generated block replaced by `block` (appended when it has none)."""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        return head + block + rest.split(END, 1)[1].lstrip("\n")
    return text.rstrip("\n") + "\n\n" + block


COVERAGE_INTRO = """# Coverage: every family x every way of running it

Tiny random models of each family (tests/family_models.py: hidden size 32, 2 layers, the family's real
tokenizer format trained with `tokenizers`, its usual pooling, prompts and Dense; xlm-roberta-e5-tokenizer
is a tiny XLM-R with the real multilingual-e5-small tokenizer), each run through the `edgeembed` CLI and
compared with sentence-transformers on the folder it came from: minimum cosine over varied multilingual
texts (tests/family_models.py TEXTS plus a long and a mixed-script text), plain and with each prompt.
`reduce` cells distil (2 steps: the student is a new model, so the check is its export vs
sentence-transformers on the reduced folder) and then export it in fp32. Random weights make the int8
cells harder than real models (no outlier structure for calibration to learn, tiny width), so they are a
floor. Regenerate with `python bench/coverage.py` (about 15 minutes on 2 cores).

"""


def merge(earlier: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The earlier full table with the new run's cells in place of the same family x variant; the run
    notes keep both runs (when, how long, the load)."""
    fresh = {(c["family"], c["variant"]): c for c in new["cells"]}
    cells = [fresh.pop((c["family"], c["variant"]), c) for c in earlier["cells"]]
    runs = [*earlier.get("runs", [_run_note(earlier)]), _run_note(new)]
    return {**earlier, "cells": cells + list(fresh.values()), "runs": runs}


def _run_note(results: dict[str, Any]) -> dict[str, Any]:
    keys = ("commit", "created", "load_average", "seconds")
    return {**{k: results[k] for k in keys}, "cells": len(results["cells"])}


def write_outputs(results: dict[str, Any], out_dir: Path, readme: Path | None) -> None:
    (out_dir / "coverage.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    block = render(results)
    md = out_dir / "COVERAGE.md"
    md.write_text(replace_block(md.read_text() if md.is_file() else COVERAGE_INTRO, block), encoding="utf-8")
    if readme is not None:
        readme.write_text(replace_block(readme.read_text(encoding="utf-8"), block), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", action="append", choices=list(ALL_FAMILIES), help="default: all")
    ap.add_argument("--variant", action="append", choices=list(VARIANTS), help="default: all")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds a family's worker may run")
    ap.add_argument("--dry-run", action="store_true", help="print the table, write no file")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="replace only these cells in bench/coverage.json and write the outputs (each cell keeps its commit)",
    )
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--inputs", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    variants = a.variant or list(VARIANTS)
    if a.worker is not None:  # one family's cells in this process, for the parent
        run_family(a.worker, variants, a.work, json.loads(a.inputs), a.work / f"{a.worker}.jsonl")
        return 0
    families = a.family or list(ALL_FAMILIES)
    write = ((a.family is None and a.variant is None) or a.merge) and not a.dry_run
    started = time.perf_counter()
    load = f"{os.getloadavg()[0]:.1f}"
    with tempfile.TemporaryDirectory(prefix="coverage-") as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        inputs = write_inputs(work)
        cells = [c for f in families for c in collect(f, variants, work, inputs, a.timeout)]
    results = {
        "commit": git_commit(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average": f"{load} at start, {os.getloadavg()[0]:.1f} at end",
        "seconds": round(time.perf_counter() - started),
        "variants": variants,
        "cells": cells,
    }
    if a.merge:
        results = merge(json.loads((HERE / "coverage.json").read_text(encoding="utf-8")), results)
    if write:
        write_outputs(results, HERE, REPO / "README.md")
    print(render(results))
    return 0 if all(c["status"] in ("pass", "refused") for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
