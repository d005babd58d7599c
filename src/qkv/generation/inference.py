"""A decoding-time weight layout: the same model, with every Linear weight stored transposed.

Decoding one token multiplies a (1, C_in) row by each weight matrix: a matrix-vector product that must
stream the whole matrix from memory. ``nn.Linear`` keeps W as (C_out, C_in) and computes x Wᵀ; on this
kind of CPU, reading W stored as (C_in, C_out) — the layout GPT-2's original Conv1D used — streams
measurably faster (see docs/benchmarks.md). `for_decoding` makes an inference copy in that layout; the
training model is untouched. The outputs are the same function, up to float summation order.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class TransposedLinear(nn.Module):
    """y = x @ W_t + b with W_t = Wᵀ stored contiguously as (C_in, C_out). Inference only."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight_t = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)  # (C_in, C_out)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.bias is None:
            return x @ self.weight_t  # (..., C_out)
        return torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight_t).view(*x.shape[:-1], -1)


def for_decoding(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` whose nn.Linear layers use `TransposedLinear` (a tied LM head gets its own copy)."""
    fast = copy.deepcopy(model).eval()
    for module in list(fast.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, TransposedLinear(child))
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast


def prepare_for_decoding(model: nn.Module, quantize: str | None = None) -> nn.Module:
    """The copy of `model` that decoding commands run: int8 Linear weights if quantize == "int8",
    else the same fp32 function in the transposed decode layout (`for_decoding`)."""
    if quantize == "int8":
        from qkv.generation.quantize import quantize_int8

        return quantize_int8(model)
    return for_decoding(model)
