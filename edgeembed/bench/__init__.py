"""Benchmark variants side by side: speed, latency, cold start, memory, size, STS quality.

Needs the `bench` extra (matplotlib, psutil, rich): checked once here, naming the extra.
The measurement worker (worker.py) itself needs only the stdlib and numpy, so it also runs in
environments without edgeembed (the peer's sentence-transformers venv).
"""

from __future__ import annotations

from edgeembed._imports import require

for _module in ("matplotlib", "psutil", "rich"):
    require(_module, "bench")

from edgeembed.bench.harness import (  # noqa: E402
    BenchConfig,
    BenchError,
    Report,
    Variant,
    VariantFailure,
    VariantResult,
    run_bench,
)
from edgeembed.bench.report import markdown, markdown_table, write_report  # noqa: E402
from edgeembed.bench.sweep import SWEEP, SweepVariant, export_sweep  # noqa: E402

__all__ = [
    "SWEEP",
    "BenchConfig",
    "BenchError",
    "Report",
    "SweepVariant",
    "Variant",
    "VariantFailure",
    "VariantResult",
    "export_sweep",
    "markdown",
    "markdown_table",
    "run_bench",
    "write_report",
]
