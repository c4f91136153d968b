"""Mobile/edge artifacts of all-MiniLM-L6-v2: validation numbers, sizes, speed, cold start -> bench/MOBILE.md.

    python bench/mobile.py [--work bench/.work/mobile] [--reuse] [--rounds 3]

Exports, through the pipeline (`export --format ort --end-to-end --keep-onnx`, gated on the STS-b test
sentences), fp32, fused dynamic int8 (this CPU), dynamic_arm64 and static_arm64 artifacts, and
(`export --format openvino --end-to-end`) OpenVINO fp32 and static int8 ones, then measures:
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
import os
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

from common import git_commit  # noqa: E402

from edgeembed.build import export  # noqa: E402
from edgeembed.calibration import CalibrationConfig  # noqa: E402
from edgeembed.encoder import Encoder  # noqa: E402
from edgeembed.runtimes.onnxruntime_e2e import clean_text  # noqa: E402
from edgeembed.shippable import operator_set  # noqa: E402
from edgeembed.steps.e2e_onnx import HARD_CASES, compare_token_ids  # noqa: E402
from edgeembed.sts import load_sts  # noqa: E402

STS = REPO.parent / "shared" / "data" / "stsbenchmark"
THREADS = 2
CALIBRATION = STS / "sts-train.csv"
VARIANTS = {
    "fp32": {},
    "int8 dynamic (fused, avx512_vnni)": {"optimize": "all", "quantize": "dynamic"},
    "int8 dynamic_arm64": {"quantize": "dynamic_arm64"},
    "int8 static_arm64": {"quantize": "static_arm64"},
    "OpenVINO fp32": {"format": "openvino"},
    "OpenVINO int8 static": {"format": "openvino", "quantize": "static"},
}


def is_openvino(name: str) -> bool:
    return VARIANTS[name].get("format") == "openvino"


# Peak RSS from VmHWM: ru_maxrss survives exec on Linux and would report the parent's peak.
COLD = """
import sys, time
t0 = time.perf_counter()
import numpy as np, onnxruntime as ort
so = ort.SessionOptions(); so.register_custom_ops_library(sys.argv[2]); so.intra_op_num_threads = {threads}
so.enable_mem_pattern = False  # see bench/lab/ort_e2e_crash.py
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
    """Each variant exported by the pipeline with its packaging steps (the gate checks token ids, the e2e
    graph vs the Encoder and the .ort vs its ONNX source on the STS-b test sentences + hard cases)."""
    arts = {}
    for i, (name, kwargs) in enumerate(VARIANTS.items()):
        out = work / f"v{i}"
        if not (reuse and (out / "edgeembed.json").is_file()):
            if "static" in str(kwargs.get("quantize")):
                kwargs = {**kwargs, "calibration": CalibrationConfig(CALIBRATION, size=300)}
            if not is_openvino(name):
                kwargs = {"format": "ort", "keep_onnx": True, **kwargs}
            print(f"[{name}] export", flush=True)
            export(
                None,
                out,
                overwrite=True,
                threads=THREADS,
                end_to_end=True,
                sts=STS / "sts-test.csv",
                on_step=lambda m: print("  ", m, flush=True),
                **kwargs,
            )
        arts[name] = out
    return arts


