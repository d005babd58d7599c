"""How an answer to a question about a passage is judged: SQuAD v1.1's exact match and token F1 (Rajpurkar et al.
2016), by the rules of its official evaluation script.

    normalise(s) = collapse spaces( drop "a", "an", "the" as words( drop ASCII punctuation( lower-case(s) )))
    EM(pred, gold) = 1 if normalise(pred) == normalise(gold) else 0
    F1(pred, gold) = 2·P·R / (P + R) over the normalised tokens' multiset overlap: P = overlap / |pred|,
                     R = overlap / |gold|; 0 when nothing overlaps (and so when either side is empty)

A question has one or more gold answers (people disagree on a span's edges); each score is the best over them, and a
set's EM and F1 are means × 100. The steps run in the script's order (punctuation goes before articles, so "the,"
loses both), and only ASCII punctuation (`string.punctuation`) is dropped: "–" and "’" stay, as they do there.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """The script's normalisation: lower-case, drop punctuation, drop articles, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def best_over_golds(metric, prediction: str, golds: list[str]) -> float:
    """The metric's best value over a question's gold answers (at least one)."""
    if not golds:
        raise ValueError("a question needs at least one gold answer")
    return max(metric(prediction, g) for g in golds)


def squad_scores(predictions: list[str], golds: list[list[str]]) -> dict:
    """{"exact_match", "f1"} (percent, 0–100) and "n" of a set: one prediction and its gold answers per question."""
    if len(predictions) != len(golds) or not golds:
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    em = sum(best_over_golds(exact_match, p, g) for p, g in zip(predictions, golds, strict=True))
    f1 = sum(best_over_golds(token_f1, p, g) for p, g in zip(predictions, golds, strict=True))
    return {"n": len(golds), "exact_match": 100 * em / len(golds), "f1": 100 * f1 / len(golds)}


def is_span(answer: str, passage: str) -> bool:
    """Whether the answer is a span of the passage at all, after SQuAD's normalisation: its tokens appear in the
    passage's tokens, contiguously and in order (an empty answer is not a span). A generative head can write words
    the passage does not hold; an extractive head cannot."""
    a, p = normalize_answer(answer).split(), normalize_answer(passage).split()
    return bool(a) and any(p[i : i + len(a)] == a for i in range(len(p) - len(a) + 1))


def span_share(predictions: list[str], passages: list[str]) -> float:
    """The share (0–1) of predictions that are spans of their passages (`is_span`)."""
    if len(predictions) != len(passages) or not passages:
        raise ValueError(f"{len(predictions)} predictions for {len(passages)} passages")
    return sum(is_span(a, p) for a, p in zip(predictions, passages, strict=True)) / len(passages)
