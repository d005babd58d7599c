"""The latent-mode autoencoder: shapes, standardised latents, config errors, and that it learns to reconstruct."""

import pytest
import torch
import torch.nn.functional as F

from qkv.data.images import render_shapes
from qkv.models.autoencoder import Autoencoder, AutoencoderConfig


def _ae(**kw) -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder(AutoencoderConfig(image_size=32, in_channels=3, **{"width": 8, **kw}))


@pytest.mark.parametrize("downsample", [1, 2, 3])
def test_latent_grid_is_the_image_over_2_to_the_downsample(downsample):
    ae = _ae(downsample=downsample, latent_channels=4)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (2, 4, 32 // 2**downsample, 32 // 2**downsample) == (2, 4, ae.config.latent_size,
                                                                         ae.config.latent_size)
    assert ae.decode(z).shape == x.shape


def test_latent_stats_standardise_the_training_latents_and_cancel_in_the_round_trip():
    ae = _ae()
    x = render_shapes(64, seed=0).images
    raw = ae.encoder(x)
    assert raw.mean(dim=(0, 2, 3)).abs().max() > 1e-3 or (raw.std(dim=(0, 2, 3)) - 1).abs().max() > 1e-2
    ae.set_latent_stats(x)
    z = ae.encode(x)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(ae.decode(z), ae(x), atol=1e-5, rtol=1e-5)  # standardising is undone by decode
    assert {"latent_mean", "latent_std"} <= set(ae.state_dict())  # saved with the weights


def test_bad_configs_are_errors():
    with pytest.raises(ValueError, match="downsample"):
        AutoencoderConfig(downsample=0)
    with pytest.raises(ValueError, match="not divisible"):
        AutoencoderConfig(image_size=36, downsample=3)
    with pytest.raises(ValueError, match="latent_channels"):
        AutoencoderConfig(latent_channels=0)
    with pytest.raises(ValueError, match="needs image_size"):
        Autoencoder(AutoencoderConfig())


@pytest.mark.slow  # a tiny training run (~15 s on 2 cores): make test runs it, make test-fast leaves it out
def test_it_learns_to_reconstruct_shapes():
    """600 Adam steps on 512 shapes images take the held-out reconstruction MSE (in [-1, 1] units) below 0.05.

    Untrained: ~0.9; an all-black guess: 0.16. Measured on torch 2.13 CPU, Intel Xeon (AMX), 1 thread, fp32,
    ~16 s each (`pytest tests/unit/diffusion/test_autoencoder.py::test_it_learns_to_reconstruct_shapes` for
    seed 0; seeds 1 and 2 with the same code, `torch.manual_seed(s)` and the batch generator seeded with s):
    before -> after = seed 0 (the test's) 0.923 -> 0.0371, seed 1 0.776 -> 0.0130, seed 2 0.866 -> 0.0277.
    The worst seed is 26% under the 0.05 threshold. Not measured on AMD (no such machine was available).
    """
    ae = _ae(width=8)
    x, held_out = render_shapes(512, seed=1).images, render_shapes(64, seed=2).images
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    before = F.mse_loss(ae(held_out), held_out).item()
    for _ in range(600):
        batch = x[torch.randint(len(x), (32,), generator=g)]
        loss = F.mse_loss(ae(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = F.mse_loss(ae(held_out), held_out).item()
    assert before > 0.3 and after < 0.05, (before, after)  # measured before >= 0.776, after <= 0.0371
