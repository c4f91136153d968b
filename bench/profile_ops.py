"""Where the time goes inside the graph: a per-operator profile of the fastest variants, plus the Python
around the runtime and the padding the batches carry.

For each artifact and batch size (32 and 1) on the STS-b test sentences:
- the Encoder's own phases, timed around the calls `Encoder.encode` makes (tokenize, pad, graph, head)
  and a plain `encode` call (what the phases leave out is Python glue);
- padding: real vs padded tokens, and the attention work (sum of length^2) real vs padded;
- the operators: OpenVINO with PERF_COUNT (time per node type and kernel, summed over every batch) and
  the runtime model's `primitiveType` per node; ONNX Runtime with its profiler (`enable_profiling`),
  time per operator type. Both are grouped into the shares the issue asks for (int8 matrix products,
  attention, softmax, layer norm, GELU, reorders/converts, quantize, other).

The profiled runs use their own compiled model / session with the same settings as the Encoder's
(threads, hint for the batch size, precision) plus profiling, run one batch at a time.

    .venv/bin/python bench/profile_ops.py ART [ART ...] [--threads 2] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py
from common import git_commit, sts_sentences, use_repo

use_repo()

from edgeembed.encoder import MAX_BATCH_TOKENS, Encoder, length_batches  # noqa: E402
from edgeembed.head import dense, normalize, pool  # noqa: E402
from edgeembed.runtimes import RuntimeOptions  # noqa: E402

CATEGORIES = (
    "int8 matmul",
    "float matmul",
    "attention",
    "softmax",
    "layer norm",
    "GELU",
    "quantize",
    "reorder/convert",
    "eltwise",
    "embeddings",
    "other",
)


def ov_category(node_type: str, exec_type: str, layers: str = "") -> str:
    """One OpenVINO CPU node (type, kernel, the original layers it fused) -> a share of the profile."""
    t, e, names = node_type.lower(), exec_type.lower(), layers.lower()
    # "FullyConnectedQuantizedLegacy" is OpenVINO 2026's int8 FullyConnected node type.
    if t.startswith("fullyconnected") or (t in ("matmul", "convolution") and "weight" in names):
        return "int8 matmul" if ("i8" in e or "u8" in e) else "float matmul"
    if t in ("scaleddotproductattention", "matmul") or (t == "subgraph" and "softmax" in names):
        return "attention"
    if t == "softmax":
        return "softmax"
    if t in ("mvn", "rms", "normalizel2"):
        return "layer norm"
    if t == "gelu" or (t in ("eltwise", "subgraph") and "gelu" in names and "softmax" not in names):
        return "GELU"
    if t == "fakequantize":
        return "quantize"
    if t in ("reorder", "convert", "transpose", "reshape"):
        return "reorder/convert"
    if t in ("eltwise", "subgraph", "multiply", "add"):
        return "eltwise"
    if t == "gather":
        return "embeddings"
    return "other"


def ort_category(op: str) -> str:
    """One ONNX Runtime operator type -> a share of the profile."""
    if op in (
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "MatMulInteger",
        "QLinearMatMul",
        "QGemm",
        "MatMulNBits",
    ):
        return "int8 matmul"
    if op in ("MatMul", "Gemm", "FusedMatMul"):
        return "float matmul"
    if op in ("Attention", "QAttention", "MultiHeadAttention", "PackedAttention"):
        return "attention"  # ONNX Runtime's fused attention includes its softmax
    if op == "Softmax":
        return "softmax"
    if "LayerNormalization" in op:
        return "layer norm"
    if "Gelu" in op:
        return "GELU"
    if op in ("DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"):
        return "quantize"
    if op in ("Cast", "Transpose", "Reshape", "Unsqueeze", "Squeeze", "Shape", "Concat", "Slice"):
        return "reorder/convert"
    if op in ("Add", "Mul", "Sub", "Div", "Where", "Erf", "Sqrt", "Pow"):
        return "eltwise"
    if op in ("Gather", "EmbedLayerNormalization"):
        return "embeddings"
    return "other"


def options_of(enc: Encoder, threads: int) -> RuntimeOptions:
    """The RuntimeOptions the Encoder's runtime was loaded with (the artifact's, threads from the caller)."""
    known = {f.name for f in fields(RuntimeOptions)}
    base = RuntimeOptions(**{k: v for k, v in (enc.manifest.runtime_options or {}).items() if k in known})
    return replace(base, threads=threads)


def make_batches(enc: Encoder, texts: list[str], batch_size: int) -> tuple[list[Any], dict[str, float]]:
    """The padded batches Encoder.encode builds for these texts, and how much of them is padding."""
    encodings = enc.tokenizer.encode(texts)
    lengths = [len(e.ids) for e in encodings]
    caps = enc.capabilities  # the runtime's padding and row bucketing, as Encoder.encode applies them
    bucket, multiple = caps.bucket_rows, caps.pad_to_multiple_of
    batches = []
    real = padded = att_real = att_padded = 0
    for idx in length_batches(lengths, batch_size, MAX_BATCH_TOKENS, bucket):
        batch = enc.tokenizer.pad([encodings[i] for i in idx], multiple)
        batches.append(batch)
        rows, width = batch.input_ids.shape
        real += sum(lengths[i] for i in idx)
        padded += rows * width
        att_real += sum(lengths[i] ** 2 for i in idx)
        att_padded += rows * width**2
    stats = {
        "batches": len(batches),
        "real_tokens": real,
        "padded_tokens": padded,
        "padding_share": 1 - real / padded,
        "attention_padding_share": 1 - att_real / att_padded,
    }
    return batches, stats


def phases(enc: Encoder, texts: list[str], batch_size: int) -> dict[str, float]:
    """Seconds per phase for `texts` at `batch_size`, serially, as Encoder.encode does it."""
    t = dict.fromkeys(("tokenize", "pad", "graph", "head"), 0.0)
    s = time.perf_counter()
    encodings = enc.tokenizer.encode(texts)
    t["tokenize"] = time.perf_counter() - s
    names = enc.runtime.input_names
    caps = enc.capabilities
    bucket, multiple = caps.bucket_rows, caps.pad_to_multiple_of
    for idx in length_batches([len(e.ids) for e in encodings], batch_size, MAX_BATCH_TOKENS, bucket):
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


def profile_openvino(enc: Encoder, batches: list[Any], batch_size: int, threads: int) -> dict[str, Any]:
    """PERF_COUNT per (node type, kernel) summed over all batches, and the runtime model's kernels."""
    import openvino as ov

    from edgeembed.runtimes.openvino import compile_apart, compile_config, hint_for

    options = options_of(enc, threads)
    options = replace(options, hint=options.hint or hint_for(batch_size))
    config = {**compile_config(options), "PERF_COUNT": "YES"}
    core = ov.Core()
    compiled = compile_apart(core, str(enc.path / enc.manifest.graph), config)
    request = compiled.create_infer_request()
    names = [i.get_any_name() for i in compiled.inputs]
    for batch in batches[:2]:  # warm-up: first-shape compilation is not steady state
        request.infer(batch.as_inputs(names))
    per_node: dict[tuple[str, str, str], float] = defaultdict(float)
    for batch in batches:
        request.infer(batch.as_inputs(names))
        for info in request.get_profiling_info():
            if info.status == ov.ProfilingInfo.Status.EXECUTED:
                per_node[(info.node_name, info.node_type, info.exec_type)] += info.real_time.total_seconds()
    runtime = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()

        def get(key: str, rt: Any = rt) -> str:
            return str(rt[key].astype(str)) if key in rt else ""

        runtime[op.get_friendly_name()] = {
            "layerType": get("layerType"),
            "primitiveType": get("primitiveType"),
            "originalLayersNames": get("originalLayersNames"),
            "runtimePrecision": get("runtimePrecision"),
        }
    by_kernel: dict[tuple[str, str], float] = defaultdict(float)
    by_category: dict[str, float] = defaultdict(float)
    for (name, node_type, exec_type), sec in per_node.items():
        by_kernel[(node_type, exec_type)] += sec
        layers = runtime.get(name, {}).get("originalLayersNames", "")
        by_category[ov_category(node_type, exec_type, layers or name)] += sec
    kinds = sorted({(v["layerType"], v["primitiveType"]) for v in runtime.values()})
    return {
        "config": config,
        "by_kernel": {f"{t} / {e}": s for (t, e), s in sorted(by_kernel.items(), key=lambda x: -x[1])},
        "by_category": dict(by_category),
        "total_s": sum(per_node.values()),
        "runtime_kernels": [f"{t} / {p}" for t, p in kinds],
        "sdpa_in_runtime_model": any(v["layerType"] == "ScaledDotProductAttention" for v in runtime.values()),
    }


