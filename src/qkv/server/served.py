"""The runs a server holds: each loaded once, named for its URLs, with its pages and its model worker.

`load_runs(paths)` takes run directories or folders of them (`find_runs`) and gives each a `Served`: the Run
(`qkv.load_run`), a URL-safe name (the folder's, made unique), the pages its capabilities call for (`pages_of`)
and a `ModelWorker` (`qkv.server.workers`). `HTTPError` is a user error with its HTTP status, for the handlers.

A folder may be a pipeline's (a chat pipeline writes OUT/pipeline.json beside its stages: OUT/base, OUT/sft,
OUT/rl, and OUT/tokenizer, which is no run): its runs load in stage order, each with its `Stage`, and a stage
not finished yet (no weights) is left out. `default_chat_run` is the run the chat page opens first: the
pipeline's final run when it can chat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from qkv.errors import QKVError
from qkv.pipeline.stages import STATE as PIPELINE_FILE
from qkv.runs import CONFIG_FILE, WEIGHTS_FILE, has_weights
from qkv.server.workers import ModelWorker
from qkv.tasks import Run, load_run
from qkv.tasks.base import a_
from qkv.tasks.capabilities import Capability, can

STATIC = Path(__file__).parent / "static"


def pages_of(run) -> list[str]:
    """The pages of a run, in the order the index lists them, from what it can do (`qkv.tasks.capabilities`):
    code, chat, generate, translate (a text source), caption (an image source) or transcribe (an audio source), images,
    attention (self-attention over a text), params, and explain when any topic applies."""
    from qkv.explain import topics_for

    pages = []
    if can(run, Capability.CODE):
        pages.append("code")
    if can(run, Capability.CHAT):
        pages.append("chat")
    if can(run, Capability.CONTINUATION):
        pages.append("generate")
    if can(run, Capability.SOURCE_TO_TEXT):
        pages.append(SOURCE_PAGES[run.source_kind])
    if can(run, Capability.IMAGES):
        pages.append("images")
    if can(run, Capability.SELF_ATTENTION):
        pages.append("attention")
    if can(run, Capability.PARAMETERS):
        pages.append("params")
    if topics_for(run):
        pages.append("explain")
    return pages


# a source -> text run's page, by what its source is (`run.source_kind`)
SOURCE_PAGES = {"text": "translate", "image": "caption", "audio": "transcribe"}
# page -> the static HTML file that draws it (one source -> text page serves text, image and audio sources alike)
PAGE_FILES = dict.fromkeys(SOURCE_PAGES.values(), "totext")


@dataclass
class Served:
    """A run on the server: `name` is its URL segment."""

    name: str
    path: Path
    run: Run
    worker: ModelWorker
    stats: dict = field(default_factory=lambda: {"jobs": 0, "tokens": 0, "cancelled": 0})
    cache: dict = field(default_factory=dict)  # what handlers compute once per run (token labels)
    stage: Stage | None = None  # its place in a pipeline's folder, when it was found in one

    @property
    def task(self) -> str:
        """The run's task, for people (the header); what the server does with a run follows `pages`."""
        return self.run.task

    @property
    def pages(self) -> list[str]:
        if "pages" not in self.cache:
            self.cache["pages"] = pages_of(self.run)
        return self.cache["pages"]


@dataclass(frozen=True)
class Stage:
    """A run's place in a pipeline: the pipeline's folder, the stage's name, and the final stage's (None while
    pipeline.json names none)."""

    pipeline: Path
    name: str
    final: str | None

    @property
    def is_final(self) -> bool:
        return self.name == self.final


def is_finished_run(path: Path) -> bool:
    """A run directory with its weights: training wrote config.json and model.safetensors or a sharded checkpoint
    (a stage still being trained may have only the first, a pipeline's tokenizer folder neither)."""
    return (path / CONFIG_FILE).is_file() and has_weights(path)


