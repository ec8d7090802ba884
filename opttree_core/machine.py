"""Which machine measured a number: the CPU (or GPU) by name, CPUID family and model, and the
vector flags that decide its speed (bf16 on AVX-512 or AMX), read once from /proc/cpuinfo.

    describe_machine(device)   "AMD EPYC, 2 cores (cpu family 25, model 17; avx2 avx512f avx512_bf16)"
    cpu_flags()                the speed-deciding flags of this CPU, of SPEED_FLAGS
    device_name(device)        the accelerator's name, or the CPU model name

A virtual machine's model name can be generic ("Intel(R) Xeon(R) Processor" names several
generations), so the description adds the family, model and flags: two machines that time
differently describe differently. Bench rows carry the description (``records.MACHINE_COLUMN``), so
a run that goes on in sittings on other machines says which prompt ran where.
"""
from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (empty off Linux)."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return {}
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags() -> list[str]:
    """Which of ``SPEED_FLAGS`` this CPU has, in that order."""
    flags = set(_cpuinfo().get("flags", "").split())
    return [f for f in SPEED_FLAGS if f in flags]


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (AVX-512 BF16 or AMX-BF16)."""
    return not {"avx512_bf16", "amx_bf16"}.isdisjoint(cpu_flags())


def device_name(device: torch.device | str = "cpu") -> str:
    """The accelerator's name, or the CPU model name on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "cpu"


def describe_machine(device: torch.device | str = "cpu") -> str:
    """One line naming the machine a timing came from; on a GPU its name, on a CPU also its cores,
    CPUID family and model and its ``SPEED_FLAGS``."""
    device = torch.device(device)
    if device.type == "cuda":
        return device_name(device)
    info = _cpuinfo()
    return (f"{device_name(device)}, {os.cpu_count()} cores (cpu family {info.get('cpu family', '?')}, "
            f"model {info.get('model', '?')}; {' '.join(cpu_flags()) or 'no AVX2'})")
