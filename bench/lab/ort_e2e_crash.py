"""Minimal reproduction: onnxruntime-extensions' BertTokenizer inside an ONNX `Loop` + ONNX Runtime's
memory patterns -> heap corruption, then a segfault on a later run (onnxruntime 1.32.0,
onnxruntime-extensions 0.15.2, x86_64 Linux, CPU EP; same with the graph converted to .ort).

    python bench/lab/ort_e2e_crash.py [VOCAB_TXT [MAX_LENGTH]]   # memory patterns on (ORT's default): segfault
    python bench/lab/ort_e2e_crash.py --no-mem-pattern           # enable_mem_pattern = False: ok

Trigger: a text of more than ~300 word pieces, truncated by the op to max_length (256), goes through the
Loop; the next run (same or shorter text) dies in free() inside onnxruntime (gdb: libc free(0xd2) under
nested subgraph execution; valgrind: "Invalid free" in onnxruntime_pybind11_state.so on the second run).
Whether a given process crashes depends on heap layout (a graph differing by one unused node output
may survive), which is why the build's gate (texts in input order, the long one last) never hit it and
the crash first showed up after `.ort` conversion. The tokenizer alone (no Loop) did not crash here.
edgeembed's end-to-end runtime therefore opens its session with enable_mem_pattern=False, and an app
shipping model_e2e.onnx/.ort must do the same (README, mobile section).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime_extensions import get_library_path

VOCAB = "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat"])


def model(vocab: str, max_length: int) -> onnx.ModelProto:
    """text (n,) -> flat token ids of all texts: Loop over texts, one BertTokenizer call each."""
    body = helper.make_graph(
        [
            helper.make_node("Gather", ["text", "i"], ["t0"], axis=0),
            helper.make_node("Unsqueeze", ["t0", "axis0"], ["t1"]),
            helper.make_node(
                "BertTokenizer",
                ["t1"],
                ["ids", "types", "mask", "offsets"],
                domain="ai.onnx.contrib",
                vocab_file=vocab,
                do_lower_case=1,
                strip_accents=1,
                max_length=max_length,
            ),
            helper.make_node("Concat", ["flat_in", "ids"], ["flat_out"], axis=0),
            helper.make_node("Identity", ["cond"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("flat_in", TensorProto.INT64, [None]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("flat_out", TensorProto.INT64, [None]),
        ],
        initializer=[numpy_helper.from_array(np.array([0], np.int64), "axis0")],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["text"], ["n1"]),
            helper.make_node("Squeeze", ["n1"], ["n"]),
            helper.make_node("Loop", ["n", "true", "flat0"], ["flat"], body=body),
        ],
        "repro",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("flat", TensorProto.INT64, [None])],
        initializer=[
            numpy_helper.from_array(np.array(True), "true"),
            numpy_helper.from_array(np.zeros((0,), np.int64), "flat0"),
        ],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.contrib", 1)]
    )


def main() -> None:
    so = ort.SessionOptions()
    so.register_custom_ops_library(get_library_path())
    so.enable_mem_pattern = "--no-mem-pattern" not in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    vocab = Path(args[0]).read_text(encoding="utf-8") if args else VOCAB  # e.g. a BERT vocab.txt
    max_length = int(args[1]) if len(args) > 1 else 256
    s = ort.InferenceSession(
        model(vocab, max_length).SerializeToString(), so, providers=["CPUExecutionProvider"]
    )
    print(f"onnxruntime {ort.__version__}, mem_pattern={so.enable_mem_pattern}", flush=True)
    for words in (400, 400, 200, 45, 3):
        ids = s.run(None, {"text": np.array(["the cat " * words], dtype=object)})[0]
        print(f"{2 * words} words -> {ids.shape[0]} ids", flush=True)
    print("ok: no crash")


if __name__ == "__main__":
    main()
