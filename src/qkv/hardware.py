"""What this machine's CPU can do: its feature flags, its bf16 matrix units and its model name; and how much
memory this process has used at its peak (what training logs per process).

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


def peak_memory_mb(device) -> float | None:
    """This process's peak memory in MiB since the last `reset_peak_memory`: the GPU's `max_memory_allocated` on
    CUDA, else the resident set's high-water mark (VmHWM in /proc/self/status, or getrusage's ru_maxrss);
    None where neither can be read."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            line = next((ln for ln in f if ln.startswith("VmHWM:")), "")
        if line:
            return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    except (ImportError, OSError):
        return None


def reset_peak_memory(device) -> None:
    """Start a new peak: torch's counter on CUDA; on Linux, writing 5 to /proc/self/clear_refs resets VmHWM to
    the current resident size (where the kernel allows it; elsewhere the peak stays the process's)."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
    except OSError:
        pass
