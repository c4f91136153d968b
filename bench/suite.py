"""edgeembed vs sentence-transformers on the same CPU, through the same measurement worker.

Run through bench/run_suite.sh (it builds the peer's venv). Steps: write the calibration folder
(STS-b train sentences), export the peer's variants with sentence-transformers' own functions inside
the peer venv, export ours with edgeembed's sweep, measure all of them interleaved
(edgeembed.bench.run_bench), write bench/RESULTS.md (+ results.json, results.png).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repo's edgeembed, also when it is not pip-installed

from edgeembed.artifact import read_manifest  # noqa: E402
from edgeembed.bench import BenchConfig, Report, Variant, export_sweep, markdown_table, run_bench  # noqa: E402
from edgeembed.bench.harness import VariantFailure  # noqa: E402
from edgeembed.bench.report import machine_line, plot, versions_lines  # noqa: E402
from edgeembed.bench.sweep import SWEEP, SweepVariant  # noqa: E402
from edgeembed.errors import EdgeEmbedError  # noqa: E402
from edgeembed.source import default_model_path, load_source  # noqa: E402
from edgeembed.sts import load_sts  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import STS_DIR, git_commit  # noqa: E402
from roofline import roofline  # noqa: E402

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
SOURCE = "all-MiniLM-L6-v2"

# The peer's variants: name, sentence-transformers backend, file_name (None: the torch weights), extra
# model_kwargs. OpenVINO runs float ops in bf16 by default on this CPU; st-openvino-f32 asks for f32.
PEER = (
    ("st-torch", "torch", None, {}),
    ("st-onnx", "onnx", "onnx/model.onnx", {}),
    ("st-onnx-O3", "onnx", "onnx/model_O3.onnx", {}),
    ("st-onnx-qint8", "onnx", "onnx/model_qint8_avx512_vnni.onnx", {}),
    ("st-openvino", "openvino", "openvino/openvino_model.xml", {}),
    (
        "st-openvino-f32",
        "openvino",
        "openvino/openvino_model.xml",
        {"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}},
    ),
    ("st-openvino-qint8", "openvino", "openvino/openvino_model_qint8_quantized.xml", {}),
)
# Every onnx/openvino peer variant also runs with torch at 1 thread ("<name>-t1"): sentence-transformers
# keeps torch's thread pool even when ONNX Runtime / OpenVINO do the work, and on 2 cores the two pools
# compete. Ratios use the better of the two settings and say which.
PEER_BEST_TORCH_THREADS = 1
# Like for like: (ours, peer) built with the same technique.
PAIRS = (
    ("onnx-fp32", "st-torch"),
    ("onnx-fp32", "st-onnx"),
    ("onnx-fused", "st-onnx-O3"),
    ("onnx-int8-dynamic", "st-onnx-qint8"),
    ("onnx-fused-int8-dynamic", "st-onnx-qint8"),
    ("openvino-fp32", "st-openvino-f32"),
    ("openvino-bf16", "st-openvino"),
    ("openvino-int8", "st-openvino-qint8"),
    # The newest peer (sentence-transformers 6, optimum-intel 2: OpenVINO only).
    ("openvino-fp32", "st6-openvino-f32"),
    ("openvino-bf16", "st6-openvino"),
    ("openvino-int8", "st6-openvino-qint8"),
)
# "Best" = the fastest variant that keeps at least this much of the fp32 STS-b Spearman (issue 13: 99.5).
BEST_MIN_RETAINED = 99.5
# Issue 2 targets for the Encoder (onnx fp32).
TARGET_COLD_S, TARGET_RSS_MB, TARGET_VS_ST_ONNX = 0.5, 200.0, 1.2
# Reduced models (`--reduced DIR`, outputs of `edgeembed reduce`): each exported fresh with the settings of
# these variants of the full model (a static model: its own artifact), compared with the same variant of
# the full model and with the peer; quality is relative to the original (st-torch), like ours.
REDUCED_FROM_SWEEP = ("onnx-fp32", "onnx-fused-int8-dynamic", "openvino-int8")
# ...except that dynamic int8 is what `export --quantize dynamic` gives a user (activation scales "auto":
# per-row where per-tensor ones move a student's embeddings past the gate's preferred floor).
REDUCED_OVERRIDES = {"onnx-fused-int8-dynamic": {"quantize": "dynamic"}}
REDUCED_MARK = "reduced:"  # in a reduced variant's description, so a re-render still finds them
# Issue 10 targets: a reduced int8 (L3) vs the full model's int8 in the same run, and vs the best peer.
TARGET_REDUCED_VS_FULL_INT8, TARGET_REDUCED_VS_BEST_PEER = 1.8, 3.0


def write_calibration(train: Path, folder: Path) -> Path:
    """A local dataset folder for `datasets.load_dataset(folder, "default", split="train")`."""
    sentences = load_sts(train).sentences
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "train.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence"])
        writer.writerows([s] for s in sentences)
    return folder


def reduced_sweep(folder: Path) -> tuple[SweepVariant, ...]:
    """The variants one reduced folder gets, named `<folder name>-<variant>`."""
    if load_source(folder).kind == "static":
        return (SweepVariant(f"{folder.name}-static"),)
    by_name = {v.name: v for v in SWEEP}
    return tuple(
        SweepVariant(
            f"{folder.name}-{name.removeprefix('onnx-')}",
            {**by_name[name].settings, **REDUCED_OVERRIDES.get(name, {})},
        )
        for name in REDUCED_FROM_SWEEP
    )


def lineage_line(lineage: dict | None) -> str:
    """What `edgeembed reduce` did, from the artifact's copy of reduce.json."""
    if not lineage:
        return "no reduce.json"
    plan, parts = lineage.get("plan") or {}, []
    kept = (lineage.get("layers") or {}).get("kept")
    if kept is not None:
        parts.append(f"layers {kept} of {(lineage.get('teacher') or {}).get('layers', '?')}")
    if plan.get("static"):
        parts.append("static table")
    if plan.get("dim"):
        parts.append(f"PCA {plan['dim']}")
    return ", ".join(parts) or "reduce.json"


