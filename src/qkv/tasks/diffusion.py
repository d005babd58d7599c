"""The diffusion task (``task = "diffusion"``): images (+ labels or captions) -> DiT denoiser, with an EMA.

``qkv train --preset digits-dit``. The run directory holds config.json (model, data, train,
diffusion, sample and latent sections), model.safetensors (the trained weights, what an exact resume needs),
ema.safetensors (their moving average, what sampling uses), tokenizer.json (text conditioning only), the
trainer state, metrics.jsonl, loss.png, samples.png — and, in latent mode (`LatentConfig`), autoencoder/:
the autoencoder's own run (`qkv.tasks.autoencoder`), which sampling and evaluation use to decode.

Each training batch carries its timesteps and noise (`qkv.data.images.ImageBatches`): drawn for the global
batch, so N processes train on exactly what one would. Logged at every evaluation: ``val_loss`` and
``val_loss_ema`` — the training objective (`DDPM.loss`) on the held-out images, with timesteps and noise from
a fixed seed so successive evaluations are comparable — and, on full evaluations when ``sample.eval_samples``
> 0, the sample quality figures of `qkv.evaluation.diffusion` for the EMA weights (sample accuracy or prompt
adherence, Fréchet distance).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from qkv.config import from_dict, to_dict
from qkv.data.batch import condition_of
from qkv.data.captions import encode_prompts, train_caption_tokenizer
from qkv.data.images import ImageBatches, ImageDataConfig, ImageSet, load_images, parse_caption, save_grid
from qkv.diffusion.ddpm import DDPM, DiffusionConfig
from qkv.diffusion.generate import ImageSampling, generate
from qkv.diffusion.sampling import default_steps
from qkv.errors import QKVError
from qkv.evaluation.diffusion import Judge
from qkv.models.autoencoder import Autoencoder, AutoencoderConfig
from qkv.models.dit import DiT, DiTConfig
from qkv.runs import (
    AUTOENCODER_DIR,
    CONFIG_FILE,
    EMA_FILE,
    SAMPLES_FILE,
    STATE_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    atomic_save_tensors,
    file_step,
    load_json,
    load_tensors,
)
from qkv.tasks.base import Run, State, Task, last_eval
from qkv.tasks.capabilities import Capability, require
from qkv.tokenizers.base import Tokenizer
from qkv.training.config import TrainConfig
from qkv.training.ema import EMA


@dataclass
class DiffusionTrainConfig(TrainConfig):
    """`TrainConfig` plus the weight average sampling uses."""

    ema_decay: float = 0.999  # θ_ema ← d·θ_ema + (1 − d)·θ after every step, d warmed up (see training/ema.py)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class LatentConfig:
    """Latent ("stable") mode: train an autoencoder first, then run diffusion on its latents.

    The autoencoder (`qkv.tasks.autoencoder`) trains for `steps` updates on reconstruction MSE, in
    RUN/autoencoder/ (its own config, weights and metrics); the images are then encoded once, the DiT is sized
    to the latent grid (H / 2^downsample, `latent_channels`), and every sample is decoded back to pixels.
    `train.max_minutes` budgets the diffusion phase only.
    """

    enabled: bool = False
    width: int = 32  # autoencoder channels of the first stage (doubling per stage)
    downsample: int = 2  # stride-2 stages: latents are H / 2^downsample on a side
    latent_channels: int = 4
    steps: int = 1500  # autoencoder updates
    batch_size: int = 64
    lr: float = 2e-3

    def __post_init__(self):
        if self.steps <= 0 or self.batch_size <= 0 or self.lr <= 0:
            raise ValueError("latent.steps, latent.batch_size and latent.lr must be positive")
        AutoencoderConfig(width=self.width, downsample=self.downsample, latent_channels=self.latent_channels)


@dataclass
class DiffusionRunConfig:
    task: Literal["diffusion"] = "diffusion"
    model: DiTConfig = field(default_factory=DiTConfig)
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    train: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sample: ImageSampling = field(default_factory=ImageSampling)
    latent: LatentConfig = field(default_factory=LatentConfig)

    def __post_init__(self):
        if self.latent.enabled and self.diffusion.clip_sample:
            raise ValueError("latent mode needs diffusion.clip_sample = false: the sampler would clamp the "
                             "standardised latents to [-1, 1], the range of pixels")


def dataset_condition(model_cfg: DiTConfig, data: ImageSet, tok) -> dict:
    """The per-image condition tensors the model trains on."""
    if model_cfg.conditioning == "class":
        return {"labels": data.labels}
    if model_cfg.conditioning == "text":
        ids, mask = encode_prompts(tok, data.captions, model_cfg.max_seq_len)
        return {"text": ids, "text_mask": mask}
    return {}


def make_condition(model, tok, n: int, *, label: int | None = None, prompt: str | None = None,
                   prompts: list[str] | None = None, class_names: list[str] | None = None) -> tuple[dict, dict]:
    """(cond, what) for n samples. cond holds the model inputs; what["targets"] the (n, heads) ids asked for.

    Class models: `label`, or (default) labels 0, 1, 2 … cycling. Text models: `prompt`, or (default)
    `prompts` (the run's training captions) cycling. A label on a text model, a prompt on a class
    model, a label outside the trained classes or a caption the tokenizer cannot encode: QKVError.
    """
    cfg = model.config
    if n <= 0:
        raise QKVError(f"n must be positive, got {n}")
    if cfg.conditioning == "class":
        if prompt is not None:
            raise QKVError(f"this run is class-conditional ({cfg.n_classes} classes); give a label, not a prompt")
        if label is not None and not 0 <= label < cfg.n_classes:
            names = f" ({', '.join(class_names[:12])}{' …' if len(class_names) > 12 else ''})" if class_names else ""
            raise QKVError(f"label {label} is outside the trained classes 0 … {cfg.n_classes - 1}{names}")
        labels = torch.full((n,), label) if label is not None else torch.arange(n) % cfg.n_classes
        return {"labels": labels}, {"targets": labels[:, None], "labels": labels.tolist()}
    if cfg.conditioning == "text":
        if label is not None:
            raise QKVError("this run is text-conditional; give a prompt, not a label")
        if prompt is not None and not prompt.strip():
            raise QKVError("the prompt is empty")
        texts = [prompt] * n if prompt is not None else [prompts[i % len(prompts)] for i in range(n)]
        ids, mask = encode_prompts(tok, texts, cfg.max_seq_len)
        parsed = [parse_caption(t) for t in texts]
        targets = torch.tensor(parsed) if all(p is not None for p in parsed) else None
        return {"text": ids, "text_mask": mask}, {"targets": targets, "prompts": texts}
    if label is not None or prompt is not None:
        raise QKVError("this run is unconditional; it takes neither a label nor a prompt")
    return {}, {"targets": None}


@torch.no_grad()
def encode_images(ae: Autoencoder, data: ImageSet, batch_size: int = 512) -> ImageSet:
    """The same set with every image replaced by its standardised latent (N, c, h, h)."""
    device = next(ae.parameters()).device
    z = torch.cat([ae.encode(data.images[i : i + batch_size].to(device)).cpu()
                   for i in range(0, len(data), batch_size)])
    return replace(data, images=z)


def read_ema(run_dir: Path) -> dict:
    """The EMA tensors of a run being resumed; QKVError if missing or from another step than the weights."""
    path = run_dir / EMA_FILE
    if not path.is_file():
        raise QKVError(f"{run_dir}: no {EMA_FILE}; cannot resume a diffusion run without its weight average")
    step, state_step = file_step(path), load_json(run_dir / STATE_FILE).get("step")
    if step != state_step:
        raise QKVError(f"{path} is from step {step} but the trainer state from step {state_step}; "
                       "a save was interrupted")
    return load_tensors(path)


@dataclass
class DiffusionData:
    train: ImageSet  # pixels in [-1, 1], with their labels or captions
    val: ImageSet


@dataclass
class DiffusionState(State):
    pixels: DiffusionData | None = None  # the real images in pixels: what the judge of sample quality reads
    tok: Tokenizer | None = None  # text conditioning only
    autoencoder: Autoencoder | None = None  # latent mode: trained first, frozen; its latents are what is noised
    train_images: torch.Tensor | None = None  # (N, C, H, W): pixels, or standardised latents in latent mode
    val_images: torch.Tensor | None = None
    train_cond: dict = field(default_factory=dict)  # the per-image condition tensors (labels, or caption ids)
    val_cond: dict = field(default_factory=dict)
    prompts: list[str] | None = None  # text conditioning: the distinct training captions
    diffusion: DDPM | None = None
    ema: EMA | None = None  # the weight average, made beside the model by build_model
    ema_model: nn.Module | None = None  # a copy holding the average, for evaluation and samples
    judge: Judge | None = None  # the classifier that reads samples, trained at the first full evaluation


class DiffusionTask(Task):
    name = "diffusion"
    config_class = DiffusionRunConfig
    fitted_model_fields = ("image_size", "in_channels", "n_classes", "vocab_size", "pad_id", "bos_id")
    legacy_names = {"data": {"bpe_vocab_size": "vocab_size"}}

    # ------------------------------------------------------------------------------------------ preparing
    def read_data(self) -> DiffusionData:
        cfg = self.cfg
        train, val = load_images(cfg.data)
        if cfg.model.conditioning == "text" and train.captions is None:
            raise QKVError(f"model.conditioning = 'text' needs captions; {cfg.data.source} has labels only "
                           "(use conditioning = 'class', or data.source = 'shapes')")
        H, factor = train.images.shape[-1], 2**cfg.latent.downsample
        if cfg.latent.enabled and H % factor:
            raise QKVError(f"image size {H} is not divisible by 2^latent.downsample = {factor}")
        return DiffusionData(train, val)

    def make_tokenizers(self, data: DiffusionData) -> Tokenizer | None:
        if self.cfg.model.conditioning != "text":
            return None
        tok = train_caption_tokenizer(data.train.captions, self.cfg.data.tokenizer, self.cfg.data.vocab_size)
        self.ctx.run_dir.mkdir(parents=True, exist_ok=True)
        tok.save(self.ctx.run_dir / TOKENIZER_FILE)
        return tok

    def load_tokenizers(self, data: DiffusionData) -> Tokenizer | None:
        from qkv.tokenizers import load_tokenizer

        if self.cfg.model.conditioning != "text":
            return None
        return load_tokenizer(self.ctx.run_dir / TOKENIZER_FILE)

    def resolve(self, data: DiffusionData, tok: Tokenizer | None) -> DiffusionRunConfig:
        """The model sized to what it denoises (the images, or in latent mode the autoencoder's latent grid), the
        classes and the caption tokenizer."""
        cfg = self.cfg
        if self.ctx.resume:
            return cfg
        m = cfg.model
        _, C, H, W = data.train.images.shape
        if H != W:
            raise QKVError(f"images must be square, got {H}×{W}")
        if cfg.latent.enabled:  # what the autoencoder of `_autoencoder` will encode each image to
            H, C = H // 2**cfg.latent.downsample, cfg.latent.latent_channels
        if H % m.patch_size:
            raise QKVError(f"image size {H} is not divisible by model.patch_size {m.patch_size}")
        m = replace(m, image_size=H, in_channels=C)
        if m.conditioning == "class":
            m = replace(m, n_classes=len(data.train.class_names))
        if m.conditioning == "text":
            m = replace(m, vocab_size=tok.vocab_size, pad_id=tok.pad_id, bos_id=tok.bos_id)
        return replace(cfg, model=m)

    def prepare(self, cfg: DiffusionRunConfig, data: DiffusionData, tok: Tokenizer | None) -> DiffusionState:
        """In latent mode the autoencoder first (trained here, or loaded on resume) and the images encoded once;
        the condition tensors; the data meta."""
        ae, train, val = None, data.train, data.val
        if cfg.latent.enabled:
            ae = self._autoencoder(cfg, data).eval().requires_grad_(False)
            train, val = encode_images(ae, train), encode_images(ae, val)
        prompts = sorted(set(train.captions)) if cfg.model.conditioning == "text" else None
        meta = {"source": cfg.data.source, "train_images": len(train), "val_images": len(val),
                "image_shape": list(data.train.images.shape[1:]), "class_names": train.class_names,
                **({"prompts": prompts} if prompts else {}), **train.meta}
        return DiffusionState(cfg, meta, data, tok, ae, train.images, val.images,
                              dataset_condition(cfg.model, train, tok), dataset_condition(cfg.model, val, tok),
                              prompts, DDPM(cfg.diffusion))

    def _autoencoder(self, cfg: DiffusionRunConfig, data: DiffusionData) -> Autoencoder:
        """Latent mode, phase 1: the autoencoder of RUN/autoencoder/, trained by its own task (or, on resume,
        the finished one loaded)."""
        from qkv.models.io import load_model
        from qkv.tasks.autoencoder import AutoencoderRunConfig, AutoencoderTask
        from qkv.tasks.runner import train_task

        ctx = self.ctx
        ae_dir = ctx.run_dir / AUTOENCODER_DIR
        if ctx.resume:
            if not (ae_dir / WEIGHTS_FILE).is_file() or not load_json(ae_dir / CONFIG_FILE).get("latent_stats"):
                raise QKVError(f"{ae_dir}: the autoencoder phase did not finish; start the run again without resume")
            return load_model(ae_dir, device=ctx.device)[0]
        lc, t = cfg.latent, cfg.train
        ae_cfg = AutoencoderRunConfig(
            model=AutoencoderConfig(width=lc.width, downsample=lc.downsample, latent_channels=lc.latent_channels),
            data=cfg.data,
            train=TrainConfig(max_steps=lc.steps, batch_size=lc.batch_size, lr=lc.lr, min_lr=lc.lr / 10,
                              warmup_steps=min(100, lc.steps // 10), weight_decay=0.0, grad_clip=1.0,
                              eval_interval=lc.steps, log_interval=min(50, lc.steps), seed=t.seed, device=t.device,
                              precision="fp32", threads=t.threads, progress=t.progress))
        ae_ctx = replace(ctx, run_dir=ae_dir, init_from=None)
        ctx.say("latent mode: training the autoencoder first")
        return train_task(AutoencoderTask(ae_cfg, ae_ctx, images=(data.train, data.val)), ctx.log).model

    def build_model(self, state: DiffusionState):
        """The DiT, and beside it its weight average (state.ema, loaded on resume) and a copy to hold it."""
        from qkv.models.io import load_model

        model = load_model(self.ctx.run_dir)[0] if self.ctx.resume else DiT(state.cfg.model)
        model.train()
        state.ema = EMA(model, state.cfg.train.ema_decay)
        if self.ctx.resume:
            state.ema.load_state_dict(read_ema(self.ctx.run_dir))
        state.ema_model = copy.deepcopy(model).eval().requires_grad_(False)
        return model

    def batches(self, state: DiffusionState, rows: int, rank: int, world: int):
        cfg = state.cfg
        return ImageBatches(state.train_images, state.train_cond, rows, seed=cfg.train.seed, rank=rank,
                            world_size=world, n_timesteps=cfg.diffusion.n_timesteps,
                            cond_dropout=cfg.model.cond_dropout)

    # ------------------------------------------------------------------------------------------ training
    def loss(self, state: DiffusionState, model, batch):
        cond = condition_of(batch) | ({"cond_drop": batch["cond_drop"]} if "cond_drop" in batch else {})
        loss, _ = state.diffusion.loss(model, batch["images"], cond, t=batch["t"], noise=batch["noise"])
        return loss, {"tokens": batch["images"].size(0)}  # counted in images: metrics' tokens_per_s is images/s

    def loss_terms(self, batch) -> int:
        return batch["images"].size(0)

    def on_step(self, state: DiffusionState, model, step: int) -> None:
        state.ema.update(model)

    def evaluate(self, state: DiffusionState, model, full: bool, train_means: dict) -> dict:
        from qkv.evaluation.diffusion import denoising_loss, score_samples, train_judge

        cfg, s, ema_model = state.cfg, state.cfg.sample, state.ema_model
        ema_model.to(next(model.parameters()).device)
        state.ema.copy_to(ema_model)
        out = {"val_loss": denoising_loss(model, state.diffusion, state.val_images, state.val_cond),
               "val_loss_ema": denoising_loss(ema_model, state.diffusion, state.val_images, state.val_cond)}
        if full and s.eval_samples and cfg.model.conditioning != "none":
            if state.judge is None:
                state.judge = train_judge(state.pixels.train, state.pixels.val, seed=cfg.data.seed)
                self.ctx.say(f"eval classifier: held-out accuracy {state.judge.val_accuracy}")
            cond, what = make_condition(ema_model, state.tok, s.eval_samples, prompts=state.prompts)
            if what["targets"] is not None:
                imgs = generate(ema_model, cfg.diffusion, cond, s.eval_samples, sampler="ddim", steps=20,
                                guidance=s.guidance, spacing=s.spacing, seed=s.seed, autoencoder=state.autoencoder)
                scores = score_samples(state.judge, imgs, what["targets"])
                out.update({k: v for k, v in scores.items() if isinstance(v, float)})
        return out

    def save(self, state: DiffusionState, model, step: int, weights: bool = True) -> None:
        super().save(state, model, step, weights)
        atomic_save_tensors(self.ctx.run_dir / EMA_FILE, state.ema.state_dict(), metadata={"step": str(step)})

    def after_training(self, state: DiffusionState, model) -> None:
        state.ema.copy_to(state.ema_model)

    # ------------------------------------------------------------------------------------------ finishing
    def weights_note(self) -> str:
        return f" (EMA: {self.ctx.run_dir / EMA_FILE})"

    def summary(self, state: DiffusionState, model, result) -> list[str]:
        lines = super().summary(state, model, result)
        last = last_eval(result, "val_loss")
        if last:
            lines.append(f"val loss {last['val_loss']:.4f} | EMA weights {last['val_loss_ema']:.4f} "
                         f"(MSE of the {state.cfg.diffusion.prediction} prediction on held-out images)")
            quality = {k: v for k, v in last.items() if k.endswith(("accuracy", "adherence")) or k == "fd"}
            if quality:
                lines.append("samples (DDIM-20, EMA): " + ", ".join(f"{k} {v:.3f}" for k, v in quality.items()))
        return lines

    def samples(self, state: DiffusionState, model):
        s = state.cfg.sample
        ema_model = state.ema_model.cpu()
        cond, _ = make_condition(ema_model, state.tok, s.n, prompts=state.prompts)
        images = generate(ema_model, state.cfg.diffusion, cond, s.n, sampler=s.sampler, steps=s.steps, eta=s.eta,
                          spacing=s.spacing, guidance=s.guidance, seed=s.seed,
                          autoencoder=state.autoencoder.cpu() if state.autoencoder is not None else None)
        path = self.ctx.run_dir / SAMPLES_FILE
        width, height = save_grid(images, path)
        yield (f"samples: {path} ({s.n} images, {width}×{height} px, {s.sampler}, guidance {s.guidance})\n")

    def next_command(self) -> str:
        return f"sample more: qkv sample {self.ctx.run_dir} --n 64 --out grid.png"


class DiffusionRun(Run):
    """A trained denoiser: sample images for labels or prompts, score the samples (`qkv.load_run`).

    `model` holds the EMA weights when the run has them (what sampling uses), `raw_model` the trained ones.
    """

    task = "diffusion"
    config_class = DiffusionRunConfig
    model_type = "dit"
    legacy_names = DiffusionTask.legacy_names

    def __init__(self, path, config, saved, model, raw_model, tokenizer, autoencoder):
        super().__init__(path, config, saved, model)
        self.raw_model, self.tokenizer, self.autoencoder = raw_model, tokenizer, autoencoder
        self._train_images: torch.Tensor | None = None  # loaded on the first forward_process

    @classmethod
    def load(cls, path, device: str = "cpu", **options):
        from qkv.models.io import load_model, load_weights
        from qkv.tokenizers import load_tokenizer

        path = Path(path)
        raw, saved, config = cls._load_model(path, device)
        model = raw
        if (path / EMA_FILE).is_file():
            tensors = load_tensors(path / EMA_FILE, device=device)
            tensors.pop("_ema_updates", None)
            model = copy.deepcopy(raw)
            load_weights(model, tensors, source=str(path / EMA_FILE))
            model.eval()
        tok = load_tokenizer(path / TOKENIZER_FILE) if raw.config.conditioning == "text" else None
        ae = load_model(path / AUTOENCODER_DIR, device=device)[0] if (path / AUTOENCODER_DIR).is_dir() else None
        return cls(path, config, saved, model, raw, tok, ae)

    @property
    def capabilities(self) -> frozenset[Capability]:
        text = {Capability.TOKENS} if self.tokenizer is not None else set()
        return super().capabilities | {Capability.IMAGES} | text

    def denoiser(self, use_ema: bool = True):
        return self.model if use_ema else self.raw_model

    def image_sampling(self, base: ImageSampling | None = None, **changes) -> ImageSampling:
        """`base` (default the run's [sample] settings) with `changes` (None values ignored) on top; QKVError if
        invalid. A sampler picked here without steps runs its own default (ddpm: every timestep)."""
        base = base or self.config.sample
        if changes.get("sampler") is not None and changes.get("steps") is None:
            changes = changes | {"steps": None}
            base = from_dict(ImageSampling, to_dict(base) | {"steps": None}, prefix="sample.")
        return self.settings(base, changes, "sample.")

    def text_tokenizer(self):
        require(self, Capability.TOKENS, "text_tokenizer()")  # a class-conditional run reads no text
        return self.tokenizer, "prompt"

    def example_text(self) -> str:
        require(self, Capability.TOKENS, "example_text()")
        return (self.meta.get("prompts") or ["a red circle"])[0]

    def condition(self, n: int, label: int | None = None, prompt: str | None = None) -> tuple[dict, dict]:
        """The condition inputs for `n` images of `label` or `prompt` (default: every class or training prompt
        in turn), and what was asked for (`make_condition`)."""
        return make_condition(self.model, self.tokenizer, n, label=label, prompt=prompt,
                              prompts=self.meta.get("prompts"), class_names=self.meta.get("class_names"))

    def sample(self, n: int | None = None, label: int | None = None, prompt: str | None = None,
               settings: ImageSampling | None = None, use_ema: bool = True, batch_size: int = 256,
               progress=None, **changes) -> torch.Tensor:
        """(n, C, H, W) images in [-1, 1] (decoded from latents in latent mode); sampler settings from `settings`
        (default the run's [sample]) with any given as keywords on top: ``steps=20, guidance=2``."""
        s = self.image_sampling(settings, **changes) if changes else (settings or self.config.sample)
        n = n or s.n
        cond, _ = self.condition(n, label, prompt)
        return generate(self.denoiser(use_ema), self.config.diffusion, cond, n, sampler=s.sampler, steps=s.steps,
                        eta=s.eta, spacing=s.spacing, guidance=s.guidance, seed=s.seed, batch_size=batch_size,
                        progress=progress, autoencoder=self.autoencoder)

    def reverse_process(self, label: int | None = None, prompt: str | None = None,
                        settings: ImageSampling | None = None, frames: int = 8, n: int = 1, **changes) -> dict:
        """`n` images of `label` or `prompt`, and the reverse process of the first one as `frames` snapshots from
        pure noise x_T to the image: ``{"images": (n, C, H, W), "strip": [(t, (C, H, W)), ...]}``, all in
        pixels in [-1, 1] (latents are decoded with the run's autoencoder, so the strip shows what the noisy
        latent grid decodes to). t is the timestep a snapshot is at: T for x_T, −1 for the finished image."""
        s = self.image_sampling(settings, **changes) if changes else (settings or self.config.sample)
        if frames < 2:
            raise QKVError(f"frames must be >= 2, got {frames}")
        steps = self.steps_of(s)
        keep = {round(k * steps / (frames - 1)) - 1 for k in range(frames)}  # step indices (-1 = x_T), evenly
        snaps: list[tuple[int, torch.Tensor]] = []

        def on_step(i: int, t: int, x: torch.Tensor) -> None:
            if i in keep:
                snaps.append((t, x[0].float().cpu()))

        cond, _ = self.condition(n, label, prompt)
        images = generate(self.model, self.config.diffusion, cond, n, sampler=s.sampler, steps=s.steps, eta=s.eta,
                          spacing=s.spacing, guidance=s.guidance, seed=s.seed, autoencoder=self.autoencoder,
                          on_step=on_step)
        return {"images": images, "strip": [(t, self._pixels(x)) for t, x in snaps]}

    def forward_process(self, ts: list[int], index: int | None = None, seed: int = 0) -> dict:
        """A real training image (`index`, or one drawn with `seed`) noised by q(x_t | x_0) at each timestep
        in `ts`, with one ε for all: ``{"index", "image", "frames": [(t, ᾱ_t, (C, H, W))]}``, in pixels. In
        latent mode the latent grid is noised and decoded (what the denoiser sees, as a picture)."""
        T = self.config.diffusion.n_timesteps
        bad = [t for t in ts if not 0 <= t < T]
        if not ts or bad:
            raise QKVError(f"timesteps must be in [0, {T - 1}], got {bad or ts}")
        if self._train_images is None:
            self._train_images = load_images(self.config.data)[0].images
        images = self._train_images
        g = torch.Generator().manual_seed(seed)
        if index is None:
            index = int(torch.randint(len(images), (1,), generator=g))
        if not 0 <= index < len(images):
            raise QKVError(f"image index {index} is out of range: the training split has {len(images)} images")
        x0 = images[index : index + 1]  # (1, C, H, W) pixels
        with torch.no_grad():
            z0 = self.autoencoder.encode(x0) if self.autoencoder is not None else x0
            eps = torch.randn(z0.shape, generator=g)
            ddpm = DDPM(self.config.diffusion)
            frames = [(t, float(ddpm.alphas_cumprod[t]), self._pixels(ddpm.add_noise(z0, eps, torch.tensor([t]))[0]))
                      for t in ts]
        return {"index": index, "image": x0[0].clamp(-1, 1), "frames": frames}

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        """(C, H, W) in the model's space -> pixels in [-1, 1] (decoded in latent mode)."""
        if self.autoencoder is not None:
            with torch.no_grad():
                x = self.autoencoder.decode(x[None].to(next(self.autoencoder.parameters()).device))[0].cpu()
        return x.clamp(-1, 1)

    def steps_of(self, s: ImageSampling) -> int:
        return s.steps or default_steps(s.sampler, self.config.diffusion.n_timesteps)

    def evaluate(self, n: int = 200, sampler: str | None = None, steps: int | None = None,
                 guidance: float | None = None, seed: int | None = None, sweep: bool = False, use_ema: bool = True,
                 classifier_steps: int = 400, progress=None) -> dict:
        """Sample quality: a classifier trained on the run's real training split reads `n` samples per setting
        (sample accuracy for class runs, prompt adherence for shapes) and a Fréchet distance of its features.
        `sweep`: DDIM 10/20/50 and DDPM-T at the run's guidance, then guidance 1/2/3/5 at DDIM-50."""
        from qkv.evaluation.diffusion import score_samples, train_judge

        if n <= 0:
            raise QKVError(f"n must be positive, got {n}")
        if steps is not None and steps <= 0:
            raise QKVError(f"steps must be positive, got {steps}")
        s = self.image_sampling(sampler=sampler, steps=steps, guidance=guidance, seed=seed)
        base = {"sampler": s.sampler, "steps": s.steps, "guidance": s.guidance, "eta": s.eta, "spacing": s.spacing}
        if sweep:
            settings = [{**base, "sampler": "ddim", "steps": k} for k in (10, 20, 50)]
            settings += [{**base, "sampler": "ddpm", "steps": None, "eta": 0.0}]
            settings += [{**base, "sampler": "ddim", "steps": 50, "guidance": w} for w in (1.0, 2.0, 3.0, 5.0)]
        else:
            settings = [base]
        model = self.denoiser(use_ema)
        if progress is not None:
            progress(f"{self.path}: scoring {n} samples per setting ({'EMA' if use_ema else 'raw'} weights)")
        if model.config.conditioning == "none":
            raise QKVError("evaluation scores conditional runs (sample accuracy, prompt adherence); this run is "
                           "unconditional")
        data = self.config.data
        train, val = load_images(data)
        judge = train_judge(train, val, steps=classifier_steps, seed=data.seed)
        cond, what = self.condition(n)
        if what["targets"] is None:
            raise QKVError("the run's prompts are not shapes captions; prompt adherence needs data.source = 'shapes'")
        rows = []
        for st in settings:
            t0 = time.perf_counter()
            images = generate(model, self.config.diffusion, cond, n, sampler=st["sampler"], steps=st["steps"],
                              eta=st["eta"], spacing=st["spacing"], guidance=st["guidance"], seed=s.seed,
                              autoencoder=self.autoencoder)
            row = {**st, "seconds": time.perf_counter() - t0, **score_samples(judge, images, what["targets"])}
            rows.append(row)
            if progress is not None:
                progress(self.report_row(row))
        return {"data": f"{data.source}: {len(train):,} training / {len(val):,} held-out real images",
                "classifier": {"val_accuracy": judge.val_accuracy, "trained_on": len(train)},
                "ema": use_ema, "rows": rows}

    def report_row(self, row: dict) -> str:
        steps = row["steps"] or default_steps(row["sampler"], self.config.diffusion.n_timesteps)
        main = (f"sample accuracy {row['sample_accuracy']:6.1%}" if "sample_accuracy" in row else
                f"prompt adherence {row['prompt_adherence']:6.1%} (shape {row['shape_accuracy']:.1%}, colour "
                f"{row['colour_accuracy']:.1%}, position {row['position_accuracy']:.1%})")
        return (f"{row['sampler']:>4}-{steps:<4} guidance {row['guidance']:<4g} {main} | FD {row['fd']:7.2f} "
                f"(real vs real {row['fd_real']:.2f}) | {row['n_samples']} images in {row['seconds']:.1f} s")

    def report(self, r: dict) -> str:
        acc = ", ".join(f"{k} {v:.1%}" for k, v in r["classifier"]["val_accuracy"].items())
        return f"judge: a CNN trained on {r['data']}; held-out accuracy {acc}"


DiffusionTask.run_class = DiffusionRun
