"""Serial vs pipelined encode (`Encoder.encode(prefetch=...)`): does padding the next batch in a thread
while the runtime runs the current one pay, per artifact, at batch 32 and batch 1?

    .venv/bin/python bench/lab/overlap.py ART [ART ...] [--threads 2] [--rounds 5] [--batch-1-texts 300]

One process, every artifact loaded once; each round runs every (artifact, batch, mode) once, the two
modes in alternating order (ABBA) so drift in the machine's load falls on both; medians of sentences/s
and the ratio pipelined / serial are printed as a markdown table, with the load average before and after
and each mode's CPU seconds per wall second (on a loaded machine a mode can win by getting more CPU).
OpenVINO runs at the latency hint (one request at a time, the serial loop prefetch competes with) unless
--hint is given; `--hint throughput` measures the prefetch feeding run_many instead. Before timing, the
two modes' embeddings are checked to be identical (np.array_equal).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import sts_sentences, use_repo

use_repo()

from edgeembed.encoder import Encoder  # noqa: E402
from edgeembed.runtimes import RuntimeOptions  # noqa: E402

MODES = {"serial": False, "pipelined": True}


def timed(enc: Encoder, texts: list[str], batch_size: int, prefetch: bool) -> tuple[float, float]:
    """Sentences per second of one encode call, and the process's CPU seconds per wall second during it
    (on a loaded machine a higher value means the scheduler gave the process more of the cores)."""
    start, cpu = time.perf_counter(), time.process_time()
    enc.encode(texts, batch_size=batch_size, prefetch=prefetch)
    wall = time.perf_counter() - start
    return len(texts) / wall, (time.process_time() - cpu) / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-1-texts", type=int, default=300)
    ap.add_argument("--hint", choices=("latency", "throughput"), default="latency", help="OpenVINO hint")
    ap.add_argument("--json", type=Path, help="also write the raw runs here")
    args = ap.parse_args()
    texts = sts_sentences()
    options = RuntimeOptions(threads=args.threads, hint=args.hint)
    encs = {}
    for path in args.artifacts:
        enc = Encoder.load(path, options=options)
        # OpenVINO takes the hint; ONNX Runtime ignores it.
        name = f"{path.name} ({enc.runtime.hint})" if hasattr(enc.runtime, "hint") else path.name
        encs[name] = enc
    cases = [(32, texts), (1, texts[: args.batch_1_texts])]
    for name, enc in encs.items():
        for bs, sample in cases:
            a = enc.encode(sample[:200], batch_size=bs, prefetch=False)
            b = enc.encode(sample[:200], batch_size=bs, prefetch=True)
            if not np.array_equal(a, b):
                raise SystemExit(f"{name} batch {bs}: pipelined differs, max {np.abs(a - b).max():.3g}")
    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for name, enc in encs.items():
            for bs, sample in cases:
                order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
                for mode in order:
                    key = f"{name}|{bs}|{mode}"
                    speed, busy = timed(enc, sample, bs, MODES[mode])
                    runs.setdefault(key, []).append(speed)
                    cpu.setdefault(key, []).append(busy)
        print(f"round {r + 1}/{args.rounds} done, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    load_after = os.getloadavg()
    print(f"load average before: {load_before}, after: {load_after}; rounds {args.rounds}, median")
    print(
        "| artifact | batch | serial sent/s | pipelined sent/s | ratio | per-round ratios | CPU/wall s, p |"
    )
    print("|---|---:|---:|---:|---:|---|---:|")
    for name in encs:
        for bs, _ in cases:
            serial, piped = runs[f"{name}|{bs}|serial"], runs[f"{name}|{bs}|pipelined"]
            per_round = " ".join(f"{p / s:.3f}" for s, p in zip(serial, piped))
            ratio = np.median(piped) / np.median(serial)
            busy = [np.median(cpu[f"{name}|{bs}|{m}"]) for m in MODES]
            print(
                f"| {name} | {bs} | {np.median(serial):.0f} | {np.median(piped):.0f} | "
                f"{ratio:.3f} | {per_round} | {busy[0]:.2f}, {busy[1]:.2f} |"
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"load_before": load_before, "load_after": load_after, "runs": runs, "cpu": cpu}, indent=1
            )
        )


if __name__ == "__main__":
    main()
