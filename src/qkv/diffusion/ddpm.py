"""DDPM: the forward process q(x_t | x_0), the training loss, and one ancestral sampling step.

Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models", https://arxiv.org/abs/2006.11239.
Equation numbers below are that paper's; v-prediction is Salimans & Ho 2022 (https://arxiv.org/abs/2202.00512).

Training (Algorithm 1). Draw x_0 from the data, t uniformly, ε ~ N(0, I), and jump straight to

    x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε                                     (eq. 4, reparametrised)

then regress the network's output on the target of the chosen parametrisation:

    eps: ε                      L_simple = E ‖ε − ε_θ(x_t, t)‖²          (eq. 14)
    x0:  x_0
    v:   v = √ᾱ_t ε − √(1 − ᾱ_t) x_0                                      (Salimans & Ho §4, eq. 9 there)

Sampling (Algorithm 2). From x_T ~ N(0, I) walk back with the Gaussian posterior q(x_{t−1} | x_t, x_0)
whose x_0 is the network's estimate x̂_0:

    x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t                                     (eq. 15)
    μ̃_t = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x̂_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t      (eq. 7)
    β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t                                  (eq. 7)
    x_{t−1} = μ̃_t + σ_t z,   z ~ N(0, I),   σ_t² = β̃_t ("fixed_small") or β_t ("fixed_large")   (eq. 6, §3.2)

With a strided schedule (fewer steps) t−1 becomes the previous timestep in the list and β_t becomes
1 − ᾱ_t/ᾱ_prev, exactly as diffusers' `DDPMScheduler.step` does. The arithmetic and the order of
operations follow diffusers, which `tests/parity/test_diffusers_parity.py` checks on fixed tensors.

Shape legend: B batch, C channels, H height, W width. Timestep indices are 0-based: index i is the
paper's t = i + 1 (see `qkv.diffusion.schedules`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qkv.diffusion.schedules import BetaSchedule, alphas_cumprod, make_betas

Prediction = Literal["eps", "x0", "v"]
Variance = Literal["fixed_small", "fixed_large"]
Spacing = Literal["leading", "trailing", "linspace"]


@dataclass
class DiffusionConfig:
    n_timesteps: int = 1000  # T, the length of the forward process
    beta_schedule: BetaSchedule = "linear"  # "linear" (DDPM) or "cosine" (Improved DDPM)
    beta_start: float = 1e-4  # linear schedule only
    beta_end: float = 0.02  # linear schedule only
    prediction: Prediction = "eps"  # what the denoiser outputs: the noise ε, the image x_0, or v
    clip_sample: bool = True  # clamp x̂_0 to [-1, 1] while sampling (data lives in [-1, 1])
    variance: Variance = "fixed_small"  # DDPM's σ_t²: β̃_t ("fixed_small") or β_t ("fixed_large")
    min_snr_gamma: float | None = None  # Min-SNR-γ loss weighting (Hang et al. 2023); None = L_simple
    min_snr_plus_one: bool = False  # cap the x_0-space weight SNR + 1 at γ + 1 instead of SNR at γ (see loss_weights)

    def __post_init__(self):
        if self.n_timesteps < 2:
            raise ValueError(f"n_timesteps must be at least 2, got {self.n_timesteps}")
        if self.beta_schedule == "linear" and not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be positive, got {self.min_snr_gamma}")
        if self.min_snr_plus_one and self.min_snr_gamma is None:
            raise ValueError("min_snr_plus_one needs min_snr_gamma (the cap γ)")
        if self.min_snr_plus_one and self.prediction == "eps":
            # the x_0-space weight min(SNR + 1, γ + 1) is (SNR + 1)/SNR in ε-space at the noisy end: about
            # 2.5e4 at t = T on the linear schedule, 4e8 on cosine. No bounded ε weight gives it.
            raise ValueError("min_snr_plus_one is for prediction = 'v' or 'x0': with 'eps' its weight "
                             "(SNR + 1)/SNR explodes at the noisiest steps; use min_snr_gamma alone for 'eps'")


@dataclass
class StepOutput:
    prev_sample: Tensor  # (B, C, H, W) x_{t−1} (or x at the previous timestep of a strided schedule)
    pred_x0: Tensor  # (B, C, H, W) x̂_0, the network's estimate of the clean image at this step


def _expand(values: Tensor, ndim: int) -> Tensor:
    """(B,) -> (B, 1, …, 1) with `ndim` dims in total, for broadcasting against images."""
    return values.reshape(-1, *([1] * (ndim - 1)))


class DDPM:
    """The schedule tensors and the DDPM maths. Works with any denoiser ``model(x_t, t, **cond) -> pred``."""

    def __init__(self, cfg: DiffusionConfig | None = None):
        self.cfg = cfg or DiffusionConfig()
        self.n_timesteps = self.cfg.n_timesteps
        self.betas = make_betas(self.cfg.beta_schedule, self.n_timesteps, self.cfg.beta_start,
                                self.cfg.beta_end)  # (T,)
        self.alphas = 1.0 - self.betas  # (T,) α_t
        self.alphas_cumprod = alphas_cumprod(self.betas)  # (T,) ᾱ_t

    def to(self, device: torch.device | str) -> DDPM:
        self.betas, self.alphas, self.alphas_cumprod = (
            self.betas.to(device), self.alphas.to(device), self.alphas_cumprod.to(device))
        return self

    # ---------------------------------------------------------------------------- forward process
    def _abar(self, t: Tensor, like: Tensor) -> Tensor:
        """ᾱ at integer timesteps t (B,), shaped (B, 1, 1, 1) in the dtype of `like`."""
        return _expand(self.alphas_cumprod.to(like.device)[t.to(like.device)].to(like.dtype), like.dim())

    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (eq. 4). x0, eps: (B, C, H, W); t: (B,) long in [0, T)."""
        abar = self._abar(t, x0)  # (B, 1, 1, 1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps  # (B, C, H, W)

    def velocity(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """v = √ᾱ_t ε − √(1 − ᾱ_t) x_0 (Salimans & Ho 2022)."""
        abar = self._abar(t, x0)
        return abar.sqrt() * eps - (1 - abar).sqrt() * x0  # (B, C, H, W)

    def target(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """What the denoiser is trained to output under `cfg.prediction`."""
        if self.cfg.prediction == "eps":
            return eps
        if self.cfg.prediction == "x0":
            return x0
        return self.velocity(x0, eps, t)

    def loss_weights(self, t: Tensor) -> Tensor:
        """(B,) per-sample loss weights: ones for L_simple; with ``min_snr_gamma`` = γ, Min-SNR-γ
        (Hang et al. 2023): the x_0-space weight min(SNR_t, γ) expressed for the trained target —
        min(SNR, γ)/SNR for ε, min(SNR, γ) for x_0, min(SNR, γ)/(SNR + 1) for v — with SNR_t = ᾱ_t/(1 − ᾱ_t).
        It caps the weight of the nearly clean timesteps (high SNR, fine detail). Against plain
        v-prediction (whose x_0-space weight is SNR + 1) it also shrinks the weight of the noisiest steps,
        where the layout is decided: on shapes it improved shape but lost position (docs/benchmarks.md).

        ``min_snr_plus_one`` caps SNR + 1 at γ + 1 instead: the x_0-space weight min(SNR + 1, γ + 1), i.e.
        v-prediction's own weight wherever SNR ≤ γ, so for v the loss weight is min(1, (γ + 1)/(SNR + 1)):
        only the nearly clean steps are turned down. On shapes this kept position and raised prompt
        adherence (docs/benchmarks.md); the shapes preset uses it. For x_0-prediction the same x_0-space
        weight is the loss weight itself, between 1 and γ + 1. For ε-prediction it would be
        min(SNR + 1, γ + 1)/SNR, which grows like 1/SNR at the noisiest steps, so `DiffusionConfig`
        refuses that combination."""
        if self.cfg.min_snr_gamma is None:
            return torch.ones(t.shape, device=t.device)
        abar = self.alphas_cumprod.to(t.device)[t].double()  # (B,)
        snr = abar / (1 - abar)
        k = 1.0 if self.cfg.min_snr_plus_one else 0.0
        w0 = (snr + k).clamp(max=self.cfg.min_snr_gamma + k)  # the weight of the x_0 error
        weight = {"eps": w0 / snr, "x0": w0, "v": w0 / (snr + 1)}[self.cfg.prediction]
        return weight.float()

    def loss(self, model, x0: Tensor, cond: dict | None = None, generator: torch.Generator | None = None,
             t: Tensor | None = None, noise: Tensor | None = None) -> tuple[Tensor, dict]:
        """L_simple (eq. 14): mean squared error between the denoiser's output and its target, each sample
        weighted by `loss_weights` (all ones unless ``min_snr_gamma`` is set).

        t ~ U{0 … T−1} and ε ~ N(0, I) are the given `t` and `noise` (the training batches draw them, so a
        run on several processes draws what one process would), else drawn from `generator` (torch's
        global RNG if None). Returns (loss, info) with info["t"] the (B,) timesteps.
        """
        B = x0.size(0)
        if t is None:
            t = torch.randint(0, self.n_timesteps, (B,), generator=generator)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        t, eps = t.to(x0.device), noise.to(x0.device)  # (B,), (B, C, H, W)
        x_t = self.add_noise(x0, eps, t)  # (B, C, H, W)
        pred = model(x_t, t, **(cond or {}))  # (B, C, H, W)
        if self.cfg.min_snr_gamma is None:
            return F.mse_loss(pred.float(), self.target(x0, eps, t).float()), {"t": t}
        per_sample = (pred.float() - self.target(x0, eps, t).float()).pow(2).flatten(1).mean(1)  # (B,)
        return (self.loss_weights(t) * per_sample).mean(), {"t": t}

    # ---------------------------------------------------------------------------- reverse process
    def timesteps(self, n_steps: int | None = None, spacing: Spacing = "leading") -> list[int]:
        """The descending timestep indices a sampler visits: all T of them, or `n_steps` spread out.

        Spacings (Lin et al. 2023, https://arxiv.org/abs/2305.08891, Table 2), for T = 1000, n = 4:
        ``leading`` [750, 500, 250, 0] (DDIM's and diffusers' default), ``trailing`` [999, 749, 499, 249]
        (starts at pure noise), ``linspace`` [999, 666, 333, 0].
        """
        T = self.n_timesteps
        n = T if n_steps is None else n_steps
        if not 0 < n <= T:
            raise ValueError(f"steps must be between 1 and {T} (the number of training timesteps), got {n}")
        if spacing == "leading":
            ts = np.arange(0, n) * (T // n)
        elif spacing == "trailing":
            ts = np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1
        elif spacing == "linspace":
            ts = np.linspace(0, T - 1, n).round()
        else:
            raise ValueError(f"unknown timestep spacing {spacing!r}; choose leading, trailing or linspace")
        return sorted({int(t) for t in ts}, reverse=True)

    def _abar_at(self, t: int) -> Tensor:
        """ᾱ at one timestep index; 1 before the first step (t < 0), i.e. the clean image."""
        ac = self.alphas_cumprod
        return ac[t] if t >= 0 else torch.ones((), dtype=ac.dtype, device=ac.device)

    def split_prediction(self, pred: Tensor, x_t: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """The denoiser's output at timestep t turned into (x̂_0, ε̂), whatever it predicts."""
        abar = self._abar_at(t).to(x_t.device, x_t.dtype)
        if self.cfg.prediction == "eps":
            return (x_t - (1 - abar).sqrt() * pred) / abar.sqrt(), pred  # eq. 15
        if self.cfg.prediction == "x0":
            return pred, (x_t - abar.sqrt() * pred) / (1 - abar).sqrt()
        return abar.sqrt() * x_t - (1 - abar).sqrt() * pred, abar.sqrt() * pred + (1 - abar).sqrt() * x_t

    def _clip(self, x0: Tensor) -> Tensor:
        return x0.clamp(-1.0, 1.0) if self.cfg.clip_sample else x0

    def step(self, pred: Tensor, t: int, x_t: Tensor, prev_t: int | None = None,
             generator: torch.Generator | None = None, noise: Tensor | None = None) -> StepOutput:
        """One ancestral step x_t -> x_{prev_t} (Algorithm 2, line 4). prev_t defaults to t − 1.

        pred: (B, C, H, W) denoiser output at timestep index t. `noise` (or a draw from `generator`)
        is the z of eq. 6; none is added on the last step, the one that lands on the clean image
        (prev_t < 0). With a strided schedule that step starts from t = T/N − 1, not from t = 0.
        """
        prev_t = t - 1 if prev_t is None else prev_t
        # 1. compute ᾱ_t, ᾱ_prev and the (possibly strided) β_t = 1 − ᾱ_t / ᾱ_prev
        abar_t = self._abar_at(t)
        abar_prev = self._abar_at(prev_t)
        alpha_t = abar_t / abar_prev
        beta_t = 1 - alpha_t
        # 2. x̂_0 from the prediction (eq. 15 for ε-prediction)
        x0, _ = self.split_prediction(pred, x_t, t)
        # 3. clip x̂_0 to the data range
        x0 = self._clip(x0)
        # 4. coefficients of x̂_0 and x_t in the posterior mean μ̃_t (eq. 7)
        coef_x0 = abar_prev.sqrt() * beta_t / (1 - abar_t)
        coef_xt = alpha_t.sqrt() * (1 - abar_prev) / (1 - abar_t)
        # 5. the posterior mean μ̃_t
        mean = coef_x0 * x0 + coef_xt * x_t  # (B, C, H, W)
        # 6. add σ_t z (eq. 6), except on the step to the clean image. diffusers tests `t > 0` here, which
        #    adds noise on that step whenever the schedule is strided (std ≈ 0.32 for 10 steps, linear,
        #    fixed_large), so the parity tests against it use steps that cannot show the difference.
        if prev_t >= 0:
            if noise is None:
                noise = torch.randn(pred.shape, generator=generator, dtype=pred.dtype).to(pred.device)
            if self.cfg.variance == "fixed_small":
                var = ((1 - abar_prev) / (1 - abar_t) * beta_t).clamp(min=1e-20)  # β̃_t (eq. 7)
            else:
                var = beta_t
            mean = mean + var.sqrt() * noise
        return StepOutput(mean, x0)
