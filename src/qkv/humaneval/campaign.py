"""A campaign: the items, each system's candidate for each item, and every rater's tasks, made once and stored.

A campaign compares one or two trained runs that write the same kind of text (`kind_of`, from what they can do:
text about a source — a sentence, an image or a recording —, a chat reply, or a continuation) the way WMT's human
evaluation does (Kocmi et al. 2024, "Error Span Annotation"; Appraise):

1. **Items.** n sources drawn at random (seeded) from the data: a named dataset the runs know (a Multi30k split
   for translation, a captioning run's fresh test scenes, a folder of images or recordings with their texts),
   the runs' own held-out pairs (``data = "validation"``: `reference_pairs`), or a file with one source or prompt
   per line (for a run that reads images or audio: one image or WAV path per line) and optionally its
   line-aligned references. Empty lines are skipped; every image or WAV file a src file names is read first,
   sampled or not, so a bad line is a one-line error naming it. An image is stored as a PNG data URL at the run's
   size, a recording as a 16-bit WAV data URL of what the run reads (cut to the model's length, and to at most
   MAX_AUDIO_S seconds, with a note): what the rater page shows or plays, and what the candidates are made from.
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
from typing import Any

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
MAX_AUDIO_S = 30.0  # a recording is cut to this many seconds (~1.3 MB as a WAV data URL, stored per item)
OWN_DATA = "validation"  # data = this: the runs' own held-out sources and references (`reference_pairs`)
SHOWN_NOTES = 5  # notes about single items (a conversion, a cut) printed before "... and k more"
KIND_OF_SOURCE = {"text": "source-to-text", "image": "image-to-text", "audio": "audio-to-text"}  # by source_kind
MEDIA_KINDS = ("image-to-text", "audio-to-text")  # kinds whose items hold a data URL, not text
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# progress(done, total): candidates made so far, out of all of them
Progress = Callable[[int, int], None]


@dataclass
class CampaignSpec:
    """What `qkv human-eval create` was asked for."""

    name: str
    runs: list[str | Path]
    data: str | None = None  # a named dataset ("multi30k"), a folder the runs read, or "validation" (their own)
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
            raise QKVError("give the items with either data (a dataset such as 'multi30k' and a split, a folder the "
                           f"runs read, or {OWN_DATA!r}: their own held-out pairs) or a src file (and its ref file), "
                           "not both" if self.data is not None else
                           "give the items with data (a dataset such as 'multi30k' and a split, a folder the runs "
                           f"read, or {OWN_DATA!r}: their own held-out pairs) or a src file (and its ref file)")
        if self.data is None and self.split is not None:
            raise QKVError("split goes with data = 'multi30k', not with a src file")
        if self.data is not None and self.ref is not None:
            raise QKVError("ref goes with a src file; data = 'multi30k' brings its own references")
        if self.data == OWN_DATA and self.split is not None:
            raise QKVError(f"split goes with a named dataset, not with data = {OWN_DATA!r} (the runs' own held-out "
                           "pairs)")


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
    (Appraise borrows from references); with nothing there, item i's own reference and every source that is
    text (an image or a recording, a data: URL, lends no words)."""
    others = [j for j in range(len(items)) if j != i]
    donors = [items[j][2] for j in others if items[j][2]] + [out[j] for out in outputs for j in others]
    donors = [d for d in donors if d.strip()]
    if donors:
        return donors
    sources = [src for _, src, _ in items if not src.startswith("data:")]
    return [d for d in [items[i][2] or ""] + sources if d.strip()]


