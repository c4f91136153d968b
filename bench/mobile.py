"""Mobile/edge artifacts of all-MiniLM-L6-v2: validation numbers, sizes, speed, cold start -> bench/MOBILE.md.

    python bench/mobile.py [--work bench/.work/mobile] [--reuse] [--rounds 3]

Exports fp32, fused dynamic int8 (this CPU), dynamic_arm64 and static_arm64 artifacts, adds to each the
end-to-end ONNX graph, its .ort and required_operators.config (and, for fp32, the OpenVINO end-to-end
IR), then measures:
- token ids of the in-graph tokenizers vs `tokenizers` on the unique STS-b test sentences + hard cases;
- end-to-end embeddings vs the Encoder on the same artifact, one text per call on both sides (cosine);
- .ort vs its ONNX source (max abs diff), batch of 32;
- size of each shippable file;
- throughput (batch 32) and batch-1 latency: e2e graph via the Encoder (strings runtime) vs the
  Python-tokenizer Encoder, interleaved in one process, same threads;
- cold start and peak RSS of a bare onnxruntime process loading only the .ort (fresh process per run).
The machine may be shared: read ratios from one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgeembed.build import export  # noqa: E402
from edgeembed.calibration import CalibrationConfig  # noqa: E402
from edgeembed.encoder import Encoder, load_dense  # noqa: E402
from edgeembed.runtimes.onnxruntime_e2e import clean_text, e2e_path  # noqa: E402
from edgeembed.shippable import operator_set  # noqa: E402
from edgeembed.steps.e2e_onnx import HARD_CASES, build_e2e, compare_token_ids  # noqa: E402
from edgeembed.steps.ort_format import convert_to_ort  # noqa: E402
from edgeembed.sts import load_sts  # noqa: E402

STS = REPO.parent / "shared" / "data" / "stsbenchmark"
THREADS = 2
VARIANTS = {
    "fp32": {},
    "int8 dynamic (fused, avx512_vnni)": {"optimize": "all", "quantize": "dynamic"},
    "int8 dynamic_arm64": {"quantize": "dynamic_arm64"},
    "int8 static_arm64": {"quantize": "static_arm64"},
}

# Peak RSS from VmHWM: ru_maxrss survives exec on Linux and would report the parent's peak.
COLD = """
import sys, time
t0 = time.perf_counter()
import numpy as np, onnxruntime as ort
so = ort.SessionOptions(); so.register_custom_ops_library(sys.argv[2]); so.intra_op_num_threads = {threads}
so.enable_mem_pattern = False  # see bench/ort_e2e_crash.py
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
t1 = time.perf_counter()
e = s.run(None, {{"text": np.array(["A man is playing a guitar."], dtype=object)}})[0]
t2 = time.perf_counter()
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(t1 - t0, t2 - t0, hwm / 1024, e.shape[1])
"""

COLD_ENCODER = """
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, {repo!r})
from edgeembed.encoder import Encoder
enc = Encoder.load(sys.argv[1], threads={threads})
t1 = time.perf_counter()
e = enc.encode(["A man is playing a guitar."])
t2 = time.perf_counter()
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(t1 - t0, t2 - t0, hwm / 1024, e.shape[1])
"""


def mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def build(work: Path, reuse: bool) -> dict[str, Path]:
    arts = {}
    for i, (name, kwargs) in enumerate(VARIANTS.items()):
        out = work / f"v{i}"
        if not (reuse and (out / "edgeembed.json").is_file()):
            if "static" in str(kwargs.get("quantize")):
                kwargs = {**kwargs, "calibration": CalibrationConfig(STS / "sts-train.csv", size=300)}
            export(None, out, overwrite=True, threads=THREADS, **kwargs)
        enc = Encoder.load(out, verify=False)
        graph = out / enc.manifest.graph
        e2e = e2e_path(graph)
        if not (reuse and e2e.is_file()):
            build_e2e(graph, out / "tokenizer.json", enc.head, load_dense(out, enc.head), e2e)
            convert_to_ort([e2e], out / "ort")
        arts[name] = out
    return arts


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def validate(art: Path, sentences: list[str], ov: bool) -> dict:
    tokens = Encoder.load(art, threads=THREADS, verify=False)
    strings = Encoder.load(art, runtime="onnxruntime-e2e", threads=THREADS, verify=False)
    e2e = e2e_path(art / tokens.manifest.graph)
    texts = [*sentences, *HARD_CASES]
    mism = compare_token_ids(e2e, art / "tokenizer.json", tokens.head, texts)
    bad = {m.index for m in mism}
    checked = [t for i, t in enumerate(texts) if i not in bad]
    ref = np.stack([tokens.encode([clean_text(t)])[0] for t in checked])
    got = np.stack([strings.encode([t])[0] for t in checked])
    cos = cosines(ref, got)
    ort_file = art / "ort" / f"{e2e.stem}.ort"
    from edgeembed.runtimes import RuntimeOptions
    from edgeembed.runtimes.onnxruntime_e2e import OnnxRuntimeE2E

    a = OnnxRuntimeE2E(e2e, RuntimeOptions(threads=THREADS))
    b = OnnxRuntimeE2E(ort_file, RuntimeOptions(threads=THREADS))
    batch = np.array(sentences[:32], dtype=object)
    out = {
        "token_mismatches_sts": sum(1 for m in mism if m.index < len(sentences)),
        "token_mismatches_hard": sum(1 for m in mism if m.index >= len(sentences)),
        "mismatched_texts": [m.text[:80] for m in mism],
        "texts_compared": len(checked),
        "min_cosine_e2e_vs_encoder": float(cos.min()),
        "mean_cosine_e2e_vs_encoder": float(cos.mean()),
        "ort_vs_onnx_max_abs_diff": float(np.abs(a.run({"text": batch}) - b.run({"text": batch})).max()),
        "operators": operator_set(ort_file),
    }
    if ov:
        out["openvino"] = validate_openvino(art, sentences, tokens)
    return out


def validate_openvino(art: Path, sentences: list[str], tokens: Encoder) -> dict:
    import openvino as ov

    from edgeembed.steps.e2e_openvino import build_e2e_openvino, compare_token_ids_openvino

    xml = art / "openvino" / "openvino_model_e2e.xml"
    build_e2e_openvino(
        art / tokens.manifest.graph,
        art / "tokenizer.json",
        tokens.head,
        load_dense(art, tokens.head),
        xml,
    )
    mism = compare_token_ids_openvino(art / "tokenizer.json", tokens.head, [*sentences, *HARD_CASES])
    compiled = ov.compile_model(
        str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": THREADS}
    )
    some = sentences[:300]
    got = np.stack([compiled([clean_text(t)])[0][0] for t in some])
    ref = np.stack([tokens.encode([t])[0] for t in some])
    cos = cosines(ref, got)
    return {
        "token_mismatches": len(mism),
        "mismatched_texts": [m.text[:80] for m in mism],
        "min_cosine_vs_encoder_300": float(cos.min()),
        "size_mb": mb(xml) + mb(xml.with_suffix(".bin")),
    }


def speed(art: Path, sentences: list[str], rounds: int) -> dict:
    tokens = Encoder.load(art, threads=THREADS, verify=False)
    strings = Encoder.load(art, runtime="onnxruntime-e2e", threads=THREADS, verify=False)
    encoders = {"python tokenizer": tokens, "e2e graph": strings}
    corpus = sentences[:1024]
    singles = sentences[:200]
    for enc in encoders.values():  # warm-up
        enc.encode(corpus[:64], batch_size=32)
    tput: dict[str, list[float]] = {k: [] for k in encoders}
    lat: dict[str, list[float]] = {k: [] for k in encoders}
    for _ in range(rounds):  # interleaved
        for name, enc in encoders.items():
            t = time.perf_counter()
            enc.encode(corpus, batch_size=32)
            tput[name].append(len(corpus) / (time.perf_counter() - t))
        for name, enc in encoders.items():
            for s in singles:
                t = time.perf_counter()
                enc.encode([s], batch_size=1)
                lat[name].append((time.perf_counter() - t) * 1000)
    return {
        name: {
            "sent_per_s_b32": statistics.median(tput[name]),
            "p50_ms_b1": float(np.percentile(lat[name], 50)),
            "p95_ms_b1": float(np.percentile(lat[name], 95)),
        }
        for name in encoders
    }


def cold(art: Path, runs: int) -> dict:
    enc = Encoder.load(art, verify=False)
    ort_file = art / "ort" / f"{e2e_path(art / enc.manifest.graph).stem}.ort"
    from onnxruntime_extensions import get_library_path

    out = {}
    for name, code, args in (
        (
            ".ort, bare onnxruntime + extensions library",
            COLD.format(threads=THREADS),
            [ort_file, get_library_path()],
        ),
        ("Encoder.load (python tokenizer)", COLD_ENCODER.format(threads=THREADS, repo=str(REPO)), [art]),
    ):
        rows = []
        for _ in range(runs):
            t = time.perf_counter()
            cmd = [sys.executable, "-c", code, *map(str, args)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t
            load, first, rss, _dim = (float(x) for x in res.stdout.split())
            rows.append((wall, load, first, rss))
        out[name] = {
            "process_wall_s": statistics.median(r[0] for r in rows),
            "load_s": statistics.median(r[1] for r in rows),
            "first_embedding_s": statistics.median(r[2] for r in rows),
            "peak_rss_mb": statistics.median(r[3] for r in rows),
        }
    return out


def sizes(art: Path) -> dict[str, float]:
    enc = Encoder.load(art, verify=False)
    graph = art / enc.manifest.graph
    e2e = e2e_path(graph)
    files = {
        enc.manifest.graph: graph,
        e2e.relative_to(art).as_posix(): e2e,
        f"ort/{e2e.stem}.ort": art / "ort" / f"{e2e.stem}.ort",
        "ort/required_operators.config": art / "ort" / "required_operators.config",
        "tokenizer.json": art / "tokenizer.json",
    }
    xml = art / "openvino" / "openvino_model_e2e.xml"
    if xml.is_file():
        files["openvino/openvino_model_e2e.xml+.bin"] = xml
    return {k: (mb(p) + mb(p.with_suffix(".bin")) if p.suffix == ".xml" else mb(p)) for k, p in files.items()}


def render(results: dict) -> str:
    lines = [
        "# Mobile / edge artifacts (all-MiniLM-L6-v2)",
        "",
        f"Measured by `python bench/mobile.py` on {results['machine']}, {THREADS} threads, "
        f"{results['created']}. **The machine is shared with other work (2 cores, several agents)**: "
        "absolute timings are indicative; the e2e / Python-tokenizer ratios come from interleaved runs in one process.",
        "",
        "## Validation",
        "",
        f"Token ids vs `tokenizers` on the {results['n_sts']} unique STS-b test sentences and {len(HARD_CASES)} hard cases; "
        "e2e embeddings vs the Encoder on the same artifact, one text per call on both sides, on every text whose ids match; "
        ".ort vs its ONNX source on a batch of 32.",
        "",
        "| variant | id mismatches STS | id mismatches hard cases | min cosine e2e vs Encoder | .ort vs ONNX max abs diff |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results["variants"].items():
        v = r["validation"]
        lines.append(
            f"| {name} | {v['token_mismatches_sts']} | {v['token_mismatches_hard']} | "
            f"{v['min_cosine_e2e_vs_encoder']:.7f} | {v['ort_vs_onnx_max_abs_diff']:.1e} |"
        )
    ovr = results["variants"]["fp32"]["validation"].get("openvino")
    if ovr:
        lines += [
            "",
            f"OpenVINO e2e IR (fp32): {ovr['token_mismatches']} token-id mismatches on the same texts; "
            f"min cosine vs the Encoder {ovr['min_cosine_vs_encoder_300']:.7f} (300 sentences, one per call); "
            f"size {ovr['size_mb']:.1f} MB.",
        ]
    lines += ["", "## Size of each shippable file (MB)", "", "| variant | file | MB |", "|---|---|---:|"]
    for name, r in results["variants"].items():
        for f, size in r["sizes"].items():
            lines.append(f"| {name} | `{f}` | {size:.1f} |")
    lines += [
        "",
        "## Speed: e2e graph (strings in) vs the Python-tokenizer Encoder, same artifact",
        "",
        "| variant | path | sent/s batch 32 | batch-1 p50 ms | batch-1 p95 ms |",
        "|---|---|---:|---:|---:|",
    ]
    for name, r in results["variants"].items():
        for path, s in r["speed"].items():
            lines.append(
                f"| {name} | {path} | {s['sent_per_s_b32']:.0f} | {s['p50_ms_b1']:.2f} | {s['p95_ms_b1']:.2f} |"
            )
    lines += [
        "",
        "Why the e2e graph trails at batch 32: the Python path tokenizes the whole input once, in parallel (Rust, "
        "both cores), and sorts by token count; the graph tokenizes each batch's texts one after another inside "
        "its `Loop` (about 90 us per STS sentence vs 35 us, measured separately) and the Encoder can only sort "
        "its strings by character count. Measured on the same sorted batches with per-batch tokenization on both "
        "sides, the e2e graph and tokenizers + the token graph ran at the same speed (89 vs 89 sent/s, int8, same "
        "busy machine). At batch 1 they are level. Int8 static arm64 runs on this x86 CPU without its target "
        "kernels (a warning says so), so its speed here says nothing about a phone.",
        "",
        "## Cold start and peak RSS (fresh process per run, median)",
        "",
        "The .ort process imports only numpy and onnxruntime and registers the extensions' shared library; the "
        "Encoder process imports edgeembed (tokenizers, numpy, onnxruntime).",
        "",
        "| variant | process | load s | first embedding s | process wall s | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, r in results["variants"].items():
        for proc, c in r["cold"].items():
            lines.append(
                f"| {name} | {proc} | {c['load_s']:.3f} | {c['first_embedding_s']:.3f} | {c['process_wall_s']:.2f} | {c['peak_rss_mb']:.0f} |"
            )
    lines += ["", "Operators of the int8 arm64 .ort (what a reduced ONNX Runtime build must include):", ""]
    ops = results["variants"]["int8 dynamic_arm64"]["validation"]["operators"]
    lines += [f"- `{d}`: {', '.join(o)}" for d, o in ops.items()]
    mism = {t for r in results["variants"].values() for t in r["validation"]["mismatched_texts"]}
    lines += [
        "",
        "Texts whose in-graph token ids differ (any variant): "
        + (", ".join(repr(t) for t in sorted(mism)) or "none"),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=REPO / "bench" / ".work" / "mobile")
    ap.add_argument("--reuse", action="store_true", help="reuse exported artifacts in --work")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--cold-only", action="store_true", help="re-measure cold start into bench/mobile.json")
    ap.add_argument(
        "--render", action="store_true", help="only re-render bench/MOBILE.md from bench/mobile.json"
    )
    args = ap.parse_args()
    if args.render:
        results = json.loads((REPO / "bench" / "mobile.json").read_text())
        (REPO / "bench" / "MOBILE.md").write_text(render(results))
        return
    if args.cold_only:
        results = json.loads((REPO / "bench" / "mobile.json").read_text())
        for i, r in enumerate(results["variants"].values()):
            r["cold"] = cold(args.work / f"v{i}", args.cold_runs)
        (REPO / "bench" / "mobile.json").write_text(json.dumps(results, indent=1) + "\n")
        (REPO / "bench" / "MOBILE.md").write_text(render(results))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    sentences = load_sts(STS / "sts-test.csv").sentences
    arts = build(args.work, args.reuse)
    results = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "n_sts": len(sentences),
        "variants": {},
    }
    for name, art in arts.items():
        print(f"[{name}] validate", flush=True)
        r = {"validation": validate(art, sentences, ov=name == "fp32")}
        r["sizes"] = sizes(art)
        print(f"[{name}] speed", flush=True)
        r["speed"] = speed(art, sentences, args.rounds)
        print(f"[{name}] cold start", flush=True)
        r["cold"] = cold(art, args.cold_runs)
        results["variants"][name] = r
        print(json.dumps(r, indent=1)[:2000], flush=True)
    (REPO / "bench" / "mobile.json").write_text(json.dumps(results, indent=1) + "\n")
    (REPO / "bench" / "MOBILE.md").write_text(render(results))
    shutil.rmtree(args.work / "tmp", ignore_errors=True)


if __name__ == "__main__":
    main()
