"""The machine a benchmark ran on, printed at the top of every bench's output.

A speed figure means nothing without its machine, and a ratio is only like for like when both sides ran
in one command on one machine; every bench in this folder prints this line first, and its ratios are
measured back to back in that same run.
"""

from __future__ import annotations

import datetime
import os
import platform
import time

import torch

from qkv.hardware import cpu_bf16_units, cpu_flags, cpu_model

# the vector/matrix flags that decide which kernels torch runs (and how fast bf16 and int8 are)
FLAGS = ["avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"]


def vector_flags() -> list[str]:
    flags = cpu_flags()
    return [f for f in FLAGS if f in flags]


def describe(threads: int | None = None) -> str:
    """One line: CPU model, its bf16 units and vector flags, cores, torch, threads, date."""
    units = cpu_bf16_units()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"machine: {cpu_model()} | bf16 units: {', '.join(units) if units else 'none'} | "
            f"flags: {' '.join(vector_flags()) or 'n/a'} | {os.cpu_count()} cores{gpu} | "
            f"torch {torch.__version__} | {threads or torch.get_num_threads()} threads | "
            f"Python {platform.python_version()} | {datetime.date.today().isoformat()}")


if __name__ == "__main__":
    print(describe())


def matmul_peak(repeats: int = 5) -> float:
    """fp32 GFLOP/s of this machine's best 2048×768 @ 768×3072 matmul (the shape of a GPT-2 MLP projection) of
    `repeats`, at torch's current thread count: the ceiling a training step's matmuls could reach."""
    a, b = torch.randn(2048, 768), torch.randn(768, 3072)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 2048 * 768 * 3072 / best / 1e9
