"""Choosing the next token from logits: greedy, temperature, top-k, top-p (nucleus). Pure functions.

    temperature T:  p = softmax(logits / T); T → 0 is greedy (argmax), T > 1 flattens.
    top-k:          keep the k most likely tokens.
    top-p:          keep the smallest set of tokens whose probabilities sum to ≥ p (Holtzman et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TokenSampling:
    """How a GPT (or chat) run picks its next tokens, and how many: the ``[sample]`` section of lm and chat
    runs, the defaults of `qkv generate` and `qkv chat`, the options of the playground. (Encoder–decoder
    decoding, greedy or beam, is `qkv.generation.seq2seq.SequenceDecoding`.)"""

    temperature: float = 0.8  # 0 = greedy
    top_k: int | None = None  # keep the k most likely tokens (None = all)
    top_p: float | None = None  # keep the smallest set with total probability ≥ top_p (None = all)
    max_new_tokens: int = 300  # the most tokens generated (a chat reply also ends at <|end|>)
    seed: int | None = 1337  # the sampling generator's seed; None: fresh randomness every time
    prompt: str = "\n"  # lm runs: what the sample printed after training (and `qkv generate`) continues
    system: str | None = None  # chat runs: a system message before every conversation

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k <= 0:
            raise ValueError(f"top_k must be positive, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")


def seeded_generator(device: torch.device | str, seed: int | None) -> torch.Generator:
    """The one random source of a generation: seeded with `seed` (the same seed, the same text), or from
    fresh OS entropy when `seed` is None."""
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    return generator


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set logits outside the top-k / top-p set to -inf. logits: (B, V)."""
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (B, V)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (B, V)
        drop_sorted = cum - sorted_logits.softmax(dim=-1) >= top_p  # mass before this token already ≥ p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocab order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sampling_probs(logits: Tensor, cfg: TokenSampling) -> Tensor:
    """The distribution the next token is drawn from: softmax(logits / T) over the top-k / top-p set, (B, V).
    Greedy (T = 0) puts all the mass on the argmax."""
    if cfg.temperature == 0.0:
        return torch.zeros_like(logits, dtype=torch.float32).scatter_(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
    return filter_logits(logits.float() / cfg.temperature, cfg.top_k, cfg.top_p).softmax(dim=-1)


def sample_next(logits: Tensor, cfg: TokenSampling, generator: torch.Generator | None = None) -> Tensor:
    """logits (B, V) of the last position -> next token ids (B,), drawn from `sampling_probs`."""
    if cfg.temperature == 0.0:
        return logits.argmax(dim=-1)
    return torch.multinomial(sampling_probs(logits, cfg), 1, generator=generator).squeeze(-1)  # (B,)
