"""Tasks: what qkv trains, one module each, and the one registry that maps a run config's ``task`` to it.

    from qkv.tasks import get_task, load_run, run_task

    run = load_run("runs/shakespeare")          # = qkv.load_run: an LMRun, with .generate / .attention / ...
    trained = run_task(cfg, "runs/new")         # train any task's run config (see qkv.tasks.runner)

Adding a task is one new module (a `Task` and a `Run` subclass, `qkv.tasks.base`) plus one line below;
docs/architecture.md walks through it.
"""

from __future__ import annotations

from pathlib import Path

from qkv.runs import read_config
from qkv.tasks.autoencoder import AutoencoderTask
from qkv.tasks.base import TASKS, Run, Task, get_task, task_of
from qkv.tasks.caption import CaptionTask
from qkv.tasks.chat import ChatTask
from qkv.tasks.code import CodeGPTTask, CodeTask
from qkv.tasks.diffusion import DiffusionTask
from qkv.tasks.lm import LMTask
from qkv.tasks.qa import QATask
from qkv.tasks.runner import run_task
from qkv.tasks.speech import SpeechTask
from qkv.tasks.summarize import SummarizeTask
from qkv.tasks.translate import TranslateTask

TASKS.update({
    "lm": LMTask,
    "translate": TranslateTask,
    "chat": ChatTask,
    "diffusion": DiffusionTask,
    "autoencoder": AutoencoderTask,
    "caption": CaptionTask,
    "speech": SpeechTask,
    "qa": QATask,
    "summarize": SummarizeTask,
    "code": CodeTask,
    "code-gpt": CodeGPTTask,
})


def load_run(path: str | Path, device: str = "cpu", **options) -> Run:
    """A trained run, ready for inference: ``qkv.load_run("runs/multi30k").translate(["Ein Hund."])``."""
    return get_task(task_of(read_config(path))).run_class.load(Path(path), device=device, **options)


__all__ = ["TASKS", "Run", "Task", "get_task", "load_run", "run_task", "task_of"]
