"""The autoencoder task (``task = "autoencoder"``): images -> a small latent grid -> images, on reconstruction MSE.

``qkv train --preset shapes-autoencoder`` trains one on its own; latent ("stable") diffusion
trains one first, in RUN/autoencoder/, through this same task (`qkv.tasks.diffusion`). When training ends
the per-channel statistics of the training images' latents are recorded (`Autoencoder.set_latent_stats`),
so `encode` gives standardised latents, and saved with the weights (config.json says ``latent_stats``).

Evaluation: the reconstruction MSE of the held-out images (in [-1, 1] units; an all-black guess of the
shapes scores 0.16). `qkv eval RUN` reports it with the PSNR; the run's samples.png shows held-out images
above their reconstructions.

This module is also the proof of the recipe in docs/architecture.md: a task is one module plus one line in
`qkv.tasks.TASKS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F

from qkv.data.images import ImageBatches, ImageDataConfig, ImageSet, load_images, save_grid
from qkv.errors import QKVError
from qkv.evaluation.reconstruction import reconstruction_mse
from qkv.models.autoencoder import Autoencoder, AutoencoderConfig
from qkv.models.io import save_run
from qkv.runs import SAMPLES_FILE
from qkv.tasks.base import Run, State, Task, last_eval
from qkv.training.config import TrainConfig


@dataclass
class AutoencoderRunConfig:
    task: Literal["autoencoder"] = "autoencoder"
    model: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    data: ImageDataConfig = field(default_factory=lambda: ImageDataConfig(source="shapes"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=1500, batch_size=64, lr=2e-3, min_lr=2e-4,
                                                                   warmup_steps=100, weight_decay=0.0))


@dataclass
class AutoencoderState(State):
    train_set: ImageSet | None = None
    val_set: ImageSet | None = None


class AutoencoderTask(Task):
    name = "autoencoder"
    config_class = AutoencoderRunConfig
    fitted_model_fields = ("image_size", "in_channels")

    def __init__(self, cfg, ctx, images: tuple[ImageSet, ImageSet] | None = None):
        super().__init__(cfg, ctx)
        self.images = images  # (train, val) already loaded by a task that trains this one first

    def read_data(self) -> tuple[ImageSet, ImageSet]:
        train, val = self.images or load_images(self.cfg.data)
        _, _, H, W = train.images.shape
        if H != W:
            raise QKVError(f"images must be square, got {H}×{W}")
        if H % 2**self.cfg.model.downsample:
            raise QKVError(f"image size {H} is not divisible by 2^downsample = {2**self.cfg.model.downsample}")
        return train, val

    def resolve(self, data: tuple[ImageSet, ImageSet], tokenizers: None) -> AutoencoderRunConfig:
        cfg = self.cfg
        if self.ctx.resume:
            return cfg
        _, C, H, _ = data[0].images.shape
        return replace(cfg, model=replace(cfg.model, image_size=H, in_channels=C))

    def prepare(self, cfg: AutoencoderRunConfig, data: tuple[ImageSet, ImageSet], tokenizers: None
                ) -> AutoencoderState:
        train, val = data
        meta = {"source": cfg.data.source, "train_images": len(train), "val_images": len(val),
                "image_shape": list(train.images.shape[1:])}
        return AutoencoderState(cfg, meta, train, val)

    def build_model(self, state: AutoencoderState):
        from qkv.models.io import load_model

        cfg = state.cfg
        model = load_model(self.ctx.run_dir)[0] if self.ctx.resume else Autoencoder(cfg.model)
        H, C = cfg.model.image_size, cfg.model.in_channels
        self.ctx.say(f"autoencoder: {model.num_params():,} parameters, {H}×{H}×{C} -> "
                     f"{model.config.latent_size}×{model.config.latent_size}×{cfg.model.latent_channels}, "
                     f"{cfg.train.max_steps} steps")
        return model

    def batches(self, state: AutoencoderState, rows: int, rank: int, world: int):
        return ImageBatches(state.train_set.images, {}, rows, seed=state.cfg.train.seed, rank=rank, world_size=world)

    def loss(self, state: AutoencoderState, model, batch):
        x = batch["images"]
        return F.mse_loss(model(x), x), {"tokens": x.size(0)}  # tokens_per_s counts images

    def loss_terms(self, batch) -> int:
        return batch["images"].size(0)

    def evaluate(self, state: AutoencoderState, model, full: bool, train_means: dict) -> dict:
        return {"val_loss": reconstruction_mse(model, state.val_set.images)}

    def after_training(self, state: AutoencoderState, model) -> None:
        """Record the latent statistics of the training images and save them with the weights."""
        model.eval()
        model.set_latent_stats(state.train_set.images.to(next(model.parameters()).device))
        if self.ctx.dist.is_main:
            save_run(self.ctx.run_dir, model, extra_config={**self.saved_config(state), "latent_stats": True},
                     metadata={"step": str(state.cfg.train.max_steps)})

    def summary(self, state: AutoencoderState, model, result) -> list[str]:
        lines = super().summary(state, model, result)
        last = last_eval(result, "val_loss")
        if last:
            lines.append(f"held-out reconstruction MSE {last['val_loss']:.5f} (pixels in [-1, 1])")
        return lines

    def samples(self, state: AutoencoderState, model):
        path = self.ctx.run_dir / SAMPLES_FILE
        width, height = save_reconstructions(model, state.val_set.images[:16], path)
        yield f"reconstructions: {path} (held-out images above their reconstructions, {width}×{height} px)\n"


def save_reconstructions(model: Autoencoder, images: torch.Tensor, path) -> tuple[int, int]:
    """A grid: the images in the first row(s), their reconstructions below."""
    with torch.no_grad():
        rec = model(images.to(next(model.parameters()).device)).cpu().clamp(-1, 1)
    return save_grid(torch.cat([images, rec]), path, nrow=len(images))


class AutoencoderRun(Run):
    """A trained autoencoder: encode to latents, decode, reconstruct, score (`qkv.load_run`)."""

    task = "autoencoder"
    config_class = AutoencoderRunConfig
    model_type = "autoencoder"

    @classmethod
    def load(cls, path, device: str = "cpu", **options):
        model, saved, config = cls._load_model(path, device)
        return cls(path, config, saved, model)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(images)

    def evaluate(self, n: int | None = None) -> dict:
        """Reconstruction MSE and PSNR on the held-out images of the run's data (the first `n` of them)."""
        import math

        _, val = load_images(self.config.data)
        images = val.images[:n] if n else val.images
        mse = reconstruction_mse(self.model, images)
        return {"source": f"{self.config.data.source} (held-out images)", "images": len(images), "mse": mse,
                "psnr_db": 10 * math.log10(4.0 / mse) if mse > 0 else float("inf")}

    def report(self, r: dict) -> str:
        return (f"{r['source']}: {r['images']:,} images | reconstruction MSE {r['mse']:.5f} | "
                f"PSNR {r['psnr_db']:.2f} dB (pixels in [-1, 1])")


AutoencoderTask.run_class = AutoencoderRun
