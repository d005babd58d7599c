"""Data parallel training under torchrun, for every task: 2 processes (gloo, CPU) train what 1 process trains
(DDP for every task; FSDP for the diffusion, captioning and speech models).

Each task's tiny run is trained once in-process and once with ``torchrun --nproc_per_node=2``, with the same
global batch (``train.batch_size`` is the batch of a step, shared by the processes). The per-step losses,
the evaluations and the final weights must agree within float tolerance (the gradients are summed in
another order). Dropout is off: each process draws its own dropout masks, the one thing a data-parallel
run cannot share with a single process. Everything else random — the batches, diffusion's timesteps, noise
and condition dropout — is drawn for the global batch by the batch source (`qkv.data.batch`).

Each process must also get its share of the cores (`qkv.tasks.runner.split_threads`): with OMP_NUM_THREADS=2
and two processes, one torch thread each, which the main process says.
"""

import os
from pathlib import Path

import pytest
from safetensors.torch import load_file

from helpers import assert_same_training, assert_same_weights, made_up_pairs, preset, run_or_fail, torchrun, write_text
from qkv.cli.main import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STEPS = ["--train.max_steps", "6", "--train.eval_interval", "3", "--train.warmup_steps", "2",
         "--train.schedule_by", "steps", "--train.max_minutes", "none", "--train.progress", "false",
         "--train.precision", "fp32", "--train.batch_size", "8", "--train.log_interval", "1"]
GPT = ["--model.d_model", "32", "--model.n_layers", "1", "--model.n_heads", "2", "--model.dropout", "0"]


# task -> (preset, overrides): tiny runs whose every batch splits into two non-empty halves
RUNS = {
    "lm": (preset("shakespeare-char-cpu"), [*GPT, "TEXT", "--data.max_chars", "30000", "--model.max_seq_len", "32",
                                             "--train.eval_iters", "1", "--train.decay_steps", "6"]),
    "translate": (preset("multi30k-de-en"), ["--data.batch_tokens", "none", "--data.vocab_size", "300",
                                              "--data.bleu_val_pairs", "2", "--model.d_model", "32", "--model.d_ff",
                                              "64", "--model.n_encoder_layers", "1", "--model.n_decoder_layers", "1",
                                              "--model.n_heads", "2", "--model.max_seq_len", "48",
                                              "--model.dropout", "0", "PAIRS"]),
    "chat": (preset("chat-qa-skills"), [*GPT, "--data.train_size", "64", "--data.val_size", "8", "--data.test_size",
                                         "4", "--data.em_conversations", "2"]),
    "diffusion": (preset("digits-dit"), [*GPT[:6], "--sample.eval_samples", "0"]),
    "autoencoder": (preset("shapes-autoencoder"), ["--data.shapes_n", "200", "--model.width", "8"]),
    "caption": (preset("shapes-caption"), ["--data.image_size", "16", "--data.val_scenes", "4", "--model.d_model",
                                            "32", "--model.n_encoder_layers", "1", "--model.n_decoder_layers", "1",
                                            "--model.n_heads", "2"]),
    "speech": (preset("fsdd-digits"), ["SPEECH", "--model.d_model", "32", "--model.n_encoder_layers", "1",
                                        "--model.n_decoder_layers", "1", "--model.n_heads", "2", "--model.dropout", "0",
                                        "--data.val_fraction", "0.2"]),
}


def _text(folder: Path) -> list[str]:
    return ["--data", str(write_text(folder / "text.txt", 30_000))]


def _speech(folder: Path) -> list[str]:
    from speech_fixtures import digit_clips, digit_folder

    data = folder / "speech"
    if not data.exists():  # _args runs for each of the two trainings
        digit_folder(data, digit_clips())
    return ["--data.source", str(data)]


def _args(task: str, folder: Path) -> list[str]:
    preset, extra = RUNS[task]
    made = {"PAIRS": made_up_pairs, "TEXT": _text, "SPEECH": _speech}  # made-up data: any text or pairs will do
    extra = [a for x in extra for a in (made[x](folder) if x in made else [x])]
    return ["train", "--config", str(preset), "--no-sample", *STEPS, *extra]


# FSDP too, for the models whose path differs (tests/e2e/test_fsdp.py has the LM and translation): diffusion's
# weight average reads the sharded weights after every step, and the captioner is a subclass FSDP wraps
SHARDED = ["diffusion", "caption", "speech"]


@pytest.mark.parametrize(("task", "parallel"), [(t, "ddp") for t in RUNS] + [(t, "fsdp") for t in SHARDED])
def test_two_processes_train_what_one_trains(task, parallel, tmp_path, monkeypatch, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*_args(task, tmp_path), "--out", str(one)]) == 0
    capsys.readouterr()

    env = {**os.environ, "QKV_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2",
           "PYTHONUNBUFFERED": "1"}
    cmd = [*torchrun(), "--standalone", "--nproc_per_node=2", "-m", "qkv", *_args(task, tmp_path), "--out", str(two),
           "--train.parallel", parallel]
    proc = run_or_fail(cmd, cwd=tmp_path, env=env)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    assert proc.stderr.count("torchrun: 2 processes, 1 torch thread(s) each") == 1, proc.stderr[-2000:]
    assert proc.stdout.count("trained 6 steps") == 1  # only the main process reports

    assert_same_training(one, two, steps=6)
    if parallel == "fsdp":  # the weights are sharded: one file, from them
        assert main(["convert", "--consolidate", str(two)]) == 0
    assert_same_weights(load_file(one / "model.safetensors"), load_file(two / "model.safetensors"))
