"""Training pieces in isolation: the LR schedule, weight-decay groups, config checks, gradient
accumulation, atomic writes, checkpoint stamps and divergence handling (Trainer on a toy GPT)."""

import json
import math
import os

import pytest
import torch

from qkv.config import from_dict
from qkv.errors import QKVError
from qkv.models import GPT, GPTConfig
from qkv.models.io import save_run
from qkv.runs import OPTIM_FILE, STATE_FILE, atomic_save_tensors, atomic_write_bytes, atomic_write_json
from qkv.training.checkpoint import load_trainer_state
from qkv.training.config import TrainConfig
from qkv.training.optim import build_optimizer, lr_at, param_groups
from qkv.training.trainer import Trainer

V, T = 16, 8


def tiny_gpt(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{"vocab_size": V, "max_seq_len": T, "d_model": 16, "n_layers": 1, "n_heads": 2, **kw}))


def train_cfg(**kw) -> TrainConfig:
    base = dict(max_steps=1, batch_size=8, lr=1e-2, warmup_steps=0, device="cpu", progress=False, eval_interval=1,
                eval_iters=0)
    return TrainConfig(**{**base, **kw})


class FixedBatches:
    """One fixed (8, T) batch, handed out `micro` rows per `next_batch` call, in order, round and round."""

    def __init__(self, micro: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        chunk = torch.randint(0, V, (8, T + 1), generator=g)  # (8, T+1)
        self.x, self.y = chunk[:, :-1], chunk[:, 1:]  # (8, T) each
        self.micro, self.pos, self.calls = micro, 0, 0

    def next_batch(self):
        i = self.pos
        self.pos = (self.pos + self.micro) % len(self.x)
        self.calls += 1
        return {"idx": self.x[i : i + self.micro], "targets": self.y[i : i + self.micro]}

    def state_dict(self) -> dict:
        return {"pos": torch.tensor([self.pos])}

    def load_state_dict(self, state: dict) -> None:
        self.pos = int(state["pos"][0])


def lm_loss(model, batch):
    return model(batch["idx"], batch["targets"])[1], {"tokens": batch["idx"].numel()}


# ---------------------------------------------------------------------------------------------------------
# learning-rate schedule


def test_warmup_is_nanogpt_linear():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    for step in range(10):
        assert lr_at(step, cfg) == pytest.approx(1e-3 * (step + 1) / 11, rel=1e-12)
    assert lr_at(10, cfg) == pytest.approx(1e-3)  # warmup ends exactly at the peak, then decay starts


def test_cosine_endpoints_midpoint_and_floor():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)  # decay over steps 10..110
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))  # cos(π/2) = 0: halfway
    assert lr_at(35, cfg) == pytest.approx(1e-4 + 0.5 * (1 + math.cos(math.pi / 4)) * 9e-4)
    assert lr_at(110, cfg) == pytest.approx(1e-4)
    assert lr_at(111, cfg) == lr_at(10_000, cfg) == pytest.approx(1e-4)  # min_lr after the decay
    rates = [lr_at(s, cfg) for s in range(10, 200)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))


def test_decay_steps_shorter_than_max_steps():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=0, max_steps=1000, decay_steps=100)
    assert lr_at(0, cfg) == pytest.approx(1e-3)
    assert lr_at(50, cfg) == pytest.approx(5.5e-4)
    assert lr_at(100, cfg) == lr_at(500, cfg) == pytest.approx(1e-4)


def test_linear_and_constant_schedules():
    lin = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=0, max_steps=100, schedule="linear")
    assert lr_at(25, lin) == pytest.approx(1e-4 + 0.75 * 9e-4)
    assert lr_at(100, lin) == pytest.approx(1e-4)
    const = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=4, max_steps=100, schedule="constant")
    assert lr_at(0, const) == pytest.approx(1e-3 / 5)  # warmup still applies
    assert [lr_at(s, const) for s in (4, 50, 99, 1000)] == [1e-3] * 4


