"""qkv DiT vs diffusers' UNet2DModel on 8×8 digits: same data, same schedule, same wall-clock budget.

    python bench/diffusion.py [--budget-s 180] [--threads 2] [--batch-size 128] [--n 64] [--skip-ddpm]
                              [--json OUT.json]

Both denoisers are class-conditional (10 digits + a null class, 10% label dropout, classifier-free
guidance at sampling) and are trained in this process, one after the other, for `--budget-s` seconds of
wall time each with AdamW (lr 2e-3 warmed up over 100 steps, then constant), batch 128, EMA 0.999:

- qkv: `DiT` with the model section of src/qkv/presets/digits-dit.toml (0.72M parameters), qkv's `DDPM` noise and
  loss, qkv's samplers.
- diffusers: `UNet2DModel(block_out_channels=(32, 64), layers_per_block=1, one attention level,
  num_class_embeds=11)` (0.70M parameters, the reference size in the issue), diffusers' `DDPMScheduler`
  for the noise and `DDPMScheduler` / `DDIMScheduler` loops for sampling. Its DDIM steps pass
  ``use_clipped_model_output=True``, the clipping qkv's DDIM uses (see `qkv.diffusion.ddim`): with the
  default, guidance 3 wrecks DDIM samples of either model.

Both use the diffusion section of src/qkv/presets/digits-dit.toml (cosine schedule, T = 1000, v-prediction).
Reported per model: parameters, training steps/s and images/s, sampling time for `--n` images with
DDPM-1000 and DDIM-50 (guidance 3: each step is a forward on 2n images), and sample accuracy + Fréchet
distance of the DDIM-50 samples, read by qkv's digit classifier (`qkv.evaluation.diffusion`) trained on
the same real training split.

Both models run in this one command on this machine (named on the first line of the output), so the
ratios between them are like for like; a figure recorded elsewhere is no reference.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import describe

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "src" / "qkv" / "presets" / "digits-dit.toml"


def load_preset():
    from qkv.config import from_dict, load_toml
    from qkv.tasks.diffusion import DiffusionRunConfig

    return from_dict(DiffusionRunConfig, load_toml(PRESET))


def make_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, num_class_embeds=11)


class UNetDenoiser(torch.nn.Module):
    """diffusers' UNet behind qkv's denoiser interface ``model(x_t, t, labels=...)`` (used for scoring only)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, labels):
        return self.unet(x, t, class_labels=labels).sample


def train_for(model, step_fn, images, labels, budget_s, batch_size, seed, lr=2e-3):
    """Train `model` for budget_s seconds; returns (steps, seconds, EMA copy)."""
    from qkv.training.ema import EMA

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    ema = EMA(model, 0.999)
    model.train()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget_s:
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (steps + 1) / 100)
        idx = torch.randint(images.size(0), (batch_size,), generator=g)
        y = labels[idx].clone()
        y[torch.rand(batch_size, generator=g) < 0.1] = 10  # label dropout -> null class
        loss = step_fn(model, images[idx], y, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model)
        steps += 1
    seconds = time.perf_counter() - t0
    averaged = copy.deepcopy(model).eval()
    ema.copy_to(averaged)
    return steps, seconds, averaged


def qkv_side(cfg, images, labels, args):
    from qkv.diffusion.ddpm import DDPM
    from qkv.diffusion.generate import generate
    from qkv.models.dit import DiT

    model_cfg = cfg.model
    model_cfg.image_size, model_cfg.in_channels, model_cfg.n_classes = 8, 1, 10
    model_cfg.cond_dropout = 0.0  # the loop drops labels itself, identically for both models
    torch.manual_seed(args.seed)
    model = DiT(model_cfg)
    ddpm = DDPM(cfg.diffusion)

    def step_fn(m, x0, y, g):
        return ddpm.loss(m, x0, {"labels": y}, generator=g)[0]

    steps, seconds, ema = train_for(model, step_fn, images, labels, args.budget_s, args.batch_size, args.seed)
    want = torch.arange(args.n) % 10

    def sample(sampler, n_steps):
        return generate(ema, cfg.diffusion, {"labels": want}, args.n, sampler=sampler, steps=n_steps,
                        guidance=args.guidance, seed=args.seed)

    return model, steps, seconds, sample


