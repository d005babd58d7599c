"""What a model must offer the decoders, written down (`qkv.generation.lm`, `qkv.generation.seq2seq`).

GPT, its decode-layout copy and its int8 copy satisfy `DecoderModel`; `Seq2Seq` satisfies
`EncoderDecoderModel`. Tests and stand-ins (a scripted model) need only these members.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor


class _HasContext(Protocol):
    max_seq_len: int  # the most positions the model reads at once


@runtime_checkable
class DecoderModel(Protocol):
    """A decoder-only language model that decodes with an explicit KV cache."""

    config: _HasContext

    def new_cache(self, batch: int, max_len: int | None = None) -> Any:
        """An empty cache for `batch` rows and up to `max_len` positions (a `qkv.nn.attention.KVCache`)."""

    def __call__(self, idx: Tensor, *, cache: Any = None, last_only: bool = False) -> tuple[Tensor, Any]:
        """idx (B, T) -> (logits (B, T or 1, V), loss or None); extends `cache` by T positions in place."""


@runtime_checkable
class EncoderDecoderModel(Protocol):
    """An encoder–decoder that encodes a source once and decodes with a self-attention + cross-attention cache."""

    config: Any  # max_seq_len, pad_id

    def encode(self, src: Tensor, src_mask: Tensor) -> Tensor:
        """src (B, S), src_mask (B, S) -> memory (B, S, C)."""

    def decode(self, memory: Tensor, src_mask: Tensor, tgt: Tensor, cache: Any = None,
               last_only: bool = False) -> Tensor:
        """tgt (B, T) new target positions -> logits (B, T or 1, V)."""

    def new_cache(self, batch: int, max_len: int | None = None) -> Any:
        """An empty decoding state (a `qkv.models.seq2seq.Seq2SeqCache`)."""
