"""Token ids of an end-to-end ONNX graph vs `tokenizers` on seeded random texts from the whole of Unicode.

    python bench/lab/e2e_fuzz.py ARTIFACT [--texts 4000] [--seed 0]

ARTIFACT must hold an end-to-end graph (export --end-to-end). Texts mix common letters, accents, kana,
Hangul, emoji and punctuation with code points drawn from every plane (surrogates excluded), 0-60
characters each. Prints the number of texts whose ids differ and the first few.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
import common

common.use_repo()

from edgeembed.encoder import Encoder  # noqa: E402
from edgeembed.steps.e2e_onnx import compare_token_ids  # noqa: E402

COMMON = [*"edge device the cat sat on mat hello world ", *"éÉñ👍で東,!\tėŔĳ한йά"]


def text(rng: random.Random) -> str:
    def char() -> str:
        r = rng.random()
        if r < 0.6:
            return rng.choice(COMMON)
        lo, hi = (0x80, 0x3000) if r < 0.8 else (0x3000, 0x30000) if r < 0.95 else (0x30000, 0x110000)
        c = rng.randrange(lo, hi)
        return "A" if 0xD800 <= c < 0xE000 else chr(c)

    return "".join(char() for _ in range(rng.randrange(0, 60)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--texts", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    enc = Encoder.load(args.artifact, verify=False)
    record = enc.manifest.end_to_end
    if not record or not record["graph"].endswith(".onnx"):
        sys.exit(f"{args.artifact}: no end-to-end ONNX graph (export --end-to-end [--keep-onnx])")
    rng = random.Random(args.seed)
    texts = [text(rng) for _ in range(args.texts)]
    graph = args.artifact / record["graph"]
    mismatches = compare_token_ids(graph, args.artifact / "tokenizer.json", enc.head, texts)
    print(f"{len(mismatches)} of {len(texts)} random texts tokenize differently in {graph.name}")
    for m in mismatches[:5]:
        print(repr(m.text), m.expected, m.got)


if __name__ == "__main__":
    main()
