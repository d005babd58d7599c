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
- a ``save_model(model, step)`` that writes weights, config and tokenizer;
- an optional ``on_step(model, step)``, run after every optimizer step (diffusion updates its weight
  average there).

It owns the rest: the optimizer (AdamW, or Muon with AdamW) and the schedule, gradient accumulation and
clipping, autocast, torch.compile, DDP, the time budget, NaN detection, progress bar, ``metrics.jsonl``,
``loss.png`` and crash-safe checkpoints with exact resume — also under a time budget: the schedule's clock
(elapsed time and the moment warm-up ended) is saved with every checkpoint.
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

from qkv.data.batch import to_device
from qkv.errors import QKVError
from qkv.runs import METRICS_FILE, append_jsonl, atomic_write_bytes
from qkv.training import distributed
from qkv.training.checkpoint import (
    data_state_of,
    load_trainer_state,
    restore_optimizer,
    rng_state,
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
        if not self.dist.is_main or self.run_dir is None or self.save_model is None:
            return
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
        cfg, device = self.cfg, self.device
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        raw = self.model.to(device)
        optimizer = build_optimizer(raw, cfg, device.type)
        step, elapsed_before = 0, 0.0
        warm_end = None  # elapsed seconds at which warm-up ended (the time schedule's origin), once it has
        if self.resume:
            state, tensors = load_trainer_state(self.run_dir)
            restore_optimizer(optimizer, state, tensors)
            self.data.load_state_dict(data_state_of(tensors))
            set_rng_state(tensors, state["rng"])
            step, elapsed_before = int(state["step"]), float(state.get("elapsed_s", 0.0))
            warm_end = state.get("warm_end_s")
            self._saved_step = step  # the checkpoint we resumed from is the last good one until the next save
            self.log(f"resumed from {self.run_dir} at step {step}")
        else:
            torch.manual_seed(cfg.seed + self.dist.rank)
        self._trim_metrics(step)  # a fresh run (step 0) starts a fresh metrics.jsonl

        model = raw
        if cfg.compile:
            model = self._compile(raw)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        precision = resolve_precision(cfg.precision, device)
        if cfg.precision != "fp32":
            self.log(precision.reason)
        amp_dtype = precision.dtype
        scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
        if scaler is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise QKVError("optimizer = 'muon' does not run with fp16 loss scaling; use precision = 'bf16' or 'fp32'")
        autocast = (
            (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
        )

        result = TrainResult(step=step)
        budget_s = cfg.max_minutes * 60 if cfg.max_minutes else None
        full_eval_every = cfg.full_eval_interval or cfg.eval_interval
        running: dict[str, list[float]] = {}  # info name -> [total, count] since the last evaluation
        t_start = time.perf_counter()
        bar = tqdm(total=cfg.max_steps, initial=step, disable=not (cfg.progress and self.dist.is_main),
                   desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)
        tokens_since, t_log = 0, time.perf_counter()
        model.train()
        while step < cfg.max_steps:
            elapsed = elapsed_before + time.perf_counter() - t_start
            time_fraction = None
            if cfg.schedule_by == "time" and step >= cfg.warmup_steps:
                warm_end = elapsed if warm_end is None else warm_end
                time_fraction = (elapsed - warm_end) / max(1e-9, budget_s - warm_end)
            lr = lr_at(step, cfg, time_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr

            # the step's micro-batches, and how many loss terms each holds in the global batch
            batches = [to_device(self.data.next_batch(), device) for _ in range(cfg.grad_accum)]
            counts = [self.loss_terms(b) for b in batches] if self.loss_terms else [1] * cfg.grad_accum
            total = distributed.sum_across(float(sum(counts)), self.dist, device)
            loss_total = 0.0
            for micro, (batch, n) in enumerate(zip(batches, counts, strict=True)):
                sync = micro == cfg.grad_accum - 1 or not self.dist.enabled
                with (contextlib.nullcontext() if sync else model.no_sync()), autocast():
                    loss, info = self.loss_fn(model, batch)
                # weight n / total of the global mean; DDP averages the processes' gradients, hence × world.
                # Written as a division: with equal micro-batches it is exactly loss / grad_accum
                share = total / (n * self.dist.world_size)
                scaled = loss / share
                (scaler.scale(scaled) if scaler else scaled).backward()
                loss_total += loss.item() / share
                tokens_since += int(info.get("tokens", 0)) * self.dist.world_size
                for name, value in info.items():
                    if isinstance(value, tuple):  # (total, count): a running mean the loop keeps
                        acc = running.setdefault(name, [0.0, 0.0])
                        acc[0], acc[1] = acc[0] + float(value[0]), acc[1] + float(value[1])
            loss_total = distributed.mean_across(loss_total, self.dist, device)
            if not math.isfinite(loss_total):
                bar.close()
                raise self._diverged(f"loss became {loss_total} at step {step + 1}")
            if scaler:
                scaler.unscale_(optimizer)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if self.on_step is not None:
                self.on_step(raw, step)
            result.losses.append((step, loss_total))

            now = time.perf_counter()
            elapsed = elapsed_before + now - t_start
            out_of_time = budget_s is not None and elapsed >= budget_s
            if step % cfg.log_interval == 0 or step == cfg.max_steps or out_of_time:
                tps = tokens_since / max(now - t_log, 1e-9)
                tokens_since, t_log = 0, now
                self._write_metrics({"step": step, "loss": loss_total, "lr": lr, "tokens_per_s": round(tps, 1),
                                     "elapsed_s": round(elapsed, 3)})
                running_means = {k: f"{t / c:.4f}" for k, (t, c) in running.items() if c}  # since the last eval
                bar.set_postfix({"loss": f"{loss_total:.4f}", **running_means, "tok_s": f"{tps:,.0f}"}, refresh=False)
            bar.update(1)

            last = step == cfg.max_steps or out_of_time
            if step % cfg.eval_interval == 0 or last:
                if self.evaluate is not None:
                    model.eval()
                    sums = {k: distributed.sum_across(t, self.dist, device) for k, (t, _) in sorted(running.items())}
                    counts_ = {k: distributed.sum_across(c, self.dist, device) for k, (_, c) in sorted(running.items())}
                    means = {k: sums[k] / counts_[k] for k in sums if counts_[k]}
                    running.clear()
                    t_eval = time.perf_counter()
                    metrics = self.evaluate(raw, step % full_eval_every == 0 or last, means)
                    model.train()
                    # elapsed_s: the run's clock once this evaluation is done (evaluations count); eval_s: its cost
                    done = time.perf_counter()
                    record = {"step": step, **metrics, "elapsed_s": round(elapsed_before + done - t_start, 3),
                              "eval_s": round(done - t_eval, 3)}
                    result.evals.append(record)
                    self._write_metrics(record)
                    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
                    self.log(f"step {step}: {shown}")
                    bad = [k for k, v in metrics.items()
                           if "loss" in k and isinstance(v, float) and not math.isfinite(v)]
                    if bad:  # these weights give NaN/inf: don't let them replace the last good checkpoint
                        bar.close()
                        raise self._diverged(f"{bad[0]} became {metrics[bad[0]]} at step {step}")
                if not all(bool(torch.isfinite(p).all()) for p in raw.parameters()):
                    bar.close()
                    raise self._diverged(f"weights became NaN/inf at step {step}")
                self._save(raw, optimizer, step, {"elapsed_s": elapsed, "warm_end_s": warm_end})
                self._saved_step = step
                distributed.barrier(self.dist)
            if out_of_time:
                result.stopped_by = "max_minutes"
                self.log(f"time budget of {cfg.max_minutes} min reached at step {step}")
                break
        bar.close()
        result.step = step
        result.elapsed_s = elapsed_before + time.perf_counter() - t_start
        return result

    _saved_step: int = 0

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
