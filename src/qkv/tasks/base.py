"""What a task is: one object that knows how to read its data, build its tokenizers, size its config, prepare its
examples, build its model, and compute its loss, evaluation and summary (`Task`); and one object that serves a
trained run for inference (`Run`).

Training a task (`qkv.tasks.runner.run_task`) calls the hooks of `Task` in this order, on every process. What
flows from one hook to the next is what the hooks return, declared as a dataclass per task:

    data = read_data()                      read and validate the data; nothing is written yet
    toks = make_tokenizers(data)            fresh run, main process: build the tokenizer(s), check, write them
    toks = load_tokenizers(data)            resume, or the other processes after the main one wrote them
    cfg = resolve(data, toks)               the run config sized to the data and tokenizers: a new object (the
                                            config asked for is never changed); what config.json saves
    state = prepare(cfg, data, toks)        everything training needs besides the model: encoded examples, the
                                            data meta, (latent diffusion) the trained autoencoder; a `State`
    model = build_model(state)              the model alone, seeded: built, or loaded on resume / init_from
    batches(state, rows, rank, world)       this process's share of the global batches (`qkv.data.batch`)
    -> Trainer(model, loss(state, ·), batches, evaluate(state, ·), save(state, ·), on_step, loss_terms).fit()
    after_training(state, model)            every process, when the Trainer is done
    summary(state, model, result), samples(state, model)   main process: the lines `qkv train` prints

A trained run comes back as a `Run` (`qkv.load_run(path)`): the model in eval mode, its tokenizer(s), its
typed run config, and the calls of what it can do (`qkv.tasks.capabilities`). The CLI, the web playground,
explain mode and human evaluation ask a Run what it can do, never which task it is.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from qkv.config import from_dict, to_dict
from qkv.errors import QKVError
from qkv.models.io import save_run
from qkv.tasks.capabilities import Capability, require
from qkv.training.distributed import DistInfo
from qkv.training.trainer import TrainResult


def a_(name: str) -> str:
    """The name with its indefinite article: "an lm", "an autoencoder", "a chat", "a translate"."""
    return f"{'an' if name[:1] in 'aeiol' else 'a'} {name}"


@dataclass
class Context:
    """Where and how a task trains: what `run_task` knows and every hook may read."""

    run_dir: Path
    dist: DistInfo = field(default_factory=DistInfo)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    resume: bool = False
    init_from: Path | None = None  # another run to start from (lm, chat, translate)
    fit_vocab: bool = True  # size the model's vocabulary to the tokenizer's (False: the config set it)
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))

    def say(self, msg: str) -> None:
        """A note for the user, from the main process only."""
        if self.dist.is_main:
            self.log(msg)


@dataclass
class State:
    """What a task's hooks share once the data is prepared: a task subclasses it and declares its own fields."""

    cfg: Any  # the resolved run config (`Task.resolve`): what training uses and config.json saves
    meta: dict = field(default_factory=dict)  # what the data turned out to be: config.json's "data_meta"


