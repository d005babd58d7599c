"""A chat model in stages, nanochat's shape: tokenizer -> base pretraining -> SFT -> RL -> report.

``qkv pipeline --config configs/chat-pipeline.toml`` runs the stages in order into one folder::

    OUT/pipeline.json     the stages, their state (pending, running, done) and their seconds; the final run
    OUT/tokenizer/        tokenizer.json: byte-level BPE trained on the pretraining text; meta.json: its compression
    OUT/base/             an ordinary run (task lm): the base model, pretrained on real English (data "english")
    OUT/sft/              an ordinary run (task chat, --init-from base): supervised fine-tuning, answer-only loss
    OUT/rl/               an ordinary run (task chat, objective reinforce, --init-from sft): RL on checkable answers
    OUT/report.md, .html  the report (`qkv.pipeline.report`)

Each run stage is a `qkv train` of its own config section, reading the previous stage with ``--init-from`` (the
base stage reads the tokenizer with ``data.tokenizer_file``), so every stage is a run that every other command
(``qkv chat``, ``qkv eval``, ``qkv serve``, ``qkv explain``) takes as it is.

Resume: running the same command again skips the stages marked done, and resumes a stage that had started from
its last checkpoint (the trainer's exact resume: the same steps, the same time budget, `qkv.training.trainer`).
A stage that stopped before its first checkpoint is started again (its folder held no model yet). Each stage's
seconds add up over the attempts.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qkv.config import from_dict, load_toml, merge
from qkv.errors import QKVError
from qkv.runs import (
    CONFIG_FILE,
    DATA_META_FILE,
    STATE_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    atomic_write_json,
    load_json,
)

STAGES = ("tokenizer", "base", "sft", "rl")
RUN_STAGES = {"base": "lm", "sft": "chat", "rl": "chat"}  # each run stage's task
STATE = "pipeline.json"


@dataclass
class TokenizerStage:
    """The ``[tokenizer]`` section: a byte-level BPE trained on the pretraining text's training documents."""

    source: str = "english"  # the base stage's corpus (`qkv data list`)
    vocab_size: int = 2048
    val_fraction: float = 0.05  # held-out documents: the base stage's validation split and the compression figure
    max_chars: int | None = None  # read only this many characters (quick runs, tests)

    def __post_init__(self):
        if self.vocab_size < 260:
            raise ValueError(f"vocab_size must be at least 260 (256 bytes and 4 specials), got {self.vocab_size}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")


@dataclass
class ReportSettings:
    """The ``[report]`` section: how much the report evaluates."""

    max_questions: int = 300  # per split (held-out phrasings, held-out values), the first N
    samples: int = 2  # sample conversations per stage


@dataclass
class PipelineConfig:
    """A pipeline file: the out folder, the tokenizer, one run config per run stage (as ``qkv train --config``
    takes it; a stage left out is skipped), the report."""

    out: str = "runs/chat-pipeline"
    tokenizer: TokenizerStage = field(default_factory=TokenizerStage)
    base: dict = field(default_factory=dict)
    sft: dict = field(default_factory=dict)
    rl: dict = field(default_factory=dict)
    report: ReportSettings = field(default_factory=ReportSettings)

    def stages(self) -> list[str]:
        return ["tokenizer"] + [s for s in RUN_STAGES if getattr(self, s)]


def load_pipeline_config(path: str | Path, overrides: dict | None = None) -> PipelineConfig:
    """The typed pipeline config of a TOML file (dotted `overrides` on top); every run stage's section checked
    as its task's config now, so a typo fails before anything runs."""

    raw = merge(load_toml(path), overrides or {})
    cfg = from_dict(PipelineConfig, raw)
    if not cfg.base:
        raise QKVError(f"{path}: the pipeline needs a [base] section (the pretraining run)")
    for stage, task in RUN_STAGES.items():
        section = getattr(cfg, stage)
        if section:
            if section.get("task", task) != task:
                raise QKVError(f"{path}: [{stage}] is a {task} run, not task = {section['task']!r}")
            run_config(cfg, stage, Path(cfg.out))  # raises on unknown keys or bad values
    if cfg.rl and not cfg.sft:
        raise QKVError(f"{path}: [rl] fine-tunes the [sft] stage; give both")
    return cfg


def run_config(cfg: PipelineConfig, stage: str, out: Path):
    """The typed run config of a run stage: its section, the task, and (base) the tokenizer stage's file."""
    from qkv.tasks import get_task

    task = RUN_STAGES[stage]
    raw = merge({"task": task}, getattr(cfg, stage))
    if stage == "base":
        raw = merge(raw, {"data": {"source": cfg.tokenizer.source, "tokenizer": "bpe",
                                   "tokenizer_file": str(out / "tokenizer" / TOKENIZER_FILE),
                                   "val_fraction": cfg.tokenizer.val_fraction,
                                   **({"max_chars": cfg.tokenizer.max_chars} if cfg.tokenizer.max_chars else {})}})
    try:
        return from_dict(get_task(task).config_class, raw, prefix=f"{stage}.")
    except (ValueError, TypeError) as e:
        raise QKVError(f"[{stage}]: {e}") from None


