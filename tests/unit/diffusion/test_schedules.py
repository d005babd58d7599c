"""Invariants of the noise schedules, the forward process and the DDPM / DDIM steps (no reference library)."""

import pytest
import torch

from qkv.diffusion.ddim import DDIM
from qkv.diffusion.ddpm import DDPM, DiffusionConfig
from qkv.diffusion.schedules import alphas_cumprod, cosine_betas, make_betas


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("T", [10, 100, 1000, 4000])
def test_alpha_bar_strictly_decreasing_in_unit_interval(kind, T):
    abar = alphas_cumprod(make_betas(kind, T))
    assert abar.shape == (T,)
    assert bool((abar > 0).all()) and bool((abar < 1).all())
    assert bool((abar[1:] < abar[:-1]).all()), "ᾱ_t must fall strictly"
    assert abar[0] > (0.99 if T >= 100 else 0.9)  # starts near the data
    if kind == "cosine" or T >= 1000:  # the linear β range is DDPM's for T = 1000; shorter chains end early
        assert abar[-1] < 0.05, "ends near pure noise"


def test_cosine_betas_worked_example_and_clip():
    torch.testing.assert_close(cosine_betas(4), torch.tensor([0.1530, 0.4170, 0.7079, 0.9990]), atol=1e-4, rtol=0)
    assert cosine_betas(1000).max() <= 0.999


def test_bad_schedules_raise():
    with pytest.raises(ValueError, match="unknown beta schedule"):
        make_betas("quadratic", 10)
    with pytest.raises(ValueError, match="beta_start < beta_end"):
        make_betas("linear", 10, beta_start=0.02, beta_end=0.01)
    with pytest.raises(ValueError, match="n_timesteps"):
        DiffusionConfig(n_timesteps=1)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_add_noise_at_t0_is_almost_x0_and_at_T_almost_noise(kind):
    d = DDPM(DiffusionConfig(beta_schedule=kind))
    x0 = torch.rand(8, 3, 4, 4) * 2 - 1
    eps = torch.randn_like(x0)
    t0 = torch.zeros(8, dtype=torch.long)
    assert (d.add_noise(x0, eps, t0) - x0).abs().max() < 0.05
    tT = torch.full((8,), d.n_timesteps - 1)
    assert (d.add_noise(x0, eps, tT) - eps).abs().max() < 0.01


def test_add_noise_has_the_closed_form_moments():
    """x_t = √ᾱ x0 + √(1−ᾱ) ε: for fixed x0 the mean is √ᾱ x0 and the variance 1 − ᾱ (DDPM eq. 4)."""
    d = DDPM()
    t = 300
    x0 = torch.full((20000, 1, 1, 1), 0.7)
    xt = d.add_noise(x0, torch.randn_like(x0), torch.full((20000,), t))
    abar = d.alphas_cumprod[t]
    assert abs(xt.mean() - abar.sqrt() * 0.7) < 0.02
    assert abs(xt.var() - (1 - abar)) < 0.03


def test_split_prediction_recovers_x0_and_eps_for_every_parametrisation():
    x0 = torch.rand(4, 2, 3, 3) * 2 - 1
    eps = torch.randn_like(x0)
    t = 417
    for pred in ("eps", "x0", "v"):
        d = DDPM(DiffusionConfig(prediction=pred))
        tt = torch.full((4,), t)
        xt = d.add_noise(x0, eps, tt)
        x0_hat, eps_hat = d.split_prediction(d.target(x0, eps, tt), xt, t)
        torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=0)
        torch.testing.assert_close(eps_hat, eps, atol=1e-4, rtol=0)


