"""Minimum risk training on Multi30k de→en: fine-tune a trained run on sentence BLEU, then compare it with the start
and with the same minutes of cross-entropy from the same start (the control).

    python bench/mrt.py START_RUN --out RUN [--minutes 15] [--config multi30k-de-en-mrt.toml] [--threads 2]
                        [--control RUN-xent | --no-control] [--report-only] [--json FILE]

1. `qkv train --config CONFIG --init-from START_RUN --out RUN --train.max_minutes M` (issue 15's recipe; skipped
   with --report-only, which scores an existing RUN).
1b. The control, one after the other (a timed run needs the machine to itself): the same command with
   `--train.objective xent`, into --control (default RUN-xent): the same config, optimizer, schedule, batches and
   minutes, trained on the reference's token loss alone. Cross-entropy steps are ~8× cheaper than MRT's, so the
   control makes ~8× the updates: the same budget, which is the comparison that counts (issue 30).
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
6. With the control: its scores, the paired bootstrap of MRT against it (the control as the baseline), and issue
   30's target: beam-4 sacreBLEU +1.0 or more over the control, significant (p < 0.05), chrF++ not lower.

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


def fine_tune(start: Path, out: Path, config: str, minutes: float, threads: int, objective: str | None = None) -> None:
    cmd = [sys.executable, "-m", "qkv", "train", "--config", config, "--init-from", str(start), "--out", str(out),
           "--train.max_minutes", str(minutes), "--train.progress", "false", "--train.threads", str(threads),
           "--no-sample", *(["--train.objective", objective] if objective else [])]
    print("$ " + " ".join(["qkv", *cmd[3:]]), flush=True)
    subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))


def scores(hyps: list[str], refs: list[str]) -> dict:
    from sacrebleu.metrics import BLEU, CHRF

    bleu = BLEU().corpus_score(hyps, [refs])
    return {"bleu": bleu.score, "chrf++": CHRF(word_order=2).corpus_score(hyps, [refs]).score,
            "length_ratio": bleu.sys_len / bleu.ref_len, "sys_len": bleu.sys_len, "ref_len": bleu.ref_len}


def paired_bootstrap(before: list[str], after: list[str], refs: list[str]) -> dict:
    """sacrebleu's paired bootstrap resampling (the `--paired-bs` test), `before` as the baseline (the start, or
    the control)."""
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
    ap.add_argument("--control", help="the cross-entropy control's run directory (default: OUT-xent)")
    ap.add_argument("--no-control", action="store_true", help="skip the control (issue 15's comparison only)")
    ap.add_argument("--report-only", action="store_true", help="score existing runs (--out, the control), train none")
    ap.add_argument("--json", help="also write every figure to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(describe(args.threads), flush=True)

    from qkv import load_run
    from qkv.data.translation import multi30k_paths, read_parallel

    start, out = Path(args.start), Path(args.out)
    control = None if args.no_control else Path(args.control or f"{out}-xent")
    if not args.report_only:
        fine_tune(start, out, args.config, args.minutes, args.threads)
        if control is not None:
            fine_tune(start, control, args.config, args.minutes, args.threads, objective="xent")
    before_run, after_run = load_run(start), load_run(out)
    control_run = load_run(control) if control is not None else None
    srcs, refs = read_parallel(*multi30k_paths(before_run.config.data.direction, SPLIT))
    result = {"start": str(start), "run": str(out), "split": SPLIT, "sentences": len(srcs),
              "training": training_summary(out), "decoding": {}}
    hyps = {}
    for beam in (1, 4):
        dcfg = before_run.decoding(beam=beam)  # the start run's [decode], for both runs
        t0 = time.perf_counter()
        hyps[beam] = (before_run.translate(srcs, dcfg)[0], after_run.translate(srcs, dcfg)[0],
                      control_run.translate(srcs, dcfg)[0] if control_run else None)
        result["decoding"][f"beam{beam}"] = {
            "settings": f"{'greedy' if beam == 1 else f'beam {beam}'}, {dcfg.length_norm} length penalty "
                        f"{dcfg.length_penalty}, max length {dcfg.max_len_a}·S + {dcfg.max_len_b}",
            "before": scores(hyps[beam][0], refs), "after": scores(hyps[beam][1], refs),
            **({"control": scores(hyps[beam][2], refs)} if control_run else {}),
            "decode_s": time.perf_counter() - t0}
    result["paired_bootstrap_beam4"] = paired_bootstrap(hyps[4][0], hyps[4][1], refs)
    if control_run is not None:
        result["control"] = {"run": str(control), "training": training_summary(control)}
        vs = paired_bootstrap(hyps[4][2], hyps[4][1], refs)  # the control as the baseline
        result["mrt_vs_control_beam4"] = vs
        result["target_vs_control"] = {"bleu_gain": vs["bleu"]["delta"], "p_value": vs["bleu"]["p_value"],
                                       "chrf_change": vs["chrf++"]["delta"],
                                       "met": vs["bleu"]["delta"] >= 1.0 and vs["bleu"]["significant"]
                                       and vs["chrf++"]["delta"] >= 0}
    changed = [i for i, (a, b) in enumerate(zip(hyps[4][0], hyps[4][1], strict=True)) if a != b]
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
    if "control" in r:
        c = r["control"]["training"]
        lines.append(f"\ncross-entropy control {r['control']['run']} from the same start, the same minutes: "
                     f"{c['steps']} steps in {c['elapsed_s']:.0f} s ({1000 * c['s_per_step']:.0f} ms/step)")
        for d in r["decoding"].values():
            k = d["settings"].split(",")[0]
            lines.append(f"  {k}: sacreBLEU {d['control']['bleu']:.2f} (MRT {d['after']['bleu']:.2f}), chrF++ "
                         f"{d['control']['chrf++']:.2f} (MRT {d['after']['chrf++']:.2f}), length ratio "
                         f"{d['control']['length_ratio']:.3f} (MRT {d['after']['length_ratio']:.3f})")
        lines.append("paired bootstrap resampling, beam 4, the control as baseline:")
        for name, p in r["mrt_vs_control_beam4"].items():
            verdict = "significant" if p["significant"] else "not significant"
            lines.append(f"  {name:7} control {p['before']:.2f} -> MRT {p['after']:.2f} ({p['delta']:+.2f}), "
                         f"p = {p['p_value']:.4f}: {verdict} at p < 0.05")
        tv = r["target_vs_control"]
        lines.append(f"issue 30's target (beam 4: sacreBLEU +1.0 over the control, significant, chrF++ not lower): "
                     f"{'met' if tv['met'] else 'not met'} (sacreBLEU {tv['bleu_gain']:+.2f}, p = {tv['p_value']:.4f}, "
                     f"chrF++ {tv['chrf_change']:+.2f})")
    ch = r["changed_beam4"]
    lines.append(f"\n{ch['count']} of {r['sentences']:,} beam-4 translations changed; {len(ch['examples'])} of them:")
    for e in ch["examples"]:
        lines += [f"  [{e['line']}] src:    {e['src']}", f"  {'':{len(str(e['line'])) + 2}} ref:    {e['ref']}",
                  f"  {'':{len(str(e['line'])) + 2}} before: {e['before']}",
                  f"  {'':{len(str(e['line'])) + 2}} after:  {e['after']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