def export_reduced(
    folders: list[Path], out: Path, threads: int | None, on_step=print, calibration: str | None = None
) -> tuple[list[Variant], list[VariantFailure]]:
    """Export every reduced folder's variants into out/<folder name>; a folder that cannot be read is a
    failed variant (shown, and the suite exits non-zero), like any export failure."""
    names = [f.name for f in folders]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise SystemExit(f"--reduced folders must have distinct names; repeated: {', '.join(clash)}")
    variants: list[Variant] = []
    failures: list[VariantFailure] = []
    for folder in folders:
        try:
            sweep = reduced_sweep(folder)
        except EdgeEmbedError as exc:
            failures.append(VariantFailure(folder.name, "export", f"{type(exc).__name__}: {exc}"))
            on_step(f"{folder.name} FAILED: {exc}")
            continue
        paths, failed = export_sweep(
            folder,
            out / folder.name,
            calibration=calibration,
            variants=sweep,
            threads=threads,
            on_step=on_step,
        )
        failures += failed
        for path in paths:
            v = Variant.from_artifact(path)
            what = f"{v.description}, {REDUCED_MARK} {lineage_line(read_manifest(path).lineage)}"
            variants.append(dataclasses.replace(v, description=what, source=SOURCE, reference=False))
    return variants, failures


def peer_prefix(peer_python: str) -> str:
    """The variant-name prefix of a peer venv: "st" for sentence-transformers 5 (the names the earlier
    results use), "st<major>" for a later major version."""
    code = "import sentence_transformers as s; print(s.__version__)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    version = subprocess.run([peer_python, "-c", code], env=env, capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().split(".")[0])
    return "st" if major <= 5 else f"st{major}"


