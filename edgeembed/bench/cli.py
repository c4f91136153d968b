"""The body of `edgeembed bench`: kept here so that edgeembed/cli.py stays a thin layer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from edgeembed.errors import EdgeEmbedError


def _progress_bar():
    """A rich progress bar on stderr, driven by run_bench's progress(done, total, label) callback."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    task = bar.add_task("bench", total=None)

    def update(done: int, total: int, label: str) -> None:
        bar.update(task, completed=done, total=total, description=label)

    return bar, update


def _names(paths: Sequence[Path]) -> list[str]:
    """Folder names, or parent/name where two folders share a name (names must be unique)."""
    names = [Path(p).name for p in paths]
    return [
        f"{Path(p).absolute().parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)
    ]


@dataclass(frozen=True)
class BenchCommand:
    """What `edgeembed bench` was asked: artifact folders (or, with `sweep`, at most one model to export
    every variant of), the STS file, the measurement settings, and where the report goes."""

    artifacts: tuple[Path, ...]
    sts_path: Path
    batch_size: int = 32
    threads: int | None = None
    runs: int = 3
    out: Path | None = None
    sweep: bool = False
    calibration: str | None = None
    recall_corpus: str | None = None
    recall_docs: int | None = None
    recall_reference: str | None = None


def check_report_folder(out: Path) -> None:
    """Fail before any measurement when the report cannot be written: `out` must be a folder, or not
    exist yet below a folder we may write into (it is created only when the report is written)."""
    out = Path(out).expanduser()
    if (out.is_symlink() or out.exists()) and not out.is_dir():
        raise EdgeEmbedError(f"--out {out} exists and is not a folder (the report is a folder of files)")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise EdgeEmbedError(f"--out {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EdgeEmbedError(f"--out {out}: cannot write into {existing} (permission denied)")


def run_bench_command(cmd: BenchCommand) -> None:
    from edgeembed.bench import BenchConfig, Variant, export_sweep, markdown_table, run_bench, write_report
    from edgeembed.bench.machine import physical_cores
    from edgeembed.sts import load_sts

    if cmd.out is not None:
        check_report_folder(cmd.out)
    sts = load_sts(cmd.sts_path)  # fail on a bad STS file before any export or measurement
    config = BenchConfig(
        batch_size=cmd.batch_size,
        threads=cmd.threads or physical_cores() or 1,
        runs=cmd.runs,
        recall_corpus=cmd.recall_corpus,
        recall_docs=cmd.recall_docs,
        recall_reference=cmd.recall_reference,
    )
    failures: list = []
    if cmd.sweep:
        if len(cmd.artifacts) > 1:
            raise EdgeEmbedError("--sweep takes at most one MODEL argument (a Sentence-Transformers folder)")
        if cmd.out is None:
            raise EdgeEmbedError("--sweep needs --out (the exported artifacts go to OUT/artifacts)")
        model = str(cmd.artifacts[0]) if cmd.artifacts else None
        paths, failures = export_sweep(
            model,
            cmd.out / "artifacts",
            calibration=cmd.calibration,
            overwrite=True,
            threads=config.threads,
            on_step=lambda msg: click.echo(f"· {msg}", err=True),
        )
        if not paths:
            raise EdgeEmbedError(
                "the sweep exported no variant: "
                + "; ".join(f"{f.name} {f.stage}: {f.error}" for f in failures)
            )
    else:
        if not cmd.artifacts:
            raise EdgeEmbedError("give at least one ARTIFACT folder (or --sweep [MODEL])")
        if cmd.calibration is not None:
            raise EdgeEmbedError("--calibration is only used with --sweep")
        paths = list(cmd.artifacts)
    variants = [Variant.from_artifact(p, name) for p, name in zip(paths, _names(paths))]
    bar, update = _progress_bar()
    with bar:
        report = run_bench(variants, sts, config, progress=update, failures=failures)
    click.echo(markdown_table(report))
    for note in report.notes:
        click.echo(f"note: {note}")
    if cmd.out is not None:
        written = write_report(report, cmd.out)
        click.echo(f"wrote {', '.join(str(p) for p in written.values())}", err=True)
    if report.failed:
        names = ", ".join(f"{f.name} ({f.stage})" for f in report.failed)
        raise EdgeEmbedError(
            f"{len(report.failed)} variant(s) failed: {names}; see the report for the errors"
        )
