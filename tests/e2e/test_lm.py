"""End-to-end language-model runs through the real CLI, in-process (`qkv.cli.main.main`), on tinyshakespeare.

Everything is tiny (2 layers, d_model 64, context 32–64, one CPU thread) so the file runs in about a
minute on 2 busy cores. Covered: exact resume, DDP parity (torchrun, 2 processes), a loss threshold,
train -> generate round trips, one-line errors for bad input, NaN handling and the metrics file.
"""

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import assert_picture, assert_user_error, metrics, preset, qkv, run_or_fail
from qkv.cli.main import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

# The base config of every run here. decay_steps is explicit: by default the decay follows max_steps,
# so a 20-step session resumed to 40 would not share the 40-step run's learning-rate schedule.
TINY_TOML = """\
task = "lm"

[data]
source = "tinyshakespeare"
tokenizer = "char"
max_chars = 60000

[model]
max_seq_len = 32
d_model = 64
n_layers = 2
n_heads = 4
bias = false

[train]
max_steps = 40
batch_size = 8
lr = 3e-3
min_lr = 3e-4
warmup_steps = 5
decay_steps = 40
eval_interval = 20
eval_iters = 2
log_interval = 1
seed = 1337
device = "cpu"
threads = 1        # one thread: with two, OpenMP spin-waits make every step ~100x slower on busy cores
progress = false

[sample]
max_new_tokens = 20
"""

