"""pass@k against its exact binomial form, known values, monotonicity, and the paired bootstrap."""

from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkv.evaluation.pass_at_k import exact_pass_at_k, mean_pass_at_k, paired_bootstrap, pass_at_k


@st.composite
def nck(draw):
    n = draw(st.integers(1, 200))
    return n, draw(st.integers(0, n)), draw(st.integers(1, n))


@settings(max_examples=500, deadline=None)
@given(nck())
def test_the_stable_product_equals_the_exact_binomial_form(args):
    n, c, k = args
    assert abs(pass_at_k(n, c, k) - float(exact_pass_at_k(n, c, k))) <= 1e-9


def test_known_values():
    assert pass_at_k(20, 0, 5) == 0.0
    assert pass_at_k(20, 20, 5) == 1.0
    assert pass_at_k(20, 16, 5) == 1.0  # only 4 failures: any 5 picks include a pass
    for c in range(21):
        assert pass_at_k(20, c, 1) == pytest.approx(c / 20, abs=1e-12)
    assert exact_pass_at_k(4, 1, 2) == Fraction(1, 2)  # C(3,2)/C(4,2) = 3/6 of the pairs miss the one pass
    assert exact_pass_at_k(5, 2, 2) == Fraction(7, 10)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-12)


def test_monotone_in_k_and_in_c():
    n = 50
    for c in range(n + 1):
        by_k = [pass_at_k(n, c, k) for k in range(1, n + 1)]
        assert all(b >= a - 1e-12 for a, b in pairwise(by_k)), c
        exact = [exact_pass_at_k(n, c, k) for k in range(1, n + 1)]
        assert exact == sorted(exact)
    for k in range(1, n + 1):
        by_c = [pass_at_k(n, c, k) for c in range(n + 1)]
        assert all(b >= a - 1e-12 for a, b in pairwise(by_c)), k
        assert by_c[0] == 0.0 and by_c[-1] == 1.0
    assert pass_at_k(50, 3, 10) > pass_at_k(50, 3, 1)  # strictly more picks, strictly more chance
    assert pass_at_k(50, 4, 10) > pass_at_k(50, 3, 10)


@pytest.mark.parametrize("n, c, k", [(10, -1, 1), (10, 11, 1), (10, 5, 0), (10, 5, 11), (0, 0, 1)])
def test_bad_counts_raise(n, c, k):
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(n, c, k)
    with pytest.raises(ValueError, match="pass@k needs"):
        exact_pass_at_k(n, c, k)


def test_mean_over_problems():
    assert mean_pass_at_k([(10, 0), (10, 10), (10, 5)], 1) == pytest.approx(0.5)
    assert mean_pass_at_k([(10, 0), (10, 0), (10, 10)], 1) == pytest.approx(1 / 3)  # a mean, not a median
    assert mean_pass_at_k([(10, 3), (20, 1)], 5) == pytest.approx((pass_at_k(10, 3, 5) + pass_at_k(20, 1, 5)) / 2)
    with pytest.raises(ValueError, match="at least one problem"):
        mean_pass_at_k([], 1)
    with pytest.raises(ValueError, match="pass@k needs"):
        mean_pass_at_k([(10, 3), (4, 1)], 5)


def test_bootstrap_of_identical_scores_finds_no_difference():
    scores = [0.0, 1.0, 0.5, 0.25, 1.0, 0.0, 0.75]
    out = paired_bootstrap(scores, list(scores), n_boot=2000)
    assert out["delta"] == 0.0
    lo, hi = out["ci"]
    assert lo <= 0.0 <= hi
    assert out["p"] == 1.0  # every resampled difference is 0, and 0 counts as "not better"


def test_bootstrap_of_a_clear_shift_is_significant():
    before = [0.1 * (i % 7) for i in range(60)]
    after = [b + 0.2 + 0.05 * ((i * 3) % 5 - 2) for i, b in enumerate(before)]  # +0.1 .. +0.3 on every problem
    out = paired_bootstrap(before, after, n_boot=5000, seed=1)
    assert out["delta"] == pytest.approx(sum(after) / 60 - sum(before) / 60)
    assert out["p"] < 0.01
    lo, hi = out["ci"]
    assert 0.0 < lo <= out["delta"] <= hi < 0.3
    worse = paired_bootstrap(after, before, n_boot=5000, seed=1)
    assert worse["p"] > 0.99 and worse["delta"] < 0


def test_bootstrap_pairs_the_problems():
    """A constant gain on problems of very different difficulty: every resample differs by exactly the gain (an
    unpaired bootstrap would see the difficulty's spread and an interval around 0)."""
    before = [0.0, 1.0] * 30
    out = paired_bootstrap(before, [b + 0.05 for b in before], n_boot=2000)
    assert out["ci"] == pytest.approx((0.05, 0.05)) and out["p"] == 0.0


def test_bootstrap_interval_is_the_95_percent_one():
    # differences 0 or 1, half each, over 100 problems: the resampled mean is about N(0.5, 0.05²)
    out = paired_bootstrap([0.0] * 100, [0.0, 1.0] * 50, n_boot=10000, seed=0)
    lo, hi = out["ci"]
    assert lo == pytest.approx(0.5 - 1.96 * 0.05, abs=0.015) and hi == pytest.approx(0.5 + 1.96 * 0.05, abs=0.015)


def test_bootstrap_is_seeded():
    before = [0, 1, 0, 1, 1, 0, 0, 1, 0, 0]
    after = [1, 1, 0, 1, 0, 1, 0, 1, 1, 0]
    a = paired_bootstrap(before, after, n_boot=3000, seed=7)
    assert a == paired_bootstrap(before, after, n_boot=3000, seed=7)
    assert a != paired_bootstrap(before, after, n_boot=3000, seed=8)


def test_bootstrap_in_chunks_matches_one_draw(monkeypatch):
    import qkv.evaluation.pass_at_k as module

    before, after = [0.0, 0.5, 1.0, 0.25], [0.5, 0.5, 1.0, 1.0]
    whole = paired_bootstrap(before, after, n_boot=1000, seed=3)
    monkeypatch.setattr(module, "_CHUNK", 4 * 7)  # 7 resamples at a time: the last chunk is short
    chunked = paired_bootstrap(before, after, n_boot=1000, seed=3)
    assert chunked == whole  # the chunks draw the same stream of indices


def test_bootstrap_rejects_unpaired_or_empty_scores():
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="at least one problem"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap([1.0], [0.0], n_boot=0)
