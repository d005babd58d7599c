"""Decoding a language model token by token, with a KV cache, streaming as it goes.

The cache holds every layer's keys and values, so each new token costs one position of compute
instead of re-running the whole prefix (nanoGPT's generate re-runs it). When the context is full the
window slides: the cache is rebuilt from the most recent half-context of tokens and decoding goes on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from qkv.errors import QKVError
from qkv.generation.protocols import DecoderModel
from qkv.generation.sampling import TokenSampling, sample_next, sampling_probs, seeded_generator
from qkv.generation.streaming import TextStream


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


@dataclass
class Piece:
    """One drawn token and the text it completes: "" while a character is incomplete or a stop string may still
    begin; `id` None for the text held back until the end; `top` as in `Step`."""

    id: int | None
    text: str
    top: list[tuple[int, float, float]] = field(default_factory=list)


class TokenStream:
    """One generation, the one loop every caller streams through (`qkv generate`, `qkv chat`, the playground):
    iterate for `Piece`s; afterwards `reason` says why it ended — "length" (max_new_tokens, or the context for a
    chat reply), "end" (a stop id: not shown), "stop" (a stop string: not shown) — and `tokens` how many were
    drawn (a stop id counted). A caller may leave the loop early (the playground's Stop); nothing is flushed.

    A prompt longer than the context keeps its last `max_seq_len` tokens; `prompt_cut` says how many went."""

    def __init__(self, model: DecoderModel, tokenizer, prompt_ids: Sequence[int], max_new_tokens: int,
                 sampling: TokenSampling | None = None, *, generator: torch.Generator | None = None,
                 stop: Sequence[str] = (), stop_ids: Sequence[int] = (), top: int = 0, use_cache: bool = True):
        if len(prompt_ids) == 0:
            raise QKVError("the prompt is empty; give at least one character")
        self.model, self.tokenizer, self.prompt_ids = model, tokenizer, list(prompt_ids)
        self.max_new_tokens, self.sampling, self.generator = max_new_tokens, sampling, generator
        self.stop, self.stop_ids, self.top, self.use_cache = stop, tuple(stop_ids), top, use_cache
        self.prompt_cut = max(0, len(self.prompt_ids) - model.config.max_seq_len)
        self.reason, self.tokens = "length", 0
        self.stop_id: int | None = None  # the stop id that ended it (reason "end")

    def __iter__(self) -> Iterator[Piece]:
        text = TextStream(self.tokenizer, self.stop)
        for step in generate_steps(self.model, self.prompt_ids, self.max_new_tokens, self.sampling,
                                   generator=self.generator, stop_ids=self.stop_ids, use_cache=self.use_cache,
                                   vocab_size=self.tokenizer.vocab_size, top=self.top):
            self.tokens += 1
            if step.id in self.stop_ids:
                self.reason, self.stop_id = "end", step.id
                break
            yield Piece(step.id, text.push(step.id), step.top)
            if text.stopped:
                self.reason = "stop"
                return
        rest = text.finish()
        if rest:
            yield Piece(None, rest)

    def texts(self) -> Iterator[str]:
        """The text as it comes, empty pieces left out."""
        return (p.text for p in self if p.text)


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
    return TokenStream(model, tokenizer, tokenizer.encode(prompt), max_new_tokens, sampling, generator=generator,
                       stop=stop, stop_ids=stop_ids, use_cache=use_cache).texts()


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int, sampling=None, **kw) -> str:
    """The whole continuation as one string (see `stream_text`)."""
    return "".join(stream_text(model, tokenizer, prompt, max_new_tokens, sampling, **kw))
