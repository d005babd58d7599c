"""The sections of a report card read from the run directory and the run (what the model makes, chosen by
capability, is `qkv.report.samples`):

    training       the loss curves (`qkv.training.plots`, as qkv train draws them), steps, wall clock, tokens/s, and
                   the pictures qkv train saved (samples.png)
    evaluations    the headline scores where the run logs them (WER and CER), every evaluation record of
                   metrics.jsonl as a table; with --eval, `run.evaluate()` with its defaults: `run.report(result)`,
                   the metric signatures it gives, its JSON
    human eval     with --db: the campaigns of that store whose systems include this run, and their scores
    parameters     `run.parameter_table()`: its text and its JSON
    data, config   config.json's data_meta and every other section
    machine        this machine (CPU, bf16 units, versions), the precision the run asked for and what it resolves
                   to here, the wall clock, the steps, the dates

Nothing here names a task. Whatever a section cannot show becomes a one-line note in the report, never a failure.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

from qkv import hardware
from qkv.errors import QKVError
from qkv.report.card import Pairs, Picture, Pre, Section, Table, Text
from qkv.runs import PLOT_FILE, SAMPLES_FILE, STATE_FILE, load_json

STEP_KEYS = {"step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"}  # a training-step line of metrics.jsonl
MEMORY_KEYS = ("peak_mem_mb", "peak_mem_mb_per_rank")  # logged with each evaluation; the training section shows them
# the headline of a card, where a run logs them: the word and character error rates (a transcriber)
HEADLINE = (("val_wer", "WER"), ("val_cer", "CER"))
# what a section catches and shows as a note: a user-level problem, or a file that is gone (never a bug)
EXPECTED = (QKVError, OSError)


# ------------------------------------------------------------------------------------------------ formatting
def fmt(value) -> str:
    """A metrics or config value as a short string: 4 significant digits for floats, JSON for lists and dicts."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def duration(seconds: float) -> str:
    """``0.9 s``, ``12 min 5 s``, ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def now() -> str:
    return datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()


def drawn(draw, name: str) -> bytes:
    """The PNG bytes of ``draw(path)``, drawn into a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        draw(path)
        return path.read_bytes()


def note(what: str, err: Exception) -> Text:
    return Text(f"{what}: {err}")


# ------------------------------------------------------------------------------------------------ training
def eval_records(metrics: list[dict]) -> list[dict]:
    """The evaluation lines of metrics.jsonl: every line with more than a training step's keys."""
    return [r for r in metrics if set(r) - STEP_KEYS]


def training_section(run_dir: Path, out_dir: Path, metrics: list[dict]) -> Section:
    from qkv.training.plots import plot_losses

    sec = Section("training", "Training")
    steps = [r for r in metrics if "loss" in r and not set(r) - STEP_KEYS]
    if not metrics:
        sec.blocks.append(Text("metrics.jsonl holds nothing yet: no curves to draw."))
    else:
        last = metrics[-1]
        rows = [("steps", fmt(last.get("step"))), ("wall clock", duration(float(last.get("elapsed_s", 0.0))))]
        if steps:
            rows += [("last training loss", f"{steps[-1]['loss']:.4f} (step {steps[-1]['step']})"),
                     ("tokens_per_s (last logged)", f"{steps[-1].get('tokens_per_s', 0):,.0f}")]
        memory = memory_row(metrics)
        if memory:
            rows.append(memory)
        sec.blocks.append(Pairs(rows))
    if steps:
        png = drawn(lambda path: plot_losses(run_dir, path), PLOT_FILE)
        link = os.path.relpath(run_dir / PLOT_FILE, out_dir) if (run_dir / PLOT_FILE).is_file() else None
        sec.blocks.append(Picture(png, "loss curves", "training loss per logged step and validation loss per "
                                  "evaluation (from metrics.jsonl)", Path(link).as_posix() if link else None))
    if (run_dir / SAMPLES_FILE).is_file():
        link = Path(os.path.relpath(run_dir / SAMPLES_FILE, out_dir)).as_posix()
        sec.blocks.append(Picture((run_dir / SAMPLES_FILE).read_bytes(), SAMPLES_FILE,
                                  f"the picture qkv train saved when it ended ({SAMPLES_FILE})", link))
    return sec


def memory_row(metrics: list[dict]) -> tuple[str, str] | None:
    """("peak memory per process", "rank 0: 412 MiB, rank 1: 405 MiB (…)"): what the last evaluation logged (the
    peak of the training steps before it: resident memory on a CPU, allocated on a GPU) and the largest of any;
    None for a run that logged none."""
    logged = [r for r in metrics if isinstance(r.get("peak_mem_mb_per_rank"), list)]
    if not logged:
        return None
    shown = ", ".join(f"rank {i}: {mb:,.0f} MiB" for i, mb in enumerate(logged[-1]["peak_mem_mb_per_rank"]))
    largest = max(float(r.get("peak_mem_mb", 0.0)) for r in logged)
    return "peak memory per process", (f"{shown} (training steps before step {logged[-1].get('step')}; the largest "
                                       f"of any evaluation: {largest:,.0f} MiB; resident on a CPU, allocated on a "
                                       "GPU)")


