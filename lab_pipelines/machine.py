"""What machine a figure was measured on: CPU model, cores, the flags that decide bf16 speed,
and the GPU if any. Stamped on every benchmark row so a table read later says where it ran."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

import torch

# The flags that change what a CPU run costs: native bf16 dot products (AVX512-BF16) and the
# matrix tiles (AMX) make bf16 models several times faster than AVX2-only machines.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags":
            flags = set(value.split())
            break
    return model, flags


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The speed-relevant flags this CPU has."""
    return frozenset(f for f in SPEED_FLAGS if f in _cpuinfo()[1])


def has_native_bf16() -> bool:
    """True where bf16 matmuls run in hardware (AVX512-BF16 or AMX), not emulated."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, which a container's quota narrows),
    not the host's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@lru_cache(maxsize=1)
def describe() -> str:
    """One line, e.g. 'AMD EPYC, 2 cores, avx2 avx512f avx512_bf16, no GPU'."""
    model, _ = _cpuinfo()
    flags = " ".join(f for f in SPEED_FLAGS if f in cpu_flags()) or "no avx2"
    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        gpu = f"{torch.cuda.device_count()}x {', '.join(names)}"
    else:
        gpu = "no GPU"
    return f"{model}, {usable_cores()} cores, {flags}, {gpu}"