# The learning run (fixture `learned_run`), also the model the generate tests decode with.
LEARN_ARGS = ["--data.max_chars", "200000", "--model.max_seq_len", "64", "--train.batch_size", "16",
              "--train.max_steps", "600", "--train.decay_steps", "600", "--train.eval_interval", "600",
              "--train.log_interval", "50", "--train.lr", "4e-3", "--train.min_lr", "4e-4",
              "--train.warmup_steps", "20"]


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_toml(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(TINY_TOML, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def learned_run(tiny_toml, shared_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("learned") / "run"
    env = {"QKV_DATA_DIR": str(shared_data), "QKV_CACHE_DIR": str(run.parent / "cache")}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        assert main(["train", "--config", tiny_toml, "--out", str(run), "--no-sample", *LEARN_ARGS]) == 0
    return run


# ------------------------------------------------------------------------------------------------ helpers
def train(capsys, toml, out, *extra) -> tuple[str, str]:
    rc, stdout, stderr = qkv(capsys, "train", "--config", toml, "--out", out, "--no-sample", *extra)
    assert rc == 0, stderr
    return stdout, stderr


def train_losses(run: Path) -> dict[int, float]:
    """step -> logged training loss; fails if a step was logged twice."""
    records = [r for r in metrics(run) if "loss" in r]
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"duplicate training-loss steps in metrics.jsonl: {steps}"
    return {r["step"]: r["loss"] for r in records}


def eval_steps(run: Path) -> list[int]:
    return [r["step"] for r in metrics(run) if "val_loss" in r]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ 1. resume
def test_resume_reproduces_the_continuous_run_exactly(tmp_path, capsys, tiny_toml):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(capsys, tiny_toml, straight)  # 40 steps in one go
    train(capsys, tiny_toml, resumed, "--train.max_steps", "20")  # 20 steps, checkpoint at 20 ...
    assert json.loads((resumed / "trainer_state.json").read_text())["step"] == 20
    rc, _, err = qkv(capsys, "train", "--resume", resumed, "--train.max_steps", "40", "--no-sample")  # ... + 20
    assert rc == 0, err
    assert "at step 20" in err

    a, b = train_losses(straight), train_losses(resumed)
    assert sorted(a) == sorted(b) == list(range(1, 41))
    assert a[40] < a[1] - 0.5, "the run should have learned something, or equality proves little"
    worst = max(abs(a[s] - b[s]) for s in a)
    assert worst <= 1e-6, f"per-step losses differ by up to {worst:.3g} after resuming (RNG, data or optimizer state)"
    wa, wb = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"final weight {k} differs"


# ------------------------------------------------------------------------------------------------ 2. DDP
# ------------------------------------------------------------------------------------------------ 3. learning
def bigram_loss(run: Path, smoothing: float = 0.1) -> float:
    """Validation loss of the add-0.1 smoothed bigram model counted on the run's own training ids: the
    baseline a model must beat to be using more than the previous character."""
    import numpy as np

    from qkv.data.text import read_tokens

    V = json.loads((run / "data" / "meta.json").read_text())["vocab_size"]
    train_ids = read_tokens(run / "data" / "train.bin", V).astype(np.int64)
    val = read_tokens(run / "data" / "val.bin", V).astype(np.int64)
    counts = np.full((V, V), smoothing)
    np.add.at(counts, (train_ids[:-1], train_ids[1:]), 1.0)
    probs = counts / counts.sum(axis=1, keepdims=True)
    return float(-np.log(probs[val[:-1], val[1:]]).mean())


def test_char_model_learns_tinyshakespeare(learned_run):
    # Measured with torch 2.13.0+cpu, 1 thread, Intel Xeon (AMX; the run is fp32), tiny.toml = TINY_TOML:
    #   qkv train --config tiny.toml --out run --no-sample <LEARN_ARGS above> [--train.seed S]
    #   -> full-pass val_loss 2.2039 (seed 1337); seeds 1, 2, 3: 2.1760, 2.1854, 2.1856; add-0.1 bigram 2.4821.
    # (At 400 steps the run reached 2.358, only 0.12 below the bigram; 600 steps widen that to ~0.27.)
    # The model must beat the bigram model computed here from the run's own ids by 0.1 nats: the measured
    # values are 0.28-0.31 below it, so the margin is ~7× the spread over seeds (0.028).
    final = [r for r in metrics(learned_run) if "val_loss" in r]
    assert [r["step"] for r in final] == [600]
    first = train_losses(learned_run)[50]
    val_loss, bigram = final[0]["val_loss"], bigram_loss(learned_run)
    assert 2.4 < bigram < 2.6, f"the bigram baseline moved: {bigram:.4f} (measured 2.4821)"
    assert val_loss < bigram - 0.1, f"val loss {val_loss:.4f} after 600 steps; bigram {bigram:.4f} (measured 2.2039)"
    assert val_loss < first


# ------------------------------------------------------------------------------------------------ 4. generate
def test_train_then_generate_round_trip(learned_run, capsys):
    prompt, n = "ROMEO:", 40  # 6 + 40 tokens fit the 64-token context, so cache and no-cache must agree
    rc, out, err = qkv(capsys, "generate", learned_run, "--prompt", prompt, "--max-new-tokens", n,
                       "--temperature", 0)
    assert rc == 0, err
    assert out.startswith(prompt) and out.endswith("\n")
    text = out[len(prompt):-1]
    assert len(text) == n  # char tokenizer: one token, one character

    rc, out_nc, err = qkv(capsys, "generate", learned_run, "--prompt", prompt, "--max-new-tokens", n,
                          "--temperature", 0, "--no-cache")
    assert rc == 0, err
    assert out_nc == out, "greedy decoding with and without the KV cache must give the same text"

    rc, again, _ = qkv(capsys, "generate", learned_run, "--prompt", prompt, "--max-new-tokens", n,
                       "--temperature", 0, "--seed", 7)
    assert again == out, "greedy decoding must not depend on the seed"

    # --stop: the output ends right before the first occurrence of the stop string
    stop = text[10:12]
    rc, out_stop, err = qkv(capsys, "generate", learned_run, "--prompt", prompt, "--max-new-tokens", n,
                            "--temperature", 0, "--stop", stop)
    assert rc == 0, err
    assert out_stop == prompt + text[: text.find(stop)] + "\n"

    # past the context (64) the window slides and decoding goes on
    rc, long, err = qkv(capsys, "generate", learned_run, "--prompt", prompt, "--max-new-tokens", 150,
                        "--temperature", 0)
    assert rc == 0, err
    assert long.startswith(out[:-1]) and len(long) == len(prompt) + 150 + 1

    # the CLI decodes with a copy in the decode layout: it must give what the model as trained gives,
    # also after the window has slid (same weights, same windows: the same argmax)
    from qkv.generation.lm import generate_text
    from qkv.generation.sampling import TokenSampling
    from qkv.models.io import load_model
    from qkv.tokenizers import load_tokenizer

    model, _ = load_model(learned_run)
    tok = load_tokenizer(learned_run / "tokenizer.json")
    assert out == prompt + generate_text(model, tok, prompt, n, TokenSampling(0.0)) + "\n"
    assert long == prompt + generate_text(model, tok, prompt, 150, TokenSampling(0.0)) + "\n"


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_generate_with_int8_weights(learned_run, capsys):
    """--quantize int8 through the CLI: the text of the int8 model (in-process, same path), the right length."""
    from qkv.generation.inference import prepare_for_decoding
    from qkv.generation.lm import generate_text
    from qkv.generation.sampling import TokenSampling
    from qkv.models.io import load_model
    from qkv.tokenizers import load_tokenizer

    rc, out, err = qkv(capsys, "generate", learned_run, "--prompt", "ROMEO:", "--max-new-tokens", 100,
                       "--temperature", 0, "--quantize", "int8")
    assert rc == 0, err
    q = prepare_for_decoding(load_model(learned_run)[0], "int8")
    tok = load_tokenizer(learned_run / "tokenizer.json")
    assert out == "ROMEO:" + generate_text(q, tok, "ROMEO:", 100, TokenSampling(0.0)) + "\n"
    assert len(out) == len("ROMEO:") + 100 + 1


def test_top_p_near_zero_is_greedy(learned_run, capsys):
    """The nucleus of p = 1e-6 holds only the most likely token, so sampling at temperature 1 is greedy."""
    greedy = qkv(capsys, "generate", learned_run, "--prompt", "ROMEO:", "--max-new-tokens", 30, "--temperature", 0)
    nucleus = qkv(capsys, "generate", learned_run, "--prompt", "ROMEO:", "--max-new-tokens", 30, "--temperature",
                  1, "--top-p", "1e-6", "--seed", 3)
    assert nucleus[0] == 0 and nucleus[1] == greedy[1]
    sampled = qkv(capsys, "generate", learned_run, "--prompt", "ROMEO:", "--max-new-tokens", 30, "--temperature",
                  1, "--seed", 3)
    assert sampled[1] != greedy[1]  # at temperature 1 without the nucleus it does sample


def test_generate_rejects_a_character_outside_the_vocabulary(learned_run, capsys):
    rc, out, err = qkv(capsys, "generate", learned_run, "--prompt", "ROMEO: é", "--max-new-tokens", 5)
    assert_user_error(rc, err, "'é'", "qkv generate: error:")
    assert out == ""


# ------------------------------------------------------------------------------------------------ 5. bad input
@pytest.mark.parametrize(
    ("name", "content", "needles"),
    [
        ("empty.txt", b"", ["empty.txt", "empty"]),
        ("blank.txt", b" \n\t\n", ["blank.txt", "empty"]),
        ("binary.txt", b"abc\x00\x01\x02def", ["binary.txt", "NUL"]),
        ("latin1.txt", "First Citizen: café\n".encode("latin-1"), ["latin1.txt", "UTF-8", "0xe9", "offset 18"]),
    ],
)
def test_train_rejects_bad_data_files(tmp_path, capsys, tiny_toml, name, content, needles):
    (tmp_path / name).write_bytes(content)
    rc, _, err = qkv(capsys, "train", "--config", tiny_toml, "--out", tmp_path / "run", "--data", tmp_path / name)
    assert_user_error(rc, err, "qkv train: error:", *needles)
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--data", "no/such/file.txt"], ["no/such/file.txt", "tinyshakespeare"]),
        (["--data", "tinyshakespear"], ["'tinyshakespear'", "tinyshakespeare, pystdlib, multi30k"]),
        (["--train.nope", "1"], ["'train.nope'", "valid keys", "train.max_steps", "train.lr"]),
        (["--modle.n_layers", "2"], ["'modle'", "valid keys", "model"]),
        (["--model.n_layers", "0"], ["n_layers must be positive, got 0"]),
        (["--model.d_model", "-64"], ["d_model must be positive, got -64"]),
        (["--train.batch_size", "0"], ["batch_size must be positive, got 0"]),
        (["--train.batch_size", "6", "--train.grad_accum", "4"], ["divisible by grad_accum"]),
        (["--train.lr", "fast"], ["train.lr", "expected a number"]),
    ],
)
def test_train_rejects_bad_settings(tmp_path, capsys, tiny_toml, args, needles):
    rc, _, err = qkv(capsys, "train", "--config", tiny_toml, "--out", tmp_path / "run", *args)
    assert_user_error(rc, err, "qkv train: error:", *needles)


def test_resume_of_a_missing_run_dir(tmp_path, capsys):
    rc, _, err = qkv(capsys, "train", "--resume", tmp_path / "nothing-here")
    assert_user_error(rc, err, "nothing-here", "not found")


def test_resume_with_a_changed_setting_is_refused_and_changes_nothing(tmp_path, capsys, learned_run):
    run = shutil.copytree(learned_run, tmp_path / "run")
    before = {p.name: sha(p) for p in run.iterdir() if p.is_file()}
    rc, _, err = qkv(capsys, "train", "--resume", run, "--train.lr", "0.5")
    assert_user_error(rc, err, "train.lr", "0.5", "0.004")
    assert {p.name: sha(p) for p in run.iterdir() if p.is_file()} == before


def test_existing_run_dir_without_resume_is_refused_and_changes_nothing(tmp_path, capsys, tiny_toml, learned_run):
    run = shutil.copytree(learned_run, tmp_path / "run")
    before = {str(p.relative_to(run)): sha(p) for p in run.rglob("*") if p.is_file()}
    rc, _, err = qkv(capsys, "train", "--config", tiny_toml, "--out", run)
    assert_user_error(rc, err, str(run), "already holds a trained model; resume it")
    assert {str(p.relative_to(run)): sha(p) for p in run.rglob("*") if p.is_file()} == before


def test_generate_on_a_half_written_run(tmp_path, capsys, learned_run):
    run = tmp_path / "half"
    run.mkdir()
    shutil.copy(learned_run / "config.json", run)  # a crash before the weights were written
    shutil.copy(learned_run / "tokenizer.json", run)
    rc, out, err = qkv(capsys, "generate", run, "--prompt", "ROMEO:")
    assert_user_error(rc, err, "model.safetensors")
    assert out == ""


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_generate_on_a_damaged_weights_file(tmp_path, capsys, learned_run, damage):
    run = shutil.copytree(learned_run, tmp_path / "run")
    weights = run / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a safetensors file at all")
    rc, out, err = qkv(capsys, "generate", run, "--prompt", "ROMEO:")
    assert_user_error(rc, err, "model.safetensors")
    assert out == ""


# ------------------------------------------------------------------------------------------------ 6. NaN
def test_divergence_stops_with_the_last_good_checkpoint_kept(tmp_path, capsys, tiny_toml):
    # lr 1 with decoupled weight decay 101 multiplies every matrix by 1 - 1·101 = -100 per step: the loss
    # is finite for the first steps and NaN/inf a few steps later, on any machine.
    run = tmp_path / "run"
    rc, _, err = qkv(capsys, "train", "--config", tiny_toml, "--out", run, "--no-sample", "--train.lr", "1",
                     "--train.weight_decay", "101", "--train.schedule", "constant", "--train.warmup_steps", "0",
                     "--train.grad_clip", "0", "--train.eval_interval", "2")
    assert rc == 2
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]  # the evaluation log lines come first
    assert message.startswith("qkv train: error:"), err
    assert re.search(r"\b(nan|inf)\b", message, re.IGNORECASE), message
    kept = re.search(r"last good checkpoint \(step (\d+)\) is kept", message)
    assert kept, message
    step = int(kept.group(1))
    assert step >= 2  # the first checkpoint (step 2) happened before the divergence

    # the kept checkpoint is complete (its files agree on the step) and its weights give a finite loss
    from qkv.data.text import RandomWindows, read_tokens
    from qkv.models.io import load_model
    from qkv.training.checkpoint import load_trainer_state

    state, _ = load_trainer_state(run)
    assert state["step"] == step
    model, cfg = load_model(run)
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())
    val = read_tokens(run / "data" / "val.bin", cfg["data_meta"]["vocab_size"])
    with torch.no_grad():
        b = RandomWindows(val, model.config.max_seq_len, 8, seed=0).next_batch()
        _, loss = model(b["idx"], b["targets"])
    assert torch.isfinite(loss), "the checkpoint kept as 'good' gives a non-finite loss"


