"""The training loop and its pieces (Trainer on a toy GPT): the LR schedule, weight-decay groups, config
checks, gradient accumulation and loss-term weighting, checkpoint stamps, divergence handling, the
wall-clock budget and its time schedule (with a fake clock), exact resume of that schedule, and
torch.compile (its fallback, and a trial call that leaves no trace)."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

import qkv.training.trainer as trainer_mod
from qkv.config import from_dict
from qkv.errors import QKVError
from qkv.models.io import save_run
from qkv.runs import OPTIM_FILE, STATE_FILE
from qkv.training.checkpoint import load_trainer_state
from qkv.training.config import TrainConfig
from qkv.training.optim import build_optimizer, lr_at, param_groups
from qkv.training.trainer import Trainer
from trainer_fixtures import FixedBatches, lm_loss, tiny_gpt, train_cfg

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


def test_micro_batches_are_weighted_by_their_loss_terms():
    """With `loss_terms`, a step over two micro-batches of unequal target counts (padding -100) takes the mean
    over every target of the step, exactly what one batch of both gives; weighting each micro-batch alike,
    as a mean of means, would not."""
    class Padded(FixedBatches):
        def __init__(self, micro):
            super().__init__(micro)
            self.y = self.y.clone()
            self.y[:4, 2:] = -100  # the first half of the rows keep 2 of their 8 targets

    counts = lambda b: int((b["targets"] != -100).sum())  # noqa: E731
    cfg = dict(eps=1.0, grad_clip=0.0, weight_decay=0.0)
    whole = tiny_gpt()
    r1 = Trainer(whole, lm_loss, Padded(8), train_cfg(**cfg), loss_terms=counts).fit()
    split = tiny_gpt()
    r2 = Trainer(split, lm_loss, Padded(4), train_cfg(grad_accum=2, **cfg), loss_terms=counts).fit()
    alike = tiny_gpt()
    r3 = Trainer(alike, lm_loss, Padded(4), train_cfg(grad_accum=2, **cfg)).fit()
    assert r2.losses[0][1] == pytest.approx(r1.losses[0][1], abs=1e-6)
    for a, b in zip(whole.parameters(), split.parameters(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-7, rtol=1e-5)
    assert r3.losses[0][1] != pytest.approx(r1.losses[0][1], abs=1e-3)  # the mean of means differs


# ---------------------------------------------------------------------------------------------------------
# the time budget and torch.compile (fake clock: no real waiting)


class FakeClock:
    """perf_counter() that advances `tick` seconds per call: the loop's view of time, deterministic."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def metrics(run_dir) -> list[dict]:
    import json

    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _budget_run(tmp_path, monkeypatch, resume=False, max_minutes=1.0, **kw):
    monkeypatch.setattr(trainer_mod, "time", SimpleNamespace(perf_counter=FakeClock(0.5).perf_counter))
    cfg = train_cfg(max_steps=10_000, max_minutes=max_minutes, schedule_by="time", warmup_steps=3, lr=1e-2,
                    min_lr=1e-3, eval_interval=25, log_interval=1, **kw)
    save = lambda m, step: save_run(tmp_path, m, metadata={"step": str(step)})  # noqa: E731
    evals = []
    result = Trainer(tiny_gpt(), lm_loss, FixedBatches(2), cfg, run_dir=tmp_path, save_model=save, resume=resume,
                     evaluate=lambda m, full, means: evals.append(full) or {"val_loss": 1.0}).fit()
    return result, cfg, evals


# ---------------------------------------------------------------------------------------------------------
# the time budget


def test_time_budget_stops_saves_and_decays_to_min_lr(tmp_path, monkeypatch):
    result, cfg, evals = _budget_run(tmp_path, monkeypatch)
    assert result.stopped_by == "max_minutes" and 10 < result.step < 10_000
    assert result.elapsed_s >= 60.0
    recs = metrics(tmp_path)
    steps = [r for r in recs if "loss" in r]
    assert steps[-1]["step"] == result.step  # the last step is logged even off the log interval
    assert [r for r in recs if "val_loss" in r][-1]["step"] == result.step and evals[-1] is True  # a full eval
    state, _ = load_trainer_state(tmp_path)
    assert state["step"] == result.step  # and a checkpoint at the step it stopped
    lrs = [r["lr"] for r in steps]
    assert lrs[:3] == pytest.approx([cfg.lr * (s + 1) / 4 for s in range(3)])  # warm-up by steps
    decay = lrs[3:]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False)), "the decay must be monotone"
    assert decay[0] == pytest.approx(cfg.lr, rel=1e-3)
    assert decay[-1] == pytest.approx(cfg.min_lr, abs=2e-4)  # the budget is spent: the floor is reached


