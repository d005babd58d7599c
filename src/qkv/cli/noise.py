"""``qkv noise --data digits --out forward.png [--t 0,100,250,500,750,999] [--schedule cosine]``: the forward process.

Draws `--n` images of the dataset (digits, shapes or a folder) and noises each with q(x_t | x_0) =
N(√ᾱ_t x_0, (1 − ᾱ_t) I) at the chosen timesteps, one row per image, one column per t (the first column
t = "clean" is x_0 itself). The same ε is used along a row, so a row shows one image dissolving. Prints
ᾱ_t and the signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) of every column. ``--run RUN_DIR`` takes the schedule
of a trained run instead of --schedule/--timesteps.
"""

from __future__ import annotations

import sys

from qkv.errors import QKVError


def add_parser(sub, name):
    p = sub.add_parser(name, help="show the forward (noising) process on real images", description=__doc__)
    p.add_argument("--data", default=None,
                   help="digits (default), shapes, or a folder of class sub-folders; with --run: the run's data")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--t", default="0,50,100,200,400,600,800,999",
                   help="comma-separated 0-based timesteps (columns), each in [0, T)")
    p.add_argument("--n", type=int, default=6, help="images (rows)")
    p.add_argument("--schedule", choices=["linear", "cosine"], default="linear")
    p.add_argument("--timesteps", type=int, default=1000, help="T, the length of the forward process")
    p.add_argument("--run", metavar="RUN_DIR", help="use this diffusion run's schedule (and its data)")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    import torch

    from qkv.config import from_dict
    from qkv.data.images import ImageDataConfig, load_images, save_grid
    from qkv.diffusion.ddpm import DDPM, DiffusionConfig

    if args.n <= 0:
        raise QKVError(f"--n must be positive, got {args.n}")
    data_cfg = {"source": args.data or "digits"}
    if args.run:
        from qkv.config import to_dict
        from qkv.tasks import load_run
        from qkv.tasks.capabilities import Capability, require

        run_ = load_run(args.run)
        require(run_, Capability.IMAGES, "qkv noise --run")
        dcfg = run_.config.diffusion
        if args.data is None:
            data_cfg = to_dict(run_.config.data)
    else:
        try:
            dcfg = DiffusionConfig(n_timesteps=args.timesteps, beta_schedule=args.schedule)
        except ValueError as e:
            raise QKVError(str(e)) from None
    try:
        ts = [int(v) for v in args.t.split(",") if v.strip()]
    except ValueError:
        raise QKVError(f"--t: expected comma-separated integers, got {args.t!r}") from None
    T = dcfg.n_timesteps
    bad = [t for t in ts if not 0 <= t < T]
    if not ts or bad:
        raise QKVError(f"--t: timesteps must be in [0, {T - 1}], got {bad or args.t!r}")
    train, _ = load_images(from_dict(ImageDataConfig, data_cfg, prefix="data."))
    g = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(len(train), generator=g)[: args.n]
    x0 = train.images[pick]  # (n, C, H, W)
    eps = torch.randn(x0.shape, generator=g)
    ddpm = DDPM(dcfg)
    cols = [x0] + [ddpm.add_noise(x0, eps, torch.full((x0.size(0),), t)) for t in ts]
    grid = torch.stack(cols, dim=1).flatten(0, 1)  # (n · (1 + len(ts)), C, H, W), row-major
    width, height = save_grid(grid.clamp(-1, 1), args.out, nrow=1 + len(ts))
    print(f"wrote {args.out}: {x0.size(0)} images × {len(ts) + 1} columns ({width}×{height} px), "
          f"{dcfg.beta_schedule} schedule, T = {T}")
    print("column        x_0  " + "".join(f"{f't={t}':>9}" for t in ts))
    abar = ddpm.alphas_cumprod
    print("alpha_bar     1    " + "".join(f"{abar[t].item():9.4f}" for t in ts))
    print("SNR           inf  " + "".join(f"{(abar[t] / (1 - abar[t])).item():9.3g}" for t in ts))
    sys.stdout.flush()
    return 0
