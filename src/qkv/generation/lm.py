"""Decoding a language model token by token, with a KV cache, streaming as it goes.

The cache holds every layer's keys and values, so each new token costs one position of compute
instead of re-running the whole prefix (nanoGPT's generate re-runs it). When the context is full the
window slides: the cache is rebuilt from the most recent half-context of tokens and decoding goes on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from qkv.generation.sampling import SamplingConfig, sample_next


@torch.inference_mode()
def generate_ids(
    model: nn.Module,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    sampling: SamplingConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    stop_ids: Sequence[int] = (),
    use_cache: bool = True,
) -> Iterator[int]:
    """Yield up to `max_new_tokens` new token ids after `prompt_ids` (batch 1), stopping after a stop id.

    A prompt longer than the context keeps only its last `max_seq_len` tokens.
    """
    sampling = sampling or SamplingConfig()
    if len(prompt_ids) == 0:
        raise ValueError("the prompt must hold at least one token")
    ctx = model.config.max_seq_len
    device = next(model.parameters()).device
    seq = list(prompt_ids)

    def run(ids, cache):
        x = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
        return model(x, cache=cache, last_only=True)[0][:, -1]  # (1, V)

    cache = model.new_cache(1, ctx) if use_cache else None
    logits = run(seq[-ctx:], cache)
    for _ in range(max_new_tokens):
        token = int(sample_next(logits, sampling, generator)[0])
        seq.append(token)
        yield token
        if token in stop_ids:
            return
        if not use_cache:
            logits = run(seq[-ctx:], None)
        elif cache.length < ctx:
            logits = run([token], cache)
        else:  # context full: slide the window, rebuild the cache from the last half-context
            cache = model.new_cache(1, ctx)
            logits = run(seq[-(ctx // 2) :], cache)


def stream_text(
    model: nn.Module,
    tokenizer,
    prompt: str,
    max_new_tokens: int,
    sampling: SamplingConfig | None = None,
    *,
    seed: int | None = None,
    stop: Sequence[str] = (),
    stop_ids: Sequence[int] = (),
    use_cache: bool = True,
) -> Iterator[str]:
    """Yield the continuation of `prompt` as text pieces, as soon as they decode to whole characters.

    Stops at any string in `stop` (not included in the output) or at a token in `stop_ids`.
    """
    generator = torch.Generator(device=next(model.parameters()).device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    ids: list[int] = []
    emitted = ""
    hold = max((len(s) for s in stop), default=1) - 1  # characters kept back while a stop string may be forming
    for token in generate_ids(model, tokenizer.encode(prompt), max_new_tokens, sampling, generator=generator,
                              stop_ids=stop_ids, use_cache=use_cache):
        if token in stop_ids:
            break
        ids.append(token)
        text = tokenizer.decode(ids)
        if text.endswith("\ufffd"):
            continue  # a multi-byte character split across tokens: wait for the rest
        cut = min((i for i in (text.find(s, max(0, len(emitted) - len(s))) for s in stop) if i >= 0), default=-1)
        if cut >= 0:
            if cut > len(emitted):
                yield text[len(emitted):cut]
            return
        ready = len(text) - hold if stop else len(text)
        if ready > len(emitted):
            yield text[len(emitted):ready]
            emitted = text[:ready]
    text = tokenizer.decode(ids)
    if len(text) > len(emitted):
        yield text[len(emitted):]


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int, sampling=None, **kw) -> str:
    """The whole continuation as one string (see `stream_text`)."""
    return "".join(stream_text(model, tokenizer, prompt, max_new_tokens, sampling, **kw))
