"""Decoding: sampling rules (greedy, top-k, top-p, seeds), token-by-token generation with and without
the KV cache (sliding past the context), streaming whole characters from byte-level BPE, and int8."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qkv.generation.lm import generate_ids, generate_text, stream_text
from qkv.generation.quantize import quantize_int8
from qkv.generation.sampling import SamplingConfig, filter_logits, sample_next
from qkv.models import GPT, GPTConfig
from qkv.tokenizers import train_bpe

V = 32


def lively_gpt(max_seq_len: int = 8, vocab_size: int = V) -> GPT:
    """A random tiny GPT with weights large enough that its greedy choice depends on the context."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, max_seq_len=max_seq_len, d_model=32, n_layers=2, n_heads=4))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model.eval()


def naive_greedy(model: GPT, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding the slow way: a full forward over the last max_seq_len tokens for every new token."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([seq[-model.config.max_seq_len :]]))  # (1, T, V)
            seq.append(int(logits[0, -1].argmax()))
    return seq[len(prompt) :]


# ---------------------------------------------------------------------------------------------------------
# sampling rules


def test_greedy_is_argmax():
    logits = torch.randn(6, 50)
    assert torch.equal(sample_next(logits, SamplingConfig(temperature=0.0)), logits.argmax(dim=-1))


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.randn(4, 50)
    kept = filter_logits(logits, top_k=5)
    assert (torch.isfinite(kept).sum(dim=-1) == 5).all()
    top = logits.topk(5, dim=-1).indices
    assert torch.isfinite(kept.gather(-1, top)).all()
    assert torch.equal(kept.gather(-1, top), logits.gather(-1, top))  # kept logits unchanged
    assert torch.equal(filter_logits(logits, top_k=50), logits) and torch.equal(filter_logits(logits, top_k=99), logits)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, SamplingConfig(1.0, top_k=2), g) for _ in range(300)])  # (300, 4)
    allowed = logits.topk(2, dim=-1).indices  # (4, 2)
    assert all(set(draws[:, r].tolist()) <= set(allowed[r].tolist()) for r in range(4))


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [
        # probabilities by id: 0: 0.10, 1: 0.50, 2: 0.04, 3: 0.30, 4: 0.06
        # sorted 0.5, 0.3, 0.1, 0.06, 0.04 -> running totals 0.5, 0.8, 0.9, 0.96, 1.0
        (0.4, {1}),  # 0.5 alone reaches 0.4
        (0.7, {1, 3}),  # 0.5 < 0.7 ≤ 0.8
        (0.85, {1, 3, 0}),  # 0.8 < 0.85 ≤ 0.9
        (0.93, {1, 3, 0, 4}),  # 0.9 < 0.93 ≤ 0.96
        (1.0, {0, 1, 2, 3, 4}),
    ],
)
def test_top_p_keeps_the_smallest_nucleus(top_p, kept):
    probs = torch.tensor([[0.10, 0.50, 0.04, 0.30, 0.06]])
    out = filter_logits(probs.log(), top_p=top_p)
    got = set(torch.isfinite(out[0]).nonzero().flatten().tolist())
    assert got == kept
    renormed = out.softmax(-1)[0]
    assert renormed[sorted(got)].sum().item() == pytest.approx(1.0)
    assert torch.allclose(renormed[sorted(got)], probs[0, sorted(got)] / probs[0, sorted(got)].sum())


def test_top_p_works_per_row_and_with_top_k():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    out = filter_logits(logits, top_k=3, top_p=0.5)
    assert torch.isfinite(out).tolist() == [[True, False, False, False], [False, False, False, True]]


def test_seeded_sampling_is_reproducible():
    logits = torch.randn(3, 40)
    cfg = SamplingConfig(temperature=1.5, top_k=20, top_p=0.95)
    draw = lambda seed: torch.stack(  # noqa: E731
        [sample_next(logits, cfg, g) for g in [torch.Generator().manual_seed(seed)] for _ in range(50)])
    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_seeded_generation_is_reproducible():
    model, tok = lively_gpt(max_seq_len=16), SimpleNamespace(encode=lambda s: [1, 2, 3], decode=_ids_as_text)
    cfg = SamplingConfig(temperature=1.0)
    a = generate_text(model, tok, "p", 20, cfg, seed=5)
    assert a == generate_text(model, tok, "p", 20, cfg, seed=5)
    assert a != generate_text(model, tok, "p", 20, cfg, seed=6)


def _ids_as_text(ids) -> str:
    return "".join(chr(ord("A") + i) for i in ids)


@pytest.mark.parametrize("kw", [{"temperature": -0.1}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}])
def test_sampling_config_validation(kw):
    with pytest.raises(ValueError):
        SamplingConfig(**kw)


# ---------------------------------------------------------------------------------------------------------
# token-by-token generation


def test_cached_and_uncached_greedy_agree_within_the_context():
    model, prompt = lively_gpt(max_seq_len=8), [1, 2, 3]
    greedy = SamplingConfig(temperature=0.0)
    expected = naive_greedy(model, prompt, 5)  # 3 + 5 = 8 tokens: exactly the context
    assert len(set(expected)) > 1, "a constant continuation would make the comparison vacuous"
    assert list(generate_ids(model, prompt, 5, greedy, use_cache=True)) == expected
    assert list(generate_ids(model, prompt, 5, greedy, use_cache=False)) == expected