def e2e_files(art: Path) -> tuple[Path, Path | None]:
    """(the end-to-end graph as the manifest records it, its .ort if the artifact has one)."""
    m = Encoder.load(art, verify=False).manifest
    e2e = art / m.end_to_end["graph"]
    ort_file = next((art / f for f in (m.ort or {}).get("files", []) if f.endswith("_e2e.ort")), None)
    return e2e, ort_file


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def validate(art: Path, sentences: list[str]) -> dict:
    tokens = Encoder.load(art, threads=THREADS, verify=False)
    e2e, ort_file = e2e_files(art)
    record = tokens.manifest.end_to_end
    texts = [*sentences, *HARD_CASES]
    if e2e.suffix == ".xml":  # OpenVINO: the export's gate compared every text; its record is the result
        from edgeembed.steps.e2e_openvino import compare_token_ids_openvino

        mism = compare_token_ids_openvino(art / "tokenizer.json", tokens.head, texts)
        return {
            "token_mismatches_sts": sum(1 for m in mism if m.index < len(sentences)),
            "token_mismatches_hard": sum(1 for m in mism if m.index >= len(sentences)),
            "mismatched_texts": [m.text[:80] for m in mism],
            "texts_compared": record["compared"],
            "min_cosine_e2e_vs_encoder": record["min_cosine_vs_encoder"],
        }
    strings = Encoder.load(art, runtime="onnxruntime-e2e", threads=THREADS, verify=False)
    mism = compare_token_ids(e2e, art / "tokenizer.json", tokens.head, texts)
    bad = {m.index for m in mism}
    checked = [t for i, t in enumerate(texts) if i not in bad]
    ref = np.stack([tokens.encode([clean_text(t)])[0] for t in checked])
    got = np.stack([strings.encode([t])[0] for t in checked])
    cos = cosines(ref, got)
    from edgeembed.runtimes import RuntimeOptions
    from edgeembed.runtimes.onnxruntime_e2e import OnnxRuntimeE2E

    a = OnnxRuntimeE2E(e2e, RuntimeOptions(threads=THREADS))
    b = OnnxRuntimeE2E(ort_file, RuntimeOptions(threads=THREADS))
    batch = np.array(sentences[:32], dtype=object)
    return {
        "token_mismatches_sts": sum(1 for m in mism if m.index < len(sentences)),
        "token_mismatches_hard": sum(1 for m in mism if m.index >= len(sentences)),
        "mismatched_texts": [m.text[:80] for m in mism],
        "texts_compared": len(checked),
        "min_cosine_e2e_vs_encoder": float(cos.min()),
        "mean_cosine_e2e_vs_encoder": float(cos.mean()),
        "ort_vs_onnx_max_abs_diff": float(np.abs(a.run({"text": batch}) - b.run({"text": batch})).max()),
        "operators": operator_set(ort_file),
    }


def speed(art: Path, sentences: list[str], rounds: int) -> dict:
    tokens = Encoder.load(art, threads=THREADS, verify=False)
    strings = Encoder.load(art, runtime=tokens.manifest.end_to_end["runtime"], threads=THREADS, verify=False)
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
    _e2e, ort_file = e2e_files(art)
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
    """Every file an app ships (graphs, .ort, operator config, tokenizer), as the manifest lists them."""
    m = Encoder.load(art, verify=False).manifest
    files = [f for f in m.files if f.startswith(("onnx/", "openvino/")) or f == "tokenizer.json"]
    out = {}
    for f in sorted(files):
        if f.endswith(".bin"):
            continue
        path = art / f
        out[f + ("+.bin" if f.endswith(".xml") else "")] = mb(path) + (
            mb(path.with_suffix(".bin")) if f.endswith(".xml") else 0.0
        )
    return out


START, END = "<!-- mobile.py: generated from bench/mobile.json -->", "<!-- mobile.py: end -->"


