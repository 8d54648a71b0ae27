"""CPU feature detection: parsing /proc/cpuinfo and this machine's answer."""

from __future__ import annotations

from pathlib import Path

from predictor.engine.cpu import detect_cpu, parse_cpuinfo
from tests.support.cpuinfo import ARM, SAPPHIRE_RAPIDS, SKYLAKE, ZEN4


def test_amx_cpu_has_native_bf16() -> None:
    f = parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert f.amx_bf16 and f.avx512_bf16 and f.avx512_fp16 and f.native_bf16
    assert f.model_name == "Intel(R) Xeon(R) Platinum 8480+"


def test_avx512_bf16_without_amx_is_native_bf16() -> None:
    f = parse_cpuinfo(ZEN4)
    assert f.avx512_bf16 and not f.amx_bf16 and f.native_bf16


def test_avx512_without_bf16_is_not_native() -> None:
    f = parse_cpuinfo(SKYLAKE)
    assert f.avx512f and not f.native_bf16


def test_amx_flag_without_tile_support_is_ignored() -> None:
    f = parse_cpuinfo(SKYLAKE.replace("avx512bw", "avx512bw amx_bf16"))
    assert not f.amx_bf16 and not f.native_bf16


def test_arm_and_empty_have_no_x86_features() -> None:
    for text in (ARM, ""):
        f = parse_cpuinfo(text)
        assert not (f.avx2 or f.avx512f or f.native_bf16)


def test_detect_matches_this_machines_flags() -> None:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    f = detect_cpu()
    assert f.avx512_bf16 == ("avx512_bf16" in flags)
    assert f.amx_bf16 == ({"amx_bf16", "amx_tile"} <= flags)
    assert f.native_bf16 == ("avx512_bf16" in flags or {"amx_bf16", "amx_tile"} <= flags)
