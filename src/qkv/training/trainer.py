"""The training loop, for every model qkv has: it knows nothing about GPTs, translators or denoisers.

It is handed:

- a model;
- a loss function ``loss_fn(model, batch) -> (loss, info)``: the mean over the batch's loss terms (target
  tokens, images). It must not change any state besides the model's activations: ``info["tokens"]`` counts
  the batch for throughput, and any ``info[name] = (total, count)`` pair is summed by the loop (over
  processes too), which hands the means since the last evaluation to ``evaluate`` (translation logs its
  unsmoothed training NLL that way, and minimum risk training its expected risk) and shows this process's on
  the progress bar. So a trial call (torch.compile's) leaves no trace;
- optionally ``loss_terms(batch) -> int``, how many terms that mean averages. The loop then weights each
  micro-batch and process by it, so a step's loss and gradient are the mean over every term of the global
  batch, however it is split (micro-batches, processes); without it every micro-batch weighs the same;
- a batch source (`BatchSource`: ``next_batch()`` -> a batch dict (`qkv.data.batch`), ``state_dict()``,
  ``load_state_dict()``, optionally ``peek_batch()``);
- an optional ``evaluate(model, full, train_means) -> metrics`` (``full``: also the slow figures);
- a ``save_model(model, step, weights=True)`` that writes weights and config (``weights=False`` under FSDP,
  whose weights the sharded checkpoint holds);
- an optional ``on_step(model, step)``, run after every optimizer step (diffusion updates its weight
  average there).

It owns the rest: the optimizer (AdamW, or Muon with AdamW) and the schedule, gradient accumulation and
clipping, autocast, torch.compile, DDP or FSDP (``train.parallel``, `qkv.training.sharding`), the time budget,
NaN detection, progress bar, ``metrics.jsonl``, ``loss.png``, per-process peak memory, and crash-safe
checkpoints with exact resume — also under a time budget: the schedule's clock (elapsed time and the moment
warm-up ended) is saved with every checkpoint. Under FSDP the weights and moments go to a sharded checkpoint
(`qkv.training.checkpoint`), which resumes at any process count.

Under FSDP the task's code never sees a shard: ``evaluate`` gets a whole copy (`sharding.replica`), ``on_step``
runs with the weights gathered in place (`sharding.gathered`), and after training ``Trainer.model`` is a whole copy.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from qkv import hardware
from qkv.data.batch import to_device
from qkv.errors import QKVError
from qkv.runs import METRICS_FILE, append_jsonl, atomic_write_bytes
from qkv.training import distributed, sharding
from qkv.training.checkpoint import (
    data_state_of,
    drop_stale_shards,
    load_sharded_state,
    load_trainer_state,
    restore_optimizer,
    rng_state,
    save_sharded_state,
    save_trainer_state,
    set_rng_state,
)
from qkv.training.config import TrainConfig
from qkv.training.optim import build_optimizer, lr_at
from qkv.training.precision import resolve_precision
from qkv.training.protocols import BatchSource, LossFn


@dataclass
class TrainResult:
    step: int  # optimizer steps done (in total, across resumes)
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, train loss) of this session
    evals: list[dict] = field(default_factory=list)  # metrics of each evaluation, with "step"
    elapsed_s: float = 0.0  # wall time of training, across resumes
    stopped_by: str = "max_steps"  # "max_steps" or "max_minutes"


@dataclass
class _Loop:
    """What the loop carries from one step to the next."""

    step: int = 0
    elapsed_before: float = 0.0  # seconds trained before this session (a resume's checkpoint says)
    warm_end: float | None = None  # elapsed seconds at which warm-up ended (the time schedule's origin)
    t_start: float = 0.0  # perf_counter() when this session started
    t_log: float = 0.0  # ... when tokens_since was last reset
    step_elapsed: float = 0.0  # the clock when the last step ended (before its evaluation): what a checkpoint saves
    tokens_since: int = 0  # tokens (or images) trained since the last metrics line
    running: dict[str, list[float]] = field(default_factory=dict)  # info name -> [total, count] since the last eval
    result: TrainResult = field(default_factory=lambda: TrainResult(step=0))

    def elapsed(self, now: float | None = None) -> float:
        """The run's clock: seconds trained, across resumes."""
        return self.elapsed_before + (time.perf_counter() if now is None else now) - self.t_start


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train_data: BatchSource,
        cfg: TrainConfig,
        *,
        run_dir: str | Path | None = None,
        evaluate: Callable[[nn.Module, bool, dict], dict] | None = None,
        save_model: Callable[[nn.Module, int], None] | None = None,
        resume: bool = False,
        dist_info: distributed.DistInfo | None = None,
        device: torch.device | None = None,
        log: Callable[[str], None] | None = None,
        on_step: Callable[[nn.Module, int], None] | None = None,
        loss_terms: Callable[[dict], int] | None = None,
    ):
        self.model, self.loss_fn, self.data, self.cfg = model, loss_fn, train_data, cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.evaluate, self.save_model, self.resume = evaluate, save_model, resume
        self.dist = dist_info or distributed.DistInfo()
        self.device = device or distributed.pick_device(cfg.device, self.dist.local_rank)
        self._log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
        self.on_step = on_step  # called with (raw model, step) after every optimizer step (e.g. an EMA)
        self.loss_terms = loss_terms  # batch -> number of terms its mean loss averages (None: all alike)

    def log(self, msg: str) -> None:
        if self.dist.is_main:
            self._log(msg)

    # ---------------------------------------------------------------- checkpoints
    def _save(self, raw: nn.Module, optimizer, step: int, clock: dict) -> None:
        if self.run_dir is None or self.save_model is None:
            return
        if self.sharded:  # every process writes its shards; then the main process, the state that points at them
            shards = save_sharded_state(self.run_dir, step, raw, optimizer, self.dist)
            if self.dist.is_main:
                self.save_model(raw, step, weights=False)
                save_trainer_state(self.run_dir, step, None, self.data.state_dict(), {**clock, "sharded": shards})
                drop_stale_shards(self.run_dir, shards)
            return
        if self.dist.is_main:
            self.save_model(raw, step)  # weights first, then the state that points at them
            save_trainer_state(self.run_dir, step, optimizer, self.data.state_dict(), clock)

    def _write_metrics(self, record: dict) -> None:
        if self.dist.is_main and self.run_dir is not None:
            append_jsonl(self.run_dir / METRICS_FILE, record)

    def _trim_metrics(self, step: int) -> None:
        """After a resume, forget lines logged past the checkpoint (they will be logged again)."""
        path = self.run_dir / METRICS_FILE if self.run_dir else None
        if not self.dist.is_main or path is None or not path.exists():
            return
        keep = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln and json.loads(ln)["step"] <= step]
        atomic_write_bytes(path, "".join(ln + "\n" for ln in keep).encode("utf-8"))

    # ---------------------------------------------------------------- the loop
    def fit(self) -> TrainResult:
        """Train until max_steps or the time budget: each step is `_learning_rate`, `_forward_backward` over the
        micro-batches, `_optimizer_step`, `_log_step`, and at evaluation steps `_evaluate_and_save`."""
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        raw = self.model.to(self.device)
        precision = resolve_precision(cfg.precision, self.device)
        model = self._wrap(raw, precision.dtype)  # sharded first: the optimizer holds the shards
        optimizer = build_optimizer(raw, cfg, self.device.type)
        loop = self._start(raw, optimizer)
        autocast, scaler = self._precision(precision, optimizer)
        loop.t_start = loop.t_log = time.perf_counter()  # compiling is not training time
        hardware.reset_peak_memory(self.device)  # peak memory counts the training steps, from here
        bar = self._progress_bar(loop)
        model.train()
        try:
            while loop.step < cfg.max_steps:
                lr = self._learning_rate(optimizer, loop)
                loss = self._forward_backward(model, autocast, scaler, loop)
                grad_norm = self._optimizer_step(raw, optimizer, scaler)
                loop.step += 1
                if self.on_step is not None:
                    with sharding.gathered(raw):
                        self.on_step(raw, loop.step)
                loop.result.losses.append((loop.step, loss))
                out_of_time = self._log_step(loop, loss, lr, grad_norm, bar)
                last = loop.step == cfg.max_steps or out_of_time
                if loop.step % cfg.eval_interval == 0 or last:
                    self._evaluate_and_save(model, raw, optimizer, loop, last)
                if out_of_time:
                    loop.result.stopped_by = "max_minutes"
                    self.log(f"time budget of {cfg.max_minutes} min reached at step {loop.step}")
                    break
        finally:
            bar.close()
        if self.sharded:  # a whole copy from here on: the task's summary and samples run on the main process only
            self.model = sharding.replica(raw, self.device)
        loop.result.step = loop.step
        loop.result.elapsed_s = loop.elapsed()
        return loop.result

    def _progress_bar(self, loop: _Loop) -> tqdm:
        """Steps out of max_steps; or, when the learning rate decays over the time budget (schedule_by = "time":
        the clock ends the run, not a step count), seconds out of max_minutes, with the step in the postfix."""
        cfg = self.cfg
        common = dict(desc="train", disable=not (cfg.progress and self.dist.is_main), dynamic_ncols=True,
                      file=sys.stderr)
        if cfg.schedule_by == "time":
            return tqdm(total=round(cfg.max_minutes * 60), initial=min(loop.elapsed_before, cfg.max_minutes * 60),
                        unit="s", bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}",
                        **common)
        return tqdm(total=cfg.max_steps, initial=loop.step, unit="step", **common)

    def _start(self, raw: nn.Module, optimizer) -> _Loop:
        """The loop's state: fresh (seeded), or the checkpoint's (optimizer, data position, RNGs, clock)."""
        loop = _Loop()
        if self.resume:
            state, tensors = load_trainer_state(self.run_dir)
            if self.sharded:
                load_sharded_state(self.run_dir, state, raw, optimizer)
            elif state.get("sharded"):
                raise QKVError(f"{self.run_dir} was trained with parallel = 'fsdp'; resume it with fsdp")
            else:
                restore_optimizer(optimizer, state, tensors)
            self.data.load_state_dict(data_state_of(tensors))
            set_rng_state(tensors, state["rng"])
            loop.step, loop.elapsed_before = int(state["step"]), float(state.get("elapsed_s", 0.0))
            loop.warm_end = state.get("warm_end_s")
            self._saved_step = loop.step  # the checkpoint we resumed from is the last good one until the next save
            self.log(f"resumed from {self.run_dir} at step {loop.step}")
        else:
            torch.manual_seed(self.cfg.seed + self.dist.rank)
        self._trim_metrics(loop.step)  # a fresh run (step 0) starts a fresh metrics.jsonl
        loop.result = TrainResult(step=loop.step)
        return loop

    sharded: bool = False  # train.parallel = "fsdp": `raw` is an FSDPModule

    def _wrap(self, raw: nn.Module, amp_dtype: torch.dtype | None) -> nn.Module:
        """The module the loop calls: `raw` (sharded in place under FSDP), compiled if asked (and if compiling
        works), in DDP under torchrun."""
        cfg = self.cfg
        if cfg.parallel == "fsdp":
            units = sharding.shard(raw, reshard_after_forward=cfg.reshard_after_forward, device=self.device,
                                   param_dtype=amp_dtype if amp_dtype == torch.bfloat16 else None)
            self.sharded = True
            world = self.dist.world_size
            self.log(f"fsdp: {units + 1} units sharded {world} way(s)" if world > 1 else
                     f"fsdp on one process: one shard holds the whole model ({units + 1} units); start it with "
                     "torchrun --nproc_per_node N to shard it N ways")
        model = self._compile(raw) if cfg.compile else raw
        if self.dist.enabled and not self.sharded:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return model

    def _precision(self, precision, optimizer) -> tuple[Callable, torch.amp.GradScaler | None]:
        """(a context manager factory for the forward passes, the fp16 gradient scaler or None)."""
        if self.cfg.precision != "fp32":
            self.log(precision.reason)
        amp_dtype = precision.dtype
        if amp_dtype == torch.float16 and self.sharded:
            raise QKVError("fp16 loss scaling does not run under parallel = 'fsdp'; use precision = 'bf16' or 'fp32'")
        scaler = torch.amp.GradScaler(self.device.type) if amp_dtype == torch.float16 else None
        if scaler is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise QKVError("optimizer = 'muon' does not run with fp16 loss scaling; use precision = 'bf16' or 'fp32'")
        if amp_dtype is None:
            return contextlib.nullcontext, scaler
        return (lambda: torch.autocast(self.device.type, dtype=amp_dtype)), scaler

    def _learning_rate(self, optimizer, loop: _Loop) -> float:
        """This step's rate (warm-up, then cosine by steps or by the time budget), set on every group."""
        cfg = self.cfg
        time_fraction = None
        if cfg.schedule_by == "time" and loop.step >= cfg.warmup_steps:
            elapsed = loop.elapsed()
            loop.warm_end = elapsed if loop.warm_end is None else loop.warm_end
            budget_s = cfg.max_minutes * 60
            time_fraction = (elapsed - loop.warm_end) / max(1e-9, budget_s - loop.warm_end)
        lr = lr_at(loop.step, cfg, time_fraction)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _forward_backward(self, model: nn.Module, autocast, scaler, loop: _Loop) -> float:
        """One step's micro-batches forward and backward, each weighted by its share of the global batch's loss
        terms; returns the step's loss (the mean over every term of every process)."""
        cfg, device = self.cfg, self.device
        # the step's micro-batches, and how many loss terms each holds in the global batch
        batches = [to_device(self.data.next_batch(), device) for _ in range(cfg.grad_accum)]
        counts = [self.loss_terms(b) for b in batches] if self.loss_terms else [1] * cfg.grad_accum
        total = distributed.sum_across(float(sum(counts)), self.dist, device)
        loss_total = 0.0
        for micro, (batch, n) in enumerate(zip(batches, counts, strict=True)):
            sync = micro == cfg.grad_accum - 1 or not self.dist.enabled
            if self.sharded:  # FSDP: reduce-scatter the gradients only after the last micro-batch, as DDP does
                self.model.set_requires_gradient_sync(sync)
            with (contextlib.nullcontext() if sync or self.sharded else model.no_sync()), autocast():
                loss, info = self.loss_fn(model, batch)
            # weight n / total of the global mean; DDP and FSDP average the processes' gradients, hence × world.
            # Written as a division: with equal micro-batches it is exactly loss / grad_accum
            share = total / (n * self.dist.world_size)
            scaled = loss / share
            (scaler.scale(scaled) if scaler else scaled).backward()
            loss_total += loss.item() / share
            loop.tokens_since += int(info.get("tokens", 0)) * self.dist.world_size
            for name, value in info.items():
                if isinstance(value, tuple):  # (total, count): a running mean the loop keeps
                    acc = loop.running.setdefault(name, [0.0, 0.0])
                    acc[0], acc[1] = acc[0] + float(value[0]), acc[1] + float(value[1])
        loss_total = distributed.mean_across(loss_total, self.dist, device)
        if not math.isfinite(loss_total):
            raise self._diverged(f"loss became {loss_total} at step {loop.step + 1}")
        return loss_total

    def _optimizer_step(self, raw: nn.Module, optimizer, scaler) -> float:
        """Clip the gradient norm, step the optimizer (through the fp16 scaler if any), free the gradients.
        Returns the global gradient norm before clipping (what a sum-instead-of-mean reduction would double)."""
        if scaler:
            scaler.unscale_(optimizer)
        grad_norm = sharding.clip_grad_norm(list(raw.parameters()), self.cfg.grad_clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _log_step(self, loop: _Loop, loss: float, lr: float, grad_norm: float, bar) -> bool:
        """A metrics.jsonl line every log_interval steps (and at the end); the progress bar. Returns whether the
        time budget is spent."""
        cfg = self.cfg
        now = time.perf_counter()
        elapsed = loop.step_elapsed = loop.elapsed(now)
        out_of_time = cfg.max_minutes is not None and elapsed >= cfg.max_minutes * 60
        if loop.step % cfg.log_interval == 0 or loop.step == cfg.max_steps or out_of_time:
            tps = loop.tokens_since / max(now - loop.t_log, 1e-9)
            loop.tokens_since, loop.t_log = 0, now
            norm = grad_norm if math.isfinite(grad_norm) else None  # fp16's skipped steps: inf, not JSON
            self._write_metrics({"step": loop.step, "loss": loss, "lr": lr, "grad_norm": norm,
                                 "tokens_per_s": round(tps, 1), "elapsed_s": round(elapsed, 3)})
            running_means = {k: f"{t / c:.4f}" for k, (t, c) in loop.running.items() if c}  # since the last eval
            bar.set_postfix({**({"step": loop.step} if cfg.schedule_by == "time" else {}), "loss": f"{loss:.4f}",
                             **running_means, "tok_s": f"{tps:,.0f}"}, refresh=False)
        bar.update(min(elapsed, bar.total) - bar.n if cfg.schedule_by == "time" else 1)
        return out_of_time

    def _evaluate_and_save(self, model: nn.Module, raw: nn.Module, optimizer, loop: _Loop, last: bool) -> None:
        """Evaluate (full every full_eval_interval steps and at the end), log it, refuse NaN weights or losses
        (the last good checkpoint is kept), then write a checkpoint and wait for every process."""
        cfg, device = self.cfg, self.device
        memory = self._peak_memory()  # of training so far, before the evaluation gathers anything
        if self.evaluate is not None:
            model.eval()
            sums = {k: distributed.sum_across(t, self.dist, device) for k, (t, _) in sorted(loop.running.items())}
            counts = {k: distributed.sum_across(c, self.dist, device) for k, (_, c) in sorted(loop.running.items())}
            means = {k: sums[k] / counts[k] for k in sums if counts[k]}
            loop.running.clear()
            t_eval = time.perf_counter()
            full_eval_every = cfg.full_eval_interval or cfg.eval_interval
            whole = sharding.replica(raw, device).eval() if self.sharded else raw
            metrics = self.evaluate(whole, loop.step % full_eval_every == 0 or last, means)
            del whole
            model.train()
            # elapsed_s: the run's clock once this evaluation is done (evaluations count); eval_s: its cost
            done = time.perf_counter()
            record = {"step": loop.step, **metrics, **memory, "elapsed_s": round(loop.elapsed(done), 3),
                      "eval_s": round(done - t_eval, 3)}
            loop.result.evals.append(record)
            self._write_metrics(record)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            self.log(f"step {loop.step}: {shown}")
            bad = [k for k, v in metrics.items() if "loss" in k and isinstance(v, float) and not math.isfinite(v)]
            if bad:  # these weights give NaN/inf: don't let them replace the last good checkpoint
                raise self._diverged(f"{bad[0]} became {metrics[bad[0]]} at step {loop.step}")
        local = (p.to_local() if hasattr(p, "to_local") else p for p in raw.parameters())  # FSDP: this shard
        bad_weights = not all(bool(torch.isfinite(t).all()) for t in local)
        if distributed.sum_across(float(bad_weights), self.dist, device) if self.sharded else bad_weights:
            raise self._diverged(f"weights became NaN/inf at step {loop.step}")
        self._save(raw, optimizer, loop.step, {"elapsed_s": loop.step_elapsed, "warm_end_s": loop.warm_end})
        self._saved_step = loop.step
        distributed.barrier(self.dist)
        hardware.reset_peak_memory(device)  # the next figure is the training steps' since this evaluation

    _saved_step: int = 0

    def _peak_memory(self) -> dict:
        """{"peak_mem_mb": the largest per-process peak, "peak_mem_mb_per_rank": [every process's]}: resident
        memory on a CPU, `max_memory_allocated` on a GPU (`hardware.peak_memory_mb`)."""
        mine = hardware.peak_memory_mb(self.device)
        if mine is None:
            return {}
        ranks = distributed.gather_floats(mine, self.dist, self.device)
        return {"peak_mem_mb": round(max(ranks), 1), "peak_mem_mb_per_rank": [round(x, 1) for x in ranks]}

    def _diverged(self, what: str) -> QKVError:
        kept = f"the last good checkpoint (step {self._saved_step}) is kept" if self._saved_step else \
            "no checkpoint had been written yet"
        where = f" in {self.run_dir}" if self.run_dir and self._saved_step else ""
        return QKVError(f"{what}; training stopped and {kept}{where}")

    def _compile(self, raw: nn.Module) -> nn.Module:
        """torch.compile(raw), tried on one peeked batch; the eager model if compiling fails.

        The trial leaves no trace: the batch source is only peeked, every RNG (dropout, diffusion's noise)
        is restored afterwards, and `loss_fn` keeps no running state (its statistics go through `info`),
        so a run trains the same batches with the same noise whether compile is on or off.
        """
        tensors, js = rng_state()
        try:
            compiled = torch.compile(raw)
            # compile errors surface on the first call: try one forward now and fall back if it fails
            batch = self.data.peek_batch() if hasattr(self.data, "peek_batch") else None
            if batch is not None:
                with torch.no_grad():
                    self.loss_fn(compiled, to_device(batch, self.device))
            return compiled
        except Exception as e:  # noqa: BLE001 - any backend failure means: run eager
            self.log(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); running eager")
            return raw
        finally:
            set_rng_state(tensors, js)
