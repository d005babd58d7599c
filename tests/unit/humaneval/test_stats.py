"""The statistics of `qkv.humaneval.stats` against independent values: Krippendorff's (2011) worked example,
z-scores by hand, bootstrap CIs, Wilcoxon on a clear and a null difference, quality control on an attentive
and a careless rater, Kendall τ of a monotone relation, ESA error counts."""

import math
import random

import numpy as np
import pytest

from qkv.humaneval.stats import (
    Rating,
    bootstrap_ci,
    error_counts,
    item_means,
    kendall,
    krippendorff_alpha,
    metric_correlation,
    preference_counts,
    qc_pairs,
    quality_control,
    summarize,
    wilcoxon_paired,
    z_scores,
)


def r(rater, item, system, acc, flu=None, **kw):
    return Rating(rater, item, system, float(acc), float(acc if flu is None else flu), **kw)


# ------------------------------------------------------------------------------------------------ agreement
def test_krippendorff_alpha_on_the_papers_worked_example():
    """Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12 units,
    values 1-5 with missing data. The paper gives α_interval = .849 (and nominal .743, ordinal .815, ratio
    .797; the `krippendorff` package's doctest quotes ordinal .815 and ratio .797 on the same data). The
    12th unit has one value only and is not pairable."""
    nan = None
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
            [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]]
    ratings = [r(f"observer{o}", unit, "sys", v) for o, row in enumerate(data) for unit, v in enumerate(row)
               if v is not None]
    assert round(krippendorff_alpha(ratings, "accuracy"), 3) == 0.849


def test_alpha_is_none_without_overlap_and_one_with_perfect_agreement():
    alone = [r("r1", 0, "a", 10), r("r2", 1, "a", 90)]
    assert krippendorff_alpha(alone, "accuracy") is None
    same = [r(rater, i, "a", 10 * i) for rater in ("r1", "r2") for i in range(5)]
    assert krippendorff_alpha(same, "accuracy") == pytest.approx(1.0)
    controls_only = [r(rater, 0, "a", 50, control=True) for rater in ("r1", "r2")]
    assert krippendorff_alpha(controls_only, "accuracy") is None


# ------------------------------------------------------------------------------------------------ z-scores
def test_z_scores_by_hand():
    """Rater x: 20, 40, 60 -> mean 40, sample sd 20 -> z -1, 0, +1. Rater y: 70, 80 -> mean 75, sd √50 -> ∓0.7071.
    Rater z scores a constant 50 -> z 0. Controls are neither standardised nor counted in the rater's mean."""
    ratings = [r("x", 0, "a", 20), r("x", 1, "a", 40), r("x", 2, "b", 60), r("y", 0, "a", 70), r("y", 1, "b", 80),
               r("z", 0, "a", 50), r("z", 1, "b", 50), r("x", 3, "a", 0, control=True)]
    z = z_scores(ratings, "accuracy")
    assert [round(z[k], 4) for k in range(7)] == [-1.0, 0.0, 1.0, -0.7071, 0.7071, 0.0, 0.0]
    assert 7 not in z
    means = item_means(ratings, "accuracy", z)
    assert means["a"][0] == pytest.approx((-1.0 - 0.70710678 + 0.0) / 3)


def test_item_means_average_raters_and_skip_controls():
    ratings = [r("x", 0, "a", 20), r("y", 0, "a", 60), r("x", 1, "a", 100), r("y", 0, "a", 0, control=True)]
    assert item_means(ratings, "accuracy") == {"a": {0: 40.0, 1: 100.0}}


# ------------------------------------------------------------------------------------------------ bootstrap
def test_bootstrap_ci_contains_the_mean_and_is_seeded():
    x = np.random.default_rng(0).normal(60, 15, size=50)
    ci = bootstrap_ci(x, seed=3)
    assert ci[0] < x.mean() < ci[1] and ci[1] - ci[0] < 15
    assert bootstrap_ci(x, seed=3) == ci and bootstrap_ci(x, seed=4) != ci
    sem = x.std(ddof=1) / math.sqrt(50)  # the normal approximation: mean ± 1.96 sem
    assert ci[0] == pytest.approx(x.mean() - 1.96 * sem, abs=1.5) and ci[1] == pytest.approx(x.mean() + 1.96 * sem,
                                                                                             abs=1.5)


def test_bootstrap_ci_on_degenerate_data():
    assert bootstrap_ci([70.0] * 10) == (70.0, 70.0)
    assert bootstrap_ci([70.0]) is None and bootstrap_ci([]) is None
    low, high = bootstrap_ci([5, 5, 5, 6])  # BCa fails here (one odd value); the percentile method answers
    assert 5 <= low <= 5.25 <= high <= 6
    assert summarize({}) == {"n": 0, "mean": None, "ci": None}


# ------------------------------------------------------------------------------------------------ two systems
def test_wilcoxon_finds_a_clearly_better_system():
    rng = np.random.default_rng(1)
    base = rng.uniform(30, 70, size=30)
    a = {i: float(v + 10 + rng.normal(0, 3)) for i, v in enumerate(base)}
    b = {i: float(v) for i, v in enumerate(base)}
    w = wilcoxon_paired(a, b, ("a", "b"))
    assert w["p"] < 0.01 and w["better"] == "a" and w["mean_difference"] > 5 and w["n"] == 30
    assert wilcoxon_paired(b, a, ("b", "a"))["better"] == "a"


