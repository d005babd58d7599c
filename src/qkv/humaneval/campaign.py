"""A campaign: the items, each system's candidate for each item, and every rater's tasks, made once and stored.

A campaign compares one or two trained runs that write the same kind of text (`kind_of`, from what they can do:
text about a source — a sentence or an image —, a chat reply, or a continuation) the way WMT's human evaluation
does (Kocmi et al. 2024, "Error Span Annotation"; Appraise):

1. **Items.** n sources drawn at random (seeded) from the data: a named dataset the runs know (a Multi30k split
   for translation, a captioning run's fresh test scenes), or a file with one source or prompt per line (for a
   run that reads images: one image path per line) and optionally its line-aligned references. Empty lines are
   skipped. An image is stored as a PNG data URL at the run's size, what the rater page shows.
2. **Candidates.** Each system's output for each item, made with the run's own settings: a source -> text run's
   [decode] settings; a chat run's [sample] settings in a fresh session per prompt; a language model's [sample]
   settings with at most 200 new tokens. Sampling uses the campaign's seed, so the campaign can be remade.
3. **Raters.** K raters, ``rater1..raterK``, each with an unguessable token (``secrets.token_urlsafe(18)``,
   144 random bits) for a private link. Every rater rates every item, so agreement can be measured.
4. **Tasks.** Per rater: one task per item, plus quality-control tasks for ⌈10%⌉ of the items (at least one),
   chosen per rater. A control shows the item again with one system's candidate replaced by a BAD copy
   (`qkv.humaneval.quality`); with two systems the other candidate stays. Each rater's tasks are shuffled,
   and with two systems each task shows them in a random order (slot A / slot B), so a rater cannot learn
   which side is which system. Controls look exactly like the other tasks.

`plan_campaign` does steps 3–4 from the items and candidates (pure, seeded); `create_campaign` reads the data,
loads the runs, makes the candidates, plans, and stores the whole campaign in one transaction.
"""

from __future__ import annotations

import math
import random
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qkv.errors import QKVError
from qkv.humaneval.quality import degrade
from qkv.humaneval.store import (
    CampaignPlan,
    PlannedCandidate,
    PlannedRater,
    PlannedTask,
    Store,
)
from qkv.tasks.capabilities import Capability, can

CONTROL_FRACTION = 0.1  # quality-control tasks per rater, as a fraction of the items (at least one)
LM_MAX_NEW_TOKENS = 200  # an lm candidate is at most this long (or the run's own limit, if smaller)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# progress(done, total): candidates made so far, out of all of them
Progress = Callable[[int, int], None]


@dataclass
class CampaignSpec:
    """What `qkv human-eval create` was asked for."""

    name: str
    runs: list[str | Path]
    data: str | None = None  # a named dataset: "multi30k" (translation runs)
    split: str | None = None  # its split (default test_2016_flickr)
    src: str | Path | None = None  # sources or prompts, one per line
    ref: str | Path | None = None  # their references, line-aligned
    n: int = 100
    raters: int = 3
    seed: int = 0

    def check(self) -> None:
        """The checks that need no file and no run (QKVError, one line)."""
        if not _NAME.fullmatch(self.name):
            raise QKVError(f"campaign name {self.name!r}: use letters, digits, '.', '_' or '-' (at most 64, "
                           "starting with a letter or digit); it names the export files")
        if not 1 <= len(self.runs) <= 2:
            raise QKVError(f"a campaign compares 1 or 2 runs, got {len(self.runs)}")
        if self.n <= 0:
            raise QKVError(f"n must be positive, got {self.n}", argument="n")
        if self.raters <= 0:
            raise QKVError(f"raters must be positive, got {self.raters}", argument="raters")
        if (self.data is None) == (self.src is None):
            raise QKVError("give the items with either data = 'multi30k' (and a split) or a src file (and its ref "
                           "file), not both" if self.data is not None else
                           "give the items with data = 'multi30k' (and a split) or a src file (and its ref file)")
        if self.data is None and self.split is not None:
            raise QKVError("split goes with data = 'multi30k', not with a src file")
        if self.data is not None and self.ref is not None:
            raise QKVError("ref goes with a src file; data = 'multi30k' brings its own references")


@dataclass
class Created:
    """What `create_campaign` made: the CLI prints it."""

    name: str
    kind: str
    systems: list[str]
    items: int
    available: int  # non-empty sources in the data (items = min(n, available))
    source: str  # where the items came from
    raters: list[tuple[str, str]]  # (name, token)
    controls: int  # quality-control tasks per rater
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ planning
def system_labels(runs: Sequence[str | Path]) -> list[str]:
    """Each run directory's name; equal names get a suffix: ``["run", "run-2"]``."""
    labels: list[str] = []
    for run in runs:
        base = Path(run).resolve().name or "run"
        label, k = base, 2
        while label in labels:
            label, k = f"{base}-{k}", k + 1
        labels.append(label)
    return labels


