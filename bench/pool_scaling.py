"""How the pool scales with cores (issue 20): one process at T threads vs P worker processes x T threads,
on one artifact and the STS-b test sentences, plus `edgeembed embed` on corpus lines both ways.

    python bench/pool_scaling.py --artifact /tmp/minilm-int8 --out bench/pool_scaling.json

Run it on the machine whose cores you want to model (bench/SERVE.md has the model and the numbers). Each
configuration runs `--repeats` times, interleaved with the others; the best run counts (the least
disturbed), every run is kept in the json with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgeembed.encoder import Encoder  # noqa: E402
from edgeembed.pool import EncoderPool  # noqa: E402
from edgeembed.sts import load_sts  # noqa: E402


def load() -> float:
    return round(os.getloadavg()[0], 2)


def splits(cores: int) -> list[tuple[int, int]]:
    """(workers, threads): one process at 1..cores threads (workers 0 = the Encoder in this process),
    then pools of single-thread workers up to one per core, and the mixed splits in between."""
    out = []
    t = 1
    while t <= cores:
        out.append((0, t))
        t *= 2
    p = 2
    while p <= cores:
        out.append((p, 1))
        p *= 2
    for p, t in ((cores // 2, 2), (cores // 4, 4)):
        if p >= 2:
            out.append((p, t))
    return out


def measure(artifact: str, texts: list[str], workers: int, threads: int) -> float:
    if workers == 0:
        enc = Encoder.load(artifact, threads=threads)
        enc.encode(texts[:256], batch_size=32)
        t = time.perf_counter()
        enc.encode(texts, batch_size=32)
        return len(texts) / (time.perf_counter() - t)
    with EncoderPool(artifact, workers=workers, threads=threads) as pool:
        pool.encode(texts[: 64 * workers], batch_size=32)
        t = time.perf_counter()
        pool.encode(texts, batch_size=32)
        return len(texts) / (time.perf_counter() - t)


def embed(artifact: str, corpus: Path, out: Path, workers: int, threads: int) -> float:
    cmd = [sys.executable, "-m", "edgeembed", "embed", artifact, str(corpus), "--out", str(out), "--overwrite",
           "--threads", str(threads), "--no-progress", "--workers", str(workers)]  # fmt: skip
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--sts", default=str(REPO.parent / "shared" / "data" / "stsbenchmark" / "sts-test.csv"))
    ap.add_argument("--corpus", help="a text file of corpus lines for the embed runs (skipped if absent)")
    ap.add_argument("--copies", type=int, default=4, help="texts = the STS-b test sentences this many times")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "pool_scaling.json"))
    args = ap.parse_args()
    data = load_sts(Path(args.sts))
    texts = (list(data.s1) + list(data.s2)) * args.copies
    cores = len(os.sched_getaffinity(0))
    report: dict = {"cores": cores, "texts": len(texts), "artifact": args.artifact, "runs": [], "embed": []}
    configs = splits(cores)
    for r in range(args.repeats):
        for workers, threads in configs:
            before = load()
            rate = measure(args.artifact, texts, workers, threads)
            row = {"workers": workers, "threads": threads, "repeat": r, "texts_per_s": round(rate, 1),
                   "load_before": before, "load_after": load()}  # fmt: skip
            report["runs"].append(row)
            print(json.dumps(row), flush=True)
    best: dict[str, float] = {}
    for row in report["runs"]:
        key = f"{row['workers']}x{row['threads']}"
        best[key] = max(best.get(key, 0.0), row["texts_per_s"])
    report["best"] = best
    if args.corpus:
        with tempfile.TemporaryDirectory() as tmp:
            with open(args.corpus, encoding="utf-8") as f:
                lines = sum(1 for _ in f)
            for r in range(args.repeats):
                for workers, threads in ((1, cores), (cores, 1), (cores // 2, 2)):
                    seconds = embed(args.artifact, Path(args.corpus), Path(tmp) / "o.npy", workers, threads)
                    row = {"workers": workers, "threads": threads, "repeat": r, "lines": lines,
                           "seconds": round(seconds, 2), "rows_per_s": round(lines / seconds, 1), "load": load()}  # fmt: skip
                    report["embed"].append(row)
                    print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(best, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
