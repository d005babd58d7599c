"""`qkv explain diffusion`: the forward process and the reverse step are the run's own DDPM maths, recomputed."""

import copy
import json
from dataclasses import replace

import pytest

from qkv.cli.main import main
from qkv.data.captions import train_caption_tokenizer
from qkv.diffusion.ddpm import DDPM
from qkv.errors import QKVError
from qkv.explain import explain
from qkv.models.autoencoder import Autoencoder, AutoencoderConfig
from qkv.models.dit import DiT
from qkv.tasks.diffusion import DiffusionRun


def _variant(digits, model_changes: dict, tokenizer=None, autoencoder=None, diffusion_changes=None) -> DiffusionRun:
    """The tiny digits run with another (untrained) denoiser: latent or text-conditioned, built in memory."""
    config = copy.deepcopy(digits.config)
    config.diffusion = replace(config.diffusion, **(diffusion_changes or {}))
    model = DiT(replace(digits.model.config, **model_changes)).eval()
    config.model = model.config
    return DiffusionRun(digits.path, config, digits.saved, model, model, tokenizer, autoencoder)


def test_forward_process_reverse_step_and_chain(runs):
    run = runs["digits"]
    e = explain("diffusion", run, prompt="3", seed=1)
    assert len(e.checks) == 5 and all(c.ok for c in e.checks), e.format_text()
    T = run.config.diffusion.n_timesteps
    ts = e.data["timesteps"]
    assert len(ts) == 8 and ts[0] == 0 and ts[-1] == T - 1
    abar = DDPM(run.config.diffusion).alphas_cumprod
    assert e.data["sqrt_abar"] == pytest.approx([abar[t].sqrt().item() for t in ts])
    assert e.data["snr"] == pytest.approx([(abar[t] / (1 - abar[t])).item() for t in ts])
    assert e.data["snr"] == sorted(e.data["snr"], reverse=True)  # signal falls as t grows
    assert e.data["label"] == 3 and e.data["reverse_t"] == T // 2
    strip = e.data["reverse_strip_t"]
    assert strip[0] == T and strip[-1] == -1 and len(strip) == 8


@pytest.mark.parametrize("method", ["add_noise", "step"])
def test_a_sampler_that_differs_is_caught(runs, monkeypatch, method):
    real = getattr(DDPM, method)
    if method == "add_noise":
        monkeypatch.setattr(DDPM, method, lambda self, x0, eps, t: real(self, x0, eps, t) + 1e-3)
    else:
        def step(self, *args, **kwargs):
            out = real(self, *args, **kwargs)
            return replace(out, prev_sample=out.prev_sample + 1e-3)
        monkeypatch.setattr(DDPM, method, step)
    e = explain("diffusion", runs["digits"], prompt="3")
    wrong = [c.what for c in e.checks if not c.ok]
    if method == "add_noise":
        assert any("DDPM.add_noise" in w for w in wrong)
    else:
        assert sum("DDPM.step" in w for w in wrong) == 2


@pytest.mark.parametrize("label", [3, 8])
def test_the_noised_image_is_of_the_asked_class(runs, label):
    """The reverse step denoises under the asked label; its x̂_0 is compared with an image of that class."""
    from qkv.data.images import load_images

    e = explain("diffusion", runs["digits"], prompt=str(label), seed=2)
    index = int(next(b for b in e.blocks if b.kind == "tensor" and b.name == "x_0").note.split("#")[1].split()[0])
    assert int(load_images(runs["digits"].config.data)[0].labels[index]) == label


def test_latent_mode_shows_the_latent_and_its_decoding(runs):
    digits = runs["digits"]
    ae = Autoencoder(AutoencoderConfig(image_size=8, in_channels=1, width=8, downsample=1, latent_channels=4)).eval()
    run = _variant(digits, {"image_size": 4, "in_channels": 4}, autoencoder=ae,
                   diffusion_changes={"clip_sample": False})
    e = explain("diffusion", run, prompt="1")
    assert all(c.ok for c in e.checks), e.format_text()
    names = [b.name for b in e.blocks if b.kind == "tensor"]
    assert "z_0 = autoencoder.encode(x_0)" in names and "autoencoder.decode(z_0)" in names
    z0 = next(b.value for b in e.blocks if b.kind == "tensor" and b.name.startswith("z_0"))
    assert tuple(z0.shape) == (1, 4, 4, 4)
    assert "latent mode" in e.format_text()


def test_a_text_conditioned_run_reads_the_prompt(runs):
    tok = train_caption_tokenizer(["a red circle at the top left"], "char", 300)
    run = _variant(runs["digits"], {"conditioning": "text", "vocab_size": tok.vocab_size, "pad_id": tok.pad_id,
                                    "bos_id": tok.bos_id, "text_d_model": 16, "text_n_layers": 1,
                                    "text_n_heads": 2}, tokenizer=tok)
    e = explain("diffusion", run, prompt="a red circle")
    assert e.data["prompt"] == "a red circle" and e.data["label"] is None
    assert all(c.ok for c in e.checks)
    with pytest.raises(QKVError) as err:
        explain("diffusion", run, prompt="a red €")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, prompt, message", [
    ("digits", "seven", "class label, an integer"),
    ("digits", "12", "outside the trained classes"),
    ("translate", None, "needs a run that makes images"),
])
def test_errors_are_one_line(runs, name, prompt, message):
    with pytest.raises(QKVError) as err:
        explain("diffusion", runs[name], prompt=prompt)
    assert "\n" not in str(err.value) and message in str(err.value)


def test_json_and_text_agree_and_png(tiny_runs, capsys, tmp_path):
    args = ["explain", "diffusion", str(tiny_runs["digits"]), "--prompt", "5", "--seed", "2"]
    assert main([*args, "--json", "--png", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out
    table = next(b for b in data["blocks"] if b["kind"] == "table")
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "SNR ᾱ/(1 − ᾱ)" in line) + 1
    for row, line in zip(table["rows"], lines[start : start + len(table["rows"])], strict=True):
        t, abar, sqrt_abar, _, snr = (float(w) for w in line.split())
        # JSON rounds to 6 decimals: ᾱ at t = T − 1 (≈ 2e-7 on the cosine schedule) reads 0 there
        assert t == row[0] and [abar, sqrt_abar, snr] == pytest.approx([row[1], row[2], row[4]], rel=1e-3, abs=1e-6)
    assert data["data"]["timesteps"] == [r[0] for r in table["rows"]]
    names = ["forward", "reverse-step", "reverse", "schedule"]
    assert data["pngs"] == [str(tmp_path / f"diffusion-{n}.png") for n in names]
    assert all((tmp_path / f"diffusion-{n}.png").stat().st_size > 0 for n in names)
    assert data["figures"][0]["data"]["sqrt_abar"] == pytest.approx(data["data"]["sqrt_abar"], abs=1e-6)
