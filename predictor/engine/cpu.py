"""What the CPU offers for inference: instruction-set features that decide precision and backend.

Read from ``/proc/cpuinfo`` flags (Linux); on other systems, or if the file is unreadable, every
feature is reported absent, so the policy falls back to fp32, which runs anywhere.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuFeatures:
    """Instruction-set features relevant to inference speed."""

    model_name: str
    avx2: bool
    avx512f: bool
    avx512_bf16: bool
    """AVX-512 BF16 (``vdpbf16ps``): bf16 dot products at twice the fp32 rate (Cooper Lake, Zen 4+)."""
    avx512_vnni: bool
    amx_bf16: bool
    """Intel AMX tiles with bf16 (Sapphire Rapids+): matrix units, many times the fp32 rate."""
    amx_int8: bool
    avx512_fp16: bool

    @property
    def native_bf16(self) -> bool:
        """Whether bf16 matrix products run in hardware (otherwise bf16 is emulated and slower)."""
        return self.amx_bf16 or self.avx512_bf16

    def describe(self) -> str:
        """Short text for logs, e.g. ``AMD EPYC (avx512f avx512_bf16)``."""
        names = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "avx512_fp16")
        flags = " ".join(n for n in names if getattr(self, n))
        return f"{self.model_name} ({flags or 'no vector extensions detected'})"


def parse_cpuinfo(text: str) -> CpuFeatures:
    """Parse the text of ``/proc/cpuinfo`` (flags of the first processor; all cores are alike)."""
    flags: set[str] = set()
    model_name = "unknown CPU"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model_name == "unknown CPU":
            model_name = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return CpuFeatures(
        model_name=model_name,
        avx2="avx2" in flags,
        avx512f="avx512f" in flags,
        avx512_bf16="avx512_bf16" in flags,
        avx512_vnni="avx512_vnni" in flags,
        amx_bf16="amx_bf16" in flags and "amx_tile" in flags,
        amx_int8="amx_int8" in flags and "amx_tile" in flags,
        avx512_fp16="avx512_fp16" in flags,
    )


@functools.cache
def detect_cpu() -> CpuFeatures:
    """Features of the CPU this process runs on (cached; the flags cannot change while it runs)."""
    try:
        text = CPUINFO.read_text()
    except OSError as e:
        logger.warning("cannot read %s (%s): assuming no bf16 support", CPUINFO, e)
        text = ""
    return parse_cpuinfo(text)
