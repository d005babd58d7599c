"""SQuAD v1.1's exact match and F1 behave as the official evaluation script does on hand cases (each value worked out
by its rules: normalisation order, multiset overlap, the best over gold answers, 0 for an empty side), and as
properties: F1 is symmetric, in [0, 1], 1 exactly when the normalised token multisets agree."""

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qkv.evaluation.squad import (
    best_over_golds,
    exact_match,
    is_span,
    normalize_answer,
    span_share,
    squad_scores,
    token_f1,
)


@pytest.mark.parametrize("text, normalised", [
    ("The Denver Broncos", "denver broncos"),
    ("  a  cat,   an apple; THE end. ", "cat apple end"),
    ("the,", ""),  # punctuation goes first, then "the" is a whole word
    ("theatre", "theatre"),  # articles only as whole words
    ("Levi's Stadium", "levis stadium"),
    ("24–10", "24–10"),  # an en dash is not ASCII punctuation: it stays
    ("don’t", "don’t"),  # nor is a curly apostrophe
    ("A", ""),
    ("\tnew\nline", "new line"),
])
def test_normalisation_follows_the_script(text, normalised):
    assert normalize_answer(text) == normalised


@pytest.mark.parametrize("pred, gold, em, f1", [
    ("Denver Broncos", "The Denver Broncos!", 1.0, 1.0),
    ("Denver", "Denver Broncos", 0.0, 2 * 1.0 * 0.5 / 1.5),  # P 1, R 1/2
    ("the Carolina Panthers team", "Panthers", 0.0, 2 * (1 / 3) * 1.0 / (4 / 3)),  # P 1/3, R 1
    ("a a b", "a b b", 0.0, 2 * 1.0 * 0.5 / 1.5),  # "a" is an article: "b" vs "b b", overlap 1, P 1, R 1/2
    ("one one two", "one two two", 0.0, 2 * (2 / 3) * (2 / 3) / (4 / 3)),  # multiset overlap {one, two} = 2
    ("the", "the", 1.0, 0.0),  # both normalise to empty: equal, but no token overlaps (v1.1 gives F1 0)
    ("", "Broncos", 0.0, 0.0),
])
def test_hand_cases(pred, gold, em, f1):
    assert exact_match(pred, gold) == em
    assert token_f1(pred, gold) == pytest.approx(f1)


def test_the_best_gold_answer_counts_and_a_set_is_a_mean_in_percent():
    golds = [["Super Bowl L", "L"], ["Santa Clara, California", "Levi's Stadium"]]
    assert best_over_golds(exact_match, "l", golds[0]) == 1.0
    assert best_over_golds(token_f1, "Santa Clara", golds[1]) == pytest.approx(0.8)
    scores = squad_scores(["l", "Santa Clara"], golds)
    assert scores == {"n": 2, "exact_match": 50.0, "f1": pytest.approx(90.0)}
    with pytest.raises(ValueError, match="at least one gold"):
        best_over_golds(token_f1, "x", [])
    with pytest.raises(ValueError, match="1 predictions for 2 questions"):
        squad_scores(["x"], golds)


words = st.lists(st.sampled_from(["a", "the", "cat", "dog", "Cat,", "red", "x"]), max_size=6).map(" ".join)


@given(words, words)
def test_f1_is_symmetric_bounded_and_one_exactly_when_the_token_multisets_agree(p, g):
    f = token_f1(p, g)
    assert f == pytest.approx(token_f1(g, p)) and 0.0 <= f <= 1.0
    same = Counter(normalize_answer(p).split()) == Counter(normalize_answer(g).split()) and normalize_answer(p)
    assert (f == pytest.approx(1.0)) == bool(same)
    if exact_match(p, g) and normalize_answer(p):
        assert f == pytest.approx(1.0)


@pytest.mark.parametrize("answer, passage, expected", [
    ("the garden", "Mary went to the garden.", True),  # normalised: "garden" is a token of the passage
    ("Garden!", "Mary went to the garden.", True),
    ("to garden", "Mary went to the garden.", True),  # "the" is dropped from both
    ("went garden", "Mary went to the garden.", False),  # tokens of the passage, but not contiguous
    ("gard", "Mary went to the garden.", False),  # part of a token is not a span
    ("kitchen", "Mary went to the garden.", False),
    ("", "Mary went to the garden.", False),
    ("the", "the", False),  # normalises to nothing
])
def test_is_span_asks_for_contiguous_tokens_of_the_passage(answer, passage, expected):
    assert is_span(answer, passage) is expected


def test_span_share_is_the_share_of_spans():
    assert span_share(["garden", "kitchen"], ["in the garden", "in the garden"]) == 0.5
    with pytest.raises(ValueError, match="1 predictions for 2 passages"):
        span_share(["x"], ["a", "b"])
