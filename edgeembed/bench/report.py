"""Write a Report as Markdown, JSON, CSV and a speed-vs-quality plot (matplotlib, no pyplot state)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from edgeembed.bench.harness import Report, VariantResult

COLUMNS = (
    ("variant", "Variant"),
    ("what", "What"),
    ("throughput", "sent/s (median, min–max)"),
    ("p50", "b1 p50 ms"),
    ("p95", "b1 p95 ms"),
    ("cold", "cold start s"),
    ("rss", "peak RSS MB"),
    ("size", "size MB"),
    ("sts", "STS-b x100"),
    ("retained", "retained %"),
    ("cos", "cos mean / min"),
    ("recall", "recall@10"),
)


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def _row(r: VariantResult) -> dict[str, str]:
    who = " (peer)" if r.peer else ""
    cos = (
        "–"
        if r.cosine_to_reference_mean is None
        else f"{r.cosine_to_reference_mean:.4f} / {r.cosine_to_reference_min:.4f}"
    )
    return {
        "variant": r.name + who,
        "what": r.description or r.kind,
        "throughput": f"{r.throughput:.0f} ({r.throughput_min:.0f}–{r.throughput_max:.0f})",
        "p50": f"{r.latency_p50_ms:.2f}",
        "p95": f"{r.latency_p95_ms:.2f}",
        "cold": f"{r.cold_start_s:.2f}",
        "rss": f"{r.peak_rss_mb:.0f}",
        "size": f"{r.size_mb:.1f}",
        "sts": f"{r.sts_spearman:.2f}",
        "retained": _fmt(r.sts_retained_pct, ".2f"),
        "cos": cos,
        "recall": _fmt(r.recall_at_10, ".3f"),
    }


def markdown_table(report: Report) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" if key in ("variant", "what") else "---:" for key, _ in COLUMNS) + "|"
    rows = ["| " + " | ".join(_row(r)[key] for key, _ in COLUMNS) + " |" for r in report.results]
    for f in report.failures:
        label = "FAILED at " + f.stage if f.failed else "not run"
        cells = [f.name, f"**{label}**: {f.error.replace('|', '/')}", *["–"] * (len(COLUMNS) - 2)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def machine_line(report: Report) -> str:
    m, c = report.machine, report.config
    return (
        f"{m['date']} · {m['cpu']} · {m['logical_cpus']} logical CPUs · ISA: {', '.join(m['isa']) or '-'} · "
        f"{c.threads} threads · batch {c.batch_size} · {c.runs} runs, interleaved, median · "
        f"batch-1 latency on {min(c.latency_sentences, report.sts['unique_sentences'])} sentences"
        + (
            f" · load average {m['load_average_start']} at start, {m['load_average_end']} at end"
            if m.get("load_average_start") is not None
            else ""
        )
    )


def versions_lines(report: Report) -> list[str]:
    """Library versions the workers loaded: one line for ours, one per peer environment (a suite may
    run two sentence-transformers versions, each in its own venv; merged, one would hide the other)."""
    sides: dict[str, dict[str, str]] = {}
    for r in report.results:
        who = "edgeembed"
        if r.peer:
            st = r.versions.get("sentence-transformers")
            who = f"peer (sentence-transformers {st})" if st else "peer"
        sides.setdefault(who, {}).update(r.versions)
    return [f"- {who}: " + ", ".join(f"{k} {v}" for k, v in sorted(vs.items())) for who, vs in sides.items()]


def markdown(report: Report, image: str | None = "report.png") -> str:
    s = report.sts
    parts = [
        "# edgeembed bench",
        "",
        machine_line(report),
        "",
        f"STS: {s['path']} ({s['pairs']} pairs, {s['unique_sentences']} unique sentences). "
        "Throughput on all unique sentences at the batch size; cold start = process start to first "
        "embedding; peak RSS of the worker process; retained = STS Spearman vs the fp32 reference of the "
        "same source; cos = cosine of each embedding to the reference's"
        + (
            f"; recall@10 = share of the reference's exact top-10 found, {report.config.recall_queries} "
            f"STS sentences searching lines {report.config.recall_lines[0] + 1}-{report.config.recall_lines[1]} "
            f"of {report.config.recall_corpus}"
            + (f" ({report.config.recall_docs} of them)" if report.config.recall_docs else "")
            + (f", vs {report.config.recall_reference}" if report.config.recall_reference else "")
            + "."
            if report.config.recall_corpus
            else "."
        ),
        "",
        markdown_table(report),
        "",
    ]
    if image:
        parts += [f"![speed vs quality]({image})", ""]
    if report.notes:
        parts += ["Notes:", *[f"- {n}" for n in report.notes], ""]
    parts += ["Versions:", *versions_lines(report), ""]
    return "\n".join(parts)


def write_csv(report: Report, path: Path) -> None:
    rows = [asdict(r) for r in report.results]
    for row in rows:
        row["versions"] = json.dumps(row["versions"], sort_keys=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both axes (higher is better on both), by x."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best_y = [], float("-inf")
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def plot(report: Report, path: Path) -> None:
    """Speed (x) vs STS retained (y; raw Spearman if some variant has no reference), Pareto front drawn."""
    from matplotlib.figure import Figure

    results = report.results
    use_retained = all(r.sts_retained_pct is not None for r in results)
    ys = [(r.sts_retained_pct if use_retained else r.sts_spearman) or 0.0 for r in results]
    xs = [r.throughput for r in results]
    fig = Figure(figsize=(8, 5.5), dpi=120)
    ax = fig.add_subplot()
    for peer, colour, label in ((False, "tab:blue", "edgeembed"), (True, "tab:orange", "peer")):
        idx = [i for i, r in enumerate(results) if r.peer == peer]
        if idx:
            ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], c=colour, s=40, label=label, zorder=3)
    for k, i in enumerate(sorted(range(len(results)), key=lambda i: (xs[i], ys[i]))):
        # Alternate above/below so that neighbours with near-equal speed stay readable.
        ax.annotate(
            results[i].name,
            (xs[i], ys[i]),
            textcoords="offset points",
            xytext=(5, 5 if k % 2 else -11),
            fontsize=8,
        )
    front = pareto_front(list(zip(xs, ys)))
    fx, fy = [xs[i] for i in front], [ys[i] for i in front]
    ax.plot(fx, fy, "--", c="grey", lw=1, zorder=2)
    ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="grey", zorder=2, label="Pareto front")
    if max(xs) > 100 * max(min(xs), 1e-9):  # e.g. a static model beside transformers: log, or all but
        ax.set_xscale("log")  # one point pile up at zero
        ax.set_xlim(left=min(xs) / 1.5, right=max(xs) * 1.5)
    else:
        ax.set_xlim(left=0, right=max(xs) * 1.15)  # from zero: distances show true speed ratios
    ax.set_xlabel(
        f"throughput, sentences/s (batch {report.config.batch_size}, {report.config.threads} threads)"
    )
    ax.set_ylabel("STS-b Spearman retained vs fp32 (%)" if use_retained else "STS-b Spearman x100")
    ax.set_title(f"Speed vs quality · {report.machine['cpu']}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def write_report(report: Report, out: str | Path) -> dict[str, Path]:
    """report.json, report.csv, report.md, report.png in `out` (created if needed)."""
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"report.{ext}" for ext in ("json", "csv", "md", "png")}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    write_csv(report, paths["csv"])
    paths["md"].write_text(markdown(report, image=paths["png"].name), encoding="utf-8")
    plot(report, paths["png"])
    return paths