def test_generation_slides_past_the_context():
    model, prompt = lively_gpt(max_seq_len=8), [1, 2, 3]
    greedy = SamplingConfig(temperature=0.0)
    cached = list(generate_ids(model, prompt, 30, greedy, use_cache=True))
    uncached = list(generate_ids(model, prompt, 30, greedy, use_cache=False))
    assert len(cached) == len(uncached) == 30
    assert all(0 <= t < V for t in cached)
    assert uncached == naive_greedy(model, prompt, 30)  # no cache: always the last 8 tokens
    assert cached[:5] == uncached[:5]  # they may part ways once the window slides (cache keeps half)
    long_prompt = list(range(20))  # longer than the context: only its last 8 tokens are read
    expected = naive_greedy(model, long_prompt[-8:], 3)
    assert list(generate_ids(model, long_prompt, 3, greedy, use_cache=False)) == expected
    assert list(generate_ids(model, long_prompt, 1, greedy, use_cache=True)) == expected[:1]


def test_generation_stops_after_a_stop_id():
    model, prompt = lively_gpt(max_seq_len=8), [1, 2, 3]
    free = naive_greedy(model, prompt, 6)
    stop = free[3]
    got = list(generate_ids(model, prompt, 6, SamplingConfig(temperature=0.0), stop_ids=[stop]))
    assert got == free[: free.index(stop) + 1]


def test_empty_prompt_is_an_error():
    with pytest.raises(ValueError, match="at least one token"):
        list(generate_ids(lively_gpt(), [], 3))


# ---------------------------------------------------------------------------------------------------------
# streaming text


class Scripted(nn.Module):
    """A stand-in language model: greedy decoding (without cache) emits `script`, one id per forward."""

    def __init__(self, script: list[int], vocab_size: int):
        super().__init__()
        self.config = SimpleNamespace(max_seq_len=64)
        self.anchor = nn.Parameter(torch.zeros(1))  # decoding asks the parameters for the device
        self.script, self.vocab_size, self.calls = script, vocab_size, 0

    def forward(self, idx, cache=None, last_only=False):
        logits = torch.full((idx.size(0), 1, self.vocab_size), -1e9)  # (B, 1, V)
        logits[..., self.script[min(self.calls, len(self.script) - 1)]] = 0.0
        self.calls += 1
        return logits, None


@pytest.fixture(scope="module")
def ascii_bpe():
    # trained on ASCII only: every non-ASCII character becomes 2-4 byte tokens
    return train_bpe("the quick brown fox jumps over the lazy dog. " * 40, vocab_size=300)


def test_stream_text_yields_whole_characters_across_byte_tokens(ascii_bpe):
    text = "aé€b🙂!"
    ids = ascii_bpe.encode(text)
    assert len(ids) == 1 + 2 + 3 + 1 + 4 + 1  # one token per byte
    assert "\ufffd" in ascii_bpe.decode(ids[:2])  # the first byte of é alone is not a character
    model = Scripted(ids, ascii_bpe.vocab_size)
    pieces = list(stream_text(model, ascii_bpe, "x", len(ids), SamplingConfig(temperature=0.0), use_cache=False))
    assert pieces == list(text)  # each piece is one whole character, never half of one


def test_stream_text_stop_string_after_multibyte_characters(ascii_bpe):
    text = "é€ END €"
    ids = ascii_bpe.encode(text)
    model = Scripted(ids, ascii_bpe.vocab_size)
    out = generate_text(model, ascii_bpe, "x", len(ids), SamplingConfig(temperature=0.0), stop=[" END"],
                        use_cache=False)
    assert out == "é€"


def test_stream_text_matches_generate_ids():
    model = lively_gpt(max_seq_len=16)
    tok = SimpleNamespace(encode=lambda s: [ord(c) - ord("A") for c in s], decode=_ids_as_text)
    greedy = SamplingConfig(temperature=0.0)
    ids = list(generate_ids(model, tok.encode("ABC"), 20, greedy))
    assert generate_text(model, tok, "ABC", 20, greedy) == _ids_as_text(ids)


# ---------------------------------------------------------------------------------------------------------
# int8


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_int8_logits_close_to_fp32():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, max_seq_len=16, d_model=64, n_layers=2, n_heads=4)).eval()
    q = quantize_int8(model)
    x = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        ref, ours = model(x)[0], q(x)[0]  # (2, 16, V)
    cos = F.cosine_similarity(ref.flatten(), ours.flatten(), dim=0).item()
    assert cos > 0.99, f"cosine similarity of int8 and fp32 logits: {cos:.4f}"
    assert not torch.equal(ref, ours)  # it really is quantized
    assert isinstance(model.lm_head, nn.Linear) and model.lm_head.weight is model.tok_emb.weight  # original intact
    assert type(q.lm_head) is not nn.Linear
    ids = list(generate_ids(q, [1, 2, 3], 20, SamplingConfig(temperature=0.0)))  # decodes, cache and sliding
    assert len(ids) == 20 and all(0 <= i < 64 for i in ids)
