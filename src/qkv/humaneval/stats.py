"""The statistics of a human evaluation: what a score means once several people gave it.

Every function reads `Rating`s: one rater's accuracy and fluency (0–100) for one candidate, with its ESA
error-span counts, from the latest judgement of each task (a rater's earlier scores of the task are history).
Ratings from quality-control tasks are left out of everything but quality control.

- **Raw means with 95% bootstrap CIs.** A system's score is the mean over items of the item's mean over
  raters; the CI resamples those item means (``scipy.stats.bootstrap``, BCa, seeded; the percentile method
  when BCa cannot be computed on degenerate data). Items, not ratings, are the unit: the raters of one item
  are not independent draws.
- **Per-rater z-scores** (Graham et al. 2013; Appraise's ``ComputeWMT21Results``): a rater's score minus
  that rater's mean, over that rater's sample standard deviation (n − 1, as Appraise), per criterion, over the
  rater's non-control scores. A strict rater's 60 and a generous rater's 80 may mean the same; z removes each
  rater's offset and spread (a rater with one score or a constant one gets z = 0).
- **Wilcoxon signed-rank** (two systems): the item means of A and B paired by item (``scipy.stats.wilcoxon``,
  two-sided). Pairing removes the item's difficulty, which both systems share. All differences zero: p = 1.
- **Preferences**: how often raters preferred A, B, or neither, over non-control pairwise tasks.
- **Krippendorff's α** (interval; Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"): agreement
  of raters on each candidate's score, 1 = perfect, 0 = chance; missing ratings allowed (the ``krippendorff``
  package, raters × units). None when no candidate has two raters.
- **Kendall τ against metrics**: candidates' mean scores against sentence-level chrF++ and BLEU (sacreBLEU)
  of the candidate against the item's reference: do the automatic metrics rank outputs as people do?
- **ESA error counts** (Kocmi et al. 2024): minor and major spans per rated candidate, and the MQM-style
  weighted score minor = 1, major = 5 (Freitag et al. 2021) per segment.
- **Quality control** (Appraise's rule): per rater, the accuracy given to BAD copies against the same rater's
  accuracy for their originals (same item, same system); one-sided Mann-Whitney U that BAD < original; a rater
  passes at p < 0.05. With fewer than 4 pairs the test is reported as untested: with k = 3 pairs the smallest
  p the exact test can reach is 1 / C(6, 3) = 1/20 = 0.05, so no rater could pass.

Every result is plain JSON: numbers are finite floats, and what cannot be computed is None.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CRITERIA = ("accuracy", "fluency")
SEVERITY_WEIGHTS = {"minor": 1.0, "major": 5.0}  # MQM (Freitag et al. 2021)
QC_MIN_PAIRS = 4
QC_P = 0.05
CONFIDENCE = 0.95
N_RESAMPLES = 2000


@dataclass(frozen=True)
class Rating:
    """One rater's scores of one candidate (the latest judgement of the task)."""

    rater: str
    item: int  # the item's position in the campaign
    system: str
    accuracy: float
    fluency: float
    minor: int = 0  # ESA error spans of each severity
    major: int = 0
    control: bool = False  # rated in a quality-control task
    bad: bool = False  # a BAD copy (only in control tasks)

    def score(self, criterion: str) -> float:
        return self.accuracy if criterion == "accuracy" else self.fluency


def finite(x) -> float | None:
    """A float, or None for NaN/inf/None (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _regular(ratings: Iterable[Rating]) -> list[Rating]:
    return [r for r in ratings if not r.control]


# ------------------------------------------------------------------------------------------------ means
def bootstrap_ci(values: Sequence[float], seed: int = 0, confidence: float = CONFIDENCE,
                 n_resamples: int = N_RESAMPLES) -> tuple[float, float] | None:
    """The `confidence` bootstrap interval of the mean of `values` (BCa, else percentile); None for < 2 values."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return None
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                                  method=method, rng=np.random.default_rng(seed))
        low, high = res.confidence_interval
        if math.isfinite(low) and math.isfinite(high):
            return float(low), float(high)
    return None


def item_means(ratings: Iterable[Rating], criterion: str, values: dict[int, float] | None = None
               ) -> dict[str, dict[int, float]]:
    """system -> item -> mean over raters of `criterion` (non-control ratings). `values`, if given, replaces
    each rating's score by values[index of the rating in `ratings`] (z-scores)."""
    acc: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for k, r in enumerate(ratings):
        if r.control:
            continue
        acc[r.system][r.item].append(r.score(criterion) if values is None else values[k])
    return {s: {i: float(np.mean(v)) for i, v in sorted(items.items())} for s, items in acc.items()}


def z_scores(ratings: Sequence[Rating], criterion: str) -> dict[int, float]:
    """index in `ratings` -> z of that (non-control) rating: (score − rater mean) / rater sd (n − 1)."""
    by_rater: dict[str, list[int]] = defaultdict(list)
    for k, r in enumerate(ratings):
        if not r.control:
            by_rater[r.rater].append(k)
    z = {}
    for idx in by_rater.values():
        x = np.array([ratings[k].score(criterion) for k in idx])
        sd = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
        for k, v in zip(idx, x, strict=True):
            z[k] = float((v - x.mean()) / sd) if sd > 0 else 0.0
    return z


def summarize(means: dict[int, float], seed: int = 0) -> dict:
    """{n, mean, ci} of a system's item means."""
    x = list(means.values())
    ci = bootstrap_ci(x, seed)
    return {"n": len(x), "mean": finite(np.mean(x)) if x else None, "ci": list(ci) if ci else None}


