"""The skills source: every skill in many phrasings, whole phrasings and whole values held out — no training
question uses a held-out phrasing or a held-out value, every test question uses a held-out phrasing, every values
question a held-out value — answers that are right, and the same conversations on every call."""

import re

import pytest

from qkv.data.chat import ChatDataConfig, load_chat_splits
from qkv.data.programs import held_out_pairs
from qkv.data.skills import (
    HELD_OUT_PHRASINGS,
    OPS,
    PHRASINGS,
    PREFIXES,
    SKILLS,
    SUFFIXES,
    held_out_value,
    phrasings,
    skill_conversations,
)
from qkv.evaluation.skills import answers_match


def _pattern(template: str) -> re.Pattern:
    """A phrasing as a regex: a number or word slot matches letters and digits, the {code} slot anything."""
    out = ""
    for part in re.split(r"(\{\w+\})", template):
        out += (r"(.+)" if part == "{code}" else r"([a-z0-9]+)") if re.fullmatch(r"\{\w+\}", part) else re.escape(part)
    return re.compile(out + r"\Z", re.S)


def _bare(question: str) -> str:
    """A training question without the courtesy `_decorate` may add."""
    for prefix in PREFIXES:
        question = question.removeprefix(prefix).removeprefix(prefix[0].lower() + prefix[1:])
    for suffix in SUFFIXES:
        question = question.removesuffix(suffix)
    return question


def _phrasing_of(question: str, skill: str) -> str:
    lists = OPS.values() if skill == "arithmetic" else [PHRASINGS[skill]]
    bare = _bare(question)
    found = [p for ps in lists for p in ps if _pattern(p).match(bare) or _pattern(p[0].lower() + p[1:]).match(bare)]
    assert found, question
    return found[0]


@pytest.fixture(scope="module")
def splits():
    return {s: skill_conversations(s, 240) for s in ("train", "val", "test", "values", "rl")}


def test_every_skill_has_many_phrasings_and_three_held_out():
    for skill in SKILLS:
        train, held = phrasings(skill, False), phrasings(skill, True)
        assert len(train) >= 9 and not set(train) & set(held)
        assert len(held) == HELD_OUT_PHRASINGS * (3 if skill == "arithmetic" else 1)


def test_phrasings_are_split(splits):
    for split, held in (("train", False), ("val", False), ("values", False), ("rl", False), ("test", True)):
        for c in splits[split]:
            question = c.messages[0]["content"]
            assert _phrasing_of(question, c.skill) in phrasings(c.skill, held), (split, question)


def _values(c) -> list[str]:
    q, a = c.messages[0]["content"], c.messages[1]["content"]
    if c.skill in ("arithmetic", "compare"):
        return re.findall(r"\d+", q)[:2]
    if c.skill == "explain":
        return []
    return [a.split(":")[0].replace("-", "").split(" ")[0]] if c.skill != "spell" else [a.replace("-", "")]


def test_values_are_split(splits):
    for c in splits["train"] + splits["val"] + splits["test"] + splits["rl"]:
        assert not any(held_out_value(v) for v in _values(c)), c.messages
    for c in splits["values"]:
        if c.skill != "explain":
            assert any(held_out_value(v) for v in _values(c)), c.messages


def test_the_rl_prompts_have_wider_values(splits):
    numbers = [int(v) for c in splits["rl"] if c.skill in ("arithmetic", "compare") for v in _values(c)]
    words = [v for c in splits["rl"] if c.skill in ("reverse", "count", "spell") for v in _values(c)]
    assert max(numbers) >= 100 and max(map(len, words)) > 6
    trained = [int(v) for c in splits["train"] if c.skill in ("arithmetic", "compare") for v in _values(c)]
    assert max(trained) < 100


def test_explain_holds_out_block_pairs(splits):
    held = [" then ".join(sorted(p)) for p in held_out_pairs()]
    assert held
    for c in splits["values"]:
        if c.skill == "explain":
            assert ", then " in c.messages[1]["content"]  # two blocks, a held-out pair


@pytest.mark.parametrize("split", ["train", "test", "values", "rl"])
def test_answers_are_right(splits, split):
    for c in splits[split]:
        q, a = c.messages[0]["content"], c.messages[1]["content"]
        if c.skill == "arithmetic":
            expr, result = re.fullmatch(r"<<(.+)=(-?\d+)>>(-?\d+)", a).group(1, 2)
            assert eval(expr) == int(result)  # test code: the expression is one the generator wrote
        elif c.skill == "compare":
            assert int(a) == max(map(int, re.findall(r"\d+", q)[:2]))
        elif c.skill in ("reverse", "count", "spell"):
            word = a.split(" ")[0].split(":")[0].replace("-", "")
            assert word in q
            want = {"reverse": word[::-1], "count": str(len(word)), "spell": "-".join(word)}[c.skill]
            assert answers_match(a, want)


def test_only_training_questions_are_decorated(splits):
    def decorated(convs):
        return sum(_bare(c.messages[0]["content"]) != c.messages[0]["content"] for c in convs) / len(convs)
    assert 0.15 < decorated(splits["train"]) < 0.45
    assert decorated(splits["test"]) == decorated(splits["values"]) == 0


def test_no_training_phrasing_is_a_held_out_one_with_a_word_moved():
    for skill in SKILLS:
        words = lambda p: sorted(re.findall(r"[a-z]+", p.lower()))  # noqa: E731
        held = [words(p) for p in phrasings(skill, True)]
        assert not [p for p in phrasings(skill, False) if words(p) in held], skill


def test_every_skill_in_turn_and_deterministic(splits):
    assert [c.skill for c in splits["test"][:12]] == list(SKILLS) * 2
    again = skill_conversations("test", 240)
    assert [c.messages for c in again] == [c.messages for c in splits["test"]]
    other_seed = skill_conversations("test", 240, seed=1)
    assert [c.messages for c in other_seed] != [c.messages for c in splits["test"]]


def test_the_chat_source():
    cfg = ChatDataConfig(source="skills", train_size=60, val_size=12, test_size=12, values_size=12,
                         skills=("compare", "spell"))
    got = load_chat_splits(cfg)
    assert {k: len(v) for k, v in got.items()} == {"train": 60, "val": 12, "test": 12, "values": 12}
    assert {c.skill for c in got["train"]} == {"compare", "spell"}
    with pytest.raises(ValueError, match="unknown skill"):
        ChatDataConfig(source="skills", skills=("add",))
    with pytest.raises(ValueError, match="unknown split"):
        skill_conversations("dev", 3)