def test_time_schedule_resumes_where_it_stopped(tmp_path, monkeypatch):
    """The checkpoint holds the schedule's clock (elapsed time and the end of warm-up), so the first step
    after --resume uses the learning rate of the saved elapsed time, not the peak again."""
    first, cfg, _ = _budget_run(tmp_path, monkeypatch, max_minutes=1.0)
    state, _ = load_trainer_state(tmp_path)
    assert state["warm_end_s"] is not None and state["elapsed_s"] >= 60.0
    # resume with a larger budget (allowed): the decay is stretched over it, from where it stands
    resumed, cfg2, _ = _budget_run(tmp_path, monkeypatch, resume=True, max_minutes=2.0)
    assert resumed.step > first.step and resumed.elapsed_s > state["elapsed_s"]
    after = [r for r in metrics(tmp_path) if "loss" in r and r["step"] > first.step]
    assert after[0]["step"] == first.step + 1
    # the schedule's value at the saved elapsed time, give or take the few 0.5 s clock ticks between fit()'s
    # start and the first step
    at = lambda t: lr_at(first.step, cfg2, (t - state["warm_end_s"]) / (120.0 - state["warm_end_s"]))  # noqa: E731
    assert at(state["elapsed_s"] + 1.5) <= after[0]["lr"] <= at(state["elapsed_s"])
    assert after[0]["lr"] < 0.75 * cfg.lr  # half the longer budget is already behind it: far below the peak
    assert after[0]["elapsed_s"] > state["elapsed_s"]  # elapsed time continues from the saved value


def test_a_time_budget_shows_a_clock_bar_and_a_step_budget_a_step_bar(tmp_path, monkeypatch, capsys):
    """With the decay over the clock, the bar counts seconds of the budget (a steps bar out of max_steps would
    read 0% and an ETA of days), and shows the step in its postfix; by steps, it counts steps."""
    (tmp_path / "clock").mkdir()
    _budget_run(tmp_path / "clock", monkeypatch, progress=True)
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("train: 100%|") and "step=" in last and "/10000" not in last, last
    monkeypatch.setattr(trainer_mod, "time", SimpleNamespace(perf_counter=FakeClock(0.5).perf_counter))
    (tmp_path / "steps").mkdir()
    cfg = train_cfg(max_steps=6, warmup_steps=2, log_interval=1, eval_interval=6, progress=True)
    Trainer(tiny_gpt(), lm_loss, FixedBatches(2), cfg, run_dir=tmp_path / "steps",
            save_model=lambda m, s: save_run(tmp_path / "steps", m, metadata={"step": str(s)})).fit()
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("train: 100%|") and "6/6" in last and "step=" not in last, last


def test_max_minutes_without_time_schedule_still_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "time", SimpleNamespace(perf_counter=FakeClock(7.0).perf_counter))
    cfg = train_cfg(max_steps=1000, max_minutes=1.0, warmup_steps=2, log_interval=5, eval_interval=1000)
    result = Trainer(tiny_gpt(), lm_loss, FixedBatches(2), cfg, run_dir=tmp_path,
                     save_model=lambda m, s: save_run(tmp_path, m, metadata={"step": str(s)})).fit()
    assert result.stopped_by == "max_minutes" and result.step < 20
    assert load_trainer_state(tmp_path)[0]["step"] == result.step


# ---------------------------------------------------------------------------------------------------------
# torch.compile


def test_compile_failure_falls_back_to_eager_with_a_message(monkeypatch):
    def boom(model, *a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(torch, "compile", boom)
    logs = []
    eager = Trainer(tiny_gpt(), lm_loss, FixedBatches(8), train_cfg(max_steps=3)).fit()
    fallback = Trainer(tiny_gpt(), lm_loss, FixedBatches(8), train_cfg(max_steps=3, compile=True),
                       log=logs.append).fit()
    assert any("torch.compile failed (RuntimeError: boom); running eager" in line for line in logs), logs
    assert fallback.losses == eager.losses


class RandomBatches(FixedBatches):
    """FixedBatches with a peek, so the compile trial runs on a real batch."""

    def peek_batch(self):
        pos, calls = self.pos, self.calls
        batch = self.next_batch()
        self.pos, self.calls = pos, calls
        return batch


def noisy_loss(model, batch):
    """A loss that draws from torch's global RNG (as dropout and diffusion's noise do) and reports a
    running statistic through info, as translation's unsmoothed NLL does."""
    x, y = batch["idx"], batch["targets"]
    loss = model(x, y)[1] * (1.0 + 0.1 * torch.rand(()))
    return loss, {"tokens": x.numel(), "nll": (loss.item() * x.numel(), x.numel())}


def test_compile_trial_leaves_no_trace(monkeypatch):
    """compile on and compile off train the same run: the trial call on a peeked batch restores every RNG,
    consumes no batch and adds nothing to the running statistics (torch.compile itself stubbed out, so
    only the trial differs)."""
    monkeypatch.setattr(torch, "compile", lambda model, *a, **k: model)
    runs = []
    for compile_ in (False, True):
        seen = []
        evaluate = lambda m, full, means, seen=seen: seen.append(means) or {"val_loss": 1.0}  # noqa: E731
        result = Trainer(tiny_gpt(dropout=0.1), noisy_loss, RandomBatches(2),
                         train_cfg(max_steps=4, eval_interval=2, compile=compile_), evaluate=evaluate).fit()
        runs.append((result.losses, seen))
    assert runs[0] == runs[1]
    assert len(runs[0][1]) == 2 and runs[0][1][0]["nll"] > 0


def test_running_means_are_token_weighted_and_reset_at_each_evaluation():
    seen = []
    Trainer(tiny_gpt(), noisy_loss, RandomBatches(2), train_cfg(max_steps=4, eval_interval=2),
            evaluate=lambda m, full, means: seen.append(means) or {}).fit()
    assert [set(m) for m in seen] == [{"nll"}, {"nll"}]
    assert seen[0] != seen[1]
