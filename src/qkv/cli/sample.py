"""``qkv sample RUN_DIR --n 64 [--sampler ddim --steps 50 | --sampler ddpm] [--label 7 | --prompt TEXT]
[--guidance 3.0] [--seed S] --out grid.png``: generate images with a trained diffusion (DiT) run.

Writes one PNG grid (``--nrow`` images per row, default ≈ √n; small images are enlarged, pixel-exact).
A class-conditional run takes ``--label`` (default: labels 0, 1, 2 … cycling, so each row of a 10-wide
grid of digits reads 0–9); a text-conditional run takes ``--prompt`` (default: the training captions,
cycling). Settings default to the run's [sample] section. The EMA weights are used unless --no-ema.
The same seed and settings give the same images.
"""

from __future__ import annotations

import sys
import time

from qkv.errors import QKVError


def add_parser(sub, name):
    p = sub.add_parser(name, help="generate images with a trained diffusion run", description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="PNG file to write the grid to")
    p.add_argument("--n", type=int, default=None, help="number of images (default: the run's sample.n)")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row (default ≈ √n)")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default=None)
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: ddim 50, ddpm all)")
    p.add_argument("--eta", type=float, default=None, help="DDIM noise (0 = deterministic)")
    p.add_argument("--spacing", choices=["leading", "trailing", "linspace"], default=None,
                   help="which timesteps a shortened sampler visits")
    p.add_argument("--label", type=int, default=None, help="class id (class-conditional runs)")
    p.add_argument("--prompt", default=None, help="caption (text-conditional runs)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256, help="images denoised together")
    p.add_argument("--no-ema", action="store_true", help="use the raw trained weights, not their average")
    p.add_argument("--device", default="cpu")


def sample_settings(args, saved: dict):
    """The run's [sample] section with the command-line options on top, validated."""
    from qkv.config import from_dict
    from qkv.recipes.diffusion import DiffusionSampleConfig

    values = dict(saved.get("sample", {}))
    if getattr(args, "sampler", None) is not None and args.steps is None:
        values["steps"] = None  # a sampler picked here runs its own default (ddpm: every timestep)
    for key in ("sampler", "steps", "eta", "spacing", "guidance", "seed", "n"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    if args.steps is not None and args.steps <= 0:
        raise QKVError(f"--steps must be positive, got {args.steps}")
    if getattr(args, "n", None) is not None and args.n <= 0:
        raise QKVError(f"--n must be positive, got {args.n}")
    return from_dict(DiffusionSampleConfig, values, prefix="sample.")


def run(args) -> int:
    from qkv.config import from_dict
    from qkv.data.images import save_grid
    from qkv.diffusion.ddpm import DiffusionConfig
    from qkv.diffusion.sampling import default_steps
    from qkv.recipes.diffusion import generate, load_diffusion_run, load_run_autoencoder, make_condition

    s = sample_settings(args, {})  # validate the flags before loading anything
    model, cfg, tok = load_diffusion_run(args.run_dir, use_ema=not args.no_ema, device=args.device)
    s = sample_settings(args, cfg)
    if args.nrow is not None and args.nrow <= 0:
        raise QKVError(f"--nrow must be positive, got {args.nrow}")
    if args.batch_size <= 0:
        raise QKVError(f"--batch-size must be positive, got {args.batch_size}")
    meta = cfg.get("data_meta", {})
    cond, _ = make_condition(model, tok, s.n, label=args.label, prompt=args.prompt, prompts=meta.get("prompts"),
                             class_names=meta.get("class_names"))
    if args.prompt is not None and meta.get("prompts"):
        seen = {w for p in meta["prompts"] for w in p.split()}
        new = [w for w in args.prompt.split() if w not in seen]
        if new:
            print(f"note: the prompt has words never seen in training captions ({', '.join(map(repr, new))}); "
                  "expect the model to guess", file=sys.stderr)
    diffusion = from_dict(DiffusionConfig, cfg["diffusion"], prefix="diffusion.")
    ae = load_run_autoencoder(args.run_dir, device=args.device)  # latent-mode runs decode with it
    t0 = time.perf_counter()
    images = generate(model, diffusion, cond, s.n, sampler=s.sampler, steps=s.steps, eta=s.eta, spacing=s.spacing,
                      guidance=s.guidance, seed=s.seed, batch_size=args.batch_size, autoencoder=ae)
    elapsed = time.perf_counter() - t0
    width, height = save_grid(images, args.out, nrow=args.nrow)
    steps = s.steps or default_steps(s.sampler, diffusion.n_timesteps)
    what = f"label {args.label}" if args.label is not None else f"prompt {args.prompt!r}" if args.prompt else \
        "default conditions"
    print(f"wrote {args.out}: {s.n} images ({width}×{height} px), {s.sampler} {steps} steps, guidance {s.guidance}, "
          f"{what}, seed {s.seed}, {elapsed:.1f} s", file=sys.stderr)
    return 0