def test_divergence_before_any_checkpoint_writes_no_weights(tmp_path, capsys, tiny_toml):
    run = tmp_path / "run"
    rc, _, err = qkv(capsys, "train", "--config", tiny_toml, "--out", run, "--no-sample", "--train.lr", "1e30",
                     "--train.warmup_steps", "0", "--train.eval_interval", "1")
    assert rc == 2
    message = err.strip().splitlines()[-1]
    assert re.search(r"\b(nan|inf)\b", message, re.IGNORECASE) and "no checkpoint had been written" in message
    assert not (run / "model.safetensors").exists()  # weights of step 1 are 1e30-sized: not a checkpoint


# ------------------------------------------------------------------------------------------------ 7. metrics
def test_metrics_and_plot_after_a_run(learned_run):
    assert sorted(train_losses(learned_run)) == list(range(50, 601, 50))  # log_interval 50
    assert eval_steps(learned_run) == [600]
    assert_picture(learned_run / "loss.png")
    assert not [p for p in learned_run.rglob("*") if p.name.endswith((".tmp", ".part", ".tmp.png"))]


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path, capsys, tiny_toml):
    run = tmp_path / "run"
    train(capsys, tiny_toml, run, "--train.max_steps", "10", "--train.eval_interval", "5")
    # a crash after step 12 had been logged, before the next checkpoint: these lines will be redone
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        for s in (11, 12):
            f.write(json.dumps({"step": s, "loss": 99.0, "lr": 0.0, "tokens_per_s": 0.0, "elapsed_s": 0.0}) + "\n")
    rc, _, err = qkv(capsys, "train", "--resume", run, "--train.max_steps", "15", "--no-sample")
    assert rc == 0, err
    losses = train_losses(run)  # no step twice
    assert sorted(losses) == list(range(1, 16))
    assert 99.0 not in losses.values()
    assert eval_steps(run) == [5, 10, 15]
    assert (run / "loss.png").is_file()