def test_step_with_perfect_prediction_moves_toward_x0():
    """Given the true ε, the posterior mean at t = 0 is exactly x0 (no noise on the last step)."""
    d = DDPM()
    x0 = torch.rand(2, 1, 4, 4) * 2 - 1
    eps = torch.randn_like(x0)
    xt = d.add_noise(x0, eps, torch.zeros(2, dtype=torch.long))
    out = d.step(eps, 0, xt)
    torch.testing.assert_close(out.prev_sample, x0, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("steps", [10, 1000])
def test_ddpm_adds_no_noise_on_the_step_to_the_clean_image(variance, steps):
    """With N < T steps (trailing spacing) the last step starts at t = T/N − 1 = 99, not 0; it still lands
    on the clean image and must add no noise. Testing `t > 0` instead (diffusers does) adds σ·z with
    std ≈ 0.32 there on the linear schedule with fixed_large."""
    d = DDPM(DiffusionConfig(variance=variance, clip_sample=False))
    ts = d.timesteps(steps, "trailing")
    t = ts[-1]
    assert t == 1000 // steps - 1
    x = torch.randn(4, 1, 8, 8)
    pred = torch.randn_like(x)
    a = d.step(pred, t, x, prev_t=-1, noise=torch.randn_like(x)).prev_sample
    b = d.step(pred, t, x, prev_t=-1, noise=torch.randn_like(x)).prev_sample
    assert torch.equal(a, b)
    assert torch.equal(a, d.split_prediction(pred, x, t)[0])  # the posterior mean at ᾱ_prev = 1 is x̂_0
    mid = d.step(pred, ts[-2], x, prev_t=t, noise=torch.randn_like(x)).prev_sample  # the step before it is noisy
    assert not torch.equal(mid, d.step(pred, ts[-2], x, prev_t=t, noise=torch.randn_like(x)).prev_sample)


def test_ddim_eta0_is_deterministic_and_eta1_is_not():
    d = DDIM()
    x = torch.randn(3, 1, 4, 4)
    pred = torch.randn_like(x)
    a = d.step(pred, 500, x, prev_t=480, eta=0.0, generator=torch.Generator().manual_seed(1)).prev_sample
    b = d.step(pred, 500, x, prev_t=480, eta=0.0, generator=torch.Generator().manual_seed(2)).prev_sample
    assert torch.equal(a, b)
    c = d.step(pred, 500, x, prev_t=480, eta=1.0, generator=torch.Generator().manual_seed(1)).prev_sample
    e = d.step(pred, 500, x, prev_t=480, eta=1.0, generator=torch.Generator().manual_seed(2)).prev_sample
    assert not torch.equal(c, e)


def test_ddim_eta1_equals_ddpm_step_with_the_same_noise():
    """σ_t(η=1) is DDPM's √β̃_t, so the two updates coincide (DDIM §4.1)."""
    x = torch.randn(2, 3, 4, 4)
    pred = torch.randn_like(x)
    z = torch.randn_like(x)
    for t, prev in ((999, 998), (600, 580), (20, 0)):
        a = DDIM(DiffusionConfig(clip_sample=False)).step(pred, t, x, prev_t=prev, eta=1.0, noise=z).prev_sample
        b = DDPM(DiffusionConfig(clip_sample=False)).step(pred, t, x, prev_t=prev, noise=z).prev_sample
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_timesteps_validate_and_descend():
    d = DDPM(DiffusionConfig(n_timesteps=100))
    assert d.timesteps() == list(range(99, -1, -1))
    for spacing in ("leading", "trailing", "linspace"):
        ts = d.timesteps(7, spacing)
        assert len(ts) == 7 and ts == sorted(ts, reverse=True) and 0 <= ts[-1] and ts[0] < 100
    for bad in (0, -3, 101):
        with pytest.raises(ValueError, match="steps must be between"):
            d.timesteps(bad)


def test_loss_is_the_mse_to_the_target_and_uses_the_generator():
    d = DDPM()
    x0 = torch.rand(5, 1, 2, 2)

    class Zero(torch.nn.Module):
        def forward(self, x, t):
            return torch.zeros_like(x)

    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    loss, info = d.loss(Zero(), x0, generator=g1)
    t = torch.randint(0, d.n_timesteps, (5,), generator=g2)
    eps = torch.randn(x0.shape, generator=g2)
    assert torch.equal(info["t"], t)
    torch.testing.assert_close(loss, (eps**2).mean())


@pytest.mark.parametrize("plus_one", [False, True])
def test_min_snr_weights_are_the_x0_weight_min_snr_gamma_in_every_parameterisation(plus_one):
    """For each target, weight × (target error) equals min(SNR + k, γ + k) × (x_0 error), k = 0 or 1."""
    t = torch.tensor([0, 10, 300, 700, 990])  # not 999: SNR ~1e-9, and the ε weight (SNR + 1)/SNR magnifies fp32 error
    x0, eps = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    x0_hat = x0 + 0.1 * torch.randn_like(x0)  # a denoiser's estimate of x_0
    per = {}
    for pred in (("eps", "x0", "v") if not plus_one else ("x0", "v")):  # plus_one with eps: refused, below
        d = DDPM(DiffusionConfig(beta_schedule="cosine", prediction=pred, min_snr_gamma=5.0,
                                 min_snr_plus_one=plus_one))
        abar = d.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = d.add_noise(x0, eps, t)
        eps_hat = (x_t - abar.sqrt() * x0_hat) / (1 - abar).sqrt()  # the same estimate in each parameterisation
        hat = {"eps": eps_hat, "x0": x0_hat, "v": abar.sqrt() * eps_hat - (1 - abar).sqrt() * x0_hat}[pred]
        err = (hat - d.target(x0, eps, t)).pow(2).flatten(1).mean(1)
        per[pred] = d.loss_weights(t) * err
    snr = DDPM(DiffusionConfig(beta_schedule="cosine")).alphas_cumprod[t].double()
    snr = snr / (1 - snr)
    k = float(plus_one)
    expected = (snr + k).clamp(max=5.0 + k).float() * (x0_hat - x0).pow(2).flatten(1).mean(1)
    for pred in per:
        torch.testing.assert_close(per[pred], expected, rtol=1e-3, atol=1e-6)
    assert torch.equal(DDPM().loss_weights(t), torch.ones(5))  # L_simple by default
    with pytest.raises(ValueError, match="min_snr_gamma"):
        DiffusionConfig(min_snr_gamma=0.0)
    with pytest.raises(ValueError, match="min_snr_plus_one needs min_snr_gamma"):
        DiffusionConfig(min_snr_plus_one=True, prediction="v")


def test_min_snr_plus_one_weights_stay_bounded_and_eps_is_refused():
    """The x_0-space weight min(SNR + 1, γ + 1) as a loss weight: for v it is min(1, (γ + 1)/(SNR + 1)) ≤ 1,
    for x_0 it lies in [1, γ + 1]. For ε it would be (SNR + 1)/SNR at the noisy end — 2.5e4 on the linear
    schedule, 4e8 on cosine — so that combination is a configuration error, not a silent blow-up."""
    for schedule in ("linear", "cosine"):
        t = torch.arange(1000)
        v = DDPM(DiffusionConfig(beta_schedule=schedule, prediction="v", min_snr_gamma=2.0, min_snr_plus_one=True))
        x0 = DDPM(DiffusionConfig(beta_schedule=schedule, prediction="x0", min_snr_gamma=2.0, min_snr_plus_one=True))
        assert v.loss_weights(t).max() <= 1.0 and v.loss_weights(t).min() > 0
        assert x0.loss_weights(t).min() >= 1.0 - 1e-6 and x0.loss_weights(t).max() <= 3.0 + 1e-6
        abar = v.alphas_cumprod.double()
        snr = abar / (1 - abar)
        torch.testing.assert_close(x0.loss_weights(t), (snr + 1).clamp(max=3.0).float())
        torch.testing.assert_close(v.loss_weights(t), ((snr + 1).clamp(max=3.0) / (snr + 1)).float())
        with pytest.raises(ValueError, match="min_snr_plus_one is for prediction = 'v' or 'x0'"):
            DiffusionConfig(beta_schedule=schedule, prediction="eps", min_snr_gamma=2.0, min_snr_plus_one=True)
    # the eps weight Min-SNR-γ itself (no +1) stays bounded by 1: min(SNR, γ)/SNR
    eps = DDPM(DiffusionConfig(beta_schedule="cosine", prediction="eps", min_snr_gamma=2.0))
    assert eps.loss_weights(torch.arange(1000)).max() <= 1.0 + 1e-6


def test_eps_with_plus_one_is_a_one_line_config_error():
    from qkv.config import from_dict
    from qkv.errors import QKVError

    with pytest.raises(QKVError, match=r"^diffusion: min_snr_plus_one is for prediction"):
        from_dict(DiffusionConfig, {"prediction": "eps", "min_snr_gamma": 2, "min_snr_plus_one": True},
                  prefix="diffusion.")


def test_min_snr_plus_one_keeps_the_noisy_steps_at_the_plain_v_weight():
    """For v: weight 1 wherever SNR ≤ γ (the noisy end, unlike Min-SNR), below 1 only at the clean end."""
    d = DDPM(DiffusionConfig(beta_schedule="cosine", prediction="v", min_snr_gamma=5.0, min_snr_plus_one=True))
    snr = d.alphas_cumprod / (1 - d.alphas_cumprod)
    t = torch.arange(d.n_timesteps)
    w = d.loss_weights(t)
    torch.testing.assert_close(w[snr <= 5.0], torch.ones(int((snr <= 5.0).sum())))
    assert (w[snr > 5.0] < 1).all() and w[0] < 1e-3  # the nearly clean end is turned down hard
    plain_min_snr = DDPM(DiffusionConfig(beta_schedule="cosine", prediction="v", min_snr_gamma=5.0))
    assert plain_min_snr.loss_weights(t)[-1] < 1e-3  # whereas Min-SNR silences the noisiest step


def test_weighted_loss_is_the_weighted_mean_of_per_sample_errors():
    d = DDPM(DiffusionConfig(min_snr_gamma=5.0))
    x0 = torch.rand(4, 1, 2, 2)

    class Zero(torch.nn.Module):
        def forward(self, x, t):
            return torch.zeros_like(x)

    loss, info = d.loss(Zero(), x0, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, d.n_timesteps, (4,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    torch.testing.assert_close(loss, (d.loss_weights(t) * eps.pow(2).flatten(1).mean(1)).mean())
    assert not torch.allclose(loss, eps.pow(2).mean())  # the weights change it


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sampling_clamps_to_the_pixel_range_only_with_clip_sample(sampler):
    """A denoiser that always predicts x_0 = 3: pixels come back clamped to 1 (the last step returns the
    clipped x̂_0), latents (clip off) at 3. Latent mode relies on the second case: clamping latents to
    [-1, 1] lost the objects' colours.
    """
    from qkv.diffusion.sampling import sample

    class Three(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))  # sample() reads the device from a parameter

        def forward(self, x, t):
            return torch.full_like(x, 3.0)

    for clip, expected in ((True, 1.0), (False, 3.0)):
        cfg = DiffusionConfig(beta_schedule="cosine", prediction="x0", clip_sample=clip)
        out = sample(Three(), cfg, (2, 1, 2, 2), sampler=sampler, steps=5, seed=0)
        torch.testing.assert_close(out, torch.full((2, 1, 2, 2), expected), atol=1e-3, rtol=0)