def test_wilcoxon_on_identical_systems_says_no_difference():
    same = {i: float(10 * i) for i in range(10)}
    w = wilcoxon_paired(same, dict(same), ("a", "b"))
    assert w["p"] == 1.0 and w["better"] is None and "no difference" in w["note"]
    assert wilcoxon_paired({0: 1.0}, {0: 2.0}, ("a", "b")) is None  # one shared item: no test


def test_wilcoxon_pairs_by_item():
    """A is 1 point better on every item, while the items vary by 80 points: pairing sees it."""
    a = {i: 10.0 + 8 * i + 1 for i in range(12)}
    b = {i: 10.0 + 8 * i for i in range(12)}
    assert wilcoxon_paired(a, b, ("a", "b"))["p"] < 0.001


def test_preference_counts():
    counts = preference_counts(["a", "b", "a", "tie", None, "a"], ["a", "b"])
    assert counts == {"a": 3, "b": 1, "tie": 1, "n": 5}


# ------------------------------------------------------------------------------------------------ metrics
def test_kendall_tau_of_a_monotone_relation_is_one():
    x = [1.0, 2.0, 5.0, 9.0, 20.0]
    assert kendall(x, [v**3 for v in x])["tau"] == pytest.approx(1.0)
    assert kendall(x, [-v for v in x])["tau"] == pytest.approx(-1.0)
    assert kendall([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["tau"] is None  # constant: undefined, not NaN
    assert kendall([1.0], [2.0]) == {"tau": None, "p": None, "n": 1}


def test_metric_correlation_follows_how_close_a_hypothesis_is():
    ref = "a man in a blue shirt is riding a bicycle down the street"
    hyps = [ref, "a man in a blue shirt is riding a bike down the road", "a man is riding down a road",
            "a person rides", "cats sleep"]
    scores = [95.0, 80.0, 55.0, 30.0, 5.0]
    corr = metric_correlation(scores, hyps, [ref] * 5)
    assert corr["chrf++"]["tau"] == pytest.approx(1.0) and corr["chrf++"]["n"] == 5
    assert corr["bleu"]["tau"] > 0.5


# ------------------------------------------------------------------------------------------------ errors
def test_error_counts_and_the_mqm_weighting():
    ratings = [r("x", 0, "a", 50, minor=2, major=1), r("y", 0, "a", 50, minor=0, major=0),
               r("x", 0, "b", 50, minor=1), r("x", 1, "b", 0, major=3, control=True, bad=True)]
    e = error_counts(ratings, ["a", "b"])
    assert e["a"] == {"rated": 2, "minor": 2, "major": 1, "minor_per_segment": 1.0, "major_per_segment": 0.5,
                      "mqm_per_segment": (2 * 1 + 1 * 5) / 2}
    assert e["b"]["rated"] == 1 and e["b"]["major"] == 0  # the control's spans are not counted


# ------------------------------------------------------------------------------------------------ quality control
def qc_ratings(rater, k, bad_score, seed=0):
    """k items of system a: the original scored ~70, its BAD copy scored by `bad_score(original)`."""
    rng = random.Random(seed)
    out = []
    for i in range(k):
        orig = rng.uniform(55, 90)
        out += [r(rater, i, "a", orig), r(rater, i, "a", bad_score(orig, rng), control=True, bad=True)]
    return out


def test_an_attentive_rater_passes_and_a_careless_one_fails():
    attentive = qc_ratings("good", 6, lambda o, rng: o - rng.uniform(30, 50))
    careless = qc_ratings("lazy", 6, lambda o, rng: o + rng.uniform(-5, 5), seed=1)
    random_rater = [r("rand", i, "a", random.Random(i).uniform(0, 100), control=(k == 1), bad=(k == 1))
                    for i in range(6) for k in range(2)]
    qc = {q["rater"]: q for q in quality_control(attentive + careless + random_rater, ["good", "lazy", "rand"])}
    assert qc["good"]["status"] == "pass" and qc["good"]["p"] < 0.05 and qc["good"]["bad_lower"] == 6
    assert qc["lazy"]["status"] == "FAIL" and qc["lazy"]["p"] > 0.05 and qc["lazy"]["pairs"] == 6
    assert qc["rand"]["status"] == "FAIL"


def test_fewer_than_four_pairs_is_untested():
    """With 3 pairs even a perfect rater reaches only p = 1/C(6,3) = 0.05, not < 0.05."""
    three = qc_ratings("r", 3, lambda o, rng: 0.0)
    (q,) = quality_control(three, ["r"])
    assert q == {"rater": "r", "pairs": 3, "bad_lower": 3, "p": None, "status": "untested"}
    (q4,) = quality_control(qc_ratings("r", 4, lambda o, rng: rng.uniform(0, 10)), ["r"])
    assert q4["status"] == "pass" and q4["p"] == pytest.approx(1 / 70)  # exact test, no ties: 1 / C(8, 4)


def test_a_bad_copy_pairs_with_its_own_original_only():
    ratings = [r("x", 0, "a", 80), r("x", 0, "b", 20), r("x", 0, "a", 10, control=True, bad=True),
               r("x", 0, "b", 25, control=True),  # the other system's candidate in the control: not a pair
               r("y", 0, "a", 90), r("x", 1, "a", 5, control=True, bad=True)]  # no original rated by x: no pair
    assert qc_pairs(ratings, "x") == [(10.0, 80.0)]
    (q,) = quality_control(ratings, ["nobody"])
    assert q["pairs"] == 0 and q["status"] == "untested"
