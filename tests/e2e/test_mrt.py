"""Minimum risk training and --init-from for translation, through the real CLI, in-process, with the shipped
preset (multi30k-de-en-mrt) shrunk to seconds on synthetic number pairs:

- an MRT fine-tune starts from the base run's weights and tokenizer, saves its [mrt] settings, and logs the
  expected risk, the NLL and the mean candidate BLEU (metrics.jsonl); a plain cross-entropy fine-tune works
  from --init-from too; an MRT run that samples its candidates resumes exactly;
- bad input, each a one-line error with exit status 2: objective "mrt" without --init-from, --init-from a
  language-model run or a folder that is no run, fewer than 2 candidates, a metric that does not exist.
Everything runs on one thread.
"""

import json
import math
from pathlib import Path

import pytest

from helpers import assert_user_error, metrics, preset, qkv, write_text
from qkv.cli.main import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BASE_PRESET = preset("multi30k-de-en")
MRT_PRESET = preset("multi30k-de-en-mrt")

# the base run: a 1+1-layer model on 200 number pairs, 60 steps (~5 s)
BASE_ARGS = [
    "--data.vocab_size", "300", "--data.batch_tokens", "200", "--data.bleu_val_pairs", "0",
    "--model.d_model", "32", "--model.d_ff", "64", "--model.n_encoder_layers", "1", "--model.n_decoder_layers", "1",
    "--model.n_heads", "2", "--model.max_seq_len", "48", "--model.dropout", "0.1",
    "--train.schedule_by", "steps", "--train.max_minutes", "none", "--train.warmup_steps", "2", "--train.lr", "3e-3",
    "--train.max_steps", "60", "--train.eval_interval", "60", "--train.log_interval", "10",
    "--train.threads", "1", "--train.progress", "false", "--train.precision", "fp32", "--no-sample",
]
# the fine-tunes: the MRT preset's settings but a few steps, small batches and no wall-clock budget
TUNE_ARGS = [
    "--data.batch_tokens", "100", "--data.bleu_val_pairs", "5",
    "--train.schedule_by", "steps", "--train.max_minutes", "none", "--train.warmup_steps", "1",
    "--train.max_steps", "4", "--train.eval_interval", "2", "--train.full_eval_interval", "4",
    "--train.log_interval", "1", "--train.threads", "1", "--train.progress", "false", "--train.precision", "fp32",
    "--no-sample",
]


def number_pairs(folder: Path, n: int = 200) -> list[str]:
    """n line-aligned synthetic "translations" (German number words -> English ones) as --data flags."""
    de = "null eins zwei drei vier fünf sechs sieben acht neun".split()
    en = "zero one two three four five six seven eight nine".split()
    digits = [[int(c) for c in str(1000 + 7 * i)[1:]] for i in range(n)]
    s, t = folder / "train.de", folder / "train.en"
    s.write_text("".join("die " + " ".join(de[d] for d in ds) + " .\n" for ds in digits), encoding="utf-8")
    t.write_text("".join("the " + " ".join(en[d] for d in ds) + " .\n" for ds in digits), encoding="utf-8")
    return ["--data.src", str(s), "--data.tgt", str(t)]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, list[str]]:
    """(a trained translation run, its data flags)."""
    folder = tmp_path_factory.mktemp("mrt")
    data = number_pairs(folder)
    assert main(["train", "--config", BASE_PRESET, "--out", str(folder / "base"), *data, *BASE_ARGS]) == 0
    return folder / "base", data


def _final_val_loss(run: Path) -> float:
    return [r for r in metrics(run) if "val_loss" in r][-1]["val_loss"]


