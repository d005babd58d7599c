"""Topic `diffusion`: the forward process q(x_t | x_0) on a real image, one reverse step written out, the chain.

Ho et al. 2020 (DDPM): noise is added in T small steps, and any step is reached from the clean image in one
jump, x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (eq. 4). This topic noises one of the run's training images at eight
timesteps with the run's own `DiffusionRun.forward_process`, printing √ᾱ_t, √(1 − ᾱ_t) and the signal-to-
noise ratio ᾱ_t / (1 − ᾱ_t), and recomputes x_t against `DDPM.add_noise`. Then one reverse step by hand:
the denoiser's output at x_t, the clean-image estimate x̂_0 (eq. 15), the posterior mean μ̃ (eq. 7) and
x_{t−1} = μ̃ + σ_t z, checked against `DDPM.step` with the same z and with no noise. Last, the run's
reverse process from pure noise to an image (`DiffusionRun.reverse_process`). In latent mode everything
happens on the autoencoder's latents, and the pictures are their decodings.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.data.images import load_images
from qkv.diffusion.ddpm import DDPM
from qkv.errors import QKVError
from qkv.explain.base import Explanation, Options, no_grad

LESSON = ("A diffusion model learns to undo noise. The forward process mixes a clean image x_0 with Gaussian noise "
          "ε: x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε, where ᾱ_t falls from about 1 (clean) to about 0 (pure noise) as t "
          "goes from 0 to T. The network sees x_t and t (and the label or prompt) and predicts the noise (or "
          "x_0, or v); from that prediction one reverse step estimates the clean image and moves x_t a little "
          "towards it. Repeated from pure noise, those steps draw a new image.")

HAT = {"eps": "ε̂", "x0": "x̂_0", "v": "v̂"}  # what the denoiser's output estimates
FRAMES = 8  # timesteps in the forward strip, snapshots in the reverse strip


@no_grad
def explain_diffusion(run, opts: Options) -> Explanation:
    dcfg = run.config.diffusion
    ddpm, T = DDPM(dcfg), dcfg.n_timesteps
    label, prompt = _condition_asked(run, opts)
    cond, _ = run.condition(1, label=label, prompt=prompt)
    e = Explanation("diffusion", "forward process, one reverse step, the reverse chain", run.path.name)
    e.say(LESSON)
    asked = (f"class label {label}" if label is not None else f"prompt {prompt!r}" if prompt is not None
             else "no condition (unconditional run)")
    e.say(f"schedule: {dcfg.beta_schedule}, T = {T} timesteps (indices 0…{T - 1}); the denoiser predicts "
          f"{dcfg.prediction}; condition: {asked}; seed {opts.seed}"
          + ("; latent mode: the process runs on the autoencoder's latents" if run.autoencoder is not None else ""))

    # 1. the forward process on a real training image
    ts = sorted({round(k * (T - 1) / (FRAMES - 1)) for k in range(FRAMES)})
    index = _image_index(run, label, opts.seed)
    fp = run.forward_process(ts, index=index, seed=opts.seed)  # with the index given, ε is the seed's first draw
    x0 = fp["image"][None]  # (1, C, H, W) pixels
    z0 = run.autoencoder.encode(x0) if run.autoencoder is not None else x0  # (1, c, h, w) what is noised
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(opts.seed))  # the ε forward_process drew
    e.tensor("x_0", x0, f"the clean image: training image #{index} of the run's data ({run.config.data.source})"
             + (f", one of class {label}" if label is not None else "") + ", pixels in [-1, 1]")
    if run.autoencoder is not None:
        decoded = run.autoencoder.decode(z0)  # (1, C, H, W)
        e.tensor("z_0 = autoencoder.encode(x_0)", z0, "the latent the diffusion model noises and denoises")
        e.tensor("autoencoder.decode(z_0)", decoded, f"the latent back in pixels: mean |x_0 − decoded| "
                 f"{(decoded - x0).abs().mean().item():.4f}")
        e.say("below, x_0 and x_t stand for the latent z_0 and its noised versions")
    abar = ddpm.alphas_cumprod  # (T,)
    rows, ours, module = [], [], []
    for t in ts:
        a = abar[t]
        x_t = a.sqrt() * z0 + (1 - a).sqrt() * eps  # eq. 4, written out
        ours.append(x_t)
        module.append(ddpm.add_noise(z0, eps, torch.tensor([t])))
        snr = (a / (1 - a)).item()
        rows.append([t, a.item(), a.sqrt().item(), (1 - a).sqrt().item(), snr])
    e.table(["t", "ᾱ_t", "√ᾱ_t (signal)", "√(1 − ᾱ_t) (noise)", "SNR ᾱ/(1 − ᾱ)"], rows,
            "q(x_t | x_0) at eight timesteps: the image's share falls, the noise's grows")
    e.check("√ᾱ_t·x_0 + √(1 − ᾱ_t)·ε  ==  DDPM.add_noise(x_0, ε, t), at the eight timesteps",
            torch.cat(ours), torch.cat(module))
    e.check("the same x_t, as pictures  ==  DiffusionRun.forward_process's frames",
            torch.stack([_pixels(run, x[0]) for x in ours]), torch.stack([f for _, _, f in fp["frames"]]))

    # 2. one reverse step, written out
    step = _reverse_step(run, ddpm, z0, eps, cond, opts.seed, e)

    # 3. the reverse chain from pure noise
    s = run.image_sampling(seed=opts.seed)
    chain = run.reverse_process(label=label, prompt=prompt, settings=s, frames=FRAMES)
    e.say(f"the reverse process (DiffusionRun.reverse_process): {s.sampler}, {run.steps_of(s)} steps, "
          f"guidance {s.guidance} — snapshots at t = {', '.join(str(t) for t, _ in chain['strip'])} "
          "(T: pure noise; -1: the finished image)")
    e.tensor("the finished image", chain["images"][0], "pixels in [-1, 1]")

    snr_all = (abar / (1 - abar)).tolist()
    e.figure("forward", "forward process q(x_t | x_0)",
             _strip([("x_0", fp["image"], "the real image")]
                    + [(f"t = {t}", f, f"√ᾱ = {r[2]:.3f}\nSNR = {r[4]:.3g}")
                       for (t, _, f), r in zip(fp["frames"], rows, strict=True)], "timestep t →"),
             {"t": ts, "sqrt_abar": [r[2] for r in rows], "snr": [r[4] for r in rows],
              "frames": torch.stack([f for _, _, f in fp["frames"]])}, size=(1.8 * (len(ts) + 1), 3.2))
    e.figure("reverse-step", f"one reverse step at t = {step['t']}",
             _strip([("x_t", step["x_t"], "the input"), ("x̂_0", step["x0_hat"], "estimated clean image"),
                     ("μ̃", step["mean"], "posterior mean"), ("x_(t−1)", step["prev"], "μ̃ + σ_t·z"),
                     ("x_0", z0[0], "the real image")], "", run),
             {k: v for k, v in step.items() if k != "t"}, size=(10.0, 3.0))
    e.figure("reverse", "reverse process from noise",
             _strip([(f"t = {t}" if t >= 0 else "finished", x, "pure noise" if t == T else "x_t" if t >= 0 else "x_0")
                     for t, x in chain["strip"]], "sampling step →"),
             {"t": [t for t, _ in chain["strip"]], "frames": torch.stack([x for _, x in chain["strip"]])},
             size=(1.8 * len(chain["strip"]), 3.0))
    e.figure("schedule", "the noise schedule", _schedule(abar, ts),
             {"sqrt_abar": abar.sqrt(), "snr": torch.tensor(snr_all)})
    e.data.update(index=index, timesteps=ts, sqrt_abar=[r[2] for r in rows], sqrt_one_minus_abar=[r[3] for r in rows],
                  snr=[r[4] for r in rows], reverse_t=step["t"], reverse_strip_t=[t for t, _ in chain["strip"]],
                  label=label, prompt=prompt, prediction=dcfg.prediction)
    return e


def _condition_asked(run, opts: Options) -> tuple[int | None, str | None]:
    """(label, prompt) from the prompt option: an integer label for class runs, a caption for text runs."""
    kind = run.model.config.conditioning
    if kind == "class":
        if opts.prompt is None:
            return 0, None
        try:
            return int(opts.prompt), None
        except ValueError:
            raise QKVError(f"this run is class-conditional: its prompt is a class label, an integer 0 … "
                           f"{run.model.config.n_classes - 1}, not {opts.prompt!r}") from None
    if kind == "text":
        return None, opts.prompt if opts.prompt is not None else (run.meta.get("prompts") or ["a red circle"])[0]
    return None, opts.prompt  # unconditional: a prompt is refused by DiffusionRun.condition


def _reverse_step(run, ddpm: DDPM, z0: Tensor, eps: Tensor, cond: dict, seed: int, e: Explanation) -> dict:
    """x_t (the forward process at t = T/2) -> x_{t−1} by hand, checked against DDPM.step."""
    cfg, T = ddpm.cfg, ddpm.n_timesteps
    t = T // 2
    abar_t, abar_prev = ddpm.alphas_cumprod[t], ddpm.alphas_cumprod[t - 1]
    x_t = ddpm.add_noise(z0, eps, torch.tensor([t]))  # (1, C, H, W)
    pred = run.model(x_t, torch.tensor([t]), **cond)  # (1, C, H, W)
    e.say(f"one reverse step at t = {t}, from x_t of the forward process above (so x̂_0 can be compared with the "
          f"real x_0): the model's output is its {cfg.prediction} prediction")
    e.tensor("x_t", x_t, f"√ᾱ_t = {abar_t.sqrt().item():.4f}, √(1 − ᾱ_t) = {(1 - abar_t).sqrt().item():.4f}")
    e.tensor(f"model(x_t, t, cond) = {HAT[cfg.prediction]}", pred, "the denoiser's output")
    a, b = abar_t.sqrt(), (1 - abar_t).sqrt()
    if cfg.prediction == "eps":
        eps_hat, x0_hat = pred, (x_t - b * pred) / a  # eq. 15
        how = "x̂_0 = (x_t − √(1 − ᾱ_t)·ε̂) / √ᾱ_t"
    elif cfg.prediction == "x0":
        x0_hat, eps_hat = pred, (x_t - a * pred) / b
        how = "x̂_0 is the output itself; ε̂ = (x_t − √ᾱ_t·x̂_0) / √(1 − ᾱ_t)"
    else:
        x0_hat, eps_hat = a * x_t - b * pred, a * pred + b * x_t  # v = √ᾱ ε − √(1 − ᾱ) x_0, solved for both
        how = "x̂_0 = √ᾱ_t·x_t − √(1 − ᾱ_t)·v̂,  ε̂ = √ᾱ_t·v̂ + √(1 − ᾱ_t)·x_t"
    e.say(how)
    e.tensor("ε̂", eps_hat, f"mean squared error against the true ε: {(eps_hat - eps).pow(2).mean().item():.4f}")
    e.check("x̂_0 and ε̂ from the formula  ==  DDPM.split_prediction", torch.cat([x0_hat, eps_hat]),
            torch.cat(ddpm.split_prediction(pred, x_t, t)))
    if cfg.clip_sample:
        x0_hat = x0_hat.clamp(-1, 1)
    e.tensor("x̂_0", x0_hat, ("clipped to [-1, 1]; " if cfg.clip_sample else "")
             + f"mean squared error against the real x_0: {(x0_hat - z0).pow(2).mean().item():.4f}")
    alpha_t = abar_t / abar_prev
    beta_t = 1 - alpha_t
    coef1 = abar_prev.sqrt() * beta_t / (1 - abar_t)  # eq. 7
    coef2 = alpha_t.sqrt() * (1 - abar_prev) / (1 - abar_t)
    mean = coef1 * x0_hat + coef2 * x_t  # μ̃
    var = (1 - abar_prev) / (1 - abar_t) * beta_t if cfg.variance == "fixed_small" else beta_t
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(seed + 1))
    prev = mean + var.sqrt() * z
    e.say(f"μ̃ = coef1·x̂_0 + coef2·x_t with coef1 = √ᾱ_{{t−1}}·β_t/(1 − ᾱ_t) = {coef1.item():.4f}, "
          f"coef2 = √α_t·(1 − ᾱ_{{t−1}})/(1 − ᾱ_t) = {coef2.item():.4f}; x_{{t−1}} = μ̃ + σ_t·z, "
          f"σ_t = {var.sqrt().item():.4f} ({cfg.variance})")
    e.tensor("μ̃ (posterior mean)", mean)
    e.check("μ̃ by hand  ==  DDPM.step(output, t, x_t, noise = 0)", mean,
            ddpm.step(pred, t, x_t, noise=torch.zeros_like(x_t)).prev_sample)
    module = ddpm.step(pred, t, x_t, noise=z)
    e.check("x_{t−1} = μ̃ + σ_t·z by hand  ==  DDPM.step(output, t, x_t, noise = z), and its x̂_0",
            torch.cat([prev, x0_hat]), torch.cat([module.prev_sample, module.pred_x0]))
    return {"t": t, "x_t": x_t[0], "x0_hat": x0_hat[0], "mean": mean[0], "prev": prev[0], "eps_hat": eps_hat[0]}


def _pixels(run, x: Tensor) -> Tensor:
    """(C, H, W) in the model's space -> pixels in [-1, 1] (decoded in latent mode)."""
    if run.autoencoder is not None:
        x = run.autoencoder.decode(x[None])[0]  # (1, c, h, w) -> (C, H, W)
    return x.clamp(-1, 1)


