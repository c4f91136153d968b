"""Which int8 kernels this CPU runs well, and a warning when an artifact was tuned for another CPU.

Instruction-set presets follow ONNX Runtime's CPU int8 kernels (and optimum's AutoQuantizationConfig,
which sentence-transformers uses):
- avx512_vnni: s8 weights, u8 activations; VNNI multiplies u8 x s8 without overflow.
- avx512 (no VNNI): s8 weights with reduce_range (7-bit), because vpmaddubsw can saturate on 8 bits.
- avx2: u8 weights, u8 activations.
- arm64: s8 weights (the sdot/udot kernels handle them).
Light on purpose (no onnx): the Encoder uses `check_isa` at load.
"""

from __future__ import annotations

import platform
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

ISAS = ("avx512_vnni", "avx512", "avx2", "arm64")


def parse_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor in a /proc/cpuinfo text (x86 `flags`, arm `Features`)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (Linux /proc/cpuinfo); empty elsewhere."""
    try:
        return parse_flags(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return frozenset()


AMX_KINDS = ("int8", "bf16", "fp16")


def amx(flags: frozenset[str] | None = None) -> frozenset[str]:
    """The AMX matrix units this CPU offers: a subset of AMX_KINDS. Why it matters: oneDNN (OpenVINO's CPU
    plugin) runs int8 and bf16 matrix products on AMX tiles when they exist, with a ceiling ~8x the
    AVX-512 VNNI one; ONNX Runtime's dynamic int8 kernels do not use them. The tiles need the kernel's
    permission too (`amx_tile`, which Linux lists only when it lets processes use them)."""
    flags = cpu_flags() if flags is None else flags
    if "amx_tile" not in flags:
        return frozenset()
    return frozenset(kind for kind in AMX_KINDS if f"amx_{kind}" in flags)


def kernel_isa(kernel: str) -> str:
    """The instruction set a oneDNN / OpenVINO kernel name says it runs on (e.g. OpenVINO's runtime model
    `primitiveType` "brgemm_avx512_amx_I8" -> "amx"): amx, avx512_vnni, avx_vnni, avx512_bf16, avx512,
    avx2 or other. Which ceiling applies to a measured throughput depends on it, not on the CPU's flags
    alone: a CPU with AMX may still run some products on VNNI kernels."""
    k = kernel.lower()
    if "amx" in k:
        return "amx"
    if "vnni" in k:
        return "avx512_vnni" if "avx512" in k else "avx_vnni"
    if "avx512" in k and "bf16" in k:
        return "avx512_bf16"
    for isa in ("avx512", "avx2"):
        if isa in k:
            return isa
    return "other"


def detect_isa() -> str:
    """The best int8 configuration this CPU runs well: avx512_vnni, avx512, avx2 or arm64."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm64"
    flags = cpu_flags()
    if {"avx512_vnni", "avx512vnni"} & flags:
        return "avx512_vnni"
    if "avx512bw" in flags:
        return "avx512"
    return "avx2"  # u8 x u8 is the safe choice on any x86 CPU


def cpu_supports(isa: str) -> bool:
    """Whether this CPU has the instructions an ISA preset was tuned for."""
    machine = platform.machine().lower()
    if isa == "arm64":
        return machine in ("aarch64", "arm64")
    if machine in ("aarch64", "arm64"):
        return False
    flags = cpu_flags()
    if not flags:  # not Linux: we cannot tell; do not cry wolf
        return True
    need = {"avx512_vnni": {"avx512_vnni", "avx512bw"}, "avx512": {"avx512bw"}, "avx2": {"avx2"}}[isa]
    if isa == "avx512_vnni" and "avx512vnni" in flags:
        flags = flags | {"avx512_vnni"}
    return need <= flags


def check_isa(quantization: dict[str, Any] | None, where: Path | str = "") -> bool:
    """Warn when an artifact was quantized for an instruction set this CPU lacks; True when it is fine."""
    isa = (quantization or {}).get("isa")
    if not isa or isa not in ISAS or cpu_supports(isa):
        return True
    warnings.warn(
        f"{where or 'this artifact'} was quantized for {isa}, which this CPU ({detect_isa()}) lacks: "
        f"it will run slower or (avx512 s8 weights without VNNI) lose accuracy; re-export with --isa {detect_isa()}",
        RuntimeWarning,
        stacklevel=3,
    )
    return False
