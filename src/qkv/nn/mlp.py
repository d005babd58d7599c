"""The position-wise feed-forward network: down(act(up(x))), applied to every token independently.

Activations: GELU (exact or GPT-2's tanh approximation), ReLU, and ReLU² = max(0, h)² (So et al. 2021,
"Primer"), which the GPT speedruns (modded-nanogpt, nanochat) use: as cheap as ReLU, and it learns faster.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch.nn.functional as F
from torch import Tensor, nn

Activation = Literal["gelu", "gelu_tanh", "relu", "relu2"]


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
        elif self.activation == "relu2":
            h = F.relu(h).square()
        else:
            h = F.gelu(h, approximate="tanh" if self.activation == "gelu_tanh" else "none")
        return self.dropout(self.down(h))  # (B, T, C)
