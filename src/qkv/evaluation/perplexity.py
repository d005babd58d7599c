"""Cross-entropy and perplexity: how surprised a model is by text it did not train on.

    loss = −(1/N) Σ log p(token_i | tokens before it)       nats per token, over N predicted tokens
    perplexity = exp(loss)                                   the effective number of equally likely choices
    bits/char = loss / ln 2 / (characters per token)         comparable across tokenizers
    bits/byte = loss / ln 2 / (UTF-8 bytes per token)         comparable across tokenizers and scripts

`full_pass_loss` is the headline: non-overlapping windows covering a split exactly once (deterministic).
`sampled_loss` is nanoGPT's estimate (the mean of a few random batches), logged beside it for comparison.
Every task's perplexity is this module's `perplexity`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def perplexity(loss: float) -> float:
    """exp(loss), capped to stay finite for a diverged model."""
    return math.exp(min(loss, 50.0))


def bits_per_char(loss: float, chars_per_token: float) -> float:
    """Nats per token -> bits per character."""
    return loss / math.log(2) / chars_per_token


def bits_per_byte(loss: float, bytes_per_token: float) -> float:
    """Nats per token -> bits per UTF-8 byte of the text: a tokenizer-free measure (nanochat's val bpb).

    A loss of 2.0 nats per token at 4.0 bytes per token is 2.0 / ln 2 = 2.885 bits per token, 0.721 bits per byte;
    a uniform guess over 256 byte values would be 8 bits per byte.

    >>> round(bits_per_byte(2.0, 4.0), 3)
    0.721
    """
    if bytes_per_token <= 0:
        raise ValueError(f"bytes_per_token must be positive, got {bytes_per_token}")
    return loss / math.log(2) / bytes_per_token


@torch.no_grad()
def full_pass_loss(model, tokens: np.ndarray, block_size: int, max_tokens: int | None = None) -> float:
    """Mean next-token loss over non-overlapping windows covering the split once (deterministic)."""
    from qkv.data.text import full_pass_windows

    device = next(model.parameters()).device
    # ~4k tokens per forward (fastest on CPU), fewer if the logits would pass 128M floats
    batch = max(1, min(4096 // block_size, (1 << 27) // (block_size * model.config.vocab_size)))
    total, count = 0.0, 0
    for b in full_pass_windows(tokens, block_size, batch, max_tokens):
        logits, _ = model(b["idx"].to(device))
        y = b["targets"].to(device)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-100, reduction="sum").item()
        count += int((y != -100).sum())
    return total / max(1, count)


@torch.no_grad()
def sampled_loss(model, tokens: np.ndarray, block_size: int, batch_size: int, iters: int, seed: int) -> float:
    """nanoGPT's estimate_loss: the mean loss of `iters` random batches (noisy; for comparison)."""
    from qkv.data.text import RandomWindows

    device = next(model.parameters()).device
    windows = RandomWindows(tokens, block_size, batch_size, seed)
    losses = []
    for _ in range(iters):
        b = windows.next_batch()
        losses.append(model(b["idx"].to(device), b["targets"].to(device))[1].item())
    return float(np.mean(losses))
