"""Exact match per skill: the final answer decides (numbers as numbers), the reward is the same check, and the
centred mean scores chance as 0 and a perfect model as 1 on every skill (the module docstring's worked example)."""

import pytest

from qkv.data.skills import skill_conversations
from qkv.evaluation.skills import answer_reward, answers_match, centred, skill_metrics, skill_scores


@pytest.mark.parametrize("reply, reference, same", [
    ("<<2+3=5>>5", "<<2+3=5>>5", True), ("5", "<<2+3=5>>5", True), ("so: 5.0", "5", True),
    ("<<2+3=6>>6", "<<2+3=5>>5", False), ("wok", "wok.", False), ("k-o-w reversed is w-o-k: wok", "x: wok", True),
    ("", "5", False), ("Given a string: reverse it.", "Given a list: reverse it.", True)])
def test_answers_match(reply, reference, same):
    assert answers_match(reply, reference) is same


def test_reward_is_the_match():
    assert answer_reward([["5", "6"], ["wok", "kow"]], ["<<2+3=5>>5", "wok"]) == [[1.0, 0.0], [1.0, 0.0]]


def test_centred_worked_example():
    assert centred(0.75, "compare") == pytest.approx(0.5)
    assert centred(0.40, "reverse") == pytest.approx(0.4)
    assert centred(0.5, "compare") == 0.0 and centred(1.0, "compare") == 1.0


class Oracle:
    """Replies with the reference for the first `right` questions of each skill, else "wrong"."""

    def __init__(self, convs, right: int):
        self.answers, seen = {}, {}
        for c in convs:
            seen[c.skill] = seen.get(c.skill, 0) + 1
            self.answers[c.messages[0]["content"]] = c.messages[1]["content"] if seen[c.skill] <= right else "wrong"

    def replies(self, prompts, max_new_tokens):
        return [self.answers[p[-1]["content"]] for p in prompts]


def test_skill_scores_and_metrics():
    convs = skill_conversations("test", 24)  # 4 per skill
    s = skill_scores(Oracle(convs, 3), convs, 32)
    assert s["per_skill"] == {k: 0.75 for k in s["per_skill"]} and len(s["per_skill"]) == 6
    assert s["mean"] == pytest.approx(0.75)
    assert s["core"] == pytest.approx((5 * 0.75 + 0.5) / 6)
    assert len(s["outcomes"]) == 24 and sum(ok for _, ok in s["outcomes"]) == 18
    assert all(len(m) == 1 for m in s["misses"].values())
    splits = {"test": convs, "values": skill_conversations("values", 12)}
    m = skill_metrics(Oracle(splits["test"] + splits["values"], 99), splits, 12, 32)
    assert m["phrasings_em"] == 1.0 and m["values_em"] == 1.0 and m["values_core"] == 1.0
    assert m["phrasings_em_compare"] == 1.0
    assert skill_metrics(Oracle(convs, 0), splits, 0, 32) == {}  # no question asked: no figure, not a None
