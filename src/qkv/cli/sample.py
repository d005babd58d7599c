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


def run(args) -> int:
    from qkv.data.images import save_grid
    from qkv.tasks import load_run

    if args.steps is not None and args.steps <= 0:  # the flags, before loading anything
        raise QKVError(f"--steps must be positive, got {args.steps}")
    for flag, value in (("--n", args.n), ("--nrow", args.nrow), ("--batch-size", args.batch_size)):
        if value is not None and value <= 0:
            raise QKVError(f"{flag} must be positive, got {value}")
    from qkv.tasks.capabilities import Capability, require

    run_ = load_run(args.run_dir, device=args.device)
    require(run_, Capability.IMAGES, "qkv sample")
    s = run_.image_sampling(sampler=args.sampler, steps=args.steps, eta=args.eta, spacing=args.spacing,
                      guidance=args.guidance, seed=args.seed, n=args.n)
    run_.condition(s.n, label=args.label, prompt=args.prompt)  # a bad label or prompt fails before any note
    prompts = run_.meta.get("prompts")
    if args.prompt is not None and prompts:
        seen = {w for p in prompts for w in p.split()}
        new = [w for w in args.prompt.split() if w not in seen]
        if new:
            print(f"note: the prompt has words never seen in training captions ({', '.join(map(repr, new))}); "
                  "expect the model to guess", file=sys.stderr)
    t0 = time.perf_counter()
    images = run_.sample(s.n, label=args.label, prompt=args.prompt, settings=s, use_ema=not args.no_ema,
                         batch_size=args.batch_size)
    elapsed = time.perf_counter() - t0
    width, height = save_grid(images, args.out, nrow=args.nrow)
    what = f"label {args.label}" if args.label is not None else f"prompt {args.prompt!r}" if args.prompt else \
        "default conditions"
    print(f"wrote {args.out}: {s.n} images ({width}×{height} px), {s.sampler} {run_.steps_of(s)} steps, "
          f"guidance {s.guidance}, {what}, seed {s.seed}, {elapsed:.1f} s", file=sys.stderr)
    return 0