# ------------------------------------------------------------------------------------------------ the state
def read_state(out: Path, stages: list[str]) -> dict:
    """OUT/pipeline.json, or a fresh one with every stage pending."""
    path = out / STATE
    if path.exists():
        state = load_json(path)
        known = {s["name"] for s in state["stages"]}
        state["stages"] += [_fresh(s) for s in stages if s not in known]
        return state
    return {"stages": [_fresh(s) for s in stages], "final": None}


def _fresh(stage: str) -> dict:
    return {"name": stage, "dir": stage, "status": "pending", "seconds": 0.0, "attempts": 0}


def _write_state(out: Path, state: dict) -> None:
    atomic_write_json(out / STATE, state)


# ------------------------------------------------------------------------------------------------ running
def train_tokenizer(t: TokenizerStage, folder: Path) -> dict:
    """The tokenizer stage: BPE on the training documents, its compression on the held-out ones (bytes per token)."""
    from qkv.data.text import load_corpus, load_split
    from qkv.tokenizers import train_bpe

    split = load_split(t.source, t.val_fraction, t.max_chars)  # the base stage's split: whole documents held out
    if split is None:  # a corpus split by tokens: its last val_fraction, cut here by characters
        text = load_corpus(t.source, t.max_chars)
        cut = int(len(text) * (1 - t.val_fraction))
        split = text[:cut], text[cut:]
    train, val = split
    tok = train_bpe(train, vocab_size=t.vocab_size)
    val_bytes, val_tokens = len(val.encode("utf-8")), len(tok.encode(val))
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"source": t.source, "vocab_size": tok.vocab_size, "train_chars": len(train), "val_chars": len(val),
            "val_bytes": val_bytes, "val_tokens": val_tokens, "bytes_per_token": val_bytes / max(1, val_tokens)}
    tok.save(folder / TOKENIZER_FILE)
    atomic_write_json(folder / DATA_META_FILE, meta)
    return meta


def _resumable(run_dir: Path) -> bool:
    return (run_dir / WEIGHTS_FILE).exists() and (run_dir / STATE_FILE).exists() and (run_dir / CONFIG_FILE).exists()


def run_stage(cfg: PipelineConfig, stage: str, out: Path, log: Callable[[str], None]) -> str:
    """Run (or resume) one stage; a one-line outcome."""
    from qkv.tasks import run_task

    folder = out / stage
    if stage == "tokenizer":
        if folder.exists():
            shutil.rmtree(folder)  # never half-done: it is written in one go, seconds long
        meta = train_tokenizer(cfg.tokenizer, folder)
        return (f"{meta['vocab_size']:,} ids, {meta['bytes_per_token']:.2f} bytes per token on held-out text "
                f"({meta['val_bytes']:,} bytes)")
    prev = {"base": None, "sft": out / "base", "rl": out / "sft"}[stage]
    resume = _resumable(folder)
    if not resume and folder.exists():
        shutil.rmtree(folder)  # started, but no checkpoint yet: nothing to resume from
    if resume:
        log(f"  resuming {folder} from its last checkpoint")
    trained = run_task(run_config(cfg, stage, out), folder, resume=resume, init_from=None if resume else prev,
                       log=log)
    return "; ".join(trained.task.summary(trained.state, trained.model, trained.result))


def run_pipeline(cfg: PipelineConfig, log: Callable[[str], None] = print) -> dict:
    """Every stage not yet done, in order, then the report; the final state (module docstring)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = cfg.stages()
    state = read_state(out, stages)
    by_name = {s["name"]: s for s in state["stages"]}
    for i, name in enumerate(stages, 1):
        s = by_name[name]
        head = f"[{i}/{len(stages)}] {name}"
        if s["status"] == "done":
            log(f"{head}: done earlier ({_minutes(s['seconds'])}), skipped")
            continue
        log(f"{head}: {'resuming' if s['status'] == 'running' else 'starting'} -> {out / s['dir']}")
        s["status"], s["attempts"] = "running", s["attempts"] + 1
        _write_state(out, state)
        t0 = time.perf_counter()
        try:
            outcome = run_stage(cfg, name, out, log)
        finally:
            s["seconds"] += time.perf_counter() - t0
            _write_state(out, state)
        s["status"], s["outcome"] = "done", outcome
        state["final"] = name if name in RUN_STAGES else state["final"]
        _write_state(out, state)
        log(f"{head}: done in {_minutes(s['seconds'])} — {outcome}")
    from qkv.pipeline.report import write_pipeline_report

    t0 = time.perf_counter()
    paths = write_pipeline_report(out, cfg, state)
    state["report_seconds"] = time.perf_counter() - t0
    _write_state(out, state)
    log(f"report: {paths[0]} (and {paths[1].name}) in {_minutes(state['report_seconds'])}")
    return state


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"
