"""BAD copies (Appraise's rule, `qkv.humaneval.quality`): the phrase-length table, and the properties a quality
control relies on: a copy always differs, keeps most of a long candidate, and is the same for the same seed."""

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkv.humaneval.quality import degrade, phrase_length

WORDS = st.text(alphabet=st.characters(blacklist_categories=("Z", "C")), min_size=1, max_size=8)
SENTENCE = st.lists(WORDS, min_size=0, max_size=40).map(" ".join)
DONORS = st.lists(SENTENCE, min_size=0, max_size=5)


@pytest.mark.parametrize(("n_words", "length"), [(1, 1), (3, 1), (4, 2), (5, 2), (6, 3), (8, 3), (9, 4), (15, 4),
                                                 (16, 5), (20, 5), (21, 6), (200, 6)])
def test_phrase_length_follows_the_table(n_words, length):
    assert phrase_length(n_words) == length


def test_a_worked_example():
    text = "A man rides a red bicycle down the street ."
    bad = degrade(text, ["Two dogs play in the snow ."], random.Random(3))
    assert bad != text
    kept = text.split()
    got = bad.split()
    assert len(got) == 10  # 4 of the 10 words replaced by 4 donor words
    assert sum(a == b for a, b in zip(kept, got, strict=True)) >= 6
    assert set(got) - set(kept) <= set("Two dogs play in the snow .".split())


@settings(max_examples=200, deadline=None)
@given(text=SENTENCE, donors=DONORS, seed=st.integers(0, 2**32))
def test_a_bad_copy_always_differs(text, donors, seed):
    if not text.strip() and not any(d.strip() for d in donors):
        with pytest.raises(ValueError):
            degrade(text, donors, random.Random(seed))
        return
    assert degrade(text, donors, random.Random(seed)) != text


@settings(max_examples=100, deadline=None)
@given(text=SENTENCE, donors=DONORS, seed=st.integers(0, 2**32))
def test_the_same_seed_gives_the_same_copy(text, donors, seed):
    if not text.strip() and not any(d.strip() for d in donors):
        return
    assert degrade(text, donors, random.Random(seed)) == degrade(text, donors, random.Random(seed))


@settings(max_examples=100, deadline=None)
@given(words=st.lists(WORDS, min_size=21, max_size=60), donors=st.lists(SENTENCE, min_size=1, max_size=4),
       seed=st.integers(0, 2**32))
def test_a_long_candidate_keeps_all_but_six_words(words, donors, seed):
    text = " ".join(words)
    got = degrade(text, donors, random.Random(seed)).split()
    # the words before the replaced phrase and after it are the original's, in place
    prefix = next((k for k, (a, b) in enumerate(zip(words, got, strict=False)) if a != b), min(len(words), len(got)))
    suffix = next((k for k, (a, b) in enumerate(zip(reversed(words), reversed(got), strict=False)) if a != b),
                  min(len(words), len(got)))
    assert prefix + suffix >= len(words) - 6


def test_different_seeds_give_different_copies():
    text = "a quick brown fox jumps over the lazy dog near the river bank today"
    donors = ["people walk along a busy street in the city at night", "two children are playing football outside"]
    copies = {degrade(text, donors, random.Random(seed)) for seed in range(20)}
    assert len(copies) > 5


def test_an_empty_candidate_becomes_a_donor_sentence():
    assert degrade("", ["", "  ", "A dog runs."], random.Random(0)) == "A dog runs."


def test_when_no_donor_can_change_the_text_a_phrase_is_deleted():
    assert degrade("yes yes yes", ["yes", "yes yes yes yes"], random.Random(0)) == "yes yes"
    assert degrade("word", ["word"], random.Random(0)) == ""


def test_the_layout_is_kept():
    """A multi-line continuation keeps every line break, even inside the replaced phrase: a control must look
    like the other tasks."""
    text = "ROMEO:\nWhat light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"
    for seed in range(20):
        bad = degrade(text, ["Arise fair sun and kill the envious moon"], random.Random(seed))
        assert bad != text
        assert re.sub(r"\S+", "w", bad) == re.sub(r"\S+", "w", text)  # same spaces and line breaks, word for word
