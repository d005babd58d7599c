"""QA data as the encoder reads it: ``question ; passage``, the gold span pointing at the answer's mention in that
line, held-out worlds and modules kept out of training, and one-line errors for bad pairs."""

import re

import pytest

from qkv.data.qa import SEPARATOR, QADataConfig, builtin_items, file_items, join, split_source
from qkv.data.stories import FAMILIES, NAMES, PLACES
from qkv.errors import QKVError

SMALL = QADataConfig(stories_per_family=30, eval_per_family=10)


@pytest.mark.parametrize("split", ["train", "val", "test", "paraphrase", "pydoc"])
def test_every_span_points_at_an_answer_in_the_passage(split):
    items = builtin_items(SMALL, split)
    assert items
    for it in items:
        assert it.source.startswith(it.question + SEPARATOR)
        if it.span is not None:
            start, end = it.span
            assert start >= len(it.question) + len(SEPARATOR)  # in the passage, never the question
            assert it.source[start:end] in it.answers, (it.source, it.span, it.answers)


def test_the_sets_hold_what_they_say():
    train, test = builtin_items(SMALL, "train"), builtin_items(SMALL, "test")
    assert {it.family for it in train} == set(FAMILIES) | {f"pydoc-{k}" for k in ("does", "returns", "default",
                                                                                  "first-arg")}
    assert {it.family for it in builtin_items(SMALL, "pydoc")} <= {f"pydoc-{k}" for k in ("does", "returns",
                                                                                         "default", "first-arg")}
    held_out = set(NAMES["held-out"])
    assert not any(re.search(rf"\b{name}\b", it.passage) for it in train if not it.family.startswith("pydoc")
                   for name in held_out)
    assert any(name in it.passage for it in test for name in held_out)
    stories_only = QADataConfig(dataset="stories", stories_per_family=3, eval_per_family=2)
    assert builtin_items(stories_only, "pydoc") == [] and len(builtin_items(stories_only, "train")) == 30
    assert builtin_items(SMALL, "test") == test  # the same seed, the same stories


def test_sources_join_and_split_with_one_line_errors():
    assert join("Where  is Mary?", " Mary went\nhome. ") == "Where is Mary? ; Mary went home."
    assert split_source("Where is Mary? ; Mary went home. ; Then out.") == ("Where is Mary?",
                                                                            "Mary went home. ; Then out.")
    with pytest.raises(QKVError, match="^the question is empty$"):
        join("  ", "Mary went home.")
    with pytest.raises(QKVError, match="^the passage is empty$"):
        join("Where?", "")
    with pytest.raises(QKVError, match="no ';' in"):
        split_source("Where is Mary? Mary went home.")


def test_your_pairs_find_their_span_or_say_which_line_has_none():
    items = file_items(["Who  now? ; Ada  met Bob.", "Where? ; In the hall."], ["Bob", "hall"], "qa.txt", True)
    assert [it.source[slice(*it.span)] for it in items] == ["Bob", "hall"]
    assert items[0].question == "Who now?" and items[0].source == "Who now? ; Ada met Bob."
    with pytest.raises(QKVError, match=r"^qa.txt, line 2: the answer 'kitchen' is not in the passage"):
        file_items(["Who? ; Ada met Bob.", "Where? ; In the hall."], ["Bob", "kitchen"], "qa.txt", True)
    assert file_items(["Where? ; In the hall."], ["kitchen"], "qa.txt", False)[0].span is None
    with pytest.raises(QKVError, match="^qa.txt, line 1: the question is empty"):
        file_items([" ; In the hall."], ["hall"], "qa.txt", False)
    with pytest.raises(QKVError, match="^qa.txt, line 1: the answer is empty"):
        file_items(["Where? ; In the hall."], [" "], "qa.txt", False)


def test_bad_settings_are_one_line():
    with pytest.raises(ValueError, match="unknown QA dataset 'squad'"):
        QADataConfig(dataset="squad")
    with pytest.raises(ValueError, match="give both src and tgt"):
        QADataConfig(src="a.txt")
    with pytest.raises(ValueError, match="max_answer_len must be positive"):
        QADataConfig(max_answer_len=0)


def test_invented_names_rename_people_and_places_everywhere_and_keep_the_span():
    """A reader trained on one world's ten places learnt to point at those ten words (0% on held-out places, measured);
    stories renamed with made-up words make it find names it has never seen."""
    plain = builtin_items(SMALL, "train")
    renamed = builtin_items(QADataConfig(stories_per_family=30, eval_per_family=10, invented_names=1.0), "train")
    assert len(renamed) == len(plain)
    world = set(NAMES["train"]) | set(PLACES["train"])
    changed = 0
    for old, new in zip(plain, renamed, strict=True):
        assert new.family == old.family and len(new.passage.split()) == len(old.passage.split())
        if new.span is not None:
            assert new.source[slice(*new.span)] in new.answers
        if not new.family.startswith("pydoc"):
            assert not world & set(re.findall(r"[A-Za-z]+", new.source + " ".join(new.answers)))
            changed += new.passage != old.passage
    people = sum(it.family not in ("size", "position") and not it.family.startswith("pydoc") for it in plain)
    assert changed > 0.9 * people  # size and position have boxes and shapes, no people or places
    assert builtin_items(SMALL, "test") == builtin_items(QADataConfig(stories_per_family=30, eval_per_family=10,
                                                                      invented_names=1.0), "test")  # never renamed