def n_controls(n_items: int) -> int:
    """Quality-control tasks per rater: ⌈10% of the items⌉, at least one."""
    return max(1, math.ceil(CONTROL_FRACTION * n_items))


def plan_campaign(name: str, kind: str, spec: dict, systems: list[tuple[str, str]],
                  items: list[tuple[int, str, str | None]], outputs: list[list[str]], n_raters: int, seed: int,
                  tokens: Callable[[], str] = lambda: secrets.token_urlsafe(18)) -> CampaignPlan:
    """The whole campaign from its items and `outputs[system][item]`: raters, BAD copies and shuffled tasks.

    Seeded: the same arguments give the same plan (tokens aside). Per rater i: which items get a control and
    which system's candidate is degraded (``seed:controls:i``), the BAD copies, the task order (``seed:order:i``)
    and the display order of each task.
    """
    n_items, n_sys = len(items), len(systems)
    if not n_items or any(len(out) != n_items for out in outputs) or len(outputs) != n_sys:
        raise ValueError(f"outputs must be {n_sys} lists of {n_items} candidates")
    candidates = [PlannedCandidate(i, s, outputs[s][i]) for s in range(n_sys) for i in range(n_items)]
    original = {(c.item, c.system): k for k, c in enumerate(candidates)}
    k_controls = min(n_controls(n_items), n_items)
    raters = []
    for r in range(n_raters):
        qc = random.Random(f"{seed}:controls:{r}")
        tasks = [PlannedTask(i, [original[i, s] for s in range(n_sys)]) for i in range(n_items)]
        for i in sorted(qc.sample(range(n_items), k_controls)):
            s_bad = qc.randrange(n_sys)
            bad = degrade(outputs[s_bad][i], _donors(items, outputs, i), qc)
            candidates.append(PlannedCandidate(i, s_bad, bad, bad_of=original[i, s_bad]))
            shown = [len(candidates) - 1 if s == s_bad else original[i, s] for s in range(n_sys)]
            tasks.append(PlannedTask(i, shown, control=True))
        order = random.Random(f"{seed}:order:{r}")
        order.shuffle(tasks)
        for t in tasks:
            if n_sys == 2 and order.random() < 0.5:
                t.candidates.reverse()
        raters.append(PlannedRater(f"rater{r + 1}", tokens(), tasks))
    return CampaignPlan(name, kind, spec, systems, items, candidates, raters)


def _donors(items: list[tuple[int, str, str | None]], outputs: list[list[str]], i: int) -> list[str]:
    """Texts a BAD copy of item i may borrow a phrase from: the other items' references and candidates
    (Appraise borrows from references); with nothing there, item i's own reference and every source."""
    others = [j for j in range(len(items)) if j != i]
    donors = [items[j][2] for j in others if items[j][2]] + [out[j] for out in outputs for j in others]
    donors = [d for d in donors if d.strip()]
    if donors:
        return donors
    return [d for d in [items[i][2] or ""] + [src for _, src, _ in items] if d.strip()]


# ------------------------------------------------------------------------------------------------ reading
def kind_of(run) -> str:
    """What the raters of `run` see, from what it can do: a source and the text written about it (a sentence:
    source-to-text; an image: image-to-text), a chat reply, or a continuation."""
    if can(run, Capability.SOURCE_TO_TEXT):
        return "source-to-text" if run.source_kind == "text" else "image-to-text"
    if can(run, Capability.CHAT):
        return "chat"
    if can(run, Capability.CONTINUATION):
        return "continuation"
    raise QKVError(f"{run.path} is {run.describe()}; human evaluation compares runs that write text (about a "
                   "source, in a chat, or after a prompt)")


def read_items(spec: CampaignSpec, run) -> tuple[list[tuple[int, str, str | None]], str]:
    """([(line, source, reference or None)] of the non-empty sources, a description of where they came from). An
    image source is kept as a PNG data URL at the run's image size (how the rater page shows it): the items of
    a named dataset the run knows (`dataset_pairs`), or a src file of image paths, one per line."""
    from qkv.data.translation import read_lines, read_parallel

    if spec.data is not None:
        if not can(run, Capability.SOURCE_TO_TEXT):
            raise QKVError(f"data = {spec.data!r} gives sources with references, for runs that write text about a "
                           f"source; give {kind_of(run)} runs their prompts in a src file")
        srcs, refs, where = run.dataset_pairs(spec.data, spec.split)
    elif spec.ref is not None:
        srcs, refs = read_parallel(spec.src, spec.ref)
        where = f"{spec.src} -> {spec.ref}"
    else:
        srcs = read_lines(spec.src)
        refs, where = [None] * len(srcs), str(spec.src)
    if kind_of(run) == "image-to-text":
        srcs = [_image_url(run, s) for s in srcs]
    items = [(line, s, r or None) for line, (s, r) in enumerate(zip(srcs, refs, strict=True)) if len(s)]
    if not items:
        raise QKVError(f"{where}: no non-empty source line")
    return items, where