def diffusers_side(cfg, images, labels, args):
    from diffusers import DDIMScheduler, DDPMScheduler

    pred = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}[cfg.diffusion.prediction]
    sched = {"linear": "linear", "cosine": "squaredcos_cap_v2"}[cfg.diffusion.beta_schedule]
    train_sched = DDPMScheduler(num_train_timesteps=cfg.diffusion.n_timesteps, beta_schedule=sched,
                                prediction_type=pred)
    torch.manual_seed(args.seed)
    unet = make_unet()

    def step_fn(m, x0, y, g):
        t = torch.randint(0, cfg.diffusion.n_timesteps, (x0.size(0),), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        x_t = train_sched.add_noise(x0, eps, t)
        target = eps if pred == "epsilon" else x0 if pred == "sample" else train_sched.get_velocity(x0, eps, t)
        return F.mse_loss(m(x_t, t, class_labels=y).sample, target)

    steps, seconds, ema = train_for(unet, step_fn, images, labels, args.budget_s, args.batch_size, args.seed)
    want = torch.arange(args.n) % 10

    @torch.no_grad()
    def sample(sampler, n_steps):
        s = (DDPMScheduler if sampler == "ddpm" else DDIMScheduler)(
            num_train_timesteps=cfg.diffusion.n_timesteps, beta_schedule=sched, prediction_type=pred,
            timestep_spacing="trailing")
        s.set_timesteps(n_steps or cfg.diffusion.n_timesteps)
        g = torch.Generator().manual_seed(args.seed)
        x = torch.randn((args.n, 1, 8, 8), generator=g)
        y = torch.cat([want, torch.full_like(want, 10)])
        for t in s.timesteps:
            out = ema(torch.cat([x, x]), t, class_labels=y).sample
            cond, uncond = out.chunk(2)
            guided = uncond + args.guidance * (cond - uncond)
            extra = {"use_clipped_model_output": True} if sampler == "ddim" else {}  # as qkv's DDIM does
            x = s.step(guided, t, x, generator=g, **extra).prev_sample
        return x.clamp(-1, 1)

    return unet, steps, seconds, sample


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=180.0, help="training wall time per model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--n", type=int, default=64, help="images sampled per timing / accuracy measurement")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-ddpm", action="store_true", help="don't time the 1000-step DDPM sampler")
    p.add_argument("--only", choices=["qkv", "diffusers"], default=None)
    p.add_argument("--json", metavar="OUT", help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(describe(args.threads), flush=True)

    from qkv.data.images import ImageDataConfig, load_images
    from qkv.evaluation.diffusion import score_samples, train_judge

    cfg = load_preset()
    train, val = load_images(ImageDataConfig(source="digits", val_fraction=0.1, seed=0))
    judge = train_judge(train, val)
    print(f"digits: {len(train)} train / {len(val)} held-out; judge held-out accuracy "
          f"{judge.val_accuracy['class']:.1%}; {args.threads} threads, budget {args.budget_s:.0f} s per model, "
          f"batch {args.batch_size}, {cfg.diffusion.beta_schedule} schedule, {cfg.diffusion.prediction}-prediction")
    results = {}
    sides = {"qkv": qkv_side, "diffusers": diffusers_side}
    for name, side in sides.items():
        if args.only and name != args.only:
            continue
        model, steps, seconds, sample = side(load_preset(), train.images, train.labels, args)
        row = {"params": sum(q.numel() for q in model.parameters()), "steps": steps,
               "steps_per_s": steps / seconds, "images_per_s": steps * args.batch_size / seconds}
        for sampler, n_steps in (("ddim", 50), ("ddpm", None)):
            if sampler == "ddpm" and args.skip_ddpm:
                continue
            t0 = time.perf_counter()
            imgs = sample(sampler, n_steps)
            key = "ddim50" if sampler == "ddim" else "ddpm1000"
            row[f"{key}_s"] = time.perf_counter() - t0
            scores = score_samples(judge, imgs, (torch.arange(args.n) % 10)[:, None])
            row[f"{key}_sample_accuracy"], row[f"{key}_fd"] = scores["sample_accuracy"], scores["fd"]
        results[name] = row
        print(f"{name:>9}: {row['params']:,} params | {row['steps']} steps, {row['steps_per_s']:.2f} steps/s, "
              f"{row['images_per_s']:.0f} images/s | " + " | ".join(
                  f"{k}: {row[k + '_s']:.2f} s, accuracy {row[k + '_sample_accuracy']:.1%}, FD {row[k + '_fd']:.1f}"
                  for k in ("ddim50", "ddpm1000") if k + "_s" in row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