def export_peer(peer_python: str, source: Path, out: Path, calibration: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [peer_python, str(HERE / "peer_export.py"), str(source), str(out), str(calibration)]
    subprocess.run(cmd, env=env, check=True)


def peer_variants(peer_python: str, folder: Path, prefix: str = "st") -> list[Variant]:
    common = tuple(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file()
        and p.parent.name not in ("onnx", "openvino")
        and p.suffix not in (".safetensors", ".bin", ".onnx", ".xml")
    )
    out = []
    for name, backend, file_name, extra_kwargs in PEER:
        name = prefix + name.removeprefix("st")
        if file_name is None:
            weights: tuple[str, ...] = ("model.safetensors",)
        elif backend == "openvino":
            weights = (file_name, file_name[: -len(".xml")] + ".bin")
        else:
            weights = (file_name, file_name + "_data")
        if not (folder / weights[0]).is_file():
            continue
        base = Variant(
            name=name,
            path=folder,
            kind="sentence-transformers",
            description=f"sentence-transformers {backend}"
            + (f" {Path(file_name).name}" if file_name else ""),
            backend=backend,
            model_kwargs={**({"file_name": file_name} if file_name else {}), **extra_kwargs},
            python=peer_python,
            peer=True,
            source=SOURCE,
            reference=name == "st-torch",  # the original: sentence-transformers 5's torch model
            files=common + weights,
        )
        out.append(base)
        if backend != "torch":
            out.append(
                dataclasses.replace(
                    base,
                    name=f"{name}-t1",
                    description=base.description + f", torch threads {PEER_BEST_TORCH_THREADS}",
                    torch_threads=PEER_BEST_TORCH_THREADS,
                    reference=False,
                )
            )
    return out


def peer_at_best(report: Report, peer: str):
    """The faster of a peer variant as shipped and with torch at 1 thread."""
    names = {r.name for r in report.results}
    pool = [report.result(n) for n in (peer, f"{peer}-t1") if n in names]
    return max(pool, key=lambda r: r.throughput) if pool else None


def _fmt_ratio(x: float) -> str:
    return f"{x:.2f}x"


def ratios_section(report: Report) -> list[str]:
    names = {r.name for r in report.results}
    lines = [
        "## Ours vs sentence-transformers, like for like",
        "",
        "ours / peer; throughput: higher is better; latency, cold start, RSS, size: lower is better.",
        "",
        "The peer at its best: each peer row is the faster of sentence-transformers as shipped (torch at "
        "the bench's threads) and with torch at 1 thread (`-t1`); the column says which.",
        "",
        "| ours | peer (setting) | throughput | b1 p50 | cold start | peak RSS | size | STS-b retained (pts) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for ours, peer in PAIRS:
        b = peer_at_best(report, peer)
        if ours not in names or b is None:
            continue
        a = report.result(ours)
        d_ret = (a.sts_retained_pct or 0.0) - (b.sts_retained_pct or 0.0)
        lines.append(
            f"| {ours} | {b.name} | {_fmt_ratio(a.throughput / b.throughput)} | "
            f"{_fmt_ratio(a.latency_p50_ms / b.latency_p50_ms)} | {_fmt_ratio(a.cold_start_s / b.cold_start_s)} | "
            f"{_fmt_ratio(a.peak_rss_mb / b.peak_rss_mb)} | {_fmt_ratio(a.size_mb / b.size_mb)} | {d_ret:+.2f} |"
        )
    missing = [f"{o} vs {p}" for o, p in PAIRS if o not in names or peer_at_best(report, p) is None]
    if missing:
        lines += ["", "Not measured (variant not available yet): " + ", ".join(missing) + "."]

    def best(peer: bool):
        # The same model on both sides: reduced models have their own section.
        pool = [
            r
            for r in report.results
            if r.peer == peer
            and (r.sts_retained_pct or 0) >= BEST_MIN_RETAINED
            and REDUCED_MARK not in r.description
        ]
        return max(pool, key=lambda r: r.throughput) if pool else None

    a, b = best(False), best(True)
    lines += [
        "",
        f"## Best vs best, same model (fastest variant keeping >= {BEST_MIN_RETAINED}% of fp32 STS-b)",
        "",
    ]
    if a and b:
        lines.append(
            f"ours **{a.name}** {a.throughput:.0f} sent/s ({a.sts_retained_pct:.2f}%) vs peer **{b.name}** "
            f"{b.throughput:.0f} sent/s ({b.sts_retained_pct:.2f}%): **{a.throughput / b.throughput:.2f}x** "
            f"throughput, batch-1 p50 {a.latency_p50_ms:.2f} vs {b.latency_p50_ms:.2f} ms, cold start "
            f"{a.cold_start_s:.2f} vs {b.cold_start_s:.2f} s, peak RSS {a.peak_rss_mb:.0f} vs {b.peak_rss_mb:.0f} MB."
        )
        # The ceiling from this CPU's flags and clock and the model's MACs on the STS-b test sentences.
        roof = roofline(Path(default_model_path()), load_sts(STS_DIR / "sts-test.csv").sentences)
        lines += ["", roof.line(a.throughput) + f" (our best, {a.name}, {a.throughput:.0f} sent/s)."]
    else:
        lines.append("(not enough variants above the quality bar)")
    return lines


def reduced_section(report: Report) -> list[str]:
    """Each reduced variant vs the full model's same variant, the best peer, and sentence-transformers
    torch, in this run."""
    reduced = [r for r in report.results if REDUCED_MARK in r.description]
    if not reduced:
        return []
    names = {r.name for r in report.results}
    peers = [r for r in report.results if r.peer and (r.sts_retained_pct or 0) >= BEST_MIN_RETAINED]
    best_peer = max(peers, key=lambda r: r.throughput) if peers else None
    torch = peer_at_best(report, "st-torch")

    def ratio(a, b) -> str:
        return _fmt_ratio(a.throughput / b.throughput) if b is not None else "–"

    lines = [
        "## Reduced models (`edgeembed reduce`, `--reduced`)",
        "",
        "Each reduced folder exported fresh in this run; STS-b retained is relative to the original model "
        "(st-torch). Full model = our variant of all-MiniLM-L6-v2 made the same way; best peer = "
        f"{best_peer.name if best_peer else '–'} (the fastest keeping >= {BEST_MIN_RETAINED}%).",
        "",
        "| reduced variant | what | sent/s | x full model (same variant) | x best peer | x st-torch | size MB "
        "| STS-b x100 | retained % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reduced:
        suffix = next((s for s in REDUCED_FROM_SWEEP if r.name.endswith(s.removeprefix("onnx-"))), None)
        full = report.result(suffix) if suffix in names else None
        retained = "–" if r.sts_retained_pct is None else f"{r.sts_retained_pct:.2f}"
        lines.append(
            f"| {r.name} | {r.description} | {r.throughput:.0f} | "
            f"{ratio(r, full) + (f' ({full.name})' if full else '')} | {ratio(r, best_peer)} | "
            f"{ratio(r, torch)} | {r.size_mb:.1f} | {r.sts_spearman:.2f} | {retained} |"
        )
    lines += [
        "",
        f"Issue 10 targets: L3 int8 >= {TARGET_REDUCED_VS_FULL_INT8}x the full model's int8 and >= "
        f"{TARGET_REDUCED_VS_BEST_PEER}x the best peer; static >= 100x st-torch.",
        "",
    ]
    return lines


def _split(r) -> str:
    parts = (r.cold_start_interpreter_s, r.cold_start_load_s, r.cold_start_first_call_s)
    return "–" if any(x != x for x in parts) else " / ".join(f"{x:.2f}" for x in parts)


def issue2_section(report: Report) -> list[str]:
    names = {r.name for r in report.results}
    if not {"onnx-fp32", "st-onnx", "st-torch"} <= names:
        return []
    e, o, t = report.result("onnx-fp32"), report.result("st-onnx"), report.result("st-torch")

    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    ratio = e.throughput / o.throughput
    return [
        "## Foundation targets (issue 2): Encoder onnx fp32, a runtime-only process",
        "",
        "| | Encoder onnx fp32 | ST torch | ST backend=onnx | target |",
        "|---|---:|---:|---:|---|",
        f"| sent/s, batch {report.config.batch_size} | {e.throughput:.0f} | {t.throughput:.0f} | {o.throughput:.0f} "
        f"| >= {TARGET_VS_ST_ONNX}x ST onnx: {ratio:.2f}x, {mark(ratio >= TARGET_VS_ST_ONNX)} |",
        f"| batch-1 p50 ms | {e.latency_p50_ms:.2f} | {t.latency_p50_ms:.2f} | {o.latency_p50_ms:.2f} | |",
        f"| cold start s | {e.cold_start_s:.2f} | {t.cold_start_s:.2f} | {o.cold_start_s:.2f} "
        f"| <= {TARGET_COLD_S} s: {mark(e.cold_start_s <= TARGET_COLD_S)} |",
        f"| peak RSS MB (whole run) | {e.peak_rss_mb:.0f} | {t.peak_rss_mb:.0f} | {o.peak_rss_mb:.0f} "
        f"| <= {TARGET_RSS_MB:.0f} MB: {mark(e.peak_rss_mb <= TARGET_RSS_MB)} |",
        f"| cold start: interpreter + numpy / imports + load / first call s | {_split(e)} | {_split(t)} "
        f"| {_split(o)} | |",
        f"| RSS at first embedding MB | {e.rss_at_first_embedding_mb:.0f} | {t.rss_at_first_embedding_mb:.0f} "
        f"| {o.rss_at_first_embedding_mb:.0f} | |",
        f"| torch imported | {'yes' if e.torch_loaded else 'no'} | {'yes' if t.torch_loaded else 'no'} "
        f"| {'yes' if o.torch_loaded else 'no'} | no |",
        "",
    ]


def results_md(report: Report, command: str) -> str:
    parts = [
        "# Benchmark: edgeembed vs sentence-transformers",
        "",
        f"Produced by `{command}`. Every variant runs in fresh worker processes (`edgeembed/bench/worker.py`, "
        "the same code for ours and the peer's), runs interleaved, medians reported. Numbers measured on a "
        "shared machine are **indicative**; compare ratios within one run rather than absolute values.",
        "",
        machine_line(report),
        "",
        f"Commit measured: `{report.machine.get('commit', 'unknown')}` (fresh exports of that code).",
        "",
        "Reading the table: throughput on the 2552 unique STS-b test sentences (batch 32, length-sorted "
        "batches in both libraries); batch-1 latency p50/p95 on 200 of them; cold start from process "
        "spawn to the first embedding (interpreter, imports, model load, first call); peak RSS is the "
        "worker's own high-water mark (VmHWM) over the whole run; size counts the files the variant "
        "loads; STS-b Spearman x100 of cosine vs gold; retained and cosine are relative to sentence-"
        "transformers' torch fp32 model (the original).",
        "",
        markdown_table(report),
        "",
        "![speed vs quality](results.png)",
        "",
        *issue2_section(report),
        *ratios_section(report),
        "",
        *reduced_section(report),
    ]
    if report.notes:
        parts += ["Notes:", *[f"- {n}" for n in report.notes], ""]
    parts += ["Versions:", *versions_lines(report), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--peer-python",
        required=True,
        action="append",
        help="python of a peer venv (sentence-transformers 5.7; repeat for 6.3): each is exported and measured",
    )
    ap.add_argument("--sts", type=Path, default=STS_DIR / "sts-test.csv")
    ap.add_argument("--calibration", type=Path, default=STS_DIR / "sts-train.csv")
    ap.add_argument(
        "--recall-corpus",
        default=str(STS_DIR.parent / "corpus" / "sentences.txt"),
        help="corpus whose lines 50,001-100,000 the recall@10 column searches (issue 23's yardstick); "
        "'none' leaves the column out",
    )
    ap.add_argument(
        "--recall-docs", type=int, default=None, help="a seeded sample of that many of those lines"
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", type=Path, default=HERE, help="where RESULTS.md, results.json/png go")
    ap.add_argument("--render", type=Path, help="only re-render RESULTS.md and the plot from a results.json")
    ap.add_argument(
        "--reduced",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="an `edgeembed reduce` output folder to add (repeatable): exported fresh in fp32 and fused "
        "dynamic int8 (a static model: its own artifact) and measured with the others",
    )
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="GLOB",
        help="measure only the variants whose name matches (repeatable; e.g. a smoke run: --only 'openvino-int8' "
        "--only 'st*-openvino*'); the peers still export all their variants",
    )
    args = ap.parse_args(argv)
    # Absolute (not resolved: a venv's python is a symlink to the base interpreter): workers run elsewhere.
    args.peer_python = [os.path.abspath(p) for p in args.peer_python]
    if args.render:
        report = Report.from_dict(json.loads(args.render.read_text(encoding="utf-8")))
        write_results(report, args.out, f"{report.machine.get('command', 'bench/run_suite.sh')}")
        return

    sts = load_sts(args.sts)
    commit = git_commit()
    # Published numbers come from fresh exports of this code: nothing is reused from an earlier run.
    peers = [(python, peer_prefix(python)) for python in args.peer_python]
    peer_dirs = {
        prefix: WORK / ("peer-model" if prefix == "st" else f"peer-model-{prefix}") for _, prefix in peers
    }
    ours_dir = WORK / "ours"
    for d in (*peer_dirs.values(), ours_dir, WORK / "reduced"):
        if d.exists():
            shutil.rmtree(d)
    calib = write_calibration(args.calibration, WORK / "calibration")
    for python, prefix in peers:
        export_peer(python, default_model_path(), peer_dirs[prefix], calib)
    ours_paths, failures = export_sweep(
        None,
        ours_dir,
        calibration=str(args.calibration),
        variants=tuple(v for v in SWEEP if selected(v.name, args.only)),
        threads=args.threads,
        on_step=print,
    )
    ours = [dataclasses.replace(Variant.from_artifact(p), source=SOURCE, reference=False) for p in ours_paths]
    reduced, reduced_failures = export_reduced(
        args.reduced, WORK / "reduced", args.threads, calibration=str(args.calibration)
    )
    failures = [*failures, *reduced_failures]
    variants = [*ours, *reduced]
    for python, prefix in peers:
        variants += [
            v for v in peer_variants(python, peer_dirs[prefix], prefix) if selected(v.name, args.only)
        ]
    recall_corpus = None if args.recall_corpus == "none" else args.recall_corpus
    if recall_corpus is not None and not Path(recall_corpus).is_file():
        sys.exit(f"--recall-corpus {recall_corpus}: no such file (or 'none' to leave the column out)")
    config = BenchConfig(
        batch_size=args.batch_size,
        threads=args.threads,
        runs=args.runs,
        recall_corpus=recall_corpus,
        recall_docs=args.recall_docs,
    )

    def progress(done: int, total: int, label: str) -> None:
        print(f"[{done}/{total}] {label}", flush=True)

    report = run_bench(variants, sts, config, progress=progress, failures=failures)
    command = user_command(args.peer_python, sys.argv[1:] if argv is None else argv)
    report = dataclasses.replace(
        report, machine={**report.machine, "command": command.strip(), "commit": commit}
    )
    write_results(report, args.out, command.strip())
    if report.failed:
        sys.exit(f"{len(report.failed)} variant(s) failed: " + ", ".join(f.name for f in report.failed))


def selected(name: str, patterns: list[str]) -> bool:
    """Whether a variant is measured: every one without --only, else those matching a pattern."""
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def user_command(peer_pythons: list[str], argv: list[str]) -> str:
    """The run_suite.sh command line that produced this run (it passes --peer-python itself, once per
    peer venv: sentence-transformers 5 first, then the newest)."""
    rest, skip = [], False
    for a in argv:
        if skip or a == "--peer-python":
            skip = not skip
            continue
        rest.append(a)
    peer = []
    for python, flag, default in zip(
        peer_pythons, ("--peer-venv", "--peer6-venv"), (WORK / "peer-venv", WORK / "peer6-venv")
    ):
        venv = Path(python).parents[1]
        if venv.resolve() != default.resolve():
            peer += [flag, str(venv)]
    prefix = "PEER6=0 " if len(peer_pythons) < 2 else ""
    return prefix + " ".join(["bench/run_suite.sh", *peer, *rest])


def write_results(report: Report, out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    plot(report, out / "results.png")
    (out / "RESULTS.md").write_text(results_md(report, command), encoding="utf-8")
    print(markdown_table(report))
    print(f"wrote {out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
