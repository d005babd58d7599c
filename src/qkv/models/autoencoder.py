"""A small convolutional autoencoder: the latent space of qkv's "stable" (latent) diffusion mode.

Latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models",
https://arxiv.org/abs/2112.10752) first trains an autoencoder that maps an image x (C, H, W) to a smaller
grid z (c, H/f, W/f), then runs the whole diffusion process on z and decodes the sampled z back to
pixels. The denoiser then sees (H/f)² positions instead of H² — Stable Diffusion uses f = 8 and c = 4.

This one is deliberately plain: ``downsample`` stages of [3×3 conv, SiLU, 4×4 stride-2 conv, SiLU] halve
the grid each time (f = 2^downsample), a 1×1 conv maps to ``latent_channels``; the decoder mirrors it
with nearest-neighbour upsampling + 3×3 convs (no transposed convolutions, so no checkerboard). It is
trained on reconstruction error alone (MSE), so it is an autoencoder, not a VAE: Stable Diffusion's KL
term has a weight of ~1e-6 and serves mainly to keep the latent scale in check, which is done here
explicitly instead: after training, `set_latent_stats` records the per-channel mean and standard
deviation of the training latents, and `encode` returns standardised latents (zero mean, unit variance
per channel — what the noise schedule assumes of its data; Stable Diffusion's 0.18215 "scale factor"
serves the same purpose).

Shape legend: B batch, C image channels, H = W image size, c latent channels, h = H / 2^downsample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class AutoencoderConfig:
    image_size: int | None = None  # H = W; None: set from the data by the task
    in_channels: int | None = None  # C; None: set from the data
    width: int = 32  # channels of the first stage; each further stage doubles it
    downsample: int = 2  # stride-2 stages: the latent grid is H / 2^downsample
    latent_channels: int = 4  # c

    def __post_init__(self):
        for name in ("width", "latent_channels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 1 <= self.downsample <= 4:
            raise ValueError(f"downsample must be 1 … 4 (a factor 2 … 16), got {self.downsample}")
        if self.image_size is not None and self.image_size % (2**self.downsample):
            raise ValueError(f"image_size {self.image_size} is not divisible by 2^downsample = {2**self.downsample}")

    @property
    def latent_size(self) -> int:
        return self.image_size // 2**self.downsample


class Autoencoder(nn.Module):
    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = cfg = config
        if cfg.image_size is None or cfg.in_channels is None:
            raise ValueError("AutoencoderConfig needs image_size and in_channels (the recipe sets them from the data)")
        widths = [cfg.width * 2**i for i in range(cfg.downsample)]
        enc: list[nn.Module] = []
        c_in = cfg.in_channels
        for w in widths:  # each stage: (B, c_in, s, s) -> (B, w, s/2, s/2)
            enc += [nn.Conv2d(c_in, w, 3, padding=1), nn.SiLU(), nn.Conv2d(w, w, 4, stride=2, padding=1), nn.SiLU()]
            c_in = w
        enc.append(nn.Conv2d(c_in, cfg.latent_channels, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, widths[-1], 3, padding=1), nn.SiLU()]
        ups = widths[::-1]  # e.g. [64, 32]: each stage (B, w_in, s, s) -> (B, w_out, 2s, 2s)
        for w_in, w_out in zip(ups, [*ups[1:], widths[0]], strict=True):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w_in, w_out, 3, padding=1), nn.SiLU(),
                    nn.Conv2d(w_out, w_out, 3, padding=1), nn.SiLU()]
        dec.append(nn.Conv2d(widths[0], cfg.in_channels, 3, padding=1))
        self.decoder = nn.Sequential(*dec)
        # per-channel statistics of the raw training latents (set_latent_stats); saved with the weights
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))

    def _stats(self) -> tuple[Tensor, Tensor]:
        return self.latent_mean.view(1, -1, 1, 1), self.latent_std.view(1, -1, 1, 1)  # (1, c, 1, 1) each

    def encode(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images in [-1, 1] -> (B, c, h, h) standardised latents."""
        mean, std = self._stats()
        return (self.encoder(x) - mean) / std  # (B, c, h, h)

    def decode(self, z: Tensor) -> Tensor:
        """(B, c, h, h) standardised latents -> (B, C, H, W) images (not clamped)."""
        mean, std = self._stats()
        return self.decoder(z * std + mean)  # (B, C, H, W)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction (B, C, H, W) of x, through the raw latent (the statistics cancel out)."""
        return self.decoder(self.encoder(x))

    @torch.no_grad()
    def set_latent_stats(self, images: Tensor, batch_size: int = 512) -> None:
        """Record the per-channel mean and std of the raw latents of `images` (N, C, H, W)."""
        z = torch.cat([self.encoder(images[i : i + batch_size]) for i in range(0, images.size(0), batch_size)])
        self.latent_mean.copy_(z.mean(dim=(0, 2, 3)))  # (c,)
        self.latent_std.copy_(z.std(dim=(0, 2, 3)).clamp(min=1e-6))  # (c,)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
