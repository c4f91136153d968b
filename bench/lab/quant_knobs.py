"""What each quantization knob buys on MiniLM: STS-b Spearman, size, throughput, batch-1 latency, batch
invariance, for ONNX graphs run through edgeembed's Encoder, and (optionally) sentence-transformers'
own `model_qint8_avx512_vnni.onnx` run in the peer venv with backend="onnx".

Indicative only: timings are interleaved (every variant once per round), median of rounds, 2 threads;
other processes share the machine.

    PYTHONPATH=. python bench/lab/quant_knobs.py --artifact /tmp/art \
        --graph fp32=/tmp/art/onnx/model.onnx --graph int8=/tmp/x/onnx/model_qint8_avx512_vnni.onnx \
        --peer /tmp/peer/venv/bin/python:/path/to/st-folder:onnx/model_qint8_avx512_vnni.onnx
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import STS_TEST as STS

from edgeembed.artifact import read_manifest
from edgeembed.encoder import Encoder
from edgeembed.runtimes import RuntimeOptions, load_runtime
from edgeembed.sts import load_sts, sts_score

PEER = textwrap.dedent(
    """
    import json, os, statistics, sys, time
    os.environ["HF_HUB_OFFLINE"] = "1"
    import numpy as np
    from sentence_transformers import SentenceTransformer
    folder, file_name, out = sys.argv[1], sys.argv[2], sys.argv[3]
    sents = json.loads(sys.stdin.readline())
    m = SentenceTransformer(folder, backend="onnx", device="cpu", model_kwargs={"file_name": file_name})
    np.save(out, m.encode(sents, batch_size=32))  # also the warm-up
    print("ready", flush=True)
    for line in sys.stdin:  # one timed round per request, so rounds interleave with ours
        if line.strip() == "lat":
            lat = []
            for s in sents[:200]:
                t = time.perf_counter(); m.encode([s], batch_size=1); lat.append(time.perf_counter() - t)
            print(1000 * statistics.median(lat), flush=True)
            continue
        t = time.perf_counter(); m.encode(sents, batch_size=32); print(time.perf_counter() - t, flush=True)
    """
)


class Peer:
    """sentence-transformers in its own venv, driven round by round over stdin/stdout."""

    def __init__(self, spec: str, sents: list[str]) -> None:
        py, self.folder, self.file_name = spec.split(":")
        self.out = Path("/tmp") / f"peer-emb-{time.time_ns()}.npy"
        self.proc = subprocess.Popen(
            [py, "-c", PEER, self.folder, self.file_name, str(self.out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._ask(json.dumps(sents))

    def _ask(self, line: str) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if not answer:
            raise RuntimeError("the peer process died")
        return answer

    def timed_round(self) -> float:
        return float(self._ask("run"))

    def p50_ms(self) -> float:
        return float(self._ask("lat"))

    def embeddings(self) -> np.ndarray:
        return np.load(self.out)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def encoder_for(artifact: Path, graph: Path, threads: int) -> Encoder:
    m = read_manifest(artifact)
    rt = load_runtime("onnxruntime", graph, RuntimeOptions(threads=threads))
    return Encoder.from_parts(artifact, rt, m.head, m)


def unsorted_bs32(encoder: Encoder, texts: list[str]) -> np.ndarray:
    """Batches of 32 in input order (no length sorting): more padding inside each dynamic-int8 batch."""
    from edgeembed.head import normalize, pool

    out = []
    for i in range(0, len(texts), 32):
        batch = encoder.tokenizer(texts[i : i + 32])
        tokens = encoder.runtime.run(batch.as_inputs(encoder.runtime.input_names))
        out.append(normalize(pool(encoder.head.pooling, tokens, batch.attention_mask)))
    return np.concatenate(out)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--artifact", type=Path, required=True, help="any artifact of the model (tokenizer, head)"
    )
    ap.add_argument("--graph", action="append", default=[], help="name=path.onnx; the first is the reference")
    ap.add_argument("--peer", default=None, help="python:st_folder:file_name run with backend='onnx'")
    ap.add_argument("--sts", type=Path, default=STS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    data = load_sts(args.sts)
    sents = data.sentences
    variants = dict(g.split("=", 1) for g in args.graph)
    encoders = {k: encoder_for(args.artifact, Path(v), args.threads) for k, v in variants.items()}
    emb = {k: e.encode(sents, batch_size=32) for k, e in encoders.items()}  # also a warm-up
    peer = Peer(args.peer, sents) if args.peer else None
    times: dict[str, list[float]] = {k: [] for k in encoders}
    peer_times: list[float] = []
    for _ in range(args.rounds):
        for k, e in encoders.items():
            t = time.perf_counter()
            e.encode(sents, batch_size=32)
            times[k].append(time.perf_counter() - t)
        if peer is not None:
            peer_times.append(peer.timed_round())
    sample = sents[:256]
    rows = {}
    ref = next(iter(emb.values()))
    for k, e in encoders.items():
        lat = []
        for s in sample[:200]:
            t = time.perf_counter()
            e.encode([s], batch_size=1)
            lat.append(time.perf_counter() - t)
        bs1 = e.encode(sample, batch_size=1)
        inv = cosines(bs1, e.encode(sample, batch_size=32))
        inv_unsorted = cosines(bs1, unsorted_bs32(e, sample))
        vs_ref = cosines(ref, emb[k])
        rows[k] = {
            "sts": sts_score(data, emb[k]),
            "mb": Path(variants[k]).stat().st_size / 1e6,
            "sent_s": len(sents) / statistics.median(times[k]),
            "p50_ms": 1000 * statistics.median(lat),
            "cos_ref_mean": float(vs_ref.mean()),
            "cos_ref_min": float(vs_ref.min()),
            "bs1_bs32_mean": float(inv.mean()),
            "bs1_bs32_min": float(inv.min()),
            "bs1_bs32_unsorted_mean": float(inv_unsorted.mean()),
        }
    if peer is not None:
        p50 = peer.p50_ms()
        pe = peer.embeddings()
        peer.close()
        vs_ref = cosines(ref, pe)
        rows["st-onnx:" + Path(peer.file_name).stem] = {
            "sts": sts_score(data, pe),
            "mb": (Path(peer.folder) / peer.file_name).stat().st_size / 1e6,
            "sent_s": len(sents) / statistics.median(peer_times),
            "p50_ms": p50,
            "cos_ref_mean": float(vs_ref.mean()),
            "cos_ref_min": float(vs_ref.min()),
            "bs1_bs32_mean": float("nan"),
            "bs1_bs32_min": float("nan"),
            "bs1_bs32_unsorted_mean": float("nan"),
        }
    base = next(iter(rows.values()))["sent_s"]
    print(f"{len(sents)} sentences, batch 32, {args.threads} threads, median of {args.rounds} (indicative)")
    print(
        f"{'variant':<34}{'STS-b':>7}{'MB':>7}{'sent/s':>8}{'x ref':>7}{'p50 ms':>8}{'cos mean':>10}"
        f"{'cos min':>9}{'bs1~32':>9}{'min':>8}"
    )
    for k, r in rows.items():
        print(
            f"{k:<34}{r['sts']:>7.2f}{r['mb']:>7.1f}{r['sent_s']:>8.0f}{r['sent_s'] / base:>7.2f}{r['p50_ms']:>8.2f}"
            f"{r['cos_ref_mean']:>10.5f}{r['cos_ref_min']:>9.4f}{r['bs1_bs32_mean']:>9.5f}{r['bs1_bs32_min']:>8.4f}"
            f"{r['bs1_bs32_unsorted_mean']:>9.5f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.exit(main())
