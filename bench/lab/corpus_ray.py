"""Ray Data vs single process on the same corpus slice: wall time, overhead, per-worker throughput, and
the max abs difference of the embeddings (rows lined up by record number).

    python bench/lab/corpus_ray.py ARTIFACT CORPUS --lines 5000 --workers 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from edgeembed import Encoder
from edgeembed.corpus import EmbedConfig, Source, embed_corpus
from edgeembed.corpus.ray_job import embed_with_ray


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact")
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--lines", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=1000)
    args = ap.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "part.txt"
        with args.corpus.open("rb") as src, part.open("wb") as out:
            out.writelines(itertools.islice(src, args.lines))
        config = EmbedConfig(shard_size=args.shard_size)
        t = time.perf_counter()
        embed_corpus(Encoder.load(args.artifact), Source.open(part), Path(tmp) / "single.parquet", config)
        single = time.perf_counter() - t
        t = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        started = time.perf_counter() - t
        t = time.perf_counter()
        embed_with_ray(args.artifact, Source.open(part), Path(tmp) / "ray", config, workers=args.workers)
        on_ray = time.perf_counter() - t
        ray.shutdown()
        a = pq.read_table(Path(tmp) / "single.parquet").sort_by("record")
        b = pq.read_table(Path(tmp) / "ray").sort_by("record")
        assert a.column("record").to_pylist() == b.column("record").to_pylist()
        diff = np.abs(
            np.asarray(a.column("embedding").to_pylist()) - np.asarray(b.column("embedding").to_pylist())
        ).max()
    print(
        json.dumps(
            {
                "lines": args.lines,
                "workers": args.workers,
                "single_s": single,
                "ray_s": on_ray,
                "ray_init_s": started,
                "single_rate": args.lines / single,
                "ray_rate": args.lines / on_ray,
                "ray_rate_per_worker": args.lines / on_ray / args.workers,
                "max_abs_diff": float(diff),
            }
        )
    )


if __name__ == "__main__":
    main()
