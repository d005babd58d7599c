"""Greedy CTC decoding: the best symbol of every encoder state, repeats merged, blanks dropped.

    states   ─  _  s  s  _  e  e  _  v  _  e  e  n  _     (the argmax of each state; _ is the blank)
    merged   ─  _  s     _  e     _  v  _  e     n  _
    text     ─     s        e        v     e     n          "seven"

A blank between two equal symbols keeps both ("l _ l" is "ll"); without it they merge into one. Greedy decoding
takes the single best path, not the best text (which sums over its paths): for a model trained to be sure, the
two agree almost always, and the issue asks for greedy.
"""

from __future__ import annotations

import torch


def ctc_collapse(path: list[int], blank: int) -> list[int]:
    """One path of symbols (one per state) -> the text's ids: repeats merged, then blanks removed."""
    out, prev = [], None
    for s in path:
        if s != prev and s != blank:
            out.append(s)
        prev = s
    return out


def ctc_greedy(logits: torch.Tensor, lengths: torch.Tensor, blank: int) -> list[list[int]]:
    """Per-state logits (B, S, V) and real states per row (B,) -> the ids of each row's text."""
    best = logits.argmax(-1)  # (B, S)
    return [ctc_collapse(best[b, : int(lengths[b])].tolist(), blank) for b in range(best.size(0))]
