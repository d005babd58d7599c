"""A judgement: what a rater submits for one task, and the rules it must follow before the store keeps it.

    {"candidates": {"<candidate id>": {"accuracy": 0-100, "fluency": 0-100,
                                       "spans": [{"start": int, "end": int, "severity": "minor" | "major"}]}},
     "preference": "A" | "B" | "tie" | null}

- **Scores** are Direct Assessment's continuous 0–100 scale (Graham et al. 2013), asked twice: accuracy (is
  the meaning right) and fluency (does it read well). Numbers only, finite, inside the scale.
- **Error spans** are Error Span Annotation's (Kocmi et al. 2024): the rater marks the wrong stretch of the
  candidate and says whether the error is minor or major; ``start`` and ``end`` are offsets in Unicode code
  points of the candidate's text (what a browser's JavaScript must convert its UTF-16 offsets to), a
  non-empty range inside it; at most `MAX_SPANS` per candidate.
- **Preference** (two candidates only, required): the slot the rater prefers as displayed, or "tie". The
  store resolves the slot to the system it showed there.

Every candidate of the task must be scored, and nothing else: a missing or foreign candidate, an unknown key,
a score out of range, a bad span or preference is an `InvalidJudgement` whose one-line message names it.
"""

from __future__ import annotations

import math

from qkv.errors import QKVError

SEVERITIES = ("minor", "major")
PREFERENCES = ("A", "B", "tie")
SLOTS = ("A", "B")  # the display positions of a two-candidate task
MAX_SPANS = 20  # error spans per candidate (MQM allows at most 5 errors per segment; ESA raters mark more)


class InvalidJudgement(QKVError):
    """A submitted judgement breaks the rules of the form (the server's 422); the message says which."""


def _score(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidJudgement(f"{where} must be a number from 0 to 100, got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= 100:
        raise InvalidJudgement(f"{where} must be from 0 to 100, got {value!r}")
    return float(value)


def _spans(spans, text: str, where: str) -> list[dict]:
    if not isinstance(spans, list):
        raise InvalidJudgement(f"{where}: spans must be a list, got {type(spans).__name__}")
    if len(spans) > MAX_SPANS:
        raise InvalidJudgement(f"{where}: {len(spans)} error spans; at most {MAX_SPANS} per candidate")
    out = []
    for k, span in enumerate(spans):
        at = f"{where} span {k}"
        if not isinstance(span, dict) or set(span) != {"start", "end", "severity"}:
            keys = sorted(span) if isinstance(span, dict) else type(span).__name__
            raise InvalidJudgement(f"{at}: expected keys start, end, severity; got {keys}")
        start, end, severity = span["start"], span["end"], span["severity"]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (start, end)):
            raise InvalidJudgement(f"{at}: start and end must be integers, got {start!r} and {end!r}")
        if not 0 <= start < end <= len(text):
            raise InvalidJudgement(f"{at}: [{start}, {end}) is not a non-empty range inside the candidate's "
                                   f"{len(text)} characters")
        if severity not in SEVERITIES:
            raise InvalidJudgement(f"{at}: severity must be minor or major, got {severity!r}")
        out.append({"start": start, "end": end, "severity": severity})
    return out


def validate_judgement(payload, candidates: list[tuple[int, str]]) -> dict:
    """The payload checked against the task's candidates [(id, text)] in display order, normalised (scores as
    floats, spans as given, preference None for one candidate); InvalidJudgement naming the first problem."""
    if not isinstance(payload, dict):
        raise InvalidJudgement(f"a judgement must be a JSON object, got {type(payload).__name__}")
    unknown = sorted(set(payload) - {"candidates", "preference"})
    if unknown:
        raise InvalidJudgement(f"unknown key(s) {', '.join(map(repr, unknown))}; expected candidates, preference")
    scores = payload.get("candidates")
    if not isinstance(scores, dict):
        raise InvalidJudgement("'candidates' must be an object of candidate id -> scores")
    scores = {str(k): v for k, v in scores.items()}  # JSON keys are strings; a Python caller may pass ints
    wanted = {str(k): text for k, text in candidates}
    extra = sorted(set(scores) - set(wanted))
    if extra:
        raise InvalidJudgement(f"candidate {extra[0]} is not in this task (its candidates: {', '.join(wanted)})")
    missing = [k for k in wanted if k not in scores]
    if missing:
        raise InvalidJudgement(f"candidate {missing[0]} is missing its scores")
    clean: dict = {"candidates": {}, "preference": None}
    for key, text in wanted.items():
        where = f"candidate {key}"
        s = scores[key]
        if not isinstance(s, dict):
            raise InvalidJudgement(f"{where}: expected an object with accuracy, fluency, spans")
        bad_keys = sorted(set(s) - {"accuracy", "fluency", "spans"})
        if bad_keys:
            raise InvalidJudgement(f"{where}: unknown key(s) {', '.join(map(repr, bad_keys))}; "
                                   "expected accuracy, fluency, spans")
        for criterion in ("accuracy", "fluency"):
            if criterion not in s:
                raise InvalidJudgement(f"{where}: {criterion} is missing")
        clean["candidates"][key] = {"accuracy": _score(s["accuracy"], f"{where} accuracy"),
                                    "fluency": _score(s["fluency"], f"{where} fluency"),
                                    "spans": _spans(s.get("spans", []), text, where)}
    preference = payload.get("preference")
    if len(candidates) == 2:
        if preference not in PREFERENCES:
            raise InvalidJudgement(f"preference must be one of A, B, tie for two candidates, got {preference!r}")
        clean["preference"] = preference
    elif preference is not None:
        raise InvalidJudgement(f"a task with one candidate takes no preference, got {preference!r}")
    return clean
