"""pass@k: the chance that at least one of k programs a model writes for a problem passes its tests (Chen et al.
2021, "Evaluating Large Language Models Trained on Code", the Codex paper).

Drawing only k samples per problem and counting a hit when one passes gives a noisy estimate. Instead draw
n >= k samples, count the c that pass, and ask: of all C(n, k) ways to pick k of the n, how many contain a
passing one? The rest pick only from the n - c failures, so

    pass@k = 1 - C(n - c, k) / C(n, k)                      (unbiased for the model's true pass@k)

`exact_pass_at_k` computes that as a `Fraction`. The binomials overflow floats for large n, so `pass_at_k`
uses the paper's product form, every factor in [0, 1]:

    C(n - c, k) / C(n, k) = prod_{i = n - c + 1}^{n} (1 - k / i),     and pass@k = 1 when n - c < k

A benchmark's pass@k is the mean over its problems (`mean_pass_at_k`).

Two models (or a model before and after a change) scored on the same problems are compared problem by problem:
`paired_bootstrap` resamples the problems with replacement, keeping each problem's two scores together, so the
problems' shared difficulty cancels. It reports the mean difference after - before, the 95% percentile interval
of the resampled difference, and a one-sided p: the share of resamples in which "after" did not beat "before".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np


def _check(n: int, c: int, k: int) -> None:
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n (passing samples among the samples drawn), got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n (no more picks than samples drawn), got n={n}, k={k}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from n samples of which c pass, in the numerically stable product form."""
    _check(n, c, k)
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """The same estimate exactly: 1 - C(n - c, k) / C(n, k) (math.comb is 0 when n - c < k)."""
    _check(n, c, k)
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """A benchmark's pass@k: the mean over problems of pass@k from each problem's (n samples, c passing)."""
    if len(counts) == 0:
        raise ValueError("mean_pass_at_k needs at least one problem's (n, c)")
    return float(np.mean([pass_at_k(n, c, k) for n, c in counts]))


_CHUNK = 1 << 22  # indices drawn at once: bounds memory at n_boot × problems of any size


def paired_bootstrap(before: Sequence[float], after: Sequence[float], n_boot: int = 10000, seed: int = 0) -> dict:
    """Paired bootstrap of mean(after) - mean(before) over problems: {"delta", "ci": (lo, hi) 95% percentile
    interval, "p": share of resamples with a difference <= 0}."""
    before_a, after_a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if before_a.ndim != 1 or before_a.shape != after_a.shape:
        raise ValueError(f"paired_bootstrap needs two lists of per-problem scores of one length, "
                         f"got {before_a.shape} and {after_a.shape}")
    if before_a.size == 0:
        raise ValueError("paired_bootstrap needs at least one problem")
    if n_boot < 1:
        raise ValueError(f"paired_bootstrap needs n_boot >= 1, got {n_boot}")
    diff = after_a - before_a
    m = diff.size
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // m)
    means = np.concatenate([diff[rng.integers(0, m, size=(min(rows, n_boot - start), m))].mean(axis=1)
                            for start in range(0, n_boot, rows)])
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"delta": float(diff.mean()), "ci": (float(lo), float(hi)), "p": float(np.mean(means <= 0))}
