"""Per-tensor vs per-row (batch-invariant) dynamic int8 on MiniLM: batch invariance, STS-b, cosine vs
fp32, throughput at batch 32 and batch-1 latency, all variants quantized here from the same fp32 graphs
with edgeembed.steps.onnx_int8.quantize_graph.

Indicative only: timings interleaved (every variant once per round), median of rounds; the 1-minute load
average is recorded per round. Compare ratios within one run.

    PYTHONPATH=. python bench/lab/int8_rows.py --artifact /tmp/minilm-fp32 \
        --graph fused=/tmp/minilm-fp32/onnx/model_O2.onnx --graph plain=/tmp/minilm-plain/onnx/model.onnx \
        --blocks 32,64,128 --threads 2 --rounds 5 --out bench/lab/int8_rows_minilm.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import STS_TEST

from edgeembed.encoder import Encoder
from edgeembed.gate import GatePolicy, batch_invariance
from edgeembed.runtimes import RuntimeOptions, load_runtime
from edgeembed.source import load_source
from edgeembed.steps.onnx_int8 import PRESETS, quantize_graph
from edgeembed.sts import load_sts, sts_score

# The example: a short text with an emoji alone vs inside a batch of four.
JOB = ["job👍 great", "a", "The cat sat on the mat. " * 20, "Stock markets fell sharply on Tuesday."]


def accuracy(enc: Encoder, ref: Encoder, sts) -> dict:
    emb = enc.encode(sts.sentences, batch_size=32)
    base = ref.encode(sts.sentences, batch_size=32)
    cos = (emb * base).sum(1)
    fp32 = sts_score(sts, dict(zip(sts.sentences, base)))
    score = sts_score(sts, dict(zip(sts.sentences, emb)))
    job = float(enc.encode(JOB[:1], batch_size=1)[0] @ enc.encode(JOB, batch_size=4)[0])
    policy = GatePolicy()
    return {
        "sts": round(score, 3),
        "sts_retained_pct": round(100 * score / fp32, 3),
        "cos_vs_fp32_min": round(float(cos.min()), 5),
        "cos_vs_fp32_mean": round(float(cos.mean()), 5),
        "invariance_builtin": batch_invariance(enc, policy, sts=None),
        "invariance_sts": batch_invariance(enc, policy, sts=sts),
        "job_alone_vs_batch4": round(job, 6),
    }


def speed(encs: dict[str, Encoder], rounds: int) -> dict:
    sents = load_sts(STS_TEST).sentences
    random.Random(0).shuffle(sents)
    bulk, single = sents[:640], sents[640:740]
    for e in encs.values():  # warm-up: arena, thread pool
        e.encode(bulk[:64], batch_size=32)
        e.encode(single[:10], batch_size=1)
    rate: dict[str, list[float]] = {k: [] for k in encs}
    p50: dict[str, list[float]] = {k: [] for k in encs}
    loads = []
    for _ in range(rounds):
        loads.append(round(os.getloadavg()[0], 2))
        for k, e in encs.items():
            t = time.perf_counter()
            e.encode(bulk, batch_size=32)
            rate[k].append(len(bulk) / (time.perf_counter() - t))
            lat = []
            for s in single:
                t = time.perf_counter()
                e.encode([s], batch_size=1)
                lat.append(time.perf_counter() - t)
            p50[k].append(1000 * statistics.median(lat))
    return {"load1_per_round": loads, "sent_s_b32": rate, "p50_ms_b1": p50}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", required=True, type=Path, help="an fp32 artifact: tokenizer and head")
    ap.add_argument("--graph", action="append", required=True, help="name=fp32 graph to quantize")
    ap.add_argument("--blocks", default="128", help="per-row block sizes to try")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/int8_rows"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    head = load_source(args.artifact).head
    sts = load_sts(STS_TEST)
    options = RuntimeOptions(threads=args.threads)

    def encoder(path: Path) -> Encoder:
        return Encoder.from_parts(args.artifact, load_runtime("onnxruntime", path, options), head)

    report: dict = {"threads": args.threads, "rounds": args.rounds, "graphs": {}}
    for item in args.graph:
        name, _, src = item.partition("=")
        src_path = Path(src)
        configs = {"tensor": PRESETS["dynamic_avx512_vnni"]}
        for b in args.blocks.split(","):
            configs[f"row{b}"] = replace(PRESETS["dynamic_row_avx512_vnni"], block_size=int(b))
        paths = {"fp32": src_path}
        for key, cfg in configs.items():
            dst = args.work / name / f"{key}.onnx"
            if not dst.exists():
                quantize_graph(src_path, dst, cfg)
            paths[key] = dst
        ref = encoder(src_path)
        encs = {k: encoder(p) for k, p in paths.items()}
        rows = {}
        for k, p in paths.items():
            ops = Counter(n.op_type for n in onnx.load(str(p), load_external_data=False).graph.node)
            size = sum(f.stat().st_size for f in p.parent.glob(p.name + "*"))
            rows[k] = {"mb": round(size / 1e6, 1), "ops": dict(ops), **accuracy(encs[k], ref, sts)}
            print(name, k, json.dumps(rows[k]), flush=True)
        timing = speed(encs, args.rounds)
        for k in encs:
            rows[k]["sent_s_b32"] = round(statistics.median(timing["sent_s_b32"][k]), 1)
            rows[k]["p50_ms_b1"] = round(statistics.median(timing["p50_ms_b1"][k]), 2)
            rows[k]["x_tensor_b32_per_round"] = [
                round(a / b, 3) for a, b in zip(timing["sent_s_b32"][k], timing["sent_s_b32"]["tensor"])
            ]
            rows[k]["x_tensor_b1_per_round"] = [
                round(b / a, 3) for a, b in zip(timing["p50_ms_b1"][k], timing["p50_ms_b1"]["tensor"])
            ]
            print(name, k, rows[k]["sent_s_b32"], rows[k]["p50_ms_b1"], rows[k]["x_tensor_b32_per_round"])
        report["graphs"][name] = {"rows": rows, "load1_per_round": timing["load1_per_round"]}
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
