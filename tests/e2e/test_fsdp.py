"""Sharded training (``train.parallel = "fsdp"``, FSDP2 on gloo): what it trains, how it checkpoints, where it runs.

- 2 FSDP processes train what 1 process trains (LM and translation), and what 2 DDP processes train (LM):
  per-step losses, gradient norms, evaluations and final weights within float tolerance. The gradient norm is
  the check that catches PyTorch issue #162338 (gloo summing gradients where FSDP asks for their mean): AdamW
  and clipping hide a gradient scaled by the process count from the losses, not from the norm.
- A sharded checkpoint written by 2 processes at step 3 resumes on 1 and on 4 processes and ends where an
  uninterrupted run ends; `qkv.load_run` reads it on one process and `qkv convert --consolidate` writes
  model.safetensors from it.
- Two "nodes" (two ``torchrun --nnodes 2`` launches on 127.0.0.1, c10d rendezvous) train what 1 process trains.

Dropout is off (each process draws its own masks); everything else random is drawn for the global batch.
"""

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import assert_same_training, assert_same_weights, made_up_pairs, preset, run_or_fail, torchrun, write_text
from qkv.cli.main import main

pytestmark = pytest.mark.slow

COMMON = ["--no-sample", "--train.eval_interval", "3", "--train.warmup_steps", "2", "--train.schedule_by", "steps",
          "--train.max_minutes", "none", "--train.progress", "false", "--train.precision", "fp32",
          "--train.batch_size", "8", "--train.log_interval", "1", "--train.decay_steps", "6",
          "--train.full_eval_interval", "3"]


def _lm(folder: Path) -> list[str]:
    text = folder / "text.txt"
    if not text.exists():
        write_text(text, 30_000)
    return ["train", "--config", str(preset("shakespeare-char-cpu")), *COMMON, "--data", str(text),
            "--data.max_chars", "30000", "--model.d_model", "32", "--model.n_layers", "2", "--model.n_heads", "2",
            "--model.dropout", "0", "--model.max_seq_len", "32", "--train.eval_iters", "1"]


def _translate(folder: Path) -> list[str]:
    return ["train", "--config", str(preset("multi30k-de-en")), *COMMON, *made_up_pairs(folder),
            "--data.batch_tokens", "none", "--data.vocab_size", "300",
            "--data.bleu_val_pairs", "2", "--model.d_model", "32", "--model.d_ff", "64", "--model.n_encoder_layers",
            "1", "--model.n_decoder_layers", "1", "--model.n_heads", "2", "--model.max_seq_len", "48",
            "--model.dropout", "0"]


ARGS = {"lm": _lm, "translate": _translate}


def _launch(args: list[str], folder: Path, nproc: int) -> str:
    """``torchrun --standalone --nproc_per_node=N -m qkv ARGS``; its stderr."""
    env = {**os.environ, "QKV_CACHE_DIR": str(folder / "cache"), "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    proc = run_or_fail([*torchrun(), "--standalone", f"--nproc_per_node={nproc}", "-m", "qkv", *args], timeout=600,
                       cwd=folder, env=env)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc.stderr


def _weights(run: Path) -> dict:
    if not (run / "model.safetensors").exists():
        assert main(["convert", "--consolidate", str(run)]) == 0
    return load_file(run / "model.safetensors")


@pytest.mark.parametrize("task", list(ARGS))
def test_two_fsdp_processes_train_what_one_trains(task, tmp_path, capsys):
    args = ARGS[task](tmp_path)
    one, fsdp = tmp_path / "one", tmp_path / "fsdp"
    assert main([*args, "--train.max_steps", "6", "--out", str(one)]) == 0
    capsys.readouterr()
    err = _launch([*args, "--train.max_steps", "6", "--train.parallel", "fsdp", "--out", str(fsdp)], tmp_path, 2)
    assert err.count("fsdp:") == 1 and "sharded 2 way(s)" in err  # said once, by the main process
    assert not (fsdp / "model.safetensors").exists() and list(fsdp.glob("checkpoint-*"))
    assert_same_training(one, fsdp, steps=6)
    assert_same_weights(load_file(one / "model.safetensors"), _weights(fsdp))
    if task == "lm":  # and DDP's two processes, against FSDP's two
        ddp = tmp_path / "ddp"
        _launch([*args, "--train.max_steps", "6", "--out", str(ddp)], tmp_path, 2)
        assert_same_training(ddp, fsdp, steps=6)
        card = (fsdp / "report.md").read_text()
        assert "peak memory per process" in card and "rank 1:" in card


def test_a_sharded_checkpoint_resumes_on_one_and_on_four_processes(tmp_path, capsys):
    import qkv

    args = [*_lm(tmp_path), "--train.parallel", "fsdp"]
    straight, half = tmp_path / "straight", tmp_path / "half"
    assert main([*args, "--train.max_steps", "6", "--out", str(straight)]) == 0  # one process: one shard
    assert "one shard holds the whole model" in capsys.readouterr().err
    _launch([*args, "--train.max_steps", "3", "--out", str(half)], tmp_path, 2)
    assert json.loads((half / "trainer_state.json").read_text())["sharded"] == "checkpoint-0000003"
    assert len(list((half / "checkpoint-0000003").glob("*.safetensors"))) == 2  # one file per process
    four = tmp_path / "four"
    shutil.copytree(half, four)  # a copy of the step-3 run, for the 4-process resume

    assert main([*args, "--train.max_steps", "6", "--resume", str(half)]) == 0
    assert "resumed from" in capsys.readouterr().err
    err = _launch([*args, "--train.max_steps", "6", "--resume", str(four)], tmp_path, 4)
    assert "sharded 4 way(s)" in err
    for resumed in (half, four):
        assert_same_training(straight, resumed, steps=6)
        assert [p.name for p in resumed.glob("checkpoint-*")] == ["checkpoint-0000006"]  # the old one is gone
    # one process reads a sharded run for inference; consolidating writes the same weights
    run = qkv.load_run(four)
    expected = qkv.load_run(straight)
    for (name, a), (_, b) in zip(expected.model.state_dict().items(), run.model.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
    assert_same_weights(_weights(straight), _weights(four))
    assert main(["convert", "--consolidate", str(four)]) == 0  # again: rewrites the same file
    assert "from " + str(four / "checkpoint-0000006") in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_loopback_train_what_one_process_trains(tmp_path, capsys):
    """Two torchrun launches, one process each, meet at a c10d rendezvous on 127.0.0.1: a two-node job."""
    args = [*_lm(tmp_path), "--train.max_steps", "6", "--train.parallel", "fsdp"]
    one, nodes = tmp_path / "one", tmp_path / "nodes"
    assert main([*args, "--out", str(one)]) == 0
    capsys.readouterr()
    port = _free_port()
    env = {**os.environ, "QKV_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    launches = []
    for node in range(2):
        cmd = [*torchrun(), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "qkv-test", "--node-rank", str(node),
               "-m", "qkv", *args, "--out", str(nodes)]
        launches.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True))
    outputs = []
    for proc in launches:
        try:
            outputs.append(proc.communicate(timeout=600))
        except subprocess.TimeoutExpired:
            for p in launches:
                p.kill()
            pytest.fail("the two-node launch timed out")
    for proc, (_, err) in zip(launches, outputs, strict=True):
        assert proc.returncode == 0, err[-4000:]
    assert sum("sharded 2 way(s)" in err for _, err in outputs) == 1  # the main process of node 0
    assert_same_training(one, nodes, steps=6)
