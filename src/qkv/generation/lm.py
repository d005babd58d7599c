"""Decoding a language model token by token, with a KV cache, streaming as it goes.

The cache holds every layer's keys and values, so each new token costs one position of compute
instead of re-running the whole prefix (nanoGPT's generate re-runs it). When the context is full the
window slides: the cache is rebuilt from the most recent half-context of tokens and decoding goes on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from qkv.generation.protocols import DecoderModel
from qkv.generation.sampling import TokenSampling, sample_next, sampling_probs, seeded_generator
from qkv.generation.streaming import stream_pieces


@dataclass
class Step:
    """One generated token, and (when asked for) what the model thought at that step."""

    id: int
    # the `top` most likely next tokens under the model (temperature 1, before filtering), most likely first:
    # (id, model probability, probability under the sampling settings — what the draw actually used)
    top: list[tuple[int, float, float]] = field(default_factory=list)


@torch.inference_mode()
def generate_steps(
    model: DecoderModel,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    sampling: TokenSampling | None = None,
    *,
    generator: torch.Generator | None = None,
    stop_ids: Sequence[int] = (),
    use_cache: bool = True,
    vocab_size: int | None = None,
    top: int = 0,
) -> Iterator[Step]:
    """Yield up to `max_new_tokens` new tokens after `prompt_ids` (batch 1) as `Step`s, stopping after a stop id.

    A prompt longer than the context keeps only its last `max_seq_len` tokens. `vocab_size`: the ids the
    tokenizer can decode; a model with more embedding rows (GPT-2's vocabulary padded to 50,304, a
    converted checkpoint) never produces the others — their logits are set to −inf before sampling.
    `top` > 0 adds the `top` most likely next tokens of every step (the playground's hover); the tokens
    drawn are the same either way.
    """
    sampling = sampling or TokenSampling()
    if len(prompt_ids) == 0:
        raise ValueError("the prompt must hold at least one token")
    ctx = model.config.max_seq_len
    device = next(model.parameters()).device
    seq = list(prompt_ids)

    def run(ids, cache):
        x = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
        logits = model(x, cache=cache, last_only=True)[0][:, -1]  # (1, V)
        if vocab_size is not None and vocab_size < logits.size(-1):
            logits[:, vocab_size:] = float("-inf")  # rows the tokenizer has no token for
        return logits

    cache = model.new_cache(1, ctx) if use_cache else None
    logits = run(seq[-ctx:], cache)
    for _ in range(max_new_tokens):
        if top:  # one sampling distribution for the draw and the report (the draw is sample_next's)
            q = sampling_probs(logits, sampling)  # (1, V)
            greedy = sampling.temperature == 0.0
            token = int(logits.argmax(dim=-1)[0] if greedy else torch.multinomial(q, 1, generator=generator)[0, 0])
            step = Step(token, _top(logits, q[0], top, vocab_size))
        else:
            token = int(sample_next(logits, sampling, generator)[0])
            step = Step(token)
        seq.append(token)
        yield step
        if token in stop_ids:
            return
        if not use_cache:
            logits = run(seq[-ctx:], None)
        elif cache.length < ctx:
            logits = run([token], cache)
        else:  # context full: slide the window, rebuild the cache from the last half-context
            cache = model.new_cache(1, ctx)
            logits = run(seq[-(ctx // 2) :], cache)


def _top(logits: torch.Tensor, q: torch.Tensor, k: int, vocab_size: int | None) -> list[tuple]:
    """The k most likely ids under the model (softmax of `logits`, (1, V), over the decodable ids), each with
    its model probability and its probability `q` (V,) under the sampling settings."""
    p = logits[0].float().softmax(dim=-1)[:vocab_size]  # (V,)
    values, ids = p.topk(min(k, p.numel()))
    return list(zip(ids.tolist(), values.tolist(), q[ids].tolist(), strict=True))


def generate_ids(model: DecoderModel, prompt_ids: Sequence[int], max_new_tokens: int,
                 sampling: TokenSampling | None = None, **kwargs) -> Iterator[int]:
    """The ids of `generate_steps` (same arguments, without `top`)."""
    for step in generate_steps(model, prompt_ids, max_new_tokens, sampling, **kwargs):
        yield step.id


def stream_text(
    model: DecoderModel,
    tokenizer,
    prompt: str,
    max_new_tokens: int,
    sampling: TokenSampling | None = None,
    *,
    seed: int | None = None,
    stop: Sequence[str] = (),
    stop_ids: Sequence[int] = (),
    use_cache: bool = True,
) -> Iterator[str]:
    """Yield the continuation of `prompt` as text pieces, as soon as they decode to whole characters
    (`qkv.generation.streaming`). Stops at any string in `stop` (not included in the output) or at a token
    in `stop_ids`; never produces an id the tokenizer cannot decode."""
    generator = seeded_generator(next(model.parameters()).device, seed)
    ids = generate_ids(model, tokenizer.encode(prompt), max_new_tokens, sampling, generator=generator,
                       stop_ids=stop_ids, use_cache=use_cache, vocab_size=tokenizer.vocab_size)
    yield from stream_pieces((t for t in ids if t not in stop_ids), tokenizer, stop)


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int, sampling=None, **kw) -> str:
    """The whole continuation as one string (see `stream_text`)."""
    return "".join(stream_text(model, tokenizer, prompt, max_new_tokens, sampling, **kw))
