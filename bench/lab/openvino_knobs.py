"""OpenVINO variants through the Encoder vs sentence-transformers' backend="openvino" (indicative).

Each measurement runs in a fresh process (ours in this venv, the peer's in a venv with
sentence-transformers + optimum-intel); variants are interleaved round by round and the median is kept.
Measures: sentences/s on the unique STS-b test sentences at batch 32, batch-1 p50 latency, STS-b
Spearman, graph size.

    # 1. our artifacts (this venv) and the peer's models (peer venv)
    python bench/lab/openvino_knobs.py prepare --work /tmp/ovbench
    /tmp/peer/venv/bin/python bench/lab/openvino_knobs.py prepare-peer --work /tmp/ovbench
    # 2. measure: a fresh process per variant and round (also STS-b, size) ...
    python bench/lab/openvino_knobs.py run --work /tmp/ovbench --peer-python /tmp/peer/venv/bin/python
    # ... and speed ratios with all variants in one process, alternated slice by slice (less noisy)
    /tmp/peer/venv/bin/python bench/lab/openvino_knobs.py interleaved --work /tmp/ovbench
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import REPO, STS_DIR, STS_TEST, export_missing, interleaved_seconds, sts_sentences, use_repo

THREADS = 2
BS1_TEXTS = 200

# name -> (kind, artifact subfolder, option); kind "ours" runs the Encoder with option "hint[/precision]",
# "peer" runs sentence-transformers with option = the IR file name.
VARIANTS = {
    "ours ov fp32 (latency)": ("ours", "fp32", "latency"),
    "ours ov fp32 (throughput)": ("ours", "fp32", "throughput"),
    "ours ov static int8 (latency)": ("ours", "static", "latency"),
    "ours ov static int8 (throughput)": ("ours", "static", "throughput"),
    "ours ov fp32 bf16 (throughput)": ("ours", "fp32", "throughput/bf16"),
    "ours ov static int8 bf16 (throughput)": ("ours", "static", "throughput/bf16"),
    "ours ov weights-int8": ("ours", "weights-int8", "latency"),
    "ours ov weights-int4": ("ours", "weights-int4", "latency"),
    "ours onnx fp32": ("ours", "onnx", None),
    "st openvino fp32": ("peer", "peer", "openvino/openvino_model.xml"),
    "st openvino qint8_quantized": ("peer", "peer", "openvino/openvino_model_qint8_quantized.xml"),
}


use_repo()


def prepare(work: Path) -> None:
    from edgeembed.calibration import CalibrationConfig

    calib = CalibrationConfig(str(STS_DIR / "sts-train.csv"), size=300)
    sts = STS_TEST
    jobs = {
        "onnx": {"format": "onnx"},
        "fp32": {"format": "openvino"},
        "static": {"format": "openvino", "quantize": "static", "calibration": calib, "sts": sts},
        "weights-int8": {"format": "openvino", "quantize": "weights-int8", "sts": sts},
        "weights-int4": {"format": "openvino", "quantize": "weights-int4", "sts": sts},
    }
    export_missing(work, jobs, THREADS)
    # Calibration folder for the peer: STS-b train sentences, column `sentence`.
    (work / "peer_calib").mkdir(parents=True, exist_ok=True)
    from edgeembed.sts import load_sts

    with (work / "peer_calib" / "train.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["sentence"])
        for s in load_sts(STS_DIR / "sts-train.csv").sentences:
            w.writerow([s])


def prepare_peer(work: Path) -> None:
    """Runs in the peer venv: the source folder exported by optimum-intel, then ST's static int8."""
    import shutil

    from optimum.intel import OVQuantizationConfig
    from sentence_transformers import SentenceTransformer, export_static_quantized_openvino_model

    src = Path(json.loads((work / "fp32" / "edgeembed.json").read_text())["source"]["path"])
    dst = work / "peer"
    if (dst / "openvino" / "openvino_model_qint8_quantized.xml").is_file():
        return
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    model = SentenceTransformer(str(dst), backend="openvino", device="cpu")
    model.save_pretrained(str(dst))
    export_static_quantized_openvino_model(
        model,
        OVQuantizationConfig(num_samples=300),
        str(dst),
        dataset_name=str(work / "peer_calib"),
        dataset_config_name="default",
        dataset_split="train",
        column_name="sentence",
    )


