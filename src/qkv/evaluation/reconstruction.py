"""How well an autoencoder reconstructs held-out images: the mean squared error over every pixel.

Pixels are in [-1, 1], so an all-black guess of the shapes dataset scores 0.16 and PSNR = 10·log10(4 / MSE).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qkv.models.autoencoder import Autoencoder


@torch.no_grad()
def reconstruction_mse(model: Autoencoder, images: torch.Tensor, batch_size: int = 512) -> float:
    """Mean squared error of the reconstructions of `images` (N, C, H, W), over every pixel."""
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        total += F.mse_loss(model(x), x, reduction="sum").item()
    return total / images.numel()
