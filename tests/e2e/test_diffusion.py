"""Diffusion end to end through the real CLI, in-process (`qkv.cli.main.main`), on one thread.

- a seeded tiny digits run (the shipped preset shrunk) reaches a measured sample accuracy in `qkv eval`, and
  `qkv eval` prints the figures it computed (text and --json agree);
- `qkv sample` writes a PNG of the requested grid size, the same seed gives the same bytes;
- `qkv sample`/`qkv eval` options reach the sampler: --prompt, --no-ema, --eta, --spacing, --guidance give
  exactly the images of the Python API with the same settings, and each changes them;
- save -> load -> identical samples with the same seed (EMA weights and raw weights);
- exact resume of a diffusion run (weights, EMA and data position), of a run that did change its weights;
- latent ("stable") mode: an autoencoder is trained first, the DiT runs on its latents, samples decode to
  pixels, and a resume reuses the autoencoder;
- `qkv noise` draws the forward process of a dataset (digits, shapes, a folder), with a chosen T or the
  schedule and data of a run;
- bad input: label outside the classes, prompt on a class model and label on a text model, steps <= 0,
  empty image folder, caption characters the tokenizer lacks: one line, exit 2.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import preset, qkv
from qkv.cli.main import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DIGITS = preset("digits-dit")
SHAPES = preset("shapes-text-dit")

COMMON = ["--train.threads", "1", "--train.progress", "false", "--train.max_minutes", "none",
          "--train.schedule_by", "steps", "--train.compile", "false", "--no-sample"]

# The learning run: the digits-dit preset shrunk to 0.25M parameters and 1,200 steps of batch 64.
# Measured on torch 2.13 CPU, Intel Xeon (AMX), 1 thread, fp32 (30-40 s of training, ~6 s of eval):
#   qkv train --preset digits-dit --out RUN <COMMON> <LEARN_ARGS> [--train.seed S]
#   qkv eval RUN --n 200 --steps 20 --guidance 2
#   -> sample accuracy 98.0% (FD 35.54, real vs real 15.99) with the preset's seed 1337, the one the test uses;
#      99.5% (FD 44.55) with --train.seed 1 and 99.0% (FD 41.25) with --train.seed 2. Judge held-out accuracy
#      97.8% (the judge does not depend on the train seed). (2026-12-02, after t/noise/condition dropout moved
#      into the batch source; before it: 99.0%, 99.5%, 98.5%.)
#   (700 steps gave 78.0%; an untrained model scores ~10%.) The test asks for > 90%: the worst of three seeds
#   is 8 points above it. Not measured on AMD (no such machine was available).
LEARN_ARGS = ["--model.d_model", "64", "--model.n_layers", "3", "--train.batch_size", "64",
              "--train.max_steps", "1200", "--train.warmup_steps", "50", "--train.eval_interval", "1200",
              "--train.log_interval", "100", "--sample.eval_samples", "0"]
SAMPLE_ACCURACY_THRESHOLD = 0.90

# A tiny run for the sampling, resume and bad-input tests (a few seconds).
TINY = ["--model.d_model", "32", "--model.n_layers", "1", "--model.n_heads", "2", "--train.batch_size", "16",
        "--train.max_steps", "6", "--train.warmup_steps", "2", "--train.eval_interval", "3",
        "--train.log_interval", "1", "--sample.eval_samples", "0"]
TINY_TEXT = TINY + ["--data.shapes_n", "200", "--data.tokenizer", "char", "--model.text_d_model", "16",
                    "--model.text_n_layers", "1", "--model.text_n_heads", "2", "--model.patch_size", "8",
                    "--model.max_seq_len", "40"]


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("digits") / "run"
    assert main(["train", "--config", DIGITS, "--out", str(run), *COMMON, *TINY]) == 0
    return run


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("shapes") / "run"
    assert main(["train", "--config", SHAPES, "--out", str(run), *COMMON, *TINY_TEXT]) == 0
    return run


def test_presets_validate():
    from qkv.config import from_dict, load_toml
    from qkv.tasks.diffusion import DiffusionRunConfig

    for path in (DIGITS, SHAPES, preset("shapes-latent-dit")):
        cfg = from_dict(DiffusionRunConfig, load_toml(path))
        assert cfg.task == "diffusion" and cfg.train.max_minutes <= 10


def _spy_scores(monkeypatch) -> list[dict]:
    """Record every (images, wanted, figures) that `qkv eval` scores, leaving the scores themselves unchanged."""
    import qkv.evaluation.diffusion as evaluation

    real, seen = evaluation.score_samples, []

    def spy(judge, images, wanted):
        out = real(judge, images, wanted)
        seen.append({"images": images.clone(), "wanted": wanted.clone(), "scores": out})
        return out

    monkeypatch.setattr(evaluation, "score_samples", spy)
    return seen


def _reuse_judge(monkeypatch) -> None:
    """Train `qkv eval`'s judge once per test: it is seeded, so a second training in this process would give
    the same classifier bit for bit; reusing it only saves the seconds."""
    import qkv.evaluation.diffusion as evaluation

    real, cache = evaluation.train_judge, {}

    def once(train, val, **kw):
        key = (tuple(train.images.shape), tuple(kw.items()))
        if key not in cache:
            cache[key] = real(train, val, **kw)
        return cache[key]

    monkeypatch.setattr(evaluation, "train_judge", once)


def test_tiny_digits_run_learns_to_draw_the_asked_digit(tmp_path, capsys, monkeypatch):
    """1,200 steps teach the shrunk digits model to draw the digit it is asked for (judged by a CNN), and the
    line `qkv eval` prints carries the figures it computed."""
    run = tmp_path / "run"
    code, out, _ = qkv(capsys, "train", "--config", DIGITS, "--out", run, *COMMON, *LEARN_ARGS)
    assert code == 0 and "trained 1200 steps" in out
    scored = _spy_scores(monkeypatch)
    code, out, _ = qkv(capsys, "eval", run, "--n", 200, "--steps", 20, "--guidance", 2)
    assert code == 0, out
    m = re.search(r"ddim-20 +guidance 2 +sample accuracy +([\d.]+)% \| FD +([\d.]+) \(real vs real ([\d.]+)\) "
                  r"\| 200 images", out)
    assert m, out
    assert float(m.group(1)) / 100 > SAMPLE_ACCURACY_THRESHOLD, out  # measured 0.990 / 0.995 / 0.985 (LEARN_ARGS)
    assert len(scored) == 1 and scored[0]["images"].shape == (200, 1, 8, 8)
    assert scored[0]["wanted"][:, 0].tolist() == [i % 10 for i in range(200)]  # the classes, cycling
    got = scored[0]["scores"]  # what was computed, printed unchanged
    assert m.groups() == (f"{got['sample_accuracy']:.1%}"[:-1], f"{got['fd']:.2f}", f"{got['fd_real']:.2f}"), out
    judge = re.search(r"judge: a CNN trained on digits: 1,617 training / 180 held-out real images; "
                      r"held-out accuracy class ([\d.]+)%", out)
    assert judge and float(judge.group(1)) > 90, out  # measured 97.8 (same command)


def _in_process(run: Path, n: int, *, use_ema: bool = True, prompt: str | None = None, **settings):
    """The images `qkv sample`/`qkv eval` should produce for `run`, through the Python API: the run's [sample]
    defaults (seed 0, guidance 3, DDIM, eta 0, trailing spacing) with `settings` on top."""
    from qkv.diffusion.generate import generate
    from qkv.tasks import load_run

    run_ = load_run(run)
    s = {k: getattr(run_.config.sample, k) for k in ("sampler", "steps", "eta", "spacing", "guidance", "seed")}
    s.update(settings)
    cond, _ = run_.condition(n, prompt=prompt)
    return generate(run_.denoiser(use_ema), run_.config.diffusion, cond, n, autoencoder=run_.autoencoder, **s)


def test_eval_json_sweep(tiny_digits, capsys, monkeypatch):
    """The sweep runs the settings it names with the same seed, so its two "ddim-50, guidance 3" rows are
    identical and the guidance and step rows differ; the text output prints the figures of --json; --no-ema
    scores the raw weights."""
    scored = _spy_scores(monkeypatch)
    _reuse_judge(monkeypatch)
    code, out, _ = qkv(capsys, "eval", tiny_digits, "--n", 4, "--sweep", "--json")
    assert code == 0
    res = json.loads(out)
    rows = res["rows"]
    got = [(r["sampler"], r["steps"], r["guidance"]) for r in rows]
    assert got == [("ddim", 10, 3.0), ("ddim", 20, 3.0), ("ddim", 50, 3.0), ("ddpm", None, 3.0),
                   ("ddim", 50, 1.0), ("ddim", 50, 2.0), ("ddim", 50, 3.0), ("ddim", 50, 5.0)]
    assert [r["n_samples"] for r in rows] == [4] * 8

    def strip(r):
        return {k: v for k, v in r.items() if k != "seconds"}

    assert strip(rows[2]) == strip(rows[6])  # the same setting twice, same seed: the same figures
    assert torch.equal(scored[2]["images"], scored[6]["images"])
    for i, j in ((0, 2), (2, 3), (4, 7), (4, 5)):  # steps 10 vs 50, ddim vs ddpm, guidance 1 vs 5, 1 vs 2
        assert not torch.equal(scored[i]["images"], scored[j]["images"]), (rows[i], rows[j])
        assert rows[i]["fd"] != rows[j]["fd"], (rows[i], rows[j])
    assert torch.equal(scored[0]["images"], _in_process(tiny_digits, 4, steps=10))  # the run's guidance 3, seed 0
    assert res["ema"] is True and res["classifier"]["trained_on"] == 1617
    # the judge (the same as the learning test's: same data, seed and 400 steps) reads real held-out digits:
    # measured 0.978 on torch 2.13, Intel Xeon (AMX), 1 thread (the "judge:" line of `qkv eval RUN --n 200
    # --steps 20 --guidance 2` in the learning test, and `train_judge(*load_images(ImageDataConfig()), seed=0)`)
    assert res["classifier"]["val_accuracy"]["class"] > 0.9

    code, out, _ = qkv(capsys, "eval", tiny_digits, "--n", 4, "--steps", 10)  # = the sweep's first row
    assert code == 0, out
    r = rows[0]
    assert (f"ddim-10   guidance 3    sample accuracy {r['sample_accuracy']:6.1%} | FD {r['fd']:7.2f} "
            f"(real vs real {r['fd_real']:.2f}) | 4 images in ") in out, out

    code, out, _ = qkv(capsys, "eval", tiny_digits, "--n", 4, "--steps", 10, "--no-ema", "--json")
    assert code == 0 and json.loads(out)["ema"] is False
    raw = _in_process(tiny_digits, 4, use_ema=False, steps=10)
    assert torch.equal(scored[-1]["images"], raw) and not torch.equal(raw, scored[0]["images"])


def test_sample_writes_the_requested_grid(tiny_digits, tmp_path, capsys):
    out_png = tmp_path / "grid.png"
    code, _, err = qkv(capsys, "sample", tiny_digits, "--n", 12, "--nrow", 4, "--steps", 5, "--label", 7,
                        "--seed", 3, "--out", out_png)
    assert code == 0, err
    with Image.open(out_png) as im:
        assert im.size == (4 * 65 + 1, 3 * 65 + 1) and im.mode == "L"  # 4 × 3 cells of 8×8 enlarged 8×, 1-px gaps
    assert "12 images" in err and "label 7" in err
    again = tmp_path / "again.png"
    assert qkv(capsys, "sample", tiny_digits, "--n", 12, "--nrow", 4, "--steps", 5, "--label", 7, "--seed", 3,
                "--out", again)[0] == 0
    assert again.read_bytes() == out_png.read_bytes()
    other = tmp_path / "other.png"
    assert qkv(capsys, "sample", tiny_digits, "--n", 12, "--nrow", 4, "--steps", 5, "--label", 7, "--seed", 4,
                "--out", other)[0] == 0
    assert other.read_bytes() != out_png.read_bytes()
    code, _, err = qkv(capsys, "sample", tiny_digits, "--n", 3, "--sampler", "ddpm", "--out", tmp_path / "p.png")
    assert code == 0 and "ddpm 1000 steps" in err
    with Image.open(tmp_path / "p.png") as im:
        assert im.size == (2 * 65 + 1, 2 * 65 + 1)  # default nrow = ceil(√3) = 2


def _grid_bytes(images: torch.Tensor, path: Path) -> bytes:
    from qkv.data.images import save_grid

    save_grid(images, path)
    return path.read_bytes()


def test_sample_options_reach_the_sampler(tiny_digits, tmp_path, capsys):
    """--no-ema, --eta, --spacing and --guidance each give exactly the PNG of `generate` with that setting
    (raw weights for --no-ema), and each changes the PNG of the defaults (EMA, eta 0, trailing, guidance 3)."""
    base = ["sample", tiny_digits, "--n", 4, "--steps", 5, "--seed", 3]
    variants = {"default": ([], {}), "no-ema": (["--no-ema"], {"use_ema": False}),
                "eta": (["--eta", 1], {"eta": 1.0}), "linspace": (["--spacing", "linspace"], {"spacing": "linspace"}),
                "guidance": (["--guidance", 1], {"guidance": 1.0})}
    grids = {}
    for name, (flags, settings) in variants.items():
        png = tmp_path / f"{name}.png"
        code, _, err = qkv(capsys, *base, *flags, "--out", png)
        assert code == 0, err
        grids[name] = png.read_bytes()
        want = _in_process(tiny_digits, 4, steps=5, seed=3, **settings)
        assert grids[name] == _grid_bytes(want, tmp_path / f"{name}-api.png"), name
    for name in ("no-ema", "eta", "linspace", "guidance"):
        assert grids[name] != grids["default"], f"{name} did not change the samples"


def test_text_run_samples_a_prompt(tiny_shapes, tmp_path, capsys):
    """`qkv sample --prompt` draws what `generate` draws for that prompt; another prompt gives other images."""
    blue, red = "a blue square at the bottom right", "a red circle at the top left"
    out_png = tmp_path / "blue.png"
    code, _, err = qkv(capsys, "sample", tiny_shapes, "--n", 2, "--steps", 3, "--out", out_png, "--prompt", blue)
    assert code == 0, err
    assert f"prompt {blue!r}" in err
    with Image.open(out_png) as im:
        assert im.mode == "RGB" and im.size == (2 * 65 + 1, 65 + 1)  # 32×32 enlarged 2×
    a = _in_process(tiny_shapes, 2, prompt=blue, steps=3)
    assert out_png.read_bytes() == _grid_bytes(a, tmp_path / "blue-api.png")
    # floats, not PNG bytes: a 6-step model's images may differ by less than one 1/255 step
    assert not torch.equal(a, _in_process(tiny_shapes, 2, prompt=red, steps=3)), "the prompt must change the images"
    code, _, err = qkv(capsys, "sample", tiny_shapes, "--n", 1, "--steps", 2, "--out", out_png,
                        "--prompt", "a purple square at the bottom right")
    assert code == 0 and "never seen in training" in err and "purple" in err


def test_save_load_gives_identical_samples(tmp_path):
    from qkv.diffusion.ddpm import DiffusionConfig
    from qkv.diffusion.generate import generate
    from qkv.models.dit import DiT, DiTConfig
    from qkv.models.io import save_run
    from qkv.tasks import load_run

    torch.manual_seed(0)
    model = DiT(DiTConfig(image_size=8, in_channels=1, d_model=32, n_layers=2, n_heads=2, freq_dim=32))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # non-zero adaLN / final layer, so the samples depend on all weights
    model.eval()
    save_run(tmp_path, model)
    run_ = load_run(tmp_path)
    loaded = run_.model
    assert run_.task == "diffusion" and run_.saved["model_type"] == "dit"
    dcfg = DiffusionConfig(prediction="v")
    cond = {"labels": torch.arange(6)}
    for sampler, steps in (("ddim", 10), ("ddpm", 30)):
        kw = dict(sampler=sampler, steps=steps, guidance=2.0, seed=11)
        a = generate(model, dcfg, cond, 6, **kw)
        b = generate(loaded, dcfg, cond, 6, **kw)
        assert torch.equal(a, b)
        assert not torch.equal(a, generate(loaded, dcfg, cond, 6, **{**kw, "seed": 12}))
    # batching changes nothing about which image a seed gives... only with the same batch size
    c = generate(loaded, dcfg, cond, 6, sampler="ddim", steps=10, guidance=2.0, seed=11, batch_size=6)
    assert torch.equal(c, generate(model, dcfg, cond, 6, sampler="ddim", steps=10, guidance=2.0, seed=11))


def test_resume_equals_continuous_run(tmp_path, capsys):
    """3 steps + --resume to 6 give the weights and EMA of 6 steps straight, and those differ from step 3's."""
    args = ["--config", DIGITS, *COMMON, *TINY, "--train.max_steps", "6"]
    full = tmp_path / "full"
    assert main(["train", "--out", str(full), *args]) == 0
    part = tmp_path / "part"
    assert main(["train", "--out", str(part), *args, "--train.max_steps", "3"]) == 0
    from safetensors.torch import load_file

    at_3 = {name: load_file(str(part / name)) for name in ("model.safetensors", "ema.safetensors")}
    assert main(["train", "--resume", str(part), "--train.max_steps", "6", "--no-sample"]) == 0

    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(full / name)), load_file(str(part / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs after resume"
        # ... and steps 4-6 did change them: equal runs that both stood still would prove nothing
        # (the EMA's update counter, "_ema_updates", would differ even if every average stood still)
        changed = [k for k in b if k != "_ema_updates" and not torch.equal(b[k], at_3[name][k])]
        assert changed, f"{name} unchanged by steps 4-6"


def test_latent_mode_diffuses_autoencoder_latents_and_decodes_samples(tmp_path, capsys, monkeypatch):
    """Latent mode end to end: the autoencoder trains first, the DiT is sized to its latent grid, `qkv sample`
    and `qkv eval` decode the sampled latents with the run's autoencoder (exactly the images of `generate`
    with it), and --resume reuses a finished autoencoder but refuses an unfinished one."""
    run = tmp_path / "run"
    latent = ["--latent.enabled", "true", "--diffusion.clip_sample", "false", "--latent.steps", "20",
              "--latent.width", "8", "--latent.batch_size", "16", "--model.patch_size", "2"]
    code, out, err = qkv(capsys, "train", "--config", SHAPES, "--out", run, *COMMON, *TINY_TEXT, *latent)
    assert code == 0, err
    assert "latent mode: training the autoencoder" in err and "32×32×3 -> 8×8×4" in err
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["model"]["image_size"], cfg["model"]["in_channels"]) == (8, 4)  # the DiT sees the latent grid
    assert cfg["latent"]["enabled"] is True and cfg["data_meta"]["image_shape"] == [3, 32, 32]
    ae_cfg = json.loads((run / "autoencoder" / "config.json").read_text())
    assert ae_cfg["model_type"] == "autoencoder" and ae_cfg["latent_stats"] is True
    png = tmp_path / "red.png"
    code, _, err = qkv(capsys, "sample", run, "--n", 2, "--steps", 3, "--prompt", "a red circle at the top left",
                        "--out", png)
    assert code == 0, err
    with Image.open(png) as im:
        assert im.mode == "RGB" and im.size == (2 * 65 + 1, 65 + 1)  # decoded to 32×32 pixels, enlarged 2×
    assert png.read_bytes() == _grid_bytes(_in_process(run, 2, prompt="a red circle at the top left", steps=3),
                                           tmp_path / "red-api.png")
    scored = _spy_scores(monkeypatch)
    code, out, _ = qkv(capsys, "eval", run, "--n", 4, "--steps", 3, "--json")
    assert code == 0, out
    row = json.loads(out)["rows"][0]
    assert (row["sampler"], row["steps"], row["n_samples"]) == ("ddim", 3, 4)
    assert set(json.loads(out)["classifier"]["val_accuracy"]) == {"shape", "colour", "position"}
    # the judge read decoded pixels (latents are 4×8×8), the run's own images for the run's prompts, cycling
    want = _in_process(run, 4, steps=3)
    assert want.shape == (4, 3, 32, 32) and torch.equal(scored[0]["images"], want)
    from qkv.data.images import parse_caption

    prompts = cfg["data_meta"]["prompts"]
    assert scored[0]["wanted"].tolist() == [list(parse_caption(prompts[i % len(prompts)])) for i in range(4)]
    assert row["prompt_adherence"] == scored[0]["scores"]["prompt_adherence"]
    ae_bytes = (run / "autoencoder" / "model.safetensors").read_bytes()
    code, _, err = qkv(capsys, "train", "--resume", run, "--train.max_steps", "8", "--no-sample")
    assert code == 0 and "training the autoencoder" not in err  # the finished autoencoder is reused
    assert (run / "autoencoder" / "model.safetensors").read_bytes() == ae_bytes
    (run / "autoencoder" / "model.safetensors").unlink()  # as if the autoencoder phase had been interrupted
    code, _, err = qkv(capsys, "train", "--resume", run, "--train.max_steps", "9", "--no-sample")
    assert code == 2 and "the autoencoder phase did not finish" in err


def _abar_line(out: str) -> list[float]:
    return [float(v) for v in re.search(r"alpha_bar +1 +(.*)", out).group(1).split()]


def _cells(png: Path, cell: int) -> np.ndarray:
    """The grid's cells as (rows, cols, cell, cell[, C]) uint8 arrays (1-px gaps dropped)."""
    with Image.open(png) as im:
        a = np.asarray(im)
    rows, cols = (a.shape[0] - 1) // (cell + 1), (a.shape[1] - 1) // (cell + 1)
    return np.stack([np.stack([a[1 + r * (cell + 1): 1 + r * (cell + 1) + cell, 1 + c * (cell + 1):
                                 1 + c * (cell + 1) + cell] for c in range(cols)]) for r in range(rows)])


def test_noise_command(tmp_path, capsys):
    """`qkv noise` draws real images (first column) and their noised versions at the asked t, and prints ᾱ_t."""
    from qkv.data.images import ImageDataConfig, load_images, to_uint8

    out_png = tmp_path / "forward.png"
    code, out, _ = qkv(capsys, "noise", "--data", "digits", "--n", 3, "--t", "0,500,999", "--schedule", "cosine",
                        "--out", out_png)
    assert code == 0
    with Image.open(out_png) as im:
        assert im.size == (4 * 65 + 1, 3 * 65 + 1)  # x_0 + 3 timesteps, 3 images
    abar = _abar_line(out)
    assert abar[0] > 0.99 and 0.3 < abar[1] < 0.7 and abar[2] < 1e-4
    cells = _cells(out_png, 64)[:, :, ::8, ::8]  # back to 8×8 pixels
    train, _ = load_images(ImageDataConfig(source="digits"))
    real = {to_uint8(x[None])[0, ..., 0].tobytes() for x in train.images}
    assert all(cells[r, 0].tobytes() in real for r in range(3)), "the x_0 column holds training digits"
    assert not any(cells[r, 3].tobytes() in real for r in range(3)), "t = 999 is noise"
    assert qkv(capsys, "noise", "--t", "1000", "--out", out_png)[0] == 2


def test_noise_timesteps_shapes_folder_and_run(tiny_digits, tiny_shapes, tmp_path, capsys):
    """--timesteps sets T (ᾱ of that schedule, t = T refused); --data shapes and a folder draw those images;
    --run takes a run's schedule (cosine, not the default linear) and its data, unless --data says otherwise."""
    from qkv.diffusion.ddpm import DDPM, DiffusionConfig

    png = tmp_path / "f.png"

    def abar_of(**kw):
        ac = DDPM(DiffusionConfig(**kw)).alphas_cumprod
        return lambda ts: [round(ac[t].item(), 4) for t in ts]

    code, out, _ = qkv(capsys, "noise", "--timesteps", 50, "--n", 2, "--t", "0,25,49", "--out", png)
    assert code == 0 and "linear schedule, T = 50" in out
    assert _abar_line(out) == abar_of(n_timesteps=50)([0, 25, 49])
    assert _abar_line(out) != abar_of(n_timesteps=1000)([0, 25, 49])
    code, _, err = qkv(capsys, "noise", "--timesteps", 50, "--t", "50", "--out", png)
    assert code == 2 and "timesteps must be in [0, 49]" in err

    code, out, _ = qkv(capsys, "noise", "--data", "shapes", "--n", 2, "--t", "10", "--out", png)
    assert code == 0
    with Image.open(png) as im:
        assert im.mode == "RGB" and im.size == (2 * 65 + 1, 2 * 65 + 1)  # 32×32 shapes enlarged 2×, x_0 + 1 column

    folder = tmp_path / "imgs"
    for cls, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 12), colour).save(folder / cls / f"{i}.png")
    code, out, _ = qkv(capsys, "noise", "--data", folder, "--n", 4, "--t", "999", "--out", png)
    assert code == 0, out
    cells = _cells(png, 64)  # folders load at 32×32: enlarged 2×
    assert cells.shape[:2] == (4, 2)
    x0 = {tuple(int(v) for v in cells[r, 0].reshape(-1, 3).min(0)) + tuple(int(v) for v in
          cells[r, 0].reshape(-1, 3).max(0)) for r in range(4)}
    assert x0 == {(255, 0, 0, 255, 0, 0), (0, 0, 255, 0, 0, 255)}, x0  # solid red and blue: the folder's images
    assert all(cells[r, 1].std() > 50 for r in range(4))  # t = 999: noise

    cosine = abar_of(beta_schedule="cosine")
    code, out, _ = qkv(capsys, "noise", "--run", tiny_digits, "--n", 2, "--t", "100,500", "--out", png)
    assert code == 0 and "cosine schedule, T = 1000" in out and _abar_line(out) == cosine([100, 500])
    assert _abar_line(out) != abar_of(beta_schedule="linear")([100, 500])
    with Image.open(png) as im:
        assert im.mode == "L" and im.size == (3 * 65 + 1, 2 * 65 + 1)  # the run's digits
    code, out, _ = qkv(capsys, "noise", "--run", tiny_shapes, "--n", 2, "--t", "100", "--out", png)
    assert code == 0 and _abar_line(out) == cosine([100])
    with Image.open(png) as im:
        assert im.mode == "RGB" and im.size == (2 * 65 + 1, 2 * 65 + 1)  # the run's shapes
    code, out, _ = qkv(capsys, "noise", "--run", tiny_shapes, "--data", "digits", "--n", 2, "--t", "100", "--out", png)
    with Image.open(png) as im:
        assert code == 0 and im.mode == "L"  # --data overrides the run's data, the schedule stays the run's
    assert _abar_line(out) == cosine([100])


