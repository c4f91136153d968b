"""Measure reduced models (edgeembed reduce outputs): STS-b test through our Encoder after export,
artifact size, and (static) throughput against sentence-transformers. Writes JSON lines to stdout.

    python bench/lab/reduce_measure.py FOLDER [FOLDER ...] --sts ../shared/data/stsbenchmark/sts-test.csv --work /tmp/x

Every folder goes through edgeembed.build.export (transformers: fp32, and with --int8 fused dynamic int8;
static: its table artifact with the ONNX graph). Speed: median of 3 passes over
the STS sentences (x4), batch 32, after one warm-up pass; the machine may be shared, see `load`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import median_rate as throughput


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--sts", required=True)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--speed", action="store_true")
    args = ap.parse_args()
    from edgeembed import Encoder
    from edgeembed.build import export
    from edgeembed.source import load_source
    from edgeembed.sts import load_sts, sts_score

    data = load_sts(args.sts)
    texts = data.sentences * 4
    for folder in args.folders:
        spec = load_source(folder)
        variants = []
        if spec.kind == "static":
            art = export(folder, args.work / f"{folder.name}-static", overwrite=True).path
            variants.append(("static fp16", art))
        else:
            variants.append(("fp32", export(folder, args.work / f"{folder.name}-fp32", overwrite=True).path))
            if args.int8:
                art = export(
                    folder,
                    args.work / f"{folder.name}-int8",
                    overwrite=True,
                    optimize="all",
                    quantize="dynamic",
                ).path
                variants.append(("fused dynamic int8", art))
        for name, art in variants:
            enc = Encoder.load(art)
            row = {
                "model": folder.name,
                "variant": name,
                "dim": enc.dim,
                "sts_test": round(sts_score(data, enc.encode(data.sentences)), 2),
                "size_mb": round(sum(p.stat().st_size for p in art.rglob("*") if p.is_file()) / 1e6, 1),
            }
            if args.speed:
                row["sent_per_s"] = round(throughput(lambda t, e=enc: e.encode(t, batch_size=32), texts))
                row["load"] = os.getloadavg()[0]
            print(json.dumps(row), flush=True)
        if spec.kind == "static" and args.speed:
            from sentence_transformers import SentenceTransformer

            st = SentenceTransformer(str(folder), device="cpu")
            rate = throughput(lambda t, m=st: m.encode(t, batch_size=32), texts)
            emb = st.encode(data.sentences)
            print(
                json.dumps(
                    {
                        "model": folder.name,
                        "variant": "sentence-transformers StaticEmbedding (torch)",
                        "sts_test": round(sts_score(data, np.asarray(emb)), 2),
                        "sent_per_s": round(rate),
                        "load": os.getloadavg()[0],
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