def read_pipeline(folder: Path) -> tuple[list[tuple[str, Path]], str | None] | None:
    """A pipeline folder's stages in order, (name, directory), and its final stage's name, from its pipeline.json
    (`qkv.pipeline.stages`: ``{"stages": [{"name", "dir", ...}, ...], "final": name or null}``); None when the folder
    has none, or one that cannot be read (not a pipeline's): it is then a folder of runs."""
    try:
        meta = json.loads((folder / PIPELINE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("stages"), list):
        return None
    stages = []
    for st in meta["stages"]:
        if isinstance(st, dict) and isinstance(st.get("name"), str):
            d = st.get("dir") if isinstance(st.get("dir"), str) and st.get("dir") else st["name"]
            stages.append((st["name"], folder / d))
    final = meta.get("final")
    return stages, final if isinstance(final, str) else None


def find_stages(paths: list[str | Path]) -> list[tuple[Path, Stage | None]]:
    """Run directories, each with its pipeline stage or None: each path is one (it holds config.json) or a folder
    of them (its sub-folders that hold a finished run, `is_finished_run`; in a pipeline's folder, pipeline.json's
    stages first, in their order). What is not a finished run in a folder (a pipeline's tokenizer, a stage still
    training) is left out quietly; a folder with none is a QKVError."""
    found: list[tuple[Path, Stage | None]] = []
    for p in map(Path, paths):
        if (p / CONFIG_FILE).is_file():
            found.append((p, None))
        elif p.is_dir():
            pipeline = read_pipeline(p)
            stages = pipeline[0] if pipeline else []
            runs = [(d, Stage(p, name, pipeline[1])) for name, d in stages if is_finished_run(d)]
            staged = {d.resolve() for _, d in stages}
            runs += [(d, None) for d in sorted(p.iterdir()) if d.resolve() not in staged and is_finished_run(d)]
            if not runs:
                raise QKVError(_nothing_in(p, pipeline))
            found += runs
        else:
            raise QKVError(f"{p}: no such run directory")
    return found


def _nothing_in(p: Path, pipeline) -> str:
    if pipeline:
        names = ", ".join(name for name, _ in pipeline[0]) or "none"
        return f"{p}: a pipeline with no finished stage yet (its stages: {names}; none has its {WEIGHTS_FILE})"
    training = sorted(d.name for d in p.iterdir() if (d / CONFIG_FILE).is_file())
    if training:
        return f"{p}: no finished run yet ({', '.join(training)} have no {WEIGHTS_FILE})"
    return f"{p}: neither a run directory (no {CONFIG_FILE}) nor a folder of runs"


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories: each path is one (it holds config.json) or a folder of them (`find_stages`)."""
    return [path for path, _ in find_stages(paths)]


def _url_name(path: Path, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() or c in "-_." else "-" for c in (path.name or path.resolve().name)) or "run"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


def load_runs(paths: list[str | Path], queue_size: int = 8, device: str = "cpu") -> dict[str, Served]:
    """Load every run (QKVError for one that is not a run) and give each a name and a worker."""
    served: dict[str, Served] = {}
    for path, stage in find_stages(paths):
        name = _url_name(path, set(served))
        run = load_run(path, device=device)
        if can(run, Capability.CONTINUATION):
            run.decoder()  # the decode layout, made now: a request never waits for it (nor two make it at once)
        served[name] = Served(name, path, run, ModelWorker(name, queue_size), stage=stage)
    return served


def pipeline_of(runs: dict[str, Served], s: Served) -> dict | None:
    """What the pages know of the pipeline `s` belongs to: its folder, the stage of `s`, the final run's name (None
    when that stage is not served) and the names of its runs on this server, in stage order. None outside one."""
    if s.stage is None:
        return None
    members = [r for r in runs.values() if r.stage is not None and r.stage.pipeline == s.stage.pipeline]
    final = next((r.name for r in members if r.stage.is_final), None)
    return {"folder": str(s.stage.pipeline), "stage": s.stage.name, "final": final,
            "runs": [r.name for r in members]}


def default_chat_run(runs: dict[str, Served]) -> str | None:
    """The run the chat page opens first (``/chat``): a pipeline's final run when it can chat, else the first run
    that can chat; None when none can."""
    chats = [s for s in runs.values() if can(s.run, Capability.CHAT)]
    final = next((s for s in chats if s.stage is not None and s.stage.is_final), None)
    return (final or chats[0]).name if chats else None


class HTTPError(QKVError):
    """A user error with its HTTP status (the API answers it as JSON, like every QKVError)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


__all__ = ["PAGE_FILES", "PIPELINE_FILE", "SOURCE_PAGES", "STATIC", "HTTPError", "Served", "Stage", "a_",
           "default_chat_run", "find_runs", "find_stages", "is_finished_run", "load_runs", "pages_of", "pipeline_of",
           "read_pipeline"]
