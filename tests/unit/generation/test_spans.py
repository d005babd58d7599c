"""The best span: equal to a brute-force search over every allowed (start, end) pair, never outside the band or the
allowed positions, and -inf where nothing is allowed."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qkv.generation.spans import best_spans


def _brute(s, e, allowed, L):
    best = (float("-inf"), None, None)
    for i in range(len(s)):
        for j in range(i, min(len(s), i + L)):
            if allowed[i] and allowed[j] and s[i] + e[j] > best[0]:
                best = (s[i] + e[j], i, j)
    return best


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 6), st.integers(0, 10_000))
def test_the_best_span_is_the_brute_force_best(S, L, seed):
    g = torch.Generator().manual_seed(seed)
    s, e = torch.randn(3, S, generator=g), torch.randn(3, S, generator=g)
    allowed = torch.rand(3, S, generator=g) < 0.7
    start, end, score = best_spans(s, e, allowed, L)
    for b in range(3):
        want, i, j = _brute(s[b].tolist(), e[b].tolist(), allowed[b].tolist(), L)
        if i is None:
            assert score[b] == float("-inf")
            continue
        assert float(score[b]) == pytest.approx(want, abs=1e-6)
        assert allowed[b, start[b]] and allowed[b, end[b]] and 0 <= end[b] - start[b] < L
        assert float(s[b, start[b]] + e[b, end[b]]) == pytest.approx(want, abs=1e-6)


def test_an_end_before_its_start_never_wins():
    s = torch.tensor([[0.0, 0.0, 9.0]])  # the best start is last ...
    e = torch.tensor([[9.0, 0.0, 0.0]])  # ... the best end first: they cannot pair
    start, end, _ = best_spans(s, e, torch.ones(1, 3, dtype=torch.bool), 3)
    assert int(start) <= int(end)


def test_max_len_below_one_is_refused():
    with pytest.raises(ValueError, match="max_len must be at least 1"):
        best_spans(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), 0)