def test_a_fresh_run_in_a_failed_runs_dir_starts_fresh_metrics(tmp_path, capsys, tiny_toml):
    run = tmp_path / "run"
    rc, _, _ = qkv(capsys, "train", "--config", tiny_toml, "--out", run, "--no-sample", "--train.lr", "1e30",
                   "--train.warmup_steps", "0")
    assert rc == 2 and (run / "metrics.jsonl").is_file() and not (run / "model.safetensors").exists()
    train(capsys, tiny_toml, run, "--train.max_steps", "5")
    assert sorted(train_losses(run)) == [1, 2, 3, 4, 5]  # the failed run's step 1 is gone


# ------------------------------------------------------------------------------------------------ 8. eval
def test_eval_reports_the_full_pass_loss_training_logged(learned_run, capsys, shared_data, tmp_path):
    """`qkv eval` on a GPT run (README's headline numbers): same weights and windows as the last full-pass
    validation of training, so the same loss; bits/char and perplexity follow from it."""
    import math

    rc, out, err = qkv(capsys, "eval", learned_run, "--json")
    assert rc == 0, err
    res = json.loads(out)
    logged = [r for r in metrics(learned_run) if "val_loss" in r][-1]
    meta = json.loads((learned_run / "config.json").read_text())["data_meta"]
    assert res["loss"] == pytest.approx(logged["val_loss"], abs=1e-6)
    assert res["bits_per_char"] == pytest.approx(logged["val_bpc"], rel=1e-9)
    assert res["bits_per_char"] == pytest.approx(res["loss"] / math.log(2) / meta["chars_per_token"], rel=1e-12)
    assert res["perplexity"] == pytest.approx(math.exp(res["loss"]), rel=1e-12)
    assert res["tokens"] == meta["val_tokens"] - 1
    rc, text, _ = qkv(capsys, "eval", learned_run)
    assert f"loss {res['loss']:.4f} nats/token" in text and f"{res['bits_per_char']:.4f} bits/char" in text

    text_file = tmp_path / "start.txt"  # the run's vocabulary covers the first 200k characters
    text_file.write_text((shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:20_000])
    rc, out, err = qkv(capsys, "eval", learned_run, "--data", text_file, "--max-tokens", "1000", "--json")
    assert rc == 0, err
    assert json.loads(out)["tokens"] == 1000 and json.loads(out)["source"] == str(text_file)


