"""Int8 coverage on MiniLM: which static int8 knobs buy speed without losing accuracy (indicative).

For OpenVINO static int8 (nncf) and ONNX Runtime static QDQ, every knob is quantized from the same fp32
graph with the same calibration inputs (edgeembed's: a seeded sample of the calibration file plus its
length coverage), then measured through the Encoder: sentences/s at batch 32 on the unique STS-b test
sentences (all variants in one process, interleaved slice by slice, median of rounds, as a ratio to a
fixed baseline inside the same run), STS-b test Spearman, and min / mean cosine vs the fp32 graph of the
same runtime on the gate's texts (validation sentences + STS-b test sentences).

    PYTHONPATH=. nice -n 10 python bench/lab/int8_coverage.py prepare --work /tmp/int8cov --calibration captions.txt
    PYTHONPATH=. nice -n 10 python bench/lab/int8_coverage.py quantize --work /tmp/int8cov
    PYTHONPATH=. nice -n 10 python bench/lab/int8_coverage.py measure --work /tmp/int8cov --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import STS_TEST, export_missing, interleaved_seconds, sts_sentences, use_repo

THREADS = 2

use_repo()

# name -> (runtime family, how it is made). OpenVINO: OpenVinoStaticConfig fields plus "ignore" (which
# MatMuls stay float) and "model_type"; ONNX: QuantizeConfig fields plus "graph" (plain or fused fp32).
OV = {
    "ov mixed sq0.95 (nncf default)": {},
    "ov mixed sq off": {"smooth_quant_alpha": -1.0},
    "ov mixed sq0.15": {"smooth_quant_alpha": 0.15},
    "ov mixed sq0.5": {"smooth_quant_alpha": 0.5},
    "ov performance sq0.95": {"preset": "performance"},
    "ov performance sq off": {"preset": "performance", "smooth_quant_alpha": -1.0},
    "ov performance sq0.15": {"preset": "performance", "smooth_quant_alpha": 0.15},
    "ov performance sq0.5": {"preset": "performance", "smooth_quant_alpha": 0.5},
    "ov mixed sq0.5, QK^T float": {"smooth_quant_alpha": 0.5, "ignore": "attention"},
    "ov mixed, no model_type (softmax x V int8 too, no SQ)": {"model_type": None},
}
ONNX = {
    "onnx static QDQ (default scope, per-channel)": {},
    "onnx static QDQ per-tensor": {"per_channel": False},
    "onnx static QDQ + attention matmuls": {"attention_matmuls": True},
    "onnx static QDQ on the fused graph (MatMul+Gather)": {
        "graph": "fused",
        "op_types": ("MatMul", "Gather"),
    },
    "onnx static QDQ on the fused graph (default scope)": {"graph": "fused"},
}


def prepare(work: Path, calibration: Path, size: int) -> None:
    """fp32 artifacts (plain ONNX, fused ONNX, OpenVINO IR) and the calibration inputs, once."""
    from edgeembed.calibration import CalibrationConfig, calibration_inputs
    from edgeembed.encoder import Encoder

    jobs = {
        "onnx": {"format": "onnx", "optimize": "none"},
        "onnx-fused": {"format": "onnx", "optimize": "all"},
        "ov": {"format": "openvino"},
    }
    export_missing(work, jobs, THREADS)
    enc = Encoder.load(work / "onnx")
    inputs = calibration_inputs(
        CalibrationConfig(str(calibration), size=size), enc.tokenizer, tuple(enc.runtime.input_names)
    )
    np.save(work / "calibration.npy", np.array(inputs, dtype=object), allow_pickle=True)
    print(f"{len(inputs)} calibration inputs from {calibration}")


def _attention_matmuls(model) -> list[str]:
    """MatMuls with no constant operand (QK^T and softmax x V)."""

    def constant(node) -> bool:
        while node.get_type_name() in ("Convert", "FakeQuantize", "Reshape", "Transpose"):
            node = node.input_value(0).get_node()
        return node.get_type_name() == "Constant"

    return [
        op.get_friendly_name()
        for op in model.get_ops()
        if op.get_type_name() == "MatMul" and not any(constant(i.get_node()) for i in op.input_values())
    ]


def quantize(work: Path, only: list[str] | None) -> None:
    import nncf
    import openvino as ov

    from edgeembed.steps.nncf import OpenVinoStaticConfig, quantizer_count
    from edgeembed.steps.onnx_int8 import QuantizeConfig, quantize_graph

    inputs = list(np.load(work / "calibration.npy", allow_pickle=True))
    out = work / "variants"
    out.mkdir(exist_ok=True)
    meta = json.loads((work / "variants.json").read_text()) if (work / "variants.json").is_file() else {}
    ov_model_path = next((work / "ov" / "openvino").glob("*.xml"))
    for name, knobs in OV.items():
        if (only and not any(o in name for o in only)) or name in meta:
            continue
        knobs = dict(knobs)
        ignore = knobs.pop("ignore", None)
        model_type = knobs.pop("model_type", "transformer")
        config = OpenVinoStaticConfig(**knobs)
        model = ov.Core().read_model(str(ov_model_path))
        from edgeembed.steps import nncf as steps_nncf

        t = time.perf_counter()
        q = nncf.quantize(
            model,
            nncf.Dataset(inputs),
            preset=nncf.QuantizationPreset(config.preset),
            subset_size=min(config.subset_size, len(inputs)),
            fast_bias_correction=config.fast_bias_correction,
            model_type=nncf.ModelType.TRANSFORMER if model_type else None,
            ignored_scope=nncf.IgnoredScope(names=_attention_matmuls(model)) if ignore else None,
            advanced_parameters=steps_nncf.advanced_parameters(config),
        )
        path = out / (name.replace(" ", "_").replace("/", "-") + ".xml")
        ov.save_model(q, str(path), compress_to_fp16=False)
        meta[name] = {"path": str(path), "quantizers": quantizer_count(q), "secs": time.perf_counter() - t}
        (work / "variants.json").write_text(json.dumps(meta, indent=1))
        print(name, meta[name], flush=True)
    for name, knobs in ONNX.items():
        if (only and not any(o in name for o in only)) or name in meta:
            continue
        knobs = dict(knobs)
        graph = knobs.pop("graph", "plain")
        src_art = work / ("onnx-fused" if graph == "fused" else "onnx")
        src = src_art / json.loads((src_art / "edgeembed.json").read_text())["graph"]
        cfg = replace(QuantizeConfig(mode="static", isa="avx512_vnni"), **knobs)
        path = out / (name.replace(" ", "_").replace("/", "-").replace("(", "").replace(")", "") + ".onnx")
        t = time.perf_counter()
        quantize_graph(src, path, cfg, inputs)
        meta[name] = {"path": str(path), "source": graph, "secs": time.perf_counter() - t}
        (work / "variants.json").write_text(json.dumps(meta, indent=1))
        print(name, meta[name], flush=True)


def _encoder(work: Path, graph: Path, runtime: str):
    from edgeembed.artifact import read_manifest
    from edgeembed.encoder import Encoder
    from edgeembed.runtimes import RuntimeOptions, load_runtime

    art = work / ("ov" if runtime == "openvino" else "onnx")
    m = read_manifest(art)
    return Encoder.from_parts(art, load_runtime(runtime, graph, RuntimeOptions(threads=THREADS)), m.head, m)


def measure(
    work: Path,
    rounds: int,
    only: list[str] | None,
    what: str = "both",
    speed_texts: int = 0,
    slices: int = 10,
) -> None:
    from edgeembed.gate import agreement, validation_sentences
    from edgeembed.sts import load_sts, sts_score

    meta = json.loads((work / "variants.json").read_text())
    encs = {
        "onnx fp32": _encoder(
            work,
            work / "onnx" / json.loads((work / "onnx" / "edgeembed.json").read_text())["graph"],
            "onnxruntime",
        ),
        "ov fp32": _encoder(work, next((work / "ov" / "openvino").glob("*.xml")), "openvino"),
    }
    for name, m in meta.items():
        if not only or any(o in name for o in only):
            encs[name] = _encoder(
                work, Path(m["path"]), "openvino" if name.startswith("ov") else "onnxruntime"
            )
    data = load_sts(STS_TEST)
    texts = sts_sentences()
    gate_texts = list(dict.fromkeys([*validation_sentences(256), *texts]))
    rows: dict[str, dict] = {name: {} for name in encs}
    for name, enc in encs.items() if what != "speed" else ():
        rows[name]["emb"] = enc.encode(gate_texts, batch_size=32, normalize=False)
    for name in encs if what != "speed" else ():
        ref = rows["ov fp32" if name.startswith("ov") else "onnx fp32"]["emb"]
        emb = rows[name].pop("emb") if name not in ("onnx fp32", "ov fp32") else rows[name]["emb"]
        agr = agreement(ref, emb)
        rows[name].update(
            sts=sts_score(data, dict(zip(gate_texts, emb))),
            cos_min=agr.min_cosine,
            cos_mean=agr.mean_cosine,
            **{k: v for k, v in meta.get(name, {}).items() if k != "path"},
        )
    for name in ("onnx fp32", "ov fp32") if what != "speed" else ():
        rows[name].pop("emb")
    if what == "accuracy":
        for v, r in rows.items():
            print(f"| {v} | {r['sts']:.2f} | {r['cos_min']:.4f} | {r['cos_mean']:.5f} |")
        (work / "int8_accuracy.json").write_text(json.dumps(rows, indent=1))
        return
    rng = np.random.default_rng(0)
    shuffled = [texts[i] for i in rng.permutation(len(texts))]
    if speed_texts:  # a seeded sample, for a loaded machine
        shuffled = shuffled[:speed_texts]
        texts = shuffled
    parts = [shuffled[i::slices] for i in range(slices)]
    names = list(encs)
    for e in encs.values():
        e.encode(texts[:64], batch_size=32)
    load = [os.getloadavg()[0]]
    totals: dict[str, list[float]] = {v: [] for v in names}
    ratios: dict[str, list[float]] = {v: [] for v in names}
    batch_32 = {v: (lambda part, e=encs[v]: e.encode(part, batch_size=32)) for v in names}
    for r, acc in enumerate(interleaved_seconds(batch_32, parts, rounds)):
        for v in names:
            totals[v].append(len(texts) / acc[v])
            ratios[v].append(acc["ov fp32"] / acc[v])
        load.append(os.getloadavg()[0])
        print(f"round {r + 1}: " + ", ".join(f"{v} {totals[v][-1]:.0f}" for v in names), file=sys.stderr)
    for v in names:
        rows[v]["sent_s"] = statistics.median(totals[v])
        rows[v]["x_ov_fp32"] = statistics.median(ratios[v])
        rows[v]["rounds"] = totals[v]
    print(f"load average (1 min) over the run: {min(load):.2f}-{max(load):.2f}; {rounds} rounds, batch 32")
    for v, r in rows.items():
        print(
            f"| {v} | {r['sent_s']:.0f} | {r['x_ov_fp32']:.2f} |"
            + (f" {r['sts']:.2f} |" if "sts" in r else "")
        )
    (work / f"int8_{what}.json").write_text(json.dumps({"load": load, "rows": rows}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["prepare", "quantize", "measure"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/int8cov"))
    ap.add_argument("--calibration", type=Path)
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="substrings of variant names")
    ap.add_argument("--what", choices=["both", "accuracy", "speed"], default="both")
    ap.add_argument("--speed-texts", type=int, default=0, help="time on this many STS-b sentences (0: all)")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    if a.mode == "prepare":
        prepare(a.work, a.calibration, a.size)
    elif a.mode == "quantize":
        quantize(a.work, a.only)
    else:
        measure(a.work, a.rounds, a.only, a.what, a.speed_texts)


if __name__ == "__main__":
    main()