class Task:
    """One kind of run. A subclass sets the class attributes and implements the hooks (module docstring).

    A Task keeps the config it was asked to train (`cfg`, never changed) and where it trains (`ctx`); everything
    else is returned by one hook and handed to the next."""

    name: ClassVar[str]
    config_class: ClassVar[type]  # the run config dataclass: task, model, data, train, ... sections
    run_class: ClassVar[type[Run]]  # what `qkv.load_run` gives back for this task
    supports_init_from: ClassVar[bool] = False
    fitted_model_fields: ClassVar[tuple[str, ...]] = ()  # [model] fields the task sets from tokenizers and data
    # section -> {old setting name: new name}: run directories saved before a rename still load and resume
    legacy_names: ClassVar[dict[str, dict[str, str]]] = {}
    data_option: ClassVar[str] = "source"  # the [data] setting `qkv train --data X` sets
    # on_step(state, model, step) after every optimizer step, for tasks that keep state beside the weights (an EMA)
    on_step: ClassVar[Callable[..., None] | None] = None

    def __init__(self, cfg: Any, ctx: Context):
        self.cfg, self.ctx = cfg, ctx

    # ------------------------------------------------------------------------------------------ preparing
    def read_data(self) -> Any:
        """Read and validate the data (every process). Raise QKVError on bad input; write nothing."""
        return None

    def make_tokenizers(self, data: Any) -> Any:
        """Fresh run, main process: build the tokenizer(s), check that the data encodes, write them."""
        return None

    def load_tokenizers(self, data: Any) -> Any:
        """Resume, or a process other than the main one: read the tokenizer(s) from the run directory."""
        return None

    def resolve(self, data: Any, tokenizers: Any) -> Any:
        """The run config sized to the data and the tokenizer(s) (the fields of `fitted_model_fields`), as a new
        object; by default the config asked for."""
        return self.cfg

    def prepare(self, cfg: Any, data: Any, tokenizers: Any) -> State:
        raise NotImplementedError

    def build_model(self, state: State) -> nn.Module:
        raise NotImplementedError

    def batches(self, state: State, rows: int, rank: int, world: int):
        """This process's batch source; `rows` is the global micro-batch (train.batch_size / grad_accum)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ training
    def loss(self, state: State, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def loss_terms(self, batch: dict) -> int:
        """How many terms the mean loss of `batch` averages (target tokens, images)."""
        raise NotImplementedError

    def evaluate(self, state: State, model: nn.Module, full: bool, train_means: dict) -> dict:
        return {}

    def saved_config(self, state: State) -> dict:
        """Every run-config section but the model's (written from the model itself), and the data meta."""
        return {k: v for k, v in to_dict(state.cfg).items() if k != "model"} | {"data_meta": state.meta}

    def save(self, state: State, model: nn.Module, step: int, weights: bool = True) -> None:
        """A checkpoint: config.json and model.safetensors, stamped with the step (tokenizers are written once).
        ``weights=False``: config.json only (under FSDP the trainer writes the weights, sharded)."""
        save_run(self.ctx.run_dir, model, extra_config=self.saved_config(state), metadata={"step": str(step)},
                 weights=weights)

    # ------------------------------------------------------------------------------------------ finishing
    def after_training(self, state: State, model: nn.Module) -> None:
        """Every process, when the Trainer is done (the autoencoder records its latent statistics here)."""

    def weights_note(self) -> str:
        """Said after the weights' path in the run's file list (diffusion: where the EMA weights are)."""
        return ""

    def summary(self, state: State, model: nn.Module, result: TrainResult) -> list[str]:
        """The lines `qkv train` prints after training (main process)."""
        return [f"trained {result.step} steps in {result.elapsed_s:.1f} s ({result.stopped_by})"]

    def samples(self, state: State, model: nn.Module) -> Iterable[str]:
        """What the trained model makes, printed unless asked not to (main process)."""
        return []

    def next_command(self) -> str:
        return f"evaluate it: qkv eval {self.ctx.run_dir}"


def fine_tunes(ctx, objective: str, run_kind: str) -> None:
    """An objective that fine-tunes a trained run (translation's MRT, REINFORCE) needs one: a fresh run without
    ``--init-from`` is a one-line error. Call it when the objective is one of those."""
    if ctx.init_from is None and not ctx.resume:
        raise QKVError(f'train.objective = "{objective}" fine-tunes a trained {run_kind} run: give it as --init-from',
                       argument="init_from")


def last_eval(result: TrainResult, key: str) -> dict | None:
    """The last evaluation record of a training run that holds `key` (None if there is none)."""
    return next((e for e in reversed(result.evals) if key in e), None)


@dataclass
class Trained:
    """What `run_task` returns: the task, its prepared state (the resolved config, the data, the tokenizers),
    the trained model, the result."""

    task: Task
    state: State
    model: nn.Module
    result: TrainResult
    is_main: bool

    @property
    def config(self) -> Any:
        """The run config as trained: sized to the data and tokenizers, what config.json holds."""
        return self.state.cfg


# a call a run does not offer -> the capability it needs (`Run.__getattr__` turns the call into a one-line error)
_CALLS = {
    "generate": Capability.CONTINUATION, "stream": Capability.CONTINUATION, "token_stream": Capability.CONTINUATION,
    "sampling": Capability.CONTINUATION, "chat": Capability.CHAT, "translate": Capability.SOURCE_TO_TEXT,
    "to_text": Capability.SOURCE_TO_TEXT, "decoding": Capability.SOURCE_TO_TEXT, "n_best": Capability.SOURCE_TO_TEXT,
    "cross_attention": Capability.SOURCE_TO_TEXT, "caption": Capability.SOURCE_TO_TEXT,
    "caption_files": Capability.SOURCE_TO_TEXT, "alignment_scores": Capability.TEXT_SOURCE,
    "sample": Capability.IMAGES, "image_sampling": Capability.IMAGES, "reverse_process": Capability.IMAGES,
    "forward_process": Capability.IMAGES, "text_tokenizer": Capability.TOKENS, "text_input": Capability.TOKEN_INPUT,
    "self_attention": Capability.SELF_ATTENTION, "training_example": Capability.TRAINING_EXAMPLES,
    "spans": Capability.SPANS, "answer": Capability.SPANS, "complete": Capability.CODE,
    "run_tests": Capability.CODE, "example_problem": Capability.CODE,
}