def render(results: dict) -> str:
    """The generated part of MOBILE.md (between START and END; the notes around it are kept)."""
    load = results.get("load_average", "?")
    lines = [
        START,
        f"Measured by `python bench/mobile.py` at commit {results.get('commit', '?')} on {results['machine']}, "
        f"{THREADS} threads, {results['created']}, load average {load} at start and "
        f"{results.get('load_average_end', '?')} at end. Speed ratios come from interleaved runs in one process.",
        "",
        "### Validation",
        "",
        f"Token ids vs `tokenizers` on the {results['n_sts']} unique STS-b test sentences and {len(HARD_CASES)} hard "
        "cases; e2e embeddings vs the Encoder on the same artifact, one text per call on both sides, on every text "
        "whose ids match; .ort vs its ONNX source on a batch of 32.",
        "",
        "| variant | id mismatches STS | id mismatches hard cases | min cosine e2e vs Encoder | .ort vs ONNX max abs diff |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results["variants"].items():
        v = r["validation"]
        diff = v.get("ort_vs_onnx_max_abs_diff")
        lines.append(
            f"| {name} | {v['token_mismatches_sts']} | {v['token_mismatches_hard']} | "
            f"{v['min_cosine_e2e_vs_encoder']:.7f} | {'-' if diff is None else f'{diff:.1e}'} |"
        )
    lines += ["", "### Size of each shippable file (MB)", "", "| variant | file | MB |", "|---|---|---:|"]
    for name, r in results["variants"].items():
        for f, size in r["sizes"].items():
            lines.append(f"| {name} | `{f}` | {size:.1f} |")
    lines += [
        "",
        "### Speed: e2e graph (strings in) vs the Python-tokenizer Encoder, same artifact",
        "",
        "1024 STS-b test sentences at batch 32 (median of the rounds) and 200 at batch 1, interleaved"
        + (
            f"; re-measured with `--speed-only` at commit {results['speed_commit']}, "
            f"{results['speed_created']}, load average {results['speed_load_average']} (same artifacts)."
            if "speed_commit" in results
            else "."
        ),
        "",
        "| variant | path | sent/s batch 32 | e2e / python | batch-1 p50 ms | batch-1 p95 ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, r in results["variants"].items():
        base = r["speed"]["python tokenizer"]["sent_per_s_b32"]
        for path, sp in r["speed"].items():
            lines.append(
                f"| {name} | {path} | {sp['sent_per_s_b32']:.0f} | {sp['sent_per_s_b32'] / base:.2f} | "
                f"{sp['p50_ms_b1']:.2f} | {sp['p95_ms_b1']:.2f} |"
            )
    lines += [
        "",
        "### Cold start and peak RSS (fresh process per run, median)",
        "",
        "The .ort process imports only numpy and onnxruntime and registers the extensions' shared library; the "
        "Encoder process imports edgeembed (tokenizers, numpy, onnxruntime).",
        "",
        "| variant | process | load s | first embedding s | process wall s | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, r in results["variants"].items():
        for proc, c in r.get("cold", {}).items():
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
        END,
    ]
    return "\n".join(lines) + "\n"


def write_markdown(results: dict) -> None:
    """Replace the generated block of bench/MOBILE.md (appended if the file has none)."""
    path = REPO / "bench" / "MOBILE.md"
    text = path.read_text() if path.is_file() else "# Mobile / edge artifacts (all-MiniLM-L6-v2)\n\n"
    block = render(results)
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=REPO / "bench" / ".work" / "mobile")
    ap.add_argument("--reuse", action="store_true", help="reuse exported artifacts in --work")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--cold-only", action="store_true", help="re-measure cold start into bench/mobile.json")
    ap.add_argument("--speed-only", action="store_true", help="re-measure speed into bench/mobile.json")
    ap.add_argument(
        "--render", action="store_true", help="only re-render bench/MOBILE.md from bench/mobile.json"
    )
    args = ap.parse_args()
    if args.render:
        results = json.loads((REPO / "bench" / "mobile.json").read_text())
        write_markdown(results)
        return
    if args.speed_only:
        results = json.loads((REPO / "bench" / "mobile.json").read_text())
        sentences = load_sts(STS / "sts-test.csv").sentences
        results.update(
            speed_commit=git_commit(),
            speed_load_average=f"{os.getloadavg()[0]:.2f}",
            speed_created=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        )
        for i, r in enumerate(results["variants"].values()):
            r["speed"] = speed(args.work / f"v{i}", sentences, args.rounds)
        (REPO / "bench" / "mobile.json").write_text(json.dumps(results, indent=1) + "\n")
        write_markdown(results)
        return
    if args.cold_only:
        results = json.loads((REPO / "bench" / "mobile.json").read_text())
        for i, (name, r) in enumerate(results["variants"].items()):
            if not is_openvino(name):
                r["cold"] = cold(args.work / f"v{i}", args.cold_runs)
        (REPO / "bench" / "mobile.json").write_text(json.dumps(results, indent=1) + "\n")
        write_markdown(results)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    sentences = load_sts(STS / "sts-test.csv").sentences
    arts = build(args.work, args.reuse)
    results = {
        "commit": git_commit(),
        "load_average": f"{os.getloadavg()[0]:.2f}",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "n_sts": len(sentences),
        "variants": {},
    }
    for name, art in arts.items():
        print(f"[{name}] validate", flush=True)
        r = {"validation": validate(art, sentences)}
        r["sizes"] = sizes(art)
        print(f"[{name}] speed", flush=True)
        r["speed"] = speed(art, sentences, args.rounds)
        if not is_openvino(name):
            print(f"[{name}] cold start", flush=True)
            r["cold"] = cold(art, args.cold_runs)
        results["variants"][name] = r
        print(json.dumps(r, indent=1)[:2000], flush=True)
    results["load_average_end"] = f"{os.getloadavg()[0]:.2f}"
    (REPO / "bench" / "mobile.json").write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results)
    shutil.rmtree(args.work / "tmp", ignore_errors=True)


if __name__ == "__main__":
    main()
