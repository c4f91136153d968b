"""Speed of runtime settings against each other, in one process, interleaved (issue 22: attack the largest
shares of the profile one by one, keep what pays).

Each setting is NAME=ARTIFACT[:JSON], JSON being RuntimeOptions fields (threads, hint, streams, precision)
plus probe-only keys: "pad" (pad lengths to a multiple of it; 0: no padding), "budget" (max_batch_tokens) and
"verify" (false: skip checksums, for a lab-made graph copied into an artifact).
Batch 32: sentences/s over the STS-b test sentences, slice by slice through every setting in a rotated
order (common.interleaved_seconds), median of rounds. Batch 1: p50 ms of `encode([text], batch_size=1)`
over --batch-1-texts sentences, the settings alternating text by text.

    python bench/lab/settings_speed.py int8=/tmp/a/openvino-int8 lat='/tmp/a/openvino-int8:{"hint":"latency"}'
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import git_commit, interleaved_seconds, sts_sentences, use_repo

use_repo()

from edgeembed.encoder import MAX_BATCH_TOKENS, Encoder  # noqa: E402
from edgeembed.runtimes import RuntimeOptions  # noqa: E402


def load(spec: str, threads: int):
    """An Encoder and encode keyword arguments for NAME=ARTIFACT[:JSON]."""
    path, _, js = spec.partition(":")
    opts = json.loads(js) if js else {}
    pad, budget = opts.pop("pad", None), opts.pop("budget", MAX_BATCH_TOKENS)
    verify = opts.pop("verify", True)
    opts.setdefault("threads", threads)
    enc = Encoder.load(path, options=RuntimeOptions(**opts), verify=verify)
    if pad is not None:
        # Probe only: the Encoder reads padding from its own copy of the runtime's capabilities (0 = none).
        enc.capabilities = replace(enc.capabilities, pad_to_multiple_of=pad or None)
    return enc, {"max_batch_tokens": budget}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("settings", nargs="+", help="NAME=ARTIFACT[:JSON]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--batch-1-texts", type=int, default=200)
    ap.add_argument("--no-batch-1", action="store_true")
    args = ap.parse_args()
    texts = sts_sentences()
    encs = {}
    for s in args.settings:
        name, _, spec = s.partition("=")
        encs[name] = load(spec, args.threads)
    load_start = os.getloadavg()[0]
    for enc, kw in encs.values():
        enc.encode(texts[:256], **kw)
        enc.encode(texts[:20], batch_size=1, **kw)
    step = -(-len(texts) // args.slices)
    parts = [texts[i : i + step] for i in range(0, len(texts), step)]
    funcs = {n: (lambda p, e=e, kw=kw: e.encode(p, **kw)) for n, (e, kw) in encs.items()}
    rounds = list(interleaved_seconds(funcs, parts, args.rounds))
    rate = {n: len(texts) / statistics.median(r[n] for r in rounds) for n in encs}
    lat: dict[str, list[float]] = {n: [] for n in encs}
    if not args.no_batch_1:
        names = list(encs)
        for k, text in enumerate(texts[: args.batch_1_texts]):
            for n in names[k % len(names) :] + names[: k % len(names)]:
                enc, kw = encs[n]
                t = time.perf_counter()
                enc.encode([text], batch_size=1, **kw)
                lat[n].append(time.perf_counter() - t)
    first = next(iter(encs))
    print(
        f"commit {git_commit()}, {args.threads} threads, {args.rounds} rounds, load average "
        f"{load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end\n"
    )
    print(f"| setting | sent/s b32 | ratio vs {first} | b1 p50 ms | b1 ratio |")
    print("|---|---:|---:|---:|---:|")
    for n in encs:
        p50 = statistics.median(lat[n]) * 1e3 if lat[n] else float("nan")
        p50_first = statistics.median(lat[first]) * 1e3 if lat[first] else float("nan")
        print(f"| {n} | {rate[n]:.0f} | {rate[n] / rate[first]:.3f} | {p50:.3f} | {p50 / p50_first:.3f} |")


if __name__ == "__main__":
    main()
