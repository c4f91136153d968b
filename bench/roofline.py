"""The int8 roofline of this CPU for a BERT-like encoder, computed, not assumed.

Why: a throughput figure means little without the ceiling it is measured against. The ceiling is the
CPU's peak int8 multiply-accumulate rate (cores x clock x MACs per cycle, from /proc/cpuinfo's flags and
clock) divided by the MACs one sentence needs (from the model's config.json and the real token counts of
the texts). Padding and the tokenizer are overhead on top, so they are left out of the work.

MACs per cycle per core (Intel's published figures; the port count is the one assumption):
- AVX-512 VNNI: VPDPBUSD does 64 int8 MACs; Xeon Scalable cores issue two per cycle (ports 0 and 5).
- AMX-INT8: one TMUL does 1024 int8 MACs per cycle per core; oneDNN (OpenVINO) uses it, ONNX Runtime's
  MLAS dynamic-int8 kernels use VNNI here.

    python bench/roofline.py   # prints the table for MiniLM on STS-b test
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

VNNI_MACS_PER_CYCLE = 64 * 2  # VPDPBUSD x two 512-bit FMA ports
AMX_MACS_PER_CYCLE = 1024


@dataclasses.dataclass(frozen=True)
class Cpu:
    cores: int
    mhz: float
    flags: frozenset[str]

    @classmethod
    def here(cls) -> Cpu:
        text = Path("/proc/cpuinfo").read_text()
        mhz = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
        flags = next(line.split(":")[1].split() for line in text.splitlines() if line.startswith("flags"))
        return cls(cores=len(os.sched_getaffinity(0)), mhz=max(mhz), flags=frozenset(flags))

    def int8_peaks_gmacs(self) -> dict[str, float]:
        """Peak int8 GMAC/s per instruction set this CPU has."""
        ghz = self.mhz / 1000
        peaks = {}
        if "avx512_vnni" in self.flags:
            peaks["AVX-512 VNNI"] = self.cores * ghz * VNNI_MACS_PER_CYCLE
        if "amx_int8" in self.flags:
            peaks["AMX-INT8"] = self.cores * ghz * AMX_MACS_PER_CYCLE
        return peaks


def macs_per_sentence(config: dict, lengths: list[int]) -> float:
    """Mean MACs of one encoder pass: the projections and FFN per token, plus the two attention products."""
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    per_token = 4 * h * h + 2 * h * inter
    total = sum(layers * (n * per_token + 2 * n * n * h) for n in lengths)
    return total / len(lengths)


@dataclasses.dataclass(frozen=True)
class Roofline:
    mean_tokens: float
    gmacs_per_sentence: float
    sent_per_s: dict[str, float]  # per instruction set

    def line(self, throughput: float) -> str:
        parts = [
            f"{isa} {rate:.0f} sent/s ({100 * throughput / rate:.1f} % reached)"
            for isa, rate in self.sent_per_s.items()
        ]
        return (
            f"int8 roofline ({self.gmacs_per_sentence:.3f} GMAC per sentence at {self.mean_tokens:.1f} tokens, "
            f"padding excluded): " + "; ".join(parts)
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


if __name__ == "__main__":
    from common import sts_sentences, use_repo

    use_repo()
    from edgeembed.source import default_model_path

    cpu = Cpu.here()
    print(f"{cpu.cores} cores at {cpu.mhz:.0f} MHz; int8 peaks (GMAC/s): {cpu.int8_peaks_gmacs()}")
    print(roofline(Path(default_model_path()), sts_sentences()).line(1.0))
