"""What the diffusion code needs from a denoiser: written down, so that `qkv.diffusion` imports no model.

Any network that satisfies `Denoiser` can be trained with `DDPM.loss` and sampled with
`qkv.diffusion.sampling.sample` / `qkv.diffusion.generate.generate`; qkv's DiT (`qkv.models.dit`) is one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from torch import Tensor, nn


class DenoiserConfig(Protocol):
    image_size: int  # H = W of what the denoiser sees (latents in latent mode)
    in_channels: int  # C of what it sees; its output has as many channels


@runtime_checkable
class Denoiser(Protocol):
    """``model(x_t (B, C, H, W), t (B,), **cond) -> prediction (B, C, H, W)`` (ε, x_0 or v).

    ``null_condition(cond)`` gives the condition inputs that stand for "no condition", row for row (the null
    class, the empty prompt): classifier-free guidance mixes the two predictions.
    """

    config: DenoiserConfig
    training: bool

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Tensor) -> Tensor: ...

    def null_condition(self, cond: dict[str, Tensor]) -> dict[str, Tensor]: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def train(self, mode: bool = True) -> nn.Module: ...

    def eval(self) -> nn.Module: ...
