"""Per-token dynamic int8 with ONNX Runtime's MatMulInteger (issue 22: batch-invariant dynamic int8 at the
speed of per-tensor). Each constant-weight MatMul of the fused fp32 graph (Attention's QKV projection split
out first, as `--activations row` does) becomes:

    s = ReduceMax(|x|, last axis) / 127           one scale per token row: no row sees another's
    q = QuantizeLinear(x / s, 1, 128) -> uint8    symmetric, shifted by a constant zero point
    y = MatMulIntegerToFloat(q, W_int8, 1, w_scale[N], 128) * s

with W quantized symmetric per output column. `--activations row` (MatMulNBits, accuracy_level 4) is
per row too, but its CompInt8 kernel is not MLAS's u8s8/s8s8 GEMM that MatMulInteger (and so per-tensor
dynamic int8) runs on, which on AMX has tile kernels. Writes an artifact folder: a copy of the --like
artifact (an onnxruntime one with the same head) with the rewritten graph in place of its own; load it
with verify=False (its checksums are the copy's).

    python bench/lab/int8_tokens.py /work/runs/a/onnx-fused/onnx/model_O2.onnx \
        --like /work/runs/a/onnx-fused-int8-row --out /work/runs/a/onnx-fused-int8-tokens
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import use_repo

use_repo()

from edgeembed.steps.onnx_int8 import split_attention  # noqa: E402


def per_token(model: onnx.ModelProto) -> int:
    """Rewrite every MatMul whose second input is a 2-D float initializer; returns how many."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consts = {
        "tok_axes": numpy_helper.from_array(np.array([-1], np.int64), "tok_axes"),
        "tok_inv127": numpy_helper.from_array(np.array(1 / 127, np.float32), "tok_inv127"),
        "tok_tiny": numpy_helper.from_array(np.array(1e-30, np.float32), "tok_tiny"),
        "tok_one": numpy_helper.from_array(np.array(1.0, np.float32), "tok_one"),
        "tok_z128": numpy_helper.from_array(np.array(128, np.uint8), "tok_z128"),
    }
    nodes, done = [], 0
    for node in graph.node:
        w = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if w is None or len(w.dims) != 2 or w.data_type != TensorProto.FLOAT:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(w)
        k = weight.shape[0]
        w_scale = np.maximum(np.abs(weight).max(axis=0), 1e-30) / 127
        wq = np.clip(np.round(weight / w_scale), -127, 127).astype(np.int8)
        p = f"{node.name or node.output[0]}_tok"
        graph.initializer.extend(
            [numpy_helper.from_array(wq, f"{p}_W"), numpy_helper.from_array(w_scale.astype(np.float32), f"{p}_ws")]
        )
        x = node.input[0]
        nodes += [
            helper.make_node("Abs", [x], [f"{p}_abs"]),
            helper.make_node("ReduceMax", [f"{p}_abs", "tok_axes"], [f"{p}_max"], keepdims=1),
            helper.make_node("Mul", [f"{p}_max", "tok_inv127"], [f"{p}_s0"]),
            helper.make_node("Max", [f"{p}_s0", "tok_tiny"], [f"{p}_s"]),  # an all-zero row: no 0/0
            helper.make_node("Div", [x, f"{p}_s"], [f"{p}_d"]),
            # Shifted into uint8 by a constant zero point 128: MLAS's fast GEMM is u8 x s8 (s8 x s8
            # MatMulInteger ran ~25x slower here), and a constant zero point keeps rows independent.
            helper.make_node("QuantizeLinear", [f"{p}_d", "tok_one", "tok_z128"], [f"{p}_q"]),
            helper.make_node(
                "MatMulIntegerToFloat",
                [f"{p}_q", f"{p}_W", "tok_one", f"{p}_ws", "tok_z128"],
                [f"{p}_f"],
                domain="com.microsoft",
            ),
            helper.make_node("Mul", [f"{p}_f", f"{p}_s"], list(node.output)),
        ]
        done += 1
    graph.ClearField("node")
    graph.node.extend(nodes)
    graph.initializer.extend(consts.values())
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(keep)
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = max(imp.version, 21)
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fused", type=Path, help="the fused fp32 graph (onnx/model_O2.onnx of an --optimize all export)")
    ap.add_argument("--like", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    model = onnx.load(str(args.fused))
    split = split_attention(model)
    n = per_token(model)
    shutil.copytree(args.like, args.out)
    manifest = json.loads((args.out / "edgeembed.json").read_text(encoding="utf-8"))
    graph = args.out / manifest["graphs"][0]["file"]
    with tempfile.TemporaryDirectory() as tmp:
        mid = Path(tmp) / "tokens.onnx"
        onnx.save(model, str(mid))
        # Embedding tables int8 weight-only, as --activations row does (no activation quantized there).
        quantize_dynamic(
            str(mid), str(graph), op_types_to_quantize=["Gather", "EmbedLayerNormalization"],
            weight_type=QuantType.QInt8, use_external_data_format=False,
        )
    for extra in args.out.glob(graph.name + "_data"):
        extra.unlink()
    print(f"{split} attention projections split, {n} MatMuls per token; wrote {graph}")


if __name__ == "__main__":
    main()
