"""Exact match per skill, and one centred mean over skills (nanochat's ChatCORE), for the ``skills`` chat data.

A reply is right when its final answer (`qkv.data.chat_template.final_answer`: after the last ``": "``, without
calculator calls) equals the reference's; two numbers compare as numbers (``"82"`` == ``"82.0"``). The same check
is the reinforcement reward (`answer_reward`), so what RL optimises is what this reports.

The centred mean puts skills with different chance levels on one scale, as nanochat's ChatCORE does: a skill's
accuracy a with chance level b (0 for an open answer, 1/k for a k-way choice) counts as (a − b) / (1 − b), so
guessing scores 0 and a perfect model 1 on every skill::

    skill     accuracy  chance  centred
    compare   0.75      1/2     0.50
    reverse   0.40      0       0.40         centred mean 0.45
"""

from __future__ import annotations

from collections.abc import Sequence

from qkv.data.chat_template import final_answer
from qkv.data.skills import CHOICES


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def answers_match(reply: str, reference: str) -> bool:
    """Whether `reply` gives the final answer of `reference` (numbers as numbers, else exact strings).

    Examples: ``("<<2+3=5>>5", "<<2+3=5>>5")`` -> True; ``("so: 5.0", "5")`` -> True; ``("wok", "wok.")`` -> False."""
    got, want = final_answer(reply), final_answer(reference)
    a, b = _number(got), _number(want)
    if a is not None and b is not None:
        return a == b
    return got == want


def answer_reward(replies: list[list[str]], references: Sequence[str]) -> list[list[float]]:
    """REINFORCE's reward: 1 for a sample whose final answer is right, else 0 (P lists of G)."""
    return [[float(answers_match(r, ref)) for r in group] for group, ref in zip(replies, references, strict=True)]


def centred(accuracy: float, skill: str) -> float:
    """(a − b) / (1 − b) with b the skill's chance level (module docstring)."""
    chance = 1 / CHOICES[skill] if skill in CHOICES else 0.0
    return (accuracy - chance) / (1 - chance)


def skill_scores(completer, conversations: Sequence, max_new_tokens: int, keep: int = 2) -> dict:
    """Greedy exact match of each skill over single-turn `conversations` (each with its `.skill`): {"per_skill":
    {skill: accuracy}, "n": {skill: count}, "mean": mean over skills, "core": centred mean, "misses": {skill:
    [(question, reply, reference)] (up to `keep`)}, "outcomes": [(skill, right)] per conversation}."""
    right: dict[str, int] = {}
    count: dict[str, int] = {}
    misses: dict[str, list] = {}
    outcomes: list[tuple[str, bool]] = []
    questions = [c.messages[:-1] for c in conversations]
    replies = completer.replies(questions, max_new_tokens)
    for c, reply in zip(conversations, replies, strict=True):
        reference = c.messages[-1]["content"]
        ok = answers_match(reply, reference)
        outcomes.append((c.skill, ok))
        right[c.skill] = right.get(c.skill, 0) + ok
        count[c.skill] = count.get(c.skill, 0) + 1
        if not ok and len(misses.setdefault(c.skill, [])) < keep:
            misses[c.skill].append((c.messages[-2]["content"], reply, reference))
    per_skill = {s: right[s] / count[s] for s in count}
    return {"per_skill": per_skill, "n": count, "misses": misses, "outcomes": outcomes,
            "mean": sum(per_skill.values()) / len(per_skill) if per_skill else None,
            "core": sum(centred(a, s) for s, a in per_skill.items()) / len(per_skill) if per_skill else None}


HELD_OUT = (("phrasings", "test"), ("values", "values"))  # (name in reports, split of the skills source)


def held_out_scores(completer, splits: dict, limit: int | None, max_new_tokens: int) -> dict:
    """`skill_scores` of the held-out phrasings ("phrasings", the test split) and values ("values"), each on its
    first `limit` conversations (None: all); a split with none is left out."""
    chosen = {name: splits.get(split, [])[:limit] for name, split in HELD_OUT}
    return {name: skill_scores(completer, convs, max_new_tokens) for name, convs in chosen.items() if convs}


def skill_metrics(completer, splits: dict, limit: int, max_new_tokens: int) -> dict:
    """`held_out_scores` as flat metrics for the training log: ``{name}_em_{skill}``, ``{name}_em`` (mean over
    skills) and ``{name}_core``."""
    out = {}
    for name, s in held_out_scores(completer, splits, limit, max_new_tokens).items():
        out.update({f"{name}_em_{k}": v for k, v in s["per_skill"].items()})
        out[f"{name}_em"], out[f"{name}_core"] = s["mean"], s["core"]
    return out
