"""Tasks: what qkv trains, one module each, and the one registry that maps a run config's ``task`` to it.

    from qkv.tasks import get_task, load_run, run_task

    run = load_run("runs/shakespeare")          # = qkv.load_run: an LMRun, with .generate / .attention / ...
    trained = run_task(cfg, "runs/new")         # train any task's run config (see qkv.tasks.runner)

Adding a task is one new module (a `Task` and a `Run` subclass, `qkv.tasks.base`) plus one line below;
docs/architecture.md walks through it.
"""

from __future__ import annotations

from pathlib import Path

from qkv.errors import QKVError
from qkv.runs import read_config
from qkv.tasks.autoencoder import AutoencoderTask
from qkv.tasks.base import Run, Task
from qkv.tasks.chat import ChatTask
from qkv.tasks.diffusion import DiffusionTask
from qkv.tasks.lm import LMTask
from qkv.tasks.runner import run_task
from qkv.tasks.translate import TranslateTask

TASKS: dict[str, type[Task]] = {
    "lm": LMTask,
    "translate": TranslateTask,
    "chat": ChatTask,
    "diffusion": DiffusionTask,
    "autoencoder": AutoencoderTask,
}

# runs saved without a task name (a converted GPT-2, an early run) are known by their model type
_TASK_OF_MODEL = {"gpt": "lm", "seq2seq": "translate", "dit": "diffusion", "autoencoder": "autoencoder"}


def get_task(name: str) -> type[Task]:
    if name not in TASKS:
        raise QKVError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]


def task_of(saved: dict) -> str:
    """The task of a saved run config (config.json)."""
    return saved.get("task") or _TASK_OF_MODEL.get(saved.get("model_type"), "lm")


def load_run(path: str | Path, device: str = "cpu", **options) -> Run:
    """A trained run, ready for inference: ``qkv.load_run("runs/multi30k").translate(["Ein Hund."])``."""
    return get_task(task_of(read_config(path))).run_class.load(Path(path), device=device, **options)


__all__ = ["TASKS", "Run", "Task", "get_task", "load_run", "run_task", "task_of"]
