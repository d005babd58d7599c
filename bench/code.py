"""Code generation targets (issue 27): the encoder–decoder against the decoder-only GPT on the same problems,
parameter budget and time, then REINFORCE from test results; every completion run in the sandbox.

    python bench/code.py OUT_DIR [--minutes 15] [--rl-minutes 10] [--jobs 2] [--samples 20] [--rl-from auto]

1. Trains ``code-encdec`` and ``code-gpt`` for ``--minutes`` each (``--jobs 2``: side by side, one thread each — a
   2-core machine gives each a core; say so when quoting).
2. Scores both on every split: greedy pass@1, and the unbiased pass@1 / pass@10 of ``--samples`` samples per
   problem (temperature 0.8), with the sandbox's cost per completion.
3. Fine-tunes one of them with REINFORCE for ``--rl-minutes`` (``auto``: the one with more room at k = 3, i.e. the
   lower greedy pass@1 there) and scores it again; pass@1 at k = 3 before and after, with a paired bootstrap over
   the problems (the per-problem pass@1 estimate of the samples).
4. Draws pass@1 against the number of blocks k for both (docs/images/code_pass_vs_k.png with ``--plot``).

Targets: held-out compositions (k = 2) pass@1 >= 90%; held-out length (k = 4) pass@10 >= 50%; RL adds >= 5 points
pass@1 at k = 3, significant by the paired bootstrap; report which architecture wins on each split, by how much.
Results: OUT_DIR/results.json and the tables on stdout. A run directory that holds weights is not trained again.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import trained
from machine import describe

from qkv.evaluation.pass_at_k import paired_bootstrap

ARCHS = {"encdec": ("code-encdec", "code-rl"), "gpt": ("code-gpt", "code-gpt-rl")}
SPLITS = ("val", "compositions", "k3", "length", "humaneval")
SAMPLED = ("compositions", "k3", "length", "humaneval")


def train(arch: str, out: Path, minutes: float, threads: int) -> dict:
    run = out / arch
    wall = trained.train(run, ARCHS[arch][0], minutes, threads)
    return {"arch": arch, "minutes": minutes, "threads": threads, "wall_s": wall, "updates": trained.updates(run)}


def score(run: Path, samples: int, threads: int, splits=SAMPLED) -> dict:
    """Greedy pass@1 on every split, then pass@1/pass@10 of `samples` samples on `splits`."""
    greedy = trained.evaluate(run, threads)
    sampled = {s: trained.evaluate(run, threads, "--split", s, "--samples", str(samples), "--pass-at-k", "1,10")
               for s in splits}
    return {"greedy": greedy, "sampled": sampled}


def by_blocks(greedy: dict) -> dict[int, float]:
    """Greedy pass@1 per number of blocks k: k = 1..3 from the validation split (programs of seen pairs, never
    trained on), k = 4 from the held-out-length split."""
    s = greedy["splits"]
    d = {int(k): v for k, v in s["val"]["pass@1_by_blocks"].items()}
    d[4] = s["length"]["pass@1"]
    return dict(sorted(d.items()))


def table(results: dict) -> list[str]:
    lines = [f"{'split':<15} {'metric':<9} " + " ".join(f"{a:>9}" for a in results["archs"]) + "   winner"]
    for split in SPLITS:
        rows = [("pass@1 greedy", lambda r, s=split: r["greedy"]["splits"][s]["pass@1"])]
        if split in SAMPLED:
            rows += [(f"pass@{k}", lambda r, s=split, k=k: r["sampled"][s]["splits"][s][f"pass@{k}"]) for k in (1, 10)]
        for label, get in rows:
            vals = {a: get(results["scores"][a]) for a in results["archs"]}
            best = max(vals, key=vals.get)
            others = [v for a, v in vals.items() if a != best]
            margin = vals[best] - max(others) if others else 0.0
            lines.append(f"{split:<15} {label:<9} " + " ".join(f"{vals[a]:>8.1f}%" for a in results["archs"])
                         + (f"   {best} by {margin:.1f}" if margin > 0 else "   tie"))
    return lines


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.4, 3.6), dpi=120)
    for arch, label in (("encdec", "encoder–decoder"), ("gpt", "decoder-only")):
        if arch in results["scores"]:
            d = {int(k): v for k, v in results["by_blocks"][arch].items()}  # (JSON keys are strings)
            ax.plot(list(d), list(d.values()), marker="o", label=label)
            comp = results["scores"][arch]["greedy"]["splits"]["compositions"]["pass@1"]
            ax.scatter([2], [comp], marker="x", s=40, color=ax.lines[-1].get_color(),
                       label=f"{label}: held-out pairs (k = 2)")
    ax.axvline(3.5, color="grey", linestyle=":", linewidth=1)
    ax.text(3.55, 5, "never trained\non k = 4", fontsize=8, color="grey")
    ax.set_xlabel("blocks chained in the docstring (k)")
    ax.set_ylabel("greedy pass@1 (%)")
    ax.set_xticks([1, 2, 3, 4])
    ax.set_ylim(0, 102)
    ax.set_title("pass@1 against chain length (Codex: it falls with every block)", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--rl-minutes", type=float, default=10.0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="threads of one job when --jobs 1, and of evaluation and RL")
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--rl-from", default="auto", choices=["auto", "encdec", "gpt", "none"])
    p.add_argument("--plot", metavar="PNG", help="draw pass@1 against k here")
    p.add_argument("--plot-only", action="store_true", help="draw --plot from OUT_DIR/results.json and stop")
    args = p.parse_args()
    out = Path(args.out)
    if args.plot_only:
        plot(json.loads((out / "results.json").read_text()), Path(args.plot))
        return
    out.mkdir(parents=True, exist_ok=True)
    print(describe(args.threads), flush=True)
    archs = list(ARCHS)
    train_threads = 1 if args.jobs > 1 else args.threads
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = {r["arch"]: r for r in pool.map(lambda a: train(a, out, args.minutes, train_threads), archs)}
    results = {"archs": archs, "runs": runs, "scores": {}, "by_blocks": {}}
    for a in archs:
        results["scores"][a] = score(out / a, args.samples, args.threads)
        results["by_blocks"][a] = by_blocks(results["scores"][a]["greedy"])
        (out / "results.json").write_text(json.dumps(results, indent=1))
        print(f"{a}: {runs[a]['updates']} updates in {args.minutes} min on {train_threads} thread(s); sandbox "
              f"{results['scores'][a]['greedy']['splits']['k3']['sandbox_ms_per_completion']:.1f} ms per completion",
              flush=True)
    print("\n".join(table(results)), flush=True)
    print("greedy pass@1 by blocks k: " + "; ".join(
        f"{a}: " + ", ".join(f"k={k} {v:.1f}%" for k, v in results["by_blocks"][a].items()) for a in archs))

    if args.rl_from != "none":
        k3 = {a: results["scores"][a]["greedy"]["splits"]["k3"]["pass@1"] for a in archs}
        base = min(k3, key=k3.get) if args.rl_from == "auto" else args.rl_from
        rl = out / f"{base}-rl"
        wall = trained.train(rl, ARCHS[base][1], args.rl_minutes, args.threads, ["--init-from", str(out / base)])
        after = score(rl, args.samples, args.threads, splits=("k3",))
        before_counts = results["scores"][base]["sampled"]["k3"]["splits"]["k3"]["counts"]
        after_counts = after["sampled"]["k3"]["splits"]["k3"]["counts"]
        before = [c / n for n, c in before_counts]
        after_p = [c / n for n, c in after_counts]
        boot = paired_bootstrap(before, after_p)
        g0 = [int(c > 0) for _, c in results["scores"][base]["greedy"]["splits"]["k3"]["counts"]]
        g1 = [int(c > 0) for _, c in after["greedy"]["splits"]["k3"]["counts"]]
        boot_greedy = paired_bootstrap(g0, g1)
        results["rl"] = {"from": base, "minutes": args.rl_minutes, "wall_s": wall, "updates": trained.updates(rl),
                         "after": after, "bootstrap_sampled_pass@1": boot, "bootstrap_greedy_pass@1": boot_greedy}
        (out / "results.json").write_text(json.dumps(results, indent=1))
        metrics = [json.loads(x) for x in (rl / "metrics.jsonl").read_text().splitlines()]
        rewards = [(m["step"], m["train_reward"]) for m in metrics if "train_reward" in m]
        print(f"RL from {base}: {results['rl']['updates']} updates in {args.rl_minutes} min on {args.threads} "
              f"thread(s); reward curve (step, mean reward): "
              + ", ".join(f"({s}, {r:.3f})" for s, r in rewards[:: max(1, len(rewards) // 10)]))
        for name, b, (x, y) in (("sampled pass@1", boot, (before, after_p)), ("greedy pass@1", boot_greedy, (g0, g1))):
            print(f"  k = 3 {name}: {100 * sum(x) / len(x):.1f}% -> {100 * sum(y) / len(y):.1f}% "
                  f"({100 * b['delta']:+.1f} points, 95% CI [{100 * b['ci'][0]:+.1f}, {100 * b['ci'][1]:+.1f}], "
                  f"one-sided p {b['p']:.4f})")
    if args.plot:
        plot(results, Path(args.plot))
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