# ------------------------------------------------------------------------------------------------ reading
def kind_of(run) -> str:
    """What the raters of `run` see, from what it can do: a source and the text written about it (a sentence:
    source-to-text; an image: image-to-text; a recording: audio-to-text), a chat reply, or a continuation."""
    if can(run, Capability.SOURCE_TO_TEXT):
        if run.source_kind not in KIND_OF_SOURCE:
            raise QKVError(f"{run.path} writes text about {run.source_kind} sources, which the rater pages cannot "
                           f"show (they show {', '.join(KIND_OF_SOURCE)})")
        return KIND_OF_SOURCE[run.source_kind]
    if can(run, Capability.CHAT):
        return "chat"
    if can(run, Capability.CONTINUATION):
        return "continuation"
    raise QKVError(f"{run.path} is {run.describe()}; human evaluation compares runs that write text (about a "
                   "source, in a chat, or after a prompt)")


def read_items(spec: CampaignSpec, run) -> tuple[list[tuple[int, Any, str | None]], str]:
    """([(line, source, reference or None)] of the non-empty sources, a description of where they came from): the
    pairs of a named dataset or a folder the run knows (`dataset_pairs`), the run's own held-out pairs
    (``data = "validation"``: `reference_pairs`), or a src file (and its ref file). The source of a run that reads
    images or recordings is what the run gives (a tensor) or a file's path, one per line of a src file;
    `check_files` reads every such file and `media_items` turns the sampled sources into the data URLs the rater
    page shows."""
    from qkv.data.translation import read_lines, read_parallel

    if spec.data is not None:
        if not can(run, Capability.SOURCE_TO_TEXT):
            raise QKVError(f"data = {spec.data!r} gives sources with references, for runs that write text about a "
                           f"source; give {kind_of(run)} runs their prompts in a src file")
        srcs, refs, where = dataset_pairs(run, spec)
    elif spec.ref is not None:
        srcs, refs = read_parallel(spec.src, spec.ref)
        where = f"{spec.src} -> {spec.ref}"
    else:
        srcs = read_lines(spec.src)
        refs, where = [None] * len(srcs), str(spec.src)
    if kind_of(run) in MEDIA_KINDS:  # a tensor, or a file's path (a blank line is no source)
        srcs = [s.strip() if isinstance(s, str) else s for s in srcs]
    items = [(line, s, r or None) for line, (s, r) in enumerate(zip(srcs, refs, strict=True)) if len(s)]
    if not items:
        raise QKVError(f"{where}: no non-empty source line")
    return items, where


def dataset_pairs(run, spec: CampaignSpec) -> tuple[list, list[str], str]:
    """(sources, references, where) of `spec.data`: the run's own held-out pairs for "validation", else the named
    dataset or folder as the run reads it."""
    if spec.data == OWN_DATA:
        return run.reference_pairs()
    return run.dataset_pairs(spec.data, spec.split)


def _label(spec: CampaignSpec, line: int, where: str) -> str:
    """What an error or a note calls one source: ``line 3 of src.txt`` (a src file), ``source 3 of WHERE``."""
    return f"line {line + 1} of {spec.src}" if spec.src is not None else f"source {line + 1} of {where}"


def check_files(run, spec: CampaignSpec, items: list[tuple[int, Any, str | None]], where: str) -> None:
    """Read every image or WAV file a src file names, sampled or not: a line that is no such file (missing, not
    a WAV, unreadable) is a one-line QKVError naming the line, before anything is made or stored."""
    if spec.src is None or kind_of(run) not in MEDIA_KINDS:
        return
    for line, source, _ in items:
        try:
            run.read_source(source)
        except QKVError as e:
            raise QKVError(f"{_label(spec, line, where)}: {e}") from None


def media_items(run, spec: CampaignSpec, items: list[tuple[int, Any, str | None]], where: str,
                notes: list[str] | None = None) -> list[tuple[int, str, str | None]]:
    """The items of a run that reads images or recordings with each source as a data URL: an image as a PNG at the
    run's size, a recording as a 16-bit WAV of what the run reads (`audio_url`). What that changed about a
    recording (a conversion, a cut) is added to `notes`; a source that cannot be read is a QKVError naming it
    ("line 3 of FILE: ..."). Text items come back as they are."""
    kind = kind_of(run)
    if kind not in MEDIA_KINDS:
        return items
    out = []
    for line, source, ref in items:
        label = _label(spec, line, where)
        if kind == "audio-to-text":
            out.append((line, audio_url(run, source, label, notes), ref))
            continue
        try:
            out.append((line, _image_url(run, source), ref))
        except QKVError as e:
            raise QKVError(f"{label}: {e}") from None
    return out


