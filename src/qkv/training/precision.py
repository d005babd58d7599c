"""Which number format the training loop computes in: fp32, or bf16/fp16 autocast — and why.

``train.precision``:

    fp32   plain float32 everywhere (the default; what the tests use).
    auto   bf16 autocast where the hardware multiplies bf16 natively — a CUDA GPU with bf16 support, or a
           CPU with AMX-BF16 or AVX512-BF16 units (recent Intel Xeons, AMD Zen 4 and later) — else fp16 on
           an older CUDA GPU, else fp32.
    bf16   bf16 autocast even where it is emulated (on a CPU without bf16 units that is slower than fp32).
    fp16   fp16 autocast with a gradient scaler (CUDA).

Autocast runs matmuls in the low-precision format and keeps the weights, the optimizer state and the
reductions that need range (softmax, losses) in fp32. On a CPU without bf16 units PyTorch converts to fp32
and back around every matmul, so bf16 costs time instead of saving it; ``auto`` detects that instead of
assuming. Measured on the Multi30k preset: about 2× the tokens/s on an AMX Xeon, 1.6× on an AMD Zen 5
(docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qkv import hardware


@dataclass(frozen=True)
class Precision:
    dtype: torch.dtype | None  # the autocast dtype, None for plain fp32
    reason: str  # one line for the training log: what was chosen and why

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def resolve_precision(setting: str, device: torch.device) -> Precision:
    """What ``train.precision = setting`` means on `device` (see the module docstring)."""
    if setting == "fp32":
        return Precision(None, "precision: fp32")
    if device.type == "cuda":
        if setting == "auto":
            bf16 = torch.cuda.is_bf16_supported()
            return Precision(torch.bfloat16 if bf16 else torch.float16,
                             f"precision: {'bf16' if bf16 else 'fp16'} autocast (auto: this GPU "
                             f"{'supports' if bf16 else 'lacks'} bf16)")
        dtype = torch.bfloat16 if setting == "bf16" else torch.float16
        return Precision(dtype, f"precision: {setting} autocast")
    if device.type != "cpu":  # mps and others: no claim about their units
        if setting == "auto":
            return Precision(None, f"precision: fp32 (auto: no bf16 detection for {device.type})")
        return Precision(torch.bfloat16 if setting == "bf16" else torch.float16, f"precision: {setting} autocast")
    units = hardware.cpu_bf16_units()
    if setting == "auto":
        if units:
            return Precision(torch.bfloat16, f"precision: bf16 autocast (auto: this CPU has {', '.join(units)})")
        return Precision(None, "precision: fp32 (auto: this CPU has no bf16 units, AMX-BF16 or AVX512-BF16; "
                               "bf16 would be emulated and slower)")
    dtype = torch.bfloat16 if setting == "bf16" else torch.float16
    if units:
        return Precision(dtype, f"precision: {setting} autocast (this CPU has {', '.join(units)})")
    return Precision(dtype, f"precision: {setting} autocast; note: this CPU has no bf16 units (AMX-BF16 or "
                            "AVX512-BF16), so it is emulated and usually slower than fp32 — "
                            "train.precision = 'auto' picks fp32 here")
