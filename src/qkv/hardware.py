"""What this machine's CPU can do: its feature flags, its bf16 matrix units and its model name.

A low, neutral module: training reads it to pick a precision (`qkv.training.precision`), decoding to refuse
bf16 weights a CPU would only emulate (`qkv.generation.inference`), the optimizer to choose Muon's iteration
dtype, and every benchmark prints it next to its figures. Callers use ``hardware.cpu_bf16_units()`` (the
module attribute), so a test can pretend to be any CPU by patching this one place.
"""

from __future__ import annotations

# /proc/cpuinfo flag -> its name in messages
BF16_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """Every feature flag the CPU reports in /proc/cpuinfo (empty where there is none)."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            return set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return set()


def cpu_bf16_units(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The bf16 matrix units this CPU reports (names from `BF16_FLAGS`); [] if none or unreadable."""
    flags = cpu_flags(cpuinfo)
    return [name for flag, name in BF16_FLAGS.items() if flag in flags]


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name ("Intel(R) Xeon(R) Processor"), or the platform's answer where /proc has none."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            line = next((ln for ln in f if ln.startswith("model name")), "")
    except OSError:
        line = ""
    if line:
        return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"
