"""Batch 1 through the Encoder: the graph's own sentence output (the head step) vs pooling the token output
in numpy, on the same artifact and session, and the floor under both (tokenize, pad and `runtime.run` for
the sentence output, nothing else), interleaved rounds, p50 per round.

    python bench/lab/head_output_b1.py ARTIFACT [--texts 200] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import sts_sentences, use_repo

use_repo()
from edgeembed.artifact import read_manifest  # noqa: E402
from edgeembed.encoder import Encoder  # noqa: E402
from edgeembed.runtimes import RuntimeOptions, load_runtime  # noqa: E402


def p50_ms(enc: Encoder, texts: list[str]) -> float:
    times = []
    for t in texts:
        start = time.perf_counter()
        enc.encode(t)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--texts", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    texts = sts_sentences()[: args.texts]
    in_graph = Encoder.load(args.artifact, threads=args.threads)
    assert in_graph.sentence_output, "the artifact's graph has no sentence output"
    m = read_manifest(args.artifact)
    (g,) = [g for g in m.graphs if g.input == "tokens"][:1]
    runtime = load_runtime(g.runtime, args.artifact / g.file, RuntimeOptions(threads=args.threads))
    numpy_head = Encoder.from_parts(args.artifact, runtime, m.head)
    names, out = runtime.input_names, in_graph.sentence_output

    class Floor:  # what any caller must do: tokenize, pad, run; no checks, no batching, no copies
        def encode(self, text: str) -> np.ndarray:
            return runtime.run(in_graph.tokenizer([text]).as_inputs(names), output=out)[0]

    floor = Floor()
    a, b = in_graph.encode(texts), numpy_head.encode(texts)
    cos = float(np.min(np.sum(a * b, axis=1)))
    paths = {"graph head": in_graph, "numpy head": numpy_head, "floor (tokenize + run)": floor}
    for enc in paths.values():  # warm
        p50_ms(enc, texts[:50])  # type: ignore[arg-type]
    rounds: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(args.rounds):
        for name, enc in paths.items():
            rounds[name].append(p50_ms(enc, texts))  # type: ignore[arg-type]
    print(
        json.dumps(
            {
                "artifact": str(args.artifact),
                "texts": len(texts),
                "threads": args.threads,
                "load": os.getloadavg()[0],
                "min_cosine_between_paths": cos,
                "p50_ms_per_round": rounds,
                "median_p50_ms": {k: statistics.median(v) for k, v in rounds.items()},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
