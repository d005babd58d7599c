"""A chat model's scores: the answer-only loss, and exact-match accuracy of greedy replies, turn by turn.

`answer_loss` is the mean NLL per assistant token (the tokens the model is trained to produce) over every
conversation once, padded batches and all.

Every assistant turn of a conversation is scored from the *reference* history before it (teacher forcing
across turns), so a follow-up is judged on its own and not on an earlier mistake. The first assistant
turn of a conversation counts as **single-turn**; every later one as **follow-up**. A reply matches when it
equals the reference after stripping surrounding whitespace (`qkv.evaluation.matching.exact_match` with
``normalise=str.strip``: case counts). Decoding stops after the reference's token
count + 1: a longer reply cannot match anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from qkv.evaluation.matching import exact_match
from qkv.generation.chat import greedy_reply
from qkv.generation.inference import for_decoding


@torch.no_grad()
def answer_loss(model: nn.Module, ex, pad_id: int) -> tuple[float, int]:
    """(mean NLL per answer token, answer tokens) over every example of `ex` once: its ``inputs`` and ``targets``,
    -100 off the answers (`qkv.data.chat.ChatExamples`, or a code run's `BodyExamples`)."""
    from qkv.data.chat import eval_chat_batches

    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in eval_chat_batches(ex.inputs, ex.targets, pad_id):
        logits, _ = model(batch["idx"].to(device))  # (B, L, V)
        y = batch["targets"].to(device)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-100,
                                 reduction="sum").item()
        count += int((y != -100).sum())
    return total / max(1, count), count


@torch.no_grad()
def reply_accuracy(model: nn.Module, tok, conversations: Sequence, *, keep_errors: int = 5) -> dict:
    """{"single": accuracy, "followup": accuracy, "n_single", "n_followup", "errors": [...]} (accuracy None
    when there is no turn of that kind). `conversations` hold ``.messages`` (see `qkv.data.chat`)."""
    fast = for_decoding(model)  # an eval copy with decode-friendly weights; `model` is untouched
    hits = {"single": 0, "followup": 0}
    count = {"single": 0, "followup": 0}
    errors = []
    for conv in conversations:
        msgs = conv.messages
        first = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        for k in range(first, len(msgs), 2):
            ref = msgs[k]["content"].strip()
            kind = "single" if k == first else "followup"
            got = greedy_reply(fast, tok, msgs[:k], len(tok.encode(ref)) + 1).strip()
            count[kind] += 1
            if exact_match([got], [[ref]], normalise=str.strip):
                hits[kind] += 1
            elif len(errors) < keep_errors:
                errors.append({"question": msgs[k - 1]["content"], "reference": ref, "reply": got, "turn": kind})
    return {kind: (hits[kind] / count[kind] if count[kind] else None) for kind in hits} | {
        "n_single": count["single"], "n_followup": count["followup"], "errors": errors}
