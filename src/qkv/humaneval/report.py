"""A campaign's results: the report (a JSON-ready dict, its text, its plot) and the export of every judgement.

`build_report(store, name)` reads the latest judgement of every task and computes `qkv.humaneval.stats` on it:

    {"campaign", "kind", "created", "systems": [labels], "pairwise", "items", "source",
     "raters": [{name, tasks, done}], "tasks", "judged", "judgements", "revisions",
     "criteria": {"accuracy" | "fluency": {
         "systems": {label: {"n", "mean", "ci", "z_mean", "z_ci", "item_means", "item_z"}},
         "wilcoxon": {...} | None, "alpha": float | None, "kendall": {"chrf++", "bleu"} | None}},
     "preferences": {label: k, ..., "tie": k, "n"} | None, "errors": {label: {...}},
     "quality_control": [{rater, pairs, bad_lower, p, status}]}

It is what ``qkv human-eval report --json`` prints and what the server's admin page serves: plain JSON (no
NaN: what cannot be computed is None). `format_report` is its text; `plot_report` draws the item means of each
system (jittered dots) with their mean and 95% CI, raw scores above and z-scores below, one column per
criterion (`render_plot` gives the PNG's bytes). `export_judgements` writes every judgement, history included, as CSV
and JSONL, one row per judged candidate, with the slot it was shown in (A/B) and its candidate id.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from qkv.humaneval.stats import (
    CRITERIA,
    QC_MIN_PAIRS,
    QC_P,
    Rating,
    error_counts,
    item_means,
    krippendorff_alpha,
    metric_correlation,
    preference_counts,
    quality_control,
    summarize,
    wilcoxon_paired,
    z_scores,
)
from qkv.humaneval.store import Store
from qkv.runs import atomic_write_bytes

# slot (where the candidate was shown: A or B, A when a task shows one) and candidate_id came later: they go
# last, so the columns before them keep their places
EXPORT_COLUMNS = ("campaign", "judgement_id", "created", "rater", "task_position", "item", "system", "control",
                  "bad", "source", "reference", "candidate", "accuracy", "fluency", "spans", "preference", "latest",
                  "slot", "candidate_id")


def ratings_of(rows: list[dict]) -> list[Rating]:
    """`Store.judged_candidates` rows as `Rating`s."""
    return [Rating(r["rater"], r["item"], r["system"], r["accuracy"], r["fluency"],
                   sum(s["severity"] == "minor" for s in r["spans"]), sum(s["severity"] == "major" for s in r["spans"]),
                   r["control"], r["bad"]) for r in rows]


def build_report(store: Store, name: str, seed: int = 0) -> dict:
    """The campaign's statistics over the latest judgement of each task (module docstring); `seed` seeds the
    bootstrap, so the same judgements give the same report."""
    with store.snapshot():  # one consistent state, while raters keep submitting
        camp = store.campaign(name)
        rows = store.judged_candidates(name)
        n_judgements = store.judgements_count(name)
        refs = {it["position"]: it["reference"] for it in store.items(name)}
        texts = {(c["item"], c["system"]): c["text"] for c in store.candidates(name) if c["bad_of"] is None}
    systems = [s["label"] for s in camp["systems"]]
    ratings = ratings_of(rows)
    judged = len({r["judgement_id"] for r in rows})
    report: dict = {
        "campaign": name, "kind": camp["kind"], "created": camp["created"], "systems": systems,
        "pairwise": camp["pairwise"], "items": camp["items"], "source": camp["spec"].get("source"),
        "raters": [{"name": r["name"], "tasks": r["tasks"], "done": r["done"]} for r in camp["raters"]],
        "tasks": sum(r["tasks"] for r in camp["raters"]), "judged": judged, "judgements": n_judgements,
        "revisions": n_judgements - judged, "criteria": {},
    }
    for criterion in CRITERIA:
        raw = item_means(ratings, criterion)
        z = z_scores(ratings, criterion)
        zm = item_means(ratings, criterion, z)
        per_system = {}
        for s in systems:
            r_sum, z_sum = summarize(raw.get(s, {}), seed), summarize(zm.get(s, {}), seed)
            per_system[s] = {"n": r_sum["n"], "mean": r_sum["mean"], "ci": r_sum["ci"], "z_mean": z_sum["mean"],
                             "z_ci": z_sum["ci"], "item_means": list(raw.get(s, {}).values()),
                             "item_z": list(zm.get(s, {}).values())}
        section: dict = {"systems": per_system, "wilcoxon": None, "alpha": krippendorff_alpha(ratings, criterion),
                         "kendall": None}
        if len(systems) == 2:
            section["wilcoxon"] = wilcoxon_paired(raw.get(systems[0], {}), raw.get(systems[1], {}),
                                                  (systems[0], systems[1]))
        keys = [(i, s) for s in systems for i in raw.get(s, {}) if refs.get(i)]
        if keys:
            section["kendall"] = metric_correlation([raw[s][i] for i, s in keys], [texts[i, s] for i, s in keys],
                                                    [refs[i] for i, _ in keys])
        report["criteria"][criterion] = section
    report["preferences"] = None
    if len(systems) == 2:
        prefs = {r["judgement_id"]: r["preference"] for r in rows if not r["control"]}
        report["preferences"] = preference_counts(prefs.values(), systems)
    report["errors"] = error_counts(ratings, systems)
    report["quality_control"] = quality_control(ratings, [r["name"] for r in camp["raters"]])
    return report


# ------------------------------------------------------------------------------------------------ text
def _num(x, fmt: str = "{:.1f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _ci(ci, fmt: str = "{:.1f}") -> str:
    return "[n/a]" if ci is None else "[" + ", ".join(fmt.format(v) for v in ci) + "]"


def _p(p) -> str:
    return "n/a" if p is None else (f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}")


def format_report(d: dict) -> str:
    """The report as the lines `qkv human-eval report` prints."""
    lines = [f"campaign {d['campaign']}: {d['kind']}, {len(d['systems'])} system(s) ({', '.join(d['systems'])}), "
             f"{d['items']} items from {d['source']}, {len(d['raters'])} raters",
             f"judged {d['judged']} of {d['tasks']} tasks ({d['judgements']} judgements, {d['revisions']} revisions); "
             + ", ".join(f"{r['name']} {r['done']}/{r['tasks']}" for r in d["raters"])]
    if not d["judged"]:
        lines.append("no judgements yet: share the raters' links (qkv serve), then report again")
        return "\n".join(lines)
    width = max(6, *(len(s) for s in d["systems"]))
    block = 4 + 2 + 20 + 2 + 20  # n, raw mean [CI], z mean [CI]
    lines += ["", " " * width + "".join(f"  {c:^{block}}" for c in CRITERIA),
              f"{'system':<{width}}" + f"  {'n':>4}  {'raw mean [95% CI]':<20}  {'z mean [95% CI]':<20}" * 2]
    for s in d["systems"]:
        cells = []
        for c in CRITERIA:
            v = d["criteria"][c]["systems"][s]
            cells.append(f"  {v['n']:>4}  {_num(v['mean']):>5} {_ci(v['ci']):<14}  "
                         f"{_num(v['z_mean'], '{:+.2f}'):>5} {_ci(v['z_ci'], '{:+.2f}'):<14}")
        lines.append(f"{s:<{width}}" + "".join(cells))
    if len(d["systems"]) == 2:
        lines.append("")
        for c in CRITERIA:
            w = d["criteria"][c]["wilcoxon"]
            if w is None:
                lines.append(f"Wilcoxon signed-rank, {c}: n/a (fewer than 2 items rated for both systems)")
                continue
            verdict = w["note"] or (f"{w['better']} is better" if w["better"] else "no significant difference")
            lines.append(f"Wilcoxon signed-rank, {c} (item means, paired): {d['systems'][0]} − {d['systems'][1]} = "
                         f"{w['mean_difference']:+.1f}, p = {_p(w['p'])}, n = {w['n']}: {verdict}")
        pr = d["preferences"]
        lines.append("preferences (non-control tasks): " + ", ".join(f"{s} {pr[s]}" for s in d["systems"])
                     + f", tie {pr['tie']} (of {pr['n']})")
    lines.append("Krippendorff's α (interval): " + ", ".join(
        f"{c} {_num(d['criteria'][c]['alpha'], '{:.3f}')}" for c in CRITERIA)
        + ("" if any(d["criteria"][c]["alpha"] is not None for c in CRITERIA) else " (needs 2 raters on a candidate)"))
    if all(d["criteria"][c]["kendall"] is None for c in CRITERIA):
        lines.append("Kendall τ vs chrF++ / BLEU: n/a (the items have no references)")
    else:
        for metric, label in (("chrf++", "chrF++"), ("bleu", "BLEU")):
            parts = []
            for c in CRITERIA:
                k = d["criteria"][c]["kendall"][metric]
                parts.append(f"{c} {_num(k['tau'], '{:+.3f}')} (p = {_p(k['p'])}, n = {k['n']})")
            lines.append(f"Kendall τ vs sentence {label}: " + ", ".join(parts))
    lines.append("ESA error spans per rated candidate (minor / major / MQM-weighted 1·minor + 5·major):")
    for s in d["systems"]:
        e = d["errors"][s]
        lines.append(f"  {s:<{width}}  {_num(e['minor_per_segment'], '{:.2f}')} / "
                     f"{_num(e['major_per_segment'], '{:.2f}')} / {_num(e['mqm_per_segment'], '{:.2f}')}  "
                     f"({e['minor']} minor, {e['major']} major over {e['rated']} ratings)")
    lines.append(f"quality control (accuracy of BAD copies < their originals, one-sided Mann-Whitney U, pass at "
                 f"p < {QC_P}, needs {QC_MIN_PAIRS} pairs):")
    for q in d["quality_control"]:
        lines.append(f"  {q['rater']:<10} {q['status']:<9} {q['pairs']} pairs, {q['bad_lower']} BAD lower, "
                     f"p = {_p(q['p'])}")
    return "\n".join(line.rstrip() for line in lines)


# ------------------------------------------------------------------------------------------------ plot
def render_plot(d: dict) -> bytes:
    """The PNG of a report: the item means per system and criterion (jittered dots), their mean and 95% CI; raw
    scores in the top row, z-scores in the bottom row. Thread-safe (a bare Figure: no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    systems = d["systems"]
    fig = Figure(figsize=(4.0 * len(CRITERIA), 7.0), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(CRITERIA), squeeze=False)
    rng = np.random.default_rng(0)
    colors = ("tab:blue", "tab:orange")
    for col, c in enumerate(CRITERIA):
        for row, (values, mean, ci, label) in enumerate((("item_means", "mean", "ci", "raw score (0–100)"),
                                                         ("item_z", "z_mean", "z_ci", "z-score (per rater)"))):
            ax = axes[row][col]
            for k, s in enumerate(systems):
                v = d["criteria"][c]["systems"][s]
                ys = v[values]
                if ys:
                    ax.scatter(k + rng.uniform(-0.15, 0.15, len(ys)), ys, s=10, alpha=0.4, color=colors[k % 2])
                if v[mean] is not None:
                    # the interval is drawn as it is, not as mean ± error: a BCa interval of skewed scores (many
                    # zeros) need not contain the mean, and errorbar would refuse it
                    if v[ci]:
                        ax.vlines(k + 0.3, *v[ci], color="black")
                        ax.hlines(v[ci], k + 0.25, k + 0.35, color="black")
                    ax.plot([k + 0.3], [v[mean]], "o", color="black")
            ax.set_xticks(range(len(systems)), systems)
            ax.set_xlim(-0.6, len(systems) - 0.2)
            if row == 0:
                ax.set_ylim(-3, 103)
                ax.set_title(c)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{d['campaign']}: item means, mean and 95% CI ({d['judged']} judged tasks)")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    return png.getvalue()


def plot_report(d: dict, path: str | Path) -> Path:
    """Write `render_plot(d)` to `path` atomically; the path."""
    path = Path(path)
    atomic_write_bytes(path, render_plot(d))
    return path


# ------------------------------------------------------------------------------------------------ export
def export_rows(store: Store, name: str) -> list[dict]:
    """Every judgement, history included, one row per judged candidate (the columns of `EXPORT_COLUMNS`)."""
    return [{k: r[k] for k in EXPORT_COLUMNS} for r in store.judged_candidates(name, history=True)]


def write_export(rows: list[dict], name: str, out_dir: str | Path) -> list[Path]:
    """Write `rows` (`export_rows`) as OUT/NAME-judgements.csv and .jsonl, atomically; [csv path, jsonl path].
    In the CSV, spans are a JSON string and a missing preference or reference is empty."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS)  # RFC 4180: CRLF rows, any field with CR or LF quoted
    writer.writeheader()
    for r in rows:
        writer.writerow(r | {"spans": json.dumps(r["spans"]), "preference": r["preference"] or "",
                             "reference": r["reference"] or ""})
    paths = [out_dir / f"{name}-judgements.csv", out_dir / f"{name}-judgements.jsonl"]
    atomic_write_bytes(paths[0], buf.getvalue().encode("utf-8"))
    atomic_write_bytes(paths[1], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
    return paths


def export_judgements(store: Store, name: str, out_dir: str | Path) -> list[Path]:
    """Every judgement of campaign `name`, history included, as OUT/NAME-judgements.csv and .jsonl."""
    return write_export(export_rows(store, name), name, out_dir)