def _measure(encode_batch, encode_one, texts: list[str]) -> dict:
    encode_batch(texts[:64])  # warm-up: first inference, thread pools
    t = time.perf_counter()
    emb = encode_batch(texts)
    throughput = len(texts) / (time.perf_counter() - t)
    lat = []
    for s in texts[:BS1_TEXTS]:
        t = time.perf_counter()
        encode_one(s)
        lat.append(time.perf_counter() - t)
    return {"sent_per_s": throughput, "bs1_p50_ms": 1000 * statistics.median(lat), "emb": emb}


def _options(option: str):
    from edgeembed.runtimes import RuntimeOptions

    hint, _, precision = (option or "").partition("/")
    return RuntimeOptions(threads=THREADS, hint=hint or None, precision=precision or None)


def worker(variant: str, work: Path, out: Path) -> None:
    kind, folder, option = VARIANTS[variant]
    texts = sts_sentences()
    root = work / folder
    if kind == "ours":
        from edgeembed.encoder import Encoder

        enc = Encoder.load(root, options=_options(option))
        res = _measure(lambda x: enc.encode(x, batch_size=32), enc.encode, texts)
        graph = root / enc.manifest.graph
    else:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(THREADS)
        ov_config = {"INFERENCE_NUM_THREADS": str(THREADS), "PERFORMANCE_HINT": "LATENCY"}
        model = SentenceTransformer(
            str(root),
            backend="openvino",
            device="cpu",
            model_kwargs={"file_name": option, "ov_config": ov_config},
        )
        res = _measure(
            lambda x: model.encode(x, batch_size=32, normalize_embeddings=True),
            lambda s: model.encode([s]),
            texts,
        )
        graph = root / option
    emb = res.pop("emb")
    from edgeembed.sts import load_sts, sts_score

    res["sts"] = sts_score(load_sts(STS_TEST), emb)
    files = [graph] + ([graph.with_suffix(".bin")] if graph.suffix == ".xml" else [])
    res["size_mb"] = sum(p.stat().st_size for p in files) / 1e6
    out.write_text(json.dumps(res))


