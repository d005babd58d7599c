"""The story worlds: every answer agrees with an independent reader that replays the passage's facts (parsed back
from the text, not taken from the generator); held-out worlds share no name or place with training; paraphrase
questions use wordings training never does; answer spans point at the supporting mention; the same seed gives
the same stories; bad names are one-line errors."""

import re
from itertools import permutations

import pytest

from qkv.data.stories import (
    COUNTS,
    FAMILIES,
    NAMES,
    PLACES,
    QUESTIONS,
    SPLITS,
    story_example,
    story_examples,
)
from qkv.errors import QKVError

MOVE = re.compile(r"^(\w+) (?:went|journeyed|moved|travelled) to the (\w+)\.$")
GET = re.compile(r"^(\w+) (?:picked up|got|grabbed) the (\w+)\.$")
DROP = re.compile(r"^(\w+) (?:dropped|put down|discarded) the (\w+)\.$")
NOT_IN = re.compile(r"^(\w+) is (?:no longer|not) in the (\w+)\.$")
BIGGER = re.compile(r"^The (\w+) is bigger than the (\w+)\.$")
FITS = re.compile(r"^The (\w+) fits inside the (\w+)\.$")
LEFT = re.compile(r"^The (\w+) is to the left of the (\w+)\.$")
RIGHT = re.compile(r"^The (\w+) is to the right of the (\w+)\.$")


def _replay(passage: str) -> dict:
    """Where everyone is (or is not), every move, what each holds, where each object was put down, and the pairs
    (smaller, bigger) and (left, right) the facts state."""
    s = {"where": {}, "not": {}, "moves": {}, "holds": {}, "at": {}, "less": set()}
    for sentence in re.findall(r"[^.]+\.", passage):
        sentence = sentence.strip()
        if m := MOVE.match(sentence):
            s["where"][m[1]] = m[2]
            s["not"].pop(m[1], None)
            s["moves"].setdefault(m[1], []).append(m[2])
        elif m := GET.match(sentence):
            s["holds"].setdefault(m[1], []).append(m[2])
        elif m := DROP.match(sentence):
            s["holds"][m[1]].remove(m[2])
            s["at"][m[2]] = s["where"][m[1]]
        elif m := NOT_IN.match(sentence):
            s["not"][m[1]] = m[2]
            s["where"].pop(m[1], None)
        elif m := BIGGER.match(sentence):
            s["less"].add((m[2], m[1]))
        elif m := FITS.match(sentence) or LEFT.match(sentence):
            s["less"].add((m[1], m[2]))
        elif m := RIGHT.match(sentence):
            s["less"].add((m[2], m[1]))
        else:
            raise AssertionError(f"a sentence no template makes: {sentence!r}")
    return s


def _less(pairs: set, a: str, b: str) -> bool:
    """a < b by the transitive closure of the stated pairs."""
    seen, todo = set(), [a]
    while todo:
        x = todo.pop()
        for u, v in pairs:
            if u == x and v not in seen:
                seen.add(v)
                todo.append(v)
    return b in seen


def _slots(ex) -> dict:
    """The question's slots, matched back through its template."""
    pattern = re.escape(ex.template)
    for name in ("p", "o", "l", "a", "b"):
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>\\w+)")
    m = re.fullmatch(pattern, ex.question)
    assert m, (ex.template, ex.question)
    return m.groupdict()


