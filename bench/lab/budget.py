"""Speed of the Encoder's token budget (max_batch_tokens) at two values, interleaved in one process.

Why: the budget bounds the runtime's working memory (bench/PROFILE.md sections 1, 5, 6); this checks
that a smaller one does not cost speed on short texts (STS-b test) or on long ones (texts of 3-10 corpus
sentences, where it binds). Median of --rounds; each round runs both budgets (common.interleaved_seconds).

    python bench/lab/budget.py ARTIFACT [ARTIFACT ...] --budgets 512 1024 --rounds 5
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import CORPUS, interleaved_seconds, sts_sentences, use_repo

use_repo()

from edgeembed.encoder import Encoder  # noqa: E402


def long_texts(n: int, seed: int = 0) -> list[str]:
    """n texts of 3-10 sentences drawn from the corpus's first 20,000 lines."""
    with open(CORPUS, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for _, line in zip(range(20000), f)]
    rng = random.Random(seed)
    return [" ".join(rng.sample(lines, rng.randint(3, 10))) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--budgets", nargs=2, type=int, default=[512, 1024])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--long", type=int, default=600, help="number of long texts")
    args = ap.parse_args()
    cases = {"STS-b test": sts_sentences(), f"{args.long} long": long_texts(args.long)}
    a, b = args.budgets
    print(f"| artifact | texts | sent/s at {a} | sent/s at {b} | ratio {a}/{b} |")
    print("|---|---|---:|---:|---:|")
    for art in args.artifacts:
        enc = Encoder.load(art, threads=2)
        for name, texts in cases.items():
            enc.encode(texts[:200], batch_size=32)  # warm-up
            runs = {
                budget: (
                    lambda t, budget=budget, enc=enc: enc.encode(t, batch_size=32, max_batch_tokens=budget)
                )
                for budget in (a, b)
            }
            seconds = list(interleaved_seconds(runs, [texts], args.rounds))
            rate = {k: len(texts) / statistics.median(s[k] for s in seconds) for k in runs}
            print(
                f"| {art.name} | {name} | {rate[a]:.0f} | {rate[b]:.0f} | {rate[a] / rate[b]:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
