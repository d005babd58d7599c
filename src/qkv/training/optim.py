"""AdamW with decoupled weight decay on 2-D weights only, and the warmup + decay learning-rate schedule.

Weight decay shrinks matrices and embeddings; biases and norm gains (1-D) are left alone (nanoGPT,
GPT-3). The schedule is a pure function of progress, so a resumed run recomputes the same rate.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from qkv.training.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: tensors with dim ≥ 2 decay, the rest don't. Tied tensors appear once."""
    decay, no_decay = [], []
    for p in model.parameters():  # .parameters() yields a shared (tied) tensor once
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig, device_type: str) -> torch.optim.AdamW:
    kwargs = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "eps": cfg.eps}
    # the fused kernel updates every tensor in one pass; it exists for CPU and CUDA in current PyTorch
    if "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type in ("cpu", "cuda"):
        kwargs["fused"] = True
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), **kwargs)


def lr_at(step: int, cfg: TrainConfig, time_fraction: float | None = None) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Warmup: lr · (step + 1) / (warmup + 1). Then decay from lr to min_lr over [warmup, decay_steps]
    (cosine: min + ½(1 + cos(π·r))(lr − min)), or over the wall-time budget when schedule_by = "time"
    (`time_fraction` = share of the decay time used). After that, min_lr.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "constant":
        return cfg.lr
    if time_fraction is not None:
        ratio = time_fraction
    else:
        decay_steps = cfg.decay_steps or cfg.max_steps
        ratio = (step - cfg.warmup_steps) / max(1, decay_steps - cfg.warmup_steps)
    ratio = min(max(ratio, 0.0), 1.0)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio)) if cfg.schedule == "cosine" else 1.0 - ratio
    return cfg.min_lr + coeff * (cfg.lr - cfg.min_lr)
