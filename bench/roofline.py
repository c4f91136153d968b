"""The int8 roofline of this CPU for a BERT-like encoder, computed and measured, not assumed.

Why: a throughput figure means little without the ceiling it is measured against, and the ceiling depends
on the kernels that actually ran. The computed ceiling is the CPU's peak multiply-accumulate rate (cores x
clock x MACs per cycle of the instruction set the int8 kernels used) divided by the MACs one sentence
needs (from the model's config.json and the real token counts of the texts). Padding and the tokenizer are
overhead on top, so they are left out of the work. The measured ceiling is what OpenVINO's own int8
FullyConnected reaches on one large product of MiniLM's FFN shape (`--measure`): a ceiling the library can
reach on this machine, with the kernel it picked named.

MACs per cycle per core (vendors' published figures; the port counts are the assumption):
- AVX-512 VNNI: VPDPBUSD does 64 int8 MACs; Xeon Scalable cores issue two per cycle (ports 0 and 5);
  AMD Zen 4 runs 512-bit operations on 256-bit units, one VPDPBUSD zmm per cycle.
- AMX-INT8: one TMUL does 1024 int8 MACs per cycle per core (Intel Sapphire Rapids and later); oneDNN
  (OpenVINO) uses it, ONNX Runtime's MLAS dynamic-int8 kernels use VNNI.
- AVX2 without VNNI (listed only when the CPU has neither of the above): VPMADDUBSW + VPMADDWD, ~32 MACs.
Which of them applies is read from the kernels that ran (`edgeembed.isa.kernel_isa` on OpenVINO's runtime
model `primitiveType`, e.g. brgemm_avx512_amx_I8 -> AMX).

    python bench/roofline.py             # the table for MiniLM on STS-b test
    python bench/roofline.py --measure   # plus the measured int8 (and bf16) FullyConnected peaks
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

VNNI_MACS_PER_CYCLE = {"intel": 64 * 2, "amd": 64}  # VPDPBUSD zmm per cycle: two ports / one (Zen 4)
AMX_MACS_PER_CYCLE = 1024
# Without VNNI, an int8 product is VPMADDUBSW (32 u8 x s8 pairs into int16) then VPMADDWD into int32,
# both on the same two vector ports: ~32 MACs per cycle per core at best (what MLAS's AVX2 kernel uses).
AVX2_MACS_PER_CYCLE = 32
ISA_LABEL = {"amx": "AMX-INT8", "avx512_vnni": "AVX-512 VNNI", "avx2": "AVX2 (no VNNI)"}


@dataclasses.dataclass(frozen=True)
class Cpu:
    cores: int
    mhz: float
    flags: frozenset[str]
    vendor: str = "intel"

    @classmethod
    def here(cls) -> Cpu:
        from edgeembed.isa import parse_flags

        text = Path("/proc/cpuinfo").read_text()
        mhz = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
        vendor = "amd" if "AuthenticAMD" in text else "intel"
        return cls(cores=len(os.sched_getaffinity(0)), mhz=max(mhz), flags=parse_flags(text), vendor=vendor)

    def int8_peaks_gmacs(self) -> dict[str, float]:
        """Peak int8 GMAC/s per instruction set this CPU has (key: edgeembed.isa.kernel_isa's names)."""
        from edgeembed.isa import amx

        ghz = self.mhz / 1000
        peaks = {}
        if "avx512_vnni" in self.flags:
            peaks["avx512_vnni"] = self.cores * ghz * VNNI_MACS_PER_CYCLE[self.vendor]
        if "int8" in amx(self.flags):
            peaks["amx"] = self.cores * ghz * AMX_MACS_PER_CYCLE
        if not peaks and "avx2" in self.flags:  # the int8 path of a CPU without VNNI
            peaks["avx2"] = self.cores * ghz * AVX2_MACS_PER_CYCLE
        return peaks


def macs_per_sentence(config: dict, lengths: list[int]) -> float:
    """Mean MACs of one encoder pass: the projections and FFN per token, plus the two attention products."""
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    per_token = 4 * h * h + 2 * h * inter
    total = sum(layers * (n * per_token + 2 * n * n * h) for n in lengths)
    return total / len(lengths)


def kernels_isa(kernels: Iterable[str]) -> str | None:
    """The best instruction set among the int8 matrix-product kernels that ran (None: none named)."""
    from edgeembed.isa import kernel_isa

    found = {kernel_isa(k) for k in kernels}
    if "amx" in found:
        return "amx"
    # OpenVINO names its non-AMX int8 kernels by the coarse ISA ("brgemm_avx512_I8" on a Zen 4 with
    # VNNI); oneDNN uses VNNI within them whenever the CPU has it, so the VNNI ceiling is the one to use.
    if found & {"avx512_vnni", "avx512", "avx_vnni"}:
        return "avx512_vnni"
    return None


@dataclasses.dataclass(frozen=True)
class Roofline:
    mean_tokens: float
    gmacs_per_sentence: float
    sent_per_s: dict[str, float]  # per instruction set

    def line(self, throughput: float, kernels: Iterable[str] = ()) -> str:
        """The ceilings and the fraction reached; with the kernels that ran, which ceiling applies."""
        kernels = tuple(kernels)
        applies = kernels_isa(kernels)
        parts = [
            f"{ISA_LABEL.get(isa, isa)} {rate:.0f} sent/s ({100 * throughput / rate:.1f} % reached)"
            + (" <- the kernels that ran" if isa == applies else "")
            for isa, rate in self.sent_per_s.items()
        ]
        ran = f"; int8 kernels that ran: {', '.join(sorted(set(kernels)))}" if kernels else ""
        if not parts:
            parts = ["no int8 ceiling known for this CPU (none of AMX, AVX-512 VNNI, AVX2 in its flags)"]
        return (
            f"int8 roofline ({self.gmacs_per_sentence:.3f} GMAC per sentence at {self.mean_tokens:.1f} tokens, "
            f"padding excluded): " + "; ".join(parts) + ran
        )


def roofline(model_dir: Path, texts: list[str], max_length: int = 256, cpu: Cpu | None = None) -> Roofline:
    from tokenizers import Tokenizer

    cpu = cpu or Cpu.here()
    config = json.loads((model_dir / "config.json").read_text())
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length)
    lengths = [len(e.ids) for e in tok.encode_batch(texts)]
    macs = macs_per_sentence(config, lengths)
    rates = {isa: peak * 1e9 / macs for isa, peak in cpu.int8_peaks_gmacs().items()}
    return Roofline(mean_tokens=sum(lengths) / len(lengths), gmacs_per_sentence=macs / 1e9, sent_per_s=rates)


