"""CPU feature detection from given /proc/cpuinfo texts: AMX units and the ISA a kernel name runs on."""

from __future__ import annotations

from edgeembed.isa import amx, kernel_isa, parse_flags

SAPPHIRE_RAPIDS = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\n"
    "flags\t\t: fpu avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8\n"
    "processor\t: 1\nflags\t\t: fpu\n"
)
ZEN4 = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"


def test_flags_of_the_first_processor():
    flags = parse_flags(SAPPHIRE_RAPIDS)
    assert {"amx_int8", "avx512_vnni", "avx2"} <= flags
    assert parse_flags("processor : 0\n") == frozenset()
    assert parse_flags("Features\t: fp asimd asimddp\n") == {"fp", "asimd", "asimddp"}


def test_amx_units_from_flags():
    assert amx(parse_flags(SAPPHIRE_RAPIDS)) == {"int8", "bf16"}
    assert amx(parse_flags(ZEN4)) == frozenset()
    assert amx(frozenset({"amx_tile", "amx_int8", "amx_bf16", "amx_fp16"})) == {"int8", "bf16", "fp16"}
    # Without amx_tile the kernel does not let processes use the tiles: no AMX, whatever else is listed.
    assert amx(frozenset({"amx_int8", "amx_bf16"})) == frozenset()


def test_kernel_names_map_to_their_instruction_set():
    assert kernel_isa("brgemm_avx512_amx_I8") == "amx"
    assert kernel_isa("jit_avx512_amx_bf16_BF16") == "amx"
    assert kernel_isa("brgemm_avx512_core_vnni_I8") == "avx512_vnni"
    assert kernel_isa("jit_avx2_vnni_I8") == "avx_vnni"
    assert kernel_isa("brgemm_avx512_core_bf16_BF16") == "avx512_bf16"
    assert kernel_isa("jit_avx512_FP32") == "avx512"
    assert kernel_isa("jit_avx2_FP32") == "avx2"
    assert kernel_isa("ref_any_I8") == "other"
