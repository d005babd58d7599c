"""Minimum risk training on Multi30k de→en: fine-tune a trained run on sentence BLEU, then compare before and after.

    python bench/mrt.py START_RUN --out RUN [--minutes 15] [--preset multi30k-de-en-mrt] [--threads 2]
                        [--report-only] [--json FILE]

1. `qkv train --config CONFIG --init-from START_RUN --out RUN --train.max_minutes M` (issue 15's recipe; skipped
   with --report-only, which scores an existing RUN).
2. Both runs translate test_2016_flickr with the same decoding (START_RUN's [decode] section), greedy and beam 4:
   sacreBLEU, chrF++ and the length ratio (hypothesis / reference length: sacrebleu's BLEU ``sys_len /
   ref_len``; the brevity penalty starts below 1).
3. For beam 4, sacrebleu's paired bootstrap resampling (`sacrebleu.significance.PairedTest`, test_type "bs", 1,000
   resamples, seed 12345: what ``sacrebleu --paired-bs`` runs) of BLEU and chrF++, START_RUN as the baseline: the
   p-value and whether the difference is significant at p < 0.05.
4. Five sentences whose beam-4 translation changed (a seeded sample of them): source, reference, before, after.
5. The fine-tune: steps, seconds per step (evaluations included), the expected risk and mean candidate BLEU at
   its first and last evaluation; and whether issue 15's target was met (beam-4 sacreBLEU +1.0 or more, chrF++ not
   lower, length ratio within ±2% of the start).

QKV_DATA_DIR must point at the data (multi30k). The first line is the machine (bench/machine.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
from machine import describe

REPO = Path(__file__).resolve().parents[1]
SPLIT = "test_2016_flickr"


def fine_tune(start: Path, out: Path, config: str, minutes: float, threads: int) -> None:
    cmd = [sys.executable, "-m", "qkv", "train", "--config", config, "--init-from", str(start), "--out", str(out),
           "--train.max_minutes", str(minutes), "--train.progress", "false", "--train.threads", str(threads),
           "--no-sample"]
    print("$ " + " ".join(["qkv", *cmd[3:]]), flush=True)
    subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))


def scores(hyps: list[str], refs: list[str]) -> dict:
    from sacrebleu.metrics import BLEU, CHRF

    bleu = BLEU().corpus_score(hyps, [refs])
    return {"bleu": bleu.score, "chrf++": CHRF(word_order=2).corpus_score(hyps, [refs]).score,
            "length_ratio": bleu.sys_len / bleu.ref_len, "sys_len": bleu.sys_len, "ref_len": bleu.ref_len}


def paired_bootstrap(before: list[str], after: list[str], refs: list[str]) -> dict:
    """sacrebleu's paired bootstrap resampling (the `--paired-bs` test), `before` as the baseline."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    test = PairedTest([("before", before), ("after", after)], {"bleu": BLEU(), "chrf++": CHRF(word_order=2)},
                      [refs], test_type="bs", n_samples=1000)
    _, results = test()  # {"System": [...], "BLEU": [baseline, system], "chrF2++": [...]}: the metrics' own names
    out = {}
    for name, key in zip(("bleu", "chrf++"), [k for k in results if k != "System"], strict=True):
        base, new = results[key]
        out[name] = {"before": float(base.score), "after": float(new.score), "delta": float(new.score - base.score),
                     "after_mean": float(new.mean), "after_ci95": float(new.ci), "p_value": float(new.p_value),
                     "significant": bool(new.p_value < 0.05)}
    return out