def _image(ax, x: Tensor) -> None:
    """(C, H, W) in [-1, 1] on `ax`: grey for one channel, RGB for three."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2)
    if x.size(0) == 1:
        ax.imshow(x[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(x.permute(1, 2, 0).numpy())  # (C, H, W) -> (H, W, C)
    ax.set_xticks([])
    ax.set_yticks([])


def _strip(frames: list[tuple[str, Tensor, str]], xlabel: str, run=None):
    """A row of images, each with a title and a caption under it; `run` decodes latents first."""
    def draw(fig) -> None:
        axes = fig.subplots(1, len(frames))
        for ax, (title, x, caption) in zip(axes, frames, strict=True):
            _image(ax, _pixels(run, x) if run is not None else x)
            ax.set_title(title, fontsize=8)
            ax.set_xlabel(caption, fontsize=7)
        axes[0].set_ylabel("pixels", fontsize=7)
        if xlabel:
            fig.supxlabel(xlabel, fontsize=8)
    return draw


def _schedule(abar: Tensor, marked: list[int]):
    def draw(fig) -> None:
        ax = fig.add_subplot(1, 1, 1)
        ts = list(range(len(abar)))
        ax.plot(ts, abar.sqrt().tolist(), color="tab:blue", label="√ᾱ_t (signal)")
        ax.plot(ts, (1 - abar).sqrt().tolist(), color="tab:orange", label="√(1 − ᾱ_t) (noise)")
        ax.scatter(marked, abar[marked].sqrt().tolist(), color="tab:blue", s=12)
        ax.set_xlabel("timestep t")
        ax.set_ylabel("coefficient")
        ax.set_title("√ᾱ_t and the signal-to-noise ratio over t", fontsize=9)
        right = ax.twinx()
        right.semilogy(ts, (abar / (1 - abar)).tolist(), color="tab:green", linestyle="--", label="SNR ᾱ/(1 − ᾱ)")
        right.set_ylabel("SNR (log scale)")
        lines = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        ax.legend(lines, [h.get_label() for h in lines], fontsize=7, loc="center right")
    return draw


def _image_index(run, label: int | None, seed: int) -> int:
    """The training image the forward process noises: one of class `label` for a class-conditional run (so the
    reverse step's x̂_0, denoised under that label, can be compared with it), else the one the seed draws."""
    if label is None:
        return run.forward_process([0], seed=seed)["index"]
    labels = load_images(run.config.data)[0].labels
    of_class = torch.nonzero(labels == label).flatten()
    if len(of_class) == 0:
        raise QKVError(f"the run's training images have no image of class {label}")
    g = torch.Generator().manual_seed(seed)
    return int(of_class[torch.randint(len(of_class), (1,), generator=g)])
