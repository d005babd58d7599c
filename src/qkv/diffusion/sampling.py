"""Sampling loops: pure noise -> images, with DDPM (every timestep) or DDIM (a few), and classifier-free guidance.

    x_T ~ N(0, I)
    for t in timesteps (descending):
        ε̂ = model(x_t, t, cond)                                       (one batched forward, see below)
        x_prev = DDPM.step or DDIM.step(ε̂, t, x_t)
    return x_0

Classifier-free guidance (Ho & Salimans 2022, https://arxiv.org/abs/2207.12598, eq. 6) mixes the
conditional and unconditional predictions of the same network,

    ε̃ = ε̂(x_t, ∅) + w · (ε̂(x_t, c) − ε̂(x_t, ∅))

w = 1 is the plain conditional model, w = 0 the unconditional one, w > 1 trades diversity for
adherence to the condition. Both branches run as one forward on a doubled batch (DiT's
``forward_with_cfg``, without its hard-coded channel count). The same formula is applied to whatever
the model predicts (ε, x_0 or v: all are affine in the score).

The denoiser is any module ``model(x_t, t, **cond) -> prediction`` (qkv's `DiT`, a diffusers UNet
wrapper ...). Randomness comes only from one `torch.Generator` seeded with `seed`, so the same seed,
model and settings give the same images, on CPU, independently of torch's global RNG.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from qkv.diffusion.ddim import DDIM
from qkv.diffusion.ddpm import DDPM, DiffusionConfig, Spacing

Sampler = Literal["ddpm", "ddim"]


def default_steps(sampler: Sampler, n_timesteps: int) -> int:
    """The steps a sampler runs when none are asked for: every timestep for DDPM, 50 (at most T) for DDIM."""
    return n_timesteps if sampler == "ddpm" else min(50, n_timesteps)


def _cat(a: dict, b: dict) -> dict:
    return {k: torch.cat([a[k], b[k]], dim=0) for k in a}


def _rows(cond: dict | None, lo: int, hi: int) -> dict:
    return {k: v[lo:hi] for k, v in (cond or {}).items()}


@torch.no_grad()
def sample(
    model: nn.Module,
    cfg: DiffusionConfig,
    shape: tuple[int, ...],
    *,
    cond: dict | None = None,
    null_cond: dict | None = None,
    guidance: float = 1.0,
    sampler: Sampler = "ddim",
    steps: int | None = None,
    eta: float = 0.0,
    spacing: Spacing = "trailing",
    seed: int = 0,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
    on_step: Callable[[int, int, Tensor], None] | None = None,
) -> Tensor:
    """Generate ``shape[0]`` images of shape ``shape[1:]`` (C, H, W); returns (N, C, H, W) on CPU, as sampled.

    With ``cfg.clip_sample`` the last step returns the clamped x̂_0, so the result lies in [-1, 1] (pixels);
    without it (latents) nothing bounds it — mapping samples to pixels is the caller's business.

    cond: tensors with N rows (e.g. {"labels": (N,)}); null_cond: the unconditional counterpart
    (needed when guidance != 1). sampler "ddpm" runs `steps` (default all T) ancestral steps, "ddim"
    `steps` (default 50) DDIM steps with noise level `eta`. `progress(k)` is called after each step;
    `on_step(i, t, x)` too, with the batch's x after step i, now at timestep t (−1 after the last step: the
    finished sample): the reverse process as it happens (the playground's strip). It is first called with
    i = −1 and t = T for the pure noise x_T.
    """
    if steps is not None and steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    guided = guidance != 1.0 and bool(cond)
    if guided and null_cond is None:
        raise ValueError("guidance != 1 needs the unconditional condition (null_cond)")
    scheduler = DDPM(cfg) if sampler == "ddpm" else DDIM(cfg)
    ts = scheduler.timesteps(steps or default_steps(sampler, cfg.n_timesteps), spacing)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    n = shape[0]
    out = []
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        B = hi - lo
        c, nc = _rows(cond, lo, hi), _rows(null_cond, lo, hi)
        c, nc = {k: v.to(device) for k, v in c.items()}, {k: v.to(device) for k, v in nc.items()}
        x = torch.randn((B, *shape[1:]), generator=gen).to(device)  # x_T: (B, C, H, W)
        if on_step is not None:
            on_step(-1, cfg.n_timesteps, x)
        for i, t in enumerate(ts):
            prev_t = ts[i + 1] if i + 1 < len(ts) else -1
            if guided and guidance == 0.0:
                pred = model(x, torch.full((B,), t, device=device, dtype=torch.long), **nc)
            elif guided:
                both = model(torch.cat([x, x]), torch.full((2 * B,), t, device=device, dtype=torch.long),
                             **_cat(c, nc))  # (2B, C, H, W)
                pred_c, pred_u = both.chunk(2)
                pred = pred_u + guidance * (pred_c - pred_u)  # CFG eq. 6
            else:
                pred = model(x, torch.full((B,), t, device=device, dtype=torch.long), **c)
            noise = torch.randn(x.shape, generator=gen).to(device) if (sampler == "ddpm" or eta > 0) else None
            if sampler == "ddpm":
                x = scheduler.step(pred, t, x, prev_t=prev_t, noise=noise).prev_sample
            else:
                x = scheduler.step(pred, t, x, prev_t=prev_t, noise=noise, eta=eta).prev_sample
            if progress is not None:
                progress(1)
            if on_step is not None:
                on_step(i, int(prev_t), x)
        out.append(x.float().cpu())
    model.train(was_training)
    return torch.cat(out)