def training_summary(run: Path) -> dict:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    logs = [r for r in recs if "loss" in r]
    evals = [r for r in recs if "train_risk" in r]
    steps = logs[-1]["step"] if logs else 0
    out = {"steps": steps, "elapsed_s": logs[-1]["elapsed_s"] if logs else 0.0}
    out["s_per_step"] = out["elapsed_s"] / max(1, steps)
    for key, rec in (("first_eval", evals[0] if evals else None), ("last_eval", evals[-1] if evals else None)):
        if rec:
            out[key] = {k: rec[k] for k in ("step", "train_risk", "train_nll", "train_candidates", "val_loss")
                        if k in rec} | {k: rec[k] for k in rec if k.startswith("train_cand_") or k.startswith("val_b")
                                        or k.startswith("val_c")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("start", help="the trained translation run to fine-tune (src/qkv/presets/multi30k-de-en.toml)")
    ap.add_argument("--out", required=True, help="the MRT run directory to create (or to score, --report-only)")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--config", default=str(REPO / "src" / "qkv" / "presets" / "multi30k-de-en-mrt.toml"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--report-only", action="store_true", help="score an existing --out run, do not train")
    ap.add_argument("--json", help="also write every figure to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(describe(args.threads), flush=True)

    from qkv import load_run
    from qkv.data.translation import multi30k_paths, read_parallel

    start, out = Path(args.start), Path(args.out)
    if not args.report_only:
        fine_tune(start, out, args.config, args.minutes, args.threads)
    before_run, after_run = load_run(start), load_run(out)
    srcs, refs = read_parallel(*multi30k_paths(before_run.config.data.direction, SPLIT))
    result = {"start": str(start), "run": str(out), "split": SPLIT, "sentences": len(srcs),
              "training": training_summary(out), "decoding": {}}
    hyps = {}
    for beam in (1, 4):
        dcfg = before_run.decoding(beam=beam)  # the start run's [decode], for both runs
        t0 = time.perf_counter()
        hyps[beam] = (before_run.translate(srcs, dcfg)[0], after_run.translate(srcs, dcfg)[0])
        result["decoding"][f"beam{beam}"] = {
            "settings": f"{'greedy' if beam == 1 else f'beam {beam}'}, {dcfg.length_norm} length penalty "
                        f"{dcfg.length_penalty}, max length {dcfg.max_len_a}·S + {dcfg.max_len_b}",
            "before": scores(hyps[beam][0], refs), "after": scores(hyps[beam][1], refs),
            "decode_s": time.perf_counter() - t0}
    result["paired_bootstrap_beam4"] = paired_bootstrap(*hyps[4], refs)
    changed = [i for i, (a, b) in enumerate(zip(*hyps[4], strict=True)) if a != b]
    picked = sorted(random.Random(0).sample(changed, min(5, len(changed))))
    result["changed_beam4"] = {"count": len(changed),
                               "examples": [{"line": i + 1, "src": srcs[i], "ref": refs[i], "before": hyps[4][0][i],
                                             "after": hyps[4][1][i]} for i in picked]}
    b4 = result["decoding"]["beam4"]
    target = {"bleu_gain": b4["after"]["bleu"] - b4["before"]["bleu"],
              "chrf_change": b4["after"]["chrf++"] - b4["before"]["chrf++"],
              "length_ratio_change": b4["after"]["length_ratio"] / b4["before"]["length_ratio"] - 1}
    target["met"] = (target["bleu_gain"] >= 1.0 and target["chrf_change"] >= 0
                     and abs(target["length_ratio_change"]) <= 0.02)
    result["target"] = target
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


def report(r: dict) -> str:
    t = r["training"]
    lines = [f"\nMRT fine-tune {r['run']} from {r['start']}: {t['steps']} steps in {t['elapsed_s']:.0f} s "
             f"({1000 * t['s_per_step']:.0f} ms/step, evaluations included)"]
    for key in ("first_eval", "last_eval"):
        if key in t:
            lines.append(f"  {key.replace('_', ' ')}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else
                                                                    f"{k} {v}" for k, v in t[key].items()))
    lines.append(f"\nmulti30k {SPLIT}, {r['sentences']:,} sentences, the same decoding before and after:")
    lines.append(f"{'':32}{'before':>9}{'after':>9}{'change':>9}")
    for d in r["decoding"].values():
        for name, label, fmt in (("bleu", "sacreBLEU", "{:9.2f}"), ("chrf++", "chrF++", "{:9.2f}"),
                                 ("length_ratio", "length ratio (hyp/ref)", "{:9.3f}")):
            a, b = d["before"][name], d["after"][name]
            lines.append(f"{label + ', ' + d['settings'].split(',')[0]:32}" + fmt.format(a) + fmt.format(b)
                         + ("{:+9.3f}" if name == "length_ratio" else "{:+9.2f}").format(b - a))
    lines.append(f"decoding: {r['decoding']['beam4']['settings']} (and greedy); the start run's [decode]")
    lines.append("\npaired bootstrap resampling, beam 4 (sacrebleu --paired-bs: 1,000 resamples, the start run as "
                 "baseline):")
    for name, p in r["paired_bootstrap_beam4"].items():
        verdict = "significant" if p["significant"] else "not significant"
        lines.append(f"  {name:7} {p['before']:.2f} -> {p['after']:.2f} ({p['delta']:+.2f}; after: "
                     f"{p['after_mean']:.2f} ± {p['after_ci95']:.2f}), p = {p['p_value']:.4f}: {verdict} at p < 0.05")
    tg = r["target"]
    lines.append(f"\nissue 15's target (beam 4: sacreBLEU +1.0, chrF++ not lower, length ratio within ±2%): "
                 f"{'met' if tg['met'] else 'not met'} (sacreBLEU {tg['bleu_gain']:+.2f}, chrF++ "
                 f"{tg['chrf_change']:+.2f}, length ratio {100 * tg['length_ratio_change']:+.1f}%)")
    ch = r["changed_beam4"]
    lines.append(f"\n{ch['count']} of {r['sentences']:,} beam-4 translations changed; {len(ch['examples'])} of them:")
    for e in ch["examples"]:
        lines += [f"  [{e['line']}] src:    {e['src']}", f"  {'':{len(str(e['line'])) + 2}} ref:    {e['ref']}",
                  f"  {'':{len(str(e['line'])) + 2}} before: {e['before']}",
                  f"  {'':{len(str(e['line'])) + 2}} after:  {e['after']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