class Run:
    """A trained run, loaded for inference. Subclasses declare what they can do (`capabilities`) and add the
    calls of those capabilities (`qkv.tasks.capabilities`)."""

    task: ClassVar[str]
    config_class: ClassVar[type]
    model_type: ClassVar[str]  # the model it serves ("gpt", "seq2seq", "dit", "autoencoder", "captioner")
    legacy_names: ClassVar[dict[str, dict[str, str]]] = {}

    def __init__(self, path: Path, config: Any, saved: dict, model: nn.Module):
        self.path, self.config, self.saved, self.model = Path(path), config, saved, model

    @property
    def capabilities(self) -> frozenset[Capability]:
        """What this run can do; a subclass adds its own."""
        return frozenset({Capability.PARAMETERS, Capability.EVALUATION})

    def describe(self) -> str:
        """"an lm run (continuation, chat, ...)": the task's name, for people, with what it can do."""
        caps = sorted(c.value for c in self.capabilities)
        return f"{a_(self.task)} run ({', '.join(caps)})"

    def __getattr__(self, name: str):
        """A call of a capability this run lacks is a one-line error that names the capability (an
        `Unsupported`, which is also an AttributeError: ``hasattr(run, "chat")`` is False)."""
        capability = _CALLS.get(name)
        if capability is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        require(self, capability, f"{name}()")
        raise AttributeError(name)  # declared but not offered: a bug in the run's class, not the user's

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", **options) -> Run:
        raise NotImplementedError

    @classmethod
    def _load_model(cls, path: str | Path, device: str) -> tuple[nn.Module, dict, Any]:
        """(the model in eval mode, config.json, the typed run config) of a run of this kind, or QKVError."""
        from qkv.models.io import load_model

        model, saved = load_model(path, device=device)
        if saved["model_type"] != cls.model_type:
            raise QKVError(f"{path} is {a_(saved['model_type'])} run; this needs {a_(cls.model_type)} run")
        config = cls.typed_config(cls.config_class, saved, cls.legacy_names)
        config.model = model.config
        return model, saved, config

    @staticmethod
    def typed_config(config_class: type, saved: dict, legacy_names: dict | None = None) -> Any:
        """The run config rebuilt from config.json's sections (defaults for sections an older run lacks)."""
        return from_dict(config_class, config_sections(config_class, saved, legacy_names, with_model=False))

    @staticmethod
    def settings(current: Any, changes: dict, prefix: str) -> Any:
        """`current` (a settings dataclass: TokenSampling, SequenceDecoding, ImageSampling) with `changes` (None
        values ignored) on top, checked; an unknown or invalid setting is a one-line QKVError naming it."""
        values = to_dict(current) | {k: v for k, v in changes.items() if v is not None}
        return from_dict(type(current), values, prefix=prefix)

    @property
    def meta(self) -> dict:
        return self.saved.get("data_meta") or {}

    # ------------------------------------------------------------------------------------------ every run
    def parameter_table(self):
        """The parameter table (`table_of`) of this run's model: ``.format_text()``, ``.to_json()``."""
        return self.table_of(self.model, self.path.name)

    @classmethod
    def table_of(cls, model: nn.Module, name: str):
        """The parameter table of a model of this kind, built or only shaped (the meta device): modules with their
        layer numbers folded (a GPT run gives its report, with FLOPs and memory, instead)."""
        from qkv.evaluation.params import GroupTable

        return GroupTable.of(model, name, cls.model_type)

    def evaluate(self, **options) -> dict:
        raise NotImplementedError

    def report(self, result: dict) -> str:
        """`evaluate`'s result as the lines `qkv eval` prints."""
        return str(result)


def config_sections(config_class: type, saved: dict, legacy_names: dict | None = None,
                    with_model: bool = True) -> dict:
    """The sections of a saved config.json that `config_class` has, with renamed settings brought up to date."""
    from dataclasses import fields

    from qkv.models.io import model_config_dict

    names = {f.name for f in fields(config_class)} - (set() if with_model else {"model"})
    out = {}
    for k, v in saved.items():
        if k not in names:
            continue
        if k == "model":
            v = model_config_dict(saved["model_type"], v)
        elif isinstance(v, dict) and k in (legacy_names or {}):
            v = {legacy_names[k].get(name, name): value for name, value in v.items()}
        out[k] = v
    return out


# ------------------------------------------------------------------------------------------ the registry
# task name -> Task class; filled, one line per task, by qkv/tasks/__init__.py (the one place to add a task)
TASKS: dict[str, type[Task]] = {}

# runs saved without a task name (a converted GPT-2, an early run) are known by their model type
_TASK_OF_MODEL = {"gpt": "lm", "seq2seq": "translate", "dit": "diffusion", "autoencoder": "autoencoder",
                  "captioner": "caption"}


def get_task(name: str) -> type[Task]:
    if name not in TASKS:
        raise QKVError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]


def task_of(saved: dict) -> str:
    """The task of a saved run config (config.json)."""
    return saved.get("task") or _TASK_OF_MODEL.get(saved.get("model_type"), "lm")