def test_time_based_decay_uses_the_time_fraction():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=0, max_minutes=1.0, schedule_by="time")
    assert lr_at(7, cfg, time_fraction=0.0) == pytest.approx(1e-3)
    assert lr_at(7, cfg, time_fraction=0.5) == pytest.approx(5.5e-4)
    assert lr_at(7, cfg, time_fraction=1.0) == lr_at(7, cfg, time_fraction=3.0) == pytest.approx(1e-4)


# ---------------------------------------------------------------------------------------------------------
# weight-decay groups


def test_param_groups_decay_matrices_only_and_count_tied_weights_once():
    model = tiny_gpt(bias=True)
    assert model.lm_head.weight is model.tok_emb.weight
    decay, no_decay = param_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decay["params"] and no_decay["params"]
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"])
    ids = [id(p) for p in decay["params"] + no_decay["params"]]
    assert len(ids) == len(set(ids))  # the tied embedding/head matrix appears once
    assert set(ids) == {id(p) for p in model.parameters()}
    assert sum(p.numel() for p in decay["params"] + no_decay["params"]) == model.num_params()
    assert id(model.tok_emb.weight) in map(id, decay["params"])
    assert id(model.norm_f.weight) in map(id, no_decay["params"])
    assert id(model.blocks[0].attn.q_proj.bias) in map(id, no_decay["params"])


def test_param_groups_skip_frozen_parameters():
    model = tiny_gpt()
    model.tok_emb.weight.requires_grad_(False)
    decay, no_decay = param_groups(model, weight_decay=0.1)
    assert id(model.tok_emb.weight) not in {id(p) for p in decay["params"] + no_decay["params"]}


def test_build_optimizer_uses_the_config():
    cfg = TrainConfig(lr=3e-4, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.05)
    opt = build_optimizer(tiny_gpt(), cfg, "cpu")
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert all(g["lr"] == 3e-4 and g["betas"] == (0.8, 0.95) and g["eps"] == 1e-6 for g in opt.param_groups)


# ---------------------------------------------------------------------------------------------------------
# config validation


def test_batch_size_must_divide_by_grad_accum():
    with pytest.raises(ValueError, match=r"batch_size \(10\) must be divisible by grad_accum \(4\)"):
        TrainConfig(batch_size=10, grad_accum=4)
    TrainConfig(batch_size=12, grad_accum=4)
    with pytest.raises(QKVError, match="train: batch_size .* divisible by grad_accum"):
        from_dict(TrainConfig, {"batch_size": "10", "grad_accum": "4"}, prefix="train.")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"max_steps": 0}, "max_steps must be positive"),
        ({"grad_accum": -1}, "grad_accum must be positive"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"min_lr": -1e-5}, "min_lr non-negative"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"max_minutes": 0.0}, "max_minutes must be positive"),
        ({"schedule_by": "time"}, "needs max_minutes"),
        ({"threads": 0}, "threads must be positive"),
    ],
)
def test_train_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


# ---------------------------------------------------------------------------------------------------------
# gradient accumulation