def headline(metrics: list[dict]) -> str | None:
    """The card's headline scores: the HEADLINE metrics of the last evaluation that logged them, as percentages
    (``validation WER 12.50%, CER 4.10% (step 3000)``); None for a run that logs none of them."""
    last = next((r for r in reversed(eval_records(metrics)) if any(k in r for k, _ in HEADLINE)), None)
    if last is None:
        return None
    scores = [f"{label} {100 * last[k]:.2f}%" for k, label in HEADLINE if isinstance(last.get(k), float | int)]
    return f"validation {', '.join(scores)} (step {last.get('step', '?')})" if scores else None


def evaluations_section(metrics: list[dict], run=None, evaluated: tuple[dict, float] | None = None) -> Section:
    """The evaluation records of metrics.jsonl, under the headline scores where the run logs them; with
    `evaluated` (result, seconds), that evaluation too."""
    sec = Section("evaluations", "Evaluations")
    records = eval_records(metrics)
    top = headline(metrics)
    if top is not None:
        sec.blocks.append(Text(f"Headline: {top}, from the last evaluation in metrics.jsonl that logged them."))
    if records:
        first = ["step"]
        last = [k for k in ("elapsed_s", "eval_s") if any(k in r for r in records)]
        keys = list(dict.fromkeys(k for r in records for k in r if k not in (*first, *last, *MEMORY_KEYS)))
        columns = first + keys + last
        sec.blocks.append(Text(f"Every evaluation qkv train logged ({len(records)} in metrics.jsonl):"))
        sec.blocks.append(Table(columns, [[fmt(r[k]) if k in r else "" for k in columns] for r in records]))
    else:
        sec.blocks.append(Text("metrics.jsonl holds no evaluation record."))
    signatures = signatures_in(records)
    if signatures:
        sec.blocks.append(Table(["metric", "signature"], signatures))
    elif evaluated is None:
        sec.blocks.append(Text("The evaluations during training log scores without metric signatures; qkv report "
                               "--eval adds the run's own evaluation (what qkv eval prints) with any signature it "
                               "reports."))
    if evaluated is not None:
        result, seconds = evaluated
        sec.blocks.append(Text(f"qkv report --eval: run.evaluate() with its defaults, {duration(seconds)}:"))
        sec.blocks.append(Pre(run.report(result)))
        found = signatures_in([result])
        if found:
            sec.blocks.append(Table(["metric", "signature"], found))
        sec.blocks.append(Pre(json.dumps(result, indent=2, ensure_ascii=False, default=str), "the result as JSON"))
    return sec


def signatures_in(values: list) -> list[list[str]]:
    """[metric, signature] for every ``signature`` string (or ``*_signature``) inside `values`, at any depth."""
    found = []

    def walk(v, path):
        if isinstance(v, dict):
            for k, x in v.items():
                if isinstance(x, str) and (k == "signature" or k.endswith("_signature")):
                    found.append([".".join(path) or k, x])
                else:
                    walk(x, [*path, str(k)])
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, [*path, str(i)] if len(v) > 1 else path)

    for v in values:
        walk(v, [])
    return list(map(list, dict.fromkeys(map(tuple, found))))


# ------------------------------------------------------------------------------------------------ human evaluation
def human_eval_section(store, run_dir: Path) -> Section:
    """The campaigns of `store` that compared this run, each with its scores, statistics and plot."""
    from qkv.humaneval.report import build_report, format_report, render_plot
    from qkv.humaneval.stats import CRITERIA

    sec = Section("human-eval", "Human evaluation")
    me = run_dir.resolve()
    found = []
    for name in store.campaign_names():
        systems = store.campaign(name)["systems"]
        mine = [s["label"] for s in systems if Path(s["run_path"]).resolve() == me]
        if mine:
            found.append((name, mine[0]))
    if not found:
        sec.blocks.append(Text(f"No campaign in {store.path} compared this run."))
        return sec
    for name, label in found:
        d = build_report(store, name)
        sec.blocks.append(Text(f"Campaign {name} ({d['kind']}, created {d['created'][:10]}): {d['items']} items, "
                               f"{len(d['raters'])} raters, {d['judged']} of {d['tasks']} tasks judged; this run is "
                               f"system {label} of {', '.join(d['systems'])}."))
        if d["judged"]:
            rows = []
            for s in d["systems"]:
                for c in CRITERIA:
                    v = d["criteria"][c]["systems"][s]
                    rows.append([s + (" (this run)" if s == label else ""), c, str(v["n"]),
                                 _mean_ci(v["mean"], v["ci"], "{:.1f}"), _mean_ci(v["z_mean"], v["z_ci"], "{:+.2f}")])
            sec.blocks.append(Table(["system", "criterion", "n", "raw mean [95% CI]", "z mean [95% CI]"], rows))
            sec.blocks.append(Picture(render_plot(d), f"campaign {name}: item means per system",
                                      "item means per system and criterion, with their mean and 95% CI (raw scores "
                                      "above, z-scores below)"))
        sec.blocks.append(Pre(format_report(d), f"qkv human-eval report {name}"))
    return sec


