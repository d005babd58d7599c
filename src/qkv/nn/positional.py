"""Positional information: sinusoidal (Vaswani et al. 2017 §3.5), learned (GPT-2), rotary (Su et al. 2021).

Attention by itself is permutation-invariant; these give each token its place.

- sinusoidal: PE(pos, 2i) = sin(pos / 10000^(2i/C)), PE(pos, 2i+1) = cos(pos / 10000^(2i/C)), added to x.
- learned: a (max_seq_len, C) table, added to x.
- 2-D sin-cos (MAE, DiT): half the features encode an image patch's row, half its column.
- RoPE: no addition; q and k of every head are rotated by an angle proportional to the position, so
  q·k depends only on the distance between the two positions.

Shape legend: B batch, T length, C model width, H heads, D head dim.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(max_len: int, dim: int) -> Tensor:
    """(max_len, dim) table of sines (even columns) and cosines (odd columns)."""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (T, 1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (C/2,)
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq[: dim // 2])
    return table


def sincos_2d(dim: int, grid: int) -> Tensor:
    """(grid², dim) fixed 2-D positions: half the features encode the row, half the column (MAE, DiT)."""

    def one_axis(d: int, pos: Tensor) -> Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2))  # (d/2,)
        out = pos.double()[:, None] * omega[None, :]  # (M, d/2)
        return torch.cat([out.sin(), out.cos()], dim=1)  # (M, d)

    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    emb = torch.cat([one_axis(dim // 2, ys.flatten()), one_axis(dim // 2, xs.flatten())], dim=1)  # (N, dim)
    return emb.float()


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sin/cos table (no parameters), looked up by position."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_len, dim), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        return self.table[positions]  # (T, C)


class LearnedPositionalEmbedding(nn.Embedding):
    """One trained vector per position (GPT-2's ``wpe``)."""

    def forward(self, positions: Tensor) -> Tensor:
        return super().forward(positions)  # (T, C)


def rope_angles(positions: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotation angles, each (T, D): pair (i, i + D/2) turns by pos / base^(2i/D)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)  # (D/2,)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, D)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, T, D) queries or keys: x·cos + rotate_half(x)·sin (the 'half-split' RoPE layout)."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, D/2) each
    rotated = torch.cat([-x2, x1], dim=-1)  # (B, H, T, D)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)
