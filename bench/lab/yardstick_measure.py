"""Agreement with the teacher (edgeembed.yardstick) for exported artifacts: neighbour recall@10 and mean
cosine vs the teacher's fp32 artifact, plus STS-b test. JSON lines to stdout.

    python bench/lab/yardstick_measure.py --teacher ART --work DIR [--corpus-size N] ART [ART ...]

The teacher's embeddings of the yardstick texts are computed once and kept in DIR (keyed by the texts'
digest and the teacher's manifest digest), so variants can be measured one at a time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def teacher_cache(work: Path, teacher: Path, texts_sha256: str) -> Path:
    """Where the teacher's embeddings of the yardstick texts are kept: keyed by the teacher's manifest
    and the texts, so a changed teacher or corpus never reuses stale embeddings."""
    teacher_id = hashlib.sha256((teacher / "edgeembed.json").read_bytes()).hexdigest()[:12]
    return work / f"teacher-{teacher_id}-{texts_sha256[:12]}.npy"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifacts", nargs="*", type=Path)
    ap.add_argument("--teacher", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--corpus", default=str(SHARED / "corpus" / "sentences.txt"))
    ap.add_argument("--sts", default=str(SHARED / "stsbenchmark" / "sts-test.csv"))
    ap.add_argument("--corpus-size", type=int, default=None)
    args = ap.parse_args()
    from edgeembed import Encoder
    from edgeembed.sts import load_sts, sts_score
    from edgeembed.yardstick import compare, load_texts

    texts = load_texts(args.corpus, args.sts, corpus_size=args.corpus_size)
    sts = load_sts(args.sts)
    args.work.mkdir(parents=True, exist_ok=True)
    cache = teacher_cache(args.work, args.teacher, texts.source["sha256"])
    nq = len(texts.queries)

    def embed(art: Path) -> tuple[np.ndarray, float]:
        enc = Encoder.load(art)
        t0 = time.perf_counter()
        emb = enc.encode(texts.all, batch_size=32)
        return emb, len(texts.all) / (time.perf_counter() - t0)

    if cache.is_file():
        ref = np.load(cache)
    else:
        ref, rate = embed(args.teacher)
        np.save(cache, ref)
        print(
            json.dumps({"teacher": str(args.teacher), "texts": len(ref), "sent_per_s": round(rate)}),
            flush=True,
        )
    for art in args.artifacts:
        emb, rate = embed(art)
        y = compare(ref[:nq], ref[nq:], emb[:nq], emb[nq:])
        enc = Encoder.load(art)
        row = {
            "artifact": str(art),
            **y.to_dict(),
            "sts_test": round(sts_score(sts, enc.encode(sts.sentences)), 2),
            "sent_per_s_loaded": round(rate),
            "load": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
