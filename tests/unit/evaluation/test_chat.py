"""`answer_loss` (validation and `qkv eval`) equals a per-conversation loop over padded batches."""

import random

import pytest
import torch
import torch.nn.functional as F

from chat_fixtures import char_tok
from qkv.data.chat import ChatExamples
from qkv.data.chat_template import (
    chat_tokens,
    render,
    targets_from,
)
from qkv.evaluation.chat import answer_loss
from qkv.models.gpt import GPT, GPTConfig


def _random_conversations(tok, n: int, seed: int = 0) -> list[list[dict]]:
    """`n` conversations of random characters: one or two exchanges, some with a system message, all lengths."""
    rng = random.Random(seed)
    chars = "abcdefghijklmnopqrstuvwxyz ?0123456789"

    def say() -> str:
        return "".join(rng.choice(chars) for _ in range(rng.randint(1, 8))).strip() or "x"

    convs = []
    for _ in range(n):
        msgs = [{"role": "system", "content": say()}] if rng.random() < 0.3 else []
        for _ in range(rng.randint(1, 2)):
            msgs += [{"role": "user", "content": say()}, {"role": "assistant", "content": say()}]
        convs.append(msgs)
    return convs


@pytest.mark.parametrize("answer_only", [True, False])
def test_answer_loss_equals_a_per_conversation_loop(answer_only):
    """`answer_loss` (length-sorted, right-padded batches of up to 64: here two batches) equals the NLL summed
    over each conversation's targets computed alone, divided by the target count; the pad id changes nothing."""
    tok = char_tok()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, max_seq_len=64, d_model=32, n_layers=2, n_heads=2)).eval()
    pairs = [targets_from(*render(c, tok), answer_only) for c in _random_conversations(tok, 70)]
    ex = ChatExamples([x for x, _ in pairs], [y for _, y in pairs], [], 0)
    assert len({len(x) for x in ex.inputs}) > 10  # many lengths: every batch is padded
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in pairs:
            logits, _ = model(torch.tensor([x]))  # (1, T, V)
            total += F.cross_entropy(logits[0], torch.tensor(y), ignore_index=-100, reduction="sum").item()
            count += sum(t != -100 for t in y)
    loss, n = answer_loss(model, ex, pad_id=chat_tokens(tok).end)
    assert n == count and (n == sum(map(len, ex.targets))) == (not answer_only)
    # measured |difference| 2.1e-8 (answer-only) and 2.0e-7 (every token) on torch 2.13, Intel Xeon (AMX),
    # 1 thread: `pytest tests/unit/chat/test_template.py::test_answer_loss_equals_a_per_conversation_loop`
    assert loss == pytest.approx(total / count, abs=1e-6)
    # padding sits after the real tokens, behind the causal mask: same shapes, same sums, exactly the same loss
    assert answer_loss(model, ex, pad_id=0)[0] == loss