def _one_step(grad_accum: int):
    model = tiny_gpt()
    data = FixedBatches(micro=8 // grad_accum)
    # eps = 1: Adam's first step is otherwise lr·sign(g), blind to the gradient's scale, and would hide a
    # missing 1/grad_accum; with a large eps the update is ≈ lr·g/eps. No clipping for the same reason.
    cfg = train_cfg(grad_accum=grad_accum, eps=1.0, grad_clip=0.0, weight_decay=0.0)
    result = Trainer(model, lm_loss, data, cfg).fit()
    return result, model, data


def test_gradient_accumulation_matches_one_big_batch():
    before = {k: v.clone() for k, v in tiny_gpt().state_dict().items()}
    r1, m1, d1 = _one_step(grad_accum=1)
    r4, m4, d4 = _one_step(grad_accum=4)
    assert (d1.calls, d4.calls) == (1, 4)  # 4 micro-batches of 2 rows = the same 8 rows
    (s1, loss1), (s4, loss4) = r1.losses[0], r4.losses[0]
    assert s1 == s4 == 1
    assert loss4 == pytest.approx(loss1, abs=1e-6)
    moved = 0.0
    for (k, a), b in zip(m1.state_dict().items(), m4.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-7, rtol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
        moved = max(moved, (a - before[k]).abs().max().item())
    assert moved > 1e-5, "the step must change the weights, or the comparison proves nothing"


# ---------------------------------------------------------------------------------------------------------
# atomic writes and checkpoints


def test_atomic_writes_leave_only_the_target(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_json(tmp_path / "b.json", {"x": 1})
    atomic_save_tensors(tmp_path / "c.safetensors", {"w": torch.ones(2)}, metadata={"step": "3"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json", "c.safetensors"]
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": 1}


@pytest.mark.parametrize("writer", ["bytes", "tensors"])
def test_failed_atomic_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch, writer):
    target = tmp_path / ("a.bin" if writer == "bytes" else "a.safetensors")
    target.write_bytes(b"old")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        if writer == "bytes":
            atomic_write_bytes(target, b"new")
        else:
            atomic_save_tensors(target, {"w": torch.zeros(3)})
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def _trained_run(tmp_path, steps=2, **kw):
    """A toy run dir with a checkpoint at `steps` (weights, optimizer + data + RNG state, trainer state)."""
    model = tiny_gpt()
    save = lambda m, step: save_run(tmp_path, m, metadata={"step": str(step)})  # noqa: E731
    Trainer(model, lm_loss, FixedBatches(2), train_cfg(max_steps=steps, eval_interval=steps, **kw),
            run_dir=tmp_path, save_model=save).fit()
    return save


def test_checkpoint_files_and_no_temp_files(tmp_path):
    _trained_run(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["config.json", "metrics.jsonl", "model.safetensors", OPTIM_FILE, STATE_FILE]
    state, tensors = load_trainer_state(tmp_path)
    assert state["step"] == 2
    assert tensors["data.pos"].tolist() == [4]  # 2 steps of 2 rows: the batch source's position
    assert any(k.startswith("optim.") for k in tensors) and "rng.torch" in tensors


def test_checkpoint_step_stamp_mismatch_is_detected(tmp_path):
    save = _trained_run(tmp_path)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    state["step"] = 1  # as if the state of another step had been written next to these weights
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(QKVError, match="different steps"):
        load_trainer_state(tmp_path)
    with pytest.raises(QKVError, match="different steps"):
        Trainer(tiny_gpt(), lm_loss, FixedBatches(8), train_cfg(max_steps=4), run_dir=tmp_path, save_model=save,
                resume=True).fit()


def test_missing_checkpoint_file_is_reported(tmp_path):
    _trained_run(tmp_path)
    (tmp_path / OPTIM_FILE).unlink()
    with pytest.raises(QKVError, match=f"no {OPTIM_FILE}"):
        load_trainer_state(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# divergence


def test_non_finite_evaluation_does_not_overwrite_the_last_good_checkpoint(tmp_path):
    model = tiny_gpt()
    save = lambda m, step: save_run(tmp_path, m, metadata={"step": str(step)})  # noqa: E731
    calls = []

    def evaluate(m, full, train_means):  # fine at step 1, NaN at step 2
        calls.append(full)
        return {"val_loss": 2.0 if len(calls) == 1 else float("nan")}

    with pytest.raises(QKVError, match=r"val_loss became nan at step 2.*last good checkpoint \(step 1\)"):
        Trainer(model, lm_loss, FixedBatches(8), train_cfg(max_steps=5), run_dir=tmp_path, evaluate=evaluate,
                save_model=save).fit()
    assert load_trainer_state(tmp_path)[0]["step"] == 1


def test_divergence_after_resume_names_the_resumed_checkpoint(tmp_path):
    save = _trained_run(tmp_path, steps=2)
    with pytest.raises(QKVError, match=r"(nan|inf) at step \d+; .*last good checkpoint \(step 2\) is kept"):
        # lr 1e30 wrecks the weights in step 3 and the loss of a later step is NaN, before the next
        # checkpoint (step 8): the checkpoint resumed from is still the last good one
        Trainer(tiny_gpt(), lm_loss, FixedBatches(2), train_cfg(max_steps=8, eval_interval=8, lr=1e30),
                run_dir=tmp_path, save_model=save, resume=True).fit()
    assert load_trainer_state(tmp_path)[0]["step"] == 2
