"""Completing prompts with either architecture (`qkv.generation.completion`): the log-probabilities REINFORCE
trains on are those of the tokens decoded (teacher-forced == decoded with the KV cache: a greedy token is the most
likely one at its position), a sample ends with EOS exactly when the model chose it, and a seeded draw repeats."""

import pytest
import torch

from qkv.data.translation import special_ids
from qkv.generation.completion import GPTCompleter, Seq2SeqCompleter
from qkv.models.gpt import GPT, GPTConfig
from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig
from qkv.tokenizers import train_bpe

PROMPTS = ['def solve(s):\n    """Reverse it."""\n', 'def solve(xs):\n    """Sort them."""\n']


@pytest.fixture(scope="module")
def tok():
    return train_bpe([p + "    s = s[::-1]\n    return s\n" for p in PROMPTS] * 10, vocab_size=300)


@pytest.fixture(params=["gpt", "seq2seq"])
def completer(request, tok):
    torch.manual_seed(0)
    pad, bos, eos = special_ids(tok)
    if request.param == "gpt":
        model = GPT(GPTConfig(vocab_size=tok.vocab_size, max_seq_len=64, d_model=32, n_layers=2, n_heads=2))
        return GPTCompleter(model.eval(), tok, eos)
    model = Seq2Seq(Seq2SeqConfig(vocab_size=tok.vocab_size, max_seq_len=64, d_model=32, n_encoder_layers=1,
                                  n_decoder_layers=2, n_heads=2, dropout=0.0, pad_id=pad))
    return Seq2SeqCompleter(model.eval(), tok, bos, eos)


def full_logprobs(completer, prompt: str, ids: list[int]) -> torch.Tensor:
    """log-softmax over the vocabulary at each completion position (T, V), by one plain forward pass."""
    with torch.no_grad():
        if isinstance(completer, GPTCompleter):
            p = completer.tok.encode(prompt)
            logits = completer.model(torch.tensor([p + ids]))[0][0, len(p) - 1 : len(p) - 1 + len(ids)]
        else:
            src = torch.tensor([completer.prompt_ids(prompt)])
            logits = completer.model(src, None, torch.tensor([[completer.bos] + ids[:-1]])).logits[0]
    out = logits.float().log_softmax(-1)[:, : completer.tok.vocab_size]
    if isinstance(completer, Seq2SeqCompleter):  # its decoder never writes <pad> or <bos>: not candidates
        out[:, [completer.model.config.pad_id, completer.bos]] = float("-inf")
    return out


def test_greedy_tokens_are_the_most_likely_under_teacher_forcing(completer):
    samples = completer.greedy(PROMPTS, max_new_tokens=12)
    logp, mask = completer.token_logprobs(PROMPTS, samples)
    assert logp.shape == mask.shape == (2, max(len(s.ids) for s in samples))
    for i, s in enumerate(samples):
        assert int(mask[i].sum()) == len(s.ids) > 0
        full = full_logprobs(completer, PROMPTS[i], s.ids)  # (T, V)
        assert full.argmax(-1).tolist() == s.ids  # the cached decoder chose what teacher forcing ranks first
        torch.testing.assert_close(logp[i, : len(s.ids)], full.max(-1).values, atol=1e-5, rtol=1e-5)


def test_a_seeded_draw_repeats_and_eos_ends_only_chosen_samples(completer):
    a = completer.sample(PROMPTS, n=4, temperature=1.0, max_new_tokens=6, generator=torch.Generator().manual_seed(1))
    b = completer.sample(PROMPTS, n=4, temperature=1.0, max_new_tokens=6, generator=torch.Generator().manual_seed(1))
    assert [[s.ids for s in g] for g in a] == [[s.ids for s in g] for g in b]
    assert len(a) == 2 and all(len(g) == 4 for g in a)
    for g in a:
        for s in g:
            assert len(s.ids) <= 6 + 1
            assert (s.ids[-1] == completer.eos) == (len(s.ids) < 6 or s.ids[-1] == completer.eos)
            assert completer.eos not in s.ids[:-1]


def test_logprobs_carry_gradient_and_no_dropout(completer):
    samples = completer.greedy(PROMPTS, max_new_tokens=5)
    completer.model.train()
    logp, mask = completer.token_logprobs(PROMPTS, samples)
    logp2, _ = completer.token_logprobs(PROMPTS, samples)
    assert torch.equal(logp, logp2) and completer.model.training  # dropout off inside, mode restored
    (logp * mask).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in completer.model.parameters())
