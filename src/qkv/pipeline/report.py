"""The pipeline's report: OUT/report.md and OUT/report.html (the report card's renderer, `qkv.report`).

nanochat's report (deleted from its repository in 2026-07) is the model; this one holds:

- the machine (CPU, bf16 units, cores, software);
- the time per stage, summed over resumes;
- the bloat block: lines, files and characters of qkv's code, and its dependencies;
- one table, a row per metric and a column per stage (base, SFT, RL): the base model's validation bits per byte,
  the answer loss, exact match per skill on held-out phrasings and on held-out values, their means and centred
  means (`qkv.evaluation.skills`), and RL's change on held-out arithmetic phrasings with a paired bootstrap;
- samples at each stage: the base model continues a sentence, the chat models answer held-out phrasings.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import torch

from qkv.errors import QKVError
from qkv.report.card import Card, Pairs, Pre, Section, Table, Text
from qkv.report.render import to_html, to_markdown
from qkv.report.sections import duration, machine_rows, now
from qkv.runs import (
    DATA_META_FILE,
    REPORT_HTML_FILE,
    REPORT_MD_FILE,
    atomic_write_bytes,
    has_weights,
    load_json,
    read_metrics,
)
from qkv.tasks.capabilities import Capability

BASE_PROMPT = "The Python interpreter"
STAGE_TITLE = {"tokenizer": "tokenizer", "base": "base", "sft": "SFT", "rl": "RL"}


def bloat() -> list[tuple[str, str]]:
    """qkv's size: the package's Python files, lines and characters (and its tests, in a source checkout), and
    the packages it requires."""
    package = Path(__file__).resolve().parents[1]
    rows = []
    for name, root in (("qkv (src/qkv)", package), ("tests", package.parents[1] / "tests")):
        files = sorted(root.rglob("*.py")) if root.is_dir() else []
        if files:
            texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
            rows.append((f"{name}", f"{sum(t.count(chr(10)) for t in texts):,} lines in {len(files)} files, "
                                    f"{sum(map(len, texts)):,} characters"))
    try:
        deps = [r.split(";")[0].strip() for r in metadata.requires("qkv") or [] if "extra ==" not in r]
        rows.append(("dependencies", f"{len(deps)}: {', '.join(deps)}"))
    except metadata.PackageNotFoundError:
        pass
    return rows


def _last(run_dir: Path, key: str) -> dict | None:
    """The last metrics.jsonl record of `run_dir` that holds `key` (None if none does)."""
    return next((r for r in reversed(read_metrics(run_dir)) if key in r), None)


def _pct(v) -> str:
    return "—" if v is None else f"{v:.1%}"


def stage_scores(out: Path, stages: list[str], max_questions: int) -> dict:
    """{stage: {"run", "eval"}} for the run stages that exist: the chat stages evaluated on held-out phrasings
    and values (the first `max_questions` of each)."""
    from qkv.tasks import load_run

    scores = {}
    for stage in stages:
        if stage == "tokenizer" or not has_weights(out / stage):
            continue
        run = load_run(out / stage)
        chat = Capability.CHAT in run.capabilities
        scores[stage] = {"run": run, "eval": run.evaluate(max_pairs=max_questions) if chat else None}
    return scores


def metric_rows(out: Path, scores: dict) -> tuple[list[str], list[list[str]]]:
    """The table: a row per metric, a column per stage."""
    cols = list(scores)
    rows = []
    base = _last(out / "base", "val_bpb") if "base" in scores else None
    rows.append(["validation bits per byte (pretraining text)"]
                + [f"{base['val_bpb']:.3f}" if s == "base" and base else "—" for s in cols])
    rows.append(["answer loss, nats per token (validation)"]
                + ["—" if scores[s]["eval"] is None else f"{scores[s]['eval']['loss']:.3f}" for s in cols])
    chat = [s for s in cols if scores[s]["eval"] is not None]
    if not chat:
        return [STAGE_TITLE[s] for s in cols], rows
    first = scores[chat[0]]["eval"]["skills"]
    for split, title in (("phrasings", "held-out phrasings"), ("values", "held-out values")):
        if split not in first:
            continue
        for skill in first[split]["per_skill"]:
            rows.append([f"{title}: {skill}"] + [
                "—" if scores[s]["eval"] is None else _pct(scores[s]["eval"]["skills"][split]["per_skill"].get(skill))
                for s in cols])
        rows.append([f"{title}: mean over skills"] + [
            "—" if scores[s]["eval"] is None else _pct(scores[s]["eval"]["skills"][split]["mean"]) for s in cols])
        rows.append([f"{title}: centred mean (ChatCORE-style)"] + [
            "—" if scores[s]["eval"] is None else f"{scores[s]['eval']['skills'][split]['core']:.3f}" for s in cols])
    return [STAGE_TITLE[s] for s in cols], rows


def rl_gain(scores: dict, skill: str = "arithmetic") -> str | None:
    """RL's change in exact match on the held-out phrasings of `skill`, with a paired bootstrap over questions."""
    from qkv.evaluation.pass_at_k import paired_bootstrap

    if "sft" not in scores or "rl" not in scores:
        return None
    before = [ok for s, ok in scores["sft"]["eval"]["skills"]["phrasings"]["outcomes"] if s == skill]
    after = [ok for s, ok in scores["rl"]["eval"]["skills"]["phrasings"]["outcomes"] if s == skill]
    if not before or len(before) != len(after):
        return None
    b = paired_bootstrap([float(x) for x in before], [float(x) for x in after])
    return (f"RL on held-out {skill} phrasings: {sum(before) / len(before):.1%} → {sum(after) / len(after):.1%} "
            f"({b['delta'] * 100:+.1f} points, paired bootstrap 95% CI [{b['ci'][0] * 100:+.1f}, "
            f"{b['ci'][1] * 100:+.1f}], p = {b['p']:.3f}; {len(before)} questions)")