def run(work: Path, peer_python: str, rounds: int, only: list[str] | None) -> None:
    names = [v for v in VARIANTS if not only or any(o in v for o in only)]
    results: dict[str, list[dict]] = {v: [] for v in names}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(THREADS)}
    for r in range(rounds):
        for v in names:
            python = peer_python if VARIANTS[v][0] == "peer" else sys.executable
            out = work / "result.json"
            cmd = [python, __file__, "worker", "--work", str(work), "--variant", v, "--out", str(out)]
            subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
            results[v].append(json.loads(out.read_text()))
            print(f"round {r + 1} {v}: {results[v][-1]['sent_per_s']:.0f} sent/s", file=sys.stderr)
    peer_fp32 = "st openvino fp32"
    peer_q = "st openvino qint8_quantized"

    def med(v: str, key: str) -> float:
        return statistics.median(x[key] for x in results[v])

    lines = [
        "| variant | sent/s (bs 32) | vs ST ov fp32 | vs ST ov qint8 | bs1 p50 ms | STS-b | size MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in names:
        sps = med(v, "sent_per_s")
        r1 = f"{sps / med(peer_fp32, 'sent_per_s'):.2f}x" if peer_fp32 in results else "-"
        r2 = f"{sps / med(peer_q, 'sent_per_s'):.2f}x" if peer_q in results else "-"
        lines.append(
            f"| {v} | {sps:.0f} | {r1} | {r2} | {med(v, 'bs1_p50_ms'):.2f} | "
            f"{results[v][0]['sts']:.2f} | {results[v][0]['size_mb']:.1f} |"
        )
    print("\n".join(lines))
    (work / "openvino_knobs.json").write_text(json.dumps(results, indent=1))


def _encoders(work: Path, names: list[str]) -> dict:
    """name -> (encode_batch, encode_one) for every variant, all in this process."""
    from edgeembed.encoder import Encoder

    out = {}
    for v in names:
        kind, folder, option = VARIANTS[v]
        if kind == "ours":
            enc = Encoder.load(work / folder, options=_options(option))
            out[v] = (lambda x, e=enc: e.encode(x, batch_size=32), enc.encode)
        else:
            from sentence_transformers import SentenceTransformer

            ov_config = {"INFERENCE_NUM_THREADS": str(THREADS), "PERFORMANCE_HINT": "LATENCY"}
            m = SentenceTransformer(
                str(work / folder),
                backend="openvino",
                device="cpu",
                model_kwargs={"file_name": option, "ov_config": ov_config},
            )
            out[v] = (
                lambda x, m=m: m.encode(x, batch_size=32, normalize_embeddings=True),
                lambda t, m=m: m.encode([t]),
            )
    return out


def interleaved(work: Path, rounds: int, only: list[str] | None, slices: int = 10) -> None:
    """Every variant in one process (run with the peer's python, which has both stacks and the same
    openvino), alternated slice by slice so that load from other processes hits all alike."""
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    names = [v for v in VARIANTS if not only or any(o in v for o in only)]
    texts = sts_sentences()
    encs = _encoders(work, names)
    for b, _ in encs.values():
        b(texts[:64])
    rng = np.random.default_rng(0)
    shuffled = [texts[i] for i in rng.permutation(len(texts))]
    parts = [shuffled[i::slices] for i in range(slices)]
    totals: dict[str, list[float]] = {v: [] for v in names}
    batch_32 = {v: encs[v][0] for v in names}
    for r, acc in enumerate(interleaved_seconds(batch_32, parts, rounds)):
        for v in names:
            totals[v].append(len(texts) / acc[v])
        print(f"round {r + 1}: " + ", ".join(f"{v} {totals[v][-1]:.0f}" for v in names), file=sys.stderr)
    lat: dict[str, list[float]] = {v: [] for v in names}
    for i, s in enumerate(texts[:BS1_TEXTS]):
        rot = names[i % len(names) :] + names[: i % len(names)]
        for v in rot:
            t = time.perf_counter()
            encs[v][1](s)
            lat[v].append(time.perf_counter() - t)
    base = "st openvino fp32"
    baseq = "st openvino qint8_quantized"
    med = {v: statistics.median(totals[v]) for v in names}
    print("| variant | sent/s (bs 32) | vs ST ov fp32 | vs ST ov qint8 | bs1 p50 ms |")
    print("|---|---|---|---|---|")
    for v in names:
        r1 = f"{med[v] / med[base]:.2f}x" if base in med else "-"
        r2 = f"{med[v] / med[baseq]:.2f}x" if baseq in med else "-"
        print(f"| {v} | {med[v]:.0f} | {r1} | {r2} | {1000 * statistics.median(lat[v]):.2f} |")
    (work / "openvino_interleaved.json").write_text(json.dumps({"sent_per_s": totals, "bs1_s": lat}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["prepare", "prepare-peer", "run", "interleaved", "worker"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/ovbench"))
    ap.add_argument("--peer-python", default="/tmp/peer/venv/bin/python")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="substrings of variant names to run")
    ap.add_argument("--variant")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.mode == "prepare":
        prepare(a.work)
    elif a.mode == "prepare-peer":
        prepare_peer(a.work)
    elif a.mode == "interleaved":
        interleaved(a.work, a.rounds, a.only)
    elif a.mode == "run":
        run(a.work, a.peer_python, a.rounds, a.only)
    else:
        worker(a.variant, a.work, a.out)


if __name__ == "__main__":
    main()
