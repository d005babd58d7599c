"""From condition tensors to images: the sampler settings of a run, and the sampled (and decoded) images.

`generate` samples (`qkv.diffusion.sampling`) with classifier-free guidance against the model's null
condition and, in latent mode, decodes the latents with the run's autoencoder. `ImageSampling` holds the
sampler settings: the ``[sample]`` section of a diffusion run and the defaults of `qkv sample`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from qkv.diffusion.ddpm import DiffusionConfig, Spacing
from qkv.diffusion.protocols import Denoiser
from qkv.diffusion.sampling import Sampler, sample
from qkv.errors import QKVError


@dataclass
class ImageSampling:
    """How images are sampled: the ``[sample]`` section of a diffusion run, the defaults of `qkv sample`/`eval`."""

    sampler: Sampler = "ddim"
    steps: int | None = None  # default: 50 for ddim (at most T), every timestep for ddpm
    eta: float = 0.0  # DDIM noise: 0 deterministic, 1 = DDPM-like
    spacing: Spacing = "trailing"  # which timesteps a shortened sampler visits (Lin et al. 2023)
    guidance: float = 3.0  # classifier-free guidance scale w (1 = off)
    n: int = 64  # images per grid
    seed: int = 0
    use_ema: bool = True  # sample from the EMA weights (ema.safetensors)
    eval_samples: int = 0  # >0: at full evaluations during training, score this many samples (DDIM-20)

    def __post_init__(self):
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"steps must be positive, got {self.steps}")
        if self.n <= 0 or self.eval_samples < 0 or self.eta < 0:
            raise ValueError("n must be positive, eval_samples and eta >= 0")


def generate(model: Denoiser, diffusion_cfg: DiffusionConfig, cond: dict, n: int, *, sampler: Sampler = "ddim",
             steps: int | None = None, eta: float = 0.0, spacing: Spacing = "trailing", guidance: float = 1.0,
             seed: int = 0, batch_size: int = 256, progress=None,
             autoencoder=None, on_step=None) -> torch.Tensor:
    """n images (n, C, H, W) in [-1, 1] for the condition rows in `cond`, with CFG against the null condition.

    With an `autoencoder` (latent mode) the model samples latents, which are decoded to pixels here.
    `on_step(i, t, x)`: see `qkv.diffusion.sampling.sample` (x is what the model sees: latents in latent mode).
    """
    if steps is not None and steps <= 0:
        raise QKVError(f"steps must be positive, got {steps}")
    if steps is not None and steps > diffusion_cfg.n_timesteps:
        raise QKVError(f"steps {steps} is more than the {diffusion_cfg.n_timesteps} training timesteps")
    if not math.isfinite(guidance) or guidance < 0:
        raise QKVError(f"guidance must be a number >= 0, got {guidance}")
    if not math.isfinite(eta) or eta < 0:
        raise QKVError(f"eta must be a number >= 0, got {eta}")
    c = model.config
    shape = (n, c.in_channels, c.image_size, c.image_size)
    null = model.null_condition(cond) if cond else None
    if batch_size <= 0:
        raise QKVError(f"batch_size must be positive, got {batch_size}")
    x = sample(model, diffusion_cfg, shape, cond=cond, null_cond=null, guidance=guidance, sampler=sampler,
               steps=steps, eta=eta, spacing=spacing, seed=seed, batch_size=batch_size, progress=progress,
               on_step=on_step)
    if autoencoder is not None:
        with torch.no_grad():  # (n, c, h, h) latents -> (n, C, H, W) pixels
            x = torch.cat([autoencoder.decode(x[i : i + batch_size]) for i in range(0, n, batch_size)])
    return x.clamp(-1, 1)  # the pixel range