def test_eval_of_a_run_without_its_validation_split(learned_run, capsys, tmp_path):
    run = shutil.copytree(learned_run, tmp_path / "run")
    shutil.rmtree(run / "data")
    rc, _, err = qkv(capsys, "eval", run)
    assert_user_error(rc, err, "no validation split on disk", "give the data to score")


def test_full_pass_loss_is_the_mean_over_every_target_once():
    """`full_pass_loss` against a naive loop: non-overlapping windows, each target once, the last window
    shorter (n - 1 targets is not a multiple of the block size)."""
    import numpy as np
    import torch.nn.functional as F

    from qkv.evaluation.perplexity import full_pass_loss
    from qkv.models import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, max_seq_len=8, d_model=16, n_layers=1, n_heads=2)).eval()
    tokens = np.random.default_rng(0).integers(0, 11, 45)  # 44 targets = 5 windows of 8 + one of 4
    total, count = 0.0, 0
    with torch.no_grad():
        for lo in range(0, len(tokens) - 1, 8):
            x = torch.tensor(tokens[lo : min(lo + 8, len(tokens) - 1)])[None]
            y = torch.tensor(tokens[lo + 1 : lo + 1 + x.size(1)])[None]
            total += F.cross_entropy(model(x)[0][0], y[0], reduction="sum").item()
            count += y.numel()
    assert count == 44
    assert full_pass_loss(model, tokens, 8) == pytest.approx(total / count, rel=1e-6)
    assert full_pass_loss(model, tokens, 8, max_tokens=16) != pytest.approx(total / count, rel=1e-6)


