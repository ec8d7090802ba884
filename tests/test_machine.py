"""Which machine measured a number: two machines that time differently must describe differently."""
import pytest

from opttree_core import machine


@pytest.fixture
def cpu(monkeypatch):
    def set_cpu(**fields):
        monkeypatch.setattr(machine, "_cpuinfo", lambda: fields)
    return set_cpu


def test_two_virtual_xeons_with_one_generic_name_describe_differently(cpu):
    flags = "fpu avx2 avx512f avx512_bf16"
    cpu(**{"model name": "Intel(R) Xeon(R) Processor", "cpu family": "6", "model": "143", "flags": flags})
    sapphire = machine.describe_machine("cpu")
    cpu(**{"model name": "Intel(R) Xeon(R) Processor", "cpu family": "6", "model": "85", "flags": "fpu avx2 avx512f"})
    skylake = machine.describe_machine("cpu")
    assert sapphire != skylake and "model 143; avx2 avx512f avx512_bf16)" in sapphire and skylake.endswith("avx512f)")
    assert sapphire.startswith("Intel(R) Xeon(R) Processor, ") and " cores (cpu family 6, " in sapphire


@pytest.mark.parametrize(("flags", "fast"), [("avx2 avx512f", False), ("avx2 avx512_bf16", True), ("amx_bf16", True)])
def test_fast_bf16_is_read_from_the_flags(cpu, flags, fast):
    cpu(flags=flags)
    assert machine.cpu_has_fast_bf16() is fast and machine.cpu_flags() == [f for f in machine.SPEED_FLAGS
                                                                          if f in flags.split()]


def test_a_cpu_without_cpuinfo_still_has_a_name(cpu):
    cpu()
    assert machine.device_name("cpu") and machine.describe_machine("cpu").endswith("model ?; no AVX2)")
