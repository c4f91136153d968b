"""Which int8 GEMM kernel ONNX Runtime runs on this CPU, read from its speed.

Why: the roofline (bench/roofline.py) needs to know whether ORT's int8 matmuls run at the AVX-512 VNNI
peak (2 x 64 u8s8 MACs per cycle per core, 666 GOP/s at 2.6 GHz) or on AMX tiles. A single-node graph
(MatMulInteger, and com.microsoft DynamicQuantizeMatMul with its per-call quantization of A) at MiniLM's
FFN shape (K 384, N 1536) on one thread, for row counts from batch 1 (13 tokens) up; a rate above the
VNNI peak can only come from AMX. Usage: python bench/lab/ort_int8_gemm.py [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

K, N = 384, 1536
ROWS = (13, 64, 256, 832, 4096)


def session(kind: str, threads: int, rng: np.random.Generator) -> ort.InferenceSession:
    weights = numpy_helper.from_array(rng.integers(-127, 127, (K, N), dtype=np.int8), "B")
    if kind == "MatMulInteger":
        nodes = [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])]
        inits, in_type, out_type = [weights], TensorProto.UINT8, TensorProto.INT32
    else:
        nodes = [
            helper.make_node("DynamicQuantizeMatMul", ["A", "B", "S", "", ""], ["Y"], domain="com.microsoft")
        ]
        scale = numpy_helper.from_array(np.array([0.01], np.float32), "S")
        inits, in_type, out_type = [weights, scale], TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "gemm",
        [helper.make_tensor_value_info("A", in_type, [None, K])],
        [helper.make_tensor_value_info("Y", out_type, [None, N])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"onnxruntime {ort.__version__}, {args.threads} thread(s), K {K}, N {N}; GOP/s (median)")
    for kind in ("MatMulInteger", "DynamicQuantizeMatMul"):
        sess = session(kind, args.threads, rng)
        for m in ROWS:
            if kind == "MatMulInteger":
                a = rng.integers(0, 255, (m, K), dtype=np.uint8)
            else:
                a = rng.standard_normal((m, K), dtype=np.float32)
            sess.run(None, {"A": a})
            times = []
            for _ in range(max(5, 20000 // m)):
                t = time.perf_counter()
                sess.run(None, {"A": a})
                times.append(time.perf_counter() - t)
            print(f"{kind:22s} M {m:5d}  {2 * m * K * N / np.median(times) / 1e9:7.0f}")


if __name__ == "__main__":
    main()