# ------------------------------------------------------------------------------------------------ two systems
def wilcoxon_paired(a: dict[int, float], b: dict[int, float], labels: tuple[str, str]) -> dict | None:
    """Wilcoxon signed-rank of A's against B's item means, paired by item: {n, statistic, p, mean_difference
    (A − B), better (label or None), note}. None with fewer than 2 shared items."""
    shared = sorted(set(a) & set(b))
    if len(shared) < 2:
        return None
    x, y = np.array([a[i] for i in shared]), np.array([b[i] for i in shared])
    diff = float(np.mean(x - y))
    if np.all(x == y):
        return {"n": len(shared), "statistic": 0.0, "p": 1.0, "mean_difference": 0.0, "better": None,
                "note": "no difference: every item has the same mean for both systems"}
    res = stats.wilcoxon(x, y)
    p = finite(res.pvalue)
    better = (labels[0] if diff > 0 else labels[1]) if p is not None and p < 0.05 else None
    return {"n": len(shared), "statistic": finite(res.statistic), "p": p, "mean_difference": diff,
            "better": better, "note": None}


def preference_counts(preferences: Iterable[str | None], systems: Sequence[str]) -> dict:
    """{system: count, ..., "tie": count, "n": total} over the given (non-control) preferences."""
    counts = {s: 0 for s in systems} | {"tie": 0}
    for p in preferences:
        if p in counts:
            counts[p] += 1
    return counts | {"n": sum(counts.values())}


# ------------------------------------------------------------------------------------------------ agreement
def krippendorff_alpha(ratings: Iterable[Rating], criterion: str) -> float | None:
    """Interval α over non-control candidates (units = (item, system)); None if no unit has two raters or
    every score is the same."""
    import krippendorff

    cells: dict[tuple[str, tuple[int, str]], float] = {}
    for r in ratings:
        if not r.control:
            cells[r.rater, (r.item, r.system)] = r.score(criterion)
    raters = sorted({k[0] for k in cells})
    units = sorted({k[1] for k in cells})
    per_unit = defaultdict(int)
    for _, unit in cells:
        per_unit[unit] += 1
    if len(raters) < 2 or max(per_unit.values(), default=0) < 2:
        return None
    data = np.full((len(raters), len(units)), np.nan)
    col = {u: j for j, u in enumerate(units)}
    row = {r: i for i, r in enumerate(raters)}
    for (rater, unit), v in cells.items():
        data[row[rater], col[unit]] = v
    try:
        return finite(krippendorff.alpha(reliability_data=data, level_of_measurement="interval"))
    except ValueError:  # one value in the whole domain: α is undefined
        return None


def kendall(x: Sequence[float], y: Sequence[float]) -> dict:
    """{tau, p, n} of scipy's Kendall τ-b (None when undefined: fewer than 2 points or a constant side)."""
    if len(x) < 2:
        return {"tau": None, "p": None, "n": len(x)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.kendalltau(x, y)
    return {"tau": finite(res.statistic), "p": finite(res.pvalue), "n": len(x)}


def metric_correlation(scores: Sequence[float], hyps: Sequence[str], refs: Sequence[str]) -> dict:
    """Kendall τ of candidates' human scores against sentence-level chrF++ and BLEU: {"chrf++": {tau, p, n},
    "bleu": {...}}."""
    import sacrebleu

    chrf = [sacrebleu.sentence_chrf(h, [r], word_order=2).score for h, r in zip(hyps, refs, strict=True)]
    bleu = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs, strict=True)]
    return {"chrf++": kendall(scores, chrf), "bleu": kendall(scores, bleu)}


# ------------------------------------------------------------------------------------------------ errors
def error_counts(ratings: Iterable[Rating], systems: Sequence[str]) -> dict:
    """system -> {rated (candidate ratings), minor, major (span totals), minor_per_segment, major_per_segment,
    mqm_per_segment (minor·1 + major·5, averaged)} over non-control ratings."""
    out = {}
    regular = _regular(ratings)
    for s in systems:
        rs = [r for r in regular if r.system == s]
        minor, major = sum(r.minor for r in rs), sum(r.major for r in rs)
        n = len(rs)
        out[s] = {"rated": n, "minor": minor, "major": major,
                  "minor_per_segment": minor / n if n else None, "major_per_segment": major / n if n else None,
                  "mqm_per_segment": (SEVERITY_WEIGHTS["minor"] * minor + SEVERITY_WEIGHTS["major"] * major) / n
                  if n else None}
    return out


# ------------------------------------------------------------------------------------------------ quality control
def qc_pairs(ratings: Iterable[Rating], rater: str) -> list[tuple[float, float]]:
    """(accuracy of a BAD copy, accuracy of its original) for each BAD copy `rater` scored whose original
    (same item, same system, a regular task) the rater also scored."""
    mine = [r for r in ratings if r.rater == rater]
    original = {(r.item, r.system): r.accuracy for r in mine if not r.control}
    return [(r.accuracy, original[r.item, r.system]) for r in mine if r.bad and (r.item, r.system) in original]


def quality_control(ratings: Sequence[Rating], raters: Sequence[str]) -> list[dict]:
    """Per rater: {rater, pairs, bad_lower (pairs where BAD scored lower), p, status: pass | FAIL | untested}."""
    out = []
    for rater in raters:
        pairs = qc_pairs(ratings, rater)
        lower = sum(b < o for b, o in pairs)
        p, status = None, "untested"
        if len(pairs) >= QC_MIN_PAIRS:
            bad, orig = [b for b, _ in pairs], [o for _, o in pairs]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p = finite(stats.mannwhitneyu(bad, orig, alternative="less").pvalue)
            p = 1.0 if p is None else p  # all scores equal
            status = "pass" if p < QC_P else "FAIL"
        out.append({"rater": rater, "pairs": len(pairs), "bad_lower": lower, "p": p, "status": status})
    return out
