"""One measurement of one variant, in a fresh process: cold start, throughput, latency, peak RSS.

Self-contained on purpose (stdlib + numpy only): the same file runs under edgeembed's interpreter
and under the peer's (a venv with sentence-transformers but no edgeembed), executed by path:

    python worker.py JOB.json SPAWN_TIME

SPAWN_TIME is the parent's `time.time()` just before it started this process, so cold start covers
interpreter start, imports, model load and the first embedding. The result is written as JSON to
`job["result"]`; embeddings (optional) to `job["embeddings"]` as float32 .npy.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from importlib import metadata

# Run by path, sys.path[0] is this folder; drop it so that sibling modules never shadow anything.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

# distribution -> module: a version is reported only for libraries this process actually loaded.
VERSIONED = {
    "numpy": "numpy",
    "tokenizers": "tokenizers",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "torch": "torch",
    "transformers": "transformers",
    "sentence-transformers": "sentence_transformers",
    "optimum-onnx": "optimum.onnxruntime",
    "optimum-intel": "optimum.intel",
}


def peak_rss_mb() -> float:
    """Peak resident set size of this process image so far, in MB (2**20 bytes).

    On Linux this is VmHWM from /proc/self/status: getrusage's ru_maxrss survives execve, so a worker
    started by a big parent would report the parent's peak. Elsewhere ru_maxrss (KiB; bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def load_edgeembed(job: dict):
    if job.get("import_path"):
        sys.path.insert(0, job["import_path"])
    from edgeembed.encoder import Encoder

    options = job.get("options")
    if options:  # RuntimeOptions fields (bench/memory.py's settings)
        from edgeembed.runtimes import RuntimeOptions

        enc = Encoder.load(job["path"], options=RuntimeOptions(threads=job["threads"], **options))
    else:
        enc = Encoder.load(job["path"], threads=job["threads"])

    # Encoder.encode keywords beyond the batch size (bench/memory.py's `max_batch_tokens`), the same for
    # every call of the run.
    extra = job.get("encode_options") or {}

    def encode(texts: list[str], batch_size: int):
        return enc.encode(texts, batch_size=batch_size, **extra)

    return encode


def load_sentence_transformers(job: dict):
    import torch

    torch.set_num_threads(job.get("torch_threads") or job["threads"])
    from sentence_transformers import SentenceTransformer

    backend = job.get("backend") or "torch"
    kwargs = dict(job.get("model_kwargs") or {})
    if backend == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = job["threads"]
        so.inter_op_num_threads = 1
        kwargs["session_options"] = so
        kwargs.setdefault("provider", "CPUExecutionProvider")
    elif backend == "openvino":
        kwargs["ov_config"] = {**kwargs.get("ov_config", {}), "INFERENCE_NUM_THREADS": str(job["threads"])}
    model = SentenceTransformer(job["path"], device="cpu", backend=backend, model_kwargs=kwargs or None)

    def encode(texts: list[str], batch_size: int):
        return model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)

    return encode


LOADERS = {"edgeembed": load_edgeembed, "sentence-transformers": load_sentence_transformers}


def versions() -> dict[str, str]:
    out = {"python": ".".join(map(str, sys.version_info[:3]))}
    edgeembed = sys.modules.get("edgeembed")
    if edgeembed is not None:
        out["edgeembed"] = getattr(edgeembed, "__version__", "?")
    for dist, module in VERSIONED.items():
        if module in sys.modules:
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
    return out


def measure(job: dict, spawn_time: float) -> dict:
    import numpy as np

    with open(job["sentences"], encoding="utf-8") as f:
        sentences: list[str] = json.load(f)
    latency_idx: list[int] = job["latency_indices"]
    bs = int(job["batch_size"])

    t_load = time.time()
    encode = LOADERS[job["kind"]](job)
    t_loaded = time.time()
    encode([sentences[0]], 1)
    t_first = time.time()
    rss_first = peak_rss_mb()

    encode(sentences[: bs * job.get("warmup_batches", 2)], bs)  # warm-up: allocators, kernels, caches

    t0 = time.perf_counter()
    emb = np.asarray(encode(sentences, bs), dtype=np.float32)
    seconds = time.perf_counter() - t0

    # Untimed batch-1 call first: an OpenVINO Encoder without a set hint recompiles for latency here.
    encode([sentences[0]], 1)
    latencies = []
    for i in latency_idx:
        s = [sentences[i]]
        t = time.perf_counter()
        encode(s, 1)
        latencies.append(time.perf_counter() - t)

    if job.get("embeddings"):
        np.save(job["embeddings"], emb)
    if job.get("recall_texts") and job.get("recall_embeddings"):  # untimed: the recall column's corpus
        with open(job["recall_texts"], encoding="utf-8") as f:
            docs: list[str] = json.load(f)
        np.save(job["recall_embeddings"], np.asarray(encode(docs, bs), dtype=np.float32))
    return {
        "cold_start_s": t_first - spawn_time,
        "startup_s": t_load - spawn_time,
        "load_s": t_loaded - t_load,
        "first_embedding_s": t_first - t_loaded,
        "rss_at_first_embedding_mb": rss_first,
        "peak_rss_mb": peak_rss_mb(),
        "throughput_seconds": seconds,
        "n_sentences": len(sentences),
        "throughput": len(sentences) / seconds,
        "latencies_s": latencies,
        "dim": int(emb.shape[1]),
        "torch_loaded": "torch" in sys.modules,
        "versions": versions(),
        "pid": os.getpid(),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: worker.py JOB.json SPAWN_TIME", file=sys.stderr)
        return 2
    spawn_time = float(argv[2])
    with open(argv[1], encoding="utf-8") as f:
        job = json.load(f)
    result = measure(job, spawn_time)
    with open(job["result"], "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