# ------------------------------------------------------------------------------------------------ 9. presets
# (every shipped preset is loaded and validated by tests/unit/test_presets.py)


def test_pystdlib_corpus_reads_this_machines_standard_library():
    import sysconfig

    from qkv.data.registry import _STDLIB_SKIP, stdlib_files
    from qkv.data.text import load_corpus

    files = stdlib_files()
    root = Path(sysconfig.get_paths()["stdlib"])
    assert len(files) > 100
    assert not [p for p in files if set(p.relative_to(root).parts) & _STDLIB_SKIP]
    text = load_corpus("pystdlib", max_chars=20_000)
    assert len(text) == 20_000 and "def " in text


def test_demo_preset_trains_two_steps_with_its_validation_cap(tmp_path, capsys):
    """`make demo`'s preset, two steps on a 20k-character slice, with the validation pass capped at 500 tokens."""
    run = tmp_path / "demo"
    train(capsys, preset("demo-pystdlib"), run, "--data.max_chars", "20000",
          "--data.val_max_tokens", "500", "--train.max_steps", "2", "--train.eval_interval", "2",
          "--train.eval_iters", "1", "--model.n_layers", "1", "--train.progress", "false")
    last = [r for r in metrics(run) if "val_loss" in r][-1]
    assert last["step"] == 2 and math.isfinite(last["val_loss"])
    rc, out, _ = qkv(capsys, "eval", run, "--max-tokens", "500", "--json")
    assert rc == 0 and json.loads(out)["loss"] == pytest.approx(last["val_loss"], abs=1e-6)


def test_bpe_language_model_trains_and_generates(tmp_path, capsys, tiny_toml):
    run = tmp_path / "bpe"
    train(capsys, tiny_toml, run, "--data.tokenizer", "bpe", "--data.vocab_size", "400", "--train.max_steps", "4",
          "--train.eval_interval", "4")
    from qkv.tokenizers import load_tokenizer

    tok = load_tokenizer(run / "tokenizer.json")
    assert tok.kind == "bpe" and tok.vocab_size == 400
    assert json.loads((run / "config.json").read_text())["model"]["vocab_size"] == 400
    rc, out, err = qkv(capsys, "generate", run, "--prompt", "ROMEO: ", "--max-new-tokens", 12, "--temperature", 0)
    assert rc == 0 and out.startswith("ROMEO: ") and len(out) > len("ROMEO: ") + 1, err


def test_attention_map_of_a_gpt_run(learned_run, capsys, tmp_path):
    out = tmp_path / "self.png"
    rc, text, err = qkv(capsys, "attention", learned_run, "--text", "ROMEO: hello", "--layer", "0", "--head", "1",
                        "--out", out)
    assert rc == 0, err
    assert "layer 0, head 1" in text and "12 × 12" in text
    assert_picture(out)
    rc, _, err = qkv(capsys, "attention", learned_run, "--src", "ROMEO", "--out", out)
    assert_user_error(rc, err, "takes one input: --text TEXT (got --src)")


