"""Classifier-free guidance in `qkv.diffusion.sampling.sample` and `qkv.diffusion.generate.generate`, exactly.

A stub denoiser predicts x̂_0 = its label, whatever x_t and t are (``prediction = "x0"``, no clipping). The
last DDIM step lands on the clean image (ᾱ = 1 before the first timestep), so it returns x̂_0 itself:
the sampled image *is* the guided prediction ``u + w·(c − u)`` of the last step, and every branch of the
guidance code shows in the pixels — w = 0 (unconditional only), w = 1 (conditional only, no doubled
batch), w > 1 (both, on one doubled batch, in the order (cond, uncond)), the missing-null error, and
that `generate` builds the null condition from the model.
"""

from types import SimpleNamespace

import pytest
import torch

from qkv.diffusion.ddpm import DiffusionConfig
from qkv.diffusion.sampling import sample

NULL = 10  # the stub's "no label" id, like DiT's n_classes


class LabelIsX0(torch.nn.Module):
    """forward(x, t, labels) = labels as a constant image; records the batch size and labels of every call."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))  # sample() reads the device from a parameter
        self.scale = scale
        self.calls: list[list[int]] = []
        self.config = SimpleNamespace(in_channels=1, image_size=2)  # what `generate` reads

    def forward(self, x, t, labels):
        assert x.shape[0] == t.shape[0] == labels.shape[0]
        self.calls.append(labels.tolist())
        return (labels.float() * self.scale).view(-1, 1, 1, 1).expand_as(x)

    def null_condition(self, cond):
        return {"labels": torch.full_like(cond["labels"], NULL)}


CFG = DiffusionConfig(beta_schedule="cosine", prediction="x0", clip_sample=False)
LABELS = torch.tensor([2, 5])


def _sample(model, guidance, sampler="ddim", **kw):
    return sample(model, CFG, (2, 1, 2, 2), cond={"labels": LABELS}, null_cond={"labels": torch.full((2,), NULL)},
                  guidance=guidance, sampler=sampler, steps=4, seed=0, **kw)


@pytest.mark.parametrize("w", [0.0, 1.0, 3.0, 0.5])
def test_ddim_output_is_the_guided_prediction_u_plus_w_times_c_minus_u(w):
    """Row i asked for label LABELS[i]: its pixels are 10 + w·(label − 10), exactly (small integers and halves).

    Swapping the cond/uncond halves of the doubled batch would give label + w·(10 − label) instead
    (26 rather than −14 for label 2 at w = 3).
    """
    out = _sample(LabelIsX0(), w)
    want = (NULL + w * (LABELS.float() - NULL)).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    assert torch.equal(out, want), (w, out[:, 0, 0, 0].tolist())


def test_each_guidance_scale_runs_the_batches_it_needs():
    """w = 1: one conditional forward of B rows per step; w = 0: one unconditional forward of B rows;
    w ≠ 0, 1: one doubled forward per step, conditional rows first, then their null rows."""
    for w, per_call in ((1.0, [2, 5]), (0.0, [NULL, NULL]), (3.0, [2, 5, NULL, NULL])):
        model = LabelIsX0()
        _sample(model, w)
        assert model.calls == [per_call] * 4, (w, model.calls)


def test_guidance_needs_the_null_condition_unless_it_is_one_or_there_is_no_condition():
    model = LabelIsX0()
    with pytest.raises(ValueError, match="null_cond"):
        sample(model, CFG, (2, 1, 2, 2), cond={"labels": LABELS}, guidance=3.0, steps=2)
    out = sample(model, CFG, (2, 1, 2, 2), cond={"labels": LABELS}, guidance=1.0, steps=2)  # no null needed
    assert out[:, 0, 0, 0].tolist() == [2.0, 5.0]


def test_ddpm_ends_on_the_guided_prediction_too():
    """DDPM's last step (to the clean image) returns the posterior mean with ᾱ_prev = 1, i.e. x̂_0 (up to
    rounding of its coefficients, 1 and 0 computed as ratios of ᾱ): 10 + 3·(label − 10)."""
    out = _sample(LabelIsX0(), 3.0, sampler="ddpm")
    want = torch.tensor([-14.0, -5.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    torch.testing.assert_close(out, want, atol=1e-4, rtol=0)


def test_guidance_applies_per_row_across_batches():
    """batch_size 1 splits the rows: each still gets its own condition and its own null row."""
    model = LabelIsX0()
    out = _sample(model, 3.0, batch_size=1)
    assert out[:, 0, 0, 0].tolist() == [-14.0, -5.0]
    assert model.calls == [[2, NULL]] * 4 + [[5, NULL]] * 4


def test_generate_guides_against_the_models_null_condition():
    """`generate` (the entry point of `qkv sample` and `qkv eval`) asks the model for its null condition:
    with the stub scaled by 1/20 (so the pixel clamp leaves it alone), w = 0 gives the null prediction
    0.5 for every row, w = 1 the label's own (0.1, 0.25), w = 2 gives 0.5 + 2·(label/20 − 0.5)."""
    from qkv.diffusion.generate import generate

    cond = {"labels": LABELS}
    for w, want in ((0.0, [0.5, 0.5]), (1.0, [0.1, 0.25]), (2.0, [-0.3, 0.0])):
        out = generate(LabelIsX0(scale=1 / 20), CFG, cond, 2, sampler="ddim", steps=3, guidance=w)
        assert out.shape == (2, 1, 2, 2)
        torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor(want), atol=1e-6, rtol=0)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_on_step_sees_the_reverse_process_from_noise_to_the_sample(sampler):
    """on_step(i, t, x): first (-1, T, x_T), then after every step the timestep x is now at, ending at -1 with
    the very tensor `sample` returns; the callback changes nothing."""
    seen = []
    out = _sample(LabelIsX0(), 3.0, sampler=sampler, on_step=lambda i, t, x: seen.append((i, t, x.clone())))
    plain = _sample(LabelIsX0(), 3.0, sampler=sampler)
    assert torch.equal(out, plain)
    assert [i for i, _, _ in seen] == list(range(-1, 4))
    ts = [t for _, t, _ in seen]
    assert ts[0] == CFG.n_timesteps and ts[-1] == -1 and ts[1:-1] == sorted(ts[1:-1], reverse=True)
    assert torch.equal(seen[-1][2], out) and not torch.equal(seen[0][2], out)
