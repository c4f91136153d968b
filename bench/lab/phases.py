"""Where the time goes: tokenization, padding/batching, the graph, pooling + Dense + normalize, and the
rest (Python overhead), per artifact, at batch 32 and batch 1, on the STS-b test sentences.

    .venv/bin/python bench/lab/phases.py ART [ART ...] [--threads 2] [--rounds 3]

Each phase is timed around the same calls Encoder.encode makes, in one process, rounds interleaved
across artifacts; medians are reported. The sum of phases vs a plain `encode` call gives the overhead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import sts_sentences, use_repo

use_repo()

from edgeembed.encoder import MAX_BATCH_TOKENS, Encoder, length_batches  # noqa: E402
from edgeembed.head import dense, normalize, pool  # noqa: E402
from edgeembed.runtimes import RuntimeOptions  # noqa: E402


def phases(enc: Encoder, texts: list[str], batch_size: int) -> dict[str, float]:
    """Seconds per phase for embedding `texts` at `batch_size`, as Encoder.encode does it."""
    t = {"tokenize": 0.0, "pad": 0.0, "graph": 0.0, "head": 0.0}
    s = time.perf_counter()
    encodings = enc.tokenizer.encode(texts)
    t["tokenize"] = time.perf_counter() - s
    names = enc.runtime.input_names
    caps = enc.capabilities  # padding and row buckets as Encoder.encode takes them
    multiple = caps.pad_to_multiple_of
    lengths = [len(e.ids) for e in encodings]
    for idx in length_batches(lengths, batch_size, MAX_BATCH_TOKENS, caps.bucket_rows):
        s = time.perf_counter()
        batch = enc.tokenizer.pad([encodings[i] for i in idx], multiple)
        inputs = batch.as_inputs(names)
        t["pad"] += time.perf_counter() - s
        s = time.perf_counter()
        tokens = enc.runtime.run(inputs)
        t["graph"] += time.perf_counter() - s
        s = time.perf_counter()
        emb = pool(enc.head.pooling, tokens, batch.attention_mask)
        for (w, b), spec in zip(enc.dense_layers, enc.head.dense):
            emb = dense(emb, w, b, spec.activation)
        if enc.head.normalize:
            emb = normalize(emb)
        t["head"] += time.perf_counter() - s
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-1-texts", type=int, default=200)
    args = ap.parse_args()
    texts = sts_sentences()
    # One request at a time (OpenVINO: latency hint), the serial loop the phases time.
    options = RuntimeOptions(threads=args.threads, hint="latency")
    encs = {p.name: Encoder.load(p, options=options) for p in args.artifacts}
    for enc in encs.values():
        enc.encode(texts[:64])  # warm-up
    rows: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for name, enc in encs.items():
            for bs, sample in ((32, texts), (1, texts[: args.batch_1_texts])):
                s = time.perf_counter()
                enc.encode(sample, batch_size=bs)
                total = time.perf_counter() - s
                t = phases(enc, sample, bs)
                t["encode total"] = total
                t["n"] = len(sample)
                rows.setdefault((name, bs), []).append(t)
    print(f"load average at the end: {os.getloadavg()}")
    print("| artifact | batch | tokenize | pad | graph | pool+dense+norm | other | encode ms/text |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, bs), runs in rows.items():
        med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
        total = med["encode total"]
        parts = [med[k] for k in ("tokenize", "pad", "graph", "head")]
        other = max(total - sum(parts), 0.0)
        share = " | ".join(f"{100 * x / total:.1f}%" for x in [*parts, other])
        print(f"| {name} | {bs} | {share} | {1000 * total / med['n']:.3f} |")


if __name__ == "__main__":
    main()