def _answer(ex) -> str:
    s, q = _replay(ex.passage), _slots(ex)
    f = ex.family
    if f == "single":
        return s["where"][q["p"]]
    if f == "two":
        (holder,) = [p for p, objs in s["holds"].items() if q["o"] in objs]
        return s["where"][holder]
    if f == "three":
        return s["at"][q["o"]]
    if f == "counting":
        return COUNTS[len(s["holds"].get(q["p"], []))]
    if f == "lists":
        return ", ".join(s["holds"].get(q["p"], [])) or "nothing"
    if f in ("yes-no", "negation"):
        if q["p"] in s["not"]:
            assert s["not"][q["p"]] == q["l"]  # only asked where the answer is known
            return "no"
        return "yes" if s["where"][q["p"]] == q["l"] else "no"
    if f == "before":
        moves = s["moves"][q["p"]]
        assert moves.count(q["l"]) == 1
        return moves[moves.index(q["l"]) - 1]
    known = _less(s["less"], q["a"], q["b"]) or _less(s["less"], q["b"], q["a"])
    assert known  # a chain of facts relates every pair asked about
    return "yes" if _less(s["less"], q["a"], q["b"]) else "no"


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_answer_agrees_with_a_reader_that_replays_the_facts(family, split):
    for ex in story_examples(family, split, 150, seed=1):
        assert ex.family == family
        assert _answer(ex) in ex.answers, ex
        if family == "lists":
            held = ex.answers[0].split(", ")
            assert set(ex.answers) == {", ".join(o) for o in permutations(held)} or ex.answers == ("nothing",)


@pytest.mark.parametrize("family", FAMILIES)
def test_answers_are_spread_over_their_values(family):
    answers = [ex.answers[0] for ex in story_examples(family, "train", 400)]
    values = {a: answers.count(a) / len(answers) for a in set(answers)}
    if family in ("yes-no", "negation", "size", "position"):
        assert set(values) == {"yes", "no"} and min(values.values()) > 0.3, values
    elif family == "counting":
        assert len(values) >= 3, values
    else:
        assert len(values) >= 4 and max(values.values()) < 0.5, values


@pytest.mark.parametrize("family", FAMILIES)
def test_place_answers_point_at_their_supporting_mention(family):
    for ex in story_examples(family, "test", 100):
        if family in ("single", "two", "three", "before"):
            start, end = ex.span
            assert ex.passage[start:end] == ex.answers[0]
            sentence = ex.passage[: end].rsplit(".", 1)[-1]
            assert MOVE.match(sentence.strip() + ".")  # the mention is a move's destination
        else:
            assert ex.span is None


def test_held_out_worlds_share_no_name_or_place_with_training():
    assert not set(NAMES["train"]) & set(NAMES["held-out"]) and not set(PLACES["train"]) & set(PLACES["held-out"])
    words = lambda exs: set(re.findall(r"\w+", " ".join(e.passage + " " + e.question for e in exs)))  # noqa: E731
    train = words([e for f in FAMILIES for e in story_examples(f, "train", 100)])
    for split in ("test", "paraphrase"):
        held = words([e for f in FAMILIES for e in story_examples(f, split, 100)])
        assert not held & (set(NAMES["train"]) | set(PLACES["train"])), split
        assert not train & (set(NAMES["held-out"]) | set(PLACES["held-out"]))


def test_paraphrase_questions_use_wordings_training_never_does():
    for family, (train_t, para_t) in QUESTIONS.items():
        assert not set(train_t) & set(para_t), family
    seen = {e.template for f in FAMILIES for s in ("train", "val", "test") for e in story_examples(f, s, 100)}
    para = {e.template for f in FAMILIES for e in story_examples(f, "paraphrase", 100)}
    assert not seen & para
    assert para == {t for _, ts in QUESTIONS.values() for t in ts}  # every paraphrase wording is asked


def test_the_same_seed_gives_the_same_stories_and_another_seed_others():
    a, b = story_examples("two", "train", 20, seed=3), story_examples("two", "train", 20, seed=3)
    assert a == b and a != story_examples("two", "train", 20, seed=4)
    assert story_examples("two", "val", 20, seed=3) != a


@pytest.mark.parametrize("call, needle", [
    (lambda: story_examples("three-and-a-half", "train", 1), "unknown story family 'three-and-a-half'"),
    (lambda: story_examples("two", "dev", 1), "unknown split 'dev'"),
    (lambda: story_examples("two", "train", -1), "n must be at least 0"),
])
def test_bad_names_are_one_line_errors(call, needle):
    with pytest.raises(QKVError, match=re.escape(needle)):
        call()


def test_a_story_example_draws_from_the_rng_it_is_given():
    import random

    assert story_example(random.Random(5), "single") == story_example(random.Random(5), "single")
