"""qkv.diffusion vs diffusers' `DDPMScheduler` / `DDIMScheduler` on fixed tensors (no model, no download).

Same schedule (betas, ᾱ), same `add_noise`, same velocity, and one `step` from the same x_t, the same
model output and the same random generator state must give the same x_{t−1} and x̂_0, for every
prediction type, both beta schedules, several timesteps (the first and last included) and, for DDIM,
η = 0 and η = 1.
"""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from qkv.diffusion.ddim import DDIM
from qkv.diffusion.ddpm import DDPM, DiffusionConfig

PRED = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
SCHED = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
T = 1000


def _pair(cls_ours, cls_theirs, schedule="linear", prediction="eps", **extra):
    ours = cls_ours(DiffusionConfig(n_timesteps=T, beta_schedule=schedule, prediction=prediction))
    theirs = cls_theirs(num_train_timesteps=T, beta_schedule=SCHED[schedule], prediction_type=PRED[prediction],
                        clip_sample=True, **extra)
    return ours, theirs


def _tensors(seed=0, shape=(4, 3, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(shape, generator=g) * 2 - 1
    eps = torch.randn(shape, generator=g)
    model_out = torch.randn(shape, generator=g)
    return x0, eps, model_out


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_and_add_noise_match(schedule):
    ours, theirs = _pair(DDPM, DDPMScheduler, schedule)
    torch.testing.assert_close(ours.betas, theirs.betas, rtol=0, atol=0)
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, rtol=0, atol=0)
    x0, eps, _ = _tensors()
    t = torch.tensor([0, 1, 500, T - 1])
    torch.testing.assert_close(ours.add_noise(x0, eps, t), theirs.add_noise(x0, eps, t), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.velocity(x0, eps, t), theirs.get_velocity(x0, eps, t), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("t", [999, 500, 1, 0])
def test_ddpm_step_matches(prediction, schedule, t):
    ours, theirs = _pair(DDPM, DDPMScheduler, schedule, prediction)
    x0, eps, model_out = _tensors(seed=t)
    x_t = ours.add_noise(x0, eps, torch.full((x0.size(0),), t))
    a = ours.step(model_out, t, x_t, generator=torch.Generator().manual_seed(7))
    b = theirs.step(model_out, t, x_t, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.pred_x0, b.pred_original_sample, rtol=1e-5, atol=1e-5)


def test_ddpm_strided_step_matches():
    """DDPM with 50 of the 1000 timesteps: β_t becomes 1 − ᾱ_t/ᾱ_prev in both.

    Only a middle step: on the last strided step (t = 0 under "leading", but T/N − 1 under "trailing")
    diffusers adds noise whenever t > 0, where qkv adds none because that step lands on the clean image
    (`tests/unit/diffusion/test_schedules.py::test_ddpm_adds_no_noise_on_the_step_to_the_clean_image`)."""
    ours, theirs = _pair(DDPM, DDPMScheduler)
    theirs.set_timesteps(50)
    ts = ours.timesteps(50, "leading")
    assert ts == theirs.timesteps.tolist()
    x0, eps, model_out = _tensors(seed=3)
    t, prev = ts[10], ts[11]
    x_t = ours.add_noise(x0, eps, torch.full((x0.size(0),), t))
    a = ours.step(model_out, t, x_t, prev_t=prev, generator=torch.Generator().manual_seed(1))
    b = theirs.step(model_out, t, x_t, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("index", [0, 7, 19])  # first, a middle and the last of 20 steps
@pytest.mark.parametrize("clipped_eps", [True, False])  # diffusers' use_clipped_model_output
def test_ddim_step_matches(prediction, eta, index, clipped_eps):
    ours, theirs = _pair(DDIM, DDIMScheduler, "linear", prediction, set_alpha_to_one=True)
    theirs.set_timesteps(20)
    ts = ours.timesteps(20, "leading")
    assert ts == theirs.timesteps.tolist()
    t = ts[index]
    prev = ts[index + 1] if index + 1 < len(ts) else -1
    x0, eps, model_out = _tensors(seed=index)
    x_t = ours.add_noise(x0, eps, torch.full((x0.size(0),), t))
    model_out = model_out * 3  # large enough that x̂_0 leaves [-1, 1] and clipping matters
    a = ours.step(model_out, t, x_t, prev_t=prev, eta=eta, clipped_eps=clipped_eps,
                  generator=torch.Generator().manual_seed(5))
    b = theirs.step(model_out, t, x_t, eta=eta, use_clipped_model_output=clipped_eps,
                    generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.pred_x0, b.pred_original_sample, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [10, 50, 333])
def test_timestep_spacings_match(spacing, n):
    ours = DDIM(DiffusionConfig(n_timesteps=T))
    theirs = DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    theirs.set_timesteps(n)
    assert ours.timesteps(n, spacing) == theirs.timesteps.tolist()