def samples(scores: dict, n: int) -> list[str]:
    """Per stage: the base model continues `BASE_PROMPT`; a chat model answers the first held-out phrasings."""
    from qkv.generation.calculator import ChatCompleter

    lines = []
    for stage, got in scores.items():
        run = got["run"]
        lines.append(f"--- {STAGE_TITLE[stage]} ({run.path.name})")
        if got["eval"] is None:
            if Capability.CONTINUATION in run.capabilities:
                lines.append(BASE_PROMPT + run.generate(BASE_PROMPT, max_new_tokens=60, temperature=0.0))
            continue
        convs = _held_out_questions(run, n)
        replies = ChatCompleter(run.model, run.tokenizer).replies([c.messages[:-1] for c in convs], 64)
        for c, reply in zip(convs, replies, strict=True):
            lines.append(f"user: {c.messages[-2]['content']}")
            lines.append(f"bot:  {reply}    (reference: {c.messages[-1]['content']})")
    return lines


def _held_out_questions(run, n: int) -> list:
    """One held-out-phrasing question per skill, up to `n` per skill."""
    from qkv.data.chat import load_chat_splits

    seen: dict[str, int] = {}
    out = []
    for c in load_chat_splits(run.config.data)["test"]:
        if seen.get(c.skill, 0) < n:
            seen[c.skill] = seen.get(c.skill, 0) + 1
            out.append(c)
    return out


def write_pipeline_report(out: Path, cfg, state: dict) -> tuple[Path, Path]:
    """Evaluate the stages and write OUT/report.html and OUT/report.md; (html path, md path)."""
    stages = [s["name"] for s in state["stages"]]
    scores = stage_scores(out, stages, cfg.report.max_questions)
    machine = [*machine_rows(), ("torch threads", str(torch.get_num_threads())), ("written", now())]
    times = [[STAGE_TITLE[s["name"]], s["status"], duration(s["seconds"]), str(s.get("attempts", 0)),
              s.get("outcome", "")] for s in state["stages"]]
    total = sum(s["seconds"] for s in state["stages"])
    times.append(["total", "", duration(total), "", ""])
    columns, rows = metric_rows(out, scores)
    tok_meta = out / "tokenizer" / DATA_META_FILE
    blocks = [Table(["metric", *columns], rows)]
    gain = rl_gain(scores)
    if gain:
        blocks.append(Text(gain))
    if tok_meta.is_file():
        m = load_json(tok_meta)
        blocks.append(Text(f"Tokenizer: byte-level BPE, {m['vocab_size']:,} ids, {m['bytes_per_token']:.2f} bytes "
                           f"per token on the held-out documents ({m['val_bytes']:,} bytes)."))
    card = Card("chat pipeline", f"{out}: {', '.join(STAGE_TITLE[s] for s in stages)} in {duration(total)}", [
        Section("machine", "Machine", [Pairs(machine)]),
        Section("time", "Time per stage", [Table(["stage", "status", "time", "attempts", "outcome"], times)]),
        Section("bloat", "Bloat", [Pairs(bloat())]),
        Section("metrics", "Metrics by stage", blocks),
        Section("samples", "Samples at each stage", [Pre("\n".join(samples(scores, cfg.report.samples)))]),
    ])
    html, md = out / REPORT_HTML_FILE, out / REPORT_MD_FILE
    try:
        atomic_write_bytes(html, to_html(card).encode("utf-8"))
        atomic_write_bytes(md, to_markdown(card).encode("utf-8"))
    except OSError as e:
        raise QKVError(f"cannot write the report in {out}: {e}") from None
    return html, md
