"""Question answering targets (issue 26): one reader for every story family and the pydoc passages, trained for a
budget by the clock, then scored per family with both heads (SQuAD v1.1 EM and F1).

    python bench/qa.py OUT_DIR [--minutes 15] [--threads 2] [--extra --train.seed 2 ...]

Targets: every story family >= 95% EM on held-out worlds (``test``), the paraphrase split >= 80% EM, pydoc passages
of held-out modules F1 >= 70; the table gives the generative and the extractive head on each, and the share of
generative answers that are spans of their passage. Results: OUT_DIR/results.json (``qkv eval --json``, the
training's update count and wall time) and the table on stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import trained
from machine import describe


def train_and_eval(out: Path, minutes: float, threads: int, extra: list[str]) -> dict:
    run = out / "qa"
    wall = trained.train(run, "qa-stories", minutes, threads, extra)
    return {"minutes": minutes, "threads": threads, "extra": extra, "wall_s": wall, "updates": trained.updates(run),
            "eval": trained.evaluate(run, threads)}


def table(r: dict) -> list[str]:
    lines = [f"{r['updates']} updates in {r['minutes']} min on {r['threads']} threads; greedy answers; EM / F1 in %",
             f"{'set':<11}{'family':<17}{'n':>5} {'gen EM':>7} {'gen F1':>7} {'ext EM':>7} {'ext F1':>7} "
             f"{'is span':>8}  target"]
    targets = {"test": ("EM", 95.0), "paraphrase": ("EM", 80.0), "pydoc": ("F1", 70.0)}
    for name, s in r["eval"]["sets"].items():
        for fam, f in [*s["families"].items(), ("all", s["all"])]:
            g, e = f["generative"], f.get("extractive")
            ext = f"{e['exact_match']:7.1f} {e['f1']:7.1f}" if e else f"{'—':>7} {'—':>7}"
            kind, bar = targets.get(name, ("", None))
            best = max(g["exact_match" if kind == "EM" else "f1"],
                       (e or {}).get("exact_match" if kind == "EM" else "f1", 0.0))
            scope = (name == "test" and fam != "all") or (name != "test" and fam == "all")
            mark = f"{kind} >= {bar:g}: {'met' if best >= bar else 'not met'}" if bar and scope else ""
            lines.append(f"{name:<11}{fam:<17}{f['n']:>5} {g['exact_match']:7.1f} {g['f1']:7.1f} {ext} "
                         f"{f['generative_is_span']:8.1f}  {mark}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `qkv train` flags")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(describe(args.threads), flush=True)
    result = train_and_eval(out, args.minutes, args.threads, args.extra)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print("\n".join(table(result)))


if __name__ == "__main__":
    main()