def _image_url(run, source) -> str:
    """An image source (a tensor, or a file's path in a src file) as a PNG data URL at the run's size ("" for an
    empty line)."""

    from qkv.data.images import png_data_url

    if isinstance(source, str):
        if not source.strip():
            return ""
        source = run.image(source.strip())
    return png_data_url(source)  # a clip: its frames side by side


def sample_items(items: list, n: int, seed: int) -> list:
    """n items drawn at random (seeded), kept in the order of the data; all of them if there are fewer."""
    if n >= len(items):
        return list(items)
    return [items[k] for k in sorted(random.Random(f"{seed}:items").sample(range(len(items)), n))]


# ------------------------------------------------------------------------------------------------ candidates
def make_candidates(run, sources: list[str], seed: int, progress: Progress | None = None,
                    done: int = 0, total: int | None = None) -> list[str]:
    """The run's output for each source, with the run's own settings (module docstring, step 2), by what it can
    do (`kind_of`)."""
    total = total if total is not None else len(sources)
    kind = kind_of(run)
    out: list[str] = []
    chunk = 16 if kind in ("source-to-text", "image-to-text") else 1
    for k in range(0, len(sources), chunk):
        batch = sources[k:k + chunk]
        if kind == "source-to-text":
            out += run.to_text(batch, run.decoding())
        elif kind == "image-to-text":
            out += run.to_text([_image_bytes(url) for url in batch], run.decoding())
        elif kind == "chat":
            session = run.chat(run.sampling(seed=seed))  # a fresh session: no history between prompts
            try:
                out.append("".join(session.reply(batch[0])))
            except QKVError as e:
                raise QKVError(f"{run.path}: item {k + 1} ({batch[0][:40]!r}): {e}") from None
        else:
            limit = min(run.config.sample.max_new_tokens, LM_MAX_NEW_TOKENS) or LM_MAX_NEW_TOKENS
            out.append(run.generate(batch[0], run.sampling(seed=seed, max_new_tokens=limit)))
        if progress is not None:
            progress(done + len(out), total)
    return out


def _image_bytes(data_url: str) -> bytes:
    import base64

    return base64.b64decode(data_url.partition(",")[2])


def create_campaign(store_path: str | Path, spec: CampaignSpec, progress: Progress | None = None,
                    device: str = "cpu") -> Created:
    """Read the items, load the runs, make every candidate, then store the campaign in one transaction.

    Nothing is written before every candidate exists: bad input (files, runs, options, a name in use) is a
    one-line QKVError and leaves the store as it was (no file is created for a store that did not exist).
    """
    from qkv.tasks import load_run

    spec.check()
    store_path = Path(store_path)
    if store_path.exists():  # fail before the slow part if the name is taken (or the file is no store)
        with Store(store_path) as store:
            if spec.name in store.campaign_names():
                raise QKVError(f"a campaign named {spec.name!r} already exists in {store_path}")
    runs = [load_run(path, device=device) for path in spec.runs]
    kinds = [kind_of(run) for run in runs]
    kind = kinds[0]
    if any(k != kind for k in kinds):
        raise QKVError("the runs must write the same kind of text: " + ", ".join(f"{p} is {k}" for p, k in
                                                                              zip(spec.runs, kinds, strict=True)))
    if spec.data is not None and len(runs) > 1:  # both must read the same sources: their descriptions agree
        wheres = {run.dataset_pairs(spec.data, spec.split)[2] for run in runs}
        if len(wheres) > 1:
            raise QKVError(f"the runs read different data from {spec.data} ({', '.join(sorted(wheres))}); compare "
                           "runs of one direction")
    available, where = read_items(spec, runs[0])
    items = sample_items(available, spec.n, spec.seed)
    notes = []
    if spec.n > len(available):
        notes.append(f"asked for {spec.n} items but {where} has {len(available)} non-empty sources: using all")
    sources = [src for _, src, _ in items]
    total = len(sources) * len(runs)
    outputs = [make_candidates(run, sources, spec.seed, progress, done=k * len(sources), total=total)
               for k, run in enumerate(runs)]
    labels = system_labels(spec.runs)
    systems = [(label, str(Path(p).resolve())) for label, p in zip(labels, spec.runs, strict=True)]
    record = {"runs": [s[1] for s in systems], "data": spec.data, "split": spec.split,
              "src": str(spec.src) if spec.src else None,
              "ref": str(spec.ref) if spec.ref else None, "source": where, "n": spec.n, "raters": spec.raters,
              "seed": spec.seed, "available": len(available)}
    plan = plan_campaign(spec.name, kind, record, systems, items, outputs, spec.raters, spec.seed)
    with Store(store_path, create=True) as store:
        store.add_campaign(plan)
    return Created(spec.name, kind, labels, len(items), len(available), where,
                   [(r.name, r.token) for r in plan.raters], n_controls(len(items)), notes)
