"""The position-wise feed-forward network: down(act(up(x))), applied to every token independently."""

from __future__ import annotations

from typing import Literal, get_args

import torch.nn.functional as F
from torch import Tensor, nn

Activation = Literal["gelu", "gelu_tanh", "relu"]


class MLP(nn.Module):
    """C -> d_ff -> C. GPT-2 uses d_ff = 4C and the tanh approximation of GELU."""

    def __init__(
        self, d_model: int, d_ff: int, activation: Activation = "gelu", bias: bool = True, dropout: float = 0.0
    ):
        super().__init__()
        if activation not in get_args(Activation):
            raise ValueError(f"unknown activation {activation!r}; choose one of {get_args(Activation)}")
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)
        self.activation = activation
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.up(x)  # (B, T, d_ff)
        if self.activation == "relu":
            h = F.relu(h)
        else:
            h = F.gelu(h, approximate="tanh" if self.activation == "gelu_tanh" else "none")
        return self.dropout(self.down(h))  # (B, T, C)