def _mean_ci(mean, ci, form: str) -> str:
    """``80.0 [75.2, 84.1]``, or n/a for what could not be computed."""
    if mean is None:
        return "n/a"
    return form.format(mean) + (" [n/a]" if ci is None else f" [{form.format(ci[0])}, {form.format(ci[1])}]")


# ------------------------------------------------------------------------------------------------ the run itself
def parameters_section(run) -> Section:
    table = run.parameter_table()
    return Section("parameters", "Parameters", [Pre(table.format_text()),
                                                Pre(json.dumps(table.to_json(), indent=2, ensure_ascii=False),
                                                    "the table as JSON")])


def data_section(saved: dict) -> Section:
    meta = saved.get("data_meta") or {}
    blocks = [Pairs([(k, fmt(v)) for k, v in meta.items()])] if meta else \
        [Text("config.json holds no data summary (data_meta).")]
    return Section("data", "Data", blocks)


def config_section(saved: dict) -> Section:
    top = [(k, fmt(v)) for k, v in saved.items() if not isinstance(v, dict)]
    blocks: list = [Pairs(top)] if top else []
    blocks += [Table([f"[{name}]", "value"], [[k, fmt(v)] for k, v in section.items()])
               for name, section in saved.items() if isinstance(section, dict) and name != "data_meta"]
    return Section("config", "Config", blocks)


def machine_rows() -> list[tuple[str, str]]:
    """This machine: the CPU, its bf16 units, cores, the GPU if any, the software (every report's first rows)."""
    from qkv.version import version

    units = hardware.cpu_bf16_units()
    rows = [("CPU", hardware.cpu_model()), ("bf16 units", ", ".join(units) or "none"),
            ("cores", str(os.cpu_count()))]
    if torch.cuda.is_available():
        rows.append(("GPU", torch.cuda.get_device_name(0)))
    rows.append(("software", f"qkv {version()}, torch {torch.__version__}, Python {platform.python_version()}"))
    return rows


def machine_section(saved: dict, metrics: list[dict], run_dir: Path) -> Section:
    from qkv.training.precision import resolve_precision

    rows = machine_rows()
    train = saved.get("train") if isinstance(saved.get("train"), dict) else {}
    setting = train.get("precision")
    if setting:
        device = str(train.get("device", "auto"))
        here = torch.device("cuda" if torch.cuda.is_available() and device in ("auto", "cuda") else "cpu")
        try:
            resolved = resolve_precision(setting, here).reason.removeprefix("precision: ")
        except (ValueError, RuntimeError) as err:
            resolved = f"unknown ({err})"
        rows.append(("precision", f"train.precision = {setting!r}: on this machine, {resolved}"))
    logged = sorted({fmt(r["precision"]) for r in metrics if "precision" in r})
    rows.append(("precision logged", ", ".join(logged) if logged else "not recorded in metrics.jsonl (the setting "
                                                                      "above is what the run asked for)"))
    if metrics:
        rows.append(("wall clock", f"{duration(float(metrics[-1].get('elapsed_s', 0.0)))} (elapsed_s of the last "
                                   "metrics.jsonl record: training and its evaluations, resumes included)"))
    state_step = None
    if (run_dir / STATE_FILE).is_file():
        try:
            state_step = load_json(run_dir / STATE_FILE).get("step")
        except QKVError:
            state_step = None
    steps = max((r.get("step", 0) for r in metrics), default=None)
    rows.append(("steps", f"{steps if steps is not None else 'none logged'}"
                 + (f" (last checkpoint: step {state_step})" if state_step is not None else "")))
    when = run_dir / STATE_FILE if (run_dir / STATE_FILE).is_file() else None
    if when is not None:
        stamp = datetime.fromtimestamp(when.stat().st_mtime).astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
        rows.append(("last checkpoint written", stamp))
    rows.append(("report written", now()))
    return Section("machine", "Machine and run", [
        Text("The machine this report was written on (qkv train writes it on the machine that trained, when it ends)."),
        Pairs(rows)])


def timed(fn):
    """(fn(), seconds)."""
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t
