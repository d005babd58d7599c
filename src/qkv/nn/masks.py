"""Attention masks, all in one place.

Convention everywhere in qkv (the same as ``F.scaled_dot_product_attention`` and torchtune):
a **bool mask with True = may attend**. Masks broadcast against attention scores of shape (B, H, Tq, Tk).

    >>> causal_mask(3, 3).int()
    tensor([[1, 0, 0],
            [1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    >>> causal_mask(1, 3).int()          # one new query after two cached keys sees all three
    tensor([[1, 1, 1]], dtype=torch.int32)
"""

from __future__ import annotations

import torch
from torch import Tensor


def causal_mask(t_q: int, t_k: int, device: torch.device | str | None = None) -> Tensor:
    """(Tq, Tk) bool: query i may attend to key j iff j <= i + (Tk - Tq).

    Aligned bottom-right, so it stays right when the last Tq queries follow Tk - Tq cached keys.
    """
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def padding_mask(lengths: Tensor, t: int) -> Tensor:
    """(B, T) bool from sequence lengths (B,): True at real tokens, False at padding."""
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


def key_padding_to_attn(key_mask: Tensor) -> Tensor:
    """(B, Tk) key mask -> (B, 1, 1, Tk), broadcastable over heads and queries."""
    return key_mask[:, None, None, :]


def combine(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of the masks that are given (None means 'no restriction')."""
    out = None
    for m in masks:
        if m is None:
            continue
        out = m if out is None else out & m
    return out
