"""Noise schedules: the variances β_1 … β_T of the forward process, and ᾱ_t = ∏_{s≤t} (1 − β_s).

DDPM (Ho et al. 2020, https://arxiv.org/abs/2006.11239) adds Gaussian noise in T small steps:

    q(x_t | x_{t−1}) = N(x_t; √(1 − β_t) x_{t−1}, β_t I)                                  (DDPM eq. 2)

and, writing α_t = 1 − β_t and ᾱ_t = ∏_{s=1..t} α_s, any step can be reached from x_0 in one jump:

    q(x_t | x_0) = N(x_t; √ᾱ_t x_0, (1 − ᾱ_t) I)                                          (DDPM eq. 4)

ᾱ_t is the share of signal variance left at step t. It must fall strictly from ≈1 to ≈0.

- ``linear``: β_t evenly spaced from β_start = 1e-4 to β_end = 0.02 (DDPM §4, for T = 1000). The range
  is not rescaled for other T (diffusers doesn't either): with T = 100, ᾱ_T is still ≈ 0.36, far from noise.
- ``cosine``: ᾱ_t = f(t)/f(0), f(t) = cos²(((t/T) + s)/(1 + s) · π/2), s = 0.008, with
  β_t = min(1 − ᾱ_t/ᾱ_{t−1}, 0.999) (Nichol & Dhariwal 2021, https://arxiv.org/abs/2102.09672, eq. 17). It
  destroys information more slowly at the start, which helps small images such as 8×8 digits.

Index convention (the same as diffusers): array index i = 0 … T−1 holds the paper's step t = i + 1,
so ``alphas_cumprod[0]`` = ᾱ_1 (≈ 1) and ``alphas_cumprod[T − 1]`` = ᾱ_T (≈ 0).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

BetaSchedule = Literal["linear", "cosine"]


def linear_betas(n_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """(T,) float32 β_t evenly spaced in [beta_start, beta_end] (DDPM §4)."""
    return torch.linspace(beta_start, beta_end, n_timesteps, dtype=torch.float32)


def cosine_betas(n_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """(T,) float32 β_t from the cosine ᾱ(t) of Improved DDPM (eq. 17), each clipped to `max_beta`.

    Example: ``cosine_betas(4)`` ≈ [0.1530, 0.4170, 0.7079, 0.9990]; the last β is clipped so ᾱ_T > 0.
    """

    def f(u: float) -> float:  # ᾱ as a function of u = t / T, before normalising by f(0)
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - f((i + 1) / n_timesteps) / f(i / n_timesteps), max_beta) for i in range(n_timesteps)]
    return torch.tensor(betas, dtype=torch.float32)


def make_betas(kind: BetaSchedule, n_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """(T,) β_t of the named schedule."""
    if n_timesteps <= 0:
        raise ValueError(f"n_timesteps must be positive, got {n_timesteps}")
    if kind == "linear":
        if not 0.0 < beta_start < beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
        return linear_betas(n_timesteps, beta_start, beta_end)
    if kind == "cosine":
        return cosine_betas(n_timesteps)
    raise ValueError(f"unknown beta schedule {kind!r}; choose one of {', '.join(get_args(BetaSchedule))}")


def alphas_cumprod(betas: Tensor) -> Tensor:
    """(T,) ᾱ_t = ∏_{s≤t} (1 − β_s)."""
    return torch.cumprod(1.0 - betas, dim=0)
