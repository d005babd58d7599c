"""The runs a server holds: each loaded once, named for its URLs, with its pages and its model worker.

`load_runs(paths)` takes run directories or folders of them (`find_runs`) and gives each a `Served`: the Run
(`qkv.load_run`), a URL-safe name (the folder's, made unique), the pages its capabilities call for (`pages_of`)
and a `ModelWorker` (`qkv.server.workers`). `HTTPError` is a user error with its HTTP status, for the handlers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qkv.errors import QKVError
from qkv.runs import CONFIG_FILE
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

    @property
    def task(self) -> str:
        """The run's task, for people (the header); what the server does with a run follows `pages`."""
        return self.run.task

    @property
    def pages(self) -> list[str]:
        if "pages" not in self.cache:
            self.cache["pages"] = pages_of(self.run)
        return self.cache["pages"]


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories: each path is one (it holds config.json) or a folder of them (its sub-folders that do)."""
    found = []
    for p in map(Path, paths):
        if (p / CONFIG_FILE).is_file():
            found.append(p)
        elif p.is_dir():
            subs = sorted(d for d in p.iterdir() if (d / CONFIG_FILE).is_file())
            if not subs:
                raise QKVError(f"{p}: neither a run directory (no {CONFIG_FILE}) nor a folder of runs")
            found += subs
        else:
            raise QKVError(f"{p}: no such run directory")
    return found


def _url_name(path: Path, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() or c in "-_." else "-" for c in (path.name or path.resolve().name)) or "run"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


def load_runs(paths: list[str | Path], queue_size: int = 8, device: str = "cpu") -> dict[str, Served]:
    """Load every run (QKVError for one that is not a run) and give each a name and a worker."""
    served: dict[str, Served] = {}
    for path in find_runs(paths):
        name = _url_name(path, set(served))
        run = load_run(path, device=device)
        if can(run, Capability.CONTINUATION):
            run.decoder()  # the decode layout, made now: a request never waits for it (nor two make it at once)
        served[name] = Served(name, path, run, ModelWorker(name, queue_size))
    return served


class HTTPError(QKVError):
    """A user error with its HTTP status (the API answers it as JSON, like every QKVError)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


__all__ = ["PAGE_FILES", "SOURCE_PAGES", "STATIC", "HTTPError", "Served", "a_", "find_runs", "load_runs", "pages_of"]
