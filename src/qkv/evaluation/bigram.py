"""The bigram baseline: what counting token pairs alone scores on a validation split.

An add-alpha smoothed bigram model, estimated on the training ids:

    p(b | a) = (c(a, b) + alpha) / (c(a) + alpha * V)       c(a, b): times b follows a in train, c(a) = Σ_b c(a, b)
    loss = −(1/N) Σ_i log p(val_{i+1} | val_i)             nats per token, over the N = len(val) − 1 val pairs

A GPT that does not beat it has learned no more than which token tends to follow which. The counts live in a
dense (V, V) float32 matrix, filled with ``np.add.at`` (256 MiB at V = 8,192, the largest vocabulary allowed).

Worked example: train = [0, 1, 0, 1], V = 2, alpha = 1. The pairs (0,1), (1,0), (0,1) give c(0,1) = 2, c(1,0) = 1,
c(0) = 2, c(1) = 1. Validation [0, 1, 1] has the pairs (0,1): p = (2 + 1) / (2 + 2) = 3/4 and (1,1):
p = (0 + 1) / (1 + 2) = 1/3, so the loss is (ln 4/3 + ln 3) / 2 = ln 2.

    >>> round(bigram_loss([0, 1, 0, 1], [0, 1, 1], vocab_size=2, alpha=1.0), 6)  # ln 2
    0.693147
"""

from __future__ import annotations

import numpy as np

from qkv.errors import QKVError

MAX_VOCAB = 8192  # the dense (V, V) count matrix: 256 MiB of float32 at this size


def _ids(ids, name: str, vocab_size: int) -> np.ndarray:
    a = np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(a) < 2:
        raise QKVError(f"bigram_loss: {name} needs at least 2 tokens (one pair), got {len(a)}")
    if a.min() < 0 or a.max() >= vocab_size:
        raise QKVError(f"bigram_loss: {name} ids must be in [0, {vocab_size}), got {a.min()}..{a.max()}")
    return a


def bigram_loss(train_ids, val_ids, vocab_size: int, alpha: float = 0.1) -> float:
    """Mean negative log-likelihood (nats per token) of `val_ids` under the add-`alpha` bigram model of
    `train_ids` (see the module docstring); QKVError on a vocabulary over 8,192, alpha <= 0 or ids out of range."""
    if not 0 < vocab_size <= MAX_VOCAB:
        raise QKVError(f"bigram_loss: vocab_size must be in 1..{MAX_VOCAB} (a dense V×V count matrix), "
                       f"got {vocab_size}")
    if not alpha > 0:
        raise QKVError(f"bigram_loss: alpha must be positive (add-alpha smoothing), got {alpha}")
    train, val = _ids(train_ids, "train", vocab_size), _ids(val_ids, "val", vocab_size)
    counts = np.zeros((vocab_size, vocab_size), dtype=np.float32)  # (V, V): counts[a, b] = c(a, b)
    np.add.at(counts, (train[:-1], train[1:]), 1.0)
    row_totals = counts.sum(axis=1, dtype=np.float64)  # (V,) c(a)
    prev, nxt = val[:-1], val[1:]  # (N,) each
    p = (counts[prev, nxt].astype(np.float64) + alpha) / (row_totals[prev] + alpha * vocab_size)  # (N,)
    return float(-np.log(p).mean())