@pytest.fixture(scope="module")
def short_schedule_digits(tmp_path_factory) -> Path:
    """A 2-step digits run with T = 20 timesteps and no fixed sample.steps (each sampler runs its default)."""
    run = tmp_path_factory.mktemp("t20") / "run"
    assert main(["train", "--config", DIGITS, "--out", str(run), *COMMON, *TINY, "--train.max_steps", "2",
                 "--diffusion.n_timesteps", "20", "--sample.steps", "none"]) == 0
    return run


def test_sample_on_a_short_schedule_reports_the_steps_it_ran(short_schedule_digits, tmp_path, capsys):
    """With T = 20 the DDPM default is its 20 timesteps, and the message says so."""
    code, _, err = qkv(capsys, "sample", short_schedule_digits, "--n", 2, "--sampler", "ddpm",
                        "--out", tmp_path / "a.png")
    assert code == 0 and "ddpm 20 steps" in err, err


def test_sample_reports_the_ddim_default_of_a_short_schedule(short_schedule_digits, tmp_path, capsys):
    """DDIM's default is min(50, T) steps (`sampling.sample`): 20 here, so the message must say 20, not 50."""
    code, _, err = qkv(capsys, "sample", short_schedule_digits, "--n", 2, "--out", tmp_path / "a.png")
    assert code == 0 and "ddim 20 steps" in err, err