def openvino_int8_kernels(compiled) -> list[str]:
    """`primitiveType` of the int8 FullyConnected / MatMul nodes of an OpenVINO compiled model (after at
    least one inference, when the plugin has chosen them)."""
    out = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        kind = str(rt["layerType"].astype(str)) if "layerType" in rt else ""
        prim = str(rt["primitiveType"].astype(str)) if "primitiveType" in rt else ""
        if kind in ("FullyConnected", "MatMul") and ("i8" in prim.lower() or "u8" in prim.lower()):
            out.append(prim)
    return out


def measured_peak(
    precision: str = "int8", threads: int = 2, m: int = 128, k: int = 384, n: int = 1536, reps: int = 200
) -> tuple[float, str]:
    """GMAC/s of OpenVINO's FullyConnected on one (m x k) @ (k x n) product (MiniLM's FFN shape, 128 rows:
    short enough to run undisturbed between other processes' time slices), and the kernel it ran.

    int8: activations through a 256-level FakeQuantize and int8 weights with a per-channel scale, the
    pattern NNCF writes, which the CPU plugin runs as an int8 FullyConnected. bf16: fp32 weights with
    INFERENCE_PRECISION_HINT bf16. The fastest of `reps` short runs: on a shared machine that is the one
    least disturbed by other processes, the closest to what the CPU can do."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([m, k], np.float32, name="x")
    if precision == "int8":
        lo, hi = ops.constant(np.float32(-4.0)), ops.constant(np.float32(4.0))
        act = ops.fake_quantize(x, lo, hi, lo, hi, 256)
        w = ops.constant(rng.integers(-127, 128, size=(n, k), dtype=np.int8))
        weights = ops.multiply(ops.convert(w, np.float32), ops.constant(np.full((n, 1), 0.01, np.float32)))
        config = {"INFERENCE_PRECISION_HINT": "f32"}
    else:
        act = x
        weights = ops.constant(rng.standard_normal((n, k), dtype=np.float32))
        config = {"INFERENCE_PRECISION_HINT": "bf16"}
    model = ov.Model([ops.matmul(act, weights, False, True)], [x])
    config |= {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(threads)}
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    data = rng.uniform(-4, 4, size=(m, k)).astype(np.float32)
    request.infer([data])
    kernel = ""
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        if "layerType" in rt and str(rt["layerType"].astype(str)) in ("FullyConnected", "MatMul"):
            kernel = str(rt["primitiveType"].astype(str))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        request.infer([data])
        times.append(time.perf_counter() - t)
    return m * k * n / min(times) / 1e9, kernel


if __name__ == "__main__":
    from common import sts_sentences, use_repo

    use_repo()
    from edgeembed.source import default_model_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measure", action="store_true", help="also measure OpenVINO's int8/bf16 FC peaks")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    cpu = Cpu.here()
    print(
        f"{cpu.vendor} CPU, {cpu.cores} cores at {cpu.mhz:.0f} MHz; computed int8 peaks (GMAC/s): "
        f"{ {k: round(v) for k, v in cpu.int8_peaks_gmacs().items()} }"
    )
    roof = roofline(Path(default_model_path()), sts_sentences())
    print(roof.line(1.0))
    if args.measure:
        for precision in ("int8", "bf16"):
            gmacs, kernel = measured_peak(precision, threads=args.threads)
            rate = gmacs * 1e9 / (roof.gmacs_per_sentence * 1e9)
            print(
                f"measured {precision} FullyConnected peak: {gmacs:.0f} GMAC/s ({kernel}), "
                f"= {rate:.0f} sent/s on STS-b; load {os.getloadavg()[0]:.2f}"
            )
