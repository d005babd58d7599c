"""Diffusion recipe: images (+ labels or captions) -> DiT denoiser -> Trainer, with an EMA of the weights.

``qkv train --config configs/digits-dit.toml`` ends up in `train_diffusion`. The run directory holds
config.json (model, data, train, diffusion and sample sections), model.safetensors (the trained weights,
what an exact resume needs), ema.safetensors (their moving average, what sampling uses), tokenizer.json
(text conditioning only), trainer state, metrics.jsonl and loss.png — and, in latent mode
(`LatentConfig`), autoencoder/: the autoencoder's own run (config.json with its latent statistics flagged,
model.safetensors, metrics), which sampling and evaluation use to decode.

Logged at every evaluation: ``val_loss`` and ``val_loss_ema`` — the training objective (MSE to the
target, `DDPM.loss`) on the held-out images, with timesteps and noise drawn from a fixed seed so
successive evaluations are comparable — and, on full evaluations when ``sample.eval_samples`` > 0, the
sample quality figures of `qkv.evaluation.diffusion` for the EMA weights (sample accuracy or prompt
adherence, Fréchet distance).

This module also turns user requests into model inputs (`make_condition`): a label or a prompt, checked
against what the run was trained on, so every entry point (CLI, tests, benchmark) rejects bad input the
same way.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from qkv.config import to_dict
from qkv.data.images import ImageDataConfig, ImageSet, load_images, parse_caption
from qkv.diffusion.ddpm import DDPM, DiffusionConfig, Spacing
from qkv.diffusion.sampling import Sampler, sample
from qkv.errors import QKVError
from qkv.models.autoencoder import Autoencoder, AutoencoderConfig
from qkv.models.dit import DiT, DiTConfig
from qkv.models.io import TOKENIZER_FILE, WEIGHTS_FILE, atomic_save_tensors, save_run
from qkv.training import distributed
from qkv.training.config import TrainConfig
from qkv.training.ema import EMA
from qkv.training.trainer import Trainer

EMA_FILE = "ema.safetensors"
AUTOENCODER_DIR = "autoencoder"  # latent mode: the autoencoder's own run directory inside the diffusion run


@dataclass
class DiffusionTrainConfig(TrainConfig):
    """`TrainConfig` plus the weight average sampling uses."""

    ema_decay: float = 0.999  # θ_ema ← d·θ_ema + (1 − d)·θ after every step, d warmed up (see training/ema.py)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class DiffusionSampleConfig:
    """Defaults of `qkv sample` / `qkv eval`, and the grid written when training ends."""

    sampler: Sampler = "ddim"
    steps: int | None = None  # default: 50 for ddim, every timestep for ddpm
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


@dataclass
class LatentConfig:
    """Latent ("stable") mode: train an autoencoder first, then run diffusion on its latents.

    The autoencoder (`qkv.models.autoencoder`) trains for `steps` updates on reconstruction MSE, in
    RUN/autoencoder/ (its own config, weights and metrics); the images are then encoded once, the DiT is
    sized to the latent grid (H / 2^downsample, `latent_channels`), and every sample is decoded back to
    pixels. `train.max_minutes` budgets the diffusion phase only.
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
    sample: DiffusionSampleConfig = field(default_factory=DiffusionSampleConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)

    def __post_init__(self):
        if self.latent.enabled and self.diffusion.clip_sample:
            raise ValueError("latent mode needs diffusion.clip_sample = false: the sampler would clamp the "
                             "standardised latents to [-1, 1], the range of pixels")


# ------------------------------------------------------------------------------------------- captions
def train_caption_tokenizer(captions: list[str], kind: str, vocab_size: int):
    """A char or BPE tokenizer of the training captions, with <pad> and <bos>."""
    from qkv.tokenizers import train_bpe, train_char

    if kind == "char":
        tok = train_char("".join(sorted(set("".join(captions)))))
        tok.add_special_tokens(["<pad>", "<bos>"])
        return tok
    return train_bpe(captions, vocab_size=vocab_size, min_frequency=1)


