"""Extractive answers: the best span of a passage under a start and an end score (BiDAF, Seo et al. 2017; BERT,
Devlin et al. 2019, §4.2).

A span head gives every position i of the encoder's input a start logit s_i and an end logit e_j. The answer is

    (i*, j*) = argmax  s_i + e_j   over  i <= j <= i + L - 1,  both in the passage

(L: the longest answer in tokens). The scores are log-probabilities up to a constant per row, so the sum is the
span's log-probability when start and end are chosen independently. Computed for all pairs at once: an (S, S)
table of s_i + e_j, the pairs outside the band set to -inf, one argmax.

Shape legend: B rows, S positions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def best_spans(start_logits: Tensor, end_logits: Tensor, allowed: Tensor,
               max_len: int) -> tuple[Tensor, Tensor, Tensor]:
    """start_logits, end_logits (B, S); allowed (B, S) bool, True where a span may start or end (the passage, not
    the question or padding); max_len the most positions a span covers -> (start (B,), end (B,) inclusive, score
    (B,)). A row with no allowed position gets -inf as its score."""
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    S = start_logits.size(1)
    pairs = start_logits[:, :, None].float() + end_logits[:, None, :].float()  # (B, S, S): s_i + e_j
    i = torch.arange(S, device=start_logits.device)
    band = (i[None, :] >= i[:, None]) & (i[None, :] < i[:, None] + max_len)  # (S, S): i <= j < i + L
    ok = band[None] & allowed[:, :, None] & allowed[:, None, :]  # (B, S, S)
    pairs = pairs.masked_fill(~ok, float("-inf"))
    score, flat = pairs.flatten(1).max(dim=1)  # (B,)
    return flat // S, flat % S, score