def profile_onnxruntime(enc: Encoder, batches: list[Any], threads: int) -> dict[str, Any]:
    """ONNX Runtime's profiler over all batches: time per operator type, grouped."""
    import onnxruntime as ort

    so = ort.SessionOptions()  # the settings of edgeembed.runtimes.onnxruntime.session, plus profiling
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    so.intra_op_num_threads = threads
    so.enable_mem_pattern = False
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(
            str(enc.path / enc.manifest.graph), so, providers=["CPUExecutionProvider"]
        )
        names = [i.name for i in sess.get_inputs()]
        warm = batches[:2]
        for batch in warm:
            sess.run(None, batch.as_inputs(names))
        for batch in batches:
            sess.run(None, batch.as_inputs(names))
        events = json.loads(Path(sess.end_profiling()).read_text())
    # The first len(warm) model runs are warm-up: drop their node events.
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    start = runs[len(warm)] if len(runs) > len(warm) else 0
    by_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start:
            by_op[e["args"]["op_name"]] += e["dur"] / 1e6
    by_category: dict[str, float] = defaultdict(float)
    for op, sec in by_op.items():
        by_category[ort_category(op)] += sec
    return {
        "by_kernel": dict(sorted(by_op.items(), key=lambda x: -x[1])),
        "by_category": dict(by_category),
        "total_s": sum(by_op.values()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-1-texts", type=int, default=200)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    texts = sts_sentences()
    samples = {32: texts, 1: texts[: args.batch_1_texts]}
    encs = {p.name: Encoder.load(p, threads=args.threads) for p in args.artifacts}
    out: dict[str, Any] = {"commit": git_commit(), "threads": args.threads, "load_start": os.getloadavg()}
    for enc in encs.values():
        enc.encode(texts[:64])
        enc.encode(texts[:16], batch_size=1)
    timings: dict[tuple[str, int], list[dict[str, float]]] = defaultdict(list)
    for _ in range(args.rounds):  # interleaved: every artifact and batch size once per round
        for name, enc in encs.items():
            for bs, sample in samples.items():
                s = time.perf_counter()
                enc.encode(sample, batch_size=bs)
                total = time.perf_counter() - s
                t = phases(enc, sample, bs)
                t["encode"] = total
                timings[(name, bs)].append(t)
    for name, enc in encs.items():
        for bs, sample in samples.items():
            med = {k: statistics.median(r[k] for r in timings[(name, bs)]) for k in timings[(name, bs)][0]}
            batches, pad_stats = make_batches(enc, sample, bs)
            if enc.manifest.runtime == "openvino":
                ops = profile_openvino(enc, batches, bs, args.threads)
            else:
                ops = profile_onnxruntime(enc, batches, args.threads)
            out[f"{name} b{bs}"] = {"n": len(sample), "phases_s": med, "padding": pad_stats, "ops": ops}
            print(f"{name} b{bs}: done (load {os.getloadavg()[0]:.2f})", file=sys.stderr)
    out["load_end"] = os.getloadavg()
    print(render(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str), encoding="utf-8")
    return 0


def render(out: dict[str, Any]) -> str:
    """Markdown: one table of shares (ops + Python) per run, then the kernels seen."""
    runs = [k for k, v in out.items() if isinstance(v, dict) and "ops" in v]
    lines = [
        f"commit `{out['commit']}`, {out['threads']} threads, load average "
        f"{out['load_start'][0]:.2f} at start, {out['load_end'][0]:.2f} at end",
        "",
        "Share of the plain `encode` wall time (Python phases) and of the graph's profiled operator time:",
        "",
        "| | " + " | ".join(runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]

    def row(label: str, vals: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(vals) + " |")

    row("encode ms per text", [f"{1e3 * out[r]['phases_s']['encode'] / out[r]['n']:.3f}" for r in runs])
    for phase in ("tokenize", "pad", "graph", "head"):
        row(
            f"{phase} (% of encode)",
            [f"{100 * out[r]['phases_s'][phase] / out[r]['phases_s']['encode']:.1f}" for r in runs],
        )
    row(
        "padded tokens that are padding %",
        [f"{100 * out[r]['padding']['padding_share']:.1f}" for r in runs],
    )
    row(
        "attention work (len^2) on padding %",
        [f"{100 * out[r]['padding']['attention_padding_share']:.1f}" for r in runs],
    )
    for cat in CATEGORIES:
        vals = [out[r]["ops"]["by_category"].get(cat, 0.0) / out[r]["ops"]["total_s"] for r in runs]
        if any(v > 0.0005 for v in vals):
            row(f"op: {cat} %", [f"{100 * v:.1f}" for v in vals])
    lines.append("")
    for r in runs:
        ops = out[r]["ops"]
        top = list(ops["by_kernel"].items())[:8]
        lines.append(
            f"- {r}, top kernels: " + "; ".join(f"{k} {100 * s / ops['total_s']:.1f} %" for k, s in top)
        )
        if "runtime_kernels" in ops:
            mm = [k for k in ops["runtime_kernels"] if k.startswith(("FullyConnected", "MatMul", "Scaled"))]
            lines.append(
                f"  matmul kernels in the runtime model: {', '.join(mm)}; SDPA node: "
                f"{ops['sdpa_in_runtime_model']}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
