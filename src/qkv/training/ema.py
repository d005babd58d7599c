"""Exponential moving average of a model's weights, the copy diffusion models are sampled from.

After every optimizer step:  θ_ema ← d · θ_ema + (1 − d) · θ,  with the decay warmed up as
d_k = min(decay, (1 + k) / (10 + k)) at update k (TensorFlow's ``ExponentialMovingAverage`` with
``num_updates``), so a short run is not dominated by its random initial weights: with decay 0.999
the average spans ~k/10 steps early on and ~1000 steps once k passes ~9000.

DDPM (§4, "we use EMA with decay 0.9999") and DiT (0.9999) sample from the average; short CPU runs
here use 0.995–0.999. Buffers (e.g. fixed position tables) are copied, not averaged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0  # optimizer steps averaged so far
        self.shadow: dict[str, Tensor] = {k: p.detach().clone().float() for k, p in model.named_parameters()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for k, p in model.named_parameters():
            if self.shadow[k].device != p.device:  # the model moved (e.g. to the GPU) after the EMA was made
                self.shadow[k] = self.shadow[k].to(p.device)
            self.shadow[k].lerp_(p.detach().float(), 1.0 - d)  # θ_ema + (1 − d)(θ − θ_ema)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite `model`'s parameters with the averaged ones."""
        for k, p in model.named_parameters():
            p.copy_(self.shadow[k].to(p.device, p.dtype))

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to save: the averaged parameters (by their model names) and the update count."""
        return {**self.shadow, "_ema_updates": torch.tensor(self.updates, dtype=torch.int64)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = [k for k in self.shadow if k not in state]
        if missing:
            raise KeyError(f"EMA state lacks {missing[0]!r}")
        for k in self.shadow:
            self.shadow[k] = state[k].detach().clone().float().to(self.shadow[k].device)
        self.updates = int(state["_ema_updates"])
