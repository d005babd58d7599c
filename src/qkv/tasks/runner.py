"""`run_task`: what every training run does, whatever its task, written once.

    cfg = from_dict(get_task("translate").config_class, load_preset("multi30k-de-en"))
    trained = run_task(cfg, "runs/multi30k")          # or resume=True, init_from=..., log=...

It owns, for every task:

- refusing to overwrite a trained run, and refusing a resume whose config differs from the run's (the same
  one-line error from Python as from `qkv train --resume`);
- DDP or FSDP under torchrun: joining the process group (FSDP: a group of one without torchrun), and leaving
  it however training ends; refusing a process count that cannot share the global batch equally;
- the per-process thread split: on a CPU each of N processes gets cores / N torch threads (two processes
  each spinning on every core slow each other down 10×, docs/design.md);
- the tokenizers: built and written by the main process, read by the others after a barrier;
- seeding: the same initial weights on every process;
- the global batch: `train.batch_size` (or a task's token budget) is the batch of a whole step, over
  micro-batches and processes; every batch source draws the global batch and keeps this process's rows;
- the Trainer, with the task's loss, evaluation, checkpoint writer and loss weighting.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from qkv.config import from_dict, to_dict
from qkv.errors import QKVError
from qkv.runs import has_weights, read_config
from qkv.tasks.base import Context, Trained, a_, config_sections, get_task, task_of
from qkv.training import distributed
from qkv.training.trainer import Trainer

# settings that may change when a run is resumed; anything else must match the run's config
RESUME_MAY_CHANGE = {"train.max_steps", "train.max_minutes", "train.progress", "train.device", "train.threads",
                     "train.compile", "sample", "decode"}


def run_task(cfg, run_dir: str | Path, *, resume: bool = False, init_from: str | Path | None = None,
             fit_vocab: bool = True, log=None) -> Trained:
    """Train (or resume) the run `cfg` describes in `run_dir`. Returns the task, the model and the result."""
    task_cls = get_task(cfg.task)
    run_dir = Path(run_dir)
    if resume:
        check_resume(cfg, run_dir)
    elif has_weights(run_dir):
        raise QKVError(f"{run_dir} already holds a trained model; resume it, or train into another directory")
    if init_from is not None and not task_cls.supports_init_from:
        raise QKVError(f"starting from another run (init_from) is not supported for the {cfg.task} task")
    if not getattr(getattr(cfg, "data", None), "batch_tokens", None):  # token-budget batches vary in rows anyway
        check_world_size(cfg.train)
    dist_info, device = distributed.setup(cfg.train.device, cfg.train.parallel)
    ctx = Context(run_dir, dist_info, device, resume, Path(init_from) if init_from and not resume else None,
                  fit_vocab, **({"log": log} if log is not None else {}))
    try:
        split_threads(cfg.train, dist_info, device, ctx)
        return train_task(task_cls(cfg, ctx), log)
    finally:
        distributed.teardown(dist_info)


def train_task(task, log=None) -> Trained:
    """The hooks of `task` in order (`qkv.tasks.base`), then its Trainer, inside the process group `run_task` set
    up (a task that trains another one first, as latent diffusion trains its autoencoder, calls this for it)."""
    ctx = task.ctx
    dist_info = ctx.dist
    data = task.read_data()
    if ctx.resume:
        tokenizers = task.load_tokenizers(data)
    else:
        if dist_info.is_main:
            tokenizers = task.make_tokenizers(data)
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
        distributed.barrier(dist_info)
        if not dist_info.is_main:
            tokenizers = task.load_tokenizers(data)
    cfg = task.resolve(data, tokenizers)
    state = task.prepare(cfg, data, tokenizers)
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every process
    model = task.build_model(state)
    batches = task.batches(state, cfg.train.batch_size // cfg.train.grad_accum, dist_info.rank,
                           dist_info.world_size)
    trainer = Trainer(model, partial(task.loss, state), batches, cfg.train, run_dir=ctx.run_dir,
                      evaluate=partial(task.evaluate, state), save_model=partial(task.save, state),
                      resume=ctx.resume, dist_info=dist_info, device=ctx.device, log=log,
                      on_step=partial(task.on_step, state) if task.on_step is not None else None,
                      loss_terms=task.loss_terms)
    result = trainer.fit()
    model = trainer.model  # under FSDP, a whole copy of the sharded model it trained
    task.after_training(state, model)
    # no process leaves the group while another may still be receiving from it (gloo aborts a peer that does)
    distributed.barrier(dist_info)
    return Trained(task, state, model, result, dist_info.is_main)


def check_world_size(train_cfg) -> None:
    """Under torchrun, every process must get the same share of every micro-batch: QKVError unless the process
    count divides train.batch_size / train.grad_accum."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rows = train_cfg.batch_size // train_cfg.grad_accum
    if world > 1 and rows % world:
        raise QKVError(f"train.batch_size {train_cfg.batch_size} (÷ grad_accum {train_cfg.grad_accum} = {rows} rows "
                       f"a micro-batch) cannot be shared equally by {world} processes; make it a multiple of "
                       f"{world * train_cfg.grad_accum}")


def split_threads(train_cfg, dist_info, device, ctx: Context | None = None) -> int:
    """Under torchrun on a CPU, give each process cores / processes torch threads (unless train.threads says)."""
    if dist_info.enabled and train_cfg.threads is None and device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads() // dist_info.world_size))
        if ctx is not None:
            ctx.say(f"torchrun: {dist_info.world_size} processes, {torch.get_num_threads()} torch thread(s) each")
    return torch.get_num_threads()


def saved_run_config(run_dir: str | Path, changes: dict | None = None):
    """The typed run config of an existing run (with `changes`, a nested dict of settings, on top): what a
    resume trains with. The model section is the one saved (sized to the run's tokenizers and data)."""
    from qkv.config import merge

    saved = read_config(run_dir)
    task_cls = get_task(task_of(saved))
    base = config_sections(task_cls.config_class, saved, task_cls.legacy_names)
    return from_dict(task_cls.config_class, merge(base, changes or {}))


def check_resume(cfg, run_dir: Path) -> None:
    """QKVError unless `cfg` is the run's config, up to the settings a resume may change."""
    saved = saved_run_config(run_dir)
    if saved.task != cfg.task:
        raise QKVError(f"cannot resume {run_dir}: it is {a_(saved.task)} run, the config is for {a_(cfg.task)} run")
    fitted = set(get_task(cfg.task).fitted_model_fields)
    for key, old, new in _diff(to_dict(saved), to_dict(cfg)):
        section, _, name = key.partition(".")
        if key in RESUME_MAY_CHANGE or section in RESUME_MAY_CHANGE or (section == "model" and name in fitted):
            continue
        raise QKVError(f"cannot resume {run_dir}: {key} is {new!r} but the run was trained with {old!r}; "
                       "resume needs the same config (or start a new run in another directory)")


def _diff(a: dict, b: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    out = []
    for k in sorted(set(a) | set(b)):
        key = prefix + k
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, key + ".")
        elif va != vb:
            out.append((key, va, vb))
    return out
