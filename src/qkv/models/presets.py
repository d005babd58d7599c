"""Named GPT sizes: the four GPT-2 models (Radford et al. 2019), the eight GPT-3 models (Brown et al. 2020).

GPT-2: vocabulary 50257, context 1024, learned positions, LayerNorm, GELU (tanh approximation), biases,
tied embeddings. GPT-3 (Table 2.1 of the paper) keeps the architecture and doubles the context to 2048;
its d_head is listed because 13B does not divide evenly (5140 = d_model, 40 heads × 128 = 5120 = d_attn).

    >>> get_preset("gpt2").d_model
    768

``get_preset`` returns a fresh `GPTConfig`, so callers may change it (``dataclasses.replace`` or assignment)
without touching the table. Dropout stays at the GPTConfig default.
"""

from __future__ import annotations

import dataclasses

from qkv.errors import QKVError
from qkv.models.gpt import GPTConfig


def _gpt2(n_layers: int, d_model: int, n_heads: int) -> GPTConfig:
    return GPTConfig(
        vocab_size=50257, max_seq_len=1024, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
        activation="gelu_tanh", bias=True, tie_embeddings=True,
    )


def _gpt3(n_layers: int, d_model: int, n_heads: int, d_head: int) -> GPTConfig:
    return GPTConfig(
        vocab_size=50257, max_seq_len=2048, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
        d_head=d_head, d_ff=4 * d_model, activation="gelu_tanh", bias=True, tie_embeddings=True,
    )


PRESETS: dict[str, GPTConfig] = {
    #                   n_layers  d_model  n_heads  (d_head)
    "gpt2":        _gpt2(12,      768,     12),
    "gpt2-medium": _gpt2(24,      1024,    16),
    "gpt2-large":  _gpt2(36,      1280,    20),
    "gpt2-xl":     _gpt2(48,      1600,    25),
    "gpt3-125m":   _gpt3(12,      768,     12,      64),
    "gpt3-350m":   _gpt3(24,      1024,    16,      64),
    "gpt3-760m":   _gpt3(24,      1536,    16,      96),
    "gpt3-1.3b":   _gpt3(24,      2048,    24,      128),
    "gpt3-2.7b":   _gpt3(32,      2560,    32,      80),
    "gpt3-6.7b":   _gpt3(32,      4096,    32,      128),
    "gpt3-13b":    _gpt3(40,      5140,    40,      128),
    "gpt3-175b":   _gpt3(96,      12288,   96,      128),
}  # fmt: skip


def get_preset(name: str) -> GPTConfig:
    """A copy of the named preset; an unknown name is a `QKVError` listing the valid ones."""
    if name not in PRESETS:
        raise QKVError(f"unknown model size {name!r}; model sizes: {', '.join(PRESETS)} (training presets go to "
                       "qkv train --preset)")
    return dataclasses.replace(PRESETS[name])