def _image_url(run, source) -> str:
    """An image source (a tensor, or a file's path in a src file) as a PNG data URL at the run's size."""

    from qkv.data.images import png_data_url

    if isinstance(source, str):
        source = run.image(source)
    return png_data_url(source)  # a clip: its frames side by side


def audio_url(run, source, label: str = "the recording", notes: list[str] | None = None) -> str:
    """A recording (a waveform, or a WAV file's path in a src file) as a ``data:audio/wav;base64,...`` URL of what
    the run reads: 16-bit PCM mono at the run's rate (`qkv.data.audio.wav_bytes`), cut to the model's length and
    to MAX_AUDIO_S seconds. Each conversion or cut is a line in `notes`, starting with the file's path or `label`;
    a file the run cannot read is a QKVError starting with `label`."""
    import base64

    import torch

    from qkv.data.audio import SAMPLE_RATE, wav_bytes

    notes = notes if notes is not None else []
    try:
        wave, note = run.read_source(source)  # a file: read, converted and cut, with a note; a waveform: cut silently
    except QKVError as e:
        raise QKVError(f"{label}: {e}") from None
    if note:
        notes.append(note)
    if isinstance(source, torch.Tensor) and len(wave) < len(source):
        notes.append(f"{label}: {len(source) / SAMPLE_RATE:.1f} s is longer than the model reads; kept the first "
                     f"{len(wave) / SAMPLE_RATE:.1f} s")
    most = int(MAX_AUDIO_S * SAMPLE_RATE)
    if len(wave) > most:
        notes.append(f"{label}: {len(wave) / SAMPLE_RATE:.1f} s, cut to the first {MAX_AUDIO_S:g} s (the most a "
                     "rater is played)")
        wave = wave[:most]
    return "data:audio/wav;base64," + base64.b64encode(wav_bytes(wave, SAMPLE_RATE)).decode("ascii")


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
    chunk = 16 if kind in ("source-to-text", *MEDIA_KINDS) else 1
    for k in range(0, len(sources), chunk):
        batch = sources[k:k + chunk]
        if kind == "source-to-text":
            out += run.to_text(batch, run.decoding())
        elif kind in MEDIA_KINDS:  # the image or recording the raters see or hear: the data URL's bytes
            out += run.to_text([_url_bytes(url) for url in batch], run.decoding())
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


def _url_bytes(data_url: str) -> bytes:
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
    if spec.data is not None and len(runs) > 1:  # both must read the same sources: descriptions and references agree
        pairs = [dataset_pairs(run, spec) for run in runs]
        if len({(where, tuple(refs)) for _, refs, where in pairs}) > 1:
            wheres = sorted({where for _, _, where in pairs})
            raise QKVError(f"the runs read different data from {spec.data} ({', '.join(wheres)}); compare runs of "
                           "one direction, trained on the same data")
    available, where = read_items(spec, runs[0])
    check_files(runs[0], spec, available, where)  # every file of a src file, sampled or not
    media_notes: list[str] = []
    items = media_items(runs[0], spec, sample_items(available, spec.n, spec.seed), where, media_notes)
    notes = []
    if spec.n > len(available):
        notes.append(f"asked for {spec.n} items but {where} has {len(available)} non-empty sources: using all")
    notes += media_notes[:SHOWN_NOTES]
    if len(media_notes) > SHOWN_NOTES:
        notes.append(f"... and {len(media_notes) - SHOWN_NOTES} more notes like these")
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
