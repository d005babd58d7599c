"""A report card per run: one self-contained HTML page and its Markdown twin, written beside the run.

    from qkv.report import write_report
    html, md = write_report("runs/shakespeare")            # RUN/report.html, RUN/report.md
    write_report("runs/multi30k", out="cards/", evaluate=True, db="human-eval.db")  # cards/report.html, .md

The card (`build_card`) gathers, in reading order: a summary line (with the headline scores where the run logs
them: WER and CER), the training (loss curves, steps, wall clock), the evaluations (every record of
metrics.jsonl; with ``evaluate``, `run.evaluate()` with its defaults), samples and one attention
picture chosen by what the run can do (`qkv.report.samples`), the human-evaluation campaigns of a store that
compared the run, the parameter table, the data summary, the config, and the machine. `qkv.report.render` writes it
as HTML (inline CSS, pictures as data: URLs, no script, nothing fetched) and as Markdown. `qkv report RUN` and the
end of `qkv train` call `write_report`; `qkv serve` links the page of every run that has one.

Bad input — not a run directory, a metrics.jsonl that does not parse, a store that is not one — is a one-line
`QKVError` raised before anything is written; the two files are each written atomically (`qkv.runs`).
"""

from __future__ import annotations

from pathlib import Path

from qkv.errors import QKVError
from qkv.report.card import Card
from qkv.report.render import to_html, to_markdown
from qkv.report.samples import attention_section, samples_section
from qkv.report.sections import (
    config_section,
    data_section,
    duration,
    evaluations_section,
    headline,
    human_eval_section,
    machine_section,
    now,
    parameters_section,
    timed,
    training_section,
)
from qkv.runs import REPORT_HTML_FILE, REPORT_MD_FILE, atomic_write_bytes, read_config, read_metrics


def build_card(run, saved: dict, metrics: list[dict], out_dir: Path, *, samples: bool = True,
               evaluated: tuple[dict, float] | None = None, store=None) -> Card:
    """The report card of a loaded run (its config.json `saved`, its `metrics`); `out_dir` is where the Markdown
    will be (its links to the run's pictures are relative to it)."""
    run_dir = Path(run.path)
    table = run.parameter_table().to_json()
    last = metrics[-1] if metrics else {}
    trained = (f"{fmt_steps(last.get('step'))} in {duration(float(last.get('elapsed_s', 0.0)))}"
               if metrics else "nothing logged yet")
    top = headline(metrics)
    card = Card(f"{run_dir.name}: report", f"{run.describe()} · {table['total']:,} parameters · {trained} · "
                + (f"{top} · " if top else "") + f"written {now()}")
    card.sections.append(training_section(run_dir, out_dir, metrics))
    card.sections.append(evaluations_section(metrics, run, evaluated))
    if samples:
        card.sections.append(samples_section(run))
    card.sections.append(attention_section(run))
    if store is not None:
        card.sections.append(human_eval_section(store, run_dir))
    card.sections += [parameters_section(run), data_section(saved), config_section(saved),
                      machine_section(saved, metrics, run_dir)]
    card.footer = ("Written by qkv report: one file, no script, nothing fetched. Text the model wrote is shown as "
                   "text.")
    return card


def fmt_steps(step) -> str:
    return f"{step:,} steps" if isinstance(step, int) else "steps not logged"


def write_report(run_dir: str | Path, out: str | Path | None = None, *, samples: bool = True,
                 evaluate: bool = False, db: str | Path | None = None) -> tuple[Path, Path]:
    """Write RUN/report.html and RUN/report.md (or into `out`); returns their paths. `samples=False` leaves the
    samples out; `evaluate` also runs `run.evaluate()` with its defaults; `db` adds the human-evaluation campaigns of
    that store that compared this run. Every input is checked before the slow parts, and nothing is written until
    both files are ready."""
    from qkv.tasks import load_run

    run_dir = Path(run_dir)
    saved = read_config(run_dir)
    metrics = read_metrics(run_dir)
    out_dir = Path(out) if out is not None else run_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise QKVError(f"{out_dir} is not a folder", argument="out")
    store = None
    if db is not None:
        from qkv.humaneval.store import Store

        store = Store(db)
    try:
        run = load_run(run_dir)
        evaluated = timed(run.evaluate) if evaluate else None
        card = build_card(run, saved, metrics, out_dir, samples=samples, evaluated=evaluated, store=store)
    finally:
        if store is not None:
            store.close()
    page, twin = to_html(card).encode("utf-8"), to_markdown(card).encode("utf-8")
    html_path, md_path = out_dir / REPORT_HTML_FILE, out_dir / REPORT_MD_FILE
    atomic_write_bytes(html_path, page)
    atomic_write_bytes(md_path, twin)
    return html_path, md_path


__all__ = ["Card", "build_card", "write_report"]
