"""The Trainer features every shipped preset relies on: the wall-clock budget and its time-based schedule
(with a fake clock: no real waiting), exact resume of that schedule, precision selection and autocast,
and torch.compile (its fallback, and a trial call that leaves no trace)."""

import math
from types import SimpleNamespace

import pytest
import torch
from test_trainer_units import FixedBatches, lm_loss, tiny_gpt, train_cfg

import qkv.training.trainer as trainer_mod
from qkv.models.io import save_run
from qkv.training import precision as precision_mod
from qkv.training.checkpoint import load_trainer_state
from qkv.training.optim import lr_at
from qkv.training.precision import cpu_bf16_units, resolve_precision
from qkv.training.trainer import Trainer


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


def test_max_minutes_without_time_schedule_still_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "time", SimpleNamespace(perf_counter=FakeClock(7.0).perf_counter))
    cfg = train_cfg(max_steps=1000, max_minutes=1.0, warmup_steps=2, log_interval=5, eval_interval=1000)
    result = Trainer(tiny_gpt(), lm_loss, FixedBatches(2), cfg, run_dir=tmp_path,
                     save_model=lambda m, s: save_run(tmp_path, m, metadata={"step": str(s)})).fit()
    assert result.stopped_by == "max_minutes" and result.step < 20
    assert load_trainer_state(tmp_path)[0]["step"] == result.step


# ---------------------------------------------------------------------------------------------------------
# precision


def _cpuinfo(tmp_path, flags: str):
    p = tmp_path / "cpuinfo"
    p.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n")
    return str(p)


@pytest.mark.parametrize(("flags", "units"), [
    ("avx2 avx512f amx_bf16 amx_tile avx512_bf16", ["AMX-BF16", "AVX512-BF16"]),
    ("avx2 avx512f avx512_bf16", ["AVX512-BF16"]),  # AMD Zen 4/5
    ("avx2 fma", []),  # AVX2 only: bf16 is emulated
])
def test_cpu_bf16_units_read_the_cpu_flags(tmp_path, flags, units):
    assert cpu_bf16_units(_cpuinfo(tmp_path, flags)) == units


def test_cpu_bf16_units_without_cpuinfo_is_none(tmp_path):
    assert cpu_bf16_units(str(tmp_path / "missing")) == []


@pytest.mark.parametrize(("setting", "units", "dtype", "says"), [
    ("fp32", ["AMX-BF16"], None, "fp32"),
    ("auto", ["AMX-BF16", "AVX512-BF16"], torch.bfloat16, "this CPU has AMX-BF16, AVX512-BF16"),
    ("auto", ["AVX512-BF16"], torch.bfloat16, "this CPU has AVX512-BF16"),
    ("auto", [], None, "no bf16 units"),
    ("bf16", [], torch.bfloat16, "emulated"),
    ("bf16", ["AVX512-BF16"], torch.bfloat16, "this CPU has AVX512-BF16"),
    ("fp16", [], torch.float16, "emulated"),
])
def test_resolve_precision_on_cpu(monkeypatch, setting, units, dtype, says):
    monkeypatch.setattr(precision_mod, "cpu_bf16_units", lambda: units)
    p = resolve_precision(setting, torch.device("cpu"))
    assert p.dtype is dtype and says in p.reason and p.name == {None: "fp32"}.get(dtype, p.name)


def test_auto_precision_is_logged_with_its_reason(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_bf16_units", lambda: [])
    logs = []
    Trainer(tiny_gpt(), lm_loss, FixedBatches(8), train_cfg(precision="auto"), log=logs.append).fit()
    assert any(line.startswith("precision: fp32 (auto: this CPU has no bf16 units") for line in logs), logs


@pytest.mark.parametrize("setting", ["bf16", "fp16"])
def test_autocast_trains_close_to_fp32_and_keeps_fp32_master_weights(setting):
    """Approximate by design: autocast rounds matmul inputs to 8 (bf16) or 11 (fp16) significant bits."""
    def run(precision):
        model = tiny_gpt()
        result = Trainer(model, lm_loss, FixedBatches(8), train_cfg(max_steps=3, precision=precision)).fit()
        return result, model

    ref, _ = run("fp32")
    low, model = run(setting)
    assert all(math.isfinite(loss) for _, loss in low.losses)
    assert low.losses[0][1] == pytest.approx(ref.losses[0][1], abs=0.05)
    assert low.losses[0][1] != ref.losses[0][1]  # it really ran in the low precision
    assert all(p.dtype == torch.float32 for p in model.parameters())


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