# ------------------------------------------------------------------------------------------------ 10. killed
def test_killed_time_budget_run_resumes_on_its_schedule(tmp_path, tiny_toml, shared_data):
    """kill -9 a run whose learning-rate decay is timed to its budget, then --resume it: the first step after
    the checkpoint uses the schedule's rate at the saved elapsed time (it restarted at the peak before), and
    the run still ends by its budget."""
    import signal
    import time

    from qkv.config import from_dict, load_toml
    from qkv.tasks.lm import LMRunConfig
    from qkv.training.optim import lr_at

    run = tmp_path / "run"
    env = {**os.environ, "QKV_DATA_DIR": str(shared_data), "QKV_CACHE_DIR": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    budget = ["--train.max_steps", "100000", "--train.decay_steps", "none", "--train.schedule_by", "time",
              "--train.max_minutes", "0.25", "--train.eval_interval", "25", "--train.eval_iters", "0",
              "--data.max_chars", "20000"]
    cmd = [sys.executable, "-m", "qkv", "train", "--config", tiny_toml, "--out", str(run), "--no-sample", *budget]
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file, deadline = run / "trainer_state.json", time.monotonic() + 600
    try:  # wait for a checkpoint past 40% of the 15 s budget, well into the decay
        while time.monotonic() < deadline and child.poll() is None:
            if state_file.is_file():
                try:
                    if json.loads(state_file.read_text())["elapsed_s"] > 6.0:
                        break
                except (json.JSONDecodeError, KeyError):
                    pass  # not there yet
            time.sleep(0.05)
        assert child.poll() is None, "the run ended before it could be killed; it should run for 15 s"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    state = json.loads(state_file.read_text())
    saved = state["step"]
    assert state["warm_end_s"] is not None and state["elapsed_s"] > 6.0

    proc = run_or_fail([sys.executable, "-m", "qkv", "train", "--resume", str(run), "--no-sample"], env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"resumed from {run} at step {saved}" in proc.stderr
    after = [r for r in metrics(run) if "loss" in r and r["step"] > saved]
    assert after[0]["step"] == saved + 1
    cfg = from_dict(LMRunConfig, load_toml(tiny_toml) | {"train": {**load_toml(tiny_toml)["train"],
                                                                    "max_minutes": 0.25, "schedule_by": "time"}})
    at = lambda t: lr_at(saved, cfg.train, (t - state["warm_end_s"]) / (15.0 - state["warm_end_s"]))  # noqa: E731
    # the rate at the saved elapsed time, give or take the few seconds a loaded machine takes to start the loop
    assert at(state["elapsed_s"] + 3.0) <= after[0]["lr"] <= at(state["elapsed_s"])
    assert after[0]["lr"] < 0.8 * cfg.train.lr  # the peak would be 3e-3
    final = json.loads(state_file.read_text())
    assert final["elapsed_s"] >= 15.0 and "time budget of 0.25 min reached" in proc.stderr


def test_speedrun_preset_trains_with_its_options_and_times_its_evaluations(tmp_path, capsys):
    """The shakespeare-char-speedrun preset: every option of the GPT speedruns plus Muon, through the CLI. Its
    evaluations record the run's clock (evaluations included) and their own cost, which bench/gpt_train.py
    --speedrun reads; the saved run reloads and generates."""
    run = tmp_path / "speedrun"
    train(capsys, preset("shakespeare-char-speedrun"), run, "--data.max_chars", "60000",
          "--train.max_minutes", "none", "--train.schedule_by", "steps", "--train.max_steps", "40",
          "--train.eval_interval", "20", "--train.full_eval_interval", "20", "--train.threads", "1",
          "--train.progress", "false")
    saved = json.loads((run / "config.json").read_text())
    assert {k: saved["model"][k] for k in ("activation", "qk_norm", "zero_init_proj", "x0_shortcut",
                                          "logit_softcap")} == {"activation": "relu2", "qk_norm": True,
                                                                "zero_init_proj": True, "x0_shortcut": True,
                                                                "logit_softcap": 15.0}
    assert saved["train"]["optimizer"] == "muon"
    evals = [r for r in metrics(run) if "val_loss" in r]
    assert [r["step"] for r in evals] == [20, 40]
    assert evals[1]["val_loss"] < evals[0]["val_loss"] < math.log(65)
    assert 0 < evals[0]["eval_s"] < evals[0]["elapsed_s"] < evals[1]["elapsed_s"]
    rc, out, err = qkv(capsys, "generate", run, "--prompt", "ROMEO:", "--max-new-tokens", "20", "--seed", "1")
    assert rc == 0, err
    assert out.startswith("ROMEO:")
