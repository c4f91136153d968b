"""Static embeddings beyond edgeembed's own: model2vec's distillation measured on the same yardstick as
`bench/lab/yardstick_measure.py` (neighbour recall@10 and mean cosine vs the fp32 teacher, STS-b test).

    PYTHONPATH=/path/to/model2vec python bench/lab/static_peers.py --teacher ART --work DIR \
        [--pca 256 --pca 384] [--static ART ...]

model2vec is not a dependency of edgeembed (its `distill` extra pins transformers < 5.4); install it
beside the venv without its dependencies (`pip install --no-deps --target DIR model2vec skeletoken`).
Its distillation embeds every vocabulary token through the teacher, applies PCA and SIF weighting: the
same recipe as `reduce --static`'s first stage, before edgeembed tunes the table on whole sentences.
`--static` adds edgeembed static artifacts to the same table. JSON lines to stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True, type=Path, help="the fp32 teacher artifact")
    ap.add_argument("--work", required=True, type=Path, help="yardstick_measure.py's --work (teacher cache)")
    ap.add_argument("--model", type=Path, default=None, help="the teacher's Sentence-Transformers folder")
    ap.add_argument("--pca", type=int, action="append", default=[], help="model2vec pca_dims (repeatable)")
    ap.add_argument("--static", type=Path, action="append", default=[], help="an edgeembed static artifact")
    ap.add_argument("--corpus", default=str(SHARED / "corpus" / "sentences.txt"))
    ap.add_argument("--sts", default=str(SHARED / "stsbenchmark" / "sts-test.csv"))
    args = ap.parse_args()
    from yardstick_measure import teacher_cache  # the same cache, beside this script

    from edgeembed import Encoder
    from edgeembed.source import default_model_path
    from edgeembed.sts import load_sts, sts_score
    from edgeembed.yardstick import compare, load_texts

    texts = load_texts(args.corpus, args.sts)
    sts = load_sts(args.sts)
    nq = len(texts.queries)
    cache = teacher_cache(args.work, args.teacher, texts.source["sha256"])
    if not cache.is_file():
        raise SystemExit(f"{cache}: no teacher embeddings; run bench/lab/yardstick_measure.py first")
    ref = np.load(cache)

    def report(name: str, encode: Callable[[list[str]], np.ndarray]) -> None:
        t0 = time.perf_counter()
        emb = np.asarray(encode(texts.all), dtype=np.float32)
        rate = len(texts.all) / (time.perf_counter() - t0)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        y = compare(ref[:nq], ref[nq:], emb[:nq], emb[nq:])
        row = {"variant": name, **y.to_dict(), "sts_test": round(sts_score(sts, encode(sts.sentences)), 2)}
        print(json.dumps({**row, "sent_per_s": round(rate)}), flush=True)

    model = args.model or default_model_path()
    for dims in args.pca:
        from model2vec.distill import distill

        t0 = time.perf_counter()
        m2v = distill(model_name=str(model), pca_dims=dims)
        print(
            json.dumps({"model2vec_distill_s": round(time.perf_counter() - t0, 1), "pca": dims}), flush=True
        )
        report(f"model2vec pca {dims}", lambda t, m=m2v: m.encode(t, batch_size=1024))
    for art in args.static:
        enc = Encoder.load(art)
        report(str(art), lambda t, e=enc: e.encode(t, batch_size=256))


if __name__ == "__main__":
    main()
