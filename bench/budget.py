"""Speed of the Encoder's token budget (max_batch_tokens) at two values, interleaved in one process.

Why: the budget bounds the runtime's working memory (bench/PROFILE.md sections 1, 5, 6); this checks
that a smaller one does not cost speed on short texts (STS-b test) or on long ones (texts of 3-10 corpus
sentences, where it binds). Median of --rounds, each round runs both budgets back to back.

    python bench/budget.py ARTIFACT [ARTIFACT ...] --budgets 512 1024 --rounds 5
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--budgets", nargs=2, type=int, default=[512, 1024])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--long", type=int, default=600, help="number of long texts")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from edgeembed.encoder import Encoder
    from edgeembed.sts import load_sts

    sts = load_sts(DATA / "stsbenchmark" / "sts-test.csv").sentences
    with open(DATA / "corpus" / "sentences.txt", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for _, line in zip(range(20000), f)]
    rng = random.Random(0)
    long_texts = [" ".join(rng.sample(lines, rng.randint(3, 10))) for _ in range(args.long)]
    a, b = args.budgets
    print(f"| artifact | texts | sent/s at {a} | sent/s at {b} | ratio {a}/{b} |")
    print("|---|---|---:|---:|---:|")
    for art in args.artifacts:
        enc = Encoder.load(art, threads=2)
        for name, texts in (("STS-b test", sts), (f"{len(long_texts)} long", long_texts)):
            enc.encode(texts[:200], batch_size=32)  # warm-up
            speed: dict[int, list[float]] = {a: [], b: []}
            for _ in range(args.rounds):
                for budget in (a, b):
                    t = time.perf_counter()
                    enc.encode(texts, batch_size=32, max_batch_tokens=budget)
                    speed[budget].append(len(texts) / (time.perf_counter() - t))
            m = {k: statistics.median(v) for k, v in speed.items()}
            print(f"| {art.name} | {name} | {m[a]:.0f} | {m[b]:.0f} | {m[a] / m[b]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
