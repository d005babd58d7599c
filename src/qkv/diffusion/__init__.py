"""qkv.diffusion: the noise maths, independent of any network and of any dataset.

- `schedules`: linear and cosine β_t, ᾱ_t.
- `ddpm`: `DiffusionConfig`, `DDPM` (add_noise, loss, ancestral step), Ho et al. 2020.
- `ddim`: `DDIM` (the η-step on a DDPM-trained model, fewer steps), Song et al. 2021.
- `sampling`: the loops, with classifier-free guidance; any ``model(x_t, t, **cond)`` denoiser.
- `generate`: the sampler settings of a run (`ImageSampling`) and condition rows -> images (decoded in latent
  mode).
- `protocols`: `Denoiser`, what the loops read from a network (its config's image size and channels, its null
  condition).
"""
