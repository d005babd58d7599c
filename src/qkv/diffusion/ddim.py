"""DDIM: deterministic (η = 0) or partly stochastic sampling in far fewer steps than training used.

Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", https://arxiv.org/abs/2010.02502.
Equation numbers below are that paper's, whose α_t is DDPM's ᾱ_t; this file writes ᾱ as in DDPM.

DDIM keeps DDPM's training objective (a network trained with `DDPM.loss` is sampled as is) and
replaces the Markov reverse chain by a family of non-Markovian ones indexed by σ. For any sub-sequence
of timesteps τ (here: `timesteps(n_steps, spacing)`), going from t to the previous element s:

    x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t                                    ("predicted x_0" in eq. 12)
    x_s = √ᾱ_s x̂_0  +  √(1 − ᾱ_s − σ_t²) ε̂  +  σ_t z                          (eq. 12)
    σ_t(η) = η √((1 − ᾱ_s) / (1 − ᾱ_t)) √(1 − ᾱ_t / ᾱ_s)                           (eq. 16)

η = 0: no noise is injected and the sampler is a deterministic map from x_T to x_0 (same x_T, same
image). η = 1: σ_t equals DDPM's √β̃_t and the step is DDPM's ancestral step. Before the first
timestep ᾱ = 1 (diffusers' ``set_alpha_to_one=True``), so the last step returns x̂_0 itself.

Clipping. With ``clip_sample`` x̂_0 is clamped to the data range [-1, 1]; ε̂ is then re-derived from
the clamped x̂_0, ε̂ = (x_t − √ᾱ_t x̂_0) / √(1 − ᾱ_t), so both terms of eq. 12 describe the same
(x̂_0, ε̂) pair (diffusers' ``use_clipped_model_output=True``; its default keeps the unclipped ε̂). With
classifier-free guidance the guided prediction often lands outside [-1, 1] early on, and mixing a
clamped x̂_0 with an unclamped ε̂ then wrecks the samples: after a 3-minute v-prediction digits run,
DDIM-20 with guidance 3 gave 39% sample accuracy that way and 99.5% with the consistent pair
(``clipped_eps=False`` restores diffusers' default).

The order of operations follows diffusers' `DDIMScheduler.step` (checked in
`tests/parity/test_diffusers_parity.py`, for both clipping variants).
"""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.diffusion.ddpm import DDPM, StepOutput


class DDIM(DDPM):
    """A `DDPM` (same schedule, same training) with the DDIM update as its `step`."""

    def step(self, pred: Tensor, t: int, x_t: Tensor, prev_t: int | None = None,
             generator: torch.Generator | None = None, noise: Tensor | None = None,
             eta: float = 0.0, clipped_eps: bool = True) -> StepOutput:
        """One DDIM step x_t -> x_{prev_t} (eq. 12). prev_t < 0 means "to the clean image"."""
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        prev_t = t - 1 if prev_t is None else prev_t
        # 1. ᾱ at the current and the previous timestep of the (strided) sequence
        abar_t = self._abar_at(t)
        abar_prev = self._abar_at(prev_t)
        # 2. x̂_0 and ε̂ from the prediction
        x0, eps = self.split_prediction(pred, x_t, t)
        # 3. clip x̂_0 to the data range and (clipped_eps) re-derive ε̂ from it
        x0 = self._clip(x0)
        if clipped_eps and self.cfg.clip_sample:
            eps = (x_t - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()
        # 4. σ_t(η) (eq. 16)
        var = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)
        sigma = eta * var.sqrt()
        # 5. "direction pointing to x_t" and the deterministic part of eq. 12
        direction = (1 - abar_prev - sigma**2).sqrt() * eps
        prev = abar_prev.sqrt() * x0 + direction  # (B, C, H, W)
        # 6. random noise σ_t z (only when η > 0)
        if eta > 0:
            if noise is None:
                noise = torch.randn(pred.shape, generator=generator, dtype=pred.dtype).to(pred.device)
            prev = prev + sigma * noise
        return StepOutput(prev, x0)
