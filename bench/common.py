"""What the bench scripts share, written once: where this checkout and the STS benchmark are, the STS
sentences, exporting the artifacts a script measures (once, kept across runs), and the two timing loops
(median of passes; variants interleaved slice by slice). A script run as `python bench/x.py` has bench/
on sys.path, so `import common` finds this file; only the standard library is imported at the top, so a
peer venv without edgeembed's dependencies can import it too.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STS_DIR = REPO.parent / "shared" / "data" / "stsbenchmark"  # never copied into the repo
CORPUS = REPO.parent / "shared" / "data" / "corpus" / "sentences.txt"  # never copied into the repo
STS_TEST = STS_DIR / "sts-test.csv"


def use_repo() -> None:
    """This checkout's edgeembed first on sys.path, also when it is not pip-installed."""
    sys.path.insert(0, str(REPO))


def sts_sentences(path: Path = STS_TEST) -> list[str]:
    """The unique sentences of an STS file, in first-seen order."""
    from edgeembed.sts import load_sts

    return load_sts(path).sentences


def export_missing(work: Path, jobs: dict[str, dict[str, Any]], threads: int) -> None:
    """The default model exported once per job (edgeembed.export keyword arguments) to work/<name>; a
    folder that already holds an artifact is kept, so a re-run measures the same files."""
    from edgeembed.build import export

    for name, kwargs in jobs.items():
        if not (work / name / "edgeembed.json").is_file():
            export(None, work / name, threads=threads, on_step=lambda m: print("  ", m), **kwargs)


def median_rate(encode: Callable[[list[str]], Any], texts: list[str], passes: int = 3) -> float:
    """Texts per second: one warm-up call on 256 texts, then the median of `passes` passes."""
    encode(texts[:256])
    rates = []
    for _ in range(passes):
        t0 = time.perf_counter()
        encode(texts)
        rates.append(len(texts) / (time.perf_counter() - t0))
    return statistics.median(rates)


def interleaved_seconds(
    encode: dict[str, Callable[[list[str]], Any]], parts: Sequence[list[str]], rounds: int
) -> Iterator[dict[str, float]]:
    """Per round, each variant's seconds over all `parts`: slice by slice, every slice through every
    variant, in an order rotated per slice and round, so load from other processes hits all alike."""
    names = list(encode)
    for r in range(rounds):
        acc = dict.fromkeys(names, 0.0)
        for k, part in enumerate(parts):
            shift = (k + r) % len(names)
            for v in names[shift:] + names[:shift]:
                t = time.perf_counter()
                encode[v](part)
                acc[v] += time.perf_counter() - t
        yield acc


def git_commit() -> str:
    """The commit measured, with "+dirty" when the work tree has uncommitted changes to tracked files."""

    def git(*a: str) -> str:
        return subprocess.run(
            ["git", *a], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git(
            "status", "--porcelain", "--untracked-files=no", "--", "edgeembed", "bench", "pyproject.toml"
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
