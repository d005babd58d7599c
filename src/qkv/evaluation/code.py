"""Scoring code by running it: pass@k of a run's completions over problem splits, each completion run against its
problem's hidden tests in the sandbox (`qkv.evaluation.sandbox`), never in this process.

A completion *passes* when every hidden test passes. With n completions of a problem of which c pass, pass@k is
the unbiased estimate of the chance that at least one of k draws passes (`qkv.evaluation.pass_at_k`, Chen et al.
2021), averaged over the problems. One greedy completion per problem gives pass@1 (greedy) — the default of
``qkv eval``; ``--samples 20 --pass-at-k 1,10`` draws 20 at the run's temperature.

Also reported, per split: the mean share of tests passed (partial credit), how the completions failed (the
sandbox's statuses: failed, error, timeout, killed), pass@1 per number of blocks k, and the sandbox's cost per
completion.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from qkv.errors import QKVError


def parse_ks(pass_at_k: str | Sequence[int] | None, samples: int) -> list[int]:
    """"1,10" -> [1, 10]; every k must be in 1..samples."""
    if pass_at_k is None:
        ks = [1] + ([10] if samples >= 10 else [])
    elif isinstance(pass_at_k, str):
        try:
            ks = [int(x) for x in pass_at_k.split(",") if x.strip()]
        except ValueError:
            raise QKVError(f"--pass-at-k takes numbers separated by commas (1,10), got {pass_at_k!r}") from None
    else:
        ks = [int(k) for k in pass_at_k]
    if not ks or any(not 1 <= k <= samples for k in ks):
        raise QKVError(f"each k of pass@k must be between 1 and the samples per problem ({samples}), got "
                       f"{','.join(map(str, ks)) or 'none'}; draw more with --samples N")
    return sorted(set(ks))


def score_completions(problems: Sequence, groups: Sequence[Sequence[str]], workers: int | None = None,
                      ks: Sequence[int] = (1,), progress=None) -> dict:
    """Run every completion's program in the sandbox: per problem the passing count c of its n completions, and
    pass@k for each k (fractions in [0, 1])."""
    from qkv.evaluation.pass_at_k import pass_at_k
    from qkv.evaluation.sandbox import run_programs

    jobs = [(p.program(c), p.tests) for p, group in zip(problems, groups, strict=True) for c in group]
    start = time.perf_counter()
    outcomes = run_programs(jobs, workers=workers, progress=progress)
    wall = time.perf_counter() - start
    it = iter(outcomes)
    per_problem = [[next(it) for _ in group] for group in groups]
    counts = [(len(os), sum(o.status == "passed" for o in os)) for os in per_problem]
    out = {f"pass@{k}": sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in ks}
    out.update({"counts": counts, "tests_passed": sum(o.fraction for o in outcomes) / len(outcomes),
                "statuses": dict(Counter(o.status for o in outcomes)), "completions": len(outcomes),
                "sandbox_ms_per_completion": 1000.0 * wall / len(outcomes),
                "sandbox_ms_each": sum(o.ms for o in outcomes) / len(outcomes)})
    return out


def evaluate_splits(run, splits: dict, pass_at_k, samples: int | None, temperature: float | None,
                    max_problems: int | None, seed: int, workers: int | None, progress=None) -> dict:
    """pass@k of `run`'s completions on each split ({name: problems}); see the module docstring."""
    from qkv.evaluation.pass_at_k import pass_at_k as estimate

    n = samples or 1
    if n < 1:
        raise QKVError(f"--samples must be at least 1, got {n}")
    if max_problems is not None and max_problems <= 0:
        raise QKVError(f"--max-problems must be positive, got {max_problems}")
    ks = parse_ks(pass_at_k, n)
    greedy = n == 1 and temperature is None
    t = None if greedy else (temperature or run.config.complete.temperature)
    result = {"architecture": run.architecture, "samples": n, "ks": ks,
              "decoding": "greedy" if greedy else f"sampled at temperature {t}", "splits": {}}
    for name, problems in splits.items():
        problems = problems[:max_problems] if max_problems else problems
        if not problems:
            raise QKVError(f"split {name}: no problems")
        start = time.perf_counter()
        groups = run.complete([p.prompt for p in problems], n=n, temperature=t, seed=seed)
        gen_s = time.perf_counter() - start
        s = score_completions(problems, groups, workers, ks)
        by_k: dict[int, list] = {}
        for p, (m, c) in zip(problems, s["counts"], strict=True):
            by_k.setdefault(p.k, []).append(estimate(m, c, 1))
        s["pass@1_by_blocks"] = {k: 100.0 * sum(v) / len(v) for k, v in sorted(by_k.items()) if k}
        s.update({f"pass@{k}": 100.0 * s[f"pass@{k}"] for k in ks})
        s["tests_passed"] *= 100.0
        s["problems"], s["generation_s"] = len(problems), gen_s
        s["examples"] = [{"task_id": p.task_id, "completion": g[0], "passed": c > 0}
                         for p, g, (_, c) in list(zip(problems, groups, s["counts"], strict=True))[:3]]
        result["splits"][name] = s
        if progress:
            progress(f"{name}: " + ", ".join(f"pass@{k} {s[f'pass@{k}']:.1f}%" for k in ks)
                     + f" ({len(problems)} problems)")
    return result


def report_lines(r: dict, names: dict) -> list[str]:
    """The table `qkv eval` prints for a code run."""
    ks = r["ks"]
    lines = [f"{r['architecture']} run; {r['samples']} completion(s) per problem, {r['decoding']}; a completion "
             "passes when every hidden test passes (run in the sandbox)",
             f"{'split':<32} {'problems':>8} " + " ".join(f"{'pass@' + str(k):>8}" for k in ks)
             + f" {'tests':>7}  failures"]
    for name, s in r["splits"].items():
        fails = ", ".join(f"{k} {v}" for k, v in sorted(s["statuses"].items()) if k != "passed") or "-"
        lines.append(f"{names.get(name, name):<32} {s['problems']:>8} "
                     + " ".join(f"{s[f'pass@{k}']:>7.1f}%" for k in ks) + f" {s['tests_passed']:>6.1f}%  {fails}")
    by = [(names.get(n, n), s["pass@1_by_blocks"]) for n, s in r["splits"].items() if s["pass@1_by_blocks"]]
    if by:
        lines.append("pass@1 by number of blocks k: " + "; ".join(
            f"{n}: " + ", ".join(f"k={k} {v:.1f}%" for k, v in d.items()) for n, d in by))
    ms = [s["sandbox_ms_per_completion"] for s in r["splits"].values()]
    total = sum(s["completions"] for s in r["splits"].values())
    lines.append(f"sandbox: {total:,} completions, {sum(ms) / len(ms):.1f} ms each (wall, side by side)")
    return lines
