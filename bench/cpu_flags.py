"""The CPU flags every benchmark figure is stated with (what decides OpenVINO's int8 kernels and default precision)."""

from __future__ import annotations

from pathlib import Path

# AVX2 only: int8 saturates without overflow_fix, default f32; AVX512-BF16/AMX: default bf16, AMX int8 kernels.
WANTED = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def cpu_flags() -> list[str]:
    """Those of :data:`WANTED` this CPU has (the same list ``lscpu`` prints), in that order; [] where unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return [f for f in WANTED if f in flags]