def encode_captions(tok, captions: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions -> ids (N, S) = [<bos>, tokens…, <pad>…] and mask (N, S), S = the longest caption + 1.

    QKVError if a caption is longer than `max_len` tokens (with <bos>) or has characters the tokenizer lacks.
    """
    rows = [[tok.bos_id, *tok.encode(c)] for c in captions]
    S = max(len(r) for r in rows)
    if S > max_len:
        long = max(range(len(rows)), key=lambda i: len(rows[i]))
        raise QKVError(f"caption {captions[long]!r} is {len(rows[long])} tokens with <bos>; "
                       f"the model takes at most {max_len} (model.max_seq_len)")
    ids = torch.full((len(rows), S), tok.pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids, ids != tok.pad_id


# ------------------------------------------------------------------------------------------- batches
class ImageBatches:
    """Random batches (with replacement) of images and their condition, from one seeded generator.

    next_batch() -> {"x": (B, C, H, W), "cond": {"labels": (B,)} | {"text": (B, S), "text_mask": (B, S)} | {}}.
    The generator's state is the data position, for exact resume; DDP ranks draw the same global batch
    and keep their own rows (like `RandomWindows`).
    """

    def __init__(self, images: torch.Tensor, cond: dict, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        if batch_size % world_size:
            raise QKVError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        self.images, self.cond, self.batch_size = images, cond, batch_size
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> dict:
        idx = torch.randint(self.images.size(0), (self.batch_size,), generator=self.generator)
        share = self.batch_size // self.world_size
        idx = idx[self.rank * share : (self.rank + 1) * share]
        return {"x": self.images[idx], "cond": {k: v[idx] for k, v in self.cond.items()}}

    def peek_batch(self) -> dict:
        """The next batch without consuming it (torch.compile's trial forward)."""
        state = self.generator.get_state()
        batch = self.next_batch()
        self.generator.set_state(state)
        return batch

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def dataset_condition(model_cfg: DiTConfig, data: ImageSet, tok) -> dict:
    """The per-image condition tensors the model trains on."""
    if model_cfg.conditioning == "class":
        return {"labels": data.labels}
    if model_cfg.conditioning == "text":
        ids, mask = encode_captions(tok, data.captions, model_cfg.max_seq_len)
        return {"text": ids, "text_mask": mask}
    return {}


@torch.no_grad()
def validation_loss(model, diffusion: DDPM, images: torch.Tensor, cond: dict, seed: int = 0,
                    batch_size: int = 256) -> float:
    """`DDPM.loss` over the held-out images, t and ε from a fixed seed (comparable across evaluations)."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for lo in range(0, images.size(0), batch_size):
        x = images[lo : lo + batch_size].to(device)
        c = {k: v[lo : lo + batch_size].to(device) for k, v in cond.items()}
        loss, _ = diffusion.loss(model, x, c, generator=g)
        total += loss.item() * x.size(0)
    return total / images.size(0)


# ------------------------------------------------------------------------------------------- requests
def make_condition(model: DiT, tok, n: int, *, label: int | None = None, prompt: str | None = None,
                   prompts: list[str] | None = None, class_names: list[str] | None = None) -> tuple[dict, dict]:
    """(cond, what) for n samples. cond holds the model inputs; what["targets"] the (n, heads) ids asked for.

    Class models: `label`, or (default) labels 0, 1, 2 … cycling. Text models: `prompt`, or (default)
    `prompts` (the run's training captions) cycling. A label on a text model, a prompt on a class
    model, a label outside the trained classes or a caption the tokenizer cannot encode: QKVError.
    """
    cfg = model.config
    if n <= 0:
        raise QKVError(f"--n must be positive, got {n}")
    if cfg.conditioning == "class":
        if prompt is not None:
            raise QKVError(f"this run is class-conditional ({cfg.n_classes} classes); use --label, not --prompt")
        if label is not None and not 0 <= label < cfg.n_classes:
            names = f" ({', '.join(class_names[:12])}{' …' if len(class_names) > 12 else ''})" if class_names else ""
            raise QKVError(f"label {label} is outside the trained classes 0 … {cfg.n_classes - 1}{names}")
        labels = torch.full((n,), label) if label is not None else torch.arange(n) % cfg.n_classes
        return {"labels": labels}, {"targets": labels[:, None], "labels": labels.tolist()}
    if cfg.conditioning == "text":
        if label is not None:
            raise QKVError("this run is text-conditional; use --prompt \"...\", not --label")
        if prompt is not None and not prompt.strip():
            raise QKVError("the prompt is empty")
        texts = [prompt] * n if prompt is not None else [prompts[i % len(prompts)] for i in range(n)]
        ids, mask = encode_captions(tok, texts, cfg.max_seq_len)
        parsed = [parse_caption(t) for t in texts]
        targets = torch.tensor(parsed) if all(p is not None for p in parsed) else None
        return {"text": ids, "text_mask": mask}, {"targets": targets, "prompts": texts}
    if label is not None or prompt is not None:
        raise QKVError("this run is unconditional; it takes neither --label nor --prompt")
    return {}, {"targets": None}


def load_diffusion_run(run_dir: str | Path, use_ema: bool = True, device: str = "cpu"):
    """(model with EMA weights if asked and present, config dict, caption tokenizer or None)."""
    from qkv.models.io import load_model, load_weights
    from qkv.tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    model, cfg = load_model(run_dir, device=device)
    if cfg["model_type"] != "dit":
        raise QKVError(f"{run_dir} is a {cfg['model_type']} run; this needs a diffusion (dit) run")
    ema_path = run_dir / EMA_FILE
    if use_ema and ema_path.is_file():
        try:
            tensors = load_file(str(ema_path), device=device)
        except (SafetensorError, OSError) as e:
            raise QKVError(f"{ema_path}: cannot read safetensors file ({e})") from None
        tensors.pop("_ema_updates", None)
        load_weights(model, tensors, source=str(ema_path))
    tok = load_tokenizer(run_dir / TOKENIZER_FILE) if model.config.conditioning == "text" else None
    return model, cfg, tok


def load_run_autoencoder(run_dir: str | Path, device: str = "cpu") -> Autoencoder | None:
    """The autoencoder of a latent-mode run (RUN/autoencoder/), or None for a pixel-space run."""
    from qkv.models.io import load_model

    ae_dir = Path(run_dir) / AUTOENCODER_DIR
    if not ae_dir.is_dir():
        return None
    ae, _ = load_model(ae_dir, device=device)
    return ae


def generate(model: DiT, diffusion_cfg: DiffusionConfig, cond: dict, n: int, *, sampler: Sampler = "ddim",
             steps: int | None = None, eta: float = 0.0, spacing: Spacing = "trailing", guidance: float = 1.0,
             seed: int = 0, batch_size: int = 256, progress=None,
             autoencoder: Autoencoder | None = None) -> torch.Tensor:
    """n images (n, C, H, W) in [-1, 1] for the condition rows in `cond`, with CFG against the null condition.

    With an `autoencoder` (latent mode) the model samples latents, which are decoded to pixels here.
    """
    if steps is not None and steps <= 0:
        raise QKVError(f"--steps must be positive, got {steps}")
    if steps is not None and steps > diffusion_cfg.n_timesteps:
        raise QKVError(f"--steps {steps} is more than the {diffusion_cfg.n_timesteps} training timesteps")
    if not math.isfinite(guidance) or guidance < 0:
        raise QKVError(f"--guidance must be a number >= 0, got {guidance}")
    if not math.isfinite(eta) or eta < 0:
        raise QKVError(f"--eta must be a number >= 0, got {eta}")
    c = model.config
    shape = (n, c.in_channels, c.image_size, c.image_size)
    null = model.null_condition(cond) if cond else None
    x = sample(model, diffusion_cfg, shape, cond=cond, null_cond=null, guidance=guidance, sampler=sampler,
               steps=steps, eta=eta, spacing=spacing, seed=seed, batch_size=batch_size, progress=progress)
    if autoencoder is not None:
        with torch.no_grad():  # (n, c, h, h) latents -> (n, C, H, W) pixels
            x = torch.cat([autoencoder.decode(x[i : i + batch_size]) for i in range(0, n, batch_size)])
    return x.clamp(-1, 1)  # the pixel range


# ------------------------------------------------------------------------------------------- train
def _read_ema(run_dir: Path) -> dict:
    """The EMA tensors of a run being resumed; QKVError if missing or from another step than the weights."""
    from qkv.config import load_json
    from qkv.training.checkpoint import STATE_FILE

    path = run_dir / EMA_FILE
    if not path.is_file():
        raise QKVError(f"{run_dir}: no {EMA_FILE}; cannot resume a diffusion run without its weight average")
    try:
        with safe_open(str(path), framework="pt") as f:
            step = int((f.metadata() or {}).get("step", -1))
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise QKVError(f"{path}: unreadable checkpoint file ({e})") from None
    state_step = load_json(run_dir / STATE_FILE).get("step")
    if step != state_step:
        raise QKVError(f"{path} is from step {step} but the trainer state from step {state_step}; "
                       "a save was interrupted")
    return tensors


def _fit_model_config(cfg: DiTConfig, train: ImageSet, tok) -> DiTConfig:
    """The model config sized to the data (image size, channels, classes) and the caption tokenizer."""
    _, C, H, W = train.images.shape
    if H != W:
        raise QKVError(f"images must be square, got {H}×{W}")
    if H % cfg.patch_size:
        raise QKVError(f"image size {H} is not divisible by model.patch_size {cfg.patch_size}")
    new = replace(cfg, image_size=H, in_channels=C)
    if cfg.conditioning == "class":
        new = replace(new, n_classes=len(train.class_names))
    if cfg.conditioning == "text":
        new = replace(new, vocab_size=tok.vocab_size, pad_id=tok.pad_id, bos_id=tok.bos_id)
    return new


def train_autoencoder(cfg: DiffusionRunConfig, train: ImageSet, val: ImageSet, run_dir: Path, *, resume: bool,
                      dist_info, device, log=None) -> Autoencoder:
    """Latent mode, phase 1: the autoencoder, trained by the same `Trainer` in RUN/autoencoder/.

    Its loss is the reconstruction MSE; when it ends, the per-channel latent statistics of the training
    images are recorded (`Autoencoder.set_latent_stats`) and saved with the weights. On --resume a
    finished autoencoder is loaded, not retrained.
    """
    from qkv.config import load_json
    from qkv.models.io import CONFIG_FILE, load_model

    ae_dir = run_dir / AUTOENCODER_DIR
    if resume:
        if not (ae_dir / WEIGHTS_FILE).is_file() or not load_json(ae_dir / CONFIG_FILE).get("latent_stats"):
            raise QKVError(f"{ae_dir}: the autoencoder phase did not finish; start the run again without --resume")
        ae, _ = load_model(ae_dir, device=device)
        return ae
    lc = cfg.latent
    _, C, H, _ = train.images.shape
    if H % 2**lc.downsample:
        raise QKVError(f"image size {H} is not divisible by 2^latent.downsample = {2**lc.downsample}")
    torch.manual_seed(cfg.train.seed)
    ae = Autoencoder(AutoencoderConfig(image_size=H, in_channels=C, width=lc.width, downsample=lc.downsample,
                                       latent_channels=lc.latent_channels))
    t = cfg.train
    ae_train = TrainConfig(max_steps=lc.steps, batch_size=lc.batch_size, lr=lc.lr, min_lr=lc.lr / 10,
                           warmup_steps=min(100, lc.steps // 10), weight_decay=0.0, grad_clip=1.0,
                           eval_interval=lc.steps, log_interval=min(50, lc.steps), seed=t.seed, device=t.device,
                           precision="fp32", threads=t.threads, progress=t.progress)
    data = ImageBatches(train.images, {}, lc.batch_size, seed=t.seed, rank=dist_info.rank,
                        world_size=dist_info.world_size)
    extra = {"task": "autoencoder", "train": to_dict(ae_train), "data": to_dict(cfg.data)}

    def loss_fn(m, batch):
        return torch.nn.functional.mse_loss(m(batch["x"]), batch["x"]), {"tokens": batch["x"].size(0)}

    @torch.no_grad()
    def evaluate(m, full: bool, train_means: dict) -> dict:
        x = val.images.to(next(m.parameters()).device)
        return {"val_loss": torch.nn.functional.mse_loss(m(x), x).item()}

    def save_model(m, step):
        save_run(ae_dir, m, extra_config=extra, metadata={"step": str(step)})

    if dist_info.is_main:
        ae_dir.mkdir(parents=True, exist_ok=True)
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    say(f"latent mode: training the autoencoder ({ae.num_params():,} parameters, {H}×{H}×{C} -> "
        f"{ae.config.latent_size}×{ae.config.latent_size}×{lc.latent_channels}) for {lc.steps} steps")
    Trainer(ae, loss_fn, data, ae_train, run_dir=ae_dir, evaluate=evaluate, save_model=save_model,
            dist_info=dist_info, device=device, log=log).fit()
    ae.eval()
    ae.set_latent_stats(train.images.to(next(ae.parameters()).device))
    if dist_info.is_main:
        save_run(ae_dir, ae, extra_config={**extra, "latent_stats": True}, metadata={"step": str(lc.steps)})
    return ae


@torch.no_grad()
def encode_images(ae: Autoencoder, data: ImageSet, batch_size: int = 512) -> ImageSet:
    """The same set with every image replaced by its standardised latent (N, c, h, h)."""
    device = next(ae.parameters()).device
    z = torch.cat([ae.encode(data.images[i : i + batch_size].to(device)).cpu()
                   for i in range(0, len(data), batch_size)])
    return replace(data, images=z)


def train_diffusion(cfg: DiffusionRunConfig, run_dir: str | Path, *, resume: bool = False, log=None):
    """Train (or resume) a DiT denoiser (after its autoencoder in latent mode).

    Returns (TrainResult, model, ema_model, tokenizer, is_main, autoencoder or None).
    """
    from qkv.evaluation.diffusion import score_samples, train_judge
    from qkv.tokenizers import load_tokenizer

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    dist_info, device = distributed.setup(cfg.train.device)
    run_dir = Path(run_dir)
    train, val = load_images(cfg.data)
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    text = cfg.model.conditioning == "text"
    if text and train.captions is None:
        raise QKVError(f"model.conditioning = 'text' needs captions; {cfg.data.source} has labels only "
                       "(use conditioning = 'class', or data.source = 'shapes')")
    tok = None
    if text:
        if resume:
            tok = load_tokenizer(run_dir / TOKENIZER_FILE)
        else:
            tok = train_caption_tokenizer(train.captions, cfg.data.tokenizer, cfg.data.bpe_vocab_size)
            if dist_info.is_main:
                tok.save(run_dir / TOKENIZER_FILE)
    pixels_train, pixels_val = train, val  # the judge of sample quality reads pixels
    ae = None
    if cfg.latent.enabled:
        ae = train_autoencoder(cfg, train, val, run_dir, resume=resume, dist_info=dist_info, device=device, log=log)
        ae.requires_grad_(False)
        train, val = encode_images(ae, train), encode_images(ae, val)
    if not resume:
        cfg.model = _fit_model_config(cfg.model, train, tok)
    train_cond = dataset_condition(cfg.model, train, tok)
    val_cond = dataset_condition(cfg.model, val, tok)
    prompts = sorted(set(train.captions)) if text else None
    meta = {"source": cfg.data.source, "train_images": len(train), "val_images": len(val),
            "image_shape": list(pixels_train.images.shape[1:]), "class_names": train.class_names,
            **({"prompts": prompts} if prompts else {}), **train.meta}

    torch.manual_seed(cfg.train.seed)  # same initial weights on every rank
    if resume:
        from qkv.models.io import load_model

        model, _ = load_model(run_dir)
    else:
        model = DiT(cfg.model)
    model.train()
    ema = EMA(model, cfg.train.ema_decay)
    if resume:
        ema.load_state_dict(_read_ema(run_dir))
    ema_model = copy.deepcopy(model).eval().requires_grad_(False)
    diffusion = DDPM(cfg.diffusion)
    micro = cfg.train.batch_size // cfg.train.grad_accum
    data = ImageBatches(train.images, train_cond, micro, seed=cfg.train.seed, rank=dist_info.rank,
                        world_size=dist_info.world_size)
    saved_config = {"task": "diffusion", "data": to_dict(cfg.data), "train": to_dict(cfg.train),
                    "diffusion": to_dict(cfg.diffusion), "sample": to_dict(cfg.sample),
                    "latent": to_dict(cfg.latent), "data_meta": meta}

    def save_model(m, step):
        save_run(run_dir, m, tok, extra_config=saved_config, metadata={"step": str(step)})
        atomic_save_tensors(run_dir / EMA_FILE, ema.state_dict(), metadata={"step": str(step)})

    def loss_fn(m, batch):
        loss, _ = diffusion.loss(m, batch["x"], batch["cond"])
        return loss, {"tokens": batch["x"].size(0)}  # counted in images: metrics' tokens_per_s is images/s

    def on_step(m, step):
        ema.update(m)

    judge = {}
    s = cfg.sample

    def evaluate(m, full: bool, train_means: dict) -> dict:
        ema_model.to(next(m.parameters()).device)
        ema.copy_to(ema_model)
        out = {"val_loss": validation_loss(m, diffusion, val.images, val_cond),
               "val_loss_ema": validation_loss(ema_model, diffusion, val.images, val_cond)}
        if full and s.eval_samples and cfg.model.conditioning != "none":
            if "j" not in judge:
                judge["j"] = train_judge(pixels_train, pixels_val, seed=cfg.data.seed)
                say(f"eval classifier: held-out accuracy {judge['j'].val_accuracy}")
            cond, what = make_condition(ema_model, tok, s.eval_samples, prompts=prompts)
            if what["targets"] is not None:
                imgs = generate(ema_model, cfg.diffusion, cond, s.eval_samples, sampler="ddim", steps=20,
                                guidance=s.guidance, spacing=s.spacing, seed=s.seed, autoencoder=ae)
                scores = score_samples(judge["j"], imgs, what["targets"])
                out.update({k: v for k, v in scores.items() if isinstance(v, float)})
        return out

    trainer = Trainer(model, loss_fn, data, cfg.train, run_dir=run_dir, evaluate=evaluate, save_model=save_model,
                      resume=resume, dist_info=dist_info, device=device, log=log, on_step=on_step)
    try:
        result = trainer.fit()
    finally:
        distributed.teardown(dist_info)
    ema.copy_to(ema_model)
    return result, model, ema_model, tok, dist_info.is_main, ae


# ------------------------------------------------------------------------------------------- evaluate
def evaluate_diffusion_run(run_dir: str | Path, settings: list[dict], n: int = 200, seed: int = 0,
                           use_ema: bool = True, classifier_steps: int = 400, progress=None) -> dict:
    """Sample quality of a run under each of `settings` ({"sampler", "steps", "guidance", "eta"} dicts).

    Trains the judge classifier on the run's real training split (the same split training used), then
    for each setting generates n images (conditions cycling over the classes or training prompts) and
    scores them (`qkv.evaluation.diffusion.score_samples`). Returns {"data", "classifier", "rows"}.
    """
    import time

    from qkv.config import from_dict
    from qkv.evaluation.diffusion import score_samples, train_judge

    model, cfg, tok = load_diffusion_run(run_dir, use_ema=use_ema)
    ae = load_run_autoencoder(run_dir)
    if model.config.conditioning == "none":
        raise QKVError("qkv eval scores conditional runs (sample accuracy, prompt adherence); this run is "
                       "unconditional")
    data_cfg = from_dict(ImageDataConfig, cfg["data"], prefix="data.")
    diffusion = from_dict(DiffusionConfig, cfg["diffusion"], prefix="diffusion.")
    train, val = load_images(data_cfg)
    judge = train_judge(train, val, steps=classifier_steps, seed=data_cfg.seed)
    cond, what = make_condition(model, tok, n, prompts=cfg.get("data_meta", {}).get("prompts"))
    if what["targets"] is None:
        raise QKVError("the run's prompts are not shapes captions; prompt adherence needs data.source = 'shapes'")
    rows = []
    for st in settings:
        t0 = time.perf_counter()
        images = generate(model, diffusion, cond, n, sampler=st.get("sampler", "ddim"), steps=st.get("steps"),
                          eta=st.get("eta", 0.0), spacing=st.get("spacing", "trailing"),
                          guidance=st.get("guidance", 1.0), seed=seed, autoencoder=ae)
        row = {**st, "seconds": time.perf_counter() - t0, **score_samples(judge, images, what["targets"])}
        rows.append(row)
        if progress is not None:
            progress(row)
    return {"data": f"{data_cfg.source}: {len(train):,} training / {len(val):,} held-out real images",
            "classifier": {"val_accuracy": judge.val_accuracy, "trained_on": len(train)},
            "ema": use_ema, "rows": rows}