def test_eval_labels_the_ddpm_row_with_the_runs_timesteps(short_schedule_digits, capsys, monkeypatch):
    """`qkv eval --sampler ddpm` on a T = 20 run samples 20 steps, and its row must say ddpm-20."""
    import qkv.evaluation.diffusion as evaluation

    real = evaluation.train_judge
    monkeypatch.setattr(evaluation, "train_judge", lambda train, val, **kw: real(train, val, **{**kw, "steps": 2}))
    code, out, _ = qkv(capsys, "eval", short_schedule_digits, "--n", 2, "--sampler", "ddpm")
    assert code == 0 and re.search(r"^ddpm-20 +guidance 3 ", out, re.M), out


def test_bad_input_is_one_line_and_exit_2(tiny_digits, tiny_shapes, tmp_path, capsys):
    out = tmp_path / "x.png"
    cases = [
        (["sample", tiny_digits, "--label", "10", "--out", out], "label 10 is outside the trained classes 0 … 9"),
        (["sample", tiny_digits, "--label", "-1", "--out", out], "outside the trained classes"),
        (["sample", tiny_digits, "--prompt", "a seven", "--out", out], "class-conditional"),
        (["sample", tiny_shapes, "--label", "3", "--out", out], "text-conditional"),
        (["sample", tiny_shapes, "--prompt", "a blue square ★", "--out", out], "'★' (U+2605) at position 14 is not in"),
        (["sample", tiny_shapes, "--prompt", "a " * 30, "--out", out], "the model takes at most 40"),
        (["sample", tiny_shapes, "--prompt", "  ", "--out", out], "prompt is empty"),
        (["sample", tiny_digits, "--steps", "0", "--out", out], "--steps must be positive"),
        (["sample", tiny_digits, "--steps", "-5", "--out", out], "--steps must be positive"),
        (["sample", tiny_digits, "--steps", "2000", "--out", out], "more than the 1000 training timesteps"),
        (["sample", tiny_digits, "--n", "0", "--out", out], "--n must be positive"),
        (["sample", tiny_digits, "--guidance", "-1", "--out", out], "guidance must be a number >= 0"),
        (["sample", tmp_path / "nope", "--out", out], "run directory not found"),
        (["eval", tiny_digits, "--steps", "0"], "steps must be positive"),
        (["train", "--config", DIGITS, "--out", tmp_path / "r1", "--data", tmp_path / "empty", *COMMON, *TINY],
         "no images found"),
        (["train", "--config", DIGITS, "--out", tmp_path / "r2", "--model.conditioning", "text", *COMMON, *TINY],
         "needs captions"),
        (["train", "--config", DIGITS, "--out", tmp_path / "r3", "--model.patch_size", "3", *COMMON, *TINY],
         "not divisible by model.patch_size"),
        (["train", "--config", DIGITS, "--out", tmp_path / "r4", "--latent.enabled", "true", "--latent.downsample",
          "4", "--diffusion.clip_sample", "false", *COMMON, *TINY],
         "image size 8 is not divisible by 2^latent.downsample = 16"),
        (["train", "--config", DIGITS, "--out", tmp_path / "r5", "--latent.enabled", "true", *COMMON, *TINY],
         "latent mode needs diffusion.clip_sample = false"),
    ]
    (tmp_path / "empty").mkdir()
    for argv, message in cases:
        code, _, err = qkv(capsys, *argv)
        assert code == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (argv, err)
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [(["--batch-size", "0"], "--batch-size must be positive"),
                                            (["--guidance", "nan"], "guidance must be")])
def test_bad_sample_options_are_one_line_and_exit_2(tiny_digits, tmp_path, capsys, flags, message):
    """Like every other bad option: exit 2, one line naming the option, no file written."""
    out = tmp_path / "x.png"
    code, _, err = qkv(capsys, "sample", tiny_digits, "--n", 2, "--steps", 2, *flags, "--out", out)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