def test_mrt_fine_tune_starts_from_the_base_run_and_logs_the_risk(base, tmp_path, capsys):
    run_dir, data = base
    out = tmp_path / "mrt"
    rc, _, err = qkv(capsys, "train", "--config", MRT_PRESET, "--init-from", run_dir, "--out", out, *data, *TUNE_ARGS)
    assert rc == 0, err
    assert (out / "tokenizer.json").read_bytes() == (run_dir / "tokenizer.json").read_bytes()
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert saved["train"]["objective"] == "mrt" and saved["data_meta"]["init_from"] == str(run_dir)
    assert saved["mrt"] == {"candidates": 8, "method": "beam", "metric": "bleu", "alpha": 1.0, "nll_weight": 0.3,
                            "temperature": 1.0, "max_len_a": 1.5, "max_len_b": 10}
    assert saved["model"] == json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["model"]
    evals = [r for r in metrics(out) if "val_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    for r in evals:
        assert 0.0 <= r["train_risk"] <= 1.0 and 0.0 <= r["train_cand_bleu"] <= 100.0
        assert 1.0 <= r["train_candidates"] <= 8.0 and r["train_nll"] > 0
    # the base run's weights: a fresh model of this vocabulary would start near ln(V) ≈ 5 nats
    base_loss = _final_val_loss(run_dir)
    assert base_loss < 0.6 * math.log(300)
    assert abs(evals[0]["val_loss"] - base_loss) < 0.1 * base_loss
    assert "val_bleu" in evals[-1] and "train_risk" in err and "train_cand_bleu" in err


def test_init_from_also_fine_tunes_with_cross_entropy(base, tmp_path, capsys):
    run_dir, data = base
    out = tmp_path / "xent"
    rc, _, err = qkv(capsys, "train", "--config", MRT_PRESET, "--init-from", run_dir, "--out", out, *data, *TUNE_ARGS,
                     "--train.objective", "xent")
    assert rc == 0, err
    evals = [r for r in metrics(out) if "val_loss" in r]
    assert all("train_risk" not in r for r in evals) and "train_nll" in evals[0]
    assert abs(evals[0]["val_loss"] - _final_val_loss(run_dir)) < 0.1 * _final_val_loss(run_dir)


def test_an_mrt_run_that_samples_resumes_exactly(base, tmp_path, capsys):
    """Sampled candidates come from torch's global generator, which the checkpoint keeps: 3 + 3 steps are the
    6 steps of an uninterrupted run, loss for loss."""
    run_dir, data = base
    args = [*data, *TUNE_ARGS, "--mrt.method", "sample", "--mrt.candidates", "4", "--train.eval_interval", "3",
            "--train.full_eval_interval", "3"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for out, steps in ((straight, "6"), (resumed, "3")):
        rc, _, err = qkv(capsys, "train", "--config", MRT_PRESET, "--init-from", run_dir, "--out", out, *args,
                         "--train.max_steps", steps, "--train.decay_steps", "6")
        assert rc == 0, err
    rc, _, err = qkv(capsys, "train", "--resume", resumed, "--train.max_steps", "6", "--no-sample")
    assert rc == 0, err
    a = {r["step"]: r["loss"] for r in metrics(straight) if "loss" in r}
    b = {r["step"]: r["loss"] for r in metrics(resumed) if "loss" in r}
    assert sorted(a) == sorted(b) == list(range(1, 7))
    assert max(abs(a[k] - b[k]) for k in a) <= 1e-6
    assert len(set(a.values())) == 6  # the steps differ: candidates are drawn afresh


# ------------------------------------------------------------------------------------------------ bad input
def test_mrt_without_init_from(base, tmp_path, capsys):
    _, data = base
    rc, _, err = qkv(capsys, "train", "--config", MRT_PRESET, "--out", tmp_path / "run", *data, *TUNE_ARGS)
    assert_user_error(rc, err, 'train.objective = "mrt"', "--init-from")
    assert not (tmp_path / "run").exists()


def test_init_from_a_language_model_run(base, tmp_path, capsys):
    _, data = base
    lm = tmp_path / "lm"
    rc, _, err = qkv(capsys, "train", "--config", preset("shakespeare-char-cpu"), "--out", lm,
                     "--data", write_text(tmp_path / "text.txt", 20_000), "--no-sample", "--data.max_chars", "20000",
                     "--model.d_model", "32", "--model.n_layers", "1",
                     "--model.n_heads", "2", "--model.max_seq_len", "32", "--train.max_steps", "2",
                     "--train.eval_interval", "2", "--train.eval_iters", "1", "--train.progress", "false")
    assert rc == 0, err
    rc, _, err = qkv(capsys, "train", "--config", MRT_PRESET, "--init-from", lm, "--out", tmp_path / "run", *data,
                     *TUNE_ARGS)
    assert_user_error(rc, err, str(lm), "an lm run", "translation run")
    assert not (tmp_path / "run").exists()


def test_init_from_a_folder_that_is_no_run(base, tmp_path, capsys):
    _, data = base
    rc, _, err = qkv(capsys, "train", "--config", MRT_PRESET, "--init-from", tmp_path, "--out", tmp_path / "run",
                     *data, *TUNE_ARGS)
    assert_user_error(rc, err, str(tmp_path), "not a run directory", "translation run")


@pytest.mark.parametrize(("flags", "needles"), [
    (["--mrt.candidates", "1"], ["mrt: candidates must be >= 2", "got 1"]),
    (["--mrt.metric", "meteor"], ["mrt.metric: 'meteor' is not one of bleu, chrf"]),
])
def test_bad_mrt_settings(base, tmp_path, capsys, flags, needles):
    run_dir, data = base
    rc, _, err = qkv(capsys, "train", "--config", MRT_PRESET, "--init-from", run_dir, "--out", tmp_path / "run",
                     *data, *TUNE_ARGS, *flags)
    assert_user_error(rc, err, *needles)
    assert not (tmp_path / "run").exists()
