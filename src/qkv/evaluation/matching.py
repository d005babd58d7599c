"""Exact match: the share of outputs equal to one of their references, after a normalisation.

    exact_match(["A red  circle", "x"], [["a red circle"], ["y", "z"]])          # 0.5 (lower case, spaces collapsed)
    exact_match(["42 "], [["42"]], normalise=str.strip)                          # 1.0 (chat answers: case counts)

Every task that scores exact answers (chat replies, captions, and the answers and programs of the tasks that
come after them) calls this one function; what differs is only the normalisation, which it names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def collapse(text: str) -> str:
    """Lower case, runs of whitespace as one space, no space at either end."""
    return " ".join(text.lower().split())


def exact_match(hyps: Sequence[str], refs: Sequence[Sequence[str]],
                normalise: Callable[[str], str] = collapse) -> float:
    """Share (0..1) of `hyps` equal to one of their references (refs[i] holds hyps[i]'s) after `normalise`;
    0.0 for no hypotheses."""
    if not hyps:
        return 0.0
    hits = sum(normalise(h) in {normalise(r) for r in rs} for h, rs in zip(hyps, refs, strict=True))
    return hits / len(hyps)
