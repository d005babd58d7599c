"""FSDP on one process (`qkv.training.sharding`, a process group of one): the same numbers as no sharding, a
sharded checkpoint that resumes exactly and loads for inference, and the one-line refusals around it.
(2, 4 processes and two nodes: tests/e2e/test_fsdp.py.)"""

import json

import pytest
import torch
from torch import nn

import qkv
from qkv import hardware
from qkv.cli.main import main
from qkv.errors import QKVError
from qkv.models import Seq2Seq, Seq2SeqConfig
from qkv.runs import STATE_FILE, WEIGHTS_FILE, has_weights, sharded_checkpoint
from qkv.tasks import get_task, run_task
from qkv.training.config import TrainConfig
from qkv.training.sharding import clip_grad_norm, shard_units
from trainer_fixtures import tiny_gpt

TINY = ["--data.max_chars", "20000", "--model.d_model", "32", "--model.n_layers", "2", "--model.n_heads", "2",
        "--model.max_seq_len", "32", "--model.dropout", "0", "--train.eval_interval", "2", "--train.eval_iters", "1",
        "--train.progress", "false", "--train.precision", "fp32", "--train.warmup_steps", "1",
        "--train.log_interval", "1", "--train.decay_steps", "4", "--train.max_minutes", "none",
        "--train.schedule_by", "steps", "--train.full_eval_interval", "2", "--no-sample"]


def test_units_are_the_blocks_of_every_outermost_module_list():
    gpt = tiny_gpt(n_layers=3)
    assert shard_units(gpt) == list(gpt.blocks)
    s2s = Seq2Seq(Seq2SeqConfig(vocab_size=20, d_model=16, n_heads=2, n_encoder_layers=2,
                                n_decoder_layers=1, d_ff=32, max_seq_len=8))
    assert shard_units(s2s) == [*s2s.encoder, *s2s.decoder]


def test_gradient_norm_and_clipping_match_torch():
    a, b = tiny_gpt(), tiny_gpt()
    idx = torch.randint(0, 16, (4, 8))
    for m in (a, b):
        m(idx, idx)[1].backward()
    expected = torch.nn.utils.clip_grad_norm_(a.parameters(), 0.1)
    assert clip_grad_norm(list(b.parameters()), 0.1) == pytest.approx(float(expected))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb.grad, pa.grad)
    assert clip_grad_norm([nn.Parameter(torch.ones(2))], 1.0) == 0.0  # no gradients: nothing to measure


def _train(text, out, *extra):
    return main(["train", "--preset", "shakespeare-char-cpu", "--data", str(text), *TINY, "--out", str(out), *extra])


def _records(run):
    skip = {"tokens_per_s", "elapsed_s", "eval_s", "peak_mem_mb", "peak_mem_mb_per_rank"}
    return [{k: v for k, v in json.loads(x).items() if k not in skip}
            for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def text(tmp_path):
    from helpers import write_text

    return write_text(tmp_path / "text.txt", 20_000)


def test_fsdp_on_one_process_is_one_shard_and_trains_what_ddp_trains(text, tmp_path, capsys):
    plain, sharded = tmp_path / "plain", tmp_path / "sharded"
    assert _train(text, plain, "--train.max_steps", "4") == 0
    capsys.readouterr()
    assert _train(text, sharded, "--train.max_steps", "4", "--train.parallel", "fsdp") == 0
    out = capsys.readouterr()
    assert "fsdp on one process: one shard holds the whole model (3 units)" in out.err
    assert "sharded; qkv convert --consolidate" in out.out
    assert _records(plain) == _records(sharded)  # one shard: the same arithmetic, bit for bit
    assert not (sharded / WEIGHTS_FILE).exists() and has_weights(sharded)
    assert sharded_checkpoint(sharded).name == "checkpoint-0000004"
    peaks = [r for r in (json.loads(x) for x in (sharded / "metrics.jsonl").read_text().splitlines())
             if "peak_mem_mb" in r]
    assert peaks and all(r["peak_mem_mb"] > 10 and len(r["peak_mem_mb_per_rank"]) == 1 for r in peaks)
    a, b = qkv.load_run(plain), qkv.load_run(sharded)  # the sharded weights load on one process
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(x, y), k

    # resume a sharded run from its step-2 checkpoint: the same steps as the uninterrupted one
    half = tmp_path / "half"
    assert _train(text, half, "--train.max_steps", "2", "--train.parallel", "fsdp") == 0
    assert main(["train", "--preset", "shakespeare-char-cpu", "--data", str(text), *TINY, "--train.max_steps", "4",
                 "--train.parallel", "fsdp", "--resume", str(half)]) == 0
    assert _records(half) == _records(sharded)
    assert [p.name for p in half.glob("checkpoint-*")] == ["checkpoint-0000004"]


def test_parallel_cannot_change_on_resume(text, tmp_path, capsys):
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    assert _train(text, ddp, "--train.max_steps", "2") == 0
    assert _train(text, fsdp, "--train.max_steps", "2", "--train.parallel", "fsdp") == 0
    capsys.readouterr()
    for run, asked in ((ddp, "fsdp"), (fsdp, "ddp")):
        code = main(["train", "--preset", "shakespeare-char-cpu", "--data", str(text), *TINY,
                     "--train.max_steps", "4", "--train.parallel", asked, "--resume", str(run)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1 and f"train.parallel is '{asked}'" in err[0], err


def test_a_missing_sharded_folder_is_one_line(text, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(text, run, "--train.max_steps", "2", "--train.parallel", "fsdp") == 0
    for f in sharded_checkpoint(run).iterdir():
        f.unlink()
    sharded_checkpoint(run).rmdir()
    with pytest.raises(QKVError, match="names the sharded checkpoint checkpoint-0000002, which is missing"):
        qkv.load_run(run)
    state = json.loads((run / STATE_FILE).read_text())
    assert state["sharded"] == "checkpoint-0000002"
    capsys.readouterr()
    assert main(["convert", "--consolidate", str(tmp_path)]) != 0  # not a run
    assert main(["convert", "--consolidate", str(run), "--out", str(tmp_path / "x")]) != 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_a_process_count_that_cannot_share_the_batch_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "3")
    cfg = get_task("lm").config_class()
    cfg.train.batch_size = 8
    with pytest.raises(QKVError, match="cannot be shared equally by 3 processes; make it a multiple of 3"):
        run_task(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_settings_fsdp_cannot_run_with_are_refused(text, tmp_path, capsys):
    with pytest.raises(ValueError, match="muon"):
        TrainConfig(parallel="fsdp", optimizer="muon")
    with pytest.raises(ValueError, match="unknown parallel"):
        TrainConfig(parallel="zero3")
    code = _train(text, tmp_path / "run", "--train.max_steps", "2", "--train.parallel", "fsdp",
                  "--train.precision", "fp16")
    assert code != 0 and "fp16 loss scaling does not run under parallel = 'fsdp'" in capsys.readouterr().err


def test_peak_memory_is_measured_and_can_start_again():
    cpu = torch.device("cpu")
    before = hardware.peak_memory_mb(cpu)
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    assert hardware.peak_memory_mb(cpu) >= before
    peak = hardware.peak_memory_mb(cpu)
    del block
    hardware.reset_peak_memory(cpu)
    again = hardware.peak_memory_mb(cpu)
    assert 0 < again <= peak
