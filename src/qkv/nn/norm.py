"""Normalization layers.

LayerNorm (Ba et al. 2016): y = (x - mean) / sqrt(var + eps) · γ + β, statistics over the last dim
(biased variance, eps inside the square root, exactly as ``nn.LayerNorm``).
RMSNorm (Zhang & Sennrich 2019): y = x / sqrt(mean(x²) + eps) · γ — no centring, no bias.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NormKind = Literal["layernorm", "rmsnorm"]


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (GPT-2 has one, nanoGPT's bias=False recipe does not)."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (x.size(-1),), self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        rms = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., 1)
        return x * rms * self.weight


def make_norm(kind: NormKind, dim: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    if kind == "layernorm":
        return LayerNorm(dim, eps, bias)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps)
    raise ValueError(f"unknown norm {kind!r}; choose layernorm or rmsnorm")
