"""Where the end-to-end graph's time goes at batch 32, and what ORT session settings change it.

    python bench/lab/e2e_speed.py ARTIFACT [--n 512] [--rounds 3]

ARTIFACT must hold an end-to-end ONNX graph (export --end-to-end). Interleaved rounds in one process
(the machine may be shared: read ratios), same threads for every path, STS-b test sentences:
- python tokenizer: the Encoder (tokenizers in Rust for the whole input, sorted by token count);
- e2e graph: the Encoder on the strings-in graph (onnxruntime-e2e runtime: sequential, memory
  patterns off);
- e2e, parallel executor: the same graph with ExecutionMode.ORT_PARALLEL and 2 inter-op threads;
- e2e, memory patterns on: what the runtime turns off (bench/lab/ort_e2e_crash.py), to price that;
- tokenizer part only: the graph cut after its tokenizer Loop + padding (what the model adds is the rest);
- tokenizers per batch: `tokenizers` on the same batches, one call each (the Rust side of the comparison).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import sts_sentences, use_repo

use_repo()

from edgeembed.encoder import Encoder  # noqa: E402
from edgeembed.runtimes.onnxruntime_e2e import NORMALIZE_KEY, clean_text, e2e_path  # noqa: E402

THREADS = 2


class Session:
    """A strings-in runtime over any ORT session options (bench only)."""

    takes_text = True
    input_names = ("text",)

    def __init__(self, path: Path, parallel: bool, mem_pattern: bool = False) -> None:
        import onnxruntime as ort
        from onnxruntime_extensions import get_library_path

        so = ort.SessionOptions()
        so.register_custom_ops_library(get_library_path())
        so.intra_op_num_threads = THREADS
        so.enable_mem_pattern = mem_pattern
        if parallel:
            so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
            so.inter_op_num_threads = 2
        so.log_severity_level = 3
        self.s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.normalized = self.s.get_modelmeta().custom_metadata_map.get(NORMALIZE_KEY) == "true"
        self.outputs = [self.s.get_outputs()[0].name]

    def run(self, inputs: dict) -> np.ndarray:
        texts = np.array([clean_text(str(t)) for t in inputs["text"]], dtype=object)
        return self.s.run(self.outputs, {"text": texts})[0]


def tokenizer_part(e2e: Path, out: Path) -> Path:
    """The e2e graph cut after the tokenizer Loop and padding (outputs input_ids, attention_mask)."""
    import onnx

    m = onnx.load(str(e2e))
    keep_until = next(i for i, n in enumerate(m.graph.node) if n.name.startswith("e2e/feed_"))
    feeds = [n for n in m.graph.node if n.name.startswith("e2e/feed_")]
    nodes = list(m.graph.node[:keep_until]) + feeds
    used = {i for n in nodes for i in n.input} | {
        i
        for n in nodes
        for a in n.attribute
        if a.type == onnx.AttributeProto.GRAPH
        for x in a.g.node
        for i in x.input
    }
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    inits = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    del m.graph.output[:]
    m.graph.output.extend(
        [onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.INT64, None) for n in feeds]
    )
    del m.graph.value_info[:]
    onnx.save(m, str(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    sentences = sts_sentences()[: a.n]
    tokens = Encoder.load(a.artifact, threads=THREADS, verify=False)
    e2e = e2e_path(a.artifact / tokens.manifest.graph)
    if tokens.manifest.end_to_end:
        e2e = a.artifact / tokens.manifest.end_to_end["graph"]
    root, head = a.artifact, tokens.head
    paths = {
        "python tokenizer": tokens,
        "e2e graph": Encoder.load(a.artifact, runtime="onnxruntime-e2e", threads=THREADS, verify=False),
        "e2e, parallel executor": Encoder.from_parts(root, Session(e2e, True), head),
        # short STS texts only (no truncation), so the memory-pattern crash cannot trigger here
        "e2e, memory patterns on": Encoder.from_parts(root, Session(e2e, False, True), head),
    }
    tmp = Path(tempfile.mkdtemp())
    tok_only = Session(tokenizer_part(e2e, tmp / "tok.onnx"), False)
    from tokenizers import Tokenizer

    rust = Tokenizer.from_file(str(root / "tokenizer.json"))
    rust.enable_truncation(max_length=head.max_seq_length)
    rust.enable_padding()
    order = np.argsort([-len(t) for t in sentences], kind="stable")
    batches = [[sentences[i] for i in order[s : s + 32]] for s in range(0, len(order), 32)]
    extra = {
        "tokenizer part only": lambda: [
            tok_only.s.run(None, {"text": np.array(b, dtype=object)}) for b in batches
        ],
        "tokenizers per batch": lambda: [rust.encode_batch(b) for b in batches],
    }
    for enc in paths.values():
        enc.encode(sentences[:64], batch_size=32)
    res: dict[str, list[float]] = {k: [] for k in [*paths, *extra]}
    for _ in range(a.rounds):
        for name, enc in paths.items():
            t = time.perf_counter()
            enc.encode(sentences, batch_size=32)
            res[name].append(len(sentences) / (time.perf_counter() - t))
        for name, fn in extra.items():
            t = time.perf_counter()
            fn()
            res[name].append(len(sentences) / (time.perf_counter() - t))
    load = os.getloadavg()
    print(
        f"{a.artifact.name}: {len(sentences)} STS-b sentences, batch 32, {THREADS} threads, {a.rounds} rounds, "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    base = statistics.median(res["python tokenizer"])
    for name, v in res.items():
        med = statistics.median(v)
        print(
            f"| {name} | {med:.0f} sent/s | x{med / base:.2f} vs python tokenizer | rounds {[round(x) for x in v]} |"
        )


if __name__ == "__main__":
    main()
